"""The forward Gaussian policy of a diffusion sampler, and its optional learned backward correction.

Forward kernel (on the default Brownian-bridge reference): ``p_F(x_{k+1} | x_k) = N(x_k + dt * f,
sigma^2 * dt * exp(g))`` where ``(f, g)`` come from a joint network of ``(x_k, t_k)``; ``g = 0``
unless the variance is learned, then ``g = range * tanh(raw)``. With the Langevin parametrisation
(LP), ``f = net(x, t) + scale(t) * clip(grad log R(x))``. Both outputs are clipped at
``clip_output``. In general the kernel is ``N(c_k x_k + g_k f, v_k exp(g))`` with per-step
coefficients from the reference process and the parametrisation (``agents.parametrisations``:
"euler", "dds", "dis"); the policy starts from the reference's ``p_0`` (``envs.reference``).

The policy is a Gaussian forward kernel of the trajectory engine (``envs.engine.ForwardKernel``):
``transition`` gives the mean and variance of one step while sampling, or of all B*T transitions of
a batch of paths at once (one network pass, used by every off-policy objective since their states
carry no gradient), and ``affine_drift`` lets the engine evaluate a fixed-variance kernel fused. The
learned correction of the backward kernel (``BackwardCorrection``) is a backward kernel of the engine.

For a conditional target (``cond_dim``) the networks also see the condition: its embedding
(``embed_condition``, once per trajectory) is added to the time embedding (``context``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from diffsampler.agents.backward_correction import BackwardCorrection
from diffsampler.agents.cmcd import CMCDConfig
from diffsampler.agents.config import check_fields, check_finite
from diffsampler.agents.kernels import check_kernel_config
from diffsampler.agents.networks import NETWORKS, ActivationRecord, JointNet, LangevinScaleNet
from diffsampler.agents.parametrisations import PARAMETRISATIONS
from diffsampler.envs import process
from diffsampler.envs.engine import AffineDrift
from diffsampler.envs.reference import Reference, make_reference


class Coefs(NamedTuple):
    """A parametrisation's per-step coefficients (floats, or ``(T,)`` tensors): ``N(c x + g f, v)``."""

    mean_coef: Any
    drift_coef: Any
    base_var: Any
    score_weight: Any


