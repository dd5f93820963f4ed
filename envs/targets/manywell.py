"""Manywell: d/2 independent double wells, log R = sum_pairs(-a^4 + 6 a^2 + 0.5 a - 0.5 b^2)."""

from __future__ import annotations

import functools
import math

import torch

from diffsampler.envs.process import LOG_2PI
from diffsampler.envs.targets.base import Target, check_dim

# Z of one well's first coordinate: integral of exp(-a^4 + 6 a^2 + 0.5 a) over R.
WELL_Z = 11784.50927


def _well_log_density(a: torch.Tensor) -> torch.Tensor:
    a2 = a.square()
    # -a^4 + 6 a^2 written as -a^2 (a^2 - 6): when a^2 overflows to inf this is -inf, not inf - inf = NaN.
    return -a2 * (a2 - 6.0) + 0.5 * a


@functools.lru_cache(maxsize=1)
def _well_inverse_cdf_table(lo: float = -5.0, hi: float = 5.0, n: int = 200_001):
    """Grid and normalised CDF of the well's first coordinate (float64, trapezoid rule).

    Mass outside [-5, 5] is below exp(-370): nothing a float64 CDF can resolve.
    """
    grid = torch.linspace(lo, hi, n, dtype=torch.float64)
    dens = torch.exp(_well_log_density(grid) - _well_log_density(torch.tensor(1.7, dtype=torch.float64)))
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), ((dens[1:] + dens[:-1]) / 2).cumsum(0)])
    return grid, cdf / cdf[-1]


class Manywell(Target):
    """Product of d/2 two-dimensional double wells (any even ``dim``; default 32)."""

    def __init__(self, dim: int = 32, t_scale: float = 1.0):
        self.dim = check_dim(dim, even=True)
        self.t_scale = t_scale
        self.log_Z = (dim // 2) * (math.log(WELL_Z) + 0.5 * LOG_2PI)
        self.plot_bounds = (-3.0, 3.0)

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[..., 0::2], x[..., 1::2]
        return (_well_log_density(a) - 0.5 * b.square()).sum(-1)

    def log_reward_and_score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``log_reward`` and its gradient ``(-4 a^3 + 12 a + 1/2, -b)`` per well, in closed form."""
        a, b = x[..., 0::2], x[..., 1::2]
        grad = torch.empty_like(x)
        grad[..., 0::2] = a * (-4.0 * a.square() + 12.0) + 0.5  # like the density: inf, never inf - inf
        torch.neg(b, out=grad[..., 1::2])
        return (_well_log_density(a) - 0.5 * b.square()).sum(-1), grad

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact samples: inverse CDF (piecewise linear, 2e5-point grid) for the first coordinate of
        each well, a standard normal for the second."""
        grid, cdf = _well_inverse_cdf_table()
        wells = self.dim // 2
        u = torch.rand(n * wells, generator=generator, dtype=torch.float64)
        idx = torch.searchsorted(cdf, u).clamp(1, len(grid) - 1)
        c0, c1 = cdf[idx - 1], cdf[idx]
        frac = (u - c0) / (c1 - c0).clamp_min(1e-300)
        a = grid[idx - 1] + frac * (grid[idx] - grid[idx - 1])
        b = torch.randn(n * wells, generator=generator, dtype=torch.float64)
        return torch.stack([a, b], -1).reshape(n, self.dim).to(torch.float32)
