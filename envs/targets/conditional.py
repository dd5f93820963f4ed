"""Conditional targets: a family of unnormalised densities R(x | c), one per condition c.

A conditional target is what amortised inference samples from: for a VAE, the latent posterior
p(z | image) ∝ p(z) p(image | z), with the image as the condition. It extends the Target contract:

* ``cond_dim``: the size of a (flattened) condition;
* ``conditions`` ``(N, cond_dim)``: the conditions training draws from;
* ``eval_conditions`` ``(M, cond_dim)``: the conditions evaluation averages over;
* ``log_reward(x, condition)``: batched and broadcasting over leading dims, ``x`` ``(..., d)`` with
  ``condition`` ``(..., cond_dim)`` -> ``(...)``; differentiable in ``x``, never NaN for finite ``x``;
* ``condition_bounds``: (low, high) of condition entries (for observation spaces), or None.

``log_Z`` is None (each condition has its own normaliser, unknown). ``bind(condition)`` gives an
ordinary unconditional Target for one batch of conditions, which is how samplers, local search and
the Langevin parametrisation see it.
"""

from __future__ import annotations

import torch

from diffsampler.envs.targets.base import Target


class ConditionalTarget(Target):
    """Base class of conditional targets (see the module docstring for the contract)."""

    cond_dim: int
    conditions: torch.Tensor
    eval_conditions: torch.Tensor
    condition_bounds: tuple[float, float] | None = None

    def log_reward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        raise NotImplementedError

    def bind(self, condition: torch.Tensor) -> BoundTarget:
        """The unconditional target ``x -> log R(x | condition)`` (rows of ``x`` and ``condition`` pair up)."""
        return BoundTarget(self, condition)

    def check_condition(self, condition: torch.Tensor) -> torch.Tensor:
        """Validate a batch of conditions ``(..., cond_dim)`` (shape and finiteness; one host sync)."""
        if not isinstance(condition, torch.Tensor) or condition.dim() < 1 or condition.shape[-1] != self.cond_dim:
            shape = tuple(condition.shape) if isinstance(condition, torch.Tensor) else type(condition).__name__
            raise ValueError(f"{self!r}: a condition must have shape (..., {self.cond_dim}), got {shape}")
        if not bool(torch.isfinite(condition).all()):
            raise ValueError(f"{self!r}: conditions must be finite")
        return condition

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, cond_dim={self.cond_dim}, conditions={len(self.conditions)})"


class BoundTarget(Target):
    """A conditional target with its condition fixed: ``log_reward(x) = parent.log_reward(x, condition)``.

    ``condition`` broadcasts against ``x``'s leading dims (``(B, c)`` for ``x`` ``(B, d)``; ``(B, 1, c)``
    for whole paths ``(B, T, d)``).
    """

    def __init__(self, parent: ConditionalTarget, condition: torch.Tensor):
        self.parent, self.condition = parent, condition
        self.dim, self.t_scale, self.plot_bounds = parent.dim, parent.t_scale, parent.plot_bounds

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parent.log_reward(x, self.condition)

    def __repr__(self) -> str:
        return f"{self.parent!r} given conditions {tuple(self.condition.shape)}"


def is_conditional(target) -> bool:
    return isinstance(target, ConditionalTarget)
