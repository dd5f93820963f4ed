#!/usr/bin/env python
"""RL baselines vs GFlowNet samplers at an equal budget of target energy evaluations.

Runs every method on 25GMM, Manywell-8 and a Gaussian (d = 2, mean 1, std 0.5) through agents.runs and
writes a markdown table and JSON (default benchmarks/results/rl_comparison.{md,json}).

Examples:
    python scripts/compare_rl.py --energy 30000                      # the README table
    python scripts/compare_rl.py --energy 300000 --targets 25GMM --methods tb-expl,sb3-sac
    python scripts/compare_rl.py --energy 30000 --set sb3-sac.gradient_steps=2 --set ts-sac.tau=0.05
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffsampler.agents.baselines.rl_comparison import METHODS, TARGETS, compare, markdown  # noqa: E402
from diffsampler.agents.presets import PRESETS  # noqa: E402


def parse_sets(items: list[str]) -> dict[str, dict[str, str]]:
    """``METHOD.FIELD=VALUE`` -> {method: {field: value}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        try:
            key, value = item.split("=", 1)
            method, name = key.split(".", 1)
        except ValueError:
            raise SystemExit(f"error: --set expects METHOD.FIELD=VALUE, got {item!r}") from None
        if method not in PRESETS:
            raise SystemExit(f"error: unknown method {method!r} in --set {item!r}")
        out.setdefault(method, {})[name.replace("-", "_")] = value
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--energy", type=int, default=30_000, help="target energy evaluations per run (default 30000)")
    p.add_argument("--targets", default=",".join(TARGETS), help=f"comma list of {list(TARGETS)}")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list of presets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="METHOD.FIELD=VALUE", help="config override")
    p.add_argument("--out", default="benchmarks/results/rl_comparison", help="output path without extension")
    p.add_argument("--run-root", default=None, help="keep each run's directory under this folder")
    args = p.parse_args(argv)
    targets = {}
    for name in args.targets.split(","):
        if name not in TARGETS:
            p.error(f"unknown target {name!r}; available: {list(TARGETS)}")
        targets[name] = TARGETS[name]
    methods = args.methods.split(",")
    for name in methods:
        if name not in PRESETS:
            p.error(f"unknown method {name!r}; available: {sorted(PRESETS)}")
    if args.energy < 1:
        p.error(f"--energy must be >= 1, got {args.energy}")
    overrides = parse_sets(args.set)
    try:
        rows = compare(targets, methods, args.energy, args.seed, args.threads, overrides, args.run_root)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = markdown(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python scripts/compare_rl.py " + " ".join(argv if argv is not None else sys.argv[1:])
    record = {"energy": args.energy, "seed": args.seed, "threads": args.threads, "command": command.strip()}
    out.with_suffix(".json").write_text(json.dumps(record | {"overrides": overrides, "rows": rows}, indent=2))
    out.with_suffix(".md").write_text(table + "\n")
    print("\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
