"""User-defined targets: a Target from a plain log-density, and targets named by an import path.

A researcher brings an energy ``E(x)`` in one of these forms:

* a function ``log_prob(x: (B, d)) -> (B,)`` written with torch operations (``-E(x)``, up to a
  constant): ``Target.from_function(log_prob, dim)`` gives a ``FunctionTarget``, checked at once by
  one probe call (output type, shape, dtype, NaN);
* a ``Target`` instance, a ``Target`` subclass or a function returning a Target, defined in a module
  or a file and named by an import path: ``"package.module:attr"`` or ``"path/to/file.py:attr"``
  (``load_target(path, **kwargs)``; keyword arguments go to the class or function).

``resolve_target`` is what the Gymnasium faces and ``envs.make_mdp`` call with their ``target=``: a
registered target name, an import path (any string with a ``:``) or a Target instance. An import path
keeps an env's keyword arguments JSON-serialisable, so a run directory can rebuild its target on
resume (a relative file path is resolved against the current directory: prefer an absolute path or
an importable module for runs resumed elsewhere). ``examples/banana.py`` is a worked example.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import numbers
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from diffsampler.envs.targets import TARGETS, Target, make_target
from diffsampler.envs.targets.base import check_dim

PROBE_ROWS = 3  # the probe batch: x = 0 and two draws of N(0, t_scale I) (seeded)
IMPORT_PATH_HELP = "an import path 'package.module:attr' or 'path/to/file.py:attr'"


def _real(value, name: str, *, positive: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def _plot_bounds(bounds) -> tuple[float, float] | None:
    if bounds is None:
        return None
    try:
        low, high = (_real(b, "plot_bounds entries") for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"plot_bounds must be None or finite (low, high) with low < high, got {bounds!r}") from None
    if not low < high:
        raise ValueError(f"plot_bounds must have low < high, got {bounds!r}")
    return low, high


class FunctionTarget(Target):
    """A target given by a log-density function ``log_prob(x: (B, d)) -> (B,)`` (unnormalised).

    Args:
        log_prob: torch function of a ``(B, d)`` float tensor returning ``(B,)`` log-densities: finite or
            -inf, never NaN for finite x; differentiable for gradient-based samplers (the Langevin
            parametrisation, local search). Leading batch dimensions are flattened before the call.
        dim: d, a positive integer.
        log_Z: the exact log normalising constant, if known (metrics report |log Z - estimate|).
        sample: ``sample(n, generator) -> (n, d)`` exact samples, if available (enables W2 and friends).
        t_scale: the reference variance sigma^2 (roughly the target's spread; default 1).
        plot_bounds: ``(low, high)`` box for figures and rendering, or None.
        name: shown in reprs and logs (default: the function's ``__name__``).

    Construction calls ``log_prob`` once on a probe batch of ``PROBE_ROWS`` points and raises a
    ValueError/TypeError naming the problem (not a tensor, wrong shape, NaN, +inf); it warns when the
    output carries no gradient.
    """

    def __init__(
        self,
        log_prob: Callable[[torch.Tensor], torch.Tensor],
        dim: int,
        log_Z: float | None = None,
        sample: Callable[..., torch.Tensor] | None = None,
        t_scale: float = 1.0,
        plot_bounds: tuple[float, float] | None = None,
        name: str | None = None,
    ):
        if not callable(log_prob):
            raise TypeError(f"log_prob must be a function of x (B, d) -> (B,), got {log_prob!r}")
        if sample is not None and not callable(sample):
            raise TypeError(f"sample must be None or a function (n, generator) -> (n, d), got {sample!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string or None, got {name!r}")
        self.dim = check_dim(dim)
        self.log_Z = None if log_Z is None else _real(log_Z, "log_Z")
        self.t_scale = _real(t_scale, "t_scale", positive=True)
        self.plot_bounds = _plot_bounds(plot_bounds)
        self.name = name or getattr(log_prob, "__name__", type(log_prob).__name__)
        self._log_prob, self._sample = log_prob, sample
        self._probe()

    def _probe(self) -> None:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(PROBE_ROWS, self.dim, generator=gen) * math.sqrt(self.t_scale)
        x[0] = 0.0
        out = self._checked(self._log_prob(x), x)
        bad = torch.isnan(out) | (out == math.inf)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"{self!r}: log_prob returned {float(out[i])} at the probe point x = {x[i].tolist()}")
        try:
            differentiable = self._log_prob(x.requires_grad_(True)).requires_grad
        except Exception as err:  # only a warning: RL and gradient-free samplers still work
            differentiable = f"it fails on an input that requires grad ({type(err).__name__}: {err})"
        if differentiable is not True:
            reason = differentiable or "its output carries no gradient"
            warnings.warn(
                f"{self!r}: log_prob is not differentiable: {reason}; gradient-based samplers (Langevin "
                "parametrisation, local search) need it written with differentiable torch operations",
                stacklevel=3,
            )
        if self._sample is not None:
            draws = self._sample(2, torch.Generator().manual_seed(0))
            if not isinstance(draws, torch.Tensor) or tuple(draws.shape) != (2, self.dim):
                got = tuple(draws.shape) if isinstance(draws, torch.Tensor) else type(draws).__name__
                raise ValueError(f"{self!r}: sample(2, generator) must return shape (2, {self.dim}), got {got}")

    def _checked(self, out, x: torch.Tensor) -> torch.Tensor:
        """The function's output checked for type, dtype and shape (no device sync)."""
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{self!r}: log_prob must return a torch.Tensor of shape ({len(x)},), got {type(out)}")
        if not out.dtype.is_floating_point:
            raise TypeError(f"{self!r}: log_prob must return a floating tensor, got dtype {out.dtype}")
        if tuple(out.shape) != (len(x),):
            raise ValueError(
                f"{self!r}: log_prob must return shape ({len(x)},) for x of shape {tuple(x.shape)}, "
                f"got {tuple(out.shape)}"
            )
        return out

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"{self!r}: x must have shape (..., {self.dim}), got {tuple(x.shape)}")
        flat = x.reshape(-1, self.dim)
        return self._checked(self._log_prob(flat), flat).to(x.dtype).reshape(x.shape[:-1])

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self._sample is None:
            raise NotImplementedError(f"{self!r} has no exact sampler (give sample= to Target.from_function)")
        return self._sample(n, generator)

    @property
    def has_sampler(self) -> bool:
        return self._sample is not None

    def __repr__(self) -> str:
        return f"FunctionTarget({self.name!r}, dim={self.dim})"


# --- import paths ----------------------------------------------------------------------------------------

_FILE_MODULES: dict[tuple[str, int], object] = {}  # (resolved path, mtime) -> module: one load per file version


def _load_file(path_text: str, spec: str):
    path = Path(path_text).expanduser()
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to the current directory {Path.cwd()})"
        raise ValueError(f"target {spec!r}: no such file {str(path)!r}{where}")
    path = path.resolve()
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _FILE_MODULES:
        name = f"diffsampler_user_{path.stem}_{hashlib.sha1(key[0].encode()).hexdigest()[:10]}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # so that classes in it pickle and dataclasses resolve
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        _FILE_MODULES[key] = module
    return _FILE_MODULES[key]


