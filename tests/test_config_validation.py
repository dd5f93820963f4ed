"""Every config dataclass checks every field by its type hint at construction (``agents.config.check_fields``):
bad values are a ValueError naming ``Class.field``; numpy scalars are accepted and made plain."""

import dataclasses
import math
import typing

import numpy as np
import pytest

from diffsampler.agents.baselines.mcmc import MALAChainConfig, SMCConfig
from diffsampler.agents.baselines.mcmc_runs import MALARunConfig, MCMCRunConfig, SMCRunConfig
from diffsampler.agents.baselines.rl_config import RLConfig, RLRunConfig
from diffsampler.agents.benchmark import BenchmarkConfig
from diffsampler.agents.config import MAX_SEED, check_value, from_dict, parse_value, to_dict
from diffsampler.agents.gflownet import GFlowNetConfig
from diffsampler.agents.policy import PolicyConfig
from diffsampler.agents.runs import RunSpec
from diffsampler.agents.training import TrainConfig
from diffsampler.buffers.local_search import LocalSearchConfig
from diffsampler.buffers.source import BufferConfig

VALID = [
    TrainConfig(),
    GFlowNetConfig(),
    PolicyConfig(),
    BufferConfig(),
    LocalSearchConfig(),
    SMCConfig(),
    MALAChainConfig(),
    MCMCRunConfig(),
    SMCRunConfig(),
    MALARunConfig(),
    RLConfig(),
    RLRunConfig(),
    BenchmarkConfig(out="runs/x"),
    RunSpec("DiffSampler-GMM25-v0", "tb"),
]


def _fields(kind):
    """(config, field name, default) of every field whose type hint (without None) is ``kind``."""
    for cfg in VALID:
        hints = typing.get_type_hints(type(cfg))
        for f in dataclasses.fields(cfg):
            tp = hints[f.name]
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if tp is kind or (len(args) == 1 and args[0] is kind):
                yield pytest.param(cfg, f.name, id=f"{type(cfg).__name__}.{f.name}")


def _refused(cfg, name, value):
    with pytest.raises(ValueError, match=rf"{type(cfg).__name__}\.{name} must be"):
        dataclasses.replace(cfg, **{name: value})


@pytest.mark.parametrize("cfg, name", list(_fields(int)))
def test_integer_fields_take_integers_only(cfg, name):
    for bad in (1.5, 2.0, True, "3", [3]):
        _refused(cfg, name, bad)
    default = getattr(cfg, name)
    if default is not None:
        made = dataclasses.replace(cfg, **{name: np.int64(default)})
        assert type(getattr(made, name)) is int and getattr(made, name) == default


@pytest.mark.parametrize("cfg, name", list(_fields(float)))
def test_float_fields_take_numbers_never_nan(cfg, name):
    for bad in ("0.1", True, math.nan, [0.1]):
        _refused(cfg, name, bad)
    default = getattr(cfg, name)
    if default is not None:
        made = dataclasses.replace(cfg, **{name: np.float64(default)})
        assert type(getattr(made, name)) is float and getattr(made, name) == default


@pytest.mark.parametrize("cfg, name", list(_fields(bool)))
def test_bool_fields_take_bools_only(cfg, name):
    for bad in (1, 0, "true", None):
        _refused(cfg, name, bad)
    made = dataclasses.replace(cfg, **{name: np.bool_(getattr(cfg, name))})
    assert type(getattr(made, name)) is bool


@pytest.mark.parametrize("cfg, name", list(_fields(str)))
def test_string_fields_take_strings(cfg, name):
    _refused(cfg, name, 3)


@pytest.mark.parametrize(
    "cfg, name",
    [
        pytest.param(cfg, f.name, id=f"{type(cfg).__name__}.{f.name}")
        for cfg in VALID
        for f in dataclasses.fields(cfg)
        if dataclasses.is_dataclass(getattr(cfg, f.name))
    ],
)
def test_nested_config_fields_refuse_none_and_dicts(cfg, name):
    _refused(cfg, name, None)
    _refused(cfg, name, {})


def test_non_optional_numbers_refuse_none_with_the_field_name():
    _refused(GFlowNetConfig(), "lr_policy", None)
    _refused(TrainConfig(), "iterations", None)
    _refused(SMCConfig(), "particles", None)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: TrainConfig(seed=2**70), r"TrainConfig\.seed must be an integer in \[0, 2147483647\]"),
        (lambda: TrainConfig(seed=-1), r"seed must be an integer in"),
        (lambda: RunSpec("DiffSampler-GMM25-v0", "tb", seed=2**40), "RunSpec.seed"),
        (lambda: MCMCRunConfig(seed=MAX_SEED + 1), "MCMCRunConfig.seed"),
        (lambda: RLRunConfig(seed=-3), "RLRunConfig.seed"),
        (lambda: LocalSearchConfig(ls_step_size=math.inf), "ls_step_size must be a finite number > 0"),
        (lambda: GFlowNetConfig(lr_policy=math.inf), "lr_policy must be a finite number > 0"),
        (lambda: PolicyConfig(clip_output=math.inf), "clip_output"),
        (lambda: TrainConfig(iterations=0), "iterations must be >= 1"),
        (lambda: BenchmarkConfig(out="x", seeds=0), "seeds must be a positive integer"),
        (lambda: BenchmarkConfig(out="x", targets=("25gmm", 3)), r"targets must be a tuple of a str"),
        (lambda: RunSpec("DiffSampler-GMM25-v0", "tb", threads=0), "threads"),
    ],
)
def test_range_checks_name_the_field(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_seed_bounds_are_accepted_and_lists_become_tuples():
    assert TrainConfig(seed=MAX_SEED).seed == MAX_SEED
    assert BenchmarkConfig(out="x", targets=["25gmm", "funnel"]).targets == ("25gmm", "funnel")


def test_json_round_trip_and_damaged_dicts():
    cfg = TrainConfig(agent=GFlowNetConfig(batch_size=np.int32(30)))
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="TrainConfig.agent must be a GFlowNetConfig, got None"):
        from_dict(TrainConfig, to_dict(cfg) | {"agent": None})
    with pytest.raises(ValueError, match="must be a JSON object"):
        from_dict(TrainConfig, [1, 2])


@pytest.mark.parametrize(
    "text, tp, expected",
    [("1e4", int, 10_000), ("12345678901234567891", int, 12345678901234567891), ("none", int | None, None)],
)
def test_parse_value_reads_command_line_numbers(text, tp, expected):
    assert parse_value(text, tp) == expected


@pytest.mark.parametrize(
    "text, tp, message",
    [
        ("2.5", int, "x must be an integer, got '2.5'"),
        ("abc", int, "x must be an integer, got 'abc'"),
        ("nan", float, "x must be a number, got 'nan'"),
        ("maybe", bool, "x must be true or false, got 'maybe'"),
        ("x", int | None, "x must be None or an integer, got 'x'"),
    ],
)
def test_parse_value_errors_are_in_the_users_words(text, tp, message):
    with pytest.raises(ValueError, match=message):
        parse_value(text, tp, "x")


def test_check_value_describes_unions():
    with pytest.raises(TypeError, match="None or a number"):
        check_value("a", float | None)
