"""
Run checkpoints that continue exactly: a long training run split into chunks (processes, sessions) gives the same
``num_timesteps``, learning-rate / clip-range schedules and — for a fixed seed and a ``DummyVecEnv`` of envs whose state
is plain data — the same parameters as one uninterrupted run.

A checkpoint is a folder:

- ``model.zip``: the model as ``model.save`` writes it (parameters, optimizer state, hyperparameters);
- ``run_state.json``: counters (``num_timesteps``, the run's ``total_timesteps``, ``_n_updates``), the episode
  statistics, the RNG states of Python / NumPy / torch, the env states, and any ``extra`` data of the caller (e.g. an
  evaluation history);
- ``run_state.npz``: the arrays those refer to (last observation, episode starts, VecNormalize statistics, env arrays).

Everything reads back without pickle (``json`` and ``np.load(allow_pickle=False)``; the arrays through
:class:`~sb3_cherry.common.safe_npz.BoundedNpz`, so that a crafted file cannot make a reader allocate more than its own
size, and VecNormalize statistics that are not finite are refused). A checkpoint is written at an
update boundary (after ``train``, before the next rollout), into a temporary folder that replaces the previous
checkpoint only once it is complete. A process killed between the two renames of that swap leaves the previous
checkpoint aside (``.<folder>.old``): :func:`has_run_checkpoint`, which every reader calls, puts it back; the next save
removes the temporary folders of killed saves. A checkpoint folder that is a symbolic link is followed (its target is
written). A damaged or crafted checkpoint is refused with a ``ValueError`` naming the file; only the attributes a
checkpoint writes are set (data attributes of each layer, never its methods).

What is restored exactly:

- the model (through ``Algorithm.load``), the counters, the schedules' progress (a schedule given as a function is
  stored only as a pickle, which is not loaded: pass it again to :func:`load_run_checkpoint`, which refuses to go on
  without it), the RNG states (with gSDE, those from before the rollout's exploration-noise draw), the episode
  buffer, a recurrent policy's hidden states (with the envs' states);
- every ``VecEnvWrapper`` layer's plain data (``VecNormalize``'s running statistics and discounted returns,
  ``VecFrameStack``'s stacked frames, ...);
- with a ``DummyVecEnv``: each env's wrapper chain and unwrapped env when all their state is plain data (arrays,
  numbers, ``np.random.Generator`` states: classic control, sb3_cherry's envs, ``Monitor``, ``TimeLimit``) or a MuJoCo
  simulation (``mujoco.mj_getState``). Other envs (Box2D worlds, ``SubprocVecEnv`` workers) cannot be captured as data:
  on resume they start new episodes (``VecEnv.reset``, seeded with the model's ``seed`` plus the steps done, so that
  a chunk does not replay the first chunk's episodes), which changes nothing else; ``run_state.json`` records which
  case applied (``"envs_exact"``).

An algorithm may store its own run state besides its model file (``_run_checkpoint_state()`` /
``_restore_run_checkpoint_state(state)``, plain data: BCO's transition store). Algorithms whose class sets
``run_checkpoint_approximate`` (GAIL, AIRL: state a checkpoint does not hold, see :func:`approximate_reason`) continue
approximately: :class:`RunCheckpointCallback` and :func:`load_run_checkpoint` warn, and ``run_state.json`` records
the reason (``"approximate"``).

Use :class:`RunCheckpointCallback` to write checkpoints during ``learn`` (and optionally stop the process after a
chunk), :func:`load_run_checkpoint` + :func:`continue_run` to go on.
"""

import contextlib
import json
import os
import pathlib
import random
import shutil
import tempfile
import warnings
import zipfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch as th
from gymnasium import Env, Wrapper
from gymnasium.spaces import Space
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecNormalize
from stable_baselines3.common.vec_env.stacked_observations import StackedObservations

from sb3_cherry.common.restricted_pickle import check_finite_statistics
from sb3_cherry.common.safe_load import SCHEDULE_KEYS, read_archive_bytes, read_data_entry, schedule_from_fields
from sb3_cherry.common.safe_npz import BoundedNpz
from sb3_cherry.common.save_util import current_umask, remove_stale_temp_files, temp_prefix, temp_writer_state

MODEL_FILE = "model.zip"
STATE_FILE = "run_state.json"
ARRAYS_FILE = "run_state.npz"
FORMAT_VERSION = 1

# attributes that are configuration, rendering or links between layers, never episode state
_SKIPPED_ATTRS = {
    "env",
    "venv",
    "envs",
    "spec",
    "metadata",
    "render_mode",
    "screen",
    "clock",
    "isopen",
    "mujoco_renderer",
    "model",
    "data",
    "results_writer",
    "t_start",
    "class_attributes",
    "_cached_spec",
    "_np_random_seed",
}
_SCALARS = (bool, int, float, str, type(None))
#: the DummyVecEnv attributes a checkpoint stores (besides its envs); the step buffers are rewritten by every step
_DUMMY_ATTRS = ("_seeds", "_options", "reset_infos")


class _Unplain(Exception):
    """An attribute holds state that is not plain data (the env cannot be captured exactly)."""

    def __init__(self, key: str, value: Any = None):
        super().__init__(key)
        self.key = key
        self.kind = type(value).__name__


