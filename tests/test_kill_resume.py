"""Kill -9 at random moments + resume gives the uninterrupted run's model bit for bit (scripts/kill_resume_check.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_kill_9_and_resume_is_bit_identical(tmp_path):
    argv = [
        sys.executable,
        "scripts/kill_resume_check.py",
        "--kills",
        "2",
        "--iterations",
        "30",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0 and "identical" in done.stdout, done.stdout + done.stderr
