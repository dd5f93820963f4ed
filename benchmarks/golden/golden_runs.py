#!/usr/bin/env python
"""Seeded 50-iteration runs of every preset: a record of results that a refactoring must not change.

    python benchmarks/golden/golden_runs.py --write     # record benchmarks/golden/golden_50it.json
    python benchmarks/golden/golden_runs.py --check     # run again and compare with the record

Every preset runs on 25GMM and Manywell-8 (RL agents at one batch of whole episodes, 30,000 env steps;
SMC at 50 temperatures, MALA at 50 steps), and every preset that accepts a conditional target
(``Preset.conditional``) runs on the VAE default (the digits VAE, no data path; MCMC with 200 particles or
chains). One thread, seed 0, 500 evaluation trajectories, no figures. ``--check`` compares every numeric
metric (timings excluded) to the record with relative tolerance 1e-5 and lists the differences.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from diffsampler.agents.config import field_paths  # noqa: E402
from diffsampler.agents.presets import PRESETS  # noqa: E402
from diffsampler.agents.runs import RunSpec, run, runner_for  # noqa: E402

RECORD = HERE / "golden_50it.json"
TARGETS = {"25gmm": ("DiffSampler-GMM25-v0", {}), "manywell8": ("DiffSampler-Manywell-v0", {"dim": 8})}
VAE = ("DiffSampler-VAE-v0", {})
RL_BUDGET = 30_000
TIMING_KEYS = {"ms_per_iteration", "wall_seconds", "train_seconds", "sampling_seconds"}
OVERRIDES = {"eval_samples": 500, "figures": False, "save_samples": 0}
VAE_OVERRIDES = {"particles": 200, "chains": 200}  # MCMC runs once per evaluation image there


def is_rl(preset: str) -> bool:
    return preset.startswith(("sb3-", "ts-"))


def jobs() -> list[tuple[str, str, dict, str]]:
    """(label, env id, env kwargs, preset) of every golden run."""
    out = []
    for name, (env_id, kwargs) in TARGETS.items():
        out += [(f"{name}/{p}", env_id, kwargs, p) for p in PRESETS]
    out += [(f"vae/{p}", *VAE, p) for p in PRESETS if not is_rl(p) and PRESETS[p].conditional]
    return out


def run_one(env_id: str, env_kwargs: dict, preset: str) -> dict:
    fields = field_paths(runner_for(preset).config_type)
    wanted = OVERRIDES | (VAE_OVERRIDES if env_id == VAE[0] else {})
    overrides = {k: v for k, v in wanted.items() if k in fields}
    budget = RL_BUDGET if is_rl(preset) else 50
    torch.manual_seed(0)
    spec = RunSpec(env_id, preset, seed=0, budget=budget, env_kwargs=dict(env_kwargs), overrides=overrides, threads=1)
    return run(spec, None, progress=False)


def numeric(metrics: dict) -> dict:
    return {
        k: v
        for k, v in metrics.items()
        if k not in TIMING_KEYS and (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)))
    }


def max_relative_difference(old: dict, new: dict) -> float:
    """The largest relative difference over the recorded numeric keys (0.0: bit-identical)."""
    worst = 0.0
    for key, a in old.items():
        b = new.get(key)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a != b:
            worst = max(worst, abs(a - b) / max(abs(a), 1e-300))
    return worst


def compare(old: dict, new: dict, rtol: float = 1e-5) -> list[str]:
    """Differences beyond ``rtol`` on the recorded keys (keys added since the record are new metrics)."""
    diffs = []
    for key in sorted(old):
        a, b = old.get(key), new.get(key)
        if a is None or b is None:
            if a is not b:
                diffs.append(f"{key}: {a!r} -> {b!r}")
            continue
        if not math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12):
            diffs.append(f"{key}: {a!r} -> {b!r} (rel {abs(a - b) / max(abs(a), 1e-300):.2e})")
    return diffs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="record the runs")
    mode.add_argument("--check", action="store_true", help="compare with the record")
    p.add_argument("--only", default=None, help="comma-separated labels (e.g. 25gmm/tb,vae/smc)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    wanted = None if args.only is None else set(args.only.split(","))
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {"runs": {}}
    failures, results = 0, {}
    for label, env_id, kwargs, preset in jobs():
        if wanted is not None and label not in wanted:
            continue
        start = time.perf_counter()
        metrics = numeric(run_one(env_id, kwargs, preset))
        results[label] = metrics
        seconds = time.perf_counter() - start
        if args.check:
            if label not in record["runs"]:
                print(f"{label:28s} not in the record", flush=True)
                failures += 1
                continue
            diffs = compare(record["runs"][label], metrics)
            failures += bool(diffs)
            worst = max_relative_difference(record["runs"][label], metrics)
            state = "DIFFERS" if diffs else ("identical" if worst == 0 else f"ok, max rel. diff {worst:.1e}")
            print(f"{label:28s} {state} ({seconds:.1f} s)", flush=True)
            for d in diffs:
                print(f"    {d}", flush=True)
        else:
            print(f"{label:28s} recorded ({seconds:.1f} s)", flush=True)
    if args.write:
        record["runs"].update(results)
        record["note"] = (
            "seed 0, 1 thread; 50 iterations (RL: 30,000 env steps), 500 evaluation trajectories; "
            "written by benchmarks/golden/golden_runs.py --write"
        )
        record["torch"] = torch.__version__
        RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        print(f"wrote {RECORD}")
        return 0
    print(f"{failures} of {len(results)} runs differ" if failures else f"all {len(results)} runs match")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
