"""Tests of agents/metrics.py. Fixed seeds; statistical tolerances are a few standard errors."""

import math

import pytest
import torch

from diffsampler.agents import metrics as M
from diffsampler.envs.targets import Gaussian, Manywell, gmm25

LOG_2PI = math.log(2 * math.pi)


def gen(seed):
    return torch.Generator().manual_seed(seed)


# --- log-weights and log Z estimators ------------------------------------------------------------
# Proposal q = N(0, s^2 I), unnormalised target R(x) = exp(-|x - mu|^2 / 2) in d = 2, log Z = log 2 pi.
# E_q[log w] = log Z - KL(q||p) and E_p[log w] = log Z + KL(p||q), both known in closed form.
D, S, MU = 2, 1.5, torch.tensor([0.5, 0.5], dtype=torch.float64)
LOG_Z = 0.5 * D * LOG_2PI
KL_QP = 0.5 * D * (S**2 - 1 - math.log(S**2)) + 0.5 * float(MU @ MU)  # 0.689
KL_PQ = 0.5 * D * (1 / S**2 - 1 + math.log(S**2)) + 0.5 * float(MU @ MU) / S**2  # 0.367


def log_r(x):
    return -0.5 * (x - MU).square().sum(-1)


def log_q(x):
    return -0.5 * x.square().sum(-1) / S**2 - D * math.log(S) - 0.5 * D * LOG_2PI


def test_log_weights_sums_steps_and_checks_shapes():
    g, n, t = gen(0), 6, 4
    lr, pf, pb = torch.randn(n, generator=g), torch.randn(n, t, generator=g), torch.randn(n, t, generator=g)
    torch.testing.assert_close(M.log_weights(lr, pf, pb), lr + pb.sum(1) - pf.sum(1))
    with pytest.raises(ValueError, match="shape"):
        M.log_weights(lr, pf, pb[:, :-1])


def test_elbo_iw_eubo_bracket_log_z():
    g, n, t = gen(1), 4000, 5
    x = S * torch.randn(n, D, generator=g, dtype=torch.float64)
    # Spread log q over t steps and add an arbitrary per-step p_B that cancels: exercises log_weights.
    noise = torch.randn(n, t, generator=g, dtype=torch.float64)
    log_w = M.log_weights(log_r(x), log_q(x)[:, None] / t + noise, noise)
    torch.testing.assert_close(log_w, log_r(x) - log_q(x))
    se = float(log_w.std() / math.sqrt(n))
    lo = float(M.elbo(log_w))
    assert KL_QP > 10 * se  # the gap being tested is far larger than the noise
    assert abs(lo - (LOG_Z - KL_QP)) < 4 * se
    assert lo + 4 * se < LOG_Z
    # IW estimate: delta-method SE of log mean w is std(w) / (mean(w) sqrt(n)).
    w = torch.exp(log_w)
    se_iw = float(w.std() / w.mean() / math.sqrt(n))
    iw = float(M.iw_log_z(log_w))
    assert abs(iw - LOG_Z) < 4 * se_iw and se_iw < 0.05
    assert iw > lo
    # EUBO from exact target samples (backward trajectories).
    y = MU + torch.randn(n, D, generator=g, dtype=torch.float64)
    log_wb = log_r(y) - log_q(y)
    se_b = float(log_wb.std() / math.sqrt(n))
    up = float(M.eubo(log_wb))
    assert KL_PQ > 10 * se_b
    assert abs(up - (LOG_Z + KL_PQ)) < 4 * se_b
    assert up - 4 * se_b > LOG_Z


