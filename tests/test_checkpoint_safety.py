"""Checkpoints never execute code: they load with ``weights_only=True`` and anything else is refused."""

import pytest
import torch

from diffsampler.agents.presets import PRESETS
from diffsampler.agents.runner import RunDirectory
from diffsampler.agents.training import TrainConfig, Trainer
from scripts import train_agent


class _Payload:
    """A pickled object whose unpickling would create a file (a stand-in for arbitrary code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _run(tmp_path):
    cfg = TrainConfig(
        env_id="DiffSampler-GMM25-v0",
        env_kwargs={"num_steps": 4},
        preset="tb",
        agent=PRESETS["tb"].agent,
        iterations=2,
        eval_every=2,
        eval_samples=16,
        log_every=1,
        checkpoint_every=1,
        figures=False,
    )
    Trainer(cfg, tmp_path / "run").run(progress=False)
    return tmp_path / "run"


def test_a_real_checkpoint_loads_weights_only(tmp_path):
    run_dir = _run(tmp_path)
    state = RunDirectory(run_dir, writable=False).load_checkpoint()
    assert state["iteration"] == 2
    assert Trainer.resume(run_dir).iteration == 2


@pytest.mark.parametrize("via", ["resume", "evaluate"])
def test_a_malicious_checkpoint_is_refused_without_side_effect(tmp_path, capsys, via):
    run_dir = _run(tmp_path)
    marker = tmp_path / "pwned"
    state = RunDirectory(run_dir, writable=False).load_checkpoint()
    state["payload"] = _Payload(marker)
    torch.save(state, run_dir / "checkpoint.pt")
    with pytest.raises(ValueError, match="refused to load"):
        Trainer.resume(run_dir)
    argv = ["--resume", str(run_dir), "--no-progress"] + (["--evaluate", "2"] if via == "evaluate" else [])
    assert train_agent.main(argv) == 2
    assert "refused to load" in capsys.readouterr().err
    assert not marker.exists()
