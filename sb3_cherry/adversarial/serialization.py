"""
The GAIL / AIRL model file: one SB3 zip archive.

``save`` writes the generator's own archive (``data``, ``policy.pth``, ``policy.optimizer.pth``, ... exactly as
``PPORollback.save`` writes them, so ``PPORollback.load`` reads the file) and adds two entries:

- :data:`CONFIG_ENTRY` (``adversarial.json``): the adapter's constructor hyperparameters as plain JSON (reward net
  class and layers by name), the generator class by name and the discriminator's counters;
- :data:`REWARD_NET_ENTRY` (``reward_net.pt``): the reward net's ``state_dict``, read back with
  ``torch.load(..., weights_only=True)``. The ``.pt`` suffix keeps SB3's loader (which reads every ``*.pth`` entry
  into the generator) from seeing it.

Nothing in these two entries is pickled code. No imitation import here (names are resolved by the caller).
"""

import io
import json
import os
import pathlib
import zipfile
from typing import Any

import torch as th

from sb3_cherry.common.safe_load import check_entry_sizes

#: Archive entry with the adapter's hyperparameters (JSON)
CONFIG_ENTRY = "adversarial.json"
#: Archive entry with the reward net's state_dict (torch, tensors only)
REWARD_NET_ENTRY = "reward_net.pt"
#: Version of the layout of :data:`CONFIG_ENTRY`
FORMAT_VERSION = 1

PathOrFile = str | os.PathLike | io.BufferedIOBase


def zip_bytes(path: PathOrFile) -> io.BytesIO:
    """
    The bytes of a model archive (``.zip`` appended to a path without suffix that does not exist, as SB3 does).

    :param path: a path or a file object
    :return: an in-memory copy (readable several times)
    """
    if isinstance(path, io.IOBase):
        path.seek(0)
        return io.BytesIO(path.read())
    candidate = pathlib.Path(path)
    if not candidate.exists() and candidate.suffix == "":
        candidate = candidate.with_suffix(".zip")
    return io.BytesIO(candidate.read_bytes())


def read_adversarial_entries(archive_bytes: io.BytesIO, name: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """
    The adapter's entries of a model archive.

    :param archive_bytes: the archive (see :func:`zip_bytes`)
    :param name: the class name, for error messages
    :return: ``(config, reward_net_state_dict)``; each None when the archive does not hold it (a generator-only file,
        e.g. one written by an older sb3_cherry or by ``PPORollback.save``)
    :raises ValueError: an entry is not what the adapter writes
    """
    archive_bytes.seek(0)
    with zipfile.ZipFile(archive_bytes) as archive:
        names = set(archive.namelist())
        check_entry_sizes(archive, f"{name}.load: the model file")
        config = None
        if CONFIG_ENTRY in names:
            try:
                config = json.loads(archive.read(CONFIG_ENTRY).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{name}.load: the {CONFIG_ENTRY} entry of the model file is not JSON ({exc}).") from exc
            if not isinstance(config, dict) or config.get("format") != FORMAT_VERSION:
                raise ValueError(
                    f"{name}.load: the {CONFIG_ENTRY} entry of the model file has an unknown layout (format "
                    f"{config.get('format') if isinstance(config, dict) else None!r}, expected {FORMAT_VERSION}): "
                    "it was written by another sb3_cherry version."
                )
        state_dict = None
        if REWARD_NET_ENTRY in names:
            state_dict = load_state_dict(io.BytesIO(archive.read(REWARD_NET_ENTRY)), f"the {REWARD_NET_ENTRY} entry", name)
    archive_bytes.seek(0)
    return config, state_dict


def load_state_dict(file: str | os.PathLike | io.BytesIO, what: str, name: str) -> dict[str, Any]:
    """
    A reward net ``state_dict`` read with ``torch.load(..., weights_only=True)`` on the CPU.

    :param file: a path or a file object
    :param what: the file, for error messages
    :param name: the class name, for error messages
    :return: the state dict
    :raises ValueError: not a torch file of tensors, or not a dict
    """
    try:
        state_dict = th.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for foreign files
        raise ValueError(f"{name}.load: {what} is not a reward net state_dict saved by {name}.save ({exc}).") from exc
    if not isinstance(state_dict, dict):
        raise ValueError(f"{name}.load: {what} holds a {type(state_dict).__name__}, not a reward net state_dict.")
    return state_dict


def write_model_archive(
    file: io.BufferedIOBase | Any,
    generator_archive: io.BytesIO,
    config: dict[str, Any],
    reward_net_state: dict[str, th.Tensor],
) -> None:
    """
    Write the model archive: the generator's entries, then :data:`CONFIG_ENTRY` and :data:`REWARD_NET_ENTRY`.

    :param file: the binary file object to write to
    :param generator_archive: the archive written by the generator's ``save``
    :param config: the adapter's hyperparameters (JSON-able)
    :param reward_net_state: the reward net's ``state_dict`` (CPU tensors)
    """
    reward_bytes = io.BytesIO()
    th.save(reward_net_state, reward_bytes)
    generator_archive.seek(0)
    with zipfile.ZipFile(generator_archive) as source, zipfile.ZipFile(file, mode="w") as target:
        for info in source.infolist():
            target.writestr(info, source.read(info.filename))
        target.writestr(CONFIG_ENTRY, json.dumps({"format": FORMAT_VERSION, **config}, indent=2, sort_keys=True))
        target.writestr(REWARD_NET_ENTRY, reward_bytes.getvalue())


def to_json_value(value: Any, where: str) -> Any:
    """
    ``value`` as JSON data: classes become their names, tuples lists; anything else that JSON cannot hold raises.

    :param value: a hyperparameter value
    :param where: the hyperparameter, for error messages
    :return: the JSON-able value
    :raises ValueError: the value has no data form
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [to_json_value(item, where) for item in value]
    if isinstance(value, dict):
        return {str(key): to_json_value(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, type):
        return value.__name__
    raise ValueError(
        f"{where}={value!r} cannot be saved as data (JSON): use a constant, a list, a dict or a class known by name "
        "(e.g. normalize_input_layer='RunningNorm', activation='ReLU')."
    )
