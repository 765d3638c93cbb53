"""
Unpickling restricted to an allow-list of globals (Python's documented way to restrict unpickling, and what torch's
``weights_only`` does): pickles of gymnasium spaces and of ``VecNormalize`` (``vecnormalize.pkl``) are read without
resolving, hence without calling, anything else. Memory a file can make the unpickler allocate is bounded before anything
is allocated (a few bytes of pickle could otherwise ask for gigabytes):

- every opcode that calls something (``REDUCE``, ``OBJ``, ``INST``, ``NEWOBJ``, ``NEWOBJ_EX``) goes through
  :meth:`RestrictedUnpickler.call`, which calls only a global the file named from the allow-list, after that global's
  own check (:data:`CALL_CHECKS`): classes restored from their state (spaces, ``VecNormalize``, ``RunningMeanStd``) are
  never called, and numpy arrays are built only of a bool / integer / float dtype of at most :data:`MAX_ITEMSIZE` bytes
  and at most :data:`MAX_SPACE_ELEMENTS` entries, :data:`MAX_LOAD_BYTES` in all per file;
- ``BUILD`` (set an object's state) only changes objects this load created by such a call, never a class, function or
  other object shared by the whole process, and the state of an array or dtype is checked like a new array;
- ``APPEND(S)`` / ``SETITEM(S)`` / ``ADDITEMS`` only fill lists, dicts and sets.
"""

import inspect
import io
import math
import os
import pickle
import types
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from sb3_cherry.common.finite import non_finite_statistics

#: The most entries a space (or an array a space pickle builds from a shape) may have when read from a file: 2**24
#: (16.8 M, e.g. a 2048 x 2048 x 4 image); a larger one is refused before anything is allocated
MAX_SPACE_ELEMENTS = 2**24
#: The most bytes of arrays one pickle may make the unpickler build in all: 2**30 (1 GiB). Each array is at most
#: MAX_SPACE_ELEMENTS entries, but a pickle can refer to one shape many times (its memo); the largest space in float64
#: needs 34 bytes per entry in a VecNormalize (its bounds and bound flags, the running mean and variance)
MAX_LOAD_BYTES = 64 * MAX_SPACE_ELEMENTS
#: The dtypes (numpy kinds) an array read from a file may have: bool, signed and unsigned integers, floats. Object
#: arrays hold references (numpy even crashes on a crafted one), and void, structured and subarray dtypes take their
#: size from the file
ARRAY_KINDS = "biuf"
#: The most bytes an entry of such an array may take (float128 and the like are not for spaces)
MAX_ITEMSIZE = 8


def _dims(shape: Any, where: str) -> list[int]:
    """The dimensions of a shape (an int or a sequence of ints) read from a file."""
    try:
        return [int(shape)] if not isinstance(shape, (tuple, list)) else [int(d) for d in shape]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {shape!r} is not a shape.") from None


def check_space_size(shape: Any, where: str, what: str = "a space") -> None:
    """
    Refuse a shape read from a file with more than :data:`MAX_SPACE_ELEMENTS` entries.

    :param shape: the shape (an int or a sequence of ints)
    :param where: the file and entry, for the error message
    :param what: what has this shape, for the error message
    :raises ValueError: too many entries, or not a shape
    """
    dims = _dims(shape, where)
    if any(d < 0 for d in dims) or math.prod(dims) > MAX_SPACE_ELEMENTS:
        raise ValueError(
            f"{where}: {what} of shape {tuple(dims)} ({math.prod(dims)} entries) is refused (more than "
            f"{MAX_SPACE_ELEMENTS}, or a negative size): the file is damaged or crafted."
        )


