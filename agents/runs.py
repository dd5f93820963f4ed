"""One run of any method: the code path shared by ``scripts/train_agent.py`` and ``scripts/benchmark.py``.

A method is a preset name (``agents.presets.PRESETS``). The type of the preset's ``agent`` config
selects its runner in ``RUNNERS`` (each an ``agents.runner.Runner``): GFlowNet and PIS-style agents
train with ``agents.training.Trainer``; baselines (MCMC, RL) register runners of their own. Every
runner writes ``config.json`` and ``metrics.json`` (at least the keys of ``agents.runner.FINAL_KEYS``,
null where a metric does not apply) into the run directory and returns the metrics dict; ``resume``
continues a run directory through its runner (an error naming the method where it keeps no state).

    from diffsampler.agents.runs import RunSpec, run
    metrics = run(RunSpec("DiffSampler-Manywell-v0", "tb-expl", seed=1, budget=500), "runs/mw-tb-expl-s1")
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from diffsampler.agents.baselines import mcmc_runs
from diffsampler.agents.baselines import rl as rl_baselines
from diffsampler.agents.baselines.mcmc import MCMCMethod
from diffsampler.agents.config import check_fields, check_seed, field_paths
from diffsampler.agents.gflownet import GFlowNetConfig
from diffsampler.agents.presets import PRESETS, get_preset
from diffsampler.agents.runner import RunDirectory, Runner
from diffsampler.agents.scld_runs import RUNNERS as SCLD_RUNNERS
from diffsampler.agents.training import GFlowNetRunner


@dataclass(frozen=True)
class RunSpec:
    """What to run.

    Attributes:
        env_id: a registered ``DiffSampler-*-v0`` id.
        preset: a preset name (the method).
        seed: the run's seed.
        budget: the run's budget in the runner's unit (iterations for GFlowNet agents); None: the
            preset's default.
        env_kwargs: env keyword arguments (over the preset's env defaults).
        overrides: config field name -> value (strings are parsed by the field's type).
        device: torch device.
        threads: torch CPU threads (None: torch's default).
    """

    env_id: str
    preset: str
    seed: int = 0
    budget: int | None = None
    env_kwargs: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self):
        check_fields(self)
        check_seed(self)
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be None or >= 1, got {self.threads!r}")
        if self.budget is not None and (isinstance(self.budget, bool) or self.budget < 1):
            raise ValueError(f"budget must be None or a positive integer, got {self.budget!r}")


# Preset agent-config type -> runner. Baseline modules add their entries here.
RUNNERS: dict[type, Runner] = {
    GFlowNetConfig: GFlowNetRunner(),
    **SCLD_RUNNERS,
    **mcmc_runs.RUNNERS,
    **rl_baselines.RUNNERS,
}


def runner_for(preset_name: str) -> Runner:
    preset = get_preset(preset_name)
    kind = type(preset.agent)
    if kind not in RUNNERS and issubclass(kind, MCMCMethod):  # an MCMC method defined after this import
        RUNNERS[kind] = mcmc_runs.MCMCRunner(kind)
    if kind not in RUNNERS:
        raise ValueError(f"preset {preset_name!r} has agent config {kind.__name__} with no runner in RUNNERS")
    return RUNNERS[kind]


def split_extra(preset_name: str, extra: dict[str, Any]) -> tuple[dict, dict]:
    """Split ``--name value`` pairs into config overrides (known field names) and env kwargs (the rest)."""
    fields = field_paths(runner_for(preset_name).config_type)
    overrides = {k: v for k, v in extra.items() if k in fields}
    env_kwargs = {k: v for k, v in extra.items() if k not in fields}
    return overrides, env_kwargs


def build(spec: RunSpec) -> Any:
    return runner_for(spec.preset).build(spec, get_preset(spec.preset))


def energy_spec(spec: RunSpec, energies) -> RunSpec:
    """``spec`` as the run that stands for the energy budgets ``energies`` (``Runner.energy_run``): its budget
    in the runner's unit and the overrides (marks, a stop) that keep it within ``max(energies)``."""
    budget, overrides = runner_for(spec.preset).energy_run(build(spec), tuple(energies))
    return dataclasses.replace(spec, budget=budget, overrides={**spec.overrides, **overrides})


def run(spec: RunSpec, run_dir: str | os.PathLike | None, progress: bool = False) -> dict:
    """Build and run ``spec`` into ``run_dir``; returns the final metrics."""
    runner = runner_for(spec.preset)
    return runner.run(runner.build(spec, get_preset(spec.preset)), run_dir, progress)


def resume(run_dir: str | os.PathLike, iterations: int | None = None, writable: bool = True):
    """The resumed run of ``run_dir`` through its preset's runner (config.json names the preset; a run
    built outside a preset, ``preset="custom"``, is a GFlowNet run). A runner without state to resume
    raises a ValueError naming the method."""
    config = RunDirectory(run_dir, writable=False).read_json("config.json")
    preset = config.get("preset")
    if isinstance(preset, str) and preset in PRESETS:
        return runner_for(preset).resume(run_dir, config, iterations, writable)
    return RUNNERS[GFlowNetConfig].resume(run_dir, config, iterations, writable)
