"""
SB3's ``SubprocVecEnv`` whose worker failures name their cause.

In SB3, an env that raises in ``step()``/``reset()`` (or in a method called by ``env_method``, ``render``, a
property read by ``get_attr`` or set by ``set_attr``) kills its worker process: the traceback goes to the worker's
stderr and the main process sees a bare ``EOFError`` / ``ConnectionResetError``. Here the env's exception is sent back
and re-raised in the main process with the worker's traceback attached (as :class:`RayVecEnv` does), a worker
that dies is reported with its index and exit code, and (``step_timeout``) a worker that hangs is reported instead of
waited for forever.
"""

import math
import pickle
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env import SubprocVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices
from stable_baselines3.common.vec_env.patch_gym import _patch_env


class _EnvFailure:
    """Stands in for the observation of a ``step``/``reset`` whose env raised (pickled back to the main process)."""

    def __init__(self, method: str, error: BaseException):
        #: what raised, e.g. ``step()`` or ``env_method('name')``
        self.method = method
        self.traceback = "".join(traceback.format_exception(error))
        try:  # both ways: an exception class whose __init__ takes other arguments pickles but does not unpickle
            pickle.loads(pickle.dumps(error))
            self.error: BaseException | None = error
        except Exception:  # an exception that cannot cross the pipe: its text is kept
            self.error = None
        self.summary = f"{type(error).__name__}: {error}"


def _identity(value: Any) -> Any:
    """Unpickles a :class:`_ReportingCall` as the callable it stands for."""
    return value


class _ReportingCall:
    """
    A callable of the env, as the worker's ``env_method`` calls it: an exception it raises is returned as an
    :class:`_EnvFailure`. Sent back by ``get_attr``, it arrives as the callable itself.
    """

    def __init__(self, name: str, method: Callable[..., Any]):
        self.name, self.method = name, method

    def __reduce__(self) -> tuple[Callable[[Any], Any], tuple[Any]]:
        return _identity, (self.method,)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.method(*args, **kwargs)
        except Exception as error:
            return _EnvFailure(f"env_method({self.name!r})", error)


#: the name :meth:`CherrySubprocVecEnv.set_attr` calls through SB3's ``env_method`` command (SB3's own ``set_attr``
#: command has no way to report an exception)
_SET_ATTR = "_sb3_cherry_set_attr"


class _ReportingEnv(gym.Wrapper):
    """
    Outermost wrapper in the worker, transparent to SB3's attribute commands: an exception of ``step``, ``reset``,
    ``render``, of a method called by ``env_method``, of an attribute read by ``get_attr`` or set by
    :meth:`CherrySubprocVecEnv.set_attr` becomes an :class:`_EnvFailure` sent back to the main process (in SB3 it
    kills the worker). Attributes are read from and set
    on the wrapped env (SB3's worker answers ``get_attr`` / ``env_method`` with ``get_wrapper_attr`` and ``set_attr``
    with ``setattr`` on the outermost env), as without this wrapper; only gymnasium's own wrapper fields stay here.
    """

    #: the fields gymnasium's ``Wrapper.__init__`` sets on the wrapper itself
    _OWN_FIELDS = frozenset({"env", "_action_space", "_observation_space", "_metadata", "_cached_spec"})

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN_FIELDS:
            object.__setattr__(self, name, value)
        else:
            setattr(self.env, name, value)

    def _set_attr(self, name: str, value: Any) -> Any:
        """Set ``name`` as SB3's worker does (``setattr`` on the outermost env); an exception is returned as a failure."""
        try:
            setattr(self, name, value)
        except Exception as error:  # e.g. a property setter that validates its value
            return _EnvFailure(f"set_attr({name!r})", error)
        return None

    def get_wrapper_attr(self, name: str) -> Any:
        if name == _SET_ATTR:
            return self._set_attr
        try:
            value = self.env.get_wrapper_attr(name)
        except AttributeError:
            raise  # SB3's has_attr answers False on it (and CherrySubprocVecEnv asks has_attr first)
        except Exception as error:  # a property that raised
            return _EnvFailure(f"get_attr({name!r})", error)
        return _ReportingCall(name, value) if callable(value) and not isinstance(value, type) else value

    def has_wrapper_attr(self, name: str) -> bool:
        return self.env.has_wrapper_attr(name)

    def step(self, action: Any) -> Any:
        try:
            return self.env.step(action)
        except Exception as error:
            return _EnvFailure("step()", error), 0.0, False, False, {}

    def reset(self, **kwargs: Any) -> Any:
        try:
            return self.env.reset(**kwargs)
        except Exception as error:
            return _EnvFailure("reset()", error), {}

    def render(self) -> Any:
        try:
            return self.env.render()
        except Exception as error:
            return _EnvFailure("render()", error)


