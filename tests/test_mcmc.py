"""MCMC baselines: SMC log Z (accuracy, unbiasedness, power against wrong weights), resampling, MALA
invariance, energy-evaluation counts, determinism, config errors, runner and CLI."""

import json
import math

import pytest
import torch

from diffsampler.agents.baselines import mcmc
from diffsampler.agents.baselines.mcmc import MALAChainConfig, SMCConfig, mala_chains, smc
from diffsampler.agents.baselines.particles import RESAMPLERS, SCHEDULES, ess_fraction, resample
from diffsampler.agents.presets import PRESETS
from diffsampler.agents.runner import FINAL_KEYS
from diffsampler.agents.runs import RunSpec, build, run
from diffsampler.buffers.local_search import mala_init, mala_step
from diffsampler.envs import process
from diffsampler.envs.targets import make_target
from diffsampler.envs.targets.base import EvaluationCounter
from scripts import train_agent

MEAN, STD = 1.0, 0.7  # Gaussian target N(1, 0.49 I) annealed from N(0, I): log Z = (d/2) log(2 pi 0.49)


def _gaussian(dim):
    return make_target("gaussian", dim=dim, mean=MEAN, std=STD)


def _log_z_runs(dim, seeds=8, **kw):
    cfg = SMCConfig(**({"particles": 500, "temperatures": 50, "mala_steps": 2} | kw))
    target = _gaussian(dim)
    est = [float(smc(target, cfg, torch.Generator().manual_seed(s)).log_z) for s in range(seeds)]
    return torch.tensor(est, dtype=torch.float64), target.log_Z


def _within_4_se(estimates, log_z) -> bool:
    """|mean - log Z| within 4 standard errors of the mean over independent seeds."""
    se = float(estimates.std()) / math.sqrt(len(estimates))
    return abs(float(estimates.mean()) - log_z) < 4 * se


@pytest.mark.parametrize("dim", [2, 10])
def test_smc_log_z_of_a_gaussian_and_the_check_catches_wrong_weights(dim, monkeypatch):
    est, log_z = _log_z_runs(dim)
    assert _within_4_se(est, log_z), (est, log_z)
    assert float(est.std()) < 0.1 * dim  # the tolerance is tight (about 0.03 at d=2, 0.1 at d=10)
    # The same check rejects an incremental weight that forgets the initial density ...
    with monkeypatch.context() as m:
        m.setattr(mcmc, "incremental_log_weight", lambda db, log_r, log_base: db * log_r.double())
        assert not _within_4_se(*_log_z_runs(dim))
    # ... and a log Z increment that ignores the current weights (log-mean of G instead of sum W G).
    with monkeypatch.context() as m:
        m.setattr(mcmc, "log_normaliser_increment", lambda log_w, inc: torch.logsumexp(inc, 0) - math.log(len(inc)))
        assert not _within_4_se(*_log_z_runs(dim))


@pytest.mark.parametrize("ess_threshold", [0.0, 1.0])  # AIS (never resample) and SMC resampling every step
def test_z_hat_is_unbiased(ess_threshold):
    # Small N and K so that log Z-hat is noisy (var ~0.1): then E[log Z-hat] < log Z visibly (Jensen),
    # while E[Z-hat / Z] = 1. A fixed step size keeps every kernel exactly invariant.
    cfg = SMCConfig(128, 4, 2, step_size=0.2, adapt_step_size=False, ess_threshold=ess_threshold)
    target = _gaussian(5)
    reps = 400
    log_ratio = (
        torch.tensor(
            [float(smc(target, cfg, torch.Generator().manual_seed(s)).log_z) for s in range(reps)], dtype=torch.float64
        )
        - target.log_Z
    )
    ratio = log_ratio.exp()
    se = float(ratio.std()) / math.sqrt(reps)
    assert abs(float(ratio.mean()) - 1) < 3 * se, (float(ratio.mean()), se)
    assert float(log_ratio.mean().exp()) < 1 - 3 * se  # the test can tell exp(mean log) from mean(exp)


@pytest.mark.parametrize("scheme", sorted(RESAMPLERS))
def test_resampling_counts_have_mean_n_times_weight(scheme):
    g = torch.Generator().manual_seed(0)
    w = torch.softmax(torch.randn(12, generator=g, dtype=torch.float64) * 1.5, 0)
    w[3] = 0.0  # a zero weight is never drawn
    w = w / w.sum()
    n, draws = 12, 3000
    counts = torch.stack([torch.bincount(resample(w.log(), n, scheme, g), minlength=12) for _ in range(draws)])
    assert torch.all(counts.sum(1) == n) and torch.all(counts[:, 3] == 0)
    mean, se = counts.double().mean(0), (n * w * (1 - w) / draws).sqrt()
    assert torch.all((mean - n * w).abs() <= 4 * se + 1e-12), (mean, n * w)
    if scheme == "systematic":  # each count is floor or ceil of n w
        assert torch.all((counts - n * w).abs() < 1)