def check_discrete_sizes(kind: str, size: Any, where: str) -> None:
    """
    Refuse a ``Discrete`` / ``MultiDiscrete`` / ``MultiBinary`` space read from a file whose values would make a policy
    allocate more than :data:`MAX_SPACE_ELEMENTS` entries per sample: ``n`` (the logits of a Discrete),
    ``sum(nvec)`` and ``nvec``'s own shape (MultiDiscrete), the shape ``n`` (MultiBinary).

    :param kind: ``"Discrete"``, ``"MultiDiscrete"`` or ``"MultiBinary"``
    :param size: ``n``, ``nvec`` or ``n`` as read from the file
    :param where: the file and entry, for the error message
    :raises ValueError: too many entries, or not a size
    """
    if kind == "Discrete":
        check_space_size((size,), where, "a Discrete space (n)")
    elif kind == "MultiDiscrete":
        nvec = np.asarray(size)
        check_space_size(nvec.shape, where, "a MultiDiscrete space (nvec)")
        if nvec.dtype.kind not in "iu":
            raise ValueError(f"{where}: {size!r} is not a MultiDiscrete nvec.")
        check_space_size((int(nvec.sum()),), where, "a MultiDiscrete space (sum of nvec)")
    elif kind == "MultiBinary":
        check_space_size(size, where, "a MultiBinary space")


def array_dtype(dtype: Any, where: str) -> np.dtype:
    """
    The dtype of an array read from a file, when it is one of :data:`ARRAY_KINDS` of at most :data:`MAX_ITEMSIZE` bytes.

    :param dtype: a dtype, or its name (str or bytes, as numpy's pickles give it); None: float64 (numpy's default)
    :param where: the file and entry, for the error message
    :return: the dtype
    :raises ValueError: anything else
    """
    if dtype is None:
        return np.dtype(np.float64)
    if not isinstance(dtype, (np.dtype, str, bytes)):  # a class or object of the file's choosing: numpy would call it
        raise ValueError(f"{where}: {dtype!r} is not an array dtype: the file is damaged or crafted.")
    try:
        resolved = np.dtype(dtype.decode("latin-1") if isinstance(dtype, bytes) else dtype)
    except (TypeError, ValueError, SyntaxError) as exc:  # (numpy parses dtype strings: a malformed one is a SyntaxError)
        raise ValueError(f"{where}: {dtype!r} is not an array dtype ({exc}).") from None
    if (
        resolved.kind not in ARRAY_KINDS
        or resolved.itemsize > MAX_ITEMSIZE
        or resolved.subdtype is not None
        or resolved.names is not None
    ):
        raise ValueError(
            f"{where}: an array of dtype {resolved} is refused (only bool, integer and float dtypes of at most "
            f"{MAX_ITEMSIZE} bytes): the file is damaged or crafted."
        )
    return resolved


class UnsafeModelFileError(ValueError):
    """A model file entry that can only be restored by unpickling it (pass ``allow_pickle=True`` if you trust it)."""


#: Space classes: restored from their state, never called
_SPACE_CLASSES = (
    ("box", "Box"),
    ("discrete", "Discrete"),
    ("multi_discrete", "MultiDiscrete"),
    ("multi_binary", "MultiBinary"),
    ("tuple", "Tuple"),
    ("dict", "Dict"),
)
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
        *((f"gymnasium.spaces.{module}", name) for module, name in _SPACE_CLASSES),
    }
)
#: What a ``VecNormalize`` pickle (``vecnormalize.pkl``) may refer to: the object, its running statistics and spaces
VEC_NORMALIZE_GLOBALS = SPACE_GLOBALS | {
    ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"),
    ("stable_baselines3.common.running_mean_std", "RunningMeanStd"),
}


# ------------------------------------------------------------------------------------------------ checks of calls
# Each check gets the unpickler, the arguments and whether the call is ``cls.__new__(cls, ...)`` (NEWOBJ, NEWOBJ_EX,
# OBJ / INST without arguments) rather than ``func(...)``; it raises to refuse the call, before anything is allocated.
CallCheck = Callable[["RestrictedUnpickler", tuple[Any, ...], dict[str, Any], bool], None]


def _no_arguments(unpickler: "RestrictedUnpickler", args: tuple[Any, ...], kwargs: dict[str, Any], new: bool) -> None:
    """``OrderedDict``, ``PCG64``, ``SeedSequence``: pickles call them without arguments (an ordered dict is filled by
    ``SETITEMS``; the random classes are only passed to numpy's constructors below); with an array of the file, each would
    iterate over or copy it."""
    if args or kwargs:
        raise UnsafeModelFileError(
            f"{unpickler.where} calls {unpickler.calling} with arguments, which pickles never do: the file is damaged or "
            "crafted."
        )


