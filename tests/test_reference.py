"""The VP (Ornstein-Uhlenbeck) reference of envs/reference.py against independent closed forms, and the
reference registry. The Brownian-bridge maths has its own tests in test_process.py."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad
from torch.distributions import Normal

from diffsampler.envs import process
from diffsampler.envs.reference import REFERENCES, BridgeReference, VPReference, make_reference

VP_CASES = [(1, 1.0, 0.1, 10.0), (10, 5.0, 0.1, 10.0), (100, 1.0, 0.1, 10.0), (25, 0.3, 1.0, 20.0)]


def std_normal(var: float) -> Normal:
    """N(0, var) with float64 parameters (a Normal built from Python floats would be float32)."""
    return Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(var, dtype=torch.float64).sqrt())


def step_noise(num_steps: int, beta_min: float, beta_max: float) -> list[float]:
    """``a_k = 1 - exp(-int beta)`` over step k, diffusion time tau = 1 - t, by numerical quadrature."""

    def beta(tau):
        return beta_min + (beta_max - beta_min) * tau

    dt = 1.0 / num_steps
    return [-math.expm1(-quad(beta, 1 - (k + 1) * dt, 1 - k * dt)[0]) for k in range(num_steps)]


def signal(tau: float, beta_min: float, beta_max: float) -> float:
    """``exp(-int_0^tau beta / 2)``: the OU's mean coefficient from diffusion time 0 to tau."""
    return math.exp(-0.5 * quad(lambda s: beta_min + (beta_max - beta_min) * s, 0, tau)[0])


@pytest.mark.parametrize("num_steps, t_scale, beta_min, beta_max", VP_CASES)
def test_vp_kernel_matches_closed_form(num_steps, t_scale, beta_min, beta_max):
    ref = VPReference(num_steps, t_scale, beta_min, beta_max)
    a = torch.tensor(step_noise(num_steps, beta_min, beta_max), dtype=torch.float64)
    m, v = ref.backward_coefs()
    torch.testing.assert_close(m, (1 - a).sqrt())
    torch.testing.assert_close(v, t_scale * a)
    gen = torch.Generator().manual_seed(0)
    x_next = 2 * torch.randn(6, 3, generator=gen, dtype=torch.float64)
    x_prev = x_next + torch.randn(6, 3, generator=gen, dtype=torch.float64)
    log_p0 = std_normal(t_scale).log_prob(x_prev).sum(-1)
    for k_next in range(1, num_steps + 1):
        k = k_next - 1
        expected = Normal((1 - a[k]).sqrt() * x_next, (t_scale * a[k]).sqrt()).log_prob(x_prev).sum(-1)
        if k == 0:  # the initial distribution N(0, sigma^2) folded into the first entry
            expected = expected - log_p0
        torch.testing.assert_close(ref.log_pb(x_prev, x_next, k_next), expected)


