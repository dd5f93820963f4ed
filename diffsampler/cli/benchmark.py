"""diffsampler-benchmark: methods x targets x seeds -> results.jsonl, table.md (the paper's Table 1), figures.

Examples:
    diffsampler-benchmark --quick --out runs/quick                      # 6 short runs, a few minutes
    diffsampler-benchmark --targets 25gmm,manywell --presets all --seeds 3 --out runs/t1 --compare-paper
    diffsampler-benchmark --targets lgcp --presets tb-expl-lp-ls --data-path ../shared/data --out runs/lgcp
    diffsampler-benchmark --backend ray --ray-address auto --presets all --seeds 5 --out /shared/t1
    diffsampler-benchmark --import benchmarks/results --out runs/imported --compare-paper
    diffsampler-benchmark --targets 25gmm --presets tb-expl,smc,sb3-ppo --budget-energy 1e5,1e6 --out runs/x

Run the same command again to resume: finished runs (metrics.json present) are skipped, interrupted ones
continue from their last checkpoint (training methods), others start again. Targets: short names (25gmm,
funnel, manywell = Manywell-32, manywell8, lgcp, ...) or registered env ids. ``--set NAME=VALUE``
overrides a config field of every run that has it (``--set eval_samples=500``); ``--env-arg NAME=VALUE``
passes an env keyword to every run. ``--budget-energy 1e5,1e6`` runs every method up to each number of
energy evaluations (target evaluations spent by training) and writes per-budget tables and
metric-against-evaluations figures.
``python scripts/benchmark.py`` is the same command from a checkout. Arguments are checked against
``cli.schema`` before torch is imported.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path

from diffsampler.agents.budget import parse_energies
from diffsampler.cli import args as cli
from diffsampler.cli import schema
from diffsampler.cli.outcome import guarded
from diffsampler.envs.registry import ENV_IDS, SHORT_NAMES

DEFAULT_TARGETS = ("25gmm", "funnel", "manywell", "lgcp")  # agents.benchmark.harness.DEFAULT_TARGETS
BACKENDS = ("local", "ray", "inline")  # agents.benchmark.backends.BACKENDS (checked again there)


def _pairs(items: list[str], flag: str, field_names: bool = True) -> dict[str, str]:
    """``NAME=VALUE`` items -> dict; field names may be written with dashes (``eval-samples``)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise cli.UsageError(f"{flag} expects NAME=VALUE, got {item!r}")
        name, value = (x.strip() for x in item.split("=", 1))
        out[name.replace("-", "_") if field_names else name] = value
    return out


