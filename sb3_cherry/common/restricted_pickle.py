"""
Unpickling restricted to an allow-list of globals (Python's documented way to restrict unpickling, and what torch's
``weights_only`` does): pickles of gymnasium spaces and of ``VecNormalize`` (``vecnormalize.pkl``) are read without
resolving, hence without calling, anything else.
"""

import os
import pickle
from typing import Any


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


class RestrictedUnpickler(pickle.Unpickler):
    """
    An unpickler that resolves only the given globals (Python's documented way to restrict unpickling, and what
    torch's ``weights_only`` does): any other class or function named by the pickle raises instead of being called.

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
