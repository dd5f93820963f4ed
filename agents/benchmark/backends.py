"""Where benchmark jobs run: a local process pool, Ray tasks, or this process (``BACKENDS``).

Every backend runs ``jobs.execute`` and yields ``(job, run_dir, result)`` as runs finish, in
completion order. A backend never raises for a failing run; a worker that dies is reported as a
failed run too.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from diffsampler.agents.benchmark.jobs import Job, execute, failed_result

Task = tuple[Job, Path]

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """Set environment variables for the block (children started inside inherit them)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the driver dies (even by SIGKILL), so no orphan
    keeps writing into a run directory that the next invocation restarts."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _init_worker(threads: int) -> None:
    import torch

    _die_with_parent()
    torch.set_num_threads(threads)


class InlineBackend:
    """Runs jobs one after the other in this process (debugging; no isolation between runs)."""

    def __init__(self, threads: int = 1, **_):
        self.threads = threads
        self.slots = 1

    def run(self, tasks: list[Task]) -> Iterator[tuple[Job, Path, dict]]:
        for job, run_dir in tasks:
            yield job, run_dir, execute(job, run_dir)

    def close(self) -> None:
        pass


class LocalBackend:
    """A pool of ``workers`` spawned processes with ``threads`` torch threads each.

    The thread variables (OMP_NUM_THREADS, ...) are set before the workers start, so a worker's
    torch is single- or few-threaded from its first import; workers x threads should not exceed the
    cores. On KeyboardInterrupt the workers this backend started are terminated.
    """

    def __init__(self, workers: int | None = None, threads: int = 1, **_):
        self.threads = threads
        self.slots = workers or max(1, available_cores() // threads)

    def run(self, tasks: list[Task]) -> Iterator[tuple[Job, Path, dict]]:
        if not tasks:
            return
        before = set(multiprocessing.active_children())
        ctx = multiprocessing.get_context("spawn")
        with (
            _environ({k: str(self.threads) for k in _THREAD_VARS}),
            ProcessPoolExecutor(
                min(self.slots, len(tasks)), mp_context=ctx, initializer=_init_worker, initargs=(self.threads,)
            ) as pool,
        ):
            futures = {pool.submit(execute, job, run_dir): (job, run_dir) for job, run_dir in tasks}
            try:
                for fut in as_completed(futures):
                    job, run_dir = futures[fut]
                    try:
                        result = fut.result()
                    except Exception as err:  # noqa: BLE001 - e.g. BrokenProcessPool: the worker died
                        result = failed_result(job, run_dir, err)
                    yield job, run_dir, result
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                for proc in set(multiprocessing.active_children()) - before:
                    proc.terminate()
                raise

    def close(self) -> None:
        pass


# The project's packages, shipped to Ray workers so a cluster runs exactly the driver's code.
_PROJECT_PACKAGES = ("agents", "envs", "buffers")


def ray_runtime_env(threads: int = 1) -> dict:
    """The Ray job ``runtime_env`` the benchmark needs: the project's packages and thread variables.

    Pass it to ``ray.init(runtime_env=...)`` when initialising Ray yourself before a ``ray`` benchmark.
    """
    import importlib

    modules = [str(Path(importlib.import_module(name).__file__).parent) for name in _PROJECT_PACKAGES]
    return {"py_modules": modules, "env_vars": {k: str(threads) for k in _THREAD_VARS}}


class RayBackend:
    """Jobs as Ray tasks asking for ``threads`` CPUs (and ``gpus`` GPUs) each, gathered as they finish.

    Connects to ``address`` (a running cluster, e.g. ``"auto"`` or ``"ray://host:10001"``), or starts
    a local instance with ``num_cpus`` CPUs when no address is given; either way the project's
    packages travel with the job (``ray_runtime_env``), so the cluster runs the driver's code. When
    Ray is already initialised it is used as is. Results come back with the task, so the driver holds
    every finished run even without a shared filesystem.
    """

    def __init__(
        self,
        threads: int = 1,
        gpus: float = 0.0,
        address: str | None = None,
        num_cpus: int | None = None,
        **_,
    ):
        try:
            import ray
        except ImportError:
            raise ImportError(
                "the ray backend needs Ray: pip install 'diffsampler[bench]' (or pip install ray)"
            ) from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs = {"address": address, "log_to_driver": False, "runtime_env": ray_runtime_env(threads)}
            if address is None:
                kwargs |= {"num_cpus": num_cpus or available_cores(), "include_dashboard": False}
            ray.init(**kwargs)
            self._started = True
        self._task = ray.remote(execute).options(num_cpus=threads, num_gpus=gpus, max_retries=1)
        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1) // threads))

    def run(self, tasks: list[Task]) -> Iterator[tuple[Job, Path, dict]]:
        ray = self._ray
        pending = {self._task.remote(job, str(run_dir)): (job, run_dir) for job, run_dir in tasks}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    job, run_dir = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as err:  # noqa: BLE001 - the task's worker died
                        result = failed_result(job, run_dir, err)
                    yield job, run_dir, result
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


BACKENDS = {"local": LocalBackend, "ray": RayBackend, "inline": InlineBackend}
