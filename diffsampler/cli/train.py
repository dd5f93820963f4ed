"""diffsampler-train: train one diffusion sampler (env id + preset + overrides -> a run directory).

Examples:
    diffsampler-train                                    # the quick default: 25GMM, tb-expl-lp, 2,000 iterations
    diffsampler-train --env DiffSampler-Manywell-v0 --preset tb-expl --iterations 25000
    diffsampler-train --env DiffSampler-Manywell-v0 --preset tb --dim 128 --lr-policy 3e-4
    diffsampler-train --target examples/banana.py:banana --preset tb-expl --iterations 2000
    diffsampler-train --resume runs/my-run --iterations 30000
    diffsampler-train --resume runs/my-run --evaluate 10

Any config field of the preset is an option ``--field-name VALUE`` (listed below and by ``--list-fields``);
any keyword of the env is too (``--dim 128``, ``--num-steps 50``). ``python scripts/train_agent.py`` is the
same command from a checkout. Exit status: 0 done, 2 bad input or a damaged run directory, 3 training
stopped by non-finite numbers or divergence, 1 an I/O error (e.g. a full disk), 128 + N stopped by signal N
(Ctrl-C: 130, SIGTERM: 143) after saving a checkpoint.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from diffsampler.cli import args as cli
from diffsampler.cli import schema
from diffsampler.cli.outcome import guarded
from diffsampler.envs.registry import ENV_IDS
from diffsampler.registration import CUSTOM_ENV_ID

DEFAULT_ENV, DEFAULT_PRESET, QUICK_ITERATIONS = "DiffSampler-GMM25-v0", "tb-expl-lp", 2000


def parser() -> cli.Parser:
    presets = sorted(schema.load()["presets"])
    p = cli.Parser(
        prog="diffsampler-train", description=__doc__, formatter_class=cli.argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-h", "--help", action="store_true", help="this help, with the config fields of --preset")
    p.add_argument("--env", type=cli.choice("--env", [*ENV_IDS, CUSTOM_ENV_ID]), help=f"env id (default {DEFAULT_ENV})")
    p.add_argument(
        "--preset", "--agent", type=cli.choice("--preset", presets), help=f"the method (default {DEFAULT_PRESET})"
    )
    p.add_argument(
        "--target", help="a user-defined energy 'package.module:attr' or 'path/to/file.py:attr' (env Custom)"
    )
    p.add_argument(
        "--iterations",
        "--env-steps",
        type=cli.positive("--iterations"),
        help="budget in the method's unit: training iterations, env steps (RL), temperatures (smc), MALA steps "
        f"(mala); default: the preset's, or {QUICK_ITERATIONS:,} for the quick default (no --env/--preset/--target)",
    )
    p.add_argument("--seed", type=cli.seed, default=0, help="the run's seed (default 0)")
    p.add_argument("--device", type=cli.device, default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument(
        "--threads", type=cli.positive("--threads"), help="torch CPU threads (default 1, or $OMP_NUM_THREADS)"
    )
    p.add_argument("--run-dir", help="output directory (default runs/<env>-<preset>-s<seed>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR (--iterations may extend it)")
    p.add_argument("--evaluate", type=cli.positive("--evaluate", 2), metavar="K", help="with --resume: K evaluations")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--list-presets", action="store_true", help="list the presets and their budgets")
    p.add_argument("--list-fields", action="store_true", help="list the config fields of --preset")
    return p


def main(argv=None) -> int:
    """The console script ``diffsampler-train``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _main(argv)
    except cli.UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (``diffsampler-train --list-presets | head``): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: list[str]) -> int:
    p = parser()
    args, rest = p.parse_known_args(argv)
    preset = args.preset or DEFAULT_PRESET
    if args.help:
        print(
            p.format_help() + f"\nconfig fields of preset {preset!r} (--field-name VALUE):\n" + cli.fields_help(preset)
        )
        return 0
    if args.list_presets:
        for name, entry in schema.load()["presets"].items():
            print(f"{name:20s} {entry['iterations']:9,d} {_unit(entry):12s} {entry['description']}")
        return 0
    if args.list_fields:
        print(cli.fields_help(preset))
        return 0
    extra = cli.parse_extra(rest)
    if args.resume:
        return _resume(args, extra)
    if args.evaluate is not None:
        raise cli.UsageError("--evaluate K needs --resume RUN_DIR (the run to evaluate)")
    env_id, env_kwargs = _env(args)
    options = [o for a in p._actions for o in a.option_strings]
    overrides, more_kwargs = cli.split_extra(extra, preset, env_id, options)
    env_kwargs |= more_kwargs
    budget, why = _budget(args, preset)
    n_threads, threads_why = cli.threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(n_threads)  # before torch is imported
    run_dir = Path(args.run_dir or _default_run_dir(env_id, env_kwargs, preset, args.seed))

    def train() -> None:
        from diffsampler.agents import runs
        from diffsampler.agents.presets import PRESETS

        spec = runs.RunSpec(env_id, preset, args.seed, budget, env_kwargs, overrides, args.device, n_threads)
        runner = runs.runner_for(preset)
        try:
            config = runner.build(spec, PRESETS[preset])
        except ValueError as err:
            raise cli.UsageError(cli.in_flags(str(err), overrides)) from None
        _banner(f"training {preset} on {env_id} -> {run_dir}", why, n_threads, threads_why)
        signals = {"stop_on_signals": True} if runner.resumable else {}  # Ctrl-C / SIGTERM: a checkpoint
        result = runner.run(config, run_dir, progress=not args.no_progress, **signals)
        _report(result, config, run_dir)

    return guarded(train)