class _Encoder:
    """Encode plain data as JSON with the arrays kept aside (``{"__array__": key}`` references)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def encode(self, value: Any, key: str) -> Any:
        if isinstance(value, _SCALARS):
            if isinstance(value, float) and not np.isfinite(value):
                return {"__float__": repr(value)}
            return value
        if isinstance(value, np.generic):
            if value.dtype.kind in "biuf":
                return {"__scalar__": value.item(), "dtype": value.dtype.str}
            return self.encode(np.asarray(value), key)
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise _Unplain(key, value)
            self.arrays[key] = value
            return {"__array__": key}
        if isinstance(value, np.random.Generator):
            return {"__generator__": value.bit_generator.state}
        if isinstance(value, StackedObservations):  # VecFrameStack's frames: restored into the env's own object
            if hasattr(value, "sub_stacked_observations"):  # Dict observations: one per key
                subs = value.sub_stacked_observations
                return {"__stacked__": {k: self.encode(v, f"{key}.{k}") for k, v in subs.items()}}
            return {"__stacked__": self.encode(value.stacked_obs, f"{key}.stacked_obs")}
        if isinstance(value, RunningMeanStd):
            return {"__rms__": {name: self.encode(getattr(value, name), f"{key}.{name}") for name in ("mean", "var", "count")}}
        if isinstance(value, deque):
            return {"__deque__": [self.encode(v, f"{key}.{i}") for i, v in enumerate(value)], "maxlen": value.maxlen}
        if isinstance(value, (list, tuple)):
            items = [self.encode(v, f"{key}.{i}") for i, v in enumerate(value)]
            return items if isinstance(value, list) else {"__tuple__": items}
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {"__dict__": {k: self.encode(v, f"{key}.{k}") for k, v in value.items()}}
        raise _Unplain(key, value)


#: numpy's bit generators a stored ``np.random.Generator`` state may name
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def _decode(value: Any, arrays: Any) -> Any:
    """Inverse of :meth:`_Encoder.encode`."""
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        return np.array(arrays[value["__array__"]])
    if "__float__" in value:
        return float(value["__float__"])
    if "__scalar__" in value:
        dtype = np.dtype(value["dtype"])
        if dtype.kind not in "biuf":  # (what the encoder writes)
            raise ValueError(f"A run checkpoint's scalar has dtype {dtype}; only bool, integer and float scalars are read.")
        return dtype.type(value["__scalar__"])
    if "__generator__" in value:
        state = value["__generator__"]
        if state.get("bit_generator") not in _BIT_GENERATORS:
            raise ValueError(f"unknown bit generator {state.get('bit_generator')!r} (known: {list(_BIT_GENERATORS)})")
        bit_generator = getattr(np.random, state["bit_generator"])()
        bit_generator.state = state
        return np.random.Generator(bit_generator)
    if "__rms__" in value:
        rms = RunningMeanStd()
        for name, item in value["__rms__"].items():
            setattr(rms, name, _decode(item, arrays))
        return rms
    if "__deque__" in value:
        return deque([_decode(v, arrays) for v in value["__deque__"]], maxlen=value["maxlen"])
    if "__tuple__" in value:
        return tuple(_decode(v, arrays) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: _decode(v, arrays) for k, v in value["__dict__"].items()}
    raise ValueError(f"Unknown entry in a run checkpoint: {sorted(value)}")


def _rebuilt_from_env(value: Any) -> bool:
    """
    Whether an attribute is configuration the env builds again rather than state: a space, an env, a callable, or a
    container of spaces (``VecNormalize.obs_spaces`` with Dict observations).
    """
    if isinstance(value, (Space, Env)) or callable(value):
        return True
    items = list(value.values()) if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else []
    return len(items) > 0 and all(isinstance(item, Space) for item in items)


def _layer_state(layer: Any, encoder: _Encoder, key: str) -> dict[str, Any]:
    """The plain-data attributes of one wrapper / env layer (raises :class:`_Unplain` on anything else)."""
    state = {}
    for name, value in vars(layer).items():
        if name in _SKIPPED_ATTRS or _rebuilt_from_env(value):
            continue
        state[name] = encoder.encode(value, f"{key}.{name}")
    unwrapped_data = getattr(layer, "data", None)
    if type(unwrapped_data).__name__ == "MjData":  # MuJoCo: the full integration state
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        buffer = np.empty(mujoco.mj_stateSize(layer.model, spec))
        mujoco.mj_getState(layer.model, unwrapped_data, buffer, spec)
        state["__mujoco_state__"] = encoder.encode(buffer, f"{key}.__mujoco_state__")
    elif unwrapped_data is not None:
        raise _Unplain(f"{key}.data", unwrapped_data)
    return state


def _env_chain(env: Env) -> list[Any]:
    """An env's wrapper layers, outermost first, ending with the unwrapped env."""
    chain: list[Any] = []
    while isinstance(env, Wrapper):
        chain.append(env)
        env = env.env
    chain.append(env)
    return chain


def _vec_chain(venv: VecEnv) -> list[VecEnv]:
    """The VecEnv wrapper layers, outermost first, ending with the base VecEnv."""
    chain = [venv]
    while isinstance(chain[-1], VecEnvWrapper):
        chain.append(chain[-1].venv)
    return chain


def _capture_envs(venv: VecEnv, encoder: _Encoder, prefix: str = "") -> tuple[list[dict[str, Any]], bool]:
    """Plain-data state of every VecEnv layer and, for a DummyVecEnv, of every env (``exact`` tells which)."""
    layers, exact = [], False
    chain = _vec_chain(venv)
    for i, layer in enumerate(chain[:-1]):
        try:
            layers.append(_layer_state(layer, encoder, f"{prefix}vec{i}"))
        except _Unplain as exc:
            attribute = exc.key.split(".", 1)[1] if "." in exc.key else exc.key
            raise ValueError(
                f"save_run_checkpoint: the VecEnv layer {type(layer).__name__} ({prefix}vec{i}) holds {attribute} "
                f"({exc.kind}), which a run checkpoint cannot store as data (arrays, numbers, strings, lists and dicts "
                "of them; spaces are skipped): keep that attribute as plain data or build it in the wrapper's "
                "constructor, or train without run checkpoints (no RunCheckpointCallback / --run-checkpoint-freq)."
            ) from exc
    base = chain[-1]
    if isinstance(base, DummyVecEnv):
        trial = _Encoder()
        try:
            envs = [
                [_layer_state(layer, trial, f"{prefix}env{j}.{k}") for k, layer in enumerate(_env_chain(env))]
                for j, env in enumerate(base.envs)
            ]
            # (the step buffers buf_obs / buf_rews / buf_dones are rewritten by every step)
            dummy = {name: trial.encode(getattr(base, name), f"{prefix}dummy.{name}") for name in _DUMMY_ATTRS}
            encoder.arrays.update(trial.arrays)
            layers.append({"__dummy__": dummy, "__envs__": envs})
            exact = True
        except _Unplain:
            exact = False
    if not exact:
        layers.append({})
    return layers, exact


