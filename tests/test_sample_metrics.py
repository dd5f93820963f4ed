"""Tests of agents/sample_metrics.py and agents/weight_metrics.py against independent computations.

Fixed seeds; statistical tolerances are 4 standard errors of the quantity tested (estimated from the draws).
"""

import math

import numpy as np
import ot
import pytest
import torch
from scipy.spatial.distance import pdist

from diffsampler.agents import metrics as M
from diffsampler.agents import sample_metrics as SM
from diffsampler.agents import weight_metrics as WM
from diffsampler.envs.targets import Gaussian, GaussianMixture, Manywell, StudentTMixture, gmm25

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed):
    return torch.randn(*shape, generator=gen(seed), dtype=F64)


# --- Sinkhorn -----------------------------------------------------------------------------------
def _pot_entropic_ot(x, y, eps):
    """OT_eps = <P, C> + eps KL(P | a x b) from POT's log-domain Sinkhorn plan (same plan as POT's entropy)."""
    a, b = np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y))
    cost = ot.dist(x.numpy(), y.numpy())
    plan = ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", numItermax=20_000, stopThr=1e-11)
    nz = plan > 0
    return float((plan * cost).sum() + eps * (plan[nz] * np.log(plan[nz] / np.outer(a, b)[nz])).sum())


def test_sinkhorn_matches_pot_log_domain_divergence():
    x, y = randn(40, 3, seed=0), randn(50, 3, seed=1) + 0.7
    eps = 2.0
    s2 = _pot_entropic_ot(x, y, eps) - 0.5 * (_pot_entropic_ot(x, x, eps) + _pot_entropic_ot(y, y, eps))
    assert SM.sinkhorn(x, y, eps=eps, max_iter=5000, tol=1e-12) == pytest.approx(math.sqrt(s2), rel=1e-6)
    # At smaller eps POT's alternating iteration stalls on the symmetric terms; compare the cross term alone.
    eps = 0.3
    assert SM._ot_eps(SM._sq_dist(x, y), eps, 5000, 1e-12) == pytest.approx(_pot_entropic_ot(x, y, eps), rel=1e-8)


def test_sinkhorn_tends_to_exact_w2_as_eps_shrinks():
    x, y = randn(20, 2, seed=2), randn(25, 2, seed=3) + torch.tensor([1.0, 0.0], dtype=F64)
    w2 = M.wasserstein2(x, y)
    errs = [abs(SM.sinkhorn(x, y, eps=eps, max_iter=2000, tol=1e-10) - w2) for eps in (1.0, 0.1, 0.01)]
    assert errs[0] > 3 * errs[1] > 9 * errs[2] and errs[2] < 0.005 * w2


def test_sinkhorn_is_debiased_scale_equivariant_and_finite_for_distant_sets():
    x, y = randn(200, 2, seed=4), randn(300, 2, seed=5)
    assert SM.sinkhorn(x, x) == pytest.approx(0.0, abs=1e-3)  # OT_eps(x, x) > 0 is subtracted
    assert SM.sinkhorn(3 * x, 3 * y) == pytest.approx(3 * SM.sinkhorn(x, y), rel=1e-6)
    # 1e4 apart: with the default eps (0.04) every entry of the plain Gibbs kernel exp(-C / eps) underflows to 0.
    far = x + torch.tensor([1e4, 0.0], dtype=F64)
    assert torch.exp(-SM._sq_dist(far, y) / (0.01 * 2 * float(y.var(0, unbiased=False).sum()))).max() == 0.0
    assert SM.sinkhorn(far, y) == pytest.approx(M.wasserstein2(far, y), rel=1e-6)


def test_sinkhorn_default_cap_on_a_mode_imbalance():
    # 25GMM: exact samples against samples of only 9 modes; the capped default matches a converged run.
    t, g = gmm25(), gen(6)
    x9 = t.means[torch.randint(0, 9, (400,), generator=g)] + math.sqrt(t.var) * torch.randn(400, 2, generator=g)
    ex = t.sample(400, g)
    converged = SM.sinkhorn(x9, ex, max_iter=5000, tol=1e-10)
    assert SM.sinkhorn(x9, ex) == pytest.approx(converged, rel=1e-3)
    assert converged == pytest.approx(M.wasserstein2(x9, ex), rel=0.02)


