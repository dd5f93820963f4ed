"""Every vectorised objective against a slow loop written here, plus invariances."""

import pytest
import torch

from diffsampler.agents import objectives as O

B, T = 7, 6


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(0)
    log_pf = torch.randn(B, T, generator=g, dtype=torch.float64)
    log_pb = torch.randn(B, T, generator=g, dtype=torch.float64)
    log_r = torch.randn(B, generator=g, dtype=torch.float64)
    log_f = torch.randn(B, T + 1, generator=g, dtype=torch.float64)
    log_f[:, -1] = log_r
    return log_pf, log_pb, log_r, log_f


def test_trajectory_balance_matches_loop(tensors):
    log_pf, log_pb, log_r, _ = tensors
    log_z = torch.tensor(0.3, dtype=torch.float64)
    expected = torch.stack([(log_z + sum(log_pf[b]) - sum(log_pb[b]) - log_r[b]) ** 2 for b in range(B)])
    torch.testing.assert_close(O.trajectory_balance(log_pf, log_pb, log_r, log_z), expected)


def test_vargrad_matches_loop_and_is_shift_invariant(tensors):
    log_pf, log_pb, log_r, _ = tensors
    log_w = [log_r[b] + sum(log_pb[b]) - sum(log_pf[b]) for b in range(B)]
    mean = sum(log_w) / B
    expected = torch.stack([(w - mean) ** 2 for w in log_w])
    torch.testing.assert_close(O.vargrad(log_pf, log_pb, log_r), expected)
    # Shifting log R by c shifts log Z by c and leaves the loss unchanged.
    torch.testing.assert_close(O.vargrad(log_pf, log_pb, log_r + 12.5), expected)


def test_vargrad_gradient_equals_variance_gradient(tensors):
    log_pf, log_pb, log_r, _ = tensors
    a = log_pf.clone().requires_grad_(True)
    O.vargrad(a, log_pb, log_r).mean().backward()
    b = log_pf.clone().requires_grad_(True)
    (log_r + log_pb.sum(-1) - b.sum(-1)).var(unbiased=False).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_detailed_balance_matches_loop(tensors):
    log_pf, log_pb, _, log_f = tensors
    expected = torch.stack(
        [sum((log_f[b, k] + log_pf[b, k] - log_f[b, k + 1] - log_pb[b, k]) ** 2 for k in range(T)) for b in range(B)]
    )
    torch.testing.assert_close(O.detailed_balance(log_pf, log_pb, log_f), expected)


@pytest.mark.parametrize("lam", [1.0, 2.0, 0.5])
def test_subtrajectory_balance_matches_loop(tensors, lam):
    log_pf, log_pb, _, log_f = tensors
    expected = []
    for b in range(B):
        num = den = 0.0
        for i in range(T + 1):
            for j in range(i + 1, T + 1):
                resid = log_f[b, i] + sum(log_pf[b, i:j]) - sum(log_pb[b, i:j]) - log_f[b, j]
                num = num + lam ** (j - i) * resid**2
                den = den + lam ** (j - i)
        expected.append(num / den)
    torch.testing.assert_close(O.subtrajectory_balance(log_pf, log_pb, log_f, lam), torch.stack(expected))


def test_subtb_with_only_full_trajectory_weight_is_tb(tensors):
    """With huge lambda the full trajectory dominates the weights: SubTB -> TB with log Z = log F_0."""
    log_pf, log_pb, log_r, log_f = tensors
    sub = O.subtrajectory_balance(log_pf, log_pb, log_f, lam=1e6)
    tb = O.trajectory_balance(log_pf, log_pb, log_r, log_f[:, 0])
    torch.testing.assert_close(sub, tb, rtol=1e-4, atol=1e-4)


def test_pis_and_backward_mle_match_loop(tensors):
    log_pf, log_pb, log_r, _ = tensors
    torch.testing.assert_close(
        O.pis(log_pf, log_pb, log_r),
        torch.stack([sum(log_pf[b]) - sum(log_pb[b]) - log_r[b] for b in range(B)]),
    )
    torch.testing.assert_close(O.backward_mle(log_pf), torch.stack([-sum(log_pf[b]) for b in range(B)]))


def test_registry_entries_are_consistent():
    for name, obj in O.OBJECTIVES.items():
        assert obj.needs in (None, "log_z", "flow"), name
        assert not (obj.forward_looking and obj.needs != "flow"), name
