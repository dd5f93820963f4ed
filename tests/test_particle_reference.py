"""Reference samples of the particle targets (agents/particle_reference.py): bimodal DW-4 pair distances,
agreement of independent runs within their standard error, caching, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from diffsampler.agents import particle_reference
from diffsampler.agents.particle_reference import (
    PROTOCOLS,
    ReferenceProtocol,
    reference_samples,
    run_reference_chains,
)
from diffsampler.envs.targets.particles import DW4

SMALL = ReferenceProtocol(particles=100, temperatures=10, smc_mala_steps=2, burn_in=100, steps=500, thin=5)


def mean_and_se(run) -> tuple[float, float]:
    """Mean energy and its standard error from the chain means (batch means, one batch per chain)."""
    chain_means = -run.log_r.double().mean(0)
    return float(chain_means.mean()), float(chain_means.std() / math.sqrt(len(chain_means)))


def agree(a, b) -> bool:
    (m1, s1), (m2, s2) = mean_and_se(a), mean_and_se(b)
    return abs(m1 - m2) < 4 * math.hypot(s1, s2)


def test_dw4_pair_distances_are_bimodal_at_the_wells():
    target = DW4()
    run = run_reference_chains(target, SMALL)
    assert run.samples.shape == (SMALL.kept_per_chain, SMALL.particles, 8)
    assert 0.4 < run.acceptance < 0.75
    r = target.pair_distances(run.samples.reshape(-1, 8).double()).flatten()
    hist = torch.histc(r, bins=40, min=1.0, max=7.0)
    centres = 1.0 + (torch.arange(40) + 0.5) * 6.0 / 40
    inner, outer = hist[centres < 4].argmax(), (centres >= 4).nonzero()[0, 0] + hist[centres >= 4].argmax()
    wells = 4 - math.sqrt(4 / 1.8), 4 + math.sqrt(4 / 1.8)  # 2.51, 5.49
    assert abs(centres[inner] - wells[0]) < 0.3 and abs(centres[outer] - wells[1]) < 0.3
    dip = hist[(centres - 4).abs() < 0.2].max()
    assert dip < 0.5 * min(hist[inner], hist[outer]), (hist[inner], dip, hist[outer])
    assert 0.3 < float((r < 4).double().mean()) < 0.7  # both wells populated


def test_independent_runs_agree_on_the_mean_energy():
    """Two seeds agree within 4 standard errors, a tolerance finer than a fifth of the energy's spread.

    On a hot DW-4 (tau = 2), whose modes mix within the run (at tau = 1 the mode switches need ~10^4
    MALA steps: the full protocol, in the slow test below).
    """
    hot = DW4(tau=2.0)
    a, b = (run_reference_chains(hot, ReferenceProtocol(**{**SMALL.__dict__, "seed": s})) for s in (0, 1))
    assert agree(a, b), (mean_and_se(a), mean_and_se(b))
    tolerance = 4 * math.hypot(mean_and_se(a)[1], mean_and_se(b)[1])
    assert tolerance < float((-a.log_r).std()) / 5


@pytest.mark.slow
def test_dw4_reference_protocol_is_reproducible_across_seeds():
    runs = [run_reference_chains(DW4(), ReferenceProtocol(**{**PROTOCOLS["dw4"].__dict__, "seed": s})) for s in (0, 1)]
    assert agree(*runs), [mean_and_se(r) for r in runs]


def test_reference_samples_are_cached_centred_and_checked(tmp_path, monkeypatch):
    tiny = ReferenceProtocol(particles=20, temperatures=3, smc_mala_steps=1, burn_in=5, steps=20, thin=2)
    x = reference_samples("dw4", 150, protocol=tiny, cache_dir=tmp_path)
    assert x.shape == (150, 8) and x.dtype == torch.float32
    torch.testing.assert_close(x.reshape(150, 4, 2).mean(1), torch.zeros(150, 2), atol=1e-5, rtol=0)
    assert len(list(tmp_path.glob("particle_reference_dw4_*.pt"))) == 1

    def refuse(*args):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(particle_reference, "run_reference_chains", refuse)
    torch.testing.assert_close(reference_samples("dw4", 150, protocol=tiny, cache_dir=tmp_path), x)
    assert reference_samples("dw4", protocol=tiny, cache_dir=tmp_path).shape == (tiny.n_samples, 8)
    with pytest.raises(ValueError, match="201"):
        reference_samples("dw4", 201, protocol=tiny, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="'gmm25'"):
        reference_samples("gmm25", 10)
    with pytest.raises(ValueError, match="thin.*0"):
        ReferenceProtocol(particles=10, temperatures=1, smc_mala_steps=1, burn_in=0, steps=5, thin=0)
