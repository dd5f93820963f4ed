"""The torch MDP core (envs/sampler_mdp.py), parametrised over the registered env ids via envs.make_mdp."""

from __future__ import annotations

import math

import pytest
import torch

from diffsampler import envs
from diffsampler.envs import process
from diffsampler.envs.sampler_mdp import DiffusionMDP, EpisodeBatch
from diffsampler.envs.targets import Target

T_SMALL = 8


def rollout(mdp: DiffusionMDP, n: int, seed: int, drift: float = 0.0):
    """Roll ``n`` episodes with a Gaussian policy ``x + drift dt + sqrt(sigma^2 dt) * noise`` (seeded).

    Returns states (n, T + 1, d), rewards (n, T), terminated (n, T) and observations (n, T + 1, d + 1).
    """
    gen = torch.Generator().manual_seed(seed)
    batch = mdp.new_batch(n)
    states, rewards, terms, obs = [batch.x.clone()], [], [], [batch.observe()]
    for _ in range(mdp.num_steps):
        noise = torch.randn(n, mdp.dim, generator=gen)
        reward, terminated = batch.step(batch.x + drift * mdp.dt + math.sqrt(mdp.t_scale * mdp.dt) * noise)
        states.append(batch.x.clone())
        rewards.append(reward)
        terms.append(terminated)
        obs.append(batch.observe())
    return torch.stack(states, 1), torch.stack(rewards, 1), torch.stack(terms, 1), torch.stack(obs, 1)


@pytest.mark.parametrize("env_id", envs.UNCONDITIONAL_ENV_IDS)
def test_terminal_mode_pays_log_reward_at_the_end_only(env_id):
    mdp = envs.make_mdp(env_id, num_steps=T_SMALL)
    assert mdp.reward_mode == "terminal"
    states, rewards, terms, obs = rollout(mdp, n=16, seed=0)
    assert torch.equal(states[:, 0], torch.zeros(16, mdp.dim))
    assert torch.all(rewards[:, :-1] == 0)
    torch.testing.assert_close(rewards[:, -1], mdp.target.log_reward(states[:, -1]))
    assert not terms[:, :-1].any() and terms[:, -1].all()
    times = torch.arange(T_SMALL + 1, dtype=torch.float32) / T_SMALL
    torch.testing.assert_close(obs[..., -1], times.expand(16, -1))
    torch.testing.assert_close(obs[..., :-1], states)


