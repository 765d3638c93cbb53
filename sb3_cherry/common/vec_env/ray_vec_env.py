"""
``RayVecEnv``: a Stable-Baselines3 ``VecEnv`` whose environments live in Ray actors, on this machine or on a Ray cluster.

Ray is an optional dependency (``pip install "sb3_cherry[distributed]"``): it is only imported when a ``RayVecEnv`` is
constructed, so importing this module does not need it.
"""

import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.subproc_vec_env import _stack_obs

if TYPE_CHECKING:  # ray is optional: imported where used
    from ray.actor import ActorClass

_INSTALL_HINT = 'RayVecEnv needs Ray, an optional dependency: pip install "sb3_cherry[distributed]" (or pip install ray).'
# Upper bound (seconds) on the graceful ``env.close()`` calls made by ``RayVecEnv.close()`` before the actors are killed
_CLOSE_TIMEOUT = 10.0
# Lower bound (seconds) on the wait for an actor to start (construction, restarts): a new worker process may need time to
# be scheduled and to import the environment's packages
_MIN_STARTUP_TIMEOUT = 60.0
# Shared by all RayVecEnv instances: Ray is shut down when the last open RayVecEnv is closed, and only if a RayVecEnv
# started it (a Ray session started by the user is never shut down).
_RAY_SESSION = {"started_here": False, "n_open": 0}


@dataclass
class _WorkerFailure:
    """A worker actor that died or did not answer in time (as opposed to an exception raised by an environment)."""

    actor_idx: int
    reason: str
    error: BaseException | None = None


def _stack_as_space(obs: Sequence[Any], space: gym.spaces.Space) -> VecEnvObs:
    """
    The envs' observations stacked (SubprocVecEnv's ``_stack_obs``) in the observation space's dtypes, as DummyVecEnv's
    buffers hold them (an env may return float64 for a float32 ``Box``).

    :param obs: one observation per env
    :param space: the observation space
    :return: the batch
    """
    stacked = _stack_obs(obs, space)  # type: ignore[arg-type]
    if isinstance(space, gym.spaces.Dict):
        assert isinstance(stacked, dict)
        return {key: np.asarray(value, dtype=space[key].dtype) for key, value in stacked.items()}
    if isinstance(space, gym.spaces.Tuple):
        assert isinstance(stacked, tuple)
        return tuple(np.asarray(value, dtype=sub.dtype) for value, sub in zip(stacked, space.spaces, strict=True))
    assert isinstance(stacked, np.ndarray)
    return np.asarray(stacked, dtype=space.dtype)


