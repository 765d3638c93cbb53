"""
A VecEnv that steps its envs in groups, one group in this process and the others in worker processes, all at once.

SB3's ``SubprocVecEnv`` runs one process per env: with 32 envs on a 2-core machine, 32 processes take turns and every
step pays 32 round trips. :class:`CherryParallelVecEnv` splits the envs into as many contiguous groups as there are
cores (by default): the first group is stepped here by a :class:`~sb3_cherry.common.vec_env.dummy_vec_env.
CherryDummyVecEnv` while each other group is stepped by one in a worker process, between sending the workers their
actions and reading their answers. Where the simulator takes most of the time (BipedalWalker-v3 with 32 envs) this
nearly halves the envs' share of a rollout on 2 cores (``python -m benchmarks.worker_split``).

It returns what one ``CherryDummyVecEnv`` (and SB3's ``DummyVecEnv``) of the same envs returns: the same
observations, rewards, dones and infos, in the same order, with the same auto-resets and seeds; a model trained on it
computes the same floats. Failures name their cause as :class:`~sb3_cherry.common.vec_env.subproc_vec_env.
CherrySubprocVecEnv`'s do: an env's exception is re-raised here with the worker's traceback, a worker that dies raises
:class:`~sb3_cherry.common.vec_env.subproc_vec_env.WorkerDiedError`, and one that hangs past ``step_timeout`` raises
:class:`~sb3_cherry.common.vec_env.subproc_vec_env.WorkerTimeoutError` (this process's own group is stepped directly:
no timeout applies to it).
"""

import itertools
import math
import multiprocessing as mp
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import (
    CloudpickleWrapper,
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)
from stable_baselines3.common.vec_env.util import dict_to_obs, obs_space_info

from sb3_cherry.common.vec_env.dummy_vec_env import CherryDummyVecEnv
from sb3_cherry.common.vec_env.subproc_vec_env import _CheckedRemote, _EnvFailure, terminate_workers


def available_cores() -> int:
    """:return: the cores this process may run on (its CPU affinity where the OS tells it, else the CPU count)"""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers(n_envs: int) -> int:
    """
    Worker processes :class:`CherryParallelVecEnv` starts by default: one per core beyond this process's, at most one
    per env beyond the first group's.

    :param n_envs: number of envs
    :return: ``min(cores - 1, n_envs - 1)``, at least 1
    """
    return max(1, min(available_cores() - 1, n_envs - 1))


def _group_worker(remote: Any, parent_remote: Any, env_fns: CloudpickleWrapper) -> None:
    """
    A worker's loop: a ``CherryDummyVecEnv`` of its group answers the commands; an exception (also one pickling the
    answer) is sent back as an :class:`_EnvFailure`, which the main process raises. A ``step`` answer carries the reset
    infos of the envs it reset (``DummyVecEnv`` updates ``reset_infos`` on an auto-reset).
    """
    parent_remote.close()
    try:
        venv = CherryDummyVecEnv(env_fns.var)
    except Exception as error:
        remote.send(_EnvFailure("the env constructor", error))
        remote.close()
        return
    remote.send((venv.observation_space, venv.action_space))
    while True:
        try:
            command, data = remote.recv()
        except (EOFError, OSError):  # the main process is gone
            break
        if command == "close":
            venv.close()
            remote.close()
            break
        try:
            if command == "step":
                venv.step_async(data)
                obs, rewards, dones, infos = venv.step_wait()
                answer: Any = (obs, rewards, dones, infos, {int(i): venv.reset_infos[i] for i in np.flatnonzero(dones)})
            elif command == "reset":
                seeds, options = data
                venv._seeds, venv._options = list(seeds), list(options)
                answer = (venv.reset(), venv.reset_infos)
            elif command == "get_attr":
                answer = venv.get_attr(*data)
            elif command == "set_attr":
                venv.set_attr(*data)
                answer = [None] * len(data[2])
            elif command == "env_method":
                name, args, kwargs, indices = data
                answer = venv.env_method(name, *args, indices=indices, **kwargs)
            elif command == "env_is_wrapped":
                answer = venv.env_is_wrapped(*data)
            elif command == "get_images":
                answer = venv.get_images()
            else:
                raise NotImplementedError(f"unknown command {command!r}")
        except Exception as error:
            answer = _EnvFailure(_label(command, data), error)
        try:
            remote.send(answer)
        except Exception as error:  # an answer that does not pickle (pickled before any byte is sent)
            remote.send(_EnvFailure(_label(command, data), error))


