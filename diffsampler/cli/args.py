"""Argument checks shared by the command lines, all without torch: values in the user's words, unknown
options with suggestions, the thread policy and ``--help`` text from ``cli.schema``.

Why not a dataclass CLI library (tyro, simple-parsing, jsonargparse)? They build the parser from the
config dataclasses, so every call, ``--help`` and every typo included, would first import torch with
them (seconds; tens of seconds on a loaded machine), and their options follow the nested paths
(``--agent.policy.hidden-dim``) where ours take leaf names (``--hidden-dim``) and pass any other
``--name VALUE`` to the env. argparse plus the schema snapshot keeps both properties.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import math
import os
import re

from diffsampler.agents.config import MAX_SEED, parse_value
from diffsampler.cli import schema

DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


class UsageError(ValueError):
    """A bad command line: printed as one ``error:`` line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` (no usage dump) and takes no abbreviations (``--see`` is not
    ``--seed``: unknown names are suggested instead)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, add_help=False, **kwargs)

    def error(self, message):
        # "argument --seed: --seed must be ..." -> "--seed must be ..." (our types name their option)
        head, sep, tail = message.partition(": ")
        if sep and head.startswith("argument ") and tail.startswith(("--", "unknown --")):
            message = tail
        raise UsageError(message)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _integer(text: str, option: str, low: int, high: int | None = None) -> int:
    what = (
        f"an integer in [{low}, {high}]"
        if high is not None
        else ("a positive integer" if low == 1 else f"an integer >= {low}")
    )
    try:
        value = parse_value(text, int, option)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{option} must be {what}, got {text!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"{option} must be {what}, got {text}")
    return value


def positive(option: str, low: int = 1):
    """An argparse type: an integer >= ``low`` ("1e4" is 10,000), or an error naming ``option``."""
    return lambda text: _integer(text, option, low)


def seed(text: str) -> int:
    return _integer(text, "--seed", 0, MAX_SEED)


def device(text: str) -> str:
    if not DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"--device must be cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def choice(option: str, names, what: str = "one of"):
    """An argparse type: one of ``names``, or an error with the closest ones."""
    names = list(names)

    def check(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(
                f"unknown {option} {text!r}{suggest(text, names)}; {what} {', '.join(names)}"
            )
        return text

    return check


def suggest(name: str, candidates, prefix: str = "", cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(name, list(dict.fromkeys(candidates)), n=3, cutoff=cutoff)
    return f" (did you mean {' or '.join(prefix + c for c in close)}?)" if close else ""


def threads(value: int | None) -> tuple[int, str]:
    """The torch CPU threads of a run and why: ``--threads`` if given, else ``$OMP_NUM_THREADS``, else 1.

    One thread is the default because torch's own default (one per core) spin-waits whenever another
    process wants a core: on a 2-core machine shared with one other CPU-bound job the README's quick run
    went from about 0.1 s to 19-23 s per iteration (README, "Threads").
    """
    if value is not None:
        return value, "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env), "$OMP_NUM_THREADS"
    return 1, "the default; --threads N for more"


def parse_extra(tokens: list[str]) -> dict[str, str]:
    """``--some-name VALUE`` / ``--some-name=VALUE`` pairs -> {"some_name": "VALUE"}."""
    out, i = {}, 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or tok == "--":
            raise UsageError(f"unexpected argument {tok!r} (options are --name VALUE)")
        if "=" in tok:
            name, value = tok[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise UsageError(f"{tok} needs a value")
            name, value = tok[2:], tokens[i + 1]
            i += 2
        out[name.replace("-", "_")] = value
    return out


def literal(text: str):
    """An env keyword's value: a Python literal (``128``, ``1e-3``, ``None``), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def split_extra(extra: dict[str, str], preset: str, env_id: str, options) -> tuple[dict, dict]:
    """``(overrides, env_kwargs)`` of the ``--name VALUE`` pairs that are not options of the parser: config
    fields of ``preset`` (values parsed by their type, range-checked later by the config) and keywords of
    ``env_id``. Anything else is a ``UsageError`` naming it, with suggestions among all three."""
    fields = schema.fields_of(preset)
    keywords = schema.env_keywords(env_id)
    overrides, env_kwargs = {}, {}
    for name, text in extra.items():
        if name in fields:
            overrides[name] = check_field(name, text, fields[name])
        elif name in schema.RESERVED:
            raise UsageError(f"{flag(name)} is not an override; use the option {flag(name).replace('env-id', 'env')}")
        elif keywords is None or name in keywords:
            env_kwargs[name] = literal(text)
        else:
            known = [*options, *map(flag, fields), *map(flag, keywords)]
            hint = suggest(flag(name), known, cutoff=0.8)
            raise UsageError(
                f"unknown option {flag(name)}{hint}: not an option, a config field of preset {preset!r} "
                f"(--list-fields) or a keyword of {env_id} ({', '.join(keywords) or 'none'})"
            )
    return overrides, env_kwargs


def check_field(name: str, text: str, entry: dict):
    """A field's command-line value parsed by its snapshot type, in the user's words when it does not fit."""
    tp = schema.field_type(entry["type"])
    try:
        value = text if tp is None else parse_value(text, tp, flag(name))
    except ValueError as err:
        raise UsageError(str(err)) from None
    if isinstance(value, float) and not math.isfinite(value):  # no config field takes inf (None disables)
        raise UsageError(f"{flag(name)} must be a finite number, got {text!r}")
    choices = entry.get("choices")
    if choices and value not in choices and value is not None:
        raise UsageError(f"{flag(name)} must be one of {', '.join(choices)}, got {text!r}{suggest(text, choices)}")
    return value


def fields_help(preset: str) -> str:
    """The config fields of ``preset`` for ``--help`` / ``--list-fields``: flag, type, help, choices."""
    lines = []
    for name, entry in sorted(schema.fields_of(preset).items()):
        extra = f" [{', '.join(entry['choices'])}]" if entry.get("choices") else ""
        lines.append(f"  {flag(name):26s} {entry['type']:14s} {entry['help']}{extra}")
    return "\n".join(lines)


def in_flags(message: str, names) -> str:
    """A config error in the command line's words: ``Class.field`` and bare ``field`` of the given names
    written as ``--field``."""
    for name in names:
        message = re.sub(rf"\b(\w+Config\.)?{re.escape(name)}\b", flag(name), message)
    return message
