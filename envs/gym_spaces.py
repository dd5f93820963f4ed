"""Spaces, the action bound and the input checks of the Gymnasium faces (``envs.gym_env``, ``envs.gym_vector``).

Every check raises a ValueError (bad value or shape) or a TypeError (bad type or dtype) whose message
names the argument, before any state changes.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import gymnasium as gym
import numpy as np
import torch

from diffsampler.envs.sampler_mdp import DiffusionMDP

AUTO = "auto"  # action_bound="auto": default_action_bound(mdp)
DEFAULT_ACTION_STD = 10.0


def default_action_bound(mdp: DiffusionMDP, n_std: float = DEFAULT_ACTION_STD) -> float:
    """``n_std`` reference standard deviations of the largest step: ``n_std * sigma * sqrt(dt)`` for the
    bridge, ``n_std * sigma * sqrt(max_k a_k)`` for VP. The Gymnasium faces' default action Box.

    With the default ``n_std = 10`` a coordinate of a reference step leaves the Box with probability
    ``P(|N(0, 1)| > 10) ~ 1.5e-23``: a policy whose steps stay on the reference's scale (the samplers'
    are ``N(x + dt f, sigma^2 dt)`` near it) essentially never hits it, even over 1e9 episodes of
    d = 1600 and T = 100 (~2e-9 expected hits). It binds a policy whose mean step is several
    reference standard deviations (a steep drift early in training): pass a larger bound, or
    ``action_bound=None`` for the unbounded Box.
    """
    var = mdp.reference.forward_coefs()[1]
    return n_std * math.sqrt(float(var.max()) if isinstance(var, torch.Tensor) else var)


def action_bound_of(mdp: DiffusionMDP, action_bound) -> float | None:
    """The bound ``b`` of the action Box ``[-b, b]^d`` (None: unbounded) from an env's ``action_bound``:
    ``"auto"`` (``default_action_bound``), None, or a number (Python or numpy) finite and > 0 in float32."""
    if action_bound is None:
        return None
    if isinstance(action_bound, str) and action_bound == AUTO:
        return default_action_bound(mdp)
    ok = not isinstance(action_bound, (bool, np.bool_, str)) and isinstance(action_bound, numbers.Real)
    if ok:
        with np.errstate(over="ignore"):
            b32 = np.float32(action_bound)
        ok = math.isfinite(action_bound) and action_bound > 0 and bool(np.isfinite(b32)) and b32 > 0
    if not ok:
        raise ValueError(f"action_bound must be 'auto', None or a number > 0 finite in float32, got {action_bound!r}")
    return float(action_bound)


def spaces(mdp: DiffusionMDP, bound: float | None) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """Observation Box ``[x, t]`` (``[x, t, c]`` for a conditional target) and action Box of one env."""
    d = mdp.dim
    if mdp.conditional:
        lo, hi = mdp.target.condition_bounds or (-np.inf, np.inf)
        low = np.concatenate([np.full(d + 1, -np.inf), np.full(mdp.cond_dim, lo)]).astype(np.float32)
        high = np.concatenate([np.full(d + 1, np.inf), np.full(mdp.cond_dim, hi)]).astype(np.float32)
        obs = gym.spaces.Box(low, high, dtype=np.float32)
    else:
        obs = gym.spaces.Box(-np.inf, np.inf, shape=(d + 1,), dtype=np.float32)
    b = np.inf if bound is None else bound
    return obs, gym.spaces.Box(-b, b, shape=(d,), dtype=np.float32)


def as_action_tensor(action, shape: tuple[int, ...], device, dtype: torch.dtype, name: str = "action") -> torch.Tensor:
    """``action`` (a numpy array, nested list, scalar or torch tensor) as a ``shape`` tensor on ``device``.

    Any real dtype is accepted (bfloat16, float16, integers; big-endian and negatively strided arrays);
    rejected with a TypeError: complex, bool, object and string dtypes; with a ValueError: a wrong or
    ragged shape, a meta tensor (no data) and a tensor that requires grad (the env is not
    differentiable: pass ``action.detach()``; the env never keeps an autograd graph in its state).
    Values are checked by ``check_action_values``.
    """
    t = as_real_tensor(action, device, dtype, name)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    return t


def as_real_tensor(value, device, dtype: torch.dtype, name: str) -> torch.Tensor:
    """``value`` (array, nested list, scalar or tensor of a real dtype) as a ``dtype`` tensor on ``device``."""
    if isinstance(value, torch.Tensor):
        if value.is_meta:
            raise ValueError(f"{name} is a meta tensor (it holds no values)")
        if value.requires_grad:
            raise ValueError(f"{name} requires grad: the env is not differentiable, pass {name}.detach()")
        if value.is_quantized or not (value.dtype.is_floating_point or _is_integer(value.dtype)):
            raise TypeError(f"{name} must be a real numeric tensor, got dtype {value.dtype}")
        return value.to(device=device, dtype=dtype)
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, RuntimeError, OverflowError) as err:
        raise ValueError(f"{name} must be a numeric array; a {type(value).__name__} failed: {err}") from None
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32 becomes inf: rejected later
        arr = np.ascontiguousarray(arr, dtype=np.float32)  # native byte order, positive strides
    return torch.from_numpy(arr).to(device=device, dtype=dtype)


def _is_integer(dtype: torch.dtype) -> bool:
    try:
        torch.iinfo(dtype)  # integer dtypes only (not bool, complex or floats)
    except TypeError:
        return False
    return True


def check_action_values(a: torch.Tensor, bound: float | None, rows: torch.Tensor | None = None) -> None:
    """NaN/inf and out-of-bound checks; ``rows`` restricts them to the active environments."""
    # Fast path: one masked reduction and one sync, no boolean indexing (which costs a nonzero() and,
    # on a busy CPU, an OpenMP hand-off of milliseconds). The messages are built only on failure.
    ok = torch.isfinite(a).all(-1)
    if bound is not None:
        ok = ok & (a.abs() <= bound).all(-1)
    if rows is not None:
        ok = ok | ~rows
    if bool(ok.all()):
        return
    checked = a if rows is None else a[rows]
    if not bool(torch.isfinite(checked).all()):
        raise ValueError(f"actions must be finite, got {checked[~torch.isfinite(checked).all(-1)].tolist()}")
    worst = float(checked.abs().max())
    raise ValueError(
        f"action component {worst:g} outside the action space bound [-{bound:g}, {bound:g}] (the default is "
        f"{DEFAULT_ACTION_STD:g} reference standard deviations; action_bound=None gives an unbounded Box)"
    )


def torch_generator(np_random: np.random.Generator, device) -> torch.Generator:
    """A torch generator on ``device`` seeded from the env's numpy generator (draws one integer)."""
    return torch.Generator(device).manual_seed(int(np_random.integers(2**62)))


