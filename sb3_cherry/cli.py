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
import json
import os
import pathlib
import sys
from typing import Any

import numpy as np
import yaml

import sb3_cherry
from sb3_cherry.common.config_schema import default_config, validate_config


def register_zoo() -> dict[str, type]:
    """
    Register sb3_cherry's algorithms in ``rl_zoo3.utils.ALGOS`` (and the PPORollback optuna sampler).

    :return: the registered ``{name: class}`` mapping
    """
    import rl_zoo3.utils

    algos = sb3_cherry.zoo_algorithms()
    rl_zoo3.utils.ALGOS.update(algos)
    try:
        from sb3_cherry.common.hyperparams_opt import register_samplers

        register_samplers()
    except ImportError:  # optuna is an rl_zoo3 dependency; tolerate its absence for non-optimize commands
        pass
    return algos


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
    validate_config(conf, algo, env_id)
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
    from rl_zoo3.utils import ALGOS, create_test_env, get_saved_hyperparams

    register_zoo()
    if args.model:
        model_path, exp_dir = pathlib.Path(args.model), pathlib.Path(args.model).parent
    else:
        model_path, exp_dir = find_model(args.folder, args.algo, args.env, args.exp_id)
    stats_path = exp_dir / args.env
    hyperparams, maybe_stats_path = get_saved_hyperparams(str(stats_path), norm_reward=False, test_mode=True)
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