def test_sinkhorn_rejects_bad_inputs():
    x = randn(10, 2, seed=7)
    with pytest.raises(ValueError, match="same d"):
        SM.sinkhorn(x, randn(10, 3, seed=8))
    with pytest.raises(ValueError, match="eps"):
        SM.sinkhorn(x, x, eps=0.0)
    with pytest.raises(ValueError, match="finite"):
        SM.sinkhorn(x, torch.full((4, 2), float("nan"), dtype=F64))
    with pytest.raises(ValueError, match="zero spread"):
        SM.sinkhorn(x, torch.zeros(5, 2, dtype=F64))


# --- MMD ----------------------------------------------------------------------------------------
def _gauss_ek(h, sigma, d, delta_sq=0.0):
    """E k(X, Y) for X ~ N(mu1, s^2 I), Y ~ N(mu2, s^2 I), |mu1 - mu2|^2 = delta_sq, k = exp(-|u - v|^2 / (2 h^2)):
    X - Y ~ N(mu1 - mu2, 2 s^2 I) gives (h^2 / c)^(d/2) exp(-delta_sq / (2 c)) with c = h^2 + 2 s^2."""
    c = h**2 + 2 * sigma**2
    return (h**2 / c) ** (d / 2) * math.exp(-delta_sq / (2 * c))


def _gauss_mmd2(delta_sq, h, sigma, d):
    """Closed-form MMD^2 = E k(X, X') + E k(Y, Y') - 2 E k(X, Y) between N(mu1, s^2 I) and N(mu2, s^2 I)."""
    return 2 * (_gauss_ek(h, sigma, d) - _gauss_ek(h, sigma, d, delta_sq))


def _reps(fn, r):
    vals = np.array([fn(i) for i in range(r)])
    return vals.mean(), vals.std(ddof=1) / math.sqrt(r)


def test_mmd2_is_unbiased_for_one_gaussian():
    n, h, r = 200, 1.0, 40
    mean, se = _reps(lambda i: SM.mmd2(randn(n, 2, seed=100 + i), randn(n, 2, seed=200 + i), bandwidth=h), r)
    assert abs(mean) < 4 * se
    v_stat_bias = 2 * (1 - _gauss_ek(h, 1.0, 2)) / n  # the biased V-statistic's offset, 2 (1 - E k(X, X')) / n
    assert v_stat_bias > 10 * se  # a biased estimator would fail the first check


@pytest.mark.parametrize("bandwidth", [1.5, None])
def test_mmd2_of_shifted_gaussians_matches_closed_form(bandwidth):
    n, r, d, shift = 300, 20, 2, torch.tensor([1.0, 0.5], dtype=F64)

    def err(i):
        x, y = randn(n, d, seed=300 + i), randn(n, d, seed=400 + i) + shift
        h = SM.median_bandwidth(x, y) if bandwidth is None else bandwidth
        return SM.mmd2(x, y, bandwidth) - _gauss_mmd2(float(shift @ shift), h, 1.0, d)

    mean, se = _reps(err, r)
    assert abs(mean) < 4 * se and se < 0.01


def test_median_bandwidth_and_mmd_root():
    x, y = randn(30, 3, seed=9), randn(21, 3, seed=10) + 1
    z = torch.cat([x, y]).numpy()
    assert SM.median_bandwidth(x, y) == pytest.approx(np.median(pdist(z)), rel=1e-12)  # 1275 pairs: odd
    assert SM.median_bandwidth(x, y[:20]) == pytest.approx(np.median(pdist(z[:50])), rel=1e-12)  # 1225
    # Ties: duplicated points, odd and even numbers of pairs.
    t = torch.tensor([[0.0], [1.0], [1.0], [3.0], [3.0], [6.0]], dtype=F64)
    for k in (3, 4, 5, 6):
        assert SM.median_bandwidth(t[:2], t[2:k]) == pytest.approx(np.median(pdist(t[:k].numpy())), rel=1e-12)
    m2 = SM.mmd2(x, y)
    assert m2 > 0 and SM.mmd(x, y) == pytest.approx(math.sqrt(m2))
    same = randn(30, 3, seed=11)
    assert SM.mmd2(x, same) < 0 and SM.mmd(x, same) == 0.0  # unbiased: can be negative; the root clamps


