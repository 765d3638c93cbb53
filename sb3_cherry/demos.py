"""
Record and load demonstrations (imitation-compatible trajectories).

:func:`record_demos` runs a trained model for a number of episodes and returns (and optionally writes) one trajectory
per episode; :func:`load_demos` reads such a file back. Trajectories are ``imitation.data.types.TrajectoryWithRew``
(Dict observations as ``imitation.data.types.DictObs``) when `imitation <https://github.com/HumanCompatibleAI/imitation>`_
is installed, else :class:`DemoTrajectory`, a frozen dataclass with the same fields (``obs``, ``acts``, ``infos``,
``terminal``, ``rews``; Dict observations as a plain ``dict`` of arrays). imitation is imported lazily: this module
works without it.

File format (version 1): a NumPy ``.npz`` archive, written atomically (temporary file + rename) and read with
``allow_pickle=False``. ``T`` is the total number of transitions, ``E`` the number of episodes:

===================  ===============================  =========================================================
key                  shape, dtype                     content
===================  ===============================  =========================================================
``format_version``   ``()`` int64                     ``1``
``spaces``           ``()`` str                       JSON ``{"observation_space": ..., "action_space": ...}``
                                                      (see :func:`space_to_dict`)
``metadata``         ``()`` str (optional)            JSON of free-form information (env id, sb3_cherry version)
``observations``     ``(T + E, *obs_shape)``          observations of every episode, each episode's final
                                                      observation included; for a ``Dict`` observation space
                                                      one array ``obs/<key>`` per key instead
``actions``          ``(T, *act_shape)``              actions in their space's shape (``(T,)`` int64 for
                                                      ``Discrete``); for a ``Tuple`` space the flat encoding
                                                      of :mod:`sb3_cherry.common.spaces`, ``(T, dim)``, float32,
                                                      or float64 when a ``Box`` component is float64 (its
                                                      values exact; files with float32 ones still load)
``rewards``          ``(T,)`` float                   rewards (NaN when unknown)
``episode_lengths``  ``(E,)`` int64                   transitions per episode (>= 1); episode ``i`` owns
                                                      ``episode_lengths[i]`` actions and that many + 1 observations
``terminal``         ``(E,)`` bool                    the episode ended in a terminal state (termination); False when it
                                                      was cut by a time limit (truncation)
===================  ===============================  =========================================================

Observations are those the policy sees and rewards the environment's own, unnormalised: when recording through a
``VecNormalize``, its unnormalised values (``get_original_obs`` / ``get_original_reward``) are stored, stacked and
transposed as the ``VecFrameStack`` / ``VecTransposeImage`` above it (rl_zoo3's ``frame_stack`` with ``normalize``, SB3's
image transposition) do to the normalised ones (:class:`WrappersAboveNormalization`): a recording holds the same
observations with and without normalisation.
"""

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    VecEnv,
    VecEnvWrapper,
    VecFrameStack,
    VecNormalize,
    VecTransposeImage,
    unwrap_vec_normalize,
)
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn
from stable_baselines3.common.vec_env.stacked_observations import StackedObservations

from sb3_cherry.common.finite import non_finite_rows
from sb3_cherry.common.restricted_pickle import MAX_ITEMSIZE, MAX_SPACE_ELEMENTS, check_discrete_sizes, check_space_size
from sb3_cherry.common.safe_npz import open_npz, read_npz_entry
from sb3_cherry.common.save_util import atomic_write
from sb3_cherry.common.spaces import check_action_space, flat_action_dim, flatten_action

#: Version of the demonstration file format written by :func:`save_demos`
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "spaces", "actions", "rewards", "episode_lengths", "terminal")


@dataclasses.dataclass(frozen=True, eq=False)
class DemoTrajectory:
    """
    One episode, with the fields of ``imitation.data.types.TrajectoryWithRew`` (used when imitation is missing).

    :param obs: observations, ``len(acts) + 1`` of them (a dict of arrays for Dict observation spaces)
    :param acts: actions
    :param infos: per-step info dicts, or None
    :param terminal: the episode ended in a terminal state
    :param rews: rewards, shape ``(len(acts),)``
    """

    obs: np.ndarray | dict[str, np.ndarray]
    acts: np.ndarray
    infos: np.ndarray | None
    terminal: bool
    rews: np.ndarray

    def __len__(self) -> int:
        return len(self.acts)

    def __post_init__(self) -> None:
        if _obs_len(self.obs) != len(self.acts) + 1:
            raise ValueError(f"expected one more observation than actions: {_obs_len(self.obs)} != {len(self.acts)} + 1")
        if len(self.acts) == 0:
            raise ValueError("Degenerate trajectory: must have at least one action.")
        if self.rews.shape != (len(self.acts),):
            raise ValueError(f"rewards must have shape ({len(self.acts)},), got {self.rews.shape}")


@dataclasses.dataclass(frozen=True, eq=False)
class DemoTransitions:
    """
    Demonstrations flattened into transitions ``(obs, acts, next_obs, dones)`` (numpy arrays; dicts of arrays for Dict
    observations). ``dones`` marks the last transition of each episode that ended in a terminal state.

    :param obs: observations ``s_t``
    :param acts: actions ``a_t`` (as stored: flat for Tuple spaces)
    :param next_obs: observations ``s_{t+1}``
    :param dones: terminal flags
    """

    obs: np.ndarray | dict[str, np.ndarray]
    acts: np.ndarray
    next_obs: np.ndarray | dict[str, np.ndarray]
    dones: np.ndarray

    def __len__(self) -> int:
        return len(self.acts)


def _imitation_types() -> tuple[type, type | None]:
    """The trajectory class and the Dict observation class: imitation's when importable, else ours (and ``None``)."""
    try:
        from imitation.data.types import DictObs, TrajectoryWithRew
    except ImportError:
        return DemoTrajectory, None
    return TrajectoryWithRew, DictObs


def _obs_len(obs: Any) -> int:
    if isinstance(obs, dict):
        return len(next(iter(obs.values())))
    return len(obs)


def _unwrap_obs(obs: Any) -> np.ndarray | dict[str, np.ndarray]:
    """A trajectory's observations as an array or a plain dict of arrays (imitation's DictObs unwrapped)."""
    if hasattr(obs, "unwrap") and hasattr(obs, "dict_len"):
        return dict(obs.unwrap())
    if isinstance(obs, dict):
        return dict(obs)
    return np.asarray(obs)


