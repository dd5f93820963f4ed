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

import torch

from diffsampler.envs import process
from diffsampler.envs.fused import AffineDrift  # noqa: F401 - re-exported
from diffsampler.envs.fused import fused_log_pf as _fused_log_pf
from diffsampler.envs.kernel_protocol import BackwardKernel, ForwardKernel
from diffsampler.envs.targets.base import analytic_score
from diffsampler.envs.trajectories import Paths, Trajectories, log_weight  # noqa: F401 - re-exported

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


def clipped_score(
    reward, x: torch.Tensor, clip: float, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log R(x), clip(grad log R(x)))`` at a detached copy of ``x``; both results carry no graph. The
    gradient is the target's closed form where it has one (``targets.base.analytic_score``), else autograd's.
    ``out`` (shaped like ``x``) receives the clipped score, e.g. a rollout's per-step slab, saving a copy."""
    closed_form = analytic_score(reward)
    if closed_form is not None:
        with torch.no_grad():
            log_r, grad = closed_form(x.detach())
        check_log_reward_shape(log_r, x, reward)
    else:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            log_r = reward.log_reward(xg)
            check_log_reward_shape(log_r, xg, reward)
            (grad,) = torch.autograd.grad(log_r.sum(), xg)
        log_r = log_r.detach()
    return log_r, torch.nan_to_num(grad, out=out).clamp_(-clip, clip)


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
    start: torch.Tensor | None = None,
    steps: tuple[int, int] | None = None,
) -> Paths:
    """``n`` forward paths of ``kernel`` from ``x_0 ~ p_0``, with ``extra_std^2`` added variance per step.

    Without ``reparam`` the paths are sampled without autograd. With ``reparam`` (on-policy path
    gradients, e.g. PIS) ``x_{k+1} = mean + std * eps`` keeps its graph, and so does the terminal
    log-reward; the log-probabilities are then recorded on the way (``paths.log_pf``), as they are for
    kernels that are not Gaussian. ``need_log_r_states`` also evaluates the log-rewards at
    ``states[:, :-1]`` (forward-looking flows). ``steps = (a, b)`` draws a *segment*: the states
    ``x_a..x_b`` of steps ``a..b-1`` from ``start`` ``(n, d)`` at step a (default ``x_0 ~ p_0``; the paths'
    ``first_step`` is a and ``log_r`` is ``log R(x_b)``).
    """
    first, last = (0, mdp.num_steps) if steps is None else _check_steps(steps, mdp.num_steps)
    if start is not None and tuple(start.shape) != (n, mdp.dim):
        raise ValueError(f"start must have shape ({n}, {mdp.dim}), got {tuple(start.shape)}")
    with torch.set_grad_enabled(reparam and torch.is_grad_enabled()):
        return _rollout(mdp, kernel, n, generator, extra_std, condition, need_log_r_states, reparam, start, first, last)


def _check_steps(steps, num_steps: int) -> tuple[int, int]:
    a, b = steps
    if not (isinstance(a, int) and isinstance(b, int) and 0 <= a < b <= num_steps):
        raise ValueError(f"steps must be (a, b) with integers 0 <= a < b <= T = {num_steps}, got {steps!r}")
    return a, b


