"""Issue 18 from the CLI's code path (``agents.runs``): ``cmcd``, ``scld`` and ``tb-expl-lp`` on random time grids
train on 25GMM, Funnel and Manywell-32 at tiny budgets, report every harness metric, and resume."""

from __future__ import annotations

import json
import math

import pytest

from diffsampler.agents import runs
from diffsampler.agents.runner import FINAL_KEYS
from diffsampler.envs.registry import SHORT_NAMES

TINY = {"batch_size": "8", "eval_samples": "32", "figures": "false", "checkpoint_every": "1", "save_samples": "0"}
METHODS = {"cmcd": {}, "scld": {"segments": "2"}, "tb-expl-lp": {"time_grid": "random"}}


def _spec(preset: str, target: str, budget: int = 2) -> runs.RunSpec:
    env_id, kwargs = SHORT_NAMES[target]
    overrides = TINY | METHODS[preset]
    return runs.RunSpec(
        env_id, preset, seed=0, budget=budget, env_kwargs={**kwargs, "num_steps": 8}, overrides=overrides
    )


@pytest.mark.parametrize("target", ["25gmm", "funnel", "manywell32"])
@pytest.mark.parametrize("preset", sorted(METHODS))
def test_trains_from_the_cli_code_path(preset, target, tmp_path):
    result = runs.run(_spec(preset, target), tmp_path / "run")
    assert set(FINAL_KEYS) <= set(result) and result["iterations"] == 2 and result["energy_evaluations"] > 0
    for key in ("log_z", "log_z_rw", "delta_log_z", "delta_log_z_rw", "eubo", "w2", "ess", "sinkhorn", "mmd"):
        assert result[key] is not None and math.isfinite(result[key]), key
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["env_kwargs"].get("reference") == (None if preset == "tb-expl-lp" else "vp")


@pytest.mark.parametrize("preset", sorted(METHODS))
def test_resumes(preset, tmp_path):
    runs.run(_spec(preset, "25gmm"), tmp_path / "run")
    resumed = runs.resume(tmp_path / "run", iterations=3)
    assert resumed.iteration == 2
    assert resumed.run(progress=False)["iterations"] == 3
