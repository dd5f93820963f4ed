#!/usr/bin/env python
"""The CPU thread policy, measured: ms/iteration of the README's main command (25GMM ``tb-expl-lp``) with 1
and with 2 torch threads, alone and beside a competing CPU-bound process (``python -c "while True: pass"``).

    python scripts/bench_threads.py [--rounds 2] [--iterations 20] [--timeout 240]

Each measurement is a fresh ``scripts/train_agent.py --iterations N --threads T`` run (start-up excluded:
the figure is the mean of the ``train/ms_per_iteration`` windows of 5 iterations in its tensorboard
events); a run still going after ``--timeout`` seconds is stopped and reports the windows it finished.
The conditions are interleaved over ``--rounds`` rounds, and the 1-minute load average before each run is
printed: on a shared machine "alone" means "without our competitor", not "quiet".
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def windows(run_dir: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    if "train/ms_per_iteration" not in events.Tags().get("scalars", []):
        return []
    return [e.value for e in events.Scalars("train/ms_per_iteration")]


def measure(threads: int, iterations: int, timeout: float, work: Path) -> tuple[list[float], bool]:
    run_dir = Path(tempfile.mkdtemp(dir=work))
    argv = [sys.executable, str(ROOT / "scripts" / "train_agent.py"), "--iterations", str(iterations)]
    argv += ["--threads", str(threads), "--log-every", "5", "--eval-samples", "100", "--figures", "false"]
    argv += ["--no-progress", "--run-dir", str(run_dir)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=timeout)
        stopped = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the CLI saves a checkpoint and flushes its events
        proc.wait()
        stopped = True
    return windows(run_dir), stopped


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--timeout", type=float, default=240.0)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    results: dict[tuple[int, bool], list[float]] = {}
    print(f"{os.cpu_count()} cores; 25GMM tb-expl-lp, {args.iterations} iterations per run")
    for r in range(args.rounds):
        for competitor in (False, True):
            for threads in (1, 2):
                load = os.getloadavg()[0]
                spin = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if competitor else None
                try:
                    ms, stopped = measure(threads, args.iterations, args.timeout, work)
                finally:
                    if spin is not None:
                        spin.kill()
                        spin.wait()
                mean = statistics.mean(ms) if ms else float("nan")
                results.setdefault((threads, competitor), []).append(mean)
                note = f" (stopped after {args.timeout:.0f} s, {len(ms)} windows)" if stopped else ""
                print(
                    f"round {r + 1}: {threads} thread(s), {'with' if competitor else 'without'} competitor, "
                    f"load {load:.1f}: {mean:.0f} ms/iteration{note}",
                    flush=True,
                )
    print("\n| threads | competitor | ms/iteration (each round) |\n|---|---|---|")
    for (threads, competitor), values in sorted(results.items()):
        print(f"| {threads} | {'yes' if competitor else 'no'} | {', '.join(f'{v:.0f}' for v in values)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