def _label(command: str, data: Any) -> str:
    """How an error names a worker command: ``step()``, ``get_attr('name')``, ..."""
    named = command in ("get_attr", "set_attr", "env_method") and isinstance(data, tuple)
    return f"{command}({data[0]!r})" if named else f"{command}()"


class CherryParallelVecEnv(VecEnv):
    """
    The envs of ``env_fns`` in contiguous groups stepped at the same time: the first in this process, each other one
    in a worker process (each group a ``CherryDummyVecEnv``). Returns what one ``DummyVecEnv`` of the same envs
    returns (same values, order, auto-resets and seeds).

    :param env_fns: functions creating the envs (at least 2)
    :param n_workers: worker processes (``None``: one per core beyond this process's, see :func:`default_workers`);
        the envs are split into ``n_workers + 1`` groups of sizes differing by at most one
    :param start_method: multiprocessing start method (``None``: ``forkserver`` where available, else ``spawn``, as
        SB3's ``SubprocVecEnv``; ``fork`` starts faster but is not safe with threads)
    :param step_timeout: seconds to wait for each worker's answer (``None``: forever, as SB3); this process's group
        is stepped directly, without a timeout
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        n_workers: int | None = None,
        start_method: str | None = None,
        step_timeout: float | None = None,
    ):
        env_fns = list(env_fns)
        if len(env_fns) < 2:
            raise ValueError(
                f"CherryParallelVecEnv steps groups of envs in parallel and needs at least 2 envs, got {len(env_fns)}: "
                "use CherryDummyVecEnv for one env."
            )
        if n_workers is None:
            n_workers = default_workers(len(env_fns))
        if isinstance(n_workers, np.integer):
            n_workers = int(n_workers)
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or not 1 <= n_workers < len(env_fns):
            raise ValueError(f"n_workers must be an int from 1 to {len(env_fns) - 1} (n_envs - 1), got {n_workers!r}.")
        if step_timeout is not None and (
            isinstance(step_timeout, bool) or not isinstance(step_timeout, int | float) or not 0 < step_timeout < math.inf
        ):
            raise ValueError(f"step_timeout must be a number of seconds > 0 (or None to wait forever), got {step_timeout!r}.")
        #: seconds to wait for an answer (None: forever)
        self.step_timeout = step_timeout
        #: index of the worker whose failure left the pipes out of step (None: usable)
        self.broken: int | None = None
        self.waiting = False
        self.closed = False
        bounds = np.linspace(0, len(env_fns), n_workers + 2).astype(int)
        #: env index ranges of the groups: this process's first, then one per worker
        self.groups = [range(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        context = mp.get_context(start_method)
        self.processes: list[Any] = []
        self.remotes: list[_CheckedRemote] = []
        for worker, group in enumerate(self.groups[1:]):
            remote, work_remote = context.Pipe()
            fns = CloudpickleWrapper([env_fns[i] for i in group])
            process = context.Process(target=_group_worker, args=(work_remote, remote, fns), daemon=True)  # type: ignore[attr-defined]
            process.start()
            work_remote.close()
            self.processes.append(process)
            envs = f"env(s) {group.start}-{group.stop - 1} of a CherryParallelVecEnv"
            label = f"CherryParallelVecEnv worker {worker} (envs {group.start}-{group.stop - 1})"
            self.remotes.append(_CheckedRemote(remote, worker, process, self, label=label, envs=envs))
            self.remotes[-1].pending = 1  # its spaces, sent when its envs are built
        try:
            self.local = CherryDummyVecEnv([env_fns[i] for i in self.groups[0]])
            self.step_timeout = None  # (building the envs, and importing their modules in a new process, takes time)
            for checked in self.remotes:
                checked.command = "the env constructor"
                checked.recv()
        except BaseException:
            terminate_workers(self.processes, self.remotes)
            if hasattr(self, "local"):
                self.local.close()
            raise
        self.step_timeout = step_timeout
        super().__init__(len(env_fns), self.local.observation_space, self.local.action_space)
        self.metadata = self.local.metadata  # (the envs' own: render_fps, render_modes; as DummyVecEnv)
        self._local_actions: np.ndarray | None = None
        self._obs_keys = obs_space_info(self.observation_space)[0]

    def step_async(self, actions: np.ndarray) -> None:
        """
        Send each worker its group's actions (they start stepping); this process's group steps in :meth:`step_wait`.

        :param actions: one action per env
        """
        self._check_open()
        for checked, group in zip(self.remotes, self.groups[1:], strict=True):
            checked.send(("step", actions[group.start : group.stop]))
        self._local_actions = actions[self.groups[0].start : self.groups[0].stop]
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        """
        Step this process's group, then read the workers' answers.

        :return: observations, rewards, dones and infos of all envs, in env order
        """
        if not self.waiting:
            raise RuntimeError("step_wait() without step_async(): call step_async(actions) first (or step(actions)).")
        try:
            self.local.step_async(self._local_actions)  # type: ignore[arg-type]
            local = self.local.step_wait()
        except BaseException:
            self._broken_here()
            raise
        answers = [checked.recv() for checked in self.remotes]
        self.waiting = False
        for i in np.flatnonzero(local[2]):  # the envs reset by this step, as DummyVecEnv records them
            self.reset_infos[int(i)] = self.local.reset_infos[i]
        for group, answer in zip(self.groups[1:], answers, strict=True):
            for i, info in answer[4].items():
                self.reset_infos[group.start + i] = info
        obs, rewards, dones, infos = zip(local, *(answer[:4] for answer in answers), strict=True)
        return self._concat_obs(obs), np.concatenate(rewards), np.concatenate(dones), [i for part in infos for i in part]

    def reset(self) -> VecEnvObs:
        """
        Reset every env, with the seeds and options set by ``seed`` / ``set_options`` (then cleared, as SB3's VecEnvs).

        :return: the first observations
        """
        self._check_open()
        for checked, group in zip(self.remotes, self.groups[1:], strict=True):
            checked.send(("reset", ([self._seeds[i] for i in group], [self._options[i] for i in group])))
        first = self.groups[0]
        self.local._seeds = [self._seeds[i] for i in first]
        self.local._options = [self._options[i] for i in first]
        try:
            local = (self.local.reset(), self.local.reset_infos)
        except BaseException:
            self._broken_here()
            raise
        results = [local, *(checked.recv() for checked in self.remotes)]
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [info for _, infos in results for info in infos]
        return self._concat_obs([obs for obs, _ in results])

    def _concat_obs(self, parts: Sequence[VecEnvObs]) -> VecEnvObs:
        """The groups' observations (arrays, or dicts / tuples of arrays) as one batch, in env order."""
        if isinstance(parts[0], np.ndarray):
            return np.concatenate(parts)  # type: ignore[arg-type]
        as_dicts: list[dict[Any, np.ndarray]] = [
            dict(part) if isinstance(part, dict) else dict(enumerate(part)) for part in parts
        ]
        joined = OrderedDict((k, np.concatenate([d[k] for d in as_dicts])) for k in self._obs_keys)  # (as DummyVecEnv's)
        return dict_to_obs(self.observation_space, joined)

    def close(self) -> None:
        """
        Close this process's envs and the workers (after a failure, the workers still running are terminated; a step
        still pending is waited for, as SB3's ``SubprocVecEnv`` does).
        """
        if self.closed:
            return
        if self.waiting and self.broken is None:
            for checked in self.remotes:
                try:
                    checked.recv()
                except Exception:
                    pass
        for checked in self.remotes:
            try:
                if self.broken is None:
                    checked.remote.send(("close", None))
            except OSError:
                pass
        for process in self.processes:
            process.join(timeout=5.0 if self.broken is None else 0.0)
        terminate_workers(self.processes, self.remotes)
        self.local.close()
        self.closed = True

    def _check_open(self) -> None:
        """:raises RuntimeError: the VecEnv was closed (its workers are gone)"""
        if self.closed:
            raise RuntimeError("This CherryParallelVecEnv is closed: create a new one.")

    def _broken_here(self) -> None:
        """This process's group failed in ``step`` / ``reset``: the envs are out of step, the VecEnv unusable."""
        self.broken = -1
        self.waiting = False

    def _split(self, indices: VecEnvIndices) -> list[tuple[int, list[int], list[int]]]:
        """
        ``(group, positions in the answer, indices within the group)`` of each group holding some of ``indices``
        (negative indices count from the end and others out of range raise ``IndexError``, as ``DummyVecEnv``'s list).
        """
        n = self.num_envs
        targets = []
        for index in self._get_indices(indices):
            if not -n <= int(index) < n:
                raise IndexError(f"env index {index} is out of range for {n} envs.")
            targets.append(int(index) % n)
        out = []
        for g, group in enumerate(self.groups):
            positions = [p for p, i in enumerate(targets) if i in group]
            if positions:
                out.append((g, positions, [targets[p] - group.start for p in positions]))
        return out

    def _call(
        self,
        command: str,
        data: Callable[[list[int]], Any],
        indices: VecEnvIndices,
        local: Callable[[list[int]], Sequence[Any]],
    ) -> list[Any]:
        """
        Run ``command`` on the groups holding ``indices``: the workers' share is sent first, this process's is
        computed, then every worker's answer is read, also after a failure (the pipes stay in step and the VecEnv
        usable), and the first failure in env order is raised; else the answers are put in the order of ``indices``.
        """
        self._check_open()
        parts = self._split(indices)
        sent: list[int] = []
        try:
            for g, _, inner in parts:
                if g > 0:
                    self.remotes[g - 1].send((command, data(inner)))
                    sent.append(g)
        except Exception:  # e.g. a value that does not pickle: the workers already sent to still answer
            for g in sent:
                self.remotes[g - 1].receive()
            raise
        results: dict[int, Any] = {}
        error: Exception | None = None
        if parts and parts[0][0] == 0:
            try:
                results[0] = local(parts[0][2])
            except Exception as exc:
                error = exc
        for g, _, _ in parts:
            if g > 0:
                results[g] = self.remotes[g - 1].receive()  # (a dead or hung worker raises here: the VecEnv is broken)
        if error is not None:
            raise error
        answers: list[Any] = [None] * sum(len(p) for _, p, _ in parts)
        for g, positions, _ in parts:
            values = results[g] if g == 0 else self.remotes[g - 1].check(results[g])
            for position, value in zip(positions, values, strict=True):
                answers[position] = value
        return answers

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """
        The attribute of each env (``DummyVecEnv.get_attr``: ``env.get_wrapper_attr``).

        :param attr_name: the attribute
        :param indices: the envs (None: all)
        :return: the values, in the order of ``indices``
        """
        return self._call(
            "get_attr", lambda inner: (attr_name, inner), indices, lambda inner: self.local.get_attr(attr_name, inner)
        )

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """
        Set the attribute on each env (``DummyVecEnv.set_attr``).

        :param attr_name: the attribute
        :param value: its new value
        :param indices: the envs (None: all)
        """

        def local(inner: list[int]) -> list[None]:
            self.local.set_attr(attr_name, value, inner)
            return [None] * len(inner)

        self._call("set_attr", lambda inner: (attr_name, value, inner), indices, local)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """
        Call a method of each env (``DummyVecEnv.env_method``).

        :param method_name: the method
        :param method_args: its positional arguments
        :param indices: the envs (None: all)
        :param method_kwargs: its keyword arguments
        :return: the results, in the order of ``indices``
        """
        return self._call(
            "env_method",
            lambda inner: (method_name, method_args, method_kwargs, inner),
            indices,
            lambda inner: self.local.env_method(method_name, *method_args, indices=inner, **method_kwargs),
        )

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """
        Whether each env is wrapped in ``wrapper_class``.

        :param wrapper_class: the wrapper class
        :param indices: the envs (None: all)
        :return: one flag per env, in the order of ``indices``
        """
        return self._call(
            "env_is_wrapped",
            lambda inner: (wrapper_class, inner),
            indices,
            lambda inner: self.local.env_is_wrapped(wrapper_class, inner),
        )

    def get_images(self) -> Sequence[np.ndarray | None]:
        """:return: each env's ``render()`` image, in env order"""
        return self._call("get_images", lambda inner: None, None, lambda inner: list(self.local.get_images()))


__all__ = ["CherryParallelVecEnv", "available_cores", "default_workers"]
