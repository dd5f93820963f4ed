"""Runs of the MCMC baselines (presets ``smc`` and ``mala``): configs, runners, metrics.

``agents.runs.RUNNERS`` maps ``SMCConfig`` and ``MALAChainConfig`` to the runners here, so
``scripts/train_agent.py --preset smc`` (or ``agents.runs.run``) works like any other method. The
budget (``--iterations``) is the number of temperatures K for SMC and the number of MALA steps per
chain for ``mala``. A run writes ``config.json``, ``metrics.json`` (the keys of
``agents.runner.FINAL_KEYS`` plus the target's sample metrics and a few diagnostics) and, with
``figures``, ``figures/samples_final.png``. Both run in one go: there is nothing to resume.

Metrics. SMC: ``log_z`` is the SMC estimate and ``log_z_rw`` the same number (there is no separate
reweighted estimate; the paper's Table 1 also reports one value for SMC); ``ess`` is ESS/N of the final
weights; samples for W2 and mode metrics are ``eval_samples`` particles resampled by the final weights.
MALA chains give samples only: the log Z keys, ``eubo`` and ``ess`` are null, and the samples are the
final states of the first ``eval_samples`` chains. ``ms_per_iteration`` is wall time per temperature
(SMC) or per MALA step (chains).

Repeated evaluation (``eval_repeats`` K): the sample metrics average K sample sets, each against its own
exact samples (``eval_std`` holds their spread): for SMC, K independent resamplings of the final weighted
particles (one SMC run: K independent runs would spend K times the budget, and the log Z estimate has no
spread within a run, so ``log_z`` is the run's one estimate; its spread is across seeds); for MALA, the
chains' last K kept states (``thin`` steps apart: correlated, so the spread is a lower bound).

Curves (``agents.runlog``): a run writes ``curve.jsonl`` and tensorboard events. MALA chains add a point
every ``eval_every`` steps (the chains' current states; before ``burn_in`` the step size still adapts);
SMC has one point, at the end: its intermediate particles target tempered densities, and an SMC run with
fewer temperatures is another run (the benchmark's energy budgets run one per budget).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from dataclasses import dataclass, field

import torch

from diffsampler import envs
from diffsampler.agents.baselines.mcmc import MCMC_METHODS, MALAChainConfig, MCMCMethod, SMCConfig
from diffsampler.agents.config import check_fields, check_seed
from diffsampler.agents.evaluation import combine_repeats, sample_metrics
from diffsampler.agents.runlog import RunLog, write_config
from diffsampler.agents.runner import RunDirectory, Runner, final_metrics, setup_runtime
from diffsampler.envs.targets import is_conditional
from diffsampler.envs.targets.base import EvaluationCounter


@dataclass(frozen=True)
class MCMCRunConfig:
    """Fields shared by the MCMC baselines' run configs.

    Attributes:
        env_id: a registered ``DiffSampler-*-v0`` id (its target is sampled; the diffusion is unused).
        env_kwargs: keyword arguments of the env's target (``dim``, ``t_scale``, ...).
        preset: name of the preset the config came from (informational).
        seed: seeds the sampler and the exact reference samples.
        device: torch device.
        threads: torch CPU threads (None: torch's default).
        eval_samples: samples used for W2 and mode metrics (the paper uses 2,000).
        eval_repeats: sample sets the final sample metrics average (see the module docstring).
        eval_every: methods with samples along the way (MALA chains) evaluate them every this many steps
            (None: only at the end).
        figures: save a scatter of the samples against exact samples.
    """

    env_id: str = "DiffSampler-GMM25-v0"
    env_kwargs: dict = field(default_factory=dict)
    preset: str = "custom"
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    eval_samples: int = 2000
    eval_repeats: int = 1
    eval_every: int | None = None
    figures: bool = True

    def __post_init__(self):
        check_fields(self)
        check_seed(self)
        if not isinstance(self.env_kwargs, dict):
            raise ValueError(f"env_kwargs must be a dict, got {self.env_kwargs!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be None or >= 1, got {self.threads!r}")
        for name in ("eval_samples", "eval_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be None or >= 1, got {self.eval_every!r}")


@functools.cache
def run_config_type(method: type) -> type:
    """The run config of an MCMC method: ``MCMCRunConfig`` with ``agent: method``."""
    name = method.__name__.removesuffix("Config") + "RunConfig"
    return dataclasses.make_dataclass(
        name, [("agent", method, field(default_factory=method))], bases=(MCMCRunConfig,), frozen=True
    )


SMCRunConfig, MALARunConfig = run_config_type(SMCConfig), run_config_type(MALAChainConfig)


class MCMCRunner(Runner):
    """The runner of one MCMC method (an ``MCMCMethod`` config class): its ``budget_field`` takes the budget."""

    def __init__(self, method: type[MCMCMethod]):
        self.config_type, self.budget_path = run_config_type(method), ("agent", method.budget_field)

    @staticmethod
    def _sampler(target, config, generator, monitor=None) -> tuple[dict, list[torch.Tensor]]:
        return config.agent.sample(target, generator, config.eval_samples, config.eval_repeats, monitor)

    def energy_run(self, config, energies: tuple[int, ...]) -> tuple[int, dict]:
        """One run per energy budget: its particles or chains are kept and the budget (temperatures, steps)
        is the most whose evaluations fit (``MCMCMethod.budget_for_energy``)."""
        (energy,) = energies
        return config.agent.budget_for_energy(energy), {}

    def run(self, config, run_dir: str | os.PathLike | None, progress: bool = False) -> dict:
        """Sample, evaluate, write ``config.json`` and ``metrics.json``; ``progress`` is unused (no long loop)."""
        setup_runtime(config.device, config.threads)
        run = RunDirectory(run_dir) if run_dir is not None else None
        if run is not None:
            run.lock()
            write_config(run, config)
        log = RunLog(run)
        try:
            return self._run(config, run, log)
        finally:
            log.close()
            if run is not None:
                run.close()

    def _run(self, config, run: RunDirectory | None, log: RunLog) -> dict:
        target = envs.make_mdp(config.env_id, device=config.device, **config.env_kwargs).target
        counter = EvaluationCounter(target)
        generator = torch.Generator(config.device).manual_seed(config.seed)
        budget = getattr(config.agent, self.budget_path[-1])
        start, paused = time.perf_counter(), [0.0]  # paused: evaluation time inside the sampler's loop

        def monitor(step: int, x: torch.Tensor) -> None:
            if config.eval_every is None or step % config.eval_every or step >= budget:
                return
            t0 = time.perf_counter()
            metrics, _ = sample_metrics(x[: config.eval_samples], target, torch.Generator().manual_seed(config.seed))
            log.curve(step, counter.count, metrics, t0 - start - paused[0])
            paused[0] += time.perf_counter() - t0

        if is_conditional(target):
            result, x = self._per_condition(target, config, generator)
            sampling_seconds = time.perf_counter() - start
            exact, target = None, target.bind(target.eval_conditions[-1:])  # figures: the last condition
        else:
            result, sets = self._sampler(target, config, generator, monitor)
            sampling_seconds = time.perf_counter() - start - paused[0]
            evaluations = [sample_metrics(x, target, _exact_generator(config.seed, r)) for r, x in enumerate(sets)]
            result |= combine_repeats([metrics for metrics, _ in evaluations])
            x, exact = sets[0], evaluations[0][1]
        log.curve(budget, counter.count, result, sampling_seconds)
        result = final_metrics(
            result,
            ms_per_iteration=1000 * sampling_seconds / budget,
            iterations=budget,
            wall_seconds=time.perf_counter() - start,
            energy_evaluations=counter.count,
            sampling_seconds=sampling_seconds,
        )
        if run is not None:
            if config.figures:
                from diffsampler.agents.plotting import plot_samples

                sets = ({"exact": exact[:1000]} if exact is not None else {}) | {config.preset: x[:1000]}
                title = f"{config.preset} on {config.env_id}"
                plot_samples(target, sets, functools.partial(log.figure, name="samples_final.png", step=budget), title)
            run.save_tensor("samples.pt", x[: config.eval_samples].cpu().clone())  # for figures across runs
            run.write_json("metrics.json", result)
        return result

    def _per_condition(self, target, config, generator) -> tuple[dict, torch.Tensor]:
        """A conditional target (the VAE): one run per evaluation condition, on the target bound to it.

        ``log_z`` / ``log_z_rw`` are averages over conditions (the paper's Table 2 protocol);
        ``log_z_rw_across_conditions`` is the log-mean-exp of the per-condition estimates across
        conditions, the statistic the paper's code reports as log Z^RW. Other numeric diagnostics are
        averaged; a Python loop over conditions (each run is batched over its particles).
        """
        runs, x = [], None
        for c in target.eval_conditions:
            result, sets = self._sampler(target.bind(c.unsqueeze(0)), config, generator)
            runs.append(result)
            x = sets[0]
        out = {}
        for key in runs[0]:
            values = [r[key] for r in runs]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            out[key] = sum(values) / len(values) if numeric else None
        if out.get("log_z") is not None:
            log_z = torch.tensor([r["log_z"] for r in runs], dtype=torch.float64)
            out["log_z_rw_across_conditions"] = float(torch.logsumexp(log_z, 0) - math.log(len(runs)))
        out["conditions"] = len(runs)
        return out, x


def _exact_generator(seed: int, repeat: int) -> torch.Generator:
    """The generator of the exact reference samples of evaluation ``repeat`` (repeat 0: seed + 1, as ever)."""
    return torch.Generator().manual_seed(seed + 1 + 7919 * repeat)


RUNNERS = {method: MCMCRunner(method) for method in MCMC_METHODS}