class _ReportingEnvFn:
    """Picklable ``env_fn`` wrapper adding :class:`_ReportingEnv`."""

    def __init__(self, env_fn: Callable[[], gym.Env]):
        self.env_fn = env_fn

    def __call__(self) -> gym.Env:
        # SB3's worker converts an old-gym env (shimmy) only after env_fn returns: convert it before wrapping it
        return _ReportingEnv(_patch_env(self.env_fn()))


class WorkerDiedError(RuntimeError):
    """A ``SubprocVecEnv`` worker process exited (killed, out of memory, crashed in native code, ...)."""


class WorkerTimeoutError(TimeoutError):
    """A ``SubprocVecEnv`` worker did not answer within ``step_timeout`` seconds (it is terminated)."""


class _CheckedRemote:
    """The main process's end of a worker pipe: turns a dead worker or a reported env exception into an error."""

    def __init__(self, remote: Any, index: int, process: Any, owner: Any, label: str | None = None, envs: str | None = None):
        self.remote, self.index, self.process, self.owner = remote, index, process, owner
        #: how errors name the worker, and the env(s) it steps
        self.label = label or f"SubprocVecEnv worker {index} (env {index})"
        self.envs = envs or f"env {index} of a SubprocVecEnv"
        #: commands sent whose answers are not read yet
        self.pending = 0
        #: the last command sent (named by a timeout)
        self.command = ""

    def send(self, message: Any) -> None:
        if self.owner.broken is not None:
            failed = "its envs in this process" if self.owner.broken == -1 else f"worker {self.owner.broken}"
            raise RuntimeError(
                f"This {type(self.owner).__name__} is unusable after the error of {failed} (the workers' answers are "
                "out of step): close it and create a new one."
            )
        try:
            self.remote.send(message)
        except OSError as exc:  # BrokenPipeError / ConnectionResetError
            self._break()  # the workers already sent this command hold answers nobody reads
            raise self._died(f"sending {message[0]!r}") from exc
        self.pending += 1
        self.command = message[0]

    def recv(self) -> Any:
        """The worker's answer; an env's failure it reports is raised here (:meth:`check`)."""
        return self.check(self.receive())

    def receive(self) -> Any:
        """
        The worker's answer as sent (an env's failure stays an :class:`_EnvFailure`); a dead, hung or unreadable worker
        raises.
        """
        timeout = self.owner.step_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            # a dead worker closes its end of the pipe, but with the "fork" start method the workers forked before
            # it hold copies of that end, so no EOF would come: check the process while waiting
            while not self.remote.poll(0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))):
                if not self.process.is_alive() and not self.remote.poll(0):
                    raise EOFError("the worker process exited")
                if deadline is not None and time.monotonic() >= deadline:
                    self._break()
                    self.process.terminate()  # (a hung env; close() then joins it)
                    raise WorkerTimeoutError(
                        f"{self.label} did not answer {self.command!r} within "
                        f"step_timeout={timeout} s and was terminated: the env hangs (or is slower than that: raise "
                        "step_timeout, or pass None to wait forever). Close this VecEnv and create a new one."
                    )
            result = self.remote.recv()
            self.pending -= 1
        except WorkerTimeoutError:
            raise
        except (EOFError, OSError) as exc:
            self._break()
            raise self._died("waiting for its answer") from exc
        except Exception as exc:  # an answer that does not unpickle here
            self._break()
            raise RuntimeError(
                f"The answer of {self.label} could not be read in the main process ({type(exc).__name__}: {exc})."
            ) from exc
        return result

    def check(self, result: Any) -> Any:
        """
        :param result: an answer of :meth:`receive`
        :return: ``result``, unless it reports an env's failure, which is raised with the worker's traceback as a note
        """
        # step / reset answer a tuple whose first entry stands for the failure; render, get_attr, env_method the value
        failure = result[0] if isinstance(result, tuple) and result else result
        if isinstance(failure, _EnvFailure):
            # after a failed step / reset the envs are out of step with each other; after a failed env_method,
            # get_attr or render only answers still unread elsewhere make the VecEnv unusable
            if failure.method in ("step()", "reset()") or any(r.pending for r in self.owner.remotes):
                self._break()
            note = f"raised by {self.envs} in {failure.method}; worker traceback:\n{failure.traceback}"
            if failure.error is not None:
                if hasattr(failure.error, "add_note"):
                    failure.error.add_note(note)
                    raise failure.error
                raise failure.error from RuntimeError(note)  # (Python 3.10 has no notes: the cause is printed above)
            raise RuntimeError(f"{failure.summary} ({note})")
        return result

    def close(self) -> None:
        self.remote.close()

    def _break(self) -> None:
        """The other workers' pending answers are not read: the VecEnv cannot be used again."""
        self.owner.broken = self.index
        self.owner.waiting = False

    def _died(self, doing: str) -> WorkerDiedError:
        self.process.join(timeout=1.0)
        code = self.process.exitcode
        cause = f"exit code {code}" if code is None or code >= 0 else f"killed by signal {-code}"
        return WorkerDiedError(
            f"{self.label} died ({cause}) while {doing}: out of memory, killed, "
            "or a crash in the env's native code; an exception raised while creating the env is printed on stderr."
        )


