"""Particle systems: DW-4 (4 particles in 2-D, pairwise double wells) and LJ-13 / LJ-55 (Lennard-Jones clusters).

A configuration is ``x`` of shape ``(B, n * D)``: ``n`` particles in ``D`` dimensions, particle ``i`` at
``x[:, i*D:(i+1)*D]``. Both energies depend on pair distances ``r_ij`` and on positions relative to the
centre of mass only, so they are invariant to rotations, reflections, translations and permutations of
the particles. Being translation invariant, ``exp(-E)`` is *not* normalisable on R^(nD): these densities
live on the zero-centre-of-mass subspace ``{sum_i x_i = 0}`` (dimension ``(n - 1) D``), as in every peer
code; samplers must use a zero-centre-of-mass reference process there. No exact log Z, no exact sampler
(reference samples by long MCMC: ``agents.particle_reference``).

Definitions (peers disagree; facts checked against their code and against the MCMC data of Klein et al.
2023 that DEM ships, through the Stein identity ``E[(x - x_com) . grad E] = (n - 1) D``, which holds
exactly for samples of ``exp(-E)`` on the zero-centre-of-mass subspace and fails for a wrong factor):

* DW-4 (Köhler, Klein & Noé 2020, "Equivariant flows", eq. for E^DW; bgflow ``MultiDoubleWellPotential``,
  used by DEM with quartic 0.9, quadratic -4, offset 4)::

      E(x) = (1/tau) sum_{i<j} [a (r_ij - d0) + b (r_ij - d0)^2 + c (r_ij - d0)^4],  a=0, b=-4, c=0.9, d0=4, tau=1.

  The paper writes ``1/(2 tau) sum_{i,j}`` over ordered pairs, which is this sum over unordered pairs
  (bgflow sums ``i < j`` with no 1/2). Halving it (``1/(2 tau) sum_{i<j}``) contradicts the data: on
  DEM's ``test_split_DW4.npy`` (10,000 configurations) the Stein statistic is 5.3 +- 0.4 (target 6) for
  this energy and 2.7 for the halved one. Wells of a pair at ``r = d0 +- sqrt(-b / 2c) = 4 +- 1.49``.

* LJ-n (Köhler et al. 2020; Klein, Krämer & Noé 2023, "Equivariant flow matching"; DEM / iDEM,
  Akhound-Sadegh et al. 2024) with eps = 1, r_m = 1, tau = 1 and a harmonic term that holds every
  particle near the centre of mass (it does not fix the centre of mass; the energy stays translation
  invariant)::

      E(x) = (1/tau) [ eps sum_{i != j} ((r_m / r_ij)^12 - 2 (r_m / r_ij)^6) + (c/2) sum_i |x_i - x_com|^2 ],  c = 1.

  The LJ sum runs over *ordered* pairs, i.e. twice the usual cluster energy (``pair_factor=2``): this is
  DEM's code (``energy_factor=1`` on bgflow's ordered-pair distances). Its paper's appendix writes
  ``eps/(2 tau) sum_{i,j}`` and ``c = 0.5``, exactly half of this energy (the same law at tau = 1/2);
  in DEM issue #2 the authors call that a typo and say the code's form is the one that matches the
  Klein et al. data. Checked here: on DEM's ``test_split_LJ13-1000.npy`` the Stein statistic is
  36.0 +- 0.6 for this energy (target 36), 27.0 +- 0.3 for bgflow's ``sum_{i<j}`` with c = 1
  (``pair_factor=1``) and 18.0 for the half energy; the data's mean energy is -43.1.

Overlapping particles: LJ diverges as ``r -> 0`` (and ``inf - inf`` = NaN at ``r = 0``). For
``r < r_soft = soft_core * r_m`` (default 0.7) the pair term is continued linearly with the slope it has at
``r_soft`` (value and first derivative continuous, a strong finite repulsion down to ``r = 0``). The
density is unchanged wherever it matters: at ``r_soft`` one pair already costs ``pair_factor * 55.3 eps``,
a Boltzmann factor below e^-110 at tau = 1 (Klein et al.'s LJ-13 data have no pair closer than 0.83).
Peers instead clip the energy inside the learning objective (DEM), or soften every distance
(``r^6 + alpha``). Distances use ``sqrt(max(r^2, 1e-12))`` so the gradient at coincident particles is 0,
never NaN; configurations whose centred coordinates exceed ``1e6`` in absolute value (or are not
finite) get ``log_reward = -inf`` with zero gradient (their Boltzmann factor underflows anyway).
"""

