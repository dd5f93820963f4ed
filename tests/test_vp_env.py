"""The VP reference through the MDP core and the Gymnasium faces: random x_0 at reset (seeded), the
folded soft-RL reward, env checkers, make / make_vec / make_mdp."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from torch.distributions import Normal

from diffsampler import envs
from diffsampler.envs.gym_env import DiffSamplerVectorEnv, default_action_bound

T = 6


def vp_log_pb_independent(states: torch.Tensor, mdp) -> torch.Tensor:
    """sum_k log p_B(x_k | x_{k+1}) - log p_0(x_0), from the kernel formula N(sqrt(1 - a) x', sigma^2 a)
    with a_k = 1 - exp(-int beta) in closed form (linear beta), float64."""
    ref, s2 = mdp.reference, mdp.t_scale
    tau = 1 - torch.arange(mdp.num_steps + 1, dtype=torch.float64) / mdp.num_steps
    big_i = ref.beta_min * tau + 0.5 * (ref.beta_max - ref.beta_min) * tau**2
    a = 1 - torch.exp(-(big_i[:-1] - big_i[1:]))
    x = states.double()
    total = -Normal(torch.zeros((), dtype=torch.float64), math.sqrt(s2)).log_prob(x[:, 0]).sum(-1)
    for k in range(mdp.num_steps):
        total += Normal((1 - a[k]).sqrt() * x[:, k + 1], (s2 * a[k]).sqrt()).log_prob(x[:, k]).sum(-1)
    return total


# (the core MDP directly: conditional targets need a condition per episode; tests/test_conditional.py)
@pytest.mark.parametrize("env_id", envs.UNCONDITIONAL_ENV_IDS)
def test_soft_rl_rewards_on_vp_sum_to_the_log_weight_terms(env_id):
    """Sum of soft-RL rewards = log R(x_T) + sum log p_B - log p_0(x_0), the first step paying the p_0 term."""
    mdp = envs.make_mdp(env_id, num_steps=T, reward_mode="soft_rl", reference="vp")
    gen = torch.Generator().manual_seed(0)
    batch = mdp.new_batch(16, generator=torch.Generator().manual_seed(1))
    states, rewards = [batch.x.clone()], []
    for _ in range(T):
        reward, _ = batch.step(batch.x + 0.3 * torch.randn(16, mdp.dim, generator=gen))
        states.append(batch.x.clone())
        rewards.append(reward)
    states, rewards = torch.stack(states, 1), torch.stack(rewards, 1)
    assert states[:, 0].abs().sum() > 0
    expected = mdp.target.log_reward(states[:, -1].double()) + vp_log_pb_independent(states, mdp)
    torch.testing.assert_close(rewards.double().sum(1), expected, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(
        rewards.double(),
        mdp.log_pb_path(states.double())
        + torch.nn.functional.pad(mdp.target.log_reward(states[:, -1].double()).unsqueeze(-1), (T - 1, 0)),
        rtol=1e-4,
        atol=1e-3,
    )


def test_episode_batch_resets_draw_fresh_initial_states_only_where_masked():
    mdp = envs.make_mdp("DiffSampler-GMM25-v0", num_steps=T, reference="vp", reference_kwargs={"beta_max": 20.0})
    assert mdp.reference.beta_max == 20.0
    batch = mdp.new_batch(4000, generator=torch.Generator().manual_seed(0))
    x0 = batch.x.clone()
    for x in (x0, mdp.initial_positions(4000, torch.Generator().manual_seed(1))):  # N(0, sigma^2 I)
        assert (x.var(0) - mdp.t_scale).abs().max() < 4 * mdp.t_scale * math.sqrt(2 / 3999)
        assert x.mean(0).abs().max() < 4 * math.sqrt(mdp.t_scale / 4000)
    batch.step(batch.x + 1.0)
    mask = torch.arange(4000) % 2 == 0
    batch.reset(mask)
    assert torch.equal(batch.k, (~mask).long())
    assert torch.equal(batch.x[~mask], x0[~mask] + 1.0)
    assert not torch.isclose(batch.x[mask], x0[mask] + 1.0).any() and not torch.isclose(batch.x[mask], x0[mask]).any()
    again = mdp.new_batch(4000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.x, x0)


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_gymnasium_env_checker_on_vp(env_id):
    env = gym.make(env_id, reference="vp")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(infinity|symmetric and normalized).*")
        check_env(env.unwrapped)


def test_sb3_env_checker_on_vp_with_bounded_actions():
    mdp = envs.make_mdp("DiffSampler-GMM25-v0", reference="vp")
    bound = default_action_bound(mdp)
    assert bound == pytest.approx(10 * math.sqrt(float(mdp.reference.var.max())))  # the default: 10 std
    env = gym.make("DiffSampler-GMM25-v0", reference="vp")
    assert env.action_space.high[0] == pytest.approx(bound)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(infinity|symmetric and normalized).*")
        sb3_check_env(env, warn=True)


def test_single_env_reset_is_random_and_seeded():
    env = gym.make("DiffSampler-GMM25-v0", reference="vp", num_steps=T)
    obs1, _ = env.reset(seed=3)
    obs2, _ = env.reset()
    assert np.any(obs1[:-1] != 0) and obs1[-1] == 0 and not np.array_equal(obs1, obs2)
    assert np.array_equal(env.reset(seed=3)[0], obs1) and np.array_equal(env.reset()[0], obs2)
    assert not np.array_equal(env.reset(seed=4)[0], obs1)
    x0 = np.stack([env.reset(seed=s)[0][:-1] for s in range(400)])
    sigma2 = env.unwrapped.mdp.t_scale
    assert np.abs(x0.var(0) - sigma2).max() < 4 * sigma2 * math.sqrt(2 / 399)
    for _ in range(T):
        obs, reward, terminated, _, info = env.step(np.full(2, 0.1, dtype=np.float32))
    assert terminated and reward == pytest.approx(info["log_reward"])  # terminal mode: log R at the end only


def test_vector_env_on_vp_seeds_resets_and_autoresets():
    vec = gym.make_vec("DiffSampler-Funnel-v0", num_envs=64, reference="vp", num_steps=T, backend="torch")
    assert isinstance(vec.unwrapped, DiffSamplerVectorEnv) and vec.unwrapped.mdp.reference.name == "vp"
    obs, _ = vec.reset(seed=0)
    assert torch.equal(obs, vec.reset(seed=0)[0]) and not torch.equal(obs, vec.reset(seed=1)[0])
    obs, _ = vec.reset(seed=0)
    x0 = obs[:, :-1].clone()
    for _ in range(T):
        obs, _, terminated, _, _ = vec.step(torch.zeros(64, 10))
    assert terminated.all()
    obs, _, _, _, _ = vec.step(torch.zeros(64, 10))  # NEXT_STEP autoreset: fresh x_0, t = 0
    assert torch.all(obs[:, -1] == 0) and not torch.isclose(obs[:, :-1], x0).any()


def test_make_mdp_and_make_accept_the_reference_and_reject_bad_ones():
    mdp = envs.make_mdp("DiffSampler-Manywell-v0", dim=8, reference="vp", reference_kwargs={"beta_min": 0.5})
    assert mdp.reference.name == "vp" and mdp.reference.beta_min == 0.5 and "VPReference" in repr(mdp)
    assert envs.make_mdp("DiffSampler-Manywell-v0").reference.name == "bridge"
    with pytest.raises(ValueError, match="'ou'"):
        envs.make_mdp("DiffSampler-Manywell-v0", reference="ou")
    with pytest.raises(ValueError, match="beta_min"):
        gym.make("DiffSampler-GMM25-v0", reference="vp", reference_kwargs={"beta_min": -1.0})
    with pytest.raises(ValueError, match="reference_kwargs must be a dict"):
        envs.make_mdp("DiffSampler-GMM25-v0", reference="vp", reference_kwargs=3)
