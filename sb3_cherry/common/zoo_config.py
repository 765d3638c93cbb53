"""Read an rl-zoo style entry of ``zoo_configs/`` into constructor arguments (for scripts, tests and benchmarks)."""

import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
from stable_baselines3.common.utils import LinearSchedule

from sb3_cherry.common.config_schema import default_config, validate_config
from sb3_cherry.common.safe_config import (
    check_imported_names,
    parse_literal_string,
    parse_policy_kwargs,
    resolve_rollout_buffer_class,
)


@dataclass
class ZooEntry:
    """
    One env entry of a zoo config, split the way rl_zoo3's ExperimentManager splits it.

    :param n_timesteps: training budget
    :param n_envs: number of parallel environments
    :param normalize: VecNormalize arguments (``None``: no normalisation); its ``gamma`` is the model's, as in rl_zoo3
    :param model_kwargs: arguments for the algorithm's constructor (policy included; schedules, also in
        ``generator_kwargs``, ``policy_kwargs`` strings and a ``rollout_buffer_class`` name converted)
    :param env_wrapper: the entry's ``env_wrapper`` (a class name, a ``{name: kwargs}`` mapping or a list of them),
        as :func:`make_env_wrapper` turns it into ``make_vec_env``'s ``wrapper_class``; None: no wrapper
    :param frame_stack: the entry's ``frame_stack`` (``VecFrameStack`` after ``VecNormalize``, as rl_zoo3)
    :param env_kwargs: keyword arguments of the env constructor
    :param vec_env: the entry's ``vec_env`` (``dummy``, ``subproc`` or ``parallel``: the VecEnv ``sb3-cherry train``
        steps the training envs in; the same values in each)
    """

    n_timesteps: int
    n_envs: int
    normalize: dict[str, Any] | None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    env_wrapper: Any = None
    frame_stack: int | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    vec_env: str = "dummy"


def make_env_wrapper(
    env_wrapper: Any, where: str = "env_wrapper", trusted_only: bool = True
) -> Callable[[gym.Env], gym.Env] | None:
    """
    The ``wrapper_class`` of ``make_vec_env`` for an entry's ``env_wrapper``, built by rl_zoo3's
    ``get_wrapper_class`` once every named class was checked to be a ``gymnasium.Wrapper`` subclass (a config names
    classes, it never calls a function). By default only classes of
    :data:`~sb3_cherry.common.safe_config.TRUSTED_WRAPPER_PACKAGES` (what a file you did not write, e.g. a run folder,
    may name); ``trusted_only=False`` also accepts your own modules' wrappers, as ``sb3-cherry train -c FILE`` does for
    a config of your own.

    :param env_wrapper: the entry's value (None: no wrapper)
    :param where: the config and entry, for the error message
    :param trusted_only: accept only classes of the trusted packages (False: a config of your own)
    :return: a callable wrapping one env, or None
    :raises UnsafeConfigError: a name that is not a wrapper class (with ``trusted_only``: or outside the trusted packages)
    """
    if env_wrapper is None:
        return None
    from rl_zoo3.utils import get_wrapper_class

    check_imported_names({"env_wrapper": env_wrapper}, where, trusted_only=trusted_only)
    return get_wrapper_class({"env_wrapper": env_wrapper})


def _linear_schedules(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the ``lin_<value>`` strings of ``learning_rate`` / ``clip_range`` / ``clip_range_vf`` as
    schedules (validated by :func:`~sb3_cherry.common.config_schema.validate_config`)."""
    return {
        key: (
            LinearSchedule(float(value.split("_")[1]), 0.0, 1.0)
            if key in ("learning_rate", "clip_range", "clip_range_vf") and isinstance(value, str)
            else value
        )
        for key, value in kwargs.items()
    }


def load_zoo_entry(algo: str, env_id: str, path: str | pathlib.Path | None = None) -> ZooEntry:
    """
    Load the entry of ``env_id`` from ``zoo_configs/<algo>.yml`` (validated as ``sb3-cherry train`` validates it; the
    entry rl_zoo3 reads: the env id's, ``atari`` for an Atari env, or ``default``). A config of your own (``path``)
    may name the wrappers of your own modules, as with ``sb3-cherry train -c FILE``.

    :param algo: algorithm name (``ppo_rollback``, ...)
    :param env_id: environment id
    :param path: config file (default: the shipped ``zoo_configs/<algo>.yml``)
    :return: the entry
    """
    trusted_only = path is None  # the shipped configs name the trusted packages' classes only
    path = path or default_config(algo)
    entry = dict(validate_config(path, algo, env_id))
    n_timesteps = int(entry.pop("n_timesteps"))
    n_envs = int(entry.pop("n_envs", 1))
    vec_env = str(entry.pop("vec_env", "dummy"))
    normalize = entry.pop("normalize", False)
    if isinstance(normalize, str):
        normalize = parse_literal_string(normalize, f"{path} [{env_id}] normalize")
    if normalize is True:
        normalize = {}
    elif normalize is False:
        normalize = None
    if normalize is not None and "gamma" in entry:
        normalize = {**normalize, "gamma": entry["gamma"]}  # as rl_zoo3: VecNormalize discounts with the model's gamma
    entry = _linear_schedules(entry)
    if isinstance(entry.get("generator_kwargs"), dict):  # GAIL / AIRL's generator (checked as the top level)
        entry["generator_kwargs"] = _linear_schedules(entry["generator_kwargs"])
    entry = resolve_rollout_buffer_class(entry, f"{path} [{env_id}]")
    if isinstance(entry.get("policy_kwargs"), str):
        entry["policy_kwargs"] = parse_policy_kwargs(entry["policy_kwargs"], f"{path} [{env_id}] policy_kwargs")
    for key in ("vec_env_wrapper", "callback", "monitor_kwargs"):
        if key in entry:
            raise ValueError(f"load_zoo_entry does not handle {key!r}; train this entry with `sb3-cherry train`.")
    env_wrapper = entry.pop("env_wrapper", None)
    check_imported_names({"env_wrapper": env_wrapper}, f"{path} [{env_id}]", trusted_only=trusted_only)
    frame_stack = entry.pop("frame_stack", None)
    env_kwargs = entry.pop("env_kwargs", None) or {}
    if isinstance(env_kwargs, str):
        env_kwargs = parse_literal_string(env_kwargs, f"{path} [{env_id}] env_kwargs")
    return ZooEntry(
        n_timesteps,
        n_envs,
        normalize,
        entry,
        env_wrapper=env_wrapper,
        frame_stack=int(frame_stack) if frame_stack else None,
        env_kwargs=dict(env_kwargs),
        vec_env=vec_env,
    )
