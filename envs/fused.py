"""A fused squared residual for evaluating fixed-variance Gaussian transitions over whole paths.

``log p_F`` of all B T transitions of a fixed-variance kernel is ``-|r|^2 / 2v + c`` with residual
``r = r0 - alpha h W^T`` (``r0``: the transition less what does not depend on the network; ``h W^T``: the
network's last layer). Written with plain ops, the forward and backward passes write several
``(B T, d)`` temporaries (on Manywell-512 each is 60 MB); ``ResidualSquaredNorm`` writes only ``r`` and
takes both gradients from it by matrix products, weighting the small ``(B T, k)`` side by the upstream
gradient instead of the large one. ``fused_log_pf`` is the trajectory engine's private fused branch of
``score`` for kernels that describe themselves as an ``AffineDrift``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffsampler.envs import process


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


@dataclass
class AffineDrift:
    """A Gaussian kernel whose mean is affine in hidden features: ``N(a x + g (h W^T + b), v)``.

    ``hidden`` (B, T, k), ``weight`` (d, k), ``bias`` (d,); ``mean_coef`` a and ``drift_coef`` g floats
    or (T, 1); ``var`` v a float or (T, 1); ``clip``: the drift is clipped at +-clip (the fused
    evaluation applies only where the clip provably does not bind).
    """

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    mean_coef: float | torch.Tensor
    drift_coef: float | torch.Tensor
    var: float | torch.Tensor
    clip: float


def fused_log_pf(x: torch.Tensor, x_next: torch.Tensor, f: AffineDrift) -> torch.Tensor | None:
    """``log p_F`` of an ``AffineDrift`` kernel over all rows with ``residual_squared_norm`` (one ``addmm`` and a norm,
    gradients by two matrix products); None when the clip might bind: ``max |h W^T + b| <= max_n |h_n|
    max_i |W_i| + max |b|`` is checked first (one host sync)."""
    b, T, d = x.shape
    h, w, bias = f.hidden, f.weight, f.bias
    with torch.no_grad():
        bound = h.norm(dim=-1).max() * w.norm(dim=-1).max() + bias.abs().max()
    if not bool(bound < f.clip):
        return None
    a, g = f.mean_coef, f.drift_coef
    r0 = x_next - x if isinstance(a, float) and a == 1.0 else x_next - a * x
    h_aug = torch.cat([h, h.new_ones(b, T, 1)], -1)  # fold the bias into the product: [h, 1] [W, b]^T
    if isinstance(g, float):
        alpha = g
    else:  # per-step coefficients scale the rows
        h_aug, alpha = h_aug * g, 1.0
    w_aug = torch.cat([w, bias.unsqueeze(-1)], -1)
    sq = residual_squared_norm(r0.reshape(b * T, d), h_aug.reshape(b * T, -1), w_aug, alpha).view(b, T)
    var = f.var if isinstance(f.var, float) else f.var.squeeze(-1)
    return process.gaussian_log_density(sq, var, d)
