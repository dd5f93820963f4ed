"""Targets: log Z against independent Monte Carlo, exact samples against the density, robustness, errors.

Every test is parametrised over the TARGETS registry. Per-target knowledge lives in small tables
(LOG_Z_ESTIMATORS, MARGINALS, and the paper's spec in T_SCALE, FUNNEL_X0_STD); a new target falls back to
generic checks that work in low dimension, and fails with a message asking for an entry where they
cannot be meaningful.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from diffsampler.envs.targets import CONDITIONAL_TARGETS, TARGETS, StudentTMixture, make_target

# The LGCPs are checked here on a 6 x 6 grid (gradcheck costs O(d^2) solves); tests/test_targets_more.py
# checks the full 40 x 40 model against an independent dense computation.
CASE_KWARGS = {"lgcp": {"grid_size": 6}, "lgcp_synthetic": {"grid_size": 6}}
CASES = [pytest.param(name, CASE_KWARGS.get(name, {}), id=name) for name in TARGETS]
CASES += [pytest.param("manywell", {"dim": 8}, id="manywell-d8")]
# log_reward(x) alone: conditional targets (log_reward(x, condition)) have their own tests (test_vae.py).
UNCONDITIONAL_CASES = [c for c in CASES if c.values[0] not in CONDITIONAL_TARGETS]
# Spec of the paper (paper_results.md, DESIGN.md): reference variance and scale of the funnel's x0.
T_SCALE = {"gmm25": 5.0, "gmm9": 5.0, "funnel": 1.0, "easy_funnel": 1.0, "manywell": 1.0, "lgcp": 5.0}
FUNNEL_X0_STD = {"funnel": 3.0, "easy_funnel": 1.0}


def log_r(target, x: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    """``target.log_reward`` in float64 on a numpy batch, in chunks."""
    x = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1, target.dim))
    with torch.no_grad():
        return torch.cat([target.log_reward(c) for c in x.split(chunk)]).double().numpy()


def exact_samples(target, n: int, seed: int) -> np.ndarray:
    return target.sample(n, torch.Generator().manual_seed(seed)).double().numpy()


def importance_log_z(log_w: np.ndarray) -> tuple[float, float]:
    """log of the mean weight and its delta-method standard error; also insists on a sane ESS."""
    w = np.exp(log_w - log_w.max())
    ess = w.sum() ** 2 / (w**2).sum()
    assert ess > len(w) / 50, f"importance sampler degenerate (ESS {ess:.0f} of {len(w)}): the check means nothing"
    return float(np.log(w.mean()) + log_w.max()), float(w.std() / (math.sqrt(len(w)) * w.mean()))


def t_proposal_1d(values: np.ndarray, inflate: float = 1.5):
    return stats.t(df=5, loc=values.mean(), scale=inflate * values.std())


def coordinate_fn(target, j: int):
    """``v -> log R(v e_j) - log R(0)``: the 1-D factor of coordinate j of a separable target."""

    def f(v):
        v = np.atleast_1d(np.asarray(v, dtype=np.float64))
        x = np.zeros((len(v), target.dim))
        x[:, j] = v
        return log_r(target, x) - log_r(target, np.zeros((1, target.dim)))[0]

    return f


def assert_separable_wells(target, seed: int = 0) -> None:
    """log R(x) = log R(0) + sum_j f_j(x_j), and all wells share the factors of coordinates 0 and 1."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([exact_samples(target, 50, seed), 3 * rng.standard_normal((50, target.dim))])
    parts = sum(coordinate_fn(target, j)(x[:, j]) for j in range(target.dim))
    np.testing.assert_allclose(
        log_r(target, x), log_r(target, np.zeros((1, target.dim)))[0] + parts, rtol=1e-9, atol=1e-7
    )
    grid = np.linspace(-4, 4, 81)
    for j in range(2, target.dim):
        np.testing.assert_allclose(coordinate_fn(target, j)(grid), coordinate_fn(target, j % 2)(grid), rtol=1e-12)


# ---------------------------------------------------------------- log Z estimators: (estimate, SE, scale)
# `scale` is what the estimate and SE are per: the comparison is |log_Z - est| / scale < 4 SE.
def generic_log_z(target, seed):
    if target.dim > 3 or not target.has_sampler:
        pytest.fail(f"no meaningful generic log Z estimate for {target!r}: add one to LOG_Z_ESTIMATORS")
    ref = exact_samples(target, 20_000, seed)
    q = stats.multivariate_t(ref.mean(0), np.atleast_2d(np.cov(ref.T)) * 1.5**2, df=5)
    x = q.rvs(size=1_000_000, random_state=np.random.default_rng(seed)).reshape(-1, target.dim)
    est, se = importance_log_z(log_r(target, x) - q.logpdf(x))
    return est, se, 1.0


