"""Tianshou 2 SAC as a diffusion sampler (gamma 1, fixed alpha 1, soft n-step targets, no reward normalisation).

The actor is Tianshou's ``ContinuousActorProbabilistic`` (unbounded mean, state-conditioned sigma), the
policy its ``SACPolicy`` (tanh squashing, then ``action_scaling`` onto the env's Box). Training runs
through Tianshou's own ``Collector`` and ``OffPolicyTrainer``: ``train_every * n_envs`` transitions per
collection step, ``gradient_steps`` updates after each. The algorithm is ``rl_nstep.SoftNStepSAC``: Tianshou's
SAC with the entropy bonuses of the intermediate steps in its n-step targets (``RLConfig.n_step``; 1: the
library's one-step target).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tianshou.algorithm.modelfree.sac import SACPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Collector, VectorReplayBuffer
from tianshou.env import DummyVectorEnv
from tianshou.trainer import OffPolicyTrainerParams
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousActorProbabilistic, ContinuousCritic

from diffsampler.agents.baselines.rl_config import RLConfig
from diffsampler.agents.baselines.rl_critic import last_linear, reference_prior, zero_last_linear
from diffsampler.agents.baselines.rl_envs import make_plain_env, make_tianshou_vec_env
from diffsampler.agents.baselines.rl_eval import TianshouSquashedHead
from diffsampler.agents.baselines.rl_nstep import SoftNStepSAC
from diffsampler.envs.sampler_mdp import DiffusionMDP


class TianshouModel:
    """The algorithm with the vector env it trains on (Tianshou keeps them apart)."""

    def __init__(self, algorithm: SoftNStepSAC, venv, cfg: RLConfig):
        self.algorithm, self.venv, self.cfg = algorithm, venv, cfg


def make_env(cfg: RLConfig, env_id: str, env_kwargs: dict):
    if cfg.vec_env == "batched":
        venv = make_tianshou_vec_env(env_id, cfg.n_envs, cfg.reward_shaping, cfg.time_features, **env_kwargs)
        return venv, [venv.mdp.target]
    plain = [lambda: make_plain_env(env_id, cfg.reward_shaping, cfg.time_features, **env_kwargs)] * cfg.n_envs
    venv = DummyVectorEnv(plain)
    return venv, [w.env.unwrapped.mdp.target for w in venv.workers]


def _space(venv, name: str):
    """One env's space; a ``DummyVectorEnv`` reports its workers' unwrapped envs' spaces, so read the
    (time-featured) wrapper's instead."""
    if isinstance(venv, DummyVectorEnv):
        return getattr(venv.workers[0].env, name)
    return getattr(venv, name)[0]


class ReferenceCritic(ContinuousCritic):
    """Tianshou's critic plus the reference prior (``agents.baselines.rl_critic``), its last layer at zero."""

    def __init__(self, *, bound_std: float, **kwargs):
        super().__init__(**kwargs)
        self.bound_std = float(bound_std)
        zero_last_linear(self.last)

    def forward(self, obs, act=None, info=None) -> torch.Tensor:
        q = super().forward(obs, act, info)
        act = torch.as_tensor(act, device=q.device, dtype=q.dtype).flatten(1)
        return q + reference_prior(act, self.bound_std)


class TianshouSAC:
    head_type = TianshouSquashedHead

    @staticmethod
    def build(cfg: RLConfig, venv, mdp: DiffusionMDP, seed: int, device: str) -> TianshouModel:
        torch.manual_seed(seed)
        np.random.seed(seed)
        obs_space, act_space = _space(venv, "observation_space"), _space(venv, "action_space")
        hidden = [cfg.hidden] * cfg.layers
        obs_dim, act_dim = obs_space.shape[0], act_space.shape[0]
        actor = ContinuousActorProbabilistic(
            preprocess_net=Net(state_shape=obs_dim, hidden_sizes=hidden),
            action_shape=act_dim,
            unbounded=True,
            conditioned_sigma=True,
        ).to(device)
        if cfg.init_at_reference:
            zero_last_linear(actor.mu)
            zero_last_linear(actor.sigma)
            with torch.no_grad():
                last_linear(actor.sigma).bias.fill_(-math.log(cfg.action_bound_std))

        def critic():
            net = Net(state_shape=obs_dim, action_shape=act_dim, hidden_sizes=hidden, concat=True)
            if cfg.critic_prior:
                return ReferenceCritic(preprocess_net=net, bound_std=cfg.action_bound_std).to(device)
            return ContinuousCritic(preprocess_net=net).to(device)

        policy = SACPolicy(actor=actor, action_space=act_space, observation_space=obs_space, action_scaling=True)
        optim = AdamOptimizerFactory(lr=cfg.learning_rate)
        algorithm = SoftNStepSAC(
            policy=policy,
            policy_optim=optim,
            critic=critic(),
            critic_optim=optim,
            critic2=critic(),
            critic2_optim=optim,
            tau=cfg.tau,
            gamma=1.0,
            alpha=1.0,
            n_step_return_horizon=cfg.n_step,
        )
        return TianshouModel(algorithm, venv, cfg)

    @staticmethod
    def learn(model: TianshouModel, env_steps: int, progress: bool, hook=None) -> dict:
        """Train (calling ``hook`` before every collection step: Tianshou's ``training_fn``); returns the env
        steps and gradient steps taken."""
        cfg = model.cfg
        collector = Collector(model.algorithm, model.venv, VectorReplayBuffer(cfg.buffer_size, cfg.n_envs))
        collector.reset()
        if cfg.learning_starts:
            collector.collect(n_step=cfg.learning_starts, random=True)
        per_collect = cfg.train_every * cfg.n_envs
        random_steps = collector.collect_step
        remaining = env_steps - random_steps

        def training_fn(epoch: int, step: int) -> None:  # step: env steps of the trainer (after the random ones)
            if hook is not None:
                hook(random_steps + step, random_steps + step + per_collect)

        if remaining > 0:
            model.algorithm.run_training(
                OffPolicyTrainerParams(
                    training_collector=collector,
                    max_epochs=1,
                    epoch_num_steps=remaining,
                    collection_step_num_env_steps=per_collect,
                    update_step_num_gradient_steps_per_sample=cfg.gradient_steps / per_collect,
                    batch_size=cfg.batch_size,
                    test_collector=None,
                    verbose=False,
                    show_progress=progress,
                    training_fn=training_fn,
                )
            )
        # the trainer resets the collector's counters (and envs) before training
        steps = random_steps + (collector.collect_step if remaining > 0 else 0)
        gradient_steps = math.ceil(max(remaining, 0) / per_collect) * cfg.gradient_steps
        return {"env_steps": steps, "gradient_steps": gradient_steps}

    @staticmethod
    def head(model: TianshouModel) -> TianshouSquashedHead:
        return TianshouSquashedHead(model.algorithm.policy)

    @staticmethod
    def save(model: TianshouModel, path) -> None:
        torch.save(model.algorithm.state_dict(), f"{path}.pt")
