"""The speed floors' scripts (``benchmarks/floor_tb.py``, ``benchmarks/floor_native.py``) run, the compiled
sampling loop computes the Python loop's states (checked inside ``floor_native._measure``), and
``benchmarks/floor_table.py`` reads ``floor_vs_reference.sh``'s log."""

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


_LOG = """== round 1 tb manywell32 (d = 32)
| tb | manywell32 | 30.0 | 100.0 | 0.300 | 0.300 |
sampling loop with its noise:    13.00
sampling loop without the noise: 11.00
replayed backward pass:          10.00
path gradient (PIS), whole:      40.00
  Python loop                               10.50   (10.50)
  compiled, one thread                       9.50   (9.50)
  compiled, batch split over 2 threads       9.00   (9.00)
== round 1 pis 25gmm (d = 2)
| pis | 25gmm | 45.0 | 90.0 | 0.500 | 0.500 |
sampling loop with its noise:    9.00
sampling loop without the noise: 8.80
replayed backward pass:          10.00
path gradient (PIS), whole:      36.00
== round 2 tb manywell32 (d = 32)
| tb | manywell32 | 40.0 | 100.0 | 0.400 | 0.400 |
sampling loop with its noise:    13.00
sampling loop without the noise: 11.00
replayed backward pass:          12.00
path gradient (PIS), whole:      40.00
  Python loop                               10.50   (10.50)
  compiled, one thread                       8.00   (8.00)
  compiled, batch split over 2 threads       9.00   (9.00)
"""


def test_floor_table_adds_the_parts_of_each_round():
    floor_table = _load("floor_table")
    cells = floor_table.parse(_LOG)
    # tb: the faster compiled loop + the noise (13 - 11) + the backward pass; pis: the path gradient
    assert cells[("tb", "manywell32")] == [(30.0, 100.0, 9.0 + 2.0 + 10.0), (40.0, 100.0, 8.0 + 2.0 + 12.0)]
    assert cells[("pis", "25gmm")] == [(45.0, 90.0, 36.0)]
    rows = floor_table.table(cells)
    assert rows[2] == "| `tb` manywell32 | 0.350 | 0.215 (0.210, 0.220) | 21.5 (100.0) |"
    assert rows[3] == "| `pis` 25gmm | 0.500 | 0.400 (0.400) | 36.0 (90.0) |"


def test_floor_table_names_a_missing_line():
    floor_table = _load("floor_table")
    with pytest.raises(ValueError, match="replayed backward pass"):
        floor_table.parse(_LOG.replace("replayed backward pass:          10.00\n", "", 1))
