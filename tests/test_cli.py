"""The command lines (diffsampler.cli): argument errors before torch is imported and in the user's words,
suggestions for misspelt options, --help with the config fields, the quick default, --target, signals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffsampler.cli import args as cli
from diffsampler.cli import benchmark, schema, train

ROOT = Path(__file__).resolve().parents[1]
BANANA = str(ROOT / "examples" / "banana.py") + ":banana"
TINY = ["--num-steps", "5", "--batch-size", "16", "--eval-samples", "16", "--figures", "false", "--no-progress"]


def _cli(*argv, module="train"):
    """(exit status, stderr, whether torch was imported, seconds) of the CLI in a fresh interpreter."""
    code = (
        "import sys, time; t = time.perf_counter()\n"
        f"from diffsampler.cli.{module} import main\n"
        f"rc = main({list(argv)!r})\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', round(time.perf_counter() - t, 2))\n"
        "sys.exit(rc)"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    imported, seconds = done.stdout.split()[-2:]
    return done.returncode, done.stderr.strip(), imported == "TORCH", float(seconds)


def test_the_schema_snapshot_is_current():
    assert json.loads(schema.PATH.read_text()) == json.loads(json.dumps(schema.generate())), (
        "diffsampler/cli/schema.json is out of date: python -m diffsampler.cli.schema --write"
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--iteratons", "10"], "unknown option --iteratons (did you mean --iterations?)"),
        (["--iterations", "0"], "--iterations must be a positive integer, got 0"),
        (["--iterations", "-5"], "--iterations must be a positive integer, got -5"),
        (["--seed", str(2**70)], f"--seed must be an integer in [0, 2147483647], got {2**70}"),
        (["--device", "bogus"], "--device must be cpu, cuda, cuda:N or mps, got 'bogus'"),
        (["--batch-size", "1.5"], "--batch-size must be an integer, got '1.5'"),
        (["--ls-step-size", "x"], "--ls-step-size must be a number, got 'x'"),
        (["--objective", "tbb"], "--objective must be one of bwd-mle, db, fl-db, fl-subtb, pis, subtb, tb, vargrad"),
        (["--preset", "tb-expll"], "unknown --preset 'tb-expll' (did you mean tb-expl"),
        (["--env", "DiffSampler-Manywell-v0", "--dimm", "3"], "unknown option --dimm (did you mean --dim?)"),
        (["--target", "banana"], "--target must be 'package.module:attr' or 'path/to/file.py:attr'"),
        (["--evaluate", "3"], "--evaluate K needs --resume RUN_DIR"),
        (["--resume", "x", "--lr-policy", "1"], "--lr-policy would not be applied"),
    ],
)
def test_argument_errors_come_before_torch_in_the_users_words(argv, message):
    rc, err, imported, seconds = _cli(*argv)
    assert rc == 2 and err == f"error: {err.removeprefix('error: ')}" and message in err, err
    assert "\n" not in err and not imported, (err, imported)
    print(f"{argv}: {seconds} s")  # the CLI-latency figure of the README (here typically ~1 s)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--out", "o", "--iterations", "0", "--seeds", "0"], "--iterations must be a positive integer, got 0"),
        (["--out", "o", "--seeds", "0"], "--seeds must be a positive integer, got 0"),
        (["--out", "o", "--targets", "25gm"], "unknown target '25gm' (did you mean 25gmm?)"),
        (["--out", "o", "--set", "eval_sample=3"], "(did you mean eval_samples?)"),
        (["--out", "o", "--device", "bogus"], "--device must be cpu, cuda, cuda:N or mps"),
    ],
)
def test_benchmark_argument_errors_come_before_torch(argv, message):
    rc, err, imported, _ = _cli(*argv, module="benchmark")
    assert rc == 2 and message in err and not imported, err


def test_config_range_errors_name_the_option(capsys, tmp_path):
    assert train.main(["--ls-step-size", "inf", "--run-dir", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == "error: --ls-step-size must be a finite number, got 'inf'"
    assert train.main(["--ls-step-size", "-1", "--run-dir", str(tmp_path / "r")]) == 2  # after torch: the range
    assert capsys.readouterr().err.strip() == "error: --ls-step-size must be a finite number > 0, got -1.0"


def test_help_lists_config_fields_with_types_and_help(capsys):
    assert train.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--iterations" in out and "config fields of preset 'tb-expl-lp'" in out
    assert any(
        line.split()[:2] == ["--batch-size", "int"] and "trajectories per training step" in line
        for line in out.splitlines()
    )
    assert train.main(["--preset", "smc", "--list-fields"]) == 0
    assert "--particles" in capsys.readouterr().out


def test_the_quick_default_survives_other_flags():
    def budget(*argv):
        args, _ = train.parser().parse_known_args(list(argv))
        return train._budget(args, args.preset or train.DEFAULT_PRESET)

    assert budget()[0] == budget("--threads", "1", "--seed", "3", "--lr-policy", "1e-4")[0] == 2000
    assert "quick default" in budget("--threads", "1")[1]
    assert (
        budget("--preset", "tb-expl-lp")[0] is None
        and "preset tb-expl-lp's budget" in budget("--preset", "tb-expl-lp")[1]
    )
    assert budget("--iterations", "7")[0] == 7


def test_thread_policy():
    assert cli.threads(3) == (3, "--threads")
    saved = os.environ.pop("OMP_NUM_THREADS", None)
    try:
        assert cli.threads(None)[0] == 1
        os.environ["OMP_NUM_THREADS"] = "2"
        assert cli.threads(None) == (2, "$OMP_NUM_THREADS")
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)
        if saved is not None:
            os.environ["OMP_NUM_THREADS"] = saved


def test_a_user_energy_trains_and_resumes_from_the_command_line(tmp_path, capsys):
    run_dir = tmp_path / "banana"
    argv = ["--target", BANANA, "--preset", "tb", "--iterations", "4", "--run-dir", str(run_dir), *TINY]
    assert train.main(argv + ["--checkpoint-every", "2"]) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env_id"] == "DiffSampler-Custom-v0" and config["env_kwargs"]["target"] == BANANA
    assert "training tb on DiffSampler-Custom-v0" in capsys.readouterr().out
    assert train.main(["--resume", str(run_dir), "--iterations", "6", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert json.loads((run_dir / "metrics.json").read_text())["iterations"] == 6


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path):
    run_dir = tmp_path / "run"
    argv = [
        "--preset",
        "tb",
        "--iterations",
        "100000",
        "--run-dir",
        str(run_dir),
        *TINY,
        "--checkpoint-every",
        "100000",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "scripts/train_agent.py", *argv], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not list(run_dir.glob("events.out.tfevents*")) and time.time() < deadline:  # first log window written
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM at iteration" in err and f"--resume {run_dir}" in err
    import torch

    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert 0 < state["iteration"] < 100000


def test_benchmark_cli_still_plans(tmp_path, capsys):
    assert benchmark.main(["--quick", "--out", str(tmp_path), "--dry-run"]) == 0
    assert "6 runs: 0 finished, 6 to run" in capsys.readouterr().out
