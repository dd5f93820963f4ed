"""Building a DiffusionMDP from an env's keyword arguments, with their checks.

Shared by the Gymnasium faces (``envs.gym_env``, ``envs.gym_vector``) and ``envs.make_mdp``: the
target (a registered name, an import path or a Target: ``envs.targets.user.resolve_target``), the
device (a clear error for an unknown one or one that is not available) and the numerics of
``t_scale`` in the MDP's float type.
"""

from __future__ import annotations

import math

import torch

from diffsampler.envs.sampler_mdp import DiffusionMDP
from diffsampler.envs.targets.user import resolve_target

# Keyword arguments of the Gymnasium faces that the MDP core does not take (``make_mdp`` drops them).
FACE_KWARGS = ("action_bound", "render_mode", "backend", "autoreset_mode", "num_envs")
DEVICE_AVAILABLE = {  # device type -> whether this machine can hold tensors there
    "cpu": lambda index: True,
    "cuda": lambda index: torch.cuda.is_available() and (index or 0) < torch.cuda.device_count(),
    "mps": lambda index: torch.backends.mps.is_available(),
}


def check_device(device, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device``, or a ValueError naming it when it is unknown or unavailable."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{name} must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None
    if dev.type not in DEVICE_AVAILABLE:
        raise ValueError(f"{name}={device!r}: the env runs on one of {sorted(DEVICE_AVAILABLE)}, got type {dev.type!r}")
    if not DEVICE_AVAILABLE[dev.type](dev.index):
        raise ValueError(f"{name}={device!r} is not available on this machine (torch sees no such {dev.type} device)")
    return dev


def _variance_range(mdp: DiffusionMDP) -> tuple[float, float]:
    """Smallest and largest of sigma^2 and the reference's positive per-step variances (both directions)."""
    low = high = mdp.t_scale
    for var in (mdp.reference.forward_coefs()[1], mdp.reference.backward_coefs()[1]):
        var = torch.as_tensor(var, dtype=torch.float64).reshape(-1)
        var = var[var > 0]
        if len(var):
            low, high = min(low, float(var.min())), max(high, float(var.max()))
    return low, high


def check_numerics(mdp: DiffusionMDP) -> None:
    """Reject a ``t_scale`` (with ``num_steps``) whose arithmetic is not meaningful in the MDP's dtype.

    The reference's variances (sigma^2 and its per-step variances) must lie in ``[sqrt(tiny), sqrt(max)]``
    of the dtype (about ``[1e-19, 2e19]`` for float32), so that squares of positions and increments on
    that scale, their ratios and logs stay finite and normal. Outside, rewards silently underflow to 0 or
    overflow to NaN (e.g. ``t_scale=1e-60`` or ``1e40`` in float32).
    """
    finfo = torch.finfo(mdp.dtype)
    low, high = math.sqrt(finfo.tiny), math.sqrt(finfo.max)
    v_low, v_high = _variance_range(mdp)
    if v_low < low or v_high > high:
        raise ValueError(
            f"t_scale={mdp.t_scale!r} with num_steps={mdp.num_steps}: the reference's variances span "
            f"[{v_low:.3g}, {v_high:.3g}], outside [{low:.3g}, {high:.3g}] where {mdp.dtype} "
            "arithmetic stays finite and exact; rescale the target (or t_scale)"
        )


def build_mdp(
    target=None,
    num_steps: int = 100,
    t_scale: float | None = None,
    reward_mode: str = "terminal",
    device: str | torch.device = "cpu",
    reference: str = "bridge",
    reference_kwargs: dict | None = None,
    **target_kwargs,
) -> DiffusionMDP:
    """The MDP of an env's keyword arguments (``target`` and ``target_kwargs`` as for ``resolve_target``)."""
    device = check_device(device)
    mdp = DiffusionMDP(
        resolve_target(target, **target_kwargs),
        num_steps=num_steps,
        t_scale=t_scale,
        reward_mode=reward_mode,
        device=device,
        reference=reference,
        reference_kwargs=reference_kwargs,
    )
    check_numerics(mdp)
    return mdp
