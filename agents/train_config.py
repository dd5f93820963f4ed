"""``TrainConfig``: one GFlowNet training run (the config of ``agents.training.Trainer``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from diffsampler.agents.budget import check_marks
from diffsampler.agents.config import check_fields, check_seed
from diffsampler.agents.gflownet import GFlowNetConfig
from diffsampler.agents.guard import NONFINITE_POLICIES


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes:
        env_id: a registered ``DiffSampler-*-v0`` id.
        env_kwargs: keyword arguments of the env (``dim``, ``num_steps``, ``t_scale``, ...).
        preset: name of the preset the agent config came from (informational).
        agent: the agent's configuration.
        iterations: training iterations in total.
        seed: seeds model initialisation, training noise and evaluation.
        device: torch device ("cpu", "cuda", ...).
        eval_every: evaluate every this many iterations (and at the end).
        eval_samples: trajectories per evaluation (the paper uses 2,000).
        eval_repeats: the final evaluation (and those at ``eval_energy`` marks) averages this many
            independent batches of ``eval_samples``; metrics.json then holds the means and ``eval_std``.
        eval_energy: energy budgets (cumulative training evaluations of the target) at which the model is
            also evaluated: the last model within each budget, i.e. before the iteration that crosses it.
        energy_budget: stop training at this many energy evaluations: the iteration that would cross it
            is undone (the model is the one before it; optimiser moments, buffers and generators keep it)
            and the run ends there (None: ``iterations`` only).
        eval_steps: evaluate on the uniform grid of this many steps (None: the training T), e.g. a model
            trained with T = 100 evaluated with T = 25, 50 or 200.
        eval_per_condition: on a conditional target, trajectories per evaluation condition (None:
            ``eval_samples`` shared out over the target's evaluation conditions, at least 2).
        log_every: write training scalars every this many iterations.
        checkpoint_every: save a checkpoint every this many iterations (and at the end).
        figures: save sample figures at each evaluation.
        threads: torch CPU threads (None: torch's default).
        retain_memory: on CPU, keep freed large blocks in the malloc heap for reuse
            (``agents.runtime.retain_freed_memory``; process-wide, glibc only): saves the page faults of
            re-allocating the iteration's large tensors (half of a Manywell-512 TB iteration).
        save_samples: model samples of the final evaluation saved to ``samples.pt`` in the run
            directory (at most ``eval_samples``; 0: none), for figures across runs.
        nonfinite: what a training batch with a NaN/+inf log-reward, loss or gradient does: "error" (stop
            with a message naming it) or "skip" (drop the batch and count it in ``skipped_batches``);
            see ``agents.guard``, which also stops a diverging run.
    """

    env_id: str = "DiffSampler-GMM25-v0"
    env_kwargs: dict = field(default_factory=dict)
    preset: str = "custom"
    agent: GFlowNetConfig = field(default_factory=GFlowNetConfig)
    iterations: int = 25_000
    seed: int = 0
    device: str = "cpu"
    eval_every: int = 1000
    eval_samples: int = 2000
    eval_repeats: int = 1
    eval_energy: tuple[int, ...] = ()
    energy_budget: int | None = None
    eval_steps: int | None = None
    eval_per_condition: int | None = None
    log_every: int = 100
    checkpoint_every: int = 1000
    figures: bool = True
    threads: int | None = None
    retain_memory: bool = True
    save_samples: int = 2000
    nonfinite: str = "error"

    def __post_init__(self):
        check_fields(self)
        check_seed(self)
        for name in ("iterations", "eval_every", "eval_samples", "eval_repeats", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError(f"eval_steps must be None or an integer >= 1, got {self.eval_steps!r}")
        if self.eval_per_condition is not None and self.eval_per_condition < 1:
            raise ValueError(f"eval_per_condition must be None or >= 1, got {self.eval_per_condition!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be None or >= 1, got {self.threads!r}")
        if self.save_samples < 0:
            raise ValueError(f"save_samples must be >= 0, got {self.save_samples!r}")
        if self.nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {self.nonfinite!r}")
        object.__setattr__(self, "eval_energy", check_marks(self.eval_energy))
        if self.energy_budget is not None:
            check_marks((self.energy_budget,), "energy_budget")
