"""The Gymnasium faces (envs/gym_env.py): checkers, registration, episodes, autoreset and bad input."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from diffsampler import envs
from diffsampler.envs.gym_env import DiffSamplerEnv, DiffSamplerVectorEnv, default_action_bound

T = 5


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_gymnasium_env_checker(env_id):
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(infinity|symmetric and normalized).*")
        check_env(env.unwrapped)


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_sb3_env_checker_with_bounded_actions(env_id):
    env = gym.make(env_id)  # the default action Box: 10 reference standard deviations of a step
    bound = default_action_bound(envs.make_mdp(env_id))
    assert env.action_space.high[0] == pytest.approx(bound)
    assert bound == pytest.approx(10 * math.sqrt(env.unwrapped.mdp.t_scale / 100))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(infinity|symmetric and normalized).*")
        sb3_check_env(env, warn=True)


@pytest.mark.parametrize("env_id", envs.UNCONDITIONAL_ENV_IDS)
def test_make_vec_is_the_native_vector_env(env_id):
    vec = gym.make_vec(env_id, num_envs=300, backend="torch")
    assert isinstance(vec.unwrapped, DiffSamplerVectorEnv)
    d = vec.unwrapped.mdp.dim
    assert vec.single_observation_space.shape == (d + 1,) and vec.single_action_space.shape == (d,)
    assert vec.observation_space.shape == (300, d + 1) and vec.action_space.shape == (300, d)
    obs, _ = vec.reset(seed=0)
    assert isinstance(obs, torch.Tensor) and obs.shape == (300, d + 1) and torch.all(obs == 0)
    obs, reward, terminated, truncated, _ = vec.step(torch.zeros(300, d))
    assert reward.shape == terminated.shape == truncated.shape == (300,)
    assert torch.all(obs[:, -1] == 1 / 100)


def test_make_with_module_prefix_in_a_fresh_interpreter():
    code = (
        "import sys, gymnasium\n"
        "assert 'envs' not in sys.modules\n"
        "env = gymnasium.make('diffsampler.envs:DiffSampler-Manywell-v0')\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(obs.shape, obs.dtype)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(33,) float32"


def test_target_kwargs_and_unknown_ids():
    env = gym.make("DiffSampler-Manywell-v0", dim=128)
    assert env.observation_space.shape == (129,) and env.action_space.shape == (128,)
    assert env.reset()[0].shape == (129,)
    for bad in ("DiffSampler-Nope-v0", "DiffSampler-Manywell-v7"):
        with pytest.raises(gym.error.Error, match="DiffSampler"):
            gym.make(bad)
    with pytest.raises(ValueError, match="got 7"):
        gym.make("DiffSampler-Manywell-v0", dim=7)


def random_increments(env_id, n: int, t_scale: float, seed: int) -> np.ndarray:
    d = envs.make_mdp(env_id).dim
    rng = np.random.default_rng(seed)
    return (math.sqrt(t_scale / T) * rng.standard_normal((n, T, d)) + 0.2).astype(np.float32)


@pytest.mark.parametrize("env_id", envs.UNCONDITIONAL_ENV_IDS)
def test_episode_terminates_at_step_t_with_terminal_reward(env_id):
    env = gym.make(env_id, num_steps=T)
    target = env.unwrapped.mdp.target
    obs, _ = env.reset(seed=0)
    x = np.zeros(target.dim, dtype=np.float32)
    for k, a in enumerate(random_increments(env_id, 1, target.t_scale, seed=1)[0], start=1):
        obs, reward, terminated, truncated, info = env.step(a)
        x = x + a
        assert obs.dtype == np.float32 and obs[-1] == pytest.approx(k / T)
        np.testing.assert_allclose(obs[:-1], x, rtol=1e-5, atol=1e-6)
        assert isinstance(reward, float) and not truncated
        assert terminated == (k == T)
        if k < T:
            assert reward == 0.0 and "log_reward" not in info
    expected = float(target.log_reward(torch.as_tensor(obs[None, :-1]))[0])
    assert reward == pytest.approx(expected, rel=1e-5) and info["log_reward"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(RuntimeError, match=r"episodes \[0\] have ended"):
        env.step(np.zeros(target.dim, dtype=np.float32))


@pytest.mark.parametrize("reward_mode", ["terminal", "soft_rl"])
@pytest.mark.parametrize("env_id", envs.UNCONDITIONAL_ENV_IDS)
def test_single_and_vector_env_agree(env_id, reward_mode):
    vec = gym.make_vec(env_id, num_envs=3, num_steps=T, reward_mode=reward_mode, backend="torch")
    inc = random_increments(env_id, 3, vec.unwrapped.mdp.t_scale, seed=2)
    vec.reset()
    vec_rewards, vec_obs = [], []
    for k in range(T):
        obs, reward, *_ = vec.step(inc[:, k])
        vec_rewards.append(reward)
        vec_obs.append(obs)
    vec_rewards, vec_obs = torch.stack(vec_rewards, 1).numpy(), torch.stack(vec_obs, 1).numpy()
    for i in range(3):
        env = gym.make(env_id, num_steps=T, reward_mode=reward_mode)
        env.reset()
        steps = [env.step(a) for a in inc[i]]
        np.testing.assert_allclose([s[1] for s in steps], vec_rewards[i], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.stack([s[0] for s in steps]), vec_obs[i], rtol=1e-6, atol=1e-6)


def test_vector_next_step_autoreset():
    vec = gym.make_vec("DiffSampler-Gaussian-v0", num_envs=4, num_steps=3, backend="torch")
    assert vec.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    vec.reset()
    a = torch.full((4, 2), 0.5)
    vec.step(a)
    obs, _ = vec.reset(options={"reset_mask": np.array([True, False, True, False])})
    assert obs[:, -1].tolist() == pytest.approx([0, 1 / 3, 0, 1 / 3])
    assert torch.all(obs[[0, 2], :-1] == 0) and torch.all(obs[[1, 3], :-1] == 0.5)
    vec.step(a)
    obs, reward, terminated, truncated, _ = vec.step(a)
    assert terminated.tolist() == [False, True, False, True] and not truncated.any()
    torch.testing.assert_close(reward[[1, 3]], torch.full((2,), -0.5 * 2 * 1.5**2))  # log R = -|x|^2 / 2
    assert torch.all(obs[[1, 3], -1] == 1.0)
    junk = torch.full((4, 2), 0.5)
    junk[[1, 3]] = math.nan  # the actions of envs being reset are ignored
    obs, reward, terminated, _, _ = vec.step(junk)
    assert terminated.tolist() == [True, False, True, False]
    assert torch.all(obs[[1, 3]] == 0) and torch.all(reward[[1, 3]] == 0)
    obs, *_ = vec.step(a)
    assert obs[:, -1].tolist() == pytest.approx([0, 1 / 3, 0, 1 / 3])


def test_vector_same_step_autoreset():
    vec = gym.make_vec(
        "DiffSampler-Gaussian-v0", num_envs=2, num_steps=3, autoreset_mode=AutoresetMode.SAME_STEP, backend="torch"
    )
    assert vec.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    vec.reset()
    a = torch.tensor([[0.5, 0.0], [0.0, -1.0]])
    for _ in range(2):
        _, _, terminated, _, info = vec.step(a)
        assert not terminated.any() and "final_obs" not in info
    obs, reward, terminated, _, info = vec.step(a)
    assert terminated.all() and info["_final_obs"].all()
    torch.testing.assert_close(info["final_obs"], torch.tensor([[1.5, 0.0, 1.0], [0.0, -3.0, 1.0]]))
    torch.testing.assert_close(reward, torch.tensor([-1.125, -4.5]))
    assert torch.all(obs == 0)
    obs, *_ = vec.step(a)
    torch.testing.assert_close(obs, torch.tensor([[0.5, 0.0, 1 / 3], [0.0, -1.0, 1 / 3]]))
    with pytest.raises(ValueError, match="Disabled"):
        DiffSamplerVectorEnv(2, "gaussian", autoreset_mode=AutoresetMode.DISABLED)


BAD_ACTIONS = [  # (action for a 2-d env, exception, message)
    (np.zeros(3, np.float32), ValueError, r"got \(3,\)"),
    (np.zeros((1, 2), np.float32), ValueError, r"got \(1, 2\)"),
    (np.zeros(2, object), TypeError, "object"),
    (np.zeros(2, np.complex64), TypeError, "complex64"),
    (np.zeros(2, bool), TypeError, "bool"),
    (np.array(["a", "b"]), TypeError, "<U1"),
    (np.array([0.0, np.nan]), ValueError, "nan"),
    (np.array([-np.inf, 0.0]), ValueError, "-inf"),
    (np.array([0.0, 1e39]), ValueError, "inf"),  # finite float64, inf as float32
    (np.array([0.0, 0.75]), ValueError, "0.75"),  # only with action_bound = 0.5
]


@pytest.mark.parametrize("action, error, match", BAD_ACTIONS)
def test_single_env_rejects_bad_actions(action, error, match):
    env = DiffSamplerEnv("gaussian", num_steps=T, action_bound=0.5)
    obs, _ = env.reset()
    with pytest.raises(error, match=match):
        env.step(action)
    obs, *_ = env.step(np.full(2, 0.25))  # state untouched by the rejected action
    np.testing.assert_allclose(obs, [0.25, 0.25, 1 / T])


@pytest.mark.parametrize("action, error, match", BAD_ACTIONS)
def test_vector_env_rejects_bad_actions(action, error, match):
    vec = DiffSamplerVectorEnv(3, "gaussian", num_steps=T, action_bound=0.5, backend="torch")
    vec.reset()
    batch = np.stack([np.zeros_like(action)] * 2 + [action]) if action.shape == (2,) else action
    with pytest.raises(error, match=match):
        vec.step(batch)
    if action.dtype.kind in "cb":  # the same dtypes as torch tensors
        with pytest.raises(TypeError, match=match):
            vec.step(torch.as_tensor(batch))
    obs, *_ = vec.step(np.full((3, 2), 0.25))
    torch.testing.assert_close(obs, torch.tensor([[0.25, 0.25, 1 / T]] * 3))


def test_state_overflow_is_rejected():
    env = DiffSamplerEnv("gaussian", num_steps=T, action_bound=None)
    env.reset()
    env.step(np.full(2, 3e38, np.float32))
    with pytest.raises(ValueError, match="overflows"):
        env.step(np.full(2, 3e38, np.float32))
    vec = DiffSamplerVectorEnv(2, "gaussian", num_steps=T, action_bound=None)
    vec.reset()
    vec.step(np.full((2, 2), 3e38, np.float32))
    with pytest.raises(ValueError, match="episode 0"):
        vec.step(np.full((2, 2), 3e38, np.float32))


@pytest.mark.parametrize("cls", [DiffSamplerEnv, lambda **kw: DiffSamplerVectorEnv(2, **kw)])
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"render_mode": "human"}, "'human'"),
        ({"action_bound": 0.0}, "got 0.0"),
        ({"action_bound": -1.0}, "got -1.0"),
        ({"action_bound": math.inf}, "got inf"),
        ({"t_scale": 0.0}, "got 0.0"),
        ({"t_scale": -3.0}, "got -3.0"),
        ({"num_steps": 0}, "got 0"),
        ({"reward_mode": "sparse"}, "'sparse'"),
        ({"target": "nope"}, "'nope'"),
    ],
)
def test_bad_constructor_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_bad_vector_arguments():
    with pytest.raises(ValueError, match="got 0"):
        gym.make_vec("DiffSampler-Manywell-v0", num_envs=0)
    with pytest.raises(ValueError, match="'bogus'"):
        DiffSamplerVectorEnv(2, autoreset_mode="bogus")


def test_reset_mask_must_be_boolean_of_num_envs():
    vec = gym.make_vec("DiffSampler-Gaussian-v0", num_envs=4)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(4,\).*\(3,\)"):
        vec.reset(options={"reset_mask": np.array([True, False, True])})
    with pytest.raises(ValueError, match="float"):
        vec.reset(options={"reset_mask": np.ones(4)})


def test_numpy_integer_num_steps_is_accepted_and_bool_t_scale_rejected():
    env = gym.make("DiffSampler-Gaussian-v0", num_steps=np.int64(7))
    assert env.unwrapped.mdp.num_steps == 7
    with pytest.raises(ValueError, match="True"):
        gym.make("DiffSampler-Gaussian-v0", t_scale=True)


@pytest.mark.parametrize("reward_mode", ["terminal", "soft_rl"])
def test_info_log_reward_is_exact_and_costs_no_second_evaluation(reward_mode):
    from diffsampler.envs.targets.base import EvaluationCounter

    env = gym.make("DiffSampler-Manywell-v0", dim=4, num_steps=3, reward_mode=reward_mode)
    target = env.unwrapped.mdp.target
    counter = EvaluationCounter(target)
    env.reset(seed=0)
    for _ in range(3):
        obs, reward, terminated, _, info = env.step(env.action_space.sample())
    assert terminated and counter.count == 1
    expected = float(target.log_reward(torch.as_tensor(obs[None, :-1])))
    assert info["log_reward"] == pytest.approx(expected, rel=1e-5, abs=1e-4)