def _restore_stacked(stacked: StackedObservations, value: Any, arrays: Any) -> None:
    """Put the frames of an encoded ``StackedObservations`` into the env's own (same spaces, same shapes)."""
    if hasattr(stacked, "sub_stacked_observations"):
        for key, sub in value.items():
            _restore_stacked(stacked.sub_stacked_observations[key], sub["__stacked__"], arrays)
        return
    frames = _decode(value, arrays)
    if frames.shape != stacked.stacked_obs.shape:
        raise ValueError(
            f"The run checkpoint stacks frames of shape {frames.shape}, the env passed {stacked.stacked_obs.shape}: "
            "build the env as the run did (same n_envs, wrappers, frame_stack)."
        )
    stacked.stacked_obs = frames


_MISSING = object()


def _restorable(layer: Any, name: str) -> bool:
    """
    Whether a checkpoint may set the attribute ``name`` of ``layer``: one that :func:`_layer_state` writes, i.e. a
    data attribute the layer has (or one it sets only once it runs, as ``VecNormalize.old_obs``, or whose default is
    a plain class attribute, as ``Env._np_random``), never a method, property, link, space or special name.
    """
    if name == "__mujoco_state__":
        return type(getattr(layer, "data", None)).__name__ == "MjData"
    if not name.isidentifier() or name.startswith("__") or name in _SKIPPED_ATTRS:
        return False
    current = vars(layer).get(name, _MISSING)
    if current is not _MISSING:
        return not _rebuilt_from_env(current)
    default = getattr(type(layer), name, _MISSING)
    if default is _MISSING:
        return not hasattr(layer, name)  # (not what a VecEnvWrapper forwards to the env it wraps)
    return not callable(default) and not hasattr(default, "__get__")


def _restore_layer(layer: Any, state: dict[str, Any], arrays: Any) -> None:
    for name, value in state.items():
        if not _restorable(layer, name):
            raise ValueError(
                f"A run checkpoint sets the attribute {name!r} of {type(layer).__name__}, which is refused (not a data "
                "attribute of that layer): the file is damaged or crafted, or the env is built differently from the run's."
            )
        if isinstance(value, dict) and "__stacked__" in value:
            _restore_stacked(getattr(layer, name), value["__stacked__"], arrays)
        elif name == "__mujoco_state__":
            import mujoco

            mujoco.mj_setState(layer.model, layer.data, _decode(value, arrays), mujoco.mjtState.mjSTATE_INTEGRATION)
            mujoco.mj_forward(layer.model, layer.data)
        else:
            setattr(layer, name, _decode(value, arrays))


def _restore_envs(venv: VecEnv, layers: list[dict[str, Any]], exact: bool, arrays: Any, where: str) -> None:
    chain = _vec_chain(venv)
    if len(chain) != len(layers):
        raise ValueError(
            f"The run checkpoint has {len(layers)} VecEnv layers, the env passed has {len(chain)} "
            f"({[type(layer).__name__ for layer in chain]}): build the env as the run did (same wrappers, normalize)."
        )
    for layer, state in zip(chain[:-1], layers[:-1], strict=True):
        _restore_layer(layer, state, arrays)
        if isinstance(layer, VecNormalize):
            check_finite_statistics(layer, where)
    if exact:
        base = chain[-1]
        if not isinstance(base, DummyVecEnv):
            raise ValueError(
                f"The run checkpoint holds the states of a DummyVecEnv's envs, the env passed is a {type(base).__name__}: "
                "build the env as the run did (vec_env dummy)."
            )
        envs = layers[-1]["__envs__"]
        if len(envs) != len(base.envs):
            raise ValueError(f"The run checkpoint has {len(envs)} envs, the env passed has {len(base.envs)}.")
        for index, (env, env_layers) in enumerate(zip(base.envs, envs, strict=True)):
            env_chain = _env_chain(env)
            if len(env_chain) != len(env_layers):
                raise ValueError(
                    f"The run checkpoint has {len(env_layers)} wrapper layers for env {index}, the env passed has "
                    f"{len(env_chain)} ({[type(layer).__name__ for layer in env_chain]}): build the env as the run did "
                    "(same env_wrapper, Monitor)."
                )
            for layer, state in zip(env_chain, env_layers, strict=True):
                _restore_layer(layer, state, arrays)
        for name, value in layers[-1]["__dummy__"].items():
            if name not in _DUMMY_ATTRS:
                raise ValueError(
                    f"A run checkpoint sets the attribute {name!r} of DummyVecEnv, which is refused (it stores only "
                    f"{list(_DUMMY_ATTRS)}): the file is damaged or crafted."
                )
            setattr(base, name, _decode(value, arrays))


def capture_rng() -> tuple[Any, Any, th.Tensor]:
    """
    :return: the states of Python's, numpy's and torch's (CPU) global random generators, as a run checkpoint stores
        them (see ``save_run_checkpoint(rng=...)``)
    """
    return random.getstate(), np.random.get_state(), th.get_rng_state()


def _rng_state(encoder: _Encoder, states: tuple[Any, Any, th.Tensor] | None = None) -> dict[str, Any]:
    (py_version, py_state, py_gauss), np_state, torch_state = states if states is not None else capture_rng()
    np_state = tuple(np_state)
    return {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_state[0], encoder.encode(np_state[1], "rng.numpy"), *np_state[2:]],
        "torch": encoder.encode(torch_state.numpy(), "rng.torch"),
    }


def _rnn_states(model: BaseAlgorithm, encoder: _Encoder) -> Any:
    """
    A recurrent policy's hidden states at the end of the last rollout (sb3-contrib's ``_last_lstm_states``: actor and
    critic ``(h, c)``), which the next rollout starts from mid-episode; None for other models.
    """
    states = getattr(model, "_last_lstm_states", None)
    if states is None:
        return None
    tensors = [tensor.detach().cpu().numpy() for pair in (states.pi, states.vf) for tensor in pair]
    return encoder.encode(tensors, "rnn_states")


def _restore_rnn_states(model: BaseAlgorithm, encoded: Any, arrays: Any) -> None:
    """Put the hidden states of :func:`_rnn_states` back (in the type and on the device of the model's own)."""
    states = getattr(model, "_last_lstm_states", None)
    if encoded is None or states is None:
        return
    h_pi, c_pi, h_vf, c_vf = (th.as_tensor(array, device=model.device) for array in _decode(encoded, arrays))
    model._last_lstm_states = type(states)((h_pi, c_pi), (h_vf, c_vf))  # type: ignore[attr-defined]


