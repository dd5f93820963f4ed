"""Evaluation metrics of diffusion samplers: log Z bounds, effective sample size, W2, mode statistics.

Log-weight functions are pure batched torch functions that reduce over the last dimension (the
trajectories), so a leading batch of independent problems (e.g. one per conditioning image) works
unchanged. Sample-based metrics take (n, d) tensors. ``summarize`` turns everything into a flat dict
of Python numbers for logging and result tables.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from diffsampler.envs import engine
from diffsampler.envs.targets import GaussianMixture, Manywell, StudentTMixture

# Keys present in every ``summarize`` result (target-specific keys are added for the mixtures and Manywell).
METRIC_KEYS = (
    "log_z",
    "log_z_rw",
    "delta_log_z",
    "delta_log_z_rw",
    "w2",
    "eubo",
    "ess",
    "sinkhorn",
    "mmd",
    "forward_ess",
    "reverse_ess",
)


def _check_log_w(log_w: torch.Tensor, name: str = "log_w") -> torch.Tensor:
    """Reject NaN and +inf log-weights (-inf is a legitimate zero weight) and empty batches."""
    if log_w.dim() == 0 or log_w.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one trajectory along its last dim, got {tuple(log_w.shape)}")
    if torch.isnan(log_w).any():
        raise ValueError(f"{name} contains NaN ({int(torch.isnan(log_w).sum())} of {log_w.numel()} entries)")
    if torch.isposinf(log_w).any():
        raise ValueError(f"{name} contains +inf, which is not a valid log-weight")
    return log_w


def _finite_max(log_w: torch.Tensor) -> torch.Tensor:
    """Detached max over the last dim, with 0 in place of -inf (all weights zero) so shifts stay finite."""
    m = log_w.detach().amax(-1, keepdim=True)
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def log_weights(log_r: torch.Tensor, log_pf: torch.Tensor, log_pb: torch.Tensor) -> torch.Tensor:
    """Trajectory log-weights ``log w = log R(x_T) + sum_k log p_B - sum_k log p_F``.

    Args: ``log_r`` (..., B); ``log_pf`` and ``log_pb`` (..., B, T) per-step log-probabilities.
    Returns (..., B).
    """
    if log_pf.shape != log_pb.shape or log_pf.shape[:-1] != log_r.shape:
        raise ValueError(
            f"shape mismatch: log_r {tuple(log_r.shape)}, log_pf {tuple(log_pf.shape)}, "
            f"log_pb {tuple(log_pb.shape)}; expected (B,), (B, T), (B, T)"
        )
    return engine.log_weight(log_r, log_pf, log_pb)


def elbo(log_w: torch.Tensor) -> torch.Tensor:
    """ELBO estimate of log Z: the mean log-weight of forward trajectories (a lower bound in expectation)."""
    return _check_log_w(log_w).mean(-1)


def iw_log_z(log_w: torch.Tensor) -> torch.Tensor:
    """Importance-weighted estimate log mean_i exp(log w_i) (log-mean-exp; consistent, biased low).

    Computed as ``m + log mean exp(log w - m)`` with m the max, so constant log-weights c give c exactly;
    all ``-inf`` gives ``-inf``.
    """
    log_w = _check_log_w(log_w)
    m = _finite_max(log_w)
    return (m + torch.log(torch.exp(log_w - m).mean(-1, keepdim=True))).squeeze(-1)


def eubo(log_w_backward: torch.Tensor) -> torch.Tensor:
    """EUBO: mean log-weight of backward trajectories started at exact target samples.

    An upper bound of log Z in expectation (log Z + KL(target path || model path)).
    """
    return _check_log_w(log_w_backward, "log_w_backward").mean(-1)


def ess(log_w: torch.Tensor) -> torch.Tensor:
    """Normalised effective sample size ``(sum w)^2 / (B sum w^2)``, in [1/B, 1].

    Weights are shifted by their max before exponentiating (so they lie in [0, 1] with at least one 1:
    no overflow, no underflow of the sums). ``-inf`` log-weights are zero weights; if every weight is
    zero the ESS is 0. NaN or +inf raise ValueError.
    """
    log_w = _check_log_w(log_w)
    w = torch.exp(log_w - _finite_max(log_w))
    s1, s2 = w.sum(-1), w.square().sum(-1)
    out = s1.square() / (w.shape[-1] * s2)
    return torch.where(s2 > 0, out, torch.zeros_like(out))


def wasserstein2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact 2-Wasserstein distance between the empirical measures of ``x`` (n, d) and ``y`` (m, d).

    Uniform weights, squared Euclidean cost, exact OT by POT's network simplex in float64; returns the
    square root of the optimal cost. 2000 x 2000 points take about a second.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (n, d) and (m, d) with the same d, got {tuple(x.shape)}, {tuple(y.shape)}")
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError("wasserstein2 needs at least one point in each sample")
    xn = x.detach().cpu().to(torch.float64).numpy()
    yn = y.detach().cpu().to(torch.float64).numpy()
    if not (np.isfinite(xn).all() and np.isfinite(yn).all()):
        raise ValueError("wasserstein2 got non-finite sample coordinates")
    import ot  # POT (and through it scikit-learn) only where W2 is computed: seconds to import

    n, m = len(xn), len(yn)
    cost = ot.dist(xn, yn)  # squared Euclidean by default
    # POT's default numItermax (1e5) stops early already at a few hundred points; n*m*10 is ample.
    val, log = ot.emd2(np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost, numItermax=max(10 * n * m, 10**6), log=True)
    if log.get("warning"):
        raise RuntimeError(f"exact OT did not converge: {log['warning']}")
    return math.sqrt(max(float(val), 0.0))


def mode_coverage(
    samples: torch.Tensor, means: torch.Tensor, radius: float | None = None, std: float | None = None
) -> tuple[int, torch.Tensor]:
    """Mode coverage of samples of a mixture with component centres ``means`` (K, d).

    Each sample is assigned to its nearest mean; a mode is covered when at least one sample assigned to it
    lies within ``radius`` of it. Default radius, when the isotropic component ``std`` is given: the radius
    holding the same share of a component's mass (98.9 %) as ``3 * std`` in 2-D, ``std * sqrt(q_d)`` with
    ``q_d`` that quantile of chi-square(d) (``3 std`` at d = 2, ``8.6 std`` at d = 50, where a component's
    samples lie about ``sqrt(d) std`` from its mean); otherwise half the minimum distance between means.

    Returns (number of covered modes, (K,) fraction of all samples assigned to each mode).
    """
    if samples.dim() != 2 or means.dim() != 2 or samples.shape[1] != means.shape[1]:
        raise ValueError(
            f"samples (n, d) and means (K, d) must share d, got {tuple(samples.shape)}, {tuple(means.shape)}"
        )
    means = means.to(samples)
    k = means.shape[0]
    if radius is None:
        if std is not None:
            from scipy.special import chdtri

            radius = std * math.sqrt(chdtri(means.shape[1], math.exp(-4.5)))
        elif k > 1:
            d_mm = torch.cdist(means, means) + torch.diag(
                torch.full((k,), float("inf"), dtype=means.dtype, device=means.device)
            )
            radius = 0.5 * float(d_mm.min())
        else:
            raise ValueError("a single mean needs an explicit radius or std")
    dist = torch.cdist(samples, means)  # (n, K)
    nearest_d, nearest = dist.min(-1)
    counts = torch.bincount(nearest, minlength=k)
    hit = torch.bincount(nearest, weights=(nearest_d <= radius).to(samples.dtype), minlength=k)
    fractions = counts.to(samples.dtype) / max(samples.shape[0], 1)
    return int((hit > 0).sum()), fractions


def _well_signs(samples: torch.Tensor) -> torch.Tensor:
    if samples.dim() != 2 or samples.shape[1] % 2:
        raise ValueError(f"Manywell samples must be (n, even d), got {tuple(samples.shape)}")
    return samples[:, 0::2] > 0


def manywell_mode_mass(samples: torch.Tensor) -> torch.Tensor:
    """Per-well fraction of samples whose first coordinate x[2i] is positive: (d/2,)."""
    return _well_signs(samples).to(torch.float64).mean(0)


def manywell_mode_error(samples: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over wells of |mode mass of ``samples`` - mode mass of ``reference``| (exact samples)."""
    a, b = manywell_mode_mass(samples), manywell_mode_mass(reference)
    if a.shape != b.shape:
        raise ValueError(f"samples and reference have different dims: {tuple(samples.shape)}, {tuple(reference.shape)}")
    return float((a - b).abs().mean())