# ----------------------------------------------------------------------------------------------------------- spaces
def _encode_array(values: np.ndarray) -> Any:
    """A scalar when all values are equal, else a nested list; non-finite floats as the strings ``inf``/``-inf``/``nan``."""
    values = np.asarray(values)
    flat = values.reshape(-1)
    if flat.size > 0 and (np.all(flat == flat[0]) or np.all(np.isnan(flat.astype(np.float64)))):
        return _encode_scalar(flat[0])
    return _encode_nested(values.tolist())


def _encode_nested(values: Any) -> Any:
    if isinstance(values, list):
        return [_encode_nested(v) for v in values]
    return _encode_scalar(values)


def _encode_scalar(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _decode_array(encoded: Any, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(v) for v in value]
        return float(value) if isinstance(value, str) else value

    array = np.asarray(decode(encoded), dtype=dtype)
    return np.broadcast_to(array, shape).copy() if array.shape != tuple(shape) else array


def space_to_dict(space: spaces.Space) -> dict[str, Any]:
    """
    A JSON-serialisable description of a space: ``Box`` (shape, dtype, bounds), ``Discrete`` (n, start),
    ``MultiDiscrete`` (nvec, start, dtype), ``MultiBinary`` (n), ``Tuple`` and ``Dict`` (nested; Dict keys in order).

    :param space: the space
    :return: the description
    :raises ValueError: for other space types
    """
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _encode_array(space.low),
            "high": _encode_array(space.high),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": np.asarray(space.nvec).tolist(),
            "start": np.asarray(space.start).tolist(),
            "dtype": str(space.dtype),
        }
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_dict(sub) for sub in space.spaces]}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": [[key, space_to_dict(sub)] for key, sub in space.spaces.items()]}
    raise ValueError(
        f"Cannot record the space {space!r}: demonstration files support Box, Discrete, MultiDiscrete, MultiBinary, "
        "Tuple and Dict spaces."
    )


#: The deepest nesting of ``Tuple`` / ``Dict`` spaces a demonstration file may describe
MAX_SPACE_DEPTH = 32
#: The most entries the components of a demonstration file's spaces may have in all (each at most
#: ``MAX_SPACE_ELEMENTS``): their bounds are built when the file is read, 16 bytes an entry at most (1 GiB)
MAX_SPACES_ENTRIES = 4 * MAX_SPACE_ELEMENTS


def space_from_dict(description: dict[str, Any]) -> spaces.Space:
    """
    Rebuild a space from :func:`space_to_dict`'s description.

    A description read from a file is data: its ``Tuple`` / ``Dict`` spaces may nest at most :data:`MAX_SPACE_DEPTH`
    deep, and its components together hold at most ``MAX_SPACE_ELEMENTS`` entries (counted before each is built).

    :param description: the description
    :return: the space
    :raises ValueError: for an unknown, malformed, too deep or too large description
    """
    return _SpaceReader().read(description, 0)


