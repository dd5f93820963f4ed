"""The EGNN drift (agents/egnn.py): E(n) and permutation equivariance, translation invariance, zero output
at initialisation, JointNet's call forms, agreement of batched and row-by-row calls, gradients."""

from __future__ import annotations

import inspect

import pytest
import torch

from diffsampler.agents.egnn import EGNN, egnn_factory
from diffsampler.agents.networks import JointNet

SYSTEMS = [(4, 2), (13, 3)]


def make(n, sd, out_mult=1, zero_init=False, cond_dim=None, seed=0):
    torch.manual_seed(seed)
    d = n * sd
    return egnn_factory(n, sd)(d, out_mult * d, 16, 8, 2, zero_init, cond_dim).double()


def random_orthogonal(dim, gen):
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def test_factory_has_jointnets_signature():
    joint = list(inspect.signature(JointNet).parameters)
    assert list(inspect.signature(EGNN).parameters)[: len(joint)] == joint
    net = egnn_factory(4, 2)(8, 16, 32, 16, 3, True, None)  # positional, as the policy builds JointNet
    assert len(net.layers) == 3 and net.out_dim == 16


@pytest.mark.parametrize("n, sd", SYSTEMS)
@pytest.mark.parametrize("out_mult", [1, 2])
def test_equivariance_rotations_reflections_permutations_translations(n, sd, out_mult):
    net = make(n, sd, out_mult)
    gen = torch.Generator().manual_seed(1)
    rows, d = 6, n * sd
    x = 2 * torch.randn(rows, n, sd, generator=gen, dtype=torch.float64)
    emb = net.embed_time(torch.rand(rows, generator=gen, dtype=torch.float64))
    out = net(x.reshape(rows, d), emb)
    drift, log_var = out[:, :d].reshape(rows, n, sd), out[:, d:].reshape(rows, n, -1)
    assert drift.abs().max() > 1e-3  # not trivially zero: the checks have power
    torch.testing.assert_close(drift.mean(1), torch.zeros(rows, sd, dtype=torch.float64), atol=1e-12, rtol=0)
    mirror = torch.eye(sd, dtype=torch.float64)
    mirror[0, 0] = -1.0
    q = random_orthogonal(sd, gen)
    for rot in (q, q @ mirror):  # a rotation and an improper rotation
        perm = torch.randperm(n, generator=gen)
        moved = (x @ rot.T + 5 * torch.randn(rows, 1, sd, generator=gen, dtype=torch.float64))[:, perm]
        out2 = net(moved.reshape(rows, d), emb)
        torch.testing.assert_close(out2[:, :d].reshape(rows, n, sd), (drift @ rot.T)[:, perm], rtol=1e-9, atol=1e-10)
        if out_mult == 2:  # one invariant log-variance per particle, repeated over its coordinates
            torch.testing.assert_close(out2[:, d:].reshape(rows, n, -1), log_var[:, perm], rtol=1e-9, atol=1e-10)
    if out_mult == 2:
        assert torch.equal(log_var, log_var[..., :1].expand_as(log_var))
    # power: a non-orthogonal map is not commuted with
    shear = torch.eye(sd, dtype=torch.float64) + 0.3 * torch.triu(torch.ones(sd, sd, dtype=torch.float64), 1)
    sheared = net((x @ shear.T).reshape(rows, d), emb)[:, :d].reshape(rows, n, sd)
    assert not torch.allclose(sheared, drift @ shear.T, atol=1e-4)


@pytest.mark.parametrize("out_mult", [1, 2])
def test_zero_output_at_initialisation(out_mult):
    net = make(13, 3, out_mult, zero_init=True)
    x = torch.randn(3, 5, 39, dtype=torch.float64)
    assert torch.equal(net(x, net.embed_time(torch.linspace(0, 1, 5).double())), torch.zeros(3, 5, out_mult * 39))


def test_call_forms_and_batched_equals_rows():
    n, sd, B, T = 4, 2, 3, 5
    net = make(n, sd, 2)
    x = torch.randn(B, T, n * sd, dtype=torch.float64)
    t_emb = net.embed_time(torch.linspace(0, 1, T).double())  # (T, hidden)
    paths = net(x, t_emb)
    assert paths.shape == (B, T, 2 * n * sd)
    per_traj = net(x, t_emb.expand(B, T, -1))  # (B, T, hidden)
    torch.testing.assert_close(per_traj, paths)
    for k in range(T):
        step = net(x[:, k], t_emb[k])  # one time step: x (rows, d), t_emb (hidden,)
        torch.testing.assert_close(step, paths[:, k], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(net(x[:, k], t_emb[k].expand(B, -1)), step)  # t_emb (rows, hidden)
        for b in range(B):
            torch.testing.assert_close(net(x[b, k], t_emb[k]), paths[b, k], rtol=1e-12, atol=1e-12)


def test_condition_embedding():
    net = make(4, 2, cond_dim=5)
    c_emb = net.embed_condition(torch.randn(3, 5, dtype=torch.float64))
    emb = net.embed_time(torch.linspace(0, 1, 4).double()) + c_emb.unsqueeze(1)  # (B, T, hidden)
    assert net(torch.randn(3, 4, 8, dtype=torch.float64), emb).shape == (3, 4, 8)
    with pytest.raises(ValueError, match="cond_dim"):
        make(4, 2).embed_condition(torch.zeros(1, 5))


def test_gradients_flow_from_zero_initialisation():
    net = make(4, 2, 2, zero_init=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(8, 8, dtype=torch.float64, requires_grad=True)
    t = torch.rand(8, dtype=torch.float64)
    target = torch.randn(8, 16, dtype=torch.float64)
    for _ in range(2):
        opt.zero_grad()
        loss = (net(x, net.embed_time(t)) - target).square().sum()
        loss.backward()
        heads = [p.grad for layer in net.layers for p in layer.coord.parameters()] + [net.log_var.weight.grad]
        assert all(g is not None and g.abs().sum() > 0 for g in heads)
        opt.step()
    missing = [name for name, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient after one step for {missing}"
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_coincident_particles_and_bad_arguments():
    net = make(4, 2, zero_init=False)
    x = torch.zeros(2, 8, dtype=torch.float64, requires_grad=True)
    out = net(x, net.embed_time(torch.zeros(2, dtype=torch.float64)))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="dim=9"):
        EGNN(9, 9, n_particles=4, spatial_dim=2)
    with pytest.raises(ValueError, match="out_dim.*12"):
        egnn_factory(4, 2)(8, 12)
    with pytest.raises(ValueError, match="joint_layers.*0"):
        egnn_factory(4, 2)(8, 8, joint_layers=0)
    with pytest.raises(ValueError, match=r"\(2, 9\)"):
        net(torch.zeros(2, 9, dtype=torch.float64), torch.zeros(16, dtype=torch.float64))
