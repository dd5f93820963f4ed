"""Markdown tables of benchmark records: the paper's Table 1 layout, its comparison and the details.

A record is one line of ``results.jsonl`` (see ``agents.benchmark.jobs.make_record``). Rows are
methods (presets), columns are targets x (Δlog Z, Δlog Z^RW); targets without a known log Z (LGCP)
show the raw estimates log Ẑ, log Ẑ^RW instead (higher is better there). Cells are mean ± std over
seeds; the best mean per column is in bold.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from diffsampler.agents.benchmark.jobs import TABLE1_PRESETS, TARGET_ALIASES, target_name

PAPER_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "paper_table1.json"

HEADERS = {
    "delta_log_z": "Δlog Z",
    "delta_log_z_rw": "Δlog Z^RW",
    "log_z": "log Ẑ",
    "log_z_rw": "log Ẑ^RW",
}
# Secondary metrics of the details table, in column order (shown where any run has them).
DETAIL_KEYS = {
    "w2": "W2",
    "eubo": "EUBO",
    "ess": "ESS",
    "modes_covered": "modes",
    "manywell_mode_error": "mode error",
    "ms_per_iteration": "ms/it",
    "iterations": "budget",
    "energy_evaluations": "energy evals",
    "wall_seconds": "wall s",
}
# The paper's Manywell scaling dimensions -> the short target names a record may carry for them.
SCALING_TARGETS = {8: ("manywell8",), 32: ("manywell", "manywell32"), 128: ("manywell128",), 512: ("manywell512",)}
SCALING_KEYS = ("delta_log_z", "delta_log_z_rw")
COUNT_KEYS = ("modes_covered", "iterations", "energy_evaluations")


def load_paper(path: str | Path = PAPER_PATH) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"paper table {path} not found (the published numbers, benchmarks/paper_table1.json)")
    return json.loads(path.read_text())


def labels(paper: dict | None) -> tuple[dict[str, str], dict[str, str]]:
    """(preset -> method label, target -> column label) from the paper table; names where it has none."""
    if paper is None:
        return {}, {}
    table = paper["table1"]
    rows = {r["preset"]: r["label"] for r in table["rows"] if r["preset"]}
    return rows, {t: v["label"] for t, v in table["targets"].items()}


def fmt(x: float | None, ref: float | None = None) -> str:
    """Paper-style number: 3 decimals below 10, 2 from 10, 3 significant digits from 1e5."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return str(x)
    scale = abs(ref if ref is not None else x)
    if scale >= 1e5:
        return f"{x:.3g}"
    if isinstance(x, int) and ref is None:
        return str(x)
    return f"{x:.2f}" if scale >= 10 else f"{x:.3f}"


def _stats(values: list[float]) -> tuple[float, float | None]:
    if not values:  # a record without this metric: shown as "–"
        return math.nan, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def _mean_std(mean: float, std: float | None, ref: float | None = None) -> str:
    return fmt(mean, ref) if std is None else f"{fmt(mean, ref)} ± {fmt(std, mean if ref is None else ref)}"


def column_metrics(records: list[dict]) -> tuple[tuple[str, str], bool]:
    """The two Table-1 metrics of one target's records and whether lower is better."""
    has_delta = any((r.get("metrics") or {}).get("delta_log_z") is not None for r in records)
    return (("delta_log_z", "delta_log_z_rw"), True) if has_delta else (("log_z", "log_z_rw"), False)


