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
    allowed_names,
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
    # sb3_cherry's (rl_zoo3 has only the --vec-env option): the training envs' VecEnv, see VEC_ENV_CHOICES
    "vec_env",
}
#: values of an entry's ``vec_env`` (and of ``sb3-cherry train --vec-env``, which overrides it; ``envpool`` is the
#: command line's only): one process, one process per env, or the envs in groups stepped at once (CherryParallelVecEnv)
VEC_ENV_CHOICES = ("dummy", "subproc", "parallel")
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
        if key in CLIP_RANGE_KEYS and key in parameters:
            _check_clip_range(key, value, where)
    check_positive(kwargs, where)


#: PPO's clipping parameters: a number must be positive (``lin_<value>`` strings are checked with the types)
CLIP_RANGE_KEYS = ("clip_range", "clip_range_vf")


def _check_clip_range(key: str, value: Any, where: str) -> None:
    """
    Refuse a ``clip_range`` / ``clip_range_vf`` number that is not positive: PPO clips the ratio to ``[1 - eps, 1 + eps]``
    (with a negative ``eps``, ``clamp(r, 1.2, 0.8)`` is 0.8 whatever the ratio) and SB3 asserts a positive
    ``clip_range_vf``.

    :param key: ``clip_range`` or ``clip_range_vf``
    :param value: its value
    :param where: file and env, for the error message
    :raises ValueError: naming the key and the fix
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value > 0:
        return
    if key == "clip_range_vf":
        raise ValueError(
            f"{where}: clip_range_vf={value!r} must be positive; for no value clipping write clip_range_vf: null (or "
            "leave it out; rl-zoo's old negative 'disable' value is refused by SB3)."
        )
    raise ValueError(
        f"{where}: clip_range={value!r} must be positive (PPO clips the ratio to [1 - clip_range, 1 + clip_range]), "
        "e.g. 0.2."
    )


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
    if "vec_env" in entry and entry["vec_env"] not in VEC_ENV_CHOICES:
        raise ValueError(f"{where}: vec_env={entry['vec_env']!r} must be one of {list(VEC_ENV_CHOICES)}.")
    normalize = entry.get("normalize")
    if isinstance(normalize, str):  # parsed as data here (rl_zoo3 would eval it; sb3_cherry hands it the parsed value)
        normalize = parse_literal_string(normalize, f"{where} normalize")
    if normalize is not None and not isinstance(normalize, (bool, dict)):
        raise ValueError(f"{where}: normalize={entry['normalize']!r} must be true/false, a mapping or a dict(...) string.")
    if isinstance(normalize, dict):
        _check_normalize_keys(normalize, where)
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


def _check_normalize_keys(normalize: Mapping[str, Any], where: str) -> None:
    """
    Refuse ``normalize`` keys that ``VecNormalize`` does not take (rl_zoo3 passes them on: a TypeError after the run
    folder was created).

    :param normalize: the parsed ``normalize`` mapping
    :param where: file and env, for the error message
    :raises ValueError: naming the unknown keys and the accepted ones
    """
    from stable_baselines3.common.vec_env import VecNormalize

    accepted = set(inspect.signature(VecNormalize.__init__).parameters) - {"self", "venv"}
    unknown = sorted(str(key) for key in set(normalize) - accepted)
    if unknown:
        raise ValueError(f"{where}: unknown normalize key(s) {unknown} for VecNormalize. Accepted: {sorted(accepted)}.")


def check_env_kwargs(env_id: str, env_kwargs: Mapping[str, Any], where: str) -> None:
    """
    Refuse keyword arguments that the constructor of ``env_id`` does not take, where that is cheap to know: a registered
    id whose entry point is a class or function without ``**kwargs`` (gymnasium's ``make`` would raise a TypeError
    after the run folder was created). ``gym.make``'s own arguments (``max_episode_steps``, ...) are accepted.

    :param env_id: environment id
    :param env_kwargs: the keyword arguments
    :param where: file and env (and the option), for the error message
    :raises ValueError: naming the unknown keys and the accepted ones
    """
    spec = gym.envs.registry.get(env_id)
    if not env_kwargs or spec is None or spec.entry_point is None:
        return
    try:
        from gymnasium.envs.registration import load_env_creator

        creator: Any = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
        parameters = inspect.signature(creator).parameters.values()
    except (ImportError, AttributeError, TypeError, ValueError):  # not known cheaply: gym.make says it
        return
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = {parameter.name for parameter in parameters if parameter.kind in keyword}
    make_own = set(inspect.signature(gym.make).parameters) - {"id", "kwargs"}
    unknown = sorted(str(key) for key in set(env_kwargs) - accepted - make_own)
    if unknown:
        name = getattr(creator, "__qualname__", str(spec.entry_point))
        raise ValueError(
            f"{where}: {env_id} ({name}) takes no argument {unknown}. Accepted: {sorted(accepted)} (and gym.make's "
            f"{sorted(make_own)})."
        )


def _is_layer_sizes(value: Any) -> bool:
    """Whether ``value`` is a list (or tuple) of layer sizes (integers >= 1)."""
    return isinstance(value, (list, tuple)) and all(
        isinstance(size, int) and not isinstance(size, bool) and size >= 1 for size in value
    )


def _check_policy_kwargs_values(policy_kwargs: Mapping[str, Any], mapping: bool, where: str) -> None:
    """
    Refuse ``policy_kwargs`` values that SB3 would fail on with a TypeError after the run folder was created: a
    ``net_arch`` that is not layer sizes (``[64, 64]``, ``dict(pi=[64], vf=[64])``), and in a YAML mapping (passed on
    as it is, not parsed) a class written as a string (``activation_fn: nn.ReLU``).

    :param policy_kwargs: the parsed keyword arguments
    :param mapping: the config gave them as a YAML mapping (strings stay strings), not a ``dict(...)`` string
    :param where: file and env, for the error message
    :raises ValueError: naming the key and the fix
    """
    net_arch = policy_kwargs.get("net_arch")
    if isinstance(net_arch, list) and len(net_arch) == 1 and isinstance(net_arch[0], dict):
        net_arch = net_arch[0]  # SB3's deprecated [dict(pi=..., vf=...)]
    if not (
        net_arch is None
        or _is_layer_sizes(net_arch)
        or (isinstance(net_arch, dict) and all(_is_layer_sizes(layers) for layers in net_arch.values()))
    ):
        raise ValueError(
            f"{where}: policy_kwargs net_arch={policy_kwargs['net_arch']!r} must be layer sizes, e.g. [64, 64] or "
            "dict(pi=[64, 64], vf=[64, 64])."
        )
    if not mapping:
        return
    names = allowed_names()
    for key, value in policy_kwargs.items():
        if isinstance(value, str) and (value in names or str(key).endswith(("_fn", "_class"))):
            raise ValueError(
                f"{where}: policy_kwargs {key}={value!r}: a YAML mapping passes the string on, not the class; write "
                f'policy_kwargs as a string, policy_kwargs: "dict({key}={value})", which is parsed.'
            )


def is_atari(env_id: str) -> bool:
    """
    rl_zoo3's ``ExperimentManager.is_atari``: the env's entry point names ``AtariEnv`` (False for an id that is not
    registered, where rl_zoo3 raises a KeyError).

    :param env_id: environment id
    :return: whether rl_zoo3 reads the config's ``atari`` entry for it
    """
    spec = gym.envs.registry.get(env_id)
    return spec is not None and "AtariEnv" in str(spec.entry_point)


def config_entry(config: Mapping[str, Any], env_id: str, path: str | pathlib.Path) -> Any:
    """
    The entry of a config that rl_zoo3's ``ExperimentManager`` reads for ``env_id``: the env id's, else ``atari`` for
    an Atari env (:func:`is_atari`), else ``default``.

    :param config: the config file's mapping
    :param env_id: environment id
    :param path: the file, for the error message
    :return: the entry
    :raises ValueError: no such entry (an Atari env without an ``atari`` entry: rl_zoo3 does not read ``default``)
    """
    if env_id in config:
        return config[env_id]
    if is_atari(env_id):
        if "atari" not in config:
            raise ValueError(
                f"{path}: no entry for env {env_id!r}, an Atari env, and no 'atari' entry (rl_zoo3 reads 'atari' for "
                f"Atari envs, not 'default'). Add one of them. Entries: {sorted(map(str, config))}."
            )
        return config["atari"]
    if "default" in config:
        return config["default"]
    raise ValueError(f"{path}: no entry for env {env_id!r} (and no 'default'). Entries: {sorted(map(str, config))}.")


def validate_config(
    path: str | pathlib.Path,
    algo: str,
    env_id: str,
    overrides: dict[str, Any] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """
    Check the config entry of ``env_id`` in ``path`` before any training starts. The file is read as data and
    ``policy_kwargs`` strings are parsed without ``eval`` (:mod:`sb3_cherry.common.safe_config`). The entry is the one
    rl_zoo3 reads (:func:`config_entry`: the env id's, ``atari`` for an Atari env, or ``default``).

    :param path: the YAML file
    :param algo: algorithm name registered in the zoo
    :param env_id: environment id (key of the YAML file)
    :param overrides: ``-params``/``--hyperparams`` values, checked like the file's keys
    :param env_kwargs: ``--env-kwargs`` values, which rl_zoo3 uses instead of the entry's ``env_kwargs``
    :return: the entry (overrides merged)
    :raises ValueError: naming the file, the env key and the offending hyperparameter
    """
    algos = registered_algorithms()
    if algo not in algos:
        raise ValueError(f"Unknown algo {algo!r}: choose one of {sorted(algos)}.")
    config = safe_load_yaml(path) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: the top level must map env ids to hyperparameters, not a {type(config).__name__}.")
    entry = config_entry(config, env_id, path)
    if entry is None:
        raise ValueError(f"{path}: the entry of env {env_id!r} is empty; give it hyperparameters (n_timesteps, policy).")
    where = f"{path} [{env_id}]"
    algo_class: type[Any] = algos[algo]  # a class: its __init__ is the constructor's signature
    if overrides:
        # a key of the command line is named as such (not as one of the file, which may not hold it)
        check_constructor_kwargs(overrides, algo_class, f"-params/--hyperparams [{env_id}]", extra_allowed=frozenset(ZOO_KEYS))
        where = f"{where} with -params/--hyperparams {', '.join(sorted(overrides))}"
    entry = {**entry, **(overrides or {})} if isinstance(entry, dict) else entry
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: the entry must be a mapping of hyperparameters, not {entry!r}.")
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
    _check_policy_kwargs_values(policy_kwargs, isinstance(entry.get("policy_kwargs"), dict), where)
    if env_kwargs:  # rl_zoo3: the command line's replace the entry's
        check_env_kwargs(env_id, env_kwargs, f"{where} --env-kwargs")
    else:
        env_kwargs = entry.get("env_kwargs") or {}
        if isinstance(env_kwargs, str):  # a dict(...) string (checked above)
            env_kwargs = parse_literal_string(env_kwargs, f"{where} env_kwargs")
        check_env_kwargs(env_id, env_kwargs, f"{where} env_kwargs")
    if "action_distribution" in policy_kwargs:
        from sb3_cherry.common.distributions import resolve_spec
        from sb3_cherry.common.policies import _tuple_from_list

        env = gym.make(env_id, **env_kwargs)
        try:
            resolve_spec(env.action_space, _tuple_from_list(policy_kwargs["action_distribution"]))
        except ValueError as exc:
            raise ValueError(f"{where}: policy_kwargs.action_distribution: {exc}") from exc
        finally:
            env.close()
    return entry
