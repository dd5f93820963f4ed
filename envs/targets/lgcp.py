"""Log-Gaussian Cox process on a grid: the Finnish pines (d = 1600) and a synthetic point pattern.

The model (Møller, Syversveen & Waagepetersen 1998, discretised as in Heng et al. 2017 and as in the
paper's public code; ``paper_results.md``), on an ``n x n`` grid of the unit square (n = 40):

- Binning: a point (data_x, data_y) falls in cell (r, c) = (floor(n data_x), floor(n data_y)); a
  coordinate exactly 1 goes to the last cell (index n - 1). The latent vector is row-major: cell
  (r, c) is coordinate ``i = r n + c`` and has grid coordinates ``g_i = (r, c)``. (The kernel is
  isotropic, so swapping the roles of x and y would give the same density up to a relabelling.)
- Prior: the log-intensity ``x ~ N(mu 1, K)``, ``K_ij = s2 exp(-||g_i - g_j|| / (n beta))`` with
  ``s2 = 1.91``, ``beta = 1/33`` (Møller et al.'s estimates); ``||g_i - g_j|| / n`` is the distance of
  the cell centres in the unit square, so the kernel is the same function of distance on any grid.
  ``mu = ln N - s2 / 2`` with N the number of points (126 pines), so that E[exp(x_i)] = N.
- Likelihood: counts ``n_i ~ Poisson(a exp(x_i))``, ``a = 1 / n^2`` the cell area, written (as in
  the paper's code) without the constants ``n_i ln a - ln n_i!``.

``log R(x) = log N(x; mu 1, K) + sum_i (x_i n_i - a exp(x_i))``, the Gaussian normaliser
``-d/2 ln(2 pi) - 1/2 ln det K`` included; log Z is unknown (a long SMC run gives about 501.8 for the
pines). ``t_scale`` is 5, the paper's value. The precision matrix ``K^-1`` (from the Cholesky factor,
in float64, cached per grid) and ``ln det K`` are computed once; ``log_reward`` is one batched matrix
product ``(x - mu) K^-1``, which also gives its gradient (``PriorQuadratic``): one GEMM per
value-and-gradient evaluation, where a triangular solve and its backward solve cost two slower ones.
"""

from __future__ import annotations

import csv
import functools
import math
import os
from pathlib import Path

import torch

from diffsampler.envs.process import LOG_2PI
from diffsampler.envs.targets.base import Target, bounded_rows, check_dim

SIGNAL_VARIANCE = 1.91
BETA = 1.0 / 33.0
N_PINES = 126
DATA_ENV = "DIFFSAMPLER_DATA"
PINES_FILE = Path("pines") / "df_pines.csv"
# |x_i - mu| beyond this is no log-intensity at all (the prior density there is below exp(-1e15)):
# such rows get -inf rather than risking inf - inf inside the quadratic form.
_BOUND = 1e8


def prior_factor(grid_size: int, signal_variance: float = SIGNAL_VARIANCE, beta: float = BETA):
    """(L, ln det K) in float64: the lower Cholesky factor of the prior covariance of a ``grid_size``^2 grid.

    Cached (the factor of the 1600-d pines model takes ~0.1 s); the returned tensor is shared, never
    modify it.
    """
    return _prior_factor(int(grid_size), float(signal_variance), float(beta))


@functools.lru_cache(maxsize=4)
def _prior_factor(grid_size: int, signal_variance: float, beta: float):
    idx = torch.arange(grid_size, dtype=torch.float64)
    cells = torch.cartesian_prod(idx, idx)  # row-major: cell (r, c) at row r * n + c
    cov = signal_variance * torch.exp(-torch.cdist(cells, cells) / (grid_size * beta))
    chol = torch.linalg.cholesky(cov)
    return chol, 2.0 * float(chol.diagonal().log().sum())


@functools.lru_cache(maxsize=4)
def _precision(grid_size: int, signal_variance: float, beta: float) -> torch.Tensor:
    """``K^-1`` in float64 (symmetrised), from the cached Cholesky factor."""
    p = torch.cholesky_inverse(_prior_factor(grid_size, signal_variance, beta)[0])
    return 0.5 * (p + p.T)


