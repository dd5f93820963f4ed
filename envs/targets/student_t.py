"""Mixture of product Student-t distributions: heavy tails and many modes in high dimension."""

from __future__ import annotations

import math

import torch

from diffsampler.envs.targets.base import Target, check_dim, like


class StudentTMixture(Target):
    """Equal-weight mixture of K components; in component k the coordinates are independent Student-t,
    ``x_j = means[k, j] + scale * t_df``. Normalised, so ``log_Z = 0``.

    Args:
        means: (K, d) component locations.
        df: degrees of freedom, a positive integer (the exact sampler draws chi-square variables as sums
            of ``df`` squared normals, so that it stays seeded by a ``torch.Generator``).
        scale: scale of every coordinate.
    """

    log_Z = 0.0

    def __init__(self, means: torch.Tensor, df: int = 2, scale: float = 1.0, t_scale: float = 5.0, plot_bounds=None):
        if means.dim() != 2:
            raise ValueError(f"means must have shape (n_modes, dim), got {tuple(means.shape)}")
        if isinstance(df, bool) or not isinstance(df, int) or df < 1:
            raise ValueError(f"df must be a positive integer, got {df!r}")
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        self.means = means.to(torch.float32)
        self.df, self.scale = df, float(scale)
        self.dim = means.shape[1]
        self.t_scale = t_scale
        self.plot_bounds = plot_bounds
        nu = float(df)
        # log density of one coordinate at its location: the per-coordinate constant.
        self._log_c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi) - math.log(scale)

    @property
    def n_modes(self) -> int:
        return self.means.shape[0]

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.unsqueeze(-2) - like(self.means, x)) / (self.scale * math.sqrt(self.df))  # (B, K, d)
        # log(1 + z^2) as 2 log hypot(1, z): finite (and NaN-free) even where z^2 overflows.
        log_kernel = 2.0 * torch.log(torch.hypot(torch.ones_like(z), z)).sum(-1)
        log_comp = self.dim * self._log_c - 0.5 * (self.df + 1) * log_kernel
        return torch.logsumexp(log_comp, dim=-1) - math.log(self.n_modes)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        probs = torch.full((self.n_modes,), 1.0 / self.n_modes)
        modes = torch.multinomial(probs, n, replacement=True, generator=generator)
        normal = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        chi2 = torch.randn(n, self.dim, self.df, generator=generator, dtype=torch.float64).square().sum(-1)
        t = normal / torch.sqrt(chi2 / self.df)
        return (self.means[modes].double() + self.scale * t).to(torch.float32)


def student_t_mixture(
    dim: int = 50, n_modes: int = 10, df: int = 2, seed: int = 0, t_scale: float = 5.0
) -> StudentTMixture:
    """The mixture of Student-t of Blessing et al. (2024, "Beyond ELBOs"): 10 equal-weight components of
    independent t_2 coordinates with unit scale, locations uniform in [-10, 10]^d (d = 50), drawn once
    with ``torch.Generator().manual_seed(seed)`` (so not the other codes' particular draw).
    Heavy tails: df = 2 has no finite variance. ``t_scale`` 5 as for the GMMs."""
    check_dim(dim)
    check_dim(n_modes, name="n_modes")
    gen = torch.Generator().manual_seed(seed)
    means = 10.0 * (2.0 * torch.rand(n_modes, dim, generator=gen, dtype=torch.float64) - 1.0)
    return StudentTMixture(means, df, 1.0, t_scale, (-20.0, 20.0))
