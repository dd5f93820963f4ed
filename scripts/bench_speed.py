#!/usr/bin/env python
"""Training speed: median ms/iteration and peak memory for presets x targets (T = 100, batch 300).

Each (preset, target) runs in a fresh subprocess, so its peak memory is its own: on CPU the growth
of the peak resident set over the process's footprint after set-up (imports, model); on CUDA
``torch.cuda.max_memory_allocated``. Prints a markdown table.

    python scripts/bench_speed.py                                   # all presets x all targets
    python scripts/bench_speed.py --presets tb,fl-subtb --targets manywell32 --iterations 30
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = {
    "25gmm": ("DiffSampler-GMM25-v0", {}),
    "funnel": ("DiffSampler-Funnel-v0", {}),
    "manywell8": ("DiffSampler-Manywell-v0", {"dim": 8}),
    "manywell32": ("DiffSampler-Manywell-v0", {"dim": 32}),
    "manywell128": ("DiffSampler-Manywell-v0", {"dim": 128}),
    "manywell512": ("DiffSampler-Manywell-v0", {"dim": 512}),
}


def measure(preset: str, target: str, iterations: int, warmup: int, device: str, threads: int | None) -> dict:
    """Time ``iterations`` training steps after ``warmup`` ones, in this process."""
    import torch

    import envs
    from agents.gflownet import GFlowNetAgent
    from agents.presets import get_preset

    if threads:
        torch.set_num_threads(threads)
    env_id, kwargs = TARGETS[target]
    mdp = envs.make_mdp(env_id, device=device, **kwargs)
    torch.manual_seed(0)
    agent = GFlowNetAgent(mdp, get_preset(preset).agent)
    gen = torch.Generator(device).manual_seed(0)
    cpu_gen = torch.Generator().manual_seed(0)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for it in range(warmup + iterations):
        start = time.perf_counter()
        agent.train_step(it, gen, agent.backward_batch(it, gen, cpu_gen))
        sync()
        if it >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024  # KiB on Linux
    return {"preset": preset, "target": target, "ms": statistics.median(times), "peak_mb": peak_mb}


def measure_local_search(target: str, device: str, threads: int | None, cycles: int = 1) -> dict:
    """Local-search call (300 chains x 200 MALA steps), buffer add at capacity 600,000, and
    ``tb-expl-ls`` ms/iteration averaged over whole local-search cycles with both buffers full."""
    import torch

    import envs
    from agents.gflownet import GFlowNetAgent
    from agents.presets import get_preset

    if threads:
        torch.set_num_threads(threads)
    env_id, kwargs = TARGETS[target]
    mdp = envs.make_mdp(env_id, device=device, **kwargs)
    torch.manual_seed(0)
    agent = GFlowNetAgent(mdp, get_preset("tb-expl-ls").agent)
    source = agent.source
    gen, cpu_gen = torch.Generator(device).manual_seed(0), torch.Generator().manual_seed(0)
    fill = mdp.target.sample(source.replay.capacity, cpu_gen).to(device)
    for buf in (source.replay, source.ls_buffer):
        buf.add(fill, mdp.target.log_reward(fill))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(fn, repeats):
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync()
            out.append(1000 * (time.perf_counter() - start))
        return statistics.median(out)

    ls_ms = timed(lambda: source.refresh(1, gen), 5)
    batch, log_r = fill[:300].clone(), mdp.target.log_reward(fill[:300])
    add_ms = timed(lambda: source.replay.add(batch, log_r), 100)
    cycle = source.config.ls_cycle
    for it in range(4):  # warm-up
        agent.train_step(it, gen, agent.backward_batch(it, gen, cpu_gen))
    start = time.perf_counter()
    for it in range(cycle * cycles):
        agent.train_step(it, gen, agent.backward_batch(it, gen, cpu_gen))
    sync()
    it_ms = 1000 * (time.perf_counter() - start) / (cycle * cycles)
    return {"target": target, "ls_call_ms": ls_ms, "add_ms": add_ms, "tb_expl_ls_ms": it_ms}


def main(argv=None) -> int:
    from agents.gflownet import GFlowNetConfig
    from agents.presets import PRESETS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="all", help=f"comma list of {sorted(PRESETS)} or 'all'")
    p.add_argument("--targets", default="all", help=f"comma list of {list(TARGETS)} or 'all'")
    p.add_argument("--iterations", type=int, default=20, help="timed iterations (median reported; >= 20)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument(
        "--ls-targets",
        default="25gmm,manywell32,manywell512",
        help="targets of the local-search table (comma list, or 'none')",
    )
    p.add_argument("--one", nargs=2, metavar=("PRESET", "TARGET"), help=argparse.SUPPRESS)
    p.add_argument("--one-ls", metavar="TARGET", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(*args.one, args.iterations, args.warmup, args.device, args.threads)))
        return 0
    if args.one_ls:
        print(json.dumps(measure_local_search(args.one_ls, args.device, args.threads)))
        return 0
    gflownet = sorted(n for n, p in PRESETS.items() if isinstance(p.agent, GFlowNetConfig))  # RL baselines: compare_rl
    presets = gflownet if args.presets == "all" else args.presets.split(",")
    targets = list(TARGETS) if args.targets == "all" else args.targets.split(",")
    for name in presets:
        if name not in PRESETS:
            p.error(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
    for name in targets:
        if name not in TARGETS:
            p.error(f"unknown target {name!r}; available: {list(TARGETS)}")
    rows = []
    print("| preset | target | ms/iteration | peak memory (MB) |\n|---|---|---|---|", flush=True)
    for preset in presets:
        for target in targets:
            common = ["--iterations", str(args.iterations), "--warmup", str(args.warmup), "--device", args.device]
            row = _subprocess([sys.executable, __file__, "--one", preset, target, *common], args.threads)
            if row is None:
                print(f"| {preset} | {target} | failed | |", flush=True)
                continue
            rows.append(row)
            print(f"| {preset} | {target} | {row['ms']:.1f} | {row['peak_mb']:.0f} |", flush=True)
    ls_targets = [] if args.ls_targets == "none" else args.ls_targets.split(",")
    ls_rows = []
    if ls_targets:
        print("\n| target | local-search call (ms) | buffer add at 600k (ms) | tb-expl-ls ms/iteration, full buffers |")
        print("|---|---|---|---|", flush=True)
    for target in ls_targets:
        row = _subprocess([sys.executable, __file__, "--one-ls", target, "--device", args.device], args.threads)
        if row is None:
            print(f"| {target} | failed | | |", flush=True)
            continue
        ls_rows.append(row)
        print(f"| {target} | {row['ls_call_ms']:.0f} | {row['add_ms']:.3f} | {row['tb_expl_ls_ms']:.1f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"presets": rows, "local_search": ls_rows}, indent=2))
    return 0


def _subprocess(cmd: list[str], threads: int | None) -> dict | None:
    if threads:
        cmd = cmd + ["--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    raise SystemExit(main())
