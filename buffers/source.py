"""Training batches: the iteration schedule, and backward batches from exact samples or from a replay
buffer refreshed by local search (Sendera et al., 2024).

``Schedule`` is the one place of the alternation: with a backward source, even iterations sample
forward (exploratory) trajectories, whose terminal states go into the replay buffer, and odd
iterations train on backward trajectories from a source's terminal states (``Batch``). A source is
registered in ``SOURCES``: ``"exact"`` draws them from the target's exact sampler; ``"buffer"`` from the
local-search buffer, which MALA chains started from prioritised replay-buffer samples refresh at the
first backward iteration of every ``ls_cycle``. With ``ls_cycle = 0`` there is no local search and
backward batches come straight from the replay buffer.

For a conditional target (``conditions`` given) both buffers store each state's condition index;
local search runs each chain on the target given its state's condition, and a backward batch is
``batch_size / repeats`` prioritised states, each repeated ``repeats`` times (so that every condition
in the batch has several trajectories, as in the forward batches).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from diffsampler.agents.config import check_fields
from diffsampler.buffers.local_search import LocalSearchConfig, local_search
from diffsampler.buffers.replay import SAMPLING, ReplayBuffer


@dataclass(frozen=True)
class BufferConfig:
    """Replay-buffer and local-search settings (used when ``backward_source = "buffer"``).

    Attributes:
        buffer_capacity: capacity of each buffer (the paper: 600,000).
        buffer_sampling: "rank" (the paper), "reward" or "uniform".
        buffer_rank_k: k of the rank weights 1 / (k N + rank).
        buffer_beta: inverse temperature of reward-prioritised sampling.
        ls_cycle: run local search every this many iterations; 0 disables it.
        local_search: the MALA settings.
    """

    buffer_capacity: int = 600_000
    buffer_sampling: str = "rank"
    buffer_rank_k: float = 0.01
    buffer_beta: float = 1.0
    ls_cycle: int = 100
    local_search: LocalSearchConfig = field(default_factory=LocalSearchConfig)

    def __post_init__(self):
        check_fields(self)
        if self.buffer_capacity < 1:
            raise ValueError(f"buffer_capacity must be >= 1, got {self.buffer_capacity!r}")
        if self.buffer_sampling not in SAMPLING:
            raise ValueError(f"buffer_sampling must be one of {SAMPLING}, got {self.buffer_sampling!r}")
        if self.ls_cycle < 0:
            raise ValueError(f"ls_cycle must be >= 0, got {self.ls_cycle!r}")


@dataclass(frozen=True)
class Batch:
    """One training batch. Forward (``x`` None): the agent samples its own trajectories, for the
    conditions ``condition_index`` (B,) on a conditional target. Backward: trajectories drawn back from
    the terminal states ``x`` (B, d), whose conditions are ``condition_index``."""

    x: torch.Tensor | None = None
    condition_index: torch.Tensor | None = None

    @property
    def backward(self) -> bool:
        return self.x is not None


@dataclass(frozen=True)
class Schedule:
    """When training goes backward and local search runs.

    Attributes:
        backward: odd iterations train on backward batches (there is a backward source).
        ls_cycle: local search refreshes its buffer at the iterations ``k * ls_cycle + 1`` (the first
            backward iteration of each cycle) and whenever its buffer is empty; 0: never.
    """

    backward: bool = False
    ls_cycle: int = 0

    def is_backward(self, iteration: int) -> bool:
        return self.backward and iteration % 2 == 1

    def refreshes(self, iteration: int, empty: bool) -> bool:
        return self.ls_cycle > 0 and (empty or iteration % self.ls_cycle == 1)


class ExactSource:
    """Backward batches of exact target samples (``target.sample``, driven by the CPU generator)."""

    def __init__(
        self, target, dim: int, config: BufferConfig, batch_size: int, device="cpu", conditions=None, repeats=1
    ):
        if not target.has_sampler:
            raise ValueError(f"backward_source='exact' but {target!r} has no exact sampler")
        self.target, self.batch_size, self.device = target, batch_size, device
        self.schedule = Schedule(backward=True)

    def backward_batch(self, iteration: int, generator=None, cpu_generator=None) -> Batch:
        return Batch(self.target.sample(self.batch_size, cpu_generator).to(self.device))

    def observe(self, *args) -> None:
        """Forward batches are not kept."""

    def diagnostics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict | None) -> None:
        """Nothing to restore."""


class BufferSource:
    """Owns the replay buffer, the local-search buffer and the adapted MALA step size."""

    def __init__(
        self, target, dim: int, config: BufferConfig, batch_size: int, device="cpu", conditions=None, repeats=1
    ):
        self.target, self.config, self.batch_size = target, config, batch_size
        self.conditions, self.repeats = conditions, repeats
        if conditions is not None and batch_size % repeats:
            raise ValueError(f"repeats={repeats} must divide batch_size={batch_size}")
        c = config
        indexed = conditions is not None

        def make():
            return ReplayBuffer(
                dim, c.buffer_capacity, c.buffer_sampling, c.buffer_rank_k, c.buffer_beta, device, indexed
            )

        self.replay = make()
        self.ls_buffer = make() if c.ls_cycle > 0 else None
        self.schedule = Schedule(backward=True, ls_cycle=c.ls_cycle)
        self.step_size = c.local_search.ls_step_size
        self.last_info: dict[str, float] = {}

    def observe(self, x: torch.Tensor, log_r: torch.Tensor, iteration: int, condition_index=None) -> None:
        """Store the terminal states of a forward batch (with their condition indices, if conditional)."""
        self.replay.add(x.detach(), log_r.detach(), iteration, condition_index)

    def refresh(self, iteration: int, generator=None) -> None:
        """Local search from prioritised replay samples into the local-search buffer."""
        if self.conditions is None:
            x0, _ = self.replay.sample(self.batch_size, generator)
            log_reward, index = self.target.log_reward, None
        else:
            x0, _, index = self.replay.sample_with_index(self.batch_size, generator)
            log_reward = self.target.bind(self.conditions[index]).log_reward
        result = local_search(log_reward, x0, self.config.local_search, generator, self.step_size)
        self.step_size = result.step_size
        self.ls_buffer.add(result.x, result.log_r, iteration, None if index is None else index[result.chain])
        self.last_info = {
            "acceptance_rate": result.acceptance_rate,
            "step_size": result.step_size,
            "accepted": float(result.x.shape[0]),
        }

    def backward_batch(self, iteration: int, generator=None, cpu_generator=None) -> Batch | None:
        """This (backward) iteration's batch, or None while the replay buffer is empty."""
        if len(self.replay) == 0:
            return None
        if self.schedule.refreshes(iteration, self.ls_buffer is not None and len(self.ls_buffer) == 0):
            self.refresh(iteration, generator)
        # The replay buffer itself when there is no local search, or while it has kept no state (every
        # proposal of its first calls rejected).
        buffer = self.replay if self.ls_buffer is None or len(self.ls_buffer) == 0 else self.ls_buffer
        if self.conditions is None:
            return Batch(buffer.sample(self.batch_size, generator)[0])
        x, _, index = buffer.sample_with_index(self.batch_size // self.repeats, generator)
        return Batch(x.repeat_interleave(self.repeats, 0), index.repeat_interleave(self.repeats))

    def diagnostics(self) -> dict[str, float]:
        out = {f"ls/{k}": v for k, v in self.last_info.items()}
        out["buffer/size"] = float(len(self.replay))
        out |= {f"buffer/log_r_{k}": v for k, v in self.replay.quantiles().items()}
        if self.ls_buffer is not None:
            out["ls_buffer/size"] = float(len(self.ls_buffer))
            out |= {f"ls_buffer/log_r_{k}": v for k, v in self.ls_buffer.quantiles().items()}
        return out

    def state_dict(self) -> dict:
        return {
            "replay": self.replay.state_dict(),
            "step_size": self.step_size,
            "ls_buffer": None if self.ls_buffer is None else self.ls_buffer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.replay.load_state_dict(state["replay"])
        self.step_size = state["step_size"]
        if self.ls_buffer is not None:
            self.ls_buffer.load_state_dict(state["ls_buffer"])


# backward_source -> source (all built with the same arguments).
SOURCES: dict[str, Any] = {"exact": ExactSource, "buffer": BufferSource}
