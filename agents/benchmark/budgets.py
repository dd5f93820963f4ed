"""Equal-budget comparison: every method at the same numbers of energy evaluations (``--budget-energy``).

An energy budget counts the target's log-reward evaluations spent by training (a value-and-gradient call
counts once; evaluation excluded). A method's run for a budget is built by its runner
(``Runner.energy_run``): a GFlowNet, PIS or DDS preset trains until an iteration would cross the budget
(forward, backward and local-search evaluations all count); SMC keeps its particles and takes the most
temperatures that fit, MALA its chains and the most steps, an RL agent whole batches of episodes (one
terminal reward each). Where nothing in a run depends on its total budget (``Runner.curve_budgets``: the
GFlowNet presets, whose exploration decays by iteration, and the RL agents) one run to the largest budget
gives every budget's point, evaluated on the last model within each (``agents.budget``); SMC and MALA
run once per budget (an SMC run with K temperatures is a different run from one with K/10, and MALA's
burn-in is half its steps).

``budget_tables`` renders one table per target (rows: methods; columns: budgets; cells: Δlog Z^RW / W2,
or log Ẑ^RW where log Z is unknown) and what each cell cost.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from diffsampler.agents.benchmark.tables import Results, fmt

# Cell metrics: (primary, secondary) with log Z known, and without it.
CELL_KEYS = (("delta_log_z_rw", "w2"), ("log_z_rw", "w2"))


def energy_label(n: int) -> str:
    """``100000`` -> ``"1e5"``, ``300000`` -> ``"3e5"``; other numbers as they are."""
    k = int(math.log10(n)) if n > 0 else 0
    mantissa, rest = divmod(n, 10**k)
    return f"{mantissa}e{k}" if rest == 0 and 1 <= mantissa <= 9 and k >= 3 else str(n)


def energy_groups(preset: str, energies: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The runs of ``preset`` for ``energies``: one for all of them (``curve_budgets``) or one per budget;
    ``[()]`` (one ordinary run) without energy budgets."""
    from diffsampler.agents.runs import runner_for

    if not energies:
        return [()]
    return [tuple(energies)] if runner_for(preset).curve_budgets else [(b,) for b in energies]


def budget_point(record: dict, energy: int) -> dict | None:
    """The point of a finished run for the budget ``energy``: the curve point marked with it, or the final
    metrics of a run made for that budget alone; None when the run has none (not reached, or not run)."""
    if record.get("status") != "ok" or energy not in (record.get("energy") or ()):
        return None
    for point in record.get("curve") or ():
        if energy in point.get("marks", ()):
            return {**point["metrics"], "iterations": point["iteration"], "energy": point["energy_evaluations"]}
    if tuple(record["energy"]) == (energy,):
        m = record["metrics"] or {}
        return {**m, "iterations": m.get("iterations"), "energy": m.get("energy_evaluations")}
    return None


def _value(points: list[dict], key: str) -> str:
    values = [p[key] for p in points if isinstance(p.get(key), (int, float)) and math.isfinite(p[key])]
    if not values:
        return "–"
    if len(values) > 1:  # several seeds: mean ± std over seeds
        return f"{fmt(statistics.fmean(values))} ± {fmt(statistics.stdev(values))}"
    std = (points[0].get("eval_std") or {}).get(key)
    return fmt(values[0]) if std is None else f"{fmt(values[0])} ± {fmt(std, values[0])}"


def _estimate(res: Results, target: str, preset: str, energy: int) -> str:
    """``not run (~N CPU-h)``: the training time of ``energy`` evaluations at the rate of the preset's
    largest finished run on this target (training seconds per evaluation; evaluation excluded)."""
    rates = [
        (m["energy_evaluations"], m.get("train_seconds") or m["ms_per_iteration"] * m["iterations"] / 1000)
        for r in res.runs(target, preset)
        if (m := r.get("metrics") or {}).get("energy_evaluations") and m.get("ms_per_iteration") is not None
    ]
    if not rates:
        return "not run"
    spent, seconds = max(rates)
    hours = energy * seconds / spent / 3600
    return f"not run (~{hours:.2g} CPU-h)"


def budget_cell(res: Results, target: str, preset: str, energy: int, keys: tuple[str, str]) -> str:
    runs = [r for r in res.runs(target, preset, status=None) if energy in (r.get("energy") or ())]
    if not runs:
        return _estimate(res, target, preset, energy)
    points = [p for r in runs if (p := budget_point(r, energy)) is not None]
    if not points:
        failed = sum(r["status"] == "failed" for r in runs)
        return f"failed ({failed})" if failed else "not reached"
    return " / ".join(_value(points, k) for k in keys)


def _cost(res: Results, target: str, preset: str, energy: int) -> str:
    points = [p for r in res.runs(target, preset) if (p := budget_point(r, energy)) is not None]
    if not points:
        return "–"
    p = points[0]
    return f"{p['iterations']:,} · {p['energy']:,}"


def budget_tables(records: list[dict], paper: dict | None, energies: tuple[int, ...], command: str | None) -> str:
    """The equal-budget tables of ``records`` (table.md in ``--budget-energy`` mode)."""
    res = Results(records, paper)
    cols = [energy_label(e) for e in energies]
    parts = ["# Equal-budget comparison", ""]
    if command:
        parts += [f"Command: `{command}`", ""]
    parts += [
        "Columns: budgets of energy evaluations (target log-reward evaluations spent by training; a value and "
        "gradient count once; evaluation excluded). A cell is the last model within the budget. Cells: "
        "Δlog Z^RW / W2 (lower is better), or log Ẑ^RW / W2 where log Z is unknown; ± is the std over the "
        "evaluation repeats (over seeds when there are several). 'not run (~N CPU-h)': the training time of "
        "that budget at the rate of the method's largest run here; 'not reached': the run stopped before it.",
        "",
    ]
    for t in res.targets:
        recs = [r for r in records if r["target"] == t]
        known = any((r.get("metrics") or {}).get("delta_log_z") is not None for r in recs)
        keys = CELL_KEYS[0] if known else CELL_KEYS[1]
        head = "Δlog Z^RW / W2" if known else "log Ẑ^RW / W2"
        parts += [f"## {res.target(t)}: {head}", "", _row(["Method", *cols]), _row(["---"] * (len(cols) + 1))]
        for p in res.presets:
            parts.append(_row([res.method(p), *(budget_cell(res, t, p, e, keys) for e in energies)]))
        parts += ["", "Cost of each cell (iterations in the method's unit · energy evaluations spent):", ""]
        parts += [_row(["Method", *cols]), _row(["---"] * (len(cols) + 1))]
        for p in res.presets:
            parts.append(_row([res.method(p), *(_cost(res, t, p, e) for e in energies)]))
        parts.append("")
    return "\n".join(parts)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def export_records(records: list[dict], directory: str | Path) -> list[Path]:
    """Each finished equal-budget record as ``<key>.json`` (its job, config with versions, metrics and curve):
    what ``import_records`` reads back into the same tables and figures without the run directories."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for r in records:
        if r.get("status") == "ok" and r.get("energy"):
            path = directory / f"{r['key']}.json"
            path.write_text(json.dumps({**r, "run_dir": None}, indent=1, default=str))
            written.append(path)
    return written


def import_records(paths) -> list[dict]:
    """The equal-budget records among JSON files (``export_records``' output), in the order of the paths."""
    records = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        if isinstance(data, dict) and data.get("energy") and "curve" in data and "key" in data:
            records.append(data)
    return records
