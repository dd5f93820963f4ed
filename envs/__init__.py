"""Targets, the diffusion MDP and its Gymnasium environments.

Importing this package registers ``DiffSampler-<Target>-v0`` for every entry of ``ENV_TARGETS``::

    import gymnasium, envs
    env = gymnasium.make("DiffSampler-Manywell-v0", dim=64)
    vec = gymnasium.make_vec("DiffSampler-GMM25-v0", num_envs=300)  # numpy; backend="torch" for tensors
    vae = gymnasium.make("DiffSampler-VAE-v0", data_path="../shared/data")  # conditional: obs [z, t, image]
    env = gymnasium.make("DiffSampler-Funnel-v0", reference="vp")  # VP (Ornstein-Uhlenbeck) reference
"""

from __future__ import annotations

import gymnasium

from diffsampler.envs.mdp_args import FACE_KWARGS, build_mdp
from diffsampler.envs.sampler_mdp import DiffusionMDP
from diffsampler.envs.targets import CONDITIONAL_TARGETS, TARGETS, Target, make_target
from diffsampler.registration import CUSTOM_ENV_ID, register_env

# Gymnasium id suffix -> registered target name.
ENV_TARGETS = {
    "GMM25": "gmm25",
    "GMM9": "gmm9",
    "Funnel": "funnel",
    "EasyFunnel": "easy_funnel",
    "Manywell": "manywell",
    "Gaussian": "gaussian",
    "GMM40": "gmm40",
    "StudentTMixture": "student_t_mixture",
    "BreastCancer": "breast_cancer",
    "LGCP": "lgcp",  # the pines data: data_path=... (CLI --data-path) or $DIFFSAMPLER_DATA
    "LGCPSynthetic": "lgcp_synthetic",
    "VAE": "vae",
}
ENV_IDS = [f"DiffSampler-{name}-v0" for name in ENV_TARGETS]
# Envs of conditional targets: a condition per episode, observations [x, t, c].
CONDITIONAL_ENV_IDS = [f"DiffSampler-{n}-v0" for n, t in ENV_TARGETS.items() if t in CONDITIONAL_TARGETS]
UNCONDITIONAL_ENV_IDS = [i for i in ENV_IDS if i not in CONDITIONAL_ENV_IDS]

for _name, _target in ENV_TARGETS.items():
    register_env(f"DiffSampler-{_name}-v0", _target)
register_env(CUSTOM_ENV_ID)  # a user-defined energy: target="package.module:attr" or "path/to/file.py:attr"


def make_mdp(env_id: str, **kwargs) -> DiffusionMDP:
    """The torch MDP core behind a registered env id, with the same keyword arguments as ``make``.

    Agents roll out through this core directly; the Gymnasium faces' own options (``action_bound``,
    ``backend``, ...: ``envs.mdp_args.FACE_KWARGS``) are ignored. ``target=`` may be an import path of a
    user-defined energy (``"package.module:attr"``, ``"path/to/file.py:attr"``; see ``envs.targets.user``).
    """
    env_id = env_id.removeprefix("diffsampler.envs:").removeprefix("diffsampler:")
    if env_id not in gymnasium.registry or env_id not in (*ENV_IDS, CUSTOM_ENV_ID):
        raise ValueError(f"unknown env id {env_id!r}; registered: {[*ENV_IDS, CUSTOM_ENV_ID]}")
    merged = {k: v for k, v in {**gymnasium.spec(env_id).kwargs, **kwargs}.items() if k not in FACE_KWARGS}
    return build_mdp(**merged)


__all__ = ["CUSTOM_ENV_ID", "DiffusionMDP", "ENV_IDS", "ENV_TARGETS", "TARGETS", "Target", "make_mdp", "make_target"]
