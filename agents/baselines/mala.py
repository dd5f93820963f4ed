"""Parallel MALA chains: independent chains targeting R, batched over chains (a baseline of ``agents.baselines``).

The MALA kernel is ``buffers.local_search``'s; the config is an ``MCMCMethod`` (registered on definition),
run by ``agents.baselines.mcmc_runs`` like SMC. Energy evaluations: ``chains * (1 + steps)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch

from diffsampler.agents.baselines.mcmc import (
    MCMCMethod,
    _acceptance,
    _check,
    _Counted,
    _initial,
    _positive_float,
    _positive_int,
)
from diffsampler.agents.config import check_fields
from diffsampler.buffers.local_search import adapt_step_size, mala_init, mala_step
from diffsampler.envs.targets.base import Target


@dataclass(frozen=True)
class MALAChainConfig(MCMCMethod):
    """Independent parallel MALA chains targeting R, started from N(0, s^2 I).

    Attributes:
        chains: number of chains.
        steps: MALA steps per chain in total (the run's budget, ``--iterations``).
        burn_in: steps discarded before samples are kept; None: ``steps // 2``.
        thin: keep every ``thin``-th post-burn-in state.
        step_size: initial MALA step size eta.
        adapt_step_size: adapt eta toward ``target_acceptance`` during burn-in only (then frozen, so
            the kept samples come from one fixed, target-invariant kernel).
        target_acceptance: 0.574, optimal for MALA.
        init_var: variance s^2 of the initial distribution; None: the target's ``t_scale``.
    """

    budget_field: ClassVar[str] = "steps"

    chains: int = 2000
    steps: int = 1000
    burn_in: int | None = None
    thin: int = 10
    step_size: float = 0.1
    adapt_step_size: bool = True
    target_acceptance: float = 0.574
    init_var: float | None = None

    def __post_init__(self):
        check_fields(self)
        _positive_int(self.chains, "chains")
        _positive_int(self.steps, "steps")
        _positive_int(self.thin, "thin")
        if self.burn_in is not None:
            _positive_int(self.burn_in, "burn_in", 0)
            _check(
                self.burn_in < self.steps, f"need burn_in < steps, got burn_in={self.burn_in!r}, steps={self.steps!r}"
            )
        _positive_float(self.step_size, "step_size")
        _acceptance(self.target_acceptance)
        _positive_float(self.init_var, "init_var", allow_none=True)

    @property
    def burn_in_steps(self) -> int:
        return self.steps // 2 if self.burn_in is None else self.burn_in

    @property
    def energy_evaluations(self) -> int:
        return self.chains * (1 + self.steps)

    def budget_for_energy(self, energy: int) -> int:
        """Steps with ``chains * (1 + steps) <= energy`` (the chains are kept)."""
        steps = energy // self.chains - 1
        _check(steps >= 1, f"{energy} energy evaluations are below one MALA step of {self.chains} chains")
        return steps

    def sample(
        self, target: Target, generator: torch.Generator, eval_samples: int, repeats: int = 1, monitor=None
    ) -> tuple[dict, list[torch.Tensor]]:
        """Samples only (no log Z): the final states of the first ``eval_samples`` chains and, for
        ``repeats`` > 1, their kept states before it (``thin`` steps apart, so correlated with it), as many
        as were kept (at most ``repeats`` sets)."""
        out = mala_chains(target, self, generator, monitor)
        result = dict.fromkeys(("log_z", "log_z_rw", "delta_log_z", "delta_log_z_rw", "eubo", "ess"))
        result["acceptance_rate"] = float(out.acceptance[self.burn_in_steps :].mean())
        result["final_step_size"] = float(out.step_size)
        kept = out.samples.shape[0]
        return result, [out.samples[-1 - r, :eval_samples] for r in range(min(repeats, kept))]


class MALAChainResult(NamedTuple):
    samples: torch.Tensor  # (S, chains, d) kept states, S = ceil((steps - burn_in) / thin)
    log_r: torch.Tensor  # (S, chains)
    acceptance: torch.Tensor  # (steps,) mean acceptance probability of each step
    step_size: torch.Tensor  # () the (frozen) step size after burn-in
    energy_evaluations: int


def mala_chains(
    target: Target,
    config: MALAChainConfig = MALAChainConfig(),
    generator: torch.Generator | None = None,
    monitor: Callable[[int, torch.Tensor], None] | None = None,
) -> MALAChainResult:
    """Run ``config.chains`` parallel MALA chains on ``target``; keep thinned post-burn-in states.
    ``monitor(step, x)`` sees the chains' states after every step (1-based)."""
    c = config
    log_reward = _Counted(target.log_reward)
    x0, _ = _initial(target, c.chains, c.init_var, generator)
    state = mala_init(log_reward, x0)
    eta = torch.tensor(c.step_size, device=x0.device, dtype=x0.dtype)
    kept_x, kept_r, rates = [], [], []
    for i in range(c.steps):
        state, info = mala_step(state, log_reward, eta, generator)
        rates.append(info.acceptance_rate)
        if i < c.burn_in_steps:
            if c.adapt_step_size:
                eta = adapt_step_size(eta, info.acceptance_rate, c.target_acceptance)
        elif (i - c.burn_in_steps) % c.thin == 0:
            kept_x.append(state.x)
            kept_r.append(state.log_r)
        if monitor is not None:
            monitor(i + 1, state.x)
    return MALAChainResult(torch.stack(kept_x), torch.stack(kept_r), torch.stack(rates), eta, log_reward.count)