from __future__ import annotations

import torch

from diffsampler.envs.targets.base import Target, check_dim

BOUND = 1e6  # |centred coordinate| beyond which a configuration gets log R = -inf (exp(-E) underflows long before)


def remove_mean(x: torch.Tensor, n_particles: int, spatial_dim: int) -> torch.Tensor:
    """``x`` ``(..., n * D)`` with the centre of mass subtracted from every particle."""
    p = x.unflatten(-1, (n_particles, spatial_dim))
    return (p - p.mean(-2, keepdim=True)).flatten(-2)


def pair_distances(x: torch.Tensor, n_particles: int, spatial_dim: int) -> torch.Tensor:
    """Distances of the ``n (n - 1) / 2`` unordered pairs ``i < j``: ``(..., n * D) -> (..., n (n-1)/2)``.

    ``sqrt(max(r^2, 1e-12))``: finite, with zero gradient, for coincident particles.
    """
    p = x.unflatten(-1, (n_particles, spatial_dim))
    i, j = torch.triu_indices(n_particles, n_particles, 1, device=x.device)
    return (p[..., i, :] - p[..., j, :]).square().sum(-1).clamp_min(1e-12).sqrt()


class ParticleTarget(Target):
    """A system of ``n_particles`` in ``spatial_dim`` dimensions with an invariant energy ``E``.

    Subclasses implement ``energy(x_centred)``; ``log_reward = -E / tau`` with the guard for absurd inputs.
    """

    n_particles: int
    spatial_dim: int
    default_network = "egnn"  # the policy's drift network unless configured otherwise
    tau: float = 1.0

    def __init__(self, t_scale: float, tau: float):
        self.dim = check_dim(self.n_particles * self.spatial_dim)
        if not t_scale > 0:
            raise ValueError(f"t_scale must be > 0, got {t_scale!r}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau!r}")
        self.t_scale, self.tau = float(t_scale), float(tau)

    def energy(self, x: torch.Tensor) -> torch.Tensor:  # (B, d) centred -> (B,), without the 1/tau
        raise NotImplementedError

    def remove_mean(self, x: torch.Tensor) -> torch.Tensor:
        return remove_mean(x, self.n_particles, self.spatial_dim)

    def pair_distances(self, x: torch.Tensor) -> torch.Tensor:
        return pair_distances(x, self.n_particles, self.spatial_dim)

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"{type(self).__name__} expects (..., {self.dim}) inputs, got shape {tuple(x.shape)}")
        xc = self.remove_mean(x)
        ok = (xc.abs() <= BOUND).all(-1)  # False for non-finite rows too
        xc = torch.where(ok.unsqueeze(-1), xc, torch.zeros_like(xc))
        log_r = -self.energy(xc) / self.tau
        return torch.where(ok, log_r, torch.full_like(log_r, -torch.inf))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_particles={self.n_particles}, spatial_dim={self.spatial_dim})"


