"""Flat encoding of (nested) Tuple actions: round trips, clipping, column layout and errors."""

import numpy as np
import pytest
from gymnasium import spaces

from sb3_cherry.common.spaces import (
    check_action_space,
    component_slices,
    flat_action_dim,
    flat_action_space,
    flatten_action,
    unflatten_action,
    unflatten_actions,
)

BOX_BOUND = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
NESTED = spaces.Tuple(
    (
        spaces.Discrete(4, start=-2),
        spaces.Tuple(
            (
                spaces.MultiDiscrete(np.array([[3, 2], [4, 5]]), start=np.array([[1, 0], [-1, 2]])),
                spaces.MultiBinary((2, 3)),
                spaces.Box(low=-BOX_BOUND, high=BOX_BOUND),
            )
        ),
        spaces.Discrete(3, start=5),
        spaces.Box(low=np.array([0.0, -3.0]), high=np.array([2.0, 1.0]), dtype=np.float64),
    )
)
# 1 + (4 + 6 + 6) + 1 + 2
NESTED_DIM = 20


def _assert_same_action(space, expected, actual):
    """Structural equality of two elements of ``space`` (tuples compared component by component)."""
    if isinstance(space, spaces.Tuple):
        assert isinstance(actual, tuple) and len(actual) == len(space.spaces)
        for sub, e, a in zip(space.spaces, expected, actual, strict=True):
            _assert_same_action(sub, e, a)
    elif isinstance(space, spaces.Box):
        assert actual.shape == space.shape and actual.dtype == space.dtype
        np.testing.assert_allclose(actual, expected, rtol=1e-6)
    else:
        np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))


def test_flat_dims():
    assert flat_action_dim(spaces.Discrete(7)) == 1
    assert flat_action_dim(spaces.MultiDiscrete([2, 3, 4])) == 3
    assert flat_action_dim(spaces.MultiBinary((2, 2))) == 4
    assert flat_action_dim(spaces.Box(-1, 1, (2, 3))) == 6
    assert flat_action_dim(NESTED) == NESTED_DIM
    box = flat_action_space(NESTED)
    assert isinstance(box, spaces.Box) and box.shape == (NESTED_DIM,) and box.dtype == np.float32


def test_round_trip_random_samples():
    NESTED.seed(0)
    for _ in range(200):
        action = NESTED.sample()
        flat = flatten_action(NESTED, action)
        assert flat.shape == (NESTED_DIM,) and flat.dtype == np.float32
        decoded = unflatten_action(NESTED, flat)
        assert NESTED.contains(decoded)
        _assert_same_action(NESTED, action, decoded)


def test_layout_is_depth_first_index_encoding():
    """Discrete components are stored as their (start-shifted) value, not one-hot (unlike gymnasium's flatten)."""
    space = spaces.Tuple((spaces.Discrete(4, start=-2), spaces.Box(0, 1, (2,)), spaces.MultiDiscrete([3, 3], start=[1, 1])))
    action = (np.int64(-1), np.array([0.25, 0.5], dtype=np.float32), np.array([3, 1]))
    np.testing.assert_array_equal(flatten_action(space, action), [-1.0, 0.25, 0.5, 3.0, 1.0])
    assert component_slices(space) == [slice(0, 1), slice(1, 3), slice(3, 5)]
    assert [flat_action_dim(s) for s in NESTED.spaces] == [1, 16, 1, 2]
    assert component_slices(NESTED) == [slice(0, 1), slice(1, 17), slice(17, 18), slice(18, 20)]


def test_lists_accepted_for_tuples():
    space = spaces.Tuple((spaces.Discrete(3), spaces.Box(-1, 1, (1,))))
    np.testing.assert_array_equal(flatten_action(space, [2, [0.5]]), [2.0, 0.5])


def test_batch_decoding():
    NESTED.seed(1)
    actions = [NESTED.sample() for _ in range(5)]
    flat = np.stack([flatten_action(NESTED, a) for a in actions])
    decoded = unflatten_actions(NESTED, flat)
    assert len(decoded) == 5
    for a, d in zip(actions, decoded, strict=True):
        _assert_same_action(NESTED, a, d)


@pytest.mark.parametrize("clip", [True, False])
def test_batch_decoding_matches_row_decoding(clip):
    # Decoding a batch equals decoding each row alone, on unrounded, out-of-bounds rows (the values themselves are
    # checked by the round trips and test_box_clipping)
    rng = np.random.default_rng(0)
    flat = rng.normal(scale=6.0, size=(7, NESTED_DIM)).astype(np.float32)
    decoded = unflatten_actions(NESTED, flat, clip=clip)
    assert len(decoded) == 7
    for row, d in zip(flat, decoded, strict=True):
        expected = unflatten_action(NESTED, row, clip=clip)
        _assert_same_action(NESTED, expected, d)
    assert unflatten_actions(NESTED, np.zeros((0, NESTED_DIM))) == []
    with pytest.raises(ValueError, match="expected"):
        unflatten_actions(NESTED, flat[:, :-1])