def test_median_bandwidth_subsamples_large_pools(monkeypatch):
    monkeypatch.setattr(SM, "_MEDIAN_MAX_POINTS", 25)
    x, y = randn(40, 2, seed=12), randn(20, 2, seed=13)
    z = torch.cat([x, y]).numpy()
    idx = np.round(np.linspace(0, 59, 25)).astype(int)
    assert SM.median_bandwidth(x, y) == pytest.approx(np.median(pdist(z[idx])), rel=1e-6)


def test_mmd_rejects_bad_inputs():
    x = randn(10, 2, seed=14)
    with pytest.raises(ValueError, match="at least 2"):
        SM.mmd2(x, x[:1])
    with pytest.raises(ValueError, match="bandwidth"):
        SM.mmd2(x, x, bandwidth=-1.0)
    with pytest.raises(ValueError, match="median pairwise distance"):
        SM.mmd2(torch.zeros(3, 2), torch.zeros(4, 2))


# --- entropic mode coverage ---------------------------------------------------------------------
def test_mode_entropy_uniform_single_and_hand_value():
    assert SM.mode_entropy(torch.arange(100) % 25, 25) == pytest.approx(1.0)
    assert SM.mode_entropy(torch.full((50,), 7), 25) == 0.0
    p = np.array([0.5, 0.25, 0.25])
    labels = torch.tensor([0, 0, 1, 2])
    assert SM.mode_entropy(labels, 4) == pytest.approx(-(p * np.log(p)).sum() / np.log(4))
    with pytest.raises(ValueError, match="n_modes"):
        SM.mode_entropy(labels, 1)
    with pytest.raises(ValueError, match="labels"):
        SM.mode_entropy(labels, 2)
    with pytest.raises(ValueError, match="labels"):
        SM.mode_entropy(labels.double(), 4)


def _component_argmax(x, components):
    """Independent responsibilities: each component as a one-mode target of the library, argmax of log R."""
    return torch.stack([c.log_reward(x) for c in components], 1).argmax(1)


def test_emc_gaussian_mixture():
    t, g = gmm25(), gen(20)
    spread = t.means.repeat(40, 1) + 0.3 * torch.randn(1000, 2, generator=g)  # 40 samples near each mean
    assert SM.emc(spread, t) == pytest.approx(1.0)
    assert SM.emc(t.means[3] + 0.3 * torch.randn(500, 2, generator=g), t) == 0.0
    x = t.sample(2000, g)
    comps = [GaussianMixture(t.means[k : k + 1], t.var) for k in range(t.n_modes)]
    assert torch.equal(SM.mixture_mode_labels(x, t), _component_argmax(x, comps))
    # Exact samples: the plug-in entropy falls short of 1 by about (K - 1) / (2 N log K) = 0.002.
    assert 0.99 < SM.emc(x, t) < 1.0


def test_emc_student_t_mixture_uses_component_densities():
    g = gen(21)
    means = 6.0 * torch.randn(5, 3, generator=g)
    t = StudentTMixture(means, df=2, scale=1.5)
    x = t.sample(1000, g)
    comps = [StudentTMixture(means[k : k + 1], df=2, scale=1.5) for k in range(5)]
    assert torch.equal(SM.mixture_mode_labels(x, t), _component_argmax(x, comps))
    assert SM.emc(means.repeat(20, 1), t) == pytest.approx(1.0) and SM.emc(means[:1].repeat(9, 1), t) == 0.0


def test_emc_manywell_sign_patterns():
    t4, g = Manywell(4), gen(22)
    x = t4.sample(400, g)
    x[:, 0::2] = x[:, 0::2].abs() * torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]).repeat(100, 1)
    assert SM.emc(x, t4) == pytest.approx(1.0)  # the 4 sign patterns, 100 samples each
    x[:, 0::2] = x[:, 0::2].abs()
    assert SM.emc(x, t4) == 0.0
    # d = 512: 2^256 modes, no overflow; two equally used patterns give log 2 / (256 log 2).
    big = torch.ones(10, 512)
    big[:5, 0] = -1.0
    assert SM.emc(big, Manywell(512)) == pytest.approx(1 / 256)
    with pytest.raises(ValueError, match="EMC is defined"):
        SM.emc(torch.zeros(3, 2), Gaussian())
    with pytest.raises(ValueError, match="non-finite"):
        SM.emc(torch.full((3, 4), float("nan")), t4)


