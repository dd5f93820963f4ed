"""Targets and the TARGETS registry (name -> factory taking keyword arguments)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from diffsampler.envs.targets.base import Target
from diffsampler.envs.targets.conditional import BoundTarget, ConditionalTarget, is_conditional
from diffsampler.envs.targets.funnel import Funnel
from diffsampler.envs.targets.gaussian import Gaussian
from diffsampler.envs.targets.gmm import GaussianMixture, gmm9, gmm25, gmm40
from diffsampler.envs.targets.lgcp import LogGaussianCoxProcess, lgcp_pines, lgcp_synthetic
from diffsampler.envs.targets.logistic import BayesianLogisticRegression, breast_cancer
from diffsampler.envs.targets.manywell import Manywell
from diffsampler.envs.targets.student_t import StudentTMixture, student_t_mixture
from diffsampler.envs.targets.vae import VAEPosterior, vae

TARGETS: dict[str, Callable[..., Target]] = {
    "gmm25": gmm25,
    "gmm9": gmm9,
    "funnel": lambda dim=10, t_scale=1.0: Funnel(dim, scale=3.0, t_scale=t_scale),
    "easy_funnel": lambda dim=10, t_scale=1.0: Funnel(dim, scale=1.0, t_scale=t_scale),
    "manywell": Manywell,
    "gaussian": Gaussian,
    "gmm40": gmm40,
    "student_t_mixture": student_t_mixture,
    "breast_cancer": breast_cancer,
    "lgcp": lgcp_pines,
    "lgcp_synthetic": lgcp_synthetic,
    "vae": vae,
}
CONDITIONAL_TARGETS = ("vae",)  # names whose factories build a ConditionalTarget (log_reward(x, condition))


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
