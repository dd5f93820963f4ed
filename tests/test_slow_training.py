"""Opt-in training regressions (``python -m pytest -m slow``): minutes of CPU each, not in CI.

Tolerances come from the paper's reported numbers for the full budget, loosened for short runs.
"""

import pytest

from diffsampler.agents.presets import PRESETS
from diffsampler.agents.training import TrainConfig, Trainer

pytestmark = pytest.mark.slow


def _run(env_id, preset, iterations, **env_kwargs):
    cfg = TrainConfig(
        env_id=env_id,
        env_kwargs=env_kwargs,
        preset=preset,
        agent=PRESETS[preset].agent,
        iterations=iterations,
        eval_every=iterations,
        figures=False,
        seed=0,
    )
    return Trainer(cfg).run(progress=False)


def test_readme_default_covers_all_25_modes():
    """The README's main job (tb-expl-lp, 2,000 iterations) on 25GMM."""
    result = _run("DiffSampler-GMM25-v0", "tb-expl-lp", 2000)
    assert result["modes_covered"] == 25
    assert result["delta_log_z_rw"] < 0.1


def test_tb_on_manywell8_learns_log_z():
    result = _run("DiffSampler-Manywell-v0", "tb-expl-lp", 3000, dim=8)
    assert result["delta_log_z_rw"] < 0.5 and result["delta_log_z"] < 2.0