class DW4(ParticleTarget):
    """DW-4: 4 particles in 2-D (d = 8) with pairwise double wells (Köhler et al. 2020).

    ``t_scale`` 3: the per-coordinate variance of centred DW-4 configurations is about 3.3 (Klein et al.'s
    data; our reference samples agree), so the reference's terminal law N(0, 3 I) has the target's scale.
    """

    n_particles, spatial_dim = 4, 2
    reference_name = "dw4"  # the registry name: agents.particle_reference's protocol

    def __init__(self, a=0.0, b=-4.0, c=0.9, d0=4.0, tau=1.0, t_scale=3.0):
        super().__init__(t_scale, tau)
        if not c > 0:
            raise ValueError(f"the quartic coefficient c must be > 0 (a confining well), got {c!r}")
        self.a, self.b, self.c, self.d0 = float(a), float(b), float(c), float(d0)
        self.plot_bounds = (-5.0, 5.0)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        u = self.pair_distances(x) - self.d0
        # Horner form a u + u^2 (b + c u^2): no inf - inf at huge u.
        return (u * (self.a + u * (self.b + self.c * u.square()))).sum(-1)


class LennardJonesCluster(ParticleTarget):
    """Lennard-Jones cluster in 3-D with a harmonic term toward the centre of mass (module docstring).

    Subclasses fix ``n_particles`` (``LJ13``, ``LJ55``); ``t_scale`` defaults to the class's value.
    """

    spatial_dim = 3
    default_t_scale = 1.0

    def __init__(
        self,
        epsilon: float = 1.0,
        r_m: float = 1.0,
        oscillator_scale: float = 1.0,
        pair_factor: float = 2.0,
        soft_core: float = 0.7,
        tau: float = 1.0,
        t_scale: float | None = None,
    ):
        if not isinstance(getattr(self, "n_particles", None), int):
            raise TypeError("LennardJonesCluster is abstract: use LJ13, LJ55 or a subclass that sets n_particles")
        for name, value in (("epsilon", epsilon), ("r_m", r_m), ("pair_factor", pair_factor)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not oscillator_scale >= 0:
            raise ValueError(f"oscillator_scale must be >= 0, got {oscillator_scale!r}")
        if not 0 < soft_core < 1:
            raise ValueError(f"soft_core must be in (0, 1) (a fraction of r_m), got {soft_core!r}")
        super().__init__(self.default_t_scale if t_scale is None else t_scale, tau)
        self.epsilon, self.r_m, self.oscillator_scale = float(epsilon), float(r_m), float(oscillator_scale)
        self.pair_factor, self.soft_core = float(pair_factor), float(soft_core)
        self.plot_bounds = (-3.0, 3.0)

    def pair_energy(self, r: torch.Tensor) -> torch.Tensor:
        """``eps ((r_m/r)^12 - 2 (r_m/r)^6)`` for ``r >= r_soft``, its tangent line below."""
        s = self.soft_core
        inv6_soft = s**-6
        value_soft = inv6_soft * (inv6_soft - 2.0)  # at r / r_m = s
        slope_soft = 12.0 * inv6_soft * (1.0 - inv6_soft) / s  # d/d(r/r_m), negative: repulsion
        rho = r / self.r_m
        inv6 = rho.clamp_min(s).pow(-6)
        exact = inv6 * (inv6 - 2.0)
        linear = value_soft + slope_soft * (rho - s)
        return self.epsilon * torch.where(rho < s, linear, exact)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        lj = self.pair_factor * self.pair_energy(self.pair_distances(x)).sum(-1)
        return lj + 0.5 * self.oscillator_scale * x.square().sum(-1)  # x is centred


class LJ13(LennardJonesCluster):
    """LJ-13: 13 particles in 3-D (d = 39), Klein et al. 2023 / DEM convention.

    ``t_scale`` 0.5: the per-coordinate variance of centred configurations is 0.46 (Klein et al.'s data;
    our reference samples agree), so the reference's terminal law N(0, 0.5 I) has the cluster's radius.
    """

    n_particles = 13
    reference_name = "lj13"
    default_t_scale = 0.5


class LJ55(LennardJonesCluster):
    """LJ-55: 55 particles in 3-D (d = 165), Klein et al. 2023 / DEM convention.

    ``t_scale`` 1.0: about the per-coordinate variance of centred configurations of our reference samples.
    """

    n_particles = 55
    reference_name = "lj55"
    default_t_scale = 1.0