class PriorQuadratic(torch.autograd.Function):
    """``-1/2 (x - mu)^T P (x - mu)`` per row of ``xc = x - mu`` (B, d), P symmetric (d, d): forward one
    GEMM ``v = xc P``; backward reuses it (the gradient is ``-v``), no second product."""

    @staticmethod
    def forward(ctx, xc: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
        v = xc @ precision
        ctx.save_for_backward(v)
        return -0.5 * (xc * v).sum(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (v,) = ctx.saved_tensors
        return -v * grad.unsqueeze(-1), None


def bin_counts(points: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Counts of ``points`` (N, 2) in [0, 1]^2 on the grid, flattened row-major: (grid_size^2,) float64."""
    if points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {tuple(points.shape)}")
    if not bool(((points >= 0) & (points <= 1)).all()):
        raise ValueError("points must lie in the unit square [0, 1]^2")
    cell = (points * grid_size).floor().long().clamp_max(grid_size - 1)
    flat = cell[:, 0] * grid_size + cell[:, 1]
    return torch.bincount(flat, minlength=grid_size**2).to(torch.float64)


class LogGaussianCoxProcess(Target):
    """Posterior of the latent log-intensity of an LGCP given grid ``counts`` (see the module docstring).

    Args:
        counts: (n, n) or (n^2,) non-negative counts, row-major as produced by ``bin_counts``.
        mean: the prior's constant mean mu.
        signal_variance, beta: kernel ``signal_variance * exp(-dist / (n beta))`` over grid indices.
        t_scale: reference variance sigma^2 (default 5, the paper's).
    """

    def __init__(self, counts, mean: float, signal_variance=SIGNAL_VARIANCE, beta=BETA, t_scale: float = 5.0):
        counts = torch.as_tensor(counts, dtype=torch.float64).flatten()
        n = math.isqrt(counts.numel())
        check_dim(n, name="grid size")
        if n * n != counts.numel():
            raise ValueError(f"counts must fill a square grid, got {counts.numel()} cells")
        if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
            raise ValueError("counts must be finite and non-negative")
        if not math.isfinite(mean):
            raise ValueError(f"mean must be finite, got {mean!r}")
        self.grid_size, self.dim = n, n * n
        self.counts, self.mean, self.area = counts, float(mean), 1.0 / (n * n)
        self._chol, logdet = prior_factor(n, signal_variance, beta)
        self._precision = _precision(n, float(signal_variance), float(beta))
        self.log_norm = -0.5 * self.dim * LOG_2PI - 0.5 * logdet
        self.t_scale = t_scale
        spread = 4.0 * math.sqrt(signal_variance)
        self.plot_bounds = (self.mean - spread, self.mean + spread)
        self._cast = {}  # (device, dtype) -> (precision matrix, counts) in that dtype

    def _factors(self, x: torch.Tensor):
        key = (x.device, x.dtype)
        if key not in self._cast:
            self._cast[key] = (self._precision.to(x.device, x.dtype), self.counts.to(x.device, x.dtype))
        return self._cast[key]

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"LGCP on a {self.grid_size}^2 grid takes (..., {self.dim}) inputs, got {tuple(x.shape)}")
        precision, counts = self._factors(x)
        lead = x.shape[:-1]
        x, ok = bounded_rows(x.reshape(-1, self.dim), self.mean, _BOUND)
        prior = self.log_norm + PriorQuadratic.apply(x - self.mean, precision)
        likelihood = x @ counts - self.area * torch.exp(x).sum(-1)
        out = torch.where(ok, prior + likelihood, torch.full_like(prior, -math.inf))
        return out.reshape(lead)

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws from the GP prior (not the target): (n, d) float32."""
        noise = torch.randn(self.dim, n, generator=generator, dtype=torch.float64)
        return (self.mean + self._chol @ noise).T.to(torch.float32)


def pines_file(data_path: str | os.PathLike | None = None) -> Path:
    """The pines CSV: ``data_path`` (the file, or a data directory holding ``pines/df_pines.csv``), else
    the directory in ``$DIFFSAMPLER_DATA``; a clear FileNotFoundError when neither gives a file."""
    source = data_path if data_path is not None else os.environ.get(DATA_ENV)
    where = "no data_path given and $DIFFSAMPLER_DATA is not set"
    if source is not None:
        path = Path(source).expanduser()
        path = path / PINES_FILE if path.is_dir() else path
        if path.is_file():
            return path
        where = f"looked for {path} ({'data_path' if data_path is not None else '$' + DATA_ENV} = {str(source)!r})"
    raise FileNotFoundError(
        f"LGCP needs the Finnish pines point pattern: {where}. The data are spatstat's `finpines` (126 trees) "
        f"rescaled to the unit square, as distributed with the paper's public code (GFNOrg/gfn-diffusion, "
        f'energy_sampling/energies/data/df_pines.csv; header "","data_x","data_y"). Pass data_path=<that '
        f"file or a data directory holding {PINES_FILE.as_posix()}> (CLI: --data-path DIR) "
        f"or set {DATA_ENV}=<data directory>."
    )


def read_points(path: Path) -> torch.Tensor:
    """The (N, 2) points of a CSV with columns ``data_x`` and ``data_y``."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        points = torch.tensor([[float(r["data_x"]), float(r["data_y"])] for r in rows], dtype=torch.float64)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: expected numeric columns data_x and data_y ({err})") from None
    if points.numel() == 0:
        raise ValueError(f"{path}: no points")
    return points


def lgcp_pines(data_path: str | os.PathLike | None = None, grid_size: int = 40, t_scale: float = 5.0):
    """The paper's LGCP: the Finnish pines on a 40 x 40 grid (d = 1600); ``grid_size`` coarsens it."""
    points = read_points(pines_file(data_path))
    counts = bin_counts(points, check_dim(grid_size, name="grid_size"))
    return LogGaussianCoxProcess(counts, math.log(len(points)) - SIGNAL_VARIANCE / 2, t_scale=t_scale)


def lgcp_synthetic(grid_size: int = 40, seed: int = 0, t_scale: float = 5.0):
    """The same model on counts simulated from it with a fixed seed: x from the prior (mean as for 126
    points), then ``n_i ~ Poisson(exp(x_i) / n^2)``. Needs no data file."""
    n = check_dim(grid_size, name="grid_size")
    mean = math.log(N_PINES) - SIGNAL_VARIANCE / 2
    gen = torch.Generator().manual_seed(seed)
    chol, _ = prior_factor(n)
    latent = mean + chol @ torch.randn(n * n, generator=gen, dtype=torch.float64)
    counts = torch.poisson(torch.exp(latent) / (n * n), generator=gen)
    return LogGaussianCoxProcess(counts, mean, t_scale=t_scale)