class Context(NamedTuple):
    """The policy's ``context``: time embeddings (T, hidden), Langevin scales (T, .) or None, condition
    embeddings (B, hidden) or None, the coefficients of a grid other than the policy's own (or None), and
    the network's activation record (``agents.networks.ActivationRecord``, or None)."""

    t_emb: torch.Tensor
    scale: torch.Tensor | None
    c_emb: torch.Tensor | None
    coefs: Coefs | None
    record: ActivationRecord | None = None


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
        network: the drift network, a key of ``NETWORKS`` ("mlp": ``JointNet``; "egnn": the equivariant
            ``agents.egnn.EGNN`` of a particle target), or "auto": the target's ``default_network``.
        egnn_hidden, egnn_layers: width and message-passing layers of the EGNN (sized for a CPU: DW-4 at
            batch 300 and T = 100 trains at about a second per iteration).
        kernel: the sampler, a key of ``agents.kernels.KERNELS``: "diffusion" (this module's policy) or "cmcd"
            (``agents.cmcd``: annealed Langevin with a learned control of the same networks, on the VP reference).
        cmcd: the "cmcd" kernel's annealing and step sizes.
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
    network: str = "auto"
    egnn_hidden: int = 32
    egnn_layers: int = 2
    kernel: str = "diffusion"
    cmcd: CMCDConfig = field(default_factory=CMCDConfig)

    def __post_init__(self):
        check_fields(self)
        for name in ("hidden_dim", "harmonics", "langevin_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"PolicyConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.joint_layers < 0:
            raise ValueError(f"PolicyConfig.joint_layers must be >= 0, got {self.joint_layers!r}")
        check_finite(self, "log_var_range", "clip_output", "clip_score")
        if not 0 < self.backward_range < 1:
            raise ValueError(f"PolicyConfig.backward_range must be in (0, 1), got {self.backward_range!r}")
        if self.parametrisation not in PARAMETRISATIONS:
            raise ValueError(
                f"unknown PolicyConfig.parametrisation {self.parametrisation!r}; registered: {sorted(PARAMETRISATIONS)}"
            )
        if self.network != "auto" and self.network not in NETWORKS:
            raise ValueError(f"unknown PolicyConfig.network {self.network!r}; registered: auto, {sorted(NETWORKS)}")
        if not math.isfinite(self.langevin_init):
            raise ValueError(f"PolicyConfig.langevin_init must be finite, got {self.langevin_init!r}")
        check_kernel_config(self)


class DiffusionPolicy(nn.Module):
    """Forward policy (and optional backward correction) for an MDP with ``num_steps`` and ``t_scale``.

    ``reference`` (default: the Brownian bridge of ``num_steps`` and ``t_scale``) supplies ``p_0``, the
    backward kernels and, with the parametrisation, the forward kernel's per-step coefficients.
    ``cond_dim``: the size of an episode's condition, for a conditional target.
    """

    gaussian = True  # a Gaussian kernel of the engine

    def __init__(
        self,
        dim: int,
        num_steps: int,
        t_scale: float,
        config: PolicyConfig = PolicyConfig(),
        reference: Reference | None = None,
        cond_dim: int | None = None,
        target=None,
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
        c = config
        # The log-variance head exists only when the variance is learned (no wasted FLOPs otherwise).
        network = c.network if c.network != "auto" else getattr(target, "default_network", "mlp")
        self.net = NETWORKS[network](c, target, dim, 2 if c.learn_variance else 1, cond_dim)
        self.langevin_scale = (
            LangevinScaleNet(
                dim if c.langevin_per_dim else 1, c.hidden_dim, c.harmonics, c.langevin_layers, c.langevin_init
            )
            if c.langevin
            else None
        )
        self.backward = BackwardCorrection(dim, reference, c, cond_dim) if c.learn_backward else None
        self.register_buffer("times", process.time_grid(num_steps))

    # --- the forward kernel (``envs.engine.ForwardKernel``) ---------------------------------------------

    @property
    def score_clip(self) -> float | None:
        """The clip of the score the Langevin parametrisation takes; None without it."""
        return self.config.clip_score if self.langevin_scale is not None else None

    def time_features(self, t: torch.Tensor):
        """Everything that depends on time only, for times ``t`` ``(n,)``: (embedding, Langevin scale)."""
        scale = self.langevin_scale(t) if self.langevin_scale is not None else None
        return self.net.embed_time(t), scale

    def embed_condition(self, condition: torch.Tensor | None) -> torch.Tensor | None:
        """``(B, hidden)`` embeddings of the trajectories' conditions, to add to the time embedding."""
        return None if condition is None else self.net.embed_condition(condition)

    def context(self, condition=None, reference: Reference | None = None, record=None) -> Context:
        """What depends on time and the condition only. ``reference``: the MDP's reference, whose time grid
        may differ from the policy's own (a random training grid, evaluation with another T): its times
        and per-step coefficients are then computed here (``coefs``); None for the policy's own.
        ``record``: the engine's ``new_record()`` to fill while sampling, or a filled one to replay."""
        coefs, times = None, self.times
        if reference is not None and not reference.same_as(self.reference):
            coefs, times = self._coefs_of(reference), reference.grid_like(self.times)
        return Context(*self.time_features(times[:-1]), self.embed_condition(condition), coefs, record)

    def new_record(self, num_steps: int) -> ActivationRecord | None:
        """A record of the network's activations over a rollout of ``num_steps``, replayed by ``score``
        (``JointNet`` only; None for other networks)."""
        return ActivationRecord(num_steps) if isinstance(self.net, JointNet) else None

    def _coefs_of(self, reference: Reference) -> Coefs:
        """The parametrisation's coefficients on ``reference`` (its grid), on the policy's device."""
        table = PARAMETRISATIONS[self.config.parametrisation].table(self.config.parametrisation, reference)
        values = (table.mean_coef, table.drift_coef, table.var, table.score_weight)
        return Coefs(*(v.to(self.times) if isinstance(v, torch.Tensor) else v for v in values))

    def _own_coefs(self, ctx: Context) -> Coefs:
        return ctx.coefs or Coefs(self.mean_coef, self.drift_coef, self.base_var, self.score_weight)

    def transition(self, x, step: int | None, ctx: Context, score=None):
        """Mean and variance of ``p_F(. | x)`` at step ``step`` (``x`` (n, d)), or at every step
        (``step=None``, ``x`` (B, T, d)); ``ctx`` from ``context``; ``score``: the clipped score (LP)."""
        t_emb, scale, c_emb, coefs, record = ctx
        extra = {} if coefs is None else {"coefs": coefs}
        if record is not None:
            extra["record"] = record
        if step is None:
            emb = t_emb if c_emb is None else t_emb + c_emb.unsqueeze(1)
            return self.kernel(x, emb, scale, score, **extra)
        emb = t_emb[step] if c_emb is None else t_emb[step] + c_emb
        return self.kernel(x, emb, None if scale is None else scale[step], score, step=step, **extra)

    def fixed_std(self, extra_std: float, ctx: Context):
        """Sampling std of every step with ``extra_std^2`` added (a float, or ``(T, 1, 1)`` when per-step);
        None when the variance is learned (it depends on x)."""
        if self.config.learn_variance:
            return None
        base_var = self._own_coefs(ctx).base_var
        if isinstance(base_var, torch.Tensor):
            return (base_var + extra_std**2).sqrt().view(-1, 1, 1)
        return process.noise_std(base_var, extra_std)

    def affine_drift(self, x: torch.Tensor, ctx: Context) -> AffineDrift | None:
        """The kernel over all steps as ``N(a x + g clip(h W^T + b), v)`` (``h``: the network's last hidden
        features), for the engine's fused evaluation; None with LP or a learned variance, or for a
        subclass with its own kernel."""
        t_emb, scale, c_emb, _, record = ctx
        if scale is not None or self.config.learn_variance or type(self).kernel is not DiffusionPolicy.kernel:
            return None
        if not isinstance(self.net, JointNet):  # no affine last layer to fuse
            return None
        emb = t_emb if c_emb is None else t_emb + c_emb.unsqueeze(1)
        last = self.net.last
        c = self._own_coefs(ctx)
        coefs = [self._at(coef, None) for coef in (c.mean_coef, c.drift_coef, c.base_var)]
        replayed = self.net.hidden_time_major(x, emb, record)
        if replayed is not None:  # the rollout's own row order: per-step coefficients (T, 1, 1)
            hidden, states, residual = replayed
            coefs = [coef.unsqueeze(-1) if isinstance(coef, torch.Tensor) else coef for coef in coefs]
            return AffineDrift(hidden, last.weight, last.bias, *coefs, self.config.clip_output, states, residual)
        hidden = self.net.hidden_replayed(x, emb, record)
        return AffineDrift(hidden, last.weight, last.bias, *coefs, self.config.clip_output)

    @staticmethod
    def _at(coef, step):
        """A per-step coefficient at step ``step`` (int), or for all T steps (``step=None``, shape (T, 1))."""
        if not isinstance(coef, torch.Tensor):
            return coef
        return coef.unsqueeze(-1) if step is None else coef[step]

    def kernel(self, x, t_emb, lgv_scale=None, score=None, step=None, coefs: Coefs | None = None, record=None):
        """Mean and variance of ``p_F(. | x)``; variance is a float unless learned or per-step.

        ``step``: the step index k when ``x`` is ``(n, d)`` at one time; None when ``x`` is
        ``(B, T, d)`` over all steps (or the coefficients are the same at every step, as on the bridge).
        ``coefs``: the per-step coefficients of another time grid (default: the policy's own).
        ``record``: an ``ActivationRecord`` written at each step and replayed over whole paths.
        """
        mean_coef, drift_coef, base_var, score_weight = coefs or (
            self.mean_coef,
            self.drift_coef,
            self.base_var,
            self.score_weight,
        )
        if record is None:
            out = self.net(x, t_emb)
        elif step is None:
            out = self.net.forward_replayed(x, t_emb, record)
        else:
            out = self.net.forward_recorded(x, t_emb, record, step)
        drift = out[..., : self.dim]
        if self.langevin_scale is not None:
            if score_weight is not None:  # DIS: the interpolated score relative to the reference's
                score = self._at(score_weight, step) * (score + x / self.t_scale)
            drift = drift + lgv_scale * score
        clip = self.config.clip_output
        drift = torch.nn.functional.hardtanh(drift, -clip, clip)  # clamp's values, a one-kernel backward
        g = self._at(drift_coef, step)
        if isinstance(mean_coef, float) and mean_coef == 1.0:
            mean = torch.add(x, drift, alpha=g) if isinstance(g, float) else x + g * drift
        else:
            mean = self._at(mean_coef, step) * x + g * drift
        base_var = self._at(base_var, step)
        if self.config.learn_variance:
            logvar = self.config.log_var_range * torch.tanh(out[..., self.dim :].clamp(-clip, clip))
            return mean, base_var * logvar.exp()
        return mean, base_var


def exploration_std_at(iteration: int, std: float, decay_iterations: int | None) -> float:
    """Exploration noise std at an iteration: constant, or decaying linearly to 0 at ``decay_iterations``."""
    if std <= 0 or decay_iterations is None:
        return max(std, 0.0)
    return std * max(0.0, 1.0 - iteration / decay_iterations)
