"""Atomic saving and explicit load errors for sb3_cherry models."""

import io
import os
import pathlib
import tempfile
import zipfile
from collections.abc import Iterable
from typing import Any


def resolve_zip_path(path: str | pathlib.Path) -> pathlib.Path:
    """
    The file SB3 writes for ``path``: ``.zip`` is appended when there is no suffix.

    :param path: the path given by the user
    :return: the final path
    """
    path = pathlib.Path(path)
    if path.suffix == "":
        path = path.with_suffix(".zip")
    return path


def atomic_write(path: str | pathlib.Path, write: Any) -> pathlib.Path:
    """
    Write a file atomically: ``write(file_object)`` fills a temporary file in the same directory, which is then
    flushed, fsynced and renamed over ``path``. An interrupted write leaves any previous ``path`` intact.

    :param path: destination
    :param write: callable receiving a binary file object
    :return: the destination path
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
        raise
    return path


def check_model_file(path: str | pathlib.Path | io.BufferedIOBase, algo_name: str) -> None:
    """
    Check that ``path`` looks like an SB3 model archive before SB3 deserialises it.

    :param path: the model file (``.zip`` appended when missing and the bare path does not exist)
    :param algo_name: the class name, for the error message
    :raises FileNotFoundError: the file does not exist
    :raises ValueError: the file is not a zip archive or lacks SB3's ``data`` / ``policy.pth`` entries
    """
    if isinstance(path, io.IOBase):
        return
    candidate = pathlib.Path(path)
    if not candidate.exists() and candidate.suffix == "":
        candidate = candidate.with_suffix(".zip")
    if not candidate.exists():
        raise FileNotFoundError(f"{algo_name}.load: no model file at {path} (nor {candidate}).")
    if not zipfile.is_zipfile(candidate):
        raise ValueError(
            f"{algo_name}.load: {candidate} is not a Stable-Baselines3 model (not a zip archive: corrupt, truncated or "
            "another format). Point to a file written by model.save()."
        )
    try:
        with zipfile.ZipFile(candidate) as archive:
            names: Iterable[str] = archive.namelist()
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{algo_name}.load: {candidate} is a damaged zip archive ({exc}).") from exc
    if bad is not None:
        raise ValueError(f"{algo_name}.load: {candidate} is corrupt (CRC error in entry {bad!r}).")
    missing = [name for name in ("data", "policy.pth") if name not in names]
    if missing:
        raise ValueError(
            f"{algo_name}.load: {candidate} is a zip archive but not a Stable-Baselines3 model (missing {missing})."
        )
