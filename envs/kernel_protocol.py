"""The kernel protocol of the trajectory engine (``envs.engine``): what a forward kernel (a sampler's
transition) and a backward kernel provide. Every sampler of the library is a kernel: the GFlowNet policy
(``agents.policy``), CMCD's annealed Langevin kernels (``agents.cmcd``), the RL policy heads; the references
(``envs.reference``) are backward kernels.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class ForwardKernel(Protocol):
    """A sampler's forward transition ``p_F(x_{k+1} | x_k)``, batched.

    ``score_clip``: None, or the clip of the score ``grad log R`` the kernel takes at ``x_k`` (the
    Langevin parametrisation); the engine evaluates the clipped score at every state.
    ``context(condition, reference)``: what depends on time and the condition only (time embeddings,
    per-step coefficients, ...), computed once per rollout or scoring; ``condition`` is ``(B, cond_dim)``
    or None, ``reference`` the MDP's (its time grid may differ from the kernel's own).

    A Gaussian kernel (``gaussian = True``) gives the mean and variance of a transition:
    ``transition(x, step, ctx, score) -> (mean, var)`` with ``step`` an int and ``x`` ``(n, d)`` at
    time ``t_step``, or ``step=None`` and ``x`` ``(B, T, d)`` at every step; ``var`` a float, a
    tensor broadcastable to ``mean``. A kernel that runs on *segments* (paths of steps ``a..b-1`` only,
    ``rollout(..., steps=(a, b))``, e.g. SCLD's sub-trajectories) also takes ``step`` a slice of steps
    with ``x`` ``(B, b - a, d)``. ``fixed_std(extra_std, ctx)`` is the sampling std at every step
    when the variance does not depend on ``x`` (a float or ``(T, 1, 1)``; ``extra_std^2`` is added
    exploration variance), else None. Optionally ``affine_drift(x, ctx) -> AffineDrift | None`` lets
    ``score`` evaluate a fixed-variance kernel fused (``envs.fused``).

    Any other kernel (``gaussian = False``) samples and evaluates itself:
    ``sample(x, step, ctx, generator) -> (x_next, log_pf)`` and
    ``log_prob(x, x_next, ctx) -> log_pf`` over all ``(B, T)`` transitions at once.
    """

    score_clip: float | None
    gaussian: bool

    def context(self, condition: torch.Tensor | None, reference) -> Any: ...


class BackwardKernel(Protocol):
    """A learned backward transition ``p_B(x_k | x_{k+1})`` (a correction of the reference's, or a kernel of
    its own such as CMCD's reverse Langevin kernel).

    ``context(condition, reference)`` as for forward kernels; ``transition(x_next, steps, ctx)
    -> (mean, var)`` (var a tensor) with ``steps`` an int (``x_next`` ``(n, d)`` at ``x_{steps + 1}``) or a
    slice of step indices (``x_next`` ``(B, len, d)``). The references are backward kernels too.

    Optionally ``score_clip``: a backward kernel that declares it (not None) takes the clipped score
    ``grad log R`` at ``x_{k+1}``, ``transition(x_next, steps, ctx, score)`` (``score`` shaped like
    ``x_next``). ``rollout_backward`` then evaluates the scores as it goes (one per state, each reused by
    the forward kernel), and ``score`` takes those of forward paths from what the rollout recorded, evaluating
    only what is missing (the terminal state's) in one batched call.
    """

    def context(self, condition: torch.Tensor | None, reference) -> Any: ...

    def transition(self, x_next: torch.Tensor, steps, ctx) -> tuple[torch.Tensor, Any]: ...
