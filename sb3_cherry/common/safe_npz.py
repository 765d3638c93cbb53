"""
Reading ``.npz`` archives a user may have downloaded (demonstration files, run checkpoints' ``run_state.npz``) without
letting the file choose how much memory is allocated.

``np.load(path, allow_pickle=False)`` never runs code, but numpy allocates the shape an entry's header declares before
it reads the data, and a deflated entry of zeros is ~1000 times smaller than its data: a 1 MiB file can make a reader
allocate gigabytes. :func:`read_npz_entry` reads an entry only once its header agrees with the size the archive declares
for it and fits a limit; :class:`BoundedNpz` reads an uncompressed archive (``np.savez``) taking at most its own size in
all.
"""

import math
import pathlib
import zipfile
from typing import Any, cast

import numpy as np


def read_npz_entry(where: str, loaded: np.lib.npyio.NpzFile, key: str, limit: int, reason: str) -> np.ndarray:
    """
    One array of an archive, once its header (read alone: a few bytes of the entry are inflated) agrees with the
    entry's declared size (``ZipInfo.file_size``, where zipfile stops inflating) and needs at most ``limit`` bytes.

    :param where: the file, for error messages
    :param loaded: the open archive (``np.load(path, allow_pickle=False)``)
    :param key: the array's name
    :param limit: the most bytes its data may take
    :param reason: why, for the error message
    :return: the array
    :raises ValueError: unreadable, missing or refused (naming the file and the array)
    """
    archive = loaded.zip
    if archive is None:
        raise ValueError(f"{where}: cannot read array {key!r} (the archive is closed).")
    names = archive.namelist()
    if f"{key}.npy" in names and key in names:  # numpy would read the one not checked here
        raise ValueError(f"{where}: the archive holds both {key!r} and '{key}.npy': the file is damaged or crafted.")
    member = f"{key}.npy" if f"{key}.npy" in names else key
    try:
        info = archive.getinfo(member)
        with archive.open(info) as entry:
            version = np.lib.format.read_magic(entry)
            if version not in ((1, 0), (2, 0)):  # (3.0 is only written for dtypes with non-latin-1 field names)
                raise ValueError(f".npy format version {version} is not supported")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(entry)
            header_size = entry.tell()
        if dtype.hasobject:
            raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
        size = math.prod(shape) * dtype.itemsize
        if info.file_size != header_size + size:
            raise ValueError(
                f"the entry declares {info.file_size} bytes, but its header ({shape} {dtype}) needs {header_size + size}: "
                "the file is damaged or crafted"
            )
        if size > limit:
            raise ValueError(f"{shape} {dtype} is {size} bytes, more than {limit}, {reason}: the file is damaged or crafted")
        with archive.open(info) as entry:  # the entry checked above (not numpy's choice of name)
            return cast(np.ndarray, np.lib.format.read_array(entry, allow_pickle=False))
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{where}: cannot read array {key!r} ({exc}).") from exc


def open_npz(path: str | pathlib.Path, what: str) -> np.lib.npyio.NpzFile:
    """
    Open an ``.npz`` archive with ``allow_pickle=False`` (entries are read on access).

    :param path: the file
    :param what: what the file should be, for the error messages (e.g. ``"a demonstration file"``)
    :return: the open archive
    :raises ValueError: not a readable ``.npz`` archive (a single ``.npy`` array included)
    """
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not {what} (expected an .npz archive; {exc}).") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array (.npy), not {what} (an .npz archive).")
    return loaded


class BoundedNpz:
    """
    An uncompressed ``.npz`` archive (``np.savez``) read entry by entry through :func:`read_npz_entry`: each read is
    checked against the entry's stored size, and all reads together take at most the archive's size (an entry read
    twice counts twice; every read is a new array). No structured (void) or object arrays. Use it as a context manager.

    :param path: the archive
    :raises ValueError: not an uncompressed ``.npz`` archive
    """

    def __init__(self, path: str | pathlib.Path):
        self.where = str(path)
        loaded = open_npz(path, "an .npz archive")
        infos = loaded.zip.infolist() if loaded.zip is not None else []
        if any(info.compress_type != zipfile.ZIP_STORED for info in infos):
            loaded.close()
            raise ValueError(f"{path} has compressed entries; this archive is written uncompressed (np.savez).")
        self.loaded = loaded
        self.remaining = sum(info.file_size for info in infos)

    def __enter__(self) -> "BoundedNpz":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.loaded.close()

    def __getitem__(self, key: str) -> np.ndarray:
        """
        :param key: the array's name
        :return: the array, read anew
        :raises ValueError: missing, unreadable, structured, or beyond what is left of the archive's size
        """
        array = read_npz_entry(self.where, self.loaded, key, self.remaining, "what is left of the archive's own size")
        if array.dtype.kind == "V":
            raise ValueError(f"{self.where}: array {key!r} has the structured dtype {array.dtype}, which is not read.")
        self.remaining -= array.nbytes
        return array
