"""Training a GFlowNet sampler: the loop, periodic evaluation, logging, checkpoints and resume.

A run directory holds ``config.json``, tensorboard events, ``figures/``, ``checkpoint.pt`` (written
atomically) and, at the end, ``metrics.json``. ``Trainer.resume(run_dir)`` continues a run exactly
where its last checkpoint left it: model, optimiser and random-generator states are all restored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffsampler.agents import conditional, metrics
from diffsampler.agents.config import from_dict, to_dict
from diffsampler.agents.gflownet import GFlowNetAgent, GFlowNetConfig
from diffsampler.agents.runtime import retain_freed_memory
from diffsampler.envs.targets.base import EvaluationCounter

from diffsampler import envs

FINAL_KEYS = metrics.METRIC_KEYS + ("ms_per_iteration", "iterations", "wall_seconds", "energy_evaluations")


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
    eval_per_condition: int | None = None
    log_every: int = 100
    checkpoint_every: int = 1000
    figures: bool = True
    threads: int | None = None
    retain_memory: bool = True
    save_samples: int = 2000

    def __post_init__(self):
        for name in ("iterations", "eval_every", "eval_samples", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.eval_per_condition is not None and self.eval_per_condition < 1:
            raise ValueError(f"eval_per_condition must be None or >= 1, got {self.eval_per_condition!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be None or >= 1, got {self.threads!r}")
        if self.save_samples < 0:
            raise ValueError(f"save_samples must be >= 0, got {self.save_samples!r}")
        if not isinstance(self.env_kwargs, dict):
            raise ValueError(f"env_kwargs must be a dict, got {self.env_kwargs!r}")


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> dict:
    """A checkpoint's state, loaded with ``weights_only=True``: plain tensors, numbers, strings and
    containers only. A file that would run code (a pickled object with a ``__reduce__``) or that is not a
    checkpoint at all is refused with a ValueError naming the file; nothing in it is executed."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path}: refused to load; a checkpoint holds only tensors and plain containers, and this file "
            f"holds something else ({first})"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a training checkpoint (holds a {type(state).__name__}, expected a dict)")
    return state


