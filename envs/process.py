"""The diffusion process: time grid, Gaussian kernels and the Brownian-bridge reference.

This module is the one place where the maths of the MDP lives (see DESIGN.md). Everything here is a
pure, batched tensor function with no state and no knowledge of agents or environments.

Conventions
-----------
* ``T`` steps, ``dt = 1 / T``, times ``t_k = k * dt`` for ``k = 0..T``; ``x_0 = 0`` for the bridge.
* ``sigma2`` is the target's ``t_scale``: the reference diffusion has variance ``sigma2 * dt`` per step.
* Backward (reference) kernel, the Brownian bridge pinned at 0, for ``k >= 1``::

      p_B(x_k | x_{k+1}) = N( k/(k+1) * x_{k+1},  sigma2 * dt * k/(k+1) )

  and ``p_B(x_0 | x_1) = delta_0`` whose log-probability is taken as 0.
* The bridge is the time reversal of Brownian motion from 0, whose marginal at time ``t`` is
  ``N(0, sigma2 * t)``.

The variance-preserving (Ornstein-Uhlenbeck) reference is defined below (``vp_*``); ``envs.reference``
wraps both processes as selectable objects.
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


# --- time grids ------------------------------------------------------------------------------------
#
# A grid 0 = t_0 < t_1 < ... < t_T = 1 (float64, CPU) replaces the uniform t_k = k / T. Training on a fresh
# grid per batch follows the paper's code (its ``stagger`` branch, ``random_discretizer`` and
# ``shifted_equidistant``), with one grid shared by the trajectories of a batch rather than one per
# trajectory, so that a batch still has only T distinct times (one time embedding per step).


def _rand(shape, generator) -> torch.Tensor:
    device = generator.device if generator is not None else None
    return torch.rand(shape, generator=generator, device=device, dtype=torch.float64).cpu()


def uniform_grid(num_steps: int, generator=None) -> torch.Tensor:
    return time_grid(num_steps, dtype=torch.float64)


def random_grid(num_steps: int, generator=None, max_ratio: float = 10.0) -> torch.Tensor:
    """Step lengths proportional to i.i.d. U(1, max_ratio) (the paper code's ``random_discretizer``, ratio
    10): no step is more than ``max_ratio`` times another."""
    steps = 1.0 + (max_ratio - 1.0) * _rand(num_steps, generator)
    t = torch.cat([steps.new_zeros(1), steps.cumsum(0)])
    t = t / t[-1]
    t[-1] = 1.0
    return t


def low_discrepancy_grid(num_steps: int, generator=None) -> torch.Tensor:
    """The uniform grid with its interior points shifted together by one U(-1/2, 1/2) / T (the paper code's
    ``shifted_equidistant``): steps stay within [1/2, 3/2] / T, and over batches the interior times cover
    [1/(2T), 1 - 1/(2T)] evenly, one point per stratum."""
    t = (torch.arange(num_steps + 1, dtype=torch.float64) + (_rand((), generator) - 0.5)) / num_steps
    t[0], t[-1] = 0.0, 1.0
    return t


TIME_GRIDS = {"uniform": uniform_grid, "random": random_grid, "low-discrepancy": low_discrepancy_grid}


def check_time_grid(times, num_steps: int) -> torch.Tensor:
    """``times`` as a float64 CPU tensor, or a ValueError unless it is ``0 = t_0 < ... < t_T = 1`` (finite)."""
    t = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
    if t.shape != (num_steps + 1,):
        raise ValueError(f"a time grid of {num_steps} steps has {num_steps + 1} times, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or float(t[0]) != 0.0 or float(t[-1]) != 1.0:
        raise ValueError(f"a time grid runs from t_0 = 0 to t_T = 1, got {t[0].item()!r} .. {t[-1].item()!r}")
    if not bool((t[1:] > t[:-1]).all()):
        raise ValueError("a time grid must be strictly increasing")
    return t


def gaussian_log_density(sq: torch.Tensor, var, d: int) -> torch.Tensor:
    """``log N`` of a residual of squared norm ``sq`` under an isotropic Gaussian of variance ``var`` in
    ``d`` dimensions: ``-sq / 2 var - d (log var + log 2 pi) / 2``. ``var`` is a positive float or a tensor
    broadcastable to ``sq`` (one variance per row). The one place of this formula (with
    ``gaussian_log_prob``, its per-dimension form)."""
    if isinstance(var, torch.Tensor):
        return -0.5 * sq / var - 0.5 * d * (var.log() + LOG_2PI)
    return -0.5 * sq / var - 0.5 * d * (math.log(var) + LOG_2PI)


def gaussian_log_prob(x: torch.Tensor, mean, var) -> torch.Tensor:
    """Log-density of a diagonal Gaussian, summed over the last dimension.

    ``var`` is a positive float, or a tensor broadcastable to ``x`` (per-dimension or per-row
    variances); ``mean`` a tensor or a number.
    """
    if isinstance(var, torch.Tensor):
        return -0.5 * (((x - mean) ** 2 / var) + var.log() + LOG_2PI).sum(-1)
    return gaussian_log_density(((x - mean) ** 2).sum(-1), var, x.shape[-1])


def noise_std(var, extra_std: float = 0.0):
    """Sampling std of a Gaussian kernel of variance ``var`` (float or tensor) with ``extra_std^2`` added."""
    if isinstance(var, torch.Tensor):
        return (var + extra_std**2).sqrt()
    return math.sqrt(var + extra_std**2)


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
    lp = gaussian_log_density(((x_prev - mean) ** 2).sum(-1), safe_var, x_prev.shape[-1])
    return torch.where(first, torch.zeros_like(lp), lp)


def bridge_log_pb_path(states: torch.Tensor, t_scale: float, ratio=None, var=None) -> torch.Tensor:
    """Backward log-probabilities of every transition of a batch of paths.

    ``states`` has shape ``(B, T + 1, d)`` with ``states[:, 0] = 0``; returns ``(B, T)`` where entry
    ``k`` is ``log p_B(x_k | x_{k+1})`` (entry 0 is exactly 0). One vectorised expression, no loop.
    ``ratio`` and ``var`` ``(T - 1,)``: the kernels' ``t_k / t_{k+1}`` and variances for k = 1..T-1 on
    a non-uniform grid (default: the uniform grid's ``k / (k + 1)`` and ``sigma2 / T * k / (k + 1)``).
    """
    num_steps = states.shape[1] - 1
    d = states.shape[-1]
    if ratio is None:
        k = torch.arange(1, num_steps, device=states.device, dtype=states.dtype)  # k = 1..T-1
        ratio = k / (k + 1)
        var = ratio * (t_scale / num_steps)  # (T-1,)
    resid = torch.addcmul(states[:, 1:-1], states[:, 2:], ratio.unsqueeze(-1), value=-1.0)  # (B, T-1, d)
    sq = torch.linalg.vector_norm(resid, dim=-1).square()  # a norm reads once and writes nothing big
    lp = gaussian_log_density(sq, var, d)
    return torch.cat([lp.new_zeros(lp.shape[0], 1), lp], dim=1)


def bridge_sample_backward(
    x_last: torch.Tensor, num_steps: int, t_scale: float, generator: torch.Generator | None = None, times=None
) -> torch.Tensor:
    """Sample whole paths backward through the bridge from terminal states ``x_last`` ``(B, d)``.

    Returns states ``(B, T + 1, d)`` with ``states[:, T] = x_last`` and ``states[:, 0] = 0``. The chain
    of bridge kernels is the discrete Brownian motion ``W`` conditioned on its end point, so the whole
    path is drawn at once as ``x_k = W_k - t_k * (W_T - x_T)`` (``times``: a non-uniform grid).
    """
    b, d = x_last.shape
    noise = torch.randn(b, num_steps, d, generator=generator, dtype=x_last.dtype, device=x_last.device)
    if times is None:
        std = math.sqrt(t_scale / num_steps)
        frac = time_grid(num_steps, device=x_last.device, dtype=x_last.dtype).view(1, -1, 1)
    else:
        std = (t_scale * times.diff()).sqrt().to(x_last.device, x_last.dtype).view(1, -1, 1)
        frac = times.to(x_last.device, x_last.dtype).view(1, -1, 1)
    walk = torch.cat([x_last.new_zeros(b, 1, d), (noise * std).cumsum(1)], 1)
    states = walk - frac * (walk[:, -1:] - x_last.unsqueeze(1))
    states[:, -1] = x_last  # exact, free of rounding
    return states


# --- variance-preserving (Ornstein-Uhlenbeck) reference -------------------------------------------
#
# Diffusion time runs the other way from the MDP's: tau = 1 - t (tau = 0 at the data end x_T, tau = 1
# at the noise end x_0). The noising process is the VP SDE of Song et al. (2021) with stationary law
# N(0, sigma2 I):
#
#     dY = -1/2 beta(tau) Y dtau + sigma sqrt(beta(tau)) dW,   beta(tau) = beta_min + (beta_max - beta_min) tau,
#
# the linear schedule of DIS/DDS-style VP samplers (beta_min = 0.1, beta_max = 10 by default, as in
# Berner et al.'s ``vp_10``). It is linear, so its transition over [tau, tau'] is exactly Gaussian:
#
#     Y_tau' | Y_tau ~ N( exp(-B/2) Y_tau,  sigma2 (1 - exp(-B)) ),   B = int_tau^tau' beta.
#
# Step k of the MDP (x_k <- x_{k+1}) covers tau in [1 - t_{k+1}, 1 - t_k], hence the backward kernel
#
#     p_B(x_k | x_{k+1}) = N( sqrt(1 - a_k) x_{k+1},  sigma2 a_k ),   a_k = 1 - exp(-B_k),
#     B_k = int_{1 - t_{k+1}}^{1 - t_k} beta = dt * beta(1 - (t_k + t_{k+1}) / 2)   (exact: beta is linear),
#
# for every k = 0..T-1, including k = 0: x_0 is not pinned. The reference path measure starts from
# x_0 ~ p_0 = N(0, sigma2 I), the stationary law, so its marginal is N(0, sigma2 I) at every t and the
# stationary chain is reversible: its forward kernel is the same Gaussian, N(sqrt(1 - a_k) x_k, sigma2 a_k).
# Given x_T, x_k ~ N(exp(-I(1 - t_k) / 2) x_T, sigma2 (1 - exp(-I(1 - t_k)))) with I(tau) = int_0^tau beta.
#
# Log-weights with a random start: E_{p_F}[w] = Z for
#     log w = log R(x_T) + sum_k log p_B(x_k | x_{k+1}) - log p_0(x_0) - sum_k log p_F(x_{k+1} | x_k),
# since E_{p_F}[w] = int R(x_T) prod_k p_B(x_k | x_{k+1}) dx_{0:T} and the p_B integrate to 1 (x_0 first),
# so "- log p_0(x_0)" is folded into the k = 0 entry of log p_B (for the bridge both p_0 and
# p_B(x_0 | x_1) are the point mass at 0 and that entry is 0). Every objective then runs unchanged.


def check_vp_args(beta_min: float, beta_max: float) -> None:
    """Raise a ValueError naming the value unless ``0 < beta_min <= beta_max < inf``."""
    for name, value in (("beta_min", beta_min), ("beta_max", beta_max)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if beta_min > beta_max:
        raise ValueError(f"beta_min must be <= beta_max, got beta_min={beta_min!r} > beta_max={beta_max!r}")


def vp_integrated_beta(tau, beta_min: float, beta_max: float):
    """``I(tau) = int_0^tau beta = beta_min tau + (beta_max - beta_min) tau^2 / 2``."""
    return beta_min * tau + 0.5 * (beta_max - beta_min) * tau * tau


def vp_step_integrals(num_steps: int, beta_min: float, beta_max: float, times=None) -> torch.Tensor:
    """``B_k = int beta`` over MDP step k (between t_k and t_{k+1}), shape ``(T,)``, float64 on the CPU
    (``times``: a non-uniform grid)."""
    tau = 1.0 - (time_grid(num_steps, dtype=torch.float64) if times is None else times)
    big_i = vp_integrated_beta(tau, beta_min, beta_max)
    return big_i[:-1] - big_i[1:]


def vp_log_pb_path(states: torch.Tensor, rho: torch.Tensor, var: torch.Tensor, t_scale: float) -> torch.Tensor:
    """``(B, T)`` backward log-probabilities of paths ``(B, T + 1, d)`` under the VP reference.

    ``rho = sqrt(1 - a)`` and ``var = sigma2 a`` are ``(T,)`` in the states' dtype and device. Entry
    ``k`` is ``log N(x_k; rho_k x_{k+1}, var_k)``; entry 0 also carries ``- log p_0(x_0)``.
    """
    resid = states[:, :-1] - rho.unsqueeze(-1) * states[:, 1:]
    lp = gaussian_log_density(resid.square().sum(-1), var, states.shape[-1])
    log_p0 = gaussian_log_prob(states[:, 0], 0.0, t_scale)
    return torch.cat([lp[:, :1] - log_p0.unsqueeze(-1), lp[:, 1:]], dim=1)


def vp_log_pb(x_prev, x_next, k_next, rho: torch.Tensor, var: torch.Tensor, t_scale: float) -> torch.Tensor:
    """``log p_B(x_prev | x_next)`` for transitions ending at step ``k_next`` (int or integer tensor of
    shape ``x.shape[:-1]``); transitions with ``k_next == 1`` also carry ``- log p_0(x_prev)``."""
    k = torch.as_tensor(k_next, device=x_next.device) - 1
    r, v = rho[k], var[k]
    lp = gaussian_log_density((x_prev - r.unsqueeze(-1) * x_next).square().sum(-1), v, x_prev.shape[-1])
    log_p0 = gaussian_log_prob(x_prev, 0.0, t_scale)
    return torch.where(k == 0, lp - log_p0, lp)
