"""Particle targets (envs/targets/particles.py): energies at hand-built configurations, invariances,
overlapping particles, bad input, and the Gymnasium ids."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from diffsampler import envs
from diffsampler.envs.gym_env import default_action_bound
from diffsampler.envs.targets import make_target
from diffsampler.envs.targets.particles import DW4, LJ13, LJ55, LennardJonesCluster

NAMES = ["dw4", "lj13", "lj55"]
IDS = ["DiffSampler-DW4-v0", "DiffSampler-LJ13-v0", "DiffSampler-LJ55-v0"]


def dw_pair(r: float) -> float:
    """Köhler et al.'s pair term with a = 0, b = -4, c = 0.9, d0 = 4."""
    return -4.0 * (r - 4.0) ** 2 + 0.9 * (r - 4.0) ** 4


def lj_pair(r: float) -> float:
    return r**-12 - 2.0 * r**-6


def flat(points) -> torch.Tensor:
    return torch.tensor(points, dtype=torch.float64).reshape(1, -1)


class LJ2(LennardJonesCluster):
    n_particles = 2


class LJ3(LennardJonesCluster):
    n_particles = 3


def test_registry_and_shapes():
    for name, cls, n, sd in [("dw4", DW4, 4, 2), ("lj13", LJ13, 13, 3), ("lj55", LJ55, 55, 3)]:
        target = make_target(name, zero_com=False)
        assert isinstance(target, cls) and (cls.n_particles, cls.spatial_dim) == (n, sd)
        assert target.dim == n * sd and target.log_Z is None and not target.has_sampler
        assert target.plot_bounds is not None and target.t_scale > 0
        reduced = make_target(name)  # the default: coordinates of the zero-centre-of-mass subspace
        assert isinstance(reduced.base, cls) and reduced.dim == (n - 1) * sd and not reduced.has_sampler
    assert [make_target(n).t_scale for n in NAMES] == [3.0, 0.5, 1.0]
    assert all(i in envs.ENV_IDS for i in IDS)


def test_dw4_energy_by_hand():
    target = DW4()
    # On a line at 0, 3, 6, 9: pairs at 3 (x3), 6 (x2), 9: 3 (-4 + 0.9) + 2 (-16 + 14.4) + (-100 + 562.5) = 450.
    line = flat([[0, 0], [3, 0], [6, 0], [9, 0]])
    assert target.log_reward(line).item() == pytest.approx(-450.0, rel=1e-12)
    # A square of side 4: four sides at the offset (0), two diagonals at 4 sqrt 2.
    square = flat([[0, 0], [4, 0], [4, 4], [0, 4]])
    u = 4 * math.sqrt(2) - 4
    assert target.log_reward(square).item() == pytest.approx(-2 * (-4 * u**2 + 0.9 * u**4), rel=1e-12)
    assert target.log_reward(square).item() == pytest.approx(8.396642530754047, rel=1e-12)
    # tau divides the energy
    assert DW4(tau=2.0).log_reward(line).item() == pytest.approx(-225.0, rel=1e-12)


def test_lennard_jones_energy_by_hand():
    # Two particles at r_m: 2 eps (ordered pairs) * (-1) plus (1/2) (0.25 + 0.25) of the harmonic term.
    assert LJ2().log_reward(flat([[-0.5, 0, 0], [0.5, 0, 0]])).item() == pytest.approx(1.75, rel=1e-12)
    assert LJ2(pair_factor=1.0).log_reward(flat([[-0.5, 0, 0], [0.5, 0, 0]])).item() == pytest.approx(0.75)
    # Equilateral triangle of side 1 (circumradius 1/sqrt 3): 2 * 3 * (-1) + 0.5 * 3 * (1/3) = -5.5.
    h = math.sqrt(0.75)
    triangle = flat([[0, 2 * h / 3, 0], [0.5, -h / 3, 0], [-0.5, -h / 3, 0]])
    assert LJ3().log_reward(triangle).item() == pytest.approx(5.5, rel=1e-12)
    assert LJ3(tau=0.5, oscillator_scale=0.0).log_reward(triangle).item() == pytest.approx(12.0, rel=1e-12)
    # LJ-13 on a line with unit spacing: 13 - k pairs at distance k, and sum_i (i - 6)^2 = 182.
    line = flat([[float(i), 0, 0] for i in range(13)])
    energy = 2 * sum((13 - k) * lj_pair(k) for k in range(1, 13)) + 0.5 * 182
    assert LJ13().log_reward(line).item() == pytest.approx(-energy, rel=1e-12)
    assert energy == pytest.approx(66.25127473621887, rel=1e-12)


def test_soft_core_is_the_tangent_below_the_clip():
    s = 0.7
    slope = 12 * s**-13 * (s**6 - 1)  # d/dr (r^-12 - 2 r^-6) at s
    for r in (0.0, 0.3, 0.69):
        expected = 2 * (lj_pair(s) + slope * (r - s)) + 0.5 * 2 * (r / 2) ** 2
        got = -LJ2().log_reward(flat([[-r / 2, 0, 0], [r / 2, 0, 0]])).item()
        # distances are sqrt(max(r^2, 1e-12)): r = 0 is evaluated at 1e-6
        assert got == pytest.approx(expected, rel=1e-12, abs=2 * abs(slope) * 1e-6)
    exact = -LJ2().log_reward(flat([[-0.4, 0, 0], [0.4, 0, 0]])).item()  # r = 0.8 > 0.7: exact LJ
    assert exact == pytest.approx(2 * lj_pair(0.8) + 0.5 * 2 * 0.16, rel=1e-12)


