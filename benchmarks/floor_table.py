#!/usr/bin/env python
"""The table of ``benchmarks/floor_vs_reference.sh``'s log: per cell, ours / reference and floor / reference
(the median of the per-round ratios, and each round's), the floor and the reference in ms (medians).

The `tb` floor is the compiled sampling loop on two cores (or one, where that was faster in the round), plus
drawing its noise, plus the bare replayed backward pass; the `pis` floor is ``floor_tb.py``'s path gradient.

    benchmarks/floor_vs_reference.sh REF_DIR 3 > floor.log
    python benchmarks/floor_table.py floor.log
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

_ROUND = re.compile(r"^== round (\d+) (\S+) (\S+) .*$", re.M)


def _number(body: str, label: str) -> float:
    """The number after ``label`` (a regular expression) on its line of the round's output."""
    found = re.search(label + r"\s+([\d.]+)", body)
    if found is None:
        raise ValueError(f"no {label!r} line in a round of the log")
    return float(found.group(1))


def floor_ms(preset: str, body: str) -> float:
    """The floor of one round's cell (see the module docstring)."""
    if preset != "tb":
        return _number(body, r"path gradient \(PIS\), whole:")
    loop = min(_number(body, "compiled, one thread"), _number(body, r"compiled, batch split over \d+ threads"))
    noise = _number(body, "sampling loop with its noise:") - _number(body, "sampling loop without the noise:")
    return loop + noise + _number(body, "replayed backward pass:")


def parse(text: str) -> dict[tuple[str, str], list[tuple[float, float, float]]]:
    """``{(preset, target): [(ours ms, reference ms, floor ms) per round]}``."""
    parts = _ROUND.split(text)[1:]
    cells: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for _, preset, target, body in zip(parts[::4], parts[1::4], parts[2::4], parts[3::4]):
        row = re.search(rf"^\| {re.escape(preset)} \| {re.escape(target)} \| ([\d.]+) \| ([\d.]+) \|", body, re.M)
        if row is None:
            raise ValueError(f"no timing row for {preset} on {target} in a round of the log")
        cells.setdefault((preset, target), []).append((float(row[1]), float(row[2]), floor_ms(preset, body)))
    return cells


def table(cells) -> list[str]:
    lines = [
        "| cell | ours / reference | floor / reference (per round) | floor, ms (reference, ms) |",
        "|---|---|---|---|",
    ]
    for (preset, target), rounds in cells.items():
        ours = statistics.median(o / r for o, r, _ in rounds)
        floors = [f / r for _, r, f in rounds]
        each = ", ".join(f"{x:.3f}" for x in floors)
        ms = f"{statistics.median(f for *_, f in rounds):.1f} ({statistics.median(r for _, r, _ in rounds):.1f})"
        lines.append(f"| `{preset}` {target} | {ours:.3f} | {statistics.median(floors):.3f} ({each}) | {ms} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", type=Path)
    args = p.parse_args(argv)
    print("\n".join(table(parse(args.log.read_text()))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
