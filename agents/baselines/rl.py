"""RL baselines (Stable-Baselines3 SAC and PPO, Tianshou SAC) as runs of ``agents.runs``.

``RLRunner`` trains a library agent on a DiffSampler env in ``soft_rl`` mode, counts the target's
energy evaluations during training (one per finished episode: its terminal log-reward), and scores the
trained policy with our metrics (``agents.baselines.rl_eval.evaluate_policy``), during training too
(``EvalSchedule``, through the library's callback) into ``curve.jsonl`` and tensorboard
(``agents.runlog``); the adapters' ``learn(model, env_steps, progress, hook)`` call the hook. The RL libraries are
imported only when a run starts, so presets and the runner registry do not need them installed.

    from diffsampler.agents.runs import RunSpec, run
    run(RunSpec("DiffSampler-GMM25-v0", "sb3-sac", budget=3_000_000), "runs/gmm25-sb3-sac")
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import time

from diffsampler import envs
from diffsampler.agents.baselines.rl_config import RLConfig, RLRunConfig
from diffsampler.agents.baselines.rl_eval import policy_evaluation
from diffsampler.agents.baselines.rl_observation import FeatureHead, time_features
from diffsampler.agents.budget import EnergyMarks
from diffsampler.agents.evaluation import combine_repeats
from diffsampler.agents.runlog import RunLog, write_config
from diffsampler.agents.runner import RunDirectory, Runner, final_metrics, setup_runtime
from diffsampler.envs.gym_env import default_action_bound
from diffsampler.envs.registry import is_conditional_env
from diffsampler.envs.targets.base import EvaluationCounter

# algorithm name -> "module:class" with build / learn / head / save (and the module's make_env).
ALGORITHMS = {
    "sb3-sac": "diffsampler.agents.baselines.rl_sb3:SB3SAC",
    "sb3-ppo": "diffsampler.agents.baselines.rl_sb3:SB3PPO",
    "ts-sac": "diffsampler.agents.baselines.rl_tianshou:TianshouSAC",
}


def algorithm(name: str):
    """``(module, class)`` of a registered algorithm (imports its RL library)."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown RL algorithm {name!r}; expected one of {sorted(ALGORITHMS)}")
    module_name, cls = ALGORITHMS[name].split(":")
    module = importlib.import_module(module_name)
    return module, getattr(module, cls)


def env_kwargs_for(config: RLRunConfig, mdp) -> dict:
    """The env keyword arguments of a run: the user's, soft-RL rewards and the agent's action bound."""
    bound = default_action_bound(mdp, config.agent.action_bound_std)
    return {**config.env_kwargs, "reward_mode": "soft_rl", "action_bound": bound}


def policy_head(algo, model, cfg: RLConfig, mdp):
    """The trained policy as a head on the env's observations ``[x, t, (c)]`` (the time features it was
    trained with applied as in training)."""
    features = time_features(mdp, cfg.time_features)
    head = algo.head(model)
    return head if features is None else FeatureHead(head, features)


class EvalSchedule:
    """When an RL run evaluates while it trains, called by the library adapter's hook at every collection
    boundary (``hook(env_steps, next_steps)``: the env steps done, and done after the next collection).

    The episodes of all ``n_envs`` envs run in step (T steps each), so the energy evaluations after ``s``
    env steps are ``(s // (n_envs T)) n_envs``: a mark is evaluated on the policy before the first
    collection that would finish episodes beyond it (the last policy within it), and every ``eval_every``
    env steps. Time spent evaluating is kept out of the training time (``seconds``).
    """

    def __init__(self, config: RLRunConfig, mdp, head, log: RunLog, spent):
        self.config, self.mdp, self.head, self.log, self.spent = config, mdp, head, log, spent
        self.marks = EnergyMarks(config.eval_energy)
        self.batch = config.agent.n_envs * mdp.num_steps  # env steps per batch of whole episodes
        self.next_periodic = config.eval_every or math.inf
        self.start, self.seconds = time.perf_counter(), 0.0

    def energy_at(self, env_steps: int) -> int:
        return env_steps // self.batch * self.config.agent.n_envs

    def __call__(self, env_steps: int, next_steps: int) -> None:
        marks = self.marks.crossed(self.energy_at(env_steps), self.energy_at(next_steps))
        periodic = env_steps >= self.next_periodic
        if not (marks or periodic):
            return
        while self.next_periodic <= env_steps:
            self.next_periodic += self.config.eval_every
        t0 = time.perf_counter()
        metrics, _ = evaluate_repeats(self.mdp, self.head(), self.config, self.config.eval_repeats if marks else 1)
        self.log.curve(env_steps, self.spent(), metrics, t0 - self.start - self.seconds, marks)
        self.seconds += time.perf_counter() - t0


def evaluate_repeats(mdp, head, config: RLRunConfig, repeats: int) -> tuple[dict, tuple]:
    """``combine_repeats`` of ``repeats`` evaluations (seeds ``seed + 1 + 7919 r``) and the first one's
    (samples, exact samples)."""
    runs = [policy_evaluation(mdp, head, config.eval_samples, seed=config.seed + 1 + 7919 * r) for r in range(repeats)]
    return combine_repeats([r[0] for r in runs]), runs[0][1:]


