"""The LGCP, 40GMM, Student-t mixture and breast-cancer targets: independent computations of their
densities, the data path of the pines, mode coverage, and training runs on targets without log Z.

(Exact samples and log Z of the mixtures are checked by the registry-wide tests in test_targets.py.)
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from scipy import special, stats
from scipy.spatial.distance import cdist

from diffsampler.agents import metrics
from diffsampler.agents.presets import PRESETS
from diffsampler.agents.training import TrainConfig, Trainer
from diffsampler.envs.targets import make_target
from diffsampler.envs.targets.lgcp import bin_counts, pines_file, prior_factor, read_points
from scripts import train_agent
from tests.conftest import pines_available

needs_pines = pytest.mark.skipif(not pines_available(), reason="pines data not found (set DIFFSAMPLER_DATA)")


# ------------------------------------------------------------------------------------------ LGCP
def dense_lgcp(points: np.ndarray, n: int, n_mean: int = 126):
    """The LGCP from its definition, written independently: counts by numpy's 2-D histogram, the kernel
    over cell centres in the unit square, a dense MultivariateNormal prior (float64)."""
    counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=n, range=[[0, 1], [0, 1]])
    centres = (np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2) + 0.5) / n
    cov = 1.91 * np.exp(-cdist(centres, centres) / (1 / 33))
    mean = np.log(n_mean) - 1.91 / 2
    prior = torch.distributions.MultivariateNormal(torch.full((n * n,), mean, dtype=torch.float64), torch.tensor(cov))
    counts = torch.tensor(counts.ravel())  # H[i, j]: i the x bin, j the y bin; row-major

    def log_density(x):
        return prior.log_prob(x) + (x * counts).sum(-1) - torch.exp(x).sum(-1) / (n * n)

    return log_density, prior, counts


@pytest.fixture(scope="module")
def pines():
    if not pines_available():
        pytest.skip("pines data not found (set DIFFSAMPLER_DATA)")
    points = read_points(pines_file()).numpy()
    return points, make_target("lgcp"), dense_lgcp(points, 40)


def test_lgcp_matches_dense_computation(pines):
    points, target, (dense, prior, counts) = pines
    assert points.shape == (126, 2) and target.dim == 1600
    torch.testing.assert_close(target.counts, counts, rtol=0, atol=0)
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([prior.sample((6,)), prior.mean[None], prior.mean + 0.5 * torch.randn(3, 1600, generator=gen)])
    ref = dense(x)
    torch.testing.assert_close(target.log_reward(x), ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(target.log_reward(x.float()).double(), ref, rtol=1e-5, atol=0)  # training dtype
    xg = x.clone().requires_grad_(True)
    (grad_ref,) = torch.autograd.grad(dense(xg).sum(), xg)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(target.log_reward(xg).sum(), xg)
    assert ((grad - grad_ref).norm(dim=-1) / grad_ref.norm(dim=-1)).max() < 1e-6


def test_lgcp_batching_and_leading_dims(pines):
    _, target, (_, prior, _) = pines
    x = prior.sample((6,)).float()
    rows = torch.cat([target.log_reward(x[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(target.log_reward(x), rows, rtol=1e-6, atol=1e-3)
    assert target.log_reward(x.view(2, 3, 1600)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"\(\.\.\., 1600\).*\(6, 1599\)"):
        target.log_reward(x[:, 1:])


def test_lgcp_huge_inputs_give_minus_inf_never_nan(pines):
    target = pines[1]
    for value in (1e30, -1e30, 3e38, 1e4, 100.0):
        for dtype in (torch.float32, torch.float64):
            x = torch.full((2, 1600), value, dtype=dtype)
            x[1, ::2] = -value
            out = target.log_reward(x.requires_grad_(True))
            assert not out.isnan().any() and (out < math.inf).all(), (value, out)
            (grad,) = torch.autograd.grad(out.sum(), x)
            assert not grad.isnan().any()
    assert target.log_reward(torch.full((1, 1600), 1e30)).item() == -math.inf


def test_bin_counts_convention():
    pts = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.999, 0.0], [0.0, 0.3], [0.5, 0.5]], dtype=torch.float64)
    counts = bin_counts(pts, 4)
    expected = torch.zeros(16, dtype=torch.float64)
    expected[[0, 15, 12, 1, 10]] = 1  # (r, c) -> r * 4 + c; the upper/right edge goes to the last cell
    torch.testing.assert_close(counts, expected)
    with pytest.raises(ValueError, match="unit square"):
        bin_counts(pts + 1, 4)


def test_prior_factor_is_computed_once():
    a, b = make_target("lgcp_synthetic", grid_size=5), make_target("lgcp_synthetic", grid_size=5, seed=1)
    assert a._chol is b._chol and a._chol is prior_factor(5)[0]
    assert not torch.equal(a.counts, b.counts)
    assert torch.equal(a.counts, make_target("lgcp_synthetic", grid_size=5).counts)


def test_synthetic_lgcp_needs_no_data_and_matches_dense(monkeypatch):
    monkeypatch.delenv("DIFFSAMPLER_DATA", raising=False)
    target = make_target("lgcp_synthetic", grid_size=12)
    assert target.dim == 144 and target.log_Z is None and not target.has_sampler and target.t_scale == 5.0
    assert 60 < target.counts.sum() < 200  # Poisson total with mean 126 (E exp(x) = 126 under the prior)
    # dense_lgcp bins points; rebuild points at the cell centres from the counts to reuse it.
    cells = torch.repeat_interleave(torch.arange(144), target.counts.long())
    points = (torch.stack([cells // 12, cells % 12], -1).double() + 0.5) / 12
    dense, prior, _ = dense_lgcp(points.numpy(), 12)
    x = prior.sample((5,))
    torch.testing.assert_close(target.log_reward(x), dense(x), rtol=1e-6, atol=0)
    samples = target.prior_sample(20_000, torch.Generator().manual_seed(0)).double()
    # Prior draws: mean ln 126 - 1.91 / 2 and variance 1.91 per cell (4 SE).
    assert abs(samples.mean() - target.mean) < 4 * math.sqrt(1.91 / 20_000) * 12
    assert abs(samples[:, 0].var() - 1.91) < 4 * 1.91 * math.sqrt(2 / 20_000)


def test_missing_pines_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("DIFFSAMPLER_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="finpines") as info:
        make_target("lgcp")
    for hint in ("data_path", "DIFFSAMPLER_DATA", "--data-path", "gfn-diffusion", "pines/df_pines.csv"):
        assert hint in str(info.value)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "pines" / "df_pines.csv")):
        make_target("lgcp", data_path=tmp_path)
    monkeypatch.setenv("DIFFSAMPLER_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"\$DIFFSAMPLER_DATA"):
        make_target("lgcp")
    bad = tmp_path / "bad.csv"
    bad.write_text('"","x","y"\n"1",0.1,0.2\n')
    with pytest.raises(ValueError, match="data_x"):
        make_target("lgcp", data_path=bad)


@needs_pines
def test_pines_from_file_directory_or_env_agree(monkeypatch):
    data_dir = os.environ["DIFFSAMPLER_DATA"]
    a = make_target("lgcp", grid_size=8)
    monkeypatch.delenv("DIFFSAMPLER_DATA")
    b = make_target("lgcp", data_path=data_dir, grid_size=8)
    c = make_target("lgcp", data_path=os.path.join(data_dir, "pines", "df_pines.csv"), grid_size=8)
    assert torch.equal(a.counts, b.counts) and torch.equal(a.counts, c.counts) and a.counts.sum() == 126


@needs_pines
def test_cli_data_path_flag(tmp_path, monkeypatch, capsys):
    data_dir = os.environ["DIFFSAMPLER_DATA"]
    monkeypatch.delenv("DIFFSAMPLER_DATA")
    args = ["--env", "DiffSampler-LGCP-v0", "--preset", "tb-expl-lp", "--iterations", "2", "--no-progress"]
    args += ["--grid-size", "4", "--num-steps", "4", "--eval-samples", "16"]
    assert train_agent.main(args + ["--data-path", data_dir, "--run-dir", str(tmp_path / "run")]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["env_kwargs"] == {"data_path": data_dir, "grid_size": 4, "num_steps": 4}
    out = capsys.readouterr().out
    assert "| log_z |" in out and "| delta_log_z | n/a |" in out
    assert train_agent.main(args + ["--run-dir", str(tmp_path / "missing")]) == 2
    assert "finpines" in capsys.readouterr().err


# -------------------------------------------------------------------------------- the mixtures
def test_gmm40_convention_and_mode_coverage():
    target = make_target("gmm40")
    assert target.means.shape == (40, 50) and target.var == 1.0 and target.log_Z == 0.0
    assert target.means.abs().max() <= 40 and target.means.abs().max() > 39  # uniform on [-40, 40]
    assert torch.equal(make_target("gmm40").means, target.means)
    assert not torch.equal(make_target("gmm40", seed=1).means, target.means)
    x = target.sample(2000, torch.Generator().manual_seed(0))
    lw = torch.zeros(2000)
    assert metrics.summarize(lw, 0.0, x=x, target=target)["modes_covered"] == 40
    three = target.means[torch.tensor([0, 7, 39]).repeat(50)] + torch.randn(150, 50)
    assert metrics.summarize(lw[:150], 0.0, x=three, target=target)["modes_covered"] == 3
    assert metrics.summarize(lw[:150], 0.0, x=torch.zeros(150, 50), target=target)["modes_covered"] == 0


def test_student_t_mixture_matches_scipy():
    target = make_target("student_t_mixture", dim=7, n_modes=4)
    assert target.means.shape == (4, 7) and target.df == 2 and target.log_Z == 0.0
    x = np.concatenate([target.sample(20, torch.Generator().manual_seed(0)).double().numpy(), np.full((1, 7), 1e6)])
    means = target.means.double().numpy()
    comp = np.stack([stats.t(df=2).logpdf(x - m).sum(1) for m in means])
    ref = special.logsumexp(comp, axis=0) - np.log(4)
    np.testing.assert_allclose(target.log_reward(torch.tensor(x)).numpy(), ref, rtol=1e-10)
    with pytest.raises(ValueError, match="got 2.5"):
        make_target("student_t_mixture", df=2.5)


# ------------------------------------------------------------------------------ breast cancer
def test_breast_cancer_matches_independent_formula():
    from sklearn.datasets import load_breast_cancer

    target = make_target("breast_cancer")
    assert target.dim == 31 and target.log_Z is None and not target.has_sampler
    feats, y = load_breast_cancer(return_X_y=True)
    design = np.column_stack([np.ones(len(y)), stats.zscore(feats)])
    w = np.random.default_rng(0).normal(size=(5, 31))
    ref = special.log_expit(np.where(y == 1, 1, -1) * (w @ design.T)).sum(1) + stats.norm.logpdf(w).sum(1)
    wt = torch.tensor(w, requires_grad=True)
    out = target.log_reward(wt)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-10)
    (grad,) = torch.autograd.grad(out.sum(), wt)
    np.testing.assert_allclose(grad.numpy(), (y - special.expit(w @ design.T)) @ design - w, rtol=1e-8, atol=1e-8)
    # The MAP (a few Newton steps) classifies the training data well: features and labels line up.
    v = torch.zeros(31, dtype=torch.float64, requires_grad=True)
    for _ in range(15):
        (g,) = torch.autograd.grad(target.log_reward(v[None]).sum(), v)
        h = torch.autograd.functional.hessian(lambda u: target.log_reward(u[None])[0], v.detach())
        v = (v - torch.linalg.solve(h, g)).detach().requires_grad_(True)
    v = v.detach()
    assert ((design @ v.numpy() > 0) == (y == 1)).mean() > 0.97


# ------------------------------------------------------------------- training on the new targets
NEW_ENVS = [
    ("DiffSampler-GMM40-v0", {}),
    ("DiffSampler-StudentTMixture-v0", {"dim": 10}),
    ("DiffSampler-BreastCancer-v0", {}),
    ("DiffSampler-LGCPSynthetic-v0", {"grid_size": 5}),
    ("DiffSampler-LGCP-v0", {"grid_size": 5}),
]


@pytest.mark.parametrize("env_id, kwargs", NEW_ENVS)
def test_trainer_runs_and_reports_what_exists(env_id, kwargs, tmp_path):
    cfg = TrainConfig(
        env_id=env_id,
        env_kwargs=kwargs | {"num_steps": 5},
        preset="tb-expl-lp",
        agent=PRESETS["tb-expl-lp"].agent,
        iterations=3,
        eval_every=3,
        eval_samples=64,
        log_every=1,
        figures=True,
    )
    trainer = Trainer(cfg, tmp_path / "run")
    result = trainer.run(progress=False)
    target = trainer.mdp.target
    assert math.isfinite(result["log_z"]) and math.isfinite(result["log_z_rw"])
    exact = target.log_Z is not None
    assert (result["delta_log_z"] is not None) == exact and (result["w2"] is not None) == target.has_sampler
    assert (result["eubo"] is not None) == target.has_sampler
    assert ("modes_covered" in result) == (env_id == "DiffSampler-GMM40-v0")
    assert list((tmp_path / "run" / "figures").glob("*.png"))
