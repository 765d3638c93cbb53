"""Atomic saving and explicit load errors for sb3_cherry models."""

import errno
import functools
import io
import os
import pathlib
import re
import secrets
import shutil
import socket
import stat
import tempfile
import time
import zipfile
from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.type_aliases import GymEnv

from sb3_cherry.common.safe_load import (
    ALGORITHM_KEY,
    check_entry_sizes,
    read_archive_bytes,
    read_data_entry,
    safe_custom_objects,
)


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


#: Temporary files and folders of :func:`atomic_write` and of run checkpoints:
#: ``.<name>.<host>.<pid>.<token>-<random>.tmp`` (see :func:`temp_prefix`)
_TMP_NAME = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{8})-[^.]+\.tmp$")

#: Seconds after which a temporary of another host that nobody touched is removed: whether its writer still runs
#: cannot be checked from here, and no save takes that long
FOREIGN_TEMP_AGE = 24 * 3600

#: Tells this process's temporaries from those of an earlier process that had the same pid on this host (a restarted
#: container keeps its host name, and its main process often gets the same pid)
_PROCESS_TOKEN = secrets.token_hex(4)


def _host() -> str:
    """This host's name as it appears in temporary names (no dots: the name's fields are separated by dots)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "localhost"


def temp_prefix(name: str) -> str:
    """
    The prefix of a temporary file or folder written next to ``name`` (``tempfile.mkstemp(prefix=...,
    suffix=".tmp")``): it names the writer (host, pid, process token) so that :func:`remove_stale_temp_files` removes
    only the temporaries of writers that are gone.

    :param name: the name of the file or folder the temporary becomes
    :return: the prefix
    """
    return f".{name}.{_host()}.{os.getpid()}.{_PROCESS_TOKEN}-"


def temp_writer_state(name: str) -> str | None:
    """
    Whether the writer of a temporary named by :func:`temp_prefix` still runs.

    :param name: the temporary's file name
    :return: ``"running"`` (this process, or a live process of this host), ``"dead"`` (a process of this host that
        is gone, or an earlier process with this process's pid), ``"other host"`` (unknown), or None when ``name`` is
        not such a temporary
    """
    match = _TMP_NAME.match(name)
    if match is None:
        return None
    if match["host"] != _host():
        return "other host"
    pid = int(match["pid"])
    if pid == os.getpid():
        return "running" if match["token"] == _PROCESS_TOKEN else "dead"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "dead"
    except (PermissionError, OverflowError):
        pass  # a process of another user / not a pid: kept
    return "running"


@functools.cache
def _umask_by_setting_it() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def current_umask() -> int:
    """
    The process's umask, read without changing it. ``os.umask`` reads it only by setting another one, and a file that
    another thread creates meanwhile gets that one (world-writable with 0). Linux shows it in ``/proc/self/status``;
    elsewhere it is read once with ``os.umask`` and cached (a later change of the umask is then not seen).

    :return: the umask
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _umask_by_setting_it()


def _new_file_mode() -> int:
    """``0o666 & ~umask``: the mode ``open(path, "w")`` gives a new file (what SB3 and numpy give)."""
    return 0o666 & ~current_umask()


def remove_stale_temp_files(folder: str | pathlib.Path) -> list[pathlib.Path]:
    """
    Remove the temporary files and folders (see :func:`temp_prefix`) that killed writes left in ``folder``: those of
    this host whose writing process no longer exists, and those of other hosts (sharing the folder) untouched for
    :data:`FOREIGN_TEMP_AGE` seconds. The temporaries of running saves, and files named otherwise, are kept.

    :param folder: the folder
    :return: the removed files and folders
    """
    removed = []
    for candidate in pathlib.Path(folder).glob(".*.tmp"):
        state = temp_writer_state(candidate.name)
        try:
            if state == "other host":
                stale = time.time() - candidate.lstat().st_mtime > FOREIGN_TEMP_AGE
            else:
                stale = state == "dead"
            if not stale:
                continue
            if candidate.is_dir() and not candidate.is_symlink():
                shutil.rmtree(candidate)
            else:
                candidate.unlink()
            removed.append(candidate)
        except OSError:
            pass  # removed meanwhile, or not ours to remove: a clean-up never fails the save
    return removed


def atomic_write(path: str | pathlib.Path, write: Any) -> pathlib.Path:
    """
    Write a file atomically: ``write(file_object)`` fills a temporary file in the same directory, which is then
    flushed, fsynced and renamed over ``path``. An interrupted write leaves any previous ``path`` intact; the
    temporary file of a killed write is removed by a later write into the folder (:func:`remove_stale_temp_files`). A
    symlink is followed (its target is written). The file gets the mode an existing file had, else ``0o666 & ~umask``.
    An existing path that is not a regular file (a pipe), and any path under ``/dev`` or ``/proc`` (``/dev/stdout``),
    is written to directly.

    :param path: destination
    :param write: callable receiving a binary file object
    :return: the destination path
    :raises PermissionError: ``path`` exists and is write-protected (as ``open(path, "wb")`` would)
    """
    path = pathlib.Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name.")
    # a pipe or a device, or a stream such as /dev/stdout (a link to whatever fd 1 is, even a regular file): renaming
    # a file over it would replace it
    stream = pathlib.Path(os.path.abspath(path)).parts[1:2] in (("dev",), ("proc",))
    if path.is_symlink() and not stream:
        path = pathlib.Path(os.path.realpath(path))
    if stream or (path.exists() and not path.is_file()):
        with open(path, "ab") as stream_file:  # appended: /dev/stdout may be a file the shell redirected to
            write(stream_file)
        return path
    if path.exists() and not os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids):
        # the rename below needs write access to the folder only: it would replace a file its owner write-protected
        # (chmod a-w), which a plain open(path, "wb") (SB3's save) refuses
        fix = "make it writable with chmod u+w, or save under another name"
        raise PermissionError(errno.EACCES, f"Permission denied: write-protected file, not replaced ({fix})", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else _new_file_mode()
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
        raise
    return path


def _required_entries(algo_class: type | None) -> list[str]:
    """The ``.pth`` entries ``algo_class`` saves (``policy`` and ``policy.optimizer`` for SB3's on-policy algorithms)."""
    try:
        state_dicts, _ = algo_class._get_torch_save_params(None)  # type: ignore[union-attr,arg-type]
        return [f"{name}.pth" for name in state_dicts]
    except Exception:
        return ["policy.pth", "policy.optimizer.pth"]


def check_model_file(
    path: str | pathlib.Path | io.BufferedIOBase, algo_name: str, algo_class: type | None = None
) -> dict[str, Any]:
    """
    Check that ``path`` is a complete SB3 model archive before SB3 reads it: a readable zip with a JSON ``data``
    entry and loadable (``weights_only``) ``.pth`` entries, written by ``algo_class`` (or a file that does not say).
    Nothing is unpickled.

    :param path: the model file (``.zip`` appended when missing and the bare path does not exist) or a file object
        (read and rewound)
    :param algo_name: the class name, for the error message
    :param algo_class: the class that will load the file (its saved entries are required, its name checked)
    :return: the ``data`` entry as JSON
    :raises FileNotFoundError: the file does not exist
    :raises ValueError: the file is truncated, corrupt, lacks an entry, or was written by another algorithm
    """
    if isinstance(path, io.IOBase):
        position = path.tell()
        source: Any = io.BytesIO(path.read())  # type: ignore[arg-type]
        path.seek(position)
        candidate = pathlib.Path("<file object>")
    else:
        candidate = pathlib.Path(path)
        if not candidate.exists() and candidate.suffix == "":
            candidate = candidate.with_suffix(".zip")
        if not candidate.exists():
            raise FileNotFoundError(f"{algo_name}.load: no model file at {path} (nor {candidate}).")
        source = candidate
    if not zipfile.is_zipfile(source) or not _ends_with_zip_directory(source):
        raise ValueError(
            f"{algo_name}.load: {candidate} is not a Stable-Baselines3 model: truncated or corrupt (no zip directory at "
            "its end: a partial download or copy, or another format). Point to a complete file written by model.save()."
        )
    try:
        with zipfile.ZipFile(source) as archive:
            names: list[str] = archive.namelist()
            check_entry_sizes(archive, f"{algo_name}.load: {candidate}")  # (testzip inflates every entry)
            bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"{algo_name}.load: {candidate} is corrupt (CRC error in entry {bad!r}).")
            missing = [name for name in ("data", "policy.pth") if name not in names]
            if missing:
                raise ValueError(
                    f"{algo_name}.load: {candidate} is a zip archive but not a Stable-Baselines3 model (missing {missing})."
                )
            data = read_data_entry(archive, f"{algo_name}.load: {candidate}")
            stored = data.get(ALGORITHM_KEY)
            if algo_class is not None and isinstance(stored, str):
                compatible = {klass.__name__ for klass in algo_class.__mro__}
                compatible |= {klass.__name__ for klass in _all_subclasses(algo_class)}
                if stored not in compatible:
                    raise ValueError(
                        f"{algo_name}.load: {candidate} was written by {stored}, not by {algo_name}: load it with "
                        f"{stored}.load (the hyperparameters and optimizer state belong to {stored})."
                    )
            missing = [name for name in _required_entries(algo_class) if name not in names]
            if missing:
                raise ValueError(
                    f"{algo_name}.load: {candidate} lacks the entry {missing[0]!r} (incomplete file): save the model "
                    "again, or load only the weights with model.set_parameters(path, exact_match=False)."
                )
            for name in names:
                if name.endswith(".pth"):
                    try:
                        with archive.open(name) as file:
                            th.load(file, map_location="cpu", weights_only=True)
                    except Exception as exc:
                        raise ValueError(
                            f"{algo_name}.load: {candidate}: the entry {name!r} is corrupt or not a weights-only "
                            f"torch file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})."
                        ) from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{algo_name}.load: {candidate} is a damaged zip archive ({exc}).") from exc
    return data


