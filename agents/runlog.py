"""What every run records as it goes: the evaluation curve, tensorboard events, figures and versions.

``RunLog`` is the logging side of a run directory (``agents.runner.RunDirectory``), the same for every
runner (GFlowNet / PIS / DDS / DIS training, SMC, MALA, the RL baselines):

- ``curve(...)``: one evaluation point: the iteration (the runner's budget unit: training iterations,
  MALA steps, SMC temperatures, env steps), the cumulative energy evaluations spent by training, the
  wall-clock and training seconds and the metrics. Appended as one JSON line to ``curve.jsonl`` and
  written to tensorboard as ``eval/<metric>`` (step: iteration) and ``eval_by_energy/<metric>`` (step:
  energy evaluations). The energy axis lives in its own event directory ``by_energy/`` (a tensorboard
  run of its own, shown as ``<run>/by_energy``): a resumed run purges the events written after its
  checkpoint by step, and iterations and energy evaluations are different step axes.
- ``scalars(...)``: training scalars (``train/...``) at an iteration.
- ``figure(...)``: a matplotlib figure saved under ``figures/`` and added to tensorboard (``add_figure``).
- ``resume_at(iteration, energy)``: a resumed run drops the curve points (and, through tensorboard's
  purge step, the events) written after its checkpoint, so a crash between checkpoints leaves no
  duplicates.

``write_config`` writes ``config.json`` with a ``versions`` key (``versions()``: Python, torch and the
other packages, the git commit of a source checkout); ``read_config`` returns it without that key,
which is what ``agents.config.from_dict`` rebuilds a config from (a resume).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import math
import platform
import subprocess
import time
from pathlib import Path

CURVE = "curve.jsonl"
ENERGY_DIR = "by_energy"
PACKAGES = ("numpy", "scipy", "gymnasium", "pot", "matplotlib", "tensorboard", "stable-baselines3", "tianshou")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_curve(path) -> list[dict]:
    """The points of a ``curve.jsonl`` (a file or a run directory); a torn last line (a kill while
    appending) is skipped; a missing file is an empty curve."""
    path = Path(path)
    path = path / CURVE if path.is_dir() else path
    if not path.exists():
        return []
    points = []
    for line in path.read_text().splitlines():
        try:
            point = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(point, dict):
            points.append(point)
    return points


class RunLog:
    """The curve, events and figures of one run; every call is a no-op without a writable directory."""

    def __init__(self, directory=None):
        self.directory = directory if directory is not None and directory.writable else None
        self._start = time.perf_counter()
        self._wall_offset = 0.0
        self._purge: tuple[int | None, int | None] = (None, None)
        self._energy_writer = None

    def wall_seconds(self) -> float:
        """Wall-clock seconds of the run (on a resumed run: from the last kept curve point on)."""
        return self._wall_offset + time.perf_counter() - self._start

    def resume_at(self, iteration: int, energy: int) -> None:
        """Continue a run from its checkpoint at ``iteration`` (``energy`` evaluations spent): keep the curve
        points the checkpoint had seen (an energy mark at or beyond ``energy`` is evaluated again) and purge
        later events."""
        self._start = time.perf_counter()
        if self.directory is None:
            return
        if iteration > 0:
            self._purge = (iteration + 1, energy + 1)
        if not self.directory.exists(CURVE):
            return
        kept = [
            p
            for p in read_curve(self.directory / CURVE)
            if p.get("iteration", math.inf) <= iteration and all(m < energy for m in p.get("marks", ()))
        ]
        text = "".join(json.dumps(p) + "\n" for p in kept)
        self.directory._atomic(CURVE, lambda path: path.write_text(text))
        if kept and _finite(kept[-1].get("wall_seconds")):
            self._wall_offset = float(kept[-1]["wall_seconds"])

    # --- tensorboard --------------------------------------------------------------------------------

    def _writer(self):
        return None if self.directory is None else self.directory.writer(purge_step=self._purge[0])

    def _by_energy(self):
        if self._energy_writer is None and self.directory is not None:
            from torch.utils.tensorboard import SummaryWriter

            path = str(self.directory / ENERGY_DIR)
            self._energy_writer = SummaryWriter(path, purge_step=self._purge[1])
        return self._energy_writer

    def scalars(self, values: dict, step: int, writer=None) -> None:
        """Finite numbers of ``values`` as scalars at ``step`` (None and non-numbers are skipped)."""
        writer = writer or self._writer()
        if writer is None:
            return
        for key, value in values.items():
            if _finite(value):
                writer.add_scalar(key, float(value), step)

    def figure(self, fig, name: str, step: int, tag: str = "samples") -> None:
        """Save ``fig`` as ``figures/<name>`` and add it to tensorboard under ``tag``; the figure is closed."""
        import matplotlib.pyplot as plt

        if self.directory is not None:
            fig.savefig(self.directory.figure_path(name), dpi=110)
            self._writer().add_figure(tag, fig, step, close=False)
        plt.close(fig)

    # --- the curve ----------------------------------------------------------------------------------

    def curve(self, iteration: int, energy: int, metrics: dict, train_seconds: float | None = None, marks=()) -> dict:
        """Record one evaluation point (``curve.jsonl`` and tensorboard); returns it.

        ``marks``: the energy budgets this point stands for (the last state within each budget).
        """
        point = {
            "iteration": int(iteration),
            "energy_evaluations": int(energy),
            "wall_seconds": self.wall_seconds(),
            "train_seconds": train_seconds,
            "marks": sorted(int(m) for m in marks),
            "metrics": metrics,
        }
        if self.directory is None:
            return point
        with open(self.directory / CURVE, "a") as f:
            f.write(json.dumps(point) + "\n")
        numbers = {k: v for k, v in metrics.items() if _finite(v)}
        self.scalars({f"eval/{k}": v for k, v in numbers.items()} | {"eval/energy_evaluations": energy}, iteration)
        self.scalars({f"eval_by_energy/{k}": v for k, v in numbers.items()}, int(energy), self._by_energy())
        return point

    def close(self) -> None:
        if self._energy_writer is not None:
            self._energy_writer.close()
            self._energy_writer = None


# --- versions and config.json ---------------------------------------------------------------------------


@functools.cache
def versions() -> dict:
    """Python, torch, diffsampler and the other packages' versions, and the git commit (with a ``dirty``
    flag for uncommitted changes to tracked files) of the source checkout this code runs from (None when
    it is not one, e.g. an installed wheel)."""
    import torch

    import diffsampler

    out = {"python": platform.python_version(), "torch": torch.__version__}
    out["diffsampler"] = getattr(diffsampler, "__version__", None) or _dist_version("diffsampler")
    out |= {name: _dist_version(name) for name in PACKAGES}
    out["git"] = _git(Path(diffsampler.__file__).resolve().parents[1])
    return out


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(root: Path) -> dict | None:
    if not (root / ".git").exists():
        return None
    try:
        run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=10, check=True)
        commit = run(["git", "-C", str(root), "rev-parse", "HEAD"]).stdout.strip()
        dirty = bool(run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"]).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def write_config(directory, config) -> None:
    """``config.json``: the config's fields and ``versions``. A rewrite (a resumed run extending its budget)
    keeps the versions of the code that started the run."""
    from diffsampler.agents.config import to_dict

    old = directory.read_json("config.json") if directory.exists("config.json") else {}
    directory.write_json("config.json", to_dict(config) | {"versions": old.get("versions") or versions()})


def read_config(directory) -> dict:
    """``config.json`` without its ``versions``: the fields of the run config."""
    data = directory.read_json("config.json")
    data.pop("versions", None)
    return data


def same_config(directory, config) -> bool:
    """Whether ``config.json`` already holds ``config`` (a resume need not rewrite it)."""
    from diffsampler.agents.config import to_dict

    try:
        return read_config(directory) == json.loads(json.dumps(to_dict(config)))
    except ValueError:
        return False
