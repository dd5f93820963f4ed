"""Batched faces of the diffusion MDP for RL libraries: an SB3 ``VecEnv`` and a Tianshou ``BaseVectorEnv``.

Both step all episodes as one torch batch (``envs.gym_vector.DiffSamplerVectorEnv`` with
``backend="torch"``, and its ``EpisodeBatch``), never one Python env per sample, and speak numpy at their
boundary as the libraries expect. ``make_sb3_vec_env`` / ``make_tianshou_vec_env`` build them from a registered env id::

    venv = make_sb3_vec_env("DiffSampler-GMM25-v0", 300, reward_mode="soft_rl", action_bound=2.2)
    model = stable_baselines3.SAC("MlpPolicy", venv, gamma=1.0, ent_coef=1.0)

Stable-Baselines3 and Tianshou are optional dependencies (the ``rl`` extra); this module imports them.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices
from tianshou.env import BaseVectorEnv

from diffsampler.agents.baselines.rl_observation import TimeFeatures, TimeFeatureWrapper, time_features
from diffsampler.agents.baselines.rl_shaping import PotentialShaping, ReferenceShapingWrapper
from diffsampler.envs.gym_spaces import check_action_values
from diffsampler.envs.gym_vector import DiffSamplerVectorEnv

_SINGLE_SPACES = {"observation_space": "single_observation_space", "action_space": "single_action_space"}


def _native(venv) -> DiffSamplerVectorEnv:
    inner = getattr(venv, "unwrapped", venv)
    if not isinstance(inner, DiffSamplerVectorEnv):
        raise TypeError(f"expected a DiffSamplerVectorEnv (gymnasium.make_vec of a DiffSampler id), got {type(venv)}")
    return inner


def _require_torch_backend(venv: DiffSamplerVectorEnv) -> None:
    if venv.backend != "torch":
        raise ValueError(f"the adapters step the torch batch: make the env with backend='torch', got {venv.backend!r}")


def _env_attr(venv: DiffSamplerVectorEnv, name: str) -> Any:
    """Per-env view of an attribute of the shared vector env (single spaces, not batched ones)."""
    return getattr(venv, _SINGLE_SPACES.get(name, name))


class SB3VecEnv(VecEnv):
    """Stable-Baselines3 ``VecEnv`` over a ``DiffSamplerVectorEnv`` in same-step autoreset mode.

    A finished episode restarts within the same ``step``: its last observation is in
    ``infos[i]["terminal_observation"]`` and ``infos[i]["TimeLimit.truncated"]`` is False (episodes
    terminate at k = T, they are never truncated). Seeds from ``seed()`` go to the next ``reset()``.
    All envs share one torch core, so ``get_attr`` / ``env_method`` act on it once. With ``shaping``
    the rewards get the reference-potential shaping of ``agents.baselines.rl_shaping`` (same returns);
    with ``time_features`` > 0 the observations get the Fourier time features of ``rl_observation``.
    """

    def __init__(self, venv: DiffSamplerVectorEnv, shaping: bool = False, time_features: int = 0):
        self.venv = _native(venv)
        mode = self.venv.metadata["autoreset_mode"]
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(f"SB3VecEnv needs autoreset_mode SAME_STEP, got {mode}")
        _require_torch_backend(self.venv)
        self._actions: np.ndarray | None = None
        self.shaping = PotentialShaping(self.venv.num_envs, self.venv.mdp, self.venv.device) if shaping else None
        self.features = _features(self.venv, time_features)
        obs_space = _observation_space(self.venv, self.features)
        super().__init__(self.venv.num_envs, obs_space, self.venv.single_action_space)

    @property
    def mdp(self):
        return self.venv.mdp

    def reset(self) -> np.ndarray:
        obs, _ = self.venv.reset(seed=self._seeds[0])
        if self.shaping is not None:
            self.shaping.reset()
        self._reset_seeds()
        self._reset_options()
        return _numpy(obs, self.features)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("step_wait() called without a pending step_async(actions)")
        actions, self._actions = self._actions, None
        obs, reward, terminated, truncated, info = self.venv.step(actions)
        if self.shaping is not None:
            next_obs = torch.where(terminated.unsqueeze(-1), info["final_obs"], obs) if "final_obs" in info else obs
            reward = self.shaping.shape(reward, next_obs, terminated)
        dones = (terminated | truncated).cpu().numpy()
        infos: list[dict] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final = _numpy(info["final_obs"], self.features)
            for i in np.flatnonzero(dones):  # the library's API is a list of dicts; only at episode ends
                infos[i] = {"terminal_observation": final[i], "TimeLimit.truncated": False}
        return _numpy(obs, self.features), reward.cpu().numpy().astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = self.observation_space if attr_name == "observation_space" else _env_attr(self.venv, attr_name)
        return [value] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class: type[gymnasium.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def _get_indices(self, indices: VecEnvIndices):
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else list(indices)


class TianshouVectorEnv(BaseVectorEnv):
    """Tianshou ``BaseVectorEnv`` over the episode batch of a ``DiffSamplerVectorEnv``.

    ``reset(env_id)`` and ``step(action, id)`` act on the listed envs only (the others keep their
    state), as Tianshou's collectors call them; there is no autoreset: the collector resets finished
    envs. Infos are empty dicts. Tianshou's worker machinery is not used: one torch batch
    holds every env, so ``BaseVectorEnv.__init__`` (one worker per env) is deliberately not called.
    ``shaping`` and ``time_features`` as for ``SB3VecEnv``.
    """

    def __init__(self, venv: DiffSamplerVectorEnv, shaping: bool = False, time_features: int = 0):
        self.venv = _native(venv)
        _require_torch_backend(self.venv)
        self.shaping = PotentialShaping(self.venv.num_envs, self.venv.mdp, self.venv.device) if shaping else None
        self.features = _features(self.venv, time_features)
        self._obs_space = _observation_space(self.venv, self.features)
        self.env_num = self.venv.num_envs
        self.wait_num = self.env_num
        self.timeout = None
        self.is_async = False
        self.waiting_id: list[int] = []
        self.ready_id = list(range(self.env_num))
        self.is_closed = False
        self._seed: int | None = None

    @property
    def mdp(self):
        return self.venv.mdp

    @property
    def episodes(self):
        return self.venv.episodes

    def get_env_attr(self, key: str, id=None) -> list[Any]:
        self._assert_is_not_closed()
        value = self._obs_space if key == "observation_space" else _env_attr(self.venv, key)
        return [value] * len(self._ids(id))

    def set_env_attr(self, key: str, value: Any, id=None) -> None:
        self._assert_is_not_closed()
        setattr(self.venv, key, value)

    def _ids(self, id) -> np.ndarray:
        ids = np.arange(self.env_num) if id is None else np.atleast_1d(np.asarray(id))
        if ids.dtype.kind not in "iu" or ids.ndim != 1 or (ids.size and (ids.min() < 0 or ids.max() >= self.env_num)):
            raise ValueError(f"env ids must be integers in [0, {self.env_num}), got {id!r}")
        return ids

    def _mask(self, ids: np.ndarray) -> torch.Tensor:
        mask = torch.zeros(self.env_num, dtype=torch.bool, device=self.venv.device)
        mask[torch.as_tensor(ids, device=self.venv.device)] = True
        return mask

    def _infos(self, ids: np.ndarray) -> np.ndarray:
        # Empty dicts: Tianshou turns non-empty info dicts into a Batch at every step (costly for
        # hundreds of envs), and its collectors need no entry of them.
        infos = np.empty(len(ids), dtype=object)
        infos[:] = [{} for _ in ids]
        return infos

    def reset(self, env_id=None, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        self._assert_is_not_closed()
        ids = self._ids(env_id)
        if env_id is None:
            self.venv.reset(seed=kwargs.get("seed", self._seed))
            self._seed = None
        else:
            self.episodes.reset(self._mask(ids))
        if self.shaping is not None:
            self.shaping.reset(torch.as_tensor(ids, device=self.venv.device))
        obs = self.episodes.observe()[torch.as_tensor(ids, device=self.venv.device)]
        return _numpy(obs, self.features), self._infos(ids)

    def step(self, action, id=None):
        self._assert_is_not_closed()
        if action is None:
            raise ValueError("action must not be None (this vector env is synchronous)")
        ids = self._ids(id)
        act = torch.as_tensor(np.asarray(action), dtype=self.mdp.dtype, device=self.venv.device)
        if tuple(act.shape) != (len(ids), self.mdp.dim):
            raise ValueError(
                f"actions for {len(ids)} envs must have shape {(len(ids), self.mdp.dim)}, got {tuple(act.shape)}"
            )
        rows = torch.as_tensor(ids, device=self.venv.device)
        full = torch.zeros_like(self.episodes.x)
        full[rows] = act
        active = self._mask(ids)
        check_action_values(full, self.venv.action_bound, active)
        reward, terminated = self.episodes.step(self.episodes.x + full, active)
        obs, reward, terminated = self.episodes.observe()[rows], reward[rows], terminated[rows]
        if self.shaping is not None:
            reward = self.shaping.shape(reward, obs, terminated, rows)
        terminated = terminated.cpu().numpy()
        obs = _numpy(obs, self.features)
        return obs, reward.cpu().numpy(), terminated, np.zeros_like(terminated), self._infos(ids)

    def seed(self, seed: int | list[int] | None = None) -> list[int | None]:
        first = seed[0] if isinstance(seed, (list, tuple)) else seed
        self._seed = first
        return [None if first is None else first + i for i in range(self.env_num)]

    def render(self, **kwargs: Any) -> list[Any]:
        return []

    def close(self) -> None:
        if not self.is_closed:
            self.venv.close()
        self.is_closed = True


def _make_native(env_id: str, n_envs: int, autoreset: AutoresetMode, **env_kwargs) -> DiffSamplerVectorEnv:
    venv = gymnasium.make_vec(env_id, num_envs=n_envs, autoreset_mode=autoreset, backend="torch", **env_kwargs)
    return _native(venv)


def make_sb3_vec_env(
    env_id: str, n_envs: int, shaping: bool = False, time_features: int = 0, **env_kwargs
) -> SB3VecEnv:
    """``n_envs`` episodes of ``env_id`` as one batched SB3 ``VecEnv``."""
    return SB3VecEnv(_make_native(env_id, n_envs, AutoresetMode.SAME_STEP, **env_kwargs), shaping, time_features)


def make_tianshou_vec_env(
    env_id: str, n_envs: int, shaping: bool = False, time_features: int = 0, **env_kwargs
) -> TianshouVectorEnv:
    """``n_envs`` episodes of ``env_id`` as one batched Tianshou vector env."""
    native = _make_native(env_id, n_envs, AutoresetMode.NEXT_STEP, **env_kwargs)
    return TianshouVectorEnv(native, shaping, time_features)


def make_plain_env(env_id: str, shaping: bool = False, time_features: int = 0, **env_kwargs) -> gymnasium.Env:
    """One ``gymnasium.make`` env (for the libraries' own ``DummyVecEnv``), optionally reward-shaped and
    with time features (shaping reads ``[x, t]``, so it wraps first)."""
    env = gymnasium.make(env_id, **env_kwargs)
    env = ReferenceShapingWrapper(env) if shaping else env
    return TimeFeatureWrapper(env, time_features) if time_features else env


def _features(venv: DiffSamplerVectorEnv, k: int) -> TimeFeatures | None:
    return time_features(venv.mdp, k)


def _observation_space(venv: DiffSamplerVectorEnv, features: TimeFeatures | None) -> gymnasium.spaces.Box:
    space = venv.single_observation_space
    return space if features is None else features.space(space)


def _numpy(obs: torch.Tensor, features: TimeFeatures | None) -> np.ndarray:
    return (obs if features is None else features(obs)).cpu().numpy()
