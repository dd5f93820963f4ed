"""Property-based fuzzing of the Gymnasium faces with arbitrary actions (Hypothesis).

Each generated action is classified independently of the env (dtype, shape, float32 value, bound,
state overflow, episode over); the env must then either step, with a finite float32 observation and a
float reward that is never NaN, or raise exactly the promised exception with a non-empty message.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from diffsampler.envs.gym_env import DiffSamplerEnv, DiffSamplerVectorEnv

T = 5
ENVS = [("manywell", {"dim": 4}), ("funnel", {"dim": 3})]
# Every other target with non-trivial numerics, small where it has a size (the LGCP on a 3 x 3 grid).
ENVS += [("gmm40", {"dim": 3}), ("student_t_mixture", {"dim": 3}), ("breast_cancer", {})]
ENVS += [("lgcp", {"grid_size": 3}), ("lgcp_synthetic", {"grid_size": 3})]
BOUND = 0.5
DTYPES = [
    np.float16,
    np.float32,
    np.float64,
    np.int8,
    np.int32,
    np.int64,
    np.uint8,
    np.bool_,
    np.complex64,
    np.complex128,
    object,
]
FLOATS = st.one_of(
    st.floats(-1.0, 1.0),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e38, -1e38, 3e38, 1e30, 1e39, -1e300, 0.5, -0.5]),
    st.floats(allow_nan=True, allow_infinity=True),
)


def actions(d: int):
    """Half plausible actions (small floats of the right shape), half anything."""
    plausible = npst.arrays(st.sampled_from([np.float32, np.float64]), (d,), elements=st.floats(-0.4, 0.4))
    return st.one_of(plausible, wild_actions(d))


@st.composite
def wild_actions(draw, d: int):
    """Arrays of any dtype and shape with extreme values, sometimes lists."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.lists(st.one_of(FLOATS, st.none(), st.text(max_size=1)), min_size=0, max_size=d + 1))
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(
        st.one_of(st.just((d,)), st.just((d,)), npst.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    )
    if dtype is object:
        return draw(npst.arrays(object, shape, elements=st.one_of(FLOATS, st.none(), st.text(max_size=2))))
    if np.dtype(dtype).kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            return draw(npst.arrays(np.float64, shape, elements=FLOATS)).astype(dtype)
    return draw(npst.arrays(dtype, shape))


def expected_outcome(action, x: np.ndarray, k: int, bound):
    """(exception type or None, next state as float32) according to the documented contract."""
    arr = np.asarray(action)
    if arr.dtype.kind not in "fiu":
        return TypeError, None
    if arr.shape != x.shape:
        return ValueError, None
    with np.errstate(over="ignore", invalid="ignore"):
        a = arr.astype(np.float32)
        x_next = x + a
    if not np.isfinite(a).all() or (bound is not None and (np.abs(a) > np.float32(bound)).any()):
        return ValueError, None
    if not np.isfinite(x_next).all():
        return ValueError, None
    if k >= T:
        return RuntimeError, None
    return None, x_next


def check_reward(reward) -> None:
    assert isinstance(reward, float), type(reward)
    assert not math.isnan(reward) and reward != math.inf, reward


@pytest.mark.parametrize("bound", [None, BOUND])
@pytest.mark.parametrize("target, kwargs", ENVS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_single_env_survives_arbitrary_actions(target, kwargs, bound, data):
    env = DiffSamplerEnv(target, num_steps=T, action_bound=bound, **kwargs)
    d = env.mdp.dim
    obs, _ = env.reset()
    x, k = np.zeros(d, np.float32), 0
    for action in data.draw(st.lists(actions(d), min_size=T, max_size=2 * T + 2)):
        error, x_next = expected_outcome(action, x, k, bound)
        event(f"outcome: {'step' if error is None else error.__name__}")
        if error is not None:
            with pytest.raises(error) as info:
                env.step(action)
            assert str(info.value), f"empty {error.__name__} message"
            continue
        obs, reward, terminated, truncated, _ = env.step(action)
        x, k = x_next, k + 1
        assert obs.dtype == np.float32 and obs.shape == (d + 1,) and np.isfinite(obs).all()
        np.testing.assert_array_equal(obs[:-1], x)
        assert obs[-1] == np.float32(k / T)
        check_reward(reward)
        assert terminated is (k == T) and truncated is False
        if k < T:
            assert reward == 0.0


@pytest.mark.parametrize("target, kwargs", ENVS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_vector_env_survives_arbitrary_actions(target, kwargs, data):
    """Three envs stepped together; the NEXT_STEP autoreset ignores the actions of envs being reset."""
    vec = DiffSamplerVectorEnv(3, target, num_steps=T, action_bound=BOUND, backend="torch", **kwargs)
    d = vec.mdp.dim
    vec.reset()
    x, k = np.zeros((3, d), np.float32), 0
    for action in data.draw(st.lists(actions(3 * d), min_size=2 * T, max_size=3 * T)):
        arr = np.asarray(action)
        batch = arr.reshape(3, d) if arr.shape == (3 * d,) else arr
        if k == T:  # every env is reset this step: only dtype and shape are checked
            error = TypeError if batch.dtype.kind not in "fiu" else ValueError if batch.shape != (3, d) else None
            x_next = np.zeros_like(x)
        else:
            error, x_next = expected_outcome(batch, x, k, BOUND)
        event(f"outcome: {'step' if error is None else error.__name__}")
        if error is not None:
            with pytest.raises(error) as info:
                vec.step(batch)
            assert str(info.value)
            continue
        obs, reward, terminated, truncated, _ = vec.step(batch)
        x, k = x_next, (0 if k == T else k + 1)
        assert isinstance(obs, torch.Tensor) and obs.dtype == torch.float32 and torch.isfinite(obs).all()
        np.testing.assert_array_equal(obs[:, :-1].numpy(), x)
        assert torch.all(obs[:, -1] == np.float32(k / T))
        assert not torch.isnan(reward).any() and not (reward == math.inf).any()
        assert terminated.tolist() == [k == T] * 3 and not truncated.any()
        if k < T:
            assert torch.all(reward == 0)
        if k == 0:
            event("autoreset step")
