"""Gymnasium registration of the ``DiffSampler-*`` ids, without importing torch.

``import diffsampler`` calls ``register_builtin_envs()``, so that ``gymnasium.make("diffsampler:<id>")``
needs no prior import, and importing ``diffsampler.envs`` registers through the same helper. Entry
points are strings and the ids come from the torch-free ``envs.registry``: nothing heavy is imported
until an env is made.

Every id is registered with ``max_episode_steps=None``: T is the ``num_steps`` keyword argument, so the
registry cannot know it; the env completes its spec from the built MDP (``spec.max_episode_steps == T``)
and no TimeLimit can cut an episode short.
"""

from __future__ import annotations

import gymnasium

ENTRY_POINT = "diffsampler.envs.gym_env:DiffSamplerEnv"
VECTOR_ENTRY_POINT = "diffsampler.envs.gym_vector:DiffSamplerVectorEnv"
# A user-defined energy: target="package.module:attr" or "path/to/file.py:attr" (or a Target instance).
CUSTOM_ENV_ID = "DiffSampler-Custom-v0"


def registration_kwargs(target: str | None) -> dict:
    """``gymnasium.register`` keyword arguments of an id whose default target is ``target`` (None: the
    user must give ``target=``)."""
    return {
        "entry_point": ENTRY_POINT,
        "vector_entry_point": VECTOR_ENTRY_POINT,
        "kwargs": {"target": target},
        "max_episode_steps": None,
        "disable_env_checker": False,
    }


def register_env(id: str, target: str | None = None) -> None:
    """Register ``id`` (once) with the DiffSampler entry points and default ``target``."""
    if id not in gymnasium.registry:
        gymnasium.register(id=id, **registration_kwargs(target))


def register_builtin_envs() -> None:
    """Every target of ``envs.registry`` under its id, and ``DiffSampler-Custom-v0``."""
    from diffsampler.envs.registry import REGISTRY  # imported here: diffsampler.envs registers through this

    for name, spec in REGISTRY.items():
        register_env(spec.env_id, name)
    register_env(CUSTOM_ENV_ID)
