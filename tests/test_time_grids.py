"""Time grids: random and low-discrepancy training grids, evaluation with another T, exact log-weights."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from diffsampler import envs
from diffsampler.agents.gflownet import GFlowNetAgent, GFlowNetConfig
from diffsampler.agents.policy import PolicyConfig
from diffsampler.agents.presets import PRESETS
from diffsampler.agents.training import TrainConfig, Trainer
from diffsampler.envs import process
from diffsampler.envs.targets import Gaussian


class ExactGridKernel:
    """The exact conditionals P(x_{k+1} | x_k) of N(mu, s^2) x the Brownian bridge on any time grid:
    coordinates are Gaussian with mean t mu and Cov(x_i, x_j) = t_i t_j s^2 + sigma^2 t_i (1 - t_j), i <= j."""

    gaussian, score_clip = True, None

    def __init__(self, mu: float, s2: float, sigma2: float):
        self.mu, self.s2, self.sigma2 = mu, s2, sigma2

    def context(self, condition=None, reference=None):
        return reference.grid

    def _cov(self, ti, tj):
        return ti * tj * self.s2 + self.sigma2 * ti * (1 - tj)

    def transition(self, x, step, times, score=None):
        t0, t1 = (times[:-1].view(-1, 1), times[1:].view(-1, 1)) if step is None else (times[step], times[step + 1])
        gain = torch.where(t0 > 0, self._cov(t0, t1) / self._cov(t0, t0).clamp_min(1e-300), torch.zeros_like(t0))
        mean = t1 * self.mu + gain * (x - t0 * self.mu)
        return mean, (self._cov(t1, t1) - gain * self._cov(t0, t1)).expand_as(mean)

    def fixed_std(self, extra_std=0.0, ctx=None):
        return None


@pytest.mark.parametrize("grid", sorted(process.TIME_GRIDS))
def test_grids_are_valid_and_fresh(grid):
    make = process.TIME_GRIDS[grid]
    gen = torch.Generator().manual_seed(0)
    a, b = make(50, gen), make(50, gen)
    for t in (a, b):
        process.check_time_grid(t, 50)
    steps = a.diff()
    if grid == "uniform":
        assert torch.equal(a, b)
    else:
        assert not torch.equal(a, b)  # a fresh grid per batch
        assert float(steps.max() / steps.min()) <= (10.0 if grid == "random" else 3.0) + 1e-9


@pytest.mark.parametrize("grid", ["random", "low-discrepancy"])
@pytest.mark.parametrize("mu, s, sigma2", [(0.0, 1.0, 1.0), (1.5, 0.7, 2.0)])
def test_exact_kernel_gives_log_weight_log_z_on_any_grid(grid, mu, s, sigma2):
    target = Gaussian(dim=3, mean=mu, std=s)
    mdp = envs.DiffusionMDP(target, num_steps=20, t_scale=sigma2, dtype=torch.float64)
    mdp = mdp.with_grid(process.TIME_GRIDS[grid](20, torch.Generator().manual_seed(1)))
    kernel = ExactGridKernel(mu, s * s, sigma2)
    traj = mdp.score(kernel, mdp.rollout(kernel, 64, torch.Generator().manual_seed(2)))
    torch.testing.assert_close(traj.log_weight, torch.full((64,), target.log_Z, dtype=torch.float64))
    bwd = mdp.score(kernel, mdp.rollout_backward(target.sample(64).double(), torch.Generator().manual_seed(3)))
    torch.testing.assert_close(bwd.log_weight, torch.full((64,), target.log_Z, dtype=torch.float64))


@pytest.mark.parametrize("reference", ["bridge", "vp"])
def test_the_uniform_grid_given_explicitly_scores_as_the_default(reference):
    mdp = envs.make_mdp("DiffSampler-GMM25-v0", num_steps=8, reference=reference)
    torch.manual_seed(0)
    agent = GFlowNetAgent(mdp, GFlowNetConfig("tb", PolicyConfig(langevin=True)))
    torch.nn.init.normal_(agent.policy.net.last.weight, std=0.1)
    paths = mdp.rollout(agent.policy, 16, torch.Generator().manual_seed(0))
    explicit = mdp.with_grid(process.uniform_grid(8))
    a, b = mdp.score(agent.policy, paths), explicit.score(agent.policy, paths)
    torch.testing.assert_close(a.log_pf, b.log_pf, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.log_pb, b.log_pb, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", ["tb-expl", "fl-subtb-lp", "pis", "dds"])
def test_training_on_random_grids_and_evaluating_with_another_t(preset, tmp_path):
    config = TrainConfig(
        env_id="DiffSampler-Manywell-v0",
        env_kwargs={"dim": 4, "num_steps": 10, **PRESETS[preset].env_kwargs},
        preset=preset,
        agent=dataclasses.replace(PRESETS[preset].agent, time_grid="random"),
        iterations=3,
        eval_samples=32,
        figures=False,
        eval_steps=25,
    )
    trainer = Trainer(config)
    result = trainer.run(progress=False)
    assert math.isfinite(result["log_z"]) and result["iterations"] == 3
    assert trainer.last_samples.shape == (32, 4)


def test_time_grid_is_validated():
    with pytest.raises(ValueError, match="unknown time_grid 'sobol'"):
        GFlowNetConfig(time_grid="sobol")
    with pytest.raises(ValueError, match="strictly increasing"):
        process.check_time_grid([0.0, 0.5, 0.5, 1.0], 3)
    with pytest.raises(ValueError, match="eval_steps"):
        TrainConfig(eval_steps=0)
