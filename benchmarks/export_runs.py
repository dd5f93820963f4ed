#!/usr/bin/env python
"""Finished benchmark runs as single-run result files, for ``benchmark.py --import benchmarks/results``.

    python benchmarks/export_runs.py RUNS_ROOT benchmarks/results --prefix campaign-

Every ``RUNS_ROOT/runs/<key>`` with a ``metrics.json`` (a finished run of ``scripts/benchmark.py --out
RUNS_ROOT``) becomes ``<prefix><key>.json``: env id and keywords, preset, seed, iterations, threads, the
metrics (the mean over the run's evaluation repeats, with their std and values), the config and its recorded
versions (git commit), the wall time and the command that reruns it. Checkpoints are not copied.
Unfinished runs are listed and skipped.

The wall time is the whole run's: a run resumed from its checkpoint by code before the fix of 2026-12-01
wrote only its last part's time into metrics.json, while its curve (``wall_seconds`` of the last point)
counts from the run's start; the larger of the two is taken.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _wall_seconds(run: Path, metrics: dict) -> float | None:
    """The run's wall time: metrics.json's, or its curve's last point's where that is larger (see above)."""
    from diffsampler.agents.runlog import read_curve

    walls = [metrics.get("wall_seconds")]
    if (run / "curve.jsonl").is_file():
        walls += [p.get("wall_seconds") for p in read_curve(run / "curve.jsonl")[-1:]]
    walls = [w for w in walls if isinstance(w, (int, float))]
    return max(walls) if walls else None


def record(run: Path) -> dict:
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    job = json.loads((run / "job.json").read_text()) if (run / "job.json").is_file() else {}
    overrides = job.get("overrides") or {}
    command = f"python scripts/train_agent.py --env {config['env_id']} --preset {config['preset']}"
    command += f" --seed {config['seed']}"
    command += "".join(f" --{k.replace('_', '-')} {v}" for k, v in (config.get("env_kwargs") or {}).items())
    command += "".join(f" --{k.replace('_', '-')} {v}" for k, v in overrides.items())
    command += f" --threads {config.get('threads')}"
    return {
        "env_id": config["env_id"],
        "env_kwargs": config.get("env_kwargs") or {},
        "preset": config["preset"],
        "seed": config["seed"],
        "iterations": config["iterations"],
        "device": config.get("device"),
        "threads": config.get("threads"),
        "overrides": {k: v for k, v in overrides.items() if k != "eval_repeats"},
        "metrics": metrics,
        "wall_seconds": _wall_seconds(run, metrics),
        "commit": ((config.get("versions") or {}).get("git") or {}).get("commit"),
        "command": command,
        "config": config,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="the --out directory of scripts/benchmark.py")
    p.add_argument("out", help="where the result files go")
    p.add_argument("--prefix", default="")
    args = p.parse_args(argv)
    runs = sorted(d for d in (Path(args.root) / "runs").iterdir() if d.is_dir())
    if not runs:
        p.error(f"{args.root}/runs holds no run directories")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for run in runs:
        if not (run / "metrics.json").is_file():
            print(f"unfinished, skipped: {run.name}")
            continue
        path = Path(args.out) / f"{args.prefix}{run.name}.json"
        path.write_text(json.dumps(record(run), indent=1) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
