"""Gymnasium faces of the diffusion MDP: a single numpy env and a native torch vector env.

Both are thin adapters over ``envs.sampler_mdp``. The observation is ``[x, t]`` (float32, d + 1);
the action is the increment ``x_{k+1} - x_k``.

With a conditional target (e.g. the VAE latent posterior) each episode has a condition c (a
flattened image) and the observation is ``[x, t, c]``. At reset the env draws c uniformly from the
target's training conditions with its own generator (``reset(seed=...)``), or takes it from the
reset options: ``{"condition": c}`` or ``{"condition_index": i}`` (an index into
``target.conditions``); the vector env takes one row per reset episode. ``info["condition_index"]``
says which was drawn (-1 for a condition given explicitly).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from diffsampler.envs.sampler_mdp import DiffusionMDP
from diffsampler.envs.targets import Target, make_target


def _build_mdp(target, num_steps, t_scale, reward_mode, device, reference, reference_kwargs, target_kwargs):
    if isinstance(target, Target):
        if target_kwargs:
            raise ValueError(f"target keyword arguments {target_kwargs!r} given with a Target instance")
    else:
        target = make_target(target, **target_kwargs)
    return DiffusionMDP(
        target,
        num_steps=num_steps,
        t_scale=t_scale,
        reward_mode=reward_mode,
        device=device,
        reference=reference,
        reference_kwargs=reference_kwargs,
    )


def _torch_generator(np_random: np.random.Generator, device) -> torch.Generator:
    """A torch generator on ``device`` seeded from the env's numpy generator (draws one integer)."""
    return torch.Generator(device).manual_seed(int(np_random.integers(2**62)))


def _spaces(mdp: DiffusionMDP, action_bound: float | None):
    d = mdp.dim
    if mdp.conditional:
        lo, hi = mdp.target.condition_bounds or (-np.inf, np.inf)
        low = np.concatenate([np.full(d + 1, -np.inf), np.full(mdp.cond_dim, lo)]).astype(np.float32)
        high = np.concatenate([np.full(d + 1, np.inf), np.full(mdp.cond_dim, hi)]).astype(np.float32)
        obs = gym.spaces.Box(low, high, dtype=np.float32)
    else:
        obs = gym.spaces.Box(-np.inf, np.inf, shape=(d + 1,), dtype=np.float32)
    if action_bound is None:
        act = gym.spaces.Box(-np.inf, np.inf, shape=(d,), dtype=np.float32)
    else:
        if not (isinstance(action_bound, (int, float)) and math.isfinite(action_bound) and action_bound > 0):
            raise ValueError(f"action_bound must be None or a finite number > 0, got {action_bound!r}")
        act = gym.spaces.Box(-float(action_bound), float(action_bound), shape=(d,), dtype=np.float32)
    return obs, act


def _conditions(mdp: DiffusionMDP, n: int, options: dict | None, rng: np.random.Generator):
    """Conditions (n, c) and their indices (n,) for ``n`` (re)started episodes of a conditional MDP:
    from ``options["condition"]`` / ``options["condition_index"]``, else drawn uniformly with ``rng``."""
    options = options or {}
    pool = mdp.target.conditions
    if "condition" in options and "condition_index" in options:
        raise ValueError("reset options take 'condition' or 'condition_index', not both")
    if "condition" in options:
        c = np.asarray(options["condition"], dtype=np.float32)
        if c.size != n * mdp.cond_dim:
            raise ValueError(f"options['condition'] must hold {n} x {mdp.cond_dim} values, got shape {c.shape}")
        return torch.as_tensor(c).reshape(n, mdp.cond_dim), torch.full((n,), -1, dtype=torch.long)
    if "condition_index" in options:
        idx = np.asarray(options["condition_index"]).reshape(-1)
        if idx.shape != (n,) or idx.dtype.kind not in "iu" or (idx < 0).any() or (idx >= len(pool)).any():
            got = options["condition_index"]
            raise ValueError(f"options['condition_index'] must be {n} integer(s) in [0, {len(pool)}), got {got!r}")
        idx = torch.as_tensor(idx, dtype=torch.long)
    else:
        idx = torch.as_tensor(rng.integers(len(pool), size=n), dtype=torch.long)
    return pool[idx], idx


def _no_condition_options(mdp: DiffusionMDP, options: dict | None) -> None:
    if options and not mdp.conditional and ({"condition", "condition_index"} & set(options)):
        raise ValueError(f"{mdp.target!r} is unconditional: reset options take no condition")


def default_action_bound(mdp: DiffusionMDP, n_std: float = 5.0) -> float:
    """A bound of ``n_std`` reference standard deviations of the largest step (``n_std * sigma * sqrt(dt)``
    for the bridge; ``n_std * sigma * sqrt(max_k a_k)`` for VP)."""
    var = mdp.reference.forward_coefs()[1]
    return n_std * math.sqrt(float(var.max()) if isinstance(var, torch.Tensor) else var)


