"""Rolling the policy through the MDP: trajectories forward, backward, and with path gradients.

Off-policy objectives (TB, VarGrad, DB, SubTB) see detached states, so sampling runs without autograd
and the log-probabilities of all T transitions are evaluated afterwards in one batched pass
(``evaluate``). Only PIS needs gradients through the sampled path (``sample_forward_reparam``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.policy import DiffusionPolicy, clipped_score, noise_std
from envs import process
from envs.sampler_mdp import check_log_reward


@dataclass
class Trajectories:
    """A batch of B complete trajectories of T steps.

    Attributes:
        states: (B, T + 1, d) positions; ``states[:, 0] = x_0 ~ p_0`` (0 on the bridge).
        log_pf: (B, T) forward log-probabilities ``log p_F(x_{k+1} | x_k)``.
        log_pb: (B, T) backward log-probabilities ``log p_B(x_k | x_{k+1})``; entry 0 also carries
            ``- log p_0(x_0)`` (on the bridge it is 0).
        log_r: (B,) terminal log-rewards.
        log_f: (B, T + 1) log-flows of the visited states (last column = log_r), if the agent has flows.
    """

    states: torch.Tensor
    log_pf: torch.Tensor
    log_pb: torch.Tensor
    log_r: torch.Tensor
    log_f: torch.Tensor | None = None

    @property
    def log_weight(self) -> torch.Tensor:
        """``log R(x_T) + sum log p_B - log p_0(x_0) - sum log p_F`` per trajectory (p_0 folded in log_pb)."""
        return self.log_r + self.log_pb.sum(-1) - self.log_pf.sum(-1)

    @property
    def terminal(self) -> torch.Tensor:
        return self.states[:, -1]


@dataclass
class Paths:
    """Detached paths with what sampling learnt along the way (reused by ``evaluate``).

    ``scores`` (B, T, d) and ``log_r_states`` (B, T) are the clipped score and log-reward at
    ``states[:, :-1]``, present when the policy is Langevin-parametrised or they were asked for.
    """

    states: torch.Tensor
    log_r: torch.Tensor
    scores: torch.Tensor | None = None
    log_r_states: torch.Tensor | None = None


def _terminal_log_reward(target, x: torch.Tensor) -> torch.Tensor:
    log_r = target.log_reward(x)
    check_log_reward(log_r, x, target)
    return log_r


@torch.no_grad()
def sample_forward(
    policy: DiffusionPolicy,
    target,
    n: int,
    exploration_std: float = 0.0,
    generator: torch.Generator | None = None,
    need_log_r_states: bool = False,
) -> Paths:
    """Sample ``n`` paths from ``x_0 ~ p_0`` with extra exploration variance ``exploration_std^2`` per step."""
    T, d = policy.num_steps, policy.dim
    device = policy.times.device
    t_emb, scale = policy.time_features(policy.times[:-1])
    # Time-major buffers: every step reads and writes one contiguous (n, d) slab.
    noise = torch.randn(T, n, d, generator=generator, device=device)
    fixed_var = not policy.config.learn_variance
    if fixed_var:  # scale all the noise at once
        noise.mul_(policy.sampling_std(exploration_std))
    states = torch.zeros(T + 1, n, d, device=device)
    if policy.reference.random_start:
        states[0] = policy.initial_positions(n, generator)
    langevin = policy.langevin_scale is not None
    scores = torch.empty(T, n, d, device=device) if langevin else None
    log_r_states = torch.empty(T, n, device=device) if langevin else None
    x, score = states[0], None
    for k in range(T):
        if langevin:
            log_r_states[k], score = clipped_score(target, x, policy.config.clip_score)
            scores[k] = score
        mean, var = policy.kernel(x, t_emb[k], None if scale is None else scale[k], score, step=k)
        if fixed_var:
            x = torch.add(mean, noise[k], out=states[k + 1])
        else:
            x = torch.addcmul(mean, noise_std(var, exploration_std), noise[k], out=states[k + 1])
    states = states.transpose(0, 1).contiguous()
    if langevin:
        scores = scores.transpose(0, 1).contiguous()
    if log_r_states is not None:
        log_r_states = log_r_states.t().contiguous()
    elif need_log_r_states:  # all intermediate log-rewards in one batched call
        log_r_states = target.log_reward(states[:, :-1].reshape(n * T, d)).view(n, T)
    return Paths(states, _terminal_log_reward(target, x), scores, log_r_states)


@torch.no_grad()
def sample_backward(
    policy: DiffusionPolicy,
    target,
    x_last: torch.Tensor,
    generator: torch.Generator | None = None,
    need_log_r_states: bool = False,
) -> Paths:
    """Paths drawn backward through ``p_B`` from terminal states ``x_last`` (B, d), e.g. target samples."""
    states = policy.sample_backward(x_last, generator)
    b, T, d = states.shape[0], policy.num_steps, policy.dim
    scores = log_r_states = None
    inner = states[:, :-1].reshape(b * T, d)
    if policy.langevin_scale is not None:
        log_r_states, scores = clipped_score(target, inner, policy.config.clip_score)
        log_r_states, scores = log_r_states.view(b, T), scores.view(b, T, d)
    elif need_log_r_states:
        log_r_states = target.log_reward(inner).view(b, T)
    return Paths(states, _terminal_log_reward(target, x_last), scores, log_r_states)


def evaluate(policy: DiffusionPolicy, paths: Paths, log_flows=None) -> Trajectories:
    """Log-probabilities (and flows) of all transitions of detached ``paths``, in one batched pass.

    ``log_flows`` is an optional callable ``Paths -> (B, T + 1)`` (see ``agents.gflownet``).
    """
    log_pf = policy.log_pf_path(paths.states, paths.scores)
    log_pb = policy.log_pb_path(paths.states)
    log_f = log_flows(paths) if log_flows is not None else None
    return Trajectories(paths.states, log_pf, log_pb, paths.log_r, log_f)


def sample_forward_reparam(
    policy: DiffusionPolicy, target, n: int, generator: torch.Generator | None = None
) -> Trajectories:
    """On-policy trajectories with gradients through the sampled path (reparameterisation), for PIS.

    ``x_{k+1} = mean(x_k) + std(x_k) * eps``; the terminal log-reward keeps its gradient. With LP the
    score enters as a constant (taken at a detached copy of the state).
    """
    T, d = policy.num_steps, policy.dim
    device = policy.times.device
    t_emb, scale = policy.time_features(policy.times[:-1])
    noise = torch.randn(n, T, d, generator=generator, device=device)
    x = policy.initial_positions(n, generator)
    states, log_pf, score = [x], [], None
    for k in range(T):
        if policy.langevin_scale is not None:
            score = clipped_score(target, x, policy.config.clip_score)[1]
        mean, var = policy.kernel(x, t_emb[k], None if scale is None else scale[k], score, step=k)
        eps = noise[:, k]
        if isinstance(var, torch.Tensor):
            x = mean + var.sqrt() * eps
            log_pf.append(-0.5 * (eps.square() + var.log() + process.LOG_2PI).sum(-1))
        else:
            x = mean + var**0.5 * eps
            log_pf.append(process.gaussian_log_prob(eps * var**0.5, torch.zeros_like(eps), var))
        states.append(x)
    states_t = torch.stack(states, dim=1)
    log_r = target.log_reward(x)
    check_log_reward(log_r.detach(), x, target)
    return Trajectories(states_t, torch.stack(log_pf, 1), policy.log_pb_path(states_t), log_r)
