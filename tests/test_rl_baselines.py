"""RL baselines: batched adapters vs the libraries' own vector envs, log pi with squashing and Jacobian,
the soft-RL log-weight identity, short training runs of every baseline, and config validation."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import gymnasium as gym
import numpy as np
import pytest
import torch

# Tianshou JIT-compiles its return computations with numba at every start (tens of seconds on a busy CPU);
# the tiny runs here do not need it. Set before tianshou (the only numba user) is imported.
os.environ.setdefault("NUMBA_DISABLE_JIT", "1")
pytest.importorskip("stable_baselines3")
pytest.importorskip("tianshou")

from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402
from tianshou.env import DummyVectorEnv  # noqa: E402

from diffsampler import envs  # noqa: E402
from diffsampler.agents.baselines import rl  # noqa: E402
from diffsampler.agents.baselines.rl_config import RLConfig, RLRunConfig  # noqa: E402
from diffsampler.agents.baselines.rl_envs import make_plain_env, make_sb3_vec_env, make_tianshou_vec_env  # noqa: E402
from diffsampler.agents.baselines.rl_eval import HeadKernel  # noqa: E402
from diffsampler.agents.metrics import log_weights  # noqa: E402
from diffsampler.agents.runner import FINAL_KEYS  # noqa: E402
from diffsampler.agents.runs import RunSpec  # noqa: E402
from diffsampler.agents.runs import run as run_spec  # noqa: E402
from diffsampler.envs.gym_env import default_action_bound  # noqa: E402
from diffsampler.envs.process import gaussian_log_prob  # noqa: E402
from scripts import train_agent  # noqa: E402

T = 5
ALGOS = sorted(rl.ALGORITHMS)
SMALL = dict(n_envs=4, hidden=16, layers=1, batch_size=20)


def _config(algo: str, env_id="DiffSampler-Gaussian-v0", **env_kwargs) -> RLRunConfig:
    agent = RLConfig(algo, action_bound_std=50.0 if algo == "sb3-ppo" else 10.0, **SMALL)
    return RLRunConfig(env_id, {"num_steps": T, **env_kwargs}, agent=agent, env_steps=4 * T, eval_samples=50)


def _untrained(algo: str, seed=0, **env_kwargs):
    """An untrained model of ``algo``, its batched env, policy head and MDP."""
    config = _config(algo, **env_kwargs)
    mdp = envs.make_mdp(config.env_id, **config.env_kwargs, reward_mode="soft_rl")
    module, cls = rl.algorithm(algo)
    venv, _ = module.make_env(config.agent, config.env_id, rl.env_kwargs_for(config, mdp))
    model = cls.build(config.agent, venv, mdp, seed, "cpu")
    return model, venv, cls.head(model), mdp


def _actions(n, d, seed, scale=0.3):
    return np.random.default_rng(seed).normal(0.1, scale, size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("shaping", [False, True])
def test_sb3_adapter_matches_dummy_vec_env_of_plain_envs(shaping):
    kwargs = dict(num_steps=T, reward_mode="soft_rl", action_bound=2.0)
    ours = make_sb3_vec_env("DiffSampler-GMM25-v0", 3, shaping, **kwargs)
    ref = DummyVecEnv([lambda: make_plain_env("DiffSampler-GMM25-v0", shaping, **kwargs) for _ in range(3)])
    ours.seed(3)
    np.testing.assert_array_equal(ours.reset(), ref.reset())
    assert ours.observation_space == ref.observation_space and ours.action_space == ref.action_space
    for k in range(2 * T + 2):  # through two autoresets
        a = _actions(3, 2, k)
        (o1, r1, d1, i1), (o2, r2, d2, i2) = ours.step(a), ref.step(a)
        assert o1.dtype == np.float32 and r1.dtype == np.float32 and d1.dtype == bool
        np.testing.assert_allclose(o1, o2, atol=1e-6)
        np.testing.assert_allclose(r1, r2, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(d1, d2)
        assert d1.all() == ((k + 1) % T == 0) and d1.all() == d1.any()
        for a_info, b_info in zip(i1, i2):
            assert ("terminal_observation" in a_info) == ("terminal_observation" in b_info)
            if "terminal_observation" in a_info:
                np.testing.assert_allclose(a_info["terminal_observation"], b_info["terminal_observation"], atol=1e-6)
                assert a_info["TimeLimit.truncated"] is False
    assert ours.get_attr("action_space", [0, 2]) == [ours.action_space] * 2
    assert ours.env_is_wrapped(gym.Wrapper) == [False] * 3
    with pytest.raises(ValueError, match="SAME_STEP"):
        type(ours)(gym.make_vec("DiffSampler-GMM25-v0", num_envs=2))


@pytest.mark.parametrize("shaping", [False, True])
def test_tianshou_adapter_matches_dummy_vector_env_with_env_ids(shaping):
    kwargs = dict(num_steps=T, reward_mode="soft_rl")
    ours = make_tianshou_vec_env("DiffSampler-Gaussian-v0", 3, shaping, **kwargs)
    ref = DummyVectorEnv([lambda: make_plain_env("DiffSampler-Gaussian-v0", shaping, **kwargs) for _ in range(3)])
    assert len(ours) == 3 and ours.action_space == [ours.venv.single_action_space] * 3
    np.testing.assert_array_equal(ours.reset()[0], ref.reset()[0])
    schedule = [None, [0, 2], [1], [1], None, None, None, [0, 2]]  # env 1 finishes one step before 0 and 2
    for k, ids in enumerate(schedule):
        n = 3 if ids is None else len(ids)
        a = _actions(n, 2, k)
        (o1, r1, t1, u1, i1), (o2, r2, t2, _, i2) = ours.step(a, ids), ref.step(a, ids)
        np.testing.assert_allclose(o1, o2, atol=1e-6)
        np.testing.assert_allclose(r1, r2, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(t1, t2)
        assert not u1.any() and len(i1) == len(i2) == n
        done = np.flatnonzero(t1)
        if done.size:
            ids_done = np.arange(3)[done] if ids is None else np.asarray(ids)[done]
            np.testing.assert_array_equal(ours.reset(ids_done)[0], ref.reset(ids_done)[0])
    ours.reset()
    for _ in range(T):
        ours.step(_actions(3, 2, 0))
    with pytest.raises(RuntimeError, match="have ended"):
        ours.step(_actions(1, 2, 0), [1])
    with pytest.raises(ValueError, match="env ids"):
        ours.reset([3])


@pytest.mark.parametrize("algo", ALGOS)
def test_log_pi_is_a_normalised_density_in_env_action_units(algo):
    """Quadrature of exp(log pi) over the action line (d = 1) is 1 only with the squashing and Box Jacobians."""
    _, _, head, mdp = _untrained(algo, dim=1)
    obs = mdp.observe(torch.full((1, 1), 0.3), torch.tensor([2]))
    lim = default_action_bound(mdp, 10.0) if algo != "sb3-ppo" else 12.0  # PPO: Gaussian of std sigma sqrt(dt)
    a = torch.linspace(-lim, lim, 40_001, dtype=torch.float64)[1:-1].unsqueeze(-1)
    step = 2 * lim / 40_000
    with torch.no_grad():
        density = head.log_prob(obs.expand(len(a), -1), a.float()).double().exp()
    assert float(density.sum() * step) == pytest.approx(1.0, abs=2e-3)
    # samples follow that density: their mean matches the quadrature mean (4 standard errors)
    with torch.no_grad():
        x, lp = head.sample(obs.expand(20_000, -1), torch.Generator().manual_seed(0))
    mean_q = float((density * a[:, 0].double()).sum() * step)
    sd_q = math.sqrt(float((density * (a[:, 0].double() - mean_q) ** 2).sum() * step))
    assert abs(float(x.double().mean()) - mean_q) < 4 * sd_q / math.sqrt(20_000)
    torch.testing.assert_close(lp, head.log_prob(obs.expand(20_000, -1), x), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("shaping", [False, True])
@pytest.mark.parametrize("algo", ALGOS)
def test_soft_rl_return_minus_log_pi_is_the_log_weight(algo, shaping):
    """Policy samples replayed through the SB3 adapter: sum r - sum log pi = log R + sum log p_B - sum log p_F,
    with or without the reference-potential shaping (which moves reward between steps, not in total)."""
    n = 4
    _, _, head, mdp = _untrained(algo)
    kernel = HeadKernel(mdp, head)
    traj = mdp.score(kernel, mdp.rollout(kernel, n, torch.Generator().manual_seed(1)))
    bound = default_action_bound(mdp, 50.0 if algo == "sb3-ppo" else 10.0)
    kwargs = dict(num_steps=T, reward_mode="soft_rl", action_bound=bound)
    venv = make_sb3_vec_env("DiffSampler-Gaussian-v0", n, shaping, **kwargs)
    venv.reset()
    increments = (traj.states[:, 1:] - traj.states[:, :-1]).numpy()
    rewards = np.stack([venv.step(increments[:, k])[1] for k in range(T)], 1)
    soft_return = torch.as_tensor(rewards, dtype=torch.float64).sum(1) - traj.log_pf.double().sum(1)
    expected = log_weights(mdp.log_reward(traj.terminal), traj.log_pf, mdp.log_pb_path(traj.states))
    torch.testing.assert_close(soft_return, expected.double(), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(soft_return, traj.log_weight.double(), rtol=1e-5, atol=1e-3)
    path_log_pf = kernel.log_prob(traj.states[:, :-1], traj.states[:, 1:], None)
    torch.testing.assert_close(path_log_pf, traj.log_pf, rtol=1e-4, atol=1e-3)
    if shaping:  # before the last step, the shaped reward is the reference's forward log-density
        inc = torch.as_tensor(increments[:, :-1])
        forward = gaussian_log_prob(inc, torch.zeros_like(inc), mdp.t_scale * mdp.dt)
        torch.testing.assert_close(torch.as_tensor(rewards[:, :-1]), forward, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("algo", ALGOS)
def test_each_baseline_trains_end_to_end_through_agents_runs(algo, tmp_path):
    spec = RunSpec(
        "DiffSampler-Gaussian-v0",
        algo,
        budget=310,
        env_kwargs={"num_steps": T},
        overrides={**{k: str(v) for k, v in SMALL.items()}, "eval_samples": "64"},
    )
    result = run_spec(spec, tmp_path)
    assert set(FINAL_KEYS) <= set(result)
    assert result["env_steps"] == 320 and result["iterations"] == 320  # whole batches of n_envs episodes
    assert result["energy_evaluations"] == 320 // T
    assert all(math.isfinite(result[k]) for k in ("log_z", "log_z_rw", "w2"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["energy_evaluations"] == 64
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["agent"]["algorithm"] == algo and config["env_kwargs"]["reward_mode"] == "soft_rl"


@pytest.mark.parametrize("algo", ["sb3-sac", "ts-sac"])
def test_library_dummy_vec_env_of_plain_envs_trains(algo):
    config = _config(algo)
    config = dataclasses.replace(config, agent=dataclasses.replace(config.agent, vec_env="dummy", n_envs=2))
    _, _, _, stats, _ = rl.train(config)
    # one log R per finished episode (info["log_reward"] reuses the reward's evaluation)
    assert stats["energy_evaluations"] == stats["env_steps"] // T == 4


def test_cli_runs_an_rl_agent(tmp_path, capsys):
    code = train_agent.main(
        [
            "--env",
            "DiffSampler-GMM25-v0",
            "--agent",
            "sb3-ppo",
            "--env-steps",
            "40",
            "--num-steps",
            "5",
            "--n-envs",
            "8",
            "--batch-size",
            "20",
            "--eval-samples",
            "32",
            "--no-progress",
            "--run-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["energy_evaluations"] == 8 and result["modes_covered"] is not None
    assert "energy_evaluations" in capsys.readouterr().out
    # SB3 SAC through SB3's own DummyVecEnv of gymnasium.make envs, from the CLI
    args = ["--agent", "sb3-sac", "--vec-env", "dummy", "--n-envs", "2", "--env-steps", "20", "--batch-size", "8"]
    args += ["--num-steps", "5", "--hidden", "16", "--eval-samples", "16", "--no-progress", "--run-dir", str(tmp_path)]
    assert train_agent.main(["--env", "DiffSampler-Manywell-v0", "--dim", "4", *args]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["agent"]["vec_env"] == "dummy" and config["env_kwargs"] == {
        "reward_mode": "soft_rl",
        "dim": 4,
        "num_steps": 5,
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(algorithm="dqn"), "'dqn'"),
        (dict(action_bound_std=None), "action_bound_std.*got None"),
        (dict(action_bound_std=0.0), "action_bound_std.*got 0.0"),
        (dict(vec_env="subproc"), "'subproc'"),
        (dict(n_envs=0), "n_envs.*got 0"),
        (dict(learning_rate=-1.0), "learning_rate.*-1.0"),
    ],
)
def test_bad_agent_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RLConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(env_kwargs={"reward_mode": "terminal"}), "'terminal'"),
        (dict(env_kwargs={"action_bound": 1.0}), "action_bound_std"),
        (dict(env_steps=0), "env_steps.*got 0"),
    ],
)
def test_bad_run_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RLRunConfig(**kwargs)


def test_equal_energy_budgets_and_comparison_table():
    from diffsampler.agents.baselines import rl_comparison as cmp
    from diffsampler.agents.presets import PRESETS

    assert cmp.gflownet_iterations(PRESETS["tb-expl"].agent, 900, num_steps=4) == 3  # 300 terminal rewards each
    # LP evaluates the score at every step: 300 (T + 1) per iteration, so T counts
    assert cmp.gflownet_iterations(PRESETS["tb-expl-lp"].agent, 3_000, num_steps=4) == 2
    assert cmp.gflownet_iterations(PRESETS["tb-expl-lp"].agent, 3_000, num_steps=9) == 1
    assert cmp.budget("sb3-sac", 900, num_steps=100) == 90_000  # one evaluation per episode
    ls = cmp.gflownet_iterations(PRESETS["tb-expl-ls"].agent, 61_000, num_steps=4)
    assert 1 <= ls < 61_000 // 300 // 10  # a local-search call (300 MALA chains x 200 steps) spends ~60,000
    target = {"Gaussian": ("DiffSampler-Gaussian-v0", {"num_steps": T})}
    overrides = {"tb-expl": {"eval_samples": "32", "figures": "false"}, "sb3-ppo": {**SMALL, "eval_samples": "32"}}
    rows = cmp.compare(target, ["tb-expl", "sb3-ppo"], energy=600, overrides=overrides, log=lambda line: None)
    assert [(r["method"], r["energy_evaluations"]) for r in rows] == [("tb-expl", 600), ("sb3-ppo", 600)]
    table = cmp.markdown(rows).splitlines()
    assert len(table) == 4 and "| Gaussian | tb-expl | 2 iterations |" in table[2]
    assert "| Gaussian | sb3-ppo | 3,000 env steps |" in table[3] and table[3].endswith("| 600 |")


@pytest.mark.slow
def test_sb3_sac_learns_the_gaussian_log_z():
    """The soft-RL bookkeeping end to end (benchmarks/results/rl_sb3_sac_gaussian_sanity.json): ~5 min."""
    spec = RunSpec(
        "DiffSampler-Gaussian-v0",
        "sb3-sac",
        budget=1_000_000,
        env_kwargs={"num_steps": 10},
        # the stock setting of that JSON: library-default initial std, no shaping, the stock critics
        overrides={"n_envs": "100", "init_at_reference": "false", "reward_shaping": "false", "critic_prior": "false"},
        threads=1,
    )
    result = run_spec(spec, None)
    assert result["delta_log_z_rw"] < 0.1 and result["delta_log_z"] < 0.6
