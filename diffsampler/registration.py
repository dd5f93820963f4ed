"""Gymnasium registration of the ``DiffSampler-*`` ids, without importing torch.

``import diffsampler`` calls ``register_builtin_envs()``, so that ``gymnasium.make("diffsampler:<id>")``
needs no prior import, and importing ``diffsampler.envs`` registers through the same helper. Entry
points are strings: nothing heavy is imported until an env is made. ``BUILTIN_ENV_TARGETS`` is the
static (torch-free) table of id suffix -> registered target name; a test checks that it matches
``diffsampler.envs.ENV_TARGETS``.

Every id is registered with ``max_episode_steps=None``: T is the ``num_steps`` keyword argument, so the
registry cannot know it; the env completes its spec from the built MDP (``spec.max_episode_steps == T``)
and no TimeLimit can cut an episode short.
"""

from __future__ import annotations

import gymnasium

ENTRY_POINT = "diffsampler.envs.gym_env:DiffSamplerEnv"
VECTOR_ENTRY_POINT = "diffsampler.envs.gym_vector:DiffSamplerVectorEnv"
BUILTIN_ENV_TARGETS = {
    "GMM25": "gmm25",
    "GMM9": "gmm9",
    "Funnel": "funnel",
    "EasyFunnel": "easy_funnel",
    "Manywell": "manywell",
    "Gaussian": "gaussian",
    "GMM40": "gmm40",
    "StudentTMixture": "student_t_mixture",
    "BreastCancer": "breast_cancer",
    "LGCP": "lgcp",
    "LGCPSynthetic": "lgcp_synthetic",
    "VAE": "vae",
}
# A user-defined energy: target="package.module:attr" or "path/to/file.py:attr" (or a Target instance).
CUSTOM_ENV_ID = "DiffSampler-Custom-v0"


def env_id(name: str) -> str:
    return f"DiffSampler-{name}-v0"


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
    for name, target in BUILTIN_ENV_TARGETS.items():
        register_env(env_id(name), target)
    register_env(CUSTOM_ENV_ID)
