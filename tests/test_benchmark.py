"""The benchmark harness: quick mode end to end, resume, failures, tables, and the Ray backend."""

import dataclasses
import json
import math
import re
import shutil
import signal
from pathlib import Path

import matplotlib.image
import pytest

from diffsampler.agents.benchmark import QUICK, BenchmarkConfig, run_benchmark
from diffsampler.agents.benchmark.jobs import TARGET_ALIASES
from diffsampler.agents.benchmark.tables import PAPER_PATH, import_results, load_paper, render
from diffsampler.agents.presets import PRESETS, Preset
from diffsampler.agents.runner import RunDirectory
from diffsampler.agents.training import Trainer
from scripts import benchmark as cli

# --quick with tiny runs: 10 iterations of T = 10 steps, 200 evaluation trajectories.
TINY = dict(
    targets=QUICK["targets"],
    presets=QUICK["presets"],
    seeds=1,
    budget=10,
    overrides={"eval_samples": 200, "figures": False},
    env_overrides={"num_steps": 10},
    eval_repeats=1,
    progress=False,
)
TABLE_KEYS = ("delta_log_z", "delta_log_z_rw", "w2", "ess")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    cfg = BenchmarkConfig(out=str(tmp_path_factory.mktemp("bench") / "quick"), workers=2, **TINY)
    return cfg, run_benchmark(cfg)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _table1_numbers(table: str) -> list[list[float]]:
    """Numbers of each Table 1 row (mean, and std where shown)."""
    section = table.split("## Table 1")[1].split("##")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    return [[float(x) for x in re.findall(r"-?\d+\.\d+|inf|nan", row.split("|", 2)[2])] for row in rows]


