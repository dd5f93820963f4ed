"""Benchmark jobs: one training run per (target, preset, seed), its run directory and its record.

A job runs through ``agents.runs.run`` (the code path of ``scripts/train_agent.py``) into its own
directory ``<out>/runs/<target>-<preset>-s<seed>``. The directory is the job's whole state:

- ``job.json``: the job, written before the run starts;
- ``metrics.json``: written by the runner at the very end, so its presence means *finished*;
- ``error.json``: the exception and traceback of a failed run.

A directory without ``metrics.json`` is a run that was interrupted or failed. When it holds a checkpoint
of this very job (same ``job.json``, same config) and the method keeps state (``Runner.resumable``), the
run continues from that checkpoint: resumed training is bit-identical to an uninterrupted run
(``scripts/kill_resume_check.py``), so a campaign stopped mid-run loses at most ``checkpoint_every``
iterations. Otherwise it is wiped and run again. ``execute`` is the one function every backend calls, in a
worker process or a Ray task.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from diffsampler.envs import registry
from diffsampler.envs.registry import SHORT_NAMES

# Short target names (the columns of the tables) -> (env id, env kwargs): ``envs.registry``'s. Full env ids
# are accepted too.
TARGET_ALIASES: dict[str, tuple[str, dict]] = SHORT_NAMES
# The paper's Table 1 methods in its row order: ``--presets all`` selects those present in PRESETS.
TABLE1_PRESETS = (
    "smc",
    "dis",
    "dds",
    "pis",
    "pis-lp",
    "tb",
    "tb-expl",
    "vargrad-expl",
    "fl-subtb",
    "fl-subtb-lp",
    "tb-expl-ls",
    "tb-expl-lp",
    "tb-expl-lp-ls",
    "vargrad-expl-lp-ls",
)

# Files a worker hands back with its result, so a driver without the worker's filesystem (a Ray
# cluster with no shared disk) can still hold every finished run.
RESULT_FILES = ("job.json", "config.json", "metrics.json", "error.json", "samples.pt", "curve.jsonl")


@dataclass(frozen=True)
class Job:
    """One run of the benchmark.

    Attributes:
        target: short target name (a table column), e.g. ``"25gmm"``.
        env_id, env_kwargs: the environment the run trains on.
        preset: the method (``agents.presets.PRESETS``).
        seed: the run's seed.
        budget: the run's budget in its runner's unit (None: the preset's default).
        overrides: config field -> value for this run.
        device, threads: where the run computes (not part of the run's identity).
        energy: the energy budgets this run stands for (``agents.benchmark.budgets``; its budget and marks
            then come from its runner's ``energy_run``); empty for an ordinary run.
    """

    target: str
    env_id: str
    env_kwargs: dict
    preset: str
    seed: int
    budget: int | None = None
    overrides: dict = field(default_factory=dict)
    device: str = "cpu"
    threads: int | None = 1
    energy: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        from diffsampler.agents.benchmark.budgets import energy_label

        suffix = f"-e{energy_label(max(self.energy))}" if self.energy else ""
        return f"{self.target}-{self.preset}-s{self.seed}{suffix}"

    def identity(self) -> dict:
        """What makes two runs the same run (device, threads and the data location do not)."""
        d = asdict(self)
        d.pop("device"), d.pop("threads")
        d["env_kwargs"] = {k: v for k, v in d["env_kwargs"].items() if k != "data_path"}
        if not d["energy"]:
            d.pop("energy")  # ordinary runs keep the identity they always had
        return d

    def spec(self):
        from diffsampler.agents.runs import RunSpec, energy_spec

        spec = RunSpec(
            env_id=self.env_id,
            preset=self.preset,
            seed=self.seed,
            budget=self.budget,
            env_kwargs=dict(self.env_kwargs),
            overrides=dict(self.overrides),
            device=self.device,
            threads=self.threads,
        )
        return energy_spec(spec, self.energy) if self.energy else spec


def resolve_target(name: str, data_path: str | None = None) -> tuple[str, str, dict]:
    """(short name, env id, env kwargs) of a short name or a registered env id; clear error otherwise.
    A target that reads a data file gets ``data_path`` when one is given."""
    name, env_id, kwargs = registry.resolve(name)
    if data_path is not None and env_id in registry.DATA_ENV_IDS:
        kwargs["data_path"] = str(data_path)
    return name, env_id, kwargs


target_name = registry.short_name


def run_dir_of(out: str | os.PathLike, job: Job) -> Path:
    return Path(out) / "runs" / job.key


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def finished_record(run_dir: Path, job: Job) -> dict | None:
    """The record of a finished run of ``job`` in ``run_dir``, or None when it has not finished.

    Raises ValueError when the directory holds a finished run of a *different* job (another budget,
    overrides or env): resuming must never mix results of different settings.
    """
    metrics = _read_json(run_dir / "metrics.json")
    if metrics is None:
        return None
    stored = _read_json(run_dir / "job.json")
    if stored is not None and stored != json.loads(json.dumps(job.identity())):
        raise ValueError(
            f"{run_dir} holds a finished run of {stored}, but this benchmark asks for {job.identity()}; "
            "use another --out directory or delete that run"
        )
    return make_record(job, run_dir, "ok", metrics=metrics, config=_read_json(run_dir / "config.json"))


def _curve(run_dir: Path) -> list[dict]:
    from diffsampler.agents.runlog import read_curve

    return read_curve(run_dir / "curve.jsonl")


def make_record(job: Job, run_dir: Path, status: str, **fields) -> dict:
    """One line of results.jsonl."""
    return {
        "key": job.key,
        "status": status,
        **job.identity(),
        "env_kwargs": dict(job.env_kwargs),
        "run_dir": str(run_dir),
        "energy": list(job.energy),
        "curve": _curve(run_dir) if status == "ok" else [],
        "metrics": fields.get("metrics"),
        "config": fields.get("config"),
        "error": fields.get("error"),
    }


def resume_interrupted(job: Job, run_dir: Path):
    """The runner's resumed run (e.g. a ``Trainer`` at its checkpoint's iteration) of an interrupted run of
    ``job`` in ``run_dir``, or None where there is none to continue: no checkpoint, a method without state,
    another job's or another config's directory (code changed since), or a checkpoint that does not load
    (said on stderr; the run then starts again)."""
    from diffsampler.agents import runs
    from diffsampler.agents.runlog import same_config
    from diffsampler.agents.runner import RunDirectory

    if (run_dir / "metrics.json").exists() or not (run_dir / "checkpoint.pt").exists():
        return None
    if _read_json(run_dir / "job.json") != json.loads(json.dumps(job.identity())):
        return None
    try:
        spec = job.spec()
        if not runs.runner_for(spec.preset).resumable:
            return None
        if not same_config(RunDirectory(run_dir, writable=False), runs.build(spec)):
            return None
        return runs.resume(run_dir)
    except Exception as err:  # noqa: BLE001 - the fresh start that follows reports a real failure as a result
        print(f"{run_dir}: cannot continue the interrupted run ({err}); starting it again", file=sys.stderr)
        return None


def execute(job: Job, run_dir: str | os.PathLike) -> dict:
    """Run ``job`` in ``run_dir`` (continuing an interrupted run's checkpoint where ``resume_interrupted``
    finds one, else from scratch); never raises for a failing run.

    Returns ``{"record": ..., "files": {name: bytes}}``: the results.jsonl record and the run's small
    result files (``RESULT_FILES``).
    """
    from diffsampler.agents.runner import RunDirectory
    from diffsampler.agents.runs import run

    run_dir = Path(run_dir)
    holder = RunDirectory(run_dir, writable=False).holder()
    if holder is not None:  # a run of this job is writing there now (another benchmark on the same --out)
        error = f"{run_dir} is in use by {holder}; left as it is (one benchmark per --out at a time)"
        return {"record": make_record(job, run_dir, "failed", error=error), "files": {}}
    trainer = resume_interrupted(job, run_dir)
    if trainer is None:
        if run_dir.exists():  # an interrupted or failed attempt without a usable checkpoint: start clean
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "job.json").write_text(json.dumps(job.identity(), indent=2))
    start = time.perf_counter()
    try:
        metrics = trainer.run(progress=False) if trainer is not None else run(job.spec(), run_dir, progress=False)
        record = make_record(job, run_dir, "ok", metrics=metrics, config=_read_json(run_dir / "config.json"))
    except Exception as err:  # noqa: BLE001 - a failed run is a result, the benchmark goes on
        error = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        error["seconds"] = time.perf_counter() - start
        (run_dir / "error.json").write_text(json.dumps(error, indent=2))
        record = make_record(job, run_dir, "failed", config=_read_json(run_dir / "config.json"), error=error["error"])
    files = {name: (run_dir / name).read_bytes() for name in RESULT_FILES if (run_dir / name).exists()}
    return {"record": record, "files": files}


def materialize(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a worker's result files where the driver expects them (no-op on a shared filesystem)."""
    if (run_dir / "metrics.json").exists():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    if "metrics.json" in files:
        (run_dir / "error.json").unlink(missing_ok=True)
    for name in sorted(files, key=lambda n: n == "metrics.json"):  # metrics.json last: it marks "finished"
        (run_dir / name).write_bytes(files[name])


def failed_result(job: Job, run_dir: Path, err: BaseException) -> dict:
    """A result for a job whose worker died (the job itself could not report)."""
    return {"record": make_record(job, run_dir, "failed", error=f"{type(err).__name__}: {err}"), "files": {}}
