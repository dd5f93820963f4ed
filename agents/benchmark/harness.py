"""The benchmark: methods x targets x seeds -> run directories, results.jsonl, table.md, figures.

    from diffsampler.agents.benchmark import BenchmarkConfig, run_benchmark
    summary = run_benchmark(BenchmarkConfig(out="runs/bench", targets=("25gmm",), presets=("tb", "tb-expl"), seeds=3))

Finished runs (``metrics.json`` present) are never run again, so calling it again after a crash or
a kill runs only what is missing; a run that failed is retried.
"""

from __future__ import annotations

import ast
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from diffsampler.agents.benchmark.backends import BACKENDS
from diffsampler.agents.benchmark.budgets import budget_tables, energy_groups
from diffsampler.agents.benchmark.curves import budget_figures
from diffsampler.agents.benchmark.figures import sample_figures
from diffsampler.agents.benchmark.jobs import (
    TABLE1_PRESETS,
    Job,
    finished_record,
    materialize,
    resolve_target,
    run_dir_of,
)
from diffsampler.agents.benchmark.progress import Progress
from diffsampler.agents.benchmark.tables import PAPER_PATH, labels, load_paper, render
from diffsampler.agents.config import check_fields

DEFAULT_TARGETS = ("25gmm", "funnel", "manywell", "lgcp")
# --quick: a few iterations of three methods on two targets, one seed (a few minutes on a laptop CPU).
QUICK = {
    "targets": ("25gmm", "manywell"),
    "presets": ("tb-expl", "tb-expl-lp", "tb-expl-ls"),
    "seeds": 1,
    "budget": 100,
}


@dataclass(frozen=True)
class BenchmarkConfig:
    """A benchmark.

    Attributes:
        out: output directory (runs/, results.jsonl, table.md, figures/).
        targets: short target names (``jobs.TARGET_ALIASES``) or registered env ids.
        presets: preset names; ``"all"`` = the paper's Table 1 methods present in PRESETS,
            ``"registered"`` = every preset.
        seeds: seeds 0 .. seeds-1 per (target, preset).
        budget: budget of every run in its runner's unit (None: each preset's default).
        preset_budgets: preset -> budget, over ``budget`` (methods with different units, e.g. RL env steps).
        energy_budgets: equal-budget mode (``agents.benchmark.budgets``): every method up to each of these
            numbers of energy evaluations (instead of ``budget``); table.md holds the per-budget tables.
        preset_energies: preset -> its energy budgets, over ``energy_budgets`` (a method whose larger
            budgets do not fit the time at hand; the table estimates them).
        eval_repeats: every run's final evaluation (and those at energy budgets) averages this many
            independent evaluation batches (the runs' ``eval_repeats``; ``--set eval_repeats=K`` wins).
        overrides: config field -> value, applied to the runs whose config has that field.
        env_overrides: env keyword -> value for every run (e.g. ``{"num_steps": 50}``).
        backend: ``"local"`` (process pool), ``"ray"`` or ``"inline"`` (this process, serial).
        workers: local pool size (None: cores // threads).
        threads: torch threads per run.
        device: torch device of the runs.
        gpus_per_run: GPUs a Ray task asks for.
        ray_address: Ray cluster address (None: start a local instance).
        ray_num_cpus: CPUs of a local Ray instance (None: the cores).
        data_path: data root for targets that read files (LGCP, VAE); None: their own default.
        compare_paper: add the paper's numbers and the differences to table.md.
        paper_path: the published numbers (benchmarks/paper_table1.json).
        figures: write sample figures.
        progress: show the progress bar.
        command: the command line, quoted in table.md.
    """

    out: str
    targets: tuple[str, ...] = DEFAULT_TARGETS
    presets: tuple[str, ...] = ("all",)
    seeds: int = 5
    budget: int | None = None
    preset_budgets: dict = field(default_factory=dict)
    energy_budgets: tuple[int, ...] = ()
    preset_energies: dict = field(default_factory=dict)
    eval_repeats: int = 5
    overrides: dict = field(default_factory=dict)
    env_overrides: dict = field(default_factory=dict)
    backend: str = "local"
    workers: int | None = None
    threads: int = 1
    device: str = "cpu"
    gpus_per_run: float = 0.0
    ray_address: str | None = None
    ray_num_cpus: int | None = None
    data_path: str | None = None
    compare_paper: bool = False
    paper_path: str = str(PAPER_PATH)
    figures: bool = True
    progress: bool = True
    command: str | None = None

    def __post_init__(self):
        check_fields(self)
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; available: {sorted(BACKENDS)}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds must be a positive integer, got {self.seeds!r}")
        for name, budget in {"budget": self.budget, **self.preset_budgets}.items():
            if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
                raise ValueError(f"budget of {name!r} must be None or a positive integer, got {budget!r}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be None or >= 1, got {self.workers!r}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads!r}")
        if not (math.isfinite(self.gpus_per_run) and self.gpus_per_run >= 0):
            raise ValueError(f"gpus_per_run must be >= 0, got {self.gpus_per_run!r}")
        if self.energy_budgets and (self.budget is not None or self.preset_budgets):
            raise ValueError("energy budgets set every run's budget: give them without --iterations/--preset-budget")
        if self.preset_energies and not self.energy_budgets:
            raise ValueError("per-preset energy budgets need --budget-energy")
        if isinstance(self.eval_repeats, bool) or not isinstance(self.eval_repeats, int) or self.eval_repeats < 1:
            raise ValueError(f"eval_repeats must be a positive integer, got {self.eval_repeats!r}")
        if not self.targets or not self.presets:
            raise ValueError(f"need at least one target and one preset, got {self.targets!r}, {self.presets!r}")


