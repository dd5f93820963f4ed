"""The training guard (agents.guard): non-finite log-rewards, losses and gradients never reach the parameters
or a checkpoint; -inf log-rewards are left out of the loss; wrong log_reward shapes and divergent runs stop
with a clear message."""

import dataclasses
import json
import math

import pytest
import torch

from diffsampler.agents.guard import NonFiniteBatch, TrainingDiverged, nonfinite_tensors
from diffsampler.agents.presets import PRESETS
from diffsampler.agents.runner import RunDirectory
from diffsampler.agents.training import TrainConfig, Trainer
from diffsampler.envs.targets.base import Target


class Faulty(Target):
    """A 2-D standard Gaussian whose log-reward turns ``value`` (NaN, +inf, -inf) on rows where ``where``
    holds, for the calls after the ``after``-th up to the ``until``-th (terminal and intermediate alike)."""

    dim, log_Z, t_scale = 2, 0.0, 1.0

    def __init__(self, value: float = math.nan, where: str = "x0 > 0", after: int = 0, until: int = 10**9):
        self.value, self.where, self.after, self.until, self.calls = value, where, after, until, 0

    def log_reward(self, x):
        self.calls += 1
        out = -0.5 * x.square().sum(-1) - math.log(2 * math.pi)
        if self.after < self.calls <= self.until:
            masks = {
                "x0 > 0": x[..., 0] > 0,
                "all": torch.ones_like(out, dtype=torch.bool),
                "origin": x.norm(dim=-1) == 0,
            }
            mask = masks[self.where]
            out = torch.where(mask, torch.full_like(out, self.value), out)
        return out

    def __repr__(self):
        return f"Faulty({self.value}, {self.where!r})"


class Origin(Faulty):
    """NaN exactly at x = 0: the start of every bridge path, an intermediate state, never a terminal one."""

    def __init__(self):
        super().__init__(math.nan, "origin")


class Column(Faulty):
    """A log-reward of shape (B, 1)."""

    def log_reward(self, x):
        return super().log_reward(x).unsqueeze(-1)


def _trainer(target: str, preset="tb", tmp_path=None, args: dict | None = None, **kw):
    """A trainer on ``DiffSampler-Custom-v0`` with ``target`` a class of this file and its keyword ``args``."""
    cfg = TrainConfig(
        env_id="DiffSampler-Custom-v0",
        env_kwargs={"target": f"{__file__}:{target}", "num_steps": 5, **(args or {})},
        preset=preset,
        agent=dataclasses.replace(PRESETS[preset].agent, batch_size=32),
        iterations=kw.pop("iterations", 6),
        eval_every=100,
        eval_samples=16,
        log_every=2,
        checkpoint_every=kw.pop("checkpoint_every", 2),
        figures=False,
        **kw,
    )
    return Trainer(cfg, None if tmp_path is None else tmp_path / "run")


def _assert_finite_checkpoint(run_dir):
    state = RunDirectory(run_dir, writable=False).load_checkpoint()
    assert nonfinite_tensors(state) == []


@pytest.mark.parametrize("value, word", [(math.nan, "NaN"), (math.inf, "\\+inf")])
def test_nan_and_posinf_terminal_rewards_stop_training_with_a_message(value, word, tmp_path):
    trainer = _trainer(
        "Faulty", args={"value": value, "after": 2}, tmp_path=tmp_path
    )  # fine for two steps, then broken
    with pytest.raises(
        NonFiniteBatch, match=rf"Faulty.*returned {word}.* at iteration 2 .*terminal states such as x = \["
    ):
        trainer.run(progress=False)
    assert trainer.iteration == 2
    _assert_finite_checkpoint(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in trainer.agent.parameters())


def test_skip_policy_drops_and_counts_bad_batches(tmp_path):
    trainer = _trainer(
        "Faulty", args={"value": math.inf, "where": "all", "after": 2, "until": 6}, tmp_path=tmp_path, nonfinite="skip"
    )
    before = [p.detach().clone() for p in trainer.agent.parameters()]
    with pytest.warns(UserWarning, match="skipping a non-finite training batch"):
        result = trainer.run(progress=False)
    assert result["skipped_batches"] == 4  # iterations 2..5
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["skipped_batches"] == 4 and saved["zero_density_trajectories"] == 0
    _assert_finite_checkpoint(tmp_path / "run")
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.agent.parameters()))  # the good steps ran