def test_quick_writes_results_table_and_figures(quick):
    cfg, summary = quick
    out = Path(cfg.out)
    n = len(QUICK["targets"]) * len(QUICK["presets"])
    assert (summary.ran, summary.skipped, summary.failed) == (n, 0, 0)
    records = _lines(out / "results.jsonl")
    assert [r["key"] for r in records] == [r["key"] for r in summary.records] and len(records) == n
    for r in records:
        assert r["status"] == "ok" and r["budget"] == 10 and r["config"]["eval_samples"] == 200
        m = r["metrics"]
        assert all(math.isfinite(m[k]) for k in TABLE_KEYS), m
        assert m["iterations"] == 10 and m["ms_per_iteration"] > 0 and m["energy_evaluations"] >= 10 * 300
        assert (Path(r["run_dir"]) / "samples.pt").exists()
    rows = _table1_numbers((out / "table.md").read_text())
    assert len(rows) == len(QUICK["presets"]) and all(len(row) == 2 * len(QUICK["targets"]) for row in rows)
    assert all(math.isfinite(x) for row in rows for x in row)
    assert (out / "table.md").read_text().split("## Table 1")[1].split("##")[0].count("**") == 2 * 2 * 2
    for target in QUICK["targets"]:
        image = matplotlib.image.imread(out / "figures" / f"{target}_samples.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0


def test_second_invocation_trains_nothing(quick):
    cfg, first = quick
    stamps = {p: p.stat().st_mtime_ns for p in Path(cfg.out).glob("runs/*/*") if p.is_file()}
    summary = run_benchmark(cfg)
    assert (summary.ran, summary.skipped) == (0, len(first.records))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert [r["metrics"] for r in summary.records] == [r["metrics"] for r in first.records]


def test_interrupted_runs_are_restarted_cleanly(quick, tmp_path):
    cfg, first = quick
    out = tmp_path / "copy"
    shutil.copytree(cfg.out, out)
    killed, partial = first.records[0]["key"], first.records[-1]["key"]
    (out / "runs" / killed / "metrics.json").unlink()  # killed after its last checkpoint: evaluated again
    for f in (out / "runs" / partial).iterdir():  # killed just after it started
        if f.name != "job.json":
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    (out / "runs" / partial / "stale.txt").write_text("left by the killed attempt")
    summary = run_benchmark(dataclasses.replace(cfg, out=str(out), backend="inline", figures=False))
    assert (summary.ran, summary.skipped, summary.failed) == (2, len(first.records) - 2, 0)
    assert not (out / "runs" / partial / "stale.txt").exists()
    new = {r["key"]: r["metrics"] for r in _lines(out / "results.jsonl")}
    for r in first.records:  # same seeds, same results (evaluations are seeded by seed and iteration)
        assert all(new[r["key"]][k] == r["metrics"][k] for k in TABLE_KEYS)
    curve = _lines(out / "runs" / killed / "curve.jsonl")
    assert [p["iteration"] for p in curve] == [p["iteration"] for p in first.records[0]["curve"]]


class _StopAt:
    """A ``run_loop`` stop flag that fires once the trainer reaches ``iteration`` (a SIGTERM there)."""

    def __init__(self, trainer, iteration):
        self.trainer, self.iteration = trainer, iteration

    @property
    def signum(self):
        return signal.SIGTERM if self.trainer.iteration >= self.iteration else None


def test_a_run_interrupted_mid_way_continues_from_its_checkpoint(tmp_path, monkeypatch):
    """Killed after its iteration-5 checkpoint, the run continues there (it does not start over) and ends
    with the metrics of the uninterrupted run, bit for bit; a damaged checkpoint starts it again."""
    cfg = BenchmarkConfig(
        out=str(tmp_path / "whole"), targets=("25gmm",), presets=("tb",), seeds=1, budget=10, backend="inline",
        overrides={"eval_samples": 100, "figures": False, "checkpoint_every": 5}, env_overrides={"num_steps": 10},
        progress=False,
    )  # fmt: skip
    (whole,) = run_benchmark(cfg).records
    cut = dataclasses.replace(cfg, out=str(tmp_path / "cut"))
    run_loop = Trainer.run_loop
    monkeypatch.setattr(Trainer, "run_loop", lambda self, progress, stop: run_loop(self, progress, _StopAt(self, 5)))
    (first,) = run_benchmark(cut).records
    assert first["status"] == "failed" and "interrupted by SIGTERM at iteration 5" in first["error"]
    monkeypatch.setattr(Trainer, "run_loop", run_loop)
    starts = []
    monkeypatch.setattr(Trainer, "load_state", _recording(Trainer.load_state, starts))
    (second,) = run_benchmark(cut).records
    assert second["status"] == "ok" and starts == [5]  # loaded the iteration-5 checkpoint
    untimed = lambda metrics: {k: v for k, v in metrics.items() if k not in TIMINGS}  # noqa: E731
    assert untimed(second["metrics"]) == untimed(whole["metrics"])
    assert [p["iteration"] for p in second["curve"]] == [p["iteration"] for p in whole["curve"]]
    # a damaged checkpoint: said, and the run starts again (same seed, same numbers)
    run_dir = Path(second["run_dir"])
    (run_dir / "metrics.json").unlink()
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    starts.clear()
    (third,) = run_benchmark(cut).records
    assert third["status"] == "ok" and starts == []
    assert {k: third["metrics"][k] for k in TABLE_KEYS} == {k: whole["metrics"][k] for k in TABLE_KEYS}


def test_a_run_directory_in_use_is_left_alone(tmp_path):
    """Another process writing a job's directory (its lock held): the job fails naming the holder, and
    nothing of that directory is wiped or resumed."""
    cfg = BenchmarkConfig(
        out=str(tmp_path), targets=("25gmm",), presets=("tb",), seeds=1, budget=3, backend="inline",
        overrides={"eval_samples": 100, "figures": False}, env_overrides={"num_steps": 10}, progress=False,
    )  # fmt: skip
    run_dir = tmp_path / "runs" / "25gmm-tb-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_bytes(b"someone else's")
    busy = RunDirectory(run_dir)
    busy.lock()
    try:
        (record,) = run_benchmark(cfg).records
    finally:
        busy.close()
    assert record["status"] == "failed" and "is in use by pid" in record["error"]
    assert (run_dir / "checkpoint.pt").read_bytes() == b"someone else's"
    (record,) = run_benchmark(cfg).records  # released: the job runs
    assert record["status"] == "ok"


TIMINGS = ("ms_per_iteration", "wall_seconds", "train_seconds")


def _recording(load_state, iterations):
    def wrapped(self, state, path="checkpoint"):
        iterations.append(state["iteration"])
        return load_state(self, state, path)

    return wrapped


def test_a_finished_run_of_other_settings_is_not_reused(quick):
    cfg, _ = quick
    with pytest.raises(ValueError, match="another --out"):
        run_benchmark(dataclasses.replace(cfg, budget=11))


def test_failed_run_is_recorded_and_the_others_finish(tmp_path, monkeypatch):
    monkeypatch.setitem(PRESETS, "broken", Preset(PRESETS["tb"].agent, 10, "fails", env_kwargs={"num_steps": 0}))
    cfg = BenchmarkConfig(
        out=str(tmp_path), targets=("25gmm",), presets=("broken", "tb"), seeds=1, budget=3, backend="inline",
        overrides={"eval_samples": 100, "figures": False}, progress=False,
    )  # fmt: skip
    summary = run_benchmark(cfg)
    assert (summary.ran, summary.failed) == (2, 1)
    broken, ok = _lines(tmp_path / "results.jsonl")
    assert broken["status"] == "failed" and "num_steps" in broken["error"] and ok["status"] == "ok"
    assert "Traceback" in json.loads((tmp_path / "runs" / broken["key"] / "error.json").read_text())["traceback"]
    assert "failed (1)" in (tmp_path / "table.md").read_text()
    assert run_benchmark(cfg).ran == 1  # a failed run is retried, a finished one is not


def test_table_bolds_the_best_and_uses_raw_estimates_without_log_z():
    def rec(target, preset, seed, **metrics):
        return {"key": f"{target}-{preset}-s{seed}", "status": "ok", "target": target, "preset": preset,
                "seed": seed, "budget": 5, "metrics": metrics}  # fmt: skip

    records = [
        rec("25gmm", "tb", 0, delta_log_z=0.5, delta_log_z_rw=0.2, log_z=-0.5, log_z_rw=-0.2),
        rec("25gmm", "tb", 1, delta_log_z=0.7, delta_log_z_rw=0.4, log_z=-0.7, log_z_rw=-0.4),
        rec("25gmm", "pis", 0, delta_log_z=0.3, delta_log_z_rw=0.9, log_z=-0.3, log_z_rw=-0.9),
        rec("lgcp", "tb", 0, delta_log_z=None, delta_log_z_rw=None, log_z=470.0, log_z_rw=480.0),
        rec("lgcp", "pis", 0, delta_log_z=None, delta_log_z_rw=None, log_z=380.0, log_z_rw=490.0),
    ]
    table = render(records, load_paper(), compare=True, seeds=2, command=None)
    tb = next(line for line in table.splitlines() if line.startswith("| TB (`tb`)"))
    pis = next(line for line in table.splitlines() if line.startswith("| PIS (`pis`)"))
    assert "0.600 ± 0.141" in tb and "**0.300** (n=1)" in pis  # mean ± std; lower Δ is better
    assert "**0.300 ± 0.141**" in tb  # Δ^RW column
    assert "**470.00** (n=1)" in tb and "**490.00** (n=1)" in pis  # LGCP: higher log Ẑ is better
    assert "1.176 ± 0.109" in table and "-0.576" in table  # paper TB 25GMM and ours − paper
    assert "Manywell scaling" not in table  # no run at a d other than 32


def test_the_manywell_scaling_table_sets_our_runs_beside_the_papers():
    def rec(target, preset, seed, d, d_rw):
        return {"key": f"{target}-{preset}-s{seed}", "status": "ok", "target": target, "preset": preset,
                "seed": seed, "budget": 5, "metrics": {"delta_log_z": d, "delta_log_z_rw": d_rw}}  # fmt: skip

    records = [
        rec("manywell8", "tb-expl-lp", 0, 0.3, 0.05),
        rec("manywell8", "tb-expl-lp", 1, 0.5, 0.07),
        rec("manywell", "tb-expl-lp", 0, 7.0, 1.0),
        rec("manywell128", "tb-expl-lp-ls", 0, 60.0, 15.0),
        rec("manywell", "tb", 0, 4.0, 2.7),  # at d = 32 only: not a scaling row
    ]
    table = render(records, load_paper(), compare=True, seeds=None, command=None)
    section = table.split("## Manywell scaling", 1)[1].split("## Details", 1)[0]
    rows = {line.split(" | ")[0]: line for line in section.splitlines() if line.startswith("| ")}
    lp = next(v for k, v in rows.items() if "`tb-expl-lp`" in k)
    assert "0.400 ± 0.141 / 0.060 ± 0.014 | 0.250 / 0.040" in lp  # d = 8: ours (2 seeds), the paper's
    assert "7.000 / 1.000 | 7.460 / 1.060" in lp  # d = 32 from the Manywell-32 runs
    lp_ls = next(v for k, v in rows.items() if "`tb-expl-lp-ls`" in k)
    assert "60.00 / 15.00 | 66.60 / 14.90" in lp_ls  # fmt: fewer decimals for larger values
    assert not any("(`tb`)" in k for k in rows)


def test_importer_reads_full_budget_results():
    records = import_results(sorted((PAPER_PATH.parent / "results").glob("*.json")))
    assert {"25gmm", "manywell"} <= {r["target"] for r in records} and all(r["status"] == "ok" for r in records)
    assert {"tb", "tb-expl", "tb-expl-ls"} <= {r["preset"] for r in records if r["target"] == "manywell"}
    table = render(records, load_paper(), compare=True, seeds=None, command=None)
    assert "| TB+Expl.+LS (`tb-expl-ls`) | " in table and "4.570 ± 2.130" in table


def test_importer_keeps_variants_and_short_runs_in_their_own_rows(tmp_path):
    base = {"env_id": "DiffSampler-GMM25-v0", "env_kwargs": {}, "preset": "tb-expl-ls", "seed": 0}
    runs = {
        "default": base
        | {"iterations": 25_000, "overrides": {"buffer_sampling": "uniform"}, "metrics": {"delta_log_z": 0.2}},
        "rank": base
        | {"iterations": 25_000, "overrides": {"buffer_sampling": "rank"}, "metrics": {"delta_log_z": 0.4}},
        "short": base | {"iterations": 300, "metrics": {"delta_log_z": 0.9}},
    }
    for name, data in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    records = import_results(sorted(tmp_path.glob("*.json")))
    rows = {r["preset"]: r["metrics"]["delta_log_z"] for r in records}
    # the uniform override is the preset's own setting now, so that run is the preset's row
    assert rows == {"tb-expl-ls": 0.2, "tb-expl-ls (buffer_sampling=rank)": 0.4, "tb-expl-ls (300 it)": 0.9}
    table = render(records, load_paper(), compare=True, seeds=None, command=None)
    assert "| TB+Expl.+LS (`tb-expl-ls`) | 0.200 |" in table  # not averaged with the variants


def test_import_without_out_prints_table1_and_the_scaling_table(tmp_path, capsys):
    from diffsampler.cli.benchmark import main

    run = {"env_id": "DiffSampler-Manywell-v0", "env_kwargs": {"dim": 8}, "preset": "tb-expl-lp", "seed": 0}
    (tmp_path / "a.json").write_text(json.dumps(run | {"iterations": 10_000, "metrics": {"delta_log_z": 0.3}}))
    assert main(["--import", str(tmp_path), "--compare-paper", "--no-figures"]) == 0
    printed = capsys.readouterr().out
    assert "## Table 1" in printed and "## Manywell scaling" in printed and "0.300" in printed
    assert main(["--targets", "25gmm"]) == 2  # a run still needs --out
    assert "--out" in capsys.readouterr().err


def test_importer_refuses_the_same_run_twice(tmp_path):
    run = {"env_id": "DiffSampler-GMM25-v0", "env_kwargs": {}, "preset": "tb-expl", "seed": 1, "iterations": 25_000}
    (tmp_path / "old.json").write_text(json.dumps(run | {"metrics": {"delta_log_z": 0.5}}))
    (tmp_path / "new.json").write_text(json.dumps(run | {"metrics": {"delta_log_z": 0.6}}))
    with pytest.raises(ValueError, match=r"old\.json and .*new\.json are both the run '25gmm-tb-expl-s1'"):
        import_results(sorted(tmp_path.glob("*.json")))


def test_paper_json_matches_the_published_table():
    source = PAPER_PATH.parents[1].parent / "shared" / "paper_results.md"
    if not source.exists():
        pytest.skip(f"{source} not present")
    rows = {r["label"]: r for r in load_paper()["table1"]["rows"]}
    table = source.read_text().split("## Table 1")[1].split("2-Wasserstein")[0]
    checked = 0
    for line in (x for x in table.splitlines() if x.startswith("| ") and "Method" not in x and "---" not in x):
        label, *cells = (c.strip() for c in line.strip("|").split("|"))
        for (target, values), pair in zip(rows[label]["values"].items(), zip(cells[0::2], cells[1::2])):
            for key, cell in zip(values, pair):
                if "±" in cell:
                    assert values[key] == [float(x) for x in cell.split("±")], (label, target, key)
                    checked += 1
    assert checked > 100


def test_cli_dry_run_and_clear_errors(tmp_path, capsys):
    assert cli.main(["--quick", "--out", str(tmp_path), "--dry-run"]) == 0
    assert f"{len(QUICK['targets']) * len(QUICK['presets'])} runs: 0 finished" in capsys.readouterr().out
    assert cli.main(["--targets", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown target 'nope'" in capsys.readouterr().err
    assert cli.main(["--quick", "--presets", "tb,nope", "--out", str(tmp_path)]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert cli.main(["--quick", "--set", "no_such_field=1", "--out", str(tmp_path)]) == 2
    assert "no_such_field" in capsys.readouterr().err
    assert cli.main(["--quick", "--preset-budget", "tb-expl=7", "--out", str(tmp_path), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "25gmm-tb-expl-s0  budget=7" in plan and f"25gmm-tb-expl-lp-s0  budget={QUICK['budget']}" in plan
    assert cli.main(["--quick", "--preset-budget", "tb=7", "--out", str(tmp_path)]) == 2
    assert "not among the presets" in capsys.readouterr().err
    assert set(QUICK["targets"]) <= set(TARGET_ALIASES)


def test_ray_backend_runs_the_same_jobs(quick, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'diffsampler[bench]' to test the ray backend")
    cfg, local = quick
    ray_cfg = dataclasses.replace(
        cfg, out=str(tmp_path), backend="ray", ray_num_cpus=2, targets=("25gmm",), presets=QUICK["presets"][1:2]
    )
    summary = run_benchmark(ray_cfg)
    assert (summary.ran, summary.failed) == (1, 0)
    expected = {r["key"]: r["metrics"] for r in local.records}
    for r in summary.records:
        assert all(r["metrics"][k] == expected[r["key"]][k] for k in TABLE_KEYS), r["key"]
        assert (Path(r["run_dir"]) / "metrics.json").exists() and (Path(r["run_dir"]) / "samples.pt").exists()
    assert (tmp_path / "table.md").exists() and (tmp_path / "figures" / "25gmm_samples.png").exists()


@pytest.mark.parametrize("save", [0, 50])
def test_runs_save_the_final_evaluation_samples(tmp_path, save):
    import torch

    from diffsampler.agents.training import TrainConfig, Trainer

    cfg = TrainConfig(
        env_id="DiffSampler-Manywell-v0", env_kwargs={"dim": 4, "num_steps": 5}, agent=PRESETS["tb"].agent,
        iterations=2, eval_samples=80, figures=False, save_samples=save,
    )  # fmt: skip
    trainer = Trainer(cfg, tmp_path)
    trainer.run(progress=False)
    path = tmp_path / "samples.pt"
    if save == 0:
        assert not path.exists()
    else:
        assert torch.equal(torch.load(path, weights_only=True), trainer.last_samples[:save])
        assert trainer.last_samples.shape == (80, 4)
