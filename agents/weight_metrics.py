"""Forward and reverse effective sample size of trajectory log-weights, normalised to [0, 1].

Definitions of Blessing et al. (2024), "Beyond ELBOs: a large-scale evaluation of variational methods for
sampling" (ICML 2024); their code, DenisBless/variational_sampling_methods on GitHub: ``compute_reverse_ess``
(``algorithms/common/eval_methods/utils.py``), the forward ESS of ``stochastic_oc_methods.py`` (no log Z) and
``calculate_log_forward_ess`` (``algorithms/fab/train/evaluate.py``, with log Z, after Midgley et al. 2023).
Like ``metrics``, the functions reduce over the last dimension (leading dimensions are independent batches).
"""

from __future__ import annotations

import math

import torch

from diffsampler.agents.metrics import _check_log_w, ess


def reverse_ess(log_w: torch.Tensor) -> torch.Tensor:
    """Reverse ESS ``(sum w)^2 / (N sum w^2)`` of forward log-weights (trajectories sampled from the model): the
    Kish ESS per sample, in [1/N, 1] (0 if every weight is zero). The same function as ``metrics.ess``."""
    return ess(log_w)


def _log_mean_exp(v: torch.Tensor) -> torch.Tensor:
    """log mean exp over the last dim; -inf if every entry is -inf, +inf if any entry is +inf."""
    return torch.logsumexp(v, dim=-1) - math.log(v.shape[-1])


def forward_ess(log_w_backward: torch.Tensor, log_z: float | torch.Tensor | None = None) -> torch.Tensor:
    """Forward ESS ``1 / E_P[dP/dQ]`` of backward log-weights, in [0, 1].

    ``log_w_backward`` are the log-weights ``log R(x_T) + sum log p_B - sum log p_F`` of trajectories drawn
    backward from exact target samples (the path measure P of the target; Q is the model's), the inputs of
    ``metrics.eubo``. As ``w = Z dP/dQ``, ``E_P[w] = Z E_P[dP/dQ]``, so with the exact normaliser

        forward ESS = Z / mean(w)                       (log Z given; Midgley et al. 2023, Blessing et al. 2024)

    clipped at 1 (an estimate above 1, sampling noise of a near-exact model, is reported as 1). Without log Z,
    Z is replaced by the reverse importance-sampling estimate from the same weights, ``E_P[1/w] = 1/Z``:

        forward ESS = 1 / (mean(w) mean(1/w))           (log Z None; Blessing et al.'s code for SDE samplers)

    which lies in (0, 1] by the AM-HM inequality. Zero weights (-inf log-weights) enter the means as 0; a batch
    whose weights are all zero gives 0, as in ``metrics.ess``, and so does, without log Z, any zero weight
    (mean(1/w) is infinite). NaN or +inf log-weights raise ValueError.
    """
    log_w = _check_log_w(log_w_backward, "log_w_backward")
    lme = _log_mean_exp(log_w)
    if log_z is None:
        log_ess = -lme - _log_mean_exp(-log_w)
    else:
        log_z = torch.as_tensor(log_z, dtype=log_w.dtype, device=log_w.device)
        if not torch.isfinite(log_z).all():
            raise ValueError(f"log_z must be finite, got {log_z}")
        log_ess = log_z - lme
    out = torch.exp(log_ess.clamp(max=0.0))
    return torch.where(torch.isneginf(lme), torch.zeros_like(out), out)