def test_resampling_and_weights_in_a_run_stay_normalised():
    cfg = SMCConfig(200, 20, 1, ess_threshold=0.9)
    out = smc(_gaussian(10), cfg, torch.Generator().manual_seed(0))
    assert out.resampled.any() and not out.resampled.all()
    assert abs(float(torch.logsumexp(out.log_w, 0))) < 1e-9
    assert torch.all((out.ess > 0) & (out.ess <= 1 + 1e-12))
    uniform = torch.full((50,), -3.0, dtype=torch.float64)
    assert float(ess_fraction(uniform)) == pytest.approx(1.0)
    assert torch.equal(resample(uniform, 50, "systematic", torch.Generator().manual_seed(1)), torch.arange(50))
    assert SCHEDULES["geometric"](5, 1e-3)[:2] == [0.0, 1e-3] and SCHEDULES["geometric"](5, 1e-3)[-1] == 1.0


def _moments_match(x, mean, std, n):
    m_ok = torch.all((x.mean(0) - mean).abs() < 4 * std / math.sqrt(n))
    v_ok = torch.all((x.var(0) - std**2).abs() < 4 * std**2 * math.sqrt(2 / (n - 1)))
    return bool(m_ok and v_ok)


def test_mala_chains_leave_a_gaussian_invariant():
    # Started exactly at the target N(0, 0.49 I) with a fixed large step: moments must not drift.
    target = make_target("gaussian", dim=3, std=STD)
    cfg = MALAChainConfig(4000, 40, burn_in=0, thin=39, step_size=0.4, adapt_step_size=False, init_var=STD**2)
    out = mala_chains(target, cfg, torch.Generator().manual_seed(0))
    assert out.samples.shape == (2, 4000, 3)
    assert 0.3 < float(out.acceptance.mean()) < 0.95
    assert _moments_match(out.samples[-1], 0.0, STD, 4000)


def test_mala_chains_converge_after_burn_in_with_adaptation():
    target = _gaussian(4)  # start from N(0, I), far from N(1, 0.49 I) in mean
    out = mala_chains(target, MALAChainConfig(3000, 200, burn_in=100, thin=50), torch.Generator().manual_seed(0))
    assert out.samples.shape == (2, 3000, 4)
    assert _moments_match(out.samples[-1], MEAN, STD, 3000)
    assert abs(float(out.acceptance[100:].mean()) - 0.574) < 0.1


def test_tempered_mala_step_leaves_the_bridge_density_invariant():
    # pi_0^(1-b) R^b of two Gaussians is Gaussian: precision (1-b)/s0^2 + b/s^2, mean b m/s^2 / precision.
    s0, beta, n = 2.0, 0.3, 4000
    target = _gaussian(3)

    def base(x):
        return process.gaussian_log_prob(x, 0.0, s0**2)

    prec = (1 - beta) / s0**2 + beta / STD**2
    mean, std = beta * MEAN / STD**2 / prec, prec**-0.5
    g = torch.Generator().manual_seed(0)
    state = mala_init(target.log_reward, mean + std * torch.randn(n, 3, generator=g))
    for _ in range(30):
        state, _ = mala_step(state, target.log_reward, 0.5, g, beta, base)
    assert _moments_match(state.x, mean, std, n)
    assert torch.allclose(state.log_r, target.log_reward(state.x))  # the state keeps log R, not the bridge


def test_energy_evaluations_follow_the_formula():
    target = _gaussian(3)
    counter = EvaluationCounter(target)
    cfg = SMCConfig(64, 7, 3)
    out = smc(target, cfg, torch.Generator().manual_seed(0))
    assert out.energy_evaluations == counter.count == cfg.energy_evaluations == 64 * (1 + 7 * 3)
    chains = MALAChainConfig(32, 11, burn_in=5, thin=2)
    res = mala_chains(target, chains, torch.Generator().manual_seed(0))
    assert res.energy_evaluations == chains.energy_evaluations == 32 * 12
    assert counter.count == 64 * 22 + 32 * 12 and res.samples.shape == (3, 32, 3)


