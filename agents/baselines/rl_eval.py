"""Scoring trained RL policies as diffusion samplers, with the metrics of our own agents.

A *policy head* turns a library policy into the forward kernel of the sampler: ``sample(obs, generator)``
draws env actions (increments ``x_{k+1} - x_k``) with their log-density, and ``log_prob(obs, action)``
evaluates given actions. Densities come from the library's own distribution objects (SB3's
``SquashedDiagGaussianDistribution`` / ``DiagGaussianDistribution``, Tianshou's ``Independent(Normal)``
and ``correct_log_prob_gaussian_tanh``), including the tanh squashing; the heads add the Jacobian of
the affine map from the policy's [-1, 1] output to the env's action Box, so that

    log p_F(x_{k+1} | x_k) = log pi(u | s_k) - sum_i log(scale_i),   x_{k+1} = x_k + center + scale * u.

``evaluate_policy`` rolls 2,000 (by default) trajectories through the torch MDP core and returns
``agents.metrics.summarize`` of their log-weights ``log R + sum log p_B - sum log p_F``.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch

from diffsampler.agents import metrics
from diffsampler.envs.sampler_mdp import DiffusionMDP


class PolicyHead(Protocol):
    """A stochastic policy over env actions with exact log-densities (in env-action coordinates)."""

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions (B, d) and their log-densities (B,)."""

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Log-densities (B,) of given actions (B, d); ``-inf`` outside the policy's support."""


def _noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


