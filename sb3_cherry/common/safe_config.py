"""
Configs are data: a YAML loader that builds only plain values, and a restricted parser for the ``policy_kwargs`` /
``normalize`` strings of rl-zoo configs.

Nothing here calls ``eval`` or imports a name found in a file: a string is parsed with :mod:`ast` and only literals,
``dict(...)`` and the names of :func:`allowed_names` (activation functions, optimizers, SB3 feature extractors) are
accepted. Anything else raises :class:`UnsafeConfigError` naming the offending piece, before anything runs.
"""

import ast
import collections
import math
import pathlib
import sys
from collections.abc import Callable, Mapping
from typing import IO, Any

import yaml

#: The one non-standard YAML tag accepted: rl_zoo3 writes ``config.yml`` / ``args.yml`` as an OrderedDict
ORDERED_DICT_TAG = "tag:yaml.org,2002:python/object/apply:collections.OrderedDict"


class UnsafeConfigError(ValueError):
    """A config value that is not plain data (a call, an attribute or a name outside the allow-list)."""


class SafeConfigLoader(yaml.SafeLoader):
    """
    ``yaml.SafeLoader`` that also reads rl_zoo3's ``!!python/object/apply:collections.OrderedDict`` tag (as a plain
    ``dict``, insertion order kept) and its ``!!python/name:`` tag for the classes of :func:`allowed_names` (no
    import). Every other ``!!python/...`` tag is refused, as by ``yaml.safe_load``.
    """


def _construct_ordered_dict(loader: SafeConfigLoader, node: yaml.Node) -> dict[str, Any]:
    """The OrderedDict tag as rl_zoo3 writes it: a sequence whose only item is the list of ``[key, value]`` pairs."""
    if not isinstance(node, yaml.SequenceNode):
        raise yaml.constructor.ConstructorError(
            None,
            None,
            "collections.OrderedDict is only read in rl_zoo3's form (a list of [key, value] pairs)",
            node.start_mark,
        )
    args = loader.construct_sequence(node, deep=True)
    pairs = args[0] if len(args) == 1 else None
    if not isinstance(pairs, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], (str, int, float, bool, type(None)))
        for pair in pairs
    ):
        raise yaml.constructor.ConstructorError(
            None, None, "collections.OrderedDict must hold one list of [key, value] pairs (scalar keys)", node.start_mark
        )
    return dict((key, value) for key, value in pairs)


SafeConfigLoader.add_constructor(ORDERED_DICT_TAG, _construct_ordered_dict)

PYTHON_NAME_TAG = "tag:yaml.org,2002:python/name:"


def _construct_allowed_name(loader: SafeConfigLoader, suffix: str, node: yaml.Node) -> Any:
    """
    rl_zoo3's ``!!python/name:torch.nn.modules.activation.ReLU`` (written into a run's config.yml / args.yml when
    ``-params`` gave a class): the object if it is one of :func:`allowed_names`, looked up by its import path without
    importing anything; any other name is refused.
    """
    by_path = {f"{obj.__module__}.{obj.__qualname__}": obj for obj in allowed_names().values() if isinstance(obj, type)}
    if suffix not in by_path:
        raise yaml.constructor.ConstructorError(
            None, None, f"python/name:{suffix} is not one of the allowed classes (activations, optimizers, extractors)",
            node.start_mark,
        )  # fmt: skip
    return by_path[suffix]


SafeConfigLoader.add_multi_constructor(PYTHON_NAME_TAG, _construct_allowed_name)


#: The most values a YAML document may expand to, each alias counted as the copy it stands for: an alias is loaded
#: as a reference, so a small file of nested aliases ("billion laughs") only blows up when printed or copied
MAX_YAML_NODES = 1_000_000


def _expands_within(document: Any, limit: int) -> bool:
    """Whether ``document``, aliases expanded, holds at most ``limit`` values (stops counting at ``limit``)."""
    count, stack = 0, [document]
    while stack:
        value = stack.pop()
        count += 1
        if count > limit:
            return False
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return True