def test_seeded_runs_are_bit_identical():
    target, cfg = _gaussian(4), SMCConfig(100, 10, 2, ess_threshold=0.8, resampling="multinomial")
    a, b, c = (smc(target, cfg, torch.Generator().manual_seed(s)) for s in (5, 5, 6))
    assert torch.equal(a.x, b.x) and torch.equal(a.log_w, b.log_w) and torch.equal(a.log_z, b.log_z)
    assert not torch.equal(a.x, c.x)
    cfg = MALAChainConfig(50, 20)
    assert torch.equal(*(mala_chains(target, cfg, torch.Generator().manual_seed(1)).samples for _ in range(2)))


@pytest.mark.parametrize(
    "kind, kwargs, match",
    [
        (SMCConfig, {"particles": 1}, "particles.*1"),
        (SMCConfig, {"temperatures": 0}, "temperatures.*0"),
        (SMCConfig, {"mala_steps": -1}, "mala_steps.*-1"),
        (SMCConfig, {"step_size": 0.0}, "step_size.*0.0"),
        (SMCConfig, {"ess_threshold": 1.5}, "ess_threshold.*1.5"),
        (SMCConfig, {"resampling": "nope"}, "nope"),
        (SMCConfig, {"schedule": "cosine"}, "cosine"),
        (SMCConfig, {"beta_min": 0.0}, "beta_min.*0.0"),
        (SMCConfig, {"init_var": float("nan")}, "init_var.*nan"),
        (SMCConfig, {"target_acceptance": 1.0}, "target_acceptance.*1.0"),
        (MALAChainConfig, {"steps": 10, "burn_in": 10}, "burn_in=10.*steps=10"),
        (MALAChainConfig, {"thin": 0}, "thin.*0"),
        (MALAChainConfig, {"chains": True}, "chains.*True"),
    ],
)
def test_bad_configs_are_clear_errors(kind, kwargs, match):
    with pytest.raises(ValueError, match=match):
        kind(**kwargs)


def test_budget_maps_to_temperatures_and_overrides_win():
    assert build(RunSpec("DiffSampler-GMM25-v0", "smc", budget=7)).agent.temperatures == 7
    assert build(RunSpec("DiffSampler-GMM25-v0", "smc")).agent.temperatures == PRESETS["smc"].iterations
    cfg = build(RunSpec("DiffSampler-GMM25-v0", "smc", budget=7, overrides={"temperatures": "9", "particles": "50"}))
    assert (cfg.agent.temperatures, cfg.agent.particles) == (9, 50)
    assert build(RunSpec("DiffSampler-GMM25-v0", "mala", budget=30)).agent.steps == 30
    with pytest.raises(ValueError, match="burn_in"):
        build(RunSpec("DiffSampler-GMM25-v0", "mala", budget=30, overrides={"burn_in": "30"}))


def test_manywell_run_reports_sample_metrics(tmp_path):
    spec = RunSpec("DiffSampler-Manywell-v0", "smc", budget=5, env_kwargs={"dim": 4}, overrides={"particles": "64"})
    result = run(spec, tmp_path / "r")
    assert set(FINAL_KEYS) <= set(result) and result["manywell_mode_error"] is not None
    assert result["energy_evaluations"] == 64 * (1 + 5 * 5) and result["iterations"] == 5
    assert result["log_z_rw"] == result["log_z"] and result["eubo"] is None
    assert result["delta_log_z"] == pytest.approx(abs(result["log_z"] - make_target("manywell", dim=4).log_Z))
    assert json.loads((tmp_path / "r" / "metrics.json").read_text()) == result
    assert list((tmp_path / "r" / "figures").glob("*.png"))


@pytest.mark.parametrize("preset, extra", [("smc", ["--particles", "64"]), ("mala", ["--chains", "64"])])
def test_cli_runs_mcmc_presets_on_gmm25(tmp_path, preset, extra):
    argv = ["--env", "DiffSampler-GMM25-v0", "--preset", preset, "--iterations", "6", "--no-progress"]
    argv += extra + ["--eval-samples", "64", "--figures", "false", "--run-dir", str(tmp_path / preset)]
    assert train_agent.main(argv) == 0
    saved = json.loads((tmp_path / preset / "metrics.json").read_text())
    config = json.loads((tmp_path / preset / "config.json").read_text())
    assert set(FINAL_KEYS) <= set(saved) and saved["modes_covered"] >= 1 and saved["w2"] > 0
    assert config["preset"] == preset and saved["iterations"] == 6
    evals = 64 * (1 + 6 * 5) if preset == "smc" else 64 * (1 + 6)
    assert saved["energy_evaluations"] == evals
    assert (saved["log_z"] is None) == (preset == "mala")
