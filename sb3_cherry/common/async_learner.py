"""
Collection that overlaps learning: the gradient updates run in a learner process while the main process keeps
collecting the next rollout with the previous weights.

Timeline (``C_i``: collect rollout ``i`` in the main process, ``T_i``: train on it in the learner)::

    main:     C_0 | C_1 (weights v0)  | C_2 (weights v1)  | ...
    learner:      | T_0: v0 -> v1     | T_1: v1 -> v2     | ...

The behaviour policy ``mu`` of rollout ``i`` (``i >= 1``) is therefore exactly one update older than the weights
``pi_prox`` the learner starts from. Before the update, the learner corrects the rollout as decoupled PPO does (Hilton
et al., 2021, eq. 3; reference code openai/ppo-ewma; :meth:`~sb3_cherry.common.buffers.ReturnsEstimatorMixin.recentre`):
PPO's (and the rollback's) ratio and trust region are centred on ``pi_prox`` instead of ``mu`` (otherwise the first
epoch would already sit outside the trust region, and the rollback would push the policy back towards ``mu``), value
clipping is centred on ``pi_prox``'s critic, and each sample carries the importance weight ``pi_prox / mu``, which
multiplies its surrogate (``-w A log pi`` for A2C) after the minibatch's advantages are normalised, truncated as in
the reference code: the whole ratio ``pi / mu`` is capped at ``imp_samp_max``, i.e. ``w = min(pi_prox / mu,
imp_samp_max * pi_prox / pi)`` (:func:`~sb3_cherry.common.buffers.truncated_weights`; ``pi = pi_prox`` for A2C).
With ``returns_estimator="vtrace"``, the critic's targets are recomputed with ``pi_prox``'s critic and the V-trace
ratios ``pi_prox / mu`` (with ``recompute_returns=True``: before every epoch, ratios ``pi / mu``); the surrogate then
takes the advantages without ``rho`` (``w`` times PPO's ratio ``pi / pi_prox`` already is the importance weight
``pi / mu``).

What crosses the process boundary, per update: the rollout (arrays of the rollout buffer, sent once through a pipe) to
the learner; the new policy weights back through a ``multiprocessing.shared_memory`` block (written in place by the
learner, copied into the main policy once per update, never pickled); the ``train/`` log values (a small dict).
The optimizer state stays in the learner and is copied back once, when ``learn`` ends, with the learner's random
states (numpy's minibatch permutations, torch, ``random``): the learner of the next ``learn`` call continues them, as the
single process of ``collection="sync"`` does, instead of re-seeding from ``model.seed``.

The learner process ignores SIGINT: a Ctrl-C (sent to the whole process group by a terminal) interrupts the main
process only, which then fetches the learner's last update (:meth:`AsyncLearner.salvage`) and stops it.
"""

import io
import multiprocessing as mp
import os
import random
import signal
import sys
import traceback
import warnings
import weakref
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from sb3_cherry.common.speed import training_switches

COLLECTION_MODES = ("sync", "async")
# rollout buffer fields that are not per-step data
_BUFFER_SCALARS = ("pos", "full", "generator_ready")
# exception types the main process re-raises for the learner's (only their name and message cross the pipe, as
# strings); a learner error of another type is reported as the nearest of these bases, else as a RuntimeError
_REBUILT_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (
        ArithmeticError,
        AssertionError,
        AttributeError,
        FloatingPointError,
        IndexError,
        KeyError,
        LookupError,
        NotImplementedError,
        OverflowError,
        RuntimeError,
        TypeError,
        ValueError,
        ZeroDivisionError,
    )
}
# packages whose frames a warning skips to point at the user's code
_LIBRARY_PACKAGES = ("sb3_cherry", "stable_baselines3", "sb3_contrib")
# per model, the random states (``torch.save`` bytes) its last learner ended with, for the learner of the next learn
# call; not a model attribute, so not saved with the model (``load`` re-seeds from ``model.seed``, in both modes)
_LEARNER_RNG_STATES: "weakref.WeakKeyDictionary[OnPolicyAlgorithm, bytes]" = weakref.WeakKeyDictionary()


def check_collection(collection: str) -> str:
    """
    Validate the ``collection`` argument of the on-policy algorithms.

    :param collection: ``"sync"`` or ``"async"``
    :return: the value
    :raises ValueError: any other value
    """
    if collection not in COLLECTION_MODES:
        raise ValueError(
            f"collection={collection!r} is not supported: use 'sync' (collect then train, as SB3) or 'async' "
            "(train in a learner process while the next rollout is collected)."
        )
    return collection


