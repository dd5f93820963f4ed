"""Trainer: checkpoint/resume continues identically; run directory contents; the CLI."""

import json
import time

import pytest
import torch

from diffsampler.agents.config import apply_overrides
from diffsampler.agents.presets import PRESETS
from diffsampler.agents.runlog import read_curve
from diffsampler.agents.runner import FINAL_KEYS
from diffsampler.agents.training import TrainConfig, Trainer
from scripts import train_agent


def _config(**kw):
    base = dict(
        env_id="DiffSampler-GMM25-v0",
        env_kwargs={"num_steps": 8},
        preset="tb-expl",
        agent=PRESETS["tb-expl"].agent,
        iterations=6,
        eval_every=3,
        eval_samples=64,
        log_every=2,
        checkpoint_every=3,
        figures=False,
    )
    return TrainConfig(**(base | kw))


def test_resume_continues_identically(tmp_path):
    full = Trainer(_config(), tmp_path / "full")
    full.run(progress=False)
    half = Trainer(_config(iterations=3), tmp_path / "half")
    half.run(progress=False)
    resumed = Trainer.resume(tmp_path / "half", iterations=6)
    assert resumed.iteration == 3
    resumed.run(progress=False)
    for (name, a), b in zip(full.agent.state_dict().items(), resumed.agent.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(full.generator.get_state(), resumed.generator.get_state())


def test_a_resumed_run_reports_the_wall_time_of_the_whole_run(tmp_path):
    Trainer(_config(iterations=3), tmp_path / "half").run(progress=False)
    curve = tmp_path / "half" / "curve.jsonl"
    points = [json.loads(line) for line in curve.read_text().splitlines()]
    points[-1]["wall_seconds"] = 1000.0  # the first part of the run took 1000 s
    curve.write_text("".join(json.dumps(p) + "\n" for p in points))
    start = time.perf_counter()
    result = Trainer.resume(tmp_path / "half", iterations=6).run(progress=False)
    assert 1000.0 < result["wall_seconds"] < 1000.0 + time.perf_counter() - start
    assert read_curve(curve)[-1]["wall_seconds"] <= result["wall_seconds"]


def test_run_directory_holds_config_events_figures_and_metrics(tmp_path):
    trainer = Trainer(
        _config(figures=True, env_id="DiffSampler-Manywell-v0", env_kwargs={"dim": 4, "num_steps": 8}),
        tmp_path / "run",
    )
    result = trainer.run(progress=False)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "checkpoint.pt", "metrics.json", "figures"} <= files
    assert any(name.startswith("events.out.tfevents") for name in files)
    assert list((tmp_path / "run" / "figures").glob("*.png"))
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(FINAL_KEYS) <= set(saved) and saved == pytest.approx(result, nan_ok=True)
    assert saved["iterations"] == 6 and saved["ms_per_iteration"] > 0
    assert saved["delta_log_z"] == pytest.approx(abs(saved["log_z"] - trainer.mdp.target.log_Z))


def test_overrides_reach_nested_fields_and_reject_unknown_names():
    cfg = apply_overrides(_config(), {"langevin": "true", "lr_policy": "3e-4", "exploration_decay": "none"})
    assert cfg.agent.policy.langevin is True and cfg.agent.lr_policy == 3e-4 and cfg.agent.exploration_decay is None
    with pytest.raises(ValueError, match="lr_polcy"):
        apply_overrides(_config(), {"lr_polcy": "1"})
    with pytest.raises(ValueError, match="abc"):
        apply_overrides(_config(), {"batch_size": "abc"})


