"""Stable-Baselines3 SAC and PPO as diffusion samplers (soft-RL settings fixed: gamma 1, entropy coefficient 1).

SAC: ``ent_coef=1.0`` (a float, so it is not tuned), no reward normalisation; its tanh-squashed policy
acts in the bounded Box of ``RLConfig.action_bound_std`` reference steps; ``n_step`` > 1 replays soft n-step
returns (``agents.baselines.rl_nstep``). PPO: ``gamma = 1`` (``gae_lambda`` as configured: it changes the
advantage estimator, not the objective), entropy bonus 1 and no advantage normalisation (which would rescale
the returns against the bonus). SB3's PPO Gaussian has a state-independent std, so the entropy bonus is the
exact max-entropy gradient (the entropies of later states do not depend on where the policy leads). One PPO
rollout is one episode per env (``n_steps = T``).
"""

from __future__ import annotations

import math

import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.sac.policies import SACPolicy

from diffsampler.agents.baselines.rl_config import RLConfig
from diffsampler.agents.baselines.rl_critic import reference_prior, zero_last_linear
from diffsampler.agents.baselines.rl_envs import make_plain_env, make_sb3_vec_env
from diffsampler.agents.baselines.rl_eval import SB3GaussianHead, SB3SquashedHead
from diffsampler.agents.baselines.rl_nstep import SoftNStepReplayBuffer
from diffsampler.envs.sampler_mdp import DiffusionMDP


class _Progress(BaseCallback):
    """The progress bar, and the run's evaluation hook at the start of every collection (``hook(env_steps,
    env steps after this collection)``; the policy has then been trained on everything collected)."""

    def __init__(self, total: int, enabled: bool, hook=None, per_collect: int = 0):
        super().__init__()
        self.total, self.enabled, self.bar = total, enabled, None
        self.hook, self.per_collect = hook, per_collect

    def _on_rollout_start(self) -> None:
        if self.hook is not None:
            self.hook(self.num_timesteps, self.num_timesteps + self.per_collect)

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, disable=not self.enabled, unit="step", dynamic_ncols=True)

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


def make_env(cfg: RLConfig, env_id: str, env_kwargs: dict):
    """The SB3 vector env and the targets whose energy evaluations count as the training budget."""
    if cfg.vec_env == "batched":
        venv = make_sb3_vec_env(env_id, cfg.n_envs, cfg.reward_shaping, cfg.time_features, **env_kwargs)
        return venv, [venv.mdp.target]
    plain = [lambda: make_plain_env(env_id, cfg.reward_shaping, cfg.time_features, **env_kwargs)] * cfg.n_envs
    venv = DummyVecEnv(plain)
    return venv, [env.unwrapped.mdp.target for env in venv.envs]


def _net_arch(cfg: RLConfig) -> list[int]:
    return [cfg.hidden] * cfg.layers


