"""Batches of trajectories and the log-weight, the data the trajectory engine (``envs.engine``) produces.

``Paths`` are sampled states with what sampling evaluated on the way; ``Trajectories`` are scored paths
(log p_F, log p_B, log R); ``log_weight`` is the one definition of a trajectory's log-weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def log_weight(log_r: torch.Tensor, log_pf: torch.Tensor, log_pb: torch.Tensor) -> torch.Tensor:
    """``log R(x_T) + sum_k log p_B - sum_k log p_F`` over the last dim of ``(..., B, T)`` log-probabilities
    (``- log p_0(x_0)`` is folded into ``log_pb[..., 0]``): the one definition of a trajectory's log-weight."""
    return log_r + log_pb.sum(-1) - log_pf.sum(-1)


@dataclass
class Paths:
    """Detached paths and what their sampling evaluated on the way (reused by ``score``).

    Attributes:
        states: (B, T + 1, d) positions; ``states[:, 0] = x_0 ~ p_0``.
        log_r: (B,) terminal log-rewards.
        scores: (B, T, d) clipped scores at ``states[:, :-1]`` (Langevin kernels), else None.
        log_r_states: (B, T) log-rewards at ``states[:, :-1]``, when they were evaluated.
        condition: (B, cond_dim) the paths' conditions (conditional targets), else None.
        log_pf: (B, T) forward log-probabilities recorded while sampling (reparameterised paths and
            kernels that are not Gaussian), else None: ``score`` evaluates them.
        times: (T + 1,) the time grid the paths were drawn on (in the states' dtype and device).
        record: what the sampling kernel recorded of its evaluations (``new_record``), for ``score`` to
            replay; opaque to the engine.
        terminal_score: (B, d) the clipped score at ``states[:, -1]`` when it was evaluated (backward paths of
            a backward kernel that takes scores), else None.
        first_step: the step index of ``states[:, 0]``: 0 for whole paths, a for a segment of steps a..b-1
            (``states`` then holds the ``b - a + 1`` states x_a..x_b and ``log_r`` is ``log R(x_b)``).
    """

    states: torch.Tensor
    log_r: torch.Tensor
    scores: torch.Tensor | None = None
    log_r_states: torch.Tensor | None = None
    condition: torch.Tensor | None = None
    log_pf: torch.Tensor | None = None
    times: torch.Tensor | None = None
    record: Any = None
    terminal_score: torch.Tensor | None = None
    first_step: int = 0


@dataclass
class Trajectories:
    """A batch of B scored trajectories of T steps.

    Attributes:
        states: (B, T + 1, d) positions.
        log_pf: (B, T) ``log p_F(x_{k+1} | x_k)``.
        log_pb: (B, T) ``log p_B(x_k | x_{k+1})``; entry 0 also carries ``- log p_0(x_0)``.
        log_r: (B,) terminal log-rewards.
        log_f: (B, T + 1) log-flows of the visited states (last column = log_r), for agents with flows.
        condition_index: (B,) which condition each trajectory had (conditional targets), else None.
        valid: (B,) bool, the trajectories a loss may train on (False: zero density, log R = -inf; see
            ``agents.guard``), or None: all of them.
    """

    states: torch.Tensor
    log_pf: torch.Tensor
    log_pb: torch.Tensor
    log_r: torch.Tensor
    log_f: torch.Tensor | None = None
    condition_index: torch.Tensor | None = None
    valid: torch.Tensor | None = None

    @property
    def log_weight(self) -> torch.Tensor:
        return log_weight(self.log_r, self.log_pf, self.log_pb)

    @property
    def terminal(self) -> torch.Tensor:
        return self.states[:, -1]
