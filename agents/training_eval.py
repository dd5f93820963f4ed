"""The evaluation side of ``agents.training.Trainer``: evaluation batches, curve points, energy marks and
the training scalars of a logging step.

Every evaluation draws its own generators from (seed, iteration, repeat), so evaluating never perturbs
training. ``evaluate_point`` is one point of the run's curve (``agents.runlog``): the mean of
``repeats`` batches at the current iteration and energy evaluations. ``_evaluate_marks`` evaluates,
for the energy budgets a step crossed (``agents.budget``), the model from before that step.
"""

from __future__ import annotations

import time

from diffsampler.agents.budget import snapshot
from diffsampler.agents.evaluation import combine_repeats, repeat_summary


class TrainerEvaluation:
    """Mixed into ``Trainer`` (which owns ``agent``, ``config``, ``log``, ``iteration``,
    ``energy_evaluations``, ``train_seconds`` and the timing window ``_window_start``)."""

    def evaluate(self, n: int | None = None, figure: bool | None = None, repeat: int = 0) -> dict:
        """Metrics of ``n`` on-policy trajectories (and exact samples, where the target has them), with a
        figure in the run directory. Its own generators are seeded from (seed, iteration, repeat), so
        evaluating never perturbs training; ``repeat`` draws independent batches of the same model."""
        wanted = self.config.figures if figure is None else figure
        figures = self.log if wanted and self.directory is not None and self.directory.writable else None
        result, samples = self.evaluator(self.agent, self.config, self.iteration, n, repeat, figures)
        if repeat == 0 and samples is not None:
            self.last_samples = samples
        return result

    def evaluate_repeated(self, repeats: int) -> dict:
        """Mean and standard deviation of each metric over ``repeats`` independent evaluation batches.

        Separates the evaluation's own noise (a 2,000-sample log-mean-exp is noisy) from the model's
        quality. Returns ``{key: {"mean", "std", "values"}}`` for the numeric metrics.
        """
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 2:
            raise ValueError(f"repeats must be an integer >= 2, got {repeats!r}")
        return repeat_summary([self.evaluate(figure=False, repeat=r + 1) for r in range(repeats)])

    def evaluate_point(self, repeats: int = 1, marks=()) -> dict:
        """The metrics of ``repeats`` independent evaluation batches (``combine_repeats``; the first one draws
        the figure), recorded as a point of the curve (``agents.runlog``) standing for energy ``marks``."""
        window = 0.0 if self._window_start is None else time.perf_counter() - self._window_start  # before evaluating
        result = combine_repeats([self.evaluate(figure=None if r == 0 else False, repeat=r) for r in range(repeats)])
        self.log.curve(self.iteration, self.energy_evaluations, result, self.train_seconds + window, marks)
        return result

    def _evaluate_marks(self, state: dict, iteration: int, spent: int, marks: list[int]) -> dict:
        """Evaluate, for the energy ``marks`` the last step crossed, the model before that step (``state``, at
        ``iteration`` with ``spent`` evaluations); then continue from after it, unless the energy budget is
        among the marks: the run then ends on that model."""
        after = (snapshot(self.agent), self.iteration, self.energy_evaluations)
        self.agent.load_state_dict(state)
        self.iteration, self.energy_evaluations = iteration, spent
        result = self.evaluate_point(self.config.eval_repeats, marks)
        if self.config.energy_budget not in marks:
            self.agent.load_state_dict(after[0])
            self.iteration, self.energy_evaluations = after[1], after[2]
        return result

    def _log_training(self, out: dict, loss: float, ms: float, it: int) -> None:
        """Training scalars of a logging step: loss, speed, exploration, energy evaluations, the learned
        log Z and the gradient norm the step's guard checked (``out["grad_norm"]``, a tensor: no extra sync)."""
        grad = out.get("grad_norm")
        learned = self.agent.learned_log_z() if self.agent.conditions is None else None
        diagnostics = self.agent.source.diagnostics() if self.agent.source is not None else {}
        scalars = {
            "train/loss": loss,
            "train/ms_per_iteration": ms,
            "train/exploration_std": self.agent.exploration_std(it),
            "train/energy_evaluations": self.energy_evaluations,
            "train/skipped_batches": self.agent.guard.skipped_batches,
            "train/grad_norm": None if grad is None else float(grad),
            "train/log_z_learned": None if learned is None else float(learned),
        }
        self.log.scalars(diagnostics | scalars, self.iteration)

    def _postfix(self) -> dict:
        keys = ("delta_log_z", "delta_log_z_rw", "w2") if self.mdp.target.log_Z is not None else ("log_z", "log_z_rw")
        return {k: f"{self.last_eval[k]:.3f}" for k in keys if self.last_eval.get(k) is not None}
