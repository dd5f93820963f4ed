#!/usr/bin/env python
"""Benchmark samplers: methods x targets x seeds -> results.jsonl, table.md (the paper's Table 1) and figures.

Examples:
    python scripts/benchmark.py --quick --out runs/quick                      # 6 short runs, a few minutes
    python scripts/benchmark.py --targets 25gmm,manywell --presets all --seeds 3 --out runs/t1 --compare-paper
    python scripts/benchmark.py --targets lgcp --presets tb-expl-lp-ls --data-path ../shared/data --out runs/lgcp
    python scripts/benchmark.py --backend ray --ray-address auto --presets all --seeds 5 --out /shared/t1
    python scripts/benchmark.py --import benchmarks/results --out runs/imported --compare-paper

Run the same command again to resume: finished runs (metrics.json present) are skipped, interrupted
or failed ones start again. Targets: short names (25gmm, funnel, manywell = Manywell-32, manywell8,
lgcp, ...) or registered env ids. ``--set NAME=VALUE`` overrides a config field of every run that has
it (``--set eval_samples=500``); ``--env-arg NAME=VALUE`` passes an env keyword to every run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffsampler.agents.benchmark import QUICK, BenchmarkConfig, run_benchmark  # noqa: E402
from diffsampler.agents.benchmark.harness import DEFAULT_TARGETS, plan, write_jsonl  # noqa: E402
from diffsampler.agents.benchmark.jobs import finished_record, run_dir_of  # noqa: E402
from diffsampler.agents.benchmark.tables import PAPER_PATH, import_results, load_paper, render  # noqa: E402


def _pairs(items: list[str], flag: str, field_names: bool = True) -> dict[str, str]:
    """``NAME=VALUE`` items -> dict; field names may be written with dashes (``eval-samples``)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"error: {flag} expects NAME=VALUE, got {item!r}")
        name, value = (x.strip() for x in item.split("=", 1))
        out[name.replace("-", "_") if field_names else name] = value
    return out


def _budgets(items: list[str]) -> dict[str, int]:
    out = {}
    for preset, value in _pairs(items, "--preset-budget", field_names=False).items():
        if not value.isdigit():
            raise SystemExit(f"error: --preset-budget {preset}={value!r}: the budget must be a positive integer")
        out[preset] = int(value)
    return out


def _csv(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(t.strip() for t in text.split(",") if t.strip())


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--targets", help=f"comma-separated targets (default {','.join(DEFAULT_TARGETS)})")
    p.add_argument("--presets", help="comma-separated presets, 'all' (Table 1 rows present) or 'registered'")
    p.add_argument("--seeds", type=int, help="seeds per (target, preset): 0..N-1 (default 5)")
    p.add_argument("--iterations", "--budget", type=int, help="budget of every run (default: each preset's)")
    p.add_argument(
        "--preset-budget",
        action="append",
        default=[],
        metavar="PRESET=N",
        help="budget of one preset's runs, over --iterations (e.g. RL env steps: sb3-sac=300000)",
    )
    p.add_argument("--quick", action="store_true", help="a few minutes: 25gmm,manywell x 3 presets x 1 seed x 100 it")
    p.add_argument("--backend", default="local", help="local (process pool), ray, or inline (this process)")
    p.add_argument("--workers", type=int, help="local backend: parallel runs (default cores // threads)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--gpus-per-run", type=float, default=0.0, help="ray backend: GPUs each run asks for")
    p.add_argument("--ray-address", help="ray backend: cluster address (default: start a local instance)")
    p.add_argument("--ray-num-cpus", type=int, help="ray backend: CPUs of the local instance")
    p.add_argument("--data-path", default=os.environ.get("DIFFSAMPLER_DATA"), help="data root for LGCP/VAE")
    p.add_argument("--compare-paper", action="store_true", help="add the published numbers and differences")
    p.add_argument("--paper", default=str(PAPER_PATH), help="the published numbers (JSON)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="config override")
    p.add_argument("--env-arg", action="append", default=[], metavar="NAME=VALUE", help="env keyword argument")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether each is finished; run nothing")
    p.add_argument("--import", dest="import_from", nargs="+", metavar="PATH", help="tables from result JSON files")
    return p.parse_args(argv)


def config_from_args(args, command: str) -> BenchmarkConfig:
    quick = QUICK if args.quick else {}
    return BenchmarkConfig(
        out=args.out,
        targets=_csv(args.targets) or quick.get("targets", DEFAULT_TARGETS),
        presets=_csv(args.presets) or quick.get("presets", ("all",)),
        seeds=args.seeds or quick.get("seeds", 5),
        budget=args.iterations or quick.get("budget"),
        preset_budgets=_budgets(args.preset_budget),
        overrides=_pairs(args.set, "--set"),
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
        paper_path=args.paper,
        figures=not args.no_figures,
        progress=not args.no_progress,
        command=command,
    )


def import_tables(args, command: str) -> int:
    files = []
    for path in map(Path, args.import_from):
        files += sorted(path.glob("*.json")) if path.is_dir() else [path]
    records = import_results(files)
    if not records:
        print(f"error: no single-run result JSON in {args.import_from}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "results.jsonl", records)
    paper = load_paper(args.paper) if args.compare_paper or Path(args.paper).exists() else None
    (out / "table.md").write_text(render(records, paper, args.compare_paper, None, command))
    print(f"{len(records)} runs -> {out / 'table.md'}")
    return 0


def dry_run(cfg: BenchmarkConfig) -> int:
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
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    command = shlex.join(["python", "scripts/benchmark.py", *argv])
    try:
        if args.import_from:
            return import_tables(args, command)
        cfg = config_from_args(args, command)
        if args.dry_run:
            return dry_run(cfg)
        signal.signal(signal.SIGTERM, _interrupt)  # a kill stops the workers too; the next call resumes
        summary = run_benchmark(cfg)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished runs are kept in {args.out}/runs; run the same command again to finish the rest",
            file=sys.stderr,
        )
        return 130
    print(f"\n{summary.ran} runs trained ({summary.failed} failed), {summary.skipped} already finished")
    print(f"results: {Path(cfg.out) / 'results.jsonl'}\ntable:   {summary.table}")
    for fig in summary.figures:
        print(f"figure:  {fig}")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
