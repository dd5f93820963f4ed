"""Neal's funnel: x0 ~ N(0, s^2), x_{1..d-1} | x0 ~ N(0, exp(x0) I)."""

from __future__ import annotations

import math

import torch

from diffsampler.envs.process import LOG_2PI
from diffsampler.envs.targets.base import Target, check_dim


class Funnel(Target):
    """Normalised funnel density (``log_Z = 0``). ``scale`` is the std of x0: 3 (Funnel) or 1 (EasyFunnel)."""

    log_Z = 0.0

    def __init__(self, dim: int = 10, scale: float = 3.0, t_scale: float = 1.0):
        self.dim = check_dim(dim)
        if dim < 2:
            raise ValueError(f"the funnel needs dim >= 2, got {dim!r}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        self.scale = float(scale)
        self.t_scale = t_scale
        self.plot_bounds = (-10.0, 10.0)

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        return self._terms(x)[0]

    def log_reward_and_score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``log_reward`` and its gradient in closed form: ``d/dx0 = -x0 / s^2 - n/2 + |rest|^2 exp(-x0) / 2``,
        ``d/drest = -rest exp(-x0)``, with the same guards (0 where ``rest == 0``, never 0 * inf)."""
        log_r, x0, half, scaled, quad = self._terms(x)
        grad0 = -x0 / self.scale**2 - 0.5 * (x.shape[-1] - 1) + 0.5 * quad
        # where rest == 0, half is 1 and scaled is 0: the product is (signed) zero without a ``where``
        return log_r, torch.cat([grad0.unsqueeze(-1), torch.mul(scaled, half).neg_()], dim=-1)

    def _terms(self, x: torch.Tensor):
        """``(log R, x0, exp(-x0 / 2) (1 where rest == 0), rest exp(-x0 / 2), sum rest^2 exp(-x0))``.

        ``rest^2 exp(-x0)`` is computed as ``(rest exp(-x0/2))^2``, so that a huge ``|rest|`` with a huge x0
        gives 0 rather than inf * 0 = NaN. Where rest == 0, x0 is replaced by 0 before the ``exp``: the term is
        then exactly 0 even if exp(-x0) would overflow, and so is its (autograd or closed-form) gradient.
        Written in few operators: the Langevin kernels call this at every step of every rollout."""
        x0, rest = x[..., 0], x[..., 1:]
        log_p0 = -0.5 * (x0 / self.scale).square() - math.log(self.scale) - 0.5 * LOG_2PI
        half = torch.exp(-0.5 * torch.where(rest != 0, x0.unsqueeze(-1), 0.0))
        scaled = rest * half
        quad = scaled.square().sum(-1)
        n = rest.shape[-1]
        return log_p0 - 0.5 * quad - 0.5 * n * (x0 + LOG_2PI), x0, half, scaled, quad

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        x0 = self.scale * torch.randn(n, 1, generator=generator)
        rest = torch.exp(0.5 * x0) * torch.randn(n, self.dim - 1, generator=generator)
        return torch.cat([x0, rest], dim=1)


def funnel(dim: int = 10, t_scale: float = 1.0) -> Funnel:
    """The paper's funnel: d = 10, x0 ~ N(0, 9)."""
    return Funnel(dim, scale=3.0, t_scale=t_scale)


def easy_funnel(dim: int = 10, t_scale: float = 1.0) -> Funnel:
    """A milder funnel: x0 ~ N(0, 1)."""
    return Funnel(dim, scale=1.0, t_scale=t_scale)
