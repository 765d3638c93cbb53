"""
SB3's ``SubprocVecEnv`` whose worker failures name their cause.

In SB3, an env that raises in ``step()``/``reset()`` kills its worker process: the traceback goes to the worker's
stderr and the main process sees a bare ``EOFError`` / ``ConnectionResetError``. Here the env's exception is sent back
and re-raised in the main process with the worker's traceback attached (as :class:`RayVecEnv` does), and a worker
that dies is reported with its index and exit code.
"""

import pickle
import traceback
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env import SubprocVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices


class _EnvFailure:
    """Stands in for the observation of a ``step``/``reset`` whose env raised (pickled back to the main process)."""

    def __init__(self, method: str, error: BaseException):
        self.method = method
        self.traceback = "".join(traceback.format_exception(error))
        try:  # both ways: an exception class whose __init__ takes other arguments pickles but does not unpickle
            pickle.loads(pickle.dumps(error))
            self.error: BaseException | None = error
        except Exception:  # an exception that cannot cross the pipe: its text is kept
            self.error = None
        self.summary = f"{type(error).__name__}: {error}"


class _ReportingEnv(gym.Wrapper):
    """
    Outermost wrapper in the worker: an exception of ``step``/``reset`` becomes an :class:`_EnvFailure`. Attributes
    set on it (SB3's worker answers ``set_attr`` with ``setattr`` on the outermost env) go to the wrapped env, as
    without this wrapper.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "env" or name.startswith("_"):  # the wrapper's own state (gymnasium's Wrapper.__init__)
            object.__setattr__(self, name, value)
        else:
            setattr(self.env, name, value)

    def step(self, action: Any) -> Any:
        try:
            return self.env.step(action)
        except Exception as error:
            return _EnvFailure("step", error), 0.0, False, False, {}

    def reset(self, **kwargs: Any) -> Any:
        try:
            return self.env.reset(**kwargs)
        except Exception as error:
            return _EnvFailure("reset", error), {}


class _ReportingEnvFn:
    """Picklable ``env_fn`` wrapper adding :class:`_ReportingEnv`."""

    def __init__(self, env_fn: Callable[[], gym.Env]):
        self.env_fn = env_fn

    def __call__(self) -> gym.Env:
        return _ReportingEnv(self.env_fn())


class WorkerDiedError(RuntimeError):
    """A ``SubprocVecEnv`` worker process exited (killed, out of memory, crashed in native code, ...)."""


class _CheckedRemote:
    """The main process's end of a worker pipe: turns a dead worker or a reported env exception into an error."""

    def __init__(self, remote: Any, index: int, process: Any, owner: "CherrySubprocVecEnv"):
        self.remote, self.index, self.process, self.owner = remote, index, process, owner

    def send(self, message: Any) -> None:
        if self.owner.broken is not None:
            raise RuntimeError(
                f"This SubprocVecEnv is unusable after the error of worker {self.owner.broken} (the workers' answers are "
                "out of step): close it and create a new one."
            )
        try:
            self.remote.send(message)
        except OSError as exc:  # BrokenPipeError / ConnectionResetError
            raise self._died(f"sending {message[0]!r}") from exc

    def recv(self) -> Any:
        try:
            result = self.remote.recv()
        except (EOFError, OSError) as exc:
            self._break()
            raise self._died("waiting for its answer") from exc
        except Exception as exc:  # an answer that does not unpickle here
            self._break()
            raise RuntimeError(
                f"The answer of SubprocVecEnv worker {self.index} (env {self.index}) could not be read in the main process "
                f"({type(exc).__name__}: {exc})."
            ) from exc
        failure = result[0] if isinstance(result, tuple) and result else None
        if isinstance(failure, _EnvFailure):
            self._break()
            note = (
                f"raised by env {self.index} of a SubprocVecEnv in {failure.method}(); worker traceback:\n{failure.traceback}"
            )
            if failure.error is not None:
                failure.error.add_note(note)
                raise failure.error
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
            f"SubprocVecEnv worker {self.index} (env {self.index}) died ({cause}) while {doing}: out of memory, killed, "
            "or a crash in the env's native code; an exception raised while creating the env is printed on stderr."
        )


class CherrySubprocVecEnv(SubprocVecEnv):
    """
    ``SubprocVecEnv`` (same arguments and behaviour) whose failures name their cause: an exception raised by an env's
    ``step``/``reset`` is re-raised in the main process with the worker's traceback attached; a worker that dies
    raises :class:`WorkerDiedError` naming the worker and its exit code.

    :param env_fns: functions creating the environments
    :param start_method: multiprocessing start method (see SB3's ``SubprocVecEnv``)
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]], start_method: str | None = None):
        #: index of the worker whose failure left the pipes out of step (None: usable)
        self.broken: int | None = None
        try:
            super().__init__([_ReportingEnvFn(env_fn) for env_fn in env_fns], start_method=start_method)
        except (EOFError, ConnectionResetError, BrokenPipeError) as exc:
            dead = [(i, p.exitcode) for i, p in enumerate(getattr(self, "processes", [])) if not p.is_alive()]
            for process in getattr(self, "processes", []):
                process.terminate()
            raise WorkerDiedError(
                f"SubprocVecEnv worker(s) died while creating the envs (worker, exit code: {dead}): the env "
                "constructor raised (its traceback is printed on stderr above) or the process was killed."
            ) from exc
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
        self._require_attr(attr_name, indices)
        return super().get_attr(attr_name, indices)

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
        self._require_attr(method_name, indices)
        return super().env_method(method_name, *method_args, indices=indices, **method_kwargs)

    def _require_attr(self, name: str, indices: VecEnvIndices) -> None:
        """Ask the workers (SB3's ``has_attr`` command, which survives a missing attribute) before using ``name``."""
        targets = self._get_indices(indices)
        for i in targets:
            self.remotes[i].send(("has_attr", name))
        missing = [i for i in targets if not self.remotes[i].recv()]
        if missing:
            raise AttributeError(f"env(s) {missing} of this SubprocVecEnv have no attribute {name!r}.")

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
        for process in self.processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=5.0)
        for remote in self.remotes:
            remote.close()
        self.closed = True


def use_in_rl_zoo3() -> None:
    """Make rl_zoo3 (``--vec-env subproc``, ``create_test_env``) build :class:`CherrySubprocVecEnv` workers."""
    import rl_zoo3.exp_manager
    import rl_zoo3.utils

    rl_zoo3.exp_manager.SubprocVecEnv = CherrySubprocVecEnv  # type: ignore[misc]
    rl_zoo3.utils.SubprocVecEnv = CherrySubprocVecEnv  # type: ignore[misc]
