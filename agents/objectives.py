"""Training objectives as pure batched functions returning a per-trajectory ``(B,)`` loss.

Inputs are tensors: ``log_pf``/``log_pb`` ``(B, T)``, ``log_r`` ``(B,)``, a scalar ``log_z`` or flows
``log_f`` ``(B, T + 1)`` whose last column is the terminal log-reward. The caller reduces the loss.
Forward-looking (FL) variants are the same losses on forward-looking flows; the flows themselves are
formed by the agent. Squared residuals carry no factor 1/2 (Adam does not care).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from diffsampler.envs.engine import log_weight


def trajectory_balance(log_pf, log_pb, log_r, log_z) -> torch.Tensor:
    """``(log Z + sum log p_F - sum log p_B - log R)^2``."""
    return (log_z + log_pf.sum(-1) - log_pb.sum(-1) - log_r).square()


def vargrad(log_pf, log_pb, log_r, group: torch.Tensor | None = None, valid: torch.Tensor | None = None):
    """Trajectory balance with log Z replaced by the batch estimate ``mean(log w)`` (detached).

    The gradient equals that of the batch variance of the log-weights, so no log Z is learned, and
    the loss is invariant to a constant shift of ``log_r``. With ``group`` (B,) integer labels (the
    condition of each trajectory, for a conditional target, whose log Z differs per condition), the
    estimate is the mean over the trajectories of the same group. ``valid`` (B,) bool: the estimate
    averages only these (the others are left out of the loss by the caller; ``agents.guard``).
    """
    log_w = log_weight(log_r, log_pf, log_pb)
    baseline = _group_mean(log_w.detach(), group)
    if valid is not None:  # exactly the plain baseline when every trajectory is valid
        kept = _group_mean(torch.where(valid, log_w.detach(), torch.zeros_like(log_w)), group, valid)
        baseline = torch.where(valid.all(), baseline, kept)
    return (log_w - baseline).square()


def _group_mean(values: torch.Tensor, group: torch.Tensor | None, valid: torch.Tensor | None = None):
    """Mean of ``values`` over the batch (or over each ``group``, broadcast back to the rows), counting only
    ``valid`` rows when given (their ``values`` must be zero elsewhere)."""
    if group is None:
        return values.mean() if valid is None else values.sum() / valid.sum().clamp_min(1)
    _, inverse, counts = torch.unique(group, return_inverse=True, return_counts=True)
    sums = torch.zeros(counts.shape, dtype=values.dtype, device=values.device).index_add_(0, inverse, values)
    if valid is not None:
        counts = torch.zeros_like(sums).index_add_(0, inverse, valid.to(values.dtype)).clamp_min(1)
    return (sums / counts)[inverse]


def detailed_balance(log_pf, log_pb, log_f) -> torch.Tensor:
    """``sum_k (log F_k + log p_F,k - log F_{k+1} - log p_B,k)^2`` over the T transitions."""
    return (log_f[:, :-1] + log_pf - log_f[:, 1:] - log_pb).square().sum(-1)


def _subtb_weights(num_states: int, lam: float, device) -> torch.Tensor:
    """``(T+1, T+1)`` float64 weights ``lam^(j-i)`` for ``i < j``, 0 elsewhere, normalised to sum to 1."""
    idx = torch.arange(num_states, device=device, dtype=torch.float64)
    gap = idx.view(1, -1) - idx.view(-1, 1)
    w = torch.where(gap > 0, lam**gap, torch.zeros_like(gap))
    return w / w.sum()


def subtrajectory_balance(log_pf, log_pb, log_f, lam: float = 2.0) -> torch.Tensor:
    """Lambda-weighted balance over all ``T (T + 1) / 2`` sub-trajectories ``i < j``.

    The residual of sub-trajectory (i, j) is ``a_i - a_j`` with ``a_k = log F_k - C_k`` and
    ``C_k = sum_{m<k} (log p_F,m - log p_B,m)`` (one cumulative sum). The weighted sum of squared
    residuals is the quadratic form ``sum_i a_i^2 (r_i + c_i) - 2 a^T W a`` (r, c: row and column sums
    of the upper-triangular weights W): one small matmul instead of a (B, T+1, T+1) tensor. It is
    evaluated in float64 on ``a`` centred per trajectory (the loss is shift-invariant), so the
    cancellation between the terms costs no precision.
    """
    c = torch.nn.functional.pad((log_pf - log_pb).cumsum(-1), (1, 0))
    a = (log_f - c).double()
    a = a - a.mean(-1, keepdim=True).detach()
    w = _subtb_weights(a.shape[-1], lam, a.device)
    diag = w.sum(0) + w.sum(1)
    loss = (a.square() * diag).sum(-1) - 2 * ((a @ w) * a).sum(-1)
    return loss.to(log_f.dtype)


def pis(log_pf, log_pb, log_r) -> torch.Tensor:
    """Path-wise KL(p_F || p_B R / Z) up to log Z: ``sum log p_F - sum log p_B - log R``.

    Its gradient is the reparameterised KL gradient only when the path carries gradients.
    """
    return log_pf.sum(-1) - log_pb.sum(-1) - log_r


def backward_mle(log_pf) -> torch.Tensor:
    """Negative log-likelihood of (backward-sampled) paths under the forward policy."""
    return -log_pf.sum(-1)


@dataclass(frozen=True)
class Objective:
    """A registered objective: how to compute it from Trajectories, and what the agent must provide.

    Attributes:
        loss: ``(traj, log_z, lam) -> (B,)``.
        needs: "log_z" (a learned scalar), "flow" (a state-flow network) or None.
        forward_looking: flows get the forward-looking energy terms.
        path_gradient: trajectories must be sampled with gradients (PIS); otherwise off-policy.
    """

    loss: Callable
    needs: str | None = None
    forward_looking: bool = False
    path_gradient: bool = False


OBJECTIVES: dict[str, Objective] = {
    "tb": Objective(lambda tr, log_z, lam: trajectory_balance(tr.log_pf, tr.log_pb, tr.log_r, log_z), "log_z"),
    "vargrad": Objective(lambda tr, log_z, lam: vargrad(tr.log_pf, tr.log_pb, tr.log_r, tr.condition_index, tr.valid)),
    "db": Objective(lambda tr, log_z, lam: detailed_balance(tr.log_pf, tr.log_pb, tr.log_f), "flow"),
    "fl-db": Objective(lambda tr, log_z, lam: detailed_balance(tr.log_pf, tr.log_pb, tr.log_f), "flow", True),
    "subtb": Objective(lambda tr, log_z, lam: subtrajectory_balance(tr.log_pf, tr.log_pb, tr.log_f, lam), "flow"),
    "fl-subtb": Objective(
        lambda tr, log_z, lam: subtrajectory_balance(tr.log_pf, tr.log_pb, tr.log_f, lam), "flow", True
    ),
    "pis": Objective(lambda tr, log_z, lam: pis(tr.log_pf, tr.log_pb, tr.log_r), path_gradient=True),
    "bwd-mle": Objective(lambda tr, log_z, lam: backward_mle(tr.log_pf)),
}
