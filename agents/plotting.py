"""Figures of samples: 2-D scatter over the density contour, or 2-D projections for higher dims."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from diffsampler.envs.targets import Manywell, Target  # noqa: E402


def _finish(fig, path, dpi: int) -> None:
    """Save ``fig`` to ``path`` and close it; a callable ``path`` (e.g. ``agents.runlog.RunLog.figure``)
    takes the figure instead."""
    if callable(path):
        path(fig)
        return
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def density_contour(ax, target: Target, dims: tuple[int, int], bounds, n: int = 200) -> None:
    """Density contour of a 2-D target, or of one Manywell well (which factorises by pairs)."""
    lo, hi = bounds
    g = torch.linspace(lo, hi, n)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    grid = torch.stack([xx.flatten(), yy.flatten()], -1)
    if target.dim == 2:
        log_r = target.log_reward(grid)
    elif isinstance(target, Manywell) and dims[0] % 2 == 0 and dims[1] == dims[0] + 1:
        log_r = Manywell(2).log_reward(grid)
    else:
        return
    ax.contour(xx, yy, log_r.view(n, n).clamp_min(log_r.max() - 30), levels=20, linewidths=0.5, cmap="Greys")


def projections(target: Target) -> list[tuple[int, int]]:
    if target.dim == 2:
        return [(0, 1)]
    if isinstance(target, Manywell):
        return [(0, 1), (2, 3)]
    return [(0, 1), (0, 2)]


def plot_samples(target: Target, samples: dict[str, torch.Tensor], path, title: str = "") -> None:
    """Scatter each named sample set (e.g. model, exact, buffer) on each projection; save to ``path`` (a file
    name, or a callable that takes the figure). Particle targets get histograms of energies and interatomic
    distances instead (``plot_particles``)."""
    if hasattr(getattr(target, "base", target), "n_particles"):
        plot_particles(target, samples, path, title)
        return
    pairs = projections(target)
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 5), squeeze=False)
    bounds = target.plot_bounds or (-5.0, 5.0)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for ax, dims in zip(axes[0], pairs):
        density_contour(ax, target, dims, bounds)
        for color, (name, x) in zip(colors, samples.items()):
            if x is None:
                continue
            x = x.detach().cpu()
            ax.scatter(x[:, dims[0]], x[:, dims[1]], s=2, alpha=0.4, color=color, label=name)
        ax.set_xlim(*bounds)
        ax.set_ylim(*bounds)
        ax.set_xlabel(f"x{dims[0] + 1}")
        ax.set_ylabel(f"x{dims[1] + 1}")
    axes[0, 0].legend(loc="upper right", markerscale=5)
    fig.suptitle(title)
    fig.tight_layout()
    _finish(fig, path, 110)


def plot_conditional_samples(target, conditions: torch.Tensor, x: torch.Tensor, path, title: str = "") -> None:
    """For a few conditions (rows): the condition image, then decoded samples ``x`` (M, K, d) given it.

    Targets without a ``decode`` / ``image_shape`` (not image-conditioned) get a scatter of all samples.
    """
    if not (hasattr(target, "decode") and hasattr(target, "image_shape")):
        plot_samples(target, {"model": x.flatten(0, 1)[:1000]}, path, title)
        return
    rows, cols = min(8, x.shape[0]), min(6, x.shape[1])
    with torch.no_grad():
        decoded = target.decode(x[:rows, :cols].cpu()).view(rows, cols, *target.image_shape)
    images = conditions[:rows].cpu().view(rows, *target.image_shape)
    fig, axes = plt.subplots(rows, cols + 1, figsize=(1.2 * (cols + 1), 1.2 * rows), squeeze=False)
    for i in range(rows):
        for j in range(cols + 1):
            ax = axes[i, j]
            ax.imshow((images[i] if j == 0 else decoded[i, j - 1]).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize=8)
    for j in range(1, cols + 1):
        axes[0, j].set_title(f"z {j}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _finish(fig, path, 100)


def plot_particles(target, samples: dict[str, torch.Tensor], path, title: str = "") -> None:
    """Overlaid histograms of the energies and of all interatomic distances of each named sample set and of
    the target's reference samples (``agents.particle_reference``), for a particle target (or its
    zero-centre-of-mass coordinates, mapped back to particles)."""
    from diffsampler.agents.particle_reference import PROTOCOLS, reference_samples

    base = getattr(target, "base", target)
    sets = {"reference": reference_samples(base.reference_name, min(2000, PROTOCOLS[base.reference_name].n_samples))}
    for name, x in samples.items():
        if x is not None:
            x = x.detach().cpu().float()
            sets[name] = target.to_particles(x) if base is not target else x
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), squeeze=False)
    with torch.no_grad():
        energies = {name: -base.log_reward(x) * base.tau for name, x in sets.items()}
        distances = {name: base.pair_distances(x).flatten() for name, x in sets.items()}
    for ax, values, label in ((axes[0, 0], energies, "energy"), (axes[0, 1], distances, "interatomic distance")):
        finite = torch.cat([v[torch.isfinite(v)] for v in values.values()])
        lo, hi = (float(q) for q in torch.quantile(finite[:200_000], torch.tensor([0.005, 0.995])))
        for name, v in values.items():
            ax.hist(v.clamp(lo, hi).numpy(), bins=80, range=(lo, hi), density=True, histtype="step", label=name)
        ax.set_xlabel(label)
    axes[0, 0].legend(loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    _finish(fig, path, 110)
