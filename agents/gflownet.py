"""The GFlowNet diffusion-sampler agent: a policy, a log Z or a state flow, and one training step.

Off-policy objectives train on detached trajectories sampled forward (on-policy or with exploration
noise) or backward from terminal states of a sample source (exact target samples, or a replay
buffer); PIS trains on reparameterised on-policy paths.

On a conditional target (e.g. the VAE latent posterior) the agent is amortised over conditions: a
batch draws ``batch_size / condition_repeats`` conditions uniformly with replacement from
``target.conditions`` and samples ``condition_repeats`` trajectories for each; the policy, flows and
backward correction embed the condition, log Z is a network of the condition, and VarGrad's log Z
estimate is the mean over the trajectories of each condition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from diffsampler.agents.config import check_fields, check_finite
from diffsampler.agents.guard import Screen, TrainingGuard, gradient_norm, masked_mean, screen_paths, unchecked_rewards
from diffsampler.agents.kernels import KERNELS, make_kernel
from diffsampler.agents.networks import ConditionalLogZ, JointNet, LogZ
from diffsampler.agents.objectives import OBJECTIVES
from diffsampler.agents.policy import PolicyConfig, exploration_std_at
from diffsampler.buffers.source import SOURCES, Batch, BufferConfig, Schedule
from diffsampler.envs.engine import Paths, Trajectories
from diffsampler.envs.process import TIME_GRIDS
from diffsampler.envs.sampler_mdp import DiffusionMDP

BACKWARD_SOURCES = (None, *SOURCES)


@dataclass(frozen=True)
class GFlowNetConfig:
    """Everything that defines a GFlowNet sampler's training, bar the environment.

    Attributes:
        objective: a key of ``agents.objectives.OBJECTIVES``.
        policy: the sampler kernel (``PolicyConfig.kernel``), its architecture and parametrisation.
        batch_size: trajectories per training step.
        exploration_std: std of extra noise added to the forward policy when sampling for training.
        exploration_decay: iteration at which that std has decayed linearly to 0; None keeps it constant.
        lr_policy, lr_log_z, lr_flow, lr_back: Adam learning rates of the policy (and Langevin scale),
            the scalar log Z, the state-flow network and the learned backward correction.
        subtb_lambda: geometric weight of sub-trajectory lengths in SubTB.
        backward_source: where backward training batches come from on odd iterations: None (forward
            only), "exact" (the target's exact sampler) or "buffer" (replay buffer + local search).
        buffer: replay-buffer and local-search settings, used with ``backward_source = "buffer"``.
        condition_repeats: on a conditional target, trajectories per drawn condition in a batch (must
            divide ``batch_size``; >= 2 for VarGrad, whose log Z estimate is a per-condition mean).
        grad_clip: clip the global gradient norm to this value before each step (None: no clipping).
        time_grid: the time grid of training batches, a key of ``envs.process.TIME_GRIDS``: "uniform"
            (t_k = k / T), "random" (a fresh grid per batch, steps in ratio at most 10) or
            "low-discrepancy" (the uniform grid shifted by a fresh U(-1/2, 1/2) / T per batch), as in the
            paper's code (one grid per batch here, shared by its trajectories).
        log_z_warm_start: before the first step, set the learned log Z (TB) to the log-mean-exp of the first
            batch's log-weights instead of 0 (a data-dependent start; TB with a learned backward kernel, as CMCD's,
            otherwise bends the sampler toward a log Z far off the target's).
    """

    objective: str = "tb"
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    batch_size: int = 300
    exploration_std: float = 0.0
    exploration_decay: int | None = 5000
    lr_policy: float = 1e-3
    lr_log_z: float = 1e-1
    lr_flow: float = 1e-2
    lr_back: float = 1e-3
    subtb_lambda: float = 2.0
    backward_source: str | None = None
    buffer: BufferConfig = field(default_factory=BufferConfig)
    condition_repeats: int = 10
    grad_clip: float | None = None
    time_grid: str = "uniform"
    log_z_warm_start: bool = False

    def __post_init__(self):
        check_fields(self)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; registered: {sorted(OBJECTIVES)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        if not (math.isfinite(self.exploration_std) and self.exploration_std >= 0):
            raise ValueError(f"exploration_std must be finite and >= 0, got {self.exploration_std!r}")
        if self.exploration_decay is not None and self.exploration_decay < 1:
            raise ValueError(f"exploration_decay must be None or >= 1, got {self.exploration_decay!r}")
        check_finite(self, "lr_policy", "lr_log_z", "lr_flow", "lr_back", "subtb_lambda")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"grad_clip must be None or a finite number > 0, got {self.grad_clip!r}")
        if self.backward_source not in BACKWARD_SOURCES:
            raise ValueError(f"backward_source must be one of {BACKWARD_SOURCES}, got {self.backward_source!r}")
        obj = OBJECTIVES[self.objective]
        if obj.path_gradient and self.backward_source is not None:
            raise ValueError(f"objective {self.objective!r} trains on its own paths; backward_source must be None")
        if obj.path_gradient and not KERNELS[self.policy.kernel].path_gradient:
            raise ValueError(
                f"objective {self.objective!r} trains by path gradients, which the {self.policy.kernel!r} kernel does "
                "not support; use an off-policy objective (tb, vargrad, ...)"
            )
        if obj.path_gradient and self.exploration_std > 0:
            raise ValueError(f"objective {self.objective!r} is on-policy; exploration_std must be 0")
        if self.objective == "bwd-mle" and self.backward_source is None:
            raise ValueError("objective 'bwd-mle' needs a backward_source")
        if self.condition_repeats < 1:
            raise ValueError(f"condition_repeats must be >= 1, got {self.condition_repeats!r}")
        if self.time_grid not in TIME_GRIDS:
            raise ValueError(f"unknown time_grid {self.time_grid!r}; registered: {sorted(TIME_GRIDS)}")
        if self.log_z_warm_start and obj.needs != "log_z":
            raise ValueError(f"log_z_warm_start needs an objective with a learned log Z, not {self.objective!r}")


class GFlowNetAgent(nn.Module):
    """A diffusion sampler trained as a GFlowNet on ``mdp``."""

    def __init__(self, mdp: DiffusionMDP, config: GFlowNetConfig = GFlowNetConfig(), nonfinite: str = "error"):
        super().__init__()
        self.guard = TrainingGuard(nonfinite)  # what a non-finite training batch does (agents.guard)
        self.mdp, self.target, self.config = mdp, mdp.target, config
        self.objective = OBJECTIVES[config.objective]
        c = config.policy
        cond_dim = mdp.cond_dim or None
        self.conditions = None  # the target's training conditions on the agent's device
        if cond_dim is not None:
            self._check_conditional(config)
            self.conditions = self.target.conditions.to(mdp.device)
        self.policy = make_kernel(mdp.dim, mdp.num_steps, mdp.t_scale, c, mdp.reference, cond_dim, mdp.target)
        self.log_z = None
        if self.objective.needs == "log_z":
            self.log_z = LogZ() if cond_dim is None else ConditionalLogZ(cond_dim, c.hidden_dim)
        self.flow = (
            JointNet(mdp.dim, 1, c.hidden_dim, c.harmonics, c.joint_layers, False, cond_dim)
            if self.objective.needs == "flow"
            else None
        )
        self.to(mdp.device)
        self.optimizer = torch.optim.Adam(self._param_groups(), foreach=True)
        self.source, self.schedule = None, Schedule()
        if config.backward_source is not None:
            batch = (config.batch_size, mdp.device, self.conditions, config.condition_repeats)
            self.source = SOURCES[config.backward_source](self.target, mdp.dim, config.buffer, *batch)
            self.schedule = self.source.schedule

    def _check_conditional(self, config: GFlowNetConfig) -> None:
        r = config.condition_repeats
        if config.batch_size % r:
            raise ValueError(
                f"condition_repeats={r} must divide batch_size={config.batch_size} on a conditional target"
            )
        if config.objective == "vargrad" and r < 2:
            raise ValueError(f"VarGrad on a conditional target needs condition_repeats >= 2, got {r}")
        if config.log_z_warm_start:
            raise ValueError("log_z_warm_start sets a scalar log Z; a conditional target's is a network")

    def _param_groups(self) -> list[dict]:
        c = self.config
        policy = [p for n, p in self.policy.named_parameters() if not n.startswith("backward.")]
        groups = [{"params": policy, "lr": c.lr_policy, "name": "policy"}]
        if isinstance(self.policy.backward, nn.Module):  # a learned backward kernel of its own (CMCD's shares)
            groups.append({"params": list(self.policy.backward.parameters()), "lr": c.lr_back, "name": "back"})
        if self.log_z is not None:
            groups.append({"params": list(self.log_z.parameters()), "lr": c.lr_log_z, "name": "log_z"})
        if self.flow is not None:
            groups.append({"params": list(self.flow.parameters()), "lr": c.lr_flow, "name": "flow"})
        return groups

    # --- flows --------------------------------------------------------------------------------------

    def _forward_looking_term(self, x: torch.Tensor, t: torch.Tensor, log_r: torch.Tensor) -> torch.Tensor:
        """``(1 - t) log q_max(t, dt)(x) + t log R(x)`` for states ``x`` at times ``t`` (q_t: the reference's
        marginal; ``N(0, sigma^2 t)`` on the bridge, ``N(0, sigma^2)`` on VP)."""
        log_ref = self.mdp.reference.marginal_log_prob(x, t.clamp_min(self.mdp.dt))
        return (1 - t) * log_ref + t * log_r

    def log_flows(self, paths: Paths) -> torch.Tensor:
        """``(B, T + 1)`` log-flows of the visited states; the terminal one is ``log R(x_T)``.

        Forward-looking flows add the interpolated energy ``_forward_looking_term`` to the network's
        output, so the network only learns a correction to it. With a random start the balance of the
        first transition involves ``p_B(x_0 | x_1) / p_0(x_0)`` (the folded entry), so the flow of x_0
        is ``Z m_0(x_0) / p_0(x_0)`` (m_0: the target path measure's marginal), about Z: its
        forward-looking term is ``log q_0(x_0) - log p_0(x_0)`` (0 on VP, where q_0 = p_0).
        """
        t = paths.times[:-1]
        x = paths.states[:, :-1]
        emb = self.flow.embed_time(t)
        if paths.condition is not None:
            emb = emb + self.flow.embed_condition(paths.condition).unsqueeze(1)
        log_f = self.flow(x, emb).squeeze(-1)
        if self.objective.forward_looking:
            log_f = log_f + self._forward_looking_term(x, t, paths.log_r_states)
            if self.mdp.reference.random_start:
                log_p0 = self.mdp.reference.initial_log_prob(x[:, 0])
                log_f = torch.cat([log_f[:, :1] - log_p0.unsqueeze(-1), log_f[:, 1:]], dim=-1)
        return torch.cat([log_f, paths.log_r.unsqueeze(-1)], dim=-1)

    @torch.no_grad()
    def learned_log_z(self, condition: torch.Tensor | None = None, n_start: int = 4096) -> torch.Tensor | None:
        """The agent's own log Z: the scalar of TB, or the flow of the initial state; None for others.

        On a conditional target, one value per row of ``condition`` (M, cond_dim): shape (M,). With a
        random start, ``Z = E_{p_0}[F(x_0)]``: a log-mean-exp over ``n_start`` fixed draws of x_0 (a fixed
        seed, so the value is a deterministic function of the flow).
        """
        if self.log_z is not None:
            return (self.log_z() if condition is None else self.log_z(condition)).detach()
        if self.flow is None:
            return None
        ref = self.mdp.reference
        if condition is not None and ref.random_start:
            raise ValueError(f"conditional flows on the random-start reference {ref!r} are not supported")
        t0 = self.policy.times[:1]
        emb = self.flow.embed_time(t0)
        if condition is None:
            n = n_start if ref.random_start else 1
            gen = torch.Generator(self.mdp.device).manual_seed(0)
            x0 = ref.initial_sample(n, self.mdp.dim, gen, self.mdp.device, self.policy.times.dtype)
        else:
            n = condition.shape[0]
            x0 = torch.zeros(n, self.mdp.dim, device=self.mdp.device)
            emb = emb + self.flow.embed_condition(condition)
        log_f = self.flow(x0, emb).squeeze(-1)
        if self.objective.forward_looking:
            log_f = log_f + self._forward_looking_term(x0, t0, torch.zeros_like(log_f))
            log_f = log_f - ref.initial_log_prob(x0)
        if condition is not None:
            return log_f
        return torch.logsumexp(log_f, 0) - math.log(n)

    # --- sampling and training ----------------------------------------------------------------------

    def exploration_std(self, iteration: int) -> float:
        return exploration_std_at(iteration, self.config.exploration_std, self.config.exploration_decay)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, condition=None, mdp=None) -> Trajectories:
        """``n`` on-policy trajectories (no exploration) with their log-probabilities, for evaluation.

        On a conditional target, ``condition`` (n, cond_dim) gives each trajectory's condition. ``mdp``: the
        agent's MDP on another time grid (``DiffusionMDP.with_grid``), e.g. to evaluate with another T.
        """
        self._check_sample_condition(n, condition)
        mdp = self.mdp if mdp is None else mdp
        paths = mdp.rollout(self.policy, n, generator, condition=condition)
        return mdp.score(self.policy, paths, self.policy.backward)

    @torch.no_grad()
    def sample_backward(
        self, x_last: torch.Tensor, generator: torch.Generator | None = None, condition=None
    ) -> Trajectories:
        """Backward trajectories from terminal states, scored under the policy (for the EUBO)."""
        self._check_sample_condition(x_last.shape[0], condition)
        policy = self.policy
        paths = self.mdp.rollout_backward(x_last, generator, condition, policy.backward, policy.score_clip)
        return self.mdp.score(policy, paths, policy.backward)

    def _check_sample_condition(self, n: int, condition) -> None:
        if (condition is None) != (self.conditions is None):
            need = "needs a condition per trajectory" if condition is None else "takes no condition"
            raise ValueError(f"{self.target!r} {need}")
        if condition is not None and tuple(condition.shape) != (n, self.mdp.cond_dim):
            raise ValueError(f"condition must have shape ({n}, {self.mdp.cond_dim}), got {tuple(condition.shape)}")

    def next_batch(self, iteration: int, generator=None, cpu_generator=None) -> Batch:
        """This iteration's batch (``Schedule``): backward from the source's terminal states, or forward
        (on a conditional target, for ``batch_size / condition_repeats`` conditions drawn uniformly with
        replacement, each repeated). ``generator`` lives on the agent's device (conditions, buffers, local
        search); ``cpu_generator`` drives the target's exact sampler."""
        if self.schedule.is_backward(iteration):
            batch = self.source.backward_batch(iteration, generator, cpu_generator)
            if batch is not None:
                return batch
        if self.conditions is None:
            return Batch()
        r, device = self.config.condition_repeats, self.mdp.device
        idx = torch.randint(len(self.conditions), (self.config.batch_size // r,), generator=generator, device=device)
        return Batch(None, idx.repeat_interleave(r))

    def training_trajectories(self, iteration: int, batch: Batch, generator=None) -> Trajectories:
        """The scored trajectories of one training step: reparameterised (PIS), backward, or forward, on the
        batch's time grid (``config.time_grid``)."""
        return self.screened_trajectories(iteration, batch, generator)[0]

    def screened_trajectories(self, iteration: int, batch: Batch, generator=None) -> tuple[Trajectories, Screen]:
        """``training_trajectories`` with the guard's verdicts on their log-rewards (``agents.guard``)."""
        mdp, policy, index = self.mdp, self.policy, batch.condition_index
        if self.config.time_grid != "uniform":
            mdp = mdp.with_grid(TIME_GRIDS[self.config.time_grid](mdp.num_steps, generator))
        condition = None if index is None else self.conditions[index]
        fl = self.objective.forward_looking
        with unchecked_rewards(mdp):
            if self.objective.path_gradient:
                paths = mdp.rollout(policy, self.config.batch_size, generator, condition=condition, reparam=True)
            elif batch.backward:
                paths = mdp.rollout_backward(batch.x, generator, condition, policy.backward, policy.score_clip, fl)
            else:
                expl = self.exploration_std(iteration)
                paths = mdp.rollout(policy, self.config.batch_size, generator, expl, condition, fl)
        paths, screen = screen_paths(paths, self.target, fl)
        traj = mdp.score(policy, paths, policy.backward, index)
        traj.valid = ~screen.zero
        if self.flow is not None:
            traj.log_f = self.log_flows(paths)
        return traj, screen

    def train_step(self, iteration: int, generator=None, cpu_generator=None, batch: Batch | None = None) -> dict:
        """One optimisation step on ``batch`` (default: ``next_batch``), screened by ``self.guard`` (one host
        sync; ``agents.guard``); returns the detached loss and gradient norm."""
        if batch is None:
            batch = self.next_batch(iteration, generator, cpu_generator)
        if not isinstance(batch, Batch):
            raise TypeError(f"batch must be a diffsampler.buffers.source.Batch, got {type(batch).__name__}")
        if batch.backward and self.objective.path_gradient:
            raise ValueError(f"objective {self.config.objective!r} cannot train on backward trajectories")
        if (batch.condition_index is None) != (self.conditions is None):
            raise ValueError("a conditional agent's batches carry condition indices; others carry none")
        traj, screen = self.screened_trajectories(iteration, batch, generator)
        if self.config.log_z_warm_start and iteration == 0:  # the first batch is a forward one
            with torch.no_grad():  # over the trajectories the loss uses (the guard's screen leaves some out)
                log_w = traj.log_weight[traj.valid] if traj.valid is not None else traj.log_weight
                log_w = log_w[torch.isfinite(log_w)]
                self.log_z.value.fill_(torch.logsumexp(log_w, 0) - math.log(max(log_w.numel(), 1)))
        log_z = None
        if self.log_z is not None:
            index = traj.condition_index
            log_z = self.log_z() if index is None else self.log_z(self.conditions[index])
        loss = masked_mean(self.objective.loss(traj, log_z, self.config.subtb_lambda), traj.valid)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = gradient_norm(self.parameters(), self.config.grad_clip)
        if self.guard.allows_step(self, iteration, loss, grad_norm, screen, traj):
            self.optimizer.step()
            if self.source is not None and not batch.backward:
                self.source.observe(traj.terminal, traj.log_r, iteration, traj.condition_index)
        return {"loss": loss.detach(), "grad_norm": grad_norm.detach()}
