#!/usr/bin/env python
"""Training speed: median ms/iteration and peak memory for presets x targets (T = 100, batch 300).

Every trained preset is timed (the GFlowNet/PIS/DDS/DIS rows, ``cmcd``, ``cmcd-lv`` and ``scld``: an SCLD
iteration is one SMC simulation of the batch and one gradient step). Each (preset, target) runs in a fresh
subprocess, so its peak memory is its own: on CPU the growth of the peak resident set over the process's
footprint after set-up (imports, model); on CUDA
``torch.cuda.max_memory_allocated``. Prints a markdown table. The median iteration of a local-search
preset leaves out the local-search call made every 100 iterations: the local-search and gradient
tables give its cost (the gradient table: log-reward + autograd gradient on 300 points, one local-search
call of tb-expl-lp-ls, and that call's share per iteration).

    python scripts/bench_speed.py                                   # all presets x all targets
    python scripts/bench_speed.py --presets tb,fl-subtb --targets manywell32 --iterations 30
    python scripts/bench_speed.py --presets tb-expl-lp-ls --targets lgcp --ls-targets none --threads 1
    python scripts/bench_speed.py --presets cmcd,cmcd-lv,scld --targets 25gmm,funnel,manywell32 --ls-targets none
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DIFFSAMPLER_DATA", str(ROOT.parent / "shared" / "data"))  # the LGCP's pines

from diffsampler.envs.registry import SHORT_NAMES  # noqa: E402

# The benchmark's short names (``envs.registry``), plus the paper's MNIST VAE from the shared data.
TARGETS = {name: SHORT_NAMES[name] for name in ("25gmm", "funnel", "manywell8", "manywell32", "manywell128")}
TARGETS |= {name: SHORT_NAMES[name] for name in ("manywell512", "lgcp", "vae")}  # "vae" reads $DIFFSAMPLER_DATA
TARGETS |= {name: SHORT_NAMES[name] for name in ("dw4", "lj13")}  # particle systems: the EGNN drift
TARGETS["vae-mnist"] = (SHORT_NAMES["vae"][0], {"data_path": str(ROOT.parent / "shared" / "data")})


def _setup(device: str, threads: int | None) -> None:
    """Threads, and on CPU the allocator setting the Trainer applies (``TrainConfig.retain_memory``)."""
    import torch

    from diffsampler.agents.runtime import retain_freed_memory

    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cpu"):
        retain_freed_memory()


def measure(preset: str, target: str, iterations: int, warmup: int, device: str, threads: int | None) -> dict:
    """Time ``iterations`` training steps after ``warmup`` ones, in this process."""
    import torch

    from diffsampler import envs
    from diffsampler.agents.presets import get_preset

    _setup(device, threads)
    env_id, kwargs = TARGETS[target]
    mdp = envs.make_mdp(env_id, device=device, **{**get_preset(preset).env_kwargs, **kwargs})
    torch.manual_seed(0)
    config = get_preset(preset).agent
    agent = _agents()[type(config)](mdp, config)
    gen = torch.Generator(device).manual_seed(0)
    cpu_gen = torch.Generator().manual_seed(0)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for it in range(warmup + iterations):
        start = time.perf_counter()
        agent.train_step(it, gen, cpu_gen)
        sync()
        if it >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024  # KiB on Linux
    return {"preset": preset, "target": target, "ms": statistics.median(times), "peak_mb": peak_mb}


def _agents() -> dict:
    """Agent-config type -> the agent class whose ``train_step`` is an iteration of that method."""
    from diffsampler.agents.gflownet import GFlowNetAgent, GFlowNetConfig
    from diffsampler.agents.scld import SCLDAgent, SCLDConfig

    return {GFlowNetConfig: GFlowNetAgent, SCLDConfig: SCLDAgent}


def measure_local_search(target: str, device: str, threads: int | None, cycles: int = 1) -> dict:
    """Local-search call (300 chains x 200 MALA steps), buffer add at capacity 600,000, and
    ``tb-expl-ls`` ms/iteration averaged over whole local-search cycles with both buffers full."""
    import torch

    from diffsampler import envs
    from diffsampler.agents.gflownet import GFlowNetAgent
    from diffsampler.agents.presets import get_preset

    _setup(device, threads)
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
    ls_ms = _timed(lambda: source.refresh(1, gen), 5, sync)
    batch, log_r = fill[:300].clone(), mdp.target.log_reward(fill[:300])
    add_ms = _timed(lambda: source.replay.add(batch, log_r), 100, sync)
    cycle = source.config.ls_cycle
    for it in range(4):  # warm-up
        agent.train_step(it, gen, cpu_gen)
    start = time.perf_counter()
    for it in range(cycle * cycles):
        agent.train_step(it, gen, cpu_gen)
    sync()
    it_ms = 1000 * (time.perf_counter() - start) / (cycle * cycles)
    return {"target": target, "ls_call_ms": ls_ms, "add_ms": add_ms, "tb_expl_ls_ms": it_ms}


def _timed(fn, repeats: int, sync) -> float:
    """Median wall time of ``fn()`` in ms."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        out.append(1000 * (time.perf_counter() - start))
    return statistics.median(out)


