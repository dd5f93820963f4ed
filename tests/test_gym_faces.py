"""Stock Gymnasium and SB3 over every registered id: SAC, make_vec with Gymnasium's vector wrappers,
spec.max_episode_steps, rendering, registration without torch, and the bad-input cases of the issue."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from diffsampler import envs
from diffsampler.envs.gym_env import DiffSamplerEnv, DiffSamplerVectorEnv, default_action_bound

T = 3


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_sac_constructs_and_learns_on_the_default_env(env_id):
    from stable_baselines3 import SAC

    env = gym.make(env_id, num_steps=T)
    assert np.isfinite(env.action_space.high).all()  # SAC needs a bounded Box: the default is one
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(symmetric and normalized|replay buffer).*")
        model = SAC("MlpPolicy", env, buffer_size=64, learning_starts=32, batch_size=8, seed=0, device="cpu")
        model.learn(total_timesteps=40)
    assert model.num_timesteps == 40 and model.replay_buffer.size() == 40


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_record_episode_statistics_over_the_default_make_vec(env_id):
    vec = RecordEpisodeStatistics(gym.make_vec(env_id, num_envs=4, num_steps=T))
    obs, _ = vec.reset(seed=0)
    assert isinstance(obs, np.ndarray) and obs.dtype == np.float32 and obs.shape == vec.observation_space.shape
    returns = np.zeros(4)
    for k in range(1, T + 1):
        obs, reward, terminated, truncated, info = vec.step(0.1 * vec.action_space.sample())
        assert reward.dtype == np.float32 and terminated.dtype == truncated.dtype == np.bool_
        assert np.isfinite(obs).all() and not np.isnan(reward).any() and not truncated.any()
        returns += reward
        assert terminated.all() == (k == T) and ("episode" in info) == (k == T)
    np.testing.assert_allclose(info["episode"]["r"], returns, rtol=1e-6)
    assert info["episode"]["l"].tolist() == [T] * 4 and info["_episode"].all()
    obs, *_ = vec.step(vec.action_space.sample())  # NEXT_STEP autoreset: every env starts afresh
    assert np.all(obs[:, vec.unwrapped.mdp.dim] == 0)


def test_every_registry_target_is_registered_without_a_time_limit():
    assert envs.ENV_IDS == [spec.env_id for spec in envs.REGISTRY.values()]
    for env_id in [*envs.ENV_IDS, envs.CUSTOM_ENV_ID]:
        assert gym.spec(env_id).max_episode_steps is None  # T is a keyword argument: the env sets its spec


@pytest.mark.parametrize("num_steps", [None, 1, 7, np.int64(250)])
def test_spec_max_episode_steps_is_t_and_time_limit_never_cuts_early(num_steps):
    kwargs = {} if num_steps is None else {"num_steps": num_steps}
    t = 100 if num_steps is None else int(num_steps)
    env = gym.make("DiffSampler-Gaussian-v0", **kwargs)
    vec = gym.make_vec("DiffSampler-Gaussian-v0", num_envs=2, **kwargs)
    assert env.spec.max_episode_steps == vec.spec.max_episode_steps == t
    remade = gym.make(env.spec)  # gymnasium adds TimeLimit(spec.max_episode_steps) here
    assert any(isinstance(w, gym.wrappers.TimeLimit) for w in _wrappers(remade))
    remade.reset(seed=0)
    for k in range(1, t + 1):
        _, _, terminated, truncated, _ = remade.step(np.zeros(2, np.float32))
        assert terminated == (k == t) and (not truncated or k == t)
    json.dumps(env.spec.kwargs)


def _wrappers(env):
    while isinstance(env, gym.Wrapper):
        yield env
        env = env.env


def test_make_with_the_package_prefix_registers_without_importing_torch():
    code = (
        "import sys, gymnasium\n"
        "import diffsampler\n"
        "assert 'torch' not in sys.modules  # diffsampler.envs imports lazily\n"
        "assert 'DiffSampler-GMM25-v0' in gymnasium.registry and 'DiffSampler-Custom-v0' in gymnasium.registry\n"
        "env = gymnasium.make('diffsampler:DiffSampler-GMM25-v0')\n"
        "print(env.reset(seed=0)[0].shape, env.spec.max_episode_steps)\n"
        "env.step(env.action_space.sample())\n"
        "assert 'matplotlib' not in sys.modules, 'render_mode=None imported matplotlib'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(3,) 100"


# --- action bound -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [DiffSamplerEnv, lambda **kw: DiffSamplerVectorEnv(2, **kw)])
def test_action_bound_forms(cls):
    default = cls(target="gaussian")
    bound = default_action_bound(default.mdp)
    assert bound == pytest.approx(10 * math.sqrt(1 / 100)) and default.action_bound == bound
    unbounded = cls(target="gaussian", action_bound=None)
    space = getattr(unbounded, "single_action_space", unbounded.action_space)
    assert unbounded.action_bound is None and np.isinf(space.low).all() and np.isinf(space.high).all()
    for value in (np.float32(0.5), np.float64(0.5), np.int64(2), 3):
        assert cls(target="gaussian", action_bound=value).action_bound == float(value)
    for bad in (True, np.bool_(True), "1.0", "default", [1.0], 0, -1.0, math.inf, math.nan, 1e39, 1e-50):
        with pytest.raises(ValueError, match="action_bound must be 'auto', None or a number"):
            cls(target="gaussian", action_bound=bad)


def test_out_of_bound_action_error_says_how_to_unbound():
    env = gym.make("DiffSampler-Gaussian-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action_bound=None gives an unbounded Box"):
        env.unwrapped.step(np.array([5.0, 0.0], np.float32))


# --- vector backends and devices --------------------------------------------------------------------------


def test_vector_backends():
    torch_vec = gym.make_vec("DiffSampler-Gaussian-v0", num_envs=3, num_steps=T, backend="torch")
    numpy_vec = gym.make_vec("DiffSampler-Gaussian-v0", num_envs=3, num_steps=T)
    assert numpy_vec.unwrapped.backend == "numpy" and torch_vec.unwrapped.backend == "torch"
    a = np.full((3, 2), 0.1, np.float32)
    numpy_vec.reset(seed=0)
    torch_vec.reset(seed=0)
    for _ in range(T):
        from_numpy = numpy_vec.step(torch.as_tensor(a))  # either backend takes arrays or tensors
        from_torch = torch_vec.step(a)
        assert all(isinstance(v, np.ndarray) for v in from_numpy[:4])
        assert all(isinstance(v, torch.Tensor) for v in from_torch[:4])
        for n, t in zip(from_numpy[:4], from_torch[:4]):
            np.testing.assert_array_equal(n, t.numpy())
    with pytest.raises(ValueError, match="backend must be one of .*'jax'"):
        gym.make_vec("DiffSampler-Gaussian-v0", num_envs=2, backend="jax")


def test_same_step_autoreset_info_follows_the_backend():
    vec = gym.make_vec("DiffSampler-Gaussian-v0", num_envs=2, num_steps=1, autoreset_mode="SameStep")
    vec.reset(seed=0)
    _, _, terminated, _, info = vec.step(np.full((2, 2), 0.5, np.float32))
    assert terminated.all() and isinstance(info["final_obs"], np.ndarray) and info["_final_obs"].dtype == np.bool_
    np.testing.assert_allclose(info["final_obs"], [[0.5, 0.5, 1.0]] * 2)


@pytest.mark.parametrize("device", ["bogus", "meta", 3.5] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"]))
def test_bad_devices_are_named(device):
    with pytest.raises(ValueError, match=f"device.*{device!r}"):
        gym.make_vec("DiffSampler-Gaussian-v0", num_envs=2, device=device)
    with pytest.raises(ValueError, match=f"device.*{device!r}"):
        envs.make_mdp("DiffSampler-Gaussian-v0", device=device)


# --- rendering --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env_id, kwargs",
    [("DiffSampler-GMM25-v0", {}), ("DiffSampler-VAE-v0", {})],  # d = 2; d = 20 (a slice), conditional
)
def test_render_rgb_array_draws_particles_over_the_density(env_id, kwargs):
    env = gym.make(env_id, render_mode="rgb_array", num_steps=T, **kwargs)
    env.reset(seed=0)
    first = env.render()
    env.step(env.action_space.sample())
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.shape[:2] == (400, 400)
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 50 and not np.array_equal(first, frame)
    vec = gym.make_vec(env_id, num_envs=5, render_mode="rgb_array", num_steps=T, **kwargs)
    vec.reset(seed=0)
    assert vec.render().shape == (400, 400, 3)


def test_render_modes_are_checked():  # render_mode=None imports no matplotlib: see the subprocess test above
    for cls in (DiffSamplerEnv, lambda **kw: DiffSamplerVectorEnv(2, **kw)):
        with pytest.raises(ValueError, match=r"render_mode None or one of \['rgb_array'\], got render_mode='human'"):
            cls(target="gaussian", render_mode="human")


def test_gymnasium_checker_with_rendering():
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(infinity|symmetric and normalized).*")
        check_env(gym.make("DiffSampler-GMM9-v0", render_mode="rgb_array", num_steps=T).unwrapped)


# --- bad input the probe found ----------------------------------------------------------------------------


def test_numpy_scalars_and_layouts_are_accepted():
    env = gym.make("DiffSampler-Manywell-v0", dim=np.int64(4), num_steps=8, action_bound=np.float32(1.0))
    vec = gym.make_vec("DiffSampler-Manywell-v0", num_envs=np.int64(3), dim=np.int32(4), num_steps=8)
    assert env.unwrapped.mdp.dim == 4 and vec.num_envs == 3 and type(vec.num_envs) is int
    assert env.action_space.high[0] == 1.0
    env.reset(seed=0)
    vec.reset(seed=0)
    a = np.array([0.1, -0.2, 0.3, 0.05])
    x = np.zeros(4, np.float32)
    layouts = [a.astype(">f4"), a.astype(">f8"), np.flip(np.flip(a)), a[None].T[:, 0], torch.tensor(a).bfloat16()]
    for action in layouts:  # big-endian, negative strides, a column view, bfloat16
        obs, *_ = env.step(action)
        x = x + (action.float().numpy() if isinstance(action, torch.Tensor) else action.astype(np.float32))
        np.testing.assert_allclose(obs[:-1], x, rtol=1e-2)
    batch = np.stack([a] * 3)
    for actions in (
        batch.astype(">f4"),
        np.flip(batch, axis=0),
        np.flip(batch, axis=1),
        torch.tensor(batch).bfloat16(),
    ):
        obs, reward, *_ = vec.step(actions)
        assert np.isfinite(obs).all() and not np.isnan(reward).any()
    np.testing.assert_allclose(obs[:, :4], np.stack([3 * a + a[::-1]] * 3), rtol=1e-2)


@pytest.mark.parametrize("face", ["single", "vector"])
@pytest.mark.parametrize(
    "action, error, match",
    [
        ([[0.1, 0.2], [0.3]], ValueError, "action.*must be a numeric array.*inhomogeneous"),
        (torch.zeros(2, requires_grad=True), ValueError, r"requires grad.*\.detach\(\)"),
        (torch.zeros(2, device="meta"), ValueError, "meta tensor"),
        (torch.zeros(2, dtype=torch.complex64), TypeError, "complex64"),
        (torch.zeros(2, dtype=torch.bool), TypeError, "torch.bool"),
    ],
)
def test_unclear_action_errors_are_clear(face, action, error, match):
    if face == "single":
        env = DiffSamplerEnv("gaussian", num_steps=T)
    else:
        env = DiffSamplerVectorEnv(1, "gaussian", num_steps=T)
        action = [action] if isinstance(action, list) else action.unsqueeze(0)
    env.reset(seed=0)
    with pytest.raises(error, match=match):
        env.step(action)


def test_vector_env_never_keeps_an_autograd_graph():
    vec = DiffSamplerVectorEnv(2, "gaussian", num_steps=T, backend="torch")
    vec.reset(seed=0)
    a = torch.full((2, 2), 0.1, requires_grad=True)
    with pytest.raises(ValueError, match="detach"):
        vec.step(a * 2)
    obs, reward, *_ = vec.step((a * 2).detach())
    assert not vec.episodes.x.requires_grad and not obs.requires_grad and not reward.requires_grad


@pytest.mark.parametrize("t_scale", [1e-60, 1e-30, 1e25, 1e40])
def test_t_scale_outside_float32_arithmetic_is_rejected(t_scale):
    for make in (
        lambda: gym.make("DiffSampler-Gaussian-v0", t_scale=t_scale),
        lambda: gym.make_vec("DiffSampler-Gaussian-v0", num_envs=2, t_scale=t_scale),
        lambda: envs.make_mdp("DiffSampler-Gaussian-v0", t_scale=t_scale),
        lambda: gym.make("DiffSampler-Funnel-v0", t_scale=t_scale, reference="vp"),
    ):
        with pytest.raises(ValueError, match=re.escape(f"t_scale={t_scale!r}") + ".*float32"):
            make()
    for fine in (1e-12, 1e12):  # far from 1 but meaningful in float32: soft-RL rewards finite, nonzero
        env = gym.make("DiffSampler-Gaussian-v0", t_scale=fine, reward_mode="soft_rl", num_steps=T, action_bound=None)
        env.reset(seed=0)
        for _ in range(2):  # the first soft-RL reward is log p_B(x_0 | x_1) = 0 (the bridge's point mass)
            _, reward, *_ = env.step(np.full(2, math.sqrt(fine / T), np.float32))
        assert math.isfinite(reward) and reward != 0


def test_vae_conditions_are_checked_against_their_bounds():
    env = gym.make("DiffSampler-VAE-v0", num_steps=T)
    c = env.unwrapped.mdp.cond_dim
    for bad in (np.full(c, 2.0), np.full(c, -0.5)):
        with pytest.raises(ValueError, match=r"must lie in \[0.0, 1.0\] \(condition_bounds\)"):
            env.reset(options={"condition": bad})
    env.reset(options={"condition": np.full(c, 1.0)})
    vec = gym.make_vec("DiffSampler-VAE-v0", num_envs=2, num_steps=T)
    with pytest.raises(ValueError, match="condition_bounds"):
        vec.reset(options={"condition": np.full((2, c), 1.5)})
    with pytest.raises(ValueError, match="options\\['condition'\\] must be a numeric array"):
        vec.reset(options={"condition": [[0.5] * c, [0.5]]})


def test_non_integer_target_seed_is_named():
    for bad in (1.5, "0", True, None):
        with pytest.raises(ValueError, match=f"seed must be an integer, got {bad!r}"):
            gym.make("DiffSampler-GMM40-v0", dim=3, seed=bad)
    assert gym.make("DiffSampler-GMM40-v0", dim=3, seed=np.int64(2)).unwrapped.mdp.dim == 3