def safe_load_yaml(source: str | pathlib.Path | IO[str]) -> Any:
    """
    Read a YAML file as plain data (:class:`SafeConfigLoader`).

    :param source: a path or an open text stream
    :return: the document
    :raises ValueError: a YAML syntax error or a tag that would build an object (naming the file and line)
    """
    name = str(source) if isinstance(source, (str, pathlib.Path)) else getattr(source, "name", "<stream>")
    try:
        if isinstance(source, (str, pathlib.Path)):
            with open(source) as file:
                document = yaml.load(file, Loader=SafeConfigLoader)
        else:
            document = yaml.load(source, Loader=SafeConfigLoader)
        if not _expands_within(document, MAX_YAML_NODES):
            raise ValueError(
                f"{name}: the document's anchors and aliases expand to more than {MAX_YAML_NODES} values, which is "
                "refused (a configuration has a few hundred)."
            )
        return document
    except yaml.constructor.ConstructorError as exc:
        raise UnsafeConfigError(
            f"{name}: refused a YAML tag that builds a Python object ({exc.problem}{_where(exc)}); configs are plain "
            "data: remove the tag."
        ) from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{name}: YAML syntax error{_where(exc)}: {getattr(exc, 'problem', None) or exc}.") from exc
    except (RecursionError, MemoryError):
        raise ValueError(f"{name}: the YAML document is nested too deeply to be a configuration.") from None


def check_yaml_config(path: str) -> None:
    """
    Refuse a config file rl_zoo3 would not read as YAML: it runs a ``.py`` config as code and imports any other name as
    a module (it tests these suffixes, lower case).

    :param path: the config given with ``-c`` (in any spelling of the option)
    :raises ValueError: not a ``.yml`` / ``.yaml`` file
    """
    if not str(path).endswith((".yml", ".yaml")):
        raise ValueError(f"-c {path}: sb3-cherry reads YAML configs only; give the file a .yml or .yaml name.")


