"""The reproduction campaign's tools: ``benchmarks/campaign_table.py`` and ``benchmarks/inspect_run.py``."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


campaign_table = _load("campaign_table")
inspect_run = _load("inspect_run")
export_runs = _load("export_runs")


def _run(path: Path, preset: str, seed: int, delta: float, env="DiffSampler-GMM25-v0", **extra):
    metrics = {
        "delta_log_z": delta,
        "delta_log_z_rw": delta / 10,
        "eval_std": {"delta_log_z": 0.05, "delta_log_z_rw": 0.01},
    }
    record = {"env_id": env, "env_kwargs": {}, "preset": preset, "seed": seed, "metrics": metrics}
    record |= {"wall_seconds": 1800.0, **extra}
    (path / f"campaign-{preset}-{seed}-{extra.get('tag', '')}.json").write_text(json.dumps(record))


def test_campaign_table_averages_seeds_marks_single_runs_and_misses(tmp_path):
    paper = json.loads((ROOT / "benchmarks" / "paper_table1.json").read_text())
    for seed, delta in enumerate([0.17, 0.19, 0.21]):  # mean 0.19, sample std 0.02
        _run(tmp_path, "tb-expl-lp-ls", seed, delta)
    _run(tmp_path, "tb-expl-ls", 0, 0.9)  # one seed, far above the paper's 0.171 +- 0.013
    _run(tmp_path, "tb-expl-ls", 0, 0.2, overrides={"buffer_sampling": "rank"}, tag="rank")
    lines = campaign_table.table1(campaign_table.load(tmp_path), paper)
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| `")}
    assert "0.190 ± 0.020" in rows["`tb-expl-lp-ls`"] and "| 0,1,2 |" in rows["`tb-expl-lp-ls`"]
    assert rows["`tb-expl-lp-ls`"].endswith("| yes / yes | 1.50 |")  # 3 runs x 0.5 h
    assert "0.900 ± 0.050 (K)" in rows["`tb-expl-ls`"] and "| NO / " in rows["`tb-expl-ls`"]
    # a variant is a row of its own, never averaged into the preset
    assert "0.200 ± 0.050 (K)" in rows["`tb-expl-ls (buffer_sampling=rank)`"]


def test_campaign_table_scaling_rows(tmp_path):
    paper = json.loads((ROOT / "benchmarks" / "paper_table1.json").read_text())
    _run(tmp_path, "tb-expl-lp", 0, 0.3, env="DiffSampler-Manywell-v0", env_kwargs={"dim": 8})
    lines = campaign_table.scaling(campaign_table.load(tmp_path), paper)
    assert any(line.startswith("| `tb-expl-lp` | 8 | 0.300 ± 0.050 (K) |") and "0.25 / 0.04" in line for line in lines)
    assert campaign_table.scaling({}, paper) == []


def test_inspect_describes_exact_samples_as_the_target():
    """Exact funnel samples: the neck's share within 4 binomial standard errors of P(x0 < -3) = 15.9%;
    exact 25GMM samples leave no mode under a quarter of its share."""
    from diffsampler.envs.targets.funnel import funnel
    from diffsampler.envs.targets.gmm import gmm25

    n = 4000
    target = funnel()
    text = inspect_run.describe(target.sample(n, torch.Generator().manual_seed(0)), target)
    neck = float(text.split("neck (x0 < -3) ")[1].rstrip("%")) / 100
    p = 0.5 * math.erfc(1 / math.sqrt(2))
    assert abs(neck - p) < 4 * math.sqrt(p * (1 - p) / n)
    mixture = gmm25()
    text = inspect_run.describe(mixture.sample(n, torch.Generator().manual_seed(0)), mixture)
    assert text.startswith("modes under 1/4 of their share: 0 of 25")
    one_mode = mixture.means[:1].repeat(n, 1)  # every point on one mode: 24 modes empty
    assert inspect_run.describe(one_mode, mixture).startswith("modes under 1/4 of their share: 24 of 25")


def test_inspect_refuses_an_unfinished_run(tmp_path):
    with pytest.raises(SystemExit, match="not a finished run"):
        inspect_run.main([str(tmp_path)])


@pytest.mark.parametrize("curve_wall, expected", [(5000.0, 5000.0), (100.0, 3400.0)])
def test_export_takes_the_whole_runs_wall_time(tmp_path, curve_wall, expected):
    """A run resumed by older code wrote only its last part's time (3400 s) into metrics.json; its curve
    counts from the run's start (5000 s). A fresh run's curve ends before its metrics (100 < 3400)."""
    run = tmp_path / "runs" / "manywell512-tb-expl-lp-ls-s0"
    run.mkdir(parents=True)
    config = {"env_id": "DiffSampler-Manywell-v0", "env_kwargs": {"dim": 512}, "preset": "tb-expl-lp-ls", "seed": 0}
    (run / "config.json").write_text(json.dumps(config | {"iterations": 10, "threads": 1}))
    (run / "metrics.json").write_text(json.dumps({"delta_log_z": 1.0, "wall_seconds": 3400.0}))
    points = [{"iteration": 5, "wall_seconds": curve_wall / 2}, {"iteration": 10, "wall_seconds": curve_wall}]
    (run / "curve.jsonl").write_text("".join(json.dumps(p) + "\n" for p in points))
    record = export_runs.record(run)
    assert record["wall_seconds"] == expected and record["metrics"]["wall_seconds"] == 3400.0
