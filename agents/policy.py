"""The forward Gaussian policy of a diffusion sampler, and its optional learned backward correction.

Forward kernel (on the default Brownian-bridge reference): ``p_F(x_{k+1} | x_k) = N(x_k + dt * f,
sigma^2 * dt * exp(g))`` where ``(f, g)`` come from a joint network of ``(x_k, t_k)``; ``g = 0``
unless the variance is learned, then ``g = range * tanh(raw)``. With the Langevin parametrisation
(LP), ``f = net(x, t) + scale(t) * clip(grad log R(x))``. Both outputs are clipped at
``clip_output``. In general the kernel is ``N(c_k x_k + g_k f, v_k exp(g))`` with per-step
coefficients from the reference process and the parametrisation (``agents.parametrisations``:
"euler", "dds", "dis"); the policy starts from the reference's ``p_0`` (``envs.reference``).

Two ways to evaluate the policy:

* step by step (``kernel``) while sampling, one time index at a time;
* all transitions of a batch of paths at once (``log_pf_path``), one network pass over B*T rows, used
  by every off-policy objective since their states carry no gradient.

For a conditional target (``cond_dim``) the networks also see the condition: its embedding
(``embed_condition``, once per trajectory) is added to the time embedding, and the path-level
functions take the trajectories' conditions ``(B, cond_dim)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffsampler.agents.fused import residual_squared_norm
from diffsampler.agents.networks import JointNet, LangevinScaleNet
from diffsampler.agents.parametrisations import PARAMETRISATIONS
from diffsampler.envs import process
from diffsampler.envs.reference import Reference, make_reference
from torch import nn


@dataclass(frozen=True)
class PolicyConfig:
    """Architecture and parametrisation of the forward policy.

    Attributes:
        hidden_dim: width of every hidden layer.
        harmonics: number of Fourier time features.
        joint_layers: hidden layers of the joint MLP after the summed embeddings.
        langevin: use the Langevin parametrisation (needs a differentiable log-reward).
        langevin_per_dim: the Langevin scale has one output per dimension (else a scalar).
        langevin_layers: linear layers of the Langevin scale network.
        learn_variance: learn the log-variance g (tanh-bounded by log_var_range).
        log_var_range: bound of the learned log-variance.
        clip_output: clip drift and raw log-variance to +-clip_output.
        clip_score: clip the score grad log R to +-clip_score.
        learn_backward: learn a correction (1 + range * tanh) of the backward kernel's mean and variance.
        backward_range: range of that correction.
        parametrisation: a key of ``agents.parametrisations.PARAMETRISATIONS`` ("euler", or "dds" / "dis"
            on the VP reference).
        langevin_init: initial value of the Langevin scale (the bias of its zero-weight last layer).
    """

    hidden_dim: int = 64
    harmonics: int = 64
    joint_layers: int = 2
    langevin: bool = False
    langevin_per_dim: bool = False
    langevin_layers: int = 3
    learn_variance: bool = False
    log_var_range: float = 4.0
    clip_output: float = 1e4
    clip_score: float = 1e2
    learn_backward: bool = False
    backward_range: float = 0.1
    parametrisation: str = "euler"
    langevin_init: float = 0.01

    def __post_init__(self):
        for name in ("hidden_dim", "harmonics", "langevin_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"PolicyConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.joint_layers < 0:
            raise ValueError(f"PolicyConfig.joint_layers must be >= 0, got {self.joint_layers!r}")
        for name in ("log_var_range", "clip_output", "clip_score"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PolicyConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 < self.backward_range < 1:
            raise ValueError(f"PolicyConfig.backward_range must be in (0, 1), got {self.backward_range!r}")
        if self.parametrisation not in PARAMETRISATIONS:
            raise ValueError(
                f"unknown PolicyConfig.parametrisation {self.parametrisation!r}; registered: {sorted(PARAMETRISATIONS)}"
            )
        if not math.isfinite(self.langevin_init):
            raise ValueError(f"PolicyConfig.langevin_init must be finite, got {self.langevin_init!r}")


def clipped_score(target, x: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log R(x), clip(grad log R(x)))`` at a detached copy of ``x``; both results carry no graph."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        log_r = target.log_reward(xg)
        (grad,) = torch.autograd.grad(log_r.sum(), xg)
    return log_r.detach(), torch.nan_to_num(grad).clamp_(-clip, clip)


class DiffusionPolicy(nn.Module):
    """Forward policy (and optional backward correction) for an MDP with ``num_steps`` and ``t_scale``.

    ``reference`` (default: the Brownian bridge of ``num_steps`` and ``t_scale``) supplies ``p_0``, the
    backward kernels and, with the parametrisation, the forward kernel's per-step coefficients.
    ``cond_dim``: the size of an episode's condition, for a conditional target.
    """

    def __init__(
        self,
        dim: int,
        num_steps: int,
        t_scale: float,
        config: PolicyConfig = PolicyConfig(),
        reference: Reference | None = None,
        cond_dim: int | None = None,
    ):
        super().__init__()
        self.dim, self.num_steps, self.t_scale, self.config = dim, num_steps, t_scale, config
        self.dt = 1.0 / num_steps
        self.cond_dim = cond_dim
        if reference is None:
            reference = make_reference("bridge", num_steps, t_scale)
        if (reference.num_steps, reference.t_scale) != (num_steps, float(t_scale)):
            raise ValueError(f"{reference!r} does not match num_steps={num_steps}, t_scale={t_scale}")
        self.reference = reference
        table = PARAMETRISATIONS[config.parametrisation].table(config.parametrisation, reference)
        for name in ("mean_coef", "drift_coef", "base_var", "score_weight"):
            value = getattr(table, "var" if name == "base_var" else name)
            if isinstance(value, torch.Tensor):  # per-step: a buffer that follows .to() / .double()
                self.register_buffer(name, value.float(), persistent=False)
            else:
                setattr(self, name, value)
        # The bridge pins x_0, so its first backward kernel is the point mass; VP's is a real kernel.
        self.first_backward = 0 if reference.random_start else 1
        c = config
        # The log-variance head exists only when the variance is learned (no wasted FLOPs otherwise).
        out_dim = 2 * dim if c.learn_variance else dim
        self.net = JointNet(dim, out_dim, c.hidden_dim, c.harmonics, c.joint_layers, True, cond_dim)
        self.langevin_scale = (
            LangevinScaleNet(
                dim if c.langevin_per_dim else 1, c.hidden_dim, c.harmonics, c.langevin_layers, c.langevin_init
            )
            if c.langevin
            else None
        )
        self.backward = (
            JointNet(dim, 2 * dim, c.hidden_dim, c.harmonics, c.joint_layers, True, cond_dim)
            if c.learn_backward
            else None
        )
        self.register_buffer("times", process.time_grid(num_steps))
        if c.learn_backward:  # p_B(x_k | x_{k+1}) = N(m_k x_{k+1}, v_k): the correction acts on 1 - m_k and v_k
            m, v = reference.backward_coefs()
            self.register_buffer("back_shrink", (1 - m).float(), persistent=False)
            self.register_buffer("back_var", v.float(), persistent=False)

    def initial_positions(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws of ``x_0 ~ p_0`` on the policy's device (zeros, and no random numbers, for the bridge)."""
        return self.reference.initial_sample(n, self.dim, generator, self.times.device, self.times.dtype)

    # --- forward kernel ---------------------------------------------------------------------------

    def time_features(self, t: torch.Tensor):
        """Everything that depends on time only, for times ``t`` ``(n,)``: (embedding, Langevin scale)."""
        scale = self.langevin_scale(t) if self.langevin_scale is not None else None
        return self.net.embed_time(t), scale

    def embed_condition(self, condition: torch.Tensor | None) -> torch.Tensor | None:
        """``(B, hidden)`` embeddings of the trajectories' conditions, to add to the time embedding."""
        return None if condition is None else self.net.embed_condition(condition)

    @staticmethod
    def _at(coef, step):
        """A per-step coefficient at step ``step`` (int), or for all T steps (``step=None``, shape (T, 1))."""
        if not isinstance(coef, torch.Tensor):
            return coef
        return coef.unsqueeze(-1) if step is None else coef[step]

    def kernel(self, x, t_emb, lgv_scale=None, score=None, step: int | None = None):
        """Mean and variance of ``p_F(. | x)``; variance is a float unless learned or per-step.

        ``step``: the step index k when ``x`` is ``(n, d)`` at one time; None when ``x`` is
        ``(B, T, d)`` over all steps (or the coefficients are the same at every step, as on the bridge).
        """
        out = self.net(x, t_emb)
        drift = out[..., : self.dim]
        if self.langevin_scale is not None:
            if self.score_weight is not None:  # DIS: the interpolated score relative to the reference's
                score = self._at(self.score_weight, step) * (score + x / self.t_scale)
            drift = drift + lgv_scale * score
        clip = self.config.clip_output
        drift = drift.clamp(-clip, clip)
        g = self._at(self.drift_coef, step)
        if isinstance(self.mean_coef, float) and self.mean_coef == 1.0:
            mean = torch.add(x, drift, alpha=g) if isinstance(g, float) else x + g * drift
        else:
            mean = self._at(self.mean_coef, step) * x + g * drift
        base_var = self._at(self.base_var, step)
        if self.config.learn_variance:
            logvar = self.config.log_var_range * torch.tanh(out[..., self.dim :].clamp(-clip, clip))
            return mean, base_var * logvar.exp()
        return mean, base_var

    def sampling_std(self, exploration_std: float):
        """Std of the fixed-variance kernel plus exploration: a float, or ``(T, 1, 1)`` when per-step."""
        if isinstance(self.base_var, torch.Tensor):
            return (self.base_var + exploration_std**2).sqrt().view(-1, 1, 1)
        return noise_std(self.base_var, exploration_std)

    def log_pf_path(self, states: torch.Tensor, scores: torch.Tensor | None = None, condition=None) -> torch.Tensor:
        """``(B, T)`` log-probabilities of every transition of paths ``(B, T + 1, d)`` in one pass.

        ``scores`` ``(B, T, d)``: the clipped scores at ``states[:, :-1]``, needed with LP.
        ``condition`` ``(B, cond_dim)``: the paths' conditions (conditional targets only).
        """
        t_emb, scale = self.time_features(self.times[:-1])
        if condition is not None:
            t_emb = t_emb + self.embed_condition(condition).unsqueeze(1)  # (B, T, hidden)
        # The fused path computes this class's kernel; a subclass with its own kernel takes the generic one.
        if scale is None and not self.config.learn_variance and type(self).kernel is DiffusionPolicy.kernel:
            log_pf = self._log_pf_fixed_variance(states, t_emb)
            if log_pf is not None:
                return log_pf
        mean, var = self.kernel(states[:, :-1], t_emb, scale, scores)
        return process.gaussian_log_prob(states[:, 1:], mean, var)

    def _log_pf_fixed_variance(self, states: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor | None:
        """``log_pf_path`` of a fixed-variance kernel without the Langevin term, in few passes over the paths.

        With drift ``f = h W^T + b`` (``h``: the last layer's input) the residual of a transition is
        ``r = (x' - a x) - g [h, 1] [W, b]^T`` and ``log p_F = -|r|^2 / 2v + c``: ``agents.fused`` evaluates
        ``|r|^2`` over all B T rows with one ``addmm`` and a norm, and its gradient by two matrix products.
        That is the generic path's value and gradient without its elementwise passes over ``(B, T, d)``
        (the clamp, the mean, the difference, the square, and their backward).
        Returns None, for the generic path, when the output clip might bind: the bound
        ``max |f| <= max_n |h_n| max_i |W_i| + max |b|`` is checked first (one host sync per call).
        """
        x, x_next = states[:, :-1], states[:, 1:]
        b, T, d = x.shape
        h = self.net.hidden(x, t_emb)
        w, bias = self.net.last.weight, self.net.last.bias
        with torch.no_grad():
            bound = h.norm(dim=-1).max() * w.norm(dim=-1).max() + bias.abs().max()
        if not bool(bound < self.config.clip_output):
            return None
        a, g = self._at(self.mean_coef, None), self._at(self.drift_coef, None)  # floats, or (T, 1)
        r0 = x_next - x if isinstance(a, float) and a == 1.0 else x_next - a * x
        h_aug = torch.cat([h, h.new_ones(b, T, 1)], -1)  # fold the bias into the product: [h, 1] [W, b]^T
        if isinstance(g, float):
            alpha = g
        else:  # per-step coefficients scale the rows
            h_aug, alpha = h_aug * g, 1.0
        w_aug = torch.cat([w, bias.unsqueeze(-1)], -1)
        sq = residual_squared_norm(r0.reshape(b * T, d), h_aug.reshape(b * T, -1), w_aug, alpha).view(b, T)
        var = self._at(self.base_var, None)
        if isinstance(var, float):
            return -0.5 * sq / var - 0.5 * d * (math.log(var) + process.LOG_2PI)
        var = var.squeeze(-1)
        return -0.5 * sq / var - 0.5 * d * (var.log() + process.LOG_2PI)

    # --- backward kernel --------------------------------------------------------------------------

    def log_pb_path(self, states: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T)`` backward log-probabilities: the reference's (entry 0 carrying ``- log p_0(x_0)``),
        or its learned correction (given the paths' conditions for a conditional target)."""
        if self.backward is None:
            return self.reference.log_pb_path(states)
        first = self.first_backward
        c_emb = None if condition is None else self.backward.embed_condition(condition).unsqueeze(1)
        mean, var = self.backward_kernel(states[:, first + 1 :], slice(first, None), c_emb)
        lp = process.gaussian_log_prob(states[:, first:-1], mean, var)
        if first:  # the bridge's point mass at 0
            return torch.cat([lp.new_zeros(lp.shape[0], 1), lp], dim=1)
        return torch.cat([lp[:, :1] - self.reference.initial_log_prob(states[:, 0]).unsqueeze(-1), lp[:, 1:]], 1)

    def backward_kernel(self, x_next, steps, c_emb=None):
        """Corrected reference kernel ``N(x' (1 - (1 - m_k) c_mu), v_k c_var)`` at steps ``steps`` (int or
        slice; ``x_next`` is ``x_{k+1}``). On the bridge, ``1 - m_k = dt / t_{k+1}`` and ``v_k = sigma^2 dt
        t_k / t_{k+1}``. ``c_emb``: condition embeddings broadcastable against ``x_next``'s rows."""
        emb = self.backward.embed_time(self.times[1:][steps])
        out = self.backward(x_next, emb if c_emb is None else emb + c_emb)
        r = self.config.backward_range
        c_mu = 1 + r * torch.tanh(out[..., : self.dim])
        c_var = 1 + r * torch.tanh(out[..., self.dim :])
        shrink, var = self.back_shrink[steps], self.back_var[steps]
        if isinstance(steps, slice):
            shrink, var = shrink.unsqueeze(-1), var.unsqueeze(-1)
        return x_next * (1 - shrink * c_mu), var * c_var

    @torch.no_grad()
    def sample_backward(self, x_last: torch.Tensor, generator: torch.Generator | None = None, condition=None):
        """Paths ``(B, T + 1, d)`` drawn backward from ``x_last`` through the (corrected) reference."""
        if self.backward is None:
            return self.reference.sample_backward(x_last, generator)
        b, d, T = x_last.shape[0], self.dim, self.num_steps
        c_emb = None if condition is None else self.backward.embed_condition(condition)
        states = x_last.new_zeros(b, T + 1, d)
        states[:, T] = x_last
        noise = torch.randn(b, T, d, generator=generator, dtype=x_last.dtype, device=x_last.device)
        for k in range(T - 1, self.first_backward - 1, -1):
            mean, var = self.backward_kernel(states[:, k + 1], k, c_emb)
            states[:, k] = mean + var.sqrt() * noise[:, k]
        return states


def exploration_std_at(iteration: int, std: float, decay_iterations: int | None) -> float:
    """Exploration noise std at an iteration: constant, or decaying linearly to 0 at ``decay_iterations``."""
    if std <= 0 or decay_iterations is None:
        return max(std, 0.0)
    return std * max(0.0, 1.0 - iteration / decay_iterations)


def noise_std(var, exploration_std: float):
    """Sampling std of a kernel of variance ``var`` with extra exploration variance ``std^2`` added."""
    if isinstance(var, torch.Tensor):
        return (var + exploration_std**2).sqrt()
    return math.sqrt(var + exploration_std**2)
