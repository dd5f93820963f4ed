"""A fused squared residual for evaluating fixed-variance Gaussian transitions over whole paths.

``log p_F`` of all B T transitions of a fixed-variance kernel is ``-|r|^2 / 2v + c`` with residual
``r = r0 - alpha (h W^T + b)`` (``r0``: the transition less what does not depend on the network; ``h W^T + b``:
the network's last layer). Written with plain ops, the forward and backward passes write several
``(B T, d)`` temporaries (on Manywell-512 each is 60 MB); ``ResidualSquaredNorm`` writes only ``r`` and
takes both gradients from it by matrix products, weighting the narrower of ``(B T, d)`` and ``(B T, k)`` by
the upstream gradient. ``fused_log_pf`` is the trajectory engine's private fused branch of
``score`` for kernels that describe themselves as an ``AffineDrift``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffsampler.envs import process


class ResidualSquaredNorm(torch.autograd.Function):
    """``q_n = |r0_n - alpha_n (h_n W^T + b)|^2`` for ``r0`` (N, d) (no gradient), ``h`` (N, k), ``W`` (d, k),
    ``b`` (d,) or None, ``alpha`` a float or per-row (N, 1) (no gradient)."""

    @staticmethod
    def forward(ctx, r0, h, w, bias, alpha, known=False):
        if known:  # r0 is already the residual (a rollout's own noise): q's value needs no product
            r = r0
        elif isinstance(alpha, float):
            r = torch.addmm(r0, h, w.t(), alpha=-alpha)
            if bias is not None:
                r.sub_(bias, alpha=alpha)
        else:
            u = h @ w.t() if bias is None else torch.addmm(bias, h, w.t())
            r = torch.addcmul(r0, alpha, u, value=-1.0)
        ctx.save_for_backward(r, h, w)
        ctx.alpha = alpha
        return torch.linalg.vector_norm(r, dim=-1).square()

    @staticmethod
    def backward(ctx, grad_q):
        r, h, w = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[1:4]
        weight = (-2.0 * grad_q).unsqueeze(-1) * ctx.alpha  # dq_n / d(h_n W^T + b) = -2 alpha_n r_n
        grad_h = grad_w = grad_b = None
        if r.shape[1] <= h.shape[1]:  # weight the narrower side: here the residual
            rw = r * weight
            grad_h = rw @ w if need_h else None
            grad_w = rw.t() @ h if need_w else None
            grad_b = rw.sum(0) if need_b else None
        else:
            grad_h = (r @ w) * weight if need_h else None
            grad_w = r.t() @ (h * weight) if need_w else None
            grad_b = r.t() @ weight.squeeze(-1) if need_b else None
        return None, grad_h, grad_w, grad_b, None, None


def residual_squared_norm(
    r0: torch.Tensor, h: torch.Tensor, w: torch.Tensor, alpha: float | torch.Tensor = 1.0, bias=None, known=False
) -> torch.Tensor:
    """``|r0 - alpha (h W^T + b)|^2`` per row (see ``ResidualSquaredNorm``); ``alpha`` a float or per row (N, 1).
    ``known``: ``r0`` is that residual already (its value), and only the gradients are taken through the product."""
    n, d = r0.shape if r0.dim() == 2 else (None, None)
    bad = d is None or h.dim() != 2 or w.dim() != 2 or h.shape[0] != n or w.shape != (d, h.shape[1])
    bad = bad or (bias is not None and tuple(bias.shape) != (d,))
    bad = bad or (isinstance(alpha, torch.Tensor) and tuple(alpha.shape) != (n, 1))
    if bad:
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else t for t in (r0, h, w, bias, alpha)]
        raise ValueError(f"need r0 (N, d), h (N, k), w (d, k), bias (d,), alpha float or (N, 1); got {shapes}")
    alpha = alpha if isinstance(alpha, torch.Tensor) else float(alpha)
    return ResidualSquaredNorm.apply(r0, h, w, bias, alpha, bool(known))


@dataclass
class AffineDrift:
    """A Gaussian kernel whose mean is affine in hidden features: ``N(a x + g (h W^T + b), v)``.

    ``hidden`` (B, T, k), ``weight`` (d, k), ``bias`` (d,); ``mean_coef`` a and ``drift_coef`` g floats
    or (T, 1); ``var`` v a float or (T, 1); ``clip``: the drift is clipped at +-clip (the fused
    evaluation applies only where the clip provably does not bind). ``states``: when given, the paths'
    states time-major ``(T + 1, B, d)`` (a rollout's own order, e.g. replayed from its record), with
    ``hidden`` (T, B, k) and per-step coefficients (T, 1, 1) in that order too. ``residual``: with ``states``, the
    paths' residuals ``x_{k+1} - mean_k`` (T, B, d) when the rollout kept them (its scaled noise), so that
    ``log p_F``'s value needs no product.
    """

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    mean_coef: float | torch.Tensor
    drift_coef: float | torch.Tensor
    var: float | torch.Tensor
    clip: float
    states: torch.Tensor | None = None
    residual: torch.Tensor | None = None


def fused_log_pf(x: torch.Tensor, x_next: torch.Tensor, f: AffineDrift) -> torch.Tensor | None:
    """``log p_F`` (B, T) of an ``AffineDrift`` kernel over all rows with ``residual_squared_norm`` (one product and a
    norm, gradients by two products), in the states' order (time-major when ``f.states`` is given); None when
    the clip might bind: ``max |h W^T + b| <= max_n |h_n| max_i |W_i| + max |b|`` is checked first (one host sync)."""
    if f.states is not None:
        x, x_next = f.states[:-1], f.states[1:]
    n1, n2, d = x.shape
    h, w, bias = f.hidden, f.weight, f.bias
    with torch.no_grad():
        bound = h.norm(dim=-1).max() * w.norm(dim=-1).max() + bias.abs().max()
    if not bool(bound < f.clip):
        return None
    a, g = f.mean_coef, f.drift_coef
    known = f.residual is not None and f.states is not None
    if known:
        r0 = f.residual
    else:
        r0 = x_next - x if isinstance(a, float) and a == 1.0 else x_next - a * x
    alpha = g if isinstance(g, float) else g.expand(n1, n2, 1).reshape(-1, 1)  # per-step: a scale per row
    sq = residual_squared_norm(r0.reshape(-1, d), h.reshape(-1, h.shape[-1]), w, alpha, bias, known).view(n1, n2)
    var = f.var if isinstance(f.var, float) else f.var.squeeze(-1)
    log_pf = process.gaussian_log_density(sq, var, d)
    return log_pf if f.states is None else log_pf.t().contiguous()
