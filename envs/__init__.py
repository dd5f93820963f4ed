"""Targets, the diffusion MDP and its Gymnasium environments.

Importing this package registers ``DiffSampler-<Target>-v0`` for every entry of ``envs.registry`` (and
``DiffSampler-Custom-v0`` for a user-defined energy) without importing torch: the classes load on first
use::

    import gymnasium
    from diffsampler import envs
    env = gymnasium.make("DiffSampler-Manywell-v0", dim=64)
    vec = gymnasium.make_vec("DiffSampler-GMM25-v0", num_envs=300)  # numpy; backend="torch" for tensors
    vae = gymnasium.make("DiffSampler-VAE-v0", data_path="../shared/data")  # conditional: obs [z, t, image]
    env = gymnasium.make("DiffSampler-Funnel-v0", reference="vp")  # VP (Ornstein-Uhlenbeck) reference
    env = gymnasium.make("DiffSampler-Custom-v0", target="examples/banana.py:banana")  # your own energy
    mdp = envs.make_mdp("DiffSampler-Manywell-v0", dim=8)  # the torch MDP core the agents roll out on
"""

from __future__ import annotations

import importlib

from diffsampler.envs.registry import CONDITIONAL_ENV_IDS, ENV_IDS, REGISTRY, UNCONDITIONAL_ENV_IDS
from diffsampler.registration import CUSTOM_ENV_ID, register_builtin_envs

register_builtin_envs()

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


__all__ = ["CONDITIONAL_ENV_IDS", "CUSTOM_ENV_ID", "ENV_IDS", "UNCONDITIONAL_ENV_IDS", "REGISTRY", *_LAZY]
