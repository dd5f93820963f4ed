"""Frozen-dataclass configs: type checks, to and from plain dicts (JSON), and flat overrides by field name.

Every config dataclass calls ``check_fields(self)`` first in its ``__post_init__``: each field is checked
against its type hint (``check_value``), so a bad value is a ValueError naming ``Class.field`` at
construction, before the range checks of the class run. The rules, one checker per type (``CHECKERS``):

- ``int``: a Python or numpy integer (made a Python int). Bools and floats are refused, even integral
  ones such as ``2.0``: a float in an integer field usually means a computation went wrong (``n / 2``),
  and truncating it would hide that. Strings are parsed by ``parse_value`` (the command line's
  ``"1e4"`` is 10,000; ``"2.5"`` is an error).
- ``float``: a real number (int, float, numpy scalar; made a Python float), never NaN and never a bool;
  whether infinity is allowed is each class's range check.
- ``bool``: ``True``/``False`` (or numpy bools); ``0``/``1`` are refused.
- ``str``, ``dict``, ``tuple[X, ...]`` (a list is accepted and made a tuple), nested config dataclasses
  (an instance of that class), ``X | None``. Other annotations are not checked.

Field names are unique across the nested configs of a run (``TrainConfig`` -> ``GFlowNetConfig`` ->
``PolicyConfig``), so an override names a field without its path: ``{"lr_policy": "3e-4",
"langevin": "true"}``. Values given as strings are parsed by the field's declared type.

This module imports neither torch nor numpy (the command line checks arguments with it before torch).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Callable
from typing import Any

_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# Seeds: every seeded library takes them (numpy's legacy seeding stops at 2**32 - 1; runs also use seed + 1).
MAX_SEED = 2**31 - 1


def _is_bool(value) -> bool:
    kind = type(value)  # numpy.bool_ (named "bool" in numpy 2) without importing numpy
    return isinstance(value, bool) or (kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_"))


def _int(value):
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise TypeError("an integer")
    return int(value)


def _float(value):
    if _is_bool(value) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise TypeError("a number")
    return float(value)


def _bool(value):
    if not _is_bool(value):
        raise TypeError("true or false")
    return bool(value)


def _a(name: str) -> str:
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _instance(kind: type) -> Callable:
    def check(value):
        if not isinstance(value, kind):
            raise TypeError(_a(kind.__name__))
        return value

    return check


# Declared type -> checker: returns the (normalised) value or raises TypeError("<what the field takes>").
CHECKERS: dict[Any, Callable] = {
    int: _int,
    float: _float,
    bool: _bool,
    str: _instance(str),
    dict: _instance(dict),
}


def _describe(tp) -> str:
    probe = CHECKERS.get(tp)
    if probe is not None:
        try:
            probe(object())
        except TypeError as err:
            return str(err)
    if _is_dataclass_type(tp):
        return _a(tp.__name__)
    return getattr(tp, "__name__", str(tp))


def check_value(value, tp):
    """``value`` normalised for the declared type ``tp``, or a TypeError whose message says what the type
    takes ("an integer", "None or a number", ...)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for arg in options:
            try:
                return check_value(value, arg)
            except TypeError:
                pass
        prefix = "None or " if type(None) in args else ""
        raise TypeError(prefix + " or ".join(_describe(a) for a in options))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"a tuple of {_describe(args[0])}")
        try:
            return tuple(check_value(v, args[0]) for v in value)
        except TypeError as err:
            raise TypeError(f"a tuple of {err}") from None
    if tp in CHECKERS:
        return CHECKERS[tp](value)
    if _is_dataclass_type(tp) and not isinstance(value, tp):
        raise TypeError(_a(tp.__name__))
    return value  # Any, classes, callables: not checked here


def check_fields(cfg) -> None:
    """Check every field of the dataclass instance ``cfg`` against its type hint (``check_value``), making
    numpy scalars plain and lists tuples in place; a ValueError names the class, the field and the value."""
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        try:
            checked = check_value(value, hints[f.name])
        except TypeError as err:
            raise ValueError(f"{type(cfg).__name__}.{f.name} must be {err}, got {value!r}") from None
        if checked is not value:
            object.__setattr__(cfg, f.name, checked)


def check_seed(cfg, name: str = "seed") -> None:
    """The seed field ``name`` of ``cfg`` is an integer in [0, MAX_SEED] (after ``check_fields``)."""
    seed = getattr(cfg, name)
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{type(cfg).__name__}.{name} must be an integer in [0, {MAX_SEED}], got {seed!r}")


