"""Local search in the target space: parallel MALA chains with an adapted step size.

The kernel is a pure ``mala_init`` / ``mala_step`` pair over a ``MALAState`` (positions, log-rewards,
gradients): one log-reward-and-gradient evaluation per step, the accepted proposals' values reused.
Step-size adaptation lives outside the state (``local_search``), toward acceptance 0.574.

Target: ``pi(x) ∝ R(x)^beta``, or with a base density ``pi_0`` (an annealing path, as in SMC)
``pi(x) ∝ R(x)^beta pi_0(x)^(1 - beta)``. Proposal ``x' = x + eta * grad log pi(x) + sqrt(2 eta) * eps``.
Only ``log R`` counts as an energy evaluation; the base is a cheap analytic density.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from diffsampler.agents.config import check_fields, check_finite


class MALAState(NamedTuple):
    x: torch.Tensor  # (B, d)
    log_r: torch.Tensor  # (B,)
    grad: torch.Tensor  # (B, d): grad of log R at x


class MALAInfo(NamedTuple):
    accepted: torch.Tensor  # (B,) bool
    acceptance_rate: torch.Tensor  # scalar: mean acceptance probability


def value_and_grad(log_reward, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log R(x), grad log R(x))`` without keeping any graph; non-finite gradients become 0."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        log_r = log_reward(xg)
        (grad,) = torch.autograd.grad(log_r.sum(), xg)
    return log_r.detach(), torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


def mala_init(log_reward, x: torch.Tensor) -> MALAState:
    return MALAState(x.detach(), *value_and_grad(log_reward, x))


def mala_step(
    state: MALAState,
    log_reward,
    step_size: float | torch.Tensor,
    generator=None,
    beta: float | torch.Tensor = 1.0,
    log_base=None,
) -> tuple[MALAState, MALAInfo]:
    """One Metropolis-adjusted Langevin step of every chain.

    ``log_base`` (optional, a differentiable ``(B, d) -> (B,)`` callable): tempers toward
    ``R^beta pi_0^(1 - beta)`` instead of ``R^beta``. The state keeps ``log R`` and its gradient either way.
    """
    x, log_r, grad = state
    eta = step_size
    # shift = eta * grad log pi, written as eta * beta * grad without a base (bit-identical to before)
    if log_base is None:
        shift = eta * beta * grad
    else:
        base, base_grad = value_and_grad(log_base, x)
        shift = eta * (beta * grad + (1 - beta) * base_grad)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    prop = x + shift + (2 * eta) ** 0.5 * noise
    prop_log_r, prop_grad = value_and_grad(log_reward, prop)
    log_ratio = beta * (prop_log_r - log_r)
    if log_base is None:
        prop_shift = eta * beta * prop_grad
    else:
        prop_base, prop_base_grad = value_and_grad(log_base, prop)
        prop_shift = eta * (beta * prop_grad + (1 - beta) * prop_base_grad)
        log_ratio = log_ratio + (1 - beta) * (prop_base - base)
    # log q(x' | x) - log q(x | x'), with q(b | a) = N(b; a + shift(a), 2 eta I)
    fwd = (prop - x - shift).square().sum(-1)
    bwd = (x - prop - prop_shift).square().sum(-1)
    log_alpha = log_ratio + (fwd - bwd) / (4 * eta)
    log_alpha = torch.nan_to_num(log_alpha, nan=-math.inf)
    u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
    accept = u.log() < log_alpha
    keep = accept.unsqueeze(-1)
    new = MALAState(
        torch.where(keep, prop, x), torch.where(accept, prop_log_r, log_r), torch.where(keep, prop_grad, grad)
    )
    return new, MALAInfo(accept, log_alpha.clamp(max=0).exp().mean())


def adapt_step_size(
    step_size: torch.Tensor, acceptance_rate: torch.Tensor, target: float, factor: float = 1.05
) -> torch.Tensor:
    """Multiply the step size by ``factor`` when the acceptance rate exceeded ``target``, else divide.

    Device tensors in and out: no host synchronisation.
    """
    return step_size * torch.where(acceptance_rate > target, factor, 1 / factor)


LS_KEEP = ("accepted", "all")


@dataclass(frozen=True)
class LocalSearchConfig:
    """Local search (parallel MALA) settings.

    Attributes:
        ls_steps: MALA steps per call (the paper: 200).
        ls_burn_in: steps before samples are kept (100).
        ls_step_size: initial step size eta.
        ls_adapt: adapt eta toward ``ls_target_acceptance`` (multiplicatively, every step).
        ls_target_acceptance: 0.574, optimal for MALA.
        ls_beta: inverse temperature of the local-search target ``R^beta``.
        ls_keep: which post-burn-in states go to the buffer. "accepted" (the paper's code, Sendera et al.
            2024, ``langevin.py``): only the states of accepted proposals, so every kept point is new, but
            regions where proposals are often rejected are under-represented (on the funnel, started from
            exact samples, none of the kept states lies in the neck x0 < -3, which holds 16% of the mass).
            "all": every chain's state at every post-burn-in step, a rejection repeating the state, which
            is the chains' own (unbiased in the limit) Markov-chain sample.
    """

    ls_steps: int = 200
    ls_burn_in: int = 100
    ls_step_size: float = 0.1
    ls_adapt: bool = True
    ls_target_acceptance: float = 0.574
    ls_beta: float = 1.0
    ls_keep: str = "accepted"

    def __post_init__(self):
        check_fields(self)
        if self.ls_keep not in LS_KEEP:
            raise ValueError(f"ls_keep must be one of {LS_KEEP}, got {self.ls_keep!r}")
        if not 0 <= self.ls_burn_in < self.ls_steps:
            raise ValueError(f"need 0 <= ls_burn_in < ls_steps, got {self.ls_burn_in!r} and {self.ls_steps!r}")
        check_finite(self, "ls_step_size", "ls_beta")
        if not 0 < self.ls_target_acceptance < 1:
            raise ValueError(f"ls_target_acceptance must be in (0, 1), got {self.ls_target_acceptance!r}")


class LocalSearchResult(NamedTuple):
    x: torch.Tensor  # (M, d) accepted post-burn-in states
    log_r: torch.Tensor  # (M,)
    acceptance_rate: float  # mean acceptance probability after burn-in
    step_size: float  # final step size
    chain: torch.Tensor | None = None  # (M,) the chain (row of x0) each kept state comes from


def local_search(
    log_reward, x0: torch.Tensor, config: LocalSearchConfig = LocalSearchConfig(), generator=None, step_size=None
) -> LocalSearchResult:
    """Run parallel MALA chains from ``x0``; keep every post-burn-in accepted state (``ls_keep="accepted"``)
    or every post-burn-in state (``"all"``).

    With ``ls_adapt``, the step size is multiplied by 1.05 after a step whose mean acceptance
    probability exceeded the target, and divided by 1.05 otherwise. ``step_size`` overrides the
    config's initial value (e.g. to carry the adapted value from one call to the next).
    """
    c = config
    state = mala_init(log_reward, x0)
    # The step size stays a device tensor and accepted states are selected once at the end: no host
    # synchronisation inside the chain loop.
    eta = torch.tensor(c.ls_step_size if step_size is None else step_size, device=x0.device, dtype=x0.dtype)
    kept_x, kept_r, kept_mask, rates = [], [], [], []
    for i in range(c.ls_steps):
        state, info = mala_step(state, log_reward, eta, generator, c.ls_beta)
        if c.ls_adapt:
            eta = adapt_step_size(eta, info.acceptance_rate, c.ls_target_acceptance)
        if i >= c.ls_burn_in:
            kept_x.append(state.x)
            kept_r.append(state.log_r)
            kept_mask.append(info.accepted)
            rates.append(info.acceptance_rate)
    x, log_r = torch.stack(kept_x).flatten(0, 1), torch.stack(kept_r).flatten()
    chain = torch.arange(x0.shape[0], device=x0.device).repeat(len(kept_x))
    if c.ls_keep == "accepted":
        mask = torch.stack(kept_mask).flatten()
        x, log_r, chain = x[mask], log_r[mask], chain[mask]
    return LocalSearchResult(x, log_r, float(torch.stack(rates).mean()), float(eta), chain)
