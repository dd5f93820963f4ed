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
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.config import apply_overrides, field_paths  # noqa: E402
from agents.presets import PRESETS, get_preset  # noqa: E402
from agents.training import FINAL_KEYS, TrainConfig, Trainer  # noqa: E402

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


def build_config(args, extra: dict[str, str]) -> TrainConfig:
    preset = get_preset(args.preset)
    fields = field_paths(TrainConfig)
    overrides = {k: v for k, v in extra.items() if k in fields}
    env_kwargs = {**preset.env_kwargs, **{k: literal(v) for k, v in extra.items() if k not in fields}}
    cfg = TrainConfig(
        env_id=args.env,
        env_kwargs=env_kwargs,
        preset=args.preset,
        agent=preset.agent,
        iterations=args.iterations or (DEFAULT_ITERATIONS if args.quick_default else preset.iterations),
        seed=args.seed,
        device=args.device,
    )
    return apply_overrides(cfg, overrides)


def print_table(result: dict, title: str) -> None:
    print(f"\n{title}\n\n| metric | value |\n|---|---|")
    for key in FINAL_KEYS + tuple(k for k in result if k not in FINAL_KEYS):
        value = result.get(key)
        text = "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
        print(f"| {key} | {text} |")


def evaluate_only(trainer: Trainer, repeats: int) -> int:
    if trainer.run_dir is None or not (trainer.run_dir / "checkpoint.pt").exists():
        print("error: --evaluate needs --resume RUN_DIR of a run with a checkpoint", file=sys.stderr)
        return 2
    try:
        result = trainer.evaluate_repeated(repeats)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    (trainer.run_dir / "eval_repeats.json").write_text(json.dumps(result, indent=2))
    print(f"\n{repeats} evaluations of {trainer.config.eval_samples} trajectories at iteration {trainer.iteration}\n")
    print("| metric | mean | std |\n|---|---|---|")
    for key, stats in result.items():
        print(f"| {key} | {stats['mean']:.4f} | {stats['std']:.4f} |")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default=DEFAULT_ENV, help=f"registered env id (default {DEFAULT_ENV})")
    p.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of {sorted(PRESETS)}")
    p.add_argument("--iterations", type=int, default=None, help="training iterations (default: the preset's)")
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
        for name, (path, tp) in sorted(field_paths(TrainConfig).items()):
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
            trainer = Trainer.resume(args.resume, args.iterations)
        else:
            cfg = build_config(args, extra)
            run_dir = args.run_dir or (
                f"runs/{cfg.env_id.removeprefix('DiffSampler-').removesuffix('-v0').lower()}-"
                f"{cfg.preset}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
            )
            trainer = Trainer(cfg, run_dir)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.evaluate is not None:
        return evaluate_only(trainer, args.evaluate)
    cfg = trainer.config
    print(
        f"training {cfg.preset} on {cfg.env_id} {cfg.env_kwargs or ''} for {cfg.iterations} iterations "
        f"-> {trainer.run_dir}"
    )
    result = trainer.run(progress=not args.no_progress)
    print_table(result, f"{cfg.preset} on {cfg.env_id} (seed {cfg.seed}), {result['iterations']} iterations")
    figs = sorted((trainer.run_dir / "figures").glob("*.png"))
    if figs:
        print(f"\nfigure: {figs[-1]}")
    print(f"metrics: {trainer.run_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
