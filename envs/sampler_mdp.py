"""The diffusion MDP, torch-native and batched.

``DiffusionMDP`` holds the problem (target, time grid, reference process, reward mode) and offers
pure batched functions; ``EpisodeBatch`` holds the state of ``n`` episodes (positions and
per-episode step counters) so that adapters can step them together and reset them one by one.

State ``s_k = (x_k, t_k)``; ``x_0 ~ p_0``, the reference's initial distribution (the point mass at 0
for the default Brownian bridge, ``N(0, sigma^2 I)`` for the VP reference; see ``envs.reference``);
an action is the next position ``x_{k+1}``; the episode terminates at ``k = T`` with reward
``log R(x_T)``. In ``"soft_rl"`` mode every step also pays ``log p_B(x_k | x_{k+1})``, the first one
minus ``log p_0(x_0)``, so that the undiscounted return minus the policy's log-probabilities is the
trajectory's log-weight ``log R + sum log p_B - log p_0(x_0) - sum log p_F``.

With a conditional target (``envs.targets.conditional``) every episode carries a condition c: the
observation is ``[x, t, c]`` and the terminal reward ``log R(x_T | c)``. Unconditional MDPs take the
same code paths with ``condition = None``.
"""

from __future__ import annotations

import copy
import numbers

import gymnasium
import torch

from diffsampler.envs import engine, process
from diffsampler.envs.reference import Reference, make_reference
from diffsampler.envs.registry import ENV_IDS
from diffsampler.envs.targets import Target, is_conditional, make_target

REWARD_MODES = ("terminal", "soft_rl")


