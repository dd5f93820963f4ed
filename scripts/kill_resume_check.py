#!/usr/bin/env python
"""Crash safety: kill -9 a training run at random moments, resume it after each kill, and compare the final
model with an uninterrupted run of the same command, bit for bit.

    python scripts/kill_resume_check.py --kills 6 --out runs/kill-check
    python scripts/kill_resume_check.py --kills 2 --iterations 30 --out /tmp/kc   # the slow test's version

Each attempt starts the CLI in a child process (``--resume`` once a checkpoint exists, else the fresh
command into the same run directory), waits a random time (uniform in [0.1, 0.9] times what is left of
the run, start-up included: start-up, training, evaluation and checkpoint writes are all fair game) and
sends SIGKILL. After the kills the run is resumed to its end. Compared with the uninterrupted run: every
tensor of the final checkpoint (model, optimiser, random generators, replay buffer), its counters, and
every metric of metrics.json but the timings. Exit status 0 when identical.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"ms_per_iteration", "wall_seconds", "train_seconds"}
# a small replay buffer and frequent, short local search: their state is in every checkpoint
LOCAL_SEARCH = ("--buffer-capacity", "3000", "--ls-cycle", "20", "--ls-steps", "20", "--ls-burn-in", "10")


def command(args, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "scripts" / "train_agent.py"),
        *("--preset", args.preset, "--iterations", str(args.iterations), "--seed", str(args.seed)),
        *("--env", "DiffSampler-Manywell-v0", "--dim", "4", "--num-steps", "10", "--batch-size", "64"),
        *("--eval-every", "10", "--eval-samples", "64", "--checkpoint-every", "3", "--log-every", "5"),
        *("--figures", "false", "--no-progress", "--run-dir", str(run_dir)),
        *(LOCAL_SEARCH if args.preset.endswith("-ls") else ()),
    ]


def resume_command(args, run_dir: Path) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "train_agent.py"), "--resume", str(run_dir), "--no-progress"]


def checkpoint_iteration(run_dir: Path) -> int | None:
    path = run_dir / "checkpoint.pt"
    return torch.load(path, weights_only=True)["iteration"] if path.exists() else None


def same(a, b, where: str = "checkpoint") -> list[str]:
    """Where two (nested) states differ; tensors must be equal bit for bit."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
        return [] if ok and a.shape == b.shape and torch.equal(a, b) else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        keys = (set(a) | set(b)) - TIMING
        return [d for k in sorted(keys, key=str) for d in same(a.get(k), b.get(k), f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in same(x, y, f"{where}[{i}]")]
    return [] if a == b or (a != a and b != b) else [f"{where}: {a!r} != {b!r}"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="working directory (two run directories)")
    p.add_argument("--kills", type=int, default=6)
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--preset", default="tb-expl-ls", help="default: TB with exploration and a replay buffer")
    p.add_argument("--seed", type=int, default=0, help="seeds the run (and, + 1, the kill times)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reference, interrupted = out / "uninterrupted", out / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for d in (reference, interrupted):
        shutil.rmtree(d, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(command(args, reference), env=env, check=True, stdout=subprocess.DEVNULL)
    whole = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from diffsampler.agents import runs"], cwd=ROOT, env=env, check=True)
    startup = min(time.perf_counter() - start, whole)
    print(f"uninterrupted run: {whole:.1f} s, of which start-up {startup:.1f} s")
    rng = random.Random(args.seed + 1)
    for kill in range(1, args.kills + 1):
        if (interrupted / "metrics.json").exists():
            print(f"kill {kill}: the run had already finished")
            break
        resume = checkpoint_iteration(interrupted) is not None
        cmd = resume_command(args, interrupted) if resume else command(args, interrupted)
        left = 1 - (checkpoint_iteration(interrupted) or 0) / args.iterations
        delay = rng.uniform(0.1, 0.9) * (startup + left * (whole - startup))  # within what is left of the run
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = time.perf_counter()
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        fate = "killed" if proc.returncode == -signal.SIGKILL else f"ended with status {proc.returncode}"
        print(
            f"kill {kill}: {'resumed' if resume else 'started'}, {fate} after {time.perf_counter() - start:.1f} s; "
            f"checkpoint at iteration {checkpoint_iteration(interrupted)}"
        )
    if not (interrupted / "metrics.json").exists():
        resume = checkpoint_iteration(interrupted) is not None
        cmd = resume_command(args, interrupted) if resume else command(args, interrupted)
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    states = [torch.load(d / "checkpoint.pt", weights_only=True) for d in (reference, interrupted)]
    diffs = same(*states)
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (reference, interrupted)]
    diffs += same(*metrics, "metrics.json")
    if diffs:
        print(f"DIFFERENT from the uninterrupted run: {', '.join(diffs[:10])}")
        return 1
    print(
        "identical: the final checkpoint and metrics.json match the uninterrupted run bit for bit "
        f"({args.preset}, {args.iterations} iterations)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
