"""A fused squared residual for evaluating fixed-variance Gaussian transitions over whole paths.

``log p_F`` of all B T transitions of a fixed-variance kernel is ``-|r|^2 / 2v + c`` with residual
``r = r0 - alpha h W^T`` (``r0``: the transition less what does not depend on the network; ``h W^T``: the
network's last layer). Written with plain ops, the forward and backward passes write several
``(B T, d)`` temporaries (on Manywell-512 each is 60 MB); ``ResidualSquaredNorm`` writes only ``r`` and
takes both gradients from it by matrix products, weighting the small ``(B T, k)`` side by the upstream
gradient instead of the large one.
"""

from __future__ import annotations

import torch


class ResidualSquaredNorm(torch.autograd.Function):
    """``q_n = |r0_n - alpha h_n W^T|^2`` for ``r0`` (N, d) (no gradient), ``h`` (N, k), ``W`` (d, k)."""

    @staticmethod
    def forward(ctx, r0: torch.Tensor, h: torch.Tensor, w: torch.Tensor, alpha: float) -> torch.Tensor:
        r = torch.addmm(r0, h, w.t(), alpha=-alpha)
        ctx.save_for_backward(r, h, w)
        ctx.alpha = alpha
        return torch.linalg.vector_norm(r, dim=-1).square()

    @staticmethod
    def backward(ctx, grad_q: torch.Tensor):
        r, h, w = ctx.saved_tensors
        weight = (-2.0 * ctx.alpha * grad_q).unsqueeze(-1)  # dq_n / d(h_n W^T) = -2 alpha r_n
        grad_h = (r @ w) * weight if ctx.needs_input_grad[1] else None
        grad_w = r.t() @ (h * weight) if ctx.needs_input_grad[2] else None
        return None, grad_h, grad_w, None


def residual_squared_norm(r0: torch.Tensor, h: torch.Tensor, w: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """``|r0 - alpha h W^T|^2`` per row (see ``ResidualSquaredNorm``)."""
    if (
        r0.dim() != 2
        or h.dim() != 2
        or w.dim() != 2
        or h.shape[0] != r0.shape[0]
        or w.shape != (r0.shape[1], h.shape[1])
    ):
        raise ValueError(
            f"need r0 (N, d), h (N, k), w (d, k); got {tuple(r0.shape)}, {tuple(h.shape)}, {tuple(w.shape)}"
        )
    return ResidualSquaredNorm.apply(r0, h, w, float(alpha))
