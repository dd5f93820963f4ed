"""SCLD: the SMC estimate of Z is unbiased, one segment without resampling is CMCD's importance sampling, the
prioritised sub-trajectory buffer, and training."""

from __future__ import annotations

import math

import pytest
import torch

from diffsampler import envs
from diffsampler.agents import metrics
from diffsampler.agents.cmcd import CMCDConfig
from diffsampler.agents.policy import PolicyConfig
from diffsampler.agents.scld import SCLDAgent, SCLDConfig
from diffsampler.buffers.segments import SegmentBuffer
from diffsampler.envs.targets import Gaussian


def _agent(mdp, seed: int = 0, **kw) -> SCLDAgent:
    """An SCLD agent with a non-zero control and a non-linear learned schedule (any sampler must be unbiased; a small
    perturbation keeps the weights' tails light enough for a mean to converge)."""
    policy = PolicyConfig(kernel="cmcd", cmcd=CMCDConfig(annealing="learned", learn_step_size=True))
    torch.manual_seed(seed)
    agent = SCLDAgent(mdp, SCLDConfig(policy, **kw))
    for p in agent.kernel.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return agent


def test_smc_estimate_of_z_is_unbiased_on_a_gaussian():
    """E[Z-hat] = Z for SMC with resampling and MALA moves: the mean of Z-hat / Z over many independent runs of
    few particles is within 4 standard errors of 1 (while log Z-hat itself is biased low)."""
    target = Gaussian(dim=2, mean=1.0, std=0.6)
    mdp = envs.DiffusionMDP(target, num_steps=8, reference="vp", dtype=torch.float64)
    agent = _agent(mdp, segments=4, ess_threshold=0.7, mala_steps=1, mala_step_size=0.05)
    agent.kernel.double()
    gen = torch.Generator().manual_seed(0)
    run = agent.simulate(8, gen, runs=1000)  # 1,000 independent runs of 8 particles, batched
    ratio = run.log_z.sub(target.log_Z).exp()
    mean, se = float(ratio.mean()), float(ratio.std() / math.sqrt(ratio.numel()))
    assert abs(mean - 1) < 4 * se, (mean, se)
    assert se < 0.03  # a test that can fail: the runs are informative
    assert int(run.resampled[:-1].sum()) > 300  # resampling happened inside the runs
    assert float(run.log_z.mean()) < target.log_Z - 0.02  # while log Z-hat is biased low (Jensen)


def test_one_segment_without_resampling_is_cmcd_importance_sampling():
    mdp = envs.make_mdp("DiffSampler-GMM25-v0", num_steps=6, reference="vp")
    agent = _agent(mdp, segments=1, ess_threshold=0.0, mala_steps=0)
    run = agent.simulate(64, torch.Generator().manual_seed(3))
    with torch.no_grad():
        paths = mdp.rollout(agent.kernel, 64, torch.Generator().manual_seed(3))
        log_w = mdp.score(agent.kernel, paths, agent.kernel.backward).log_weight
    torch.testing.assert_close(run.log_z[0].float(), metrics.iw_log_z(log_w), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(run.segments.log_w[0], log_w)


def test_segment_buffer_is_prioritised_without_replacement():
    buf = SegmentBuffer(segments=2, length=1, dim=1, capacity=4, temperature=1.0)
    states = torch.arange(8.0).view(2, 4, 1, 1).expand(2, 4, 2, 1)
    log_w = torch.tensor([[0.0, math.log(3.0), -math.inf, 0.0], [0.0, 0.0, 0.0, 0.0]])
    buf.add(states, states.clone(), torch.zeros(2, 4, 2), log_w)
    gen, counts = torch.Generator().manual_seed(0), torch.zeros(2, 4)
    for _ in range(1000):
        *_, index = buf.sample(2, gen)
        assert all(len(set(row.tolist())) == 2 for row in index)  # without replacement
        counts.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float))
    assert counts[0, 2] == 0 and counts[1].min() > 420  # -inf never drawn; equal weights drawn evenly (500 each)
    assert counts[0, 1] > counts[0, 0] + 100 and counts[0, 1] > counts[0, 3] + 100  # weight 3 drawn most
    buf.update(index, torch.zeros(2, 2))
    copy = SegmentBuffer(segments=2, length=1, dim=1, capacity=4)
    copy.load_state_dict(buf.state_dict())
    assert torch.equal(copy.log_w, buf.log_w) and torch.equal(copy.states, buf.states) and len(copy) == 4
    with pytest.raises(ValueError, match="draw"):
        buf.sample(5, gen)


def test_training_steps_fill_the_buffer_and_move_the_schedule():
    mdp = envs.make_mdp("DiffSampler-Manywell-v0", dim=4, num_steps=8, reference="vp")
    torch.manual_seed(0)
    agent = SCLDAgent(mdp, SCLDConfig(batch_size=16, segments=2, buffer_batches=2))
    before = agent.kernel.beta_logits.detach().clone()
    gen = torch.Generator().manual_seed(0)
    for it in range(3):
        out = agent.train_step(it, gen)
        assert math.isfinite(float(out["loss"])) and math.isfinite(float(out["log_z"]))
    assert len(agent.source) == 32 and not torch.equal(before, agent.kernel.beta_logits)
    assert not torch.equal(agent.mala_step, torch.full((2,), 0.01))  # adapted
    with pytest.raises(ValueError, match="divide"):
        SCLDAgent(mdp, SCLDConfig(segments=3))
    with pytest.raises(ValueError, match="cmcd"):
        SCLDConfig(policy=PolicyConfig())
