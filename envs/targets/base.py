"""The target contract: an unnormalised density R(x) = exp(-E(x)) on R^d."""

from __future__ import annotations

import numbers

import torch


class Target:
    """Base class of targets.

    Attributes:
        dim: dimension d of the sample space.
        log_Z: exact log normalising constant, or None when unknown.
        t_scale: the paper's default reference variance sigma^2 for this target.
        plot_bounds: (low, high) box used by figures, or None.

    Subclasses implement ``log_reward`` (batched, differentiable, finite or -inf for finite x, never
    NaN) and, where exact samples exist, ``sample``. A subclass may also implement
    ``log_reward_and_score(x) -> (log R(x), grad log R(x))`` in closed form (no autograd): the Langevin
    kernels then take their scores from it (``analytic_score``).
    """

    dim: int
    log_Z: float | None = None
    t_scale: float = 1.0
    plot_bounds: tuple[float, float] | None = None

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d) -> (B,)
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no exact sampler")

    @classmethod
    def from_function(cls, log_prob, dim: int, **kwargs) -> Target:
        """A target from a plain log-density ``log_prob(x: (B, d)) -> (B,)`` (torch, differentiable): a
        ``FunctionTarget`` (``envs.targets.user``; keywords ``log_Z``, ``sample``, ``t_scale``,
        ``plot_bounds``, ``name``), validated by one probe call."""
        from diffsampler.envs.targets.user import FunctionTarget

        return FunctionTarget(log_prob, dim, **kwargs)

    @property
    def has_sampler(self) -> bool:
        return type(self).sample is not Target.sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"


def analytic_score(target):
    """``target.log_reward_and_score`` when it describes ``target.log_reward``, else None (then the score is
    taken by autograd). It does when the class that defines it also defines ``log_reward``, and the instance
    overrides either both (``EvaluationCounter``) or neither: a subclass or an instance that changes only
    ``log_reward`` (a user's override, a test's patch) gets autograd scores of its own ``log_reward``."""
    cls = type(target)
    if getattr(cls, "log_reward_and_score", None) is None:
        return None
    owner = next(c for c in cls.__mro__ if "log_reward_and_score" in vars(c))
    if owner is not next(c for c in cls.__mro__ if "log_reward" in vars(c)):
        return None
    own = vars(target) if hasattr(target, "__dict__") else {}
    if ("log_reward" in own) != ("log_reward_and_score" in own):
        return None
    return target.log_reward_and_score


def check_dim(dim, *, even: bool = False, name: str = "dim") -> int:
    """Validate a dimension argument (a Python or numpy integer), raising a ValueError that names the bad
    value; returns it as a Python int."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
        raise ValueError(f"{name} must be a positive integer, got {dim!r}")
    if even and dim % 2:
        raise ValueError(f"{name} must be even (pairs of coordinates), got {dim!r}")
    return int(dim)


def like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t`` on the device and dtype of ``x`` (a no-op when they already match)."""
    return t.to(device=x.device, dtype=x.dtype)


class EvaluationCounter:
    """Counts energy evaluations: the rows passed to ``target.log_reward`` (and ``log_reward_and_score``) since
    it was installed.

    A value-and-gradient call counts once (the literature's convention for MALA/SMC budgets). The
    counter shadows ``log_reward`` on this one instance only, so types (and ``isinstance``) are kept;
    the increment is a Python int per call, never a device sync.
    """

    def __init__(self, target: Target):
        self.count = 0
        inner, inner_score = target.log_reward, analytic_score(target)

        def counted(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            self.count += x.shape[:-1].numel()  # rows: (N, d), or (B, T, d) whole paths
            return inner(x, *args, **kwargs)

        def counted_score(x: torch.Tensor):
            self.count += x.shape[:-1].numel()
            return inner_score(x)

        target.log_reward = counted
        if inner_score is not None:  # a closed-form value and gradient counts once, like autograd's
            target.log_reward_and_score = counted_score


def bounded_rows(x: torch.Tensor, center, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Guard for densities whose linear algebra overflows into ``inf - inf = NaN`` at absurd inputs.

    Returns ``(x_safe, ok)``: ``ok`` (B,) marks the rows with every ``|x - center| <= bound`` and
    ``x_safe`` is ``x`` with the other rows replaced by ``center``, so that computing on it overflows
    nowhere. The caller maps the rows ``~ok`` to ``-inf`` (their density is below ``exp(-bound^2)``-ish
    anyway); their gradient is then exactly 0, never NaN.
    """
    center = torch.as_tensor(center, dtype=x.dtype, device=x.device)
    ok = ((x - center).abs() <= bound).all(-1)
    return torch.where(ok.unsqueeze(-1), x, center.expand_as(x)), ok
