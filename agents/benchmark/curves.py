"""Figures of the equal-budget comparison: each metric against energy evaluations, all methods on one plot.

One figure per target (``<target>_budget.png``), one panel per metric (Δlog Z^RW, Δlog Z, W2; log Ẑ^RW and
log Ẑ where log Z is unknown), log energy axis. A method that runs once for all budgets draws its whole
curve (every evaluation of the run, ``curve.jsonl``); one that runs per budget (SMC, MALA) draws the
final point of each run. Error bars: the std over evaluation repeats. The paper's Table 1 number is a
marker where it exists: for a GFlowNet preset at the paper's training budget (the preset's iterations at
the evaluations per iteration of this run), for SMC, whose budget our paper table does not hold, a
dotted horizontal line.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from diffsampler.agents.benchmark.tables import Results  # noqa: E402

METRICS = {True: ("delta_log_z_rw", "delta_log_z", "w2"), False: ("log_z_rw", "log_z", "w2")}
LABELS = {
    "delta_log_z_rw": "Δlog Z^RW",
    "delta_log_z": "Δlog Z",
    "log_z_rw": "log Ẑ^RW",
    "log_z": "log Ẑ",
    "w2": "W2",
}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def method_points(res: Results, target: str, preset: str, key: str) -> list[tuple[float, float, float | None]]:
    """``(energy, value, std)`` of one method on one target, sorted by energy (lowest seed only)."""
    points = []
    runs = sorted(res.runs(target, preset), key=lambda r: r["seed"])
    runs = [r for r in runs if r["seed"] == runs[0]["seed"]] if runs else []
    for r in runs:
        curve = r.get("curve") or []
        if not curve and r.get("metrics"):
            m = r["metrics"]
            curve = [{"energy_evaluations": m.get("energy_evaluations"), "metrics": m}]
        for p in curve:
            m, e = p.get("metrics") or {}, p.get("energy_evaluations")
            if _finite(m.get(key)) and _finite(e) and e > 0:
                points.append((float(e), float(m[key]), (m.get("eval_std") or {}).get(key)))
    return sorted(set(points), key=lambda p: p[0])


def _paper_marker(res: Results, target: str, preset: str, key: str) -> tuple[float | None, float] | None:
    """(x, paper value): x the energy of the paper's budget (None: unknown, drawn as a line)."""
    from diffsampler.agents.presets import PRESETS

    ref = res.paper_value(preset, target, key)
    if not ref:
        return None
    runs = [r["metrics"] for r in res.runs(target, preset) if (r.get("metrics") or {}).get("iterations")]
    if preset not in PRESETS or not runs or type(PRESETS[preset].agent).__name__ != "GFlowNetConfig":
        return None, float(ref[0])
    m = max(runs, key=lambda m: m["iterations"])
    return PRESETS[preset].iterations * m["energy_evaluations"] / m["iterations"], float(ref[0])


def budget_figure(res: Results, target: str, path: Path, energies: tuple[int, ...]) -> bool:
    """Draw ``target``'s figure to ``path``; False when no method has a point."""
    recs = [r for r in res.records if r["target"] == target]
    known = any((r.get("metrics") or {}).get("delta_log_z") is not None for r in recs)
    keys = METRICS[known]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.6), squeeze=False, sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = False
    for ax, key in zip(axes[0], keys):
        for i, preset in enumerate(res.presets):
            color = colors[i % len(colors)]
            pts = method_points(res, target, preset, key)
            if pts:
                drawn = True
                x, y = [p[0] for p in pts], [p[1] for p in pts]
                err = [p[2] if _finite(p[2]) else 0.0 for p in pts]
                ax.errorbar(x, y, yerr=err, marker="o", ms=3, lw=1.2, color=color, label=res.method(preset))
            marker = _paper_marker(res, target, preset, key)
            if marker is not None and marker[0] is not None:
                ax.plot(marker[0], marker[1], marker="*", ms=12, color=color, mec="black", ls="none")
            elif marker is not None:
                ax.axhline(marker[1], color=color, ls=":", lw=1)
        for e in energies:
            ax.axvline(e, color="grey", lw=0.5, ls="--")
        ax.set_xscale("log")
        values = [v for p in res.presets for _, v, _ in method_points(res, target, p, key)]
        if key.startswith("delta") and values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("energy evaluations (training)")
        ax.set_title(LABELS[key])
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]}
    fig.legend(list(handles.values()), list(handles), fontsize=8, loc="lower center", ncol=min(len(handles), 4))
    fig.suptitle(
        f"{res.target(target)}: metrics against energy evaluations "
        "(★ paper's Table 1 at its budget; dotted: paper SMC, budget unknown)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    if drawn:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def budget_figures(records: list[dict], paper: dict | None, out_dir: str | Path, energies: tuple[int, ...]):
    """``<target>_budget.png`` per target under ``out_dir``; returns the paths written."""
    res = Results(records, paper)
    out = []
    for target in res.targets:
        path = Path(out_dir) / f"{target}_budget.png"
        if budget_figure(res, target, path, energies):
            out.append(path)
    return out
