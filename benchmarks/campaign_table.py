#!/usr/bin/env python
"""The issue-15 campaign's tables: our mean ± std over seeds beside the paper's, and which cells miss.

    python benchmarks/campaign_table.py                       # benchmarks/results/campaign-*.json
    python benchmarks/campaign_table.py --results DIR --paper benchmarks/paper_table1.json

Reads the single-run files that ``benchmarks/export_runs.py --prefix campaign-`` writes. Every run's metric
is already the mean of its K evaluation repeats; a cell here is the mean ± sample std of those per-seed
values over the seeds that finished (n), or the run's value ± the std of its K repeats when one seed
finished (marked "K"). A cell misses when our mean exceeds the paper's mean + 2 std (the paper's std is over
five seeds). A run whose overrides change its preset (e.g. ``--set buffer_sampling=rank``) is a row of its
own, ``preset (field=value, ...)`` as in the importer, beside the preset's paper values. Prints markdown:
Table 1 per target, the Manywell scaling rows, and the core-hours per part.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffsampler.agents.benchmark.jobs import target_name  # noqa: E402
from diffsampler.agents.benchmark.tables import SCALING_TARGETS, row_name  # noqa: E402

METRICS = ("delta_log_z", "delta_log_z_rw")


def cell(values: list[float], repeat_std: float) -> tuple[float, str]:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return mean, f"{mean:.3f} ± {repeat_std:.3f} (K)"
    return mean, f"{mean:.3f} ± {statistics.stdev(values):.3f}"


def load(results: Path) -> dict[tuple[str, str], list[dict]]:
    runs = defaultdict(list)
    for path in sorted(results.glob("campaign-*.json")):
        run = json.loads(path.read_text())
        label = row_name(run["preset"], run.get("overrides") or {}, run.get("iterations"))
        runs[target_name(run["env_id"], run.get("env_kwargs") or {}), label].append(run)
    return runs


def runs_of(runs: dict, target: str, preset: str) -> list[str]:
    """The row labels of ``preset`` on ``target``: the preset's own, then its variants (``preset (k=v)``)."""
    return sorted(label for t, label in runs if t == target and label.split(" ")[0] == preset)


def table1(runs: dict, paper: dict) -> list[str]:
    rows = {r["preset"]: r for r in paper["table1"]["rows"]}
    lines = []
    for target in ("25gmm", "funnel", "manywell"):
        labels = [label for p in rows for label in runs_of(runs, target, p)]
        if not labels:
            continue
        lines += [
            f"**{paper['table1']['targets'][target]['label']}**",
            "",
            "| preset | seeds | Δlog Z | Δlog Z^RW | paper Δlog Z | paper Δlog Z^RW | ≤ mean + 2 std | core-hours |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label in labels:
            preset = label.split(" ")[0]
            seeds = sorted(runs[target, label], key=lambda r: r["seed"])
            ref = rows[preset]["values"].get(target, {})
            texts, verdicts = [], []
            for m in METRICS:
                mean, text = cell([r["metrics"][m] for r in seeds], seeds[0]["metrics"]["eval_std"][m])
                texts.append(text)
                if m in ref:
                    verdicts.append("yes" if mean <= ref[m][0] + 2 * ref[m][1] else "NO")
            paper_cells = [f"{ref[m][0]:.3f} ± {ref[m][1]:.3f}" if m in ref else "–" for m in METRICS]
            hours = sum(r["wall_seconds"] for r in seeds) / 3600
            names = ",".join(str(r["seed"]) for r in seeds)
            lines.append(
                f"| `{label}` | {names} | {texts[0]} | {texts[1]} | {paper_cells[0]} | {paper_cells[1]} | "
                f"{' / '.join(verdicts) or '–'} | {hours:.2f} |"
            )
        lines.append("")
    return lines


def scaling(runs: dict, paper: dict) -> list[str]:
    table = paper["manywell_scaling"]
    lines = [
        "**Manywell scaling** (seed 0; the paper's entries are single runs)",
        "",
        "| preset | d | Δlog Z | Δlog Z^RW | paper Δlog Z / Δlog Z^RW | core-hours |",
        "|---|---|---|---|---|---|",
    ]
    found = False
    for preset, values in table["rows"].items():
        for dim, ref in zip(table["dims"], values, strict=True):
            key = next(((name, preset) for name in SCALING_TARGETS[dim] if (name, preset) in runs), None)
            if key is None:
                continue
            found = True
            run = runs[key][0]
            m, s = run["metrics"], run["metrics"]["eval_std"]
            lines.append(
                f"| `{preset}` | {dim} | {m['delta_log_z']:.3f} ± {s['delta_log_z']:.3f} (K) | "
                f"{m['delta_log_z_rw']:.3f} ± {s['delta_log_z_rw']:.3f} (K) | {ref[0]} / {ref[1]} | "
                f"{run['wall_seconds'] / 3600:.2f} |"
            )
    return [*lines, ""] if found else []


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--paper", type=Path, default=ROOT / "benchmarks" / "paper_table1.json")
    args = p.parse_args(argv)
    runs = load(args.results)
    if not runs:
        raise SystemExit(f"no campaign-*.json in {args.results}")
    paper = json.loads(args.paper.read_text())
    print("\n".join(table1(runs, paper) + scaling(runs, paper)))
    hours = sum(r["wall_seconds"] for group in runs.values() for r in group) / 3600
    print(f"{sum(map(len, runs.values()))} runs, {hours:.1f} core-hours (one thread each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
