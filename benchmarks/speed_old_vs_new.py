#!/usr/bin/env python
"""ms/iteration of two commits side by side, interleaved in one sitting: ``scripts/bench_speed.py`` of each.

    git worktree add /tmp/old <commit>
    python benchmarks/speed_old_vs_new.py --old /tmp/old --rounds 3 --json out.json

Each round runs the old checkout's bench_speed.py, then this checkout's, on the same cells (every preset x
target given), so both see the same machine state; the table gives each cell's median over rounds and the
ratio new / old.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench(checkout: Path, args) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, "scripts/bench_speed.py", "--presets", args.presets, "--targets", args.targets]
        cmd += ["--iterations", str(args.iterations), "--threads", str(args.threads), "--json", f.name]
        cmd += ["--ls-targets", "none", "--grad-targets", "none"]
        subprocess.run(cmd, cwd=checkout, check=True, capture_output=True, text=True)
        rows = json.loads(Path(f.name).read_text())
    rows = rows["presets"] if isinstance(rows, dict) else rows
    return {(r["preset"], r["target"]): r["ms"] for r in rows if "ms" in r}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="a checkout (worktree) of the old commit")
    p.add_argument("--presets", default="tb,fl-subtb,tb-expl-lp,pis")
    p.add_argument("--targets", default="25gmm,funnel,manywell8,manywell32,manywell128,manywell512")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for r in range(args.rounds):
        for name, checkout in (("old", Path(args.old)), ("new", ROOT)):
            runs[name].append(bench(checkout, args))
            print(f"round {r + 1}: {name} done", flush=True)
    cells = sorted(set(runs["old"][0]) & set(runs["new"][0]))
    print("\n| preset | target | old ms | new ms | new / old |\n|---|---|---|---|---|")
    out = []
    for cell in cells:
        old = statistics.median(run[cell] for run in runs["old"])
        new = statistics.median(run[cell] for run in runs["new"])
        print(f"| {cell[0]} | {cell[1]} | {old:.1f} | {new:.1f} | {new / old:.3f} |")
        out.append({"preset": cell[0], "target": cell[1], "old_ms": old, "new_ms": new, "ratio": new / old})
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "cells": out}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
