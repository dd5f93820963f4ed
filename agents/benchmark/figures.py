"""Figures across runs: one panel per method of its samples over the target's density.

For a 2-D target (25GMM) the panels show the plane; for Manywell the (x1, x2) projection over one
well's density, as in the paper's Manywell figure; other targets their first two coordinates. The
first panel holds exact target samples where the target has a sampler. Samples come from each
run's ``samples.pt`` (the final evaluation's model samples), from the lowest finished seed.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from diffsampler import envs  # noqa: E402
from diffsampler.agents.plotting import density_contour, projections  # noqa: E402

MAX_DIM = 64  # no sample figure for targets of higher dimension (an LGCP grid cell pair says little)
COLUMNS = 5


def _samples(record: dict) -> torch.Tensor | None:
    if record["status"] != "ok" or not record.get("run_dir"):
        return None
    path = Path(record["run_dir"]) / "samples.pt"
    if not path.exists():
        return None
    x = torch.load(path, weights_only=True)
    return x[torch.isfinite(x).all(-1)]


def sample_grid(target, panels: dict[str, torch.Tensor | None], path: Path, title: str, n: int = 1000) -> None:
    """One scatter panel per named sample set on the target's first projection, saved as PNG."""
    dims = projections(target)[0]
    bounds = target.plot_bounds or (-5.0, 5.0)
    cols = min(COLUMNS, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (name, x) in zip(axes.flat, panels.items()):
        density_contour(ax, target, dims, bounds)
        if x is None or len(x) == 0:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
        else:
            x = x[:n].cpu()
            ax.scatter(x[:, dims[0]], x[:, dims[1]], s=2, alpha=0.4, color="tab:blue")
        ax.set_xlim(*bounds)
        ax.set_ylim(*bounds)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title}: x{dims[0] + 1} vs x{dims[1] + 1}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sample_figures(records: list[dict], out_dir: str | Path, method_label=lambda p: p, target_label=lambda t: t):
    """A sample grid per target (dimension <= MAX_DIM) of the finished runs; returns the PNG paths."""
    out_dir = Path(out_dir)
    written = []
    for target_key in dict.fromkeys(r["target"] for r in records):
        # lowest seed; of an equal-budget comparison's runs, the largest budget's
        recs = sorted(
            (r for r in records if r["target"] == target_key), key=lambda r: (r["seed"], -max(r.get("energy") or [0]))
        )
        panels: dict[str, torch.Tensor | None] = {}
        for preset in dict.fromkeys(r["preset"] for r in recs):
            found = (s for r in recs if r["preset"] == preset and (s := _samples(r)) is not None)
            panels[method_label(preset)] = next(found, None)
        if all(x is None for x in panels.values()):
            continue
        try:
            target = envs.make_mdp(recs[0]["env_id"], **recs[0]["env_kwargs"]).target
        except (ValueError, FileNotFoundError) as err:
            warnings.warn(f"no sample figure for {target_key}: {err}", stacklevel=2)
            continue
        if target.dim > MAX_DIM:
            continue
        if target.has_sampler:
            panels = {"target (exact)": target.sample(1000, torch.Generator().manual_seed(0))} | panels
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{target_key}_samples.png"
        sample_grid(target, panels, path, target_label(target_key))
        written.append(path)
    return written
