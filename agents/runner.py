"""The runner base: what a run of any method shares, whatever trains or samples in it.

A run directory (``RunDirectory``) holds ``config.json`` and ``metrics.json`` (both written
atomically), tensorboard events, ``figures/``, ``samples.pt`` and, for a method with state,
``checkpoint.pt``; a lock file keeps a second run out while one writes there. ``Runner`` is the base
of every entry of ``agents.runs.RUNNERS``: it builds a run config from a spec (``build``), prepares
the process (``setup_runtime``: threads, device, allocator), evaluates through
``agents.evaluation`` and finishes a run (``finish``: ``metrics.json`` with ``FINAL_KEYS`` first,
``samples.pt``, a figure). ``resume`` is an error naming the method unless the runner has state to
resume (the GFlowNet trainer does).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pickle
import shutil
import signal
import socket
import threading
import time
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from diffsampler.agents import metrics
from diffsampler.agents.config import config_from_spec
from diffsampler.agents.errors import TrainingInterrupted  # noqa: F401 - raised by runners
from diffsampler.agents.runtime import retain_freed_memory

# emc is null for targets without modes (``metrics.summarize`` adds it for mixtures and Manywell)
FINAL_KEYS = metrics.METRIC_KEYS + ("emc", "ms_per_iteration", "iterations", "wall_seconds", "energy_evaluations")


def setup_runtime(device: str, threads: int | None = None, retain_memory: bool = False) -> torch.device:
    """Check ``device`` (a clear error for an unknown one or a CUDA device without CUDA), set the torch
    CPU threads and, on CPU, keep freed large blocks for reuse (``agents.runtime``)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not supported; expected 'cpu', 'cuda' or 'cuda:N'")
    if threads is not None:
        torch.set_num_threads(threads)
    if retain_memory and dev.type == "cpu":
        retain_freed_memory()
    return dev


def _disk_full(path: Path, margin: int = 1 << 20) -> bool:
    """Whether the filesystem of ``path`` has less than ``margin`` bytes free (torch.save reports a full disk
    as a RuntimeError "unexpected pos", without errno)."""
    try:
        return shutil.disk_usage(path).free < margin
    except OSError:
        return False


@contextmanager
def stop_on_signals(signals=(signal.SIGINT, signal.SIGTERM)):
    """While active, the first SIGINT or SIGTERM only records itself (``flag.signum``), so that a loop can
    stop at its next iteration boundary and save its state; a second one stops at once
    (KeyboardInterrupt). The previous handlers come back on exit. Outside the main thread: no handlers."""
    flag = types.SimpleNamespace(signum=None)
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.signum is not None:
            raise KeyboardInterrupt
        flag.signum = signum

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def final_metrics(evaluation: dict, **run: Any) -> dict:
    """The flat dict of ``metrics.json``: ``FINAL_KEYS`` first (None where they do not apply), then the
    evaluation's other keys, then the run's own numbers (``iterations``, ``wall_seconds``, ...)."""
    merged = {**evaluation, **run}
    return {k: merged.get(k) for k in FINAL_KEYS} | merged


