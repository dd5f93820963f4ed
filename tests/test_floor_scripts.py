"""The speed floors' scripts (``benchmarks/floor_tb.py``, ``benchmarks/floor_native.py``) run, and the compiled
sampling loop computes the Python loop's states (checked inside ``floor_native._measure``)."""

from __future__ import annotations

import argparse
import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dim", "3", "--batch", "8", "--steps", "4", "--hidden", "16", "--threads", "1", "--reps", "1"]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_floor_tb_times_every_part(capsys):
    assert _load("floor_tb").main(TINY) == 0
    out = capsys.readouterr().out
    for part in ("sampling loop with its noise", "replayed backward pass", "path gradient (PIS)"):
        assert part in out


def _can_compile() -> bool:
    from torch.utils.cpp_extension import is_ninja_available

    return shutil.which("c++") is not None and is_ninja_available()


@pytest.mark.skipif(not _can_compile(), reason="needs a C++ compiler and ninja")
@pytest.mark.parametrize("mode", ["native1", "native2"])
def test_compiled_loop_matches_the_python_loop(mode):
    floor_native = _load("floor_native")
    args = argparse.Namespace(**{k.lstrip("-"): int(v) for k, v in zip(TINY[::2], TINY[1::2])})
    assert floor_native._measure(mode, args) > 0  # raises SystemExit where the states differ