def _where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def allowed_names() -> dict[str, Any]:
    """
    The names a ``policy_kwargs`` string may use, each under the spellings rl-zoo configs use (``nn.ReLU``,
    ``th.nn.ReLU``, ``torch.nn.ReLU``; ``th.optim.Adam``; ``NatureCNN``, ...).

    :return: ``{dotted name: object}``
    """
    import torch as th
    from stable_baselines3.common import torch_layers
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
    from torch import nn

    names: dict[str, Any] = {}
    activations = ["ReLU", "Tanh", "ELU", "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Softplus", "SELU", "Mish", "Identity"]
    for name in activations:
        for prefix in ("nn.", "th.nn.", "torch.nn."):
            names[prefix + name] = getattr(nn, name)
    for name in ("LSTM", "GRU"):
        for prefix in ("nn.", "th.nn.", "torch.nn."):
            names[prefix + name] = getattr(nn, name)
    for name in ("Adam", "AdamW", "RMSprop", "SGD"):
        for prefix in ("th.optim.", "torch.optim.", "optim."):
            names[prefix + name] = getattr(th.optim, name)
    names["RMSpropTFLike"] = RMSpropTFLike
    for name in ("NatureCNN", "FlattenExtractor", "CombinedExtractor", "MlpExtractor"):
        names[name] = getattr(torch_layers, name)
        names[f"stable_baselines3.common.torch_layers.{name}"] = getattr(torch_layers, name)
    for value in ("float32", "float64"):
        names[f"th.{value}"] = getattr(th, value)
    return names


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def literal_value(
    node: ast.AST,
    names: Mapping[str, Any],
    calls: Mapping[str, Callable[..., Any]],
    where: str,
) -> Any:
    """
    Evaluate an :mod:`ast` expression made of literals, containers, unary signs, the given ``names`` (dotted names
    allowed) and calls to the given ``calls`` whose arguments are themselves such expressions.

    :param node: the expression
    :param names: names that may appear (``{"nn.ReLU": nn.ReLU, "inf": math.inf, ...}``)
    :param calls: callables that may be called, by name (``{"dict": dict}``)
    :param where: what is being parsed, for the error message
    :return: the value
    :raises UnsafeConfigError: any other construct
    """
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [literal_value(item, names, calls, where) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise UnsafeConfigError(f"{where}: '**' unpacking is not allowed.")
        return {
            literal_value(key, names, calls, where): literal_value(value, names, calls, where)  # type: ignore[arg-type]
            for key, value in zip(node.keys, node.values, strict=True)
        }
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = literal_value(node.operand, names, calls, where)
        if isinstance(operand, (int, float)) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
        raise UnsafeConfigError(f"{where}: a sign only applies to a number.")
    dotted = _dotted(node)
    if dotted is not None:
        if dotted in names:
            return names[dotted]
        raise UnsafeConfigError(f"{where}: name {dotted!r} is not allowed. Allowed names: {sorted(names)}.")
    if isinstance(node, ast.Call):
        func = _dotted(node.func)
        if func is None or func not in calls:
            raise UnsafeConfigError(
                f"{where}: call of {ast.unparse(node.func)!r} is not allowed (only {sorted(calls)} can be called)."
            )
        if any(keyword.arg is None for keyword in node.keywords):
            raise UnsafeConfigError(f"{where}: '**' unpacking is not allowed.")
        args = [literal_value(arg, names, calls, where) for arg in node.args]
        kwargs = {keyword.arg: literal_value(keyword.value, names, calls, where) for keyword in node.keywords}
        return calls[func](*args, **kwargs)  # type: ignore[arg-type]
    raise UnsafeConfigError(f"{where}: {ast.unparse(node)!r} is not a literal, dict(...) or an allowed name.")


#: The longest ``policy_kwargs`` / ``normalize`` / ``key:value`` string parsed (a config's are a few hundred characters)
MAX_LITERAL_LENGTH = 100_000


def parse_literal_string(text: str, where: str, names: Mapping[str, Any] | None = None) -> Any:
    """
    Parse a ``policy_kwargs`` / ``normalize`` string of an rl-zoo config without evaluating it: literals,
    ``dict(...)``, ``inf``/``nan`` and the names of :func:`allowed_names`.

    :param text: the string, e.g. ``"dict(activation_fn=nn.ReLU, net_arch=dict(pi=[64], vf=[64]))"``
    :param where: what is being parsed (file, env and key), for the error message
    :param names: the allowed names (default: :func:`allowed_names`)
    :return: the value
    :raises UnsafeConfigError: a call, attribute or name outside the allow-list, or a syntax error
    """
    if len(text) > MAX_LITERAL_LENGTH:
        raise UnsafeConfigError(f"{where}: a string of {len(text)} characters is refused (at most {MAX_LITERAL_LENGTH}).")
    try:
        tree = ast.parse(text.strip(), mode="eval")
        allowed = {**(allowed_names() if names is None else names), "inf": math.inf, "nan": math.nan}
        return literal_value(tree.body, allowed, {"dict": dict, "OrderedDict": collections.OrderedDict}, where)
    except SyntaxError as exc:
        raise UnsafeConfigError(f"{where}: cannot parse {text[:200]!r}: {exc.msg}.") from exc
    except (RecursionError, MemoryError):  # (ast and the parser recurse per nesting level: '-' * 3000 + '1')
        raise UnsafeConfigError(f"{where}: {text[:80]!r}... is nested too deeply to be a configuration value.") from None


def parse_policy_kwargs(text: str | dict[str, Any], where: str = "policy_kwargs") -> dict[str, Any]:
    """
    The ``policy_kwargs`` of a config as a dict (strings parsed by :func:`parse_literal_string`).

    :param text: the config value (a string or already a dict)
    :param where: what is being parsed, for the error message
    :return: the keyword arguments
    :raises UnsafeConfigError: the string is not plain data or not a dict
    """
    value = parse_literal_string(text, where) if isinstance(text, str) else text
    if not isinstance(value, dict):
        raise UnsafeConfigError(f"{where}: expected a dict, got {type(value).__name__} ({text!r}).")
    return value


def policy_kwargs_keys(policy_class: type) -> set[str] | None:
    """
    The keyword arguments ``policy_class`` accepts: its ``__init__`` parameters and, through ``**kwargs``, those of
    its bases.

    :param policy_class: the policy class
    :return: the names, or None when some ``__init__`` takes ``**kwargs`` without passing them to a base we can see
    """
    import inspect

    keys: set[str] = set()
    for klass in policy_class.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(vars(klass)["__init__"]).parameters.values()
        keys |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return keys - {"self", "observation_space", "action_space", "lr_schedule"}
    return None


def check_policy_kwargs(policy_kwargs: Mapping[str, Any], policy_class: type | None, where: str) -> None:
    """
    Refuse ``policy_kwargs`` keys that ``policy_class`` does not accept (a typo would otherwise fail late, or not at
    all when the policy swallows ``**kwargs``).

    :param policy_kwargs: the parsed keyword arguments
    :param policy_class: the policy class (None: not checked)
    :param where: file, env and key, for the error message
    :raises ValueError: an unknown key, naming the accepted ones
    """
    if policy_class is None:
        return
    keys = policy_kwargs_keys(policy_class)
    if keys is None:
        return
    unknown = sorted(set(policy_kwargs) - keys)
    if unknown:
        raise ValueError(
            f"{where}: unknown policy_kwargs key(s) {unknown} for {policy_class.__name__}. Accepted: {sorted(keys)}."
        )


#: Hyperparameters that must be integers >= 1
POSITIVE_KEYS = ("n_steps", "batch_size", "n_epochs", "n_envs", "n_timesteps")


def check_positive(entry: Mapping[str, Any], where: str) -> None:
    """
    Refuse counts below 1 (``n_steps: 0`` would otherwise create a run folder and fail inside SB3).

    :param entry: the config entry (overrides merged)
    :param where: file and env, for the error message
    :raises ValueError: naming the key
    """
    for key in POSITIVE_KEYS:
        value = entry.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 1:
            raise ValueError(f"{where}: {key}={value!r} must be at least 1.")


#: Packages whose classes a run folder's config may name as ``env_wrapper`` / ``vec_env_wrapper`` / ``callback``
TRUSTED_WRAPPER_PACKAGES = ("gymnasium", "stable_baselines3", "sb3_contrib", "rl_zoo3", "sb3_cherry")


def _imported_base(key: str) -> type:
    """
    The class a config's ``key`` (``env_wrapper``, ``vec_env_wrapper``, ``callback``, ``policy``,
    ``rollout_buffer_class``) must subclass.
    """
    import gymnasium as gym
    from stable_baselines3.common.buffers import RolloutBuffer
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.policies import BasePolicy
    from stable_baselines3.common.vec_env import VecEnvWrapper

    return {
        "env_wrapper": gym.Wrapper,
        "vec_env_wrapper": VecEnvWrapper,
        "callback": BaseCallback,
        "policy": BasePolicy,
        "rollout_buffer_class": RolloutBuffer,
    }[key]


#: Modules of the trusted packages whose classes a run folder may name although not imported yet: libraries of
#: classes. Any other module must already be imported: some are scripts that run on import (``rl_zoo3.benchmark``
#: parses ``sys.argv`` and reads files with ``yaml.UnsafeLoader``)
IMPORTABLE_MODULES = (
    "gymnasium.wrappers",
    "stable_baselines3.common",
    "sb3_contrib.common",
    "rl_zoo3.wrappers",
    "rl_zoo3.callbacks",
    "sb3_cherry.common",
    "sb3_cherry.envs",
)

#: Keyword arguments of a run folder's wrapper / callback classes that name files or folders: refused, so that a
#: downloaded run folder cannot make evaluate / --resume write outside it (``Monitor(filename=...)``,
#: ``CheckpointCallback(save_path=...)``)
PATH_ARGUMENTS = frozenset(
    {"filename", "save_path", "log_path", "log_dir", "video_folder", "best_model_save_path", "path", "folder"}
)


def _check_class(name: str, key: str, where: str, trusted_only: bool = False) -> None:
    """
    Resolve ``name`` as rl_zoo3 does (module, then attribute) and require a subclass of ``key``'s base class; with
    ``trusted_only``, a module not imported yet must be one of :data:`IMPORTABLE_MODULES`.
    """
    import importlib

    module_name, _, attribute = name.rpartition(".")
    if (
        trusted_only
        and module_name not in sys.modules
        and not any(module_name == m or module_name.startswith(m + ".") for m in IMPORTABLE_MODULES)
    ):
        raise UnsafeConfigError(
            f"{where}: {key} {name!r} is in module {module_name!r}, which is not a library of wrapper / callback / "
            f"policy classes ({list(IMPORTABLE_MODULES)}); importing it could run code. Remove it."
        )
    try:
        value = getattr(importlib.import_module(module_name), attribute) if module_name else None
    except (ImportError, AttributeError) as exc:
        raise UnsafeConfigError(f"{where}: {key} {name!r} cannot be imported ({exc}).") from None
    base = _imported_base(key)
    if not (isinstance(value, type) and issubclass(value, base)):
        raise UnsafeConfigError(
            f"{where}: {key} {name!r} is not a {base.__name__} subclass; it would be called with the config's "
            "arguments. Name a class."
        )


def check_imported_names(hyperparams: Mapping[str, Any], where: str, trusted_only: bool = True) -> None:
    """
    rl_zoo3 imports the classes a config names as ``env_wrapper``, ``vec_env_wrapper`` and ``callback`` and calls them
    with keyword arguments from the config, and imports a dotted ``policy`` name; sb3-cherry imports a
    ``rollout_buffer_class`` name, also one in GAIL / AIRL's ``generator_kwargs`` (:func:`resolve_rollout_buffer_class`).
    Each name must be a class of the right kind (a ``gymnasium.Wrapper``, a ``VecEnvWrapper``, a ``BaseCallback``, a
    ``BasePolicy``, a ``RolloutBuffer`` subclass: a function such as ``os.system`` is refused), and with
    ``trusted_only`` (a run folder you did not write) from :data:`TRUSTED_WRAPPER_PACKAGES` (a policy alias such as
    ``MlpPolicy`` imports nothing); a ``rollout_buffer_class`` always (a run naming another package's could not be
    evaluated or resumed). A run folder's ``frame_stack`` is at most :data:`MAX_FRAME_STACK`.

    :param hyperparams: the run's hyperparameters
    :param where: the file, for the error message
    :param trusted_only: accept only names from :data:`TRUSTED_WRAPPER_PACKAGES` (run folders); False for a config
        given with ``-c``, whose own packages' classes are allowed
    :raises UnsafeConfigError: another name
    """
    for key in ("env_wrapper", "vec_env_wrapper", "callback"):
        value = hyperparams.get(key)
        items = value if isinstance(value, list) else [value] if value is not None else []
        names = [name for item in items for name in (item if isinstance(item, dict) else [item])]
        for name in names:
            if not isinstance(name, str) or (trusted_only and name.split(".")[0] not in TRUSTED_WRAPPER_PACKAGES):
                raise UnsafeConfigError(
                    f"{where}: {key} {name!r} is not a class of {list(TRUSTED_WRAPPER_PACKAGES)}; rl_zoo3 would import "
                    "and call it. Remove it, or run the folder's code only if you trust it."
                )
            _check_class(name, key, where, trusted_only)
        if trusted_only:
            for item in items:
                arguments = next(iter(item.values()), None) if isinstance(item, dict) and len(item) == 1 else None
                paths = sorted(PATH_ARGUMENTS & set(arguments)) if isinstance(arguments, dict) else []
                if paths:
                    raise UnsafeConfigError(
                        f"{where}: {key} {next(iter(item))!r} is given the file / folder argument(s) {paths}: a run "
                        "folder's config cannot choose where the sb3-cherry commands write. Remove them."
                    )
    policy = hyperparams.get("policy")
    if isinstance(policy, str) and "." in policy:
        if trusted_only and policy.split(".")[0] not in TRUSTED_WRAPPER_PACKAGES:
            raise UnsafeConfigError(
                f"{where}: policy {policy!r} is not a class of {list(TRUSTED_WRAPPER_PACKAGES)}; rl_zoo3 would import "
                "its module, which the sb3-cherry commands do not do for a run folder. If you trust it, load the model "
                f"in Python with your class: <Algo>.load(path, custom_objects={{'policy_class': {policy.split('.')[-1]}}}); "
                "otherwise train with a policy alias (MlpPolicy, CnnPolicy, MultiInputPolicy)."
            )
        _check_class(policy, "policy", where, trusted_only)
    if trusted_only:  # a run folder's config chooses how much rl_zoo3 allocates (VecFrameStack repeats the obs)
        frame_stack = hyperparams.get("frame_stack")
        if frame_stack not in (None, False) and not (
            isinstance(frame_stack, int) and not isinstance(frame_stack, bool) and 1 <= frame_stack <= MAX_FRAME_STACK
        ):
            raise UnsafeConfigError(
                f"{where}: frame_stack={frame_stack!r} is not a number of frames from 1 to {MAX_FRAME_STACK}: the file "
                "is damaged or crafted."
            )
    nested = hyperparams.get("generator_kwargs")  # GAIL / AIRL pass it on to their generator
    for kwargs, at in ((hyperparams, where), (nested if isinstance(nested, Mapping) else {}, f"{where} generator_kwargs")):
        _check_buffer_class(kwargs.get("rollout_buffer_class"), at)


#: The most frames a run folder's ``frame_stack`` may stack
MAX_FRAME_STACK = 1024


def _check_buffer_class(buffer: Any, where: str) -> None:
    """
    A config's ``rollout_buffer_class``: the dotted name of a ``RolloutBuffer`` subclass of the trusted packages (a
    class of your own module is given from Python: every command that reads the run folder afterwards, ``evaluate``,
    ``--resume``, imports only those packages' classes).
    """
    if buffer is None or isinstance(buffer, type):
        return
    if not isinstance(buffer, str) or "." not in buffer:
        raise UnsafeConfigError(
            f"{where}: rollout_buffer_class {buffer!r} must be the dotted name of a RolloutBuffer subclass, e.g. "
            "sb3_cherry.common.buffers.CherryRolloutBuffer (or left out: the algorithm's own buffer)."
        )
    if buffer.split(".")[0] not in TRUSTED_WRAPPER_PACKAGES:
        raise UnsafeConfigError(
            f"{where}: rollout_buffer_class {buffer!r} is not a class of {list(TRUSTED_WRAPPER_PACKAGES)}: a run folder "
            "naming it could not be evaluated or resumed (those commands import no other package's module). Train "
            "from Python with your class (PPORollback(..., rollout_buffer_class=MyBuffer)), or name a class of those "
            "packages."
        )
    _check_class(buffer, "rollout_buffer_class", where, trusted_only=True)


def resolve_rollout_buffer_class(hyperparams: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """
    The config with a ``rollout_buffer_class`` string (a dotted class name), also one in GAIL / AIRL's
    ``generator_kwargs``, replaced by the class, which the algorithms need (rl_zoo3 passes the string on); the name
    is checked first as :func:`check_imported_names` checks it.

    :param hyperparams: the config entry
    :param where: the file and env, for the error message
    :return: a copy with the classes, or ``hyperparams`` itself when there is no string to resolve
    :raises UnsafeConfigError: a name that is not a ``RolloutBuffer`` subclass of the trusted packages
    """
    import importlib

    def resolved(kwargs: dict[str, Any], at: str) -> dict[str, Any]:
        name = kwargs.get("rollout_buffer_class")
        if not isinstance(name, str):
            return kwargs
        _check_buffer_class(name, at)
        module_name, _, attribute = name.rpartition(".")
        return {**kwargs, "rollout_buffer_class": getattr(importlib.import_module(module_name), attribute)}

    hyperparams = resolved(hyperparams, where)
    if isinstance(hyperparams.get("generator_kwargs"), dict):
        hyperparams = {
            **hyperparams,
            "generator_kwargs": resolved(hyperparams["generator_kwargs"], f"{where} generator_kwargs"),
        }
    return hyperparams


def saved_hyperparams(
    stats_path: str, norm_reward: bool = False, test_mode: bool = False
) -> tuple[dict[str, Any], str | None]:
    """
    rl_zoo3's ``get_saved_hyperparams`` reading the run's ``config.yml`` as data (:func:`safe_load_yaml`) and its
    ``normalize`` string with :func:`parse_literal_string` (rl_zoo3 uses ``yaml.UnsafeLoader`` and ``eval``).

    :param stats_path: the run's ``<env>`` folder
    :param norm_reward: normalise rewards (test mode)
    :param test_mode: evaluation: ``norm_reward`` overrides the saved value
    :return: the hyperparameters (with ``normalize_kwargs``) and the stats path (None when the folder is missing)
    """
    import os

    hyperparams: dict[str, Any] = {}
    if not os.path.isdir(stats_path):
        return hyperparams, None
    config_file = os.path.join(stats_path, "config.yml")
    if os.path.isfile(config_file):
        hyperparams = safe_load_yaml(config_file) or {}
        if not isinstance(hyperparams, dict):
            raise ValueError(f"{config_file}: expected a mapping of hyperparameters, got {type(hyperparams).__name__}.")
        check_imported_names(hyperparams, config_file)
        hyperparams["normalize"] = hyperparams.get("normalize", False)
    else:
        hyperparams["normalize"] = os.path.isfile(os.path.join(stats_path, "obs_rms.pkl"))
    normalize = hyperparams["normalize"]
    if normalize:
        if isinstance(normalize, str):
            normalize_kwargs = parse_literal_string(normalize, f"{config_file} [normalize]")
            if not isinstance(normalize_kwargs, dict):
                raise ValueError(f"{config_file}: normalize must be a bool or a dict, got {normalize!r}.")
            if test_mode:
                normalize_kwargs["norm_reward"] = norm_reward
        elif isinstance(normalize, dict):
            normalize_kwargs = normalize
        else:
            normalize_kwargs = {"norm_obs": normalize, "norm_reward": norm_reward}
        hyperparams["normalize_kwargs"] = normalize_kwargs
    return hyperparams, stats_path


class _SafeYamlModule:
    """Stands in for the ``yaml`` module inside rl_zoo3's ``enjoy``: every ``yaml.load`` reads data only."""

    def __getattr__(self, name: str) -> Any:
        return getattr(yaml, name)

    @staticmethod
    def load(stream: Any, Loader: Any = None) -> Any:
        """
        :param stream: the YAML stream
        :param Loader: ignored (rl_zoo3 asks for ``yaml.UnsafeLoader``)
        :return: the document, read by :class:`SafeConfigLoader`
        """
        return safe_load_yaml(stream)


class rl_zoo3_reads_safely:
    """
    Within the block, rl_zoo3's ``enjoy`` reads a run's ``config.yml`` / ``args.yml`` with :class:`SafeConfigLoader`
    and its ``normalize`` string with the restricted parser (it uses ``yaml.UnsafeLoader`` and ``eval``).
    """

    def __enter__(self) -> "rl_zoo3_reads_safely":
        import rl_zoo3.enjoy
        import rl_zoo3.utils

        self._saved = (rl_zoo3.enjoy.get_saved_hyperparams, rl_zoo3.enjoy.yaml, rl_zoo3.utils.VecNormalize)
        rl_zoo3.enjoy.get_saved_hyperparams = saved_hyperparams
        rl_zoo3.enjoy.yaml = _SafeYamlModule()  # type: ignore[assignment]
        rl_zoo3.utils.VecNormalize = _safe_vec_normalize_class()  # type: ignore[misc,assignment]
        return self

    def __exit__(self, *exc_info: Any) -> None:
        import rl_zoo3.enjoy
        import rl_zoo3.utils

        rl_zoo3.enjoy.get_saved_hyperparams, rl_zoo3.enjoy.yaml = self._saved[:2]
        rl_zoo3.utils.VecNormalize = self._saved[2]  # type: ignore[misc]


def _safe_vec_normalize_class() -> type:
    """``VecNormalize`` whose ``load`` resolves only the globals a VecNormalize pickle needs (for ``create_test_env``)."""
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_cherry.common.restricted_pickle import load_vec_normalize

    class SafeVecNormalize(VecNormalize):
        @staticmethod
        def load(load_path: str, venv: Any) -> VecNormalize:  # type: ignore[override]
            """
            :param load_path: the ``vecnormalize.pkl`` file
            :param venv: the VecEnv to wrap
            :return: the loaded wrapper
            """
            return load_vec_normalize(load_path, venv)

    return SafeVecNormalize
