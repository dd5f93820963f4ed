"""Run directories under damage and contention: every damaged file is a one-line error naming it (exit status
2, no traceback); --resume --evaluate of a read-only run works; a second training on a directory is
refused naming the holder; a full disk is reported as such and the last good checkpoint is kept."""

import errno
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffsampler.agents import runner
from diffsampler.agents.runner import RunDirectory
from diffsampler.cli import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tb", "--num-steps", "5", "--batch-size", "16", "--eval-samples", "16", "--figures", "false"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-iteration run (checkpoints at 2 and 4), copied by each test that damages it."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    argv = [*TINY, "--iterations", "4", "--checkpoint-every", "2", "--no-progress", "--run-dir", str(run_dir)]
    assert train.main(argv) == 0
    return run_dir


@pytest.fixture
def run_dir(finished, tmp_path):
    return Path(shutil.copytree(finished, tmp_path / "run"))


def _resume_error(run_dir, capsys, *extra) -> str:
    capsys.readouterr()
    assert train.main(["--resume", str(run_dir), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _edit_checkpoint(run_dir, **changes):
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save(state | changes, run_dir / "checkpoint.pt")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "checkpoint.pt").write_bytes(b""), "checkpoint.pt is damaged: not a readable checkpoint"),
        (
            lambda d: (d / "checkpoint.pt").write_bytes((d / "checkpoint.pt").read_bytes()[:500]),
            "checkpoint.pt is damaged",
        ),
        *[
            (
                lambda d, k=k: (d / "checkpoint.pt").write_bytes(random.Random(k).randbytes(4096)),
                "checkpoint.pt",
            )
            for k in range(8)
        ],
        (lambda d: torch.save([1, 2], d / "checkpoint.pt"), "not a training checkpoint (holds a list)"),
        (lambda d: _edit_checkpoint(d, iteration=-5), "iteration -5 is not an integer in [0, 4]"),
        (lambda d: _edit_checkpoint(d, iteration=10**9), "iteration 1000000000 is not an integer in [0, 4]"),
        (lambda d: _edit_checkpoint(d, iteration=1e9), "iteration 1000000000.0 is not an integer"),
        (lambda d: _edit_checkpoint(d, train_seconds=float("nan")), "train_seconds nan is not a finite number"),
        (lambda d: (d / "checkpoint.pt").unlink(), "has no checkpoint.pt: the run stopped before its first checkpoint"),
        (lambda d: (d / "config.json").write_text("{not json"), "config.json is damaged: not valid JSON"),
        (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json is damaged: expected a JSON object"),
        (
            lambda d: _edit_json(d / "config.json", agent=None),
            "config.json is not the config of a GFlowNet run: TrainConfig.agent must be a GFlowNetConfig, got None",
        ),
        (
            lambda d: _edit_json(d / "config.json", seed=7),
            "checkpoint.pt was written by a run with seed 0, but config.json says 7",
        ),
        (
            lambda d: _edit_json(d / "config.json", iterations=2.5),
            "TrainConfig.iterations must be an integer, got 2.5",
        ),
        (lambda d: (d / "config.json").unlink(), "no config.json in"),
    ],
)
def test_resume_of_a_damaged_run_is_a_one_line_error(run_dir, capsys, damage, message):
    damage(run_dir)
    err = _resume_error(run_dir, capsys)
    assert message in err and str(run_dir) in err, err


def _edit_json(path, **changes):
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def test_resume_with_a_budget_below_the_checkpoint_is_an_error(run_dir, capsys):
    assert "iteration 4 is not an integer in [0, 3]" in _resume_error(run_dir, capsys, "--iterations", "3")


def _read_only_evaluate(run_dir) -> subprocess.CompletedProcess:
    """``--resume RUN --evaluate 2`` in a child process that sees ``run_dir`` read-only: a read-only bind mount
    in a private mount namespace when running as root (where chmod does not stop writes), else chmod."""
    argv = [sys.executable, "scripts/train_agent.py", "--resume", str(run_dir), "--evaluate", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("running as root without unshare: cannot make a directory read-only")
        mount = f"mount --bind -o ro {run_dir} {run_dir} && exec {' '.join(argv)}"
        probe = subprocess.run(
            ["unshare", "-m", "sh", "-c", f"mount --bind -o ro {run_dir} {run_dir}"], capture_output=True
        )
        if probe.returncode:
            pytest.skip(f"no private mount namespace here: {probe.stderr.decode().strip()}")
        return subprocess.run(["unshare", "-m", "sh", "-c", mount], cwd=ROOT, env=env, capture_output=True, text=True)
    os.chmod(run_dir, 0o555)
    try:
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    finally:
        os.chmod(run_dir, 0o755)


def test_evaluate_of_a_read_only_run_writes_nothing(run_dir):
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    done = _read_only_evaluate(run_dir)
    assert done.returncode == 0, done.stderr
    assert "| log_z_rw |" in done.stdout and "is read-only: the summary above is not saved" in done.stdout
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before


def test_a_second_training_on_a_directory_is_refused_naming_the_holder(run_dir, capsys):
    holder = RunDirectory(run_dir)
    holder.lock()
    try:
        config = (run_dir / "config.json").read_text()
        argv = [*TINY, "--iterations", "2", "--no-progress", "--run-dir", str(run_dir)]
        assert train.main(argv) == 2
        err = capsys.readouterr().err
        assert f"run directory {run_dir} is in use by pid {os.getpid()}" in err
        assert (run_dir / "config.json").read_text() == config  # nothing written before the refusal
        assert train.main(["--resume", str(run_dir), "--iterations", "6", "--no-progress"]) == 2
        assert "is in use by pid" in capsys.readouterr().err
    finally:
        holder.close()


def test_a_full_disk_is_reported_and_the_last_checkpoint_kept(run_dir, capsys, monkeypatch):
    good = (run_dir / "checkpoint.pt").read_bytes()

    def full(value, path):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runner.torch, "save", full)
    assert train.main(["--resume", str(run_dir), "--iterations", "6", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"error: no space left on the device to write {run_dir / 'checkpoint.pt'}; "
        "the previous version of checkpoint.pt (if any) is kept"
    )
    assert (run_dir / "checkpoint.pt").read_bytes() == good
    assert not list(run_dir.glob(".*.tmp"))


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare for a tmpfs")
def test_a_really_full_disk_is_reported(tmp_path):
    """torch.save on a full filesystem raises a RuntimeError without errno ("unexpected pos"): still reported."""
    script = f"""
import sys, torch
sys.path.insert(0, {str(ROOT)!r})
from diffsampler.agents.runner import RunDirectory
d = RunDirectory({str(tmp_path / "fs")!r})
d.save_tensor("checkpoint.pt", {{"a": torch.zeros(10)}})
try:
    d.save_tensor("checkpoint.pt", {{"a": torch.zeros(2_000_000)}})
except OSError as err:
    print(err)
print(torch.load(d / "checkpoint.pt", weights_only=True)["a"].shape)
"""
    (tmp_path / "fs").mkdir()
    (tmp_path / "fill.py").write_text(script)
    shell = f"mount -t tmpfs -o size=1m tmpfs {tmp_path / 'fs'} && {sys.executable} {tmp_path / 'fill.py'}"
    done = subprocess.run(["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True)
    if "mount" in done.stderr and done.returncode:
        pytest.skip(done.stderr.strip())
    assert "no space left on the device to write" in done.stdout, done.stdout + done.stderr
    assert "torch.Size([10])" in done.stdout
