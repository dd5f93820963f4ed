"""The trajectory engine: every sampler is a kernel, and every trajectory goes through here.

A *forward kernel* is a sampler's transition ``p_F(x_{k+1} | x_k)``, batched over trajectories
(``ForwardKernel``). The engine rolls it through the MDP (``rollout``), draws paths backward through
the reference process or a learned backward kernel (``rollout_backward``), and scores paths
(``score``): log p_F from the kernel over all B T transitions in one batched call, log p_B and
log p_0 from the reference (or the backward kernel), log R from the target, and the log-weight

    log w = log R(x_T) + sum_k log p_B(x_k | x_{k+1}) - log p_0(x_0) - sum_k log p_F(x_{k+1} | x_k)

defined once (``log_weight``; ``- log p_0`` is folded into the first log p_B entry, see
``envs.reference``). The GFlowNet policy with its options, the PIS/DDS/DIS parametrisations and the
RL policy heads are all kernels; the engine knows targets and references, never agents.

These functions are bound as methods of ``envs.sampler_mdp.DiffusionMDP``::

    paths = mdp.rollout(policy, 300, generator, extra_std=0.2)
    traj = mdp.score(policy, paths)          # Trajectories: states, log_pf, log_pb, log_r
    back = mdp.score(policy, mdp.rollout_backward(x_T, generator, score_clip=policy.score_clip))

On a conditional target every function takes the trajectories' conditions ``(B, cond_dim)`` as its
one ``condition`` argument: kernels see it through ``kernel.context(condition)``, rewards are
``log R(x | c)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from diffsampler.envs import process
from diffsampler.envs.fused import residual_squared_norm
from diffsampler.envs.trajectories import Paths, Trajectories, log_weight  # noqa: F401 - re-exported


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
    tensor broadcastable to ``mean``. ``fixed_std(extra_std, ctx)`` is the sampling std at every step
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
    """A learned backward transition ``p_B(x_k | x_{k+1})`` (a correction of the reference's).

    ``context(condition, reference)`` as for forward kernels; ``transition(x_next, steps, ctx)
    -> (mean, var)`` (var a tensor) with ``steps`` an int (``x_next`` ``(n, d)`` at ``x_{steps + 1}``) or a
    slice of step indices (``x_next`` ``(B, len, d)``). The references are backward kernels too.
    """

    def context(self, condition: torch.Tensor | None, reference) -> Any: ...

    def transition(self, x_next: torch.Tensor, steps, ctx) -> tuple[torch.Tensor, Any]: ...


# --- rewards along paths ----------------------------------------------------------------------------


def check_log_reward_shape(log_r, x: torch.Tensor, target) -> None:
    """A ValueError naming the target unless ``log_r`` is a tensor of shape ``x.shape[:-1]`` (one value per
    row; e.g. a (B, 1) output would broadcast a (B, B) loss). Metadata only: no sync."""
    if not isinstance(log_r, torch.Tensor) or log_r.shape != x.shape[:-1]:
        got = tuple(log_r.shape) if isinstance(log_r, torch.Tensor) else type(log_r).__name__
        raise ValueError(
            f"{target!r}.log_reward returned {got} for x of shape {tuple(x.shape)}; expected one log-density "
            f"per row, shape {tuple(x.shape[:-1])}"
        )


def clipped_score(reward, x: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log R(x), clip(grad log R(x)))`` at a detached copy of ``x``; both results carry no graph."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        log_r = reward.log_reward(xg)
        check_log_reward_shape(log_r, xg, reward)
        (grad,) = torch.autograd.grad(log_r.sum(), xg)
    return log_r.detach(), torch.nan_to_num(grad).clamp_(-clip, clip)


def _states_rewards(mdp, inner: torch.Tensor, condition, clip: float | None):
    """``(log R, clipped score or None)`` at the states ``inner`` ``(B, T, d)`` of whole paths, in one call."""
    b, T, d = inner.shape
    reward = mdp.bind(None if condition is None else condition.unsqueeze(1))
    x = inner if condition is not None else inner.reshape(b * T, d)  # unconditional targets take (N, d)
    if clip is None:
        log_r = reward.log_reward(x)
        check_log_reward_shape(log_r, x, reward)
        return log_r.view(b, T), None
    log_r, score = clipped_score(reward, x, clip)
    return log_r.view(b, T), score.view(b, T, d)


# --- the engine -------------------------------------------------------------------------------------


def rollout(
    mdp,
    kernel: ForwardKernel,
    n: int,
    generator: torch.Generator | None = None,
    extra_std: float = 0.0,
    condition: torch.Tensor | None = None,
    need_log_r_states: bool = False,
    reparam: bool = False,
) -> Paths:
    """``n`` forward paths of ``kernel`` from ``x_0 ~ p_0``, with ``extra_std^2`` added variance per step.

    Without ``reparam`` the paths are sampled without autograd. With ``reparam`` (on-policy path
    gradients, e.g. PIS) ``x_{k+1} = mean + std * eps`` keeps its graph, and so does the terminal
    log-reward; the log-probabilities are then recorded on the way (``paths.log_pf``), as they are for
    kernels that are not Gaussian. ``need_log_r_states`` also evaluates the log-rewards at
    ``states[:, :-1]`` (forward-looking flows).
    """
    with torch.set_grad_enabled(reparam and torch.is_grad_enabled()):
        return _rollout(mdp, kernel, n, generator, extra_std, condition, need_log_r_states, reparam)


def _rollout(mdp, kernel, n, generator, extra_std, condition, need_log_r_states, reparam) -> Paths:
    T, d, device = mdp.num_steps, mdp.dim, mdp.device
    # A kernel may record what its evaluations compute while sampling, for ``score`` to replay.
    record = kernel.new_record(T) if hasattr(kernel, "new_record") and kernel.gaussian and not reparam else None
    ctx = (
        kernel.context(condition, mdp.reference) if record is None else kernel.context(condition, mdp.reference, record)
    )
    reward = mdp.bind(condition)
    gaussian, langevin = kernel.gaussian, kernel.score_clip is not None
    noise = std = None
    if gaussian:  # the noise of every step at once; step k reads one contiguous (n, d) slab
        if reparam:
            noise = torch.randn(n, T, d, generator=generator, device=device).transpose(0, 1)
        else:
            noise = torch.randn(T, n, d, generator=generator, device=device)
            std = kernel.fixed_std(extra_std, ctx)
            if std is not None:  # a variance that does not depend on x: scale all the noise at once
                noise.mul_(std)
    x = mdp.initial_positions(n, generator)
    recording = reparam or not gaussian
    if recording:
        states, log_pf = [x], []
    else:  # written in place, time-major
        buf = x.new_zeros(T + 1, n, d)
        buf[0] = x
    scores = x.new_empty(T, n, d) if langevin and not reparam else None
    log_r_states = x.new_empty(T, n) if langevin else None  # detached; the training guard screens them
    score = None
    for k in range(T):
        if langevin:
            log_r_k, score = clipped_score(reward, x, kernel.score_clip)
            log_r_states[k] = log_r_k
            if scores is not None:
                scores[k] = score
        if not gaussian:
            x, lp = kernel.sample(x, k, ctx, generator)
        else:
            mean, var = kernel.transition(x, k, ctx, score)
            if reparam:
                resid = process.noise_std(var) * noise[k]
                x, lp = mean + resid, process.gaussian_log_prob(resid, 0.0, var)
            elif std is not None:
                x = torch.add(mean, noise[k], out=buf[k + 1])
            else:
                x = _gaussian_step(mean, process.noise_std(var, extra_std), noise[k], buf[k + 1])
        if recording:
            states.append(x)
            log_pf.append(lp)
    if recording:
        states_t, recorded = torch.stack(states, 1), torch.stack(log_pf, 1)
    else:
        states_t, recorded = buf.transpose(0, 1).contiguous(), None
    if scores is not None:
        scores = scores.transpose(0, 1).contiguous()
    if log_r_states is not None:
        log_r_states = log_r_states.t().contiguous()
    elif need_log_r_states:  # all intermediate log-rewards in one batched call
        log_r_states = _states_rewards(mdp, states_t[:, :-1].detach(), condition, None)[0]
    log_r = mdp.log_reward(x, condition)
    times = mdp.reference.grid_like(states_t)
    return Paths(states_t, log_r, scores, log_r_states, condition, recorded, times, record)


def rollout_backward(
    mdp,
    x_last: torch.Tensor,
    generator: torch.Generator | None = None,
    condition: torch.Tensor | None = None,
    backward: BackwardKernel | None = None,
    score_clip: float | None = None,
    need_log_r_states: bool = False,
) -> Paths:
    """Paths drawn backward from terminal states ``x_last`` ``(B, d)`` (e.g. exact target samples).

    Through the reference's kernels (``reference.sample_backward``: the bridge in closed form, others by
    ``backward_loop``), or through a learned ``backward`` kernel. ``score_clip``: also evaluate the
    clipped scores at ``states[:, :-1]`` (to score a Langevin kernel); ``need_log_r_states``: the
    log-rewards there. Both in one batched call.
    """
    with torch.no_grad():
        if backward is None:
            states = mdp.reference.sample_backward(x_last, generator)
        else:
            first = 0 if mdp.reference.random_start else 1
            ctx = backward.context(condition, mdp.reference)
            states = backward_loop(backward, x_last, generator, ctx, first, mdp.num_steps)
        scores = log_r_states = None
        if score_clip is not None or need_log_r_states:
            log_r_states, scores = _states_rewards(mdp, states[:, :-1], condition, score_clip)
        log_r = mdp.log_reward(x_last, condition)
    return Paths(states, log_r, scores, log_r_states, condition, None, mdp.reference.grid_like(states))


def backward_loop(kernel: BackwardKernel, x_last: torch.Tensor, generator, ctx, first: int, num_steps: int):
    """The backward rollout loop: ``x_k = mean_k(x_{k+1}) + sqrt(var_k) eps_k`` for k = T-1 down to
    ``first`` (1 when ``x_0`` is pinned, as on the bridge: those states stay 0). Paths ``(B, T + 1, d)``
    with ``states[:, T] = x_last``; T batched steps, time-major (a loop over time, never over the batch)."""
    b, d, T = *x_last.shape, num_steps
    noise = torch.randn(T, b, d, generator=generator, dtype=x_last.dtype, device=x_last.device)
    states = x_last.new_zeros(T + 1, b, d)
    states[T] = x_last
    for k in range(T - 1, first - 1, -1):
        mean, var = kernel.transition(states[k + 1], k, ctx)
        _gaussian_step(mean, process.noise_std(var), noise[k], states[k])
    return states.transpose(0, 1).contiguous()


def _gaussian_step(mean: torch.Tensor, std, noise: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = mean + std * noise`` for a float or tensor ``std``, written in place."""
    if isinstance(std, torch.Tensor):
        return torch.addcmul(mean, std, noise, out=out)
    return torch.add(mean, noise, alpha=std, out=out)