def test_neginf_rewards_are_left_out_of_the_loss_and_counted(tmp_path):
    trainer = _trainer("Faulty", args={"value": -math.inf}, tmp_path=tmp_path)  # zero density on half of the plane
    result = trainer.run(progress=False)
    assert result["zero_density_trajectories"] > 0 and result["skipped_batches"] == 0
    _assert_finite_checkpoint(tmp_path / "run")


def test_neginf_for_vargrad_keeps_the_baseline_on_the_other_trajectories():
    trainer = _trainer("Faulty", args={"value": -math.inf}, preset="vargrad-expl")
    for it in range(3):
        out = trainer.agent.train_step(it, trainer.generator)
        assert math.isfinite(float(out["loss"]))
    assert trainer.agent.guard.zero_density_trajectories > 0


def test_a_batch_entirely_at_zero_density_is_an_error():
    trainer = _trainer("Faulty", args={"value": -math.inf, "where": "all"})
    with pytest.raises(NonFiniteBatch, match="every training trajectory at iteration 0 ended where .* -inf"):
        trainer.agent.train_step(0, trainer.generator)


@pytest.mark.parametrize("preset", ["fl-subtb", "tb-expl-lp", "pis-lp"])
def test_nan_at_intermediate_states_is_caught(preset):
    trainer = _trainer("Origin", preset=preset)
    before = [p.detach().clone() for p in trainer.agent.parameters()]
    with pytest.raises(NonFiniteBatch, match=r"returned NaN .*intermediate states \(steps \[0\]"):
        trainer.agent.train_step(0, trainer.generator)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.agent.parameters()))


def test_a_log_reward_of_shape_b_by_1_is_refused_naming_the_target():
    trainer = _trainer("Column", args={"value": 0.0})
    with pytest.raises(
        ValueError, match=r"Faulty\(0.0, 'x0 > 0'\)\.log_reward returned \(32, 1\) for x of shape \(32, 2\)"
    ):
        trainer.agent.train_step(0, trainer.generator)


def test_a_divergent_learning_rate_stops_the_run(tmp_path):
    cfg = TrainConfig(
        env_kwargs={"num_steps": 10},
        preset="tb-expl-lp",
        agent=dataclasses.replace(PRESETS["tb-expl-lp"].agent, lr_policy=1e3, batch_size=64),
        iterations=200,
        eval_every=1000,
        eval_samples=16,
        log_every=10,
        checkpoint_every=20,
        figures=False,
    )
    trainer = Trainer(cfg, tmp_path / "run")
    with pytest.raises(TrainingDiverged, match=r"training diverged: the median \|loss\| of iterations 0-49 is"):
        trainer.run(progress=False)
    assert not (tmp_path / "run" / "metrics.json").exists()
    _assert_finite_checkpoint(tmp_path / "run")


def test_a_checkpoint_with_non_finite_parameters_is_never_written(tmp_path):
    trainer = _trainer("Faulty", args={"value": 0.0}, tmp_path=tmp_path)
    trainer.run(progress=False)
    good = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with torch.no_grad():
        next(trainer.agent.parameters())[0] = math.nan
    with pytest.raises(
        FloatingPointError, match="not writing .*checkpoint.pt at iteration 6: non-finite values in agent"
    ):
        trainer.save_checkpoint()
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == good


def test_guard_state_survives_a_resume(tmp_path):
    trainer = _trainer(
        "Faulty",
        args={"value": math.inf, "where": "all", "after": 2, "until": 4},
        tmp_path=tmp_path,
        nonfinite="skip",
        iterations=4,
    )
    with pytest.warns(UserWarning):
        trainer.run(progress=False)
    state = RunDirectory(tmp_path / "run", writable=False).load_checkpoint()
    assert state["guard"]["skipped_batches"] == 2 and state["guard"]["reference"] is not None
