"""Sequential Controlled Langevin Diffusions (SCLD): CMCD's process run as a sequential Monte Carlo sampler.

Source: Chen, Richter, Berner, Blessing, Neumann & Anandkumar, "Sequential Controlled Langevin Diffusions" (ICLR
2025): Sec. 3-4 and Algorithm 1 (training with a buffer), and the authors' code (github.com/anonymous3141/SCLD,
``algorithms/scld``) for what the paper leaves open. Written for this library, not copied.

The T steps are cut into S segments ``[a_j, b_j)`` of ``L = T / S`` steps. N particles start at ``x_0 ~ p_0`` with
equal weights. For each segment they are moved by the CMCD forward kernel (``agents.cmcd``; the engine's segment
rollout ``mdp.rollout(..., start=x, steps=(a, b))``) and reweighted by the segment's incremental weight

    log G_j = log gamma_b(x_b) - log gamma_a(x_a) + sum_{k=a}^{b-1} [log B_k(x_k | x_{k+1}) - log F_k(x_{k+1} | x_k)]

(``gamma_k = p_0^(1 - b_k) R^b_k``, unnormalised; ``mdp.score`` of the segment gives log F and log B). The SMC
estimate ``log Z-hat = sum_j log sum_i W_i G_j(x^i)`` (W: the normalised weights) is unbiased in Z. When ESS / N
falls below ``ess_threshold`` the particles are resampled (weights reset); ``mala_steps`` MALA steps leaving
``pi_{b_j}`` invariant then refine them at each segment end (``buffers.local_search``; the paper's code uses HMC
there). With S = 1, no resampling and no MALA this is CMCD with the log-variance loss.

Training (Algorithm 1): each iteration simulates N particles as above, adds their S sub-trajectories with their log
G to the prioritised buffer (``buffers.segments``), draws N/2 per segment from it (``∝ exp(log G)``) and joins N/2
of the fresh ones, re-scores all under the current sampler and minimises the mean over segments of the batch
variance of log G_j (in VarGrad form, ``agents.objectives.vargrad``: the same gradient); the re-scored log-weights
of the drawn entries replace theirs in the buffer. The annealing schedule is learned by default (the code's
``schedule_type: learnt``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from diffsampler.agents.baselines.particles import RESAMPLERS, ess_fraction, log_normaliser_increment, resample
from diffsampler.agents.cmcd import CMCDConfig
from diffsampler.agents.guard import TrainingGuard, gradient_norm
from diffsampler.agents.kernels import make_kernel
from diffsampler.agents.objectives import vargrad
from diffsampler.agents.policy import PolicyConfig
from diffsampler.buffers.local_search import adapt_step_size, mala_init, mala_step
from diffsampler.buffers.segments import SegmentBuffer
from diffsampler.envs.engine import Paths, clipped_score, log_weight


def _scld_policy() -> PolicyConfig:
    return PolicyConfig(kernel="cmcd", cmcd=CMCDConfig(annealing="learned"))


@dataclass(frozen=True)
class SCLDConfig:
    """SCLD's sampler and training.

    Attributes:
        policy: the CMCD kernel (``kernel="cmcd"``; annealing learned by default).
        batch_size: particles N of a training simulation (the training batch of sub-trajectories per segment).
        segments: sub-trajectories S per trajectory (must divide T; the paper's code uses 4 on most targets).
        ess_threshold: resample when ESS / N falls below this at a segment end (0: never, i.e. no SMC).
        resampling: a ``RESAMPLERS`` name: systematic, stratified or multinomial.
        mala_steps: MALA steps leaving the segment end's annealed density invariant (0: none).
        mala_step_size: initial MALA step size of each segment end (then adapted in training simulations).
        mala_acceptance: target acceptance of that adaptation (0.574, optimal for MALA).
        buffer_batches: buffer capacity in batches per segment (the paper's 20); 0: train on fresh sub-trajectories.
        buffer_temperature: prioritisation ``∝ exp(log w / temperature)``.
        lr_policy: Adam learning rate of the control, the annealing schedule and (if learned) the step sizes.
        grad_clip: clip the gradient norm to this (the paper's code: 1); None: no clipping.
    """

    policy: PolicyConfig = field(default_factory=_scld_policy)
    batch_size: int = 300
    segments: int = 4
    ess_threshold: float = 0.3
    resampling: str = "systematic"
    mala_steps: int = 1
    mala_step_size: float = 0.01
    mala_acceptance: float = 0.574
    buffer_batches: int = 20
    buffer_temperature: float = 1.0
    lr_policy: float = 1e-3
    grad_clip: float | None = 1.0

    def __post_init__(self):
        if self.policy.kernel != "cmcd":
            raise ValueError(f"SCLD runs the 'cmcd' kernel; got PolicyConfig.kernel={self.policy.kernel!r}")
        for name, low in (("batch_size", 2), ("segments", 1), ("mala_steps", 0), ("buffer_batches", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"SCLDConfig.{name} must be an integer >= {low}, got {value!r}")
        if not (isinstance(self.ess_threshold, (int, float)) and 0 <= self.ess_threshold <= 1):
            raise ValueError(f"SCLDConfig.ess_threshold must be in [0, 1], got {self.ess_threshold!r}")
        if self.resampling not in RESAMPLERS:
            raise ValueError(f"unknown SCLDConfig.resampling {self.resampling!r}; available: {sorted(RESAMPLERS)}")
        if not 0 < self.mala_acceptance < 1:
            raise ValueError(f"SCLDConfig.mala_acceptance must be in (0, 1), got {self.mala_acceptance!r}")
        for name in ("mala_step_size", "buffer_temperature", "lr_policy"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"SCLDConfig.{name} must be a finite number > 0, got {value!r}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"SCLDConfig.grad_clip must be None or a finite number > 0, got {self.grad_clip!r}")


class Segments(NamedTuple):
    """Sub-trajectories of N particles: ``states`` and clipped ``scores`` ``(S, N, L + 1, d)``, ``log_r`` at their
    first and last states ``(S, N, 2)``, and their incremental log-weights ``log_w`` ``(S, N)``."""

    states: torch.Tensor
    scores: torch.Tensor
    log_r: torch.Tensor
    log_w: torch.Tensor


class SMCRun(NamedTuple):
    """``R`` independent SMC simulations of N particles: final particles ``x`` ``(R, N, d)`` with normalised
    ``log_w`` ``(R, N)`` float64, the estimates ``log_z`` ``(R,)``, the sub-trajectories (``(S, R N, ...)``), and per
    segment end ESS / N before resampling and whether it resampled (``(S, R)``), and the mean MALA acceptance
    (``(S,)``; empty without MALA)."""

    x: torch.Tensor
    log_w: torch.Tensor
    log_z: torch.Tensor
    segments: Segments
    ess: torch.Tensor
    resampled: torch.Tensor
    acceptance: torch.Tensor


class SCLDAgent(nn.Module):
    """An SCLD sampler on ``mdp`` (the VP reference): the CMCD kernel, its optimiser, the sub-trajectory buffer
    (``source``, None without one) and the adapted MALA step size of each segment end."""

    def __init__(self, mdp, config: SCLDConfig = SCLDConfig(), nonfinite: str = "error"):
        super().__init__()
        if mdp.conditional:
            raise ValueError("SCLD is not defined for conditional targets")
        self.mdp, self.target, self.config = mdp, mdp.target, config
        self.bounds(mdp.num_steps)  # checks that the segments divide T
        self.kernel = make_kernel(mdp.dim, mdp.num_steps, mdp.t_scale, config.policy, mdp.reference, None, mdp.target)
        self.guard = TrainingGuard(nonfinite)  # non-finite losses and gradients, divergence (``agents.guard``)
        self.register_buffer("mala_step", torch.full((config.segments,), float(config.mala_step_size)))
        self.to(mdp.device)
        self.optimizer = torch.optim.Adam(self.kernel.parameters(), lr=config.lr_policy)
        self.conditions = None
        self.source = None
        if config.buffer_batches:
            length, capacity = mdp.num_steps // config.segments, config.buffer_batches * config.batch_size
            args = (config.segments, length, mdp.dim, capacity, config.buffer_temperature, mdp.device)
            self.source = SegmentBuffer(*args)

    def bounds(self, num_steps: int) -> list[tuple[int, int]]:
        """The segments ``[(a_j, b_j)]`` of a trajectory of ``num_steps`` steps."""
        s = self.config.segments
        if num_steps % s:
            raise ValueError(f"SCLD's segments={s} must divide the number of steps T={num_steps}")
        length = num_steps // s
        return [(j * length, (j + 1) * length) for j in range(s)]

    def exploration_std(self, iteration: int) -> float:
        return 0.0

    def learned_log_z(self) -> None:
        """SCLD learns no log Z (its estimate is the SMC one of each simulation)."""
        return None

    def _boundary(self, log_r_ends, states, a: int, b: int, ctx) -> torch.Tensor:
        """``log gamma_b(x_b) - log gamma_a(x_a)`` of segments ``[a, b)`` (for a = 0 the engine has folded
        ``- log p_0(x_0)`` into the first log p_B entry already)."""
        end = self.kernel.log_density(log_r_ends[:, 1], states[:, -1], b, ctx)
        return end if a == 0 else end - self.kernel.log_density(log_r_ends[:, 0], states[:, 0], a, ctx)

    @torch.no_grad()
    def simulate(self, n: int, generator=None, mdp=None, adapt: bool = False, runs: int = 1) -> SMCRun:
        """Run the SMC sampler with ``n`` particles on ``mdp`` (default: the agent's; e.g. another T), ``runs``
        independent times at once (batched: each run resamples among its own particles). ``adapt``: adapt and keep
        the MALA step sizes (training simulations)."""
        c, kernel, mdp = self.config, self.kernel, self.mdp if mdp is None else mdp
        ctx, reward = kernel.context(None, mdp.reference), mdp.bind(None)
        log_w = torch.full((runs, n), -math.log(n), dtype=torch.float64, device=mdp.device)
        log_z, own = log_w.new_zeros(runs), torch.arange(n, device=mdp.device).expand(runs, n)
        offset = torch.arange(runs, device=mdp.device).unsqueeze(-1) * n  # run r owns particles r n .. r n + n - 1
        eta, x, records, ess, resampled, acceptance = self.mala_step.clone(), None, [], [], [], []
        for j, (a, b) in enumerate(self.bounds(mdp.num_steps)):
            paths = mdp.rollout(kernel, runs * n, generator, start=x, steps=(a, b))
            paths.terminal_score = clipped_score(reward, paths.states[:, -1], kernel.score_clip)[1]
            log_r_ends = torch.stack([paths.log_r_states[:, 0], paths.log_r], -1)
            traj = mdp.score(kernel, paths, kernel.backward)
            log_g = log_weight(self._boundary(log_r_ends, paths.states, a, b, ctx), traj.log_pf, traj.log_pb)
            log_g64 = log_g.double().view(runs, n)
            log_z = log_z + log_normaliser_increment(log_w, log_g64)
            log_w = torch.log_softmax(log_w + log_g64, -1)
            scores = torch.cat([paths.scores, paths.terminal_score.unsqueeze(1)], 1)
            records.append((paths.states, scores, log_r_ends, log_g))
            frac = ess_fraction(log_w)
            do = (frac < c.ess_threshold).unsqueeze(-1)
            ancestors = torch.where(do, resample(log_w, n, c.resampling, generator), own) + offset
            x = paths.states[:, -1][ancestors.view(-1)]
            log_w = torch.where(do, torch.full_like(log_w, -math.log(n)), log_w)
            ess.append(frac)
            resampled.append(do.squeeze(-1))
            if c.mala_steps:
                x, rate, eta[j] = self._mala(x, ctx.beta[b - 1], eta[j], generator)
                acceptance.append(rate)
        if adapt:
            self.mala_step.copy_(eta)
        segments = Segments(*(torch.stack(parts) for parts in zip(*records)))
        acc = torch.stack(acceptance) if acceptance else log_z.new_zeros(0)
        return SMCRun(x.view(runs, n, -1), log_w, log_z, segments, torch.stack(ess), torch.stack(resampled), acc)

    def _mala(self, x, beta, eta, generator):
        """``mala_steps`` MALA steps on ``pi_beta ∝ p_0^(1 - beta) R^beta``, the step size adapted toward
        ``mala_acceptance``; returns (particles, mean acceptance, final step size)."""
        log_reward, log_base = self.target.log_reward, self.mdp.reference.initial_log_prob
        state, rate = mala_init(log_reward, x), 0.0
        for _ in range(self.config.mala_steps):
            state, info = mala_step(state, log_reward, eta, generator, beta, log_base)
            eta = adapt_step_size(eta, info.acceptance_rate, self.config.mala_acceptance)
            rate = rate + info.acceptance_rate / self.config.mala_steps
        return state.x, rate, eta

    def segment_loss(self, batch: Segments) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean over segments of the batch log-variance of log G (VarGrad form) of sub-trajectories
        ``batch`` re-scored under the current sampler, and their log G ``(S, N)`` (detached)."""
        ctx, losses, log_ws = self.kernel.context(None, self.mdp.reference), [], []
        for j, (a, b) in enumerate(self.bounds(self.mdp.num_steps)):
            states, scores, log_r = batch.states[j], batch.scores[j], batch.log_r[j]
            paths = Paths(states, log_r[:, 1], scores[:, :-1], terminal_score=scores[:, -1], first_step=a)
            traj = self.mdp.score(self.kernel, paths, self.kernel.backward)
            boundary = self._boundary(log_r, states, a, b, ctx)
            losses.append(vargrad(traj.log_pf, traj.log_pb, boundary).mean())
            log_ws.append(log_weight(boundary, traj.log_pf, traj.log_pb).detach())
        return torch.stack(losses).mean(), torch.stack(log_ws)

    def train_step(self, iteration: int, generator=None, cpu_generator=None) -> dict:
        """One simulation and one gradient step (the paper's ``n_updates_per_sim = 1``)."""
        n = self.config.batch_size
        run = self.simulate(n, generator, adapt=True)
        batch, index, half = run.segments, None, n // 2
        if self.source is not None:
            self.source.add(*run.segments)
            *old, index = self.source.sample(half, generator)
            pick = torch.randperm(n, generator=generator, device=self.mdp.device)[: n - half]
            batch = Segments(*(torch.cat([o, f[:, pick]], 1) for o, f in zip(old, run.segments[:3])), None)
        loss, log_w = self.segment_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = gradient_norm(self.kernel.parameters(), self.config.grad_clip)
        if self.guard.allows_loss(self, iteration, loss, norm):
            self.optimizer.step()
            if index is not None:
                self.source.update(index, log_w[:, :half])
        return {"loss": loss.detach(), "log_z": run.log_z[0], "grad_norm": norm.detach()}
