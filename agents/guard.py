"""The training guard: what a training step does with non-finite numbers, and when a run has diverged.

Every GFlowNet training step (``GFlowNetAgent.train_step``) is screened before the optimiser steps:

- **Non-finite batches.** A log-reward of a training batch that is NaN or +inf (terminal, or at the
  intermediate states where training evaluates log R: forward-looking objectives, the Langevin
  parametrisation, backward batches), a non-finite loss or a non-finite gradient norm: the optimiser does
  not step. The policy (``TrainConfig.nonfinite``, or ``GFlowNetAgent(..., nonfinite=)``) then decides:
  ``"error"`` (the default) raises ``NonFiniteBatch`` naming what went non-finite, the target, the
  iteration and a few offending states; ``"skip"`` drops the batch and counts it (``skipped_batches`` in
  ``metrics.json`` and tensorboard; a warning at the first one), and ``MAX_CONSECUTIVE_SKIPS`` skipped
  batches in a row are an error (the model, not the batch, is broken then).
- **Zero density.** ``log R = -inf`` is legal (a point of zero density), but a trajectory ending there has
  an infinite balance residual and cannot be trained on: it is left out of the loss (the mean runs over
  the other trajectories; VarGrad's baseline too; for forward-looking objectives, -inf at an intermediate
  state does the same) and counted (``zero_density_trajectories``). A batch with no other trajectory is a
  non-finite batch.
- **Divergence.** The loss is fed to a running check: the median of |loss| over each block of
  ``DIVERGENCE_BLOCK`` steps must stay below ``DIVERGENCE_FACTOR`` times ``max(1, reference)``, where the
  reference is the smallest block median so far (initially the first step's |loss|). Beyond it the run
  raises ``TrainingDiverged`` (whatever the policy). A factor of 1e8 on a median is far outside what a
  healthy run does (exploration spikes are single steps; a Table 1 preset's block medians only fall after
  their first block), while a divergent learning rate (e.g. ``lr_policy=1e3`` on 25GMM: |loss| 45 -> 1e16
  within ten steps) is caught at the end of its first block.

Cost: one host synchronisation per step, a 4-number tensor (bad rows, zero-density rows, loss, gradient
norm), which replaces the NaN check the MDP makes on terminal log-rewards outside training.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from contextlib import contextmanager

import torch

from diffsampler.agents.errors import NonFiniteBatch, TrainingDiverged  # noqa: F401 - raised here

NONFINITE_POLICIES = ("error", "skip")
MAX_CONSECUTIVE_SKIPS = 100
DIVERGENCE_FACTOR = 1e8
DIVERGENCE_BLOCK = 50
EXAMPLES = 3  # offending states shown in a message


@dataclasses.dataclass
class Screen:
    """Device-side verdicts on a training batch's rows: ``bad`` (B,) a NaN or +inf log-reward somewhere on
    the path; ``zero`` (B,) zero density (-inf) where the loss would use it."""

    bad: torch.Tensor
    zero: torch.Tensor
    bad_steps: torch.Tensor | None = None  # (B, T) which intermediate log-rewards were bad, if evaluated
    values: tuple = ()  # the screened log-rewards (terminal, intermediate), for messages


@contextmanager
def unchecked_rewards(mdp):
    """The MDP skips its own NaN check of terminal log-rewards (and its host sync): the guard screens them."""
    mdp.check_rewards = False
    try:
        yield
    finally:
        mdp.check_rewards = True


def _check_shape(value: torch.Tensor, shape: tuple, target, where: str) -> None:
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{target!r}.log_reward returned {got} at the {where} states; expected shape {shape}")


def screen_paths(paths, target, forward_looking: bool):
    """``(paths, Screen)``: the paths with -inf log-rewards of the rows left out of the loss replaced by 0
    (so that no infinity reaches a gradient), and the verdicts. No host sync."""
    log_r, states = paths.log_r, paths.log_r_states
    b = paths.states.shape[0]
    _check_shape(log_r, (b,), target, "terminal")
    bad = torch.isnan(log_r) | (log_r == math.inf)
    zero = log_r == -math.inf
    bad_steps = None
    if states is not None:
        _check_shape(states, (b, paths.states.shape[1] - 1), target, "intermediate")
        bad_steps = torch.isnan(states) | (states == math.inf)
        bad = bad | bad_steps.any(-1)
        if forward_looking:
            neg = states == -math.inf
            zero = zero | neg.any(-1)
            states = torch.where(neg, torch.zeros_like(states), states)
    log_r = torch.where(zero, torch.zeros_like(log_r), log_r)
    screen = Screen(bad, zero, bad_steps, (paths.log_r, paths.log_r_states))
    return dataclasses.replace(paths, log_r=log_r, log_r_states=states), screen


def masked_mean(rows: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``rows`` over ``keep``; exactly ``rows.mean()`` (and its gradient) when every row is kept."""
    masked = torch.where(keep, rows, torch.zeros_like(rows)).sum() / keep.sum().clamp_min(1)
    return torch.where(keep.all(), rows.mean(), masked)


