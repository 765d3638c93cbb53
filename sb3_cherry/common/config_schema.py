"""
The schema of sb3_cherry's rl-zoo YAML configs: where the shipped configs live and how an entry is validated before any
training starts (unknown keys, wrong types, unknown distributions). Used by the ``sb3-cherry`` CLI and by
:func:`sb3_cherry.common.zoo_config.load_zoo_entry`.

The algorithms a config may name are registered here by ``sb3_cherry/__init__.py`` (:func:`register_algorithms`), so
that this module depends on no algorithm folder.
"""

import collections.abc
import inspect
import math
import pathlib
import typing
from collections.abc import Collection, Mapping
from typing import Any

import gymnasium as gym

from sb3_cherry.common.safe_config import (
    check_imported_names,
    check_policy_kwargs,
    check_positive,
    parse_literal_string,
    parse_policy_kwargs,
    safe_load_yaml,
)
from sb3_cherry.common.schedules import coefficient_schedule

#: Keys that rl_zoo3's ExperimentManager consumes itself (not passed to the algorithm)
ZOO_KEYS = {
    "n_timesteps",
    "policy",
    "n_envs",
    "normalize",
    "env_wrapper",
    "vec_env_wrapper",
    "frame_stack",
    "callback",
    "env_kwargs",
    "monitor_kwargs",
    "policy_kwargs",
}
#: Hyperparameters that rl_zoo3 accepts as ``lin_<value>`` schedules
SCHEDULE_KEYS = {"learning_rate", "clip_range", "clip_range_vf"}
#: Loss coefficients that sb3_cherry's on-policy constructors accept as a number, ``lin_<value>`` or a ``{start, end,
#: end_fraction}`` mapping (:func:`~sb3_cherry.common.schedules.coefficient_schedule`)
COEFFICIENT_SCHEDULE_KEYS = {"ent_coef"}
#: Constructor arguments that the zoo sets itself
RESERVED_ARGS = {"self", "policy", "env", "_init_setup_model", "tensorboard_log", "verbose", "seed", "device"}

_ALGORITHMS: dict[str, type] = {}


def register_algorithms(algorithms: Mapping[str, type]) -> None:
    """
    Make algorithms known to :func:`validate_config` under their rl_zoo3 names (``sb3_cherry`` registers its own).

    :param algorithms: ``{name: class}``
    """
    _ALGORITHMS.update(algorithms)


def registered_algorithms() -> dict[str, type]:
    """
    The algorithms a config may name.

    :return: a copy of the ``{name: class}`` registry
    """
    return dict(_ALGORITHMS)


#: Algorithms whose shipped entries are another algorithm's file (AIRL takes GAIL's hyperparameters)
SHARED_CONFIGS = {"airl": "gail"}


def default_config(algo: str) -> pathlib.Path:
    """
    The config file shipped with sb3_cherry for ``algo`` (or ``"evaluation"``): ``sb3_cherry/zoo_configs/<algo>.yml``
    (``gail.yml`` for ``airl``, :data:`SHARED_CONFIGS`),
    package data in a wheel and a symlink to the top-level ``zoo_configs/`` in a checkout, so the same file is found
    from any working directory. A user's own file is passed explicitly (``sb3-cherry train -c FILE``).

    :param algo: algorithm name (``ppo_rollback``, ``cherry_a2c``, ...)
    :return: the path
    :raises FileNotFoundError: no config found
    """
    package = pathlib.Path(__file__).resolve().parents[1]
    name = SHARED_CONFIGS.get(algo, algo)
    candidates = [
        package / "zoo_configs" / f"{name}.yml",
        # a checkout where the symlink was not created (e.g. git on Windows without symlink support)
        package.parent / "zoo_configs" / f"{name}.yml",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"No config for algo {algo!r}: looked for {[str(c) for c in candidates]}. Pass -c <file.yml>.")


def _is_linear_schedule(value: str) -> bool:
    """rl_zoo3's ``lin_<value>`` as rl_zoo3 reads it (``float(value.split("_")[1])``), with a finite value > 0."""
    parts = value.split("_")
    if len(parts) != 2 or parts[0] != "lin":
        return False
    try:
        number = float(parts[1])
    except ValueError:
        return False
    return math.isfinite(number) and number > 0


def _annotation_example(annotation: Any) -> Any:
    """
    For an argument whose default is None: a value of the plain type its annotation allows, to check a config's value
    against as against a default (``float | None`` -> 0.0, also with a callable schedule: ``float | Schedule | None``;
    ``int | None`` -> 0; ``bool | None`` -> False; ``dict[...] | None`` -> {}); None (no check) when it also allows
    other kinds (classes, paths, sequences) or has no annotation.
    """
    options = [option for option in (typing.get_args(annotation) or (annotation,)) if option is not type(None)]
    kinds = {typing.get_origin(option) or option for option in options}
    kinds.discard(collections.abc.Callable)  # a schedule: not a config value (lin_<value> strings are, checked below)
    for plain, example in (({float}, 0.0), ({float, int}, 0.0), ({int}, 0), ({bool}, False), ({dict}, {})):
        if kinds == plain:
            return example
    return None


