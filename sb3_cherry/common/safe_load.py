"""
Load SB3 model files without unpickling (the model of torch's ``weights_only``).

SB3 stores what JSON cannot hold (spaces, schedules, classes, numpy arrays) in the zip's ``data`` entry as base64
cloudpickle under a ``:serialized:`` key, next to readable copies of the object's first-level fields. Unpickling runs
whatever the file says. :func:`safe_custom_objects` rebuilds each such entry from plain data instead and hands the
result to SB3's ``load`` as ``custom_objects`` (which SB3 uses *instead of* unpickling the entry):

- spaces (Box, Discrete, MultiDiscrete, MultiBinary, Tuple, Dict, nested) from their readable fields, with exact
  bounds from the pickle read by :mod:`~sb3_cherry.common.restricted_pickle` (spaces and numpy only) when the two
  agree; when the fields are truncated (numpy prints big arrays with ``...``), that restricted read alone, else the
  space of the env passed to ``load``;
- schedules as ``ConstantSchedule`` / ``LinearSchedule`` from their stored numbers (an opaque function becomes a
  constant: the optimizer's last learning rate, or the constructor default, with a warning);
- classes (policy, rollout buffer, ``policy_kwargs`` entries and those of the other keyword-argument dicts an algorithm
  lists in its ``kwargs_entries``, e.g. BCO's ``inverse_model_kwargs``) by qualified name from an allow-list of
  classes that are already imported (SB3, sb3-contrib and sb3_cherry policies/buffers/feature extractors, torch
  activations and optimizers). A pickled class is recognised by reading the pickle's opcodes, never by executing them;
- runtime state (last observation, episode buffers, LSTM states) is dropped: the next ``learn`` resets the env.

Anything else stored as a pickle is refused with an error naming the entry; ``allow_pickle=True`` restores SB3's
behaviour for files you trust.
"""

import ast
import base64
import binascii
import io
import json
import os
import pickletools
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule

from sb3_cherry.common.restricted_pickle import (
    SPACE_GLOBALS,
    RestrictedUnpickler,
    UnsafeModelFileError,
    check_discrete_sizes,
    check_space_size,
)
from sb3_cherry.common.safe_config import UnsafeConfigError, literal_value
from sb3_cherry.common.schedules import ZooLinearSchedule