def test_cli_trains_and_writes_metrics(tmp_path, capsys):
    code = train_agent.main(
        [
            "--env",
            "DiffSampler-Manywell-v0",
            "--preset",
            "tb",
            "--iterations",
            "4",
            "--run-dir",
            str(tmp_path / "cli"),
            "--dim",
            "4",
            "--num-steps",
            "6",
            "--eval-samples",
            "32",
            "--figures",
            "false",
            "--no-progress",
        ]
    )
    assert code == 0
    cfg = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert cfg["env_kwargs"] == {"dim": 4, "num_steps": 6} and cfg["iterations"] == 4
    out = capsys.readouterr().out
    assert "delta_log_z_rw" in out and "w2" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--preset", "nope"], "nope"),
        (["--env", "DiffSampler-Nope-v0"], "Nope"),
        (["--dim", "3", "--env", "DiffSampler-Manywell-v0"], "3"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ],
)
def test_cli_bad_input_is_a_clear_error(argv, message, capsys, tmp_path):
    assert train_agent.main(argv + ["--run-dir", str(tmp_path / "x"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_repeated_evaluation_of_a_saved_run(tmp_path, capsys):
    Trainer(_config(), tmp_path / "run").run(progress=False)
    assert train_agent.main(["--resume", str(tmp_path / "run"), "--evaluate", "3"]) == 0
    saved = json.loads((tmp_path / "run" / "eval_repeats.json").read_text())
    values = saved["log_z_rw"]["values"]
    assert len(values) == 3 and len(set(values)) == 3  # independent batches
    assert saved["log_z_rw"]["mean"] == pytest.approx(sum(values) / 3)
    assert "| log_z_rw |" in capsys.readouterr().out
    assert train_agent.main(["--resume", str(tmp_path / "run"), "--evaluate", "1"]) == 2


def test_evaluate_needs_resume(tmp_path, capsys):
    assert train_agent.main(["--evaluate", "3", "--run-dir", str(tmp_path / "none")]) == 2
    assert "--resume" in capsys.readouterr().err and not (tmp_path / "none").exists()


def test_resume_rejects_overrides_instead_of_dropping_them(tmp_path, capsys):
    assert train_agent.main(["--resume", str(tmp_path), "--lr-policy", "1e-4"]) == 2
    assert "--lr-policy would not be applied" in capsys.readouterr().err


def test_energy_evaluations_count_training_rows_only(tmp_path):
    tb = Trainer(_config(preset="tb", agent=PRESETS["tb"].agent, iterations=3, eval_every=2))
    result = tb.run(progress=False)
    # On-policy TB evaluates log R once per trajectory; evaluations (every 2 its) are not counted.
    assert result["energy_evaluations"] == 3 * PRESETS["tb"].agent.batch_size
    lp = Trainer(_config(preset="tb-expl-lp", agent=PRESETS["tb-expl-lp"].agent, iterations=1))
    # LP also takes the score at every non-terminal state: T + 1 rows per trajectory.
    assert lp.run(progress=False)["energy_evaluations"] == 9 * PRESETS["tb-expl-lp"].agent.batch_size


def test_runs_module_is_the_cli_code_path(tmp_path):
    from diffsampler.agents.runs import RunSpec, build, run

    spec = RunSpec(
        "DiffSampler-GMM25-v0",
        "tb",
        seed=3,
        budget=2,
        env_kwargs={"num_steps": 5},
        overrides={"eval_samples": "16", "figures": "false"},
    )
    cfg = build(spec)
    assert (cfg.iterations, cfg.seed, cfg.eval_samples, cfg.env_kwargs) == (2, 3, 16, {"num_steps": 5})
    result = run(spec, tmp_path / "r")
    assert json.loads((tmp_path / "r" / "metrics.json").read_text()) == result
    assert result["iterations"] == 2 and set(FINAL_KEYS) <= set(result)
    with pytest.raises(ValueError, match="budget"):
        RunSpec("DiffSampler-GMM25-v0", "tb", budget=0)
    with pytest.raises(ValueError, match="nope"):
        build(RunSpec("DiffSampler-GMM25-v0", "nope"))


def test_resume_of_a_baseline_run_is_a_clear_error(tmp_path, capsys):
    run_dir = tmp_path / "smc"
    argv = ["--preset", "smc", "--iterations", "3", "--run-dir", str(run_dir), "--no-progress"]
    assert train_agent.main(argv) == 0
    capsys.readouterr()
    assert train_agent.main(["--resume", str(run_dir), "--no-progress"]) == 2
    assert "'smc' method runs in one go and keeps no state to resume" in capsys.readouterr().err
