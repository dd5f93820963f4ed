"""Particle-method building blocks: annealing schedules, resampling schemes, ESS, SMC weights.

Pure batched tensor functions (registries ``SCHEDULES`` and ``RESAMPLERS``) over the last dimension (the
particles), so a leading batch of independent particle systems works unchanged (SCLD's batched runs); the SMC
sampler that uses them is ``agents.baselines.mcmc.smc``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _linear(k: int, beta_min: float) -> list[float]:
    return [i / k for i in range(k + 1)]


def _geometric(k: int, beta_min: float) -> list[float]:
    """0, then ``beta_min`` ... 1 evenly spaced in log beta (finer steps where the path changes fastest)."""
    if k == 1:
        return [0.0, 1.0]
    return [0.0] + [beta_min ** (1 - i / (k - 1)) for i in range(k)]


# name -> (temperatures K, beta_min) -> [b_0 = 0, b_1, ..., b_K = 1] (host floats: no device sync)
SCHEDULES: dict[str, Callable[[int, float], list[float]]] = {"linear": _linear, "geometric": _geometric}


def _by_positions(w: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Indices i with cdf[i-1] <= position < cdf[i] (inverse-CDF lookup of sorted or unsorted positions)."""
    cdf = torch.cumsum(w, -1)
    cdf = cdf / cdf[..., -1:]
    return torch.searchsorted(cdf, positions, right=True).clamp_(max=w.shape[-1] - 1)


def _systematic(w: torch.Tensor, n: int, generator) -> torch.Tensor:
    u = torch.rand(w.shape[:-1] + (1,), generator=generator, device=w.device, dtype=w.dtype)
    return _by_positions(w, (torch.arange(n, device=w.device, dtype=w.dtype) + u) / n)


def _stratified(w: torch.Tensor, n: int, generator) -> torch.Tensor:
    u = torch.rand(w.shape[:-1] + (n,), generator=generator, device=w.device, dtype=w.dtype)
    return _by_positions(w, (torch.arange(n, device=w.device, dtype=w.dtype) + u) / n)


def _multinomial(w: torch.Tensor, n: int, generator) -> torch.Tensor:
    return torch.multinomial(w, n, replacement=True, generator=generator)


# name -> (normalised weights (..., N), n, generator) -> (..., n) ancestor indices with E[count_i] = n w_i
RESAMPLERS: dict[str, Callable] = {"systematic": _systematic, "stratified": _stratified, "multinomial": _multinomial}


def resample(log_w: torch.Tensor, n: int, scheme: str = "systematic", generator=None) -> torch.Tensor:
    """``n`` ancestor indices drawn by ``scheme`` from unnormalised log-weights ``log_w`` (..., N)."""
    if scheme not in RESAMPLERS:
        raise ValueError(f"unknown resampling scheme {scheme!r}; available: {sorted(RESAMPLERS)}")
    w = torch.softmax(log_w.to(torch.float64), -1)
    return RESAMPLERS[scheme](w, n, generator)


def ess_fraction(log_w: torch.Tensor) -> torch.Tensor:
    """Normalised effective sample size ``(sum w)^2 / (N sum w^2)`` from log-weights, in [1/N, 1]."""
    return torch.exp(2 * torch.logsumexp(log_w, -1) - torch.logsumexp(2 * log_w, -1)) / log_w.shape[-1]


def incremental_log_weight(delta_beta: float, log_r: torch.Tensor, log_base: torch.Tensor) -> torch.Tensor:
    """``log G_k = (b_k - b_{k-1}) (log R - log pi_0)`` at the particles (float64)."""
    return delta_beta * (log_r.to(torch.float64) - log_base.to(torch.float64))


def log_normaliser_increment(log_w: torch.Tensor, log_inc: torch.Tensor) -> torch.Tensor:
    """``log sum_i W_i G_i`` with ``W = softmax(log_w)``: the estimate of log Z_k - log Z_{k-1}."""
    return torch.logsumexp(log_w + log_inc, -1) - torch.logsumexp(log_w, -1)
