"""User-defined energies (envs/targets/user.py): Target.from_function, import paths, DiffSampler-Custom-v0."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from diffsampler import envs
from diffsampler.envs.targets import Target
from diffsampler.envs.targets.user import FunctionTarget, load_target, resolve_target

ROOT = Path(__file__).resolve().parents[1]
BANANA_FILE = ROOT / "examples" / "banana.py"
CUSTOM = envs.CUSTOM_ENV_ID


def quadratic(x):
    return -0.5 * x.square().sum(-1)


# --- Target.from_function ---------------------------------------------------------------------------------


def test_from_function_is_a_target_with_the_given_attributes():
    def sample(n, generator=None):
        return torch.randn(n, 3, generator=generator)

    target = Target.from_function(quadratic, np.int64(3), log_Z=1.5 * math.log(2 * math.pi), sample=sample)
    assert isinstance(target, FunctionTarget) and target.dim == 3 and type(target.dim) is int
    assert target.has_sampler and target.sample(5).shape == (5, 3) and target.t_scale == 1.0
    assert repr(target) == "FunctionTarget('quadratic', dim=3)"
    x = torch.randn(4, 6, 3)  # leading batch dims are flattened for the function and restored
    torch.testing.assert_close(target.log_reward(x), quadratic(x))
    assert not Target.from_function(quadratic, 2).has_sampler
    with pytest.raises(NotImplementedError, match="no exact sampler"):
        Target.from_function(quadratic, 2).sample(3)


def test_from_function_target_drives_an_env_and_an_mdp():
    target = Target.from_function(quadratic, 2, t_scale=2.0, name="bowl")
    env = gym.make(CUSTOM, target=target, num_steps=3)
    env.reset(seed=0)
    for _ in range(3):
        obs, reward, terminated, _, _ = env.step(np.full(2, 0.5, np.float32))
    assert terminated and reward == pytest.approx(-0.5 * 2 * 1.5**2)
    assert env.unwrapped.mdp.t_scale == 2.0
    assert envs.make_mdp(CUSTOM, target=target).target is target


@pytest.mark.parametrize(
    "log_prob, kwargs, error, match",
    [
        (quadratic, {"dim": 0}, ValueError, "dim must be a positive integer, got 0"),
        (quadratic, {"dim": 2.5}, ValueError, "got 2.5"),
        (quadratic, {"dim": True}, ValueError, "got True"),
        (quadratic, {"dim": "2"}, ValueError, "got '2'"),
        ("x**2", {"dim": 2}, TypeError, "log_prob must be a function"),
        (lambda x: x.numpy().sum(-1), {"dim": 2}, TypeError, "torch.Tensor"),
        (lambda x: x.sum(-1, keepdim=True), {"dim": 2}, ValueError, r"got \(3, 1\)"),
        (lambda x: x.sum(), {"dim": 2}, ValueError, r"shape \(3,\) for x of shape \(3, 2\), got \(\)"),
        (lambda x: (x > 0).all(-1), {"dim": 2}, TypeError, "torch.bool"),
        (lambda x: x.sum(-1) * math.nan, {"dim": 2}, ValueError, "returned nan at the probe point"),
        (lambda x: x.sum(-1) + math.inf, {"dim": 2}, ValueError, "returned inf"),
        (quadratic, {"dim": 2, "log_Z": math.nan}, ValueError, "log_Z must be a finite number, got nan"),
        (quadratic, {"dim": 2, "t_scale": 0.0}, ValueError, "t_scale must be > 0, got 0.0"),
        (quadratic, {"dim": 2, "plot_bounds": (1.0, -1.0)}, ValueError, "low < high"),
        (quadratic, {"dim": 2, "plot_bounds": "wide"}, ValueError, "'wide'"),
        (quadratic, {"dim": 2, "sample": 3}, TypeError, "sample must be None or a function"),
        (quadratic, {"dim": 2, "sample": lambda n, g: torch.zeros(n, 3)}, ValueError, r"got \(2, 3\)"),
        (quadratic, {"dim": 2, "name": 7}, TypeError, "name must be a string"),
    ],
)
def test_from_function_rejects_bad_input_early(log_prob, kwargs, error, match):
    with pytest.raises(error, match=match):
        Target.from_function(log_prob, **kwargs)


def test_from_function_warns_without_gradients_and_checks_every_call():
    with pytest.warns(UserWarning, match="not differentiable: its output carries no gradient"):
        target = Target.from_function(lambda x: torch.as_tensor(-(x.detach().numpy() ** 2).sum(-1)), 2)
    calls = []

    def flaky(x):
        calls.append(len(x))
        return quadratic(x) if len(calls) == 1 else quadratic(x)[:1]

    target = Target.from_function(flaky, 2)  # the probe passes; a later bad output is caught by shape
    with pytest.raises(ValueError, match=r"shape \(5,\).*got \(1,\)"):
        target.log_reward(torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\), got \(5, 3\)"):
        target.log_reward(torch.zeros(5, 3))


# --- import paths -----------------------------------------------------------------------------------------

USER_FILE = """
import torch
from diffsampler.envs.targets import Target

class Bowl(Target):
    def __init__(self, dim=2, depth=1.0):
        self.dim, self.depth = dim, depth
    def log_reward(self, x):
        return -self.depth * x.square().sum(-1)

