"""Curves, energy marks, repeated evaluation and run logging (agents.runlog, agents.budget) for every runner."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diffsampler.agents.budget import EnergyMarks, check_marks
from diffsampler.agents.config import apply_overrides, parse_value
from diffsampler.agents.evaluation import combine_repeats
from diffsampler.agents.presets import PRESETS
from diffsampler.agents.runlog import read_curve, versions
from diffsampler.agents.runs import RunSpec, energy_spec, run
from diffsampler.agents.training import TrainConfig, Trainer

ENV = ("DiffSampler-Manywell-v0", {"dim": 4, "num_steps": 4})


def _config(**kw) -> TrainConfig:
    """tb-expl-lp on Manywell-4 with T = 4 and batch 16: 16 (T + 1) = 80 energy evaluations per iteration."""
    base = TrainConfig(
        env_id=ENV[0],
        env_kwargs=dict(ENV[1]),
        preset="tb-expl-lp",
        agent=PRESETS["tb-expl-lp"].agent,
        iterations=10,
        eval_every=5,
        eval_samples=32,
        log_every=3,
        checkpoint_every=5,
        figures=False,
    )
    return dataclasses.replace(apply_overrides(base, {"batch_size": "16"}), **kw)


def _events(path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_marks_hold_the_last_model_within_each_budget(tmp_path):
    result = Trainer(_config(eval_energy=(200, 500), energy_budget=700), tmp_path / "run").run(progress=False)
    marked = {m: p for p in read_curve(tmp_path / "run") for m in p["marks"]}
    # 80 per iteration: 2 iterations (160) fit 200, 6 (480) fit 500, 8 (640) fit 700
    assert {m: (p["iteration"], p["energy_evaluations"]) for m, p in marked.items()} == {
        200: (2, 160),
        500: (6, 480),
        700: (8, 640),
    }
    # the run ends on the last model within its energy budget, and that is the model a 2-iteration run trains
    assert (result["iterations"], result["energy_evaluations"]) == (8, 640)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["iteration"] == 8
    short = Trainer(_config(iterations=2), tmp_path / "short").run(progress=False)
    assert marked[200]["metrics"]["w2"] == short["w2"] and marked[200]["metrics"]["log_z"] == short["log_z"]


def test_repeated_evaluation_is_the_mean_of_independent_batches(tmp_path):
    result = Trainer(_config(iterations=3, eval_repeats=3), tmp_path / "run").run(progress=False)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["eval_repeats"] == 3 and len(set(saved["eval_values"]["w2"])) == 3  # independent batches
    for key in ("log_z", "log_z_rw", "w2", "ess"):
        values = saved["eval_values"][key]
        assert result[key] == pytest.approx(sum(values) / 3)
        assert saved["eval_std"][key] == pytest.approx(torch.tensor(values, dtype=torch.float64).std().item())
    assert combine_repeats([{"a": 1, "b": None}]) == {"a": 1, "b": None, "eval_repeats": 1}
    both = combine_repeats([{"a": 1.0, "b": None}, {"a": 3.0, "b": 2.0}])
    assert both["a"] == 2.0 and both["b"] is None and both["eval_std"] == {"a": pytest.approx(math.sqrt(2))}


def test_events_hold_energy_axis_learned_log_z_gradient_norm_and_figures(tmp_path):
    trainer = Trainer(_config(iterations=7, eval_every=4, figures=True), tmp_path / "run")
    trainer.run(progress=False)
    main, by_energy = _events(tmp_path / "run"), _events(tmp_path / "run" / "by_energy")
    scalars = set(main.Tags()["scalars"])
    assert {"train/energy_evaluations", "train/grad_norm", "train/log_z_learned", "eval/w2"} <= scalars
    assert [e.value for e in main.Scalars("train/energy_evaluations")] == [240, 480, 560]
    grads = [p.grad.norm() for p in trainer.agent.parameters() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack(grads))
    assert main.Scalars("train/grad_norm")[-1].value == pytest.approx(float(norm), rel=1e-5)
    assert main.Scalars("train/log_z_learned")[-1].value == pytest.approx(float(trainer.agent.learned_log_z()))
    curve = read_curve(tmp_path / "run")
    assert [e.step for e in by_energy.Scalars("eval_by_energy/w2")] == [p["energy_evaluations"] for p in curve]
    assert [e.step for e in main.Scalars("eval/w2")] == [p["iteration"] for p in curve] == [4, 7]
    assert "samples" in main.Tags()["images"]  # add_figure


def test_config_records_versions_and_resume_keeps_one_curve(tmp_path, monkeypatch):
    saved_at, save = [], Trainer.save_checkpoint

    def save_at_2(trainer):  # a run killed after iteration 4 whose last checkpoint was at iteration 2
        if trainer.iteration == 2:
            saved_at.append(2)
            save(trainer)

    monkeypatch.setattr(Trainer, "save_checkpoint", save_at_2)
    Trainer(_config(iterations=4, eval_every=1, checkpoint_every=2), tmp_path / "run").run(progress=False)
    assert [p["iteration"] for p in read_curve(tmp_path / "run")] == [1, 2, 3, 4] and saved_at == [2]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["versions"] == versions() and config["versions"]["torch"] == torch.__version__
    assert config["versions"]["git"] is None or len(config["versions"]["git"]["commit"]) == 40
    monkeypatch.undo()
    resumed = Trainer.resume(tmp_path / "run")  # config.json's versions do not stop from_dict
    assert resumed.iteration == 2
    resumed.run(progress=False)  # the points after the checkpoint are evaluated again, not duplicated
    assert [p["iteration"] for p in read_curve(tmp_path / "run")] == [1, 2, 3, 4]


def _tiny(preset: str, budget: int, **overrides) -> RunSpec:
    return RunSpec(ENV[0], preset, budget=budget, env_kwargs=dict(ENV[1]), overrides={"eval_samples": "24"} | overrides)


def test_mala_curve_smc_one_point_and_their_repeats(tmp_path):
    mala = run(_tiny("mala", 9, chains="24", eval_every="3", eval_repeats="2", thin="2"), tmp_path / "mala")
    curve = read_curve(tmp_path / "mala")
    assert [p["iteration"] for p in curve] == [3, 6, 9]
    assert [p["energy_evaluations"] for p in curve] == [24 * 4, 24 * 7, 24 * 10] and mala["energy_evaluations"] == 240
    assert mala["eval_repeats"] == 2 and set(mala["eval_std"]) >= {"w2", "sinkhorn", "mmd"}
    smc = run(_tiny("smc", 3, particles="24", mala_steps="1", eval_repeats="3"), tmp_path / "smc")
    (point,) = read_curve(tmp_path / "smc")
    assert (point["iteration"], point["energy_evaluations"]) == (3, 24 * 4) == (3, smc["energy_evaluations"])
    assert "log_z" not in smc["eval_std"] and smc["eval_repeats"] == 3  # one SMC run: one log Z estimate
    for name in ("mala", "smc"):
        acc = _events(tmp_path / name)
        assert "eval/w2" in acc.Tags()["scalars"] and "samples" in acc.Tags()["images"]
        assert "eval_by_energy/w2" in _events(tmp_path / name / "by_energy").Tags()["scalars"]
        assert "versions" in json.loads((tmp_path / name / "config.json").read_text())


def test_rl_run_evaluates_at_its_energy_marks(tmp_path):
    pytest.importorskip("stable_baselines3")
    small = {"n_envs": "8", "batch_size": "16", "eval_repeats": "2"}
    spec = energy_spec(_tiny("sb3-ppo", 1, **small), (12, 30))  # batches of 8 episodes: 8 fits 12, 24 fits 30
    assert spec.budget == 3 * 8 * 4 and spec.overrides["eval_energy"] == (12, 30)
    result = run(spec, tmp_path / "rl")
    marked = {m: p["energy_evaluations"] for p in read_curve(tmp_path / "rl") for m in p["marks"]}
    assert marked == {12: 8, 30: 24} and result["energy_evaluations"] == 24 and result["eval_repeats"] == 2
    assert (tmp_path / "rl" / "samples.pt").exists() and "samples" in _events(tmp_path / "rl").Tags()["images"]


def test_energy_runs_per_runner():
    gfn = energy_spec(RunSpec(*ENV[:1], "tb-expl-ls", env_kwargs=dict(ENV[1])), (1000, 100_000))
    assert gfn.budget == 100_000 // 300 + 1
    assert gfn.overrides == {"eval_energy": (1000, 100_000), "energy_budget": 100_000}
    assert energy_spec(RunSpec(ENV[0], "smc"), (100_000,)).budget == 9  # 2,000 (1 + 9 x 5) <= 1e5
    assert energy_spec(RunSpec(ENV[0], "mala"), (100_000,)).budget == 49  # 2,000 (1 + 49) <= 1e5
    with pytest.raises(ValueError, match="below one SMC temperature"):
        energy_spec(RunSpec(ENV[0], "smc"), (5000,))
    marks = EnergyMarks((300, 100, 200), spent=150)
    assert marks.pending == [200, 300] and marks.crossed(150, 250) == [200] and marks.due(250, 60) == [300]
    assert check_marks([5, 5, 1]) == (1, 5)
    with pytest.raises(ValueError, match="eval_energy"):
        check_marks([0])
    assert parse_value("1e5, 1e6", tuple[int, ...], "eval_energy") == (100_000, 1_000_000)
    assert shutil.which("git") is None or versions()["git"] is not None


def test_benchmark_equal_budget_tables_figure_and_resume(tmp_path):
    pytest.importorskip("stable_baselines3")
    from diffsampler.agents.benchmark import BenchmarkConfig, run_benchmark
    from diffsampler.agents.benchmark.budgets import budget_tables, energy_label
    from diffsampler.agents.budget import parse_energies

    small = {"eval_samples": 24, "figures": False, "particles": 24, "mala_steps": 1, "n_envs": 8, "batch_size": 16}
    cfg = BenchmarkConfig(
        out=str(tmp_path / "b"),
        targets=("manywell8",),
        presets=("tb-expl", "smc", "sb3-ppo"),
        seeds=1,
        energy_budgets=(100, 300),
        eval_repeats=2,
        overrides=small,
        env_overrides={"num_steps": 4},
        backend="inline",
        progress=False,
    )
    summary = run_benchmark(cfg)
    # one run to the largest budget for tb-expl and PPO, one run per budget for SMC
    keys = [r["key"] for r in summary.records]
    assert keys == [
        "manywell8-tb-expl-s0-e300",
        "manywell8-smc-s0-e100",
        "manywell8-smc-s0-e300",
        "manywell8-sb3-ppo-s0-e300",
    ]
    assert summary.failed == 0 and run_benchmark(cfg).ran == 0  # resumable: finished runs are skipped
    table = (tmp_path / "b" / "table.md").read_text()
    rows = {
        line.split("|")[1].strip(): line
        for line in table.split("Cost of each cell")[0].splitlines()
        if line.startswith("| ") and "---" not in line
    }
    assert "## manywell8: Δlog Z^RW / W2" in table
    assert rows["TB+Expl. (`tb-expl`)"].count(" ± ") == 4  # two budgets x (Δlog Z^RW, W2), std over 2 repeats
    assert (tmp_path / "b" / "figures" / "manywell8_budget.png").exists()
    cost = table.split("Cost of each cell")[1]
    assert "| TB+Expl. (`tb-expl`) | 6 · 96 | 18 · 288 |" in cost and "| SMC (`smc`) | 3 · 96 | 11 · 288 |" in cost
    assert "| `sb3-ppo` | 384 · 96 | 1,184 · 296 |" in cost  # whole batches of 8 episodes
    wider = budget_tables(summary.records, None, (100, 300, 10**9), None)
    assert wider.count("| not run (~") == 3  # a budget without runs: estimated from the measured rate
    assert (
        energy_label(10**7) == "1e7"
        and energy_label(250_000) == "250000"
        and parse_energies("1e6,1e5") == (10**5, 10**6)
    )