def _ends_with_zip_directory(source: pathlib.Path | io.BytesIO) -> bool:
    """
    The zip's end-of-directory record ends the file. A truncated model file can still look like a zip archive
    (the ``.pth`` entries are zip archives themselves, whose records zipfile then finds).
    """
    if isinstance(source, io.BytesIO):
        tail = source.getvalue()[-65557:]
    else:
        with open(source, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 65557))
            tail = file.read()
    position = tail.rfind(b"PK\x05\x06")
    if position < 0 or position + 22 > len(tail):
        return False
    comment_length = int.from_bytes(tail[position + 20 : position + 22], "little")
    return position + 22 + comment_length == len(tail)


def _all_subclasses(klass: type) -> set[type]:
    found: set[type] = set()
    stack: list[type] = [klass]
    while stack:
        subclasses: list[type] = stack.pop().__subclasses__()
        for sub in subclasses:
            if sub not in found:
                found.add(sub)
                stack.append(sub)
    return found


SelfAtomicSaveAlgorithm = TypeVar("SelfAtomicSaveAlgorithm", bound="AtomicSaveAlgorithm")


class AtomicSaveAlgorithm(BaseAlgorithm):
    """
    ``BaseAlgorithm`` whose ``save`` is atomic and records the algorithm's name, and whose ``load`` checks the file
    first and unpickles nothing unless asked to (``allow_pickle=True``). Put it before the SB3 base in the bases of an
    algorithm: ``class BCO(AtomicSaveAlgorithm)``, ``class CherryOnPolicyAlgorithm(AtomicSaveAlgorithm,
    OnPolicyAlgorithm)``.
    """

    #: Saved entries that ``_setup_model`` recomputes: a safe load sets them to None instead of unpickling them
    setup_rebuilds: ClassVar[frozenset[str]] = frozenset()

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """
        Save the model (SB3's zip format, plus the algorithm's class name in ``data``). Writing a path is atomic: the
        archive is written to a temporary file next to it and renamed, so an interrupted save never destroys the
        previous checkpoint; a symlink is followed.

        :param path: path to the file (``.zip`` is appended when there is no suffix) or a file object
        :param exclude: names of parameters that should be excluded in addition to the default ones
        :param include: names of parameters that might be excluded but should be included anyway
        """
        setattr(self, ALGORITHM_KEY, type(self).__name__)
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
        allow_pickle: bool = False,
        **kwargs: Any,
    ) -> SelfAtomicSaveAlgorithm:
        """
        Load a model saved with ``save`` or by SB3 / sb3-contrib, without running code from the file.

        SB3 unpickles the ``:serialized:`` entries of the file's ``data`` (spaces, schedules, classes), which runs
        whatever a crafted file contains. By default these entries are rebuilt from plain data instead
        (:mod:`sb3_cherry.common.safe_load`): spaces from their readable fields (or from ``env``), schedules from
        their numbers, classes by name from an allow-list of SB3 / sb3-contrib / sb3_cherry classes. An entry that
        only a pickle can restore raises an error naming it.

        :param path: path to the file (or a file object)
        :param env: the new environment to run the loaded model on (can be None if you only need prediction)
        :param device: device on which the code should run
        :param custom_objects: objects to replace upon loading (see SB3's ``load``); they also stand in for entries
            that cannot be rebuilt safely (e.g. ``{"policy_class": MyPolicy}``)
        :param print_system_info: print the system info of the saved model and the current one
        :param force_reset: force a call to ``reset()`` before training
        :param allow_pickle: unpickle the file's serialized entries as SB3 does. Only for files you trust:
            unpickling a crafted file runs arbitrary code
        :param kwargs: extra arguments to change the model when loading
        :return: the loaded model
        :raises ValueError: the file is truncated, corrupt, not an SB3 model, written by another algorithm, or holds
            an entry that cannot be restored without unpickling
        """
        data = check_model_file(path, cls.__name__, cls)
        source: Any = path
        if not allow_pickle:
            source = read_archive_bytes(path if isinstance(path, io.IOBase) else _existing(path))
            with zipfile.ZipFile(source) as archive:
                # the data entry of the bytes SB3 reads next (the file may have been replaced since it was checked)
                data = read_data_entry(archive, str(path))
                custom_objects = safe_custom_objects(cls, data, archive, env, custom_objects)
            source.seek(0)
        try:
            return super().load(  # type: ignore[return-value]
                source,
                env=env,
                device=device,
                custom_objects=custom_objects,
                print_system_info=print_system_info,
                force_reset=force_reset,
                **kwargs,
            )
        except MemoryError as exc:  # e.g. a crafted n_steps * n_envs sizing the rollout buffer
            raise ValueError(
                f"{cls.__name__}.load: {path} asks for more memory than there is ({exc}): its hyperparameters (n_steps, "
                "n_envs, net_arch, buffer sizes) are damaged or crafted, or too large for this machine."
            ) from exc


def _existing(path: str | pathlib.Path) -> pathlib.Path:
    """``path``, or ``path.zip`` when ``path`` has no suffix and does not exist (SB3's lookup)."""
    candidate = pathlib.Path(path)
    if not candidate.exists() and candidate.suffix == "":
        candidate = candidate.with_suffix(".zip")
    return candidate
