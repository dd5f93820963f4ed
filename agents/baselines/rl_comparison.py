"""RL baselines vs our GFlowNet samplers at an equal budget of target energy evaluations.

Each method runs through ``agents.runs`` with its own budget unit converted from one energy budget E:
an RL agent gets E episodes (E * T env steps: one terminal log-reward per episode); a GFlowNet preset
gets the largest number of iterations whose energy evaluations (forward batches, backward batches'
terminal rewards, local-search MALA steps) stay within E, found by replaying its training schedule
on a Gaussian env with the run's T (the count does not depend on the target, but on T for presets that
evaluate the target along the path: Langevin-parametrised and forward-looking ones). The measured count
of every run is reported next to its metrics. (The benchmark's ``--budget-energy`` stops a run on the
energy it spends instead: ``agents.benchmark.budgets``.)

    rows = compare(TARGETS, ("tb-expl", "sb3-sac"), energy=60_000, seed=0)
    print(markdown(rows))
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from diffsampler import envs
from diffsampler.agents.gflownet import GFlowNetAgent, GFlowNetConfig
from diffsampler.agents.presets import get_preset
from diffsampler.agents.runs import RunSpec, run
from diffsampler.envs.registry import SHORT_NAMES
from diffsampler.envs.targets.base import EvaluationCounter

# Table name -> (env id, env kwargs): the three targets (short names of ``envs.registry``).
TARGETS: dict[str, tuple[str, dict]] = {
    "25GMM": SHORT_NAMES["25gmm"],
    "Manywell-8": SHORT_NAMES["manywell8"],
    "Gaussian": (SHORT_NAMES["gaussian"][0], {"dim": 2, "mean": 1.0, "std": 0.5}),
}
METHODS = ("tb-expl", "tb-expl-ls", "sb3-sac", "sb3-ppo", "ts-sac")
COLUMNS = ("delta_log_z", "delta_log_z_rw", "w2", "wall_seconds", "energy_evaluations")


def gflownet_iterations(config: GFlowNetConfig, energy: int, num_steps: int = 100, **env_kwargs) -> int:
    """The most training iterations of ``config`` whose energy evaluations stay within ``energy``, with T =
    ``num_steps`` (``env_kwargs``: e.g. the preset's reference)."""
    mdp = envs.make_mdp("DiffSampler-Gaussian-v0", num_steps=num_steps, **env_kwargs)
    counter = EvaluationCounter(mdp.target)
    torch.manual_seed(0)
    agent = GFlowNetAgent(mdp, config)
    generator = torch.Generator().manual_seed(0)
    it = 0
    while True:
        agent.train_step(it, generator, generator)
        if counter.count > energy:
            return it
        it += 1


def budget(preset: str, energy: int, num_steps: int) -> int:
    """The run budget of ``preset`` (iterations or env steps) that spends ``energy`` evaluations."""
    agent = get_preset(preset).agent
    if isinstance(agent, GFlowNetConfig):
        iterations = gflownet_iterations(agent, energy, num_steps, **get_preset(preset).env_kwargs)
        if iterations < 1:
            raise ValueError(f"energy budget {energy} is below one iteration of {preset!r}")
        return iterations
    return energy * num_steps


def compare(
    targets: dict[str, tuple[str, dict]],
    methods: Sequence[str],
    energy: int,
    seed: int = 0,
    threads: int | None = 1,
    overrides: dict[str, dict] | None = None,
    run_root: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Run every method on every target at ``energy`` evaluations; one row per (target, method).

    ``overrides`` maps a method to config overrides (e.g. ``{"sb3-sac": {"gradient_steps": "2"}}``).
    """
    rows = []
    for name, (env_id, env_kwargs) in targets.items():
        num_steps = envs.make_mdp(env_id, **env_kwargs).num_steps
        for method in methods:
            spec = RunSpec(
                env_id,
                method,
                seed=seed,
                budget=budget(method, energy, num_steps),
                env_kwargs=env_kwargs,
                overrides=(overrides or {}).get(method, {}),
                threads=threads,
            )
            run_dir = None if run_root is None else Path(run_root) / f"{name.lower()}-{method}-s{seed}"
            start = time.perf_counter()
            result = run(spec, run_dir)
            row = {"target": name, "method": method, "budget": spec.budget, **result}
            row["wall_seconds"] = time.perf_counter() - start
            rows.append(row)
            log(_line(row))
    return rows


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1e5:
        return f"{value:.1e}"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"


def _line(row: dict) -> str:
    return f"{row['target']:11s} {row['method']:11s} " + " ".join(f"{c}={_fmt(row.get(c))}" for c in COLUMNS)


def markdown(rows: list[dict]) -> str:
    """The comparison table: one row per (target, method)."""
    head = "| target | method | budget | Δlog Z | Δlog Z^RW | W2 | wall time (s) | energy evaluations |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = "iterations" if isinstance(get_preset(r["method"]).agent, GFlowNetConfig) else "env steps"
        unit = unit.removesuffix("s") if r["budget"] == 1 else unit
        cells = [r["target"], r["method"], f"{r['budget']:,} {unit}"] + [_fmt(r.get(c)) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