def wells_log_z(target, seed):
    """Manywell factorises: one 2-D well, itself a product of two 1-D factors, each by 1-D IS."""
    assert_separable_wells(target)
    ref = exact_samples(target, 20_000, seed)
    est, var = 0.0, 0.0
    for j in (0, 1):
        q = t_proposal_1d(ref[:, j::2].ravel())
        v = q.rvs(size=1_000_000, random_state=np.random.default_rng(seed + j))
        e, s = importance_log_z(coordinate_fn(target, j)(v) - q.logpdf(v))
        est, var = est + e, var + s**2
    wells = target.dim // 2
    return est + log_r(target, np.zeros((1, target.dim)))[0] / wells, math.sqrt(var), wells


def funnel_log_z(target, seed):
    """x0 from a Student-t fitted to exact samples, the rest from N(0, 1.2^2 exp(x0)) (the spec)."""
    n, rng = 400_000, np.random.default_rng(seed)
    q0 = t_proposal_1d(exact_samples(target, 20_000, seed)[:, 0])
    x0 = q0.rvs(size=n, random_state=rng)
    std = 1.2 * np.exp(0.5 * x0)[:, None]
    rest = std * rng.standard_normal((n, target.dim - 1))
    log_q = q0.logpdf(x0) + stats.norm.logpdf(rest, scale=std).sum(1)
    est, se = importance_log_z(log_r(target, np.column_stack([x0, rest])) - log_q)
    return est, se, 1.0


def mixture_component(target):
    """(log-density, sampler) of one component's coordinate law, centred, written here in numpy/scipy."""
    if isinstance(target, StudentTMixture):
        nu, s = target.df, target.scale
        const = special.gammaln((nu + 1) / 2) - special.gammaln(nu / 2) - 0.5 * np.log(nu * np.pi) - np.log(s)
        return lambda z: const - 0.5 * (nu + 1) * np.log1p((z / s) ** 2 / nu), stats.t(df=nu, scale=s)
    std = math.sqrt(target.var)
    return lambda z: -0.5 * (z / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi), stats.norm(scale=std)


def mixture_log_z(target, seed):
    """Importance sampling from the same equal-weight mixture with components widened by 5 %."""
    n, rng, widen = 20_000, np.random.default_rng(seed), 1.05
    means = target.means.double().numpy()
    logpdf, law = mixture_component(target)
    x = means[rng.integers(len(means), size=n)] + widen * law.rvs(size=(n, target.dim), random_state=rng)
    log_comp = np.stack([(logpdf((x - m) / widen) - np.log(widen)).sum(1) for m in means])
    log_q = special.logsumexp(log_comp, axis=0) - np.log(len(means))
    est, se = importance_log_z(log_r(target, x) - log_q)
    return est, se, 1.0


LOG_Z_ESTIMATORS = {"manywell": wells_log_z, "funnel": funnel_log_z, "easy_funnel": funnel_log_z}
LOG_Z_ESTIMATORS |= {"gmm40": mixture_log_z, "student_t_mixture": mixture_log_z}


@pytest.mark.parametrize("name, kwargs", CASES)
def test_log_z_matches_importance_sampling(name, kwargs):
    target = make_target(name, **kwargs)
    if target.log_Z is None:
        pytest.skip(f"{name} has no exact log Z")
    est, se, scale = LOG_Z_ESTIMATORS.get(name, generic_log_z)(target, seed=0)
    assert se < 0.01, f"estimator too noisy to be meaningful (SE {se:.3g})"
    err = abs(target.log_Z / scale - est)
    assert err < 4 * se, f"log Z {target.log_Z:.5f}: IS gives {est * scale:.5f} (per unit {err:.4g} > 4 x SE {se:.3g})"