bowl = Bowl(3)
def make_bowl(dim: int = 2, depth: float = 1.0):
    return Bowl(dim, depth)
def log_density(x):
    return -x.square().sum(-1)
def not_a_target(dim=2):
    return "bowl"
constant = 3.0
"""


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_energies.py"
    path.write_text(USER_FILE)
    return path


def test_import_path_forms_give_targets(user_file, monkeypatch):
    instance = load_target(f"{user_file}:bowl")
    assert type(instance).__name__ == "Bowl" and instance.dim == 3
    assert load_target(f"{user_file}:bowl") is instance  # one load per file version
    assert load_target(f"{user_file}:Bowl", dim=4).dim == 4  # a Target subclass, keywords pass through
    made = load_target(f"{user_file}:make_bowl", dim=np.int64(5), depth=np.float32(2.0))
    assert made.dim == 5 and type(made.dim) is int and made.depth == 2.0 and type(made.depth) is float
    monkeypatch.chdir(user_file.parent)
    assert load_target("my_energies.py:bowl").dim == 3  # relative to the current directory
    monkeypatch.syspath_prepend(str(user_file.parent))
    assert load_target("my_energies:make_bowl", dim=6).dim == 6  # an importable module


@pytest.mark.parametrize(
    "spec, kwargs, error, match",
    [
        ("no_such_pkg_xyz.energies:banana", {}, ValueError, "no module named 'no_such_pkg_xyz'"),
        ("missing_dir/energies.py:banana", {}, ValueError, "no such file 'missing_dir/energies.py'"),
        ("{file}:bowll", {}, ValueError, "has no attribute 'bowll'; it defines: Bowl, Target, bowl"),
        ("{file}:", {}, ValueError, "is not an import path"),
        (":bowl", {}, ValueError, "is not an import path"),
        ("{file}:constant", {}, TypeError, "is a float; expected a Target instance"),
        ("{file}:not_a_target", {}, TypeError, "returned a str, not a Target"),
        ("{file}:log_density", {}, ValueError, "missing a required argument: 'x'"),
        ("{file}:bowl", {"dim": 2}, ValueError, "takes no keyword arguments"),
        ("{file}:make_bowl", {"width": 2}, ValueError, "unexpected keyword argument 'width'"),
        ("{file}:make_bowl", {"dim": 2.5}, ValueError, "dim must be an integer, got 2.5"),
        ("{file}:make_bowl", {"depth": "deep"}, ValueError, "depth must be a number, got 'deep'"),
    ],
)
def test_import_path_errors_name_the_problem(user_file, spec, kwargs, error, match):
    with pytest.raises(error, match=match):
        load_target(spec.format(file=user_file), **kwargs)


def test_resolve_target_names_the_forms():
    assert resolve_target("gaussian", dim=np.int64(3)).dim == 3
    with pytest.raises(ValueError, match="unknown target 'nope'.*import path"):
        resolve_target("nope")
    with pytest.raises(ValueError, match="target= is required"):
        resolve_target(None)
    with pytest.raises(ValueError, match="unknown target 3"):
        resolve_target(3)
    with pytest.raises(ValueError, match="seed must be an integer, got 1.5"):
        resolve_target("gmm40", dim=3, seed=1.5)
    assert resolve_target("gmm40", dim=3, seed=np.int64(4)).dim == 3


# --- the example and the Custom id ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [str(BANANA_FILE) + ":banana", "examples/banana.py:banana", "examples.banana:banana"])
def test_example_banana_makes_envs_and_mdps_by_path(spec, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    env = gym.make(CUSTOM, target=spec, num_steps=4)
    json.dumps(env.spec.kwargs)  # a run directory can record (and rebuild from) these
    assert env.unwrapped.mdp.target.log_Z == pytest.approx(math.log(4 * math.pi))
    obs, _ = env.reset(seed=0)
    for _ in range(4):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert terminated and not truncated and math.isfinite(reward) and obs.shape == (3,)
    mdp = envs.make_mdp(CUSTOM, target=spec, num_steps=4)
    assert mdp.dim == 2 and mdp.target.has_sampler and mdp.num_steps == 4
    again = gym.make(env.spec)  # rebuilt from the recorded spec
    assert again.unwrapped.mdp.target.name == "banana(s=2, b=0.25)"
    vec = gym.make_vec(CUSTOM, num_envs=3, target=spec, num_steps=4)
    assert vec.reset(seed=0)[0].shape == (3, 3)


def test_example_banana_factory_takes_keywords_and_samples_its_density(monkeypatch):
    monkeypatch.chdir(ROOT)
    target = envs.make_mdp(CUSTOM, target="examples/banana.py:make_banana", curvature=0.5).target
    assert target.name == "banana(s=2, b=0.5)"
    x = target.sample(20000, torch.Generator().manual_seed(0))
    assert abs(float(x[:, 0].var()) - 4.0) < 0.2 and abs(float(x[:, 1].mean())) < 0.1  # E[x2] = b E[x1^2 - s^2] = 0


def test_custom_id_needs_a_target():
    with pytest.raises(ValueError, match="target= is required"):
        gym.make(CUSTOM)
    with pytest.raises(ValueError, match="target= is required"):
        envs.make_mdp(CUSTOM)