def _restore_rng(state: dict[str, Any], arrays: Any) -> None:
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, _decode(keys, arrays), pos, has_gauss, cached))
    th.set_rng_state(th.from_numpy(_decode(state["torch"], arrays)))


def approximate_reason(model: BaseAlgorithm) -> str | None:
    """
    Why a run checkpoint of ``model`` does not continue exactly, or None when it does: an algorithm whose class sets
    ``run_checkpoint_approximate`` (a sentence naming the state a checkpoint does not hold) resumes with a different
    result from the uninterrupted run's.

    :param model: the model
    :return: the class's sentence, or None
    """
    reason = getattr(type(model), "run_checkpoint_approximate", None)
    return str(reason) if reason else None


def _laid_out_as(array: np.ndarray, strides: list[int]) -> np.ndarray:
    """
    ``array``'s values in the memory layout given by ``strides`` (the layout an observation had when the checkpoint
    was written: e.g. ``VecTransposeImage`` returns a transposed view, and torch can pick another convolution kernel,
    with other rounding, for another layout). Strides that do not describe a layout of exactly the array's bytes
    (from a damaged file) leave the array as it is.
    """
    itemsize = array.itemsize
    if len(strides) != array.ndim or array.size == 0 or any(not isinstance(s, int) or s < 0 or s % itemsize for s in strides):
        return array
    steps = [s // itemsize for s in strides]  # in entries
    if sum((n - 1) * step for n, step in zip(array.shape, steps, strict=True)) + 1 > array.size:
        return array
    # every entry at its own place: number them through an int64 view of the same layout and read them back
    numbers = np.arange(array.size, dtype=np.int64).reshape(array.shape)
    probe = np.lib.stride_tricks.as_strided(np.full(array.size, -1, np.int64), array.shape, tuple(8 * t for t in steps))
    probe[...] = numbers
    if not np.array_equal(probe, numbers):
        return array
    view = np.lib.stride_tricks.as_strided(np.empty(array.size, array.dtype), array.shape, tuple(strides))
    view[...] = array
    return view


def _observation_strides(obs: Any) -> Any:
    """The strides of an observation batch (a dict of them for Dict observations), None for anything else."""
    if isinstance(obs, np.ndarray):
        return list(obs.strides)
    if isinstance(obs, dict):
        return {key: list(value.strides) for key, value in obs.items() if isinstance(value, np.ndarray)}
    return None


def _with_strides(obs: Any, strides: Any) -> Any:
    """``obs`` (decoded) laid out in memory as it was when saved (see :func:`_laid_out_as`)."""
    if isinstance(obs, np.ndarray) and isinstance(strides, list):
        return _laid_out_as(obs, strides)
    if isinstance(obs, dict) and isinstance(strides, dict):
        return {
            key: _laid_out_as(value, strides[key]) if isinstance(strides.get(key), list) else value
            for key, value in obs.items()
        }
    return obs


def save_run_checkpoint(
    model: BaseAlgorithm,
    folder: str | pathlib.Path,
    total_timesteps: int | None = None,
    extra: dict[str, Any] | None = None,
    other_envs: dict[str, VecEnv] | None = None,
    rng: tuple[Any, Any, th.Tensor] | None = None,
) -> pathlib.Path:
    """
    Write a checkpoint of a run at an update boundary (between ``train`` and the next rollout, or after ``learn``).

    :param model: the model (its env is captured too)
    :param folder: checkpoint folder (replaced atomically: an interrupted save keeps the previous checkpoint)
    :param total_timesteps: the run's total budget (default: ``model._total_timesteps``)
    :param extra: JSON-able data of the caller (e.g. evaluation history), returned by :func:`load_run_checkpoint`
    :param other_envs: further VecEnvs of the run whose state is captured the same way, by name (e.g. ``{"eval":
        eval_env}``: an evaluation env then continues its episodes' random stream), restored by
        :func:`load_run_checkpoint`
    :param rng: the random generators' states to store (:func:`capture_rng`, taken at the update boundary), instead
        of the current ones (:class:`RunCheckpointCallback` saves after the rollout's first gSDE noise draw)
    :return: the folder (as given; a symbolic link is followed: its target is written)
    :raises ValueError: a model without env, or state that is not plain data (a VecEnv layer's attribute, the
        algorithm's run state), named
    """
    given = pathlib.Path(folder)
    if given.name in ("", ".."):  # ".", "/", "..": the swap would move that folder aside
        raise ValueError(f"save_run_checkpoint: {str(given)!r} names no folder of its own: pass one, e.g. 'run/ckpt'.")
    # a link is followed: the target is written (and its previous checkpoint set aside next to the target)
    folder = pathlib.Path(os.path.realpath(given))
    try:
        state, encoder = _run_state(model, total_timesteps, extra, other_envs, rng)
    except _Unplain as exc:  # (the env layers name theirs): the model's own state or the algorithm's
        raise ValueError(
            f"save_run_checkpoint: {exc.key} of {type(model).__name__} holds a {exc.kind}, which a run checkpoint cannot "
            "store as data (arrays, numbers, strings, lists and dicts of them): keep it as plain data, or train without "
            "run checkpoints."
        ) from exc
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(folder.parent)  # the temporary folders of killed saves
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=temp_prefix(folder.name), suffix=".tmp", dir=folder.parent))
    old = _previous(folder)  # the previous checkpoint, while the new one is renamed in
    moved = False
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        model.save(tmp / MODEL_FILE)
        with open(tmp / STATE_FILE, "w") as file:
            json.dump(state, file)
        np.savez(tmp / ARRAYS_FILE, **encoder.arrays)  # type: ignore[arg-type]
        for name in (MODEL_FILE, STATE_FILE, ARRAYS_FILE):
            _fsync(tmp / name)
        if folder.exists():
            _remove(old)  # a failure here stops the save: the rename below would fail on what is left
            os.replace(folder, old)
            moved = True
        os.replace(tmp, folder)
        moved = False
        _fsync(folder.parent)
        with contextlib.suppress(OSError):  # best effort: the next save removes it first
            _remove(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if moved and not folder.exists():
            os.replace(old, folder)  # the previous checkpoint back in place
        raise
    return given


def _run_state(
    model: BaseAlgorithm,
    total_timesteps: int | None,
    extra: dict[str, Any] | None,
    other_envs: dict[str, VecEnv] | None,
    rng: tuple[Any, Any, th.Tensor] | None,
) -> tuple[dict[str, Any], _Encoder]:
    """The JSON of :func:`save_run_checkpoint` and the encoder holding its arrays (raises :class:`_Unplain`)."""
    encoder = _Encoder()
    env = model.get_env()
    if env is None:
        raise ValueError("save_run_checkpoint needs a model with an env (the run's VecEnv).")
    env_layers, envs_exact = _capture_envs(env, encoder)
    others = {}
    for name, other in (other_envs or {}).items():
        other_layers, other_exact = _capture_envs(other, encoder, prefix=f"other.{name}.")
        others[name] = {"env_layers": other_layers, "envs_exact": other_exact}
    state = {
        "format_version": FORMAT_VERSION,
        "algorithm": type(model).__name__,
        "num_timesteps": int(model.num_timesteps),
        "total_timesteps": int(total_timesteps if total_timesteps is not None else model._total_timesteps),
        "n_updates": int(getattr(model, "_n_updates", 0)),
        "episode_num": int(model._episode_num),
        "last_obs": encoder.encode(model._last_obs, "last_obs"),
        "last_obs_strides": _observation_strides(model._last_obs),
        "last_episode_starts": encoder.encode(model._last_episode_starts, "last_episode_starts"),
        "last_original_obs": encoder.encode(model._last_original_obs, "last_original_obs"),
        "ep_info_buffer": encoder.encode(list(model.ep_info_buffer or []), "ep_info"),
        "ep_success_buffer": encoder.encode(list(model.ep_success_buffer or []), "ep_success"),
        "rng": _rng_state(encoder, rng),
        "rnn_states": _rnn_states(model, encoder),
        "envs_exact": envs_exact,
        "env_layers": env_layers,
        "other_envs": others,
        "extra": extra or {},
        "approximate": approximate_reason(model),
        # an algorithm's own run state besides its model file (BCO: the agent's transitions)
        "algorithm_state": (
            encoder.encode(model._run_checkpoint_state(), "algorithm") if hasattr(model, "_run_checkpoint_state") else None
        ),
    }
    return state, encoder


def _remove(path: pathlib.Path) -> None:
    """Remove a file, a link (not its target) or a folder tree, if there is one (errors are raised)."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _fsync(path: pathlib.Path) -> None:
    """Flush a file's (or a folder's entries') data to disk before a rename makes it the checkpoint."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _previous(folder: pathlib.Path) -> pathlib.Path:
    """Where :func:`save_run_checkpoint` moves the previous checkpoint while it renames the new one in."""
    return folder.with_name(f".{folder.name}.old")


def _has_files(folder: pathlib.Path) -> bool:
    return all((folder / name).is_file() for name in (MODEL_FILE, STATE_FILE, ARRAYS_FILE))


def _restore_previous(folder: pathlib.Path) -> None:
    """
    Put back the previous checkpoint when a save was killed between its two renames: ``folder`` is missing and the
    complete previous checkpoint sits in ``.<folder>.old`` (the new one, in the save's temporary folder, may be
    incomplete if the kill came earlier: it is left to :func:`remove_stale_temp_files`). Not while a save of this host
    is between those renames (its temporary folder's writer runs): it is about to put its own checkpoint in place, and
    its rename would fail on a restored folder. Best effort: a folder one may not write is left as it is.
    """
    if folder.name in ("", ".."):  # ".", "/", "..": paths save_run_checkpoint cannot have written to
        return
    old = _previous(folder)
    if folder.exists() or not _has_files(old):
        return
    prefix = f".{folder.name}."
    for candidate in folder.parent.iterdir():
        if candidate.name.startswith(prefix) and temp_writer_state(candidate.name) == "running":
            return
    try:
        os.replace(old, folder)
    except OSError:
        pass


@dataclass
class RunState:
    """
    What :func:`load_run_checkpoint` read besides the model.

    :param num_timesteps: steps done
    :param total_timesteps: the run's total budget
    :param envs_exact: whether the env states were restored (else the envs start new episodes)
    :param extra: the caller's data given to :func:`save_run_checkpoint`
    :param approximate: None when the algorithm's state is restored exactly; else what is not (GAIL, AIRL: see
        :func:`approximate_reason`)
    """

    num_timesteps: int
    total_timesteps: int
    envs_exact: bool
    extra: dict[str, Any] = field(default_factory=dict)
    approximate: str | None = None

    @property
    def remaining(self) -> int:
        """Steps left to the run's budget."""
        return max(0, self.total_timesteps - self.num_timesteps)


def has_run_checkpoint(folder: str | pathlib.Path) -> bool:
    """
    Whether ``folder`` holds a complete checkpoint. The previous checkpoint that a save killed between its renames left
    aside (``.<folder>.old``, with no ``folder``) is put back in place first, so that every reader finds it.

    :param folder: a checkpoint folder
    :return: whether it holds a complete checkpoint
    """
    folder = pathlib.Path(folder)
    if folder.name not in ("", ".."):  # (paths save_run_checkpoint cannot have written to)
        _restore_previous(pathlib.Path(os.path.realpath(folder)))  # a link's target is what a save swapped
    return _has_files(folder)


def read_run_state(folder: str | pathlib.Path, algo_class: type[BaseAlgorithm] | None = None) -> dict[str, Any]:
    """
    The ``run_state.json`` of a checkpoint (plain JSON; the arrays it refers to stay in ``run_state.npz``).

    :param folder: the checkpoint folder
    :param algo_class: when given, the checkpoint must be one of this algorithm
    :return: the decoded JSON (its layout checked: an object with every entry a checkpoint writes, of its type)
    :raises ValueError: an incomplete checkpoint, an unsupported format, one of another algorithm, or a file that is
        not valid JSON or not laid out as a checkpoint writes it (naming the file)
    """
    folder = pathlib.Path(folder)
    if not has_run_checkpoint(folder):
        raise ValueError(f"{folder} is not a complete run checkpoint (expected {MODEL_FILE}, {STATE_FILE}, {ARRAYS_FILE}).")
    path = folder / STATE_FILE
    try:
        with open(path, encoding="utf-8") as file:
            state = json.load(file)
    except (ValueError, RecursionError) as exc:  # (json.JSONDecodeError, UnicodeDecodeError)
        raise ValueError(f"{path} is not valid JSON ({exc}): {_DAMAGED}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a JSON {type(state).__name__}, not an object: {_DAMAGED}")
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{folder}: run checkpoint format {state.get('format_version')} is not supported ({FORMAT_VERSION}).")
    state.setdefault("other_envs", {})  # (checkpoints written before other_envs existed have none)
    for key, kind in _STATE_LAYOUT.items():
        if key not in state:
            raise ValueError(f"{path} has no {key!r}: {_DAMAGED}")
        value = state[key]
        count = kind is int and isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if not (count if kind is int else isinstance(value, kind)):
            expected = "a count (integer >= 0)" if kind is int else f"a JSON {_JSON_NAMES[kind]}"
            raise ValueError(f"{path}: {key!r} is {json.dumps(value)[:80]}, not {expected}: {_DAMAGED}")
    if not state["env_layers"] or not all(isinstance(layer, dict) for layer in state["env_layers"]):
        raise ValueError(f"{path}: 'env_layers' is not a non-empty list of objects: {_DAMAGED}")
    if not isinstance(state.get("approximate"), (str, type(None))):
        raise ValueError(f"{path}: 'approximate' is neither a string nor null: {_DAMAGED}")
    if algo_class is not None and state["algorithm"] != algo_class.__name__:
        raise ValueError(
            f"{folder} is a checkpoint of {state['algorithm']}, not {algo_class.__name__}: load it with that class."
        )
    return state


#: what an error about a run checkpoint's unreadable data tells to do
_DAMAGED = "the run checkpoint is damaged or crafted; use an intact copy of it, or train again."
#: the entries every ``run_state.json`` has, and their JSON types (see :func:`save_run_checkpoint`)
_STATE_LAYOUT: dict[str, type] = {
    "algorithm": str,
    "num_timesteps": int,
    "total_timesteps": int,
    "n_updates": int,
    "episode_num": int,
    "envs_exact": bool,
    "env_layers": list,
    "other_envs": dict,
    "extra": dict,
    "rng": dict,
    "ep_info_buffer": list,
    "ep_success_buffer": list,
}
_JSON_NAMES = {str: "string", bool: "boolean", list: "array", dict: "object"}


@contextlib.contextmanager
def _reading(path: pathlib.Path) -> Iterator[None]:
    """
    Within the block, the errors that damaged or crafted data of a checkpoint raise while it is decoded and restored
    (a missing key, a value of another type, an unknown dtype, ...) become one ``ValueError`` naming the file.

    :param path: the checkpoint's ``run_state.json``
    """
    try:
        yield
    except (KeyError, TypeError, AttributeError, IndexError, OverflowError, RecursionError) as exc:
        raise ValueError(f"{path}: cannot restore the run ({type(exc).__name__}: {exc}): {_DAMAGED}") from exc
    except ValueError as exc:
        if str(path.parent) in str(exc):  # (already names the checkpoint)
            raise
        raise ValueError(f"{path}: {exc}") from exc


def checkpoint_normalization(folder: str | pathlib.Path) -> dict[str, Any] | None:
    """
    The ``VecNormalize`` layer of a checkpoint's training env: its settings and running statistics, for building an
    evaluation env (``VecNormalize(venv, training=False, norm_reward=False, ...)`` with ``obs_rms`` set from here).

    :param folder: the checkpoint folder
    :return: the layer's attributes (``obs_rms`` / ``ret_rms`` as ``RunningMeanStd``, ``norm_obs``, ``clip_obs``,
        ``epsilon``, ``gamma``, ``norm_obs_keys``, ...), or None when the run did not normalise
    :raises ValueError: not a complete checkpoint
    """
    state = read_run_state(folder)
    with BoundedNpz(pathlib.Path(folder) / ARRAYS_FILE) as arrays, _reading(pathlib.Path(folder) / STATE_FILE):
        for layer in state["env_layers"][:-1]:
            if "obs_rms" in layer and "ret_rms" in layer:
                attributes = {name: _decode(value, arrays) for name, value in layer.items()}
                check_finite_statistics(SimpleNamespace(**attributes), str(pathlib.Path(folder) / ARRAYS_FILE))
                return attributes
    return None


def load_run_checkpoint(
    algo_class: type[BaseAlgorithm],
    folder: str | pathlib.Path,
    env: VecEnv,
    other_envs: dict[str, VecEnv] | None = None,
    **load_kwargs: Any,
) -> tuple[BaseAlgorithm, RunState]:
    """
    Load a checkpoint written by :func:`save_run_checkpoint` and restore the run's state into ``env`` and the model.

    :param algo_class: the algorithm class (``PPORollback``, ...)
    :param folder: the checkpoint folder
    :param env: the run's VecEnv, built as the run built it (same wrappers, ``VecNormalize``, number of envs)
    :param other_envs: the further VecEnvs given to :func:`save_run_checkpoint`, by the same names, built as the run
        built them; their state is restored too (a name the checkpoint does not hold is left as it is)
    :param load_kwargs: passed to ``algo_class.load`` (``device``, ...). A schedule the run was given as a function
        (``learning_rate``, ``clip_range``, ...: the model file holds it only as a pickle, which is not loaded) must be
        passed again, by its name (``learning_rate=schedule``) or in ``custom_objects``, for the run to continue with it
    :return: the model, ready for :func:`continue_run`, and the run state
    :raises ValueError: an incomplete, damaged or crafted checkpoint (naming the file), one of another algorithm, an
        env of another shape, or a schedule stored as a function that is not passed again
    """
    folder = pathlib.Path(folder)
    state = read_run_state(folder, algo_class)
    load_kwargs = _with_schedules(algo_class, folder / MODEL_FILE, load_kwargs)
    model = algo_class.load(folder / MODEL_FILE, env=env, **load_kwargs)
    with BoundedNpz(folder / ARRAYS_FILE) as arrays, _reading(folder / STATE_FILE):
        # the model's env: ``env`` with the wrappers SB3 adds itself (VecTransposeImage for images), as at saving
        model_env = model.get_env()
        assert model_env is not None  # load() was given ``env``
        _restore_envs(model_env, state["env_layers"], state["envs_exact"], arrays, str(folder / ARRAYS_FILE))
        for name, other in (other_envs or {}).items():
            saved = state.get("other_envs", {}).get(name)
            if saved is not None:
                _restore_envs(other, saved["env_layers"], saved["envs_exact"], arrays, str(folder / ARRAYS_FILE))
        model.num_timesteps = state["num_timesteps"]
        model._total_timesteps = state["total_timesteps"]
        model._n_updates = state["n_updates"]  # type: ignore[attr-defined]
        model._episode_num = state["episode_num"]
        model._current_progress_remaining = 1.0 - state["num_timesteps"] / max(1, state["total_timesteps"])
        window = model._stats_window_size
        model.ep_info_buffer = deque(_decode(state["ep_info_buffer"], arrays), maxlen=window)
        model.ep_success_buffer = deque(_decode(state["ep_success_buffer"], arrays), maxlen=window)
        if state["envs_exact"]:
            model._last_obs = _with_strides(_decode(state["last_obs"], arrays), state.get("last_obs_strides"))
            model._last_episode_starts = _decode(state["last_episode_starts"], arrays)
            model._last_original_obs = _decode(state["last_original_obs"], arrays)
            # the recurrent states the next rollout starts from, mid-episode (new episodes start from zeros)
            _restore_rnn_states(model, state.get("rnn_states"), arrays)
        else:  # new episodes: ``learn`` resets the env, seeded anew (``load`` seeded it with the run's first seed, which
            # would replay the first chunk's episodes: tracks, terrains)
            model._last_obs = None
            if model.seed is not None:
                model_env.seed(model.seed + state["num_timesteps"])
        if state.get("algorithm_state") is not None and hasattr(model, "_restore_run_checkpoint_state"):
            model._restore_run_checkpoint_state(_decode(state["algorithm_state"], arrays))
        _restore_rng(state["rng"], arrays)
    approximate = state.get("approximate")
    if approximate:
        warnings.warn(f"The run checkpoint in {folder} continues approximately: {approximate}.", stacklevel=2)
    run_state = RunState(
        state["num_timesteps"], state["total_timesteps"], state["envs_exact"], state["extra"], approximate or None
    )
    return model, run_state


def _function_schedules(path: pathlib.Path) -> list[str]:
    """
    The schedules a model file holds only as a pickled function (a load without pickle makes them constants), by the
    constructor argument that sets them (``lr_schedule`` is built from ``learning_rate``).

    :param path: the model file
    :return: the argument names (none when the file cannot be read: ``load`` then says why)
    """
    try:
        with zipfile.ZipFile(read_archive_bytes(path)) as archive:
            data = read_data_entry(archive, str(path))
    except (OSError, ValueError, zipfile.BadZipFile):
        return []
    names = {
        "learning_rate" if key == "lr_schedule" else key
        for key, item in data.items()
        if key in SCHEDULE_KEYS and isinstance(item, dict) and ":serialized:" in item and schedule_from_fields(item) is None
    }
    return sorted(names)


def _with_schedules(algo_class: type[BaseAlgorithm], path: pathlib.Path, load_kwargs: dict[str, Any]) -> dict[str, Any]:
    """
    ``load_kwargs`` with the schedules the model file holds as functions taken from the caller (by name or in
    ``custom_objects``), which then stand in for the stored ones; refused when the caller does not pass one (the run
    would go on with a constant: not the run it continues).

    :param algo_class: the algorithm class
    :param path: the model file
    :param load_kwargs: the caller's keyword arguments for ``load``
    :return: the keyword arguments for ``load``
    :raises ValueError: a schedule stored as a function and not passed, naming it and how to pass it
    """
    if load_kwargs.get("allow_pickle"):
        return load_kwargs
    names = _function_schedules(path)
    custom_objects = dict(load_kwargs.get("custom_objects") or {})
    missing = [name for name in names if name not in load_kwargs and name not in custom_objects]
    if missing:
        example = ", ".join(f"{name}=schedule" for name in missing)
        raise ValueError(
            f"{path} holds {', '.join(missing)} as a function, which is not loaded without pickle (a constant would "
            "replace it, and the run would not continue as it started). Pass the same schedule again: "
            f"load_run_checkpoint({algo_class.__name__}, folder, env, {example}) (or custom_objects="
            f"{{{missing[0]!r}: schedule}}); or allow_pickle=True if you trust the file."
        )
    if not names:
        return load_kwargs
    for name in names:  # (in custom_objects, nothing is rebuilt as a constant with a warning)
        custom_objects.setdefault(name, load_kwargs.get(name))
    if "learning_rate" in names:  # rebuilt from learning_rate by _setup_model
        custom_objects.setdefault("lr_schedule", None)
    return {**load_kwargs, "custom_objects": custom_objects}


def continue_run(model: BaseAlgorithm, run_state: RunState, **learn_kwargs: Any) -> BaseAlgorithm:
    """
    Go on training a loaded run to its total budget (``learn(remaining, reset_num_timesteps=False)``, so the
    schedules continue where they stopped).

    The given callbacks (a ``BaseCallback`` or a list of them, top level) continue their step counts
    (:func:`continue_callback_counts`): an ``EvalCallback`` / ``CheckpointCallback`` fires at the steps of the
    uninterrupted run.

    :param model: the model from :func:`load_run_checkpoint`
    :param run_state: its run state
    :param learn_kwargs: passed to ``learn`` (``callback``, ``log_interval``, ``progress_bar``, ...)
    :return: the model
    """
    if run_state.remaining == 0:
        return model
    callback = learn_kwargs.get("callback")
    continue_callback_counts(callback if isinstance(callback, list) else [callback], model)
    return model.learn(run_state.remaining, reset_num_timesteps=False, **learn_kwargs)


def continue_callback_counts(callbacks: list[Any], model: BaseAlgorithm) -> None:
    """
    Set the step count (``n_calls``) of each callback to the one it would have after ``model.num_timesteps`` steps of
    an uninterrupted run (one call per VecEnv step), so that periods counted in calls (``eval_freq``, ``save_freq``)
    go on where they were; a ``CallbackList``'s own callbacks too. Nested callbacks that count other events (an
    ``EvalCallback``'s ``callback_on_new_best``, ``StopTrainingOnMaxEpisodes``' episodes) are left as they are.

    :param callbacks: the callbacks (other items, e.g. None or functions, are skipped)
    :param model: the loaded model
    """
    calls = model.num_timesteps // model.n_envs
    for callback in callbacks:
        if isinstance(callback, BaseCallback):
            callback.n_calls = calls
        if isinstance(callback, CallbackList):
            continue_callback_counts(callback.callbacks, model)


class RunCheckpointCallback(BaseCallback):
    """
    Write a run checkpoint every ``save_freq`` steps, at the first update boundary after each multiple (and at the end
    of training); optionally stop ``learn`` after ``stop_after`` steps in this process (a chunk), right after a
    checkpoint, so that a later :func:`continue_run` takes over exactly.

    :param folder: checkpoint folder
    :param save_freq: steps between checkpoints
    :param stop_after: stop this ``learn`` at the checkpoint of the first multiple of ``save_freq`` that lies less
        than one rollout before ``stop_after`` steps after its start, or later (a checkpoint comes at the first update
        boundary past its multiple, so a process resumed from one starts up to a rollout past it; with
        ``stop_after == save_freq`` each process runs one period); None: run to the end. The rollout is the one
        that just ended, or what a model's ``next_rollout_steps()`` declares (BCO: its random phase, then rounds)
    :param extra: callable returning JSON-able data stored with each checkpoint (e.g. an evaluation history)
    :param other_envs: further VecEnvs whose state is stored with each checkpoint (see :func:`save_run_checkpoint`)
    :param verbose: 1 prints a line per checkpoint
    """

    def __init__(
        self,
        folder: str | pathlib.Path,
        save_freq: int,
        stop_after: int | None = None,
        extra: Any = None,
        other_envs: dict[str, VecEnv] | None = None,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if save_freq < 1:
            raise ValueError(f"save_freq must be >= 1, got {save_freq}.")
        self.folder = pathlib.Path(folder)
        self.save_freq = int(save_freq)
        self.stop_after = stop_after
        self.extra = extra
        self.other_envs = other_envs
        self.start = 0
        self.next_save = 0
        self.stop = False
        self.saved_at = -1
        # gSDE: the random generators' states before the exploration noise drawn at the start of each rollout
        self.rng_before_noise: tuple[Any, Any, th.Tensor] | None = None
        self._in_rollout = False
        self._noisy_policy: Any = None
        self._rollout_started_at: int | None = None

    def _on_training_start(self) -> None:
        if getattr(self.model, "collection", "sync") != "sync":
            raise ValueError(
                "RunCheckpointCallback needs collection='sync' (with 'async' the weights of an update boundary live in "
                "the learner process): train with collection='sync', or call save_run_checkpoint between learn calls."
            )
        reason = approximate_reason(self.model)
        if reason:
            warnings.warn(f"Run checkpoints of {type(self.model).__name__} continue approximately: {reason}.", stacklevel=2)
        self.start = self.num_timesteps
        self.next_save = (self.num_timesteps // self.save_freq + 1) * self.save_freq
        self.stop = False
        self.rng_before_noise, self._in_rollout = None, False
        self._rollout_started_at = None
        policy: Any = self.model.policy
        if getattr(vars(policy).get("reset_noise"), "captures_rng_for", None) is not None:
            del policy.reset_noise  # left by a callback whose learn raised (no on_training_end): replaced below
        if getattr(self.model, "use_sde", False) and "reset_noise" not in vars(policy):
            # SB3's collect_rollouts draws the gSDE noise (policy.reset_noise) before on_rollout_start: the checkpoint
            # must hold the generators' states from before that draw, which a resumed rollout makes again
            reset_noise = policy.reset_noise

            def reset_noise_after_capture(*args: Any, **kwargs: Any) -> None:
                if not self._in_rollout:
                    self.rng_before_noise = capture_rng()
                reset_noise(*args, **kwargs)

            reset_noise_after_capture.captures_rng_for = self  # type: ignore[attr-defined]
            policy.reset_noise = reset_noise_after_capture
            self._noisy_policy = policy

    def save(self) -> None:
        """Write the checkpoint now."""
        extra = self.extra() if self.extra is not None else None
        rng = self.rng_before_noise if self._noisy_policy is not None and self._in_rollout else None
        save_run_checkpoint(self.model, self.folder, extra=extra, other_envs=self.other_envs, rng=rng)
        self.saved_at = self.num_timesteps
        if self.verbose >= 1:
            print(f"run checkpoint at {self.num_timesteps} steps: {self.folder}")

    def _on_rollout_start(self) -> None:
        # an update boundary: the weights are those trained on exactly num_timesteps steps
        self._in_rollout = True
        # the steps of the rollout that starts, as a model declares them (BCO: its random phase comes first, then
        # rounds), else those of the rollout that just ended (PPO / A2C: n_steps * n_envs; GAIL, AIRL: their generator's)
        declared = getattr(self.model, "next_rollout_steps", None)
        if callable(declared):
            rollout = int(declared())
        else:
            rollout = self.num_timesteps - self._rollout_started_at if self._rollout_started_at is not None else 0
        self._rollout_started_at = self.num_timesteps
        if self.num_timesteps >= self.next_save:
            self.save()
            # the multiple of save_freq this checkpoint stands for; the stop compares it within a rollout: counting the
            # steps since the start instead would miss stop_after by a few steps whenever this process was resumed
            # from a checkpoint just past a multiple, and run a whole period more
            multiple = self.num_timesteps // self.save_freq * self.save_freq
            self.next_save = multiple + self.save_freq
            if self.stop_after is not None and multiple + rollout > self.start + self.stop_after:
                self.stop = True

    def _on_step(self) -> bool:
        return not self.stop

    def _on_rollout_end(self) -> None:
        self._in_rollout = False

    def _on_training_end(self) -> None:
        if self._noisy_policy is not None:
            del self._noisy_policy.reset_noise  # the class's method again
            self._noisy_policy = None
        # only when ``learn`` reached its budget (an update boundary); not after a chunk's stop, nor twice, nor when a
        # caller ends training mid-rollout (rl_zoo3 calls ``on_training_end`` again after a KeyboardInterrupt)
        done = self.num_timesteps >= getattr(self.model, "_total_timesteps", 0)
        if not self.stop and done and self.saved_at != self.num_timesteps:
            self.save()
