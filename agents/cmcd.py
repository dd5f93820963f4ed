"""Controlled Monte Carlo Diffusions (CMCD): annealed Langevin kernels with a learned control, as a forward and a
backward kernel of the trajectory engine (``envs.engine``).

Sources: Vargas, Grathwohl & Doucet (ICLR 2024), "Transport meets variational inference: Controlled Monte Carlo
Diffusions" (the controlled Langevin SDE between the annealed densities and its Euler-Maruyama discretisation with
the matching reverse kernel); the discretisation, network and schedules follow the CMCD code as the SCLD authors
run it (Chen et al., ICLR 2025, github.com/anonymous3141/SCLD, ``algorithms/cmcd/cmcd_rnd.py`` and
``algorithms/scld/is_weights.py``; also Blessing et al.'s github.com/DenisBless/variational_sampling_methods,
``algorithms/cmcd``). Written for this library, not copied.

Annealing path (geometric): ``pi_b(x) ∝ p_0(x)^(1 - b) R(x)^b`` from ``p_0 = N(0, sigma^2 I)``, the initial law of the
MDP's variance-preserving reference (``reference="vp"``: the engine draws ``x_0 ~ p_0`` and folds ``- log p_0(x_0)``
into the log-weight), to the target ``R``. Levels ``b_k = b(t_k)``, ``b(0) = 0``, ``b(1) = 1``: ``"linear"``
(``b(t) = t``) or ``"learned"`` (``b_k = sum_{j<k} softplus(a_j) / sum_j softplus(a_j)``: monotone by construction,
the parametrisation of the CMCD/SCLD code; ``a = 0`` starts it linear; on another grid ``b`` is interpolated
linearly between the training grid's knots).

Step k (``x_k -> x_{k+1}``, length ``dt_k``) anneals to level ``b_{k+1}`` (the AIS convention of Neal (2001) and of
the CMCD code's ``betas(step)``) with step size ``delta_k = step_scale * g(t_k) * dt_k`` (``g``: ``STEP_SCHEDULES``;
``step_scale``, None: the target's sigma^2, is the squared diffusion coefficient of the Langevin SDE
``dX = sigma_L^2 (grad log pi + u) dt + sigma_L sqrt(2) dW``), times ``exp(rho(t_k))`` with ``learn_step_size``
(``rho``: one learned value per training step, zero at first, interpolated on other grids):

    F_k(x_{k+1} | x_k) = N(x_k     + delta_k (s_{k+1}(x_k)     + u(x_k, t_k)),         2 delta_k I)
    B_k(x_k | x_{k+1}) = N(x_{k+1} + delta_k (s_{k+1}(x_{k+1}) - u(x_{k+1}, t_{k+1})), 2 delta_k I)

with ``s_b = grad log pi_b = b clip(grad log R) - (1 - b) x / sigma^2``. The control is the "PIS-grad" network of
the CMCD code, ``u(x, t) = clip(NN(x, t)) + NN(t) s``, both last layers zero at first: with ``u = 0`` F and B are
the unadjusted Langevin kernel of ``pi_{b_{k+1}}`` both ways, i.e. annealed importance sampling with ULA forward
kernels and reverse-ULA backward kernels. The engine's log-weight
``log R(x_T) + sum_k log B_k - log p_0(x_0) - sum_k log F_k`` is CMCD's importance weight (its mean the ELBO); the
backward kernel shares the control (no network of its own) and takes the score at ``x_{k+1}`` (``score_clip``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from diffsampler.agents.networks import JointNet, LangevinScaleNet
from diffsampler.envs import process


def _cosine(t: torch.Tensor) -> torch.Tensor:
    """The SCLD code's cosine noise schedule, squared (step sizes go with sigma_t^2): ``sigma(t) ∝ cos^2(pi/2 (t + s)
    / (1 + s)) + r`` with ``s = 0.008``, ``r = 0.01`` (its ``sigma_min / sigma_max`` at ``sigma_max = 1``), scaled to 1
    at ``t = 0``: large steps near the prior, small ones near the target."""
    s, r = 0.008, 0.01
    sigma = torch.cos(0.5 * math.pi * (t + s) / (1 + s)).square() + r
    return (sigma / (math.cos(0.5 * math.pi * s / (1 + s)) ** 2 + r)).square()


# name -> g(t) for times t (T,) in [0, 1): the shape of the step sizes over the trajectory.
STEP_SCHEDULES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "constant": torch.ones_like,
    "cosine": _cosine,
}
ANNEALING = ("linear", "learned")


@dataclass(frozen=True)
class CMCDConfig:
    """The annealing and step sizes of the ``"cmcd"`` kernel (``PolicyConfig.kernel``).

    Attributes:
        annealing: "linear" (``b(t) = t``) or "learned" (a monotone schedule: normalised cumulative softplus of one
            learned increment per step, initialised linear).
        step_scale: ``sigma_L^2``, the squared diffusion coefficient of the Langevin SDE: step sizes
            ``delta_k = step_scale * g(t_k) * dt_k``; None: the target's ``t_scale`` (the variance of p_0).
        step_schedule: ``g``, a key of ``STEP_SCHEDULES``: "constant" or "cosine" (the SCLD code's).
        learn_step_size: learn a log-multiplier of every step size (initialised 0).
    """

    annealing: str = "linear"
    step_scale: float | None = None
    step_schedule: str = "constant"
    learn_step_size: bool = False

    def __post_init__(self):
        if self.annealing not in ANNEALING:
            raise ValueError(f"CMCDConfig.annealing must be one of {ANNEALING}, got {self.annealing!r}")
        ok = self.step_scale is None or (
            isinstance(self.step_scale, (int, float)) and math.isfinite(self.step_scale) and self.step_scale > 0
        )
        if not ok or isinstance(self.step_scale, bool):
            raise ValueError(f"CMCDConfig.step_scale must be None or a finite number > 0, got {self.step_scale!r}")
        if self.step_schedule not in STEP_SCHEDULES:
            raise ValueError(
                f"unknown CMCDConfig.step_schedule {self.step_schedule!r}; registered: {sorted(STEP_SCHEDULES)}"
            )


class CMCDContext(NamedTuple):
    """Per-grid quantities of one rollout or scoring: control-network time embeddings and score weights at
    ``t_0..t_T`` (``(T + 1, hidden)``, ``(T + 1, 1 or d)``), levels ``b_1..b_T`` and step sizes ``delta_0..delta_{T-1}``
    (``(T,)`` each)."""

    t_emb: torch.Tensor
    scale: torch.Tensor
    beta: torch.Tensor
    step: torch.Tensor


def interpolate(t: torch.Tensor, knots: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of ``values`` at ``knots`` (increasing, (K,)) at times ``t``, constant beyond
    the ends; differentiable in ``values``."""
    i = (torch.searchsorted(knots, t, right=True) - 1).clamp(0, knots.shape[0] - 2)
    w = ((t - knots[i]) / (knots[i + 1] - knots[i])).clamp(0.0, 1.0)
    return values[i] + w * (values[i + 1] - values[i])


class CMCDKernel(nn.Module):
    """CMCD's forward kernel (a Gaussian kernel of the engine); ``backward`` is the matching reverse kernel.

    Built like ``agents.policy.DiffusionPolicy`` from ``(dim, T, sigma^2, PolicyConfig, reference)``: the control is
    ``JointNet`` (``hidden_dim``, ``harmonics``, ``joint_layers``, output clipped at ``clip_output``) plus
    ``LangevinScaleNet`` (``langevin_layers``, ``langevin_per_dim``) times the annealed score; ``clip_score`` clips
    ``grad log R``; ``config.cmcd`` sets annealing and step sizes.
    """

    gaussian = True

    def __init__(self, dim: int, num_steps: int, t_scale: float, config, reference=None, cond_dim=None, target=None):
        super().__init__()  # ``target`` unused: the control is the MLP of PIS-grad (``config.network`` is not read)
        if cond_dim:
            raise ValueError("the 'cmcd' kernel is not defined for conditional targets")
        if reference is None or not reference.random_start or reference.name != "vp":
            name = getattr(reference, "name", None)
            raise ValueError(
                f"the 'cmcd' kernel anneals from the VP reference's p_0 = N(0, sigma^2 I): make the env with "
                f"reference='vp' (got {name!r})"
            )
        if (reference.num_steps, reference.t_scale) != (num_steps, float(t_scale)):
            raise ValueError(f"{reference!r} does not match num_steps={num_steps}, t_scale={t_scale}")
        c, cm = config, config.cmcd
        self.dim, self.num_steps, self.t_scale, self.config = dim, num_steps, float(t_scale), c
        self.reference = reference
        self.step_scale = self.t_scale if cm.step_scale is None else float(cm.step_scale)
        self.net = JointNet(dim, dim, c.hidden_dim, c.harmonics, c.joint_layers, True)
        self.langevin_scale = LangevinScaleNet(
            dim if c.langevin_per_dim else 1, c.hidden_dim, c.harmonics, c.langevin_layers, 0.0
        )
        self.beta_logits = nn.Parameter(torch.zeros(num_steps)) if cm.annealing == "learned" else None
        self.log_step = nn.Parameter(torch.zeros(num_steps)) if cm.learn_step_size else None
        self.register_buffer("times", process.time_grid(num_steps))
        self.backward = CMCDBackward(self)

    @property
    def score_clip(self) -> float:
        return self.config.clip_score

    # --- schedules ----------------------------------------------------------------------------------

    def levels(self, times: torch.Tensor) -> torch.Tensor:
        """The annealing levels ``b(t)`` at ``times`` ``(K,)`` (exactly the knots on the training grid)."""
        if self.beta_logits is None:
            return times
        inc = nn.functional.softplus(self.beta_logits)
        knots = torch.cat([inc.new_zeros(1), inc[:-1].cumsum(0) / inc.sum(), inc.new_ones(1)])  # b_0 = 0, b_T = 1
        if times.shape == self.times.shape and torch.equal(times, self.times):
            return knots
        return interpolate(times, self.times, knots)

    def step_sizes(self, times: torch.Tensor) -> torch.Tensor:
        """``delta_k`` ``(T,)`` of the grid ``times`` ``(T + 1,)``."""
        t = times[:-1]
        delta = self.step_scale * STEP_SCHEDULES[self.config.cmcd.step_schedule](t) * times.diff()
        if self.log_step is None:
            return delta
        own = times.shape == self.times.shape and torch.equal(times, self.times)
        rho = self.log_step if own else interpolate(t, self.times[:-1], self.log_step)
        return delta * rho.exp()

    def context(self, condition=None, reference=None) -> CMCDContext:
        times = self.times if reference is None else reference.grid_like(self.times)
        return CMCDContext(
            self.net.embed_time(times), self.langevin_scale(times), self.levels(times)[1:], self.step_sizes(times)
        )

    def log_density(self, log_r: torch.Tensor, x: torch.Tensor, k: int, ctx: CMCDContext) -> torch.Tensor:
        """``log gamma_k(x) = b_k log R(x) + (1 - b_k) log p_0(x)``, the unnormalised annealed density at level
        ``b_k`` (``gamma_0 = p_0``, ``gamma_T = R``), given ``log_r = log R(x)``."""
        log_p0 = self.reference.initial_log_prob(x)
        if k == 0:
            return log_p0
        b = ctx.beta[k - 1]
        return b * log_r + (1 - b) * log_p0

    # --- the kernels --------------------------------------------------------------------------------

    def _terms(self, x, step, ctx: CMCDContext, score, offset: int):
        """``(annealed score s, control u, delta)`` at rows ``x`` of ``step`` (int, None: all T, or a slice), the
        network at ``t_{k + offset}`` (0: the forward kernel's ``t_k``; 1: the backward kernel's ``t_{k+1}``)."""
        if isinstance(step, int):
            emb, scale = ctx.t_emb[step + offset], ctx.scale[step + offset]
            beta, delta = ctx.beta[step], ctx.step[step]
        else:  # None (every step) or a slice of steps: rows (B, len, d)
            a, b, _ = (slice(None) if step is None else step).indices(ctx.beta.shape[0])
            emb, scale = ctx.t_emb[a + offset : b + offset], ctx.scale[a + offset : b + offset]
            beta, delta = ctx.beta[a:b].unsqueeze(-1), ctx.step[a:b].unsqueeze(-1)
        s = beta * score - (1 - beta) * x / self.t_scale
        clip = self.config.clip_output
        u = self.net(x, emb).clamp(-clip, clip) + scale * s
        return s, u, delta

    def transition(self, x, step, ctx: CMCDContext, score=None):
        """Mean and variance of ``F_k(. | x)`` (the engine's ``ForwardKernel.transition``)."""
        s, u, delta = self._terms(x, step, ctx, score, 0)
        return x + delta * (s + u), 2 * delta

    def backward_transition(self, x_next, steps, ctx: CMCDContext, score=None):
        """Mean and variance of ``B_k(. | x_next)``."""
        s, u, delta = self._terms(x_next, steps, ctx, score, 1)
        return x_next + delta * (s - u), 2 * delta

    def fixed_std(self, extra_std: float, ctx: CMCDContext) -> torch.Tensor:
        """Sampling std of every step, ``sqrt(2 delta_k + extra_std^2)`` ``(T, 1, 1)``."""
        return (2 * ctx.step + extra_std**2).sqrt().view(-1, 1, 1)


class CMCDBackward:
    """CMCD's reverse Langevin kernel ``B_k``: a backward kernel of the engine sharing the forward kernel's control
    (no parameters of its own). It takes the clipped score at ``x_{k+1}`` (``score_clip``)."""

    def __init__(self, kernel: CMCDKernel):
        self.kernel = kernel

    @property
    def score_clip(self) -> float:
        return self.kernel.score_clip

    def context(self, condition=None, reference=None) -> CMCDContext:
        return self.kernel.context(condition, reference)

    def transition(self, x_next, steps, ctx: CMCDContext, score=None):
        return self.kernel.backward_transition(x_next, steps, ctx, score)
