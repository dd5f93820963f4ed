"""Training a GFlowNet sampler: the loop, periodic evaluation, logging, checkpoints and resume.

A run directory (``agents.runner.RunDirectory``) holds ``config.json``, tensorboard events,
``figures/``, ``curve.jsonl`` (``agents.runlog``), ``checkpoint.pt`` and, at the end, ``metrics.json`` and
``samples.pt``, all written atomically (``curve.jsonl`` line by line). ``Trainer.resume(run_dir)``
continues a run exactly where its last checkpoint left it: model, optimiser and random-generator states
are all restored. Evaluation and logging are ``agents.training_eval.TrainerEvaluation``.
``GFlowNetRunner`` is the runner of the GFlowNet, PIS, DDS and DIS presets (``agents.runs.RUNNERS``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time

import torch

from diffsampler import envs
from diffsampler.agents import runner
from diffsampler.agents.budget import EnergyMarks, snapshot
from diffsampler.agents.checkpoints import check_finite, check_state, read_config, same_config
from diffsampler.agents.config import to_dict
from diffsampler.agents.evaluation import evaluate_agent
from diffsampler.agents.gflownet import GFlowNetAgent
from diffsampler.agents.runlog import RunLog, write_config
from diffsampler.agents.runner import RunDirectory, Runner, final_metrics, setup_runtime
from diffsampler.agents.train_config import TrainConfig
from diffsampler.agents.training_eval import TrainerEvaluation
from diffsampler.envs.targets.base import EvaluationCounter


class Trainer(TrainerEvaluation):
    """Owns the MDP, the agent, the generators and the run directory of one training run.

    ``writable=False`` opens an existing run directory to evaluate it and writes nothing there. A method with an
    agent of its own (SCLD, ``agents.scld_runs``) subclasses it with its ``config_type``, ``agent_type`` and
    ``evaluator``.
    """

    config_type: type = TrainConfig
    agent_type: type = GFlowNetAgent
    evaluator = staticmethod(evaluate_agent)  # (agent, config, iteration, n, repeat, figures) -> (metrics, samples)

    def __init__(self, config: TrainConfig, run_dir: str | os.PathLike | None = None, writable: bool = True):
        self.config = config
        setup_runtime(config.device, config.threads, config.retain_memory)
        self.mdp = envs.make_mdp(config.env_id, device=config.device, **config.env_kwargs)
        self._counter = EvaluationCounter(self.mdp.target)
        self.energy_evaluations = 0  # log-reward rows evaluated by training (evaluation excluded)
        torch.manual_seed(config.seed)
        self.agent = self.agent_type(self.mdp, config.agent, config.nonfinite)
        self.generator = torch.Generator(config.device).manual_seed(config.seed)
        self.cpu_generator = torch.Generator().manual_seed(config.seed + 1)
        self.iteration = 0
        self.train_seconds = 0.0
        self.last_eval: dict = {}
        self.last_samples: torch.Tensor | None = None  # terminal states of the last evaluation
        self.directory = RunDirectory(run_dir, writable) if run_dir is not None else None
        self.log = RunLog(self.directory)  # curve.jsonl, tensorboard, figures
        self._window_start: float | None = None  # start of the current timing window (run_loop)
        if self.directory is not None and writable:
            self.directory.lock()  # before anything is written: a second training here is refused
            if not same_config(self.directory, config):
                write_config(self.directory, config)

    @property
    def run_dir(self):
        return None if self.directory is None else self.directory.path

    # --- persistence --------------------------------------------------------------------------------

    @classmethod
    def resume(cls, run_dir: str | os.PathLike, iterations: int | None = None, writable: bool = True) -> Trainer:
        """Rebuild a run from its directory and load its checkpoint (optionally extending its budget).

        Every damaged file is a ValueError naming it; the checkpoint's iteration, seed and config must
        agree with config.json. ``writable=False`` (evaluation) writes nothing.
        """
        directory = RunDirectory(run_dir, writable=False)
        config = read_config(directory, cls.config_type)
        if iterations is not None:
            config = dataclasses.replace(config, iterations=iterations)
        if not directory.exists("checkpoint.pt"):
            raise ValueError(
                f"{run_dir} has no checkpoint.pt: the run stopped before its first checkpoint "
                f"(every {config.checkpoint_every} iterations); start it again"
            )
        state = directory.load_checkpoint(config.device)
        trainer = cls(config, run_dir, writable)
        trainer.load_state(state, directory / "checkpoint.pt")
        return trainer

    def state(self) -> dict:
        return {
            "agent": self.agent.state_dict(),
            "optimizer": self.agent.optimizer.state_dict(),
            "iteration": self.iteration,
            "train_seconds": self.train_seconds,
            "energy_evaluations": self.energy_evaluations,
            "generator": self.generator.get_state(),
            "cpu_generator": self.cpu_generator.get_state(),
            "source": None if self.agent.source is None else self.agent.source.state_dict(),
            "seed": self.config.seed,
            "agent_config": to_dict(self.config.agent),
            "guard": self.agent.guard.state_dict(),
        }

    def load_state(self, state: dict, path="checkpoint") -> None:
        """Restore a ``state()``; a ValueError naming ``path`` when it does not belong to this run."""
        check_state(state, self.config, path)
        try:
            self.agent.load_state_dict(state["agent"])
            self.agent.optimizer.load_state_dict(state["optimizer"])
            self.generator.set_state(state["generator"])
            self.cpu_generator.set_state(state["cpu_generator"])
            if self.agent.source is not None:
                self.agent.source.load_state_dict(state["source"])
            if "guard" in state:  # checkpoints written before the guard have none
                self.agent.guard.load_state_dict(state["guard"])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise ValueError(f"{path} does not fit this run's model: {err}") from None
        self.iteration = state["iteration"]
        self.train_seconds = float(state["train_seconds"])
        self.energy_evaluations = int(state.get("energy_evaluations", 0))

    def save_checkpoint(self) -> None:
        """Write ``checkpoint.pt`` (atomically), never with a non-finite tensor in it: a FloatingPointError
        then, and the last good checkpoint stays."""
        if self.directory is None:
            return
        state = self.state()
        check_finite(state, self.directory / "checkpoint.pt", self.iteration)
        self.directory.save_tensor("checkpoint.pt", state)

    # --- the loop -----------------------------------------------------------------------------------

    def run_loop(self, progress: bool = True, stop=None) -> dict:
        """Train up to ``config.iterations`` (or ``energy_budget``), evaluating, logging and checkpointing on
        the way; time spent evaluating and checkpointing is kept out of ``train_seconds``. ``stop``: a
        ``runner.stop_on_signals`` flag; once it is set, the loop saves a checkpoint at the next iteration
        boundary and raises ``TrainingInterrupted``."""
        from tqdm.auto import tqdm

        cfg = self.config
        # resumed after its last step (stopped before metrics.json): ``finish`` evaluates again, so the curve
        # drops the final point it had (evaluations are seeded by seed and iteration: the same numbers)
        done = self.iteration > 0 and self.iteration >= cfg.iterations
        self.log.resume_at(self.iteration - 1 if done else self.iteration, self.energy_evaluations)
        budget = (cfg.energy_budget,) if cfg.energy_budget is not None else ()
        marks = EnergyMarks(cfg.eval_energy + budget, self.energy_evaluations)
        bar = tqdm(total=cfg.iterations, initial=self.iteration, disable=not progress, dynamic_ncols=True)
        self._window_start, window_iters, undone = time.perf_counter(), 0, 0
        while self.iteration < cfg.iterations:
            if stop is not None and stop.signum is not None:
                bar.close()
                self._interrupted(stop.signum)
            it, spent, count = self.iteration, self.energy_evaluations, self._counter.count
            before = snapshot(self.agent) if marks else None  # the model a crossed mark is evaluated on
            out = self.agent.train_step(it, self.generator, self.cpu_generator)
            self.energy_evaluations += self._counter.count - count
            self.iteration += 1
            window_iters += 1
            bar.update(1)
            crossed = marks.crossed(spent, self.energy_evaluations)
            ends = cfg.energy_budget in crossed
            if self.iteration % cfg.log_every == 0 or self.iteration == cfg.iterations or ends:
                loss = float(out["loss"])  # the one host sync per logging window
                now = time.perf_counter()
                self.train_seconds += now - self._window_start
                self._log_training(out, loss, 1000 * (now - self._window_start) / window_iters, it)
                self._window_start, window_iters = now, 0
                bar.set_postfix(loss=f"{loss:.3g}", **self._postfix())
            paused = time.perf_counter()
            if crossed:
                self.last_eval = self._evaluate_marks(before, it, spent, crossed)
                undone = int(ends)
            final = self.iteration == cfg.iterations
            if not ends and (self.iteration % cfg.eval_every == 0 or final):
                self.last_eval = self.evaluate_point(cfg.eval_repeats if final else 1)
                bar.set_postfix(loss=f"{float(out['loss']):.3g}", **self._postfix())
            if self.iteration % cfg.checkpoint_every == 0 or final or ends:
                self.save_checkpoint()
            self._window_start += time.perf_counter() - paused
            if ends:
                break
        bar.close()
        return self.finish(self.log.wall_seconds(), undone)  # a resumed run's: from its start, as the curve's

    def run(self, progress: bool = True, stop_on_signals: bool = False) -> dict:
        """``run_loop`` holding the run directory's lock. ``stop_on_signals``: Ctrl-C or SIGTERM (a second
        one stops at once) saves a checkpoint and raises ``TrainingInterrupted`` (main thread only)."""
        if self.directory is not None:
            self.directory.lock()
        try:
            with runner.stop_on_signals() if stop_on_signals else contextlib.nullcontext() as stop:
                return self.run_loop(progress, stop)
        finally:
            self.log.close()
            if self.directory is not None:
                self.directory.close()

    def _interrupted(self, signum: int):
        name = signal.Signals(signum).name
        if self.directory is None or not self.directory.writable:
            raise runner.TrainingInterrupted(signum, f"interrupted by {name} at iteration {self.iteration}")
        self.save_checkpoint()
        raise runner.TrainingInterrupted(
            signum,
            f"interrupted by {name} at iteration {self.iteration}: checkpoint saved in {self.run_dir}; continue "
            f"with: diffsampler-train --resume {self.run_dir}",
        )

    def finish(self, wall_seconds: float, undone: int = 0) -> dict:
        """Final metrics (flat keys), written to ``metrics.json`` in the run directory. ``undone``: iterations
        run but undone by the energy budget (their time is in ``train_seconds``)."""
        if not self.last_eval:
            self.last_eval = self.evaluate_point(self.config.eval_repeats)
        result = final_metrics(
            self.last_eval,
            ms_per_iteration=1000 * self.train_seconds / max(self.iteration + undone, 1),
            iterations=self.iteration,
            wall_seconds=wall_seconds,
            energy_evaluations=self.energy_evaluations,
            skipped_batches=self.agent.guard.skipped_batches,
            zero_density_trajectories=self.agent.guard.zero_density_trajectories,
        )
        if self.directory is not None and self.directory.writable:
            if self.config.save_samples and self.last_samples is not None:
                self.directory.save_tensor("samples.pt", self.last_samples[: self.config.save_samples].cpu().clone())
            self.directory.write_json("metrics.json", result)
        return result


class GFlowNetRunner(Runner):
    """The runner of the GFlowNet, PIS, DDS and DIS presets: ``Trainer``; resumable."""

    config_type = TrainConfig
    trainer: type[Trainer] = Trainer
    resumable = True
    curve_budgets = True  # no schedule depends on the total iterations (exploration decays by iteration)

    def energy_run(self, config: TrainConfig, energies: tuple[int, ...]) -> tuple[int, dict]:
        """Train until an iteration would cross the largest budget (every iteration evaluates at least its
        batch's terminal rewards, which bounds the iterations), with marks at all of them."""
        budget = max(energies) // config.agent.batch_size + 1
        return budget, {"eval_energy": tuple(energies), "energy_budget": max(energies)}

    def run(self, config: TrainConfig, run_dir, progress: bool, stop_on_signals: bool = False) -> dict:
        return self.trainer(config, run_dir).run(progress=progress, stop_on_signals=stop_on_signals)

    def resume(self, run_dir, config: dict, iterations: int | None = None, writable: bool = True) -> Trainer:
        return self.trainer.resume(run_dir, iterations, writable)