def gradient_norm(parameters, clip: float | None) -> torch.Tensor:
    """The global gradient norm (clipping to ``clip`` first when given, as ``clip_grad_norm_`` does)."""
    params = [p for p in parameters if p.grad is not None]
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    grads = [p.grad for p in params]
    if not grads:
        return torch.zeros(())
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def _rows(x: torch.Tensor) -> str:
    return ", ".join(str([round(v, 4) for v in row]) for row in x[:EXAMPLES].tolist())


def describe(agent, iteration: int, screen: Screen, traj, loss: float, norm: float) -> str:
    """What went non-finite in a step, in words (the slow path: syncs freely)."""
    target, where = agent.target, f"at iteration {iteration}"
    bad = screen.bad.nonzero().flatten()
    if len(bad):
        if screen.bad_steps is not None and bool(screen.bad_steps.any()):
            rows, steps = screen.bad_steps.nonzero().unbind(-1)
            x = traj.states[rows, steps]
            place = f"intermediate states (steps {sorted(set(steps.tolist()))[:EXAMPLES]} of the path)"
        else:
            x, place = traj.terminal[bad], "terminal states"
        values = torch.cat([v.detach().flatten() for v in screen.values if v is not None])
        kinds = [k for k, hit in (("NaN", torch.isnan(values).any()), ("+inf", (values == math.inf).any())) if hit]
        return (
            f"{target!r}.log_reward returned {' and '.join(kinds)} {where} on {len(bad)} of {len(screen.bad)} "
            f"training trajectories, at {place} such as x = {_rows(x)}"
        )
    if bool(screen.zero.all()):
        return (
            f"every training trajectory {where} ended where {target!r}.log_reward is -inf (zero density): "
            "nothing to train on; start the sampler where the target has mass (t_scale) or check the target"
        )
    broken = [name for name, p in agent.named_parameters() if not bool(torch.isfinite(p).all())]
    if broken:
        return (
            f"the model's parameters are non-finite {where} ({', '.join(broken[:EXAMPLES])}): the last step overflowed"
        )
    parts = [
        f"{k} ({int((~torch.isfinite(v)).sum())} values)" for k, v in _terms(traj) if not bool(torch.isfinite(v).all())
    ]
    cause = f"non-finite {', '.join(parts)}" if parts else f"loss {loss}, gradient norm {norm}"
    return (
        f"the training loss or its gradient is not finite {where} (log-rewards of {target!r} are finite): {cause}; "
        f"lower the learning rates (lr_policy={agent.config.lr_policy}) or set grad_clip"
    )


def _terms(traj):
    yield "log p_F", traj.log_pf
    yield "log p_B", traj.log_pb
    yield "states", traj.states
    if traj.log_f is not None:
        yield "log-flows", traj.log_f