def _env(args) -> tuple[str, dict]:
    if args.target is None:
        return args.env or DEFAULT_ENV, {}
    if args.env not in (None, CUSTOM_ENV_ID):
        raise cli.UsageError(f"--target gives the energy of {CUSTOM_ENV_ID}; it does not go with --env {args.env}")
    module, _, attr = args.target.rpartition(":")
    if not module or not attr:
        raise cli.UsageError(f"--target must be 'package.module:attr' or 'path/to/file.py:attr', got {args.target!r}")
    if module.endswith(".py") and not Path(module).is_file():
        raise cli.UsageError(f"--target {args.target!r}: no file {module}")
    return CUSTOM_ENV_ID, {"target": args.target}


def _unit(entry: dict) -> str:
    """The unit of a preset's budget (``iterations``, ``env steps``, ``temperatures``, ...)."""
    return schema.load()["configs"][entry["config"]]["budget"].rpartition(".")[2].replace("_", " ")


def _budget(args, preset: str) -> tuple[int | None, str]:
    entry = schema.load()["presets"][preset]
    unit = _unit(entry)
    if args.iterations is not None:
        return args.iterations, f"{args.iterations:,} {unit} (--iterations)"
    if args.env is None and args.preset is None and args.target is None:
        return QUICK_ITERATIONS, (
            f"{QUICK_ITERATIONS:,} {unit} (the quick default, as no --env, --preset or --target is given; the "
            f"preset's full budget is {entry['iterations']:,}: --iterations {entry['iterations']})"
        )
    return None, f"{entry['iterations']:,} {unit} (preset {preset}'s budget; --iterations N for another)"


def _default_run_dir(env_id: str, env_kwargs: dict, preset: str, seed: int) -> str:
    name = env_id.removeprefix("DiffSampler-").removesuffix("-v0").lower()
    if "target" in env_kwargs:
        name = Path(env_kwargs["target"].rpartition(":")[2]).name.lower() or name
    return f"runs/{name}-{preset}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def _banner(title: str, budget: str, n_threads: int, why: str) -> None:
    print(f"{title}\nbudget: {budget}\nthreads: {n_threads} ({why})", flush=True)


def _resume(args, extra: dict) -> int:
    if extra:
        names = ", ".join(cli.flag(k) for k in extra)
        raise cli.UsageError(
            f"--resume continues the run's own config.json; {names} would not be applied (only --iterations may "
            "extend the budget)"
        )
    for name in ("env", "preset", "target"):
        if getattr(args, name) is not None:
            raise cli.UsageError(f"--resume continues the run's own config.json; --{name} does not go with it")

    def resume() -> None:
        import torch

        from diffsampler.agents import runs

        trainer = runs.resume(args.resume, args.iterations, writable=args.evaluate is None)
        n_threads, why = cli.threads(args.threads)
        if args.threads is None and trainer.config.threads is not None:
            n_threads, why = trainer.config.threads, "the run's"
        torch.set_num_threads(n_threads)
        if args.evaluate is not None:
            return _evaluate_only(trainer, args.evaluate)
        config = trainer.config
        source = "--iterations" if args.iterations else "the run's config.json"
        budget = f"{config.iterations:,} iterations ({source})"
        _banner(f"resuming {trainer.run_dir} at iteration {trainer.iteration:,}", budget, n_threads, why)
        result = trainer.run(progress=not args.no_progress, stop_on_signals=True)
        _report(result, config, trainer.run_dir)

    return guarded(resume)


def _report(result: dict, config, run_dir: Path) -> None:
    from diffsampler.agents.runner import FINAL_KEYS

    print(f"\n{config.preset} on {config.env_id} (seed {config.seed})\n\n| metric | value |\n|---|---|")
    std = result.get("eval_std") or {}  # eval_repeats > 1: the values are means over the evaluation batches
    for key in FINAL_KEYS + tuple(k for k in result if k not in FINAL_KEYS and not isinstance(result[k], dict)):
        value = result.get(key)
        text = "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
        print(f"| {key} | {text}{f' ± {std[key]:.4f}' if key in std else ''} |")
    figures = sorted((Path(run_dir) / "figures").glob("*.png"))
    if figures:
        print(f"\nfigure: {figures[-1]}")
    print(f"metrics: {Path(run_dir) / 'metrics.json'}")


def _evaluate_only(trainer, repeats: int) -> None:
    """K evaluations of a saved model. The run's own files are never touched; the summary goes to
    ``eval_repeats.json`` beside them when the directory is writable."""
    from diffsampler.agents.runner import RunDirectory

    result = trainer.evaluate_repeated(repeats)
    print(f"\n{repeats} evaluations of {trainer.config.eval_samples} trajectories at iteration {trainer.iteration}\n")
    print("| metric | mean | std |\n|---|---|---|")
    for key, stats in result.items():
        print(f"| {key} | {stats['mean']:.4f} | {stats['std']:.4f} |")
    if os.access(trainer.run_dir, os.W_OK):
        RunDirectory(trainer.run_dir, writable=True).write_json("eval_repeats.json", result)
        print(f"\nsummary: {trainer.run_dir / 'eval_repeats.json'}")
    else:
        print(f"\n{trainer.run_dir} is read-only: the summary above is not saved")


if __name__ == "__main__":
    raise SystemExit(main())
