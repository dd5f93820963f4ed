"""MCMC baselines: parallel MALA chains, and SMC / annealed importance sampling with MALA moves.

Both reuse the MALA kernel of ``buffers.local_search`` (``mala_init``, ``mala_step``,
``adapt_step_size``), are batched over chains or particles, and keep the step size and every
diagnostic on the device (no host synchronisation inside the loops). Energy evaluations are counted
exactly: one per row passed to ``target.log_reward`` (a value-and-gradient evaluation counts once).

SMC sampler (Del Moral, Doucet & Jasra 2006) on the geometric path from ``pi_0 = N(0, s^2 I)`` to R::

    gamma_k(x) = pi_0(x)^(1 - b_k) R(x)^b_k,   0 = b_0 < b_1 < ... < b_K = 1,   Z_0 = 1.

For k = 1..K: (1) reweight the particles (distributed as gamma_{k-1}) by the incremental weight
``log G_k = (b_k - b_{k-1}) (log R - log pi_0)``; the ratio Z_k / Z_{k-1} is estimated by
``sum_i W_i G_k(x_i)`` with W the normalised weights, so ``log Z_hat = sum_k log sum_i W_i G_k(x_i)``
(over one resampling epoch this telescopes to the log-mean-exp of the epoch's accumulated log-weights:
log Z_hat is the sum over epochs of those log-means); (2) resample when ESS/N drops below
``ess_threshold`` (weights then reset to uniform); (3) move every particle by ``mala_steps`` MALA
steps that leave gamma_k invariant, the step size adapted toward ``target_acceptance``. With
``ess_threshold = 0`` this is annealed importance sampling (Neal 2001). Energy evaluations:
``particles * (1 + temperatures * mala_steps)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch

from diffsampler.agents.baselines.particles import (
    RESAMPLERS,
    SCHEDULES,
    ess_fraction,
    incremental_log_weight,
    log_normaliser_increment,
    resample,
)
from diffsampler.agents.config import check_fields
from diffsampler.buffers.local_search import MALAState, adapt_step_size, mala_init, mala_step
from diffsampler.envs import process
from diffsampler.envs.targets.base import Target


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _positive_int(value, name: str, minimum: int = 1) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    _check(ok, f"{name} must be an integer >= {minimum}, got {value!r}")


def _positive_float(value, name: str, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    _check(ok, f"{name} must be a finite number > 0{' or None' if allow_none else ''}, got {value!r}")


def _acceptance(value, name: str = "target_acceptance") -> None:
    _check(isinstance(value, (int, float)) and 0 < value < 1, f"{name} must be in (0, 1), got {value!r}")


class _Counted:
    """``log_reward`` that counts the rows it evaluates (a Python int: no device sync)."""

    def __init__(self, log_reward):
        self.inner, self.count = log_reward, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.count += x.shape[0]
        return self.inner(x)


def _device(generator) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _initial(target: Target, n: int, init_var: float | None, generator) -> tuple[torch.Tensor, float]:
    var = float(target.t_scale if init_var is None else init_var)
    x = math.sqrt(var) * torch.randn(n, target.dim, generator=generator, device=_device(generator))
    return x, var


# Every MCMC method's config class, in definition order (``MCMCMethod.__init_subclass__``).
MCMC_METHODS: list[type] = []


class MCMCMethod:
    """Base of an MCMC method's config. A subclass registers itself in ``MCMC_METHODS`` and gets a runner
    (``agents.baselines.mcmc_runs.MCMCRunner``) on first use: defining it and giving it a preset
    (``agents.presets``) makes a method of the CLI and the benchmark.

    ``budget_field``: the config field a run's budget sets. ``sample(target, generator, eval_samples,
    repeats, monitor)`` runs the method and returns ``(metrics, sample_sets)``: the log-weight keys of
    ``agents.metrics`` (None where the method has no estimate) plus diagnostics, and up to ``repeats``
    sets of ``eval_samples`` samples for the sample metrics. ``monitor(step, x)``, where given, is called
    with the current samples after every step that has samples of the target (MALA chains; not SMC,
    whose intermediate particles target the tempered densities).
    """

    budget_field: ClassVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        MCMC_METHODS.append(cls)

    def sample(
        self, target: Target, generator: torch.Generator, eval_samples: int, repeats: int = 1, monitor=None
    ) -> tuple[dict, list[torch.Tensor]]:
        raise NotImplementedError

    def budget_for_energy(self, energy: int) -> int:
        """The largest ``budget_field`` value whose run spends at most ``energy`` target evaluations."""
        raise NotImplementedError


# --- SMC / AIS --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SMCConfig(MCMCMethod):
    """SMC sampler / annealed importance sampling with MALA moves.

    Attributes:
        particles: number of particles N.
        temperatures: annealing steps K (b_1..b_K = 1; b_0 = 0 is the initial distribution). The run's
            budget (``--iterations``) sets this.
        mala_steps: MALA steps per temperature (0: no moves, plain sequential importance resampling).
        step_size: initial MALA step size eta (then adapted, carried from one temperature to the next).
        adapt_step_size: adapt eta after every MALA step toward ``target_acceptance`` (factor 1.05).
        target_acceptance: 0.574, optimal for MALA.
        ess_threshold: resample when ESS/N falls below this; 0 never (AIS), 1 at every temperature.
        resampling: a ``RESAMPLERS`` name: systematic, stratified or multinomial.
        schedule: a ``SCHEDULES`` name for b_1..b_K: linear, or geometric (log-spaced from ``beta_min``).
        beta_min: first inverse temperature of the geometric schedule.
        init_var: variance s^2 of the initial distribution N(0, s^2 I); None: the target's ``t_scale``.
    """

    budget_field: ClassVar[str] = "temperatures"

    particles: int = 2000
    temperatures: int = 200
    mala_steps: int = 5
    step_size: float = 0.1
    adapt_step_size: bool = True
    target_acceptance: float = 0.574
    ess_threshold: float = 0.5
    resampling: str = "systematic"
    schedule: str = "linear"
    beta_min: float = 1e-3
    init_var: float | None = None

    def __post_init__(self):
        check_fields(self)
        _positive_int(self.particles, "particles", 2)
        _positive_int(self.temperatures, "temperatures")
        _positive_int(self.mala_steps, "mala_steps", 0)
        _positive_float(self.step_size, "step_size")
        _acceptance(self.target_acceptance)
        ok = isinstance(self.ess_threshold, (int, float)) and not isinstance(self.ess_threshold, bool)
        ok = ok and 0 <= self.ess_threshold <= 1
        _check(ok, f"ess_threshold must be in [0, 1], got {self.ess_threshold!r}")
        _check(
            self.resampling in RESAMPLERS, f"unknown resampling {self.resampling!r}; available: {sorted(RESAMPLERS)}"
        )
        _check(self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; available: {sorted(SCHEDULES)}")
        _check(
            isinstance(self.beta_min, float) and 0 < self.beta_min < 1,
            f"beta_min must be in (0, 1), got {self.beta_min!r}",
        )
        _positive_float(self.init_var, "init_var", allow_none=True)

    @property
    def energy_evaluations(self) -> int:
        return self.particles * (1 + self.temperatures * self.mala_steps)

    def budget_for_energy(self, energy: int) -> int:
        """Temperatures K with ``particles * (1 + K * mala_steps) <= energy`` (the particles are kept)."""
        k = (energy // self.particles - 1) // max(self.mala_steps, 1)
        _check(k >= 1, f"{energy} energy evaluations are below one SMC temperature of {self.particles} particles")
        return k

    def sample(
        self, target: Target, generator: torch.Generator, eval_samples: int, repeats: int = 1, monitor=None
    ) -> tuple[dict, list[torch.Tensor]]:
        """log Z is the SMC estimate (``log_z_rw`` the same number); ``repeats`` sets of ``eval_samples``
        resampled independently by the final weights (from the same particles)."""
        out = smc(target, self, generator)
        log_z = float(out.log_z)
        delta = None if target.log_Z is None else abs(target.log_Z - log_z)
        result = {"log_z": log_z, "log_z_rw": log_z, "delta_log_z": delta, "delta_log_z_rw": delta, "eubo": None}
        result |= {"ess": float(out.ess[-1]), "acceptance_rate": float(out.acceptance.mean())}
        result |= {"final_step_size": float(out.step_size[-1]), "resampling_events": int(out.resampled.sum())}
        result["min_ess"] = float(out.ess.min())
        sets = [out.x[resample(out.log_w, eval_samples, self.resampling, generator)] for _ in range(repeats)]
        return result, sets


class SMCResult(NamedTuple):
    x: torch.Tensor  # (N, d) particles after the final moves
    log_w: torch.Tensor  # (N,) float64 normalised log-weights (logsumexp 0)
    log_z: torch.Tensor  # () float64 estimate of log Z
    betas: list[float]  # (K + 1) inverse temperatures b_0 = 0 .. b_K = 1
    ess: torch.Tensor  # (K,) ESS/N after each reweighting, before resampling
    resampled: torch.Tensor  # (K,) bool
    acceptance: torch.Tensor  # (K,) mean MALA acceptance probability at each temperature
    step_size: torch.Tensor  # (K,) step size at the end of each temperature
    energy_evaluations: int


def smc(target: Target, config: SMCConfig = SMCConfig(), generator: torch.Generator | None = None) -> SMCResult:
    """Run the SMC sampler of ``config`` on ``target``; particles live on the generator's device."""
    c = config
    log_reward = _Counted(target.log_reward)
    x0, var = _initial(target, c.particles, c.init_var, generator)
    log_base = functools.partial(process.gaussian_log_prob, mean=0.0, var=var)  # log N(x; 0, var I)
    betas = SCHEDULES[c.schedule](c.temperatures, c.beta_min)
    state = mala_init(log_reward, x0)
    n, device = c.particles, x0.device
    arange = torch.arange(n, device=device)
    log_w = torch.zeros(n, dtype=torch.float64, device=device)
    log_z = torch.zeros((), dtype=torch.float64, device=device)
    eta = torch.tensor(c.step_size, device=device, dtype=x0.dtype)
    ess, resampled, acceptance, step_sizes = [], [], [], []
    for k in range(1, len(betas)):
        log_inc = incremental_log_weight(betas[k] - betas[k - 1], state.log_r, log_base(state.x))
        log_z = log_z + log_normaliser_increment(log_w, log_inc)
        log_w = log_w + log_inc
        log_w = log_w - torch.logsumexp(log_w, 0)  # keep normalised (the increments are shift-invariant)
        ess.append(ess_fraction(log_w))
        do = ess[-1] < c.ess_threshold if c.ess_threshold < 1 else torch.ones((), dtype=torch.bool, device=device)
        idx = torch.where(do, resample(log_w, n, c.resampling, generator), arange)
        state = MALAState(*(t[idx] for t in state))
        log_w = torch.where(do, torch.full_like(log_w, -math.log(n)), log_w)
        resampled.append(do)
        rate = torch.zeros((), device=device, dtype=x0.dtype)
        for _ in range(c.mala_steps):
            state, info = mala_step(state, log_reward, eta, generator, betas[k], log_base)
            if c.adapt_step_size:
                eta = adapt_step_size(eta, info.acceptance_rate, c.target_acceptance)
            rate = rate + info.acceptance_rate / c.mala_steps
        acceptance.append(rate)
        step_sizes.append(eta)
    return SMCResult(
        state.x,
        log_w,
        log_z,
        betas,
        torch.stack(ess),
        torch.stack(resampled),
        torch.stack(acceptance),
        torch.stack(step_sizes),
        log_reward.count,
    )


# MALA chains live in their own module; importing them here registers them with MCMC_METHODS whenever this
# module is imported, and keeps ``from diffsampler.agents.baselines.mcmc import MALAChainConfig`` working.
from diffsampler.agents.baselines.mala import MALAChainConfig, MALAChainResult, mala_chains  # noqa: E402

__all__ = [
    "MCMC_METHODS",
    "MCMCMethod",
    "SMCConfig",
    "SMCResult",
    "smc",
    "MALAChainConfig",
    "MALAChainResult",
    "mala_chains",
]
