"""The RL options of the baselines: soft n-step critic targets, Fourier time features of observations and the
reference-prior critic, each checked against an independent computation, and end to end through both libraries."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("NUMBA_DISABLE_JIT", "1")  # see tests/test_rl_baselines.py
pytest.importorskip("stable_baselines3")
pytest.importorskip("tianshou")

from gymnasium import spaces  # noqa: E402

from diffsampler import envs  # noqa: E402
from diffsampler.agents.baselines import rl  # noqa: E402
from diffsampler.agents.baselines.rl_config import RLConfig, RLRunConfig  # noqa: E402
from diffsampler.agents.baselines.rl_critic import reference_prior  # noqa: E402
from diffsampler.agents.baselines.rl_nstep import SoftNStepReplayBuffer, soft_nstep_indices  # noqa: E402
from diffsampler.agents.baselines.rl_observation import TimeFeatures  # noqa: E402
from diffsampler.agents.runs import RunSpec  # noqa: E402
from diffsampler.agents.runs import run as run_spec  # noqa: E402

T = 5
SMALL = dict(n_envs=4, hidden=16, layers=1, batch_size=20)


def test_soft_nstep_indices_stop_after_an_episode_end():
    ends = np.array([[False, False, False], [False, True, False], [True, False, False], [False, False, True]])
    expected = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(soft_nstep_indices(ends), expected)


def test_sb3_soft_nstep_returns_add_the_intermediate_entropy_bonuses():
    """One env, episodes of 4 steps; rewards r = 10 k + step, a known log pi: the sampled reward of step j is
    r_j + sum over the next n - 1 steps of the same episode of (r - ent_coef log pi), the bootstrap state the
    last counted step's successor, done only when that step ended the episode."""
    n, ent = 3, 0.5
    box = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    act_box = spaces.Box(-1, 1, (1,), np.float32)
    buf = SoftNStepReplayBuffer(64, box, act_box, device="cpu", n_envs=1, n_steps=n, ent_coef=ent)
    buf.log_prob = lambda obs, act: obs[:, 0] + act[:, 0]  # any fixed function of the stored step
    rows = []
    for k in range(12):
        step = k % 4
        obs = np.array([[k, step]], np.float32)
        act = np.array([[0.01 * k]], np.float32)
        rows.append((obs, act, 10.0 * k + step, step == 3))
        buf.add(obs, obs + 100, act, np.array([10.0 * k + step]), np.array([step == 3]), [{}])
    inds = np.arange(12)
    sample = buf._get_samples(inds)
    for i in inds:
        counted, j = [i], i
        while not rows[j][3] and len(counted) < n and j + 1 < 12:
            j += 1
            counted.append(j)
        expected = rows[i][2] + sum(rows[c][2] - ent * (rows[c][0][0, 0] + rows[c][1][0, 0]) for c in counted[1:])
        assert sample.rewards[i, 0].item() == pytest.approx(expected, rel=1e-5), i
        assert sample.next_observations[i, 0].item() == rows[counted[-1]][0][0, 0] + 100
        assert sample.dones[i, 0].item() == float(rows[counted[-1]][3])
        assert sample.observations[i, 0].item() == i


def test_time_features_are_sines_and_cosines_of_t():
    feats = TimeFeatures(dim=2, k=4)
    obs = torch.tensor([[0.3, -1.0, 0.25], [2.0, 0.5, 1.0]])
    out = feats(obs)
    freqs = np.logspace(-1, 2, 4)
    assert out.shape == (2, 3 + 8)
    torch.testing.assert_close(out[:, :3], obs)
    for row, t in enumerate((0.25, 1.0)):
        np.testing.assert_allclose(out[row, 3:7].numpy(), np.sin(freqs * t), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[row, 7:].numpy(), np.cos(freqs * t), rtol=1e-5, atol=1e-6)
    space = feats.space(spaces.Box(-5, 5, (3,), np.float32))
    assert space.shape == (11,) and space.high[-1] == 1 and space.low[3] == -1


def _built(algo: str, **agent):
    config = RLRunConfig(
        "DiffSampler-Gaussian-v0", {"num_steps": T}, agent=RLConfig(algo, **SMALL, **agent), env_steps=4 * T
    )
    mdp = envs.make_mdp(config.env_id, **config.env_kwargs, reward_mode="soft_rl")
    module, cls = rl.algorithm(algo)
    venv, _ = module.make_env(config.agent, config.env_id, rl.env_kwargs_for(config, mdp))
    return cls.build(config.agent, venv, mdp, 0, "cpu")


def _critics(algo: str, model):
    if algo == "sb3-sac":
        return [lambda o, a, i=i, c=c: c(o, a)[i] for c in (model.critic, model.critic_target) for i in (0, 1)]
    alg = model.algorithm
    return [alg.critic, alg.critic_old, alg.critic2, alg.critic2_old]


