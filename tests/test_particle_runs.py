"""Particle targets end to end: the zero-centre-of-mass process, the EGNN kernel, particle metrics in runs."""

from __future__ import annotations

import math

import pytest
import torch

from diffsampler import envs
from diffsampler.agents import particle_reference
from diffsampler.agents.egnn import ReducedCoordinates
from diffsampler.agents.gflownet import GFlowNetAgent, GFlowNetConfig
from diffsampler.agents.particle_reference import ReferenceProtocol
from diffsampler.agents.runs import RunSpec, run
from diffsampler.envs.targets.zero_com import zero_com_log_normal

TINY = ReferenceProtocol(particles=40, temperatures=5, smc_mala_steps=1, burn_in=20, steps=100, thin=5)


@pytest.fixture
def tiny_references(monkeypatch, tmp_path):
    """Reference samples from a tiny protocol, cached in a temporary directory (the real ones take minutes)."""
    monkeypatch.setenv("DIFFSAMPLER_CACHE", str(tmp_path))
    for name in particle_reference.PROTOCOLS:
        monkeypatch.setitem(particle_reference.PROTOCOLS, name, TINY)


def test_log_weights_in_subspace_coordinates_equal_the_full_space_computation():
    """The MDP runs in orthonormal coordinates z of the zero-CoM subspace V: its log-weight must be the one
    computed in R^(nD) with the projected Gaussians N_V of the reference and the kernel (brute force)."""
    mdp = envs.make_mdp("DiffSampler-DW4-v0", num_steps=6)
    target = mdp.target
    torch.manual_seed(0)
    agent = GFlowNetAgent(mdp, GFlowNetConfig("tb"))
    for p in agent.policy.net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    with torch.no_grad():
        traj = agent.sample(16, torch.Generator().manual_seed(1))
        x = target.to_particles(traj.states)  # (B, T + 1, nD), centred
        n, sd, dt, s2 = 4, 2, mdp.dt, mdp.t_scale
        ctx = agent.policy.context(None, mdp.reference)
        mean, var = agent.policy.transition(traj.states[:, :-1], None, ctx)
        log_pf = zero_com_log_normal(x[:, 1:], target.to_particles(mean), var, n, sd)
        k = torch.arange(1, 6, dtype=torch.float32)  # bridge: p_B(x_k | x_{k+1}) = N_V(k/(k+1) x_{k+1}, s2 dt k/(k+1))
        ratio = (k / (k + 1)).view(1, -1, 1)
        log_pb = zero_com_log_normal(x[:, 1:-1], ratio * x[:, 2:], s2 * dt * ratio.squeeze(-1), n, sd)
        brute = target.base.log_reward(x[:, -1]) + log_pb.sum(-1) - log_pf.sum(-1)
    torch.testing.assert_close(traj.log_weight, brute, rtol=1e-4, atol=1e-3)
    assert x.unflatten(-1, (n, sd)).sum(-2).abs().max() < 1e-4  # every state has its centre of mass at 0


@pytest.mark.parametrize("env_id", ["DiffSampler-DW4-v0", "DiffSampler-LJ13-v0"])
def test_the_equivariant_network_is_picked_for_particle_targets(env_id):
    agent = GFlowNetAgent(envs.make_mdp(env_id, num_steps=4), GFlowNetConfig("tb"))
    assert isinstance(agent.policy.net, ReducedCoordinates)
    full = GFlowNetAgent(envs.make_mdp(env_id, num_steps=4, zero_com=False), GFlowNetConfig("tb"))
    assert type(full.policy.net).__name__ == "EGNN"


@pytest.mark.parametrize("preset", ["tb-expl-ls", "smc", "mala"])
def test_runs_on_dw4_report_the_particle_metrics(preset, tiny_references, tmp_path):
    small = {"batch_size": "8", "eval_samples": "32", "buffer_capacity": "64", "ls_cycle": "2", "ls_steps": "4"}
    small |= {"ls_burn_in": "2", "particles": "32", "chains": "32", "mala_steps": "1"}
    fields = {"tb-expl-ls": small.keys() - {"particles", "chains", "mala_steps"}, "smc": {"particles", "mala_steps"}}
    fields["mala"] = {"chains"}
    overrides = {k: v for k, v in small.items() if k in fields[preset]} | {"eval_samples": "32"}
    spec = RunSpec("DiffSampler-DW4-v0", preset, budget=3, env_kwargs={"num_steps": 5}, overrides=overrides)
    result = run(spec, tmp_path / "run")
    for key in ("energy_w2", "distance_w2", "equivariant_w2"):
        assert result[key] is not None and math.isfinite(result[key]) and result[key] >= 0, key
    assert list((tmp_path / "run" / "figures").glob("*.png"))


def test_lj55_builds_rolls_out_and_evaluates(tiny_references):
    mdp = envs.make_mdp("DiffSampler-LJ55-v0", num_steps=3)
    agent = GFlowNetAgent(mdp, GFlowNetConfig("tb", batch_size=4))
    agent.train_step(0, torch.Generator().manual_seed(0))
    from diffsampler.agents.evaluation import evaluate_kernel

    ev = evaluate_kernel(mdp, agent.policy, 8, torch.Generator().manual_seed(1), torch.Generator())
    summary = ev.summary(mdp.target)
    assert math.isfinite(summary["log_z"]) and summary["equivariant_w2"] >= 0
