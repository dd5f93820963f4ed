"""Gaussian mixtures with equal weights and isotropic components: 25GMM, 9GMM and 40GMM."""

from __future__ import annotations

import itertools
import math

import torch

from diffsampler.envs.process import LOG_2PI
from diffsampler.envs.targets.base import Target, check_dim, like


class GaussianMixture(Target):
    """Equal-weight mixture of ``N(mu_i, var * I)``; normalised, so ``log_Z = 0``."""

    log_Z = 0.0

    def __init__(self, means: torch.Tensor, var: float, t_scale: float = 5.0, plot_bounds=None):
        if means.dim() != 2:
            raise ValueError(f"means must have shape (n_modes, dim), got {tuple(means.shape)}")
        if not var > 0:
            raise ValueError(f"component variance must be > 0, got {var!r}")
        self.means = means.to(torch.float32)
        self.var = float(var)
        self.dim = means.shape[1]
        self.t_scale = t_scale
        self.plot_bounds = plot_bounds

    @property
    def n_modes(self) -> int:
        return self.means.shape[0]

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self._log_components(x)[0], dim=-1) - math.log(self.n_modes)

    def log_reward_and_score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``log_reward`` and its gradient in closed form: ``(sum_k w_k mu_k - x) / var`` with ``w`` the modes'
        posterior weights (a softmax of the components' log-densities)."""
        log_comp, mu = self._log_components(x)
        lse = torch.logsumexp(log_comp, dim=-1, keepdim=True)
        weights = torch.exp(log_comp - lse)
        return lse.squeeze(-1) - math.log(self.n_modes), (weights @ mu - x) / self.var

    def _log_components(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The components' log-densities at ``x`` (B, n_modes), and the means on ``x``'s device and dtype."""
        mu = like(self.means, x)
        sq = (x.unsqueeze(-2) - mu).square().sum(-1)
        return -0.5 * sq / self.var - 0.5 * self.dim * (math.log(self.var) + LOG_2PI), mu

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        probs = torch.full((self.n_modes,), 1.0 / self.n_modes)
        modes = torch.multinomial(probs, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator)
        return self.means[modes] + math.sqrt(self.var) * noise


def _grid_means(values) -> torch.Tensor:
    return torch.tensor(list(itertools.product(values, values)), dtype=torch.float32)


def gmm25(t_scale: float = 5.0) -> GaussianMixture:
    """25 modes at {-10, -5, 0, 5, 10}^2, covariance 0.3 I (the paper's 25GMM)."""
    return GaussianMixture(_grid_means([-10.0, -5.0, 0.0, 5.0, 10.0]), 0.3, t_scale, (-15.0, 15.0))


def gmm9(t_scale: float = 5.0) -> GaussianMixture:
    """9 modes at {-5, 0, 5}^2, std 0.5477 (variance 0.3)."""
    return GaussianMixture(_grid_means([-5.0, 0.0, 5.0]), 0.5477**2, t_scale, (-8.0, 8.0))


def gmm40(dim: int = 50, seed: int = 0, t_scale: float = 5.0) -> GaussianMixture:
    """40GMM: 40 equal-weight unit-covariance Gaussians, means uniform in [-40, 40]^dim (d = 50 by default).

    The sampler literature's convention (Midgley et al.'s FAB 2-D target; Blessing et al. 2024 and the
    paper's code in d = 50): means ``40 * U(-1, 1)`` drawn once with a fixed seed, scale 1 in every
    coordinate. Ours are drawn by ``torch.Generator().manual_seed(seed)`` (float64, then float32), so
    the family and its difficulty match but not the other codes' particular draw. Normalised: log Z = 0.
    ``t_scale`` 5 as for the other GMMs.
    """
    check_dim(dim)
    gen = torch.Generator().manual_seed(seed)
    means = 40.0 * (2.0 * torch.rand(40, dim, generator=gen, dtype=torch.float64) - 1.0)
    return GaussianMixture(means, 1.0, t_scale, (-50.0, 50.0))