@pytest.mark.parametrize("algo", ["sb3-sac", "ts-sac"])
def test_reference_prior_critics_start_at_the_reference_step_log_density(algo):
    bound = 10.0
    model = _built(algo, critic_prior=True, action_bound_std=bound)
    gen = torch.Generator().manual_seed(0)
    obs, act = torch.randn(7, 3, generator=gen), torch.rand(7, 2, generator=gen) * 2 - 1
    # independent: log N(a B s; 0, s^2) - log N(0; 0, s^2) for the env's increment a B s, s = sigma sqrt(dt)
    expected = (-0.5 * (act * bound).square()).sum(-1, keepdim=True)
    for critic in _critics(algo, model):
        torch.testing.assert_close(critic(obs, act).detach(), expected)
    plain = _built(algo, action_bound_std=bound)
    assert any((c(obs, act).detach() - expected).abs().max() > 1e-3 for c in _critics(algo, plain))


def test_reference_prior_shapes_and_config_errors():
    a = torch.tensor([[0.1, -0.2], [0.0, 0.0]])
    torch.testing.assert_close(reference_prior(a, 10.0), torch.tensor([[-2.5], [0.0]]))
    with pytest.raises(ValueError, match="critic_prior"):
        RLConfig("sb3-ppo", critic_prior=True)
    with pytest.raises(ValueError, match="n_step"):
        RLConfig("sb3-ppo", n_step=3)
    with pytest.raises(ValueError, match="time_features"):
        RLConfig("sb3-sac", time_features=1)


@pytest.mark.parametrize("algo", ["sb3-sac", "ts-sac"])
def test_every_option_trains_end_to_end(algo, tmp_path):
    overrides = {k: str(v) for k, v in SMALL.items()}
    overrides |= {"n_step": "3", "time_features": "4", "critic_prior": "true", "eval_samples": "64"}
    spec = RunSpec("DiffSampler-Gaussian-v0", algo, budget=600, env_kwargs={"num_steps": T}, overrides=overrides)
    result = run_spec(spec, tmp_path)
    assert result["env_steps"] == 600 and result["energy_evaluations"] == 600 // T
    assert all(math.isfinite(result[k]) for k in ("log_z", "log_z_rw", "w2", "delta_log_z_rw"))


def test_tianshou_soft_nstep_returns_add_the_intermediate_entropy_bonuses():
    """SoftNStepSAC's returns minus those of Tianshou's SAC (same bootstrap draw) are -alpha times the current
    policy's log pi (tanh-squashed Gaussian, computed here from its mean and std) summed over the intermediate
    steps of the same episode."""
    from tianshou.algorithm import SAC
    from tianshou.data import Batch, ReplayBuffer

    n = 3
    alg = _built("ts-sac", n_step=n).algorithm
    buf = ReplayBuffer(32)
    gen = torch.Generator().manual_seed(0)
    steps = []
    for k in range(10):
        step = k % 4
        obs = torch.randn(3, generator=gen).numpy()
        act = (torch.rand(2, generator=gen) * 1.8 - 0.9).numpy()
        steps.append((obs, act, step == 3))
        batch = Batch(obs=obs, act=act, rew=float(k), terminated=step == 3, truncated=False, obs_next=obs + 1, info={})
        buf.add(batch)
    idx = np.arange(10)
    torch.manual_seed(5)
    soft = alg._preprocess_batch(buf[idx], buf, idx).returns.flatten()
    torch.manual_seed(5)
    base = SAC._preprocess_batch(alg, buf[idx], buf, idx).returns.flatten()

    def log_pi(obs, act):
        with torch.no_grad():
            dist = alg.policy(Batch(obs=obs[None], info=Batch())).dist
        u = torch.as_tensor(act, dtype=torch.float32)
        mean, std = dist.mean.flatten(), dist.stddev.flatten()
        g = torch.atanh(u)
        normal = (-0.5 * ((g - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)).sum()
        return (normal - torch.log1p(-u.square()).sum()).item()

    for i in idx:
        bonus, j = 0.0, i
        while not steps[j][2] and j - i < n - 1 and j + 1 < 10:
            j += 1
            bonus += log_pi(*steps[j][:2])
        assert (soft[i] - base[i]).item() == pytest.approx(-alg.alpha.value * bonus, rel=1e-4, abs=1e-4), i


def test_sac_presets_use_the_prior_critic_and_keep_the_stock_one_reachable():
    from diffsampler.agents.presets import get_preset
    from diffsampler.agents.runs import runner_for

    for name in ("sb3-sac", "ts-sac"):
        assert get_preset(name).agent.critic_prior is True
        spec = RunSpec("DiffSampler-Gaussian-v0", name, overrides={"critic_prior": "false"})
        assert runner_for(name).build(spec, get_preset(name)).agent.critic_prior is False


@pytest.mark.slow
def test_cli_sb3_ppo_preset_learns_the_default_gaussian(tmp_path):
    """Issue 19's done-when from the command line with the preset's defaults: SB3 PPO on DiffSampler-Gaussian-v0
    (T = 100), 3,000,000 env steps = 30,000 energy evaluations; about 2.5 min on one busy core (measured
    delta log Z^RW 0.010 in benchmarks/results/rl_sweep.jsonl)."""
    import json

    from diffsampler.cli import train

    run_dir = tmp_path / "ppo"
    argv = ["--env", "DiffSampler-Gaussian-v0", "--agent", "sb3-ppo", "--seed", "0", "--threads", "1"]
    assert train.main([*argv, "--run-dir", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["energy_evaluations"] <= 30_000
    assert metrics["delta_log_z_rw"] < 0.1
