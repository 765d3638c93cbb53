"""
``sb3-cherry`` command line: a thin layer over rl_zoo3.

- ``train``: rl_zoo3 training with sb3_cherry's algorithms registered in ``rl_zoo3.utils.ALGOS`` and the config read
  from ``zoo_configs/<algo>.yml``; the config is validated first (unknown keys, wrong types, unknown distributions).
- ``enjoy``: rl_zoo3's ``enjoy`` (``--no-render`` for headless machines).
- ``evaluate``: mean ± std return and length over N episodes, number of failed episodes, optional JSON output.
- ``record``: write a demonstration file from a trained model (:mod:`sb3_cherry.demos`).

Every subcommand accepts ``-h``.
"""

import argparse
import inspect
import json
import os
import pathlib
import sys
from typing import Any

import gymnasium as gym
import numpy as np
import yaml

import sb3_cherry
from sb3_cherry.common.safe_config import (
    check_policy_kwargs,
    check_positive,
    parse_literal_string,
    parse_policy_kwargs,
    rl_zoo3_reads_safely,
    safe_load_yaml,
    saved_hyperparams,
)

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
#: Constructor arguments that the zoo sets itself
RESERVED_ARGS = {"self", "policy", "env", "_init_setup_model", "tensorboard_log", "verbose", "seed", "device"}


def register_zoo() -> dict[str, type]:
    """
    Register sb3_cherry's algorithms in ``rl_zoo3.utils.ALGOS`` (and the PPORollback optuna sampler).

    :return: the registered ``{name: class}`` mapping
    """
    import rl_zoo3.utils

    from sb3_cherry.common.vec_env.subproc_vec_env import use_in_rl_zoo3

    algos = sb3_cherry.zoo_algorithms()
    rl_zoo3.utils.ALGOS.update(algos)
    use_in_rl_zoo3()  # --vec-env subproc: worker failures name the worker and the env's exception
    try:
        from sb3_cherry.common.hyperparams_opt import register_samplers

        register_samplers()
    except ImportError:  # optuna is an rl_zoo3 dependency; tolerate its absence for non-optimize commands
        pass
    return algos


def default_config(algo: str) -> pathlib.Path:
    """
    The default config file of ``algo``: ``zoo_configs/<algo>.yml`` in the working directory, else the one shipped
    next to the package (source checkout / editable install).

    :param algo: algorithm name (``ppo_rollback``, ``cherry_a2c``, ...)
    :return: the path
    :raises FileNotFoundError: no config found
    """
    candidates = [
        pathlib.Path("zoo_configs") / f"{algo}.yml",
        pathlib.Path(__file__).parents[1] / "zoo_configs" / f"{algo}.yml",
    ]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"No config for algo {algo!r}: looked for {[str(c) for c in candidates]}. Pass -c <file.yml>.")


def _type_ok(value: Any, default: Any, key: str) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int) and not isinstance(default, bool):
        return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
    if isinstance(default, float):
        if isinstance(value, str):
            return key in SCHEDULE_KEYS and value.startswith("lin_")
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


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
    algos = sb3_cherry.zoo_algorithms()
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
    parameters = inspect.signature(algos[algo].__init__).parameters
    allowed = ZOO_KEYS | (set(parameters) - RESERVED_ARGS)
    for key, value in entry.items():
        if key not in allowed:
            raise ValueError(f"{where}: unknown hyperparameter {key!r} for {algo}. Allowed: {sorted(allowed)}.")
        default = parameters[key].default if key in parameters else None
        if default is not None and default is not inspect.Parameter.empty and not _type_ok(value, default, key):
            raise ValueError(
                f"{where}: hyperparameter {key!r}={value!r} has the wrong type (expected {type(default).__name__}"
                f"{' or lin_<value>' if key in SCHEDULE_KEYS else ''})."
            )
    if "n_timesteps" not in entry:
        raise ValueError(f"{where}: missing 'n_timesteps'.")
    check_positive(entry, where)
    policy_kwargs = parse_policy_kwargs(entry.get("policy_kwargs") or {}, f"{where} policy_kwargs")
    aliases = getattr(algos[algo], "policy_aliases", {})
    check_policy_kwargs(policy_kwargs, aliases.get(entry.get("policy", "MlpPolicy")), where)
    if "action_distribution" in policy_kwargs:
        from sb3_cherry.common.distributions import resolve_spec
        from sb3_cherry.common.policies import _tuple_from_list

        env = gym.make(env_id, **entry.get("env_kwargs", {}) or {})
        try:
            resolve_spec(env.action_space, _tuple_from_list(policy_kwargs["action_distribution"]))
        except ValueError as exc:
            raise ValueError(f"{where}: policy_kwargs.action_distribution: {exc}") from exc
        finally:
            env.close()
    return entry


