"""Soft n-step critic targets for SAC (Stable-Baselines3 and Tianshou), exact for the max-entropy objective.

SAC's one-step target for a replayed transition ``(s_0, a_0)`` is ``r_0 + V(s_1)``, with the soft value
``V(s) = E_{a ~ pi}[min Q_targ(s, a) - alpha log pi(a | s)]`` (gamma 1). At T = 100 the terminal reward
reaches the first steps only after 100 bootstraps. The soft n-step target of this module is

    r_0 + sum_{j=1}^{n-1} (r_j - alpha log pi(a_j | s_j)) + V(s_n)

over the replayed steps of the same episode (fewer at its end, with no bootstrap after termination), with
``log pi`` of the *current* policy at the replayed actions. The MDP is deterministic (the action is the next
position), so the optimal soft policy satisfies ``V*(s) = r(s, a) - alpha log pi*(a | s) + V*(s')`` for every
action (path consistency, Nachum et al. 2017; the soft-RL face of sub-trajectory balance): the optimum is a
fixed point of the n-step target whatever policy replayed the actions, as it is of the one-step target.

The libraries' own n-step returns (SB3's ``n_steps``, Tianshou's ``n_step_return_horizon``) sum the rewards
only. With the soft-RL reward that drops the entropy bonuses ``-alpha log pi(a_j | s_j)`` of the
intermediate steps, whose sum is part of the objective (it is the ``- sum log p_F`` of the ELBO), so the
critic would learn another objective's values (one that rewards shrinking the policy's noise). They are not
used here.

Log-densities are in the libraries' own action coordinates ([-1, 1] after tanh, as stored in the replay
buffers and as in their targets): they differ from env-unit densities by a constant per step, which shifts
Q by a function of t only and leaves the policy's updates unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from tianshou.algorithm import SAC
from tianshou.algorithm.modelfree.sac import correct_log_prob_gaussian_tanh
from tianshou.data import Batch


def sb3_log_prob(actor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``log pi(u | s)`` (B,) of an SB3 SAC actor at given squashed actions ``u`` in [-1, 1]."""
    mean, log_std, kwargs = actor.get_action_dist_params(obs)
    return actor.action_dist.proba_distribution(mean, log_std, **kwargs).log_prob(actions)


def soft_nstep_indices(ends: np.ndarray) -> np.ndarray:
    """Which of the n replayed steps of each row count: ``ends`` (B, n) flags the steps after which the
    episode (or the stored data) ends; step j counts when no step before it ended. Returns (B, n) bools."""
    first = np.ones((ends.shape[0], 1), dtype=bool)
    return np.cumprod(np.concatenate([first, ~ends[:, :-1]], axis=1), axis=1).astype(bool)


class SoftNStepReplayBuffer(ReplayBuffer):
    """An SB3 replay buffer whose samples carry soft n-step returns as their rewards.

    ``sample`` returns ``ReplayBufferSamples`` whose ``rewards`` are ``r_0 + sum_j (r_j - ent_coef log pi(a_j |
    s_j))`` and whose ``next_observations`` / ``dones`` are those of the last counted step, so SB3's SAC
    (gamma 1) adds ``V(s_n)`` itself. ``log_prob(obs, actions)`` is the current actor's (set after the
    model is built, ``bind``); samples are drawn at the start of each gradient step, so it is the policy
    that the step's bootstrap uses.
    """

    def __init__(self, *args, n_steps: int = 1, ent_coef: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        if self.optimize_memory_usage:
            raise ValueError("SoftNStepReplayBuffer does not support optimize_memory_usage")
        self.n_steps, self.ent_coef = n_steps, ent_coef
        self.log_prob = None

    def bind(self, actor) -> None:
        self.log_prob = lambda obs, actions: sb3_log_prob(actor, obs, actions)

    def _get_samples(self, batch_inds: np.ndarray, env=None) -> ReplayBufferSamples:
        if env is not None:
            raise ValueError("SoftNStepReplayBuffer does not normalise observations or rewards")
        n, b = self.n_steps, batch_inds.shape[0]
        envs = np.random.randint(0, self.n_envs, size=b)
        rows = (batch_inds[:, None] + np.arange(n)) % self.buffer_size  # (B, n) in time order per env
        cols = np.broadcast_to(envs[:, None], rows.shape)
        # the newest stored step has no stored successor: stop there (and bootstrap unless it terminated)
        ends = self.dones[rows, cols].astype(bool) | (rows == (self.pos - 1) % self.buffer_size)
        counted = soft_nstep_indices(ends)
        last = rows[np.arange(b), counted.sum(1) - 1]
        rewards = torch.as_tensor((self.rewards[rows, cols] * counted).sum(1), device=self.device)
        if n > 1 and counted[:, 1:].any():
            inner = counted[:, 1:]
            obs = self.to_torch(self.observations[rows[:, 1:][inner], cols[:, 1:][inner]])
            act = self.to_torch(self.actions[rows[:, 1:][inner], cols[:, 1:][inner]])
            with torch.no_grad():
                log_pi = self.log_prob(obs, act).to(rewards.dtype)
            owner = torch.as_tensor(np.nonzero(inner)[0], device=self.device)
            rewards = rewards.index_add(0, owner, -self.ent_coef * log_pi)
        dones = self.dones[last, envs] * (1 - self.timeouts[last, envs])
        return ReplayBufferSamples(
            observations=self.to_torch(self.observations[batch_inds, envs]),
            actions=self.to_torch(self.actions[batch_inds, envs]),
            next_observations=self.to_torch(self.next_observations[last, envs]),
            dones=self.to_torch(dones.reshape(-1, 1)),
            rewards=rewards.reshape(-1, 1).float(),
        )


class SoftNStepSAC(SAC):
    """Tianshou's SAC with soft n-step returns: its n-step return (rewards, then ``V(s_n)`` with the entropy
    term at ``s_n``) plus ``-alpha log pi(a_j | s_j)`` of the current policy at the intermediate replayed steps."""

    def _preprocess_batch(self, batch, buffer, indices: np.ndarray):
        batch = super()._preprocess_batch(batch, buffer, indices)
        n = self.n_step_return_horizon
        if n == 1:
            return batch
        steps = [np.asarray(indices)]
        for _ in range(n - 1):
            steps.append(buffer.next(steps[-1]))  # stays put at an episode's end (or the newest step)
        stacked = np.stack(steps)  # (n, I)
        moved = stacked[1:] != stacked[:-1]  # step j >= 1 counts when the episode went on to it
        if not moved.any():
            return batch
        data = buffer[stacked[1:][moved]]
        with torch.no_grad():
            dist = self.policy(Batch(obs=data.obs, info=Batch())).dist
            u = torch.as_tensor(data.act, dtype=dist.mean.dtype, device=dist.mean.device)
            gaussian = torch.atanh(u.clamp(-1 + 1e-6, 1 - 1e-6))
            log_pi = correct_log_prob_gaussian_tanh(dist.log_prob(gaussian).unsqueeze(-1), u).squeeze(-1)
        owner = torch.as_tensor(np.nonzero(moved)[1], device=log_pi.device)
        bonus = torch.zeros(len(indices), dtype=log_pi.dtype, device=log_pi.device).index_add(0, owner, log_pi)
        returns = batch.returns
        batch.returns = returns - self.alpha.value * bonus.to(returns.dtype).reshape(returns.shape)
        return batch