def score(
    mdp,
    kernel: ForwardKernel,
    paths: Paths,
    backward: BackwardKernel | None = None,
    condition_index: torch.Tensor | None = None,
) -> Trajectories:
    """Log-probabilities of every transition of ``paths``: log p_F from ``kernel`` over all B T rows at
    once (or as recorded while sampling), log p_B from the reference or the learned ``backward`` kernel."""
    states, condition = paths.states, paths.condition
    log_pf = paths.log_pf
    if log_pf is None:
        ref, record = mdp.reference, paths.record
        ctx = kernel.context(condition, ref) if record is None else kernel.context(condition, ref, record)
        log_pf = _path_log_pf(kernel, states, ctx, paths.scores)
    log_pb = _path_log_pb(mdp, states, condition, backward)
    return Trajectories(states, log_pf, log_pb, paths.log_r, None, condition_index)


def _path_log_pf(kernel, states: torch.Tensor, ctx, scores) -> torch.Tensor:
    x, x_next = states[:, :-1], states[:, 1:]
    if not kernel.gaussian:
        return kernel.log_prob(x, x_next, ctx)
    affine = getattr(kernel, "affine_drift", None)
    if scores is None and affine is not None:
        drift = affine(x, ctx)
        if drift is not None:
            log_pf = _fused_log_pf(x, x_next, drift)
            if log_pf is not None:
                return log_pf
    mean, var = kernel.transition(x, None, ctx, scores)
    return process.gaussian_log_prob(x_next, mean, var)


def _fused_log_pf(x: torch.Tensor, x_next: torch.Tensor, f: AffineDrift) -> torch.Tensor | None:
    """``log p_F`` of an ``AffineDrift`` kernel over all rows with ``envs.fused`` (one ``addmm`` and a norm,
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


def _path_log_pb(mdp, states: torch.Tensor, condition, backward) -> torch.Tensor:
    ref = mdp.reference
    if backward is None:
        return ref.log_pb_path(states)
    first = 0 if ref.random_start else 1
    ctx = backward.context(condition, mdp.reference)
    mean, var = backward.transition(states[:, first + 1 :], slice(first, None), ctx)
    lp = process.gaussian_log_prob(states[:, first:-1], mean, var)
    if first:  # the bridge's point mass at 0
        return torch.cat([lp.new_zeros(lp.shape[0], 1), lp], dim=1)
    return torch.cat([lp[:, :1] - ref.initial_log_prob(states[:, 0]).unsqueeze(-1), lp[:, 1:]], 1)