class Results:
    """Records grouped by (target, preset), in the order the benchmark asked for them."""

    def __init__(self, records: list[dict], paper: dict | None = None):
        self.records = records
        self.targets = list(dict.fromkeys(r["target"] for r in records))
        self.presets = list(dict.fromkeys(r["preset"] for r in records))
        self.paper = paper
        self.method_labels, self.target_labels = labels(paper)

    def runs(self, target: str, preset: str, status: str | None = "ok") -> list[dict]:
        return [
            r
            for r in self.records
            if r["target"] == target and r["preset"] == preset and (status is None or r["status"] == status)
        ]

    def values(self, target: str, preset: str, key: str) -> list[float]:
        out = [(r["metrics"] or {}).get(key) for r in self.runs(target, preset)]
        return [float(v) for v in out if isinstance(v, (int, float)) and math.isfinite(v)]

    def method(self, preset: str) -> str:
        label = self.method_labels.get(preset)
        return f"{label} (`{preset}`)" if label else f"`{preset}`"

    def target(self, target: str) -> str:
        return self.target_labels.get(target, target)

    def paper_value(self, preset: str, target: str, key: str) -> list | None:
        if self.paper is None:
            return None
        for row in self.paper["table1"]["rows"]:
            if row["preset"] == preset:
                return row["values"].get(target, {}).get(key)
        return None

    # --- tables -------------------------------------------------------------------------------------

    def _cell(self, target: str, preset: str, key: str, best: float | None, seeds: int | None) -> str:
        vals = self.values(target, preset, key)
        if not vals:
            failed = self.runs(target, preset, "failed")
            return f"failed ({len(failed)})" if failed else "–"
        mean, std = _stats(vals)
        text = _mean_std(mean, std)
        if best is not None and mean == best:
            text = f"**{text}**"
        if seeds is not None and len(vals) < seeds:
            text += f" (n={len(vals)})"
        return text

    def table1(self, seeds: int | None = None) -> str:
        """The paper's Table 1 layout: rows methods, columns targets x (Δlog Z, Δlog Z^RW)."""
        header, cols = ["Method"], []
        for t in self.targets:
            keys, lower = column_metrics([r for r in self.records if r["target"] == t])
            for key in keys:
                header.append(f"{self.target(t)} {HEADERS[key]}")
                means = [statistics.fmean(v) for p in self.presets if (v := self.values(t, p, key))]
                cols.append((t, key, (min if lower else max)(means) if means else None))
        lines = _header(header)
        for p in self.presets:
            cells = [self._cell(t, p, key, best, seeds) for t, key, best in cols]
            lines.append(_row([self.method(p), *cells]))
        return "\n".join(lines)

    def comparison(self) -> str:
        """Per target: ours, the paper's and ours − paper for each Table-1 metric."""
        blocks = []
        for t in self.targets:
            keys, _ = column_metrics([r for r in self.records if r["target"] == t])
            header = ["Method"]
            for key in keys:
                header += [f"{HEADERS[key]} ours", "paper", "ours − paper"]
            lines = [f"**{self.target(t)}**", "", *_header(header)]
            for p in self.presets:
                cells = [self.method(p)]
                for key in keys:
                    vals, ref = self.values(t, p, key), self.paper_value(p, t, key)
                    ours = _stats(vals) if vals else None
                    cells.append(_mean_std(*ours) if ours else "–")
                    cells.append(_mean_std(ref[0], ref[1]) if ref else "–")
                    cells.append(f"{ours[0] - ref[0]:+.3f}" if ours and ref else "–")
                lines.append(_row(cells))
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    def scaling(self) -> str | None:
        """The paper's Manywell scaling table (Δlog Z / Δlog Z^RW at each d, single runs): ours (mean ± std over
        seeds) beside the paper's, for every preset with a run at some d other than 32; None without one."""
        table = (self.paper or {}).get("manywell_scaling")
        if table is None:
            return None
        dims = table["dims"]

        def runs_at(preset: str, d: int) -> list[str]:
            return [t for t in SCALING_TARGETS[d] if t in self.targets and self.values(t, preset, "delta_log_z")]

        presets = [p for p in self.presets if any(runs_at(p, d) for d in dims if d != 32)]
        if not presets:
            return None
        lines = _header(["Method", *(h for d in dims for h in (f"d = {d} ours", f"d = {d} paper"))])
        for p in presets:
            cells = [self.method(p)]
            paper = table["rows"].get(p)
            for i, d in enumerate(dims):
                targets = runs_at(p, d)
                ours = [_mean_std(*_stats(self.values(targets[0], p, k))) for k in SCALING_KEYS] if targets else ["–"]
                cells += [" / ".join(ours), " / ".join(fmt(v) for v in paper[i]) if paper else "–"]
            lines.append(_row(cells))
        return "\n".join(lines)

    def details(self) -> str:
        """Per target: secondary metrics, cost (ms/iteration, energy evaluations, wall time) and runs."""
        blocks = []
        for t in self.targets:
            recs = [r for r in self.records if r["target"] == t]
            keys = [k for k in DETAIL_KEYS if any((r.get("metrics") or {}).get(k) is not None for r in recs)]
            lines = [f"**{self.target(t)}**", "", *_header(["Method", *(DETAIL_KEYS[k] for k in keys), "runs"])]
            for p in self.presets:
                cells = [self.method(p)]
                for k in keys:
                    vals = self.values(t, p, k)
                    if vals and k in COUNT_KEYS and len(set(vals)) == 1:
                        cells.append(fmt(int(vals[0])))  # the same count in every run
                    else:
                        cells.append(_mean_std(*_stats(vals)) if vals else "–")
                ok, failed = len(self.runs(t, p)), len(self.runs(t, p, "failed"))
                cells.append(f"{ok}" + (f" + {failed} failed" if failed else ""))
                lines.append(_row(cells))
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)


