"""The Brownian-bridge reference process of envs/process.py, checked against independent closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from diffsampler.envs import process
from diffsampler.envs.reference import make_reference

CASES = [(1, 1.0), (4, 1.0), (10, 5.0), (100, 0.3)]  # (T, sigma^2)


def brownian_paths(b: int, num_steps: int, t_scale: float, d: int, seed: int = 0) -> torch.Tensor:
    """Forward discrete Brownian motion from 0, (b, T + 1, d), float64."""
    gen = torch.Generator().manual_seed(seed)
    steps = math.sqrt(t_scale / num_steps) * torch.randn(b, num_steps, d, generator=gen, dtype=torch.float64)
    return torch.cat([torch.zeros(b, 1, d, dtype=torch.float64), steps.cumsum(1)], dim=1)


def closed_form_log_pb(x_prev, x_next, k_next: int, num_steps: int, t_scale: float) -> torch.Tensor:
    """log N(x_prev; k/(k+1) x_next, sigma^2 dt k/(k+1)) with k = k_next - 1, summed over coordinates."""
    k = k_next - 1
    mean = k / (k + 1) * x_next
    std = math.sqrt(t_scale / num_steps * k / (k + 1))
    return Normal(mean, std).log_prob(x_prev).sum(-1)


@pytest.mark.parametrize("num_steps, t_scale", CASES)
def test_backward_params_closed_form(num_steps, t_scale):
    x_next = torch.randn(7, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for k_next in range(1, num_steps + 1):
        mean, var = process.bridge_backward_params(x_next, k_next, num_steps, t_scale)
        k = k_next - 1
        torch.testing.assert_close(mean, k / (k + 1) * x_next)
        torch.testing.assert_close(var.double(), torch.tensor(t_scale / num_steps * k / (k + 1), dtype=torch.float64))


@pytest.mark.parametrize("num_steps, t_scale", CASES)
def test_log_pb_closed_form(num_steps, t_scale):
    gen = torch.Generator().manual_seed(2)
    x_next = 2 * torch.randn(6, 4, generator=gen, dtype=torch.float64)
    x_prev = x_next + torch.randn(6, 4, generator=gen, dtype=torch.float64)
    for k_next in range(2, num_steps + 1):
        got = process.bridge_log_pb(x_prev, x_next, k_next, num_steps, t_scale)
        torch.testing.assert_close(got, closed_form_log_pb(x_prev, x_next, k_next, num_steps, t_scale))


@pytest.mark.parametrize("num_steps, t_scale", CASES)
def test_log_pb_first_transition_is_zero(num_steps, t_scale):
    x_next = torch.randn(5, 3, generator=torch.Generator().manual_seed(3))
    lp = process.bridge_log_pb(torch.zeros(5, 3), x_next, 1, num_steps, t_scale)
    assert torch.equal(lp, torch.zeros(5))


def test_log_pb_with_per_row_steps():
    """A (B,) tensor of step indices gives, row by row, what the int form gives."""
    num_steps, t_scale = 6, 2.0
    gen = torch.Generator().manual_seed(4)
    x_prev, x_next = torch.randn(2, 12, 3, generator=gen, dtype=torch.float64)
    k_next = torch.arange(12) % num_steps + 1  # 1..6, twice
    got = process.bridge_log_pb(x_prev, x_next, k_next, num_steps, t_scale)
    for i, k in enumerate(k_next.tolist()):
        expected = process.bridge_log_pb(x_prev[i : i + 1], x_next[i : i + 1], k, num_steps, t_scale)
        torch.testing.assert_close(got[i : i + 1], expected)
    assert torch.all(got[k_next == 1] == 0)
    assert torch.all(torch.isfinite(got))


@pytest.mark.parametrize("num_steps, t_scale", CASES)
def test_log_pb_path_equals_loop(num_steps, t_scale):
    states = brownian_paths(5, num_steps, t_scale, d=3, seed=5)
    states[:, 1:] += 0.3 * torch.randn(5, num_steps, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    path = process.bridge_log_pb_path(states, t_scale)
    assert path.shape == (5, num_steps)
    loop = torch.stack(
        [process.bridge_log_pb(states[:, k], states[:, k + 1], k + 1, num_steps, t_scale) for k in range(num_steps)],
        dim=1,
    )
    torch.testing.assert_close(path, loop)
    assert torch.all(path[:, 0] == 0)


@pytest.mark.parametrize("num_steps, t_scale", CASES)
def test_bridge_is_time_reversal_of_brownian_motion(num_steps, t_scale):
    """Exact identity: log P_fwd(path) = log N(x_T; 0, sigma^2) + sum_k log p_B(x_k | x_{k+1})."""
    states = brownian_paths(4, num_steps, t_scale, d=2, seed=7)
    std = math.sqrt(t_scale / num_steps)
    log_fwd = Normal(states[:, :-1], std).log_prob(states[:, 1:]).sum((1, 2))
    log_terminal = Normal(0.0, math.sqrt(t_scale)).log_prob(states[:, -1]).sum(-1)
    log_bwd = process.bridge_log_pb_path(states, t_scale).sum(1)
    torch.testing.assert_close(log_terminal + log_bwd, log_fwd)


def test_sample_backward_endpoints_and_determinism():
    num_steps, t_scale = 20, 3.0
    x_last = 4 * torch.randn(50, 3, generator=torch.Generator().manual_seed(8))
    paths = process.bridge_sample_backward(x_last, num_steps, t_scale, torch.Generator().manual_seed(9))
    assert paths.shape == (50, num_steps + 1, 3)
    assert torch.equal(paths[:, -1], x_last)
    assert torch.equal(paths[:, 0], torch.zeros(50, 3))
    again = process.bridge_sample_backward(x_last, num_steps, t_scale, torch.Generator().manual_seed(9))
    other = process.bridge_sample_backward(x_last, num_steps, t_scale, torch.Generator().manual_seed(10))
    assert torch.equal(paths, again)
    assert not torch.equal(paths, other)


def assert_mean_var(samples: torch.Tensor, mean: torch.Tensor, var: float, what: str) -> None:
    """Per-coordinate sample mean and variance within 4 standard errors of the truth (Gaussian data)."""
    n = samples.shape[0]
    se_mean = math.sqrt(var / n)
    se_var = var * math.sqrt(2.0 / (n - 1))
    err_mean = (samples.mean(0) - mean).abs().max().item()
    err_var = (samples.var(0) - var).abs().max().item()
    assert err_mean < 4 * se_mean, f"{what}: mean off by {err_mean:.4g} (SE {se_mean:.3g})"
    assert err_var < 4 * se_var, f"{what}: variance off by {err_var:.4g} (SE {se_var:.3g})"


def test_sample_backward_marginals_and_kernels():
    """Marginal of x_k given x_T: N((k/T) x_T, sigma^2 (k/T)(1 - k/T)); residual of each backward kernel:
    x_k - k/(k+1) x_{k+1} ~ N(0, sigma^2 dt k/(k+1)), uncorrelated with x_{k+1}."""
    num_steps, t_scale, n = 10, 2.5, 20_000
    x_end = torch.tensor([3.0, -1.5], dtype=torch.float64)
    paths = process.bridge_sample_backward(
        x_end.expand(n, 2).clone(), num_steps, t_scale, torch.Generator().manual_seed(11)
    )
    for k in (1, 5, 8):
        s = k / num_steps
        assert_mean_var(paths[:, k], s * x_end, t_scale * s * (1 - s), f"marginal k={k}")
    # The kernels, from spread-out end points (so that x_(k+1) varies for every k).
    x_end = 3 * torch.randn(n, 2, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    paths = process.bridge_sample_backward(x_end, num_steps, t_scale, torch.Generator().manual_seed(13))
    for k in (1, 4, 9):
        resid = paths[:, k] - k / (k + 1) * paths[:, k + 1]
        var = t_scale / num_steps * k / (k + 1)
        assert_mean_var(resid, torch.zeros(2, dtype=torch.float64), var, f"kernel k={k}")
        centred = paths[:, k + 1] - paths[:, k + 1].mean(0)
        corr = (resid * centred).mean(0) / (resid.std(0) * centred.std(0))
        assert corr.abs().max() < 4 / math.sqrt(n), f"kernel k={k}: residual correlated with x_(k+1): {corr}"


def test_reference_marginal_and_gaussian_log_prob():
    x = torch.randn(9, 3, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    expected = Normal(0.0, math.sqrt(2.0 * 0.3)).log_prob(x).sum(-1)
    torch.testing.assert_close(make_reference("bridge", 10, 2.0).marginal_log_prob(x, 0.3), expected)
    mean, var = torch.full((3,), 0.5, dtype=torch.float64), torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(process.gaussian_log_prob(x, mean, var), Normal(mean, var.sqrt()).log_prob(x).sum(-1))
    torch.testing.assert_close(
        process.gaussian_log_prob(x, mean, 0.7), Normal(mean, math.sqrt(0.7)).log_prob(x).sum(-1)
    )
    grid = process.time_grid(4)
    torch.testing.assert_close(grid, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))


@pytest.mark.parametrize(
    "num_steps, t_scale, bad",
    [
        (0, 1.0, "0"),
        (-3, 1.0, "-3"),
        (2.0, 1.0, "2.0"),
        ("10", 1.0, "'10'"),
        (True, 1.0, "True"),
        (10, 0.0, "0.0"),
        (10, -1.0, "-1.0"),
        (10, float("nan"), "nan"),
        (10, float("inf"), "inf"),
        (10, "1", "'1'"),
    ],
)
def test_check_process_args_rejects(num_steps, t_scale, bad):
    with pytest.raises(ValueError, match=f"got {bad}"):
        process.check_process_args(num_steps, t_scale)


def test_check_process_args_accepts():
    process.check_process_args(1, 1e-3)
    process.check_process_args(100, 5)