def _restored_from_state(unpickler: "RestrictedUnpickler", args: tuple[Any, ...], kwargs: dict[str, Any], new: bool) -> None:
    """Spaces, ``VecNormalize``, ``RunningMeanStd``: pickles create them with ``cls.__new__(cls)`` (``object.__new__``,
    which allocates nothing) and restore their state; calling one with the file's shape would allocate it."""
    if not new:
        raise UnsafeModelFileError(
            f"{unpickler.where} constructs a {unpickler.calling} by calling it, which pickles never do (they are restored "
            "from their state): the file is damaged or crafted."
        )


def _bind(
    unpickler: "RestrictedUnpickler", names: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The arguments of a call by parameter name (numpy's C functions have no signature to bind to)."""
    if len(args) > len(names) or any(key not in names[len(args) :] for key in kwargs):
        raise pickle.UnpicklingError(f"{unpickler.where}: malformed arguments of {unpickler.calling}.")
    return {**dict(zip(names, args, strict=False)), **kwargs}


def _ndarray(unpickler: "RestrictedUnpickler", args: tuple[Any, ...], kwargs: dict[str, Any], new: bool) -> None:
    """``ndarray(shape, dtype, buffer, offset, strides, order)`` (``ndarray.__new__`` is the same): an array."""
    bound = _bind(unpickler, ("shape", "dtype", "buffer", "offset", "strides", "order"), args, kwargs)
    unpickler.count_array(bound.get("shape"), bound.get("dtype"))


def _reconstruct(unpickler: "RestrictedUnpickler", args: tuple[Any, ...], kwargs: dict[str, Any], new: bool) -> None:
    """numpy's ``_reconstruct(subtype, shape, dtype)``: ``subtype.__new__(subtype, shape, dtype)``."""
    bound = _bind(unpickler, ("subtype", "shape", "dtype"), args, kwargs)
    if bound.get("subtype") is not np.ndarray:  # it would call whatever class the file passes
        raise UnsafeModelFileError(f"{unpickler.where}: numpy's _reconstruct of {bound.get('subtype')!r} is refused.")
    unpickler.count_array(bound.get("shape"), bound.get("dtype"))


def _frombuffer(unpickler: "RestrictedUnpickler", args: tuple[Any, ...], kwargs: dict[str, Any], new: bool) -> None:
    """numpy's ``_frombuffer(buffer, dtype, shape, order)``: a view of bytes of the file, reshaped."""
    bound = _bind(unpickler, ("buffer", "dtype", "shape", "order"), args, kwargs)
    unpickler.count_array(bound.get("shape"), bound.get("dtype"))


def _dtype(unpickler: "RestrictedUnpickler", args: tuple[Any, ...], kwargs: dict[str, Any], new: bool) -> None:
    """``dtype(obj, align, copy)``: only of a dtype an array may have (an array of it is checked when it is built)."""
    bound = _bind(unpickler, ("dtype", "align", "copy", "metadata"), args, kwargs)
    array_dtype(bound.get("dtype", ""), unpickler.where)


def _scalar(unpickler: "RestrictedUnpickler", args: tuple[Any, ...], kwargs: dict[str, Any], new: bool) -> None:
    """numpy's ``scalar(dtype, bytes)``: one value of a dtype an array may have (an object scalar is any object)."""
    bound = _bind(unpickler, ("dtype", "data"), args, kwargs)
    if not isinstance(bound.get("dtype"), np.dtype):
        raise pickle.UnpicklingError(f"{unpickler.where}: malformed numpy scalar.")
    array_dtype(bound["dtype"], unpickler.where)


def _bit_generator_ctor(unpickler: "RestrictedUnpickler", args: tuple[Any, ...], kwargs: dict[str, Any], new: bool) -> None:
    """numpy's ``__bit_generator_ctor(name or class)`` calls the class it is given: only PCG64, or a name."""
    from numpy.random import PCG64

    bit_generator = _bind(unpickler, ("bit_generator",), args, kwargs).get("bit_generator", "MT19937")
    if not (isinstance(bit_generator, str) or bit_generator is PCG64):
        raise UnsafeModelFileError(f"{unpickler.where}: a bit generator made by {bit_generator!r} is refused.")


def _generator_ctor(unpickler: "RestrictedUnpickler", args: tuple[Any, ...], kwargs: dict[str, Any], new: bool) -> None:
    """numpy's ``__generator_ctor(bit_generator, bit_generator_ctor)`` calls ``bit_generator_ctor`` with the file's
    argument: only numpy's own ``__bit_generator_ctor`` (else any allow-listed class, e.g. ``ndarray``, unchecked)."""
    from numpy.random import BitGenerator, _pickle

    bound = _bind(unpickler, ("bit_generator_name", "bit_generator_ctor"), args, kwargs)
    name = bound.get("bit_generator_name", "MT19937")
    numpy_ctor = getattr(_pickle, "__bit_generator_ctor")  # (getattr: a dunder name is mangled in some contexts)
    ctor = bound.get("bit_generator_ctor", numpy_ctor)
    if ctor is not numpy_ctor or not isinstance(name, (str, BitGenerator)):
        raise UnsafeModelFileError(f"{unpickler.where}: a random generator made by {ctor!r}({name!r}) is refused.")
    if isinstance(name, str):
        _bit_generator_ctor(unpickler, (name,), {}, False)


def _pyx_unpickle_seed_sequence(
    unpickler: "RestrictedUnpickler", args: tuple[Any, ...], kwargs: dict[str, Any], new: bool
) -> None:
    """Cython's ``__pyx_unpickle_SeedSequence(cls, checksum, state)``: ``cls.__new__(cls)`` and the state's fields."""
    from numpy.random import SeedSequence

    if _bind(unpickler, ("type", "checksum", "state"), args, kwargs).get("type") is not SeedSequence:
        raise UnsafeModelFileError(f"{unpickler.where}: malformed SeedSequence.")


#: The check of each callable a safe load may resolve, by the ``(module, name)`` the file names it by. A global of an
#: allow-list without a check here is resolved but never called
CALL_CHECKS: dict[tuple[str, str], CallCheck] = {
    ("numpy", "ndarray"): _ndarray,
    ("numpy", "dtype"): _dtype,
    **{(module, "_reconstruct"): _reconstruct for module in ("numpy._core.multiarray", "numpy.core.multiarray")},
    **{(module, "scalar"): _scalar for module in ("numpy._core.multiarray", "numpy.core.multiarray")},
    **{(module, "_frombuffer"): _frombuffer for module in ("numpy._core.numeric", "numpy.core.numeric")},
    ("numpy.random._pcg64", "PCG64"): _no_arguments,
    ("numpy.random._pickle", "__bit_generator_ctor"): _bit_generator_ctor,
    ("numpy.random._pickle", "__generator_ctor"): _generator_ctor,
    ("numpy.random.bit_generator", "SeedSequence"): _no_arguments,
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"): _pyx_unpickle_seed_sequence,
    ("collections", "OrderedDict"): _no_arguments,
    **{(f"gymnasium.spaces.{module}", name): _restored_from_state for module, name in _SPACE_CLASSES},
    ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"): _restored_from_state,
    ("stable_baselines3.common.running_mean_std", "RunningMeanStd"): _restored_from_state,
}


class RestrictedUnpickler(pickle._Unpickler):  # (the Python implementation: each opcode can be checked)
    """
    An unpickler that resolves only the given globals (Python's documented way to restrict unpickling, and what
    torch's ``weights_only`` does): any other class or function named by the pickle raises instead of being called.
    Every call goes through :meth:`call` (checked by :data:`CALL_CHECKS`: no space is called, no array of more than
    :data:`MAX_SPACE_ELEMENTS` entries or :data:`MAX_LOAD_BYTES` bytes in all is built), ``BUILD`` changes only objects
    this load created, and items are added only to lists, dicts and sets.

    :param file: the binary stream
    :param allowed: the ``(module, name)`` pairs that may be resolved
    :param where: the file, for the error message
    """

    # (set by pickle's ``load``; declared here for type checkers, which do not know them)
    stack: list[Any]
    append: Callable[[Any], None]

    def __init__(self, file: Any, allowed: frozenset[tuple[str, str]], where: str):
        super().__init__(file)
        self.allowed, self.where = allowed, where
        #: The globals this load resolved, by id: (object, (module, name)); the only things it calls
        self._globals: dict[int, tuple[Any, tuple[str, str]]] = {}
        #: The objects its calls returned, by id (kept alive, so ids stay unique): the only ones BUILD may change
        self._created: dict[int, Any] = {}
        #: Bytes of the arrays built so far, and the name of the global being called (for error messages)
        self.array_bytes, self.calling = 0, ""

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
        obj = super().find_class(module, name)
        self._globals.setdefault(id(obj), (obj, (module, name)))
        return obj

    def count_array(self, shape: Any, dtype: Any) -> None:
        """
        Check an array the file asks for before it is built: its dtype, its entries, and the bytes of all arrays so far.

        :param shape: its shape
        :param dtype: its dtype (or its name; None: float64)
        :raises ValueError: refused
        """
        resolved = array_dtype(dtype, self.where)
        check_space_size(shape, self.where, "an array")
        self.array_bytes += math.prod(_dims(shape, self.where)) * resolved.itemsize
        if self.array_bytes > MAX_LOAD_BYTES:
            raise ValueError(
                f"{self.where}: its arrays add up to more than {MAX_LOAD_BYTES} bytes, which is refused: the file is "
                "damaged or crafted."
            )

    def call(self, func: Any, args: Any, kwargs: Any, new: bool) -> Any:
        """
        The one place the unpickler calls something: ``func(*args)``, or ``func.__new__(func, *args, **kwargs)`` when
        ``new``, only for a global of the allow-list that this load resolved, after its check in :data:`CALL_CHECKS`.

        :param func: the callable (from the pickle's stack)
        :param args: the positional arguments
        :param kwargs: the keyword arguments
        :param new: call ``func.__new__`` (``NEWOBJ``, ``NEWOBJ_EX``, ``OBJ`` of a class without arguments)
        :return: what the call returns
        :raises UnsafeModelFileError: the callable is refused
        :raises ValueError: its arguments are refused
        """
        resolved = self._globals.get(id(func))
        if resolved is None or resolved[0] is not func:  # (a global is the only callable a pickle of data can reach)
            raise UnsafeModelFileError(f"{self.where} calls {func!r}, which it did not name: the file is damaged or crafted.")
        if not isinstance(args, tuple) or not isinstance(kwargs, dict) or (new and not isinstance(func, type)):
            raise pickle.UnpicklingError(f"{self.where}: malformed call of {resolved[1][0]}.{resolved[1][1]}.")
        check = CALL_CHECKS.get(resolved[1])
        if check is None:
            raise UnsafeModelFileError(f"{self.where} calls {resolved[1][0]}.{resolved[1][1]}, which a safe load never calls.")
        self.calling = resolved[1][1]
        check(self, args, kwargs, new)
        result = func.__new__(func, *args, **kwargs) if new else func(*args, **kwargs)
        self._created[id(result)] = result
        return result

    # ---------------------------------------------------------------------------------------------- calling opcodes
    def _load_reduce(self) -> None:
        """``REDUCE``: ``func(*args)``."""
        args = self.stack.pop()
        self.stack[-1] = self.call(self.stack[-1], args, {}, new=False)

    def _load_newobj(self) -> None:
        """``NEWOBJ``: ``cls.__new__(cls, *args)``."""
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self.call(cls, args, {}, new=True))

    def _load_newobj_ex(self) -> None:
        """``NEWOBJ_EX``: ``cls.__new__(cls, *args, **kwargs)``."""
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self.call(cls, args, kwargs, new=True))

    def _instantiate(self, klass: Any, args: list[Any]) -> None:
        """``OBJ`` and ``INST`` (protocols 0 and 1): ``klass(*args)``, or ``klass.__new__(klass)`` as pickle does."""
        new = not args and isinstance(klass, type) and not hasattr(klass, "__getinitargs__")
        self.append(self.call(klass, tuple(args), {}, new=new))

    # ------------------------------------------------------------------------------------------- changing opcodes
    def _load_build(self) -> None:
        """``BUILD`` (set the state of the object below the top of the stack): only of an object this load created."""
        from gymnasium import spaces

        if len(self.stack) < 2:
            raise pickle.UnpicklingError(f"{self.where}: malformed pickle (BUILD without an object).")
        inst, state = self.stack[-2], self.stack[-1]
        # pickle falls back on setattr(inst, ...): on a class (or function) it would change it for the whole process
        # (and numpy returns its own scalars, e.g. True, shared too, for some scalar calls)
        shared = isinstance(inst, (type, types.ModuleType, np.generic)) or inspect.isroutine(inst) or id(inst) in self._globals
        if shared or self._created.get(id(inst)) is not inst:
            resolved = self._globals.get(id(inst))
            what = (
                f"{resolved[1][0]}.{resolved[1][1]}" if resolved is not None else f"a {type(inst).__name__} it did not create"
            )
            raise UnsafeModelFileError(
                f"{self.where} sets the state of {what}, which pickles never do (they set the state of the objects they "
                "create; this one is shared by the whole process): the file is damaged or crafted."
            )
        if isinstance(inst, np.ndarray):
            self._check_array_state(state)
        elif isinstance(inst, np.dtype):
            self._check_dtype_state(inst, state)
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
        if isinstance(inst, spaces.Space) and inst.__dict__.get("_shape") is not None:
            # its shape sizes what is built from the space (networks, buffers), whatever arrays it holds
            check_space_size(inst.__dict__["_shape"], self.where)

    def _check_array_state(self, state: Any) -> None:
        """``ndarray.__setstate__((version,) shape, dtype, is_fortran, data)`` gives the array a new shape and dtype."""
        if not isinstance(state, tuple) or len(state) not in (4, 5) or not isinstance(state[-3], np.dtype):
            raise pickle.UnpicklingError(f"{self.where}: malformed numpy array.")
        self.count_array(state[-4], state[-3])

    def _check_dtype_state(self, inst: np.dtype, state: Any) -> None:
        """``dtype.__setstate__`` can change the size of a dtype an array already uses (numpy then reads past the
        array): the state is tried on a copy first, and must leave a dtype an array may have, of the same size."""
        if np.dtype(inst.str) is inst:  # numpy's own dtype (``dtype(..., copy=False)``), shared by the whole process
            raise UnsafeModelFileError(f"{self.where} sets the state of numpy's {inst}: the file is damaged or crafted.")
        probe = np.dtype(inst, False, True)
        try:
            probe.__setstate__(state)  # type: ignore[attr-defined]
        except (TypeError, ValueError) as exc:
            raise pickle.UnpicklingError(f"{self.where}: malformed numpy dtype ({exc}).") from None
        if array_dtype(probe, self.where).itemsize != inst.itemsize:
            raise ValueError(
                f"{self.where}: a dtype state changing {inst} to {probe} is refused: the file is damaged or crafted."
            )

    def _check_target(self, kinds: tuple[type, ...], opcode: str) -> None:
        """The object items are added to: a list, dict or set (``cls.append`` or ``cls[key] = ...`` would change a
        class allowed by name, or call one of its methods with the file's arguments), as torch's ``weights_only``."""
        if not self.stack or type(self.stack[-1]) not in kinds:
            target = type(self.stack[-1]).__name__ if self.stack else "nothing"
            raise UnsafeModelFileError(f"{self.where}: {opcode} on a {target} is refused: the file is damaged or crafted.")

    def _load_append(self) -> None:
        value = self.stack.pop()
        self._check_target((list,), "APPEND")
        self.stack[-1].append(value)

    def _load_appends(self) -> None:
        items = self.pop_mark()  # type: ignore[attr-defined]
        self._check_target((list,), "APPENDS")
        self.stack[-1].extend(items)

    def _load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._check_target((dict, OrderedDict), "SETITEM")
        self.stack[-1][key] = value

    def _load_setitems(self) -> None:
        items = self.pop_mark()  # type: ignore[attr-defined]
        self._check_target((dict, OrderedDict), "SETITEMS")
        for i in range(0, len(items), 2):
            self.stack[-1][items[i]] = items[i + 1]

    def _load_additems(self) -> None:
        items = self.pop_mark()  # type: ignore[attr-defined]
        self._check_target((set,), "ADDITEMS")
        self.stack[-1].update(items)

    dispatch = {
        **pickle._Unpickler.dispatch,  # type: ignore[attr-defined]
        **cast(
            dict[int, Any],
            {
                pickle.REDUCE[0]: _load_reduce,
                pickle.NEWOBJ[0]: _load_newobj,
                pickle.NEWOBJ_EX[0]: _load_newobj_ex,
                pickle.BUILD[0]: _load_build,
                pickle.APPEND[0]: _load_append,
                pickle.APPENDS[0]: _load_appends,
                pickle.SETITEM[0]: _load_setitem,
                pickle.SETITEMS[0]: _load_setitems,
                pickle.ADDITEMS[0]: _load_additems,
            },
        ),
    }


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
        # read from memory: a length in the pickle (of a frame, of bytes) then reads at most the file, whereas a
        # buffered file object first allocates the length asked for
        content = io.BytesIO(file.read())
    try:
        vec_normalize = RestrictedUnpickler(content, VEC_NORMALIZE_GLOBALS, str(path)).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, UnsafeModelFileError):
            raise
        raise ValueError(f"{path} is not a VecNormalize file written by VecNormalize.save ({exc}).") from exc
    if not isinstance(vec_normalize, VecNormalize):
        raise ValueError(f"{path} holds a {type(vec_normalize).__name__}, not a VecNormalize.")
    _check_statistics_layout(vec_normalize, str(path))
    check_finite_statistics(vec_normalize, str(path))
    vec_normalize.set_venv(venv)
    return vec_normalize


