"""
Unpickling restricted to an allow-list of globals (Python's documented way to restrict unpickling, and what torch's
``weights_only`` does): pickles of gymnasium spaces and of ``VecNormalize`` (``vecnormalize.pkl``) are read without
resolving, hence without calling, anything else; and a space or an array of more than :data:`MAX_SPACE_ELEMENTS`
entries is refused before it is allocated (a few bytes of pickle could otherwise ask for gigabytes).
"""

import math
import os
import pickle
from typing import Any

#: The most entries a space (or an array a space pickle builds from a shape) may have when read from a file: 2**24
#: (16.8 M, e.g. a 2048 x 2048 x 4 image); a larger one is refused before anything is allocated
MAX_SPACE_ELEMENTS = 2**24


def check_space_size(shape: Any, where: str) -> None:
    """
    Refuse a shape read from a file with more than :data:`MAX_SPACE_ELEMENTS` entries.

    :param shape: the shape (an int or a sequence of ints)
    :param where: the file and entry, for the error message
    :raises ValueError: too many entries, or not a shape
    """
    try:
        dims = [int(shape)] if not isinstance(shape, (tuple, list)) else [int(d) for d in shape]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {shape!r} is not a shape.") from None
    if any(d < 0 for d in dims) or math.prod(dims) > MAX_SPACE_ELEMENTS:
        raise ValueError(
            f"{where}: a space of shape {tuple(dims)} ({math.prod(dims)} entries) is refused (more than "
            f"{MAX_SPACE_ELEMENTS}, or a negative size): the file is damaged or crafted."
        )


class UnsafeModelFileError(ValueError):
    """A model file entry that can only be restored by unpickling it (pass ``allow_pickle=True`` if you trust it)."""


#: What a pickled gymnasium space may refer to: the space classes, numpy arrays, dtypes and random generators
SPACE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        *(
            (module, name)
            for module in ("numpy._core.multiarray", "numpy.core.multiarray")
            for name in ("_reconstruct", "scalar")
        ),
        *((module, "_frombuffer") for module in ("numpy._core.numeric", "numpy.core.numeric")),
        ("numpy.random._pcg64", "PCG64"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random.bit_generator", "SeedSequence"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
        ("collections", "OrderedDict"),
        *(
            (f"gymnasium.spaces.{module}", name)
            for module, name in (
                ("box", "Box"),
                ("discrete", "Discrete"),
                ("multi_discrete", "MultiDiscrete"),
                ("multi_binary", "MultiBinary"),
                ("tuple", "Tuple"),
                ("dict", "Dict"),
            )
        ),
    }
)
#: What a ``VecNormalize`` pickle (``vecnormalize.pkl``) may refer to: the object, its running statistics and spaces
VEC_NORMALIZE_GLOBALS = SPACE_GLOBALS | {
    ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"),
    ("stable_baselines3.common.running_mean_std", "RunningMeanStd"),
}


class RestrictedUnpickler(pickle._Unpickler):  # (the Python implementation: its REDUCE opcode can be checked)
    """
    An unpickler that resolves only the given globals (Python's documented way to restrict unpickling, and what
    torch's ``weights_only`` does): any other class or function named by the pickle raises instead of being called.
    A space class is never called by ``REDUCE`` (pickles of spaces restore them with ``NEWOBJ`` and their state;
    calling one with a file's shape would allocate it), and numpy's ``_reconstruct`` only with a shape of at most
    :data:`MAX_SPACE_ELEMENTS` entries.

    :param file: the binary stream
    :param allowed: the ``(module, name)`` pairs that may be resolved
    :param where: the file, for the error message
    """

    def __init__(self, file: Any, allowed: frozenset[tuple[str, str]], where: str):
        super().__init__(file)
        self.allowed, self.where = allowed, where

    def find_class(self, module: str, name: str) -> Any:
        """
        :param module: the module named by the pickle
        :param name: the attribute named by the pickle
        :return: the object, when allowed
        :raises UnsafeModelFileError: any other name
        """
        if (module, name) not in self.allowed:
            raise UnsafeModelFileError(
                f"{self.where} refers to {module}.{name}, which a safe load does not resolve (it could run code). "
                "Load it with allow_pickle=True only if you trust the file."
            )
        return super().find_class(module, name)

    def _load_reduce(self) -> None:
        """``REDUCE`` (call the callable below the top of the stack with the arguments on top), checked first."""
        from gymnasium import spaces

        func, args = self.stack[-2], self.stack[-1]  # type: ignore[attr-defined]
        if isinstance(func, type) and issubclass(func, spaces.Space):
            raise UnsafeModelFileError(
                f"{self.where} constructs a {func.__name__} by calling it, which pickles of spaces never do (they are "
                "restored from their state): the file is damaged or crafted."
            )
        if getattr(func, "__name__", None) == "_reconstruct" and isinstance(args, tuple) and len(args) > 1:
            check_space_size(args[1], str(self.where))
        pickle._Unpickler.load_reduce(self)  # type: ignore[attr-defined]

    dispatch = {**pickle._Unpickler.dispatch, pickle.REDUCE[0]: _load_reduce}  # type: ignore[attr-defined,dict-item]


def load_vec_normalize(path: str | os.PathLike, venv: Any, allow_pickle: bool = False) -> Any:
    """
    ``VecNormalize.load`` without running code from the file: only the globals of :data:`VEC_NORMALIZE_GLOBALS`
    are resolved.

    :param path: the ``vecnormalize.pkl`` file
    :param venv: the VecEnv to wrap
    :param allow_pickle: use plain ``pickle`` (SB3's behaviour; only for files you trust)
    :return: the ``VecNormalize`` wrapper around ``venv``
    :raises UnsafeModelFileError: the pickle names something else
    """
    from stable_baselines3.common.vec_env import VecNormalize

    if allow_pickle:
        return VecNormalize.load(str(path), venv)
    with open(path, "rb") as file:
        try:
            vec_normalize = RestrictedUnpickler(file, VEC_NORMALIZE_GLOBALS, str(path)).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as exc:
            if isinstance(exc, UnsafeModelFileError):
                raise
            raise ValueError(f"{path} is not a VecNormalize file written by VecNormalize.save ({exc}).") from exc
    if not isinstance(vec_normalize, VecNormalize):
        raise ValueError(f"{path} holds a {type(vec_normalize).__name__}, not a VecNormalize.")
    vec_normalize.set_venv(venv)
    return vec_normalize
