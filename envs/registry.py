"""The one registry of targets: every name, its factory, its Gymnasium id and its short names.

Pure data, no torch: reading it (for Gymnasium registration, command-line checks, the benchmark's
short names) imports nothing heavy; ``TargetSpec.load`` imports the factory when a target is built.
A new target is a module in ``envs/targets/`` and one entry here; its env id
``DiffSampler-<env_name>-v0``, the benchmark's short names and ``envs.targets.TARGETS`` derive from it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TargetSpec:
    """A registered target family.

    Attributes:
        factory: ``"module:function"`` under ``diffsampler.envs.targets``, building the target from
            keyword arguments (``dim``, ``t_scale``, ...).
        env_name: the Gymnasium id is ``DiffSampler-<env_name>-v0``.
        short_names: short name (the benchmark's columns, ``--targets``) -> the factory's keyword arguments.
        conditional: the factory builds a ``ConditionalTarget`` (observations ``[x, t, c]``).
        data: the target reads a data file (``data_path=`` or ``$DIFFSAMPLER_DATA``).
    """

    factory: str
    env_name: str
    short_names: dict[str, dict] = field(default_factory=dict)
    conditional: bool = False
    data: bool = False

    @property
    def env_id(self) -> str:
        return f"DiffSampler-{self.env_name}-v0"

    def load(self) -> Callable:
        module, attr = self.factory.split(":")
        return getattr(importlib.import_module(f"diffsampler.envs.targets.{module}"), attr)


REGISTRY: dict[str, TargetSpec] = {
    "gmm25": TargetSpec("gmm:gmm25", "GMM25", {"25gmm": {}}),
    "gmm9": TargetSpec("gmm:gmm9", "GMM9", {"9gmm": {}}),
    "funnel": TargetSpec("funnel:funnel", "Funnel", {"funnel": {}}),
    "easy_funnel": TargetSpec("funnel:easy_funnel", "EasyFunnel", {"easy-funnel": {}}),
    "manywell": TargetSpec(
        "manywell:Manywell",
        "Manywell",
        {
            "manywell": {"dim": 32},
            "manywell8": {"dim": 8},
            "manywell32": {"dim": 32},
            "manywell128": {"dim": 128},
            "manywell512": {"dim": 512},
        },
    ),
    "gaussian": TargetSpec("gaussian:Gaussian", "Gaussian", {"gaussian": {}}),
    "gmm40": TargetSpec("gmm:gmm40", "GMM40", {"40gmm": {}}),
    "student_t_mixture": TargetSpec("student_t:student_t_mixture", "StudentTMixture", {"student-t": {}}),
    "breast_cancer": TargetSpec("logistic:breast_cancer", "BreastCancer", {"breast-cancer": {}}),
    "lgcp": TargetSpec("lgcp:lgcp_pines", "LGCP", {"lgcp": {}}, data=True),
    "lgcp_synthetic": TargetSpec("lgcp:lgcp_synthetic", "LGCPSynthetic", {"lgcp-synthetic": {}}),
    "vae": TargetSpec("vae:vae", "VAE", {"vae": {}}, conditional=True, data=True),
    # particle systems (envs/targets/particles.py); no short names yet: not in the benchmark's columns
    # Particle systems, by default in coordinates of their zero-centre-of-mass subspace (zero_com=False: R^(nD)).
    "dw4": TargetSpec("zero_com:dw4", "DW4", {"dw4": {}}),
    "lj13": TargetSpec("zero_com:lj13", "LJ13", {"lj13": {}}),
    "lj55": TargetSpec("zero_com:lj55", "LJ55", {"lj55": {}}),
}

ENV_IDS = [spec.env_id for spec in REGISTRY.values()]
CONDITIONAL_ENV_IDS = [spec.env_id for spec in REGISTRY.values() if spec.conditional]
UNCONDITIONAL_ENV_IDS = [i for i in ENV_IDS if i not in CONDITIONAL_ENV_IDS]
DATA_ENV_IDS = [spec.env_id for spec in REGISTRY.values() if spec.data]
# short name -> (env id, env kwargs), in registry order (the order of the benchmark's columns)
SHORT_NAMES: dict[str, tuple[str, dict]] = {
    short: (spec.env_id, kwargs) for spec in REGISTRY.values() for short, kwargs in spec.short_names.items()
}


def is_conditional_env(env_id: str) -> bool:
    """Whether a registered id's target is conditional (False for ``DiffSampler-Custom-v0``, whose target
    the user gives: a conditional one is found when the env is built)."""
    env_id = env_id.removeprefix("diffsampler.envs:").removeprefix("diffsampler:")
    return env_id in CONDITIONAL_ENV_IDS


def spec_of_env(env_id: str) -> TargetSpec:
    """The registry entry behind a ``DiffSampler-*-v0`` id; a ValueError listing the ids otherwise."""
    for spec in REGISTRY.values():
        if spec.env_id == env_id:
            return spec
    raise ValueError(f"unknown env id {env_id!r}; registered: {ENV_IDS}")


def resolve(name: str) -> tuple[str, str, dict]:
    """(short name, env id, env kwargs) of a short name or a registered env id; clear error otherwise."""
    if name in SHORT_NAMES:
        env_id, kwargs = SHORT_NAMES[name]
        return name, env_id, dict(kwargs)
    if name in ENV_IDS:
        return short_name(name, {}), name, {}
    raise ValueError(f"unknown target {name!r}; short names: {sorted(SHORT_NAMES)}; env ids: {ENV_IDS}")


def short_name(env_id: str, env_kwargs: dict) -> str:
    """The short name of (env id, kwargs): the first with exactly these kwargs, else the env's first one
    when no kwargs are given, else the lower-cased env name."""
    kwargs = {k: v for k, v in env_kwargs.items() if k != "data_path"}
    same_env = [s for s, (e, _) in SHORT_NAMES.items() if e == env_id]
    for short in same_env:
        if SHORT_NAMES[short][1] == kwargs:
            return short
    if same_env and not kwargs:
        return same_env[0]
    return env_id.removeprefix("DiffSampler-").removesuffix("-v0").lower()
