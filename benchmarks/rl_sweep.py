#!/usr/bin/env python
"""The RL-baseline search (issue 19): one run per call, one JSON line per run, and the table of them.

Each call trains one RL preset with config overrides at an energy budget (episodes; env steps = energy * T)
through ``agents.runs.run`` (the code path of ``scripts/train_agent.py`` and the benchmark harness), on one
thread, and appends a row to ``--out`` (default ``benchmarks/results/rl_sweep.jsonl``) with the metrics,
the energy evaluations, the wall and training times and the machine's load average (the machine is shared,
so wall times are only comparable between rows of similar load). ``--table`` prints the markdown table.

    OMP_NUM_THREADS=1 python benchmarks/rl_sweep.py --target gaussian-shift --method sb3-sac --energy 3000 \
        --set gradient_steps=10 --set n_step=10 --tag "G10 n10"
    python benchmarks/rl_sweep.py --table
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffsampler import envs  # noqa: E402
from diffsampler.agents.runs import RunSpec, run  # noqa: E402

# name -> (env id, env kwargs). "gaussian" is the env's defaults (d = 2, mean 0, std 1, T = 100): the bridge
# reference's own end marginal, so a policy started at the reference is exact before training and the search
# there measures whether training keeps it; "gaussian-shift" (the comparison's Gaussian) has to be learned.
TARGETS = {
    "gaussian": ("DiffSampler-Gaussian-v0", {}),
    "gaussian-shift": ("DiffSampler-Gaussian-v0", {"dim": 2, "mean": 1.0, "std": 0.5}),
    "25gmm": ("DiffSampler-GMM25-v0", {}),
    "manywell8": ("DiffSampler-Manywell-v0", {"dim": 8}),
}
KEYS = ("delta_log_z", "delta_log_z_rw", "w2", "energy_evaluations", "env_steps", "gradient_steps")


def one_run(args) -> dict:
    env_id, env_kwargs = TARGETS[args.target]
    overrides = dict(item.split("=", 1) for item in args.set)
    num_steps = envs.make_mdp(env_id, **env_kwargs).num_steps
    spec = RunSpec(env_id, args.method, args.seed, args.energy * num_steps, env_kwargs, overrides, threads=1)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = run(spec, None, progress=False)
    row = {"target": args.target, "method": args.method, "tag": args.tag, "energy": args.energy, "seed": args.seed}
    row |= {"overrides": overrides, **{k: result.get(k) for k in KEYS}}
    row |= {"train_seconds": result["train_seconds"], "wall_seconds": time.perf_counter() - start}
    row |= {"load_start": load, "load_end": os.getloadavg()[0], "time": time.strftime("%Y-%m-%d %H:%M")}
    return row


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.1e}" if abs(v) >= 1e4 else (f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}")


def table(rows: list[dict]) -> str:
    head = "| target | method | settings | energy | Δlog Z^RW | Δlog Z | W2 | grad steps | train s | load |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        settings = r["tag"] or " ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "preset"
        cells = [r["target"], r["method"], settings, f"{r['energy_evaluations']:,}"]
        cells += [_fmt(r[k]) for k in ("delta_log_z_rw", "delta_log_z", "w2", "gradient_steps", "train_seconds")]
        cells.append(f"{(r['load_start'] + r['load_end']) / 2:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=sorted(TARGETS), default="gaussian-shift")
    p.add_argument("--method", default="sb3-sac")
    p.add_argument("--energy", type=int, default=3000, help="episodes (target energy evaluations)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="config override")
    p.add_argument("--tag", default="", help="the settings' short name in the table")
    p.add_argument("--out", default="benchmarks/results/rl_sweep.jsonl")
    p.add_argument("--table", action="store_true", help="print the table of --out and exit")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.table:
        print(table([json.loads(line) for line in out.read_text().splitlines() if line.strip()]))
        return 0
    row = one_run(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(table([row]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
