"""Hypothesis: every registered id (and DiffSampler-Custom-v0 with the example banana) through both
Gymnasium faces, with generated constructor arguments and actions.

Constructor arguments are all valid (about two examples in three) or exactly one is invalid (numpy
bools, strings, floats for integers, extreme and non-finite numbers, t_scale beyond float32's range,
unknown devices and backends): ``gymnasium.make`` / ``make_vec`` must then raise a ValueError or
TypeError whose message names that argument, and must build otherwise. Actions come in every
layout (numpy dtypes and byte orders, negative strides, lists, ragged lists, torch tensors in
bfloat16, requiring grad, on the meta device, complex) with NaN, inf and float32 overflow; an
independent classification says which must step and which must raise which error. Stepped
observations must be finite float32 matching the expected state, rewards never NaN. Derandomized:
the same inputs every run, 42 examples per id and face (over 1,000 constructions, each followed
by up to T + 2 actions).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from diffsampler import envs

EXAMPLES = 42
T_MAX = 3
BANANA = str(Path(__file__).resolve().parents[1] / "examples" / "banana.py") + ":banana"
IDS = [*envs.ENV_IDS, envs.CUSTOM_ENV_ID]
SIZES = {  # id -> (size keyword, valid small values) for targets that have a size
    "DiffSampler-Funnel-v0": ("dim", [2, 3]),
    "DiffSampler-EasyFunnel-v0": ("dim", [2, 3]),
    "DiffSampler-Manywell-v0": ("dim", [2, 4]),
    "DiffSampler-Gaussian-v0": ("dim", [1, 2, 3]),
    "DiffSampler-GMM40-v0": ("dim", [1, 3]),
    "DiffSampler-StudentTMixture-v0": ("dim", [1, 3]),
    "DiffSampler-LGCP-v0": ("grid_size", [1, 2]),
    "DiffSampler-LGCPSynthetic-v0": ("grid_size", [1, 2]),
}
SEEDED = {"DiffSampler-GMM40-v0", "DiffSampler-StudentTMixture-v0", "DiffSampler-LGCPSynthetic-v0"}
NP_INTS = [np.int8, np.int32, np.int64, np.uint16]
NP_FLOATS = [np.float16, np.float32, np.float64]


def ints(values: list[int]):
    """Python or numpy integers from ``values``."""
    base = st.sampled_from(values)
    return st.one_of(base, st.tuples(base, st.sampled_from(NP_INTS)).map(lambda p: p[1](p[0])))


BAD_INTS = st.sampled_from([0, -1, 2.5, True, np.bool_(True), "2", None, np.float64(2.0), math.nan])
KWARGS = {  # name -> (valid values, invalid values)
    "num_steps": (ints(list(range(1, T_MAX + 1))), BAD_INTS),
    "t_scale": (
        st.one_of(st.none(), st.floats(1e-3, 1e3), st.floats(0.1, 10).map(np.float32), st.integers(1, 9)),
        st.sampled_from([0.0, -1.0, math.nan, math.inf, True, "1", 1e-60, 1e-30, 1e25, 1e40, np.float64(-2)]),
    ),
    "reward_mode": (st.sampled_from(["terminal", "soft_rl"]), st.sampled_from(["sparse", None, 1, "Terminal"])),
    "action_bound": (
        st.one_of(st.sampled_from(["auto", None]), st.floats(0.05, 20), st.floats(0.05, 20).map(np.float32)),
        st.sampled_from([True, np.bool_(False), 0, -0.5, math.inf, math.nan, 1e39, 1e-50, "x", "1.0", [1.0]]),
    ),
    "reference": (st.sampled_from(["bridge", "vp"]), st.sampled_from(["nope", 3, None])),
    "seed": (ints([0, 1, 5]), st.sampled_from([1.5, "0", True, None, np.float32(1)])),
}
VECTOR_KWARGS = {
    "num_envs": (ints([1, 2, 3]), BAD_INTS),
    "backend": (st.sampled_from(["numpy", "torch"]), st.sampled_from(["jax", None, "Torch"])),
    "device": (
        st.sampled_from(["cpu", torch.device("cpu")]),
        st.sampled_from(["bogus", "meta", 3.5, None] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])),
    ),
}


@st.composite
def env_kwargs(draw, env_id: str, vector: bool):
    """Keyword arguments for make / make_vec: all valid, or exactly one invalid, whose name is returned
    (None when all are valid)."""
    space = {name: pools for name, pools in KWARGS.items() if name != "seed" or env_id in SEEDED}
    if env_id in SIZES:
        name, values = SIZES[env_id]
        space[name] = (ints(values), BAD_INTS)
    if vector:
        space.update(VECTOR_KWARGS)
    bad = draw(st.sampled_from(sorted(space))) if draw(st.integers(0, 2)) == 1 else None
    kwargs = {"target": BANANA} if env_id == envs.CUSTOM_ENV_ID else {}
    for name, (valid, invalid) in space.items():
        if name == bad:
            kwargs[name] = draw(invalid)
        elif name in ("dim", "grid_size") or draw(st.integers(0, 2)) == 1:  # else the default (sizes: small)
            kwargs[name] = draw(valid)
    kwargs.setdefault("num_steps", T_MAX)
    return kwargs, bad


FLOATS = st.one_of(
    st.floats(-0.5, 0.5),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e39, -3e38, 3e38, 1e30, 0.25]),
)


@st.composite
def actions(draw, shape: tuple[int, ...]):
    """An action in one of ten layouts (0-5 with small values, 6-9 with extreme ones)."""
    kind = draw(st.integers(0, 9))
    event(f"action layout {kind}")
    values = draw(npst.arrays(np.float64, shape, elements=st.floats(-0.3, 0.3) if kind < 6 else FLOATS))
    with np.errstate(over="ignore", invalid="ignore"):
        if kind in (0, 6):  # any numpy dtype, any byte order
            dtype = np.dtype(draw(st.sampled_from(NP_FLOATS + NP_INTS)))
            return values.astype(dtype.newbyteorder(draw(st.sampled_from("<>="))))
        if kind in (1, 7):
            return np.flip(np.flip(values.astype(np.float32)))  # negative strides
        if kind in (2, 8):
            dtype = draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float64, torch.float16]))
            t = torch.as_tensor(values).to(dtype)
            return t.requires_grad_(True) if kind == 2 and draw(st.integers(0, 3)) == 0 else t
        if kind == 3:
            return values.tolist()
        if kind == 4:  # a wrong shape, a ragged list, meta and complex tensors
            wrong = np.zeros(shape[:-1] + (shape[-1] + 1,), np.float32)
            ragged = [[0.0] * shape[-1], [0.0]]
            meta, complex_ = torch.zeros(shape, device="meta"), torch.zeros(shape, dtype=torch.complex64)
            return draw(st.sampled_from([wrong, ragged, meta, complex_]))
        if kind == 5:  # non-numeric dtypes
            return draw(
                st.sampled_from([values > 0, values.astype(np.complex64), values.astype(object), values.astype(str)])
            )
        return values  # 9: plain float64 with extreme values


def classify(action, shape):
    """(expected exception type or None, the action as float32), from the documented contract."""
    if isinstance(action, torch.Tensor):
        if action.is_meta or action.requires_grad:
            return ValueError, None
        if action.dtype.is_complex or action.dtype == torch.bool:
            return TypeError, None
        arr = action.float().numpy()
    else:
        try:
            arr = np.asarray(action)
        except ValueError:
            return ValueError, None
        if arr.dtype.kind not in "fiu":
            return TypeError, None
    if arr.shape != shape:
        return ValueError, None
    with np.errstate(over="ignore", invalid="ignore"):
        return None, arr.astype(np.float32)


def expected_step(action, x, bound, shape, active: bool):
    """(exception type or None, the float32 increment) of stepping ``action`` from positions ``x``."""
    error, a = classify(action, shape)
    if error is not None or not active:
        return error, a
    with np.errstate(over="ignore", invalid="ignore"):
        x_next = x + a
    if not np.isfinite(a).all() or (bound is not None and (np.abs(a) > np.float32(bound)).any()):
        return ValueError, None
    if not np.isfinite(x_next).all():
        return ValueError, None
    return None, a


def build(env_id, kwargs, bad, vector):
    """The env of valid ``kwargs``; with a ``bad`` one, None after checking that the error names it."""
    make = (lambda: gym.make_vec(env_id, **kwargs)) if vector else (lambda: gym.make(env_id, **kwargs))
    if bad is None:
        return make()
    with pytest.raises((ValueError, TypeError)) as info:
        make()
    assert bad in str(info.value), f"the error does not name {bad}={kwargs[bad]!r}: {info.value}"
    event(f"construction rejected ({bad}): {type(info.value).__name__}")
    return None


def as_numpy(value):
    return value.cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


@pytest.mark.parametrize("vector", [False, True], ids=["single", "vector"])
@pytest.mark.parametrize("env_id", IDS)
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_faces_see_only_promised_errors(env_id, vector, data):
    kwargs, bad = data.draw(env_kwargs(env_id, vector), label="kwargs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Gymnasium's passive checker warns about unbounded Boxes
        env = build(env_id, kwargs, bad, vector)
        if env is None:
            return
        inner = env.unwrapped
        mdp, t_end = inner.mdp, inner.mdp.num_steps
        shape = (inner.num_envs, mdp.dim) if vector else (mdp.dim,)
        obs, _ = env.reset(seed=data.draw(st.integers(0, 2**31 - 1), label="seed"))
        x, k = as_numpy(obs)[..., : mdp.dim].copy(), 0
        for action in data.draw(st.lists(actions(shape), min_size=1, max_size=t_end + 2), label="actions"):
            active = not (vector and k == t_end)  # NEXT_STEP autoreset: this step's actions are ignored
            error, a = expected_step(action, x, inner.action_bound, shape, active)
            event(f"action: {'stepped' if error is None else error.__name__}")
            if error is not None:
                with pytest.raises(error) as info:
                    env.step(action)
                assert str(info.value)
                continue
            obs, reward, terminated, truncated = (as_numpy(v) for v in env.step(action)[:4])
            assert obs.dtype == np.float32 and np.isfinite(obs).all(), obs
            assert not np.isnan(reward).any() and not (reward == np.inf).any(), reward
            k, x = (k + 1, x + a) if active else (0, obs[..., : mdp.dim].copy())
            np.testing.assert_array_equal(obs[..., : mdp.dim], x)
            assert np.all(obs[..., mdp.dim] == np.float32(k / t_end))
            assert not np.any(truncated) and np.all(terminated == (k == t_end))
            if not vector and k == t_end:
                obs, _ = env.reset()
                x, k = obs[: mdp.dim].copy(), 0