@pytest.mark.parametrize("c", [0.0, -3.7, 164.696, -1e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_iw_log_z_of_constant_is_exact(c, dtype):
    log_w = torch.full((2000,), c, dtype=dtype)
    assert M.iw_log_z(log_w).item() == torch.tensor(c, dtype=dtype).item()
    assert M.elbo(log_w).item() == pytest.approx(c, rel=1e-6, abs=1e-6)  # a sum: exact only up to rounding


def test_log_weight_functions_reduce_last_dim():
    lw = torch.randn(3, 50, generator=gen(2))
    for f in (M.elbo, M.iw_log_z, M.eubo, M.ess):
        torch.testing.assert_close(f(lw), torch.stack([f(row) for row in lw]))


def test_iw_log_z_handles_neg_inf():
    lw = torch.tensor([0.0, 0.0, -float("inf"), -float("inf")])
    assert M.iw_log_z(lw).item() == pytest.approx(math.log(0.5))
    assert M.iw_log_z(torch.full((3,), -float("inf"))).item() == -float("inf")


# --- effective sample size -----------------------------------------------------------------------
def test_ess_equal_and_dominating_weights():
    b = 1000
    assert M.ess(torch.full((b,), 123.4)).item() == 1.0
    lw = torch.full((b,), -60.0)
    lw[17] = 0.0
    assert M.ess(lw).item() == pytest.approx(1 / b, rel=1e-6)
    lw = torch.randn(b, generator=gen(3), dtype=torch.float64) * 2
    ess = M.ess(lw).item()
    w = lw.exp()
    assert 1 / b <= ess <= 1 and ess == pytest.approx(float(w.sum() ** 2 / (b * w.square().sum())))
    # No overflow where naive exp would give inf.
    assert M.ess(lw + 1e4).item() == pytest.approx(ess)


def test_ess_with_neg_inf_entries():
    lw = torch.tensor([1.0, 1.0, -float("inf"), -float("inf")])
    assert M.ess(lw).item() == pytest.approx(0.5)
    assert M.ess(torch.full((5,), -float("inf"))).item() == 0.0


@pytest.mark.parametrize("fn", [M.ess, M.elbo, M.iw_log_z, M.eubo])
def test_nan_log_weights_raise(fn):
    lw = torch.zeros(10)
    lw[3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fn(lw)


# --- Wasserstein-2 ------------------------------------------------------------------------------
def test_w2_same_distribution_shrinks_with_n():
    g = gen(4)
    vals = [M.wasserstein2(torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g)) for n in (100, 2000)]
    assert vals[1] < 0.6 * vals[0] and vals[1] < 0.25
    x = torch.randn(300, 3, generator=g)
    assert M.wasserstein2(x, x) == pytest.approx(0.0, abs=1e-9)


def test_w2_of_shifted_gaussians_approaches_shift_norm():
    # W2(N(0,I), N(m,I)) = ||m||. With n = 2000 in d = 2 the finite-sample excess is ~0.01 (from the
    # centred OT cost, ~0.16^2) plus a mean-difference term of SE ~0.03 along m: 0.15 is ~4 SE.
    g, m = gen(5), torch.tensor([3.0, 0.0])
    w2 = M.wasserstein2(torch.randn(2000, 2, generator=g), m + torch.randn(2000, 2, generator=g))
    assert abs(w2 - 3.0) < 0.15


def test_w2_unequal_sizes_and_bad_dims():
    g = gen(6)
    x = torch.randn(10, 2, generator=g)
    # One point against many: exact value is the RMS distance.
    assert M.wasserstein2(x[:1], x) == pytest.approx(float((x - x[0]).square().sum(1).mean().sqrt()), rel=1e-6)
    with pytest.raises(ValueError, match="same d"):
        M.wasserstein2(x, torch.randn(10, 3, generator=g))


# --- mode statistics ----------------------------------------------------------------------------
def test_mode_coverage_25gmm():
    t, n = gmm25(), 2000
    x = t.sample(n, gen(7))
    covered, frac = M.mode_coverage(x, t.means)
    assert covered == 25 and frac.shape == (25,)
    assert frac.sum().item() == pytest.approx(1.0)
    se = math.sqrt(1 / 25 * 24 / 25 / n)
    assert (frac - 1 / 25).abs().max().item() < 4.5 * se  # max of 25 deviations: a little over 4 SE
    assert M.mode_coverage(x, t.means, std=math.sqrt(t.var))[0] == 25
    # Samples from only 3 modes.
    idx = torch.tensor([0, 12, 24])[torch.randint(3, (n,), generator=gen(8))]
    x3 = t.means[idx] + math.sqrt(t.var) * torch.randn(n, 2, generator=gen(9))
    covered, frac = M.mode_coverage(x3, t.means)
    assert covered == 3 and set(frac.nonzero().flatten().tolist()) == {0, 12, 24}
    # Far-away samples are assigned to a mode but do not cover it.
    assert M.mode_coverage(torch.full((5, 2), 100.0), t.means)[0] == 0


def test_manywell_mode_error_and_patterns():
    t, n = Manywell(32), 2000
    a, b = t.sample(n, gen(10)), t.sample(n, gen(11))
    p = M.manywell_mode_mass(b)
    assert p.shape == (16,) and 0.7 < p.mean() < 0.95  # the 0.5 x term favours the positive well
    se = math.sqrt(2 * float(p.mean() * (1 - p.mean())) / n)  # SE of a difference of two proportions
    assert M.manywell_mode_error(a, b) < 4 * se
    pos = a.clone()
    pos[:, 0::2] = pos[:, 0::2].abs()
    err = M.manywell_mode_error(pos, b)
    assert err == pytest.approx(float(1 - p.mean())) and err > 10 * se
    assert M.manywell_modes_covered(pos) == 1
    small = Manywell(4).sample(n, gen(12))
    assert M.manywell_modes_covered(small) == 4
    with pytest.raises(ValueError):
        M.manywell_mode_error(a, b[:, :8])


# --- summary ------------------------------------------------------------------------------------
def test_summarize_keys_and_nones():
    g = gen(13)
    lw = torch.randn(200, generator=g)
    s = M.summarize(lw, None)
    assert set(s) == set(M.METRIC_KEYS) and len(M.METRIC_KEYS) == 11
    assert all(s[k] is None for k in ("delta_log_z", "delta_log_z_rw", "w2", "eubo", "sinkhorn", "mmd", "forward_ess"))
    assert all(isinstance(s[k], float) for k in ("log_z", "log_z_rw", "ess", "reverse_ess"))

    t = gmm25()
    x, ex = t.sample(200, g), t.sample(200, g)
    s = M.summarize(lw, t.log_Z, x=x, exact=ex, log_w_backward=lw + 1, target=t)
    assert set(s) == set(M.METRIC_KEYS) | {"modes_covered", "emc"}
    assert s["delta_log_z"] == pytest.approx(abs(s["log_z"])) and s["eubo"] == pytest.approx(s["log_z"] + 1)
    assert isinstance(s["modes_covered"], int) and s["modes_covered"] > 20 and isinstance(s["w2"], float)
    assert M.summarize(lw, 0.0, target=t)["modes_covered"] is None

    t = Manywell(8)
    s = M.summarize(lw, t.log_Z, x=t.sample(200, g), exact=t.sample(200, g), target=t)
    assert set(s) == set(M.METRIC_KEYS) | {"manywell_mode_error", "emc"} and isinstance(s["manywell_mode_error"], float)
    assert set(M.summarize(lw, 1.0, target=Gaussian())) == set(M.METRIC_KEYS)
    assert all(v is None or isinstance(v, (int, float)) for v in s.values())
