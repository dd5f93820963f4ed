"""The GFlowNet diffusion-sampler agent: a policy, a log Z or a state flow, and one training step.

Off-policy objectives train on detached trajectories sampled forward (on-policy or with exploration
noise) or backward from terminal states of a sample source (exact target samples, or a replay
buffer); PIS trains on reparameterised on-policy paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from agents.networks import JointNet, LogZ
from agents.objectives import OBJECTIVES
from agents.policy import DiffusionPolicy, PolicyConfig, exploration_std_at
from agents.rollout import (
    Paths,
    Trajectories,
    evaluate,
    sample_backward,
    sample_forward,
    sample_forward_reparam,
)
from buffers.source import BufferConfig, BufferSource
from envs.sampler_mdp import DiffusionMDP

BACKWARD_SOURCES = (None, "exact", "buffer")


@dataclass(frozen=True)
class GFlowNetConfig:
    """Everything that defines a GFlowNet sampler's training, bar the environment.

    Attributes:
        objective: a key of ``agents.objectives.OBJECTIVES``.
        policy: architecture and parametrisation of the forward policy.
        batch_size: trajectories per training step.
        exploration_std: std of extra noise added to the forward policy when sampling for training.
        exploration_decay: iteration at which that std has decayed linearly to 0; None keeps it constant.
        lr_policy, lr_log_z, lr_flow, lr_back: Adam learning rates of the policy (and Langevin scale),
            the scalar log Z, the state-flow network and the learned backward correction.
        subtb_lambda: geometric weight of sub-trajectory lengths in SubTB.
        backward_source: where backward training batches come from on odd iterations: None (forward
            only), "exact" (the target's exact sampler) or "buffer" (replay buffer + local search).
        buffer: replay-buffer and local-search settings, used with ``backward_source = "buffer"``.
        grad_clip: clip the global gradient norm to this value before each step (None: no clipping).
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
    grad_clip: float | None = None

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; registered: {sorted(OBJECTIVES)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        if not (math.isfinite(self.exploration_std) and self.exploration_std >= 0):
            raise ValueError(f"exploration_std must be finite and >= 0, got {self.exploration_std!r}")
        if self.exploration_decay is not None and self.exploration_decay < 1:
            raise ValueError(f"exploration_decay must be None or >= 1, got {self.exploration_decay!r}")
        for name in ("lr_policy", "lr_log_z", "lr_flow", "lr_back", "subtb_lambda"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"grad_clip must be None or a finite number > 0, got {self.grad_clip!r}")
        if self.backward_source not in BACKWARD_SOURCES:
            raise ValueError(f"backward_source must be one of {BACKWARD_SOURCES}, got {self.backward_source!r}")
        obj = OBJECTIVES[self.objective]
        if obj.path_gradient and self.backward_source is not None:
            raise ValueError(f"objective {self.objective!r} trains on its own paths; backward_source must be None")
        if obj.path_gradient and self.exploration_std > 0:
            raise ValueError(f"objective {self.objective!r} is on-policy; exploration_std must be 0")
        if self.objective == "bwd-mle" and self.backward_source is None:
            raise ValueError("objective 'bwd-mle' needs a backward_source")


class GFlowNetAgent(nn.Module):
    """A diffusion sampler trained as a GFlowNet on ``mdp``."""

    def __init__(self, mdp: DiffusionMDP, config: GFlowNetConfig = GFlowNetConfig()):
        super().__init__()
        if config.backward_source == "exact" and not mdp.target.has_sampler:
            raise ValueError(f"backward_source='exact' but {mdp.target!r} has no exact sampler")
        self.mdp, self.target, self.config = mdp, mdp.target, config
        self.objective = OBJECTIVES[config.objective]
        c = config.policy
        self.policy = DiffusionPolicy(mdp.dim, mdp.num_steps, mdp.t_scale, c, mdp.reference)
        self.log_z = LogZ() if self.objective.needs == "log_z" else None
        self.flow = (
            JointNet(mdp.dim, 1, c.hidden_dim, c.harmonics, c.joint_layers, zero_init=False)
            if self.objective.needs == "flow"
            else None
        )
        self.to(mdp.device)
        self.optimizer = torch.optim.Adam(self._param_groups())
        self.source = (
            BufferSource(self.target, mdp.dim, config.buffer, config.batch_size, mdp.device)
            if config.backward_source == "buffer"
            else None
        )

    def _param_groups(self) -> list[dict]:
        c = self.config
        policy = [p for n, p in self.policy.named_parameters() if not n.startswith("backward.")]
        groups = [{"params": policy, "lr": c.lr_policy, "name": "policy"}]
        if self.policy.backward is not None:
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
        t = self.policy.times[:-1]
        x = paths.states[:, :-1]
        log_f = self.flow(x, self.flow.embed_time(t)).squeeze(-1)
        if self.objective.forward_looking:
            log_f = log_f + self._forward_looking_term(x, t, paths.log_r_states)
            if self.mdp.reference.random_start:
                log_p0 = self.mdp.reference.initial_log_prob(x[:, 0])
                log_f = torch.cat([log_f[:, :1] - log_p0.unsqueeze(-1), log_f[:, 1:]], dim=-1)
        return torch.cat([log_f, paths.log_r.unsqueeze(-1)], dim=-1)

    @torch.no_grad()
    def learned_log_z(self, n_start: int = 4096) -> torch.Tensor | None:
        """The agent's own log Z: the scalar of TB, or the flow of the initial state; None for others.

        With a random start, ``Z = E_{p_0}[F(x_0)]``: a log-mean-exp over ``n_start`` fixed draws of x_0
        (a fixed seed, so the value is a deterministic function of the flow).
        """
        if self.log_z is not None:
            return self.log_z().detach()
        if self.flow is None:
            return None
        ref = self.mdp.reference
        n = n_start if ref.random_start else 1
        gen = torch.Generator(self.mdp.device).manual_seed(0)
        x0 = ref.initial_sample(n, self.mdp.dim, gen, self.mdp.device, self.policy.times.dtype)
        t0 = self.policy.times[:1]
        log_f = self.flow(x0, self.flow.embed_time(t0)).squeeze(-1)
        if self.objective.forward_looking:
            log_f = log_f + self._forward_looking_term(x0, t0, torch.zeros_like(log_f))
            log_f = log_f - ref.initial_log_prob(x0)
        return torch.logsumexp(log_f, 0) - math.log(n)

    # --- sampling and training ----------------------------------------------------------------------

    def exploration_std(self, iteration: int) -> float:
        return exploration_std_at(iteration, self.config.exploration_std, self.config.exploration_decay)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Trajectories:
        """``n`` on-policy trajectories (no exploration) with their log-probabilities, for evaluation."""
        paths = sample_forward(self.policy, self.target, n, 0.0, generator)
        return evaluate(self.policy, paths)

    @torch.no_grad()
    def sample_backward(self, x_last: torch.Tensor, generator: torch.Generator | None = None) -> Trajectories:
        """Backward trajectories from terminal states, scored under the policy (for the EUBO)."""
        return evaluate(self.policy, sample_backward(self.policy, self.target, x_last, generator))

    def training_trajectories(self, iteration: int, generator, backward_x: torch.Tensor | None = None):
        """The trajectories of one training step: reparameterised (PIS), backward, or forward."""
        if self.objective.path_gradient:
            return sample_forward_reparam(self.policy, self.target, self.config.batch_size, generator)
        fl = self.objective.forward_looking
        if backward_x is not None:
            paths = sample_backward(self.policy, self.target, backward_x, generator, need_log_r_states=fl)
        else:
            expl = self.exploration_std(iteration)
            paths = sample_forward(self.policy, self.target, self.config.batch_size, expl, generator, fl)
        return evaluate(self.policy, paths, self.log_flows if self.flow is not None else None)

    def backward_batch(self, iteration: int, generator=None, cpu_generator=None) -> torch.Tensor | None:
        """Terminal states of this iteration's backward batch (odd iterations), or None.

        ``generator`` lives on the agent's device (buffers, local search); ``cpu_generator`` drives
        the target's exact sampler.
        """
        if self.source is not None:
            return self.source.backward_batch(iteration, generator)
        if self.config.backward_source != "exact" or iteration % 2 == 0:
            return None
        return self.target.sample(self.config.batch_size, cpu_generator).to(self.mdp.device)

    def train_step(self, iteration: int, generator: torch.Generator | None = None, backward_x=None) -> dict:
        """One optimisation step; returns detached tensors (no host sync) for logging."""
        if backward_x is not None and self.objective.path_gradient:
            raise ValueError(f"objective {self.config.objective!r} cannot train on backward trajectories")
        traj = self.training_trajectories(iteration, generator, backward_x)
        log_z = self.log_z() if self.log_z is not None else None
        loss = self.objective.loss(traj, log_z, self.config.subtb_lambda).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.config.grad_clip)
        self.optimizer.step()
        if self.source is not None and backward_x is None:
            self.source.observe(traj.terminal, traj.log_r, iteration)
        return {"loss": loss.detach()}
