"""An analytic isotropic Gaussian, unnormalised so that log Z is non-trivial: a sanity-check target."""

from __future__ import annotations

import math

import torch

from diffsampler.envs.process import LOG_2PI
from diffsampler.envs.targets.base import Target, check_dim


class Gaussian(Target):
    """``log R(x) = -||x - mean||^2 / (2 std^2)``, so ``log Z = (d/2) log(2 pi std^2)``."""

    def __init__(self, dim: int = 2, mean: float = 0.0, std: float = 1.0, t_scale: float = 1.0):
        self.dim = check_dim(dim)
        if not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
            raise ValueError(f"std must be a finite number > 0, got {std!r}")
        if not (isinstance(mean, (int, float)) and math.isfinite(mean)):
            raise ValueError(f"mean must be a finite number, got {mean!r}")
        self.mean = float(mean)
        self.std = float(std)
        self.t_scale = t_scale
        self.log_Z = 0.5 * dim * (LOG_2PI + 2 * math.log(std))
        self.plot_bounds = (self.mean - 4 * self.std, self.mean + 4 * self.std)

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * (x - self.mean).square().sum(-1) / self.std**2

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean + self.std * torch.randn(n, self.dim, generator=generator)