@dataclass
class Summary:
    """What one call did: runs trained now, skipped as already finished, failed; all records."""

    ran: int
    skipped: int
    failed: int
    records: list[dict]
    table: Path | None
    figures: list[Path]


def resolve_presets(names: tuple[str, ...]) -> list[str]:
    from diffsampler.agents.presets import PRESETS

    out = []
    for name in names:
        if name == "all":
            out += [p for p in TABLE1_PRESETS if p in PRESETS]
        elif name == "registered":
            out += list(PRESETS)
        elif name in PRESETS:
            out.append(name)
        else:
            raise ValueError(f"unknown preset {name!r}; available: {sorted(PRESETS)} (or 'all', 'registered')")
    return list(dict.fromkeys(out))


def _literal(value):
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def plan(cfg: BenchmarkConfig) -> list[Job]:
    """The jobs of ``cfg`` (targets x presets x seeds), each validated by building its run config."""
    from diffsampler.agents.config import field_paths, parse_value
    from diffsampler.agents.runs import build, runner_for

    presets = resolve_presets(cfg.presets)
    fields = {p: field_paths(runner_for(p).config_type) for p in presets}
    unused = [k for k in cfg.overrides if not any(k in f for f in fields.values())]
    if unused:
        raise ValueError(f"overrides {unused} name no config field of the presets {presets}")
    unknown = sorted((set(cfg.preset_budgets) | set(cfg.preset_energies)) - set(presets))
    if unknown:
        raise ValueError(f"preset budgets for {unknown}, which are not among the presets {presets}")
    repeats = {"eval_repeats": cfg.eval_repeats}
    env_overrides = {k: _literal(v) for k, v in cfg.env_overrides.items()}
    targets = [resolve_target(t, cfg.data_path) for t in cfg.targets]
    jobs = []
    for name, env_id, env_kwargs in targets:
        for preset in presets:
            given = repeats | cfg.overrides
            overrides = {k: parse_value(v, fields[preset][k][1], k) for k, v in given.items() if k in fields[preset]}
            energies = tuple(cfg.preset_energies.get(preset, cfg.energy_budgets))
            for seed in range(cfg.seeds):
                for energy in energy_groups(preset, energies):
                    job = Job(
                        name,
                        env_id,
                        {**env_kwargs, **env_overrides},
                        preset,
                        seed,
                        cfg.preset_budgets.get(preset, cfg.budget),
                        overrides,
                        cfg.device,
                        cfg.threads,
                        energy,
                    )
                    build(job.spec())  # a bad override is an error now, not in a worker later
                    jobs.append(job)
    return jobs


def _check_envs(jobs: list[Job]) -> None:
    """Build each distinct env once, so a missing data file fails here with the target's own message."""
    from diffsampler import envs

    seen = set()
    for job in jobs:
        key = json.dumps([job.env_id, job.env_kwargs], sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            envs.make_mdp(job.env_id, **job.env_kwargs)


def write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in records))
    os.replace(tmp, path)


def write_outputs(cfg: BenchmarkConfig, records: list[dict]) -> tuple[Path, list[Path]]:
    """table.md (and figures/ when ``cfg.figures``) from ``records``."""
    out = Path(cfg.out)
    paper = load_paper(cfg.paper_path) if Path(cfg.paper_path).exists() or cfg.compare_paper else None
    table = out / "table.md"
    if cfg.energy_budgets:
        table.write_text(budget_tables(records, paper, cfg.energy_budgets, cfg.command))
    else:
        table.write_text(render(records, paper, cfg.compare_paper, cfg.seeds, cfg.command))
    figures = []
    if cfg.figures:
        methods, targets = labels(paper)
        figures = sample_figures(records, out / "figures", lambda p: methods.get(p, p), lambda t: targets.get(t, t))
        if cfg.energy_budgets:
            figures += budget_figures(records, paper, out / "figures", cfg.energy_budgets)
    return table, figures


def run_benchmark(cfg: BenchmarkConfig) -> Summary:
    """Run what is missing of ``cfg``'s jobs, then write results.jsonl, table.md and figures."""
    jobs = plan(cfg)
    out = Path(cfg.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {}
    todo = []
    for job in jobs:
        run_dir = run_dir_of(out, job)
        record = finished_record(run_dir, job)
        if record is None:
            todo.append((job, run_dir))
        else:
            records[job.key] = record

    def ordered() -> list[dict]:
        return [records[j.key] for j in jobs if j.key in records]

    failed = 0
    if todo:
        _check_envs([job for job, _ in todo])
        backend = BACKENDS[cfg.backend](
            workers=cfg.workers,
            threads=cfg.threads,
            gpus=cfg.gpus_per_run,
            address=cfg.ray_address,
            num_cpus=cfg.ray_num_cpus,
        )
        progress = Progress(len(todo), len(jobs) - len(todo), backend.slots, cfg.progress)
        try:
            for job, run_dir, result in backend.run(todo):
                materialize(run_dir, result["files"])
                records[job.key] = result["record"]
                failed += result["record"]["status"] != "ok"
                progress.update(result["record"])
                write_jsonl(out / "results.jsonl", ordered())
        finally:
            progress.close()
            backend.close()
    write_jsonl(out / "results.jsonl", ordered())
    table, figures = write_outputs(cfg, ordered())
    return Summary(len(todo), len(jobs) - len(todo), failed, ordered(), table, figures)
