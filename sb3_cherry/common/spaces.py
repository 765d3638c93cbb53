"""
Flat encoding of (possibly nested) ``Tuple`` action spaces.

SB3's rollout buffers store actions as a float array of shape ``(n_steps, n_envs, action_dim)``.
A ``Tuple`` action is stored as the concatenation of its components, depth first:

- ``Discrete(n)``: one column holding the index (as float),
- ``MultiDiscrete(nvec)``: ``len(nvec)`` columns of indices,
- ``MultiBinary(n)``: ``n`` columns of 0/1,
- ``Box(shape)``: ``prod(shape)`` columns,
- ``Tuple``: its components' columns, in order.

This is *not* gymnasium's ``flatten`` (which one-hot encodes discrete components): the index
encoding is what the action distributions evaluate log-probabilities on.
"""

from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces

SUPPORTED_COMPONENTS = (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Box, spaces.Tuple)


def check_action_space(space: spaces.Space) -> None:
    """
    Raise a ``ValueError`` if ``space`` (or one of its ``Tuple`` components) cannot be encoded.

    :param space: the action space
    """
    if isinstance(space, spaces.Tuple):
        if len(space.spaces) == 0:
            raise ValueError("Empty Tuple action spaces are not supported: give the Tuple at least one component.")
        for sub in space.spaces:
            check_action_space(sub)
    elif not isinstance(space, SUPPORTED_COMPONENTS):
        raise ValueError(
            f"Unsupported action space component {space!r}: sb3_cherry supports Discrete, MultiDiscrete, "
            "MultiBinary, Box and (nested) Tuples of them."
        )


def check_actions_start_at_zero(space: spaces.Space, owner: str, within_tuples: bool = True) -> None:
    """
    Refuse ``Discrete`` / ``MultiDiscrete`` actions that do not start at 0, for the parts of an algorithm that use
    actions as indices (one-hot encodings, class labels) without the space's ``start``.

    :param space: the action space
    :param owner: the algorithm, for the message
    :param within_tuples: also check the components of (nested) ``Tuple`` spaces
    :raises ValueError: naming the space and the fix
    """
    if isinstance(space, spaces.Tuple):
        if within_tuples:
            for part in space.spaces:
                check_actions_start_at_zero(part, owner, within_tuples)
    elif isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)) and np.any(np.asarray(space.start) != 0):
        kind = "Discrete(n)" if isinstance(space, spaces.Discrete) else "MultiDiscrete(nvec)"
        raise ValueError(
            f"{owner}: the action space {space} does not start at 0; {owner} supports only actions starting at 0. "
            f"Shift the env's actions (e.g. gymnasium.wrappers.TransformAction, with a {kind} action space starting "
            "at 0) and record the demonstrations on the shifted env."
        )


def flat_action_dim(space: spaces.Space) -> int:
    """
    Number of columns of the flat encoding of an action of ``space``.

    :param space: the action space
    :return: the flat dimension
    """
    if isinstance(space, spaces.Discrete):
        return 1
    if isinstance(space, spaces.MultiDiscrete):
        return int(np.prod(space.nvec.shape))
    if isinstance(space, spaces.MultiBinary):
        return int(np.prod(space.shape))
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, spaces.Tuple):
        return sum(flat_action_dim(sub) for sub in space.spaces)
    check_action_space(space)
    raise AssertionError("unreachable")


def flat_action_space(space: spaces.Space) -> spaces.Box:
    """
    A ``Box`` with the shape of the flat encoding (bounds are not meaningful for discrete columns).

    :param space: the action space
    :return: a float32 ``Box`` of shape ``(flat_action_dim(space),)``
    """
    return spaces.Box(-np.inf, np.inf, shape=(flat_action_dim(space),), dtype=np.float32)


def flatten_action(space: spaces.Space, action: Any) -> np.ndarray:
    """
    Encode one action of ``space`` as a flat float32 vector.

    :param space: the action space
    :param action: an element of ``space``
    :return: array of shape ``(flat_action_dim(space),)``
    """
    if isinstance(space, spaces.Tuple):
        if not isinstance(action, (tuple, list)) or len(action) != len(space.spaces):
            raise ValueError(f"Expected a tuple of {len(space.spaces)} components for {space}, got {action!r}.")
        return np.concatenate([flatten_action(sub, a) for sub, a in zip(space.spaces, action, strict=True)]).astype(np.float32)
    # flat_action_dim() also rejects unsupported components (Dict, Text, ...) with a ValueError
    dim = flat_action_dim(space)
    flat = np.asarray(action, dtype=np.float32).reshape(-1)
    if flat.shape != (dim,):
        # A component of the wrong size would otherwise shift every later column of the flat encoding
        raise ValueError(f"Action {action!r} has {flat.size} values, but {space} needs {dim}.")
    return flat