def _check_statistics_layout(vec_normalize: Any, where: str) -> None:
    """
    Refuse a VecNormalize whose statistics are not laid out as ``VecNormalize.save`` writes them (``obs_rms`` a
    ``RunningMeanStd``, or a dict of them for Dict observations, absent with ``norm_obs=False``; ``ret_rms`` a
    ``RunningMeanStd``; an observation
    space; finite ``clip_obs``, ``clip_reward``, ``gamma``, ``epsilon``): ``VecNormalize`` would fail later with a
    bare ``AssertionError``, naming neither the file nor the field.

    :param vec_normalize: the unpickled object
    :param where: the file, for the error message
    :raises ValueError: naming the field
    """
    from gymnasium import spaces
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    state = vars(vec_normalize)
    obs_rms = state.get("obs_rms")
    rms_ok = isinstance(obs_rms, RunningMeanStd) or (
        isinstance(obs_rms, dict) and all(isinstance(rms, RunningMeanStd) for rms in obs_rms.values())
    )
    problems = [] if rms_ok or (obs_rms is None and state.get("norm_obs") is False) else ["obs_rms"]  # (none then)
    problems += [] if isinstance(state.get("ret_rms"), RunningMeanStd) else ["ret_rms"]
    problems += [] if isinstance(state.get("observation_space"), spaces.Space) else ["observation_space"]
    for name in ("clip_obs", "clip_reward", "gamma", "epsilon"):
        value = state.get(name)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
            problems.append(name)
    if problems:
        raise ValueError(
            f"{where} is not a VecNormalize file as VecNormalize.save writes it ({', '.join(problems)} missing or of "
            "another type): the file is damaged or crafted."
        )


def check_finite_statistics(vec_normalize: Any, where: str) -> None:
    """
    Refuse normalisation statistics that are not finite: every normalised observation (or reward) would be NaN, and
    the first error would come from the policy's distribution, naming neither the file nor the cause.

    :param vec_normalize: the loaded ``VecNormalize`` (or any object with its ``obs_rms`` / ``ret_rms``)
    :param where: the file, for the error message
    :raises ValueError: a non-finite mean, variance or count
    """
    field = non_finite_statistics(vec_normalize)
    if field is not None:
        raise ValueError(
            f"{where}: the normalisation statistics {field} are not finite (NaN or inf): every normalised value would be "
            "NaN. The run that wrote them diverged; use an earlier checkpoint's statistics, or train again."
        )