def train(config: RLRunConfig, progress: bool = False, log: RunLog | None = None):
    """Train the baseline of ``config`` (evaluating on the way into ``log``); returns (model, algorithm
    class, mdp, stats, schedule)."""
    setup_runtime(config.device, config.threads)
    cfg = config.agent
    mdp = envs.make_mdp(config.env_id, **{**config.env_kwargs, "reward_mode": "soft_rl"})
    module, algo = algorithm(cfg.algorithm)
    venv, targets = module.make_env(cfg, config.env_id, env_kwargs_for(config, mdp))
    counters = [EvaluationCounter(t) for t in targets]
    batch = cfg.n_envs * mdp.num_steps  # one batch of whole episodes
    env_steps = math.ceil(config.env_steps / batch) * batch
    model = algo.build(cfg, venv, mdp, config.seed, config.device)
    schedule = EvalSchedule(
        config, mdp, lambda: policy_head(algo, model, cfg, mdp), log or RunLog(), lambda: sum(c.count for c in counters)
    )
    start = time.perf_counter()
    stats = algo.learn(model, env_steps, progress, schedule)
    stats["train_seconds"] = time.perf_counter() - start - schedule.seconds
    stats["energy_evaluations"] = sum(c.count for c in counters)
    return model, algo, mdp, stats, schedule


class RLRunner(Runner):
    """Runner of the RL baselines; the budget is in env steps (transitions). A run goes in one go: the
    library's model is saved, but not its replay buffer and generators, so there is nothing to resume."""

    config_type = RLRunConfig
    budget_path = ("env_steps",)
    curve_budgets = True  # constant learning rates, no schedule over the budget

    def build(self, spec, preset) -> RLRunConfig:
        """As every runner's, but an RL baseline on a conditional target is refused here, before training:
        the library agents see one observation space and our evaluation has no per-condition path for them."""
        if is_conditional_env(spec.env_id):
            raise ValueError(
                f"{spec.preset!r} cannot run on {spec.env_id}: its target is conditional (a condition per "
                "episode), which the RL baselines do not support; use a GFlowNet preset (e.g. vargrad-expl-lp)"
            )
        return super().build(spec, preset)

    def energy_run(self, config: RLRunConfig, energies: tuple[int, ...]) -> tuple[int, dict]:
        """One run to the largest budget (the soft-RL agents have no schedule over their budget), marking the
        others: whole batches of ``n_envs`` episodes of T steps, as many as fit."""
        n_envs = config.agent.n_envs
        batches = max(energies) // n_envs
        if batches < 1:
            raise ValueError(f"{max(energies)} energy evaluations are below one batch of {n_envs} episodes")
        num_steps = envs.make_mdp(config.env_id, **config.env_kwargs).num_steps
        return batches * n_envs * num_steps, {"eval_energy": tuple(energies)}

    def run(self, config: RLRunConfig, run_dir: str | os.PathLike | None, progress: bool) -> dict:
        start = time.perf_counter()
        run = RunDirectory(run_dir) if run_dir is not None else None
        if run is not None:
            run.lock()
            write_config(run, config)
        log = RunLog(run)
        try:
            model, algo, mdp, stats, schedule = train(config, progress, log)
            if run is not None:
                algo.save(model, run / "model")
            evaluation, (x, exact) = evaluate_repeats(
                mdp, policy_head(algo, model, config.agent, mdp), config, config.eval_repeats
            )
            spent = stats["energy_evaluations"]
            marks = schedule.marks.crossed(spent, spent + config.agent.n_envs)  # the next batch would cross them
            log.curve(stats["env_steps"], spent, evaluation, stats["train_seconds"], marks)
            if run is not None:
                _figure(mdp, x, exact, config, log, stats["env_steps"])
                run.save_tensor("samples.pt", x[: config.eval_samples].cpu().clone())
            result = final_metrics(
                evaluation,
                ms_per_iteration=1000 * stats["train_seconds"] / stats["env_steps"],
                iterations=stats["env_steps"],
                wall_seconds=time.perf_counter() - start,
                energy_evaluations=spent,
                env_steps=stats["env_steps"],
                train_seconds=stats["train_seconds"],
                gradient_steps=stats["gradient_steps"],
            )
            if run is not None:
                run.write_json("metrics.json", result)
            return result
        finally:
            log.close()
            if run is not None:
                run.close()


def _figure(mdp, x, exact, config: RLRunConfig, log: RunLog, step: int) -> None:
    from diffsampler.agents.plotting import plot_samples

    sets = ({"exact": exact[:1000]} if exact is not None else {}) | {config.preset: x[:1000]}
    sink = functools.partial(log.figure, name="samples_final.png", step=step)
    plot_samples(mdp.target, sets, sink, f"{config.preset} on {config.env_id}")


RUNNERS = {RLConfig: RLRunner()}
