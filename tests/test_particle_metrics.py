"""Particle metrics (agents/particle_metrics.py) against independent computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import ot
import pytest
import torch

from diffsampler.agents.particle_metrics import (
    aligned_cost_matrix,
    distance_w2,
    energy_w2,
    equivariant_w2,
    particle_summary,
    w2_1d,
)
from diffsampler.envs.targets import make_target


def random_orthogonal(dim, gen):
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def symmetric_copy(x, n, sd, gen, reflect=True):
    """Every row rotated (and possibly reflected), permuted and translated at random; rows shuffled."""
    p = x.reshape(len(x), n, sd)
    out = []
    for row in p:
        q = random_orthogonal(sd, gen)
        if not reflect and torch.linalg.det(q) < 0:
            q[:, 0] = -q[:, 0]
        moved = row @ q.T + 3 * torch.randn(1, sd, generator=gen, dtype=torch.float64)
        out.append(moved[torch.randperm(n, generator=gen)])
    return torch.stack(out).reshape(len(x), -1)[torch.randperm(len(x), generator=gen)]


def test_w2_1d_is_the_quantile_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=400), rng.standard_t(3, size=400)
    assert w2_1d(a, b) == pytest.approx(math.sqrt(np.mean((np.sort(a) - np.sort(b)) ** 2)), rel=1e-12)
    c = rng.normal(size=257)  # unequal sizes: POT's exact 1-D solver (squared cost) as the reference
    assert w2_1d(a, c) == pytest.approx(math.sqrt(ot.emd2_1d(a, c)), rel=1e-9)
    assert w2_1d(a, a + 0.7) == pytest.approx(0.7, rel=1e-12)
    assert w2_1d(a, np.append(b, np.inf)) == math.inf
    with pytest.raises(ValueError, match="sizes 0 and 400"):
        w2_1d([], b)


def test_energy_w2_shrinks_with_the_sample_size():
    target = make_target("dw4", zero_com=False)
    gen = torch.Generator().manual_seed(0)
    square = torch.tensor([0.0, 0, 4, 0, 4, 4, 0, 4], dtype=torch.float64)

    def draw(n):  # a law with light-tailed energies: a noisy square
        return square + 0.2 * torch.randn(n, 8, generator=gen, dtype=torch.float64)

    # mean over 4 independent pairs of samples of W2^2, which decreases like 1/n
    w = [np.mean([energy_w2(draw(n), draw(n), target) ** 2 for _ in range(4)]) for n in (100, 1000, 10_000)]
    assert w[0] > w[1] > w[2] and w[2] < w[0] / 10, w  # a factor 100 expected over the range
    same = draw(500)
    assert energy_w2(same, same, target) == 0.0


def test_distance_w2_pools_all_pairs():
    target = make_target("lj13", zero_com=False)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 39, generator=gen, dtype=torch.float64), torch.randn(20, 39, generator=gen).double()

    def pooled(s):  # by a loop over pairs, independently of the library's pair_distances
        p = s.reshape(len(s), 13, 3).numpy()
        return np.concatenate(
            [np.linalg.norm(p[:, i] - p[:, j], axis=-1) for i, j in itertools.combinations(range(13), 2)]
        )

    assert distance_w2(x, y, target) == pytest.approx(math.sqrt(ot.emd2_1d(pooled(x), pooled(y))), rel=1e-9)
    assert distance_w2(x, symmetric_copy(x, 13, 3, gen), target) < 1e-6


def brute_force_cost(x, y):
    """2-D: min over a fine grid of rotation angles, the reflection and all 24 permutations (numpy)."""
    x = x.reshape(4, 2) - x.reshape(4, 2).mean(0)
    y = y.reshape(4, 2) - y.reshape(4, 2).mean(0)
    theta = np.linspace(0, 2 * np.pi, 2400, endpoint=False)
    rot = np.stack([np.stack([np.cos(theta), -np.sin(theta)], -1), np.stack([np.sin(theta), np.cos(theta)], -1)], -2)
    perms = y[np.array(list(itertools.permutations(range(4))))]  # (24, 4, 2)
    best = np.inf
    for mirror in (np.eye(2), np.diag([1.0, -1.0])):
        moved = perms[None] @ np.swapaxes(rot @ mirror, -1, -2)[:, None]  # (angles, perms, 4, 2)
        best = min(best, ((moved - x) ** 2).sum((-1, -2)).min())
    return best


def test_exact_alignment_matches_brute_force_and_bounds_the_heuristic():
    gen = torch.Generator().manual_seed(2)
    x, y = 2 * torch.randn(4, 8, generator=gen, dtype=torch.float64), 2 * torch.randn(5, 8, generator=gen).double()
    exact = aligned_cost_matrix(x, y, 4, 2)
    brute = np.array([[brute_force_cost(a.numpy(), b.numpy()) for b in y] for a in x])
    np.testing.assert_allclose(exact.numpy(), brute, rtol=1e-5, atol=1e-4)
    heuristic = aligned_cost_matrix(x, y, 4, 2, exact=False)
    assert (heuristic >= exact - 1e-9).all()
    unaligned = (x.reshape(4, 1, 4, 2) - y.reshape(1, 5, 4, 2)).square().sum((-1, -2))
    centred = aligned_cost_matrix(x, y, 4, 2, exact=True)
    assert (centred <= unaligned + 1e-9).all()


@pytest.mark.parametrize("name", ["dw4", "lj13"])
def test_equivariant_w2_is_zero_for_a_symmetric_copy(name):
    target = make_target(name, zero_com=False)
    n, sd = target.n_particles, target.spatial_dim
    gen = torch.Generator().manual_seed(3)
    x = 1.5 * torch.randn(40, target.dim, generator=gen, dtype=torch.float64)
    y = symmetric_copy(x, n, sd, gen)
    plain = math.sqrt(ot.emd2(np.full(40, 1 / 40), np.full(40, 1 / 40), ot.dist(x.numpy(), y.numpy())))
    assert plain > 1.0
    assert equivariant_w2(x, y, target) < 1e-6
    assert equivariant_w2(x, 1.5 * torch.randn(40, target.dim, generator=gen).double(), target) > 0.1
    rotated = symmetric_copy(x, n, sd, gen, reflect=False)
    assert equivariant_w2(x, rotated, target, reflections=False) < 1e-6


def test_summary_and_bad_input():
    target = make_target("dw4", zero_com=False)
    gen = torch.Generator().manual_seed(4)
    x, y = 2 * torch.randn(50, 8, generator=gen), 2 * torch.randn(60, 8, generator=gen)
    summary = particle_summary(x, y, target, n_equivariant=20)
    assert set(summary) == {"energy_w2", "distance_w2", "equivariant_w2"}
    assert all(math.isfinite(v) and v > 0 for v in summary.values())
    assert summary["equivariant_w2"] == pytest.approx(equivariant_w2(x[:20], y[:20], target))
    with pytest.raises(ValueError, match=r"\(50, 9\)"):
        energy_w2(torch.zeros(50, 9), y, target)
    with pytest.raises(ValueError, match="n_samples.*0"):
        equivariant_w2(x, y, target, n_samples=0)
    with pytest.raises(ValueError, match="n_particles=13"):
        aligned_cost_matrix(torch.zeros(2, 39), torch.zeros(2, 39), 13, 3, exact=True)
