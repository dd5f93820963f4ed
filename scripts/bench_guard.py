#!/usr/bin/env python
"""Cost of the training guard (agents/guard.py) on a training step: Manywell-32 ``tb`` (d = 32, batch 300,
T = 100), one thread by default.

Two measurements in one process:

1. **Inside**: the time spent in the guard's own functions (screening the batch's log-rewards, the masked
   mean, the gradient norm, the one host sync and its checks), each wrapped with a timer, as a fraction
   of the step.
2. **A/B**: guarded steps against steps with those functions replaced by what the step did before the
   guard (plain mean, no norm, no screening, the MDP's own NaN check), in alternating blocks on two
   agents with the same seed; the median of the per-block ms/iteration of each.

    python scripts/bench_guard.py [--blocks 8] [--block 15] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from diffsampler import envs  # noqa: E402
from diffsampler.agents import gflownet, guard  # noqa: E402
from diffsampler.agents.presets import PRESETS  # noqa: E402

GUARD_FUNCTIONS = ("screen_paths", "masked_mean", "gradient_norm")


def unguarded(batch_size: int) -> dict:
    """Replacements that make a step what it was before the guard (bar one tiny ``~zero`` of the batch)."""
    zero = torch.zeros(batch_size, dtype=torch.bool)

    def screen(paths, target, forward_looking):
        return paths, guard.Screen(zero, zero)

    return {
        "screen_paths": screen,
        "masked_mean": lambda rows, keep: rows.mean(),
        "gradient_norm": lambda parameters, clip: torch.zeros(()),
        "unchecked_rewards": lambda mdp: contextlib.nullcontext(),
    }


class Timed:
    """Accumulated seconds inside wrapped functions."""

    def __init__(self):
        self.seconds = 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def step_block(agent, it0: int, n: int, generator, sync: bool) -> float:
    start = time.perf_counter()
    for it in range(it0, it0 + n):
        out = agent.train_step(it, generator)
    if sync:
        float(out["loss"])
    return 1000 * (time.perf_counter() - start) / n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--block", type=int, default=15, help="iterations per block")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    mdp = envs.make_mdp("DiffSampler-Manywell-v0", dim=32, device=args.device)
    agents, generators = [], []
    for _ in range(2):
        torch.manual_seed(0)
        agents.append(gflownet.GFlowNetAgent(mdp, PRESETS["tb"].agent))
        generators.append(torch.Generator(args.device).manual_seed(0))
    originals = {name: getattr(gflownet, name) for name in (*GUARD_FUNCTIONS, "unchecked_rewards")}
    timer = Timed()
    guarded_fns = {name: timer.wrap(originals[name]) for name in GUARD_FUNCTIONS}
    allows = guard.TrainingGuard.allows_step
    plain = unguarded(PRESETS["tb"].agent.batch_size)
    times = {"guarded": [], "unguarded": []}
    inside = []
    for agent, gen in zip(agents, generators):  # warm-up
        step_block(agent, 0, 3, gen, True)
    it = 3
    for _ in range(args.blocks):
        for name, agent, gen in (("guarded", agents[0], generators[0]), ("unguarded", agents[1], generators[1])):
            if name == "guarded":
                for fn, value in guarded_fns.items():
                    setattr(gflownet, fn, value)
                gflownet.unchecked_rewards = originals["unchecked_rewards"]
                guard.TrainingGuard.allows_step = timer.wrap(allows)
                timer.seconds = 0.0
            else:
                for fn, value in plain.items():
                    setattr(gflownet, fn, value)
                guard.TrainingGuard.allows_step = lambda self, *a: True
            ms = step_block(agent, it, args.block, gen, args.device != "cpu")
            times[name].append(ms)
            if name == "guarded":
                inside.append(1000 * timer.seconds / args.block)
        it += args.block
    guard.TrainingGuard.allows_step = allows
    for name, value in originals.items():
        setattr(gflownet, name, value)
    g, u = statistics.median(times["guarded"]), statistics.median(times["unguarded"])
    share = statistics.median(inside)
    print(f"Manywell-32 tb on {args.device}, {args.threads} thread(s), {args.blocks} blocks x {args.block} iterations")
    print(f"inside the guard: {share:.2f} ms of {g:.1f} ms per iteration ({100 * share / g:.2f} %)")
    print(f"A/B medians: guarded {g:.1f} ms, unguarded {u:.1f} ms per iteration ({100 * (g - u) / u:+.2f} %)")
    print("per-block guarded:  ", " ".join(f"{t:.0f}" for t in times["guarded"]))
    print("per-block unguarded:", " ".join(f"{t:.0f}" for t in times["unguarded"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