# --- forward and reverse ESS --------------------------------------------------------------------
def test_ess_of_exact_weights_is_one():
    lw = torch.full((500,), -3.2, dtype=F64)  # log w = log Z everywhere: the model is exact
    assert WM.reverse_ess(lw).item() == 1.0
    assert WM.forward_ess(lw, -3.2).item() == pytest.approx(1.0) and WM.forward_ess(lw).item() == pytest.approx(1.0)


def test_forward_ess_by_hand():
    lw = torch.tensor([1.0, 2.0, 4.0], dtype=F64).log()
    assert WM.forward_ess(lw, math.log(2.0)).item() == pytest.approx(2 / (7 / 3))  # Z / mean(w) = 6/7
    assert WM.forward_ess(lw).item() == pytest.approx(1 / ((7 / 3) * (1.75 / 3)))  # 1/(mean w mean 1/w) = 36/49
    assert WM.reverse_ess(lw).item() == pytest.approx(49 / (3 * 21))
    assert WM.forward_ess(lw, 5.0).item() == 1.0  # Z / mean(w) > 1 is clipped
    # A batch of problems reduces over the last dim.
    batch = torch.stack([lw, lw + 1.0])
    log_z = torch.tensor([math.log(2.0), 1 + math.log(2.0)], dtype=F64)
    assert WM.forward_ess(batch, log_z).tolist() == pytest.approx([6 / 7, 6 / 7])


def test_forward_ess_zero_weights_and_bad_values():
    lw = torch.tensor([0.0, -float("inf")], dtype=F64)
    assert WM.forward_ess(lw, math.log(0.25)).item() == pytest.approx(0.5)  # 0.25 / mean(1, 0)
    assert WM.forward_ess(lw).item() == 0.0  # mean(1/w) is infinite
    none = torch.full((4,), -float("inf"))
    assert WM.forward_ess(none, 0.0).item() == 0.0 and WM.forward_ess(none).item() == 0.0
    for bad, msg in ((float("nan"), "NaN"), (float("inf"), r"\+inf")):
        with pytest.raises(ValueError, match=msg):
            WM.forward_ess(torch.tensor([0.0, bad]))
    with pytest.raises(ValueError, match="log_z"):
        WM.forward_ess(torch.zeros(3), float("nan"))


def test_forward_ess_matches_chi_square_closed_form():
    # Target p = N(0, 1) with R = Z p, proposal q = N(0, s^2): E_p[p/q] = s / sqrt(2 - 1/s^2).
    n, s, log_z = 20_000, 1.5, 0.7
    x = randn(n, seed=23)
    lw = log_z - 0.5 * x**2 + 0.5 * (x / s) ** 2 + math.log(s)
    exact = math.sqrt(2 - 1 / s**2) / s  # 0.83
    w = torch.exp(lw - log_z)
    se_z = exact * float(w.std() / w.mean()) / math.sqrt(n)  # delta method for Z / mean(w)
    assert abs(WM.forward_ess(lw, log_z).item() - exact) < 4 * se_z
    se = exact * float((w / w.mean() + (1 / w) / (1 / w).mean()).std()) / math.sqrt(n)
    assert abs(WM.forward_ess(lw).item() - exact) < 4 * se and se < 0.01


# --- summarize ----------------------------------------------------------------------------------
def test_summarize_new_keys():
    t, g = gmm25(), gen(24)
    lw, lwb = torch.randn(300, generator=g), 0.1 * torch.randn(300, generator=g)
    x, ex = t.sample(300, g), t.sample(300, g)
    s = M.summarize(lw, t.log_Z, x=x, exact=ex, log_w_backward=lwb, target=t)
    assert {"sinkhorn", "mmd", "forward_ess", "reverse_ess", "emc", "modes_covered"} <= set(s)
    assert s["sinkhorn"] == SM.sinkhorn(x, ex) and s["mmd"] == SM.mmd(x, ex) and s["emc"] == SM.emc(x, t)
    assert s["reverse_ess"] == s["ess"] and s["forward_ess"] == pytest.approx(WM.forward_ess(lwb, 0.0).item())
    bare = M.summarize(lw, None)
    assert all(bare[k] is None for k in ("sinkhorn", "mmd", "forward_ess")) and "emc" not in bare
    mw = Manywell(8)
    s = M.summarize(lw, mw.log_Z, x=mw.sample(300, g), target=mw)
    assert s["emc"] > 0.3 and s["sinkhorn"] is None
    st = StudentTMixture(torch.zeros(2, 3), df=2)
    assert M.summarize(lw, 0.0, target=st)["emc"] is None