def measure_gradient(target: str, device: str, threads: int | None) -> dict:
    """Log-reward with its autograd gradient on a batch of 300 policy samples, and one local-search call
    of ``tb-expl-lp-ls`` (300 chains x 200 MALA steps; amortised over its cycle of 100 iterations)."""
    import torch

    from diffsampler import envs
    from diffsampler.agents.gflownet import GFlowNetAgent
    from diffsampler.agents.presets import get_preset
    from diffsampler.buffers.local_search import value_and_grad

    _setup(device, threads)
    env_id, kwargs = TARGETS[target]
    mdp = envs.make_mdp(env_id, device=device, **kwargs)
    torch.manual_seed(0)
    agent = GFlowNetAgent(mdp, get_preset("tb-expl-lp-ls").agent)
    gen = torch.Generator(device).manual_seed(0)
    agent.train_step(0, gen)  # one forward batch fills the replay buffer
    x = agent.source.replay.sample(300, gen)[0]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    grad_ms = _timed(lambda: value_and_grad(mdp.target.log_reward, x), 30, sync)
    ls_ms = _timed(lambda: agent.source.refresh(1, gen), 2, sync)
    return {"target": target, "grad_ms": grad_ms, "ls_call_ms": ls_ms, "ls_cycle": agent.source.config.ls_cycle}


def _side_table(flag: str, targets: str, args, header: str, cells) -> list[dict]:
    """One subprocess per target (``flag TARGET``), printed as a markdown table; returns the rows."""
    targets = [] if targets == "none" else targets.split(",")
    if targets:
        print(f"\n{header}\n|{'---|' * header.count(' | ')}---|", flush=True)
    rows = []
    for target in targets:
        row = _subprocess([sys.executable, __file__, flag, target, "--device", args.device], args.threads)
        if row is None:
            print(f"| {target} | failed |{' |' * (header.count(' | ') - 1)}", flush=True)
            continue
        rows.append(row)
        print(f"| {target} | {cells(row)} |", flush=True)
    return rows


def main(argv=None) -> int:
    from diffsampler.agents.presets import PRESETS

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
    p.add_argument(
        "--grad-targets",
        default="lgcp",
        help="targets of the log-reward + gradient table (comma list, or 'none'; lgcp reads $DIFFSAMPLER_DATA, "
        "default ../shared/data)",
    )
    p.add_argument("--one", nargs=2, metavar=("PRESET", "TARGET"), help=argparse.SUPPRESS)
    p.add_argument("--one-ls", metavar="TARGET", help=argparse.SUPPRESS)
    p.add_argument("--one-grad", metavar="TARGET", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(*args.one, args.iterations, args.warmup, args.device, args.threads)))
        return 0
    if args.one_ls:
        print(json.dumps(measure_local_search(args.one_ls, args.device, args.threads)))
        return 0
    if args.one_grad:
        print(json.dumps(measure_gradient(args.one_grad, args.device, args.threads)))
        return 0

    trained = sorted(n for n, pr in PRESETS.items() if type(pr.agent) in _agents())  # timed by train steps
    presets = trained if args.presets == "all" else args.presets.split(",")
    targets = list(TARGETS) if args.targets == "all" else args.targets.split(",")
    for name in presets:
        if name not in trained:
            p.error(f"unknown or untrainable preset {name!r}; available: {trained}")
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
    ls_rows = _side_table(
        "--one-ls",
        args.ls_targets,
        args,
        "| target | local-search call (ms) | buffer add at 600k (ms) | tb-expl-ls ms/iteration, full buffers |",
        lambda r: f"{r['ls_call_ms']:.0f} | {r['add_ms']:.3f} | {r['tb_expl_ls_ms']:.1f}",
    )
    grad_rows = _side_table(
        "--one-grad",
        args.grad_targets,
        args,
        "| target | log-reward + grad, batch 300 (ms) | local-search call (ms) | per iteration (ms) |",
        lambda r: f"{r['grad_ms']:.1f} | {r['ls_call_ms']:.0f} | {r['ls_call_ms'] / r['ls_cycle']:.1f}",
    )
    if args.json:
        rows_out = {"presets": rows, "local_search": ls_rows, "gradient": grad_rows}
        Path(args.json).write_text(json.dumps(rows_out, indent=2))
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
