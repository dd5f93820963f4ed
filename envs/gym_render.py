"""``render_mode="rgb_array"`` of the Gymnasium faces: particles drawn over the target's density.

The picture is the plane of the first two coordinates (the x axis alone for d = 1): the density
``exp(log R)`` is evaluated on a grid of that plane with every other coordinate at 0 (a slice through
the origin, not a marginal; the title says so) and the particles are drawn at their first two
coordinates. A conditional target is drawn given the condition of the first episode. The box is the
target's ``plot_bounds``, else ``+-3 sigma`` of the reference. matplotlib (Agg, no display) is imported
only when an env is made with a render mode.
"""

from __future__ import annotations

import numpy as np
import torch

from diffsampler.envs.sampler_mdp import DiffusionMDP

RENDER_MODES = ["rgb_array"]
GRID = 120  # density grid points per axis
SIZE_INCHES, DPI = 4.0, 100  # 400 x 400 pixels


def check_render_mode(render_mode, owner: str) -> str | None:
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"{owner} supports render_mode None or one of {RENDER_MODES}, got render_mode={render_mode!r}")
    return render_mode


class ParticleRenderer:
    """Draws particles ``(n, d)`` (and optionally one path ``(k, d)``) over ``mdp``'s target density."""

    def __init__(self, mdp: DiffusionMDP):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.mdp = mdp
        self.figure = Figure(figsize=(SIZE_INCHES, SIZE_INCHES), dpi=DPI)
        self.canvas = FigureCanvasAgg(self.figure)
        bounds = mdp.target.plot_bounds
        half = 3.0 * mdp.t_scale**0.5
        self.low, self.high = bounds if bounds is not None else (-half, half)
        self._density_key: bytes | None = None
        self._density: np.ndarray | None = None

    def _log_density(self, condition: torch.Tensor | None) -> np.ndarray:
        """log R on the grid: ``(GRID, GRID)`` for d >= 2, ``(GRID,)`` for d = 1 (cached per condition)."""
        key = b"" if condition is None else condition.cpu().numpy().tobytes()
        if key != self._density_key:
            d, axis = self.mdp.dim, torch.linspace(self.low, self.high, GRID, dtype=torch.float64)
            if d == 1:
                points = axis.unsqueeze(-1)
            else:
                grid_y, grid_x = torch.meshgrid(axis, axis, indexing="ij")
                points = torch.zeros(GRID * GRID, d, dtype=torch.float64)
                points[:, 0], points[:, 1] = grid_x.reshape(-1), grid_y.reshape(-1)
            points = points.to(device=self.mdp.device, dtype=self.mdp.dtype)
            with torch.no_grad():
                cond = None if condition is None else condition.to(points).expand(len(points), -1)
                log_r = self.mdp.target.log_reward(points) if cond is None else self.mdp.target.log_reward(points, cond)
            log_r = torch.nan_to_num(log_r.double(), nan=-np.inf).cpu().numpy()
            self._density = log_r.reshape(GRID, GRID) if d > 1 else log_r
            self._density_key = key
        return self._density

    def __call__(self, x: torch.Tensor, t: float, condition=None, path: torch.Tensor | None = None) -> np.ndarray:
        """An ``(H, W, 3)`` uint8 image of particles ``x`` ``(n, d)`` at MDP time ``t``."""
        log_r = self._log_density(condition)
        finite = np.isfinite(log_r)
        density = np.exp(log_r - log_r[finite].max()) if finite.any() else np.zeros_like(log_r)
        self.figure.clear()
        ax = self.figure.add_subplot()
        pts = x.detach().cpu().double().numpy()
        trail = None if path is None else path.detach().cpu().double().numpy()
        if self.mdp.dim == 1:
            axis = np.linspace(self.low, self.high, GRID)
            ax.fill_between(axis, density, color="tab:blue", alpha=0.4)
            ax.plot(pts[:, 0], np.zeros(len(pts)), "o", color="tab:red", ms=3)
            ax.set_ylim(-0.05, 1.05)
            title = f"log R, particles; t = {t:.2f}"
        else:
            ax.imshow(density, origin="lower", extent=(self.low, self.high, self.low, self.high), cmap="Blues")
            if trail is not None:
                ax.plot(trail[:, 0], trail[:, 1], "-", color="tab:orange", lw=1)
            ax.plot(pts[:, 0], pts[:, 1], "o", color="tab:red", ms=3 if len(pts) > 1 else 5)
            slice_note = "" if self.mdp.dim == 2 else f" (x1, x2; x3..x{self.mdp.dim} = 0 slice)"
            title = f"density{slice_note}; t = {t:.2f}"
        ax.set_xlim(self.low, self.high)
        if self.mdp.dim > 1:
            ax.set_ylim(self.low, self.high)
        ax.set_title(f"{self.mdp.target!r}\n{title}", fontsize=8)
        ax.tick_params(labelsize=7)
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()
