"""A user-defined energy: the 2-D banana (twisted Gaussian of Haario et al., 1999).

    x1 ~ N(0, s^2),   x2 | x1 ~ N(b (x1^2 - s^2), 1)

so ``log R(x) = -x1^2 / (2 s^2) - (x2 - b (x1^2 - s^2))^2 / 2`` (energy ``E = -log R``), with exact
``log Z = log(2 pi s)`` and exact samples. ``s`` (``scale``) sets the width, ``b`` (``curvature``) the
bend. The defaults (s = 2, b = 0.25) give a crescent over about [-6, 6] x [-2, 8].

Use it without installing anything, by an import path, from the project root:

    import gymnasium, diffsampler.envs
    env = gymnasium.make("DiffSampler-Custom-v0", target="examples/banana.py:banana")
    env = gymnasium.make("DiffSampler-Custom-v0", target="examples/banana.py:make_banana", curvature=0.5)
    mdp = diffsampler.envs.make_mdp("DiffSampler-Custom-v0", target="examples.banana:banana")

or on the command line: ``python scripts/train_agent.py --env DiffSampler-Custom-v0 --target
examples/banana.py:banana``. ``banana`` is a Target instance; ``make_banana`` a function returning one
(keyword arguments pass through). Any log-density written with torch operations works the same way:
``Target.from_function(log_prob, dim, ...)``.
"""

from __future__ import annotations

import math

import torch

from diffsampler.envs.targets import Target


def make_banana(scale: float = 2.0, curvature: float = 0.25) -> Target:
    """The banana density with width ``scale`` (s > 0) and bend ``curvature`` (b)."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")

    def log_prob(x: torch.Tensor) -> torch.Tensor:  # (B, 2) -> (B,)
        x1, x2 = x[:, 0], x[:, 1]
        return -0.5 * (x1 / scale) ** 2 - 0.5 * (x2 - curvature * (x1**2 - scale**2)) ** 2

    def sample(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, 2, generator=generator)
        x1 = scale * z[:, 0]
        return torch.stack([x1, curvature * (x1**2 - scale**2) + z[:, 1]], dim=-1)

    return Target.from_function(
        log_prob,
        dim=2,
        log_Z=math.log(2 * math.pi * scale),
        sample=sample,
        t_scale=5.0,  # the reference's spread sigma^2: about the target's (x1 has variance s^2 = 4)
        plot_bounds=(-8.0, 8.0),
        name=f"banana(s={scale:g}, b={curvature:g})",
    )


banana = make_banana()
