"""The sampler kernels a GFlowNet agent trains: ``PolicyConfig.kernel`` -> ``KernelSpec``.

Each kernel is a forward kernel of the trajectory engine (``envs.engine``) built from ``(dim, T, sigma^2,
PolicyConfig, reference, cond_dim)`` and exposing ``backward`` (its learned backward kernel, or None for the
reference's). Classes are imported lazily (like ``envs.registry``), so configs validate without torch modules.

* ``"diffusion"``: ``agents.policy.DiffusionPolicy``, the paper's Gaussian policy (LP, learned variance, DDS/DIS).
* ``"cmcd"``: ``agents.cmcd.CMCDKernel``, annealed Langevin with a learned control (Vargas et al., 2024), on the VP
  reference; its reverse Langevin kernel is the backward kernel.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class KernelSpec:
    """A registered kernel.

    Attributes:
        path: ``"module:Class"`` of the kernel.
        fixed: ``PolicyConfig`` fields the kernel needs at these values (others do not apply to it).
        path_gradient: whether reparameterised path-gradient objectives (PIS) may train it.
    """

    path: str
    fixed: dict = field(default_factory=dict)
    path_gradient: bool = True

    def load(self) -> type:
        module, name = self.path.split(":")
        return getattr(importlib.import_module(module), name)


KERNELS: dict[str, KernelSpec] = {
    "diffusion": KernelSpec("diffsampler.agents.policy:DiffusionPolicy"),
    # CMCD's scores enter its kernels without gradients, so its path-gradient (KL) training is not offered.
    "cmcd": KernelSpec(
        "diffsampler.agents.cmcd:CMCDKernel",
        {"langevin": False, "learn_variance": False, "learn_backward": False, "parametrisation": "euler"},
        path_gradient=False,
    ),
}


def check_kernel_config(config) -> None:
    """A ValueError naming the value unless ``config.kernel`` is registered and ``config`` sets what it fixes."""
    if config.kernel not in KERNELS:
        raise ValueError(f"unknown PolicyConfig.kernel {config.kernel!r}; registered: {sorted(KERNELS)}")
    for name, value in KERNELS[config.kernel].fixed.items():
        if getattr(config, name) != value:
            raise ValueError(
                f"PolicyConfig.{name}={getattr(config, name)!r} does not apply to the {config.kernel!r} kernel "
                f"(it needs {value!r})"
            )


def make_kernel(dim: int, num_steps: int, t_scale: float, config, reference=None, cond_dim=None, target=None):
    """The kernel ``config.kernel`` for an MDP of ``dim``, ``T = num_steps``, ``sigma^2 = t_scale``, ``reference``
    (``target``: where a kernel picks its network from it, e.g. the EGNN of a particle target)."""
    return KERNELS[config.kernel].load()(dim, num_steps, t_scale, config, reference, cond_dim, target)