def unflatten_action(space: spaces.Space, flat: np.ndarray, clip: bool = True) -> Any:
    """
    Decode one flat action into an element of ``space``.

    :param space: the action space
    :param flat: array of shape ``(flat_action_dim(space),)``
    :param clip: clip ``Box`` components to their bounds (as SB3 does for Gaussian actions)
    :return: the action (a tuple for ``Tuple`` spaces)
    """
    flat = np.asarray(flat)
    if flat.shape != (flat_action_dim(space),):
        raise ValueError(f"Flat action of shape {flat.shape} does not match {space} (expected ({flat_action_dim(space)},)).")
    return _batch_decoder(space, clip)(flat.reshape(1, -1))[0]


def unflatten_actions(space: spaces.Space, flat: np.ndarray, clip: bool = True) -> list[Any]:
    """
    Decode a batch of flat actions (column-wise, one numpy operation per component rather than per row: this runs
    at every env step; :func:`action_decoder` also computes the column layout only once).

    :param space: the action space
    :param flat: array of shape ``(batch, flat_action_dim(space))``
    :param clip: clip ``Box`` components to their bounds
    :return: a list of ``batch`` actions, each equal to ``unflatten_action(space, row, clip)``
    """
    return action_decoder(space, clip)(flat)


def action_decoder(space: spaces.Space, clip: bool = True) -> Callable[[np.ndarray], list[Any]]:
    """
    A function that decodes batches of flat actions of ``space`` like :func:`unflatten_actions`, with the column
    layout computed once (for a wrapper that decodes at every env step).

    :param space: the action space
    :param clip: clip ``Box`` components to their bounds
    :return: ``decode(flat)``: flat ``(batch, flat_action_dim(space))`` to a list of ``batch`` actions
    """
    dim = flat_action_dim(space)
    decode_batch = _batch_decoder(space, clip)

    def decode(flat: np.ndarray) -> list[Any]:
        flat = np.asarray(flat)
        flat = flat.reshape(len(flat), -1) if flat.size else flat.reshape(0, dim)
        if flat.shape[1] != dim:
            raise ValueError(f"Flat actions of shape {flat.shape} do not match {space} (expected (batch, {dim})).")
        return decode_batch(flat)

    return decode


def _batch_decoder(space: spaces.Space, clip: bool) -> Callable[[np.ndarray], list[Any]]:
    """The decoder of ``(batch, flat_action_dim(space))`` arrays (shape already checked), built once per space."""
    if isinstance(space, spaces.Tuple):
        parts, start = [], 0
        for sub in space.spaces:
            dim = flat_action_dim(sub)
            parts.append((start, start + dim, _batch_decoder(sub, clip)))
            start += dim
        return lambda flat: list(zip(*(decode(flat[:, a:b]) for a, b, decode in parts), strict=True))
    if isinstance(space, spaces.Discrete):
        discrete_dtype = space.dtype  # (gymnasium's contains() checks it: an int32 space refuses an int64)
        return lambda flat: list(np.rint(flat[:, 0]).astype(discrete_dtype))
    if isinstance(space, (spaces.MultiDiscrete, spaces.MultiBinary)):
        dtype, shape = space.dtype, space.shape
        return lambda flat: list(np.rint(flat).astype(dtype).reshape((len(flat), *shape)))
    assert isinstance(space, spaces.Box)
    box_space = space

    # an integer Box gets the nearest integer (a cast truncates toward zero: `high` was reached only by a sample exactly
    # on it, and 0 took the mass of (-1, 1)), as the Discrete parts above
    integer = np.issubdtype(box_space.dtype, np.integer)

    def decode_box(flat: np.ndarray) -> list[Any]:
        box = (np.rint(flat) if integer else flat).astype(box_space.dtype).reshape((len(flat), *box_space.shape))
        return list(np.clip(box, box_space.low, box_space.high) if clip else box)

    return decode_box


def component_slices(space: spaces.Tuple) -> list[slice]:
    """
    Column slices of each top-level component in the flat encoding of a ``Tuple`` space.

    :param space: a ``Tuple`` space
    :return: one slice per component
    """
    slices, start = [], 0
    for sub in space.spaces:
        dim = flat_action_dim(sub)
        slices.append(slice(start, start + dim))
        start += dim
    return slices
