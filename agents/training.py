"""Training a GFlowNet sampler: the loop, periodic evaluation, logging, checkpoints and resume.

A run directory (``agents.runner.RunDirectory``) holds ``config.json``, tensorboard events,
``figures/``, ``checkpoint.pt`` and, at the end, ``metrics.json`` and ``samples.pt``, all written
atomically. ``Trainer.resume(run_dir)`` continues a run exactly where its last checkpoint left it:
model, optimiser and random-generator states are all restored. ``GFlowNetRunner`` is the runner of
the GFlowNet, PIS, DDS and DIS presets (``agents.runs.RUNNERS``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import time

import torch

from diffsampler import envs
from diffsampler.agents import runner
from diffsampler.agents.checkpoints import check_finite, check_state, read_config, same_config
from diffsampler.agents.config import to_dict
from diffsampler.agents.evaluation import evaluate_agent, repeat_summary
from diffsampler.agents.gflownet import GFlowNetAgent
from diffsampler.agents.runner import RunDirectory, Runner, final_metrics, setup_runtime
from diffsampler.agents.train_config import TrainConfig
from diffsampler.envs.targets.base import EvaluationCounter


class Trainer:
    """Owns the MDP, the agent, the generators and the run directory of one training run.

    ``writable=False`` opens an existing run directory to evaluate it and writes nothing there.
    """

    def __init__(self, config: TrainConfig, run_dir: str | os.PathLike | None = None, writable: bool = True):
        self.config = config
        setup_runtime(config.device, config.threads, config.retain_memory)
        self.mdp = envs.make_mdp(config.env_id, device=config.device, **config.env_kwargs)
        self._counter = EvaluationCounter(self.mdp.target)
        self.energy_evaluations = 0  # log-reward rows evaluated by training (evaluation excluded)
        torch.manual_seed(config.seed)
        self.agent = GFlowNetAgent(self.mdp, config.agent, config.nonfinite)
        self.generator = torch.Generator(config.device).manual_seed(config.seed)
        self.cpu_generator = torch.Generator().manual_seed(config.seed + 1)
        self.iteration = 0
        self.train_seconds = 0.0
        self.last_eval: dict = {}
        self.last_samples: torch.Tensor | None = None  # terminal states of the last evaluation
        self.directory = RunDirectory(run_dir, writable) if run_dir is not None else None
        if self.directory is not None and writable:
            self.directory.lock()  # before anything is written: a second training here is refused
            if not same_config(self.directory, config):
                self.directory.write_json("config.json", to_dict(config))

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
        config = read_config(directory, TrainConfig)
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

    def _log(self, scalars: dict, step: int) -> None:
        writer = None if self.directory is None else self.directory.writer(purge_step=self.iteration + 1)
        if writer is None:
            return
        for key, value in scalars.items():
            if value is not None and math.isfinite(float(value)):
                writer.add_scalar(key, float(value), step)

    # --- evaluation ---------------------------------------------------------------------------------

    def evaluate(self, n: int | None = None, figure: bool | None = None, repeat: int = 0) -> dict:
        """Metrics of ``n`` on-policy trajectories (and exact samples, where the target has them), with a
        figure in the run directory. Its own generators are seeded from (seed, iteration, repeat), so
        evaluating never perturbs training; ``repeat`` draws independent batches of the same model."""
        wanted = self.config.figures if figure is None else figure
        figures = self.directory if wanted and self.directory is not None and self.directory.writable else None
        result, samples = evaluate_agent(self.agent, self.config, self.iteration, n, repeat, figures)
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

    # --- the loop -----------------------------------------------------------------------------------

    def run_loop(self, progress: bool = True, stop=None) -> dict:
        """Train up to ``config.iterations``, evaluating, logging and checkpointing on the way. ``stop``: a
        ``runner.stop_on_signals`` flag; once it is set, the loop saves a checkpoint at the next iteration
        boundary and raises ``TrainingInterrupted``."""
        from tqdm.auto import tqdm

        cfg = self.config
        start = time.perf_counter()
        bar = tqdm(total=cfg.iterations, initial=self.iteration, disable=not progress, dynamic_ncols=True)
        window_start, window_iters = time.perf_counter(), 0
        while self.iteration < cfg.iterations:
            if stop is not None and stop.signum is not None:
                bar.close()
                self._interrupted(stop.signum)
            it = self.iteration
            count = self._counter.count
            out = self.agent.train_step(it, self.generator, self.cpu_generator)
            self.energy_evaluations += self._counter.count - count
            self.iteration += 1
            window_iters += 1
            bar.update(1)
            if self.iteration % cfg.log_every == 0 or self.iteration == cfg.iterations:
                loss = float(out["loss"])  # the one host sync per logging window
                elapsed = time.perf_counter() - window_start
                self.train_seconds += elapsed
                ms = 1000 * elapsed / window_iters
                diagnostics = self.agent.source.diagnostics() if self.agent.source is not None else {}
                self._log(
                    diagnostics
                    | {
                        "train/loss": loss,
                        "train/ms_per_iteration": ms,
                        "train/exploration_std": self.agent.exploration_std(it),
                        "train/skipped_batches": self.agent.guard.skipped_batches,
                    },
                    self.iteration,
                )
                bar.set_postfix(loss=f"{loss:.3g}", **self._postfix())
            if self.iteration % cfg.eval_every == 0 or self.iteration == cfg.iterations:
                self.last_eval = self.evaluate()
                self._log({f"eval/{k}": v for k, v in self.last_eval.items()}, self.iteration)
                bar.set_postfix(loss=f"{float(out['loss']):.3g}", **self._postfix())
            if self.iteration % cfg.checkpoint_every == 0 or self.iteration == cfg.iterations:
                self.save_checkpoint()
            if self.iteration % cfg.log_every == 0:
                window_start, window_iters = time.perf_counter(), 0
        bar.close()
        return self.finish(time.perf_counter() - start)

    def run(self, progress: bool = True, stop_on_signals: bool = False) -> dict:
        """``run_loop`` holding the run directory's lock. ``stop_on_signals``: Ctrl-C or SIGTERM (a second
        one stops at once) saves a checkpoint and raises ``TrainingInterrupted`` (main thread only)."""
        if self.directory is not None:
            self.directory.lock()
        try:
            with runner.stop_on_signals() if stop_on_signals else contextlib.nullcontext() as stop:
                return self.run_loop(progress, stop)
        finally:
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

    def _postfix(self) -> dict:
        keys = ("delta_log_z", "delta_log_z_rw", "w2") if self.mdp.target.log_Z is not None else ("log_z", "log_z_rw")
        return {k: f"{self.last_eval[k]:.3f}" for k in keys if self.last_eval.get(k) is not None}

    def finish(self, wall_seconds: float) -> dict:
        """Final metrics (flat keys), written to ``metrics.json`` in the run directory."""
        if not self.last_eval:
            self.last_eval = self.evaluate()
        result = final_metrics(
            self.last_eval,
            ms_per_iteration=1000 * self.train_seconds / max(self.iteration, 1),
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
    resumable = True

    def run(self, config: TrainConfig, run_dir, progress: bool, stop_on_signals: bool = False) -> dict:
        return Trainer(config, run_dir).run(progress=progress, stop_on_signals=stop_on_signals)

    def resume(self, run_dir, config: dict, iterations: int | None = None, writable: bool = True) -> Trainer:
        return Trainer.resume(run_dir, iterations, writable)