class _SpaceReader:
    """:func:`space_from_dict` for one description, counting the entries of the components built so far."""

    def __init__(self) -> None:
        self.entries = 0

    def _count(self, shape: Any, kind: str) -> None:
        self.entries += math.prod(int(d) for d in np.atleast_1d(shape))
        if self.entries > MAX_SPACES_ENTRIES:
            raise ValueError(
                f"{kind} and the components before it hold {self.entries} entries in all, more than the "
                f"{MAX_SPACES_ENTRIES} a demonstration file's spaces may have"
            )

    def read(self, description: Any, depth: int) -> spaces.Space:
        """
        :param description: one (sub-)space's description
        :param depth: how many Tuple / Dict spaces contain it
        :return: the space
        """
        kind = description.get("type") if isinstance(description, dict) else None
        if kind in ("Tuple", "Dict"):
            return self._read_composite(kind, description, depth)
        try:
            if kind == "Box":
                shape = tuple(int(s) for s in description["shape"])
                check_space_size(shape, "the Box of the demonstration file")  # before the bounds are built at that shape
                self._count(shape, "a Box")
                dtype = np.dtype(description["dtype"])
                low = _decode_array(description["low"], shape, dtype)
                high = _decode_array(description["high"], shape, dtype)
                return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)  # type: ignore[arg-type]
            if kind in ("Discrete", "MultiDiscrete", "MultiBinary"):
                size = description["nvec" if kind == "MultiDiscrete" else "n"]
                check_discrete_sizes(kind, size, f"the {kind} space of the demonstration file")
                self._count(np.shape(size) if kind == "MultiDiscrete" else size if kind == "MultiBinary" else 1, kind)
            if kind == "Discrete":
                return spaces.Discrete(int(description["n"]), start=int(description.get("start", 0)))
            if kind == "MultiDiscrete":
                return spaces.MultiDiscrete(
                    np.asarray(description["nvec"]), dtype=description.get("dtype", "int64"), start=description.get("start")
                )
            if kind == "MultiBinary":
                return spaces.MultiBinary(description["n"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed {kind} space description {_short(description)}: {exc}") from exc
        raise ValueError(f"unknown space description {_short(description)}")

    def _read_composite(self, kind: str, description: dict[str, Any], depth: int) -> spaces.Space:
        """A ``Tuple`` / ``Dict`` space: its components' errors propagate as they are (one message, not one per level)."""
        if depth >= MAX_SPACE_DEPTH:
            raise ValueError(f"the spaces nest more than {MAX_SPACE_DEPTH} Tuple / Dict spaces deep")
        parts = description.get("spaces")
        if not isinstance(parts, list):
            raise ValueError(f"malformed {kind} space description {_short(description)}: 'spaces' must be a list")
        if kind == "Tuple":
            return spaces.Tuple([self.read(sub, depth + 1) for sub in parts])
        items = {}
        for item in parts:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                raise ValueError(f"malformed Dict space description: {_short(item)} is not a [key, space] pair")
            items[item[0]] = self.read(item[1], depth + 1)
        return spaces.Dict(items)


def _short(value: Any, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters (a description read from a file may be any size)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# ------------------------------------------------------------------------------------------------------ array checks
def _action_shape(space: spaces.Space) -> tuple[int, ...]:
    """Per-step shape of stored actions."""
    if isinstance(space, spaces.Tuple):
        return (flat_action_dim(space),)
    if isinstance(space, spaces.Discrete):
        return ()
    return tuple(space.shape)  # type: ignore[arg-type]


def _wide_float_boxes(space: spaces.Space) -> bool:
    """Whether a ``Box`` component of a (nested) ``Tuple`` space holds floats wider than float32 (float64)."""
    if isinstance(space, spaces.Tuple):
        return any(_wide_float_boxes(sub) for sub in space.spaces)
    return isinstance(space, spaces.Box) and space.dtype.kind == "f" and space.dtype.itemsize > 4


def _action_dtype(space: spaces.Space) -> np.dtype:
    if isinstance(space, spaces.Tuple):  # the flat encoding: float64 keeps a float64 Box's values (and bounds) exact
        return np.dtype(np.float64 if _wide_float_boxes(space) else np.float32)
    if isinstance(space, spaces.Discrete):
        return np.dtype(np.int64)
    return np.dtype(space.dtype)


def _obs_shape(space: spaces.Space) -> tuple[int, ...]:
    """Per-step shape of stored observations (non-Dict space)."""
    if isinstance(space, spaces.Discrete):
        return ()
    return tuple(space.shape)  # type: ignore[arg-type]


def _check_obs_space(space: spaces.Space) -> None:
    if isinstance(space, spaces.Dict):
        for key, sub in space.spaces.items():
            if isinstance(sub, (spaces.Dict, spaces.Tuple)):
                raise ValueError(f"Nested observation space {key!r}: {sub} is not supported in demonstration files.")
            space_to_dict(sub)
    elif isinstance(space, spaces.Tuple):
        raise ValueError(f"Tuple observation spaces are not supported in demonstration files (got {space}).")
    else:
        space_to_dict(space)


def _flatten_exact(space: spaces.Space, action: Any, dtype: np.dtype) -> np.ndarray:
    """:func:`~sb3_cherry.common.spaces.flatten_action` in ``dtype`` (its float32 would round a float64 Box's values)."""
    if dtype == np.float32:
        return flatten_action(space, action)
    if isinstance(space, spaces.Tuple):
        if not isinstance(action, (tuple, list)) or len(action) != len(space.spaces):
            raise ValueError(f"Expected a tuple of {len(space.spaces)} components for {space}, got {action!r}.")
        return np.concatenate([_flatten_exact(sub, part, dtype) for sub, part in zip(space.spaces, action, strict=True)])
    flat = np.asarray(action, dtype=dtype).reshape(-1)
    if flat.shape != (flat_action_dim(space),):
        raise ValueError(f"Action {action!r} has {flat.size} values, but {space} needs {flat_action_dim(space)}.")
    return flat


def _action_array(space: spaces.Space, acts: Any) -> np.ndarray:
    """Stored actions of one trajectory: flat for Tuple spaces (tuples are flattened), native shape otherwise."""
    dtype = _action_dtype(space)
    if isinstance(space, spaces.Tuple):
        if isinstance(acts, np.ndarray) and acts.dtype != object and acts.ndim == 2:
            return acts.astype(dtype)
        dim = flat_action_dim(space)
        rows = [
            _flatten_exact(space, a, dtype) if isinstance(a, (tuple, list)) else np.asarray(a, dtype=dtype).reshape(dim)
            for a in acts
        ]
        return np.stack(rows).astype(dtype)
    return np.asarray(acts, dtype=dtype).reshape((-1, *_action_shape(space)))


# ---------------------------------------------------------------------------------------------------------- writing
def demo_file_path(path: str | os.PathLike) -> pathlib.Path:
    """
    The file :func:`save_demos` writes for ``path``: ``.npz`` is added when the name has no suffix.

    :param path: the path given
    :return: the file's path
    """
    path = pathlib.Path(path)
    return path.with_suffix(".npz") if path.suffix == "" else path


def save_demos(
    path: str | os.PathLike,
    trajectories: Sequence[Any],
    observation_space: spaces.Space,
    action_space: spaces.Space,
    metadata: dict[str, Any] | None = None,
) -> pathlib.Path:
    """
    Write trajectories to a demonstration file (atomically: an interrupted write leaves any previous file intact).

    :param path: destination (``.npz`` appended when there is no suffix)
    :param trajectories: one per episode, with ``obs``, ``acts``, ``terminal`` and optionally ``rews``
        (imitation trajectories or :class:`DemoTrajectory`); Tuple actions as flat arrays or tuples
    :param observation_space: the environment's observation space
    :param action_space: the environment's action space
    :param metadata: JSON-serialisable free-form information stored with the demonstrations
    :return: the path written
    :raises ValueError: no trajectories, unsupported spaces, or trajectories that do not match the spaces
    """
    if len(trajectories) == 0:
        raise ValueError("save_demos: no trajectories to save.")
    _check_obs_space(observation_space)
    check_action_space(action_space)
    space_to_dict(action_space)
    arrays: dict[str, np.ndarray] = {}
    obs_parts: list[Any] = []
    acts_parts, rews_parts, lengths, terminal = [], [], [], []
    for i, traj in enumerate(trajectories):
        obs = _unwrap_obs(traj.obs)
        acts = _action_array(action_space, traj.acts)
        for key, part in obs.items() if isinstance(obs, dict) else [(None, obs)]:
            if len(part) != len(acts) + 1:
                what = "observations" if key is None else f"observations of {key!r}"
                raise ValueError(f"save_demos: trajectory {i} has {len(part)} {what} for {len(acts)} actions.")
        rews = getattr(traj, "rews", None)
        rews = np.full(len(acts), np.nan, dtype=np.float32) if rews is None else np.asarray(rews).reshape(-1)
        if len(rews) != len(acts):
            raise ValueError(f"save_demos: trajectory {i} has {len(rews)} rewards for {len(acts)} actions.")
        obs_parts.append(obs)
        acts_parts.append(acts)
        rews_parts.append(rews)
        lengths.append(len(acts))
        terminal.append(bool(traj.terminal))
    if isinstance(observation_space, spaces.Dict):
        for key in observation_space.spaces:
            if any(not isinstance(o, dict) or key not in o for o in obs_parts):
                raise ValueError(f"save_demos: the observation space is a Dict but some trajectories lack the key {key!r}.")
            arrays[f"obs/{key}"] = np.concatenate([np.asarray(o[key]) for o in obs_parts])
    else:
        arrays["observations"] = np.concatenate(obs_parts)
    arrays.update(
        format_version=np.array(FORMAT_VERSION, dtype=np.int64),
        spaces=np.array(
            json.dumps({"observation_space": space_to_dict(observation_space), "action_space": space_to_dict(action_space)})
        ),
        metadata=np.array(json.dumps(metadata or {})),
        actions=np.concatenate(acts_parts),
        rewards=np.concatenate(rews_parts),
        episode_lengths=np.asarray(lengths, dtype=np.int64),
        terminal=np.asarray(terminal, dtype=bool),
    )
    path = demo_file_path(path)
    # Check what we are about to write with the same code that reads it
    _validate(str(path), arrays)
    return atomic_write(path, lambda file: np.savez_compressed(file, **arrays))  # type: ignore[arg-type]


class RawTerminalObservations(VecEnvWrapper):
    """
    Keeps the unnormalised ``terminal_observation`` of each env's last step, from under a VecNormalize, whose own
    ``terminal_observation`` is normalised *and clipped* to ``clip_obs`` (``unnormalize_obs`` cannot give it back).
    It sits under the VecNormalize only inside :meth:`attached`, so the env stack is unchanged between steps (for
    callbacks, run checkpoints, saving).

    :param vec_normalize: the VecNormalize to read below
    """

    def __init__(self, vec_normalize: VecNormalize):
        super().__init__(vec_normalize.venv)
        self.vec_normalize = vec_normalize
        #: per env, the raw terminal observation of the last step (None where the episode did not end)
        self.terminal_observations: list[Any] = [None] * self.num_envs

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        """Inside the block, the wrapper sits under the VecNormalize (removed after it)."""
        self.vec_normalize.venv = self
        try:
            yield
        finally:
            self.vec_normalize.venv = self.venv

    def reset(self) -> Any:
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        # VecNormalize replaces (does not modify) the info entry, so keeping the reference is enough
        self.terminal_observations = [info.get("terminal_observation") for info in infos]
        return obs, rewards, dones, infos


class WrappersAboveNormalization:
    """
    Does to a VecNormalize's unnormalised observations what the wrappers above it do to its normalised ones: a
    ``VecFrameStack`` stacks them (in its own :class:`~stable_baselines3.common.vec_env.stacked_observations.
    StackedObservations`), a ``VecTransposeImage`` transposes them, a wrapper that keeps the observation space passes
    them on.

    :param top: the VecEnv recorded from
    :param vec_normalize: the VecNormalize in it
    :raises ValueError: a wrapper above the VecNormalize that changes the observation space in another way
    """

    def __init__(self, top: VecEnv, vec_normalize: VecNormalize):
        chain: list[VecEnvWrapper] = []
        env: VecEnv = top
        while env is not vec_normalize:
            assert isinstance(env, VecEnvWrapper)
            chain.append(env)
            env = env.venv
        self.steps: list[StackedObservations | VecTransposeImage] = []
        # the unnormalised observations' space (VecNormalize makes normalised images float32 in [-clip_obs, clip_obs])
        space = cast(spaces.Box | spaces.Dict, vec_normalize.venv.observation_space)
        for wrapper in reversed(chain):  # from the VecNormalize up
            if isinstance(wrapper, VecFrameStack):
                stacked = wrapper.stacked_obs
                order: str | dict[str, str] = (
                    {key: "first" if sub.channels_first else "last" for key, sub in stacked.sub_stacked_observations.items()}
                    if isinstance(space, spaces.Dict)
                    else "first" if stacked.channels_first else "last"
                )
                self.steps.append(StackedObservations(wrapper.num_envs, stacked.n_stack, space, order))
                space = self.steps[-1].stacked_observation_space  # type: ignore[union-attr]
            elif isinstance(wrapper, VecTransposeImage):
                self.steps.append(wrapper)
                if isinstance(space, spaces.Dict) and not wrapper.skip:
                    keys = wrapper.image_space_keys
                    space = spaces.Dict(
                        {k: wrapper.transpose_space(cast(spaces.Box, v), k) if k in keys else v for k, v in space.items()}
                    )
                elif isinstance(space, spaces.Box) and not wrapper.skip:
                    space = wrapper.transpose_space(space)
            elif wrapper.observation_space != wrapper.venv.observation_space:
                raise ValueError(
                    f"record_demos: {type(wrapper).__name__} above the VecNormalize changes the observations, which "
                    "cannot be done to the unnormalised ones the recording holds. Put it below the VecNormalize, or "
                    "record without normalisation."
                )
        #: the space of the unnormalised observations as the top of the stack shows them
        self.observation_space: spaces.Space = space

    def reset(self, observations: Any) -> Any:
        """
        :param observations: the VecNormalize's unnormalised observations after a reset
        :return: them as the top of the stack shows them
        """
        for step in self.steps:
            observations = (
                step.reset(observations)
                if isinstance(step, StackedObservations)
                else step.transpose_observations(observations)
            )
        return observations

    def step(self, observations: Any, dones: np.ndarray, terminal_observations: list[Any]) -> tuple[Any, list[Any]]:
        """
        :param observations: the VecNormalize's unnormalised observations after a step
        :param dones: the step's ends of episodes
        :param terminal_observations: per env, the unnormalised final observation of an episode that ended (or None)
        :return: the observations and final observations as the top of the stack shows them
        """
        infos: list[dict[str, Any]] = [
            {"terminal_observation": final} if final is not None else {} for final in terminal_observations
        ]
        for step in self.steps:
            if isinstance(step, StackedObservations):
                observations, infos = step.update(observations, dones, infos)
            else:
                observations = step.transpose_observations(observations)
                for info in infos:
                    if "terminal_observation" in info:
                        info["terminal_observation"] = step.transpose_observations(info["terminal_observation"])
        return observations, [info.get("terminal_observation") for info in infos]


def _as_vec_env(env: gym.Env | VecEnv | str) -> tuple[VecEnv, bool]:
    """The VecEnv to record from, and whether we created it (and must close it)."""
    if isinstance(env, VecEnv):
        return env, False
    if isinstance(env, str):
        return DummyVecEnv([lambda: gym.make(env)]), True
    if isinstance(env, gym.Env):
        return DummyVecEnv([lambda: env]), False
    raise ValueError(f"record_demos: env must be a gymnasium.Env, an env id or a VecEnv, got {type(env).__name__}.")


def _first(obs: Any) -> Any:
    """Copy of the first env's observation of a batch."""
    if isinstance(obs, dict):
        return {key: np.array(value[0]) for key, value in obs.items()}
    return np.array(obs[0])


def _stack(observations: list[Any]) -> np.ndarray | dict[str, np.ndarray]:
    if isinstance(observations[0], dict):
        return {key: np.stack([o[key] for o in observations]) for key in observations[0]}
    return np.stack(observations)


def record_demos(
    model: Any,
    env: gym.Env | VecEnv | str,
    n_episodes: int,
    path: str | os.PathLike | None = None,
    deterministic: bool = True,
    seed: int | None = None,
) -> list[Any]:
    """
    Run ``model`` for ``n_episodes`` episodes and return one trajectory per episode (written to ``path`` if given).

    The final observation of an episode is taken from ``infos[0]["terminal_observation"]`` (SB3 VecEnvs reset
    automatically). An episode interrupted by a restart of the env's worker (``infos[0]["worker_restarted"]``,
    :class:`~sb3_cherry.common.vec_env.RayVecEnv`: its last action was not applied and it did not end) is discarded,
    with a warning, and another one recorded in its place. Through a ``VecNormalize``, the unnormalised observations
    and rewards are recorded, and its statistics are left as they are (not updated during the recording, even in
    training mode).

    :param model: a trained SB3 model (anything with ``predict(obs, state, episode_start, deterministic)``)
    :param env: a ``gymnasium.Env``, an env id, or a VecEnv with one environment
    :param n_episodes: number of episodes (>= 1)
    :param path: demonstration file to write (see the module docstring), or None
    :param deterministic: take the policy's mode instead of sampling
    :param seed: seed the environment before the first reset
    :return: ``imitation.data.types.TrajectoryWithRew`` objects (or :class:`DemoTrajectory` without imitation)
    :raises ValueError: for a VecEnv with several environments, unsupported spaces or a VecEnv that does not report
        terminal observations
    """
    if n_episodes < 1:
        raise ValueError(f"record_demos: n_episodes must be >= 1, got {n_episodes}.")
    venv, owned = _as_vec_env(env)
    if venv.num_envs != 1:
        raise ValueError(f"record_demos records from a VecEnv with one environment, got {venv.num_envs}.")
    vec_normalize = unwrap_vec_normalize(venv)
    above = WrappersAboveNormalization(venv, vec_normalize) if vec_normalize is not None else None
    observation_space = above.observation_space if above is not None else venv.observation_space
    action_space = venv.action_space
    _check_obs_space(observation_space)
    check_action_space(action_space)

    trajectory_class, dict_obs_class = _imitation_types()
    trajectories: list[Any] = []  # imitation's TrajectoryWithRew when importable, else DemoTrajectory
    recorder = RawTerminalObservations(vec_normalize) if vec_normalize is not None else None
    # recording does not move the statistics (a training VecNormalize would update them with the demonstrations)
    training = vec_normalize.training if vec_normalize is not None else False
    try:
        if vec_normalize is not None:
            vec_normalize.training = False
        with recorder.attached() if recorder is not None else contextlib.nullcontext():
            if seed is not None:
                venv.seed(seed)
            obs = venv.reset()
            raw_obs = above.reset(vec_normalize.get_original_obs()) if above and vec_normalize else obs
            state, episode_start = None, np.ones((1,), dtype=bool)
            ep_obs, ep_acts, ep_rews = [_first(raw_obs)], [], []
            while len(trajectories) < n_episodes:
                action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
                obs, rewards, dones, infos = venv.step(action)
                ep_acts.append(action[0])
                if above is not None and recorder is not None and vec_normalize is not None:
                    rewards = vec_normalize.get_original_reward()
                    raw_obs, finals = above.step(vec_normalize.get_original_obs(), dones, recorder.terminal_observations)
                else:
                    raw_obs, finals = obs, [info.get("terminal_observation") for info in infos]
                ep_rews.append(float(rewards[0]))
                if dones[0] and infos[0].get("worker_restarted", False):
                    warnings.warn(
                        f"record_demos: the env's worker was restarted (info['worker_restarted']) {len(ep_acts) - 1} "
                        "steps into an episode: the interrupted episode is discarded (it did not end, its last action "
                        "was not applied) and another one is recorded in its place.",
                        stacklevel=2,
                    )
                    ep_obs, ep_acts, ep_rews = [_first(raw_obs)], [], []
                elif dones[0]:
                    final = finals[0]
                    if final is None:
                        raise ValueError(
                            "record_demos: the VecEnv reported the end of an episode without infos[0]['terminal_observation'] "
                            "(use an SB3 VecEnv, which resets automatically and reports it)."
                        )
                    ep_obs.append({k: np.array(v) for k, v in final.items()} if isinstance(final, dict) else np.array(final))
                    stacked = _stack(ep_obs)
                    trajectories.append(
                        trajectory_class(
                            obs=(
                                dict_obs_class(stacked)
                                if dict_obs_class is not None and isinstance(stacked, dict)
                                else stacked
                            ),
                            acts=_action_array(action_space, ep_acts),
                            infos=None,
                            terminal=not infos[0].get("TimeLimit.truncated", False),
                            rews=np.asarray(ep_rews, dtype=np.float32),
                        )
                    )
                    ep_obs, ep_acts, ep_rews = [_first(raw_obs)], [], []
                else:
                    ep_obs.append(_first(raw_obs))
                episode_start = dones
    finally:
        if vec_normalize is not None:
            vec_normalize.training = training
        if owned:
            venv.close()
    if path is not None:
        import sb3_cherry

        env_id = env if isinstance(env, str) else _env_id(venv)
        save_demos(
            path,
            trajectories,
            observation_space,
            action_space,
            metadata={"env_id": env_id, "deterministic": deterministic, "sb3_cherry_version": sb3_cherry.__version__},
        )
    return trajectories


def _env_id(venv: VecEnv) -> str | None:
    try:
        spec = venv.get_attr("spec")[0]
    except Exception:  # a VecEnv that cannot report attributes: the id is only informative
        return None
    return getattr(spec, "id", None)


# ---------------------------------------------------------------------------------------------------------- reading
#: The most transitions a demonstration file may declare (its arrays must hold them: far beyond any real file, and
#: small enough that no sum of its episode lengths overflows numpy's int64)
MAX_TRANSITIONS = 2**40
#: The most bytes an entry read before the file's own shapes are known (``format_version``, ``spaces``,
#: ``episode_lengths``), or read when they are not usable, may inflate to: an array of the largest space
MAX_METADATA_BYTES = MAX_SPACE_ELEMENTS * MAX_ITEMSIZE


def _size_limits(observation_space: spaces.Space, action_space: spaces.Space, lengths: np.ndarray) -> dict[str, int] | None:
    """The most bytes each array of a file may take, from its (checked) episode lengths and spaces, at 8 bytes an entry;
    None for spaces a demonstration file cannot have (:func:`_validate` then refuses the file)."""
    n_transitions, n_episodes = int(lengths.sum()), len(lengths)
    obs_spaces = (
        {f"obs/{key}": sub for key, sub in observation_space.spaces.items()}
        if isinstance(observation_space, spaces.Dict)
        else {"observations": observation_space}
    )
    try:
        limits = {
            "terminal": n_episodes * MAX_ITEMSIZE,
            "actions": n_transitions * math.prod(_action_shape(action_space)) * MAX_ITEMSIZE,
            "rewards": n_transitions * MAX_ITEMSIZE,
        }
        for key, sub in obs_spaces.items():
            limits[key] = (n_transitions + n_episodes) * math.prod(_obs_shape(sub)) * MAX_ITEMSIZE
    except (TypeError, ValueError):  # (a nested space has no shape)
        return None
    return limits


def _read_archive(path: pathlib.Path) -> tuple[dict[str, np.ndarray], list[str], tuple[spaces.Space, spaces.Space]]:
    """
    The arrays of the archive that a demonstration file has (``allow_pickle=False``; other entries are not read), each
    refused before it is read when larger than the file's own episode lengths and spaces allow, and the names of all its
    arrays. Errors name the file; those of its version, keys, spaces and episode lengths are raised here (before the
    arrays they size are read), the others by :func:`_validate`.

    :param path: the file
    :return: ``(arrays, names, (observation_space, action_space))``, the spaces as :func:`_validate_metadata` checked them
    :raises FileNotFoundError: no such file
    :raises ValueError: not a valid demonstration file
    """
    if not path.exists():
        raise FileNotFoundError(f"No demonstration file at {path}.")
    loaded = open_npz(path, "a demonstration file")
    with loaded:
        names = list(loaded.files)
        arrays: dict[str, np.ndarray] = {}
        for key, limit, reason in (
            ("format_version", 64, "a format version is one number"),
            ("spaces", MAX_METADATA_BYTES, "the most an entry read before the file's shapes are known may take"),
            ("episode_lengths", MAX_METADATA_BYTES, "the most an entry read before the file's shapes are known may take"),
        ):
            if key in names:
                arrays[key] = read_npz_entry(str(path), loaded, key, limit, reason)
        observation_space, action_space = _validate_metadata(str(path), arrays, names)
        limits = _size_limits(observation_space, action_space, arrays["episode_lengths"])
        reason = "what its episode lengths and spaces allow, at 8 bytes an entry"
        if limits is None:
            limits = {key: MAX_METADATA_BYTES for key in ("terminal", "actions", "rewards", "observations")}
            reason = "the most an entry read before the file's shapes are known may take"
        for key, limit in limits.items():
            if key in names:
                arrays[key] = read_npz_entry(str(path), loaded, key, limit, reason)
    return arrays, names, (observation_space, action_space)


def _parse_spaces(where: str, arrays: dict[str, np.ndarray]) -> tuple[spaces.Space, spaces.Space]:
    try:
        description = json.loads(str(arrays["spaces"][()]))
        return space_from_dict(description["observation_space"]), space_from_dict(description["action_space"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: 'spaces' is not a valid space description ({exc}).") from exc
    except RecursionError as exc:  # JSON nested thousands of levels deep (json's parser recurses per level)
        raise ValueError(f"{where}: 'spaces' nests too deeply to be a space description.") from exc


def _validate_metadata(
    where: str, arrays: dict[str, np.ndarray], names: Sequence[str] | None = None
) -> tuple[spaces.Space, spaces.Space]:
    """
    Check what a demonstration archive says of itself (version, keys, spaces, episode lengths), before the arrays these
    size are read; return its spaces. Every problem raises a ValueError naming ``where``.

    :param where: the file, for error messages
    :param arrays: its arrays (at least ``format_version``, ``spaces`` and ``episode_lengths`` when it has them)
    :param names: the names of all its arrays (default: the keys of ``arrays``)
    :return: ``(observation_space, action_space)``
    """
    names = list(arrays) if names is None else names
    if "format_version" not in names:
        raise ValueError(
            f"{where}: missing 'format_version': not an sb3_cherry demonstration file "
            "(write one with sb3_cherry.demos.record_demos or `sb3-cherry record`)."
        )
    version = arrays["format_version"]
    if version.shape != () or not np.issubdtype(version.dtype, np.integer) or int(version) != FORMAT_VERSION:
        raise ValueError(
            f"{where}: format_version {version.tolist()!r} is not supported (this sb3_cherry reads version "
            f"{FORMAT_VERSION}); re-record the demonstrations or upgrade sb3_cherry."
        )
    missing = [key for key in REQUIRED_KEYS if key not in names]
    if missing:
        raise ValueError(
            f"{where}: missing {missing} (a version {FORMAT_VERSION} demonstration file has {list(REQUIRED_KEYS)})."
        )
    observation_space, action_space = _parse_spaces(where, arrays)
    try:  # spaces a file can describe but a demonstration cannot have (a Tuple observation, a Dict action)
        _check_obs_space(observation_space)
        check_action_space(action_space)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    lengths = arrays["episode_lengths"]
    if lengths.ndim != 1 or len(lengths) == 0 or not np.issubdtype(lengths.dtype, np.integer) or np.any(lengths < 1):
        raise ValueError(f"{where}: 'episode_lengths' must be a non-empty 1-D integer array of values >= 1, got {lengths!r}.")
    # their exact total (numpy's int64 sum wraps: four lengths of 2**62 add up to 0), so that every later sum is exact
    total = sum(int(length) for length in lengths.tolist())
    if total > MAX_TRANSITIONS:
        raise ValueError(
            f"{where}: 'episode_lengths' add up to {total} transitions, more than {MAX_TRANSITIONS}: the file is damaged "
            "or crafted."
        )
    return observation_space, action_space


def _validate(
    where: str,
    arrays: dict[str, np.ndarray],
    names: Sequence[str] | None = None,
    checked_spaces: tuple[spaces.Space, spaces.Space] | None = None,
) -> tuple[spaces.Space, spaces.Space]:
    """
    Check a demonstration archive's arrays; return its spaces. Every problem raises a ValueError naming ``where``.

    :param where: the file, for error messages
    :param arrays: its arrays (those a demonstration file has)
    :param names: the names of all its arrays, when ``arrays`` holds only those (default: the keys of ``arrays``)
    :param checked_spaces: the spaces :func:`_validate_metadata` already returned for these arrays (:func:`_read_archive`
        checks them before reading the arrays they size), not parsed and checked again
    :return: ``(observation_space, action_space)``
    """
    observation_space, action_space = checked_spaces or _validate_metadata(where, arrays, names)

    lengths, terminal = arrays["episode_lengths"], arrays["terminal"]
    if terminal.shape != lengths.shape or terminal.dtype != bool:
        raise ValueError(
            f"{where}: 'terminal' must be a bool array with one flag per episode ({len(lengths)}), "
            f"got {terminal.dtype} of shape {terminal.shape}."
        )
    n_transitions, n_episodes = int(lengths.sum()), len(lengths)

    actions, rewards = arrays["actions"], arrays["rewards"]
    expected_act = (n_transitions, *_action_shape(action_space))
    if actions.shape != expected_act:
        raise ValueError(
            f"{where}: 'actions' has shape {actions.shape}, but {n_episodes} episodes of {n_transitions} transitions "
            f"in the action space {action_space} need {expected_act}."
        )
    if rewards.shape != (n_transitions,) or not np.issubdtype(rewards.dtype, np.floating):
        raise ValueError(
            f"{where}: 'rewards' must be a float array of shape ({n_transitions},), got {rewards.dtype} {rewards.shape}."
        )

    n_obs = n_transitions + n_episodes
    if isinstance(observation_space, spaces.Dict):
        obs_items = [(f"obs/{key}", sub) for key, sub in observation_space.spaces.items()]
        extra = sorted(k for k in (arrays if names is None else names) if k.startswith("obs/") and k not in dict(obs_items))
        if extra:
            raise ValueError(f"{where}: observation arrays {extra} are not keys of the observation space {observation_space}.")
    else:
        obs_items = [("observations", observation_space)]
    for key, sub in obs_items:
        if key not in arrays:
            raise ValueError(f"{where}: missing observation array {key!r} for the observation space {observation_space}.")
        obs = arrays[key]
        if len(obs) != n_obs:
            raise ValueError(
                f"{where}: {len(obs)} observations in {key!r}, but {n_transitions} actions in {n_episodes} episodes need "
                f"{n_transitions} + {n_episodes} = {n_obs} (each episode stores its final observation)."
            )
        if obs.shape[1:] != _obs_shape(sub):
            raise ValueError(
                f"{where}: {key!r} has per-step shape {obs.shape[1:]}, but the observation space {sub} needs "
                f"{_obs_shape(sub)}."
            )
        if obs.dtype == object:
            raise ValueError(f"{where}: {key!r} is an object array.")
    _check_values(where, arrays, [key for key, _ in obs_items], action_space)
    return observation_space, action_space


def _check_values(where: str, arrays: dict[str, np.ndarray], obs_keys: list[str], action_space: spaces.Space) -> None:
    """Refuse non-finite values and actions outside ``action_space``, naming the first episode and step."""
    lengths, actions = arrays["episode_lengths"], arrays["actions"]
    for key in obs_keys:
        _check_finite(where, key, arrays[key], lengths, per_episode_extra=1)
    _check_finite(where, "actions", actions, lengths)
    # rewards: finite, or NaN for a whole episode recorded without them (save_demos' "unknown")
    rewards = arrays["rewards"]
    episode_of_step = np.repeat(np.arange(len(lengths)), lengths)
    unknown = np.ones(len(lengths), dtype=bool)
    np.logical_and.at(unknown, episode_of_step, np.isnan(rewards))
    _check_finite(where, "rewards", np.where(unknown[episode_of_step], 0.0, rewards), lengths)
    outside = _actions_outside(action_space, actions)
    if outside.any():
        episode, step = _locate(int(np.argmax(outside)), lengths, 0)
        raise ValueError(
            f"{where}: the action of episode {episode}, step {step} ({actions[int(np.argmax(outside))].tolist()!r}) is "
            f"outside the action space {action_space} ({int(outside.sum())} such actions): the file does not match its "
            "recorded space."
        )


def _locate(row: int, lengths: np.ndarray, per_episode_extra: int) -> tuple[int, int]:
    """Episode and step of ``row`` of an array holding ``length + per_episode_extra`` rows per episode."""
    ends = np.cumsum(lengths + per_episode_extra)
    episode = int(np.searchsorted(ends, row, side="right"))
    return episode, row - int(ends[episode] - lengths[episode] - per_episode_extra)


def _check_finite(where: str, key: str, values: np.ndarray, lengths: np.ndarray, per_episode_extra: int = 0) -> None:
    """Refuse NaN / inf (and float64 values beyond float32's range) in a float array, naming the first episode and step."""
    bad = non_finite_rows(values)
    if bad.any():
        episode, step = _locate(int(np.argmax(bad)), lengths, per_episode_extra)
        raise ValueError(
            f"{where}: {key!r} has a non-finite value (NaN, inf, or beyond float32's range: inf in the float32 policy) "
            f"at episode {episode}, step {step} ({int(bad.sum())} such steps): re-record the demonstrations, or drop "
            "those episodes."
        )


def _actions_outside(space: spaces.Space, actions: np.ndarray) -> np.ndarray:
    """One flag per stored action: not an element of ``space`` (stored encodings: flat columns for Tuple)."""
    return _outside(space, actions, within_tuple=False)


def _outside(space: spaces.Space, actions: np.ndarray, within_tuple: bool) -> np.ndarray:
    """
    :func:`_actions_outside`; ``within_tuple``: a component of a Tuple, whose flat encoding may be float32 (files of
    earlier versions, :func:`~sb3_cherry.common.spaces.flatten_action`): a wider ``Box``'s bound rounded to float32 is
    accepted too (``float32(0.1) > 0.1``), nothing further out.
    """
    rows = actions.reshape(len(actions), -1)
    if isinstance(space, spaces.Tuple):
        outside, column = np.zeros(len(actions), dtype=bool), 0
        for sub in space.spaces:
            width = flat_action_dim(sub)
            part = rows[:, column : column + width]
            outside |= _outside(sub, part if _action_shape(sub) != () else part[:, 0], within_tuple=True)
            column += width
        return outside
    if isinstance(space, spaces.Box):
        low, high = space.low.reshape(1, -1), space.high.reshape(1, -1)
        if within_tuple and _wide_float_boxes(space):
            with np.errstate(over="ignore"):  # a bound beyond float32's range rounds to inf: no limit there
                low = np.minimum(low, low.astype(np.float32).astype(low.dtype))
                high = np.maximum(high, high.astype(np.float32).astype(high.dtype))
        return cast(np.ndarray, ~((rows >= low) & (rows <= high)).all(axis=1))  # axis=1 of a 2-D array: an array
    start: int | np.ndarray
    stop: int | np.ndarray
    if isinstance(space, spaces.Discrete):
        start, stop = int(space.start), int(space.start + space.n)
    elif isinstance(space, spaces.MultiDiscrete):
        start, stop = space.start.reshape(1, -1), (space.start + space.nvec).reshape(1, -1)
    elif isinstance(space, spaces.MultiBinary):
        start, stop = 0, 2
    else:
        return np.zeros(len(actions), dtype=bool)
    integral = rows == np.round(rows)
    return cast(np.ndarray, ~(integral & (rows >= start) & (rows < stop)).all(axis=1))


def load_demo_spaces(path: str | os.PathLike) -> tuple[spaces.Space, spaces.Space]:
    """
    The observation and action spaces recorded in a demonstration file (the file is fully validated).

    :param path: the demonstration file
    :return: ``(observation_space, action_space)``
    :raises ValueError: the file is not a valid demonstration file
    """
    path = _resolve(path)
    arrays, names, checked_spaces = _read_archive(path)
    return _validate(str(path), arrays, names, checked_spaces)


def _resolve(path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.exists() and path.suffix == "" and path.with_suffix(".npz").exists():
        return path.with_suffix(".npz")
    return path


def load_demos(path: str | os.PathLike) -> list[Any]:
    """
    Load a demonstration file written by :func:`record_demos` / :func:`save_demos` (``allow_pickle=False``).

    :param path: the file (``.npz`` appended if the bare path does not exist)
    :return: one trajectory per episode: ``imitation.data.types.TrajectoryWithRew`` (``DictObs`` observations for Dict
        spaces) when imitation is installed, else :class:`DemoTrajectory`
    :raises FileNotFoundError: no such file
    :raises ValueError: the file is not a demonstration archive, has the wrong version, lacks keys, or its arrays
        disagree in shape (the message names the file and the problem)
    """
    path = _resolve(path)
    arrays, names, checked_spaces = _read_archive(path)
    observation_space, _ = _validate(str(path), arrays, names, checked_spaces)
    trajectory_class, dict_obs_class = _imitation_types()
    lengths = arrays["episode_lengths"]
    act_ends = np.cumsum(lengths)
    act_starts = act_ends - lengths
    obs_starts = act_starts + np.arange(len(lengths))
    if isinstance(observation_space, spaces.Dict):
        obs_arrays: dict[str, np.ndarray] | np.ndarray = {key: arrays[f"obs/{key}"] for key in observation_space.spaces}
    else:
        obs_arrays = arrays["observations"]
    trajectories = []
    for i, length in enumerate(lengths):
        window = slice(obs_starts[i], obs_starts[i] + length + 1)
        if isinstance(obs_arrays, dict):
            obs: Any = {key: value[window] for key, value in obs_arrays.items()}
            obs = dict_obs_class(obs) if dict_obs_class is not None else obs
        else:
            obs = obs_arrays[window]
        trajectories.append(
            trajectory_class(
                obs=obs,
                acts=arrays["actions"][act_starts[i] : act_ends[i]],
                infos=None,
                terminal=bool(arrays["terminal"][i]),
                rews=arrays["rewards"][act_starts[i] : act_ends[i]],
            )
        )
    return trajectories


def demos_to_transitions(
    trajectories: Sequence[Any], action_space: spaces.Space | None = None, include_actions: bool = True
) -> DemoTransitions:
    """
    Flatten trajectories into transitions ``(s_t, a_t, s_{t+1}, done_t)`` (what BCO's inverse model labels).

    :param trajectories: imitation trajectories or :class:`DemoTrajectory` objects
    :param action_space: the action space, to encode the actions as a demonstration file stores them (Tuple actions
        given as tuples become their flat encoding); None: the actions must already be arrays of one shape
    :param include_actions: False: the actions are not read, ``acts`` has shape ``(n, 0)`` (state-only use, as BCO's)
    :return: the transitions (plain numpy arrays; dicts of arrays for Dict observations)
    :raises ValueError: no trajectories, trajectories mixing array and Dict observations, or actions that are not
        arrays (e.g. tuples) without ``action_space``
    """
    if len(trajectories) == 0:
        raise ValueError("demos_to_transitions: no trajectories.")
    observations = [_unwrap_obs(traj.obs) for traj in trajectories]
    if len({isinstance(o, dict) for o in observations}) != 1:
        raise ValueError("demos_to_transitions: trajectories mix array and Dict observations.")
    dones = []
    for traj in trajectories:
        done = np.zeros(len(traj.acts), dtype=bool)
        done[-1] = bool(traj.terminal)
        dones.append(done)
    acts = _transition_actions(trajectories, action_space, include_actions)
    if isinstance(observations[0], dict):
        keys = list(observations[0])
        obs: Any = {k: np.concatenate([np.asarray(o[k])[:-1] for o in observations]) for k in keys}
        next_obs: Any = {k: np.concatenate([np.asarray(o[k])[1:] for o in observations]) for k in keys}
    else:
        arrays = cast(list[np.ndarray], observations)  # not Dict: checked above that none is a dict
        obs = np.concatenate([o[:-1] for o in arrays])
        next_obs = np.concatenate([o[1:] for o in arrays])
    return DemoTransitions(obs=obs, acts=acts, next_obs=next_obs, dones=np.concatenate(dones))


def _transition_actions(trajectories: Sequence[Any], action_space: spaces.Space | None, include_actions: bool) -> np.ndarray:
    """The actions of :func:`demos_to_transitions`, one row per transition."""
    if not include_actions:
        return np.zeros((sum(len(traj.acts) for traj in trajectories), 0), dtype=np.float32)
    if action_space is not None:
        return np.concatenate([_action_array(action_space, traj.acts) for traj in trajectories])
    try:
        parts = [np.asarray(traj.acts) for traj in trajectories]
        acts = np.concatenate(parts)
    except ValueError as exc:  # ragged rows: Tuple actions given as tuples
        raise ValueError(
            f"demos_to_transitions: the trajectories' actions are not arrays of one shape ({exc}); Tuple actions given "
            "as tuples need the space to be encoded: pass action_space=<the env's action space>."
        ) from exc
    if acts.dtype == object:
        raise ValueError(
            "demos_to_transitions: the trajectories' actions form an object array (Tuple actions given as tuples?): pass "
            "action_space=<the env's action space> to encode them as flat arrays."
        )
    return acts
