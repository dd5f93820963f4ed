"""SCLD runs (preset ``scld``): the run config, the trainer and the runner, on the runner base.

Training loop, logging, checkpoints (the kernel, optimiser, sub-trajectory buffer, MALA step sizes and generators),
resume and ``metrics.json`` are ``agents.training.Trainer``'s, with SCLD's agent (``agents.scld.SCLDAgent``: one
simulation and one gradient step per iteration) and SCLD's evaluation (``evaluate_scld``):

- ``log_z`` = ``log_z_rw``: the SMC estimate of ``eval_samples`` particles (resampling and MALA as in training; the
  paper's "SCLD" numbers), with its deltas; ``w2``, ``sinkhorn``, ``mmd`` and the target's mode metrics of the SMC
  samples (the final particles resampled by their weights);
- ``eubo``, ``ess``, ``forward_ess``, ``reverse_ess``: of the learned CMCD process run without resampling (whole
  trajectories forward, and backward from exact samples), whose ELBO, IW estimate and W2 are ``elbo_no_smc``,
  ``log_z_rw_no_smc`` and ``w2_no_smc``;
- ``smc_min_ess`` (ESS / N before resampling, the lowest over segment ends), ``resampling_events``,
  ``mala_acceptance``.

Energy evaluations (training only, like every runner): per iteration ``N (T + 2 S)`` for the simulation (the
rollout's scores, ``log R`` and the score at each segment end) and ``N S (1 + mala_steps)`` for MALA; re-scoring
buffer entries costs none (their scores are stored).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from diffsampler.agents.baselines.particles import resample
from diffsampler.agents.evaluation import evaluate_kernel, sample_metrics
from diffsampler.agents.scld import SCLDAgent, SCLDConfig
from diffsampler.agents.training import GFlowNetRunner, TrainConfig, Trainer
from diffsampler.envs import process


@dataclass(frozen=True)
class SCLDRunConfig(TrainConfig):
    """A training run of SCLD: ``TrainConfig``'s fields (``iterations``: simulations, one gradient step each), with
    ``agent`` an ``SCLDConfig``."""

    agent: SCLDConfig = field(default_factory=SCLDConfig)


@torch.no_grad()
def evaluate_scld(agent: SCLDAgent, config: SCLDRunConfig, iteration: int, n=None, repeat: int = 0, figures=None):
    """``(metrics, samples)`` of an SCLD agent at ``iteration`` (see the module docstring); generators seeded from
    (seed, iteration, repeat) as ``agents.evaluation.evaluate_agent``'s; ``figures``: an ``agents.runlog.RunLog``."""
    n = n or config.eval_samples
    target, mdp, kernel = agent.target, agent.mdp, agent.kernel
    if config.eval_steps is not None and config.eval_steps != mdp.num_steps:  # another T, uniform grid
        mdp = mdp.with_grid(process.uniform_grid(config.eval_steps))
    eval_seed = config.seed * 1_000_003 + iteration + repeat * 7_919_000_003
    gen = torch.Generator(config.device).manual_seed(eval_seed)
    plain = evaluate_kernel(mdp, kernel, n, gen, torch.Generator().manual_seed(eval_seed), kernel.backward)
    base = plain.summary(target)
    run = agent.simulate(n, gen, mdp)
    x = run.x[0, resample(run.log_w[0], n, agent.config.resampling, gen)]
    smc_samples, exact = sample_metrics(x, target, torch.Generator().manual_seed(eval_seed + 1))
    log_z = float(run.log_z[0])
    delta = None if target.log_Z is None else abs(target.log_Z - log_z)
    result = base | {"log_z": log_z, "log_z_rw": log_z, "delta_log_z": delta, "delta_log_z_rw": delta}
    result |= {"elbo_no_smc": base["log_z"], "log_z_rw_no_smc": base["log_z_rw"], "w2_no_smc": base["w2"]}
    result |= smc_samples
    result |= {
        "smc_min_ess": float(run.ess.min()),
        "resampling_events": int(run.resampled.sum()),
        "mala_acceptance": float(run.acceptance.mean()) if run.acceptance.numel() else None,
    }
    if figures is not None:
        from diffsampler.agents.plotting import plot_samples

        sets = {"exact": exact[:1000]} if exact is not None else {}
        sets |= {"SMC": x[:1000], "no SMC": plain.samples[:1000]}
        title = f"{config.preset} on {config.env_id}, it {iteration}"
        plot_samples(
            target, sets, functools.partial(figures.figure, name=f"samples_{iteration:06d}.png", step=iteration), title
        )
    return result, x


class SCLDTrainer(Trainer):
    """``Trainer`` with SCLD's run config, agent and evaluation; resumable like it."""

    config_type = SCLDRunConfig
    agent_type = SCLDAgent
    evaluator = staticmethod(evaluate_scld)


class SCLDRunner(GFlowNetRunner):
    """The runner of the ``scld`` preset."""

    config_type = SCLDRunConfig
    trainer = SCLDTrainer


RUNNERS = {SCLDConfig: SCLDRunner()}
