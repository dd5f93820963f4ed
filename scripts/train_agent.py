#!/usr/bin/env python
"""Train one diffusion sampler: env id + agent preset + overrides -> a run directory.

Examples:
    python scripts/train_agent.py                      # the quick default: 25GMM, tb-expl-lp, ~2 min
    python scripts/train_agent.py --env DiffSampler-Manywell-v0 --preset tb-expl --iterations 25000
    python scripts/train_agent.py --env DiffSampler-Manywell-v0 --preset tb --dim 128 --lr-policy 3e-4
    python scripts/train_agent.py --resume runs/my-run --iterations 30000

Any config field can be overridden as ``--field-name VALUE`` (see ``--list-fields``); any other
``--name VALUE`` is passed to the environment (e.g. ``--dim 128``, ``--num-steps 50``).
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffsampler.agents import runs  # noqa: E402
from diffsampler.agents.config import field_paths  # noqa: E402
from diffsampler.agents.presets import PRESETS  # noqa: E402
from diffsampler.agents.runner import FINAL_KEYS, RunDirectory  # noqa: E402
from diffsampler.agents.runs import RunSpec, runner_for, split_extra  # noqa: E402

DEFAULT_ENV, DEFAULT_PRESET, DEFAULT_ITERATIONS = "DiffSampler-GMM25-v0", "tb-expl-lp", 2000


def parse_extra(tokens: list[str]) -> dict[str, str]:
    """``--some-name VALUE`` / ``--some-name=VALUE`` pairs -> {"some_name": "VALUE"}."""
    out, i = {}, 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise SystemExit(f"error: unexpected argument {tok!r} (overrides are --name VALUE)")
        if "=" in tok:
            name, value = tok[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise SystemExit(f"error: {tok} needs a value")
            name, value = tok[2:], tokens[i + 1]
            i += 2
        out[name.replace("-", "_")] = value
    return out


def literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def build_spec(args, extra: dict[str, str]) -> RunSpec:
    overrides, env_kwargs = split_extra(args.preset, extra)
    return RunSpec(
        env_id=args.env,
        preset=args.preset,
        seed=args.seed,
        budget=args.iterations or (DEFAULT_ITERATIONS if args.quick_default else None),
        env_kwargs={k: literal(v) for k, v in env_kwargs.items()},
        overrides=overrides,
        device=args.device,
    )


def print_table(result: dict, title: str) -> None:
    print(f"\n{title}\n\n| metric | value |\n|---|---|")
    for key in FINAL_KEYS + tuple(k for k in result if k not in FINAL_KEYS):
        value = result.get(key)
        text = "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
        print(f"| {key} | {text} |")


def evaluate_only(trainer, repeats: int) -> int:
    """K evaluations of a saved model. The run's own files are never touched; the summary goes to
    ``eval_repeats.json`` beside them when the directory is writable."""
    try:
        result = trainer.evaluate_repeated(repeats)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"\n{repeats} evaluations of {trainer.config.eval_samples} trajectories at iteration {trainer.iteration}\n")
    print("| metric | mean | std |\n|---|---|---|")
    for key, stats in result.items():
        print(f"| {key} | {stats['mean']:.4f} | {stats['std']:.4f} |")
    if os.access(trainer.run_dir, os.W_OK):
        RunDirectory(trainer.run_dir, writable=True).write_json("eval_repeats.json", result)
        print(f"\nsummary: {trainer.run_dir / 'eval_repeats.json'}")
    else:
        print(f"\n{trainer.run_dir} is read-only: the summary above is not saved")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default=DEFAULT_ENV, help=f"registered env id (default {DEFAULT_ENV})")
    p.add_argument("--preset", "--agent", default=DEFAULT_PRESET, help=f"the method, one of {sorted(PRESETS)}")
    p.add_argument(
        "--iterations",
        "--env-steps",
        type=int,
        default=None,
        help="budget in the method's unit: training iterations, env steps for RL agents, temperatures for smc, "
        "MALA steps for mala (default: the preset's)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--run-dir", default=None, help="output directory (default runs/<env>-<preset>-s<seed>-<time>)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--evaluate",
        type=int,
        default=None,
        metavar="K",
        help="with --resume: evaluate the saved model on K independent batches (no training); "
        "writes eval_repeats.json with mean and std of each metric",
    )
    p.add_argument("--list-presets", action="store_true")
    p.add_argument("--list-fields", action="store_true", help="list overridable config fields")
    args, rest = p.parse_known_args(argv)
    extra = parse_extra(rest)
    if args.list_presets:
        for name, preset in PRESETS.items():
            print(f"{name:14s} {preset.iterations:6d} it  {preset.description}")
        return 0
    if args.list_fields:
        for name, (path, tp) in sorted(field_paths(runner_for(args.preset).config_type).items()):
            print(f"--{name.replace('_', '-'):24s} {'.'.join(path + (name,))}: {tp}")
        return 0
    # With no flags at all the script is the README's quick main job.
    args.quick_default = args.preset == DEFAULT_PRESET and args.env == DEFAULT_ENV and not extra
    if args.resume and extra:
        print(
            f"error: --resume continues the run's own config.json; overrides {sorted(extra)} are not applied "
            "(only --iterations may extend the budget)",
            file=sys.stderr,
        )
        return 2
    if args.evaluate is not None and not args.resume:
        print("error: --evaluate K needs --resume RUN_DIR (the run to evaluate)", file=sys.stderr)
        return 2
    try:
        if args.resume:
            trainer = runs.resume(args.resume, args.iterations, writable=args.evaluate is None)
            if args.evaluate is not None:
                return evaluate_only(trainer, args.evaluate)
            config, run_dir = trainer.config, trainer.run_dir
        else:
            spec = build_spec(args, extra)
            runner = runner_for(spec.preset)
            config = runner.build(spec, PRESETS[spec.preset])
            run_dir = Path(
                args.run_dir
                or f"runs/{spec.env_id.removeprefix('DiffSampler-').removesuffix('-v0').lower()}-"
                f"{spec.preset}-s{spec.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
            )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"training {args.preset if not args.resume else config.preset} on {config.env_id} -> {run_dir}")
    try:
        if args.resume:
            result = trainer.run(progress=not args.no_progress)
        else:
            result = runner.run(config, run_dir, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_table(result, f"{config.preset} on {config.env_id} (seed {config.seed})")
    figs = sorted((run_dir / "figures").glob("*.png"))
    if figs:
        print(f"\nfigure: {figs[-1]}")
    print(f"metrics: {run_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
