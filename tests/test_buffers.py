"""Replay buffer, MALA local search, and training with them."""

import math

import pytest
import torch
from scipy import stats

from diffsampler.agents.config import apply_overrides
from diffsampler.agents.presets import PRESETS
from diffsampler.agents.training import TrainConfig, Trainer
from diffsampler.buffers.local_search import LocalSearchConfig, local_search, mala_init, mala_step
from diffsampler.buffers.replay import SAMPLING, ReplayBuffer


def test_ring_wraps_around_and_keeps_the_newest():
    buf = ReplayBuffer(2, capacity=10, sampling="uniform")
    first = torch.arange(14.0).view(7, 2)
    second = torch.arange(100.0, 114.0).view(7, 2)
    buf.add(first, first[:, 0], step=1)
    buf.add(second, second[:, 0], step=2)
    assert len(buf) == 10 and buf.ptr == 4
    stored = {tuple(row.tolist()) for row in buf.x}
    expected = {tuple(row.tolist()) for row in torch.cat([first[4:], second])}
    assert stored == expected
    assert torch.equal(buf.x[:4], second[3:]) and torch.equal(buf.step[:4], torch.full((4,), 2))
    big = torch.arange(50.0).view(25, 2)
    buf.add(big, big[:, 0])
    assert {tuple(r.tolist()) for r in buf.x} == {tuple(r.tolist()) for r in big[-10:]}


@pytest.mark.parametrize("sampling", SAMPLING)
def test_sampling_frequencies_match_the_weights(sampling):
    g = torch.Generator().manual_seed(0)
    n = 40
    log_r = torch.randn(n, generator=g) * 2
    buf = ReplayBuffer(1, capacity=64, sampling=sampling, rank_k=0.01, beta=0.7)
    buf.add(torch.arange(n, dtype=torch.float32).view(n, 1), log_r)
    if sampling == "uniform":
        weights = torch.ones(n, dtype=torch.float64)
    elif sampling == "reward":
        weights = torch.exp(0.7 * log_r.double())
    else:  # rank 0 = highest log-reward
        rank = torch.empty(n, dtype=torch.float64)
        rank[torch.argsort(log_r, descending=True)] = torch.arange(n, dtype=torch.float64)
        weights = 1 / (0.01 * n + rank)
    p = weights / weights.sum()
    torch.testing.assert_close(buf.probabilities(), p)
    draws = 200_000
    x, lr = buf.sample(draws, torch.Generator().manual_seed(1))
    assert torch.equal(lr, log_r[x[:, 0].long()])
    counts = torch.bincount(x[:, 0].long(), minlength=n).double()
    assert stats.chisquare(counts.numpy(), (p * draws).numpy()).pvalue > 1e-3


def test_buffer_bad_input():
    with pytest.raises(ValueError, match="nope"):
        ReplayBuffer(2, sampling="nope")
    with pytest.raises(ValueError, match="0"):
        ReplayBuffer(2, capacity=0)
    buf = ReplayBuffer(2, capacity=5)
    with pytest.raises(RuntimeError, match="empty"):
        buf.sample(3)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        buf.add(torch.zeros(3, 3), torch.zeros(3))


def _gaussian(mu, s):
    return lambda x: -0.5 * ((x - mu) / s).square().sum(-1)


def test_mala_leaves_a_diagonal_gaussian_invariant():
    mu, s = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 1.0, 2.0])
    n = 4000
    g = torch.Generator().manual_seed(0)
    state = mala_init(_gaussian(mu, s), mu + s * torch.randn(n, 3, generator=g))
    rates = []
    for _ in range(60):  # a large step (acceptance ~0.5): unadjusted Langevin would inflate variances
        state, info = mala_step(state, _gaussian(mu, s), 0.3, g)
        rates.append(float(info.acceptance_rate))
    x = state.x
    assert 0.2 < sum(rates) / len(rates) < 0.9
    assert torch.all((x.mean(0) - mu).abs() < 4 * s / math.sqrt(n))
    assert torch.all((x.var(0) - s**2).abs() < 4 * s**2 * math.sqrt(2 / (n - 1)))