def _rollout(mdp, kernel, n, generator, extra_std, condition, need_log_r_states, reparam, start, first, last):
    d, device, T = mdp.dim, mdp.device, last - first  # T: the steps drawn here
    # A kernel may record what its evaluations compute while sampling, for ``score`` to replay (whole paths).
    whole = T == mdp.num_steps
    replay = whole and hasattr(kernel, "new_record") and kernel.gaussian and not reparam
    record = kernel.new_record(T) if replay else None
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
                if isinstance(std, torch.Tensor) and not whole:
                    std = std[first:last]
                noise.mul_(std)
    x = mdp.initial_positions(n, generator) if start is None else start.detach()
    recording = reparam or not gaussian
    if recording:
        states, log_pf = [x], []
    else:  # written in place, time-major
        buf = x.new_zeros(T + 1, n, d)
        buf[0] = x
        slabs = buf.unbind(0)  # per-step views, made once
    if noise is not None:
        noise_k = noise.unbind(0)
    scores = x.new_empty(T, n, d) if langevin and not reparam else None
    score_slabs = [None] * T if scores is None else scores.unbind(0)
    log_r_states = x.new_empty(T, n) if langevin else None  # detached; the training guard screens them
    score = None
    for k in range(T):  # step first + k
        if langevin:
            log_r_k, score = clipped_score(reward, x, kernel.score_clip, score_slabs[k])
            log_r_states[k] = log_r_k
        if not gaussian:
            x, lp = kernel.sample(x, first + k, ctx, generator)
        else:
            mean, var = kernel.transition(x, first + k, ctx, score)
            if reparam:
                resid = process.noise_std(var) * noise_k[k]
                x = mean + resid
                # at a fixed variance log p_F carries no gradient: all steps in one call after the loop
                lp = var if isinstance(var, float) else process.gaussian_log_prob(resid, 0.0, var)
            elif std is not None:
                x = torch.add(mean, noise_k[k], out=slabs[k + 1])
            else:
                x = _gaussian_step(mean, process.noise_std(var, extra_std), noise_k[k], slabs[k + 1])
        if recording:
            states.append(x)
            log_pf.append(lp)
    if recording:
        states_t, recorded = torch.stack(states, 1), _recorded_log_pf(log_pf, noise)
    else:
        states_t, recorded = buf.transpose(0, 1).contiguous(), None
        if hasattr(record, "keep_states"):  # the kernel may replay in the rollout's (time-major) row order
            record.keep_states(buf, states_t, noise if std is not None else None)  # noise: x_{k+1} - mean_k
    if scores is not None:
        scores = scores.transpose(0, 1).contiguous()
    if log_r_states is not None:
        log_r_states = log_r_states.t().contiguous()
    elif need_log_r_states:  # all intermediate log-rewards in one batched call
        log_r_states = _states_rewards(mdp, states_t[:, :-1].detach(), condition, None)[0]
    log_r = mdp.log_reward(x, condition)
    times = mdp.reference.grid_like(states_t)
    if not whole:
        times = times[first : last + 1]
    return Paths(states_t, log_r, scores, log_r_states, condition, recorded, times, record, first_step=first)