@pytest.mark.parametrize("kwargs", [{}, {"dim": 8}, {"dim": 2}])
def test_manywell_log_z_by_quadrature(kwargs):
    """Deterministic and tight: each 1-D factor of a well by adaptive quadrature, plus the spec value."""
    target = make_target("manywell", **kwargs)
    assert_separable_wells(target)
    log_well = 0.0
    for j in (0, 1):
        f = coordinate_fn(target, j)
        z, _ = integrate.quad(lambda v, f=f: math.exp(f(v)[0]), -np.inf, np.inf, epsrel=1e-11, limit=200)
        log_well += math.log(z)
    assert target.log_Z == pytest.approx(target.dim // 2 * log_well, rel=1e-8)
    if target.dim == 32:
        assert target.log_Z == pytest.approx(164.696, abs=1e-3)  # the paper's value


# ------------------------------------------------- 1-D marginals: (label, values, cdf, second moment)
def grid_marginals(name, target, samples):
    """Marginals of a target of dim <= 2 by trapezoid integration of R on a grid around the samples,
    and the law of the scalar log R(X) (sensitive to a wrong spread of every mode at once)."""
    if target.dim > 2:
        pytest.fail(f"no 1-D marginal known for {target!r}: add one to MARGINALS")
    lo, hi = samples.min(0), samples.max(0)
    axes = [np.linspace(a - 0.5 * (b - a), b + 0.5 * (b - a), 1501) for a, b in zip(lo, hi, strict=True)]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    lr = log_r(target, mesh.reshape(-1, target.dim))
    dens = np.exp(lr - lr.max()).reshape(mesh.shape[:-1])
    order = np.argsort(lr)
    weights = dens.ravel()[order] / dens.sum()  # equal cells: a Riemann sum
    law_cdf = lambda v: np.interp(v, lr[order], np.cumsum(weights))  # noqa: E731
    out = [("log R(x)", log_r(target, samples), law_cdf, float((weights * lr[order] ** 2).sum()))]
    for j, axis in enumerate(axes):
        m = dens
        for other in reversed(range(target.dim)):
            if other != j:
                m = integrate.trapezoid(m, axes[other], axis=other)
        out.append(marginal_from_density(f"x{j}", samples[:, j], axis, m))
    return out


def marginal_from_density(label, values, grid, dens):
    cdf = integrate.cumulative_trapezoid(dens, grid, initial=0.0)
    m2 = integrate.trapezoid(grid**2 * dens, grid) / cdf[-1]
    return label, values, lambda v: np.interp(v, grid, cdf / cdf[-1]), m2


def wells_marginals(name, target, samples):
    assert_separable_wells(target)
    out = []
    for j in sorted({0, 1, target.dim - 2, target.dim - 1}):
        grid = np.linspace(-6.0, 6.0, 24_001)
        dens = np.exp(coordinate_fn(target, j)(grid))
        out.append(marginal_from_density(f"x{j}", samples[:, j], grid, dens))
    return out


def funnel_marginals(name, target, samples):
    s = FUNNEL_X0_STD[name]
    z = (samples[:, 1:] * np.exp(-0.5 * samples[:, :1])).ravel()  # iid N(0, 1), independent of x0
    return [("x0", samples[:, 0], stats.norm(scale=s).cdf, s**2), ("x_j exp(-x0/2)", z, stats.norm.cdf, 1.0)]


def mixture_marginals(name, target, samples):
    """Coordinates of an equal-weight mixture of product laws: mixtures of the components' 1-D laws.
    Student-t coordinates (no second moment for df = 2) are compared through arctan(x_j)."""
    means = target.means.double().numpy()
    _, law = mixture_component(target)
    heavy = isinstance(target, StudentTMixture)
    out = []
    for j in (0, 1, target.dim - 1):
        m = means[:, j]
        if heavy:
            cdf = lambda v, m=m: law.cdf(np.tan(v)[:, None] - m).mean(1)  # noqa: E731
            m2 = np.mean([law.expect(lambda t, c=c: np.arctan(c + t) ** 2) for c in m])
            out.append((f"arctan x{j}", np.arctan(samples[:, j]), cdf, m2))
        else:
            cdf = lambda v, m=m: law.cdf(np.asarray(v)[:, None] - m).mean(1)  # noqa: E731
            out.append((f"x{j}", samples[:, j], cdf, float(np.mean(m**2) + law.var())))
    return out


MARGINALS = {"manywell": wells_marginals, "funnel": funnel_marginals, "easy_funnel": funnel_marginals}
MARGINALS |= {"gmm40": mixture_marginals, "student_t_mixture": mixture_marginals}


@pytest.mark.parametrize("name, kwargs", CASES)
def test_exact_samples_match_density(name, kwargs):
    target = make_target(name, **kwargs)
    if not target.has_sampler:
        pytest.skip(f"{name} has no exact sampler")
    samples = exact_samples(target, 20_000, seed=1)
    assert samples.shape == (20_000, target.dim) and np.isfinite(samples).all()
    for label, values, cdf, m2 in MARGINALS.get(name, grid_marginals)(name, target, samples):
        p = stats.kstest(values, cdf).pvalue
        assert p > 1e-4, f"{name} {label}: KS p-value {p:.2g} against the density's marginal"
        sq = values**2
        se = sq.std() / math.sqrt(len(sq))
        assert abs(sq.mean() - m2) < 4 * se, f"{name} {label}: E[x^2] = {sq.mean():.4f}, density gives {m2:.4f}"


@pytest.mark.parametrize("name, kwargs", CASES)
def test_samples_satisfy_stein_identity(name, kwargs):
    """For exact samples, E[x_j d/dx_j log R(x)] = -1 for every coordinate (integration by parts)."""
    target = make_target(name, **kwargs)
    if not target.has_sampler:
        pytest.skip(f"{name} has no exact sampler")
    x = target.sample(50_000, torch.Generator().manual_seed(2)).double()
    chunks = [c.requires_grad_(True) for c in x.split(5000)]  # mixtures hold (chunk, modes, d) intermediates
    grad = torch.cat([torch.autograd.grad(target.log_reward(c).sum(), c)[0] for c in chunks])
    terms = (x * grad).numpy()
    mean, se = terms.mean(0), terms.std(0) / math.sqrt(len(terms))
    bad = np.abs(mean + 1) > 4 * se
    assert not bad.any(), f"coordinates {np.flatnonzero(bad)}: E[x dlogR/dx] = {mean[bad]} (SE {se[bad]}), expected -1"


@pytest.mark.parametrize("name, kwargs", CASES)
def test_sampler_is_seeded(name, kwargs):
    target = make_target(name, **kwargs)
    if not target.has_sampler:
        pytest.skip(f"{name} has no exact sampler")
    a, b, c = (target.sample(64, torch.Generator().manual_seed(s)) for s in (3, 3, 4))
    assert a.shape == (64, target.dim)
    assert torch.equal(a, b) and not torch.equal(a, c)


# ------------------------------------------------------------------------- robustness and contract
def extreme_points(dim: int) -> torch.Tensor:
    big, rows = 1e30, []
    for head in (big, -big, 0.0, 1e4, -1e4):
        for tail in (big, -big, 0.0, 1.0):
            rows.append([head] + [tail] * (dim - 1))
    rows.append([(-1) ** i * big for i in range(dim)])
    rows.append([3e38] * dim)
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name, kwargs", UNCONDITIONAL_CASES)
def test_log_reward_never_nan_on_extreme_inputs(name, kwargs, dtype):
    target = make_target(name, **kwargs)
    x = extreme_points(target.dim).to(dtype)
    out = target.log_reward(x)
    assert out.shape == (len(x),)
    ok = torch.isfinite(out) | (out == -math.inf)
    assert ok.all(), f"log_reward is {out[~ok].tolist()} at {x[~ok].tolist()}"


@pytest.mark.parametrize("name, kwargs", UNCONDITIONAL_CASES)
def test_log_reward_is_batched_and_differentiable(name, kwargs):
    target = make_target(name, **kwargs)
    gen = torch.Generator().manual_seed(5)
    x = torch.cat([torch.zeros(1, target.dim), 2 * torch.randn(4, target.dim, generator=gen)]).double()
    out = target.log_reward(x)
    rows = torch.cat([target.log_reward(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(out, rows)
    assert torch.autograd.gradcheck(target.log_reward, (x.clone().requires_grad_(True),))
    x32 = x.float().requires_grad_(True)
    (grad,) = torch.autograd.grad(target.log_reward(x32).sum(), x32)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("name", list(TARGETS))
def test_t_scale_follows_the_spec(name):
    target = make_target(name)
    if name in T_SCALE:
        assert target.t_scale == T_SCALE[name]
    assert make_target(name, t_scale=2.5).t_scale == 2.5


@pytest.mark.parametrize("dim", [3, 33, 1, 0, -2])
def test_manywell_rejects_bad_dim(dim):
    with pytest.raises(ValueError, match=f"got {dim}"):
        make_target("manywell", dim=dim)


def test_unknown_target_lists_names():
    with pytest.raises(ValueError, match="'nope'") as info:
        make_target("nope")
    for name in TARGETS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("manywell", {"foo": 1}, "foo"),
        ("gmm25", {"dim": 3}, "dim"),
        ("funnel", {"dim": 1}, "got 1"),
        ("gaussian", {"std": -1.0}, "got -1.0"),
        ("gaussian", {"mean": math.nan}, "got nan"),
        ("gaussian", {"dim": 2.5}, "got 2.5"),
    ],
)
def test_bad_kwargs_raise_value_error(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_target(name, **kwargs)
