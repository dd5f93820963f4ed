"""Frozen-dataclass configs: to and from plain dicts (JSON), and flat overrides by field name.

Field names are unique across the nested configs of a run (``TrainConfig`` -> ``GFlowNetConfig`` ->
``PolicyConfig``), so an override names a field without its path: ``{"lr_policy": "3e-4",
"langevin": "true"}``. Values given as strings are parsed by the field's declared type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls, data: dict):
    """Rebuild a (nested) frozen dataclass from ``to_dict`` output; unknown keys are an error."""
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
    for name, tp in _hints(cls).items():
        if _is_dataclass_type(tp):
            out.update(field_paths(tp, prefix + (name,)))
        else:
            if name in out:
                raise AssertionError(f"field name {name!r} is not unique across nested configs")
            out[name] = (prefix, tp)
    return out


def parse_value(text: str, tp, name: str = "value"):
    """Parse ``text`` as declared type ``tp`` (int, float, bool, str, Optional[...])."""
    if not isinstance(text, str):
        return text
    args = typing.get_args(tp)
    is_union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    if is_union:
        if type(None) in args and text.lower() in ("none", "null"):
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return parse_value(text, arg, name)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(f"cannot parse {name}={text!r} as {tp}: {'; '.join(errors)}")
    try:
        if tp is bool:
            if text.lower() not in _BOOLS:
                raise ValueError(f"expected true/false, got {text!r}")
            return _BOOLS[text.lower()]
        if tp is int:
            return int(float(text)) if float(text).is_integer() else int(text)
        if tp is float:
            return float(text)
        if tp is str:
            return text
    except ValueError as err:
        raise ValueError(f"cannot parse {name}={text!r} as {getattr(tp, '__name__', tp)}: {err}") from None
    raise ValueError(f"field {name} of type {tp} cannot be set from the command line")


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