def terminate_workers(processes: Sequence[Any], remotes: Sequence[Any]) -> None:
    """
    Stop the worker processes still running (``terminate``, then ``join`` for up to 5 s each) and close the main
    process's pipe ends (shared by ``CherrySubprocVecEnv`` and ``CherryParallelVecEnv``).

    :param processes: the workers
    :param remotes: the main process's ends of their pipes
    """
    for process in processes:
        if process.is_alive():
            process.terminate()
        process.join(timeout=5.0)
    for remote in remotes:
        remote.close()


class CherrySubprocVecEnv(SubprocVecEnv):
    """
    ``SubprocVecEnv`` (same arguments and behaviour) whose failures name their cause: an exception raised by an env's
    ``step``/``reset`` is re-raised in the main process with the worker's traceback attached; a worker that dies
    raises :class:`WorkerDiedError` naming the worker and its exit code; a worker that does not answer within
    ``step_timeout`` seconds is terminated and raises :class:`WorkerTimeoutError` (a ``TimeoutError``).

    :param env_fns: functions creating the environments
    :param start_method: multiprocessing start method (see SB3's ``SubprocVecEnv``)
    :param step_timeout: seconds to wait for each worker's answer to a call after construction (``step``, ``reset``,
        ``render``, attribute access); ``None`` (the default, as SB3, and ``sb3-cherry train --vec-env subproc``)
        waits forever.
    """

    def __init__(
        self, env_fns: list[Callable[[], gym.Env]], start_method: str | None = None, step_timeout: float | None = None
    ):
        if step_timeout is not None and (
            isinstance(step_timeout, bool) or not isinstance(step_timeout, int | float) or not 0 < step_timeout < math.inf
        ):
            raise ValueError(f"step_timeout must be a number of seconds > 0 (or None to wait forever), got {step_timeout!r}.")
        #: seconds to wait for an answer (None: forever)
        self.step_timeout = step_timeout
        #: index of the worker whose failure left the pipes out of step (None: usable)
        self.broken: int | None = None
        try:
            super().__init__([_ReportingEnvFn(env_fn) for env_fn in env_fns], start_method=start_method)
        except (EOFError, ConnectionResetError, BrokenPipeError, WorkerDiedError) as exc:
            processes = getattr(self, "processes", [])
            deadline = time.monotonic() + 5.0  # the worker whose env raised is exiting: let it, to report its code
            while processes and all(p.is_alive() for p in processes) and time.monotonic() < deadline:
                time.sleep(0.01)
            dead = [(i, p.exitcode) for i, p in enumerate(processes) if not p.is_alive()]
            for process in processes:
                process.terminate()
            for process in processes:
                process.join(timeout=5.0)
            for remote in getattr(self, "remotes", []):
                remote.close()
            raise WorkerDiedError(
                f"SubprocVecEnv worker(s) died while creating the envs (worker, exit code: {dead}): the env "
                "constructor raised (its traceback is printed on stderr above) or the process was killed."
            ) from exc
        self._check_remotes()

    def _check_remotes(self) -> None:
        """Replace SB3's pipe ends by :class:`_CheckedRemote` (once; SB3's ``__init__`` already calls ``get_attr``)."""
        if self.remotes and not isinstance(self.remotes[0], _CheckedRemote):
            self.remotes = [
                _CheckedRemote(r, i, p, self) for i, (r, p) in enumerate(zip(self.remotes, self.processes, strict=True))
            ]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """
        SB3's ``get_attr``; an attribute an env lacks raises ``AttributeError`` here (in SB3 it kills the worker, which
        then looks like a crash).

        :param attr_name: the attribute
        :param indices: the envs (None: all)
        :return: the values
        """
        targets = self._require_attr(attr_name, indices)
        return super().get_attr(attr_name, targets)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """
        SB3's ``env_method``; a method an env lacks raises ``AttributeError`` here (in SB3 it kills the worker).

        :param method_name: the method
        :param method_args: its positional arguments
        :param indices: the envs (None: all)
        :param method_kwargs: its keyword arguments
        :return: the results
        """
        targets = self._require_attr(method_name, indices)
        return super().env_method(method_name, *method_args, indices=targets, **method_kwargs)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """
        SB3's ``set_attr`` (``setattr`` on each env's outermost wrapper); an exception the env raises (e.g. a property
        setter refusing the value) is re-raised here with the worker's traceback (in SB3 it kills the worker).

        :param attr_name: the attribute
        :param value: its new value
        :param indices: the envs (None: all)
        """
        self._check_remotes()
        super().env_method(_SET_ATTR, attr_name, value, indices=indices)

    def _require_attr(self, name: str, indices: VecEnvIndices) -> list[int]:
        """
        Ask the workers (SB3's ``has_attr`` command, which survives a missing attribute) before using ``name``.

        :return: the env indices, as a list (``indices`` may be a one-shot iterable, and is read more than once)
        """
        self._check_remotes()
        targets = list(self._get_indices(indices))
        for i in targets:
            self.remotes[i].send(("has_attr", name))
        missing = [i for i in targets if not self.remotes[i].recv()]
        if missing:
            raise AttributeError(f"env(s) {missing} of this SubprocVecEnv have no attribute {name!r}.")
        return targets

    def close(self) -> None:
        """Close the workers; a worker that already died is not waited for."""
        if self.closed:
            return
        if self.broken is None:
            try:
                super().close()
                return
            except (WorkerDiedError, EOFError, OSError):
                pass
        terminate_workers(self.processes, self.remotes)
        self.closed = True


def use_in_rl_zoo3() -> None:
    """
    Make rl_zoo3 (``--vec-env subproc`` / ``dummy``, ``create_test_env``) build :class:`CherrySubprocVecEnv` workers
    and :class:`~sb3_cherry.common.vec_env.dummy_vec_env.CherryDummyVecEnv` s.
    """
    import rl_zoo3.exp_manager
    import rl_zoo3.utils

    from sb3_cherry.common.vec_env.dummy_vec_env import CherryDummyVecEnv

    rl_zoo3.exp_manager.SubprocVecEnv = CherrySubprocVecEnv  # type: ignore[misc]
    rl_zoo3.utils.SubprocVecEnv = CherrySubprocVecEnv  # type: ignore[misc]
    rl_zoo3.exp_manager.DummyVecEnv = CherryDummyVecEnv  # type: ignore[misc]
    rl_zoo3.utils.DummyVecEnv = CherryDummyVecEnv  # type: ignore[misc]