@pytest.mark.parametrize("env_id", envs.UNCONDITIONAL_ENV_IDS)
def test_soft_rl_rewards_sum_to_log_reward_plus_log_pb(env_id):
    mdp = envs.make_mdp(env_id, num_steps=T_SMALL, reward_mode="soft_rl")
    states, rewards, _, _ = rollout(mdp, n=16, seed=1, drift=1.0)
    log_pb = process.bridge_log_pb_path(states.double(), mdp.t_scale)  # independent of the MDP's own path
    log_r = mdp.target.log_reward(states[:, -1].double())
    torch.testing.assert_close(rewards.double().sum(1), log_r + log_pb.sum(1), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(rewards[:, :-1].double(), log_pb[:, :-1], rtol=1e-4, atol=1e-4)
    assert torch.all(rewards[:, 0] == 0)  # log p_B(x_0 | x_1) = 0


@pytest.mark.parametrize("env_id", envs.UNCONDITIONAL_ENV_IDS)
def test_seeded_rollouts_are_reproducible(env_id):
    mdp = envs.make_mdp(env_id, num_steps=T_SMALL, reward_mode="soft_rl")
    a, b, c = rollout(mdp, 8, seed=2), rollout(mdp, 8, seed=2), rollout(mdp, 8, seed=3)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("env_id", envs.UNCONDITIONAL_ENV_IDS)
def test_step_after_the_end_raises(env_id):
    mdp = envs.make_mdp(env_id, num_steps=2)
    batch = mdp.new_batch(3)
    for _ in range(2):
        batch.step(batch.x + 0.1)
    assert batch.done.all()
    with pytest.raises(RuntimeError, match=r"episodes \[0, 1, 2\] have ended"):
        batch.step(batch.x)
    batch.reset(torch.tensor([False, True, False]))
    assert batch.done.tolist() == [True, False, True]
    assert torch.equal(batch.x[1], torch.zeros(mdp.dim)) and not torch.equal(batch.x[0], torch.zeros(mdp.dim))
    with pytest.raises(RuntimeError, match=r"episodes \[0\] have ended"):  # the error names which ones
        batch.step(batch.x, active=torch.tensor([True, True, False]))
    reward, terminated = batch.step(batch.x + 1.0, active=torch.tensor([False, True, False]))
    assert batch.k.tolist() == [2, 1, 2]
    assert reward.tolist() == [0.0, 0.0, 0.0] and not terminated.any()  # ended episodes sit still, unpaid


@pytest.mark.parametrize("env_id", envs.UNCONDITIONAL_ENV_IDS)
def test_bad_positions_are_rejected_without_moving(env_id):
    mdp = envs.make_mdp(env_id, num_steps=4)
    batch = mdp.new_batch(3)
    d = mdp.dim
    with pytest.raises(ValueError, match=rf"\(3, {d}\), got \(3, {d + 1}\)"):
        batch.step(torch.zeros(3, d + 1))
    with pytest.raises(ValueError, match=rf"got \({d},\)"):
        batch.step(torch.zeros(d))
    with pytest.raises(TypeError, match="torch.int64"):
        batch.step(torch.zeros(3, d, dtype=torch.long))
    with pytest.raises(TypeError, match="ndarray"):
        batch.step(torch.zeros(3, d).numpy())
    x = torch.zeros(3, d)
    x[1, -1] = math.nan
    with pytest.raises(ValueError, match="episode 1: .*nan"):
        batch.step(x)
    huge = torch.zeros(3, d, dtype=torch.float64)
    huge[1, -1] = 1e300
    with pytest.raises(ValueError, match="episode 1"):  # finite in float64, inf in the MDP's float32
        batch.step(huge)
    x[1, -1] = -math.inf
    with pytest.raises(ValueError, match="episode 1: .*-inf"):
        batch.step(x)
    assert torch.equal(batch.k, torch.zeros(3, dtype=torch.long)) and torch.equal(batch.x, torch.zeros(3, d))


@pytest.mark.parametrize("env_id", envs.UNCONDITIONAL_ENV_IDS)
@pytest.mark.parametrize("reward_mode", ["terminal", "soft_rl"])
def test_inactive_episodes_keep_state_and_get_zero_reward(env_id, reward_mode):
    mdp = envs.make_mdp(env_id, num_steps=3, reward_mode=reward_mode)
    batch = mdp.new_batch(4)
    batch.step(torch.full((4, mdp.dim), 0.5))
    before_x, before_k = batch.x.clone(), batch.k.clone()
    active = torch.tensor([True, False, True, False])
    x_next = torch.full((4, mdp.dim), 0.7)
    x_next[1] = math.nan  # rows of inactive episodes are ignored, even when invalid
    reward, terminated = batch.step(x_next, active)
    assert torch.equal(batch.x[~active], before_x[~active]) and torch.equal(batch.k[~active], before_k[~active])
    assert torch.all(batch.x[active] == 0.7) and torch.all(batch.k[active] == 2)
    assert torch.all(reward[~active] == 0) and not terminated.any()
    if reward_mode == "soft_rl":
        expected = mdp.log_pb(before_x[active], x_next[active], 2)
        torch.testing.assert_close(reward[active], expected)
    x_last = torch.full((2, mdp.dim), 0.9)
    reward, terminated = batch.step(torch.full((4, mdp.dim), 0.9), active)
    assert terminated.tolist() == [True, False, True, False]
    expected = mdp.target.log_reward(x_last)
    if reward_mode == "soft_rl":
        expected = expected + mdp.log_pb(x_next[active], x_last, 3)
    torch.testing.assert_close(reward[active], expected)
    assert torch.all(reward[~active] == 0)


class NaNAtPositive(Target):
    """A faulty target whose log_reward is NaN where x_0 > 0."""

    dim = 2

    def log_reward(self, x):
        return torch.where(x[:, 0] > 0, torch.full_like(x[:, 0], math.nan), -x.square().sum(-1))


def test_nan_log_reward_names_the_point():
    mdp = DiffusionMDP(NaNAtPositive(), num_steps=1)
    batch = mdp.new_batch(3)
    with pytest.raises(ValueError, match=r"NaN at x = \[0\.25, -2\.0\]"):
        batch.step(torch.tensor([[-1.0, 0.0], [0.25, -2.0], [-3.0, 1.0]]))
    fine = mdp.new_batch(2)
    reward, _ = fine.step(torch.tensor([[-1.0, 0.0], [-3.0, 1.0]]))
    torch.testing.assert_close(reward, torch.tensor([-1.0, -10.0]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_steps": 0}, "got 0"),
        ({"num_steps": -5}, "got -5"),
        ({"num_steps": 2.5}, "got 2.5"),
        ({"t_scale": 0.0}, "got 0.0"),
        ({"t_scale": -2.0}, "got -2.0"),
        ({"t_scale": math.nan}, "got nan"),
        ({"reward_mode": "dense"}, "'dense'"),
    ],
)
@pytest.mark.parametrize("env_id", envs.ENV_IDS[:1] + envs.ENV_IDS[-1:])
def test_bad_mdp_arguments(env_id, kwargs, match):
    with pytest.raises(ValueError, match=match):
        envs.make_mdp(env_id, **kwargs)
    with pytest.raises(ValueError, match=match):
        DiffusionMDP(envs.make_mdp(env_id).target, **kwargs)


@pytest.mark.parametrize("n", [0, -1, 2.0, True])
def test_bad_batch_size(n):
    with pytest.raises(ValueError, match=f"got {n}"):
        EpisodeBatch(envs.make_mdp(envs.ENV_IDS[0]), n)


def test_make_mdp_ids_and_kwargs():
    with pytest.raises(ValueError, match="'DiffSampler-Nope-v0'"):
        envs.make_mdp("DiffSampler-Nope-v0")
    mdp = envs.make_mdp("diffsampler.envs:DiffSampler-Manywell-v0", dim=8, num_steps=7, t_scale=2.0, action_bound=1.0)
    assert (mdp.dim, mdp.num_steps, mdp.t_scale) == (8, 7, 2.0)
    assert mdp.observe(mdp.initial_positions(2), torch.zeros(2, dtype=torch.long)).shape == (2, 9)
    with pytest.raises(ValueError, match="dim"):
        envs.make_mdp("DiffSampler-GMM25-v0", dim=8)


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_default_t_scale_is_the_targets(env_id):
    mdp = envs.make_mdp(env_id)
    assert mdp.t_scale == mdp.target.t_scale and mdp.num_steps == 100 and mdp.reward_mode == "terminal"