class TrainingGuard:
    """Applies the non-finite policy and the divergence check to training steps (see the module docstring)."""

    def __init__(self, policy: str = "error"):
        if policy not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {policy!r}")
        self.policy = policy
        self.skipped_batches = 0
        self.zero_density_trajectories = 0
        self.consecutive = 0
        self.reference: float | None = None
        self.block: list[float] = []

    def allows_step(self, agent, iteration: int, loss: torch.Tensor, norm: torch.Tensor, screen: Screen, traj) -> bool:
        """Whether the optimiser may step on this batch (one host sync); raises per the policy."""
        stats = torch.stack(
            [screen.bad.sum().double(), screen.zero.sum().double(), loss.detach().double(), norm.double()]
        )
        bad, zero, loss_value, norm_value = stats.tolist()
        self.zero_density_trajectories += int(zero)
        if bad == 0 and zero < len(screen.zero) and math.isfinite(loss_value) and math.isfinite(norm_value):
            self.consecutive = 0
            self._observe(abs(loss_value), iteration, agent)
            return True
        return self._refuse(describe(agent, iteration, screen, traj, loss_value, norm_value))

    def allows_loss(self, agent, iteration: int, loss: torch.Tensor, norm: torch.Tensor) -> bool:
        """``allows_step`` for an agent whose batches carry no screened log-rewards (SCLD's sub-trajectories):
        the loss and the gradient norm must be finite (one host sync)."""
        loss_value, norm_value = torch.stack([loss.detach().double(), norm.double()]).tolist()
        if math.isfinite(loss_value) and math.isfinite(norm_value):
            self.consecutive = 0
            self._observe(abs(loss_value), iteration, agent)
            return True
        return self._refuse(
            f"non-finite training step at iteration {iteration} on {agent.target!r}: loss {loss_value}, "
            f"gradient norm {norm_value}"
        )

    def _refuse(self, message: str) -> bool:
        if self.policy == "error":
            raise NonFiniteBatch(message + " (nonfinite='skip' skips such batches instead)")
        self.skipped_batches += 1
        self.consecutive += 1
        if self.skipped_batches == 1:
            warnings.warn(f"skipping a non-finite training batch (nonfinite='skip'): {message}", stacklevel=4)
        if self.consecutive >= MAX_CONSECUTIVE_SKIPS:
            raise NonFiniteBatch(f"{self.consecutive} training batches in a row were non-finite; the last: {message}")
        return False

    def _observe(self, loss: float, iteration: int, agent) -> None:
        if self.reference is None:
            self.reference = loss
        self.block.append(loss)
        if len(self.block) < DIVERGENCE_BLOCK:
            return
        median, self.block = statistics.median(self.block), []
        limit = DIVERGENCE_FACTOR * max(1.0, self.reference)
        if median > limit:
            c = agent.config
            raise TrainingDiverged(
                f"training diverged: the median |loss| of iterations {iteration + 1 - DIVERGENCE_BLOCK}-{iteration} is "
                f"{median:.3g}, over {DIVERGENCE_FACTOR:.0e} times its reference {self.reference:.3g}; lower the "
                f"learning rates (lr_policy={c.lr_policy}, lr_log_z={getattr(c, 'lr_log_z', None)}) or set grad_clip"
            )
        self.reference = min(self.reference, median)

    def state_dict(self) -> dict:
        return {
            "skipped_batches": self.skipped_batches,
            "zero_density_trajectories": self.zero_density_trajectories,
            "consecutive": self.consecutive,
            "reference": self.reference,
            "block": list(self.block),
        }

    def load_state_dict(self, state: dict) -> None:
        self.skipped_batches = int(state["skipped_batches"])
        self.zero_density_trajectories = int(state["zero_density_trajectories"])
        self.consecutive = int(state["consecutive"])
        self.reference = None if state["reference"] is None else float(state["reference"])
        self.block = [float(v) for v in state["block"]]


def nonfinite_tensors(state, prefix: str = "") -> list[str]:
    """Names of the non-finite floating tensors anywhere in a (nested) state dict (checked before saving)."""
    if isinstance(state, torch.Tensor):
        return [prefix or "tensor"] if state.is_floating_point() and not bool(torch.isfinite(state).all()) else []
    if isinstance(state, dict):
        return [n for k, v in state.items() for n in nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(state, (list, tuple)):
        return [n for i, v in enumerate(state) for n in nonfinite_tensors(v, f"{prefix}[{i}]")]
    return []