def _import_module(name: str, spec: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and (name == err.name or name.startswith(err.name + ".")):
            raise ValueError(
                f"target {spec!r}: no module named {err.name!r} (not installed or not on sys.path; "
                "a file path needs its .py suffix)"
            ) from None
        raise  # a module the user's code imports is missing: their traceback says which


def load_attribute(spec: str):
    """The object named by ``"package.module:attr"`` or ``"path/to/file.py:attr"`` (``attr`` may be dotted)."""
    if not isinstance(spec, str):
        raise TypeError(f"a target import path must be a string, got {spec!r}")
    module_part, _, attr = spec.rpartition(":")
    if not module_part or not attr:
        raise ValueError(f"target {spec!r} is not {IMPORT_PATH_HELP}")
    is_file = module_part.endswith(".py") or "/" in module_part or "\\" in module_part
    obj = _load_file(module_part, spec) if is_file else _import_module(module_part, spec)
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in vars(obj) if not n.startswith("_")) if hasattr(obj, "__dict__") else []
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            where = getattr(obj, "__name__", obj)
            raise ValueError(f"target {spec!r}: {where!r} has no attribute {part!r}; it defines: {shown}")
        obj = getattr(obj, part)
    return obj


def _plain(value):
    """numpy scalars as Python numbers (so that targets see, and run directories record, plain values)."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def checked_kwargs(factory: Callable, kwargs: dict, what: str, hint: str = "") -> dict:
    """``kwargs`` for ``factory``: numpy scalars made plain, then checked against the signature (unknown
    or missing names) and its ``int`` / ``float`` annotations (e.g. a ``seed: int`` must be an integer)."""
    kwargs = {k: _plain(v) for k, v in kwargs.items()}
    try:
        signature = inspect.signature(factory)
        bound = signature.bind(**kwargs)
    except ValueError:  # builtins without a signature: let the call speak
        return kwargs
    except TypeError as err:
        raise ValueError(f"bad keyword arguments {kwargs!r} for target {what}: {err}{hint}") from None
    for name, value in bound.arguments.items():
        annotation = signature.parameters[name].annotation
        annotation = getattr(annotation, "__name__", annotation)
        if annotation == "int" and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise ValueError(f"target {what}: {name} must be an integer, got {value!r}")
        if annotation == "float" and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise ValueError(f"target {what}: {name} must be a number, got {value!r}")
    return kwargs


def load_target(spec: str, **kwargs) -> Target:
    """The target named by an import path: a Target instance (no keyword arguments), or a Target subclass
    or function called with ``kwargs``; clear ValueError/TypeError for a missing module, file or
    attribute, bad keyword arguments or something that is not a Target."""
    obj = load_attribute(spec)
    if isinstance(obj, Target):
        if kwargs:
            raise ValueError(f"target {spec!r} is a Target instance: it takes no keyword arguments, got {kwargs!r}")
        return obj
    if not callable(obj):
        raise TypeError(
            f"target {spec!r} is a {type(obj).__name__}; expected a Target instance, a Target subclass "
            "or a function returning a Target"
        )
    hint = " (an import path names a Target, a Target subclass or a function returning a Target)"
    target = obj(**checked_kwargs(obj, kwargs, repr(spec), hint))
    if not isinstance(target, Target):
        raise TypeError(
            f"target {spec!r}: calling it returned a {type(target).__name__}, not a Target (wrap a "
            "log-density function with Target.from_function(log_prob, dim))"
        )
    return target


def resolve_target(target, **kwargs) -> Target:
    """A Target from an env's ``target=``: a registered name (``kwargs`` go to its factory), an import
    path (see ``load_target``) or a Target instance (no ``kwargs``)."""
    if isinstance(target, Target):
        if kwargs:
            raise ValueError(f"target keyword arguments {kwargs!r} given with a Target instance")
        return target
    if isinstance(target, str) and ":" in target:
        return load_target(target, **kwargs)
    if isinstance(target, str) and target in TARGETS:
        return make_target(target, **checked_kwargs(TARGETS[target], kwargs, repr(target)))
    if target is None:
        raise ValueError(f"target= is required: a registered target name, {IMPORT_PATH_HELP}, or a Target")
    raise ValueError(
        f"unknown target {target!r}; give a registered target name ({sorted(TARGETS)}), {IMPORT_PATH_HELP}, "
        "or a Target instance"
    )
