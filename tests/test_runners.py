"""Every preset runs through its runner at a tiny budget; resume works, or is refused by name, per runner."""

from __future__ import annotations

import json
import math

import pytest

from diffsampler.agents import runs
from diffsampler.agents.config import field_paths
from diffsampler.agents.presets import PRESETS
from diffsampler.agents.runner import FINAL_KEYS
from diffsampler.agents.runs import RUNNERS, RunSpec, run, runner_for
from diffsampler.agents.training import Trainer

# Small settings per runner kind (the preset's agent-config type), on Manywell-4 with T = 4.
TINY = {
    "GFlowNetConfig": (2, {"batch_size": "8", "eval_samples": "16", "figures": "false", "buffer_capacity": "32"}),
    "SCLDConfig": (2, {"batch_size": "8", "eval_samples": "16", "figures": "false", "segments": "2"}),
    "SMCConfig": (2, {"particles": "16", "mala_steps": "1", "eval_samples": "16", "figures": "false"}),
    "MALAChainConfig": (3, {"chains": "16", "eval_samples": "16", "figures": "false"}),
    "RLConfig": (32, {"n_envs": "8", "batch_size": "16", "eval_samples": "16"}),
}
ENV = ("DiffSampler-Manywell-v0", {"dim": 4, "num_steps": 4})


def _spec(preset: str, **kw) -> RunSpec:
    budget, overrides = TINY[type(PRESETS[preset].agent).__name__]
    fields = field_paths(runner_for(preset).config_type)
    overrides = {k: v for k, v in overrides.items() if k in fields}
    return RunSpec(ENV[0], preset, budget=budget, env_kwargs=dict(ENV[1]), overrides=overrides, **kw)


def test_every_runner_kind_has_tiny_settings():
    assert {t.__name__ for t in RUNNERS} == set(TINY)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_runs_through_its_runner(preset, tmp_path):
    result = run(_spec(preset), tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved == result and set(FINAL_KEYS) <= set(result)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["preset"] == preset
    assert result["energy_evaluations"] > 0 and result["w2"] is not None and math.isfinite(result["w2"])
    assert 0 <= result["emc"] <= 1  # Manywell has modes: the entropic mode coverage of every sampler's samples
    if preset != "mala":  # chains give samples only
        assert math.isfinite(result["log_z"])
    assert not (tmp_path / "run" / ".lock").exists() or _unlocked(tmp_path / "run")


def _unlocked(path) -> bool:
    """The lock file may stay behind; what matters is that nobody holds it."""
    from diffsampler.agents.runner import RunDirectory

    directory = RunDirectory(path)
    directory.lock()
    directory.close()
    return True


@pytest.mark.parametrize("preset", ["smc", "mala", "sb3-ppo"])
def test_resume_of_a_run_without_state_names_the_method(preset, tmp_path):
    run(_spec(preset), tmp_path / "run")
    with pytest.raises(ValueError, match=f"the '{preset}' method runs in one go"):
        runs.resume(tmp_path / "run")


def test_resume_of_a_gflownet_run_continues_it(tmp_path):
    spec = _spec("tb-expl-lp-ls")
    run(spec, tmp_path / "run")
    resumed = runs.resume(tmp_path / "run", iterations=4)
    assert isinstance(resumed, Trainer) and resumed.iteration == 2
    assert resumed.run(progress=False)["iterations"] == 4


@pytest.mark.parametrize("preset", ["sb3-sac", "sb3-ppo", "ts-sac"])
def test_rl_on_a_conditional_target_is_refused_when_the_run_is_built(preset):
    with pytest.raises(ValueError, match="DiffSampler-VAE-v0: its target is conditional"):
        runs.build(RunSpec("DiffSampler-VAE-v0", preset))


@pytest.mark.parametrize("preset", ["smc", "tb"])
def test_metrics_json_holds_emc_as_null_for_a_target_without_modes(preset, tmp_path):
    spec = _spec(preset)
    spec = RunSpec(
        "DiffSampler-Gaussian-v0", preset, budget=spec.budget, env_kwargs={"num_steps": 4}, overrides=spec.overrides
    )
    run(spec, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "emc" in saved and saved["emc"] is None