def _writable(value: Any) -> Any:
    """
    ``value`` with its read-only NumPy arrays copied (in dicts, tuples and lists too): Ray hands arrays over without
    a copy, read-only, where SB3's VecEnvs give envs their actions and users their terminal observations writable.

    :param value: an action, observation, ...
    :return: the same value, or a writable copy
    """
    if isinstance(value, np.ndarray):
        return value if value.flags.writeable else value.copy()
    if isinstance(value, dict):
        return {key: _writable(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_writable(item) for item in value)
    return value


def _summarize(err: BaseException) -> str:
    """
    :param err: an error reported by Ray
    :return: its type and first line, plus its last line (e.g. the exception raised while creating an env) if different
    """
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    # Drop Ray's "(pid=..., ip=..., actor_id=..., repr=...)" details
    summary = f"{type(err).__name__}: {re.sub(r' ?[(]pid=[^)]*[)]', '', lines[0])}"
    return summary if len(lines) == 1 else f"{summary} ... {lines[-1]}"


@cache
def _worker_class() -> type:  # noqa: C901
    """
    Body of the Ray actor holding a batch of environments.

    It is defined inside a function so that cloudpickle ships it *by value*: worker processes then import neither
    ``sb3_cherry`` nor SB3/torch (faster start-up, less memory per worker), and the nodes of a cluster only need the
    packages that the ``env_fns`` themselves use.

    :return: the (undecorated) actor class
    """

    class _EnvWorker:
        def __init__(self, env_fns: list[Callable[[], gym.Env]], env_indices: list[int]):
            self.env_indices = list(env_indices)
            self.envs = [self._patch(env_fn()) for env_fn in env_fns]
            # Like SubprocVecEnv's worker: the info of the last reset (explicit or automatic) of each env
            self.reset_infos: list[dict[str, Any]] = [{} for _ in self.envs]

        @staticmethod
        def _patch(env: Any) -> gym.Env:
            if isinstance(env, gym.Env):
                return env
            # Old gym API: let SB3 convert it (only then is SB3 imported in the worker)
            from stable_baselines3.common.vec_env.patch_gym import _patch_env

            return _patch_env(env)

        def _annotate(self, err: BaseException, local_idx: int) -> None:
            # Python >= 3.11: the note shows up in the traceback Ray re-raises on the driver
            if hasattr(err, "add_note"):
                err.add_note(f"(raised by env {self.env_indices[local_idx]} of a RayVecEnv)")

        def get_spaces(self) -> tuple[gym.Space, gym.Space]:
            return self.envs[0].observation_space, self.envs[0].action_space

        def step(self, actions: Sequence[Any]) -> list[tuple[Any, Any, bool, dict[str, Any], dict[str, Any]]]:
            results = []
            for j, (env, action) in enumerate(zip(self.envs, actions, strict=True)):
                try:
                    observation, reward, terminated, truncated, info = env.step(_writable(action))
                    # convert to SB3 VecEnv api (as SubprocVecEnv's worker)
                    done = terminated or truncated
                    info["TimeLimit.truncated"] = truncated and not terminated
                    if done:
                        # save final observation where user can get it, then reset
                        info["terminal_observation"] = observation
                        observation, self.reset_infos[j] = env.reset()
                except Exception as err:
                    self._annotate(err, j)
                    raise
                results.append((observation, reward, done, info, self.reset_infos[j]))
            return results

        def reset(self, seeds: list[int | None], options: list[dict[str, Any]]) -> list[tuple[Any, dict[str, Any]]]:
            results = []
            for j, (env, seed, env_options) in enumerate(zip(self.envs, seeds, options, strict=True)):
                maybe_options = {"options": env_options} if env_options else {}
                try:
                    observation, self.reset_infos[j] = env.reset(seed=seed, **maybe_options)
                except Exception as err:
                    self._annotate(err, j)
                    raise
                results.append((observation, self.reset_infos[j]))
            return results

        def render(self, local_indices: list[int]) -> list[Any]:
            return [self.envs[j].render() for j in local_indices]

        def get_attr(self, local_indices: list[int], attr_name: str) -> list[Any]:
            return [self.envs[j].get_wrapper_attr(attr_name) for j in local_indices]

        def has_attr(self, local_indices: list[int], attr_name: str) -> list[bool]:
            found = []
            for j in local_indices:
                try:
                    self.envs[j].get_wrapper_attr(attr_name)
                    found.append(True)
                except AttributeError:
                    found.append(False)
            return found

        def set_attr(self, local_indices: list[int], attr_name: str, value: Any) -> list[None]:
            for j in local_indices:
                setattr(self.envs[j], attr_name, value)
            return [None for _ in local_indices]

        def env_method(
            self, local_indices: list[int], method_name: str, method_args: tuple, method_kwargs: dict[str, Any]
        ) -> list[Any]:
            return [self.envs[j].get_wrapper_attr(method_name)(*method_args, **method_kwargs) for j in local_indices]

        def is_wrapped(self, local_indices: list[int], wrapper_class: type[gym.Wrapper]) -> list[bool]:
            from stable_baselines3.common.env_util import is_wrapped

            return [is_wrapped(self.envs[j], wrapper_class) for j in local_indices]

        def close(self) -> None:
            for env in self.envs:
                env.close()

    return _EnvWorker


class RayVecEnv(VecEnv):
    """
    Vectorized environment whose environments live in Ray actors (worker processes), on this machine or on a Ray
    cluster. It has the semantics of ``SubprocVecEnv`` (automatic reset on ``done`` with ``terminal_observation`` and
    ``TimeLimit.truncated`` in the info dict, ``reset_infos``, seeds and options passed at the next ``reset()``) and can
    be used by any SB3 algorithm.

    Each actor holds ``envs_per_actor`` consecutive environments: a step is one remote call per actor and the results
    are gathered with one ``ray.get``, so batching several environments per actor cuts the RPC overhead.
    The ``env_fns`` are pickled (cloudpickle) and shipped once, at construction, through the Ray object store.

    Ray session: if Ray is not initialized, ``ray.init(address=address, **ray_init_kwargs)`` is called:
    ``address=None`` starts a local Ray instance, ``address="auto"`` connects to the cluster running on this node
    (``ray start --head``), ``address="ray://<head>:10001"`` connects through Ray Client. Ray is then shut down when the
    last open ``RayVecEnv`` is closed. If Ray is already initialized, the session is reused (``address`` and
    ``ray_init_kwargs`` are ignored) and never shut down by ``RayVecEnv``.
    On a cluster, the nodes need the packages the ``env_fns`` use (gymnasium, the environment's package): install them
    there or pass a ``runtime_env`` in ``ray_init_kwargs``.

    Failures: a call that does not complete within ``step_timeout`` seconds, or whose actor dies (``RayActorError``:
    process killed, node lost, out of memory), never hangs:

    - with no restart left (``max_restarts=0``, or all used for that actor) a ``RuntimeError`` is raised that names
      the actor, its env indices and the cause;
    - otherwise (at most ``max_restarts`` times per actor) the actor is killed and replaced, a ``UserWarning`` is
      issued, its environments are recreated from their ``env_fns`` and reset (with no seed: a restarted env does not
      replay its seeded episodes), and the interrupted ``step()`` reports them as ended episodes: ``done=True``,
      reward ``0.0``, info ``{"TimeLimit.truncated": False, "worker_restarted": True, "terminal_observation": <the last
      observation received from that env>}`` (the real last transition was lost), and the new reset observation. On-
      policy algorithms therefore do not bootstrap the lost episode; off-policy ones store one terminal transition with
      zero reward (filter on ``"worker_restarted"`` if that matters). If the failure happens during ``reset()``, the
      restarted environments are reset with the requested seeds and options and their ``reset_infos`` get
      ``"worker_restarted": True``. Failures in ``get_attr``, ``set_attr``, ``env_method``, ``env_is_wrapped`` and
      ``get_images`` raise a ``RuntimeError`` (no restart; the next ``step()`` or ``reset()`` restarts the actor).

    An exception raised by an environment itself (e.g. a bug in ``env.step``) is not a worker failure: it is re-raised
    as is (Ray's ``RayTaskError`` is also an instance of the original exception class), with the remote traceback (and,
    on Python >= 3.11, a note naming the env index), and nothing is restarted.

    :param env_fns: Functions that create the environments (each call must return a new environment)
    :param address: Address of the Ray cluster, used only if Ray is not initialized yet: ``None`` for a local instance,
        ``"auto"`` for the cluster running on this node, ``"ray://<head>:10001"`` for Ray Client
    :param envs_per_actor: Number of environments held (and stepped sequentially) by each actor
    :param num_cpus_per_actor: CPUs reserved by each actor (fractions allowed). Actors beyond the cluster's capacity
        cannot be scheduled: start-up then fails with a timeout (lower this value or raise ``envs_per_actor``)
    :param ray_init_kwargs: Extra keyword arguments for ``ray.init()`` (e.g. ``num_cpus``, ``runtime_env``), used only if
        Ray is not initialized yet
    :param max_restarts: Number of times each actor may be restarted after dying or timing out (0: never, raise instead)
    :param step_timeout: Timeout in seconds for every call to the workers (``step``, ``reset``, attribute access); actor
        start-up (construction, restarts) waits ``max(step_timeout, 60)`` seconds. ``None`` waits forever (a dead actor
        is still reported at once)
    """

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env]],
        address: str | None = None,
        envs_per_actor: int = 1,
        num_cpus_per_actor: float = 1,
        ray_init_kwargs: dict[str, Any] | None = None,
        max_restarts: int = 1,
        step_timeout: float | None = 60.0,
    ):
        try:
            import ray
        except ImportError as err:
            raise ImportError(_INSTALL_HINT) from err

        if len(env_fns) == 0:
            raise ValueError("RayVecEnv needs at least one env_fn.")
        if envs_per_actor < 1:
            raise ValueError(f"envs_per_actor must be >= 1, got {envs_per_actor}.")
        if num_cpus_per_actor < 0:
            raise ValueError(f"num_cpus_per_actor must be >= 0, got {num_cpus_per_actor}.")
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts}.")
        if step_timeout is not None and step_timeout <= 0:
            raise ValueError(f"step_timeout must be > 0 seconds (or None to wait forever), got {step_timeout}.")

        self.waiting = False
        self.closed = False
        self.envs_per_actor = envs_per_actor
        self.num_cpus_per_actor = num_cpus_per_actor
        self.max_restarts = max_restarts
        self.step_timeout = step_timeout
        self._startup_timeout = None if step_timeout is None else max(step_timeout, _MIN_STARTUP_TIMEOUT)
        n_envs = len(env_fns)
        # Env indices held by each actor (consecutive blocks), and (actor, position in actor) of each env
        self.actor_env_indices = [
            list(range(start, min(start + envs_per_actor, n_envs))) for start in range(0, n_envs, envs_per_actor)
        ]
        self._env_location = [(k, j) for k, indices in enumerate(self.actor_env_indices) for j in range(len(indices))]
        # Number of restarts of each actor so far
        self.n_restarts = [0 for _ in self.actor_env_indices]
        # Ray actor handles, one per block of ``actor_env_indices``
        self.actors: list[Any] = []
        self._pending: list[Any] = []
        # Last observation of each env, reported as ``terminal_observation`` when its actor had to be restarted
        self._last_obs: list[Any] = [None for _ in range(n_envs)]

        if not ray.is_initialized():
            ray.init(address=address, **(ray_init_kwargs or {}))
            _RAY_SESSION["started_here"] = True
        _RAY_SESSION["n_open"] += 1
        try:
            self._actor_class: ActorClass[Any] = ray.remote(_worker_class())
            # Ship each actor's env_fns once: restarted actors get them again from the object store
            self._env_fns_refs = [ray.put([env_fns[i] for i in indices]) for indices in self.actor_env_indices]
            self.actors = [self._start_actor(k) for k in range(len(self.actor_env_indices))]
            spaces_per_actor = self._gather(
                [actor.get_spaces.remote() for actor in self.actors], timeout=self._startup_timeout
            )
            for result in spaces_per_actor:
                if isinstance(result, _WorkerFailure):
                    raise self._failure_error(result, "start-up")
            observation_space, action_space = spaces_per_actor[0]
            super().__init__(n_envs, observation_space, action_space)
            self.metadata = self.get_attr("metadata", [0])[0]  # the env's (render_fps for videos), as DummyVecEnv
        except BaseException:
            self.close()
            raise

    def _start_actor(self, actor_idx: int) -> Any:
        """
        Create the actor holding the environments of block ``actor_idx`` (does not wait for it to be ready).

        :param actor_idx: index of the actor
        :return: the actor handle
        """
        return self._actor_class.options(num_cpus=self.num_cpus_per_actor, max_restarts=0).remote(
            self._env_fns_refs[actor_idx], self.actor_env_indices[actor_idx]
        )

    def _describe(self, actor_idx: int) -> str:
        indices = self.actor_env_indices[actor_idx]
        envs = f"env {indices[0]}" if len(indices) == 1 else f"envs {indices}"
        return f"worker actor {actor_idx} (holding {envs})"

    def _failure_error(self, failure: _WorkerFailure, what: str, detail: str = "") -> RuntimeError:
        """
        :param failure: the failed worker
        :param what: the operation that failed
        :param detail: appended to the message
        :return: a ``RuntimeError`` naming the actor, its envs and the cause (chained to the Ray error, if any)
        """
        message = f"RayVecEnv {what} failed: {self._describe(failure.actor_idx)} {failure.reason}.{detail}"
        error = RuntimeError(message)
        error.__cause__ = failure.error
        return error

    def _gather(self, refs: list[Any], actor_ids: Sequence[int] | None = None, timeout: float | None = -1.0) -> list[Any]:
        """
        Wait (at most ``timeout`` seconds) for one result per actor.

        :param refs: one object ref per actor
        :param actor_ids: the actor of each ref (default: ``refs[k]`` comes from actor ``k``)
        :param timeout: in seconds, ``None`` for no timeout; default: ``step_timeout``
        :return: the results, with a ``_WorkerFailure`` in place of those whose actor died or did not answer in time.
            An exception raised by an environment is re-raised.
        """
        import ray
        from ray.exceptions import RayError, RayTaskError

        if actor_ids is None:
            actor_ids = range(len(refs))
        if timeout is not None and timeout < 0:
            timeout = self.step_timeout
        start = time.monotonic()
        try:
            # Fast path: a single ray.get
            return ray.get(refs, timeout=timeout)
        except RayError:
            pass
        # An actor died, timed out or an env raised: sort them out, waiting for the other actors until the deadline
        # (every ready result is fetched, so that Ray does not log the other errors as unhandled)
        remaining = None if timeout is None else max(0.0, start + timeout - time.monotonic())
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=remaining)
        ready_refs = set(ready)
        results: list[Any] = []
        env_error: RayTaskError | None = None
        for ref, actor_idx in zip(refs, actor_ids, strict=True):
            if ref not in ready_refs:
                name = "step_timeout" if timeout == self.step_timeout else "the start-up timeout"
                results.append(_WorkerFailure(actor_idx, f"did not answer within {name}={timeout} s"))
                continue
            try:
                results.append(ray.get(ref))
            except RayTaskError as err:
                # An exception raised by an environment: re-raised below, after the other results are fetched
                env_error = env_error or err
                results.append(None)
            except RayError as err:
                results.append(_WorkerFailure(actor_idx, f"died ({_summarize(err)})", err))
        if env_error is not None:
            raise env_error
        return results

    def _restart(
        self, failure: _WorkerFailure, what: str, seeds: list[int | None], options: list[dict[str, Any]]
    ) -> list[tuple[Any, dict[str, Any]]]:
        """
        Replace a failed actor: kill it, start a new one (recreating its envs from their env_fns) and reset its envs.

        :param failure: the failed worker
        :param what: the operation that failed
        :param seeds: seeds for the reset of the actor's envs
        :param options: options for the reset of the actor's envs
        :return: ``(observation, reset_info)`` of each env of the actor
        """
        import ray

        actor_idx = failure.actor_idx
        if self.n_restarts[actor_idx] >= self.max_restarts:
            raise self._failure_error(
                failure,
                what,
                f" Not restarting it: max_restarts={self.max_restarts} (restarts so far: {self.n_restarts[actor_idx]}).",
            )
        self.n_restarts[actor_idx] += 1
        warnings.warn(
            f"RayVecEnv {what}: {self._describe(actor_idx)} {failure.reason}; restarting it "
            f"(restart {self.n_restarts[actor_idx]}/{self.max_restarts}): its environments are recreated and reset.",
            stacklevel=3,
        )
        try:
            ray.kill(self.actors[actor_idx], no_restart=True)
        except Exception:  # already dead or unreachable
            pass
        self.actors[actor_idx] = self._start_actor(actor_idx)
        result = self._gather([self.actors[actor_idx].reset.remote(seeds, options)], [actor_idx], self._startup_timeout)[0]
        if isinstance(result, _WorkerFailure):
            raise self._failure_error(result, f"restart (after a failed {what})")
        return result

    def step_async(self, actions: np.ndarray) -> None:
        if len(actions) != self.num_envs:
            raise ValueError(f"RayVecEnv.step_async expects one action per env ({self.num_envs}), got {len(actions)}.")
        # ``actions`` is indexed by env on its first axis: a NumPy array, or a list/tuple of per-env actions
        # (e.g. tuples for a Tuple action space). Each actor gets the slice of its envs in one call.
        self._pending = [
            actor.step.remote(actions[indices[0] : indices[-1] + 1])
            for actor, indices in zip(self.actors, self.actor_env_indices, strict=True)
        ]
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        if not self.waiting:
            raise RuntimeError("RayVecEnv.step_wait() called without a pending step_async().")
        try:
            results = self._gather(self._pending)
        finally:
            self._pending = []
            self.waiting = False
        flat_results = []
        for actor_idx, result in enumerate(results):
            if isinstance(result, _WorkerFailure):
                indices = self.actor_env_indices[actor_idx]
                reset_results = self._restart(result, "step", [None for _ in indices], [{} for _ in indices])
                result = []
                for env_idx, (observation, reset_info) in zip(indices, reset_results, strict=True):
                    info: dict[str, Any] = {"TimeLimit.truncated": False, "worker_restarted": True}
                    if self._last_obs[env_idx] is not None:
                        info["terminal_observation"] = self._last_obs[env_idx]  # made writable below, with the others
                    result.append((observation, 0.0, True, info, reset_info))
            flat_results.extend(result)
        obs, rews, dones, infos, reset_infos = zip(*flat_results, strict=True)
        for info in infos:
            if "terminal_observation" in info:
                info["terminal_observation"] = _writable(info["terminal_observation"])
        self.reset_infos = list(reset_infos)
        self._last_obs = list(obs)
        rewards = np.asarray(rews, dtype=np.float32)  # DummyVecEnv's reward buffer (SubprocVecEnv keeps float64)
        return _stack_as_space(obs, self.observation_space), rewards, np.stack(dones), list(infos)

    def reset(self) -> VecEnvObs:
        # A pending step is simply dropped: each actor runs its calls in order, so the reset comes after it
        self._pending = []
        self.waiting = False
        seeds = [[self._seeds[i] for i in indices] for indices in self.actor_env_indices]
        options = [[self._options[i] for i in indices] for indices in self.actor_env_indices]
        refs = [actor.reset.remote(seeds[k], options[k]) for k, actor in enumerate(self.actors)]
        flat_results = []
        for actor_idx, result in enumerate(self._gather(refs)):
            if isinstance(result, _WorkerFailure):
                result = self._restart(result, "reset", seeds[actor_idx], options[actor_idx])
                result = [(observation, {**reset_info, "worker_restarted": True}) for observation, reset_info in result]
            flat_results.extend(result)
        obs, reset_infos = zip(*flat_results, strict=True)
        self.reset_infos = list(reset_infos)
        self._last_obs = list(obs)
        # Seeds and options are only used once
        self._reset_seeds()
        self._reset_options()
        return _stack_as_space(obs, self.observation_space)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._pending = []
        self.waiting = False
        import ray

        if ray.is_initialized() and self.actors:
            # Let the envs close gracefully (bounded), then kill the actors to release their resources
            refs = [actor.close.remote() for actor in self.actors]
            timeout = _CLOSE_TIMEOUT if self.step_timeout is None else min(self.step_timeout, _CLOSE_TIMEOUT)
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
            for ref in ready:
                try:
                    ray.get(ref)
                except Exception:  # an env failing to close, or a dead actor, must not prevent closing
                    pass
            for actor in self.actors:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # already dead or unreachable
                    pass
        self.actors = []
        _RAY_SESSION["n_open"] -= 1
        if _RAY_SESSION["n_open"] == 0 and _RAY_SESSION["started_here"]:
            _RAY_SESSION["started_here"] = False
            if ray.is_initialized():
                ray.shutdown()

    def _call_envs(self, method: str, indices: VecEnvIndices, *args: Any) -> list[Any]:
        """
        Call ``method`` of the actors holding the ``indices`` envs: one remote call per actor, results in ``indices`` order.

        :param method: name of the actor method (its first argument is the list of positions of the envs in the actor)
        :param indices: indices of the envs
        :param args: further arguments of the actor method
        :return: one result per index
        """
        if self.closed:
            raise RuntimeError(f"RayVecEnv.{method}: the RayVecEnv is closed.")
        locations = []
        for env_idx in self._get_indices(indices):
            env_idx = int(env_idx)
            if not -self.num_envs <= env_idx < self.num_envs:
                raise IndexError(f"Env index {env_idx} out of range for a RayVecEnv of {self.num_envs} envs.")
            locations.append(self._env_location[env_idx % self.num_envs])
        # each actor gets its envs' positions in the order asked, repeats included (env_method([0, 0]) calls the
        # method twice, as DummyVecEnv does)
        by_actor: dict[int, list[int]] = {}
        for actor_idx, local_idx in locations:
            by_actor.setdefault(actor_idx, []).append(local_idx)
        actor_ids = list(by_actor)
        refs = [getattr(self.actors[k], method).remote(by_actor[k], *args) for k in actor_ids]
        values = {}
        for actor_idx, result in zip(actor_ids, self._gather(refs, actor_ids), strict=True):
            if isinstance(result, _WorkerFailure):
                raise self._failure_error(result, method)
            values[actor_idx] = iter(result)
        return [next(values[actor_idx]) for actor_idx, _ in locations]

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            warnings.warn(
                f"The render mode is {self.render_mode}, but this method assumes it is `rgb_array` to obtain images."
            )
            return [None for _ in range(self.num_envs)]
        return self._call_envs("render", None)

    def has_attr(self, attr_name: str) -> bool:
        """Check if an attribute exists for a vectorized environment. (see base class)."""
        return all(self._call_envs("has_attr", None, attr_name))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Return attribute from vectorized environment (see base class)."""
        return self._call_envs("get_attr", indices, attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set attribute inside vectorized environments (see base class)."""
        self._call_envs("set_attr", indices, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call instance methods of vectorized environments."""
        return self._call_envs("env_method", indices, method_name, method_args, method_kwargs)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Check if worker environments are wrapped with a given wrapper"""
        return self._call_envs("is_wrapped", indices, wrapper_class)
