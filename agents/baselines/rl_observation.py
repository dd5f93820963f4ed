"""Fourier time features of RL observations, the same in training and in evaluation.

The env observes ``[x, t, (c)]`` with t in [0, 1]: at T = 100 neighbouring steps differ by 0.01 in one input
of an MLP. Our samplers embed t with Fourier features of frequencies over [0.1, 100]
(``agents.networks.FourierTimeEmbedding``); ``TimeFeatures(mdp, k)`` appends ``sin(f t), cos(f t)`` for ``k``
frequencies log-spaced over that range, so that the library's networks see t at the same scales. The batched
adapters (``agents.baselines.rl_envs``) and the plain-env wrapper apply it to every observation they return,
and ``FeatureHead`` applies it to the observations ``[x, t, (c)]`` that evaluation (``rl_eval.HeadKernel``)
builds with ``mdp.observe``: one function for both.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import torch


class TimeFeatures:
    """``[x, t, (c)] -> [x, t, (c), sin(f_1 t), ..., sin(f_k t), cos(f_1 t), ..., cos(f_k t)]``."""

    def __init__(self, dim: int, k: int):
        if k < 2:
            raise ValueError(f"need at least 2 time frequencies, got {k}")
        self.dim, self.k = dim, k
        self.freqs = torch.logspace(-1.0, 2.0, k, dtype=torch.float64)

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        arg = obs[..., self.dim : self.dim + 1].double() * self.freqs.to(obs.device)
        return torch.cat([obs, arg.sin().to(obs.dtype), arg.cos().to(obs.dtype)], dim=-1)

    def numpy(self, obs: np.ndarray) -> np.ndarray:
        return self(torch.as_tensor(obs)).numpy().astype(obs.dtype, copy=False)

    def space(self, space: gymnasium.spaces.Box) -> gymnasium.spaces.Box:
        """The observation Box with the features' bounds [-1, 1] appended."""
        ones = np.ones(2 * self.k, dtype=space.dtype)
        return gymnasium.spaces.Box(
            np.concatenate([space.low, -ones]), np.concatenate([space.high, ones]), dtype=space.dtype
        )


def time_features(mdp, k: int) -> TimeFeatures | None:
    """The features of ``k`` frequencies for ``mdp``'s observations, or None for ``k = 0``."""
    return TimeFeatures(mdp.dim, k) if k else None


class FeatureHead:
    """A policy head (``rl_eval.PolicyHead``) of a policy trained on featured observations."""

    def __init__(self, head, features: TimeFeatures):
        self.head, self.features = head, features

    def sample(self, obs, generator):
        return self.head.sample(self.features(obs), generator)

    def log_prob(self, obs, action):
        return self.head.log_prob(self.features(obs), action)


class TimeFeatureWrapper(gymnasium.ObservationWrapper):
    """The features on one ``gymnasium.make`` env (for the libraries' own vector envs)."""

    def __init__(self, env: gymnasium.Env, k: int):
        super().__init__(env)
        self.features = TimeFeatures(env.unwrapped.mdp.dim, k)
        self.observation_space = self.features.space(env.observation_space)

    def observation(self, observation):
        return self.features.numpy(np.asarray(observation))