def _header(cells: list[str]) -> list[str]:
    return [_row(cells), _row(["---"] * len(cells))]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def render(records: list[dict], paper: dict | None, compare: bool, seeds: int | None, command: str | None) -> str:
    """The whole table.md: Table 1, the paper comparison (``compare``) and the details."""
    res = Results(records, paper)
    ok = sum(r["status"] == "ok" for r in records)
    parts = ["# Benchmark results", ""]
    if command:
        parts += [f"Command: `{command}`", ""]
    budgets = sorted({str(r.get("budget") or (r.get("metrics") or {}).get("iterations")) for r in records})
    parts += [
        f"{ok} finished runs, {len(records) - ok} failed; budget(s): {', '.join(budgets)}. "
        "Cells: mean ± std over seeds (n = finished seeds where fewer than asked); best mean per column in bold. "
        "Δ = |log Z − estimate| (lower is better); log Ẑ where log Z is unknown (higher is better).",
        "",
        "## Table 1",
        "",
        res.table1(seeds),
        "",
    ]
    if compare:
        parts += ["## Compared with the paper (Sendera et al. 2024, Table 1)", "", res.comparison(), ""]
        scaling = res.scaling()
        if scaling is not None:
            parts += ["## Manywell scaling (Δlog Z / Δlog Z^RW; the paper's are single runs)", "", scaling, ""]
    parts += ["## Details", "", res.details(), ""]
    return "\n".join(parts)


def import_results(paths: list[str | Path]) -> list[dict]:
    """Records from ``benchmarks/results/*.json`` files written by ``scripts/train_agent.py`` runs.

    Files that are not single-run results (no ``metrics`` and ``preset``) are skipped. A run whose
    ``overrides`` change its preset's current settings is a variant: it gets its own row, named
    ``preset (field=value, ...)``, so it is never averaged with (or compared to the paper as) the preset.
    Records come in table order: targets as in ``TARGET_ALIASES``, methods as in the paper's Table 1. Two
    files of the same run (target, row, seed) are an error that names both, never a silent double count.
    """
    records = []
    for path in sorted(Path(p) for p in paths):
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or "metrics" not in data or "preset" not in data:
            continue
        env_kwargs = data.get("env_kwargs") or {}
        target = target_name(data["env_id"], env_kwargs)
        preset = row_name(data["preset"], data.get("overrides") or {}, data.get("iterations"))
        records.append(
            {
                "key": f"{target}-{preset}-s{data.get('seed', 0)}",
                "status": "ok",
                "target": target,
                "env_id": data["env_id"],
                "env_kwargs": env_kwargs,
                "preset": preset,
                "seed": data.get("seed", 0),
                "budget": data.get("iterations"),
                "overrides": data.get("overrides") or {},
                "run_dir": None,
                "metrics": data["metrics"],
                "config": None,
                "error": None,
                "source": str(path),
                "command": data.get("command"),
            }
        )
    seen: dict[str, str] = {}
    for r in records:
        if r["key"] in seen:
            raise ValueError(
                f"{r['source']} and {seen[r['key']]} are both the run {r['key']!r}: a seed would count twice; "
                "move the superseded file out of the imported folder (e.g. into its superseded/ folder)"
            )
        seen[r["key"]] = r["source"]
    order = {name: i for i, name in enumerate([*TARGET_ALIASES, *TABLE1_PRESETS])}
    return sorted(
        records,
        key=lambda r: (order.get(r["target"], 99), order.get(r["preset"].split(" ")[0], 99), r["preset"], r["seed"]),
    )


def row_name(preset: str, overrides: dict, budget: int | None = None) -> str:
    """A run's table row: its preset, or ``preset (field=value, ..., N it)`` for a variant of it (overrides that
    change the preset's current settings, a budget that is not the preset's)."""
    changed = [f"{k}={v}" for k, v in variant_overrides(preset, overrides).items()] + _budget_variant(preset, budget)
    return preset + (f" ({', '.join(changed)})" if changed else "")


def _budget_variant(preset: str, budget: int | None) -> list[str]:
    """``["N it"]`` when a run's budget is not its preset's default (a shortened run is its own row)."""
    from diffsampler.agents.presets import PRESETS

    default = PRESETS[preset].iterations if preset in PRESETS else None
    return [f"{budget} it"] if budget is not None and default is not None and budget != default else []


def variant_overrides(preset: str, overrides: dict) -> dict:
    """The overrides that change ``preset``'s current agent settings (empty for unknown presets)."""
    from diffsampler.agents.config import field_paths
    from diffsampler.agents.presets import PRESETS

    if preset not in PRESETS or not overrides:
        return {}
    agent = PRESETS[preset].agent
    paths = field_paths(type(agent))
    changed = {}
    for name, value in overrides.items():
        if name not in paths:
            changed[name] = value  # not an agent field (e.g. an env keyword): keep it visible
            continue
        current = agent
        for part in (*paths[name][0], name):
            current = getattr(current, part)
        if current != value:
            changed[name] = value
    return changed
