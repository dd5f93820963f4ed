"""Targets and ``TARGETS`` (name -> factory taking keyword arguments), derived from ``envs.registry``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from diffsampler.envs.registry import REGISTRY
from diffsampler.envs.targets.base import Target
from diffsampler.envs.targets.conditional import BoundTarget, ConditionalTarget, is_conditional
from diffsampler.envs.targets.funnel import Funnel
from diffsampler.envs.targets.gaussian import Gaussian
from diffsampler.envs.targets.gmm import GaussianMixture, gmm9, gmm25, gmm40
from diffsampler.envs.targets.lgcp import LogGaussianCoxProcess
from diffsampler.envs.targets.logistic import BayesianLogisticRegression
from diffsampler.envs.targets.manywell import Manywell
from diffsampler.envs.targets.student_t import StudentTMixture
from diffsampler.envs.targets.vae import VAEPosterior

TARGETS: dict[str, Callable[..., Target]] = {name: spec.load() for name, spec in REGISTRY.items()}
# names whose factories build a ConditionalTarget (log_reward(x, condition))
CONDITIONAL_TARGETS = tuple(name for name, spec in REGISTRY.items() if spec.conditional)


def make_target(name: str, **kwargs) -> Target:
    """Build a registered target, with a clear error for an unknown name or keyword."""
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; registered targets: {sorted(TARGETS)}")
    factory = TARGETS[name]
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as err:
        raise ValueError(f"bad keyword arguments {kwargs!r} for target {name!r}: {err}") from None
    return factory(**kwargs)


__all__ = ["TARGETS", "Target", "make_target", "Funnel", "Gaussian", "GaussianMixture", "Manywell"]
__all__ += ["BayesianLogisticRegression", "LogGaussianCoxProcess", "StudentTMixture"]
__all__ += ["BoundTarget", "ConditionalTarget", "VAEPosterior", "is_conditional"]
__all__ += ["gmm9", "gmm25", "gmm40"]