def _policy_kwargs_namespace() -> dict[str, Any]:
    """Names rl_zoo3 makes available when it evaluates ``policy_kwargs`` strings."""
    import torch as th
    from torch import nn

    return {"nn": nn, "th": th, "dict": dict}


def _split_known(argv: list[str], flags: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Pull ``--flag value`` pairs out of argv (flags maps every spelling to a name); return them and the rest."""
    known, rest, i = {}, [], 0
    while i < len(argv):
        if argv[i] in flags and i + 1 < len(argv):
            known[flags[argv[i]]] = argv[i + 1]
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    return known, rest


def _hyperparams_overrides(argv: list[str]) -> dict[str, Any]:
    """The ``-params``/``--hyperparams key:value ...`` of a train command line, parsed as rl_zoo3 reads them."""
    overrides: dict[str, Any] = {}
    for i, flag in enumerate(argv):
        if flag not in ("-params", "--hyperparams"):
            continue
        for item in argv[i + 1 :]:
            if item.startswith("-") and ":" not in item:
                break
            key, _, value = item.partition(":")
            overrides[key] = parse_literal_string(value, f"{flag} {key}")
    return overrides


def cmd_train(argv: list[str]) -> None:
    """
    ``sb3-cherry train``: rl_zoo3's train with sb3_cherry registered (all of rl_zoo3's train flags work).

    :param argv: arguments after ``train``
    """
    if "-h" in argv or "--help" in argv:
        print(
            "usage: sb3-cherry train --algo ALGO --env ENV [-c CONFIG.yml] [rl_zoo3 train flags: -n N, --seed S, "
            "-f LOGS, --vec-env subproc, -P/--progress, -tb DIR, --eval-freq N, --save-freq N, -optimize, "
            "--n-trials N, -params key:value ...]\n\nDefault config: zoo_configs/<algo>.yml."
        )
        return
    known, rest = _split_known(argv, {"--algo": "algo", "--env": "env", "-c": "conf", "-conf": "conf", "--conf-file": "conf"})
    algo, env_id = known.get("algo", "ppo_rollback"), known.get("env", "CartPole-v1")
    conf = known.get("conf") or str(default_config(algo))
    validate_config(conf, algo, env_id, _hyperparams_overrides(rest))
    register_zoo()
    from rl_zoo3.train import train

    sys.argv = ["sb3-cherry train", "--algo", algo, "--env", env_id, "--conf-file", conf, *rest]
    train()


def cmd_enjoy(argv: list[str]) -> None:
    """
    ``sb3-cherry enjoy``: rl_zoo3's enjoy with sb3_cherry registered.

    :param argv: arguments after ``enjoy``
    """
    register_zoo()
    from rl_zoo3.enjoy import enjoy

    sys.argv = ["sb3-cherry enjoy", *argv]
    with rl_zoo3_reads_safely():  # the run's config.yml / args.yml as data, not rl_zoo3's yaml.UnsafeLoader
        enjoy()


def find_model(folder: str, algo: str, env_id: str, exp_id: int = 0) -> tuple[pathlib.Path, pathlib.Path]:
    """
    Locate a model trained by ``sb3-cherry train`` (rl_zoo3's layout ``<folder>/<algo>/<env>_<exp_id>/``).

    :param folder: log folder
    :param algo: algorithm name
    :param env_id: environment id
    :param exp_id: experiment id (0: latest)
    :return: the model file and the experiment folder
    """
    from huggingface_sb3 import EnvironmentName
    from rl_zoo3.utils import get_latest_run_id

    env_name = str(EnvironmentName(env_id))
    log_path = pathlib.Path(folder) / algo
    if exp_id == 0:
        exp_id = get_latest_run_id(str(log_path), env_name)
    exp_dir = log_path / f"{env_name}_{exp_id}"
    for name in (f"{env_name}.zip", "best_model.zip"):
        if (exp_dir / name).exists():
            return exp_dir / name, exp_dir
    raise FileNotFoundError(f"No trained model in {exp_dir} (looked for {env_name}.zip, best_model.zip).")


def evaluate_model(
    model: Any,
    env: Any,
    n_episodes: int = 10,
    deterministic: bool = True,
    fail_below: float | None = None,
    fail_on_termination: bool = False,
) -> dict[str, Any]:
    """
    Run ``n_episodes`` episodes and summarise them.

    An episode counts as *failed* when its return is below ``fail_below`` (if given), or when it ended by termination
    rather than time-limit truncation and ``fail_on_termination`` is set (e.g. the pole fell, the walker fell).

    :param model: a trained SB3 model
    :param env: a VecEnv with one environment (wrapped with Monitor by rl_zoo3 / SB3)
    :param n_episodes: number of episodes
    :param deterministic: deterministic actions
    :param fail_below: return threshold of a failed episode
    :param fail_on_termination: count terminated (not truncated) episodes as failed
    :return: dict with mean/std return and length, n_failed, n_episodes and the per-episode returns
    """
    returns, lengths, failed = [], [], 0
    obs = env.reset()
    state, episode_start = None, np.ones((env.num_envs,), dtype=bool)
    ep_return, ep_len = 0.0, 0
    while len(returns) < n_episodes:
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        obs, reward, done, infos = env.step(action)
        episode_start = done
        ep_return += float(reward[0])
        ep_len += 1
        if done[0]:
            info = infos[0]
            # Monitor reports the unnormalised return when rewards are normalised
            if "episode" in info:
                ep_return, ep_len = float(info["episode"]["r"]), int(info["episode"]["l"])
            terminated = not info.get("TimeLimit.truncated", False)
            failed += int((fail_below is not None and ep_return < fail_below) or (fail_on_termination and terminated))
            returns.append(ep_return)
            lengths.append(ep_len)
            ep_return, ep_len = 0.0, 0
    return {
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "mean_length": float(np.mean(lengths)),
        "std_length": float(np.std(lengths)),
        "n_failed": failed,
        "n_episodes": n_episodes,
        "returns": returns,
    }


def _eval_defaults(env_id: str) -> dict[str, Any]:
    """Per-env failure definitions from ``zoo_configs/evaluation.yml`` (if present)."""
    try:
        path = default_config("evaluation")
    except FileNotFoundError:
        return {}
    with open(path) as file:
        return (yaml.safe_load(file) or {}).get(env_id, {})


def _load_for_eval(args: argparse.Namespace) -> tuple[Any, Any]:
    """Load a model and build its evaluation env (with the saved normalisation statistics)."""
    from rl_zoo3.utils import ALGOS, create_test_env

    register_zoo()
    if args.model:
        model_path, exp_dir = pathlib.Path(args.model), pathlib.Path(args.model).parent
    else:
        model_path, exp_dir = find_model(args.folder, args.algo, args.env, args.exp_id)
    stats_path = exp_dir / args.env
    hyperparams, maybe_stats_path = saved_hyperparams(str(stats_path), norm_reward=False, test_mode=True)
    with rl_zoo3_reads_safely():  # vecnormalize.pkl through a restricted unpickler
        env = create_test_env(
            args.env,
            n_envs=1,
            stats_path=maybe_stats_path,
            seed=args.seed,
            log_dir=None,
            should_render=False,
            hyperparams=hyperparams,
        )
    model = ALGOS[args.algo].load(model_path, env=env, device="cpu")
    return model, env


def cmd_evaluate(argv: list[str]) -> dict[str, Any]:
    """
    ``sb3-cherry evaluate``: mean ± std return and length, number of failed episodes.

    :param argv: arguments after ``evaluate``
    :return: the summary (also printed)
    """
    parser = argparse.ArgumentParser(prog="sb3-cherry evaluate", description=cmd_evaluate.__doc__)
    parser.add_argument("--algo", default="ppo_rollback")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("-f", "--folder", default="logs", help="log folder of `sb3-cherry train`")
    parser.add_argument("--exp-id", type=int, default=0, help="experiment id (0: latest)")
    parser.add_argument("--model", help="path to a model .zip (instead of --folder/--exp-id)")
    parser.add_argument("-n", "--n-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the mode")
    parser.add_argument("--fail-below", type=float, default=None, help="an episode with a lower return is a failure")
    parser.add_argument("--fail-on-termination", action="store_true", default=None, help="termination counts as failure")
    parser.add_argument("--json", dest="json_path", help="also write the summary to this JSON file ('-' for stdout)")
    args = parser.parse_args(argv)
    if args.n_episodes < 1:
        raise ValueError(f"-n/--n-episodes must be at least 1, got {args.n_episodes}.")
    defaults = _eval_defaults(args.env)
    fail_below = args.fail_below if args.fail_below is not None else defaults.get("fail_below")
    fail_on_termination = (
        args.fail_on_termination if args.fail_on_termination is not None else defaults.get("fail_on_termination", False)
    )
    model, env = _load_for_eval(args)
    summary = evaluate_model(model, env, args.n_episodes, not args.stochastic, fail_below, bool(fail_on_termination))
    env.close()
    summary.update(algo=args.algo, env=args.env)
    print(
        f"{args.algo} on {args.env}: mean return {summary['mean_return']:.2f} ± {summary['std_return']:.2f}, "
        f"mean length {summary['mean_length']:.1f} ± {summary['std_length']:.1f} over {args.n_episodes} episodes, "
        f"{summary['n_failed']} fails out of {args.n_episodes}"
    )
    if args.json_path == "-":
        print(json.dumps(summary, indent=2))
    elif args.json_path:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_path)), exist_ok=True)
        with open(args.json_path, "w") as file:
            json.dump(summary, file, indent=2)
    return summary


def cmd_record(argv: list[str]) -> None:
    """
    ``sb3-cherry record``: write a demonstration file from a trained model.

    :param argv: arguments after ``record``
    """
    parser = argparse.ArgumentParser(prog="sb3-cherry record", description=cmd_record.__doc__)
    parser.add_argument("--algo", default="ppo_rollback")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("-f", "--folder", default="logs")
    parser.add_argument("--exp-id", type=int, default=0)
    parser.add_argument("--model", help="path to a model .zip (instead of --folder/--exp-id)")
    parser.add_argument("-n", "--n-episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stochastic", action="store_true")
    parser.add_argument("-o", "--output", required=True, help="demonstration file to write (.npz)")
    args = parser.parse_args(argv)
    from sb3_cherry.demos import record_demos

    model, env = _load_for_eval(args)
    trajectories = record_demos(model, env, args.n_episodes, args.output, deterministic=not args.stochastic)
    returns = [float(np.sum(t.rews)) for t in trajectories]
    print(f"Wrote {len(trajectories)} episodes to {args.output} (mean return {np.mean(returns):.2f} ± {np.std(returns):.2f})")


COMMANDS = {"train": cmd_train, "enjoy": cmd_enjoy, "evaluate": cmd_evaluate, "record": cmd_record}


def main(argv: list[str] | None = None) -> None:
    """
    Entry point of ``sb3-cherry`` / ``python -m sb3_cherry``.

    :param argv: command line arguments (default: ``sys.argv[1:]``)
    """
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        print(f"usage: sb3-cherry {{{','.join(COMMANDS)}}} [-h] ...")
        if argv and argv[0] not in ("-h", "--help"):
            sys.exit(2)
        return
    try:
        COMMANDS[argv[0]](argv[1:])
    except (ValueError, FileNotFoundError) as exc:
        print(f"sb3-cherry {argv[0]}: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