def _check_action_values(a: torch.Tensor, bound: float | None, rows: torch.Tensor | None = None) -> None:
    """NaN/inf and out-of-bound checks; ``rows`` restricts them to the active environments."""
    # Fast path: one masked reduction and one sync, no boolean indexing (which costs a nonzero() and,
    # on a busy CPU, an OpenMP hand-off of milliseconds). The messages are built only on failure.
    ok = torch.isfinite(a).all(-1)
    if bound is not None:
        ok = ok & (a.abs() <= bound).all(-1)
    if rows is not None:
        ok = ok | ~rows
    if bool(ok.all()):
        return
    checked = a if rows is None else a[rows]
    if not bool(torch.isfinite(checked).all()):
        raise ValueError(f"actions must be finite, got {checked[~torch.isfinite(checked).all(-1)].tolist()}")
    if bound is not None and bool((checked.abs() > bound).any()):
        worst = float(checked.abs().max())
        raise ValueError(f"action component {worst:g} outside the action space bound [-{bound:g}, {bound:g}]")


class DiffSamplerEnv(gym.Env):
    """One episode of the diffusion sampler's MDP as a ``gymnasium.Env`` (numpy float32 at the boundary).

    Args:
        target: a registered target name or a Target instance.
        num_steps: T, the episode length.
        t_scale: reference variance sigma^2 (default: the target's).
        reward_mode: "terminal" or "soft_rl" (see ``envs.sampler_mdp``).
        action_bound: None for an unbounded action Box; a float b for Box(-b, b), which squashed-Gaussian
            agents need (about ``5 * sigma * sqrt(dt)``; see ``default_action_bound``).
        reference: "bridge" (x_0 = 0) or "vp" (x_0 ~ N(0, sigma^2 I), drawn at reset from ``np_random``).
        reference_kwargs: the reference's schedule parameters (``beta_min``, ``beta_max`` for "vp").
        **target_kwargs: passed to the target factory (e.g. ``dim=128`` for Manywell).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        target: str | Target = "manywell",
        num_steps: int = 100,
        t_scale: float | None = None,
        reward_mode: str = "terminal",
        action_bound: float | None = None,
        render_mode: str | None = None,
        reference: str = "bridge",
        reference_kwargs: dict | None = None,
        **target_kwargs,
    ):
        if render_mode is not None:
            raise ValueError(f"DiffSamplerEnv has no render modes, got render_mode={render_mode!r}")
        mdp_args = (num_steps, t_scale, reward_mode, "cpu", reference, reference_kwargs, target_kwargs)
        self.mdp = _build_mdp(target, *mdp_args)
        self.observation_space, self.action_space = _spaces(self.mdp, action_bound)
        self.action_bound = None if action_bound is None else float(action_bound)
        placeholder = self.mdp.target.conditions[:1] if self.mdp.conditional else None  # until reset
        self._episode = self.mdp.new_batch(1, placeholder, torch.Generator())  # reseeded from np_random at reset

    def _obs(self) -> np.ndarray:
        return self._episode.observe()[0].numpy().astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        _no_condition_options(self.mdp, options)
        if self.mdp.reference.random_start:
            self._episode.generator = _torch_generator(self.np_random, "cpu")
        if not self.mdp.conditional:
            self._episode.reset()
            return self._obs(), {}
        condition, index = _conditions(self.mdp, 1, options, self.np_random)
        self._episode.reset(condition=condition)
        return self._obs(), {"condition_index": int(index[0])}

    def step(self, action):
        a = self._as_tensor(action)
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
        return self._obs(), float(reward[0]), bool(terminated[0]), False, info

    def _as_tensor(self, action) -> torch.Tensor:
        arr = np.asarray(action)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"action must be a real numeric array, got dtype {arr.dtype}")
        if arr.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {arr.shape}")
        a = torch.as_tensor(arr, dtype=torch.float32).reshape(1, -1)
        _check_action_values(a, self.action_bound)
        return a


class DiffSamplerVectorEnv(VectorEnv):
    """``num_envs`` episodes stepped together over the torch MDP core, on ``device``.

    Observations, rewards and flags are torch tensors (the env is torch-native); actions may be
    tensors or arrays of shape ``(num_envs, d)``. Autoreset follows ``metadata["autoreset_mode"]``:
    NEXT_STEP (Gymnasium's default: the step after a termination resets that env and ignores its
    action) or SAME_STEP (reset at once; the final observation goes to ``info["final_obs"]``).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        target: str | Target = "manywell",
        num_steps: int = 100,
        t_scale: float | None = None,
        reward_mode: str = "terminal",
        action_bound: float | None = None,
        device: str | torch.device = "cpu",
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        reference: str = "bridge",
        reference_kwargs: dict | None = None,
        **target_kwargs,
    ):
        if render_mode is not None:
            raise ValueError(f"DiffSamplerVectorEnv has no render modes, got render_mode={render_mode!r}")
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError(f"autoreset_mode must be NEXT_STEP or SAME_STEP, got {autoreset_mode!r}")
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        mdp_args = (num_steps, t_scale, reward_mode, device, reference, reference_kwargs, target_kwargs)
        self.mdp = _build_mdp(target, *mdp_args)
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"the number of episodes must be a positive integer, got {num_envs!r}")
        placeholder = self.mdp.target.conditions[:1].expand(num_envs, -1) if self.mdp.conditional else None
        # conditions are drawn at reset; the generator draws random-start initial states
        self.episodes = self.mdp.new_batch(num_envs, placeholder, torch.Generator(self.mdp.device))
        self.condition_index = torch.full((num_envs,), -1, dtype=torch.long) if self.mdp.conditional else None
        self.num_envs = num_envs
        self.action_bound = None if action_bound is None else float(action_bound)
        self.single_observation_space, self.single_action_space = _spaces(self.mdp, action_bound)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._needs_reset = torch.zeros(num_envs, dtype=torch.bool, device=self.mdp.device)

    @property
    def device(self) -> torch.device:
        return self.mdp.device

    def reset(self, *, seed: int | list | None = None, options: dict | None = None):
        super().reset(seed=seed)
        _no_condition_options(self.mdp, options)
        if seed is not None:  # initial states of a random-start reference (also at autoresets)
            self.episodes.generator = _torch_generator(self.np_random, self.mdp.device)
        mask = None if options is None else options.get("reset_mask")
        if mask is None:
            self._restart(None, options)
            self._needs_reset.zero_()
        else:
            mask = self._as_reset_mask(mask)
            self._restart(mask, options)
            self._needs_reset &= ~mask
        info = {} if self.condition_index is None else {"condition_index": self.condition_index.clone()}
        return self.episodes.observe(), info

    def _restart(self, mask: torch.Tensor | None, options: dict | None = None) -> None:
        """Reset the episodes in ``mask`` (all if None), with new conditions for a conditional target."""
        if not self.mdp.conditional:
            self.episodes.reset(mask)
            return
        n = self.num_envs if mask is None else int(mask.sum())
        if n == 0:
            return
        condition, index = _conditions(self.mdp, n, options, self.np_random)
        self.episodes.reset(mask, condition)
        if mask is None:
            self.condition_index.copy_(index)
        else:
            self.condition_index[mask.cpu()] = index

    def step(self, actions):
        a = self._as_tensor(actions)
        active = ~self._needs_reset
        _check_action_values(a, self.action_bound, active)
        x_next = self.episodes.x + a
        reward, terminated = self.episodes.step(x_next, active)
        obs = self.episodes.observe()
        info = {}
        if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP:
            if bool(terminated.any()):
                info = {"final_obs": obs, "_final_obs": terminated.clone()}
                self._restart(terminated)
                obs = self.episodes.observe()
        else:
            self._restart(self._needs_reset)  # envs that ended last step start afresh
            obs = torch.where(self._needs_reset.unsqueeze(-1), self.episodes.observe(), obs)
            self._needs_reset = terminated.clone()
        truncated = torch.zeros_like(terminated)
        return obs, reward, terminated, truncated, info

    def _as_reset_mask(self, mask) -> torch.Tensor:
        arr = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask)
        if arr.dtype != np.bool_ or arr.shape != (self.num_envs,):
            raise ValueError(
                f"options['reset_mask'] must be a boolean array of shape ({self.num_envs},), "
                f"got dtype {arr.dtype} and shape {arr.shape}"
            )
        return torch.as_tensor(arr, device=self.device)

    def _as_tensor(self, actions) -> torch.Tensor:
        if not isinstance(actions, torch.Tensor):
            arr = np.asarray(actions)
            if arr.dtype.kind not in "fiu":
                raise TypeError(f"actions must be a real numeric array, got dtype {arr.dtype}")
            actions = torch.as_tensor(arr)
        elif actions.dtype.is_complex or actions.dtype == torch.bool:
            raise TypeError(f"actions must be a real numeric tensor, got dtype {actions.dtype}")
        expected = (self.num_envs, self.mdp.dim)
        if tuple(actions.shape) != expected:
            raise ValueError(f"actions must have shape {expected}, got {tuple(actions.shape)}")
        return actions.to(device=self.device, dtype=self.mdp.dtype)
