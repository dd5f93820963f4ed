"""Forward-kernel parametrisations of the diffusion policy: ``PARAMETRISATIONS`` (name -> builder).

Every parametrisation is a Gaussian kernel of the same form, with per-step coefficients ``c_k``,
``g_k``, ``v_k`` fixed by the reference process and the discretisation:

    p_F(x_{k+1} | x_k) = N( c_k x_k + g_k clip(f(x_k, t_k)),  v_k exp(lv(x_k, t_k)) ),

where ``f`` is the network's output (plus ``scale(t) * score`` with the Langevin parametrisation) and
``lv = 0`` unless the variance is learned. In every case ``f = 0`` gives the reference process's own
forward kernel, so training starts from the reference.

* ``"euler"`` (default; any reference): ``c, v`` = the reference's forward kernel, ``g = dt``. On the
  bridge this is the project's original ``N(x + dt f, sigma^2 dt exp(lv))``; on VP it is
  ``N(sqrt(1 - a_k) x + dt f, sigma^2 a_k exp(lv))``.
* ``"dds"`` (VP only): the exponential integrator of Vargas, Grathwohl & Doucet (2023, "Denoising
  diffusion samplers"). With the score written as ``grad log p_t(x) = -x / sigma^2 + f`` (``f`` a
  correction to the reference's stationary score), the generative SDE is
  ``dX = (-beta X / 2 + sigma^2 beta f) dt + sigma sqrt(beta) dW``; integrating the linear part exactly
  over a step with ``f`` frozen gives ``c_k = sqrt(1 - a_k) = exp(-B_k / 2)``,
  ``g_k = 2 sigma^2 (1 - sqrt(1 - a_k))`` and ``v_k = sigma^2 a_k`` (B_k = int beta over the step).
  DDS's network is ``f = NN(x, t) + NN(t) * grad log R(x)``: the Langevin parametrisation.
* ``"dis"`` (VP only): the time-reversed diffusion sampler of Berner, Richter & Ullrich (2024, "An
  optimal control perspective on diffusion-based generative modeling"): a learned score
  ``s = -x / sigma^2 + f`` of the same generative SDE, its control entering with the Euler-Maruyama
  weight ``g_k = sigma^2 beta_k dt`` (``beta_k`` at the step's start). The linear (reference) part is
  the exact OU kernel, ``c_k = sqrt(1 - a_k)``, ``v_k = sigma^2 a_k``, as above: DIS's fully
  Euler-Maruyama kernel (``c = 1 - beta dt / 2``, ``v = sigma^2 beta dt``) would differ from the exact
  OU backward kernels by O(beta dt) per step even at the optimum, an ELBO floor of about
  ``d / (16 T) * int_0^1 beta^2`` nats (0.2 on Funnel at T = 100) that is an artefact of mixing
  discretisations, not part of DIS. DIS's target-score term is the interpolated score
  ``lerp(grad log p_0, grad log R, t)``; relative to the reference's score that is
  ``t (grad log R(x) + x / sigma^2)``, so with LP the score enters as ``scale(t) * t * (score + x / sigma^2)``
  (``score_weight = t_k``). With ``scale = 1`` (``langevin_init = 1``) the untrained sampler follows the
  interpolated score, as DIS initialises it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from diffsampler.envs.reference import Reference


@dataclass(frozen=True)
class StepTable:
    """Per-step coefficients of the kernel above: floats (the same at every step) or ``(T,)`` float64.

    ``score_weight``: if not None, the Langevin score term is ``score_weight_k * (score + x / sigma^2)``
    instead of ``score``.
    """

    mean_coef: float | torch.Tensor
    drift_coef: float | torch.Tensor
    var: float | torch.Tensor
    score_weight: torch.Tensor | None = None


def _dt(ref: Reference):
    """The step lengths: ``dt`` (a float) on the uniform grid, else ``(T,)`` float64."""
    return ref.dt if ref.times is None else ref.times.diff()


def euler(ref: Reference) -> StepTable:
    c, v = ref.forward_coefs()
    return StepTable(c, _dt(ref), v)


def dds(ref: Reference) -> StepTable:
    b = ref.step_integrals
    return StepTable(torch.exp(-0.5 * b), -2 * ref.t_scale * torch.expm1(-0.5 * b), ref.t_scale * -torch.expm1(-b))


def dis(ref: Reference) -> StepTable:
    rho, var = ref.forward_coefs()
    t = ref.grid[:-1]
    return StepTable(rho, ref.t_scale * ref.beta(t) * _dt(ref), var, score_weight=t)


@dataclass(frozen=True)
class Parametrisation:
    """A registered parametrisation: its coefficient builder and the references it is defined for."""

    build: Callable[[Reference], StepTable]
    references: tuple[str, ...] | None = None  # None: any reference

    def table(self, name: str, ref: Reference) -> StepTable:
        if self.references is not None and ref.name not in self.references:
            raise ValueError(
                f"parametrisation {name!r} needs the reference {' or '.join(map(repr, self.references))}, "
                f"got {ref.name!r} (make the env with reference='vp')"
            )
        return self.build(ref)


PARAMETRISATIONS: dict[str, Parametrisation] = {
    "euler": Parametrisation(euler),
    "dds": Parametrisation(dds, ("vp",)),
    "dis": Parametrisation(dis, ("vp",)),
}