def _type_ok(value: Any, default: Any, key: str, whole_floats: Collection[str] = ()) -> bool:
    if isinstance(default, dict):
        return isinstance(value, dict)
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        # not 2048.0 (YAML's !!float 2e3): SB3 and rl_zoo3 pass it on as a float, which fails inside numpy / range;
        # unless the constructor converts it itself (``config_whole_floats`` of the class, e.g. BCO's budgets)
        if key in whole_floats and isinstance(value, float) and value.is_integer():
            return True
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        if isinstance(value, str):
            return key in SCHEDULE_KEYS and _is_linear_schedule(value)
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def _reads_as_number(text: str) -> bool:
    """Whether ``text`` is a number in exponent notation, which YAML 1.1 leaves a string without both a dot and an
    exponent sign (``1e-2``, ``3E5``, ``1.0e5``)."""
    try:
        float(text)
    except ValueError:
        return False
    return "e" in text.lower() and not any(word in text.lower() for word in ("inf", "nan"))


def check_constructor_kwargs(
    kwargs: Mapping[str, Any],
    cls: type,
    where: str,
    extra_allowed: frozenset[str] = frozenset(),
    reserved: frozenset[str] = frozenset(RESERVED_ARGS),
) -> None:
    """
    Check keyword arguments of an algorithm's constructor given in a config: known names, the types of their defaults
    (an int stays an int), ``lin_<value>`` only where rl_zoo3 converts it, ``ent_coef`` schedules where the class takes
    them. Algorithms with nested hyperparameters check them with this too (``generator_kwargs`` of GAIL / AIRL).

    :param kwargs: the arguments
    :param cls: the algorithm class
    :param where: file and env (and the nesting), for the error message
    :param extra_allowed: further accepted keys (rl_zoo3's own)
    :param reserved: constructor arguments that may not be given here
    :raises ValueError: naming the key
    """
    parameters = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    allowed = extra_allowed | (set(parameters) - reserved)
    from sb3_cherry.common.on_policy import CherryOnPolicyAlgorithm  # (imported late: it imports the policies)

    # the on-policy algorithms take ent_coef schedules; BCO's ent_coef is a plain number (checked by type below)
    takes_schedules = issubclass(cls, CherryOnPolicyAlgorithm)
    whole_floats = getattr(cls, "config_whole_floats", ())
    for key, value in kwargs.items():
        if key not in allowed:
            raise ValueError(f"{where}: unknown hyperparameter {key!r} for {cls.__name__}. Allowed: {sorted(allowed)}.")
        if key in COEFFICIENT_SCHEDULE_KEYS and takes_schedules and not callable(value):
            try:
                coefficient_schedule(value, key)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from exc
            continue
        default = parameters[key].default if key in parameters else None
        # e.g. target_kl: float | None (policy_kwargs, a mapping or a dict(...) string, is checked on its own)
        if default is None and key in parameters and value is not None and key != "policy_kwargs":
            default = _annotation_example(parameters[key].annotation)
        if default is not None and default is not inspect.Parameter.empty and not _type_ok(value, default, key, whole_floats):
            expected = type(default).__name__
            if isinstance(value, str) and _reads_as_number(value):
                expected += f"; YAML reads {value} as a string: write the number with a dot and a signed exponent (1.0e-2)"
            if key in SCHEDULE_KEYS:
                expected += " or lin_<value> with a positive value"
            raise ValueError(f"{where}: hyperparameter {key!r}={value!r} has the wrong type (expected {expected}).")
        choices = getattr(cls, "config_choices", {}).get(key)
        if choices is not None and value not in choices:
            raise ValueError(f"{where}: hyperparameter {key!r}={value!r} is not one of {list(choices)}.")
    check_positive(kwargs, where)


