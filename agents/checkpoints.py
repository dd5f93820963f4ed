"""Checks of a GFlowNet run's files: what ``Trainer.resume`` reads and what ``Trainer.save_checkpoint`` writes.

Every damaged or foreign file is a one-line ValueError naming it and what is wrong (``--resume`` prints it
and exits with status 2): config.json that is not JSON or not a ``TrainConfig`` (e.g. ``"agent": null``),
a checkpoint that is empty, truncated, not a checkpoint, or would run code (``RunDirectory.load_checkpoint``
loads with ``weights_only=True``), or one whose iteration, seed or agent config disagree with config.json.
A checkpoint is never written with a non-finite tensor in it.
"""

from __future__ import annotations

import numbers

from diffsampler.agents import runlog
from diffsampler.agents.config import from_dict, to_dict
from diffsampler.agents.guard import nonfinite_tensors
from diffsampler.agents.runner import RunDirectory


def read_config(directory: RunDirectory, config_type):
    """config.json of ``directory`` as a ``config_type``; a ValueError naming the file otherwise."""
    data = runlog.read_config(directory)
    try:
        return from_dict(config_type, data)
    except (TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{directory / 'config.json'} is not the config of a GFlowNet run: {err}") from None


def same_config(directory: RunDirectory, config) -> bool:
    """Whether the directory's config.json already holds ``config`` (a resume then never rewrites it); the
    ``versions`` recorded beside the fields (``agents.runlog.write_config``) are not compared."""
    return directory.exists("config.json") and runlog.same_config(directory, config)


def _same_agent(recorded, agent) -> bool:
    """Whether a checkpoint's recorded agent config is ``agent``: config fields added since it was written take
    their defaults (so older runs still resume)."""
    try:
        return to_dict(from_dict(type(agent), recorded)) == to_dict(agent)
    except (TypeError, ValueError, AttributeError):
        return False


def check_state(state: dict, config, path) -> None:
    """A checkpoint must be this run's: its iteration an integer within the budget, its seed and agent config
    those of config.json (checkpoints written before they were recorded carry neither)."""
    it = state.get("iteration")
    if isinstance(it, bool) or not isinstance(it, numbers.Integral) or not 0 <= it <= config.iterations:
        raise ValueError(f"{path}: iteration {it!r} is not an integer in [0, {config.iterations}] (the run's budget)")
    if "seed" in state and state["seed"] != config.seed:
        raise ValueError(f"{path} was written by a run with seed {state['seed']!r}, but config.json says {config.seed}")
    if "agent_config" in state and not _same_agent(state["agent_config"], config.agent):
        raise ValueError(f"{path} was written by a run with another agent config than config.json's")
    seconds = state.get("train_seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not 0 <= seconds < float("inf"):
        raise ValueError(f"{path}: train_seconds {seconds!r} is not a finite number >= 0")
    evaluations = state.get("energy_evaluations", 0)
    if isinstance(evaluations, bool) or not isinstance(evaluations, numbers.Integral) or evaluations < 0:
        raise ValueError(f"{path}: energy_evaluations {evaluations!r} is not an integer >= 0")


def check_finite(state: dict, path, iteration: int) -> None:
    """A FloatingPointError (and no file written) when ``state`` holds a non-finite tensor."""
    broken = nonfinite_tensors(state)
    if broken:
        more = " ..." if len(broken) > 3 else ""
        raise FloatingPointError(
            f"not writing {path} at iteration {iteration}: non-finite values in {', '.join(broken[:3])}{more}; "
            "the previous checkpoint is kept"
        )
