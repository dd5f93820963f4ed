"""RL baselines (Stable-Baselines3 SAC and PPO, Tianshou SAC) as runs of ``agents.runs``.

``RLRunner`` trains a library agent on a DiffSampler env in ``soft_rl`` mode, counts the target's
energy evaluations during training (one per finished episode: its terminal log-reward), and scores the
trained policy with our metrics (``agents.baselines.rl_eval.evaluate_policy``). The RL libraries are
imported only when a run starts, so presets and the runner registry do not need them installed.

    from diffsampler.agents.runs import RunSpec, run
    run(RunSpec("DiffSampler-GMM25-v0", "sb3-sac", budget=3_000_000), "runs/gmm25-sb3-sac")
"""

from __future__ import annotations

import importlib
import math
import os
import time

from diffsampler import envs
from diffsampler.agents.baselines.rl_config import RLConfig, RLRunConfig
from diffsampler.agents.baselines.rl_eval import evaluate_policy
from diffsampler.agents.config import to_dict
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


def train(config: RLRunConfig, progress: bool = False):
    """Train the baseline of ``config``; returns (model, algorithm class, mdp, stats)."""
    setup_runtime(config.device, config.threads)
    cfg = config.agent
    mdp = envs.make_mdp(config.env_id, **{**config.env_kwargs, "reward_mode": "soft_rl"})
    module, algo = algorithm(cfg.algorithm)
    venv, targets = module.make_env(cfg, config.env_id, env_kwargs_for(config, mdp))
    counters = [EvaluationCounter(t) for t in targets]
    batch = cfg.n_envs * mdp.num_steps  # one batch of whole episodes
    env_steps = math.ceil(config.env_steps / batch) * batch
    model = algo.build(cfg, venv, mdp, config.seed, config.device)
    start = time.perf_counter()
    stats = algo.learn(model, env_steps, progress)
    stats["train_seconds"] = time.perf_counter() - start
    stats["energy_evaluations"] = sum(c.count for c in counters)
    return model, algo, mdp, stats


class RLRunner(Runner):
    """Runner of the RL baselines; the budget is in env steps (transitions). A run goes in one go: the
    library's model is saved, but not its replay buffer and generators, so there is nothing to resume."""

    config_type = RLRunConfig
    budget_path = ("env_steps",)

    def build(self, spec, preset) -> RLRunConfig:
        """As every runner's, but an RL baseline on a conditional target is refused here, before training:
        the library agents see one observation space and our evaluation has no per-condition path for them."""
        if is_conditional_env(spec.env_id):
            raise ValueError(
                f"{spec.preset!r} cannot run on {spec.env_id}: its target is conditional (a condition per "
                "episode), which the RL baselines do not support; use a GFlowNet preset (e.g. vargrad-expl-lp)"
            )
        return super().build(spec, preset)

    def run(self, config: RLRunConfig, run_dir: str | os.PathLike | None, progress: bool) -> dict:
        start = time.perf_counter()
        run = RunDirectory(run_dir) if run_dir is not None else None
        if run is not None:
            run.lock()
            run.write_json("config.json", to_dict(config))
        try:
            model, algo, mdp, stats = train(config, progress)
            if run is not None:
                algo.save(model, run / "model")
            evaluation = evaluate_policy(mdp, algo.head(model), config.eval_samples, seed=config.seed + 1)
            result = final_metrics(
                evaluation,
                ms_per_iteration=1000 * stats["train_seconds"] / stats["env_steps"],
                iterations=stats["env_steps"],
                wall_seconds=time.perf_counter() - start,
                energy_evaluations=stats["energy_evaluations"],
                env_steps=stats["env_steps"],
                train_seconds=stats["train_seconds"],
                gradient_steps=stats["gradient_steps"],
            )
            if run is not None:
                run.write_json("metrics.json", result)
            return result
        finally:
            if run is not None:
                run.close()


RUNNERS = {RLConfig: RLRunner()}