@pytest.mark.parametrize("num_steps, t_scale, beta_min, beta_max", VP_CASES)
def test_vp_log_pb_path_equals_per_step_and_per_row(num_steps, t_scale, beta_min, beta_max):
    ref = VPReference(num_steps, t_scale, beta_min, beta_max)
    states = torch.randn(5, num_steps + 1, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    path = ref.log_pb_path(states)
    assert path.shape == (5, num_steps)
    loop = torch.stack([ref.log_pb(states[:, k], states[:, k + 1], k + 1) for k in range(num_steps)], dim=1)
    torch.testing.assert_close(path, loop)
    k_next = torch.arange(5) % num_steps + 1  # a (B,) tensor of step indices, row by row
    rows = torch.arange(5)
    per_row = ref.log_pb(states[rows, k_next - 1], states[rows, k_next], k_next)
    torch.testing.assert_close(per_row, path[rows, k_next - 1])


@pytest.mark.parametrize("num_steps, t_scale, beta_min, beta_max", VP_CASES)
def test_vp_is_the_time_reversal_of_the_stationary_ou_chain(num_steps, t_scale, beta_min, beta_max):
    """Exact identity: p_0(x_0) prod fwd = N(x_T; 0, sigma^2) prod p_B, i.e. with the folded first entry
    sum log fwd = log N(x_T; 0, sigma^2) + sum(log_pb_path)."""
    ref = VPReference(num_steps, t_scale, beta_min, beta_max)
    a = torch.tensor(step_noise(num_steps, beta_min, beta_max), dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    x = [math.sqrt(t_scale) * torch.randn(4, 2, generator=gen, dtype=torch.float64)]
    log_fwd = torch.zeros(4, dtype=torch.float64)
    for k in range(num_steps):
        mean, std = (1 - a[k]).sqrt() * x[-1], (t_scale * a[k]).sqrt()
        x.append(mean + std * torch.randn(4, 2, generator=gen, dtype=torch.float64))
        log_fwd += Normal(mean, std).log_prob(x[-1]).sum(-1)
    states = torch.stack(x, 1)
    log_terminal = std_normal(t_scale).log_prob(states[:, -1]).sum(-1)
    torch.testing.assert_close(log_terminal + ref.log_pb_path(states).sum(1), log_fwd)


def assert_mean_var(samples, mean, var, what: str) -> None:
    """Per-coordinate sample mean and variance within 4 standard errors of the truth (Gaussian data)."""
    n = samples.shape[0]
    se_mean, se_var = (var / n) ** 0.5, var * math.sqrt(2.0 / (n - 1))
    err_mean = (samples.mean(0) - mean).abs().max().item()
    err_var = (samples.var(0) - var).abs().max().item()
    assert err_mean < 4 * se_mean, f"{what}: mean off by {err_mean:.4g} (SE {se_mean:.3g})"
    assert err_var < 4 * se_var, f"{what}: variance off by {err_var:.4g} (SE {se_var:.3g})"


def test_vp_backward_sampling_gives_the_ou_marginals():
    """Given x_T, x_k ~ N(e^{-I/2} x_T, sigma^2 (1 - e^{-I})) with I = int_0^{1 - t_k} beta; and each
    kernel's residual x_k - sqrt(1 - a_k) x_{k+1} ~ N(0, sigma^2 a_k), uncorrelated with x_{k+1}."""
    num_steps, t_scale, beta_min, beta_max, n = 10, 2.5, 0.1, 10.0, 20_000
    ref = VPReference(num_steps, t_scale, beta_min, beta_max)
    x_end = torch.tensor([3.0, -1.5], dtype=torch.float64)
    paths = ref.sample_backward(x_end.expand(n, 2).clone(), torch.Generator().manual_seed(3))
    assert paths.shape == (n, num_steps + 1, 2) and torch.equal(paths[:, -1], x_end.expand(n, 2))
    for k in (0, 1, 5, 9):
        c = signal(1 - k / num_steps, beta_min, beta_max)
        assert_mean_var(paths[:, k], c * x_end, t_scale * (1 - c * c), f"marginal k={k}")
    a = step_noise(num_steps, beta_min, beta_max)
    x_end = 3 * torch.randn(n, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    paths = ref.sample_backward(x_end, torch.Generator().manual_seed(5))
    for k in (0, 4, 9):
        resid = paths[:, k] - math.sqrt(1 - a[k]) * paths[:, k + 1]
        assert_mean_var(resid, torch.zeros(2, dtype=torch.float64), t_scale * a[k], f"kernel k={k}")
        centred = paths[:, k + 1] - paths[:, k + 1].mean(0)
        corr = (resid * centred).mean(0) / (resid.std(0) * centred.std(0))
        assert corr.abs().max() < 4 / math.sqrt(n), f"kernel k={k}: residual correlated with x_(k+1): {corr}"


def test_vp_sampling_is_seeded_and_initial_distribution_is_stationary():
    ref = VPReference(20, 3.0)
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(6))
    a = ref.sample_backward(x, torch.Generator().manual_seed(7))
    assert torch.equal(a, ref.sample_backward(x, torch.Generator().manual_seed(7)))
    assert not torch.equal(a, ref.sample_backward(x, torch.Generator().manual_seed(8)))
    x0 = ref.initial_sample(20_000, 2, torch.Generator().manual_seed(9), dtype=torch.float64)
    assert_mean_var(x0, torch.zeros(2, dtype=torch.float64), 3.0, "p_0")
    torch.testing.assert_close(ref.initial_log_prob(x0[:5]), std_normal(3.0).log_prob(x0[:5]).sum(-1))
    for t in (0.0, 0.3, 1.0):  # stationary: the marginal is N(0, sigma^2) at every time
        torch.testing.assert_close(ref.marginal_log_prob(x0[:5], t), ref.initial_log_prob(x0[:5]))


def test_bridge_reference_wraps_the_bridge_functions():
    ref = BridgeReference(8, 2.0)
    states = torch.randn(4, 9, 3, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    states[:, 0] = 0
    torch.testing.assert_close(ref.log_pb_path(states), process.bridge_log_pb_path(states, 2.0))
    m, v = ref.backward_coefs()
    for k in range(1, 8):  # p_B(x_k | x_{k+1}) = N(m_k x_{k+1}, v_k) matches bridge_backward_params(k + 1)
        mean, var = process.bridge_backward_params(states[:, k + 1], k + 1, 8, 2.0)
        torch.testing.assert_close(m[k] * states[:, k + 1], mean)
        assert float(v[k]) == pytest.approx(float(var))
    assert torch.equal(ref.initial_sample(3, 2), torch.zeros(3, 2))
    assert torch.equal(ref.initial_log_prob(states[:, 0]), torch.zeros(4, dtype=torch.float64))
    assert ref.forward_coefs() == (1.0, 2.0 / 8)


def test_registry_and_bad_arguments():
    assert set(REFERENCES) >= {"bridge", "vp"}
    assert isinstance(make_reference("vp", 10, 1.0, beta_max=20.0), VPReference)
    with pytest.raises(ValueError, match="'ou'"):
        make_reference("ou", 10, 1.0)
    with pytest.raises(ValueError, match="beta_max"):
        make_reference("bridge", 10, 1.0, beta_max=3.0)
    for kwargs, bad in [({"beta_min": 0.0}, "0.0"), ({"beta_max": math.inf}, "inf"), ({"beta_min": "1"}, "'1'")]:
        with pytest.raises(ValueError, match=f"got {bad}"):
            make_reference("vp", 10, 1.0, **kwargs)
    with pytest.raises(ValueError, match="beta_min=5.0 > beta_max=1.0"):
        make_reference("vp", 10, 1.0, beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="got 0"):
        make_reference("vp", 0, 1.0)