def conditions(mdp: DiffusionMDP, n: int, options: dict | None, rng: np.random.Generator):
    """Conditions (n, c) and their indices (n,) for ``n`` (re)started episodes of a conditional MDP:
    from ``options["condition"]`` / ``options["condition_index"]``, else drawn uniformly with ``rng``.
    Conditions are checked against the target's ``condition_bounds`` by the episode batch."""
    options = options or {}
    pool = mdp.target.conditions
    if "condition" in options and "condition_index" in options:
        raise ValueError("reset options take 'condition' or 'condition_index', not both")
    if "condition" in options:
        c = as_real_tensor(options["condition"], "cpu", torch.float32, "options['condition']")
        if c.numel() != n * mdp.cond_dim:
            raise ValueError(f"options['condition'] must hold {n} x {mdp.cond_dim} values, got shape {tuple(c.shape)}")
        return c.reshape(n, mdp.cond_dim), torch.full((n,), -1, dtype=torch.long)
    if "condition_index" in options:
        idx = np.asarray(options["condition_index"]).reshape(-1)
        if idx.shape != (n,) or idx.dtype.kind not in "iu" or (idx < 0).any() or (idx >= len(pool)).any():
            got = options["condition_index"]
            raise ValueError(f"options['condition_index'] must be {n} integer(s) in [0, {len(pool)}), got {got!r}")
        idx = torch.as_tensor(idx, dtype=torch.long)
    else:
        idx = torch.as_tensor(rng.integers(len(pool), size=n), dtype=torch.long)
    return pool[idx], idx


def no_condition_options(mdp: DiffusionMDP, options: dict | None) -> None:
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"reset options must be a dict or None, got {type(options).__name__}")
    if options and not mdp.conditional and ({"condition", "condition_index"} & set(options)):
        raise ValueError(f"{mdp.target!r} is unconditional: reset options take no condition")


class EpisodeLengthSpec:
    """``spec.max_episode_steps`` is the env's T (``mdp.num_steps``), whatever ``num_steps`` it was made with.

    The ids are registered with ``max_episode_steps=None`` (T is a keyword argument, so the registry
    cannot know it), hence ``gymnasium.make`` adds no TimeLimit; the spec that ``make`` gives the env is
    completed here, so that ``env.spec.max_episode_steps == T``. A TimeLimit built from that spec
    (``gymnasium.make(env.spec)``) ends an episode at step T, where it terminates anyway: never early.
    """

    _spec = None

    @property
    def spec(self):
        return self._spec

    @spec.setter
    def spec(self, value) -> None:
        if value is not None:  # T, and numpy scalars of the kwargs as Python numbers (JSON-serialisable)
            kwargs = {k: v.item() if isinstance(v, np.generic) else v for k, v in value.kwargs.items()}
            value = dataclasses.replace(value, max_episode_steps=self.mdp.num_steps, kwargs=kwargs)
        self._spec = value
