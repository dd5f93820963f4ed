"""The forward Gaussian policy of a diffusion sampler, and its optional learned backward correction.

Forward kernel: ``p_F(x_{k+1} | x_k) = N(x_k + dt * f, sigma^2 * dt * exp(g))`` where ``(f, g)`` come
from a joint network of ``(x_k, t_k)``; ``g = 0`` unless the variance is learned, then
``g = range * tanh(raw)``. With the Langevin parametrisation (LP), ``f = net(x, t) + scale(t) *
clip(grad log R(x))``. Both outputs are clipped at ``clip_output``.

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
from torch import nn

from agents.networks import JointNet, LangevinScaleNet
from envs import process


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


def clipped_score(target, x: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log R(x), clip(grad log R(x)))`` at a detached copy of ``x``; both results carry no graph."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        log_r = target.log_reward(xg)
        (grad,) = torch.autograd.grad(log_r.sum(), xg)
    return log_r.detach(), torch.nan_to_num(grad).clamp_(-clip, clip)


class DiffusionPolicy(nn.Module):
    """Forward policy (and optional backward correction) for an MDP with ``num_steps`` and ``t_scale``;
    ``cond_dim`` for a conditional target."""

    def __init__(
        self,
        dim: int,
        num_steps: int,
        t_scale: float,
        config: PolicyConfig = PolicyConfig(),
        cond_dim: int | None = None,
    ):
        super().__init__()
        self.dim, self.num_steps, self.t_scale, self.config = dim, num_steps, t_scale, config
        self.dt = 1.0 / num_steps
        self.cond_dim = cond_dim
        c = config
        # The log-variance head exists only when the variance is learned (no wasted FLOPs otherwise).
        out_dim = 2 * dim if c.learn_variance else dim
        self.net = JointNet(dim, out_dim, c.hidden_dim, c.harmonics, c.joint_layers, True, cond_dim)
        self.langevin_scale = (
            LangevinScaleNet(dim if c.langevin_per_dim else 1, c.hidden_dim, c.harmonics, c.langevin_layers)
            if c.langevin
            else None
        )
        self.backward = (
            JointNet(dim, 2 * dim, c.hidden_dim, c.harmonics, c.joint_layers, True, cond_dim)
            if c.learn_backward
            else None
        )
        self.register_buffer("times", process.time_grid(num_steps))

    # --- forward kernel ---------------------------------------------------------------------------

    def time_features(self, t: torch.Tensor):
        """Everything that depends on time only, for times ``t`` ``(n,)``: (embedding, Langevin scale)."""
        scale = self.langevin_scale(t) if self.langevin_scale is not None else None
        return self.net.embed_time(t), scale

    def embed_condition(self, condition: torch.Tensor | None) -> torch.Tensor | None:
        """``(B, hidden)`` embeddings of the trajectories' conditions, to add to the time embedding."""
        return None if condition is None else self.net.embed_condition(condition)

    def kernel(self, x, t_emb, lgv_scale=None, score=None):
        """Mean and variance of ``p_F(. | x)``; variance is a float unless the variance is learned."""
        out = self.net(x, t_emb)
        drift = out[..., : self.dim]
        if self.langevin_scale is not None:
            drift = drift + lgv_scale * score
        clip = self.config.clip_output
        mean = torch.add(x, drift.clamp(-clip, clip), alpha=self.dt)
        base_var = self.t_scale * self.dt
        if self.config.learn_variance:
            logvar = self.config.log_var_range * torch.tanh(out[..., self.dim :].clamp(-clip, clip))
            return mean, base_var * logvar.exp()
        return mean, base_var

    def log_pf_path(self, states: torch.Tensor, scores: torch.Tensor | None = None, condition=None) -> torch.Tensor:
        """``(B, T)`` log-probabilities of every transition of paths ``(B, T + 1, d)`` in one pass.

        ``scores`` ``(B, T, d)``: the clipped scores at ``states[:, :-1]``, needed with LP.
        ``condition`` ``(B, cond_dim)``: the paths' conditions (conditional targets only).
        """
        t_emb, scale = self.time_features(self.times[:-1])
        if condition is not None:
            t_emb = t_emb + self.embed_condition(condition).unsqueeze(1)  # (B, T, hidden)
        mean, var = self.kernel(states[:, :-1], t_emb, scale, scores)
        return process.gaussian_log_prob(states[:, 1:], mean, var)

    # --- backward kernel --------------------------------------------------------------------------

    def log_pb_path(self, states: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T)`` backward log-probabilities: the Brownian bridge, or its learned correction."""
        if self.backward is None:
            return process.bridge_log_pb_path(states, self.t_scale)
        c_emb = None if condition is None else self.backward.embed_condition(condition).unsqueeze(1)
        mean, var = self.backward_kernel(states[:, 2:], self.times[2:], self.times[1:-1], c_emb)
        lp = process.gaussian_log_prob(states[:, 1:-1], mean, var)
        return torch.cat([lp.new_zeros(lp.shape[0], 1), lp], dim=1)

    def backward_kernel(self, x_next, t_next, t_prev, c_emb=None):
        """Corrected bridge kernel ``N(x' (1 - dt/t' c_mu), sigma^2 dt (t/t') c_var)``, for ``t > 0``.

        ``c_emb``: condition embeddings broadcastable against ``x_next``'s rows (conditional targets).
        """
        emb = self.backward.embed_time(t_next)
        out = self.backward(x_next, emb if c_emb is None else emb + c_emb)
        r = self.config.backward_range
        c_mu = 1 + r * torch.tanh(out[..., : self.dim])
        c_var = 1 + r * torch.tanh(out[..., self.dim :])
        t_next, t_prev = t_next.unsqueeze(-1), t_prev.unsqueeze(-1)
        mean = x_next * (1 - self.dt / t_next * c_mu)
        var = self.t_scale * self.dt * (t_prev / t_next) * c_var
        return mean, var

    @torch.no_grad()
    def sample_backward(self, x_last: torch.Tensor, generator: torch.Generator | None = None, condition=None):
        """Paths ``(B, T + 1, d)`` drawn backward from ``x_last`` through the (corrected) reference."""
        if self.backward is None:
            return process.bridge_sample_backward(x_last, self.num_steps, self.t_scale, generator)
        b, d, T = x_last.shape[0], self.dim, self.num_steps
        c_emb = None if condition is None else self.backward.embed_condition(condition)
        states = x_last.new_zeros(b, T + 1, d)
        states[:, T] = x_last
        noise = torch.randn(b, T, d, generator=generator, dtype=x_last.dtype, device=x_last.device)
        for k in range(T - 1, 0, -1):
            mean, var = self.backward_kernel(states[:, k + 1], self.times[k + 1], self.times[k], c_emb)
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
