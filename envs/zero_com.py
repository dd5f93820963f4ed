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

from diffsampler.envs.targets.particles import remove_mean


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
