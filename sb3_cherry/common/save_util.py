"""Atomic saving and explicit load errors for sb3_cherry models."""

import io
import os
import pathlib
import tempfile
import zipfile
from collections.abc import Iterable
from typing import Any, TypeVar

import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.type_aliases import GymEnv


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


SelfAtomicSaveAlgorithm = TypeVar("SelfAtomicSaveAlgorithm", bound="AtomicSaveAlgorithm")


class AtomicSaveAlgorithm(BaseAlgorithm):
    """
    ``BaseAlgorithm`` whose ``save`` is atomic and whose ``load`` checks the file first . Put it before the
    SB3 base in the bases of an algorithm: ``class BCO(AtomicSaveAlgorithm)``,
    ``class CherryOnPolicyAlgorithm(AtomicSaveAlgorithm, OnPolicyAlgorithm)``.
    """

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """
        Save the model (SB3's zip format). Writing a path is atomic: the archive is written to a temporary file next
        to it and renamed, so an interrupted save never destroys the previous checkpoint.

        :param path: path to the file (``.zip`` is appended when there is no suffix) or a file object
        :param exclude: names of parameters that should be excluded in addition to the default ones
        :param include: names of parameters that might be excluded but should be included anyway
        """
        if isinstance(path, io.IOBase):
            super().save(path, exclude=exclude, include=include)
            return
        atomic_write(resolve_zip_path(path), lambda f: super(AtomicSaveAlgorithm, self).save(f, exclude, include))

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfAtomicSaveAlgorithm],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfAtomicSaveAlgorithm:
        """
        Load a model saved with ``save`` (SB3's ``load``, after checking the file is an SB3 model archive).

        :param path: path to the file (or a file object)
        :param env: the new environment to run the loaded model on (can be None if you only need prediction)
        :param device: device on which the code should run
        :param custom_objects: objects to replace upon loading (see SB3's ``load``)
        :param print_system_info: print the system info of the saved model and the current one
        :param force_reset: force a call to ``reset()`` before training
        :param kwargs: extra arguments to change the model when loading
        :return: the loaded model
        :raises ValueError: the file is corrupt or not an SB3 model
        """
        check_model_file(path, cls.__name__)
        return super().load(  # type: ignore[return-value]
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )
