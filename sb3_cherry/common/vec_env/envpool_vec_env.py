"""
``EnvPoolVecEnv``: a Stable-Baselines3 ``VecEnv`` over an `EnvPool <https://github.com/sail-sg/envpool>`_ pool, the C++
implementations of the classic-control, Box2D, MuJoCo and Atari environments stepped by a thread pool.

EnvPool is an optional dependency (``pip install "sb3_cherry[envpool]"``, Python ≥ 3.11): it is only imported when an
``EnvPoolVecEnv`` is constructed.

Semantics are SB3's ``DummyVecEnv``'s: an environment whose episode ends is reset within the same ``step`` (EnvPool
itself resets on the *next* step), its last observation is in ``info["terminal_observation"]`` and
``info["TimeLimit.truncated"]`` tells a time-limit truncation from a termination (except that EnvPool reports an
episode that terminates on its last allowed step as truncated only, where gymnasium's ``TimeLimit`` sets both: SB3 then
bootstraps that terminal state; EnvPool's infos do not say otherwise). Episode statistics
(``info["episode"]``) come from SB3's ``VecMonitor`` (:func:`make_envpool_vec_env` adds it).

EnvPool's environments are ports, not gymnasium's code: their dynamics follow gymnasium's (from the same state,
CartPole, MountainCar, Acrobot, Hopper-v5, HalfCheetah-v5 and InvertedPendulum-v5 to float precision; Pendulum-v1
advances its angle with the unclipped velocity when the velocity hits its clip, as older gym did), but their random
streams differ, so a seed does not give gymnasium's episodes. Measured on this project's 2-core machine
(``benchmarks/results/envpool_step_rate.csv``, ``throughput_envpool.csv``), EnvPool pays off with many environments of
a costly simulator (32 BipedalWalker-v3: 2.5 times gymnasium's step rate on one thread, training 1.35 times as fast),
and costs with one cheap environment (one Hopper-v5: 0.75 times; each step is a hand-over to a worker thread); see
the performance guide.
"""

import functools
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnvWrapper, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

_INSTALL_HINT = (
    'EnvPoolVecEnv needs EnvPool, an optional dependency (Python >= 3.11): pip install "sb3_cherry[envpool]" '
    "(or pip install envpool)."
)


def _import_envpool() -> Any:
    """:return: the ``envpool`` module, or raise an ``ImportError`` that says how to install it"""
    try:
        import envpool
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return envpool


def _gymnasium_space(space: Any, env_id: str) -> spaces.Space:
    """
    :param space: EnvPool's observation or action space
    :param env_id: the environment (named in the error)
    :return: the same space as a gymnasium ``Box`` / ``Discrete`` (bounds kept in the space's own dtype)
    """
    if isinstance(space, spaces.Box):
        return spaces.Box(
            low=space.low.astype(space.dtype), high=space.high.astype(space.dtype), shape=space.shape, dtype=space.dtype
        )
    if isinstance(space, spaces.Discrete):
        return spaces.Discrete(int(space.n), start=int(space.start))
    raise ValueError(
        f"EnvPoolVecEnv supports Box and Discrete spaces; EnvPool's {env_id} has {space}. "
        "Use the gymnasium environment with a DummyVecEnv or SubprocVecEnv instead."
    )


def _registered_spaces(env_id: str) -> tuple[spaces.Space, spaces.Space] | None:
    """
    :param env_id: an environment id
    :return: the observation and action spaces of gymnasium's environment of that id, or None when gymnasium has none
        (or cannot make it here)
    """
    try:
        gym.spec(env_id)
        env = gym.make(env_id)
    except Exception:  # not registered, or a dependency of gymnasium's version is missing: EnvPool's spaces
        return None
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def _same_kind(reference: spaces.Space, own: spaces.Space, same_dtype: bool) -> bool:
    """Whether gymnasium's ``reference`` space can be declared for EnvPool's ``own`` (same type and shape)."""
    if isinstance(reference, spaces.Box) and isinstance(own, spaces.Box):
        return reference.shape == own.shape and (reference.dtype == own.dtype or not same_dtype)
    if isinstance(reference, spaces.Discrete) and isinstance(own, spaces.Discrete):
        return int(reference.n) == int(own.n) and int(reference.start) == int(own.start)
    return False


