"""The diffusion process: time grid, Gaussian kernels and the Brownian-bridge reference.

This module is the one place where the maths of the MDP lives (see DESIGN.md). Everything here is a
pure, batched tensor function with no state and no knowledge of agents or environments.

Conventions
-----------
* ``T`` steps, ``dt = 1 / T``, times ``t_k = k * dt`` for ``k = 0..T``; ``x_0 = 0``.
* ``sigma2`` is the target's ``t_scale``: the reference diffusion has variance ``sigma2 * dt`` per step.
* Backward (reference) kernel, the Brownian bridge pinned at 0, for ``k >= 1``::

      p_B(x_k | x_{k+1}) = N( k/(k+1) * x_{k+1},  sigma2 * dt * k/(k+1) )

  and ``p_B(x_0 | x_1) = delta_0`` whose log-probability is taken as 0.
* The bridge is the time reversal of Brownian motion from 0, whose marginal at time ``t`` is
  ``N(0, sigma2 * t)``.
"""

from __future__ import annotations

import math
import numbers

import torch

LOG_2PI = math.log(2.0 * math.pi)


def check_process_args(num_steps: int, t_scale: float) -> None:
    """Raise a ValueError naming the value when ``num_steps`` or ``t_scale`` is invalid."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 1:
        raise ValueError(f"num_steps (T) must be an integer >= 1, got {num_steps!r}")
    if isinstance(t_scale, bool) or not isinstance(t_scale, numbers.Real):
        raise ValueError(f"t_scale (sigma^2) must be a finite number > 0, got {t_scale!r}")
    if not math.isfinite(t_scale) or t_scale <= 0:
        raise ValueError(f"t_scale (sigma^2) must be a finite number > 0, got {t_scale!r}")


def time_grid(num_steps: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Times ``t_k = k / T`` for ``k = 0..T``, shape ``(T + 1,)``."""
    return torch.arange(num_steps + 1, device=device, dtype=dtype) / num_steps


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, var) -> torch.Tensor:
    """Log-density of a diagonal Gaussian, summed over the last dimension.

    ``var`` is a tensor broadcastable to ``x`` (per-dimension variances) or a positive float.
    """
    d = x.shape[-1]
    if isinstance(var, torch.Tensor):
        return -0.5 * (((x - mean) ** 2 / var) + var.log() + LOG_2PI).sum(-1)
    return -0.5 * ((x - mean) ** 2).sum(-1) / var - 0.5 * d * (math.log(var) + LOG_2PI)


def bridge_backward_params(x_next: torch.Tensor, k_next, num_steps: int, t_scale: float):
    """Mean and variance of ``p_B(x_k | x_{k+1})`` given ``x_{k+1}`` at step index ``k + 1 = k_next``.

    ``k_next`` is an int, or an integer tensor of shape ``x_next.shape[:-1]``. Returns ``mean`` shaped
    like ``x_next`` and ``var`` shaped like ``k_next`` (zero where ``k_next == 1``: the point mass at 0).
    """
    k = torch.as_tensor(k_next, device=x_next.device).to(x_next.dtype)
    ratio = (k - 1) / k
    return ratio.unsqueeze(-1) * x_next, ratio * (t_scale / num_steps)


def bridge_log_pb(x_prev: torch.Tensor, x_next: torch.Tensor, k_next, num_steps: int, t_scale: float):
    """``log p_B(x_prev | x_next)`` for transitions ending at step ``k_next``; shape ``x.shape[:-1]``.

    Transitions with ``k_next == 1`` (back to the origin) have log-probability 0.
    """
    mean, var = bridge_backward_params(x_next, k_next, num_steps, t_scale)
    first = var <= 0
    safe_var = torch.where(first, torch.ones_like(var), var)
    d = x_prev.shape[-1]
    lp = -0.5 * ((x_prev - mean) ** 2).sum(-1) / safe_var - 0.5 * d * (safe_var.log() + LOG_2PI)
    return torch.where(first, torch.zeros_like(lp), lp)


def bridge_log_pb_path(states: torch.Tensor, t_scale: float) -> torch.Tensor:
    """Backward log-probabilities of every transition of a batch of paths.

    ``states`` has shape ``(B, T + 1, d)`` with ``states[:, 0] = 0``; returns ``(B, T)`` where entry
    ``k`` is ``log p_B(x_k | x_{k+1})`` (entry 0 is exactly 0). One vectorised expression, no loop.
    """
    num_steps = states.shape[1] - 1
    d = states.shape[-1]
    k = torch.arange(1, num_steps, device=states.device, dtype=states.dtype)  # k = 1..T-1
    ratio = (k / (k + 1)).unsqueeze(-1)  # (T-1, 1)
    var = ratio.squeeze(-1) * (t_scale / num_steps)  # (T-1,)
    resid = states[:, 1:-1] - ratio * states[:, 2:]  # (B, T-1, d)
    lp = -0.5 * (resid**2).sum(-1) / var - 0.5 * d * (var.log() + LOG_2PI)
    return torch.cat([lp.new_zeros(lp.shape[0], 1), lp], dim=1)


def bridge_sample_backward(
    x_last: torch.Tensor, num_steps: int, t_scale: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sample whole paths backward through the bridge from terminal states ``x_last`` ``(B, d)``.

    Returns states ``(B, T + 1, d)`` with ``states[:, T] = x_last`` and ``states[:, 0] = 0``. The chain
    of bridge kernels is the discrete Brownian motion ``W`` conditioned on its end point, so the whole
    path is drawn at once as ``x_k = W_k - (k / T) * (W_T - x_T)``.
    """
    b, d = x_last.shape
    noise = torch.randn(b, num_steps, d, generator=generator, dtype=x_last.dtype, device=x_last.device)
    walk = torch.cat([x_last.new_zeros(b, 1, d), (noise * math.sqrt(t_scale / num_steps)).cumsum(1)], 1)
    frac = time_grid(num_steps, device=x_last.device, dtype=x_last.dtype).view(1, -1, 1)
    states = walk - frac * (walk[:, -1:] - x_last.unsqueeze(1))
    states[:, -1] = x_last  # exact, free of rounding
    return states


def reference_marginal_log_prob(x: torch.Tensor, t, t_scale: float) -> torch.Tensor:
    """``log N(x; 0, sigma2 * t I)``, the reference process's marginal at time ``t > 0``."""
    var = t_scale * t
    return gaussian_log_prob(x, torch.zeros_like(x), var)
