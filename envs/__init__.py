"""Targets, the diffusion MDP and its Gymnasium environments.

Importing this package registers ``DiffSampler-<Target>-v0`` for every entry of ``envs.registry``
without importing torch (the classes load on first use)::

    import gymnasium
    from diffsampler import envs
    env = gymnasium.make("DiffSampler-Manywell-v0", dim=64)
    vec = gymnasium.make_vec("DiffSampler-GMM25-v0", num_envs=300)  # native torch vector env
    vae = gymnasium.make("DiffSampler-VAE-v0", data_path="../shared/data")  # conditional: obs [z, t, image]
    env = gymnasium.make("DiffSampler-Funnel-v0", reference="vp")  # VP (Ornstein-Uhlenbeck) reference
    mdp = envs.make_mdp("DiffSampler-Manywell-v0", dim=8)  # the torch MDP core the agents roll out on
"""

from __future__ import annotations

import importlib

import gymnasium

from diffsampler.envs.registry import CONDITIONAL_ENV_IDS, ENV_IDS, REGISTRY, UNCONDITIONAL_ENV_IDS


def register_envs() -> None:
    """Register every target of the registry as a Gymnasium id (idempotent; string entry points only)."""
    for name, spec in REGISTRY.items():
        if spec.env_id not in gymnasium.registry:
            gymnasium.register(
                id=spec.env_id,
                entry_point="diffsampler.envs.gym_env:DiffSamplerEnv",
                vector_entry_point="diffsampler.envs.gym_env:DiffSamplerVectorEnv",
                kwargs={"target": name},
                disable_env_checker=False,
            )


register_envs()

# Loaded on first access (PEP 562), so that importing the package stays light.
_LAZY = {
    "DiffusionMDP": "diffsampler.envs.sampler_mdp",
    "make_mdp": "diffsampler.envs.sampler_mdp",
    "TARGETS": "diffsampler.envs.targets",
    "Target": "diffsampler.envs.targets",
    "make_target": "diffsampler.envs.targets",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CONDITIONAL_ENV_IDS", "ENV_IDS", "UNCONDITIONAL_ENV_IDS", "REGISTRY", *_LAZY, "register_envs"]