class EnvPoolVecEnv(VecEnv):
    """
    An EnvPool pool (synchronous: every ``step`` steps all environments) behind SB3's ``VecEnv`` API.

    :param env_id: EnvPool task id (``envpool.list_all_envs()``; e.g. ``"BipedalWalker-v3"``, ``"Hopper-v5"``)
    :param n_envs: number of environments
    :param seed: seed of environment 0 (environment ``i`` gets ``seed + i``, as ``make_vec_env``); ``None``: random
    :param num_threads: EnvPool worker threads; ``None``: EnvPool's default (one per environment, at most one per
        core). With 1, the simulation runs on one core, as a ``DummyVecEnv``.
    :param env_kwargs: further ``envpool.make`` arguments (e.g. ``max_episode_steps``)
    :param frame_skip: each ``step`` repeats the action this many times (fewer if the episode ends), summing the
        rewards, as rl_zoo3's ``FrameSkip`` wrapper
    """

    def __init__(
        self,
        env_id: str,
        n_envs: int = 1,
        seed: int | None = None,
        num_threads: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
        frame_skip: int = 1,
    ):
        envpool = _import_envpool()
        if env_id not in envpool.list_all_envs():
            raise ValueError(
                f"EnvPool has no environment {env_id!r} (envpool.list_all_envs() lists the {len(envpool.list_all_envs())} "
                "it has); use the gymnasium environment with a DummyVecEnv or SubprocVecEnv instead."
            )
        if n_envs < 1:
            raise ValueError(f"n_envs must be at least 1, got {n_envs}")
        if frame_skip < 1:
            raise ValueError(f"frame_skip must be at least 1, got {frame_skip}")
        self.frame_skip = int(frame_skip)
        self.env_id = env_id
        self._envpool = envpool
        self._num_threads = num_threads
        self._env_kwargs = dict(env_kwargs or {})
        self._seed = self._checked_seed(seed, n_envs)
        self._pool: Any = self._new_pool(n_envs)
        observation_space = _gymnasium_space(self._pool.observation_space, env_id)
        action_space = _gymnasium_space(self._pool.action_space, env_id)
        # EnvPool's ports declare some spaces differently from gymnasium's envs (BipedalWalker / LunarLander:
        # observation bounds [1.2e-38, 3.4e38]; MuJoCo v5: float64 actions): where gymnasium has the env, its spaces
        # are declared (same type and shape; observations in EnvPool's dtype), so that a model trained here loads onto
        # gymnasium's env and bound-reading wrappers see the real bounds; actions go to the pool in its own dtype
        self._pool_action_dtype = action_space.dtype if isinstance(action_space, spaces.Box) else None
        reference = _registered_spaces(env_id)
        if reference is not None:
            if _same_kind(reference[0], observation_space, same_dtype=True):
                observation_space = reference[0]
            if _same_kind(reference[1], action_space, same_dtype=False):
                action_space = reference[1]
        self._actions: np.ndarray | None = None
        super().__init__(n_envs, observation_space, action_space)
        try:
            self.spec: gym.envs.registration.EnvSpec | None = gym.spec(env_id)  # VecMonitor names the env with it
        except gym.error.Error:
            self.spec = None

    @staticmethod
    def _checked_seed(seed: int | None, n_envs: int) -> int:
        """
        :return: ``seed`` (a random one if ``None``) such that the seeds ``seed + i`` of all environments are in
            EnvPool's range (int32): a seed outside ``[0, 2**31 - n_envs]`` (SB3 and rl_zoo3 draw seeds up to
            ``2**32``) is taken modulo ``2**31 - n_envs``
        """
        if seed is None:
            return int(np.random.randint(2**31 - n_envs))
        if not 0 <= int(seed) <= 2**31 - n_envs:
            return int(seed) % (2**31 - n_envs)
        return int(seed)

    def _new_pool(self, n_envs: int) -> Any:
        """:return: a new pool, environment ``i`` seeded with ``self._seed + i``"""
        kwargs = dict(self._env_kwargs)
        if self._num_threads is not None:
            kwargs["num_threads"] = self._num_threads
        return self._envpool.make(self.env_id, env_type="gymnasium", num_envs=n_envs, seed=self._seed, **kwargs)

    @staticmethod
    def _in_env_order(ids: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """:return: ``arrays`` (rows in the order of EnvPool's ``env_id``) in increasing env id order, as copies"""
        if np.all(ids[1:] > ids[:-1]):
            return tuple(np.array(a) for a in arrays)
        order = np.argsort(ids)
        return tuple(np.asarray(a)[order] for a in arrays)

    def reset(self) -> VecEnvObs:
        """
        Reset all environments (recreating the pool with the seeds given by ``seed()`` since the last reset, if any).

        :return: the first observations
        """
        if any(self._options):
            raise NotImplementedError(
                "EnvPoolVecEnv cannot pass reset options to EnvPool's environments; use the gymnasium environment "
                "with a DummyVecEnv for that."
            )
        if self._seeds[0] is not None:
            self._seed = self._checked_seed(self._seeds[0], self.num_envs)
            self.close()
            self._pool = self._new_pool(self.num_envs)
        self._reset_seeds()
        obs, info = self._open_pool().reset()
        (obs,) = self._in_env_order(np.asarray(info["env_id"]), obs)
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """
        Seed the environments at the next ``reset()`` (environment ``i`` with ``seed + i``; EnvPool takes its seeds
        when a pool is made, so the pool is recreated then).

        :param seed: seed of environment 0 (reduced into EnvPool's int32 range if needed); ``None``: a random one
        :return: the seeds
        """
        seed = self._checked_seed(seed, self.num_envs)
        self._seeds = [seed + idx for idx in range(self.num_envs)]
        return self._seeds

    def step_async(self, actions: np.ndarray) -> None:
        """
        :param actions: one action per environment (Box actions are passed on in EnvPool's dtype)
        :raises ValueError: fewer actions than environments (EnvPool's C++ check would abort the process)
        """
        actions = np.asarray(actions, dtype=self._pool_action_dtype)
        if actions.ndim == 0 or len(actions) < self.num_envs:
            raise ValueError(
                f"EnvPoolVecEnv.step_async: {actions.shape[0] if actions.ndim else 'a scalar, no'} actions for "
                f"{self.num_envs} environments: give one action per environment (a batch of shape "
                f"({self.num_envs}, ...))."
            )
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """
        Step all environments; those whose episode ended are reset at once (their last observation in
        ``info["terminal_observation"]``).

        :return: observations, rewards (float32), dones, infos
        """
        assert self._actions is not None, "step_async() must be called before step_wait()"
        obs, rewards, terminated, truncated, info = self._open_pool().step(self._actions)
        obs, rewards, terminated, truncated = self._in_env_order(
            np.asarray(info["env_id"]), obs, rewards, terminated, truncated
        )
        if self.frame_skip > 1:
            rewards = rewards.astype(np.float64)  # summed in double precision, as FrameSkip's Python floats
            running = np.flatnonzero(np.logical_not(np.logical_or(terminated, truncated)))
            for _ in range(self.frame_skip - 1):
                if running.size == 0:
                    break
                sub_obs, sub_rewards, sub_term, sub_trunc, sub_info = self._pool.step(
                    self._actions[running], running.astype(np.int32)
                )
                ids = np.asarray(sub_info["env_id"])
                obs[ids], terminated[ids], truncated[ids] = sub_obs, sub_term, sub_trunc
                rewards[ids] += sub_rewards
                running = np.sort(ids[np.logical_not(np.logical_or(sub_term, sub_trunc))])
        self._actions = None
        dones = np.logical_or(terminated, truncated)
        time_limit = np.logical_and(truncated, np.logical_not(terminated))
        infos: list[dict[str, Any]] = [{"TimeLimit.truncated": bool(t)} for t in time_limit]
        if dones.any():
            ended = np.flatnonzero(dones)
            for idx in ended:
                infos[idx]["terminal_observation"] = obs[idx].copy()
            reset_obs, reset_info = self._pool.reset(ended.astype(np.int32))
            obs[np.asarray(reset_info["env_id"])] = reset_obs
        return obs, rewards.astype(np.float32, copy=False), dones, infos

    def _open_pool(self) -> Any:
        """The pool; a ``ValueError`` after ``close()`` (which freed it)."""
        if self._pool is None:
            raise ValueError("EnvPoolVecEnv is closed: build a new one (or call seed() then reset(), which makes a new pool).")
        return self._pool

    def close(self) -> None:
        """Stop EnvPool's worker threads."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _indices_count(self, indices: VecEnvIndices) -> int:
        return len(list(self._get_indices(indices)))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """
        Attributes of the pool (shared by all its environments): ``render_mode`` is ``None``; other names are looked
        up on EnvPool's pool object.

        :param attr_name: attribute name
        :param indices: environments
        :return: the value, once per environment
        """
        if attr_name == "render_mode":
            value = None
        elif hasattr(self._pool, attr_name):
            value = getattr(self._pool, attr_name)
        else:
            raise AttributeError(f"EnvPool's {self.env_id} pool has no attribute {attr_name!r}")
        return [value] * self._indices_count(indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Not available: EnvPool's environments are C++ objects without Python attributes."""
        raise NotImplementedError(
            f"EnvPoolVecEnv cannot set {attr_name!r}: EnvPool's environments have no Python attributes; "
            "use the gymnasium environment with a DummyVecEnv for that."
        )

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Not available: EnvPool's environments are C++ objects without Python methods."""
        raise NotImplementedError(
            f"EnvPoolVecEnv cannot call {method_name!r}: EnvPool's environments have no Python methods; "
            "use the gymnasium environment with a DummyVecEnv for that."
        )

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """:return: ``False`` for every environment (EnvPool's environments take no gymnasium wrappers)"""
        return [False] * self._indices_count(indices)

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Not available: record videos with the gymnasium environment (``sb3-cherry video``)."""
        raise NotImplementedError("EnvPoolVecEnv does not render; record videos with the gymnasium environment.")


class _SpacesOnly(gym.Env):
    """An env that only has spaces: what a gymnasium observation wrapper needs to be built."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space):
        self.observation_space, self.action_space = observation_space, action_space


#: gymnasium's observation wrappers whose ``observation`` is a pure function of the observation (no state)
_STATELESS_OBSERVATION_WRAPPERS: tuple[type[gym.ObservationWrapper], ...] = (
    gym.wrappers.ResizeObservation,
    gym.wrappers.GrayscaleObservation,
    gym.wrappers.TransformObservation,
    gym.wrappers.DtypeObservation,
    gym.wrappers.ReshapeObservation,
    gym.wrappers.RescaleObservation,
    gym.wrappers.FlattenObservation,
    gym.wrappers.FilterObservation,
)


def _is_stateless(wrapper_class: Any) -> bool:
    """
    :return: whether ``wrapper_class`` is one of :data:`_STATELESS_OBSERVATION_WRAPPERS` or rl_zoo3's
        ``YAMLCompatResizeObservation`` (``ResizeObservation`` taking the YAML list of a config), exactly: another
        subclass, such as gymnasium's ``AddRenderObservation`` of ``TransformObservation``, may keep state or need the env
    """
    from rl_zoo3.wrappers import YAMLCompatResizeObservation

    return wrapper_class in _STATELESS_OBSERVATION_WRAPPERS or wrapper_class is YAMLCompatResizeObservation


class VecObservationWrapper(VecEnvWrapper):
    """
    A stateless gymnasium observation wrapper (``ResizeObservation``, ``GrayscaleObservation``, ``TransformObservation``,
    ...; stateful ones are refused) applied to each environment's observations of a VecEnv, terminal observations
    included: gymnasium's own ``observation`` method, for VecEnvs whose environments take no gymnasium wrappers
    (EnvPool).

    :param venv: the VecEnv
    :param wrapper_class: the gymnasium observation wrapper
    :param wrapper_kwargs: its arguments
    """

    def __init__(
        self, venv: VecEnv, wrapper_class: type[gym.ObservationWrapper], wrapper_kwargs: dict[str, Any] | None = None
    ):
        if not _is_stateless(wrapper_class):
            raise ValueError(
                "VecObservationWrapper takes a stateless gymnasium observation wrapper (one instance serves every "
                f"environment): {', '.join(c.__name__ for c in _STATELESS_OBSERVATION_WRAPPERS)}; got "
                f"{wrapper_class!r} (stateful wrappers such as DelayObservation or NormalizeObservation would mix the "
                "environments)."
            )
        self.wrapper = wrapper_class(_SpacesOnly(venv.observation_space, venv.action_space), **(wrapper_kwargs or {}))
        super().__init__(venv, observation_space=self.wrapper.observation_space)

    def _transform(self, obs: np.ndarray) -> np.ndarray:
        return np.stack([self.wrapper.observation(o) for o in obs])

    def reset(self) -> VecEnvObs:
        """:return: the transformed first observations"""
        return self._transform(np.asarray(self.venv.reset()))

    def step_wait(self) -> VecEnvStepReturn:
        """:return: the step with transformed observations (and terminal observations)"""
        obs, rewards, dones, infos = self.venv.step_wait()
        for info in infos:
            if "terminal_observation" in info:
                info["terminal_observation"] = self.wrapper.observation(info["terminal_observation"])
        return self._transform(np.asarray(obs)), rewards, dones, infos


#: rl_zoo3's frame skipping wrapper, done inside :class:`EnvPoolVecEnv` (``frame_skip``)
_FRAME_SKIP = "rl_zoo3.wrappers.FrameSkip"


def _wrapper_specs(env_wrapper: Any) -> list[tuple[str, dict[str, Any]]]:
    """:return: an ``env_wrapper`` config value (a name, ``{name: kwargs}``, or a list of them) as (name, kwargs) pairs"""
    items = env_wrapper if isinstance(env_wrapper, list) else [env_wrapper]
    specs = []
    for item in items:
        if isinstance(item, dict):
            ((name, kwargs),) = item.items()
            specs.append((str(name), dict(kwargs or {})))
        else:
            specs.append((str(item), {}))
    return specs


def make_envpool_vec_env(
    env_id: str,
    n_envs: int = 1,
    seed: int | None = None,
    num_threads: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    monitor_filename: str | None = None,
    info_keywords: tuple[str, ...] = (),
    env_wrapper: Any = None,
) -> VecEnv:
    """
    An :class:`EnvPoolVecEnv` in SB3's ``VecMonitor`` (episode returns and lengths in ``info["episode"]``, as
    ``make_vec_env``'s ``Monitor``; with frame skipping, lengths count agent steps, not frames).

    ``env_wrapper`` is a config's ``env_wrapper`` value (rl-zoo format), translated for EnvPool: a leading
    ``rl_zoo3.wrappers.FrameSkip`` becomes ``frame_skip``, stateless gymnasium observation wrappers
    (``ResizeObservation``, ``GrayscaleObservation``, ...) become :class:`VecObservationWrapper` layers; other wrappers
    cannot act on EnvPool's C++ environments and raise a ``ValueError``.

    :param env_id: EnvPool task id
    :param n_envs: number of environments
    :param seed: seed of environment 0 (environment ``i``: ``seed + i``); ``None``: random
    :param num_threads: EnvPool worker threads (``None``: EnvPool's default)
    :param env_kwargs: further ``envpool.make`` arguments
    :param monitor_filename: where ``VecMonitor`` writes its CSV (``None``: nowhere)
    :param info_keywords: must be empty: EnvPool's infos hold no other keys for ``VecMonitor`` to log (a ValueError says so)
    :param env_wrapper: a config's ``env_wrapper`` value (names from trusted packages only, as every config)
    :return: the monitored (and wrapped) vectorized environment
    """
    from rl_zoo3.utils import get_class_by_name

    from sb3_cherry.common.safe_config import check_imported_names

    specs = [] if env_wrapper is None else _wrapper_specs(env_wrapper)
    if specs:
        check_imported_names({"env_wrapper": env_wrapper}, f"env_wrapper of {env_id}")
    frame_skip = 1
    if specs and specs[0][0] == _FRAME_SKIP:
        frame_skip = int(specs.pop(0)[1].get("skip", 4))  # FrameSkip's default
    layers = []
    for name, kwargs in specs:
        wrapper_class = get_class_by_name(name)
        if not _is_stateless(wrapper_class):  # checked before a pool is made, with the config named
            raise ValueError(
                f"--vec-env envpool: the env_wrapper {name} of {env_id} cannot act on EnvPool's C++ environments "
                f"(translated: {_FRAME_SKIP} first, then stateless gymnasium observation wrappers); use --vec-env "
                "dummy or subproc."
            )
        layers.append((wrapper_class, kwargs))
    if info_keywords:  # (before a pool is made: its threads would live on until garbage collection)
        raise ValueError(
            f"EnvPoolVecEnv's infos hold only TimeLimit.truncated and terminal_observation: info_keywords "
            f"{tuple(info_keywords)} cannot be logged. Drop them (monitor_kwargs), or train on gymnasium's envs."
        )
    venv: VecEnv = EnvPoolVecEnv(
        env_id, n_envs=n_envs, seed=seed, num_threads=num_threads, env_kwargs=env_kwargs, frame_skip=frame_skip
    )
    venv = VecMonitor(venv, filename=monitor_filename)
    for wrapper_class, kwargs in layers:
        venv = VecObservationWrapper(venv, wrapper_class, kwargs)
    return venv


def _envpool_make_vec_env(
    env_id: str,
    num_threads: int | None,
    env_wrapper: Any,
    env: Any,
    n_envs: int = 1,
    seed: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    monitor_dir: str | None = None,
    wrapper_class: Any = None,
    vec_env_cls: Any = None,
    vec_env_kwargs: dict[str, Any] | None = None,
    monitor_kwargs: dict[str, Any] | None = None,
) -> VecEnv:
    """
    Stand-in for SB3's ``make_vec_env`` as rl_zoo3's ``ExperimentManager.create_envs`` calls it: the same arguments,
    an :func:`make_envpool_vec_env` of ``env_id`` with the config's ``env_wrapper`` translated (``env``, rl_zoo3's
    gymnasium constructor, ``wrapper_class``, the same wrappers built for gymnasium, and ``vec_env_cls`` are not used).
    """
    if env_kwargs:
        raise ValueError(
            f"--vec-env envpool: the config of {env_id} has env_kwargs, which EnvPool's C++ environments cannot take; "
            "use --vec-env dummy (or subproc) for this config."
        )
    return make_envpool_vec_env(
        env_id,
        n_envs=n_envs,
        seed=seed,
        num_threads=num_threads,
        monitor_filename=None if monitor_dir is None else f"{monitor_dir}/envpool",
        info_keywords=tuple((monitor_kwargs or {}).get("info_keywords", ())),
        env_wrapper=env_wrapper,
    )


def envpool_experiment_manager(base: type, num_threads: int | None = None) -> type:
    """
    An rl_zoo3 ``ExperimentManager`` subclass whose training envs are an :class:`EnvPoolVecEnv` (``sb3-cherry train
    --vec-env envpool``), the config's ``env_wrapper`` translated (:func:`make_envpool_vec_env`); the evaluation env
    stays gymnasium's, so the returns reported during and after training are those of the reference implementation.
    Normalisation, frame stacking and image transposition are rl_zoo3's.

    :param base: the ``ExperimentManager`` class to extend (rl_zoo3's)
    :param num_threads: EnvPool worker threads (``None``: EnvPool's default)
    :return: the subclass
    """
    import rl_zoo3.exp_manager

    class EnvPoolExperimentManager(base):  # type: ignore[valid-type, misc]
        """rl_zoo3's ``ExperimentManager`` training on EnvPool's environments."""

        _envpool_env_wrapper: Any = None

        def _preprocess_hyperparams(self, hyperparams: dict[str, Any]) -> Any:
            self._envpool_env_wrapper = hyperparams.get("env_wrapper")  # the config value, translated for EnvPool
            return super()._preprocess_hyperparams(hyperparams)

        def create_envs(self, n_envs: int, eval_env: bool = False, no_log: bool = False) -> VecEnv:
            if eval_env:
                return super().create_envs(n_envs, eval_env, no_log)
            saved = rl_zoo3.exp_manager.make_vec_env
            rl_zoo3.exp_manager.make_vec_env = functools.partial(  # type: ignore[assignment]
                _envpool_make_vec_env, self.env_name.gym_id, num_threads, self._envpool_env_wrapper
            )
            try:
                return super().create_envs(n_envs, eval_env, no_log)
            finally:
                rl_zoo3.exp_manager.make_vec_env = saved  # type: ignore[assignment]

    return EnvPoolExperimentManager