@pytest.mark.parametrize("start", [1e-4, 10.0])
def test_adaptation_brings_acceptance_to_target(start):
    mu, s = torch.zeros(8), torch.linspace(0.5, 2.0, 8)
    x0 = torch.randn(500, 8, generator=torch.Generator().manual_seed(0)) * s
    cfg = LocalSearchConfig(ls_steps=300, ls_burn_in=150, ls_step_size=start)
    result = local_search(_gaussian(mu, s), x0, cfg, torch.Generator().manual_seed(1))
    assert abs(result.acceptance_rate - 0.574) < 0.05
    assert result.x.shape[0] == result.log_r.shape[0] > 0


def test_local_search_keeping_every_state_preserves_the_funnel_neck():
    """Chains started from exact funnel samples: the post-burn-in states with rejections kept (``ls_keep="all"``)
    hold the neck's mass (x0 < -3: 16.0% under N(0, 9)); the accepted proposals alone miss it (rejections
    concentrate in the neck). Tolerance: 4 binomial standard errors over the 300 independent chains."""
    from diffsampler.envs.targets.funnel import funnel

    target, p_neck = funnel(), 0.5 * math.erfc(1 / math.sqrt(2))  # P(x0 < -3) = P(z < -1)
    x0 = target.sample(300, torch.Generator().manual_seed(0))
    fractions = {}
    for keep in ("all", "accepted"):
        cfg = LocalSearchConfig(ls_keep=keep)
        result = local_search(target.log_reward, x0, cfg, torch.Generator().manual_seed(1))
        fractions[keep] = float((result.x[:, 0] < -3).float().mean())
        if keep == "all":
            assert result.x.shape[0] == 300 * (cfg.ls_steps - cfg.ls_burn_in)
            assert torch.equal(result.chain, torch.arange(300).repeat(cfg.ls_steps - cfg.ls_burn_in))
    se = math.sqrt(p_neck * (1 - p_neck) / 300)
    assert abs(fractions["all"] - p_neck) < 4 * se
    assert fractions["accepted"] < p_neck - 4 * se


def test_local_search_is_deterministic_under_a_seed():
    target = _gaussian(torch.zeros(2), torch.ones(2))
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    cfg = LocalSearchConfig(ls_steps=20, ls_burn_in=10)
    a = local_search(target, x0, cfg, torch.Generator().manual_seed(3))
    b = local_search(target, x0, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a.x, b.x) and a.step_size == b.step_size


def _ls_config(iterations):
    cfg = TrainConfig(
        env_id="DiffSampler-Manywell-v0",
        env_kwargs={"dim": 4, "num_steps": 8},
        preset="tb-expl-ls",
        agent=PRESETS["tb-expl-ls"].agent,
        iterations=iterations,
        eval_every=100,
        eval_samples=32,
        log_every=2,
        checkpoint_every=5,
        figures=False,
    )
    small = {"buffer_capacity": "300", "ls_cycle": "4", "ls_steps": "6", "ls_burn_in": "3", "batch_size": "100"}
    return apply_overrides(cfg, small)


def test_checkpoint_with_full_buffers_resumes_identically(tmp_path):
    full = Trainer(_ls_config(14), tmp_path / "full")
    full.run(progress=False)
    assert len(full.agent.source.replay) == 300 and len(full.agent.source.ls_buffer) == 300  # wrapped around
    assert full.agent.source.replay.ptr != 0 or full.agent.source.ls_buffer.ptr != 0
    half = Trainer(_ls_config(10), tmp_path / "half")
    half.run(progress=False)
    resumed = Trainer.resume(tmp_path / "half", iterations=14)
    resumed.run(progress=False)
    for (name, a), b in zip(full.agent.state_dict().items(), resumed.agent.state_dict().values()):
        assert torch.equal(a, b), name
    for buf in ("replay", "ls_buffer"):
        fa, ra = getattr(full.agent.source, buf), getattr(resumed.agent.source, buf)
        assert torch.equal(fa.x, ra.x) and torch.equal(fa.log_r, ra.log_r) and fa.ptr == ra.ptr


def test_local_search_config_validation():
    with pytest.raises(ValueError, match="ls_burn_in"):
        LocalSearchConfig(ls_steps=10, ls_burn_in=10)
    with pytest.raises(ValueError, match="ls_keep must be one of .*'some'"):
        LocalSearchConfig(ls_keep="some")
    with pytest.raises(ValueError, match="ls_cycle"):
        apply_overrides(_ls_config(2), {"ls_cycle": "-1"})