def _has_main_guard(path: str) -> bool:
    """Whether the script at ``path`` has a top-level ``if __name__ == "__main__":`` block."""
    import ast

    with open(path, encoding="utf-8") as file:
        tree = ast.parse(file.read(), filename=path)
    for node in tree.body:
        if not isinstance(node, ast.If):
            continue
        # ``__name__ == "__main__"`` alone or inside a condition (``... and len(sys.argv) > 1``)
        for test in ast.walk(node.test):
            if isinstance(test, ast.Compare):
                names = [test.left, *test.comparators]
                if any(isinstance(n, ast.Name) and n.id == "__name__" for n in names) and any(
                    isinstance(n, ast.Constant) and n.value == "__main__" for n in names
                ):
                    return True
    return False


def _check_rebuildable(model: Any) -> None:
    """
    The learner process rebuilds the policy from ``policy_class`` / ``policy_kwargs`` (``model.save`` / ``load``):
    refuse a ``model.policy`` replaced by one they do not build (collection="sync" trains it in place).

    :param model: the algorithm
    :raises ValueError: naming the difference
    """
    policy = model.policy
    if type(policy) is not model.policy_class:
        raise ValueError(
            f"model.policy is a {type(policy).__name__}, but policy_class is {getattr(model.policy_class, '__name__', '?')}: "
            "collection='async' rebuilds the policy in its learner process from policy_class / policy_kwargs. Set "
            "them to build your policy, or use collection='sync'."
        )
    with th.random.fork_rng(devices=[]):  # (its initialisation must not move the run's random stream)
        fresh = model.policy_class(model.observation_space, model.action_space, model.lr_schedule, **model.policy_kwargs)
    ours = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    built = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    if ours != built:
        differ = sorted(set(ours.items()) ^ set(built.items()))[:3]
        raise ValueError(
            f"model.policy does not have the layout policy_kwargs build ({differ} ...): collection='async' rebuilds the "
            "policy in its learner process from policy_class / policy_kwargs. Set them to build your policy, or use "
            "collection='sync'."
        )


def check_main_guard(start_method: str) -> None:
    """
    Refuse to start the learner process when doing so would re-run the user's script.

    With the ``spawn`` and ``forkserver`` start methods, a new process imports the main script again; without an
    ``if __name__ == "__main__":`` guard, that re-runs the training (and its saves) in the child.

    :param start_method: the multiprocessing start method
    :raises RuntimeError: we are inside such a re-import, or the main script has no guard
    """
    if start_method == "fork":
        return
    advice = (
        'collection="async" starts a learner process, which re-imports the main script: put the script\'s code under '
        '`if __name__ == "__main__":` (see the README example), or use collection="sync".'
    )
    if getattr(mp.current_process(), "_inheriting", False):
        raise RuntimeError(f"learn() was called while a child process imported the main script. {advice}")
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path and path.endswith(".py") and os.path.isfile(path) and not _has_main_guard(path):
        raise RuntimeError(f'{path} has no `if __name__ == "__main__":` guard. {advice}')