class ReferenceCritic(ContinuousCritic):
    """SB3's twin critic plus the reference prior (``agents.baselines.rl_critic``); every Q network's last
    layer starts at zero."""

    def __init__(self, *args, bound_std: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.bound_std = float(bound_std)
        for q_net in self.q_networks:
            zero_last_linear(q_net)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        prior = reference_prior(actions, self.bound_std)
        return tuple(q + prior for q in super().forward(obs, actions))


class ReferenceSACPolicy(SACPolicy):
    """SB3's SAC ``MlpPolicy`` whose critics (online and target) are ``ReferenceCritic``."""

    def __init__(self, *args, bound_std: float, **kwargs):
        self.bound_std = float(bound_std)
        super().__init__(*args, **kwargs)

    def make_critic(self, features_extractor=None) -> ReferenceCritic:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return ReferenceCritic(**critic_kwargs, bound_std=self.bound_std).to(self.device)


class SB3SAC:
    head_type = SB3SquashedHead

    @staticmethod
    def build(cfg: RLConfig, venv, mdp: DiffusionMDP, seed: int, device: str) -> SAC:
        buffer = {}
        if cfg.n_step > 1:  # soft n-step returns (agents.baselines.rl_nstep), not SB3's reward-only ones
            buffer = {
                "replay_buffer_class": SoftNStepReplayBuffer,
                "replay_buffer_kwargs": {"n_steps": cfg.n_step, "ent_coef": 1.0},
            }
        policy_kwargs = {"net_arch": _net_arch(cfg)}
        if cfg.critic_prior:
            policy_kwargs["bound_std"] = cfg.action_bound_std
        model = SAC(
            ReferenceSACPolicy if cfg.critic_prior else "MlpPolicy",
            venv,
            learning_rate=cfg.learning_rate,
            buffer_size=cfg.buffer_size,
            learning_starts=cfg.learning_starts,
            batch_size=cfg.batch_size,
            tau=cfg.tau,
            gamma=1.0,
            train_freq=(cfg.train_every, "step"),
            gradient_steps=cfg.gradient_steps,
            ent_coef=1.0,
            policy_kwargs=policy_kwargs,
            seed=seed,
            device=device,
            verbose=0,
            **buffer,
        )
        if cfg.n_step > 1:
            model.replay_buffer.bind(model.actor)
        if cfg.init_at_reference:
            # zero mean, pre-squashing std 1 / action_bound_std in every state: increments ~ N(0, sigma^2 dt)
            # near the centre
            zero_last_linear(model.actor.mu)
            zero_last_linear(model.actor.log_std)
            with torch.no_grad():
                model.actor.log_std.bias.fill_(-math.log(cfg.action_bound_std))
        return model

    @staticmethod
    def learn(model: SAC, env_steps: int, progress: bool, hook=None) -> dict:
        """Train (calling ``hook`` at every collection); returns the env steps and gradient steps taken."""
        per_collect = model.train_freq.frequency * model.n_envs
        model.learn(total_timesteps=env_steps, callback=_Progress(env_steps, progress, hook, per_collect))
        return {"env_steps": model.num_timesteps, "gradient_steps": model._n_updates}

    @staticmethod
    def head(model: SAC) -> SB3SquashedHead:
        return SB3SquashedHead(model.policy)

    @staticmethod
    def save(model, path) -> None:
        model.save(str(path))


class SB3PPO:
    head_type = SB3GaussianHead

    @staticmethod
    def build(cfg: RLConfig, venv, mdp: DiffusionMDP, seed: int, device: str) -> PPO:
        rollout = cfg.n_envs * mdp.num_steps
        if rollout % cfg.batch_size:
            raise ValueError(f"PPO batch_size {cfg.batch_size} must divide the rollout n_envs * T = {rollout}")
        policy_kwargs = {"net_arch": _net_arch(cfg)}
        if cfg.init_at_reference:
            policy_kwargs["log_std_init"] = 0.5 * math.log(mdp.t_scale * mdp.dt)
        model = PPO(
            "MlpPolicy",
            venv,
            learning_rate=cfg.learning_rate,
            n_steps=mdp.num_steps,
            batch_size=cfg.batch_size,
            n_epochs=cfg.n_epochs,
            gamma=1.0,
            gae_lambda=cfg.gae_lambda,
            clip_range=cfg.clip_range,
            normalize_advantage=False,
            ent_coef=1.0,
            policy_kwargs=policy_kwargs,
            seed=seed,
            device=device,
            verbose=0,
        )
        if cfg.init_at_reference:
            zero_last_linear(model.policy.action_net)
        return model

    save = staticmethod(SB3SAC.save)

    @staticmethod
    def learn(model: PPO, env_steps: int, progress: bool, hook=None) -> dict:
        per_collect = model.n_steps * model.n_envs
        model.learn(total_timesteps=env_steps, callback=_Progress(env_steps, progress, hook, per_collect))
        minibatches = model.n_envs * model.n_steps // model.batch_size  # SB3 counts epochs in _n_updates
        return {"env_steps": model.num_timesteps, "gradient_steps": model._n_updates * minibatches}

    @staticmethod
    def head(model: PPO) -> SB3GaussianHead:
        return SB3GaussianHead(model.policy)