class _BoxMap:
    """The affine map ``a = center + scale * u`` from [-1, 1]^d onto a bounded action Box, and its log-Jacobian."""

    def __init__(self, space, device):
        low, high = (torch.as_tensor(np.asarray(v, dtype=np.float64)) for v in (space.low, space.high))
        if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            raise ValueError(f"a squashed policy needs a bounded action Box, got low={space.low}, high={space.high}")
        self.center = ((high + low) / 2).to(device, torch.float32)
        self.scale = ((high - low) / 2).to(device, torch.float32)
        self.log_det = float(torch.log((high - low) / 2).sum())

    def to_env(self, u: torch.Tensor) -> torch.Tensor:
        return self.center + self.scale * u

    def to_unit(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``u`` (clamped just inside (-1, 1)) and a mask of actions strictly inside the Box."""
        u = (a - self.center) / self.scale
        inside = (u.abs() < 1).all(-1)
        return u.clamp(-1 + 1e-6, 1 - 1e-6), inside


class SB3SquashedHead:
    """Head of an SB3 SAC policy: tanh-squashed diagonal Gaussian, rescaled to the action Box."""

    def __init__(self, policy):
        self.actor = policy.actor
        self.box = _BoxMap(policy.action_space, policy.device)

    def _dist(self, obs):
        mean, log_std, kwargs = self.actor.get_action_dist_params(obs)
        return self.actor.action_dist.proba_distribution(mean, log_std, **kwargs)

    def sample(self, obs, generator):
        dist = self._dist(obs)
        normal = dist.distribution  # the pre-squashing torch Normal
        gaussian = normal.mean + normal.stddev * _noise(normal.mean, generator)
        u = torch.tanh(gaussian)
        return self.box.to_env(u), dist.log_prob(u, gaussian) - self.box.log_det

    def log_prob(self, obs, action):
        u, inside = self.box.to_unit(action)
        lp = self._dist(obs).log_prob(u) - self.box.log_det  # the library inverts tanh itself
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))


class SB3GaussianHead:
    """Head of an SB3 PPO policy: an unsquashed diagonal Gaussian in env units.

    The sampler is this Gaussian kernel, unclipped. (In training SB3 clips actions to the env's Box,
    which must therefore be wide enough never to bind; see ``RLConfig.action_bound_std``.)
    """

    def __init__(self, policy):
        self.policy = policy

    def sample(self, obs, generator):
        dist = self.policy.get_distribution(obs)
        normal = dist.distribution
        action = normal.mean + normal.stddev * _noise(normal.mean, generator)
        return action, dist.log_prob(action)

    def log_prob(self, obs, action):
        return self.policy.get_distribution(obs).log_prob(action)


class TianshouSquashedHead:
    """Head of a Tianshou ``SACPolicy``: its own ``Independent(Normal)`` and tanh correction, mapped to the Box."""

    def __init__(self, policy):
        from tianshou.algorithm.modelfree.sac import correct_log_prob_gaussian_tanh

        if not policy.action_scaling:
            raise ValueError("the Tianshou SAC policy must use action_scaling=True (actions in the env's Box)")
        self._correct = correct_log_prob_gaussian_tanh
        self.policy = policy
        device = next(policy.parameters()).device
        self.box = _BoxMap(policy.action_space, device)

    def _dist(self, obs):
        from tianshou.data import Batch

        # The policy's forward builds the distribution (it also draws an action we do not use).
        return self.policy(Batch(obs=obs, info=Batch())).dist

    def _log_prob(self, dist, gaussian, u):
        lp = self._correct(dist.log_prob(gaussian).unsqueeze(-1), u).squeeze(-1)
        return lp - self.box.log_det

    def sample(self, obs, generator):
        dist = self._dist(obs)
        gaussian = dist.mean + dist.stddev * _noise(dist.mean, generator)
        u = torch.tanh(gaussian)
        return self.box.to_env(u), self._log_prob(dist, gaussian, u)

    def log_prob(self, obs, action):
        u, inside = self.box.to_unit(action)
        lp = self._log_prob(self._dist(obs), torch.atanh(u), u)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))


class HeadKernel:
    """A policy head as a forward kernel of the trajectory engine (``envs.engine``): not Gaussian, so it
    samples the increments and evaluates their log-densities itself, on observations ``[x, t, (c)]``."""

    gaussian, score_clip = False, None

    def __init__(self, mdp: DiffusionMDP, head: PolicyHead):
        self.mdp, self.head = mdp, head

    def context(self, condition: torch.Tensor | None = None, reference=None):
        return condition

    def sample(self, x: torch.Tensor, step: int, ctx, generator) -> tuple[torch.Tensor, torch.Tensor]:
        obs = self.mdp.observe(x, torch.full(x.shape[:1], step, device=x.device), ctx)
        action, log_pf = self.head.sample(obs, generator)
        return x + action.to(x.dtype), log_pf

    def log_prob(self, x: torch.Tensor, x_next: torch.Tensor, ctx) -> torch.Tensor:
        """``(B, T)`` log-densities of the increments of paths, in one batched call."""
        b, T, d = x.shape
        k = torch.arange(T, device=x.device).expand(b, -1).reshape(-1)
        cond = None if ctx is None else ctx.repeat_interleave(T, 0)
        obs = self.mdp.observe(x.reshape(-1, d), k, cond)
        return self.head.log_prob(obs, (x_next - x).reshape(-1, d)).view(b, T)


@torch.no_grad()
def evaluate_policy(mdp: DiffusionMDP, head: PolicyHead, n: int = 2000, seed: int = 0) -> dict:
    """Our metrics of ``n`` stochastic trajectories of the policy (and of backward paths from exact samples).

    EUBO needs ``log pi`` along backward paths of the reference from exact samples; a squashed policy
    gives such a path density 0 when one of its increments leaves the action Box, so EUBO is then
    None and ``backward_outside_support`` reports the fraction of such paths.
    """
    return policy_evaluation(mdp, head, n, seed)[0]


@torch.no_grad()
def policy_evaluation(mdp: DiffusionMDP, head: PolicyHead, n: int = 2000, seed: int = 0):
    """``evaluate_policy``'s metrics, the ``n`` samples and the exact samples (None without a sampler)."""
    target, kernel = mdp.target, HeadKernel(mdp, head)
    gen = torch.Generator(mdp.device).manual_seed(seed)
    traj = mdp.score(kernel, mdp.rollout(kernel, n, gen))
    x = traj.terminal
    exact = log_w_bwd = None
    outside = None
    if target.has_sampler:
        exact = target.sample(n, torch.Generator().manual_seed(seed)).to(mdp.device, mdp.dtype)
        log_w = mdp.score(kernel, mdp.rollout_backward(exact, gen)).log_weight
        bad = ~torch.isfinite(log_w)
        outside = float(bad.double().mean())
        log_w_bwd = None if bool(bad.any()) else log_w
    result = metrics.summarize(traj.log_weight, target.log_Z, x, exact, log_w_bwd, target)
    result["backward_outside_support"] = outside
    return result, x, exact