def check_finite(cfg, *names: str, positive: bool = True) -> None:
    """Each named float field of ``cfg`` is finite (and > 0 with ``positive``; None passes)."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and (value > 0 or not positive)):
            what = "a finite number > 0" if positive else "a finite number"
            raise ValueError(f"{type(cfg).__name__}.{name} must be {what}, got {value!r}")


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls, data: dict):
    """Rebuild a (nested) frozen dataclass from ``to_dict`` output; unknown keys are an error."""
    if not isinstance(data, dict):
        raise ValueError(f"a {cls.__name__} must be a JSON object, got {type(data).__name__}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        kwargs[key] = from_dict(tp, value) if _is_dataclass_type(tp) and isinstance(value, dict) else value
    return cls(**kwargs)


def field_paths(cls, prefix: tuple[str, ...] = ()) -> dict[str, tuple[tuple[str, ...], Any]]:
    """Map every leaf field name to (path of parent fields, declared type)."""
    out: dict[str, tuple[tuple[str, ...], Any]] = {}
    hints = _hints(cls)
    for name, tp in ((f.name, hints[f.name]) for f in dataclasses.fields(cls)):
        if _is_dataclass_type(tp):
            out.update(field_paths(tp, prefix + (name,)))
        else:
            if name in out:
                raise AssertionError(f"field name {name!r} is not unique across nested configs")
            out[name] = (prefix, tp)
    return out


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        number = float(text)  # "1e4"; a ValueError for words
        if not number.is_integer():
            raise ValueError(text) from None
        return int(number)


def _parse_float(text: str) -> float:
    number = float(text)
    if math.isnan(number):
        raise ValueError(text)
    return number


# Declared type -> parser of a command-line string (a ValueError when the text does not fit).
PARSERS: dict[Any, Callable[[str], Any]] = {
    int: _parse_int,
    float: _parse_float,
    bool: lambda text: _BOOLS[text.lower()],
    str: str,
}


def parse_value(text: str, tp, name: str = "value"):
    """Parse ``text`` as declared type ``tp`` (int, float, bool, str, ``X | None``); a ValueError in the
    user's words ("batch_size must be an integer, got '1.5'") otherwise. Non-strings pass unchanged."""
    if not isinstance(text, str):
        return text
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple and args[1:] == (Ellipsis,):  # tuple[X, ...]: comma-separated items
        return tuple(parse_value(item.strip(), args[0], name) for item in text.split(",") if item.strip())
    is_union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    if is_union:
        if type(None) in args and text.lower() in ("none", "null"):
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return parse_value(text, arg, name)
            except ValueError:
                pass
    elif tp in PARSERS:
        try:
            return PARSERS[tp](text.strip())
        except (ValueError, KeyError, OverflowError):
            pass
    else:
        raise ValueError(f"{name} (of type {getattr(tp, '__name__', tp)}) cannot be set from the command line")
    what = _describe(tp) if tp is not bool else "true or false"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        what = ("None or " if type(None) in args else "") + " or ".join(
            _describe(a) for a in args if a is not type(None)
        )
    raise ValueError(f"{name} must be {what}, got {text!r}")


def apply_overrides(cfg, overrides: dict[str, Any]):
    """A copy of ``cfg`` with leaf fields replaced by name; raises ValueError for unknown names.

    All changes to one (nested) dataclass are applied in a single ``replace``, so validation sees the
    final combination (e.g. ``ls_steps`` and ``ls_burn_in`` lowered together).
    """
    paths = field_paths(type(cfg))
    changes: dict = {}
    for name, raw in overrides.items():
        if name not in paths:
            raise ValueError(f"unknown config field {name!r}; known fields: {sorted(paths)}")
        path, tp = paths[name]
        node = changes
        for part in path:
            node = node.setdefault(part, {})
        node[name] = parse_value(raw, tp, name)
    return _replace_nested(cfg, changes)


def config_from_spec(config_type, spec, preset, budget_path: tuple[str, ...], budget: int):
    """A runner's run config: the run spec (``agents.runs.RunSpec``) on its preset's defaults, with the
    spec's env kwargs over the preset's, ``budget`` set at the (possibly nested) field ``budget_path``
    (e.g. ``("iterations",)`` or ``("agent", "temperatures")``) and the spec's overrides applied last."""
    cfg = config_type(
        env_id=spec.env_id,
        env_kwargs={**preset.env_kwargs, **spec.env_kwargs},
        preset=spec.preset,
        agent=preset.agent,
        seed=spec.seed,
        device=spec.device,
        threads=spec.threads,
    )
    change: dict = {budget_path[-1]: budget}
    for name in reversed(budget_path[:-1]):
        change = {name: change}
    return apply_overrides(_replace_nested(cfg, change), spec.overrides)


def _replace_nested(cfg, changes: dict):
    kwargs = {
        key: _replace_nested(getattr(cfg, key), value)
        if isinstance(value, dict) and dataclasses.is_dataclass(getattr(cfg, key))
        else value
        for key, value in changes.items()
    }
    return dataclasses.replace(cfg, **kwargs) if kwargs else cfg
