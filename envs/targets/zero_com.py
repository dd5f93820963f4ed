"""Isotropic Gaussians on the zero-centre-of-mass subspace: the pieces of a zero-CoM diffusion for particles.

The particle energies (``envs.targets.particles``) are translation invariant, so ``exp(-E)`` is a density
on ``V = {x in R^(n D): sum_i x_i = 0}`` (dimension ``(n - 1) D``), not on R^(n D). A diffusion sampler
of them runs entirely in V, as in EDM (Hoogeboom et al. 2022, "Equivariant diffusion for molecule
generation in 3D", section 3.2) and DEM for DW-4 / LJ: ``x_0`` and every Gaussian kernel (the
reference's ``p_0`` and ``p_B``, the policy's ``p_F``) are replaced by the same Gaussian projected onto V,

    N_V(mean, var) = law of mean + sqrt(var) P eps,   eps ~ N(0, I_(nD)),   P = I - (1/n) 1 1^T (x) I_D,

whose density with respect to Lebesgue measure on V is

    log N_V(x; mean, var) = -|x - mean|^2 / (2 var) - ((n - 1) D / 2) log(2 pi var)   for x - mean in V.

So a zero-CoM process changes only (i) the noise (``zero_com_randn``), (ii) the dimension counted in
every Gaussian log-density (``(n - 1) D``, not ``n D``), and (iii) drifts and means must lie in V (the
EGNN drift of ``agents.egnn`` does; a Langevin term ``grad log R`` does, the energies being translation
invariant). The log-weight ``log R + sum log p_B - sum log p_F`` is then a ratio of densities on V.
Only isotropic variances (a scalar, or one per row) keep this closed form: a per-particle variance (the
EGNN's optional log-variance head) projected onto V is a non-isotropic Gaussian of V.
"""

from __future__ import annotations

import math

import torch

from diffsampler.envs.targets.base import Target
from diffsampler.envs.targets.particles import DW4, LJ13, LJ55, ParticleTarget, remove_mean


def subspace_dim(n_particles: int, spatial_dim: int) -> int:
    """Dimension ``(n - 1) D`` of the zero-centre-of-mass subspace."""
    if n_particles < 2 or spatial_dim < 1:
        raise ValueError(f"need n_particles >= 2 and spatial_dim >= 1, got {n_particles!r} and {spatial_dim!r}")
    return (n_particles - 1) * spatial_dim


def zero_com_randn(shape, n_particles: int, spatial_dim: int, generator=None, dtype=None, device=None) -> torch.Tensor:
    """Standard Gaussian noise of V, ``P eps`` with ``eps ~ N(0, I)``; ``shape`` ends in ``n * D``."""
    shape = tuple(shape)
    if not shape or shape[-1] != n_particles * spatial_dim:
        raise ValueError(f"shape must end in n_particles * spatial_dim = {n_particles * spatial_dim}, got {shape}")
    eps = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return remove_mean(eps, n_particles, spatial_dim)


def zero_com_log_normal(
    x: torch.Tensor, mean: torch.Tensor | float, var: torch.Tensor | float, n_particles: int, spatial_dim: int
) -> torch.Tensor:
    """``log N_V(x; mean, var)`` over the last axis (module docstring): ``(..., n D) -> (...)``.

    ``var`` is a scalar or broadcastable to ``(...)``; ``x - mean`` is projected onto V first (a no-op
    when both lie in V, as they should).
    """
    k = subspace_dim(n_particles, spatial_dim)
    diff = remove_mean(x - mean, n_particles, spatial_dim)
    var = torch.as_tensor(var, dtype=x.dtype, device=x.device)
    return -0.5 * diff.square().sum(-1) / var - 0.5 * k * (math.log(2 * math.pi) + var.log())


# --- the zero-CoM process in coordinates of V -----------------------------------------------------------
#
# The MDP runs in orthonormal coordinates z of V (dimension (n - 1) D): x = Q z with Q = H^T (x) I_D and
# H the (n - 1, n) Helmert rows, orthonormal and orthogonal to 1. Q is an isometry onto V, so the
# reference's and the policy's isotropic Gaussians in z are exactly the projected Gaussians N_V above
# (noise Q eps' = P eps in law, densities in (n - 1) D dimensions), and every part of the engine, the
# objectives and the metrics works unchanged on z. Particle networks and metrics see x = Q z.


def helmert_basis(n_particles: int, dtype=torch.float64) -> torch.Tensor:
    """``H^T`` (n, n - 1): orthonormal columns spanning the vectors of R^n that sum to 0."""
    if n_particles < 2:
        raise ValueError(f"need n_particles >= 2, got {n_particles!r}")
    k = torch.arange(1, n_particles, dtype=dtype)
    h = torch.tril(torch.ones(n_particles - 1, n_particles, dtype=dtype), diagonal=0)
    h[torch.arange(n_particles - 1), torch.arange(1, n_particles)] = -k
    return (h / torch.sqrt(k * (k + 1)).unsqueeze(-1)).T


class ZeroCoMTarget(Target):
    """A particle target in orthonormal coordinates ``z`` of its zero-centre-of-mass subspace (see above).

    ``log_reward(z) = base.log_reward(Q z)``; ``to_particles(z)`` gives the centred configurations ``Q z``
    (..., n D) and ``from_particles(x)`` the coordinates ``Q^T x`` of a configuration's centred part.
    """

    default_network = "egnn"

    def __init__(self, base: ParticleTarget):
        self.base = base
        self.n_particles, self.spatial_dim = base.n_particles, base.spatial_dim
        self.dim = subspace_dim(self.n_particles, self.spatial_dim)
        self.t_scale, self.plot_bounds, self.log_Z = base.t_scale, base.plot_bounds, None
        self._basis = helmert_basis(self.n_particles)
        self._cast: dict = {}

    def basis_like(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in self._cast:
            self._cast[key] = self._basis.to(x.device, x.dtype)
        return self._cast[key]

    def to_particles(self, z: torch.Tensor) -> torch.Tensor:
        q = self.basis_like(z)
        x = torch.matmul(q, z.unflatten(-1, (self.n_particles - 1, self.spatial_dim)))
        return x.flatten(-2)

    def from_particles(self, x: torch.Tensor) -> torch.Tensor:
        q = self.basis_like(x)
        z = torch.matmul(q.T, x.unflatten(-1, (self.n_particles, self.spatial_dim)))
        return z.flatten(-2)

    def log_reward(self, z: torch.Tensor) -> torch.Tensor:
        return self.base.log_reward(self.to_particles(z))

    def __repr__(self) -> str:
        return f"ZeroCoMTarget({self.base!r})"


def _particle_target(cls, zero_com: bool = True, **kwargs) -> Target:
    base = cls(**kwargs)
    return ZeroCoMTarget(base) if zero_com else base


def dw4(zero_com: bool = True, **kwargs) -> Target:
    """DW-4 (``envs.targets.particles.DW4``), by default in coordinates of its zero-CoM subspace (d = 6)."""
    return _particle_target(DW4, zero_com, **kwargs)


def lj13(zero_com: bool = True, **kwargs) -> Target:
    """LJ-13 (``envs.targets.particles.LJ13``), by default in zero-CoM coordinates (d = 36)."""
    return _particle_target(LJ13, zero_com, **kwargs)


def lj55(zero_com: bool = True, **kwargs) -> Target:
    """LJ-55 (``envs.targets.particles.LJ55``), by default in zero-CoM coordinates (d = 162)."""
    return _particle_target(LJ55, zero_com, **kwargs)
