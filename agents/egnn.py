"""An E(n)-equivariant graph network (EGNN) drift for particle systems, with ``JointNet``'s call interface.

EGNN (Satorras, Hoogeboom & Welling 2021, "E(n) Equivariant Graph Neural Networks", eqs. 3-6): every
particle i has invariant features h_i and a position x_i; one layer computes

    m_ij = phi_e(h_i + h_j, |x_i - x_j|^2)                                    (one per unordered pair)
    x_i <- x_i + 1/(n - 1) sum_{j != i} (x_i - x_j) / (|x_i - x_j| + 1) * phi_x(m_ij)
    h_i <- h_i + phi_h(h_i, 1/(n - 1) sum_{j != i} m_ij)

The paper's phi_e(h_i, h_j, .) is taken symmetric (through h_i + h_j): each message is computed once per
unordered pair (half the edge cost, which dominates on a CPU) and the coordinate updates are pair forces
that cancel in the centre of mass. The relative vectors are divided by ``|x_i - x_j| + 1`` as in the
EGNN of Hoogeboom et al. 2022 (EDM), which DEM uses for DW-4 and LJ (bounded updates for far-apart or
coincident particles); sums are means over the n - 1 neighbours. The particles are identical, so h_i
starts as the context embedding (time, plus a condition embedding if any) for every particle.

Output: the drift ``x^L - x^0`` (the sum of the coordinate updates), its centre of mass removed (zero up
to rounding already). It is equivariant to every orthogonal map of space (rotations *and* reflections:
only distances and relative vectors enter) and to permutations of the particles, and invariant to
translations. With ``out_dim = 2 d`` the second half is a log-variance, one invariant value per particle
(a linear head on h_i^L) repeated over its D coordinates: rotation invariant, permutation equivariant.

Call interface as ``agents.networks.JointNet``: ``embed_time(t) -> (..., hidden)``, ``embed_condition``,
``forward(x, t_emb) -> (..., out_dim)`` with ``x`` ``(n, d)`` and ``t_emb`` ``(hidden,)`` or ``(n, hidden)``,
or ``x`` ``(B, T, d)`` and ``t_emb`` ``(T, hidden)`` or ``(B, T, hidden)``: all rows at once, batched.
``egnn_factory(n_particles, spatial_dim)`` returns a constructor with JointNet's positional signature.
Unlike JointNet the output is no affine map of per-row hidden features, so there is no ``hidden`` /
``last``: the policy's fused fixed-variance path (``affine_drift``) does not apply to it.

With a zero-centre-of-mass process (``envs.targets.zero_com``) the drift is already in the subspace; the
per-particle log-variance is not an isotropic variance there, so keep the variance fixed (or one per
row) on that process.

Cost: a few ``rows * n (n - 1) / 2 * hidden`` edge tensors per layer (0.18M pairs for 30,000 rows of
DW-4, 2.3M for LJ-13; LJ-55, with 1,485 pairs per row, needs chunks of a few thousand rows). Measured
forward + backward of 30,000 rows (batch 300 x T = 100) on one CPU thread: DW-4 0.87 s at hidden 32 and
2 layers (1.3 s with 3 layers, 2.6 s at hidden 64), LJ-13 11 s at hidden 32 (30 s at hidden 64);
``JointNet`` at hidden 64 takes 0.15 s. For DW-4 training on a CPU, hidden 32 and 2 layers.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from diffsampler.agents.networks import FourierTimeEmbedding, condition_mlp


class EGNNLayer(nn.Module):
    """One E(n)-equivariant message-passing layer over the unordered pairs (Satorras et al. 2021, eqs. 3-6).

    The message is symmetric, ``m_ij = m_ji = phi_e(h_i + h_j, r_ij^2)``, so it is computed once per
    unordered pair (half the edges of the ordered form) and the coordinate updates are antisymmetric
    pair forces: they leave the centre of mass where it is.
    """

    def __init__(self, hidden_dim: int, zero_init: bool):
        super().__init__()
        # phi_e's first linear acts on h_i + h_j (node level, then gathered to pairs) and on r^2.
        self.edge_in = nn.Linear(hidden_dim, hidden_dim)
        self.edge_r2 = nn.Parameter(torch.randn(hidden_dim) / hidden_dim**0.5)
        self.edge_out = nn.Linear(hidden_dim, hidden_dim)
        self.coord = nn.Linear(hidden_dim, 1)
        if zero_init:
            nn.init.zeros_(self.coord.weight)
            nn.init.zeros_(self.coord.bias)
        self.node = nn.Sequential(nn.Linear(2 * hidden_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim))
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, x: torch.Tensor, pairs: torch.Tensor, incidence: torch.Tensor):
        """``h`` (R, n, H), ``x`` (R, n, D); ``pairs`` (2, P) the pairs i < j; ``incidence`` (n, P) with
        +1 at (i, p), -1 at (j, p) of pair p = (i, j) -> new (h, x)."""
        i, j = pairs
        rel = x[:, i] - x[:, j]  # (R, P, D): x_i - x_j
        r2 = rel.square().sum(-1, keepdim=True)  # (R, P, 1)
        a = self.edge_in(h)  # (R, n, H)
        m = self.act(self.edge_out(self.act(a[:, i] + a[:, j] + r2 * self.edge_r2)))  # (R, P, H)
        scale = 1.0 / (incidence.shape[0] - 1)  # means over the n - 1 neighbours
        force = rel / (r2.clamp_min(1e-12).sqrt() + 1.0) * self.coord(m)  # (R, P, D), on i; minus it on j
        x = x + scale * torch.matmul(incidence, force)
        h = h + self.node(torch.cat([h, scale * torch.matmul(incidence.abs(), m)], -1))
        return h, x


class EGNN(nn.Module):
    """EGNN drift (and optional per-particle log-variance) of ``n_particles`` in ``spatial_dim`` dimensions.

    ``dim`` must equal ``n_particles * spatial_dim``; ``out_dim`` is ``dim`` (drift) or ``2 dim`` (drift and
    log-variance); ``joint_layers`` is the number of EGNN layers (at least 1); ``zero_init`` zeroes the
    coordinate and log-variance heads, so the output is exactly 0 at initialisation.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        hidden_dim: int = 64,
        harmonics: int = 64,
        joint_layers: int = 2,
        zero_init: bool = True,
        cond_dim: int | None = None,
        *,
        n_particles: int,
        spatial_dim: int,
    ):
        super().__init__()
        if n_particles < 2 or spatial_dim < 1 or dim != n_particles * spatial_dim:
            raise ValueError(
                f"EGNN needs dim = n_particles * spatial_dim with n_particles >= 2, got dim={dim!r}, "
                f"n_particles={n_particles!r}, spatial_dim={spatial_dim!r}"
            )
        if out_dim not in (dim, 2 * dim):
            raise ValueError(f"EGNN out_dim must be dim ({dim}) or 2 * dim ({2 * dim}), got {out_dim!r}")
        if joint_layers < 1:
            raise ValueError(f"EGNN needs joint_layers >= 1 message-passing layers, got {joint_layers!r}")
        self.dim, self.out_dim = dim, out_dim
        self.n_particles, self.spatial_dim = n_particles, spatial_dim
        self.time_embedding = FourierTimeEmbedding(harmonics, hidden_dim, hidden_dim)
        self.condition_embedding = condition_mlp(cond_dim, hidden_dim, hidden_dim) if cond_dim else None
        self.layers = nn.ModuleList(EGNNLayer(hidden_dim, zero_init) for _ in range(joint_layers))
        self.log_var = nn.Linear(hidden_dim, 1) if out_dim == 2 * dim else None
        if self.log_var is not None and zero_init:
            nn.init.zeros_(self.log_var.weight)
            nn.init.zeros_(self.log_var.bias)
        pairs = torch.triu_indices(n_particles, n_particles, 1)
        incidence = torch.zeros(n_particles, pairs.shape[1])
        incidence[pairs[0], torch.arange(pairs.shape[1])] = 1.0
        incidence[pairs[1], torch.arange(pairs.shape[1])] = -1.0
        self.register_buffer("pairs", pairs, persistent=False)
        self.register_buffer("incidence", incidence, persistent=False)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` ``(...,)`` -> ``(..., hidden)``."""
        return self.time_embedding(t)

    def embed_condition(self, condition: torch.Tensor) -> torch.Tensor:
        """``(B, hidden)`` condition embeddings, to add to ``embed_time`` outputs (conditional nets only)."""
        if self.condition_embedding is None:
            raise ValueError("this EGNN was built without cond_dim: it has no condition embedding")
        return self.condition_embedding(condition)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., d)`` and a context ``t_emb`` broadcastable to ``(..., hidden)`` -> ``(..., out_dim)``."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"EGNN expects x of shape (..., {self.dim}), got {tuple(x.shape)}")
        lead = x.shape[:-1]
        n, sd = self.n_particles, self.spatial_dim
        pos = x.reshape(-1, n, sd)
        ctx = t_emb.expand(*lead, t_emb.shape[-1]).reshape(-1, 1, t_emb.shape[-1])
        h = ctx.expand(-1, n, -1)
        y, incidence = pos, self.incidence.to(x.dtype)
        for layer in self.layers:
            h, y = layer(h, y, self.pairs, incidence)
        drift = y - pos
        drift = drift - drift.mean(-2, keepdim=True)  # exact zero centre of mass (pair forces cancel up to rounding)
        out = drift.reshape(*lead, self.dim)
        if self.log_var is None:
            return out
        log_var = self.log_var(h).expand(-1, n, sd).reshape(*lead, self.dim)
        return torch.cat([out, log_var], -1)


def egnn_factory(n_particles: int, spatial_dim: int):
    """A constructor with ``JointNet``'s signature ``(dim, out_dim, hidden_dim, harmonics, joint_layers,
    zero_init, cond_dim)`` building an ``EGNN`` for this particle system."""
    return functools.partial(EGNN, n_particles=n_particles, spatial_dim=spatial_dim)


class ReducedCoordinates(nn.Module):
    """A particle network on the coordinates ``z`` of a ``ZeroCoMTarget`` (its zero-centre-of-mass
    subspace): ``z -> from_particles(net(to_particles(z)))``, ``JointNet``'s call interface. The EGNN's drift
    lies in the subspace, so this is the same drift expressed in ``z``."""

    def __init__(self, net: EGNN, target):
        super().__init__()
        self.net, self.target = net, target

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        return self.net.embed_time(t)

    def embed_condition(self, condition: torch.Tensor) -> torch.Tensor:
        return self.net.embed_condition(condition)

    def forward(self, z: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        return self.target.from_particles(self.net(self.target.to_particles(z), t_emb))


def particle_network(target, hidden_dim: int, harmonics: int, layers: int, out_scale: int, cond_dim=None):
    """The EGNN drift of a particle target (``out_scale`` 1: drift only, 2: drift and log-variance), wrapped
    in ``ReducedCoordinates`` for a zero-centre-of-mass target. A clear error for other targets."""
    base = getattr(target, "base", target)
    if not hasattr(base, "n_particles"):
        raise ValueError(f"network 'egnn' needs a particle target (n_particles, spatial_dim), got {target!r}")
    n, sd = base.n_particles, base.spatial_dim
    if base is not target and out_scale != 1:
        raise ValueError(
            "a learned per-particle variance has no isotropic density on the zero-centre-of-mass subspace: "
            "use a fixed variance (learn_variance=false) or the full space (zero_com=false)"
        )
    net = EGNN(n * sd, out_scale * n * sd, hidden_dim, harmonics, layers, True, cond_dim, n_particles=n, spatial_dim=sd)
    return net if base is target else ReducedCoordinates(net, target)
