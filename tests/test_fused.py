"""The fused evaluation of fixed-variance transitions equals the plain computation, value and gradient."""

import pytest
import torch

from diffsampler.agents.policy import DiffusionPolicy, PolicyConfig
from diffsampler.envs import engine, process
from diffsampler.envs.fused import residual_squared_norm
from diffsampler.envs.reference import make_reference


def test_residual_squared_norm_gradients_match_finite_differences():
    gen = torch.Generator().manual_seed(0)
    r0 = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    h = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h, w: residual_squared_norm(r0, h, w, 0.3), (h, w))
    plain = (r0 - 0.3 * h @ w.t()).square().sum(-1)
    torch.testing.assert_close(residual_squared_norm(r0, h, w, 0.3), plain)


@pytest.mark.parametrize("d, k", [(5, 3), (2, 6)])  # both gradient branches: the residual wider or narrower
def test_residual_squared_norm_with_bias_and_per_row_scales(d, k):
    gen = torch.Generator().manual_seed(1)
    r0 = torch.randn(7, d, generator=gen, dtype=torch.float64)
    h, w, b = (torch.randn(*s, generator=gen, dtype=torch.float64, requires_grad=True) for s in ((7, k), (d, k), (d,)))
    for alpha in (0.3, torch.rand(7, 1, generator=gen, dtype=torch.float64) + 0.5):
        fn = lambda h, w, b, alpha=alpha: residual_squared_norm(r0, h, w, alpha, b)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (h, w, b))
        plain = (r0 - alpha * (h @ w.t() + b)).square().sum(-1)
        torch.testing.assert_close(residual_squared_norm(r0, h, w, alpha, b), plain)


def test_residual_squared_norm_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        residual_squared_norm(torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"\(5,\)"):
        residual_squared_norm(torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(3, 2), 1.0, torch.zeros(5))
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        residual_squared_norm(torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(3, 2), torch.ones(4, 3))


def _plain_log_pf(policy, states):
    """The generic path: kernel mean and variance, then the Gaussian log-density."""
    mean, var = policy.transition(states[:, :-1], None, policy.context(None), None)
    return process.gaussian_log_prob(states[:, 1:], mean, var)


def _fused(policy, states):
    """The engine's private fused branch, or None when it declines."""
    x = states[:, :-1]
    return engine._fused_log_pf(x, states[:, 1:], policy.affine_drift(x, policy.context(None)))


def _scored(policy, states):
    """What ``score`` computes for the kernel: the fused branch when it applies, else the generic path."""
    return engine._path_log_pf(policy, states, policy.context(None), None)


@pytest.mark.parametrize(
    "reference, config",
    [
        ("bridge", PolicyConfig()),
        ("vp", PolicyConfig(parametrisation="dds")),  # per-step mean, drift and variance coefficients
    ],
)
def test_fast_log_pf_matches_the_generic_path(reference, config):
    torch.manual_seed(0)
    dim, steps = 6, 9
    policy = DiffusionPolicy(dim, steps, 2.0, config, make_reference(reference, steps, 2.0)).double()
    torch.nn.init.normal_(policy.net.last.weight, std=0.5)  # leave the zero initialisation
    torch.nn.init.normal_(policy.net.last.bias, std=0.5)
    states = torch.randn(11, steps + 1, dim, dtype=torch.float64)
    assert _fused(policy, states) is not None

    weights = torch.randn(11, steps, dtype=torch.float64)
    fast = _scored(policy, states)
    grads_fast = torch.autograd.grad((fast * weights).sum(), list(policy.parameters()))
    plain = _plain_log_pf(policy, states)
    grads_plain = torch.autograd.grad((plain * weights).sum(), list(policy.parameters()))
    torch.testing.assert_close(fast, plain)
    for a, b in zip(grads_fast, grads_plain):
        torch.testing.assert_close(a, b)


def test_a_binding_output_clip_falls_back_to_the_generic_path():
    torch.manual_seed(0)
    policy = DiffusionPolicy(3, 5, 1.0, PolicyConfig(clip_output=0.5)).double()
    torch.nn.init.normal_(policy.net.last.bias, std=5.0)  # drifts far beyond the clip
    states = torch.randn(4, 6, 3, dtype=torch.float64)
    assert _fused(policy, states) is None
    torch.testing.assert_close(_scored(policy, states), _plain_log_pf(policy, states))
