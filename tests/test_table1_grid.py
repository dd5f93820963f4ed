"""Every Table 1 row runs on every Table 1 target and on the VAE, through the CLI's code path.

A few iterations each on small settings (short T, small batches, a 6 x 6 LGCP grid, the digits VAE):
this checks that each (method, target) pair is wired end to end, not that it learns.
"""

from __future__ import annotations

import json
import math

import pytest

from diffsampler import envs
from diffsampler.agents.benchmark.jobs import TABLE1_PRESETS
from diffsampler.agents.presets import PRESETS
from diffsampler.agents.runs import RunSpec, run

TABLE1_ROWS = list(TABLE1_PRESETS)  # the paper's Table 1 rows, as the benchmark harness lists them
TARGETS = {
    "25gmm": ("DiffSampler-GMM25-v0", {}),
    "funnel": ("DiffSampler-Funnel-v0", {}),
    "manywell": ("DiffSampler-Manywell-v0", {"dim": 4}),
    "lgcp": ("DiffSampler-LGCP-v0", {"grid_size": 4}),  # the pines (skipped without the data)
    "vae": ("DiffSampler-VAE-v0", {}),
}
SMALL_GFN = {"batch_size": "12", "eval_samples": "24", "figures": "false", "log_every": "1"}
SMALL_LS = {"buffer_capacity": "64", "ls_cycle": "2", "ls_steps": "4", "ls_burn_in": "2"}


def test_every_table1_row_is_a_preset():
    assert set(TABLE1_ROWS) <= set(PRESETS)


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("preset", TABLE1_ROWS)
def test_table1_row_runs_on_target(preset, target, tmp_path, monkeypatch):
    env_id, env_kwargs = TARGETS[target]
    if target == "vae":  # the library's own digits VAE, whatever $DIFFSAMPLER_DATA says
        monkeypatch.delenv("DIFFSAMPLER_DATA", raising=False)
    if preset == "smc":
        overrides, budget = {"particles": "16", "mala_steps": "1", "eval_samples": "16", "figures": "false"}, 2
    else:
        overrides = dict(SMALL_GFN)
        if PRESETS[preset].agent.backward_source == "buffer":
            overrides |= SMALL_LS
        if target == "vae":
            overrides["condition_repeats"] = "3"
        budget = 2
    spec = RunSpec(env_id, preset, budget=budget, env_kwargs={**env_kwargs, "num_steps": 4}, overrides=overrides)
    result = run(spec, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == result
    assert math.isfinite(result["log_z"]) and result["energy_evaluations"] > 0


def test_smc_on_a_conditional_target_averages_per_condition_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("DIFFSAMPLER_DATA", raising=False)
    overrides = {"particles": "16", "mala_steps": "1", "eval_samples": "16", "figures": "false"}
    spec = RunSpec("DiffSampler-VAE-v0", "smc", budget=2, env_kwargs={"num_steps": 4}, overrides=overrides)
    result = run(spec, tmp_path / "run")
    n_images = len(envs.make_mdp("DiffSampler-VAE-v0").target.eval_conditions)
    assert result["conditions"] == n_images
    # log-mean-exp across images >= their mean, with equality only if all images had the same estimate
    assert result["log_z_rw_across_conditions"] > result["log_z"]
    assert result["energy_evaluations"] == n_images * 16 * (1 + 2 * 1)
