"""Conditional targets through the MDP core, the Gymnasium faces, the agents, buffers and the trainer.

A tiny random VAE decoder (tests/test_vae.py) keeps these fast and free of data files; the registered
``DiffSampler-VAE-v0`` uses the default digits VAE, trained once per test session (tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_vae import tiny_vae

from diffsampler import envs
from diffsampler.agents.conditional import summarize_conditional
from diffsampler.agents.gflownet import GFlowNetAgent, GFlowNetConfig
from diffsampler.agents.objectives import vargrad
from diffsampler.agents.policy import DiffusionPolicy, PolicyConfig
from diffsampler.agents.presets import PRESETS
from diffsampler.agents.training import TrainConfig, Trainer
from diffsampler.buffers.local_search import LocalSearchConfig
from diffsampler.buffers.source import BufferConfig
from diffsampler.envs import process
from diffsampler.envs.engine import Paths
from diffsampler.envs.sampler_mdp import DiffusionMDP

# The library's own default VAE (digits), whatever $DIFFSAMPLER_DATA says (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("no_data_path")

T = 4


def small_mdp(reward_mode="terminal", n=6) -> DiffusionMDP:
    return DiffusionMDP(tiny_vae(n=n), num_steps=T, reward_mode=reward_mode)


# --- MDP core and Gymnasium faces ---------------------------------------------------------------------


@pytest.mark.parametrize("reward_mode", ["terminal", "soft_rl"])
def test_mdp_observes_the_condition_and_pays_the_conditional_reward(reward_mode):
    mdp = small_mdp(reward_mode)
    target = mdp.target
    cond = target.conditions[[0, 3, 1]]
    batch = mdp.new_batch(3, cond)
    g = torch.Generator().manual_seed(0)
    states, rewards = [batch.x.clone()], []
    for k in range(T):
        obs = batch.observe()
        assert obs.shape == (3, target.dim + 1 + target.cond_dim)
        assert torch.equal(obs[:, target.dim + 1 :], cond) and torch.all(obs[:, target.dim] == k / T)
        reward, terminated = batch.step(batch.x + torch.randn(3, target.dim, generator=g))
        states.append(batch.x.clone())
        rewards.append(reward)
    states, rewards = torch.stack(states, 1), torch.stack(rewards, 1)
    expected = target.log_reward(states[:, -1], cond)
    if reward_mode == "soft_rl":
        expected = expected + process.bridge_log_pb_path(states, mdp.t_scale).sum(1)
    torch.testing.assert_close(rewards.sum(1), expected, rtol=1e-5, atol=1e-4)
    assert terminated.all()


def test_mdp_conditions_are_required_validated_and_reset_per_episode():
    mdp = small_mdp()
    with pytest.raises(ValueError, match="needs a condition"):
        mdp.new_batch(2)
    with pytest.raises(ValueError, match=r"shape \(2, 6\)"):
        mdp.new_batch(2, torch.zeros(3, 6))
    with pytest.raises(ValueError, match="finite"):
        mdp.new_batch(1, torch.full((1, 6), math.nan))
    batch = mdp.new_batch(2, mdp.target.conditions[:2])
    batch.reset(torch.tensor([False, True]), mdp.target.conditions[4:5])
    assert torch.equal(batch.condition, mdp.target.conditions[[0, 4]])
    unconditional = envs.make_mdp("DiffSampler-Gaussian-v0")
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.new_batch(2, torch.zeros(2, 3))


def test_vae_env_reset_draws_or_takes_conditions():
    env = gym.make("DiffSampler-VAE-v0", num_steps=T)
    target = env.unwrapped.mdp.target
    d, c = target.dim, target.cond_dim
    assert env.observation_space.shape == (d + 1 + c,) and env.observation_space.low[-1] == 0.0
    obs, info = env.reset(seed=3)
    assert np.array_equal(obs[d + 1 :], target.conditions[info["condition_index"]].numpy())
    assert env.reset(seed=3)[1] == info  # seeded draw
    obs, info = env.reset(options={"condition_index": 7})
    assert info["condition_index"] == 7 and np.array_equal(obs[d + 1 :], target.conditions[7].numpy())
    image = target.eval_conditions[0].numpy()
    obs, info = env.reset(options={"condition": image})
    assert info["condition_index"] == -1 and np.array_equal(obs[d + 1 :], image)
    for _ in range(T):
        obs, reward, terminated, _, step_info = env.step(np.full(d, 0.3, dtype=np.float32))
    expected = float(target.log_reward(torch.as_tensor(obs[None, :d]), torch.as_tensor(image[None]))[0])
    assert terminated and reward == pytest.approx(expected, rel=1e-5)
    for bad in ({"condition_index": len(target.conditions)}, {"condition": np.zeros(c + 1)}):
        with pytest.raises(ValueError, match="condition"):
            env.reset(options=bad)
    with pytest.raises(ValueError, match="unconditional"):
        gym.make("DiffSampler-Gaussian-v0").reset(options={"condition_index": 0})


def test_vae_vector_env_draws_new_conditions_on_autoreset():
    vec = gym.make_vec("DiffSampler-VAE-v0", num_envs=5, num_steps=T, backend="torch")
    env = vec.unwrapped
    d = env.mdp.dim
    obs, info = vec.reset(seed=0)
    first = info["condition_index"].clone()
    assert torch.equal(obs[:, d + 1 :], env.mdp.target.conditions[first])
    for _ in range(T):
        obs, reward, terminated, *_ = vec.step(torch.zeros(5, d))
    assert terminated.all()
    torch.testing.assert_close(reward, env.mdp.target.log_reward(torch.zeros(5, d), env.mdp.target.conditions[first]))
    obs, *_ = vec.step(torch.zeros(5, d))  # NEXT_STEP autoreset: new episodes, new conditions
    assert not torch.equal(env.condition_index, first)
    assert torch.equal(obs[:, d + 1 :], env.mdp.target.conditions[env.condition_index])
    idx = np.array([1, 2])
    obs, info = vec.reset(options={"reset_mask": np.array([True, True, False, False, False]), "condition_index": idx})
    assert info["condition_index"][:2].tolist() == [1, 2]


# --- networks, objectives, agents ----------------------------------------------------------------------


def test_conditions_reach_every_network():
    target = tiny_vae()
    cfg = PolicyConfig(hidden_dim=16, harmonics=8, langevin=True, learn_backward=True)
    policy = DiffusionPolicy(target.dim, T, 1.0, cfg, cond_dim=target.cond_dim)
    torch.nn.init.normal_(policy.net.joint[-1].weight)  # leave the zero initialisation
    torch.nn.init.normal_(policy.backward.joint[-1].weight)
    a, b = target.conditions[:1].expand(2, -1), target.conditions[1:2].expand(2, -1)
    states = torch.randn(2, T + 1, target.dim, generator=torch.Generator().manual_seed(0))
    states[:, 0] = 0
    mdp = DiffusionMDP(target, num_steps=T)

    def scored(condition):
        return mdp.score(policy, Paths(states, torch.zeros(2), torch.zeros(2, T, 3), None, condition), policy.backward)

    assert not torch.allclose(scored(a).log_pf, scored(b).log_pf)
    assert not torch.allclose(scored(a).log_pb, scored(b).log_pb)
    for objective in ("tb", "fl-subtb"):
        agent = GFlowNetAgent(mdp, GFlowNetConfig(objective, batch_size=4, condition_repeats=2))
        log_z = agent.learned_log_z(target.conditions[:2])
        if objective == "tb":
            torch.nn.init.normal_(agent.log_z.mlp[-1].weight)
            log_z = agent.learned_log_z(target.conditions[:2])
        assert log_z.shape == (2,) and log_z[0] != log_z[1]


def test_grouped_vargrad_uses_a_per_condition_log_z():
    g = torch.Generator().manual_seed(0)
    log_pf, log_pb, log_r = (
        torch.randn(8, 3, generator=g),
        torch.randn(8, 3, generator=g),
        torch.randn(8, generator=g),
    )
    group = torch.tensor([5, 5, 2, 2, 2, 9, 5, 9])
    loss = vargrad(log_pf, log_pb, log_r, group)
    log_w = log_r + log_pb.sum(-1) - log_pf.sum(-1)
    expected = torch.stack([(log_w[i] - log_w[group == group[i]].mean()).square() for i in range(8)])
    torch.testing.assert_close(loss, expected)
    # a per-condition shift of log R (a different log Z per condition) leaves the grouped loss unchanged
    shifted = vargrad(log_pf, log_pb, log_r + 10.0 * group, group)
    torch.testing.assert_close(shifted, loss, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(vargrad(log_pf, log_pb, log_r + 10.0 * group), vargrad(log_pf, log_pb, log_r))


def _agent(preset: str, seed: int, **overrides) -> GFlowNetAgent:
    mdp = DiffusionMDP(tiny_vae(n=6), num_steps=T, **PRESETS[preset].env_kwargs)  # e.g. dds: the VP reference
    cfg = PRESETS[preset].agent
    small = dict(batch_size=12, condition_repeats=3) | overrides
    if cfg.backward_source == "buffer":
        ls = LocalSearchConfig(ls_steps=4, ls_burn_in=2)
        small["buffer"] = BufferConfig(buffer_capacity=100, ls_cycle=2, local_search=ls)
    torch.manual_seed(seed)
    return GFlowNetAgent(mdp, dataclasses.replace(cfg, **small))


def _run(agent: GFlowNetAgent, steps: int, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    return [float(agent.train_step(it, g, g)["loss"]) for it in range(steps)]


@pytest.mark.parametrize(
    "preset", [name for name, p in PRESETS.items() if isinstance(p.agent, GFlowNetConfig) and p.conditional]
)
def test_conditional_training_is_bit_identical_under_a_seed(preset):
    a, b, c = _agent(preset, 0), _agent(preset, 0), _agent(preset, 1)
    la, lb, lc = _run(a, 4, 0), _run(b, 4, 0), _run(c, 4, 1)
    assert all(math.isfinite(v) for v in la) and la == lb and la != lc
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    if a.source is not None:  # buffers store each state's condition, and LS kept it
        assert torch.equal(a.source.replay.index[: len(a.source.replay)], b.source.replay.index[: len(b.source.replay)])
        ls = a.source.ls_buffer
        assert len(ls) > 0 and bool((ls.index[: len(ls)] < 6).all())
        target = a.target
        idx = ls.index[: len(ls)]
        torch.testing.assert_close(ls.log_r[: len(ls)], target.log_reward(ls.x[: len(ls)], target.conditions[idx]))


def test_training_batches_draw_conditions_in_groups():
    agent = _agent("vargrad-expl-lp", 0)
    batch = agent.next_batch(0, torch.Generator().manual_seed(0))
    idx = batch.condition_index
    assert not batch.backward and idx.shape == (12,)
    assert torch.equal(idx.view(4, 3), idx.view(4, 3)[:, :1].expand(4, 3))
    with pytest.raises(ValueError, match="condition_repeats >= 2"):
        _agent("vargrad-expl-lp", 0, condition_repeats=1)
    with pytest.raises(ValueError, match="must divide"):
        _agent("tb", 0, condition_repeats=5)
    with pytest.raises(ValueError, match="needs a condition"):
        agent.sample(3)


# --- evaluation and the trainer -----------------------------------------------------------------------


def test_summarize_conditional_on_known_log_weights():
    c = torch.tensor([-10.0, -40.0, -100.0])  # constant log-weights per condition: every estimate is exact
    log_w = c.unsqueeze(1).expand(3, 5).clone()
    out = summarize_conditional(log_w)
    assert out["log_z"] == pytest.approx(-50.0) and out["log_z_rw"] == pytest.approx(-50.0)
    assert out["log_z_rw_across_conditions"] == pytest.approx(float(torch.logsumexp(c, 0) - math.log(3)))
    assert out["ess"] == pytest.approx(1.0) and out["delta_log_z"] is None
    log_w[0, 0] = -8.0  # one better trajectory raises the IW bound of condition 0 only
    out = summarize_conditional(log_w)
    assert out["log_z_rw"] > out["log_z"] and out["log_z_rw"] == pytest.approx(
        (float(torch.logsumexp(log_w[0], 0) - math.log(5)) - 140) / 3
    )


def test_trainer_on_the_vae_env_reports_table2_metrics(tmp_path):
    agent = dataclasses.replace(PRESETS["vargrad-expl-lp"].agent, batch_size=20, condition_repeats=5)
    cfg = TrainConfig(
        "DiffSampler-VAE-v0", {"num_steps": T}, "vargrad-expl-lp", agent, iterations=3, eval_every=3, eval_samples=200
    )
    result = Trainer(cfg, tmp_path).run(progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["conditions"] == 100 and saved["trajectories_per_condition"] == 2
    for key in ("log_z", "log_z_rw", "log_z_rw_across_conditions"):
        assert math.isfinite(saved[key]) and saved[key] == pytest.approx(result[key])
    assert saved["log_z_rw"] >= saved["log_z"] and saved["delta_log_z"] is None
    assert (tmp_path / "figures" / "samples_000003.png").is_file()
    resumed = Trainer.resume(tmp_path)  # checkpoint round trip of a conditional agent
    assert resumed.iteration == 3


def test_energy_evaluations_count_every_state_of_a_whole_path_call():
    from diffsampler.envs.targets.base import EvaluationCounter

    target = tiny_vae()
    counter = EvaluationCounter(target)
    target.bind(target.conditions[:3].unsqueeze(1)).log_reward(torch.zeros(3, 7, target.dim))  # 3 paths x 7 states
    target.log_reward(torch.zeros(2, target.dim), target.conditions[:2])
    assert counter.count == 3 * 7 + 2