class RunDirectory:
    """A run's directory. Files are written atomically (a temporary file, then ``os.replace``), so a
    kill leaves the previous version or the new one, never a torn file; ``writable=False`` opens a
    finished run to read or evaluate it and never writes."""

    def __init__(self, path: str | os.PathLike, writable: bool = True):
        self.path = Path(path)
        self.writable = writable
        self._lock_file = None
        self._writer = None
        if writable:
            (self.path / "figures").mkdir(parents=True, exist_ok=True)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def exists(self, name: str) -> bool:
        return (self.path / name).exists()

    # --- files --------------------------------------------------------------------------------------

    def _atomic(self, name: str, write) -> None:
        if not self.writable:
            raise PermissionError(f"{self.path} is open read-only; not writing {name}")
        target = self.path / name
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            write(tmp)
            os.replace(tmp, target)
        except (OSError, RuntimeError) as err:
            full = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or _disk_full(self.path)
            tmp.unlink(missing_ok=True)  # after measuring: the partial file is what filled the disk
            if full:
                raise OSError(
                    errno.ENOSPC,
                    f"no space left on the device to write {target}; the previous version of {name} (if any) is kept",
                ) from None
            raise

    def write_json(self, name: str, data: dict) -> None:
        text = json.dumps(data, indent=2)
        self._atomic(name, lambda p: p.write_text(text))

    def save_tensor(self, name: str, value: Any) -> None:
        self._atomic(name, lambda p: torch.save(value, p))

    def read_json(self, name: str) -> dict:
        """A JSON object from the directory, or a ValueError naming the file and what is wrong with it."""
        path = self.path / name
        if not path.exists():
            raise FileNotFoundError(f"no {name} in {self.path}: not a run directory")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is damaged: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} is damaged: expected a JSON object, got {type(data).__name__}")
        return data

    def load_checkpoint(self, device: str = "cpu", name: str = "checkpoint.pt") -> dict:
        """A checkpoint's state, loaded with ``weights_only=True``: plain tensors, numbers, strings and
        containers only. A file that would run code (a pickled object with a ``__reduce__``), or a
        truncated, empty or foreign file, is refused with a ValueError naming it; nothing in it runs."""
        path = self.path / name
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except pickle.UnpicklingError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"{path}: refused to load; a checkpoint holds only tensors and plain containers, and this file "
                f"holds something else ({first})"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError, AttributeError) as err:
            # random bytes can stop torch's weights-only unpickler anywhere (an IndexError on its stack, ...)
            if isinstance(err, FileNotFoundError):
                raise
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{path} is damaged: not a readable checkpoint ({reason})") from None
        if not isinstance(state, dict):
            raise ValueError(f"{path} is damaged: not a training checkpoint (holds a {type(state).__name__})")
        return state

    def figure_path(self, name: str) -> str:
        return str(self.path / "figures" / name)

    def writer(self, purge_step: int | None = None):
        """The run's tensorboard writer (created on first use; None when read-only)."""
        if self._writer is None and self.writable:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.path), purge_step=purge_step)
        return self._writer

    # --- the lock -----------------------------------------------------------------------------------

    def lock(self) -> None:
        """Hold ``.lock`` (an exclusive ``flock``, released by the OS when the process ends, even on
        kill -9) for as long as this run writes here; a second run gets a ValueError naming the holder."""
        if self._lock_file is not None or not self.writable:
            return
        handle = open(self.path / ".lock", "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            handle.close()
            raise ValueError(
                f"run directory {self.path} is in use by {holder}; wait for it or use another directory"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self._lock_file = handle

    def holder(self) -> str | None:
        """Who holds ``.lock`` now (another ``lock()``: a run writing here), or None; takes nothing."""
        try:
            handle = open(self.path / ".lock")  # noqa: SIM115 - closed below, after the probe
        except FileNotFoundError:
            return None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return _holder(handle)
            fcntl.flock(handle, fcntl.LOCK_UN)
        return None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


def _holder(handle) -> str:
    """The holder a ``.lock`` file names (``RunDirectory.lock`` writes it)."""
    handle.seek(0)
    return handle.read().strip() or "another process"


class Runner:
    """Base of the runners: ``config_type`` (the run config; its leaf fields are the overridable names)
    and ``budget_path`` (the config field, possibly nested, that takes a spec's budget)."""

    config_type: type
    budget_path: tuple[str, ...] = ("iterations",)
    resumable = False
    # Whether one run to the largest energy budget stands for the smaller ones too (its curve's points at
    # their marks): true where nothing in a run depends on its total budget.
    curve_budgets = False

    def build(self, spec, preset) -> Any:
        """The validated run config of ``spec`` (the budget, then the overrides applied)."""
        return config_from_spec(self.config_type, spec, preset, self.budget_path, spec.budget or preset.iterations)

    def run(self, config, run_dir: str | os.PathLike | None, progress: bool) -> dict:
        """Run ``config``; write config.json and metrics.json into ``run_dir``; return the metrics."""
        raise NotImplementedError

    def energy_run(self, config, energies: tuple[int, ...]) -> tuple[int, dict]:
        """``(budget, overrides)`` of the run of ``config`` that stands for the energy budgets ``energies``
        (all of them when ``curve_budgets``, else one): at most ``max(energies)`` training evaluations of the
        target, the budget in the runner's unit and the overrides (e.g. marks) that make it so."""
        raise ValueError(f"the {config.preset!r} method has no energy budget")

    def resume(self, run_dir: str | os.PathLike, config: dict, iterations: int | None = None, writable: bool = True):
        raise ValueError(
            f"{run_dir}: the {config.get('preset', '?')!r} method runs in one go and keeps no state to resume; "
            "start it again instead"
        )
