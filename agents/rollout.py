"""Rolling the policy through the MDP: trajectories forward, backward, and with path gradients.

Off-policy objectives (TB, VarGrad, DB, SubTB) see detached states, so sampling runs without autograd
and the log-probabilities of all T transitions are evaluated afterwards in one batched pass
(``evaluate``). Only PIS needs gradients through the sampled path (``sample_forward_reparam``).

With a conditional target every function takes the trajectories' conditions ``(B, cond_dim)``: the
policy sees their embedding, rewards are ``log R(x | c)`` (the target bound to the conditions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffsampler.agents.policy import DiffusionPolicy, clipped_score, noise_std
from diffsampler.envs import process
from diffsampler.envs.sampler_mdp import check_log_reward


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
        condition_index: (B,) which condition each trajectory had (conditional targets), else None.
    """

    states: torch.Tensor
    log_pf: torch.Tensor
    log_pb: torch.Tensor
    log_r: torch.Tensor
    log_f: torch.Tensor | None = None
    condition_index: torch.Tensor | None = None

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
    ``condition`` (B, cond_dim): the paths' conditions, for a conditional target.
    """

    states: torch.Tensor
    log_r: torch.Tensor
    scores: torch.Tensor | None = None
    log_r_states: torch.Tensor | None = None
    condition: torch.Tensor | None = None


def _bind(target, condition: torch.Tensor | None, per_path: bool = False):
    """The target itself, or a conditional target bound to ``condition`` (B, c); ``per_path`` binds it
    for whole paths ``(B, T, d)`` (the condition broadcast over the T states)."""
    if condition is None:
        return target
    return target.bind(condition.unsqueeze(1) if per_path else condition)


def _path_log_rewards(target, inner: torch.Tensor, condition, clip: float | None):
    """``(log R, clipped score or None)`` at the states ``inner`` ``(B, T, d)`` of whole paths."""
    b, T, d = inner.shape
    reward = _bind(target, condition, per_path=True)
    x = inner if condition is not None else inner.reshape(b * T, d)  # unconditional targets take (N, d)
    if clip is None:
        return reward.log_reward(x).view(b, T), None
    log_r, score = clipped_score(reward, x, clip)
    return log_r.view(b, T), score.view(b, T, d)


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
    condition: torch.Tensor | None = None,
) -> Paths:
    """Sample ``n`` paths from ``x_0 ~ p_0`` with extra exploration variance ``exploration_std^2`` per step."""
    T, d = policy.num_steps, policy.dim
    device = policy.times.device
    t_emb, scale = policy.time_features(policy.times[:-1])
    c_emb = policy.embed_condition(condition)
    reward = _bind(target, condition)
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
            log_r_states[k], score = clipped_score(reward, x, policy.config.clip_score)
            scores[k] = score
        ctx = t_emb[k] if c_emb is None else t_emb[k] + c_emb
        mean, var = policy.kernel(x, ctx, None if scale is None else scale[k], score, step=k)
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
        log_r_states = _path_log_rewards(target, states[:, :-1], condition, None)[0]
    return Paths(states, _terminal_log_reward(reward, x), scores, log_r_states, condition)


@torch.no_grad()
def sample_backward(
    policy: DiffusionPolicy,
    target,
    x_last: torch.Tensor,
    generator: torch.Generator | None = None,
    need_log_r_states: bool = False,
    condition: torch.Tensor | None = None,
) -> Paths:
    """Paths drawn backward through ``p_B`` from terminal states ``x_last`` (B, d), e.g. target samples."""
    states = policy.sample_backward(x_last, generator, condition)
    scores = log_r_states = None
    if policy.langevin_scale is not None:
        log_r_states, scores = _path_log_rewards(target, states[:, :-1], condition, policy.config.clip_score)
    elif need_log_r_states:
        log_r_states = _path_log_rewards(target, states[:, :-1], condition, None)[0]
    return Paths(states, _terminal_log_reward(_bind(target, condition), x_last), scores, log_r_states, condition)


def evaluate(policy: DiffusionPolicy, paths: Paths, log_flows=None, condition_index=None) -> Trajectories:
    """Log-probabilities (and flows) of all transitions of detached ``paths``, in one batched pass.

    ``log_flows`` is an optional callable ``Paths -> (B, T + 1)`` (see ``agents.gflownet``);
    ``condition_index`` (B,) is passed through to the trajectories (conditional targets).
    """
    log_pf = policy.log_pf_path(paths.states, paths.scores, paths.condition)
    log_pb = policy.log_pb_path(paths.states, paths.condition)
    log_f = log_flows(paths) if log_flows is not None else None
    return Trajectories(paths.states, log_pf, log_pb, paths.log_r, log_f, condition_index)


def sample_forward_reparam(
    policy: DiffusionPolicy, target, n: int, generator: torch.Generator | None = None, condition=None
) -> Trajectories:
    """On-policy trajectories with gradients through the sampled path (reparameterisation), for PIS.

    ``x_{k+1} = mean(x_k) + std(x_k) * eps``; the terminal log-reward keeps its gradient. With LP the
    score enters as a constant (taken at a detached copy of the state).
    """
    T, d = policy.num_steps, policy.dim
    device = policy.times.device
    t_emb, scale = policy.time_features(policy.times[:-1])
    c_emb = policy.embed_condition(condition)
    target = _bind(target, condition)
    noise = torch.randn(n, T, d, generator=generator, device=device)
    x = policy.initial_positions(n, generator)
    states, log_pf, score = [x], [], None
    for k in range(T):
        if policy.langevin_scale is not None:
            score = clipped_score(target, x, policy.config.clip_score)[1]
        ctx = t_emb[k] if c_emb is None else t_emb[k] + c_emb
        mean, var = policy.kernel(x, ctx, None if scale is None else scale[k], score, step=k)
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
    return Trajectories(states_t, torch.stack(log_pf, 1), policy.log_pb_path(states_t, condition), log_r)
