"""Gymnasium faces of the diffusion MDP: a single numpy env here, the native vector env in ``envs.gym_vector``.

Both are thin adapters over ``envs.sampler_mdp``. The observation is ``[x, t]`` (float32, d + 1);
the action is the increment ``x_{k+1} - x_k``, in a Box of ``default_action_bound`` (10 reference
standard deviations of a step) unless ``action_bound`` says otherwise (None: unbounded). Episodes
terminate at k = T and are never truncated; ``spec.max_episode_steps`` is T.

``target`` is a registered target name, an import path (``"package.module:attr"`` or
``"path/to/file.py:attr"``: a user-defined energy, see ``envs.targets.user``) or a Target instance.

With a conditional target (e.g. the VAE latent posterior) each episode has a condition c (a
flattened image) and the observation is ``[x, t, c]``. At reset the env draws c uniformly from the
target's training conditions with its own generator (``reset(seed=...)``), or takes it from the
reset options: ``{"condition": c}`` (within the target's ``condition_bounds``) or
``{"condition_index": i}`` (an index into ``target.conditions``); the vector env takes one row per
reset episode. ``info["condition_index"]`` says which was drawn (-1 for a condition given explicitly).

``render_mode="rgb_array"`` draws the particle and its path over the target's density
(``envs.gym_render``); the default None costs nothing.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from diffsampler.envs.gym_render import RENDER_MODES, ParticleRenderer, check_render_mode
from diffsampler.envs.gym_spaces import (
    AUTO,
    EpisodeLengthSpec,
    action_bound_of,
    as_action_tensor,
    check_action_values,
    conditions,
    default_action_bound,
    no_condition_options,
    spaces,
    torch_generator,
)
from diffsampler.envs.gym_vector import DiffSamplerVectorEnv
from diffsampler.envs.mdp_args import build_mdp
from diffsampler.envs.targets import Target

_check_action_values = check_action_values  # the old private name, for code that still imports it from here


class DiffSamplerEnv(EpisodeLengthSpec, gym.Env):
    """One episode of the diffusion sampler's MDP as a ``gymnasium.Env`` (numpy float32 at the boundary).

    Args:
        target: a registered target name, an import path ``"module:attr"`` / ``"file.py:attr"`` or a Target.
        num_steps: T, the episode length.
        t_scale: reference variance sigma^2 (default: the target's); must keep float32 arithmetic
            meaningful (``envs.mdp_args.check_numerics``).
        reward_mode: "terminal" or "soft_rl" (see ``envs.sampler_mdp``).
        action_bound: ``"auto"`` (default: ``default_action_bound``, 10 reference standard deviations of
            a step, which squashed-Gaussian agents such as SAC need), a number b for Box(-b, b), or None
            for the unbounded Box. Actions outside the Box are rejected with a ValueError.
        render_mode: None or "rgb_array".
        reference: "bridge" (x_0 = 0) or "vp" (x_0 ~ N(0, sigma^2 I), drawn at reset from ``np_random``).
        reference_kwargs: the reference's schedule parameters (``beta_min``, ``beta_max`` for "vp").
        **target_kwargs: passed to the target factory (e.g. ``dim=128`` for Manywell).
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": 10}

    def __init__(
        self,
        target: str | Target = "manywell",
        num_steps: int = 100,
        t_scale: float | None = None,
        reward_mode: str = "terminal",
        action_bound: float | str | None = AUTO,
        render_mode: str | None = None,
        reference: str = "bridge",
        reference_kwargs: dict | None = None,
        **target_kwargs,
    ):
        self.render_mode = check_render_mode(render_mode, type(self).__name__)
        mdp_args = (num_steps, t_scale, reward_mode, "cpu", reference, reference_kwargs)
        self.mdp = build_mdp(target, *mdp_args, **target_kwargs)
        self.action_bound = action_bound_of(self.mdp, action_bound)
        self.observation_space, self.action_space = spaces(self.mdp, self.action_bound)
        placeholder = self.mdp.target.conditions[:1] if self.mdp.conditional else None  # until reset
        self._episode = self.mdp.new_batch(1, placeholder, torch.Generator())  # reseeded from np_random at reset
        self._renderer = ParticleRenderer(self.mdp) if render_mode is not None else None
        self._path: list[torch.Tensor] = []  # positions of this episode, kept only when rendering

    def _obs(self) -> np.ndarray:
        return self._episode.observe()[0].numpy().astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        no_condition_options(self.mdp, options)
        if self.mdp.reference.random_start:
            self._episode.generator = torch_generator(self.np_random, "cpu")
        info = {}
        if self.mdp.conditional:
            condition, index = conditions(self.mdp, 1, options, self.np_random)
            self._episode.reset(condition=condition)
            info = {"condition_index": int(index[0])}
        else:
            self._episode.reset()
        if self._renderer is not None:
            self._path = [self._episode.x[0].clone()]
        return self._obs(), info

    def step(self, action):
        a = as_action_tensor(action, self.action_space.shape, "cpu", torch.float32).reshape(1, -1)
        check_action_values(a, self.action_bound)
        x_next = self._episode.x + a
        if not bool(torch.isfinite(x_next).all()):
            raise ValueError(f"action {a[0].tolist()} overflows the state to a non-finite position")
        x_prev = self._episode.x
        reward, terminated = self._episode.step(x_next)
        info = {}
        if bool(terminated[0]):  # log R(x_T) without a second energy evaluation
            log_r = reward[0]
            if self.mdp.reward_mode == "soft_rl":
                log_r = log_r - self.mdp.log_pb(x_prev, self._episode.x, self.mdp.num_steps)[0]
            info["log_reward"] = float(log_r)
        if self._renderer is not None:
            self._path.append(self._episode.x[0].clone())
        return self._obs(), float(reward[0]), bool(terminated[0]), False, info

    def render(self):
        """An ``(H, W, 3)`` uint8 image of the particle, its path and the density (None without a render mode)."""
        if self._renderer is None:
            gym.logger.warn("render() called on a DiffSamplerEnv made with render_mode=None")
            return None
        t = float(self._episode.k[0]) * self.mdp.dt
        path = torch.stack(self._path) if self._path else None
        condition = None if self._episode.condition is None else self._episode.condition[0]
        return self._renderer(self._episode.x, t, condition, path)


__all__ = ["DiffSamplerEnv", "DiffSamplerVectorEnv", "default_action_bound"]