class SharedStateDict:
    """
    The floating point tensors of a ``state_dict`` laid out in one ``multiprocessing.shared_memory`` block.

    :param layout: ``(name, dtype, shape, offset)`` per tensor
    :param name: name of an existing block to attach to (``None``: create one)
    """

    def __init__(self, layout: list[tuple[str, str, tuple[int, ...], int]], name: str | None = None):
        self.layout = layout
        size = max([1] + [offset + np.dtype(dtype).itemsize * int(np.prod(shape)) for _, dtype, shape, offset in layout])
        self.shm = SharedMemory(name=name, create=name is None, size=size)
        self.owner = name is None
        self.arrays = {
            key: np.ndarray(shape, dtype=np.dtype(dtype), buffer=self.shm.buf, offset=offset)
            for key, dtype, shape, offset in layout
        }

    @staticmethod
    def layout_of(state_dict: dict[str, th.Tensor]) -> list[tuple[str, str, tuple[int, ...], int]]:
        """
        Byte layout of the tensors of a state dict.

        :param state_dict: a module's ``state_dict()`` (CPU tensors)
        :return: ``(name, numpy dtype string, shape, byte offset)`` per tensor, 8-byte aligned
        """
        layout, offset = [], 0
        for key, tensor in state_dict.items():
            array = tensor.detach().cpu().numpy()
            layout.append((key, array.dtype.str, tuple(array.shape), offset))
            offset += -(-array.nbytes // 8) * 8
        return layout

    def write(self, state_dict: dict[str, th.Tensor]) -> None:
        """
        Copy the tensors into shared memory.

        :param state_dict: tensors with the layout's names and shapes
        """
        for key, array in self.arrays.items():
            array[...] = state_dict[key].detach().cpu().numpy()

    def read_into(self, module: th.nn.Module) -> None:
        """
        Copy the shared tensors into a module's parameters and buffers, in place.

        :param module: module with the layout's ``state_dict`` names
        """
        state = module.state_dict()
        if any(key not in state or tuple(state[key].shape) != array.shape for key, array in self.arrays.items()):
            raise RuntimeError(
                "model.policy was replaced by a policy of another layout during an async learn: the learner trains "
                "the policy learn started with. Replace it between learn calls (with policy_class / policy_kwargs "
                "that build it), or use collection='sync'."
            )
        with th.no_grad():
            for key, array in self.arrays.items():
                state[key].copy_(th.from_numpy(array))

    def close(self) -> None:
        """Detach (and free, in the process that created it) the shared block."""
        self.arrays = {}
        self.shm.close()
        if self.owner:
            self.shm.unlink()


def forget_learner_rng_states(model: OnPolicyAlgorithm) -> None:
    """
    Let the learner of ``model``'s next ``learn`` call start from ``model.seed`` (``load`` re-seeds) instead of the
    random states the previous learner ended with (``set_random_seed`` calls this).

    :param model: the model
    """
    _LEARNER_RNG_STATES.pop(model, None)


def _save_rng_state() -> bytes:
    """
    The global random states training draws from (numpy: minibatch permutations; torch, CUDA once initialised;
    ``random``), as ``torch.save`` bytes of types ``torch.load(weights_only=True)`` accepts.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)
    state: dict[str, Any] = {
        "numpy": (kind, th.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": th.get_rng_state(),
        "random": random.getstate(),
    }
    if th.cuda.is_available() and th.cuda.is_initialized():
        state["cuda"] = th.cuda.get_rng_state_all()
    buffer = io.BytesIO()
    th.save(state, buffer)
    return buffer.getvalue()


def _load_rng_state(data: bytes) -> None:
    """
    Restore the global random states saved by :func:`_save_rng_state`.

    :param data: its bytes
    """
    state = th.load(io.BytesIO(data), weights_only=True)
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    th.set_rng_state(state["torch"])
    random.setstate(state["random"])
    if "cuda" in state and th.cuda.is_available() and len(state["cuda"]) == th.cuda.device_count():
        th.cuda.set_rng_state_all(state["cuda"])


def _error_report(exc: BaseException) -> tuple[str, str, str, str]:
    """
    What the learner reports of its error, as plain strings (the main process unpickles no exception object).

    :param exc: the exception, being handled
    :return: the nearest base in ``_REBUILT_ERRORS`` (else ``"RuntimeError"``), the qualified type name, the message,
        the formatted traceback
    """
    cls = type(exc)
    base = next(
        (c.__name__ for c in cls.__mro__ if c.__module__ == "builtins" and c.__name__ in _REBUILT_ERRORS),
        "RuntimeError",
    )
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    return base, name, str(exc), traceback.format_exc()


def _learner_error(base: str, name: str, message: str, trace: str) -> Exception:
    """
    The exception the main process raises for an error of the learner: the learner's type when it is one of
    ``_REBUILT_ERRORS`` (else its nearest base there), with the learner's traceback in the message.

    :param base: the nearest base in ``_REBUILT_ERRORS``
    :param name: the qualified name of the learner's exception type
    :param message: its message
    :param trace: its formatted traceback
    :return: the exception
    """
    where = (
        f"(raised as {name} in the async learner process; collection='sync' trains in-process, to debug it there). "
        f"The learner's traceback:\n{trace}"
    )
    text = f"{message}\n\n{where}" if base == name else f"The async learner process failed with {name}: {message}\n\n{where}"
    cls = _REBUILT_ERRORS.get(base, RuntimeError)
    return _LearnerKeyError(text) if cls is KeyError else cls(text)


class _LearnerKeyError(KeyError):
    """A learner's ``KeyError`` (``except KeyError`` catches it) whose message, with the traceback, prints as text
    (``KeyError`` shows its argument's ``repr``)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _exit_status(exitcode: int | None) -> str:
    """How the learner process ended, in words, from its exit code (``None``: still running)."""
    if exitcode is None:
        return "it is still running"
    if exitcode == 0:
        return "it exited normally (exit code 0) without answering: interrupted, or its pipe was closed"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if -exitcode == getattr(signal, "SIGKILL", None):
            return f"it was killed by {name}: out of memory (the kernel's OOM killer sends SIGKILL), or killed by hand"
        return f"it was ended by {name}"
    return f"it exited with code {exitcode} (a crash during start-up or in native code?)"


def _user_stacklevel() -> int:
    """
    The ``stacklevel`` for a ``warnings.warn`` in the function calling this one that points at the first frame
    outside ``sb3_cherry`` and SB3: the user's ``learn`` call, whatever wrappers (``fast_learn``) and ``learn``
    overrides (``super().learn`` through SB3's classes) are in between.
    """
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and str(frame.f_globals.get("__name__")).split(".")[0] in _LIBRARY_PACKAGES:
        frame, level = frame.f_back, level + 1
    return level


def buffer_payload(buffer: RolloutBuffer) -> dict[str, Any]:
    """
    The data of a filled rollout buffer: its numpy arrays (and dicts of arrays) and position flags.

    :param buffer: a full rollout buffer (after ``compute_returns_and_advantage``)
    :return: picklable dict of attributes
    """
    payload = {
        key: value
        for key, value in vars(buffer).items()
        if isinstance(value, np.ndarray)
        or (isinstance(value, dict) and all(isinstance(v, np.ndarray) for v in value.values()))
    }
    payload.update({key: getattr(buffer, key) for key in _BUFFER_SCALARS})
    return payload


def _learner_main(conn: Connection, model_bytes: bytes, shm_name: str, layout: list, threads: int) -> None:
    """
    Entry point of the learner process: rebuild the model, then train on every rollout received.

    :param conn: pipe to the main process
    :param model_bytes: the model saved with ``model.save`` (policy, optimizer state, hyperparameters)
    :param shm_name: shared memory block for the weights
    :param layout: its layout (see :class:`SharedStateDict`)
    :param threads: torch threads of the learner
    """
    shared = None
    try:
        # a Ctrl-C in a terminal reaches the whole process group: the main process handles it (salvage, then close)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        th.set_num_threads(threads)
        model_class, device, rng_state = conn.recv()
        model = model_class.load(io.BytesIO(model_bytes), env=None, device=device, allow_pickle=True)  # our own bytes
        if rng_state is not None:  # continue the previous learner's random streams (load re-seeded from model.seed)
            _load_rng_state(rng_state)
        logger = Logger(folder=None, output_formats=[])
        model.set_logger(logger)
        shared = SharedStateDict(layout, name=shm_name)
        conn.send(("ready", None))
        while True:
            command, data = conn.recv()
            if command == "close":
                break
            if command == "optimizer":
                state = io.BytesIO()
                th.save(model.policy.optimizer.state_dict(), state)
                conn.send(("optimizer", (state.getvalue(), _save_rng_state())))
                continue
            buffer = model.rollout_buffer
            buffer.behaviour_log_probs, buffer.advantage_weights = None, None
            for key, value in data["buffer"].items():
                setattr(buffer, key, value)
            model._last_obs = data["last_obs"]
            model.num_timesteps = data["num_timesteps"]
            model._current_progress_remaining = data["progress_remaining"]
            with training_switches(model):  # as the main process's learn (no argument validation, foreach)
                if data["lagged"]:
                    # collected by the previous weights: centre the trust region on the current policy, store the
                    # per-sample importance weights, and (recompute_returns) re-evaluate the targets before the first
                    # epoch
                    model._prepare_lagged_rollout()
                    model._recompute_returns()
                model.train()
            shared.write(model.policy.state_dict())
            logs = {key: (logger.name_to_value[key], logger.name_to_excluded.get(key)) for key in logger.name_to_value}
            logger.name_to_value.clear()
            logger.name_to_excluded.clear()
            conn.send(("trained", {"logs": logs, "n_updates": model._n_updates}))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass
    except BaseException as exc:
        try:
            conn.send(("error", _error_report(exc)))
        except (BrokenPipeError, OSError):
            pass
    finally:
        if shared is not None:
            shared.close()
        conn.close()


class AsyncLearner:
    """
    Learner process of an on-policy model with ``collection="async"`` (see the module docstring).

    :param model: the model (its current policy, optimizer state and hyperparameters are copied to the learner)
    :param threads: torch threads of the learner process (default: half of the main process's, at least 1)
    :param timeout: seconds to wait for one update before reporting the learner as stuck
    :param start_method: multiprocessing start method (default: ``forkserver`` where available, else ``spawn``,
        as SB3's ``SubprocVecEnv``)
    """

    def __init__(
        self,
        model: OnPolicyAlgorithm,
        threads: int | None = None,
        timeout: float = 3600.0,
        start_method: str | None = None,
    ):
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        check_main_guard(start_method)
        ctx: Any = mp.get_context(start_method)
        self.timeout = timeout
        self.pending = False
        self.submitted = 0
        # why the learner can no longer be asked for its state (then salvage warns at once instead of waiting)
        self.failure: str | None = None
        # the learner hangs, or the pipe is out of step (a message cut by an interrupt): close terminates it at once
        self.unresponsive = False
        _check_rebuildable(model)
        layout = SharedStateDict.layout_of(model.policy.state_dict())
        self.shared = SharedStateDict(layout)
        self.conn, child_conn = ctx.Pipe()
        self.process: Any = None
        try:  # whatever fails (saving the model, starting the process, its start-up), nothing is left behind
            buffer = io.BytesIO()
            model.save(buffer)
            threads = threads if threads is not None else max(1, th.get_num_threads() // 2)
            self.process = ctx.Process(
                target=_learner_main,
                args=(child_conn, buffer.getvalue(), self.shared.shm.name, layout, threads),
                daemon=True,
                name="sb3_cherry-learner",
            )
            self.process.start()
            child_conn.close()
            self._send((type(model), str(model.device), _LEARNER_RNG_STATES.get(model)), "ready")
            self._receive("ready")
        except BaseException:
            child_conn.close()
            self.close()
            raise

    def _lost(self, expected: str) -> RuntimeError:
        """The error reported when the learner process died or closed its pipe; records the failure."""
        self.process.join(timeout=1.0)
        self.failure = f"the learner process ended before answering {expected!r}: {_exit_status(self.process.exitcode)}"
        return RuntimeError(
            f"The async learner process ended before answering {expected!r}: {_exit_status(self.process.exitcode)}. "
            "Retry with collection='sync' to see any error in-process."
            + (
                ' If the script calls learn() outside `if __name__ == "__main__":`, the learner process re-ran it: '
                "move that code under the guard."
                if expected == "ready"
                else ""
            )
        )

    def _cut(self, what: str) -> None:
        """Record that an interrupt cut a message to or from the learner: the pipe is out of step."""
        self.failure = f"learn was interrupted while {what}, which left the pipe to the learner out of step"
        self.unresponsive = True

    def _send(self, message: tuple[Any, ...], expected: str) -> None:
        """Send a command to the learner, reporting a dead learner instead of a broken pipe."""
        payload = ForkingPickler.dumps(message)  # (as Connection.send; an interrupt here leaves the pipe in step)
        try:
            self.conn.send_bytes(payload)
        except OSError as exc:  # BrokenPipeError / ConnectionResetError
            raise self._lost(expected) from exc
        except BaseException:  # KeyboardInterrupt: part of the message may be in the pipe
            self._cut(f"sending the command answered by {expected!r}")
            raise

    def _receive(self, expected: str) -> Any:
        """Wait for the learner's answer, reporting its death, its errors or a timeout instead of hanging."""
        waited = 0.0
        while not self.conn.poll(1.0):
            waited += 1.0
            if not self.process.is_alive():
                raise self._lost(expected)
            if waited >= self.timeout:
                self.failure = f"it did not answer {expected!r} within {self.timeout:.0f} s"
                self.unresponsive = True
                raise RuntimeError(
                    f"The async learner process did not answer {expected!r} within {self.timeout:.0f} s: it hangs "
                    "(e.g. a deadlocked CUDA call) and is stopped. Retry with collection='sync' to debug it in-process."
                )
        try:
            kind, data = self.conn.recv()
        except (EOFError, OSError) as exc:  # OSError: ConnectionResetError when the learner was killed mid-write
            raise self._lost(expected) from exc
        except BaseException:  # KeyboardInterrupt: the rest of the answer is still in the pipe
            self._cut(f"receiving {expected!r}")
            raise
        if kind == "error":
            base, name, message, trace = (str(part) for part in data)  # (strings only, see _error_report)
            self.failure = f"the learner process raised {name}"
            raise _learner_error(base, name, message, trace)
        assert kind == expected, (kind, expected)
        return data

    def submit(self, model: OnPolicyAlgorithm) -> None:
        """
        Send the model's filled rollout buffer to the learner, which starts training on it.

        :param model: the model whose ``rollout_buffer`` was just collected
        """
        assert not self.pending, "wait for the previous update (sync) before submitting a new rollout"
        data = {
            "buffer": buffer_payload(model.rollout_buffer),
            "last_obs": model._last_obs,
            "num_timesteps": model.num_timesteps,
            "progress_remaining": model._current_progress_remaining,
            # every rollout but the first was collected while the learner computed the weights it now starts from
            "lagged": self.submitted > 0,
        }
        self._send(("train", data), "trained")
        self.pending = True
        self.submitted += 1

    def sync(self, model: OnPolicyAlgorithm) -> None:
        """
        Wait for the update in progress (if any), then copy its weights into the model's policy and record its logs.

        :param model: the model to update
        """
        if not self.pending:
            return
        result = self._receive("trained")
        self.pending = False
        self.shared.read_into(model.policy)
        model._n_updates = result["n_updates"]
        for key, (value, exclude) in result["logs"].items():
            model.logger.record(key, value, exclude=exclude)

    def finish(self, model: OnPolicyAlgorithm) -> None:
        """
        Wait for the last update and copy the learner's weights and optimizer state into the model; keep its random
        states for the learner of the next ``learn`` call.

        :param model: the model to update
        """
        self.sync(model)
        self._send(("optimizer", None), "optimizer")
        optimizer, rng_state = self._receive("optimizer")
        state = th.load(io.BytesIO(optimizer), map_location=model.device, weights_only=True)
        model.policy.optimizer.load_state_dict(state)
        _LEARNER_RNG_STATES[model] = rng_state  # (loaded by the next learner only)

    def salvage(self, model: OnPolicyAlgorithm) -> None:
        """
        After ``learn`` failed or was interrupted: give the model the learner's last weights and their optimizer state
        (the model holds the behaviour weights, one update behind, and the optimizer state from the start of
        ``learn``), so that saving it pairs weights and optimizer state. Warns at once, without waiting, if the learner
        cannot answer any more (it failed, hangs, is gone, or an interrupt cut a message in the pipe); a second
        interrupt while waiting for its update in progress gives up on it.

        :param model: the model being trained
        """
        reason = self.failure
        if reason is None and (self.process is None or not self.process.is_alive()):
            reason = "the learner process has exited" + (f": {_exit_status(self.process.exitcode)}" if self.process else "")
        if reason is None:
            try:
                self.finish(model)
                return
            except Exception as exc:
                reason = self.failure or str(exc).split("\n", 1)[0]
            except BaseException:  # a second Ctrl-C while waiting for the update in progress
                self.unresponsive = True
                self._warn_not_fetched("interrupted while waiting for the update in progress", _user_stacklevel())
                raise
        self._warn_not_fetched(reason, _user_stacklevel())

    @staticmethod
    def _warn_not_fetched(reason: str, stacklevel: int) -> None:
        """Warn that the model keeps the state of the last update received (``stacklevel`` of the caller)."""
        warnings.warn(
            f"collection='async': learn stopped and the learner's state could not be fetched ({reason}): the model "
            "holds the weights of the last update received and the optimizer state from the start of this learn "
            "call.",
            stacklevel=stacklevel + 1,
        )

    def close(self) -> None:
        """Stop the learner process (at once if it hangs) and free the shared memory (safe to call twice)."""
        if self.process is not None and self.process.is_alive():
            if not self.unresponsive:
                try:
                    self.conn.send(("close", None))
                except (BrokenPipeError, OSError):
                    pass
                self.process.join(timeout=10)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(timeout=5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(timeout=5)
        self.conn.close()
        if self.shared.arrays:
            self.shared.close()
