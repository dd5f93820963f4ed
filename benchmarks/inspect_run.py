#!/usr/bin/env python
"""Where a finished run's sampler puts its mass, beside exact samples: the measured cause of a missed cell.

    python benchmarks/inspect_run.py RUN_DIR [RUN_DIR ...] [--samples 2000] [--seed 0] [--buffers]

Each RUN_DIR is a finished run of ``scripts/benchmark.py`` or ``scripts/train_agent.py`` (read only; nothing
is written). The sampler draws ``--samples`` points (seeded), and so does the target's exact sampler; the
table gives, per target kind:

- funnel: mean and std of x0 and the mass in the neck (x0 < -3; the exact funnel has 16%);
- Gaussian mixtures (25GMM): modes holding under a quarter of their share (1 / K) and the EMC;
- Manywell: the mass of each sign of the wells' first coordinates (the light well x < 0 holds about 15.6%
  of each coordinate's mass) and the number of distinct modes among the samples.

``--buffers`` adds the same for the replay and local-search buffers of a run that has them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def describe(x, target) -> str:
    """One line of mass statistics of the points ``x`` (n, d) under ``target``'s kind."""
    from diffsampler.agents.sample_metrics import emc, manywell_mode_labels, mixture_mode_labels
    from diffsampler.envs.targets.funnel import Funnel
    from diffsampler.envs.targets.gmm import GaussianMixture
    from diffsampler.envs.targets.manywell import Manywell

    if isinstance(target, Funnel):
        x0 = x[:, 0]
        return f"x0 mean {x0.mean():+.2f}, std {x0.std():.2f}, neck (x0 < -3) {(x0 < -3).float().mean():.1%}"
    if isinstance(target, GaussianMixture):
        counts = mixture_mode_labels(x, target).bincount(minlength=target.n_modes)
        share = counts.double() / len(x)
        thin = int((share < 0.25 / target.n_modes).sum())
        return f"modes under 1/4 of their share: {thin} of {target.n_modes}, EMC {emc(x, target):.3f}"
    if isinstance(target, Manywell):
        light = (x[:, 0::2] < 0).float().mean()
        labels, _ = manywell_mode_labels(x)
        return f"light-well coordinates {light:.1%}, distinct modes {int(labels.max()) + 1} in {len(x)} points"
    return f"mean |x| {x.norm(dim=-1).mean():.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--buffers", action="store_true")
    args = p.parse_args(argv)

    import torch

    from diffsampler.agents.runs import resume

    torch.set_num_threads(1)
    exact_done = set()
    for run_dir in args.runs:
        if not (run_dir / "metrics.json").is_file():
            raise SystemExit(f"{run_dir} is not a finished run (no metrics.json)")
        agent = resume(run_dir, writable=False).agent
        target = agent.target
        key = type(target).__name__, getattr(target, "dim", None)
        if target.has_sampler and key not in exact_done:
            exact = target.sample(args.samples, torch.Generator().manual_seed(args.seed))
            print(f"exact {key[0]} (d = {key[1]}): {describe(exact, target)}")
            exact_done.add(key)
        with torch.no_grad():
            x = agent.sample(args.samples, torch.Generator().manual_seed(args.seed)).states[:, -1]
        print(f"{run_dir.name}: {describe(x, target)}")
        source = getattr(agent, "source", None)
        for name in ("replay", "ls_buffer") if args.buffers else ():
            buffer = getattr(source, name, None)
            if buffer is not None and len(buffer):
                print(f"    {name} ({len(buffer)} points): {describe(buffer.x[: len(buffer)], target)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