def manywell_modes_covered(samples: torch.Tensor) -> int:
    """Number of distinct sign patterns of the wells' first coordinates present (out of 2^(d/2))."""
    signs = _well_signs(samples)
    return int(torch.unique(signs, dim=0).shape[0]) if signs.shape[0] else 0


def summarize(
    log_w: torch.Tensor,
    log_z_true: float | None,
    x: torch.Tensor | None = None,
    exact: torch.Tensor | None = None,
    log_w_backward: torch.Tensor | None = None,
    target=None,
) -> dict[str, float | int | None]:
    """Flat dict of Python numbers (None where not applicable) for one evaluation batch.

    Keys: ``METRIC_KEYS`` always; plus ``modes_covered`` for a ``GaussianMixture`` target (the std-based
    radius of ``mode_coverage``: 3 std in 2-D) and ``manywell_mode_error`` for a ``Manywell`` target
    (needs ``x`` and ``exact``); plus ``emc`` (``sample_metrics.emc``, needs ``x``) for a ``GaussianMixture``,
    ``StudentTMixture`` or ``Manywell`` target.
    ``log_w`` must be a single batch (B,) of forward log-weights; ``x`` the corresponding samples.
    The benchmark-suite keys (Blessing et al. 2024): ``sinkhorn`` and ``mmd`` (``sample_metrics``, model ``x``
    against ``exact``, defaults there), ``forward_ess`` (``weight_metrics.forward_ess`` of ``log_w_backward``, with
    ``log_z_true`` when known) and ``reverse_ess`` (of ``log_w``, equal to ``ess``). For a particle target,
    ``energy_w2``, ``distance_w2`` and ``equivariant_w2`` against its reference samples
    (``particle_metrics.evaluate_particles``).
    """
    # Imported here: weight_metrics builds on this module.
    from diffsampler.agents import sample_metrics, weight_metrics

    if log_w.dim() != 1:
        raise ValueError(f"summarize expects log_w of shape (B,), got {tuple(log_w.shape)}")
    log_z, log_z_rw = float(elbo(log_w)), float(iw_log_z(log_w))
    both = x is not None and exact is not None
    fwd_ess = None if log_w_backward is None else weight_metrics.forward_ess(log_w_backward, log_z_true)
    out: dict[str, float | int | None] = {
        "log_z": log_z,
        "log_z_rw": log_z_rw,
        "delta_log_z": None if log_z_true is None else abs(log_z_true - log_z),
        "delta_log_z_rw": None if log_z_true is None else abs(log_z_true - log_z_rw),
        "w2": wasserstein2(x, exact) if both else None,
        "eubo": None if log_w_backward is None else float(eubo(log_w_backward)),
        "ess": float(ess(log_w)),
        "sinkhorn": sample_metrics.sinkhorn(x, exact) if both else None,
        "mmd": sample_metrics.mmd(x, exact) if both and min(x.shape[0], exact.shape[0]) >= 2 else None,
        "forward_ess": None if fwd_ess is None else float(fwd_ess),
        "reverse_ess": float(weight_metrics.reverse_ess(log_w)),
    }
    if isinstance(target, GaussianMixture):
        out["modes_covered"] = None if x is None else mode_coverage(x, target.means, std=math.sqrt(target.var))[0]
    elif isinstance(target, Manywell):
        out["manywell_mode_error"] = manywell_mode_error(x, exact) if both else None
    if isinstance(target, (GaussianMixture, StudentTMixture, Manywell)):
        out["emc"] = None if x is None else sample_metrics.emc(x, target)
    if hasattr(getattr(target, "base", target), "n_particles") and x is not None:
        from diffsampler.agents.particle_metrics import evaluate_particles

        out |= evaluate_particles(x, target)
    return out