def random_orthogonal(dim: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


@pytest.mark.parametrize("name", NAMES)
def test_invariance_to_rotations_reflections_translations_permutations(name):
    target = make_target(name, zero_com=False)
    n, sd = target.n_particles, target.spatial_dim
    gen = torch.Generator().manual_seed(0)
    x = 1.5 * torch.randn(16, n, sd, generator=gen, dtype=torch.float64)
    base = target.log_reward(x.reshape(16, -1))
    assert torch.isfinite(base).all()
    q = random_orthogonal(sd, gen)
    mirror = torch.eye(sd, dtype=torch.float64)
    mirror[0, 0] = -1.0
    for transform in (q, q @ mirror):
        moved = x @ transform.T + 10 * torch.randn(16, 1, sd, generator=gen, dtype=torch.float64)
        moved = moved[:, torch.randperm(n, generator=gen)]
        torch.testing.assert_close(target.log_reward(moved.reshape(16, -1)), base, rtol=1e-10, atol=1e-8)
    # ... and not to a deformation: the check has power
    stretched = x * torch.tensor([1.1] + [1.0] * (sd - 1), dtype=torch.float64)
    assert not torch.allclose(target.log_reward(stretched.reshape(16, -1)), base, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_overlapping_particles_give_finite_values_and_gradients(name, dtype):
    target = make_target(name, zero_com=False)
    n, sd = target.n_particles, target.spatial_dim
    gen = torch.Generator().manual_seed(1)
    spread = torch.randn(n, sd, generator=gen, dtype=dtype)
    rows = [torch.zeros(n, sd, dtype=dtype), spread.clone(), spread.clone(), spread.clone()]
    rows[1][1] = rows[1][0]  # two coincident particles
    rows[2][1] = rows[2][0] + 1e-7  # nearly coincident
    rows[3][: n // 2] = rows[3][0]  # half of them on one point
    x = torch.stack(rows).reshape(len(rows), -1).requires_grad_(True)
    log_r = target.log_reward(x)
    (grad,) = torch.autograd.grad(log_r.sum(), x)
    assert torch.isfinite(log_r).all() and torch.isfinite(grad).all()


def test_bad_arguments_name_the_value():
    with pytest.raises(TypeError, match="abstract"):
        LennardJonesCluster()
    with pytest.raises(ValueError, match="1.5"):
        LJ13(soft_core=1.5)
    with pytest.raises(ValueError, match="-1"):
        LJ13(epsilon=-1)
    with pytest.raises(ValueError, match="0.0"):
        DW4(c=0.0)
    with pytest.raises(ValueError, match="-2"):
        DW4(tau=-2)
    with pytest.raises(ValueError, match=r"\(3, 7\)"):
        DW4().log_reward(torch.zeros(3, 7))


@pytest.mark.parametrize("env_id", IDS)
def test_env_ids_pass_the_gymnasium_and_sb3_checkers(env_id):
    bound = default_action_bound(envs.make_mdp(env_id))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(infinity|symmetric and normalized).*")
        check_env(gym.make(env_id, action_bound=bound).unwrapped)
        sb3_check_env(gym.make(env_id, action_bound=bound), warn=True)
    env = gym.make(env_id, num_steps=3)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (make_target(env_id.split("-")[1].lower()).dim + 1,)


def test_zero_com_gaussian_noise_and_density():
    from scipy import stats

    from diffsampler.envs.targets.zero_com import subspace_dim, zero_com_log_normal, zero_com_randn

    n, sd, m = 4, 2, 200_000
    eps = zero_com_randn((m, n * sd), n, sd, torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(eps.reshape(m, n, sd).mean(1), torch.zeros(m, sd, dtype=torch.float64))
    proj = torch.eye(n * sd, dtype=torch.float64) - torch.kron(torch.ones(n, n) / n, torch.eye(sd)).double()
    cov = eps.T @ eps / m  # the covariance of P eps is P: 1 - 1/n, -1/n, and 0 across coordinates
    assert (cov - proj).abs().max() < 5 * math.sqrt(2 / m)
    # density on V: a (n - 1) D dimensional isotropic Gaussian in an orthonormal basis of V
    basis = torch.linalg.svd(proj).U[:, : subspace_dim(n, sd)]
    mean = zero_com_randn((n * sd,), n, sd, torch.Generator().manual_seed(1), dtype=torch.float64)
    x = mean + 1.3 * eps[:5]
    expected = stats.multivariate_normal(cov=1.3**2 * np.eye(6)).logpdf(((x - mean) @ basis).numpy())
    np.testing.assert_allclose(zero_com_log_normal(x, mean, 1.3**2, n, sd).numpy(), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="got \\(3, 7\\)"):
        zero_com_randn((3, 7), n, sd)