class DiffusionMDP:
    """The MDP of a diffusion sampler of ``target`` with ``num_steps`` steps.

    Args:
        target: a Target or a registered target name.
        num_steps: T >= 1.
        t_scale: reference variance sigma^2 (default: the target's own).
        reward_mode: "terminal" (log R at the last step only) or "soft_rl" (plus log p_B every step).
        device, dtype: where and in which float type the batched state lives.
        reference: a key of ``envs.reference.REFERENCES``: "bridge" (default) or "vp".
        reference_kwargs: the reference's schedule parameters (e.g. ``{"beta_max": 20.0}`` for "vp").
    """

    def __init__(
        self,
        target: Target | str,
        num_steps: int = 100,
        t_scale: float | None = None,
        reward_mode: str = "terminal",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        reference: str = "bridge",
        reference_kwargs: dict | None = None,
    ):
        self.target = make_target(target) if isinstance(target, str) else target
        t_scale = self.target.t_scale if t_scale is None else t_scale
        process.check_process_args(num_steps, t_scale)
        self.t_scale = float(t_scale)
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"unknown reward_mode {reward_mode!r}; expected one of {REWARD_MODES}")
        self.num_steps = int(num_steps)
        self.reward_mode = reward_mode
        self.device = torch.device(device)
        self.dtype = dtype
        if reference_kwargs is not None and not isinstance(reference_kwargs, dict):
            raise ValueError(f"reference_kwargs must be a dict or None, got {reference_kwargs!r}")
        self.reference: Reference = make_reference(reference, self.num_steps, self.t_scale, **(reference_kwargs or {}))

    @property
    def dim(self) -> int:
        return self.target.dim

    @property
    def dt(self) -> float:
        return 1.0 / self.num_steps

    @property
    def conditional(self) -> bool:
        return is_conditional(self.target)

    @property
    def cond_dim(self) -> int:
        """Size of an episode's condition (0 for an unconditional target)."""
        return self.target.cond_dim if self.conditional else 0

    # The trajectory engine (``envs.engine``): rollouts of a kernel, backward rollouts, scoring of paths.
    rollout = engine.rollout
    rollout_backward = engine.rollout_backward
    score = engine.score

    def bind(self, condition: torch.Tensor | None = None):
        """The reward as an unconditional target: the target itself, or the conditional target given
        ``condition`` (rows of ``x`` and ``condition`` pair up; ``condition`` broadcasts over leading dims)."""
        return self.target if condition is None else self.target.bind(condition)

    def initial_positions(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` initial states ``x_0 ~ p_0`` (zeros for the bridge, no random numbers drawn)."""
        return self.reference.initial_sample(n, self.dim, generator, self.device, self.dtype)

    # Whether ``log_reward`` checks for NaN (one host sync); training turns it off while its guard
    # (``agents.guard``) screens the batch instead. The shape is always checked (no sync).
    check_rewards = True

    def log_reward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Terminal log-reward (given ``condition`` for a conditional target), with a clear error on a wrong
        shape or NaN."""
        log_r = self.target.log_reward(x) if condition is None else self.target.log_reward(x, condition)
        engine.check_log_reward_shape(log_r, x, self.target)
        if self.check_rewards:
            check_log_reward(log_r, x, self.target)
        return log_r

    def log_pb(self, x_prev: torch.Tensor, x_next: torch.Tensor, k_next) -> torch.Tensor:
        """``log p_B(x_prev | x_next)`` for transitions ending at step ``k_next`` (int or (B,) tensor)."""
        return self.reference.log_pb(x_prev, x_next, k_next)

    def log_pb_path(self, states: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` backward log-probabilities of whole paths ``(B, T + 1, d)`` (entry 0 folded)."""
        return self.reference.log_pb_path(states)

    def sample_backward(self, x_last: torch.Tensor, generator: torch.Generator | None = None):
        """Whole paths ``(B, T + 1, d)`` drawn backward through the reference from ``x_last``."""
        return self.reference.sample_backward(x_last, generator)

    def with_grid(self, times) -> DiffusionMDP:
        """The same MDP on another time grid ``0 = t_0 < ... < t_T = 1`` (``T = len(times) - 1``): a shallow
        copy whose reference lives on that grid (a random training grid; evaluation with another T)."""
        other = copy.copy(self)
        other.reference = self.reference.on_grid(times)
        other.num_steps = other.reference.num_steps
        return other

    def observe(self, x: torch.Tensor, k: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Observation ``[x, t]`` of shape ``(B, d + 1)``, or ``[x, t, c]`` ``(B, d + 1 + cond_dim)``."""
        if self.reference.times is None:
            t = k.to(x.dtype).unsqueeze(-1) * self.dt
        else:
            t = self.reference.grid_like(x)[k].unsqueeze(-1)
        return torch.cat([x, t] if condition is None else [x, t, condition.to(x.dtype)], dim=-1)

    def transition_reward(
        self, x_prev, x_next, k_next: torch.Tensor, active: torch.Tensor | None = None, condition=None
    ):
        """Rewards ``(B,)`` of transitions ``x_prev -> x_next`` ending at steps ``k_next`` ``(B,)``.

        Rows where the boolean ``active`` is false get reward 0 (they did not move). ``condition``
        ``(B, cond_dim)``: the episodes' conditions, for a conditional target.
        """
        if active is None:
            active = torch.ones_like(k_next, dtype=torch.bool)
        terminal = active & (k_next == self.num_steps)
        reward = torch.zeros(x_next.shape[0], device=x_next.device, dtype=x_next.dtype)
        if bool(terminal.any()):
            reward[terminal] = self.log_reward(x_next[terminal], None if condition is None else condition[terminal])
        if self.reward_mode == "soft_rl":
            log_pb = self.log_pb(x_prev, x_next, k_next.clamp(1, self.num_steps))
            reward = reward + torch.where(active, log_pb, torch.zeros_like(log_pb))
        return reward

    def new_batch(
        self, n: int, condition: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> EpisodeBatch:
        return EpisodeBatch(self, n, condition, generator)

    def __repr__(self) -> str:
        return (
            f"DiffusionMDP({self.target!r}, num_steps={self.num_steps}, t_scale={self.t_scale}, "
            f"reward_mode={self.reward_mode!r}, reference={self.reference!r})"
        )


def check_log_reward(log_r: torch.Tensor, x: torch.Tensor, target) -> None:
    """Raise a ValueError naming the offending point if a target returned NaN (one sync)."""
    nan = torch.isnan(log_r)
    if bool(nan.any()):
        i = int(nan.nonzero()[0, 0])
        raise ValueError(f"{target!r}.log_reward returned NaN at x = {x[i].tolist()}")


class EpisodeBatch:
    """The state of ``n`` episodes of one MDP: positions ``x`` (n, d) and step counters ``k`` (n,).

    For a conditional MDP also the episodes' conditions ``condition`` (n, cond_dim), given at
    construction and at every reset (a reset episode may get a new condition). ``generator`` (on the
    MDP's device, or None for torch's global one) draws the initial states of a random-start reference
    at every (full or masked) reset; adapters seed it.
    """

    def __init__(
        self,
        mdp: DiffusionMDP,
        n: int,
        condition: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"the number of episodes must be a positive integer, got {n!r}")
        self.mdp = mdp
        self.n = n = int(n)
        self.generator = generator
        self.x = mdp.initial_positions(n, generator)
        self.k = torch.zeros(n, dtype=torch.long, device=mdp.device)
        self.condition = None
        if mdp.conditional:
            self.condition = torch.empty(n, mdp.cond_dim, device=mdp.device, dtype=mdp.dtype)
            self._set_condition(None, condition)
        elif condition is not None:
            raise ValueError(f"{mdp.target!r} is unconditional; episodes take no condition")

    def _set_condition(self, mask: torch.Tensor | None, condition: torch.Tensor | None) -> None:
        rows = self.n if mask is None else int(mask.sum())
        if condition is None:
            raise ValueError(f"{self.mdp.target!r} is conditional: each (re)started episode needs a condition")
        condition = self.mdp.target.check_condition(torch.as_tensor(condition))
        if tuple(condition.shape) != (rows, self.mdp.cond_dim):
            raise ValueError(f"conditions must have shape ({rows}, {self.mdp.cond_dim}), got {tuple(condition.shape)}")
        bounds = self.mdp.target.condition_bounds
        if bounds is not None and not bool(((condition >= bounds[0]) & (condition <= bounds[1])).all()):
            worst = condition[(condition < bounds[0]) | (condition > bounds[1])][0]
            raise ValueError(
                f"conditions of {self.mdp.target!r} must lie in {list(bounds)} (condition_bounds), got {float(worst)}"
            )
        condition = condition.to(device=self.condition.device, dtype=self.condition.dtype)
        if mask is None:
            self.condition.copy_(condition)
        else:
            self.condition[mask] = condition

    def reset(self, mask: torch.Tensor | None = None, condition: torch.Tensor | None = None) -> None:
        """Reset all episodes, or those where the boolean ``mask`` (n,) is true; ``condition`` gives the
        reset episodes' conditions (``(number reset, cond_dim)``; conditional MDPs only)."""
        if self.condition is not None:
            self._set_condition(mask, condition)
        elif condition is not None:
            raise ValueError(f"{self.mdp.target!r} is unconditional; episodes take no condition")
        if mask is None:
            self.x = self.mdp.initial_positions(self.n, self.generator)
            self.k.zero_()
        else:
            fresh = self.mdp.initial_positions(self.n, self.generator)
            self.x = torch.where(mask.unsqueeze(-1), fresh, self.x)
            self.k = torch.where(mask, torch.zeros_like(self.k), self.k)

    @property
    def done(self) -> torch.Tensor:
        return self.k >= self.mdp.num_steps

    def observe(self) -> torch.Tensor:
        return self.mdp.observe(self.x, self.k, self.condition)

    def step(self, x_next: torch.Tensor, active: torch.Tensor | None = None):
        """Move episodes to ``x_next`` (n, d); returns ``(reward (n,), terminated (n,) bool)``.

        With a boolean ``active`` (n,), only those episodes move; the others keep their state, get
        reward 0 and ``terminated`` False, and their rows of ``x_next`` are ignored.
        """
        if active is None:
            active = torch.ones(self.n, dtype=torch.bool, device=self.k.device)
        x_next = self.check_positions(x_next, active)
        if bool((self.done & active).any()):
            ended = (self.done & active).nonzero().flatten().tolist()
            raise RuntimeError(f"episodes {ended} have ended (k = T); reset them before stepping again")
        k_next = self.k + active.long()
        reward = self.mdp.transition_reward(self.x, x_next, k_next, active, self.condition)
        self.x = torch.where(active.unsqueeze(-1), x_next, self.x)
        self.k = k_next
        return reward, self.done & active

    def check_positions(self, x_next, active: torch.Tensor | None = None) -> torch.Tensor:
        """Validate next positions and return them in the MDP's dtype (finiteness is checked after the
        cast, so that a finite float64 value that overflows float32 is rejected)."""
        expected = (self.n, self.mdp.dim)
        if not isinstance(x_next, torch.Tensor):
            raise TypeError(f"next positions must be a torch.Tensor of shape {expected}, got {type(x_next)}")
        if tuple(x_next.shape) != expected:
            raise ValueError(f"next positions must have shape {expected}, got {tuple(x_next.shape)}")
        if not x_next.dtype.is_floating_point:
            raise TypeError(f"next positions must be a floating tensor, got dtype {x_next.dtype}")
        x_next = x_next.to(self.mdp.dtype)
        finite = torch.isfinite(x_next).all(-1)
        if active is not None:
            finite = finite | ~active
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0, 0])
            raise ValueError(f"non-finite next position for episode {i}: {x_next[i].tolist()}")
        return x_next


def make_mdp(env_id: str, **kwargs) -> DiffusionMDP:
    """The torch MDP core behind a registered env id, with the same keyword arguments as ``make``.

    Agents roll out through this core directly; the Gymnasium faces' own options (``action_bound``,
    ``backend``, ...: ``envs.mdp_args.FACE_KWARGS``) are ignored. ``target=`` may be an import path of a
    user-defined energy (``"package.module:attr"``, ``"path/to/file.py:attr"``; see ``envs.targets.user``).
    """
    from diffsampler.envs.mdp_args import FACE_KWARGS, build_mdp  # mdp_args builds on this module
    from diffsampler.registration import CUSTOM_ENV_ID

    env_id = env_id.removeprefix("diffsampler.envs:").removeprefix("diffsampler:")
    if env_id not in gymnasium.registry or env_id not in (*ENV_IDS, CUSTOM_ENV_ID):
        raise ValueError(f"unknown env id {env_id!r}; registered: {[*ENV_IDS, CUSTOM_ENV_ID]}")
    merged = {k: v for k, v in {**gymnasium.spec(env_id).kwargs, **kwargs}.items() if k not in FACE_KWARGS}
    return build_mdp(**merged)
