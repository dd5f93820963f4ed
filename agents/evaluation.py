"""Evaluation shared by every runner: a sampler's trajectories and samples scored with ``agents.metrics``.

``evaluate_kernel`` scores any forward kernel of the trajectory engine (the GFlowNet policy, the RL
policy heads): ``n`` forward trajectories, and, where the target has an exact sampler, as many exact
samples and their backward trajectories (for the EUBO). ``sample_metrics`` scores bare samples (MCMC).
``repeat_summary`` turns K independent evaluations into mean, std and values per metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffsampler.agents import metrics
from diffsampler.envs.engine import Trajectories


@dataclass
class Evaluation:
    """One evaluation batch: forward trajectories, their terminal samples, exact samples and the
    log-weights of backward trajectories from them (None without an exact sampler)."""

    forward: Trajectories
    exact: torch.Tensor | None
    log_w_backward: torch.Tensor | None

    @property
    def samples(self) -> torch.Tensor:
        return self.forward.terminal

    def summary(self, target) -> dict:
        """``metrics.summarize`` of this batch (``eubo`` None when a backward log-weight is -inf)."""
        bwd = self.log_w_backward
        if bwd is not None and not bool(torch.isfinite(bwd).all()):
            bwd = None
        return metrics.summarize(self.forward.log_weight, target.log_Z, self.samples, self.exact, bwd, target)


@torch.no_grad()
def evaluate_kernel(mdp, kernel, n: int, generator: torch.Generator, cpu_generator: torch.Generator, backward=None):
    """``n`` forward trajectories of ``kernel`` (``generator``, on the MDP's device) and, if the target
    has an exact sampler, ``n`` exact samples (``cpu_generator``) scored backward under the kernel
    (``backward``: a learned backward kernel, else the reference's)."""
    forward = mdp.score(kernel, mdp.rollout(kernel, n, generator), backward)
    exact = log_w_bwd = None
    if mdp.target.has_sampler:
        exact = mdp.target.sample(n, cpu_generator).to(mdp.device, mdp.dtype)
        paths = mdp.rollout_backward(exact, generator, backward=backward, score_clip=kernel.score_clip)
        log_w_bwd = mdp.score(kernel, paths, backward).log_weight
    return Evaluation(forward, exact, log_w_bwd)


def sample_metrics(x: torch.Tensor, target, generator: torch.Generator) -> tuple[dict, torch.Tensor | None]:
    """Sample metrics of bare samples ``x`` (no trajectory weights: the log-weight keys are left out):
    W2 against as many exact samples, and the target-specific keys of ``metrics.summarize``; and the
    exact samples (None without a sampler)."""
    exact = target.sample(x.shape[0], generator).to(x.device) if target.has_sampler else None
    flat = metrics.summarize(torch.zeros(x.shape[0], device=x.device), None, x, exact, None, target)
    return {k: v for k, v in flat.items() if k == "w2" or k not in metrics.METRIC_KEYS}, exact


def repeat_summary(runs: list[dict]) -> dict:
    """``{key: {"mean", "std", "values"}}`` of the numeric metrics of K >= 2 evaluations."""
    out = {}
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            t = torch.tensor(values, dtype=torch.float64)
            out[key] = {"mean": float(t.mean()), "std": float(t.std()), "values": values}
    return out