def _check_zoo_keys(entry: Mapping[str, Any], aliases: Mapping[str, Any], where: str) -> None:
    """The types of the keys rl_zoo3 consumes itself, and the policy name."""
    n_timesteps = entry.get("n_timesteps")
    if n_timesteps is not None and not (
        isinstance(n_timesteps, (int, float)) and not isinstance(n_timesteps, bool) and float(n_timesteps).is_integer()
    ):
        raise ValueError(f"{where}: n_timesteps={n_timesteps!r} must be a whole number (1000000 or !!float 1e6).")
    for key in ("n_envs", "frame_stack"):
        value = entry.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool)):
            raise ValueError(f"{where}: {key}={value!r} must be an integer (not {type(value).__name__}).")
    if entry.get("frame_stack") is not None and entry["frame_stack"] < 1:
        raise ValueError(f"{where}: frame_stack={entry['frame_stack']!r} must be at least 1.")
    normalize = entry.get("normalize")
    if isinstance(normalize, str):  # parsed as data here (rl_zoo3 would eval it; sb3_cherry hands it the parsed value)
        normalize = parse_literal_string(normalize, f"{where} normalize")
    if normalize is not None and not isinstance(normalize, (bool, dict)):
        raise ValueError(f"{where}: normalize={entry['normalize']!r} must be true/false, a mapping or a dict(...) string.")
    for key in ("env_kwargs", "monitor_kwargs"):
        value = entry.get(key)
        if isinstance(value, str):
            value = parse_literal_string(value, f"{where} {key}")
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{where}: {key}={entry[key]!r} must be a mapping (or a dict(...) string).")
    if "policy" not in entry:  # rl_zoo3 reads it without a default
        raise ValueError(f"{where}: missing 'policy' (e.g. policy: 'MlpPolicy').")
    policy = entry["policy"]
    if not isinstance(policy, str) or not policy:
        raise ValueError(f"{where}: policy={policy!r} must be a policy name such as 'MlpPolicy'.")
    if "." not in policy and aliases and policy not in aliases:
        # a dotted name is a class rl_zoo3 imports (your own policy); anything else must be one of the algorithm's
        raise ValueError(f"{where}: unknown policy {policy!r}: choose one of {sorted(aliases)} (or a dotted class path).")


def validate_config(
    path: str | pathlib.Path, algo: str, env_id: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """
    Check the config entry of ``env_id`` in ``path`` before any training starts. The file is read as data and
    ``policy_kwargs`` strings are parsed without ``eval`` (:mod:`sb3_cherry.common.safe_config`).

    :param path: the YAML file
    :param algo: algorithm name registered in the zoo
    :param env_id: environment id (key of the YAML file)
    :param overrides: ``-params``/``--hyperparams`` values, checked like the file's keys
    :return: the entry (overrides merged)
    :raises ValueError: naming the file, the env key and the offending hyperparameter
    """
    algos = registered_algorithms()
    if algo not in algos:
        raise ValueError(f"Unknown algo {algo!r}: choose one of {sorted(algos)}.")
    config = safe_load_yaml(path) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: the top level must map env ids to hyperparameters, not a {type(config).__name__}.")
    entry = config.get(env_id, config.get("default"))
    if entry is None:
        raise ValueError(f"{path}: no entry for env {env_id!r} (and no 'default'). Entries: {sorted(config)}.")
    where = f"{path} [{env_id}]"
    entry = {**entry, **(overrides or {})} if isinstance(entry, dict) else entry
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: the entry must be a mapping of hyperparameters, not {entry!r}.")
    algo_class: type[Any] = algos[algo]  # a class: its __init__ is the constructor's signature
    check_constructor_kwargs(entry, algo_class, where, extra_allowed=frozenset(ZOO_KEYS))
    if "n_timesteps" not in entry:
        raise ValueError(f"{where}: missing 'n_timesteps'.")
    aliases = getattr(algo_class, "policy_aliases", {})
    _check_zoo_keys(entry, aliases, where)
    # the classes rl_zoo3 will import and call with the config's arguments (any package: your own config)
    check_imported_names(entry, where, trusted_only=False)
    check_nested = getattr(algo_class, "check_config_entry", None)
    if callable(check_nested):  # e.g. GAIL / AIRL: generator_kwargs
        check_nested(entry, where)
    policy_kwargs = parse_policy_kwargs(entry.get("policy_kwargs") or {}, f"{where} policy_kwargs")
    check_policy_kwargs(policy_kwargs, aliases.get(entry.get("policy", "MlpPolicy")), where)
    if "action_distribution" in policy_kwargs:
        from sb3_cherry.common.distributions import resolve_spec
        from sb3_cherry.common.policies import _tuple_from_list

        env_kwargs = entry.get("env_kwargs") or {}
        if isinstance(env_kwargs, str):  # a dict(...) string (checked above)
            env_kwargs = parse_literal_string(env_kwargs, f"{where} env_kwargs")
        env = gym.make(env_id, **env_kwargs)
        try:
            resolve_spec(env.action_space, _tuple_from_list(policy_kwargs["action_distribution"]))
        except ValueError as exc:
            raise ValueError(f"{where}: policy_kwargs.action_distribution: {exc}") from exc
        finally:
            env.close()
    return entry
