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
import json
import math
import os
import time
from pathlib import Path

import torch
from diffsampler.agents import metrics
from diffsampler.agents.baselines.rl_config import RLConfig, RLRunConfig
from diffsampler.agents.baselines.rl_eval import evaluate_policy
from diffsampler.agents.config import config_from_spec, to_dict
from diffsampler.envs.gym_env import default_action_bound
from diffsampler.envs.targets.base import EvaluationCounter

from diffsampler import envs

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
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {config.device!r} requested but CUDA is not available")
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


class RLRunner:
    """Runner (``agents.runs.Runner``) of the RL baselines; the budget is in env steps (transitions)."""

    config_type = RLRunConfig

    def build(self, spec, preset) -> RLRunConfig:
        return config_from_spec(RLRunConfig, spec, preset, env_steps=spec.budget or preset.iterations)

    def run(self, config: RLRunConfig, run_dir: str | os.PathLike | None, progress: bool) -> dict:
        start = time.perf_counter()
        run_dir = Path(run_dir) if run_dir is not None else None
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.json").write_text(json.dumps(to_dict(config), indent=2))
        model, algo, mdp, stats = train(config, progress)
        if run_dir is not None:
            algo.save(model, run_dir / "model")
        evaluation = evaluate_policy(mdp, algo.head(model), config.eval_samples, seed=config.seed + 1)
        result = {k: evaluation.get(k) for k in metrics.METRIC_KEYS}
        result |= {k: v for k, v in evaluation.items() if k not in result}
        result |= {
            "ms_per_iteration": 1000 * stats["train_seconds"] / stats["env_steps"],
            "iterations": stats["env_steps"],
            "wall_seconds": time.perf_counter() - start,
            "energy_evaluations": stats["energy_evaluations"],
            "env_steps": stats["env_steps"],
            "train_seconds": stats["train_seconds"],
            "gradient_steps": stats["gradient_steps"],
        }
        if run_dir is not None:
            (run_dir / "metrics.json").write_text(json.dumps(result, indent=2))
        return result


RUNNERS = {RLConfig: RLRunner()}
