"""Every method, the vector env and the metrics on each available torch device.

On CPU these run as small smoke tests; on a machine with a GPU the ``cuda`` cases run too and catch
tensors created on the wrong device (the default suite never needs a GPU, so they skip without one).
"""

import dataclasses
import math

import pytest
import torch

from diffsampler.agents import metrics
from diffsampler.agents.presets import PRESETS
from diffsampler.agents.training import TrainConfig, Trainer
from diffsampler.buffers.local_search import LocalSearchConfig

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]

# One preset per code path: on-policy TB, forward-looking SubTB with Langevin scores, the replay buffer
# with local search, the path-gradient KL (PIS) and the VP reference (DDS).
PATHS = ["tb", "fl-subtb-lp", "tb-expl-lp-ls", "pis", "dds"]


def _small(preset: str):
    agent = dataclasses.replace(PRESETS[preset].agent, batch_size=16)
    if agent.backward_source == "buffer":
        ls = LocalSearchConfig(ls_steps=4, ls_burn_in=2)
        agent = dataclasses.replace(
            agent, buffer=dataclasses.replace(agent.buffer, buffer_capacity=64, ls_cycle=2, local_search=ls)
        )
    return agent


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("preset", PATHS)
def test_training_evaluation_and_resume_on_device(preset, device, tmp_path):
    def config(iterations):
        return TrainConfig(
            env_id="DiffSampler-Manywell-v0",
            env_kwargs={"dim": 4, "num_steps": 6} | PRESETS[preset].env_kwargs,
            preset=preset,
            agent=_small(preset),
            iterations=iterations,
            device=device,
            eval_every=2,
            eval_samples=32,
            checkpoint_every=2,
            figures=False,
        )

    full = Trainer(config(4), tmp_path / "full")
    result = full.run(progress=False)
    params = list(full.agent.parameters())
    assert params and all(p.device.type == device for p in params)
    for key in ("log_z", "log_z_rw", "eubo", "w2"):
        assert result[key] is not None and math.isfinite(result[key]), (key, result[key])

    Trainer(config(2), tmp_path / "half").run(progress=False)
    resumed = Trainer.resume(tmp_path / "half", iterations=4)
    resumed.run(progress=False)
    for (name, a), b in zip(full.agent.state_dict().items(), resumed.agent.state_dict().values()):
        assert b.device.type == device and torch.equal(a, b), name


@pytest.mark.parametrize("device", DEVICES)
def test_vector_env_steps_on_device(device):
    import gymnasium

    from diffsampler import envs  # noqa: F401  (registers the ids)

    env = gymnasium.make_vec("DiffSampler-Manywell-v0", num_envs=3, device=device, dim=4, num_steps=3, backend="torch")
    obs, _ = env.reset(seed=0)
    assert obs.device.type == device
    for _ in range(3):
        obs, reward, terminated, truncated, _ = env.step(torch.zeros(3, 4, device=device))
    assert reward.device.type == device and bool(terminated.all())
    env.close()


@pytest.mark.parametrize("device", DEVICES)
def test_mode_coverage_on_device(device):
    means = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]], device=device)
    samples = torch.cat([means[:2] + 0.1, means[:2] - 0.1])
    covered, fractions = metrics.mode_coverage(samples, means)  # radius from the means' spacing
    assert covered == 2 and fractions.tolist() == [0.5, 0.5, 0.0]