#: Packages whose (already imported) classes may be named by a model file
TRUSTED_PACKAGES = ("stable_baselines3", "sb3_contrib", "sb3_cherry")
#: Runtime state SB3 pickles and that a loaded model does not need (``learn`` rebuilds it)
RUNTIME_KEYS = {
    "_last_obs",
    "_last_episode_starts",
    "_last_original_obs",
    "_last_lstm_states",
    "ep_info_buffer",
    "ep_success_buffer",
}
#: Entries holding a schedule or a schedulable hyperparameter
SCHEDULE_KEYS = {"lr_schedule", "learning_rate", "clip_range", "clip_range_vf", "ent_coef"}
#: Key under which sb3_cherry stores the class name of the algorithm that wrote the file
ALGORITHM_KEY = "sb3_cherry_algorithm"
#: Pickle opcodes of a bare reference to an importable object (what cloudpickle writes for a class)
_GLOBAL_OPCODES = {"PROTO", "FRAME", "SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "STACK_GLOBAL", "GLOBAL", "MEMOIZE"}
_GLOBAL_OPCODES |= {"BINPUT", "LONG_BINPUT", "PUT", "STOP"}


def _subclasses(base: type) -> Iterator[type]:
    seen: set[type] = set()
    stack: list[type] = [base]
    while stack:
        subclasses: list[type] = stack.pop().__subclasses__()
        for sub in subclasses:
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
                yield sub


def _trusted(klass: type) -> bool:
    return klass.__module__.split(".")[0] in TRUSTED_PACKAGES


def allowed_classes(extra: Mapping[str, type] | None = None) -> dict[str, type]:
    """
    Classes a model file may name, by qualified name (``module.QualName``): the policies, rollout buffers and
    feature extractors of SB3, sb3-contrib and sb3_cherry that are imported, torch's activations, recurrent cells and
    optimizers. Nothing is imported by this function.

    :param extra: more classes (e.g. the algorithm's ``policy_aliases`` values)
    :return: ``{qualified name: class}``
    """
    # SB3's TF-like RMSprop (a config may name it) is only a subclass of Optimizer once its module is imported
    from stable_baselines3.common.sb2_compat import rmsprop_tf_like  # noqa: F401

    classes: list[type] = [BasePolicy, BaseBuffer, BaseFeaturesExtractor]
    for base in (BasePolicy, BaseBuffer, BaseFeaturesExtractor):
        classes.extend(sub for sub in _subclasses(base) if _trusted(sub))
    classes.extend(
        sub for sub in _subclasses(th.optim.Optimizer) if sub.__module__.startswith(("torch.optim", "stable_baselines3"))
    )
    classes.extend(sub for sub in _subclasses(th.nn.Module) if sub.__module__ == "torch.nn.modules.activation")
    classes.extend([th.nn.LSTM, th.nn.GRU, th.nn.RNN, th.nn.Identity])
    classes.extend(sub for sub in _subclasses(th.nn.Module) if sub.__module__.startswith("sb3_cherry."))
    classes.extend((extra or {}).values())
    return {f"{klass.__module__}.{klass.__qualname__}": klass for klass in classes}


def pickled_global_name(serialized: str) -> str | None:
    """
    The qualified name a pickle refers to when it is nothing but a reference to an importable object (how
    cloudpickle stores an importable class), read from its opcodes without executing it.

    :param serialized: the base64 text of a ``:serialized:`` entry
    :return: ``"module.name"``, or None when the pickle does anything else
    """
    try:
        raw = base64.b64decode(serialized.encode(), validate=True)
        strings: list[str] = []
        name = None
        for opcode, arg, _ in pickletools.genops(raw):
            if opcode.name not in _GLOBAL_OPCODES:
                return None
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(str(arg))
            elif opcode.name == "STACK_GLOBAL":
                if name is not None or len(strings) != 2:
                    return None
                name = f"{strings[0]}.{strings[1]}"
            elif opcode.name == "GLOBAL":
                if name is not None:
                    return None
                module, _, attr = str(arg).partition(" ")
                name = f"{module}.{attr}"
        return name
    except (ValueError, binascii.Error, TypeError):
        return None


# ---------------------------------------------------------------------------------------------------- spaces
_SPACE_NAMES: dict[str, Any] = {
    "inf": np.inf,
    "nan": np.nan,
    **{name: np.dtype(name).type for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64")},
    **{name: np.dtype(name).type for name in ("uint8", "uint16", "uint32", "uint64", "bool")},
    "bool_": np.bool_,
}


def _box(low: Any, high: Any, shape: Any = None, dtype: Any = np.float32) -> spaces.Box:
    """``Box`` from its printed arguments (arrays come back as lists); a shape of too many entries is refused."""
    if shape is not None:
        check_space_size(shape, "a Box in the model file")
    as_array = lambda bound: np.asarray(bound, dtype=dtype) if isinstance(bound, list) else bound  # noqa: E731
    return spaces.Box(as_array(low), as_array(high), shape, dtype)


_SPACE_CALLS: dict[str, Any] = {
    "Box": _box,
    "Discrete": spaces.Discrete,
    "MultiDiscrete": spaces.MultiDiscrete,
    "MultiBinary": spaces.MultiBinary,
    "Tuple": lambda *parts: spaces.Tuple(parts),
    "Dict": spaces.Dict,
}
# whitespace between two numpy array items ("[1. 2.]", "[[1 2]\n [3 4]]") becomes a comma
_ARRAY_GAP = re.compile(r"(?<=[\w.\]])\s+(?=[-+\w.\[])")


def _numpy_text_to_python(text: str) -> str:
    """Insert the commas numpy's ``str`` of an array leaves out, inside square brackets only."""
    out, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            if depth == 0:
                out.append(text[start:i])
                start = i
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                out.append(_ARRAY_GAP.sub(", ", text[start : i + 1]))
                start = i + 1
    out.append(text[start:])
    return "".join(out)


def _dict_repr_to_python(text: str) -> str:
    """gymnasium prints ``Dict('a': Box(...))``: wrap the items in braces so that it parses as ``Dict({...})``."""
    result, i, closers = [], 0, []
    depth = 0
    while i < len(text):
        if text.startswith("Dict(", i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            result.append("Dict({")
            depth += 1
            closers.append(depth)
            i += 5
            continue
        char = text[i]
        if char == "(":
            depth += 1
        elif char == ")":
            if closers and closers[-1] == depth:
                closers.pop()
                result.append("}")
            depth -= 1
        result.append(char)
        i += 1
    return "".join(result)


def parse_space_text(text: str) -> Any:
    """
    Parse gymnasium's printed form of a space (or a tuple/dict of spaces, or a numpy array) into the object.

    :param text: e.g. ``"Tuple(Discrete(3, start=1), Box(-1.0, [1. 2.], (2,), float32))"``
    :return: the value
    :raises ValueError: truncated arrays (``...``) or anything but spaces, numbers and dtypes
    """
    if "..." in text:
        raise ValueError("numpy truncated an array when the file was written ('...')")
    try:
        tree = ast.parse(_dict_repr_to_python(_numpy_text_to_python(text.strip())), mode="eval")
        return literal_value(tree.body, _SPACE_NAMES, _SPACE_CALLS, "space")
    except (SyntaxError, UnsafeConfigError, TypeError) as exc:
        raise ValueError(f"cannot read {text[:200]!r} as a space ({exc})") from exc


def _field(item: Mapping[str, Any], name: str) -> Any:
    """A readable field: JSON as stored, or the ``str`` SB3 wrote for it, parsed."""
    if name not in item:
        raise ValueError(f"the readable field {name!r} is missing")
    value = item[name]
    return parse_space_text(value) if isinstance(value, str) else value


def space_from_fields(item: Mapping[str, Any]) -> spaces.Space:
    """
    Rebuild a space from the readable fields SB3 writes next to its pickle.

    :param item: the ``data`` entry (``{":type:": ..., ":serialized:": ..., "dtype": ..., ...}``)
    :return: the space
    :raises ValueError: an unsupported space type or unreadable fields
    """
    kind = str(item.get(":type:", ""))
    if kind.endswith(".Box'>"):
        dtype = np.dtype(item["dtype"])
        shape = tuple(_field(item, "_shape"))
        low = np.asarray(_field(item, "low"), dtype=dtype).reshape(shape)
        high = np.asarray(_field(item, "high"), dtype=dtype).reshape(shape)
        return spaces.Box(low, high, shape, dtype)
    for name, size_key in (("Discrete", "n"), ("MultiDiscrete", "nvec"), ("MultiBinary", "n")):
        if kind.endswith(f".{name}'>"):
            check_discrete_sizes(name, _field(item, size_key), f"a {name} space in the model file")
    if kind.endswith(".Discrete'>"):
        return spaces.Discrete(int(_field(item, "n")), start=int(_field(item, "start")), dtype=np.dtype(item["dtype"]))
    if kind.endswith(".MultiDiscrete'>"):
        return spaces.MultiDiscrete(_field(item, "nvec"), dtype=np.dtype(item["dtype"]), start=_field(item, "start"))
    if kind.endswith(".MultiBinary'>"):
        return spaces.MultiBinary(_field(item, "n"))
    if kind.endswith(".Tuple'>"):
        parts = _field(item, "spaces")
        return _check_nested(spaces.Tuple(parts if isinstance(parts, (tuple, list)) else (parts,)))
    if kind.endswith(".Dict'>"):
        return _check_nested(spaces.Dict(_field(item, "spaces")))
    raise ValueError(f"spaces of type {kind} are not rebuilt from plain data")


def _leaf_spaces(space: spaces.Space) -> list[spaces.Space]:
    if isinstance(space, spaces.Tuple):
        return [leaf for sub in space.spaces for leaf in _leaf_spaces(sub)]
    if isinstance(space, spaces.Dict):
        return [leaf for sub in space.spaces.values() for leaf in _leaf_spaces(sub)]
    return [space]


def _check_nested(space: spaces.Space) -> spaces.Space:
    """The caps of a top-level space applied to a Tuple / Dict's components: each discrete one, and their entries in
    all (a policy allocates per entry)."""
    where = "a component of a Tuple / Dict space in the model file"
    total = 0
    for leaf in _leaf_spaces(space):
        if isinstance(leaf, spaces.Discrete):
            check_discrete_sizes("Discrete", int(leaf.n), where)
        elif isinstance(leaf, spaces.MultiDiscrete):
            check_discrete_sizes("MultiDiscrete", leaf.nvec, where)
        elif isinstance(leaf, spaces.MultiBinary):
            check_discrete_sizes("MultiBinary", leaf.n, where)
        total += int(np.prod(leaf.shape or (1,)))
    check_space_size((total,), where, "the components together")
    return space


def _same_space(a: spaces.Space, b: spaces.Space) -> bool:
    """Same type, shape, dtype and bounds (up to float printing precision); recursive for Tuple/Dict."""
    if type(a) is not type(b):
        return False
    if isinstance(a, spaces.Tuple):
        return len(a.spaces) == len(b.spaces) and all(_same_space(x, y) for x, y in zip(a.spaces, b.spaces, strict=True))  # type: ignore[attr-defined]
    if isinstance(a, spaces.Dict):
        return a.spaces.keys() == b.spaces.keys() and all(_same_space(a[k], b[k]) for k in a.spaces)  # type: ignore[index,attr-defined]
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if isinstance(a, spaces.Box):
        return np.allclose(a.low, b.low, rtol=1e-6, equal_nan=True) and np.allclose(a.high, b.high, rtol=1e-6, equal_nan=True)  # type: ignore[attr-defined]
    return a == b


def _space_from_restricted_pickle(item: Mapping[str, Any]) -> spaces.Space | None:
    """The space from its pickle read by :class:`RestrictedUnpickler` (spaces and numpy only), or None."""
    try:
        raw = base64.b64decode(str(item[":serialized:"]).encode(), validate=True)
        space = RestrictedUnpickler(io.BytesIO(raw), SPACE_GLOBALS, "space").load()
    except Exception:  # refused or unreadable: the caller falls back on the env
        return None
    return space if isinstance(space, spaces.Space) else None


def rebuild_space(key: str, item: Mapping[str, Any], env_space: spaces.Space | None) -> spaces.Space:
    """
    A space of the file from its readable fields, with the exact bounds of the env's own space or of the pickle read
    by :class:`RestrictedUnpickler` when they agree. When the fields cannot be read (numpy truncated an array): the
    pickle read by :class:`RestrictedUnpickler`, else the env's space if it has the stored type and shape.

    :param key: ``observation_space`` or ``action_space``
    :param item: the ``data`` entry
    :param env_space: the matching space of the env given to ``load`` (None: no env)
    :return: the space
    :raises UnsafeModelFileError: the space cannot be rebuilt and no env was given
    """
    try:
        space = space_from_fields(item)
    except (ValueError, KeyError, TypeError) as exc:
        restricted = _space_from_restricted_pickle(item)
        if restricted is not None:
            return env_space if env_space is not None and _same_space(restricted, env_space) else restricted
        stored_shape = item.get("_shape")
        if (
            env_space is not None
            and str(item.get(":type:", "")).endswith(f".{type(env_space).__name__}'>")
            and (not isinstance(stored_shape, list) or tuple(stored_shape) == env_space.shape)
        ):
            return env_space
        raise UnsafeModelFileError(
            f"cannot rebuild {key} from the file's readable fields ({exc}): pass env=... to load (its {key} is used), "
            "custom_objects={" + repr(key) + ": <space>}, or allow_pickle=True if you trust the file."
        ) from exc
    if env_space is not None and _same_space(space, env_space):
        return env_space
    # numpy prints floats to 8 digits: the pickle (read by the restricted unpickler) has the exact bounds
    exact = _space_from_restricted_pickle(item)
    return exact if exact is not None and _same_space(space, exact) else space


# ---------------------------------------------------------------------------------------------------- schedules
_SCHEDULE_CALLS: dict[str, Callable[..., Any]] = {
    "ConstantSchedule": ConstantSchedule,
    "LinearSchedule": LinearSchedule,
    # rl_zoo3's ``lin_<value>``: progress_remaining * initial_value (held at 0 past the end, as sb3-cherry trains it)
    "SimpleLinearSchedule": ZooLinearSchedule,
    "ZooLinearSchedule": ZooLinearSchedule,
    "FloatSchedule": FloatSchedule,
}


def _schedule_from_text(text: str) -> Any:
    tree = ast.parse(text.strip(), mode="eval")
    return literal_value(tree.body, {"inf": np.inf}, _SCHEDULE_CALLS, "schedule")


def schedule_from_fields(item: Mapping[str, Any]) -> Any:
    """
    A schedule rebuilt from its readable fields (SB3's ``FloatSchedule``/``ConstantSchedule``/``LinearSchedule``,
    rl_zoo3's ``SimpleLinearSchedule`` and sb3_cherry's ``ZooLinearSchedule``, both as the latter).

    :param item: the ``data`` entry
    :return: the schedule, or None when the stored object is opaque (e.g. a function)
    """
    kind = str(item.get(":type:", ""))
    try:
        if kind.endswith(".FloatSchedule'>"):
            inner = item.get("value_schedule")
            if isinstance(inner, (int, float)):
                return FloatSchedule(float(inner))
            return FloatSchedule(_schedule_from_text(str(inner)))
        if kind.endswith(".ConstantSchedule'>"):
            return ConstantSchedule(float(item["val"]))
        if kind.endswith(".LinearSchedule'>"):
            return LinearSchedule(float(item["start"]), float(item["end"]), float(item["end_fraction"]))
        if kind.endswith(".SimpleLinearSchedule'>") or kind.endswith(".ZooLinearSchedule'>"):
            return ZooLinearSchedule(float(item["initial_value"]))
    except (SyntaxError, UnsafeConfigError, KeyError, TypeError, ValueError, AssertionError):
        return None
    return None


# ---------------------------------------------------------------------------------------------------- classes
_CLASS_TEXT = re.compile(r"<class '([\w.]+)'>")
#: a numpy scalar as numpy 2 prints it inside a container, e.g. ``np.float32(1e-05)``: its number
_NUMPY_SCALAR_TEXT = re.compile(r"\bnp\.(?:float|int|uint)\d*\(([-+0-9.eE]+|nan|inf|-inf)\)")


def _value_from_text(text: str, classes: Mapping[str, type], where: str) -> Any:
    """A first-level field SB3 printed with ``str``: ``<class 'a.B'>`` (allow-listed), or a literal containing them."""
    names: dict[str, Any] = {}

    def placeholder(match: re.Match) -> str:
        if match.group(1) not in classes:
            raise UnsafeModelFileError(f"{where}: class {match.group(1)!r} is not in the allow-list")
        names[f"_class_{len(names)}"] = classes[match.group(1)]
        return f"_class_{len(names) - 1}"

    source = _CLASS_TEXT.sub(placeholder, text)
    try:
        tree = ast.parse(source, mode="eval")
        return literal_value(tree.body, {**names, "inf": np.inf, "nan": np.nan}, {}, where)
    except (SyntaxError, UnsafeConfigError) as exc:
        raise UnsafeModelFileError(f"{where}: cannot rebuild {text[:200]!r} from plain data") from exc


def _kwargs_from_fields(key: str, item: Mapping[str, Any], classes: Mapping[str, type]) -> dict[str, Any]:
    """
    A keyword-argument dict (``policy_kwargs``, or an entry of the algorithm's ``kwargs_entries``) rebuilt from the
    readable fields SB3 writes next to its pickle: JSON values as they are, printed literals parsed, printed classes
    looked up in the allow-list.

    :param key: the ``data`` entry, for error messages
    :param item: the entry
    :param classes: the allow-list (:func:`allowed_classes`)
    :return: the dict
    :raises UnsafeModelFileError: a value only a pickle could restore, or a class not in the allow-list
    """
    if not str(item.get(":type:", "")).endswith("'dict'>"):
        raise UnsafeModelFileError(f"{key} is stored as {item.get(':type:')}, not a dict")
    result = {}
    for name, value in item.items():
        if name.startswith(":"):
            continue
        where = f"{key}[{name!r}]"
        if not isinstance(value, str):
            result[name] = value  # stored as JSON
        elif _CLASS_TEXT.search(value):
            result[name] = _value_from_text(value, classes, where)
        elif value.startswith("<") and value.endswith(">"):
            raise UnsafeModelFileError(f"{where}: {value[:200]!r} is an object only a pickle can restore")
        else:
            try:  # a printed number / container (numpy scalar, ...)
                result[name] = _value_from_text(value, classes, where)
            except UnsafeModelFileError:
                if not value.startswith(("{", "[", "(")):
                    result[name] = value  # a plain string stored as JSON, e.g. action_distribution='beta'
                    continue
                # a printed container: numpy scalars inside it print as np.float32(1e-05) (numpy 2)
                plain = _NUMPY_SCALAR_TEXT.sub(r"\1", value)
                result[name] = _value_from_text(plain, classes, where)
    return result


# ---------------------------------------------------------------------------------------------------- archive
#: The most bytes a model archive's ``data`` entry (JSON hyperparameters, a few KiB) may inflate to
MAX_DATA_ENTRY_BYTES = 64 * 2**20
#: The most bytes any entry of a model archive (``policy.pth``, ``policy.optimizer.pth``, ...) may inflate to
MAX_ENTRY_BYTES = 2**30


def check_entry_sizes(archive: zipfile.ZipFile, where: str) -> None:
    """
    Refuse an archive whose entries declare more inflated bytes than a model needs (:data:`MAX_DATA_ENTRY_BYTES` for
    ``data``, :data:`MAX_ENTRY_BYTES` for the others), before any is inflated: a few MiB of deflated zeros or spaces
    inflate to gigabytes (zipfile stops at the declared size, so the declaration is what bounds a read).

    :param archive: the open archive
    :param where: the file, for the error message
    :raises ValueError: naming the entry
    """
    for info in archive.infolist():
        limit = MAX_DATA_ENTRY_BYTES if info.filename == "data" else MAX_ENTRY_BYTES
        if info.file_size > limit:
            raise ValueError(
                f"{where}: the entry {info.filename!r} inflates to {info.file_size} bytes, more than a model's "
                f"{limit}: the file is damaged or crafted (a decompression bomb)."
            )


def read_data_entry(archive: zipfile.ZipFile, where: str) -> dict[str, Any]:
    """
    The ``data`` entry of a model archive as JSON (nothing unpickled), once the archive's entry sizes are checked
    (:func:`check_entry_sizes`).

    :param archive: the open archive
    :param where: the file, for the error message
    :return: the JSON object
    :raises ValueError: the entry is missing, too large or not a JSON object
    """
    check_entry_sizes(archive, where)
    try:
        data = json.loads(archive.read("data").decode())
    except KeyError as exc:
        raise ValueError(f"{where}: the archive has no 'data' entry: not a Stable-Baselines3 model.") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where}: the 'data' entry is not valid JSON ({exc}): the file is corrupt.") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{where}: the 'data' entry is JSON but not an object: the file is corrupt.")
    return data


def _optimizer_lr(archive: zipfile.ZipFile) -> float | None:
    try:
        with archive.open("policy.optimizer.pth") as file:
            state = th.load(file, map_location="cpu", weights_only=True)
        return float(state["param_groups"][0]["lr"])
    except Exception:
        return None


def safe_custom_objects(
    algo_class: type,
    data: Mapping[str, Any],
    archive: zipfile.ZipFile,
    env: Any | None,
    custom_objects: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """
    The ``custom_objects`` that make SB3's ``load`` unpickle nothing: one plain-data rebuild per ``:serialized:``
    entry of ``data`` that the caller did not replace already.

    :param algo_class: the algorithm class being loaded (its ``policy_aliases`` join the allow-list)
    :param data: the ``data`` JSON
    :param archive: the model archive (for the optimizer's last learning rate)
    :param env: the env given to ``load`` (its spaces are used when the stored ones are unreadable)
    :param custom_objects: the caller's replacements (kept as given)
    :return: the complete replacements
    :raises UnsafeModelFileError: an entry that only a pickle could restore (naming it and the fixes)
    """
    result = dict(custom_objects or {})
    classes = allowed_classes(getattr(algo_class, "policy_aliases", None))
    name = algo_class.__name__
    env_spaces: dict[str, Any] = {}
    if env is not None:
        wrapped = algo_class._wrap_env(env, verbose=0) if hasattr(algo_class, "_wrap_env") else env
        env_spaces = {"observation_space": wrapped.observation_space, "action_space": wrapped.action_space}
    for key, item in data.items():
        if key in result or not (isinstance(item, dict) and ":serialized:" in item):
            continue
        kind = item.get(":type:", "?")
        if key in ("observation_space", "action_space"):
            result[key] = rebuild_space(key, item, env_spaces.get(key))
        elif key in RUNTIME_KEYS or key in getattr(algo_class, "setup_rebuilds", ()):
            result[key] = None
        elif key in SCHEDULE_KEYS:
            schedule = schedule_from_fields(item)
            if schedule is None:
                schedule = _fallback_schedule(algo_class, key, data, archive)
            result[key] = schedule
        elif key in ("policy_class", "rollout_buffer_class"):
            qualified = pickled_global_name(str(item[":serialized:"]))
            if qualified is None or qualified not in classes:
                raise UnsafeModelFileError(
                    f"{name}.load: the file's {key} ({qualified or kind}) is not one of the known "
                    f"{'policy' if key == 'policy_class' else 'buffer'} classes of SB3, sb3-contrib and sb3_cherry. "
                    f"Pass custom_objects={{{key!r}: YourClass}}, or allow_pickle=True if you trust the file."
                )
            result[key] = classes[qualified]
        elif key == "policy_kwargs" or key in getattr(algo_class, "kwargs_entries", ()):
            try:
                result[key] = _kwargs_from_fields(key, item, classes)
            except UnsafeModelFileError as exc:
                raise UnsafeModelFileError(
                    f"{name}.load: {exc}. Pass custom_objects={{{key!r}: {{...}}}}, or allow_pickle=True if "
                    "you trust the file."
                ) from exc
        else:
            raise UnsafeModelFileError(
                f"{name}.load: the file's data entry {key!r} holds a pickled {kind}; sb3_cherry does not unpickle "
                f"model files by default. Pass custom_objects={{{key!r}: value}}, or allow_pickle=True if you trust "
                "the file (unpickling runs code from it)."
            )
    return result


def _fallback_schedule(algo_class: type, key: str, data: Mapping[str, Any], archive: zipfile.ZipFile) -> Any:
    """An opaque schedule (a function) becomes a constant: the optimizer's last learning rate or the default."""
    import inspect

    value: Any = None
    if key in ("lr_schedule", "learning_rate"):
        stored = data.get("learning_rate")
        value = stored if isinstance(stored, (int, float)) else _optimizer_lr(archive)
    if value is None:
        parameter = inspect.signature(algo_class).parameters.get(key)
        value = parameter.default if parameter is not None else None
    if value is None or value is inspect.Parameter.empty:
        return None
    warnings.warn(
        f"{algo_class.__name__}.load: {key} was stored as a function, which is only restored by unpickling; it is "
        f"replaced by the constant {value}. Pass custom_objects={{{key!r}: schedule}} to keep training with the "
        "original schedule (or allow_pickle=True if you trust the file).",
        stacklevel=3,
    )
    return FloatSchedule(float(value)) if key == "lr_schedule" else float(value)


def stored_policy_class(path: Any) -> type | None:
    """
    The policy class a model file names, looked up in :func:`allowed_classes` (nothing unpickled).

    :param path: the model file
    :return: the class, or None when the file names none or an unknown one
    """
    with zipfile.ZipFile(read_archive_bytes(path)) as archive:
        item = read_data_entry(archive, str(path)).get("policy_class")
    if not (isinstance(item, dict) and ":serialized:" in item):
        return None
    return allowed_classes().get(pickled_global_name(str(item[":serialized:"])) or "")


def read_archive_bytes(path: Any) -> io.BytesIO:
    """
    The bytes of a model file or file object, in memory (SB3 then reads the same bytes that were checked).

    :param path: a path or a binary file object
    :return: the bytes
    """
    if isinstance(path, io.IOBase):
        position = path.tell()
        content = path.read()
        path.seek(position)
        return io.BytesIO(content)  # type: ignore[arg-type]
    if not os.path.exists(path) and not str(path).endswith(".zip"):
        path = f"{path}.zip"
    with open(path, "rb") as file:
        return io.BytesIO(file.read())
