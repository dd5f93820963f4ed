"""Reference processes, selectable per environment: ``REFERENCES = {"bridge": ..., "vp": ...}``.

A reference is the fixed part of the path measure against which a sampler is trained: the
distribution ``p_0`` of the initial state ``x_0`` and the backward (noising) kernels
``p_B(x_k | x_{k+1})``, ``k = 0..T-1``. The target path measure is ``R(x_T) / Z * prod_k p_B``; the
forward policy starts from ``x_0 ~ p_0``; a trajectory's log-weight is

    log w = log R(x_T) + sum_k log p_B(x_k | x_{k+1}) - log p_0(x_0) - sum_k log p_F(x_{k+1} | x_k),

whose mean under the policy is the ELBO of log Z. Every ``log_pb`` here returns the k = 0 entry with
``- log p_0(x_0)`` folded in, so that objectives, metrics and the soft-RL reward see one ``(B, T)``
tensor and need no separate initial term. The maths lives in ``envs.process``; these classes only
bind its functions to ``(T, sigma2, schedule)``.

* ``"bridge"`` (default): ``x_0 = 0`` (point mass) and the Brownian bridge pinned at 0; the reference
  forward process is Brownian motion from 0, marginal ``N(0, sigma2 t)``.
* ``"vp"``: ``x_0 ~ N(0, sigma2 I)`` and the exact Ornstein-Uhlenbeck (VP-SDE) kernels of a linear
  beta schedule; the reference is stationary, marginal ``N(0, sigma2 I)`` at every t.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from diffsampler.envs import engine, process


class Reference:
    """Base class: ``num_steps`` (T), ``t_scale`` (sigma^2) and the time grid, validated.

    ``times``: a grid ``0 = t_0 < ... < t_T = 1`` (``envs.process.TIME_GRIDS``); None is the uniform
    ``t_k = k / T``, whose formulas are kept exactly as they are written for it.
    """

    name: ClassVar[str]
    random_start: ClassVar[bool]  # False: x_0 = 0 and p_B(x_0 | x_1) is the point mass at 0

    def __init__(self, num_steps: int, t_scale: float, times=None):
        process.check_process_args(num_steps, t_scale)
        self.num_steps, self.t_scale = int(num_steps), float(t_scale)
        self.dt = 1.0 / self.num_steps
        self.times = None if times is None else process.check_time_grid(times, self.num_steps)

    def kwargs(self) -> dict:
        """Schedule parameters beyond (T, sigma^2), as accepted by the constructor."""
        return {}

    @property
    def grid(self) -> torch.Tensor:
        """The times ``t_0..t_T`` (float64, CPU)."""
        return process.time_grid(self.num_steps, dtype=torch.float64) if self.times is None else self.times

    def grid_like(self, like: torch.Tensor) -> torch.Tensor:
        """The times in ``like``'s device and dtype (the uniform grid computed as ``k / T`` in that dtype)."""
        if self.times is None:
            return process.time_grid(self.num_steps, device=like.device, dtype=like.dtype)
        return self.times.to(like.device, like.dtype)

    def same_as(self, other: Reference) -> bool:
        """Whether ``other`` is this reference: the same process, T, sigma^2, schedule and time grid."""
        if other is self:
            return True
        same = (type(other), other.num_steps, other.t_scale, other.kwargs()) == (
            type(self),
            self.num_steps,
            self.t_scale,
            self.kwargs(),
        )
        if not same or (self.times is None) != (other.times is None):
            return False
        return self.times is None or torch.equal(self.times, other.times)

    def on_grid(self, times) -> Reference:
        """The same reference on another time grid (``T = len(times) - 1``)."""
        times = torch.as_tensor(times, dtype=torch.float64)
        return type(self)(times.shape[0] - 1, self.t_scale, times=times, **self.kwargs())

    def initial_sample(self, n: int, dim: int, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
        """``n`` draws of ``x_0 ~ p_0``, shape ``(n, dim)``."""
        raise NotImplementedError

    def initial_log_prob(self, x0: torch.Tensor) -> torch.Tensor:
        """``log p_0(x_0)`` ``(B,)``; 0 for the point mass (the convention of the folded k = 0 entry)."""
        raise NotImplementedError

    def forward_coefs(self):
        """The reference's own kernel in the generation direction, ``N(c_k x_k, v_k)``, as ``(c, v)``:
        floats when equal at every step, else ``(T,)`` float64 tensors."""
        raise NotImplementedError

    def backward_coefs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m, v)`` ``(T,)`` float64: ``p_B(x_k | x_{k+1}) = N(m_k x_{k+1}, v_k)`` (``v_0 = 0``: point mass)."""
        raise NotImplementedError

    def log_pb(self, x_prev: torch.Tensor, x_next: torch.Tensor, k_next) -> torch.Tensor:
        """``log p_B(x_prev | x_next)`` for transitions ending at ``k_next`` (int or ``(B,)``); the
        transitions with ``k_next == 1`` carry ``- log p_0(x_prev)``."""
        raise NotImplementedError

    def log_pb_path(self, states: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` backward log-probabilities of paths ``(B, T + 1, d)``, entry 0 folded as above."""
        raise NotImplementedError

    def sample_backward(self, x_last: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Paths ``(B, T + 1, d)`` drawn from the kernels backward from ``x_last`` ``(B, d)``: the engine's
        backward loop over this reference's own kernels (a reference may override it with a closed form)."""
        first = 0 if self.random_start else 1
        return engine.backward_loop(self, x_last, generator, None, first, self.num_steps)[0]

    # The backward-kernel protocol of ``envs.engine`` (``context``, ``transition``), so that the engine
    # samples the reference's kernels and a learned backward kernel with one loop.

    def context(self, condition=None, reference=None):
        return None

    def transition(self, x_next: torch.Tensor, step: int, ctx=None):
        """``(mean, var)`` of ``p_B(x_step | x_{step + 1} = x_next)``, var a 0-dim tensor."""
        m, v = self._backward_cast(x_next)
        return m[step] * x_next, v[step]

    def _backward_cast(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``backward_coefs()`` in ``like``'s device and dtype, converted once per (device, dtype)."""
        cache = self.__dict__.setdefault("_cast", {})
        key = (like.device, like.dtype)
        if key not in cache:
            m, v = self.backward_coefs()
            cache[key] = (m.to(like.device, like.dtype), v.to(like.device, like.dtype))
        return cache[key]

    def marginal_log_prob(self, x: torch.Tensor, t) -> torch.Tensor:
        """Log-density of the reference process's marginal at time ``t`` (scalar or broadcastable)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.kwargs().items())
        return f"{type(self).__name__}(num_steps={self.num_steps}, t_scale={self.t_scale}{extra})"


class BridgeReference(Reference):
    """``x_0 = 0``; the Brownian bridge pinned at 0 (``envs.process.bridge_*``)."""

    name, random_start = "bridge", False

    def initial_sample(self, n, dim, generator=None, device=None, dtype=torch.float32):
        return torch.zeros(n, dim, device=device, dtype=dtype)

    def initial_log_prob(self, x0):
        return x0.new_zeros(x0.shape[:-1])

    def forward_coefs(self):
        if self.times is None:
            return 1.0, self.t_scale * self.dt
        return 1.0, self.t_scale * self.times.diff()

    def backward_coefs(self):
        if self.times is None:
            k = torch.arange(self.num_steps, dtype=torch.float64)  # step k: x_k <- x_{k+1}
            ratio = k / (k + 1)
            return ratio, ratio * (self.t_scale * self.dt)
        ratio = self.times[:-1] / self.times[1:]  # t_k / t_{k+1}
        return ratio, ratio * self.t_scale * self.times.diff()

    def log_pb(self, x_prev, x_next, k_next):
        if self.times is None:
            return process.bridge_log_pb(x_prev, x_next, k_next, self.num_steps, self.t_scale)
        m, v = self._backward_cast(x_next)
        k = torch.as_tensor(k_next, device=x_next.device) - 1
        first = k == 0
        var = torch.where(first, torch.ones_like(v[k]), v[k])
        lp = process.gaussian_log_density(
            (x_prev - m[k].unsqueeze(-1) * x_next).square().sum(-1), var, x_prev.shape[-1]
        )
        return torch.where(first, torch.zeros_like(lp), lp)

    def log_pb_path(self, states):
        if self.times is None:
            return process.bridge_log_pb_path(states, self.t_scale)
        m, v = self._backward_cast(states)
        return process.bridge_log_pb_path(states, self.t_scale, m[1:], v[1:])

    def sample_backward(self, x_last, generator=None):
        return process.bridge_sample_backward(x_last, self.num_steps, self.t_scale, generator, self.times)

    def marginal_log_prob(self, x, t):
        var = torch.as_tensor(self.t_scale * t, dtype=x.dtype, device=x.device)  # t: scalar or x.shape[:-1]
        return process.gaussian_log_density(x.square().sum(-1), var, x.shape[-1])


class VPReference(Reference):
    """``x_0 ~ N(0, sigma2 I)``; exact OU kernels of the linear schedule ``beta_min..beta_max``
    (see the derivation in ``envs.process``)."""

    name, random_start = "vp", True

    def __init__(self, num_steps: int, t_scale: float, beta_min: float = 0.1, beta_max: float = 10.0, times=None):
        super().__init__(num_steps, t_scale, times)
        process.check_vp_args(beta_min, beta_max)
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        integrals = process.vp_step_integrals(self.num_steps, self.beta_min, self.beta_max, self.times)
        self.step_integrals = integrals  # B_k
        self.rho = torch.exp(-0.5 * self.step_integrals)  # sqrt(1 - a_k), float64
        self.var = self.t_scale * -torch.expm1(-self.step_integrals)  # sigma2 a_k, float64

    def kwargs(self) -> dict:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max}

    def beta(self, t):
        """``beta`` at MDP time ``t`` (diffusion time ``1 - t``)."""
        return self.beta_min + (self.beta_max - self.beta_min) * (1.0 - t)

    def initial_sample(self, n, dim, generator=None, device=None, dtype=torch.float32):
        noise = torch.randn(n, dim, generator=generator, device=device, dtype=dtype)
        return noise.mul_(math.sqrt(self.t_scale))

    def initial_log_prob(self, x0):
        return process.gaussian_log_prob(x0, 0.0, self.t_scale)

    def forward_coefs(self):
        return self.rho.clone(), self.var.clone()

    def backward_coefs(self):
        return self.rho.clone(), self.var.clone()

    def log_pb(self, x_prev, x_next, k_next):
        rho, var = self._backward_cast(x_next)
        return process.vp_log_pb(x_prev, x_next, k_next, rho, var, self.t_scale)

    def log_pb_path(self, states):
        rho, var = self._backward_cast(states)
        return process.vp_log_pb_path(states, rho, var, self.t_scale)

    def marginal_log_prob(self, x, t):
        return process.gaussian_log_prob(x, 0.0, self.t_scale)


REFERENCES: dict[str, type[Reference]] = {"bridge": BridgeReference, "vp": VPReference}


def make_reference(name: str, num_steps: int, t_scale: float, **kwargs) -> Reference:
    """The registered reference ``name`` for ``T = num_steps`` and ``sigma^2 = t_scale``; ``kwargs`` are
    its schedule parameters (``beta_min``, ``beta_max`` for "vp") and ``times`` (a time grid). Unknown
    names or keywords are errors."""
    if not isinstance(name, str) or name not in REFERENCES:
        raise ValueError(f"unknown reference {name!r}; registered: {sorted(REFERENCES)}")
    cls = REFERENCES[name]
    try:
        return cls(num_steps, t_scale, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad keyword arguments {kwargs!r} for reference {name!r}: {err}") from None