def test_box_clipping():
    low, high = np.array([0.0, -3.0], dtype=np.float32), np.array([2.0, 1.0], dtype=np.float32)
    space = spaces.Tuple((spaces.Discrete(2), spaces.Box(low=low, high=high, dtype=np.float32)))
    flat = np.array([1.0, 5.0, -7.0], dtype=np.float32)
    clipped = unflatten_action(space, flat)
    np.testing.assert_array_equal(clipped[1], [2.0, -3.0])
    assert space.contains(clipped)
    raw = unflatten_action(space, flat, clip=False)
    np.testing.assert_array_equal(raw[1], [5.0, -7.0])
    assert not space.contains(raw)
    # Inside the bounds nothing changes
    np.testing.assert_array_equal(unflatten_action(space, np.array([0.0, 1.5, -0.5]))[1], [1.5, -0.5])


def test_discrete_values_are_rounded():
    """Flat buffers hold floats: values a float32 rounding error away from an integer decode to that integer."""
    space = spaces.Tuple((spaces.Discrete(3, start=1), spaces.MultiDiscrete([4, 4]), spaces.MultiBinary(2)))
    decoded = unflatten_action(space, np.array([2.9999998, 0.0000001, 2.9999, 1.0000001, 0.0]))
    assert space.contains(decoded)
    assert decoded[0] == 3
    np.testing.assert_array_equal(decoded[1], [0, 3])
    np.testing.assert_array_equal(decoded[2], [1, 0])


def test_integer_box_values_are_rounded_to_the_nearest_integer():
    # a cast truncated toward zero: a Beta / tanh-Normal sample in [0, 3] reached 3 only exactly on the bound, and
    # 0 took the mass of (-1, 1); now the nearest integer, then the bounds, as for Discrete parts
    space = spaces.Tuple((spaces.Discrete(2), spaces.Box(0, 3, (5,), np.int64)))
    decoded = unflatten_action(space, np.array([0.0, 2.6, 2.4, 0.7, -0.4, 3.2]))
    assert space.contains(decoded)
    np.testing.assert_array_equal(decoded[1], [3, 2, 1, 0, 3])
    np.testing.assert_array_equal(unflatten_actions(space, np.array([[1.0, 2.5, 1.5, 0.5, -0.6, 3.6]]))[0][1], [2, 2, 0, 0, 3])
    raw = unflatten_action(space, np.array([0.0, 2.6, 2.4, 0.7, -0.6, 3.6]), clip=False)[1]
    np.testing.assert_array_equal(raw, [3, 2, 1, -1, 4])  # (rounded, not clipped)


@pytest.mark.parametrize(
    "bad",
    [
        spaces.Dict({"a": spaces.Discrete(2)}),
        spaces.Text(5),
        spaces.Tuple((spaces.Discrete(2), spaces.Dict({"a": spaces.Discrete(2)}))),
        spaces.Tuple((spaces.Discrete(2), spaces.Tuple((spaces.Box(-1, 1, (1,)), spaces.Text(3))))),
    ],
)
def test_unsupported_spaces(bad):
    with pytest.raises(ValueError, match="Unsupported action space component"):
        check_action_space(bad)
    with pytest.raises(ValueError, match="Unsupported action space component"):
        flat_action_dim(bad)
    with pytest.raises(ValueError, match="Unsupported action space component"):
        unflatten_action(bad, np.zeros(3))


def test_empty_tuple_rejected():
    with pytest.raises(ValueError, match="Empty Tuple"):
        check_action_space(spaces.Tuple(()))


def test_flatten_rejects_unsupported_component():
    space = spaces.Tuple((spaces.Discrete(2), spaces.Dict({"a": spaces.Discrete(2)})))
    with pytest.raises(ValueError, match="Unsupported"):
        flatten_action(space, (1, {"a": 1}))


def test_bad_shapes():
    space = spaces.Tuple((spaces.Discrete(3), spaces.Box(-1, 1, (3,))))
    # Wrong flat length
    with pytest.raises(ValueError, match="does not match"):
        unflatten_action(space, np.zeros(3))
    with pytest.raises(ValueError, match="does not match"):
        unflatten_action(space, np.zeros((1, 4)))
    # Wrong number of components
    with pytest.raises(ValueError, match="2 components"):
        flatten_action(space, (1,))
    with pytest.raises(ValueError, match="2 components"):
        flatten_action(space, np.zeros(4))
    # A component of the wrong size must not silently shift the columns of the encoding
    with pytest.raises(ValueError, match="needs 3"):
        flatten_action(space, (1, np.zeros(2)))
    with pytest.raises(ValueError, match="needs 1"):
        flatten_action(space, ([1, 2], np.zeros(3)))