def _csv(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(t.strip() for t in text.split(",") if t.strip())


def parser() -> cli.Parser:
    formatter = cli.argparse.RawDescriptionHelpFormatter
    p = cli.Parser(prog="diffsampler-benchmark", description=__doc__, formatter_class=formatter)
    p.add_argument("-h", "--help", action="help", help="show this help and exit")
    p.add_argument(
        "--out",
        help="output directory (required; with --import optional: the tables are printed, and written there if given)",
    )
    p.add_argument("--targets", help=f"comma-separated targets (default {','.join(DEFAULT_TARGETS)})")
    p.add_argument("--presets", help="comma-separated presets, 'all' (Table 1 rows present) or 'registered'")
    p.add_argument("--seeds", type=cli.positive("--seeds"), help="seeds per (target, preset): 0..N-1 (default 5)")
    budget = cli.positive("--iterations")
    p.add_argument("--iterations", "--budget", type=budget, help="budget of every run (default: each preset's)")
    p.add_argument(
        "--preset-budget",
        action="append",
        default=[],
        metavar="PRESET=N",
        help="budget of one preset's runs, over --iterations (e.g. RL env steps: sb3-sac=300000)",
    )
    p.add_argument(
        "--budget-energy",
        metavar="E1,E2,...",
        help="equal-budget mode: every method up to each number of energy evaluations (e.g. 1e5,1e6,1e7)",
    )
    p.add_argument(
        "--preset-energy",
        action="append",
        default=[],
        metavar="PRESET=E1,E2",
        help="energy budgets of one preset, over --budget-energy (e.g. sb3-ppo=1e5,1e6; the others are estimated)",
    )
    p.add_argument(
        "--eval-repeats",
        type=cli.positive("--eval-repeats"),
        default=5,
        help="independent evaluation batches averaged at the end of every run (default 5; mean ± std in the tables)",
    )
    p.add_argument("--quick", action="store_true", help="a few minutes: 25gmm,manywell x 3 presets x 1 seed x 100 it")
    p.add_argument("--backend", default="local", type=cli.choice("--backend", BACKENDS), help="local, ray or inline")
    p.add_argument("--workers", type=cli.positive("--workers"), help="local backend: parallel runs (cores // threads)")
    p.add_argument("--threads", type=cli.positive("--threads"), default=1, help="torch threads per run (default 1)")
    p.add_argument("--device", type=cli.device, default="cpu")
    p.add_argument("--gpus-per-run", type=float, default=0.0, help="ray backend: GPUs each run asks for")
    p.add_argument("--ray-address", help="ray backend: cluster address (default: start a local instance)")
    p.add_argument("--ray-num-cpus", type=cli.positive("--ray-num-cpus"), help="ray backend: CPUs of a local instance")
    p.add_argument("--data-path", default=os.environ.get("DIFFSAMPLER_DATA"), help="data root for LGCP/VAE")
    p.add_argument("--compare-paper", action="store_true", help="add the published numbers and differences")
    p.add_argument("--paper", help="the published numbers (JSON; default benchmarks/paper_table1.json)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="config override")
    p.add_argument("--env-arg", action="append", default=[], metavar="NAME=VALUE", help="env keyword argument")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether each is finished; run nothing")
    p.add_argument("--import", dest="import_from", nargs="+", metavar="PATH", help="tables from result JSON files")
    p.add_argument("--export", metavar="DIR", help="equal-budget mode: also write each finished run's record to DIR")
    return p


def check(args) -> dict:
    """The torch-free checks of targets, presets, overrides and budgets; returns the parsed pieces."""
    presets_known = schema.load()["presets"]
    targets = _csv(args.targets)
    for name in targets or ():
        if name not in SHORT_NAMES and name not in ENV_IDS:
            raise cli.UsageError(
                f"unknown target {name!r}{cli.suggest(name, [*SHORT_NAMES, *ENV_IDS])}; short names: "
                f"{', '.join(SHORT_NAMES)}; or a registered env id"
            )
    if args.out is None and not args.import_from:
        raise cli.UsageError("the following arguments are required: --out (optional only with --import)")
    presets = _csv(args.presets)
    for name in presets or ():
        if name not in presets_known and name not in ("all", "registered"):
            hint = cli.suggest(name, presets_known)
            raise cli.UsageError(
                f"unknown preset {name!r}{hint}; available: {', '.join(presets_known)}, all, registered"
            )
    fields = {}
    for entry in schema.load()["configs"].values():
        fields = entry["fields"] | fields
    overrides = _pairs(args.set, "--set")
    for name, text in overrides.items():
        if name not in fields:
            hint = cli.suggest(name, fields, cutoff=0.8)
            raise cli.UsageError(f"--set {name}=...: {name!r} is not a config field of any preset{hint}")
        cli.check_field(name, text, fields[name])
    budgets = {}
    for preset, value in _pairs(args.preset_budget, "--preset-budget", field_names=False).items():
        if preset not in presets_known:
            raise cli.UsageError(
                f"--preset-budget {preset}={value}: unknown preset{cli.suggest(preset, presets_known)}"
            )
        try:
            budgets[preset] = cli.positive(f"--preset-budget {preset}=N")(value)
        except cli.argparse.ArgumentTypeError as err:
            raise cli.UsageError(str(err)) from None
    try:
        energies = parse_energies(args.budget_energy) if args.budget_energy else ()
        preset_energies = {
            k: parse_energies(v) for k, v in _pairs(args.preset_energy, "--preset-energy", field_names=False).items()
        }
    except ValueError as err:
        raise cli.UsageError(str(err)) from None
    for preset in preset_energies:
        if preset not in presets_known:
            raise cli.UsageError(f"--preset-energy {preset}=...: unknown preset{cli.suggest(preset, presets_known)}")
    if args.gpus_per_run < 0 or args.gpus_per_run != args.gpus_per_run:
        raise cli.UsageError(f"--gpus-per-run must be a number >= 0, got {args.gpus_per_run}")
    return {
        "targets": targets,
        "presets": presets,
        "overrides": overrides,
        "budgets": budgets,
        "energies": energies,
        "preset_energies": preset_energies,
    }


def config_from_args(args, command: str, checked: dict):
    from diffsampler.agents.benchmark import QUICK, BenchmarkConfig
    from diffsampler.agents.benchmark.tables import PAPER_PATH

    quick = QUICK if args.quick else {}
    return BenchmarkConfig(
        out=args.out,
        targets=checked["targets"] or quick.get("targets", DEFAULT_TARGETS),
        presets=checked["presets"] or quick.get("presets", ("all",)),
        seeds=args.seeds or quick.get("seeds", 5),
        budget=args.iterations or quick.get("budget"),
        preset_budgets=checked["budgets"],
        energy_budgets=checked["energies"],
        preset_energies=checked["preset_energies"],
        eval_repeats=args.eval_repeats,
        overrides=checked["overrides"],
        env_overrides=_pairs(args.env_arg, "--env-arg"),
        backend=args.backend,
        workers=args.workers,
        threads=args.threads,
        device=args.device,
        gpus_per_run=args.gpus_per_run,
        ray_address=args.ray_address,
        ray_num_cpus=args.ray_num_cpus,
        data_path=args.data_path,
        compare_paper=args.compare_paper,
        paper_path=args.paper or str(PAPER_PATH),
        figures=not args.no_figures,
        progress=not args.no_progress,
        command=command,
    )


def import_tables(args, command: str, checked: dict) -> int:
    from diffsampler.agents.benchmark.harness import write_jsonl
    from diffsampler.agents.benchmark.tables import PAPER_PATH, import_results, load_paper, render

    files = []
    for path in map(Path, args.import_from):
        files += sorted(path.glob("*.json")) if path.is_dir() else [path]
    if args.budget_energy:
        if args.out is None:
            raise cli.UsageError("--import with --budget-energy writes tables and figures: give --out")
        return import_budget_tables(args, files, command, checked["energies"])
    try:
        records = import_results(files)
    except ValueError as exc:  # the same run imported twice
        raise cli.UsageError(str(exc)) from None
    if not records:
        raise cli.UsageError(f"no single-run result JSON in {args.import_from}")
    paper_path = args.paper or str(PAPER_PATH)
    paper = load_paper(paper_path) if args.compare_paper or Path(paper_path).exists() else None
    table = render(records, paper, args.compare_paper, None, command)
    if args.out is None:  # print: Table 1 (and with --compare-paper the paper's and the scaling table)
        print(table)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "results.jsonl", records)
    (out / "table.md").write_text(table)
    print(f"{len(records)} runs -> {out / 'table.md'}")
    return 0


def import_budget_tables(args, files: list[Path], command: str, energies: tuple[int, ...]) -> int:
    """Equal-budget tables and figures of exported records (``--export``), e.g. benchmarks/results/budget."""
    from diffsampler.agents.benchmark.budgets import budget_tables, import_records
    from diffsampler.agents.benchmark.curves import budget_figures
    from diffsampler.agents.benchmark.harness import write_jsonl
    from diffsampler.agents.benchmark.tables import PAPER_PATH, load_paper

    records = import_records(files)
    if not records:
        raise cli.UsageError(f"no equal-budget run records in {args.import_from}")
    order = {t: i for i, t in enumerate(_csv(args.targets) or ())}
    presets = {p: i for i, p in enumerate(_csv(args.presets) or ())}
    records.sort(key=lambda r: (order.get(r["target"], 99), presets.get(r["preset"], 99), r["key"]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "results.jsonl", records)
    paper_path = args.paper or str(PAPER_PATH)
    paper = load_paper(paper_path) if Path(paper_path).exists() else None
    (out / "table.md").write_text(budget_tables(records, paper, energies, command))
    figures = [] if args.no_figures else budget_figures(records, paper, out / "figures", energies)
    print(f"{len(records)} runs -> {out / 'table.md'}" + "".join(f"\nfigure:  {f}" for f in figures))
    return 0


def dry_run(cfg) -> int:
    from diffsampler.agents.benchmark.harness import plan
    from diffsampler.agents.benchmark.jobs import finished_record, run_dir_of

    jobs = plan(cfg)
    done = 0
    for job in jobs:
        run_dir = run_dir_of(cfg.out, job)
        finished = finished_record(run_dir, job) is not None
        done += finished
        state = "finished" if finished else ("restart" if run_dir.exists() else "to run")
        print(f"{state:8s}  {job.key}  budget={job.budget or 'preset'}  {job.env_id} {job.env_kwargs}")
    print(f"{len(jobs)} runs: {done} finished, {len(jobs) - done} to run")
    return 0


def _interrupt(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the first TERM stops cleanly, a second one at once
    raise KeyboardInterrupt


def main(argv=None) -> int:
    """The console script ``diffsampler-benchmark``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser().parse_args(argv)
        checked = check(args)
    except cli.UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = shlex.join(["diffsampler-benchmark", *argv])
    if args.import_from:
        return guarded(lambda: import_tables(args, command, checked))
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    interrupted = (
        f"interrupted: finished runs are kept in {args.out}/runs; run the same command again to finish the rest"
    )
    return guarded(lambda: _run(args, command, checked), interrupted)


def _run(args, command: str, checked: dict) -> int:
    from diffsampler.agents.benchmark import run_benchmark

    cfg = config_from_args(args, command, checked)
    if args.dry_run:
        return dry_run(cfg)
    signal.signal(signal.SIGTERM, _interrupt)  # a kill stops the workers too; the next call resumes
    summary = run_benchmark(cfg)
    if args.export:
        from diffsampler.agents.benchmark.budgets import export_records

        print(f"exported {len(export_records(summary.records, args.export))} run records to {args.export}")
    print(f"\n{summary.ran} runs trained ({summary.failed} failed), {summary.skipped} already finished")
    print(f"results: {Path(cfg.out) / 'results.jsonl'}\ntable:   {summary.table}")
    for fig in summary.figures:
        print(f"figure:  {fig}")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
