#!/usr/bin/env python
"""Where a training iteration goes: torch.profiler over a few iterations of one preset on one target.

    python benchmarks/profile_iteration.py --preset tb --target manywell32 --threads 2
    python benchmarks/profile_iteration.py --preset tb-expl-lp --target manywell32 --json out.json

Operators are grouped into the classes the speed issue asks about: matrix products, elementwise kernels,
reductions, random numbers, copies/allocations, autograd bookkeeping and the rest; ``dispatch`` is the
wall time not covered by any operator's self time (Python and per-op dispatch overhead). Times are self
CPU times summed over the profiled iterations, as shares of the wall time.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLASSES = {  # first match wins
    "matmul": r"addmm|mm$|bmm|matmul|linear|baddbmm|_fused_matmul|addmv|\bmv\b",
    "random": r"normal|randn|rand|bernoulli|multinomial|uniform",
    "reduction": r"sum|mean|norm|max|min|logsumexp|cumsum|amax|any|all",
    "copy/alloc": r"copy_|empty|zeros|ones|full|cat|stack|contiguous|clone|to$|_to_copy|fill_|new_|resize",
    "autograd": r"backward|Backward|AccumulateGrad|autograd",
    "elementwise": r"add|mul|sub|div|gelu|exp|log|sin|cos|tanh|clamp|square|sqrt|pow|where|neg|sign|abs|rsub",
}


def classify(name: str) -> str:
    op = name.split("::")[-1]
    for cls, pattern in CLASSES.items():
        if re.search(pattern, op if cls != "autograd" else name):
            return cls
    return "other"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tb")
    p.add_argument("--target", default="manywell32", help="a short name of envs.registry")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=15, help="operators listed")
    p.add_argument("--json", default=None, help="write the summary here")
    args = p.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from diffsampler import envs
    from diffsampler.agents.gflownet import GFlowNetAgent
    from diffsampler.agents.presets import get_preset
    from diffsampler.agents.runtime import retain_freed_memory
    from diffsampler.envs.registry import SHORT_NAMES

    torch.set_num_threads(args.threads)
    retain_freed_memory()
    env_id, kwargs = SHORT_NAMES[args.target]
    preset = get_preset(args.preset)
    mdp = envs.make_mdp(env_id, **{**preset.env_kwargs, **kwargs})
    torch.manual_seed(0)
    agent = GFlowNetAgent(mdp, preset.agent)
    gen, cpu_gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    for it in range(args.warmup):
        agent.train_step(it, gen, cpu_gen)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for it in range(args.warmup, args.warmup + args.iterations):
            agent.train_step(it, gen, cpu_gen)
        wall_us = 1e6 * (time.perf_counter() - start)
    events = prof.key_averages()
    by_class: dict[str, float] = defaultdict(float)
    ops = []
    for e in events:
        if e.key.startswith("aten::") or "Backward" in e.key:
            by_class[classify(e.key)] += e.self_cpu_time_total
            ops.append((e.self_cpu_time_total, e.count, e.key))
    covered = sum(by_class.values())
    by_class["dispatch (wall not in any op)"] = max(wall_us - covered, 0.0)
    ms_per_it = wall_us / 1000 / args.iterations
    print(f"{args.preset} on {args.target}: {ms_per_it:.1f} ms/iteration ({args.threads} threads, profiled)")
    print("\n| class | share of wall | ms/iteration |\n|---|---|---|")
    for cls, us in sorted(by_class.items(), key=lambda kv: -kv[1]):
        print(f"| {cls} | {100 * us / wall_us:.1f}% | {us / 1000 / args.iterations:.1f} |")
    print("\n| top operators (self CPU) | calls/it | ms/it |\n|---|---|---|")
    for us, count, key in sorted(ops, reverse=True)[: args.top]:
        print(f"| {key} | {count / args.iterations:.0f} | {us / 1000 / args.iterations:.2f} |")
    if args.json:
        summary = {
            "preset": args.preset,
            "target": args.target,
            "threads": args.threads,
            "ms_per_iteration_profiled": ms_per_it,
            "classes_ms": {k: v / 1000 / args.iterations for k, v in by_class.items()},
            "top_ops_ms": {k: us / 1000 / args.iterations for us, _, k in sorted(ops, reverse=True)[: args.top]},
        }
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