def _recorded_log_pf(log_pf: list, noise: torch.Tensor | None) -> torch.Tensor:
    """(B, T): the steps' recorded log-probabilities; a reparameterised step at a fixed variance recorded its
    variance (a float) instead, and those steps are evaluated here at once from their residuals std * noise."""
    fixed = [lp for lp in log_pf if isinstance(lp, float)]
    if fixed and len(fixed) == len(log_pf) and len(set(fixed)) == 1:  # one variance: one call over (B, T, d)
        var = fixed[0]
        return process.gaussian_log_prob(process.noise_std(var) * noise.transpose(0, 1), 0.0, var)
    if fixed:
        noise_k = noise.unbind(0)
        log_pf = [
            process.gaussian_log_prob(process.noise_std(lp) * noise_k[k], 0.0, lp) if isinstance(lp, float) else lp
            for k, lp in enumerate(log_pf)
        ]
    return torch.stack(log_pf, 1)


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
    log-rewards there. Both in one batched call. A backward kernel that takes scores (``score_clip``
    set) has them evaluated as it goes, at every state; the paths then carry them all (``scores`` and
    ``terminal_score``), and ``score_clip``, if given, must be the backward kernel's.
    """
    with torch.no_grad():
        if getattr(backward, "score_clip", None) is not None:
            return _scored_rollout_backward(mdp, x_last, generator, condition, backward, score_clip)
        if backward is None:
            states = mdp.reference.sample_backward(x_last, generator)
        else:
            first = 0 if mdp.reference.random_start else 1
            ctx = backward.context(condition, mdp.reference)
            states = backward_loop(backward, x_last, generator, ctx, first, mdp.num_steps)[0]
        scores = log_r_states = None
        if score_clip is not None or need_log_r_states:
            log_r_states, scores = _states_rewards(mdp, states[:, :-1], condition, score_clip)
        log_r = mdp.log_reward(x_last, condition)
    return Paths(states, log_r, scores, log_r_states, condition, None, mdp.reference.grid_like(states))


def _scored_rollout_backward(mdp, x_last, generator, condition, backward, score_clip) -> Paths:
    if score_clip is not None and score_clip != backward.score_clip:
        raise ValueError(
            f"the forward kernel's score clip {score_clip!r} differs from the backward kernel's {backward.score_clip!r}"
        )
    first = 0 if mdp.reference.random_start else 1
    ctx = backward.context(condition, mdp.reference)
    states, scores, log_r = backward_loop(backward, x_last, generator, ctx, first, mdp.num_steps, mdp.bind(condition))
    log_r_last, times = mdp.log_reward(x_last, condition), mdp.reference.grid_like(states)
    last = scores[:, -1]
    return Paths(states, log_r_last, scores[:, :-1], log_r[:, :-1], condition, times=times, terminal_score=last)


def backward_loop(
    kernel: BackwardKernel, x_last: torch.Tensor, generator, ctx, first: int, num_steps: int, reward=None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The backward rollout loop: ``x_k = mean_k(x_{k+1}) + sqrt(var_k) eps_k`` for k = T-1 down to
    ``first`` (1 when ``x_0`` is pinned, as on the bridge: those states stay 0). Returns ``(states, scores,
    log_r)``: paths ``(B, T + 1, d)`` with ``states[:, T] = x_last``; T batched steps, time-major (a loop over
    time, never over the batch). With ``reward`` (a kernel that takes scores, ``kernel.score_clip``), the
    clipped score at each ``x_{k+1}`` goes to ``transition``, and the scores ``(B, T + 1, d)`` and log-rewards
    ``(B, T + 1)`` at every state come back (those at ``x_0..x_first`` evaluated after the loop); else None."""
    b, d, T = *x_last.shape, num_steps
    noise = torch.randn(T, b, d, generator=generator, dtype=x_last.dtype, device=x_last.device)
    states = x_last.new_zeros(T + 1, b, d)
    states[T] = x_last
    scores = log_r = None
    if reward is not None:
        scores, log_r = x_last.new_zeros(T + 1, b, d), x_last.new_zeros(T + 1, b)
    for k in range(T - 1, first - 1, -1):
        if reward is None:
            mean, var = kernel.transition(states[k + 1], k, ctx)
        else:
            log_r[k + 1], scores[k + 1] = clipped_score(reward, states[k + 1], kernel.score_clip)
            mean, var = kernel.transition(states[k + 1], k, ctx, scores[k + 1])
        _gaussian_step(mean, process.noise_std(var), noise[k], states[k])
    if reward is None:
        return states.transpose(0, 1).contiguous(), None, None
    lr, sc = clipped_score(reward, states[: first + 1].reshape(-1, d), kernel.score_clip)
    log_r[: first + 1], scores[: first + 1] = lr.view(first + 1, b), sc.view(first + 1, b, d)
    return states.transpose(0, 1).contiguous(), scores.transpose(0, 1).contiguous(), log_r.t().contiguous()


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
    once (or as recorded while sampling), log p_B from the reference or the learned ``backward`` kernel.

    Scores a Langevin kernel needs and the paths do not carry are evaluated here in one batched call. Segments
    (``paths.first_step`` a, ``b - a`` steps) need a backward kernel and are scored over their own steps (the
    ``(B, b - a)`` log-probabilities; ``- log p_0(x_0)`` folded in only when a = 0)."""
    states, condition = paths.states, paths.condition
    length = states.shape[1] - 1
    whole = paths.first_step == 0 and length == mdp.num_steps
    steps = None if whole else slice(paths.first_step, paths.first_step + length)
    log_pf, scores = paths.log_pf, paths.scores
    if scores is None and log_pf is None and kernel.gaussian and kernel.score_clip is not None:
        scores = _states_rewards(mdp, states[:, :-1], condition, kernel.score_clip)[1]  # not recorded: evaluate
    if log_pf is None:
        ref, record = mdp.reference, paths.record
        ctx = kernel.context(condition, ref) if record is None else kernel.context(condition, ref, record)
        log_pf = _path_log_pf(kernel, states, ctx, scores, steps)
    next_scores = _next_scores(mdp, kernel, paths, scores, backward)
    log_pb = _path_log_pb(mdp, states, condition, backward, steps, next_scores)
    return Trajectories(states, log_pf, log_pb, paths.log_r, None, condition_index)


def _path_log_pf(kernel, states: torch.Tensor, ctx, scores, steps=None) -> torch.Tensor:
    x, x_next = states[:, :-1], states[:, 1:]
    if not kernel.gaussian:
        if steps is not None:
            raise ValueError(f"{type(kernel).__name__} is not Gaussian and scores whole paths only")
        return kernel.log_prob(x, x_next, ctx)
    affine = getattr(kernel, "affine_drift", None)
    if scores is None and affine is not None and steps is None:
        drift = affine(x, ctx)
        if drift is not None:
            log_pf = _fused_log_pf(x, x_next, drift)
            if log_pf is not None:
                return log_pf
    mean, var = kernel.transition(x, steps, ctx, scores)
    return process.gaussian_log_prob(x_next, mean, var)


def _next_scores(mdp, kernel, paths: Paths, scores, backward) -> torch.Tensor | None:
    """The clipped scores at ``states[:, 1:]`` for a backward kernel that takes them, else None: from ``scores``
    (at ``states[:, :-1]``, of a forward kernel with the same clip) and the terminal state's (recorded by a backward
    rollout, else evaluated here); all of them in one batched call otherwise."""
    clip = getattr(backward, "score_clip", None)
    if clip is None:
        return None
    states, condition = paths.states, paths.condition
    if scores is None or kernel.score_clip != clip:
        return _states_rewards(mdp, states[:, 1:], condition, clip)[1]
    last = paths.terminal_score
    if last is None:
        last = _states_rewards(mdp, states[:, -1:], condition, clip)[1][:, 0]
    return torch.cat([scores[:, 1:], last.unsqueeze(1)], 1)


def _path_log_pb(mdp, states: torch.Tensor, condition, backward, steps=None, next_scores=None) -> torch.Tensor:
    ref = mdp.reference
    if backward is None:
        if steps is not None:
            raise ValueError("a segment of a path is scored with a backward kernel (backward=None given)")
        return ref.log_pb_path(states)
    a = 0 if steps is None else steps.start
    first = 1 if a == 0 and not ref.random_start else 0  # the bridge's x_0 = 0: its entry is 0
    ctx = backward.context(condition, mdp.reference)
    rows = slice(a + first, None if steps is None else steps.stop)
    extra = {} if next_scores is None else {"score": next_scores[:, first:]}
    mean, var = backward.transition(states[:, first + 1 :], rows, ctx, **extra)
    lp = process.gaussian_log_prob(states[:, first:-1], mean, var)
    if first:  # the bridge's point mass at 0
        return torch.cat([lp.new_zeros(lp.shape[0], 1), lp], dim=1)
    if a > 0:  # a segment that does not start at x_0 ~ p_0
        return lp
    return torch.cat([lp[:, :1] - ref.initial_log_prob(states[:, 0]).unsqueeze(-1), lp[:, 1:]], 1)
