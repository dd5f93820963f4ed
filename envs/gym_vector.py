"""The native vector env: ``num_envs`` episodes of the diffusion MDP stepped as one torch batch.

``gymnasium.make_vec(id, num_envs=n)`` builds it. Like every Gymnasium vector env it speaks numpy by
default: float32 observations ``(n, D)`` and rewards ``(n,)``, boolean flags (so Gymnasium's vector
wrappers, e.g. ``RecordEpisodeStatistics``, work over it). ``backend="torch"`` returns torch tensors
on ``device`` instead (no host round trip: the RL adapters of ``agents.baselines.rl_envs`` and torch
training loops use it). Actions may be numpy arrays or tensors with either backend. Keyword
arguments as for ``envs.gym_env.DiffSamplerEnv``, plus ``num_envs``, ``device``, ``autoreset_mode``
and ``backend``; see that module for conditions and rendering (here: every particle of the batch).
"""

from __future__ import annotations

import numbers

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from diffsampler.envs.gym_render import RENDER_MODES, ParticleRenderer, check_render_mode
from diffsampler.envs.gym_spaces import (
    AUTO,
    EpisodeLengthSpec,
    action_bound_of,
    as_action_tensor,
    check_action_values,
    conditions,
    no_condition_options,
    spaces,
    torch_generator,
)
from diffsampler.envs.mdp_args import build_mdp
from diffsampler.envs.targets import Target

BACKENDS = ("numpy", "torch")


class DiffSamplerVectorEnv(EpisodeLengthSpec, VectorEnv):
    """``num_envs`` episodes stepped together over the torch MDP core, on ``device``.

    Observations, rewards and flags are numpy arrays (``backend="numpy"``, the default) or torch tensors
    on ``device`` (``backend="torch"``). Autoreset follows ``metadata["autoreset_mode"]``: NEXT_STEP
    (Gymnasium's default: the step after a termination resets that env and ignores its action) or
    SAME_STEP (reset at once; the final observation goes to ``info["final_obs"]``). Actions that require
    grad are refused (ValueError): the env is not differentiable and keeps no autograd graph.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": RENDER_MODES, "render_fps": 10}

    def __init__(
        self,
        num_envs: int = 1,
        target: str | Target = "manywell",
        num_steps: int = 100,
        t_scale: float | None = None,
        reward_mode: str = "terminal",
        action_bound: float | str | None = AUTO,
        device: str | torch.device = "cpu",
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        reference: str = "bridge",
        reference_kwargs: dict | None = None,
        backend: str = "numpy",
        **target_kwargs,
    ):
        if isinstance(num_envs, (bool, np.bool_)) or not isinstance(num_envs, numbers.Integral) or num_envs < 1:
            raise ValueError(f"num_envs (the number of episodes) must be a positive integer, got {num_envs!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.render_mode = check_render_mode(render_mode, type(self).__name__)
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError(f"autoreset_mode must be NEXT_STEP or SAME_STEP, got {autoreset_mode!r}")
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.backend = backend
        mdp_args = (num_steps, t_scale, reward_mode, device, reference, reference_kwargs)
        self.mdp = build_mdp(target, *mdp_args, **target_kwargs)
        self.num_envs = num_envs = int(num_envs)
        placeholder = self.mdp.target.conditions[:1].expand(num_envs, -1) if self.mdp.conditional else None
        # conditions are drawn at reset; the generator draws random-start initial states
        self.episodes = self.mdp.new_batch(num_envs, placeholder, torch.Generator(self.mdp.device))
        self.condition_index = torch.full((num_envs,), -1, dtype=torch.long) if self.mdp.conditional else None
        self.action_bound = action_bound_of(self.mdp, action_bound)
        self.single_observation_space, self.single_action_space = spaces(self.mdp, self.action_bound)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._needs_reset = torch.zeros(num_envs, dtype=torch.bool, device=self.mdp.device)
        self._renderer = ParticleRenderer(self.mdp) if render_mode is not None else None

    @property
    def device(self) -> torch.device:
        return self.mdp.device

    def _out(self, value: torch.Tensor):
        """A tensor as the backend returns it."""
        return value if self.backend == "torch" else value.cpu().numpy()

    def reset(self, *, seed: int | list | None = None, options: dict | None = None):
        super().reset(seed=seed)
        no_condition_options(self.mdp, options)
        if seed is not None:  # initial states of a random-start reference (also at autoresets)
            self.episodes.generator = torch_generator(self.np_random, self.mdp.device)
        mask = None if options is None else options.get("reset_mask")
        if mask is None:
            self._restart(None, options)
            self._needs_reset.zero_()
        else:
            mask = self._as_reset_mask(mask)
            self._restart(mask, options)
            self._needs_reset &= ~mask
        info = {} if self.condition_index is None else {"condition_index": self._out(self.condition_index.clone())}
        return self._out(self.episodes.observe()), info

    def _restart(self, mask: torch.Tensor | None, options: dict | None = None) -> None:
        """Reset the episodes in ``mask`` (all if None), with new conditions for a conditional target."""
        if not self.mdp.conditional:
            self.episodes.reset(mask)
            return
        n = self.num_envs if mask is None else int(mask.sum())
        if n == 0:
            return
        condition, index = conditions(self.mdp, n, options, self.np_random)
        self.episodes.reset(mask, condition)
        if mask is None:
            self.condition_index.copy_(index)
        else:
            self.condition_index[mask.cpu()] = index

    def step(self, actions):
        a = as_action_tensor(actions, (self.num_envs, self.mdp.dim), self.device, self.mdp.dtype, "actions")
        active = ~self._needs_reset
        check_action_values(a, self.action_bound, active)
        x_next = self.episodes.x + a
        reward, terminated = self.episodes.step(x_next, active)
        obs = self.episodes.observe()
        info = {}
        if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP:
            if bool(terminated.any()):
                info = {"final_obs": self._out(obs), "_final_obs": self._out(terminated.clone())}
                self._restart(terminated)
                obs = self.episodes.observe()
        else:
            self._restart(self._needs_reset)  # envs that ended last step start afresh
            obs = torch.where(self._needs_reset.unsqueeze(-1), self.episodes.observe(), obs)
            self._needs_reset = terminated.clone()
        truncated = torch.zeros_like(terminated)
        return self._out(obs), self._out(reward), self._out(terminated), self._out(truncated), info

    def render(self):
        """An ``(H, W, 3)`` uint8 image of every episode's particle over the density (None without a render mode)."""
        if self._renderer is None:
            gym.logger.warn("render() called on a DiffSamplerVectorEnv made with render_mode=None")
            return None
        t = float(self.episodes.k.float().mean()) * self.mdp.dt
        condition = None if self.episodes.condition is None else self.episodes.condition[0]
        return self._renderer(self.episodes.x, t, condition)

    def _as_reset_mask(self, mask) -> torch.Tensor:
        try:
            arr = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask)
        except (ValueError, TypeError, RuntimeError) as err:
            raise ValueError(
                f"options['reset_mask'] must be a boolean array of shape ({self.num_envs},): {err}"
            ) from err
        if arr.dtype != np.bool_ or arr.shape != (self.num_envs,):
            raise ValueError(
                f"options['reset_mask'] must be a boolean array of shape ({self.num_envs},), "
                f"got dtype {arr.dtype} and shape {arr.shape}"
            )
        return torch.as_tensor(arr, device=self.device)
