#!/usr/bin/env python
"""The time-grid table of issue 18: one ``tb-expl-lp`` model per target trained on the uniform grid and one
trained on a fresh random grid per batch (``--time-grid random``), each evaluated on uniform grids of
T = 25, 50, 100 and 200 steps (``TrainConfig.eval_steps``).

    python benchmarks/time_grid_table.py --iterations 2000 --run-root runs/time-grid

Training runs go through ``agents.runs.run`` (the CLI's code path), one at a time, one thread, seed 0; a run
whose ``metrics.json`` exists is not trained again. Each saved model is evaluated read-only
(``Trainer.resume(run_dir, writable=False)`` with ``eval_steps`` replaced; 2,000 trajectories, the evaluation
seed of the final iteration, so every T sees the same random numbers where the shapes agree). Writes each run's
``metrics.json`` to ``benchmarks/results/time-grid/`` and the table to ``benchmarks/results/time-grid-table.json``,
and prints it as markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffsampler.agents.runs import RunSpec, run  # noqa: E402
from diffsampler.agents.training import Trainer  # noqa: E402
from diffsampler.envs.registry import SHORT_NAMES  # noqa: E402

KEYS = ("delta_log_z", "delta_log_z_rw", "eubo", "w2", "ess")


def train(target: str, grid: str, args) -> Path:
    env_id, env_kwargs = SHORT_NAMES[target]
    run_dir = Path(args.run_root) / f"{target}-tb-expl-lp-{grid}-s{args.seed}-{args.iterations}it"
    if not (run_dir / "metrics.json").exists():
        overrides = {"time_grid": grid, "eval_every": args.iterations, "figures": False}
        spec = RunSpec(env_id, "tb-expl-lp", args.seed, args.iterations, dict(env_kwargs), overrides, threads=1)
        print(f"training {run_dir.name}", flush=True)
        run(spec, run_dir)
    out = ROOT / "benchmarks" / "results" / "time-grid" / f"{run_dir.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "metrics.json", out)
    return run_dir


def evaluate(run_dir: Path, steps: int) -> dict:
    trainer = Trainer.resume(run_dir, writable=False)
    trainer.config = dataclasses.replace(trainer.config, eval_steps=steps)
    result = trainer.evaluate(figure=False)
    return {k: result.get(k) for k in KEYS}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=2000, help="training iterations per model (preset: 10,000)")
    p.add_argument("--targets", default="25gmm,funnel,manywell32")
    p.add_argument("--grids", default="uniform,random")
    p.add_argument("--steps", default="25,50,100,200", help="evaluation T values")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-root", default="runs/time-grid")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "time-grid-table.json"))
    args = p.parse_args(argv)
    out = Path(args.out)
    table = json.loads(out.read_text()) if out.exists() else {}
    table["note"] = (
        f"tb-expl-lp, seed {args.seed}, {args.iterations} training iterations (the preset's budget is 10,000), "
        "T = 100 in training; each model evaluated once per T on 2,000 trajectories"
    )
    rows = table.setdefault("rows", {})
    for target in args.targets.split(","):
        for grid in args.grids.split(","):
            run_dir = train(target, grid, args)
            for steps in map(int, args.steps.split(",")):
                key = f"{target}/{grid}/T={steps}"
                if key not in rows:
                    rows[key] = evaluate(run_dir, steps)
                    out.write_text(json.dumps(table, indent=1) + "\n")
                print(key, {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[key].items()}, flush=True)
    print("\n| target | trained on | T | Δlog Z | Δlog Z^RW | EUBO | W2 |\n|---|---|---|---|---|---|---|")
    for key, r in rows.items():
        target, grid, steps = key.split("/")
        keys = ("delta_log_z", "delta_log_z_rw", "eubo", "w2")
        cells = " | ".join("–" if r[k] is None else f"{r[k]:.3f}" for k in keys)
        print(f"| {target} | {grid} | {steps[2:]} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
