"""Evaluation shared by every runner: a sampler's trajectories and samples scored with ``agents.metrics``.

``evaluate_kernel`` scores any forward kernel of the trajectory engine (the GFlowNet policy, the RL
policy heads): ``n`` forward trajectories, and, where the target has an exact sampler, as many exact
samples and their backward trajectories (for the EUBO). ``sample_metrics`` scores bare samples (MCMC).
``evaluate_agent`` is a GFlowNet agent's evaluation during and after training (with a figure);
``combine_repeats`` turns K independent evaluations into one result (the mean of every metric, with
``eval_std`` and ``eval_values``) and ``repeat_summary`` into mean, std and values per metric.
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass

import torch

from diffsampler.agents import metrics
from diffsampler.envs import process
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


@torch.no_grad()
def evaluate_agent(agent, config, iteration: int, n: int | None = None, repeat: int = 0, figures=None):
    """``(metrics, samples)`` of a GFlowNet agent trained with ``config`` (a ``TrainConfig``), at
    ``iteration``: ``n`` (default ``eval_samples``) on-policy trajectories and as many exact samples, or
    per-condition metrics on a conditional target (``agents.conditional``; samples None). Generators are
    seeded from (seed, iteration, repeat). ``figures``: an ``agents.runlog.RunLog`` that saves the sample
    figure (``figures/samples_<iteration>.png``) and adds it to tensorboard."""
    from diffsampler.agents import conditional

    n = n or config.eval_samples
    target, mdp = agent.target, agent.mdp
    if config.eval_steps is not None and config.eval_steps != mdp.num_steps:  # another T, uniform grid
        mdp = mdp.with_grid(process.uniform_grid(config.eval_steps))
    eval_seed = config.seed * 1_000_003 + iteration + repeat * 7_919_000_003
    gen = torch.Generator(config.device).manual_seed(eval_seed)
    cpu_gen = torch.Generator().manual_seed(eval_seed)
    path = (
        None
        if figures is None
        else functools.partial(figures.figure, name=f"samples_{iteration:06d}.png", step=iteration)
    )
    title = f"{config.preset} on {config.env_id}, it {iteration}"
    if agent.conditions is not None:
        k = config.eval_per_condition or conditional.default_per_condition(n, len(target.eval_conditions))
        result, x = conditional.evaluate_conditional(agent, k, gen, mdp)
        if path is not None:
            from diffsampler.agents.plotting import plot_conditional_samples

            plot_conditional_samples(target, target.eval_conditions, x, path, title)
        return result, None
    ev = evaluate_kernel(mdp, agent.policy, n, gen, cpu_gen, agent.policy.backward)
    result = ev.summary(target)
    learned = agent.learned_log_z()
    result["log_z_learned"] = None if learned is None else float(learned)
    if path is not None:
        from diffsampler.agents.plotting import plot_samples

        sets = ({"exact": ev.exact[:1000]} if ev.exact is not None else {}) | {"model": ev.samples[:1000]}
        source = agent.source
        if getattr(source, "replay", None) is not None and len(source.replay) > 0:
            use_ls = source.ls_buffer is not None and len(source.ls_buffer) > 0
            sets["buffer"] = (source.ls_buffer if use_ls else source.replay).sample(1000, gen)[0]
        plot_samples(target, sets, path, title)
    return result, ev.samples


def sample_metrics(x: torch.Tensor, target, generator: torch.Generator) -> tuple[dict, torch.Tensor | None]:
    """Sample metrics of bare samples ``x`` (no trajectory weights: the log-weight keys are left out):
    W2, Sinkhorn and MMD against as many exact samples, and the target-specific keys of
    ``metrics.summarize``; and the exact samples (None without a sampler)."""
    exact = target.sample(x.shape[0], generator).to(x.device) if target.has_sampler else None
    flat = metrics.summarize(torch.zeros(x.shape[0], device=x.device), None, x, exact, None, target)
    keep = ("w2", "sinkhorn", "mmd")  # sample metrics; the weight metrics have no meaning here
    return {k: v for k, v in flat.items() if k in keep or k not in metrics.METRIC_KEYS}, exact


def repeat_summary(runs: list[dict]) -> dict:
    """``{key: {"mean", "std", "values"}}`` of the numeric metrics of K >= 2 evaluations."""
    out = {}
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            t = torch.tensor(values, dtype=torch.float64)
            out[key] = {"mean": float(t.mean()), "std": float(t.std()), "values": values}
    return out


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def combine_repeats(runs: list[dict]) -> dict:
    """One result of K >= 1 evaluations of the same sampler on independent batches.

    Every metric that is a number in each evaluation becomes its mean (so the flat keys keep their
    meaning, averaged); ``eval_repeats`` is K and, for K >= 2, ``eval_std`` holds each such metric's sample
    standard deviation and ``eval_values`` its K values. Other keys (None, or a number in only some
    evaluations) keep the first evaluation's value.
    """
    if not runs:
        raise ValueError("combine_repeats needs at least one evaluation")
    out = dict(runs[0])
    out["eval_repeats"] = len(runs)
    if len(runs) > 1:
        numeric = [k for k in runs[0] if all(_number(r.get(k)) for r in runs)]
        out |= {k: statistics.fmean(r[k] for r in runs) for k in numeric}
        out["eval_std"] = {k: statistics.stdev(float(r[k]) for r in runs) for k in numeric}
        out["eval_values"] = {k: [r[k] for r in runs] for k in numeric}
    return out
