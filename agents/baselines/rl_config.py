"""Configuration of the RL baselines (no RL library is imported here, so presets can name them freely).

The soft-RL settings that make a maximum-entropy agent maximise the sampler's ELBO are fixed, not
options: discount 1, entropy coefficient 1 (SAC's ``ent_coef`` / Tianshou's ``alpha``, PPO's entropy
bonus), no reward or advantage normalisation, and the env in ``reward_mode="soft_rl"``. Any other
choice tilts the target away from R / Z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from diffsampler.agents.budget import check_marks
from diffsampler.agents.config import check_fields, check_seed

# Names of the algorithms (keys of ``agents.baselines.rl.ALGORITHMS``).
ALGORITHM_NAMES = ("sb3-sac", "sb3-ppo", "ts-sac")
VEC_ENVS = ("batched", "dummy")


@dataclass(frozen=True)
class RLConfig:
    """One RL baseline and its hyperparameters.

    Attributes:
        algorithm: "sb3-sac" (Stable-Baselines3 SAC), "sb3-ppo" (Stable-Baselines3 PPO) or "ts-sac"
            (Tianshou SAC).
        vec_env: "batched": all episodes in one torch batch (``agents.baselines.rl_envs``); "dummy": the
            library's own ``DummyVecEnv`` / ``DummyVectorEnv`` over ``gymnasium.make`` envs (slow).
        n_envs: parallel episodes.
        hidden, layers: width and depth of every MLP (actor, critics, value net).
        learning_rate: Adam learning rate of all networks.
        batch_size: transitions per gradient step (SAC) or per PPO minibatch.
        gradient_steps: SAC gradient steps after every ``train_every`` vector steps (``train_every * n_envs``
            transitions).
        train_every: vector steps between SAC updates.
        buffer_size: SAC replay capacity in transitions.
        learning_starts: SAC transitions collected with uniformly random actions before learning.
        tau: SAC target-network averaging rate.
        n_epochs: PPO passes over each rollout (one episode per env, ``n_envs * T`` transitions).
        clip_range: PPO ratio clipping.
        action_bound_std: the action Box half-width in reference steps ``sigma * sqrt(dt)``. Squashed
            (SAC) policies map [-1, 1] onto it; SB3 clips PPO's Gaussian actions to it, so for PPO it
            must be wide enough never to bind (the PPO preset uses 50 reference steps).
        init_at_reference: start the policy at the reference process, like our samplers: zero mean
            (last mean layer zeroed) and noise of the reference's step std ``sigma * sqrt(dt)``, instead
            of the library's initialisation (a random mean drift, which accumulates over T steps, and
            std 1 before squashing / in env units).
        reward_shaping: shape rewards with the reference marginal as potential
            (``agents.baselines.rl_shaping``): every episode's return is unchanged, but TD learning no
            longer drifts away from the reference before the terminal reward has propagated.
        n_step: SAC's critic targets over ``n_step`` steps of the replayed episode (both libraries), *soft*
            n-step returns (``agents.baselines.rl_nstep``): the rewards of the n steps, the entropy bonuses
            ``-log pi(a_j | s_j)`` of the current policy at the n - 1 intermediate replayed actions, then the
            bootstrap. The libraries' own n-step returns sum rewards only, which drops those bonuses and
            changes the objective; the soft ones keep its optimum (path consistency in a deterministic MDP).
            1: the libraries' one-step target.
        time_features: append ``sin(f t), cos(f t)`` of ``time_features`` frequencies log-spaced over
            [0.1, 100] (those of our samplers' time embedding) to every observation, in training and in
            evaluation alike (``agents.baselines.rl_observation``); 0: observations ``[x, t]`` only.
        critic_prior: SAC's critics as the reference's step log-density plus the library's MLP, whose last
            layer starts at zero (``agents.baselines.rl_critic``): the initial actor (``init_at_reference``) is
            then soft-greedy for the initial critic. A parametrisation of the critic; the objective is the same.
        gae_lambda: PPO's GAE lambda. It weights the value function's bootstraps in the advantage estimate
            (1: Monte Carlo returns minus the value baseline); the objective, the returns' discount (1) and
            the optimum are those of every lambda, only the estimator's bias and variance change.
    """

    algorithm: str = "sb3-sac"
    vec_env: str = "batched"
    n_envs: int = 300
    hidden: int = 128
    layers: int = 2
    learning_rate: float = 1e-3
    batch_size: int = 256
    gradient_steps: int = 1
    train_every: int = 1
    buffer_size: int = 1_000_000
    learning_starts: int = 0
    tau: float = 0.02
    n_epochs: int = 1
    clip_range: float = 0.2
    action_bound_std: float = 10.0
    init_at_reference: bool = True
    reward_shaping: bool = True
    n_step: int = 1
    time_features: int = 0
    gae_lambda: float = 1.0
    critic_prior: bool = False

    def __post_init__(self):
        check_fields(self)
        if self.algorithm not in ALGORITHM_NAMES:
            raise ValueError(f"unknown RL algorithm {self.algorithm!r}; expected one of {ALGORITHM_NAMES}")
        if self.vec_env not in VEC_ENVS:
            raise ValueError(f"vec_env must be one of {VEC_ENVS}, got {self.vec_env!r}")
        names = ("n_envs", "hidden", "layers", "batch_size", "gradient_steps", "train_every", "buffer_size", "n_step")
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.learning_starts < 0 or self.n_epochs < 1:
            raise ValueError(
                f"need learning_starts >= 0 and n_epochs >= 1, got {self.learning_starts}, {self.n_epochs}"
            )
        for name in ("learning_rate", "tau", "clip_range", "action_bound_std"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value > 0)
            ):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.tau > 1:
            raise ValueError(f"tau must be in (0, 1], got {self.tau!r}")
        if isinstance(self.time_features, bool) or not isinstance(self.time_features, int) or self.time_features < 0:
            raise ValueError(f"time_features must be an integer >= 0, got {self.time_features!r}")
        if self.time_features == 1:
            raise ValueError("time_features must be 0 or at least 2 (frequencies log-spaced over [0.1, 100])")
        if isinstance(self.gae_lambda, bool) or not (
            isinstance(self.gae_lambda, (int, float)) and 0 < self.gae_lambda <= 1
        ):
            raise ValueError(f"gae_lambda must be in (0, 1], got {self.gae_lambda!r}")
        if self.critic_prior and self.algorithm == "sb3-ppo":
            raise ValueError("critic_prior applies to SAC's Q critics; PPO's value function has no action input")
        if self.n_step > 1 and self.algorithm == "sb3-ppo":
            raise ValueError("n_step applies to SAC's critic targets; PPO's returns are set by gae_lambda")


@dataclass(frozen=True)
class RLRunConfig:
    """One training run of an RL baseline on a DiffSampler env.

    Attributes:
        env_id, env_kwargs: the env (``reward_mode`` is "soft_rl"; the action bound comes from the agent).
        preset: name of the preset the agent config came from (informational).
        agent: the baseline.
        env_steps: training budget in env transitions, rounded up to whole batches of ``n_envs`` episodes,
            so that energy evaluations = env_steps / T.
        seed: seeds the library, the networks and evaluation.
        device: torch device.
        eval_samples: trajectories of the final evaluation (the paper uses 2,000).
        eval_repeats: the final evaluation (and those at ``eval_energy`` marks) averages this many
            independent batches of ``eval_samples`` trajectories; metrics.json then holds ``eval_std``.
        eval_energy: energy budgets (episodes: one terminal reward each) at which the policy is also
            evaluated: before the collection that would finish episodes beyond each.
        eval_every: also evaluate every this many env steps (None: only at the marks and the end).
        threads: torch CPU threads (None: torch's default).
    """

    env_id: str = "DiffSampler-GMM25-v0"
    env_kwargs: dict = field(default_factory=dict)
    preset: str = "custom"
    agent: RLConfig = field(default_factory=RLConfig)
    env_steps: int = 3_000_000
    seed: int = 0
    device: str = "cpu"
    eval_samples: int = 2000
    eval_repeats: int = 1
    eval_energy: tuple[int, ...] = ()
    eval_every: int | None = None
    threads: int | None = None

    def __post_init__(self):
        check_fields(self)
        check_seed(self)
        if not isinstance(self.env_kwargs, dict):
            raise ValueError(f"env_kwargs must be a dict, got {self.env_kwargs!r}")
        mode = self.env_kwargs.get("reward_mode", "soft_rl")
        if mode != "soft_rl":
            raise ValueError(
                f"RL baselines need reward_mode='soft_rl' (per-step log p_B rewards), got {mode!r}: with any "
                "other reward a max-entropy agent does not target R / Z"
            )
        if "action_bound" in self.env_kwargs:
            raise ValueError(
                "set the action bound through the agent's action_bound_std, not env_kwargs['action_bound']"
            )
        for name in ("env_steps", "eval_samples", "eval_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be None or >= 1, got {self.eval_every!r}")
        object.__setattr__(self, "eval_energy", check_marks(self.eval_energy))
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be None or >= 1, got {self.threads!r}")
