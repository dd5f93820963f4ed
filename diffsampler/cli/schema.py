"""What the command lines may be given, readable without importing torch: ``schema.json`` beside this file.

The command lines check every name and value they can before torch is imported (so that a mistake is
reported in well under a second, not after the seconds torch takes to load): the presets and which run
config each uses, every overridable config field (its path, type, help from the dataclass docstrings'
``Attributes:`` sections and, for names from a registry, the choices) and the keyword arguments each env
id takes. Those facts live in the config dataclasses and registries, which import torch; ``schema.json``
is a snapshot of them, written by ``generate()``:

    python -m diffsampler.cli.schema --write   # after changing a config field, a preset or a target
    python -m diffsampler.cli.schema --check   # exit status 1 when schema.json is out of date

A test (``tests/test_cli.py``) fails while the snapshot is out of date. Everything the snapshot cannot
know (a user-defined target's keywords, a range check) is checked again when the run is built.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import re
import sys
import typing
from pathlib import Path

PATH = Path(__file__).with_name("schema.json")
# Type strings of the snapshot -> Python types (``eval`` of e.g. "float | None" in this namespace).
TYPES = {"int": int, "float": float, "bool": bool, "str": str, "dict": dict, "tuple": tuple, "None": None}
# Fields given by the command lines' own options, never as ``--field-name VALUE`` overrides.
RESERVED = ("env_id", "env_kwargs", "preset", "seed", "device", "threads")


@functools.cache
def load() -> dict:
    """The snapshot (torch-free)."""
    return json.loads(PATH.read_text())


def field_type(text: str):
    """The Python type of a snapshot type string (None when it is not a plain one)."""
    try:
        return eval(text, {"__builtins__": {}}, TYPES)  # noqa: S307 - the snapshot's own strings
    except Exception:
        return None


def fields_of(preset: str) -> dict[str, dict]:
    """The overridable fields of ``preset``'s run config: name -> {path, type, help, choices?}."""
    schema = load()
    return schema["configs"][schema["presets"][preset]["config"]]["fields"]


def env_keywords(env_id: str) -> list[str] | None:
    """The keyword arguments ``env_id`` takes (None: any, for the Custom id, whose target is the user's)."""
    envs = load()["envs"]
    if env_id in envs["any"]:
        return None
    return sorted(set(envs["common"]) | set(envs["targets"].get(env_id, [])))


# --- generation (imports everything) ----------------------------------------------------------------


def attribute_help(cls) -> dict[str, str]:
    """``name -> help`` from the ``Attributes:`` sections of ``cls``'s docstring and its bases'."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        if "Attributes:" not in doc:
            continue
        body = doc.split("Attributes:", 1)[1].splitlines()
        entries: list[tuple[list[str], list[str]]] = []
        indent = None
        for line in body:
            if not line.strip():
                continue
            depth = len(line) - len(line.lstrip())
            indent = depth if indent is None else indent
            if depth < indent:
                break
            match = re.match(r"\s*([\w, ]+):\s*(.*)", line) if depth == indent else None
            if match:
                entries.append(([n.strip() for n in match.group(1).split(",")], [match.group(2)]))
            elif entries:
                entries[-1][1].append(line.strip())
        for names, text in entries:
            for name in names:
                out[name] = " ".join(text).replace("``", "")
    return out


def _type_name(tp) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        return f"tuple[{_type_name(args[0])}, ...]"
    if args:
        return " | ".join(_type_name(a) for a in args)
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _choices() -> dict[str, list[str]]:
    from diffsampler.agents.baselines.particles import RESAMPLERS, SCHEDULES
    from diffsampler.agents.baselines.rl_config import ALGORITHM_NAMES, VEC_ENVS
    from diffsampler.agents.guard import NONFINITE_POLICIES
    from diffsampler.agents.networks import NETWORKS
    from diffsampler.agents.objectives import OBJECTIVES
    from diffsampler.agents.parametrisations import PARAMETRISATIONS
    from diffsampler.buffers.replay import SAMPLING
    from diffsampler.envs.process import TIME_GRIDS

    names = {"objective": OBJECTIVES, "parametrisation": PARAMETRISATIONS, "buffer_sampling": SAMPLING}
    names |= {"resampling": RESAMPLERS, "schedule": SCHEDULES, "algorithm": ALGORITHM_NAMES, "vec_env": VEC_ENVS}
    names |= {"nonfinite": NONFINITE_POLICIES, "backward_source": ("exact", "buffer"), "time_grid": TIME_GRIDS}
    names |= {"network": ("auto", *NETWORKS)}
    return {k: sorted(v) for k, v in names.items()}


def _config_fields(cls, choices: dict) -> dict:
    hints, helps, out = typing.get_type_hints(cls), attribute_help(cls), {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            for name, entry in _config_fields(tp, choices).items():
                out[name] = entry | {"path": [f.name, *entry["path"]]}
            continue
        if f.name in RESERVED:
            continue
        entry = {"path": [], "type": _type_name(tp), "help": helps.get(f.name, "")}
        if f.name in choices:
            entry["choices"] = choices[f.name]
        out[f.name] = entry
    return out


def generate() -> dict:
    """The snapshot, from the config dataclasses, presets and registries."""
    from diffsampler.agents.presets import PRESETS
    from diffsampler.agents.runs import runner_for
    from diffsampler.envs.mdp_args import build_mdp
    from diffsampler.envs.registry import REGISTRY
    from diffsampler.registration import CUSTOM_ENV_ID

    choices, configs, presets = _choices(), {}, {}
    for name, preset in PRESETS.items():
        runner = runner_for(name)
        kind = runner.config_type.__name__
        if kind not in configs:
            budget = ".".join(runner.budget_path)
            configs[kind] = {"budget": budget, "fields": _config_fields(runner.config_type, choices)}
        presets[name] = {"config": kind, "iterations": preset.iterations, "description": preset.description}
    common = [p for p in inspect.signature(build_mdp).parameters if p not in ("target", "device", "target_kwargs")]
    targets = {spec.env_id: list(inspect.signature(spec.load()).parameters) for spec in REGISTRY.values()}
    return {
        "presets": presets,
        "configs": configs,
        "envs": {"common": common, "targets": targets, "any": [CUSTOM_ENV_ID]},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write or check diffsampler/cli/schema.json.")
    p.add_argument("--write", action="store_true")
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    text = json.dumps(generate(), indent=1, sort_keys=True) + "\n"
    if args.write:
        PATH.write_text(text)
        print(f"wrote {PATH}")
        return 0
    if PATH.exists() and PATH.read_text() == text:
        print(f"{PATH} is up to date")
        return 0
    print(f"{PATH} is out of date: run python -m diffsampler.cli.schema --write", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