class Trainer:
    """Owns the MDP, the agent, the generators and the run directory of one training run."""

    def __init__(self, config: TrainConfig, run_dir: str | os.PathLike | None = None):
        self.config = config
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        if config.retain_memory and config.device.startswith("cpu"):
            retain_freed_memory()
        if config.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {config.device!r} requested but CUDA is not available")
        self.mdp = envs.make_mdp(config.env_id, device=config.device, **config.env_kwargs)
        self._counter = EvaluationCounter(self.mdp.target)
        self.energy_evaluations = 0  # log-reward rows evaluated by training (evaluation excluded)
        torch.manual_seed(config.seed)
        self.agent = GFlowNetAgent(self.mdp, config.agent)
        self.generator = torch.Generator(config.device).manual_seed(config.seed)
        self.cpu_generator = torch.Generator().manual_seed(config.seed + 1)
        self.iteration = 0
        self.train_seconds = 0.0
        self.last_eval: dict = {}
        self.last_samples: torch.Tensor | None = None  # terminal states of the last evaluation
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._writer = None
        if self.run_dir is not None:
            (self.run_dir / "figures").mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(to_dict(config), indent=2))

    # --- persistence --------------------------------------------------------------------------------

    @classmethod
    def resume(cls, run_dir: str | os.PathLike, iterations: int | None = None) -> Trainer:
        """Rebuild a run from its directory and load its checkpoint (optionally extending its budget)."""
        run_dir = Path(run_dir)
        if not (run_dir / "config.json").exists():
            raise FileNotFoundError(f"no config.json in {run_dir}: not a run directory")
        try:
            config = from_dict(TrainConfig, json.loads((run_dir / "config.json").read_text()))
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{run_dir} is not a resumable GFlowNet training run (baseline runs such as smc or sb3-sac "
                f"finish in one go; start them again instead): {err}"
            ) from None
        if iterations is not None:
            config = dataclasses.replace(config, iterations=iterations)
        trainer = cls(config, run_dir)
        if (run_dir / "checkpoint.pt").exists():
            trainer.load_state(load_checkpoint(run_dir / "checkpoint.pt", config.device))
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
        }

    def load_state(self, state: dict) -> None:
        self.agent.load_state_dict(state["agent"])
        self.agent.optimizer.load_state_dict(state["optimizer"])
        self.iteration = state["iteration"]
        self.train_seconds = state["train_seconds"]
        self.energy_evaluations = state.get("energy_evaluations", 0)
        self.generator.set_state(state["generator"])
        self.cpu_generator.set_state(state["cpu_generator"])
        if self.agent.source is not None:
            self.agent.source.load_state_dict(state["source"])

    def save_checkpoint(self) -> None:
        if self.run_dir is None:
            return
        tmp = self.run_dir / "checkpoint.pt.tmp"
        torch.save(self.state(), tmp)
        os.replace(tmp, self.run_dir / "checkpoint.pt")

    @property
    def writer(self):
        if self._writer is None and self.run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir), purge_step=self.iteration + 1)
        return self._writer

    def _log(self, scalars: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in scalars.items():
            if value is not None and math.isfinite(float(value)):
                self.writer.add_scalar(key, float(value), step)

    # --- evaluation ---------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, n: int | None = None, figure: bool | None = None, repeat: int = 0) -> dict:
        """Metrics of ``n`` on-policy trajectories (and exact samples, where the target has them).

        Uses its own generator seeded from (seed, iteration, repeat), so evaluating never perturbs
        training; ``repeat`` draws independent evaluation batches of the same model.
        """
        n = n or self.config.eval_samples
        target = self.mdp.target
        eval_seed = self.config.seed * 1_000_003 + self.iteration + repeat * 7_919_000_003
        gen = torch.Generator(self.config.device).manual_seed(eval_seed)
        cpu_gen = torch.Generator().manual_seed(eval_seed)
        if self.agent.conditions is not None:
            return self._evaluate_conditional(n, gen, figure)
        traj = self.agent.sample(n, gen)
        x = traj.terminal
        if repeat == 0:
            self.last_samples = x
        exact = log_w_bwd = None
        if target.has_sampler:
            exact = target.sample(n, cpu_gen).to(self.config.device)
            log_w_bwd = self.agent.sample_backward(exact, gen).log_weight
        result = metrics.summarize(traj.log_weight, target.log_Z, x, exact, log_w_bwd, target)
        learned = self.agent.learned_log_z()
        result["log_z_learned"] = None if learned is None else float(learned)
        if (self.config.figures if figure is None else figure) and self.run_dir is not None:
            from diffsampler.agents.plotting import plot_samples

            sets = ({"exact": exact[:1000]} if exact is not None else {}) | {"model": x[:1000]}
            if self.agent.source is not None and len(self.agent.source.replay) > 0:
                source = self.agent.source
                use_ls = source.ls_buffer is not None and len(source.ls_buffer) > 0
                sets["buffer"] = (source.ls_buffer if use_ls else source.replay).sample(1000, gen)[0]
            path = self.run_dir / "figures" / f"samples_{self.iteration:06d}.png"
            plot_samples(target, sets, str(path), f"{self.config.preset} on {self.config.env_id}, it {self.iteration}")
        return result

    def _evaluate_conditional(self, n: int, gen, figure: bool | None) -> dict:
        """Per-condition metrics averaged over the evaluation conditions (``agents.conditional``)."""
        target = self.mdp.target
        k = self.config.eval_per_condition or conditional.default_per_condition(n, len(target.eval_conditions))
        result, x = conditional.evaluate_conditional(self.agent, k, gen)
        if (self.config.figures if figure is None else figure) and self.run_dir is not None:
            from diffsampler.agents.plotting import plot_conditional_samples

            path = self.run_dir / "figures" / f"samples_{self.iteration:06d}.png"
            title = f"{self.config.preset} on {self.config.env_id}, it {self.iteration}"
            plot_conditional_samples(target, target.eval_conditions, x, str(path), title)
        return result

    def evaluate_repeated(self, repeats: int) -> dict:
        """Mean and standard deviation of each metric over ``repeats`` independent evaluation batches.

        Separates the evaluation's own noise (a 2,000-sample log-mean-exp is noisy) from the model's
        quality. Returns ``{key: {"mean", "std", "values"}}`` for the numeric metrics.
        """
        if repeats < 2:
            raise ValueError(f"repeats must be >= 2, got {repeats!r}")
        runs = [self.evaluate(figure=False, repeat=r + 1) for r in range(repeats)]
        out = {}
        for key in runs[0]:
            values = [r[key] for r in runs]
            if all(isinstance(v, (int, float)) for v in values):
                t = torch.tensor(values, dtype=torch.float64)
                out[key] = {"mean": float(t.mean()), "std": float(t.std()), "values": values}
        return out

    # --- the loop -----------------------------------------------------------------------------------

    def run(self, progress: bool = True) -> dict:
        """Train up to ``config.iterations``, evaluating, logging and checkpointing on the way."""
        from tqdm.auto import tqdm

        cfg = self.config
        start = time.perf_counter()
        bar = tqdm(total=cfg.iterations, initial=self.iteration, disable=not progress, dynamic_ncols=True)
        window_start, window_iters = time.perf_counter(), 0
        while self.iteration < cfg.iterations:
            it = self.iteration
            count = self._counter.count
            backward_x = self.agent.backward_batch(it, self.generator, self.cpu_generator)
            out = self.agent.train_step(it, self.generator, backward_x)
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
                    },
                    self.iteration,
                )
                bar.set_postfix(loss=f"{loss:.3g}", **self._postfix())
                if not math.isfinite(loss):
                    raise FloatingPointError(f"training loss became {loss} at iteration {self.iteration}")
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

    def _postfix(self) -> dict:
        keys = ("delta_log_z", "delta_log_z_rw", "w2") if self.mdp.target.log_Z is not None else ("log_z", "log_z_rw")
        return {k: f"{self.last_eval[k]:.3f}" for k in keys if self.last_eval.get(k) is not None}

    def finish(self, wall_seconds: float) -> dict:
        """Final metrics (flat keys), written to ``metrics.json`` in the run directory."""
        if not self.last_eval:
            self.last_eval = self.evaluate()
        result = {k: self.last_eval.get(k) for k in metrics.METRIC_KEYS}
        result |= {k: v for k, v in self.last_eval.items() if k not in result}
        result["ms_per_iteration"] = 1000 * self.train_seconds / max(self.iteration, 1)
        result["iterations"] = self.iteration
        result["wall_seconds"] = wall_seconds
        result["energy_evaluations"] = self.energy_evaluations
        if self.writer is not None:
            self.writer.flush()
        if self.run_dir is not None:
            if self.config.save_samples and self.last_samples is not None:
                tmp = self.run_dir / "samples.pt.tmp"
                torch.save(self.last_samples[: self.config.save_samples].cpu().clone(), tmp)
                os.replace(tmp, self.run_dir / "samples.pt")
            (self.run_dir / "metrics.json").write_text(json.dumps(result, indent=2))
        return result
