"""
``sb3-cherry`` command line: a thin layer over rl_zoo3.

- ``train``: rl_zoo3 training with sb3_cherry's algorithms registered in ``rl_zoo3.utils.ALGOS`` and the config read
  from the shipped ``zoo_configs/<algo>.yml`` (or ``-c FILE``); the config is validated first (unknown keys, wrong
  types, unknown distributions).
- ``enjoy``: rl_zoo3's ``enjoy`` (``--no-render`` for headless machines).
- ``evaluate``: mean ± std return and length over N episodes (SB3's ``evaluate_policy``), number of failed episodes,
  optional JSON output.
- ``record``: write a demonstration file from a trained model (:mod:`sb3_cherry.demos`).
- ``video``: an MP4 (and with ``--gif`` a GIF) of a trained agent (SB3's ``VecVideoRecorder``, as rl_zoo3's
  ``record_video``).

Every subcommand accepts ``-h``; the help texts are plain text (:data:`USAGE`).
"""

import argparse
import contextlib
import io
import json
import math
import os
import pathlib
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import yaml
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecVideoRecorder

import sb3_cherry
from sb3_cherry.common.config_schema import default_config, validate_config
from sb3_cherry.common.safe_config import (
    UnsafeConfigError,
    check_yaml_config,
    parse_literal_string,
    rl_zoo3_reads_safely,
    saved_hyperparams,
)
from sb3_cherry.common.save_util import atomic_write

#: One line per subcommand, printed by ``sb3-cherry --help``
COMMAND_HELP = {
    "train": "train an agent with rl_zoo3 from the shipped zoo config (or -c FILE); rl_zoo3's train options work",
    "enjoy": "watch a trained agent (rl_zoo3's enjoy; --no-render on headless machines)",
    "evaluate": "mean and std of return and length over N episodes, and the number of failed episodes",
    "record": "write a demonstration file (.npz) from a trained agent",
    "video": "record an MP4 of a trained agent (--gif: also a GIF)",
}
#: Plain-text help of ``sb3-cherry``
USAGE = (
    f"usage: sb3-cherry [-h] [--version] {{{','.join(COMMAND_HELP)}}} ...\n\n"
    "sb3_cherry's algorithms through rl_zoo3: train, evaluate, watch and film agents.\n\ncommands:\n"
    + "".join(f"  {name:<10}{text}\n" for name, text in COMMAND_HELP.items())
    + "\n'sb3-cherry COMMAND -h' lists the options of a command. Examples:\n"
    "  sb3-cherry train --algo ppo_rollback --env CartPole-v1 -f logs\n"
    "  sb3-cherry evaluate --algo ppo_rollback --env CartPole-v1 -f logs -n 10\n"
    "  sb3-cherry video --algo ppo_rollback --env CartPole-v1 -f logs --gif\n"
)


def register_zoo() -> dict[str, type]:
    """
    Register sb3_cherry's algorithms in ``rl_zoo3.utils.ALGOS`` (and the PPORollback optuna sampler), and make
    ``rl_zoo3.train`` build sb3_cherry's ``SafeExperimentManager`` (which reads an entry's ``vec_env`` key and parses
    the config's strings as data, as ``sb3-cherry train``).

    :return: the registered ``{name: class}`` mapping
    """
    import rl_zoo3.train
    import rl_zoo3.utils

    from sb3_cherry.common.vec_env.subproc_vec_env import use_in_rl_zoo3
    from sb3_cherry.resume import SafeExperimentManager

    algos = sb3_cherry.zoo_algorithms()
    rl_zoo3.utils.ALGOS.update(algos)
    # rl_zoo3's train then reads sb3_cherry's configs as sb3-cherry train does (their vec_env key, parsed strings)
    if rl_zoo3.train.ExperimentManager is rl_zoo3.exp_manager.ExperimentManager:
        rl_zoo3.train.ExperimentManager = SafeExperimentManager  # type: ignore[misc]
    use_in_rl_zoo3()  # subproc: worker failures name the worker and the env's exception; dummy: cheaper copies
    try:
        from sb3_cherry.common.hyperparams_opt import register_samplers

        register_samplers()
    except ImportError:  # optuna is an rl_zoo3 dependency; tolerate its absence for non-optimize commands
        pass
    return algos


def _algo_choices() -> list[str]:
    """The ``--algo`` choices: sb3_cherry's algorithms (the ones with a shipped zoo config)."""
    return sorted(sb3_cherry.zoo_algorithms())


def _run_rl_zoo3(entry: Callable[[], Any], prog: str, argv: list[str]) -> None:
    """
    Run an rl_zoo3 script function (it parses ``sys.argv``) with ``argv``, restoring ``sys.argv`` afterwards. Meanwhile
    rl_zoo3 knows sb3_cherry's algorithms only (SB3's own ``load`` unpickles: ``--algo ppo`` on a downloaded folder,
    however spelt, would run its pickles) and parses its ``key:value`` options (``--env-kwargs``, ``--hyperparams``,
    ``--eval-env-kwargs``, in any spelling argparse accepts) as literals instead of evaluating them.
    """
    import rl_zoo3.enjoy
    import rl_zoo3.train
    import rl_zoo3.utils

    saved, algos = sys.argv, dict(rl_zoo3.utils.ALGOS)
    store_dicts = {module: module.StoreDict for module in (rl_zoo3.train, rl_zoo3.enjoy)}
    sys.argv = [prog, *argv]
    rl_zoo3.utils.ALGOS.clear()  # (the dict rl_zoo3's modules imported by name: changed in place)
    rl_zoo3.utils.ALGOS.update(sb3_cherry.zoo_algorithms())
    for module in store_dicts:
        module.StoreDict = SafeStoreDict  # type: ignore[attr-defined]
    try:
        entry()
    finally:
        sys.argv = saved
        rl_zoo3.utils.ALGOS.clear()
        rl_zoo3.utils.ALGOS.update(algos)
        for module, store_dict in store_dicts.items():
            module.StoreDict = store_dict  # type: ignore[attr-defined]


def _rl_zoo3_options(entry: Callable[[], Any], prog: str, skip: tuple[str, ...] = ()) -> str:
    """
    The options of an rl_zoo3 script's ``--help`` (captured; its usage line and the options in ``skip`` left out).

    :param entry: the rl_zoo3 script function (it parses ``sys.argv``)
    :param prog: program name shown in the help
    :param skip: option strings whose entries are left out (the ones sb3-cherry handles itself)
    :return: the help text of the remaining options
    """
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        _run_rl_zoo3(entry, prog, ["--help"])
    lines = out.getvalue().splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.rstrip() == "options:"), 0)
    kept: list[str] = []
    keep = True
    for line in lines[start:]:
        stripped = line.lstrip()
        if stripped.startswith("-") and len(line) - len(stripped) == 2:  # an option's first line
            keep = not any(part.rstrip(",") in skip for part in stripped.split())
        if keep:
            kept.append(line)
    return "\n".join(kept)


def _train_parser() -> argparse.ArgumentParser:
    """Options of ``sb3-cherry train`` handled here; everything else goes to rl_zoo3's train."""
    from sb3_cherry.resume import RESUME_OPTIONS

    parser = argparse.ArgumentParser(
        prog="sb3-cherry train",
        description="Train an sb3_cherry agent with rl_zoo3. The config entry of --env in the shipped zoo config of "
        "--algo (or -c FILE) is validated first; every other option is rl_zoo3's (listed below).",
        allow_abbrev=False,
        add_help=False,
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help message and exit")
    # None: not given (with --resume the run's own is used)
    parser.add_argument("--algo", default=None, choices=_algo_choices(), help="algorithm (default: ppo_rollback)")
    parser.add_argument("--env", default=None, help="environment id (default: CartPole-v1)")
    parser.add_argument(
        "-c",
        "-conf",
        "--conf-file",
        dest="conf",
        help="YAML config keyed by env id (default: the zoo config shipped with sb3_cherry for --algo)",
    )
    parser.add_argument(
        "--vec-env",
        default=None,
        choices=["dummy", "subproc", "parallel", "envpool"],
        help="training envs: dummy (one process, rl_zoo3's default), subproc (one process per env), parallel (the envs "
        "in groups stepped at once: one in this process, one per worker process; the same values as dummy; "
        "--parallel-workers) or envpool "
        '(EnvPool\'s C++ port of the env, stepped by threads; pip install "sb3_cherry[envpool]"; evaluation stays on '
        "the gymnasium env; the config's env_wrapper translated; no env_kwargs, no run checkpoints)",
    )
    parser.add_argument(
        "--parallel-workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes with --vec-env parallel (default: one per core beyond this process's, at most n_envs - 1)",
    )
    parser.add_argument(
        "--envpool-threads",
        type=int,
        default=None,
        metavar="N",
        help="EnvPool worker threads with --vec-env envpool (default: EnvPool's, one per env up to the number of cores)",
    )
    parser.add_argument(
        "--run-checkpoint-freq",
        type=int,
        metavar="STEPS",
        help="write a run checkpoint (model, optimizer, VecNormalize statistics, RNG and env states, evaluation "
        "history) every STEPS steps into <run folder>/run_checkpoint/, so that --resume continues the run exactly",
    )
    parser.add_argument(
        "--stop-after",
        type=int,
        metavar="STEPS",
        help="end this process at the first run checkpoint after STEPS steps (a chunk; within one rollout: "
        "checkpoints fall on update boundaries; implies --run-checkpoint-freq STEPS when that is not given); continue "
        "with --resume",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_FOLDER",
        help="continue the run in RUN_FOLDER (e.g. logs/ppo_rollback/CartPole-v1_1) from its run checkpoint to its "
        "total budget, with its saved settings, writing into the same folder; only "
        + ", ".join(RESUME_OPTIONS)
        + " of rl_zoo3's options may be given with it",
    )
    return parser


def _hyperparams_overrides(argv: list[str], flags: tuple[str, ...] = ("-params", "--hyperparams")) -> dict[str, Any]:
    """
    The ``key:value ...`` items after ``flags`` on a train command line (``-params``/``--hyperparams`` by default),
    parsed as literals (rl_zoo3 evaluates them as Python: a value that passes this parse evaluates to the same data).
    The items end at the next option, as argparse reads them (:func:`_is_option`), with or without a colon
    (``--env-kwargs=g:9.81``, ``--storage=sqlite:///x.db``).

    :param argv: the command line after ``train``
    :param flags: the option's spellings
    :return: the items as a dict
    :raises UnsafeConfigError: a value that is not a literal, ``dict(...)`` or an allowed name
    """
    overrides: dict[str, Any] = {}
    for i, flag in enumerate(argv):
        if flag not in flags:
            continue
        for item in argv[i + 1 :]:
            if _is_option(item):
                break
            key, _, value = item.partition(":")
            overrides[key] = parse_literal_string(value, f"{flag} {key}")
    return overrides


def _is_option(item: str) -> bool:
    """
    Whether argparse reads a command line item as an option (which ends the items of a ``nargs="+"`` option) rather
    than as a value: it starts with ``-`` and is not ``-`` alone, a negative number or a string with a space.

    :param item: the command line item
    :return: True for an option
    """
    return item.startswith("-") and item != "-" and not re.fullmatch(r"-\d+|-\d*\.\d+", item) and " " not in item


def _import_gym_packages(rest: list[str]) -> None:
    """
    Import the modules of ``--gym-packages`` (as rl_zoo3's train does, but before the config is checked: the envs they
    register are then known to the check, e.g. for an ``action_distribution`` or an ``atari`` entry).

    :param rest: the rl_zoo3 options of the train command line
    :raises ValueError: a module that cannot be found
    """
    import importlib

    parser = argparse.ArgumentParser(add_help=False)  # (rl_zoo3's parser accepts abbreviations: so does this one)
    parser.add_argument("--gym-packages", type=str, nargs="+", default=[])
    for module in parser.parse_known_args(rest)[0].gym_packages:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
                raise  # a module the package imports: its own traceback
            raise ValueError(
                f"--gym-packages {module}: no module named {exc.name!r}; install the package, or put the folder that "
                "holds the module on PYTHONPATH."
            ) from exc


def _check_train_counts(args: argparse.Namespace) -> None:
    """
    The counts of ``sb3-cherry train``'s own options are at least 1, and ``--envpool-threads`` goes with
    ``--vec-env envpool`` (``--parallel-workers`` is checked against the entry's ``vec_env`` too, once it is read).

    :param args: the options of :func:`_train_parser`
    :raises ValueError: naming the option
    """
    for flag, value in (
        ("--run-checkpoint-freq", args.run_checkpoint_freq),
        ("--stop-after", args.stop_after),
        ("--envpool-threads", args.envpool_threads),
        ("--parallel-workers", args.parallel_workers),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}.")
    if args.envpool_threads is not None and args.vec_env != "envpool":
        raise ValueError("--envpool-threads is an option of --vec-env envpool.")


def cmd_train(argv: list[str]) -> None:
    """
    ``sb3-cherry train``: rl_zoo3's train with sb3_cherry registered (all of rl_zoo3's train flags work).

    :param argv: arguments after ``train``
    """
    from rl_zoo3.train import train

    from sb3_cherry.resume import (
        ChunkOptions,
        SafeExperimentManager,
        check_checkpointable,
        chunked_experiment_manager,
        experiment_manager_class,
    )

    parser = _train_parser()
    args, rest = parser.parse_known_args(argv)
    register_zoo()
    if args.help:
        parser.print_help()
        print("\nrl_zoo3 train options (passed through to rl_zoo3):")
        skip = ("-h", "--help", "--algo", "--env", "-conf", "--conf-file", "--vec-env")
        print(_rl_zoo3_options(train, "sb3-cherry train", skip=skip))
        return
    _check_train_counts(args)
    # rl_zoo3 trains the config's n_timesteps for any -n below 1 (its "not given"): an explicit one is a mistake
    budget = argparse.ArgumentParser(add_help=False)
    budget.add_argument("-n", "--n-timesteps", type=int, default=None)
    budget.add_argument("--trial-id", type=int, default=None)
    passed = budget.parse_known_args(rest)[0]
    if passed.n_timesteps is not None and passed.n_timesteps < 1:
        raise ValueError(
            f"-n/--n-timesteps must be at least 1, got {passed.n_timesteps} (leave it out to train the config's "
            "n_timesteps)."
        )
    if passed.trial_id is not None and passed.trial_id < 1:
        # rl_zoo3 tests ``if self.trial_id`` and would train the config's own hyperparameters for optuna's trial 0
        raise ValueError(
            f"--trial-id {passed.trial_id}: rl_zoo3 retrains trials numbered from 1 (it takes 0 for 'no trial' and would "
            "train the config's hyperparameters); pass trial 0's hyperparameters with -params instead."
        )
    if args.resume is not None:
        _resume_train(args, rest)
        return
    algo, env_id = args.algo or "ppo_rollback", args.env or "CartPole-v1"
    if any(
        arg == "-optimize" or (arg.startswith("--optimize") and "--optimize-hyperparameters".startswith(arg)) for arg in rest
    ):
        from sb3_cherry.common.hyperparams_opt import SAMPLERS

        if algo not in SAMPLERS:
            raise ValueError(
                f"-optimize has no search space for --algo {algo} (it has one for {', '.join(sorted(SAMPLERS))}). "
                "Tune the generator / policy with --algo ppo_rollback, then put its hyperparameters in the config."
            )
    if args.conf is not None:
        check_yaml_config(args.conf)  # (before validate_config reads it; the experiment manager checks any spelling)
    # refused here, before anything runs (rl_zoo3's parser then reads them with SafeStoreDict, see _run_rl_zoo3)
    env_kwargs = _hyperparams_overrides(rest, ("--env-kwargs",))
    _import_gym_packages(rest)
    conf = args.conf or str(default_config(algo))
    entry = validate_config(conf, algo, env_id, _hyperparams_overrides(rest), env_kwargs)
    zoo_argv = ["--algo", algo, "--env", env_id, "--conf-file", conf, *rest]
    freq = args.run_checkpoint_freq or args.stop_after
    if args.parallel_workers is not None and (args.vec_env or entry.get("vec_env", "dummy")) != "parallel":
        raise ValueError(
            "--parallel-workers is an option of --vec-env parallel (or of an entry with vec_env: parallel); "
            f"{conf} [{env_id}] has vec_env: {entry.get('vec_env', 'dummy')}."
        )

    def managed(base: type) -> type:
        """``base`` with the command line's --vec-env (over the entry's ``vec_env``) and --parallel-workers."""
        return type(base.__name__, (base,), {"vec_env_option": args.vec_env, "parallel_workers": args.parallel_workers})

    if args.vec_env == "envpool":
        if freq is not None:
            raise ValueError(
                "--vec-env envpool has no run checkpoints from the command line (--resume continues a run with "
                "rl_zoo3's own envs): drop --run-checkpoint-freq/--stop-after, train with --vec-env dummy or subproc, "
                "or use python -m benchmarks.learning --vec-env envpool --checkpoint-dir DIR."
            )
        from sb3_cherry.common.vec_env.envpool_vec_env import envpool_experiment_manager

        # rl_zoo3 trains on EnvPool's envs (evaluation on gymnasium's)
        manager = envpool_experiment_manager(managed(SafeExperimentManager), args.envpool_threads)
        with experiment_manager_class(manager):
            _run_rl_zoo3(train, "sb3-cherry train", zoo_argv)
        return
    if args.vec_env in ("dummy", "subproc"):  # (rl_zoo3's --vec-env knows these two: parallel is the manager's)
        zoo_argv += ["--vec-env", args.vec_env]

    if freq is None:
        with experiment_manager_class(managed(SafeExperimentManager)):
            _run_rl_zoo3(train, "sb3-cherry train", zoo_argv)
        return
    check_checkpointable(entry, f"{conf} [{env_id}]")
    with chunked_experiment_manager(ChunkOptions(freq, args.stop_after)) as configured:
        with experiment_manager_class(managed(configured)):
            _run_rl_zoo3(train, "sb3-cherry train", zoo_argv)


def _resume_train(args: argparse.Namespace, rest: list[str]) -> None:
    """
    ``sb3-cherry train --resume RUN_FOLDER``: continue a run from its run checkpoint through rl_zoo3's train.

    :param args: the options of :func:`_train_parser`
    :param rest: the other options (only :data:`~sb3_cherry.resume.RESUME_OPTIONS` are accepted)
    """
    from rl_zoo3.train import train

    from sb3_cherry.resume import RESUME_OPTIONS, ChunkOptions, chunked_experiment_manager, read_run_folder

    given = [arg.split("=")[0] for arg in rest if arg.startswith("-") and not _is_number(arg)]
    refused = [arg for arg in given if arg not in RESUME_OPTIONS] + (["-c"] if args.conf else [])
    refused += ["--vec-env"] if args.vec_env is not None else []
    refused += ["--parallel-workers"] if args.parallel_workers is not None else []
    if refused:
        raise ValueError(
            f"--resume continues the run with its saved settings (<env>/args.yml, <env>/config.yml); {refused} cannot "
            f"be given with it (accepted: --stop-after, --run-checkpoint-freq, {', '.join(RESUME_OPTIONS)}). To change "
            "them, start a new run."
        )
    run = read_run_folder(args.resume, args.algo, args.env)
    if run.num_timesteps >= run.total_timesteps:
        print(f"{run.path}: the run is complete ({run.num_timesteps} of {run.total_timesteps} steps); nothing to train.")
        return
    freq = args.run_checkpoint_freq or run.extra.get("run_checkpoint_freq") or args.stop_after
    zoo_argv = ["--algo", run.args.algo, "--env", run.args.env, "--seed", str(getattr(run.args, "seed", 0))]
    if "--num-threads" not in given:
        zoo_argv += ["--num-threads", str(getattr(run.args, "num_threads", -1))]
    with chunked_experiment_manager(ChunkOptions(freq, args.stop_after, run)):
        _run_rl_zoo3(train, "sb3-cherry train", [*zoo_argv, *rest])


def _is_number(text: str) -> bool:
    """Whether a command line item is a (negative) number rather than an option."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def cmd_enjoy(argv: list[str]) -> None:
    """
    ``sb3-cherry enjoy``: rl_zoo3's enjoy with sb3_cherry registered. Defaults follow the other commands: ``--algo
    ppo_rollback`` and the log folder ``logs`` (where ``sb3-cherry train`` writes) instead of rl_zoo3's ``ppo`` and
    ``rl-trained-agents``.

    :param argv: arguments after ``enjoy``
    """
    register_zoo()
    from rl_zoo3.enjoy import enjoy

    def given(*flags: str) -> bool:
        return any(arg in flags or arg.startswith(tuple(f"{flag}=" for flag in flags)) for arg in argv)

    if not given("-f", "--folder"):
        argv = ["-f", "logs", *argv]
    if not given("--algo"):
        argv = ["--algo", "ppo_rollback", *argv]
    try:
        # the run's config.yml / args.yml as data, not rl_zoo3's yaml.UnsafeLoader; a best model / checkpoint with the
        # VecNormalize statistics saved with it, as evaluate / video / record (rl_zoo3 loads the end-of-training ones)
        with rl_zoo3_reads_safely(), _enjoy_with_model_statistics():
            _run_rl_zoo3(enjoy, "sb3-cherry enjoy", argv)
    except AssertionError as exc:  # rl_zoo3 asserts that the run folder exists
        raise FileNotFoundError(f"{exc}. Train first (sb3-cherry train ...) or pass -f FOLDER / --exp-id.") from exc


@contextlib.contextmanager
def _enjoy_with_model_statistics() -> Iterator[None]:
    """
    Within the block, rl_zoo3's ``enjoy`` puts the ``VecNormalize`` statistics saved with a best model or checkpoint
    (``--load-best``, ``--load-checkpoint``, ``--load-last-checkpoint``) into its env (:func:`_use_model_statistics`).
    """
    import rl_zoo3.enjoy

    saved = rl_zoo3.enjoy.get_model_path, rl_zoo3.enjoy.create_test_env
    found: dict[str, pathlib.Path] = {}

    def get_model_path(*args: Any, **kwargs: Any) -> Any:
        result = saved[0](*args, **kwargs)
        found["model"], found["log"] = pathlib.Path(result[1]), pathlib.Path(result[2])
        return result

    def create_test_env(*args: Any, **kwargs: Any) -> Any:
        env = saved[1](*args, **kwargs)
        if found:
            _use_model_statistics(env, found["model"], found["log"], normalized=kwargs.get("stats_path") is not None)
        return env

    rl_zoo3.enjoy.get_model_path, rl_zoo3.enjoy.create_test_env = get_model_path, create_test_env
    try:
        yield
    finally:
        rl_zoo3.enjoy.get_model_path, rl_zoo3.enjoy.create_test_env = saved


def evaluate_model(
    model: Any,
    env: VecEnv,
    n_episodes: int = 10,
    deterministic: bool = True,
    fail_below: float | None = None,
    fail_on_termination: bool = False,
    fall_reward: float | None = None,
) -> dict[str, Any]:
    """
    Run ``n_episodes`` episodes with SB3's ``evaluate_policy`` and summarise them.

    An episode counts as *failed* when its return is below ``fail_below`` (if given), or when it ended by termination
    rather than time-limit truncation and ``fail_on_termination`` is set (e.g. the pole fell, the walker fell). With
    ``fall_reward``, an episode that ended by termination with a last reward ``<= fall_reward`` is also counted as a
    *fall* (``n_falls``): BipedalWalker terminates both at the end of the course and when the walker falls, and only
    a fall gives -100.

    :param model: a trained SB3 model
    :param env: a VecEnv (wrapped with Monitor by rl_zoo3 / SB3: returns are then the unnormalised ones)
    :param n_episodes: number of episodes
    :param deterministic: deterministic actions
    :param fail_below: return threshold of a failed episode
    :param fail_on_termination: count terminated (not truncated) episodes as failed
    :param fall_reward: count terminated episodes whose last reward is at most this as falls
    :return: dict with mean/std return and length, n_failed, n_episodes and the per-episode returns (and n_falls with
        ``fall_reward``)
    """
    from stable_baselines3.common.evaluation import evaluate_policy

    terminated: list[bool] = []
    last_rewards: list[float] = []

    def on_step(locals_: dict[str, Any], _globals: dict[str, Any]) -> None:
        # evaluate_policy counts an episode when it is done and (with Monitor) its info has "episode": record the
        # same episodes, in the same order, with how they ended
        info = locals_["info"]
        if locals_["done"] and ("episode" in info or not locals_["is_monitor_wrapped"]):
            terminated.append(not info.get("TimeLimit.truncated", False))
            # the env's own reward (a VecNormalize built for evaluation does not scale rewards)
            last_rewards.append(float(locals_["reward"]))

    returns, lengths = evaluate_policy(
        model, env, n_eval_episodes=n_episodes, deterministic=deterministic, return_episode_rewards=True, callback=on_step
    )
    returns = [float(r) for r in returns]  # type: ignore[union-attr]
    lengths = [int(n) for n in lengths]  # type: ignore[union-attr]
    failed = sum(
        int((fail_below is not None and ret < fail_below) or (fail_on_termination and term))
        for ret, term in zip(returns, terminated, strict=True)
    )
    summary = {
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "mean_length": float(np.mean(lengths)),
        "std_length": float(np.std(lengths)),
        "n_failed": failed,
        "n_episodes": n_episodes,
        "returns": returns,
    }
    if fall_reward is not None:
        summary["fall_reward"] = fall_reward
        summary["n_falls"] = sum(
            int(term and last <= fall_reward) for term, last in zip(terminated, last_rewards, strict=True)
        )
    return summary


def _eval_defaults(env_id: str) -> dict[str, Any]:
    """Per-env failure definitions from the shipped ``zoo_configs/evaluation.yml`` (if present)."""
    try:
        path = default_config("evaluation")
    except FileNotFoundError:
        return {}
    with open(path) as file:
        entry = (yaml.safe_load(file) or {}).get(env_id, {})
    if not isinstance(entry, dict):
        raise ValueError(f"{path} [{env_id}]: the entry must be a mapping of failure definitions, not {entry!r}.")
    types: dict[str, type | tuple[type, ...]] = {
        "fail_below": (int, float),
        "fail_on_termination": bool,
        "fall_reward": (int, float),
    }
    for key, value in entry.items():
        if value is None and key in ("fail_below", "fall_reward"):  # (as 'none' on the command line)
            continue
        if key not in types or isinstance(value, bool) is not (types[key] is bool) or not isinstance(value, types[key]):
            raise ValueError(
                f"{path} [{env_id}]: {key}={value!r} is not one of fail_below (number), fail_on_termination (true / "
                "false), fall_reward (number)."
            )
    return entry


class SafeStoreDict(argparse.Action):
    """rl_zoo3's ``StoreDict`` (``key:value ...`` into a dict), with the values parsed as literals instead of evaluated;
    an option given twice adds its items to the first's (rl_zoo3's kept the last one only, silently)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None
    ) -> None:
        parsed: dict[str, Any] = {}
        for item in values:
            key, _, value = item.partition(":")
            try:
                parsed[key] = parse_literal_string(value, f"{option_string} {key}")
            except UnsafeConfigError as exc:
                parser.error(f"{exc} (strings need quotes: {key}:\"'text'\")")
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest, None) or {}), **parsed})


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    """The options that locate a trained model and build its env (shared by evaluate, record and video)."""
    parser.add_argument("--algo", default="ppo_rollback", choices=_algo_choices(), help="algorithm (default: %(default)s)")
    parser.add_argument("--env", default="CartPole-v1", help="environment id (default: %(default)s)")
    parser.add_argument("-f", "--folder", default="logs", help="log folder of 'sb3-cherry train' (default: %(default)s)")
    parser.add_argument("--exp-id", type=int, default=0, help="experiment id (default: 0, the latest)")
    parser.add_argument(
        "--model",
        help="path to a model .zip, or to a run checkpoint (a run folder trained with --run-checkpoint-freq, its "
        "run_checkpoint/ folder, or a checkpoint folder of benchmarks/learning.py: the model is evaluated with the "
        "VecNormalize statistics stored in the checkpoint), instead of --folder/--exp-id",
    )
    parser.add_argument(
        "-c",
        "--conf-file",
        dest="conf",
        help="with --model CHECKPOINT_FOLDER outside a run folder: the zoo config whose --env entry the run used, for "
        "its wrappers (default: the zoo config shipped for --algo)",
    )
    parser.add_argument("--load-best", action="store_true", help="load best_model.zip (saved by the evaluation callback)")
    parser.add_argument("--load-checkpoint", type=int, metavar="STEPS", help="load the checkpoint saved after STEPS steps")
    parser.add_argument("--load-last-checkpoint", action="store_true", help="load the latest checkpoint")
    parser.add_argument(
        "--env-kwargs", type=str, nargs="+", action=SafeStoreDict, help="keyword arguments of the env constructor (key:value)"
    )
    parser.add_argument("--device", default="auto", help="torch device of the model (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the env (default: %(default)s)")
    parser.add_argument(
        "--stochastic",
        action="store_true",
        help="sample actions instead of taking the deterministic action (the mode; a Beta policy's mean)",
    )


def _model_path(args: argparse.Namespace) -> tuple[str, pathlib.Path, pathlib.Path]:
    """
    The model file selected by the options of :func:`_add_model_args` (rl_zoo3's ``get_model_path``), looked up once
    per parsed command line (rl_zoo3 prints "Loading latest experiment" on every lookup).

    :param args: the parsed options
    :return: a name prefix for output files, the model file and its experiment folder
    """
    found: tuple[str, pathlib.Path, pathlib.Path] | None = getattr(args, "found_model_path", None)
    if found is None:
        found = args.found_model_path = _find_model_path(args)
    return found


def _find_model_path(args: argparse.Namespace) -> tuple[str, pathlib.Path, pathlib.Path]:
    """
    Look up the model file of :func:`_model_path`.

    :param args: the parsed options
    :return: a name prefix for output files, the model file and its experiment folder
    """
    from huggingface_sb3 import EnvironmentName
    from rl_zoo3.utils import get_model_path

    if args.model:
        from sb3_cherry.checkpoint_eval import MODEL_FILE, RUN_CHECKPOINT, checkpoint_folder

        model_file = pathlib.Path(args.model)
        if model_file.is_dir():
            folder = checkpoint_folder(model_file)
            if folder is None:
                raise FileNotFoundError(
                    f"{model_file} is a folder without a run checkpoint ({MODEL_FILE}, run_state.json, run_state.npz, "
                    f"here or in {RUN_CHECKPOINT}/): pass a model .zip, a run checkpoint folder, or -f/--exp-id."
                )
            if folder.name == RUN_CHECKPOINT:  # in a run folder: name files after it, write videos into it
                return folder.parent.name, folder / MODEL_FILE, folder.parent
            return folder.name, folder / MODEL_FILE, pathlib.Path(".")  # a standalone checkpoint is only read
        if not model_file.is_file():
            raise FileNotFoundError(f"No model file {model_file}.")
        return model_file.stem, model_file, model_file.parent
    env_name = EnvironmentName(args.env)
    try:
        prefix, model_path, log_path = get_model_path(
            args.exp_id,
            args.folder,
            args.algo,
            env_name,
            args.load_best,
            args.load_checkpoint,
            args.load_last_checkpoint,
        )
    except (AssertionError, ValueError) as exc:  # rl_zoo3 asserts the run folder exists
        hint = " (best_model.zip is written when training with --eval-freq > 0)" if args.load_best else ""
        raise FileNotFoundError(
            f"{exc}{hint}. Train first (sb3-cherry train --algo {args.algo} --env {args.env} -f {args.folder}) or point "
            "-f/--exp-id/--model at a trained model."
        ) from exc
    return prefix, pathlib.Path(model_path), pathlib.Path(log_path)


def _load_for_eval(args: argparse.Namespace, render_mode: str | None = None) -> tuple[Any, Any]:
    """
    Load a model and build its evaluation env (with the saved normalisation statistics and env kwargs).

    :param args: the parsed options of :func:`_add_model_args`
    :param render_mode: render mode of the env (``"rgb_array"`` for videos)
    :return: the model and its one-env VecEnv
    """
    register_zoo()
    if args.device != "auto":
        try:
            th.device(args.device)
        except RuntimeError as exc:
            raise ValueError(f"--device {args.device!r} is not a torch device ({exc}).") from None
    if ":" not in args.env:  # ("module:Env-v0" ids are registered by importing their module, at gym.make)
        gym.spec(args.env)  # an unknown id: gymnasium's error (NameNotFound, ...) before the model is loaded
    with _env_kwargs_errors(args.env_kwargs):
        return _load_model_and_env(args, render_mode)


@contextlib.contextmanager
def _env_kwargs_errors(env_kwargs: dict[str, Any] | None) -> Iterator[None]:
    """An env constructor refusing ``--env-kwargs`` (TypeError) becomes a ValueError naming them."""
    try:
        yield
    except TypeError as exc:
        if not env_kwargs:
            raise
        raise ValueError(f"the env did not accept --env-kwargs {env_kwargs} ({exc}).") from exc


def _load_model_and_env(args: argparse.Namespace, render_mode: str | None) -> tuple[Any, Any]:
    """:func:`_load_for_eval` once the options are checked."""
    from huggingface_sb3 import EnvironmentName
    from rl_zoo3.utils import create_test_env

    from sb3_cherry.checkpoint_eval import checkpoint_eval_env, run_env_kwargs

    _, model_path, exp_dir = _model_path(args)
    if args.model and pathlib.Path(args.model).is_dir():  # a run checkpoint (checked by _model_path)
        kwargs = dict(args.env_kwargs or {}, **({"render_mode": render_mode} if render_mode is not None else {}))
        env = checkpoint_eval_env(model_path.parent, args.algo, args.env, args.seed, kwargs, args.conf)
        model = _load_model(args, model_path, env)
        _seed(model, env, args.seed)
        return model, env
    stats_path = exp_dir / EnvironmentName(args.env)
    # the run's config.yml read as data (rl_zoo3's get_saved_hyperparams uses yaml.UnsafeLoader)
    hyperparams, maybe_stats_path = saved_hyperparams(str(stats_path), norm_reward=False, test_mode=True)
    # the run's env kwargs (config.yml, then the training command's --env-kwargs in args.yml), then this command's
    env_kwargs = {**run_env_kwargs(hyperparams, stats_path), **(args.env_kwargs or {})}
    if render_mode is not None:
        env_kwargs["render_mode"] = render_mode
    with rl_zoo3_reads_safely():  # vecnormalize.pkl through a restricted unpickler
        env = create_test_env(
            args.env,
            n_envs=1,
            stats_path=maybe_stats_path,
            seed=args.seed,
            log_dir=None,
            should_render=False,
            hyperparams=hyperparams,
            env_kwargs=env_kwargs,
        )
    _use_model_statistics(env, model_path, exp_dir, normalized=maybe_stats_path is not None)
    if args.model and not (stats_path / "config.yml").is_file():
        print(
            f"Note: no {stats_path / 'config.yml'} next to {model_path}: evaluated without the run's wrappers and "
            "VecNormalize statistics (give the run folder with -f/--exp-id, or a run checkpoint, if it had them).",
            file=sys.stderr,
        )
    model = _load_model(args, model_path, env)
    _seed(model, env, args.seed)
    return model, env


def _seed(model: Any, env: VecEnv, seed: int | None) -> None:
    """
    ``--seed`` for the episodes and for ``--stochastic`` sampling: loading seeded torch and the env with the model's
    training seed (with gSDE, its exploration matrix too).
    """
    if seed is None:
        return
    model.set_random_seed(seed)
    env.seed(seed)
    policy = getattr(model, "policy", None)
    if policy is not None and getattr(policy, "use_sde", False):
        policy.reset_noise(env.num_envs)


def _use_model_statistics(env: VecEnv, model_path: pathlib.Path, exp_dir: pathlib.Path, normalized: bool) -> None:
    """
    Put the ``VecNormalize`` statistics saved with a best model or checkpoint (``sb3-cherry train`` writes
    ``best_model_vecnormalize.pkl`` and ``rl_model_vecnormalize_<steps>_steps.pkl`` next to them) into ``env``, whose
    statistics are the end-of-training ones; say so when a normalised run has none for this model (older runs).

    :param env: the evaluation env (``create_test_env`` with the run's ``vecnormalize.pkl``)
    :param model_path: the model file
    :param exp_dir: its run folder
    :param normalized: whether the run normalised (the env has a VecNormalize)
    """
    from stable_baselines3.common.vec_env import unwrap_vec_normalize

    from sb3_cherry.common.restricted_pickle import load_vec_normalize
    from sb3_cherry.resume import BEST_STATISTICS

    checkpoint = re.fullmatch(r"rl_model_(\d+)_steps\.zip", model_path.name)
    if model_path.name == "best_model.zip":
        own = exp_dir / BEST_STATISTICS
    elif checkpoint is not None:
        own = exp_dir / f"rl_model_vecnormalize_{checkpoint.group(1)}_steps.pkl"
    else:
        return
    vec_normalize = unwrap_vec_normalize(env)
    if not normalized or vec_normalize is None:
        return
    if not own.is_file():
        print(
            f"Note: {model_path.name} is evaluated with the run's end-of-training VecNormalize statistics: the run saved "
            f"none with it ({own.name}; runs of sb3-cherry before 0.1.0 did not).",
            file=sys.stderr,
        )
        return
    saved = vars(load_vec_normalize(own, vec_normalize.venv))
    for name in ("obs_rms", "ret_rms"):  # (no obs_rms with norm_obs=False)
        if name in saved:
            setattr(vec_normalize, name, saved[name])


def _load_model(args: argparse.Namespace, model_path: pathlib.Path, env: VecEnv) -> Any:
    """``--algo``'s ``load``; a model of another algorithm is refused with the ``--algo`` to give instead."""
    from rl_zoo3.utils import ALGOS

    try:
        return ALGOS[args.algo].load(model_path, env=_training_env(args.algo, env), device=args.device)
    except ValueError as exc:
        written_by = [name for name, klass in ALGOS.items() if f"was written by {klass.__name__}," in str(exc)]
        if not written_by:
            raise
        raise ValueError(f"{model_path} is a {written_by[0]} model: use --algo {written_by[0]} ({exc})") from None


def _training_env(algo: str, env: VecEnv) -> VecEnv | None:
    """
    The env to load a model with for evaluation: ``env``, except for GAIL / AIRL, which rewire the env they are loaded
    with for training (its ``VecNormalize`` then wraps the discriminator's reward) and are loaded for prediction only.

    :param algo: the algorithm name
    :param env: the evaluation env
    :return: ``env`` or None
    """
    return None if algo in ("gail", "airl") else env


#: ``--fail-below`` / ``--fall-reward`` not given (the env's default applies; None is ``none``)
_UNSET: Any = object()


def _float_or_none(text: str) -> float | None:
    """``--fail-below`` / ``--fall-reward``'s value: a number, or ``none`` for no threshold."""
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def cmd_evaluate(argv: list[str]) -> dict[str, Any]:
    """
    ``sb3-cherry evaluate``: mean ± std return and length, number of failed episodes.

    :param argv: arguments after ``evaluate``
    :return: the summary (also printed)
    """
    parser = argparse.ArgumentParser(
        prog="sb3-cherry evaluate",
        description="Evaluate a trained agent: mean and std of the return and the episode length over N episodes, and "
        "the number of failed episodes (per-env definitions in the shipped zoo_configs/evaluation.yml, overridden by "
        "--fail-below / --fail-on-termination).",
    )
    _add_model_args(parser)
    parser.add_argument("-n", "--n-episodes", type=int, default=10, help="number of episodes (default: %(default)s)")
    parser.add_argument(
        "--fail-below",
        type=_float_or_none,
        default=_UNSET,
        help="an episode with a lower return is a failure ('none': no return threshold)",
    )
    parser.add_argument(
        "--fail-on-termination",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="termination (not the time limit) counts as failure; --no-fail-on-termination turns the env's default off",
    )
    parser.add_argument(
        "--fall-reward",
        type=_float_or_none,
        default=_UNSET,
        help="also count falls: episodes ended by termination with a last reward <= this (BipedalWalker: -100; "
        "'none': no fall count)",
    )
    parser.add_argument(
        "--json", dest="json_path", help="also write the summary to this JSON file ('-': stdout, other output to stderr)"
    )
    args = parser.parse_args(argv)
    if args.n_episodes < 1:
        raise ValueError(f"-n/--n-episodes must be at least 1, got {args.n_episodes}.")
    if args.json_path and args.json_path != "-":
        check_writable(args.json_path)
    defaults = _eval_defaults(args.env)
    fail_below = args.fail_below if args.fail_below is not _UNSET else defaults.get("fail_below")
    fail_on_termination = (
        args.fail_on_termination if args.fail_on_termination is not None else defaults.get("fail_on_termination", False)
    )
    fall_reward = args.fall_reward if args.fall_reward is not _UNSET else defaults.get("fall_reward")
    # with --json -, stdout carries the JSON alone (pipeable into jq); everything else goes to stderr
    with contextlib.redirect_stdout(sys.stderr) if args.json_path == "-" else contextlib.nullcontext():
        model, env = _load_for_eval(args)
        summary = evaluate_model(
            model, env, args.n_episodes, not args.stochastic, fail_below, bool(fail_on_termination), fall_reward
        )
        env.close()
        # what the counts mean, so that the file is read without the command line
        summary.update(algo=args.algo, env=args.env, seed=args.seed, deterministic=not args.stochastic)
        summary.update(fail_below=fail_below, fail_on_termination=bool(fail_on_termination), fall_reward=fall_reward)
        falls = f", {summary['n_falls']} falls" if "n_falls" in summary else ""
        print(
            f"{args.algo} on {args.env}: mean return {summary['mean_return']:.2f} ± {summary['std_return']:.2f}, "
            f"mean length {summary['mean_length']:.1f} ± {summary['std_length']:.1f} over {args.n_episodes} episodes, "
            f"{summary['n_failed']} fails out of {args.n_episodes}{falls}"
        )
    if args.json_path == "-":
        print(json.dumps(summary, indent=2))
    elif args.json_path:
        atomic_write(args.json_path, lambda file: file.write(json.dumps(summary, indent=2).encode()))
    return summary


#: Optional dependencies a command may import, by import name: what to install
OPTIONAL_DEPENDENCIES = {
    "imitation": "pip install --no-deps imitation==1.0.1",
    "ray": 'pip install "sb3_cherry[distributed]"',
    "envpool": 'pip install "sb3_cherry[envpool]"',
    "mujoco": 'pip install "sb3_cherry[mujoco]"',
    "Box2D": 'pip install "sb3_cherry[box2d]"',
    "cv2": "pip install opencv-python-headless",
    "optunahub": "pip install optunahub",
    "wandb": "pip install wandb",
}


def _one_line_error(exc: BaseException) -> str | None:
    """
    The one-line message of a user-facing error, None for an error that should show its traceback: a ValueError or
    gymnasium error; an OSError about a file or folder (one with a file name, a missing / existing file, a permission);
    an ImportError that says what to install, or a missing optional dependency (with the command that installs it).
    Other OSErrors (a worker's connection reset) and ImportErrors (a missing module of a package) keep their traceback.

    :param exc: the exception
    :return: the message, or None
    """
    if isinstance(exc, ImportError):
        module = (exc.name or "").split(".")[0] if isinstance(exc, ModuleNotFoundError) else ""
        if module in OPTIONAL_DEPENDENCIES:
            return f"{exc} (an optional dependency: {OPTIONAL_DEPENDENCIES[module]})"
        return str(exc) if "pip install" in str(exc) else None
    if isinstance(exc, OSError):
        file_error = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)
        return str(exc) if exc.filename is not None or isinstance(exc, file_error) else None
    return str(exc)


def check_writable(path: str | pathlib.Path) -> None:
    """
    Refuse, before any work, an output file that cannot be written: a folder, a path through a file, a folder without
    write permission (the missing folders on the way are created when it is written).

    :param path: the file to write
    :raises ValueError: naming the problem
    """
    target = pathlib.Path(os.path.realpath(path))  # a symlink is written through, as atomic_write does
    if target.is_dir():
        raise ValueError(f"{path} is a folder; give a file name.")
    if target.exists() and not os.access(target, os.W_OK):
        raise ValueError(f"cannot write {path}: the file is write-protected (chmod u+w, or give another name).")
    if target.exists() and not target.is_file():  # a pipe or a device (/dev/stdout): written in place
        return
    _check_folder_writable(target.parent, path)


def check_writable_folder(path: str | pathlib.Path, option: str) -> None:
    """
    Refuse, before any work, an output folder that cannot be written into: a file, a path through a file, a folder
    without write permission (the missing folders are created when it is written).

    :param path: the folder to write into
    :param option: the command line option that gave it, for the message
    :raises ValueError: naming the problem
    """
    target = pathlib.Path(os.path.realpath(path))
    if target.exists() and not target.is_dir():
        raise ValueError(f"{option} {path} is a file; give a folder (the files are written into it).")
    _check_folder_writable(target, path)


def _check_folder_writable(folder: pathlib.Path, path: str | pathlib.Path) -> None:
    """The nearest existing folder on the way to ``folder`` (where ``path`` goes) is a folder we may write in."""
    while not folder.exists() and not folder.is_symlink():
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"cannot write {path}: {folder} is a file, not a folder.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: no permission to write in {folder}.")


def cmd_record(argv: list[str]) -> None:
    """
    ``sb3-cherry record``: write a demonstration file from a trained model.

    :param argv: arguments after ``record``
    """
    parser = argparse.ArgumentParser(
        prog="sb3-cherry record", description="Write a demonstration file (.npz, imitation-compatible) from a trained agent."
    )
    _add_model_args(parser)
    parser.add_argument("-n", "--n-episodes", type=int, default=20, help="number of episodes (default: %(default)s)")
    parser.add_argument("-o", "--output", required=True, help="demonstration file to write (.npz)")
    args = parser.parse_args(argv)
    from sb3_cherry.demos import demo_file_path, record_demos

    if args.n_episodes < 1:
        raise ValueError(f"-n/--n-episodes must be at least 1, got {args.n_episodes}.")
    if pathlib.Path(args.output).is_dir():  # (the file would be written next to it, as <folder>.npz)
        raise ValueError(f"-o/--output {args.output} is a folder; give a file name, e.g. {args.output}/demos.npz.")
    check_writable(demo_file_path(args.output))
    model, env = _load_for_eval(args)
    trajectories = record_demos(model, env, args.n_episodes, args.output, deterministic=not args.stochastic)
    returns = [float(np.sum(t.rews)) for t in trajectories]
    path = demo_file_path(args.output)
    print(f"Wrote {len(trajectories)} episodes to {path} (mean return {np.mean(returns):.2f} ± {np.std(returns):.2f})")


def gif_timing(fps: float, max_fps: float, n_frames: int) -> tuple[int, list[int]]:
    """
    Which frames a GIF keeps and how long each shows, so that it plays at the env's speed: every ``every``-th frame
    (the smallest step whose rate ``fps / every`` is at most ``max_fps``), each shown for ``every / fps`` seconds,
    i.e. until the real time of the next kept frame rounded to GIF's 10 ms unit (so the durations differ by 10 ms where
    ``1000 * every / fps`` is not a whole number of centiseconds; each frame starts within 5 ms of its real time).

    :param fps: frames per second of the recording (the env's ``render_fps``)
    :param max_fps: maximal GIF frame rate
    :param n_frames: recorded frames
    :return: ``every`` and the duration of each kept frame in milliseconds
    """
    if fps <= 0 or max_fps <= 0:
        raise ValueError(f"fps={fps} and max_fps={max_fps} must be positive.")
    every = max(1, math.ceil(fps / max_fps - 1e-9))
    n_kept = len(range(0, n_frames, every))
    ends_cs = [round(100 * (k + 1) * every / fps) for k in range(n_kept)]  # real time of each frame's end
    return every, [10 * (end - start) for start, end in zip([0, *ends_cs[:-1]], ends_cs, strict=True)]


def frame_skip(venv: VecEnv) -> int:
    """
    The env ticks per agent step of a ``DummyVecEnv``'s first env: the product of the ``_skip`` of its frame-skipping
    wrappers (rl_zoo3's ``FrameSkip``, SB3's ``MaxAndSkipEnv``); 1 for other VecEnvs.

    :param venv: the VecEnv (its wrappers are looked through)
    :return: the ticks per step
    """
    base = venv.unwrapped if isinstance(venv, VecEnvWrapper) else venv
    envs = getattr(base, "envs", None)
    if not envs:
        return 1
    skip, env = 1, envs[0]
    while isinstance(env, gym.Wrapper):
        value = vars(env).get("_skip")
        if isinstance(value, int) and value > 1:
            skip *= value
        env = env.env
    return skip


#: The highest GIF frame rate: a GIF frame lasts at least 20 ms (browsers show shorter frames for 100 ms)
MAX_GIF_FPS = 50


class GifVideoRecorder(VecVideoRecorder):
    """
    SB3's ``VecVideoRecorder`` that also writes each recording as an animated GIF next to the MP4, small enough for a
    README: at most ``gif_width`` pixels wide and ``gif_max_fps`` frames per second (frames are dropped, the GIF
    plays at the env's speed).

    :param venv: the env to film (``render_mode="rgb_array"``)
    :param video_folder: output folder
    :param record_video_trigger: function of the step count that starts a recording
    :param video_length: frames per recording
    :param name_prefix: file name prefix
    :param gif: also write a GIF
    :param gif_width: maximal GIF width in pixels (smaller renders keep their size)
    :param gif_max_fps: maximal GIF frame rate
    """

    def __init__(
        self,
        venv: VecEnv,
        video_folder: str,
        record_video_trigger: Callable[[int], bool],
        video_length: int = 200,
        name_prefix: str = "rl-video",
        gif: bool = False,
        gif_width: int = 320,
        gif_max_fps: float = 25.0,
    ):
        if gif and (gif_width < 1 or not 0 < gif_max_fps <= MAX_GIF_FPS):
            raise ValueError(
                f"gif_width={gif_width} must be >= 1 and gif_max_fps={gif_max_fps} in (0, {MAX_GIF_FPS}] (a GIF frame "
                "lasts at least 20 ms: browsers show shorter frames for 100 ms)."
            )
        super().__init__(venv, video_folder, record_video_trigger, video_length, name_prefix)
        self.gif, self.gif_width, self.gif_max_fps = gif, gif_width, gif_max_fps
        self.written: list[str] = []
        # one recorded frame per agent step: with a frame-skipping wrapper (FrameSkip, MaxAndSkipEnv) each spans
        # ``skip`` of the env's ticks, so the env's render_fps would play the film ``skip`` times too fast
        self.frames_per_sec = float(self.frames_per_sec) / frame_skip(venv)  # type: ignore[arg-type,assignment]

    def _stop_recording(self) -> None:
        """Write the GIF (if asked) from the recorded frames, then the MP4 as SB3 does."""
        if self.recorded_frames:
            if self.gif:
                self.written.append(self._write_gif(os.path.splitext(self.video_path)[0] + ".gif"))
            self.written.append(self.video_path)
        super()._stop_recording()

    def _write_gif(self, path: str) -> str:
        """Write ``self.recorded_frames`` as a looping GIF (Pillow); return its path."""
        from PIL import Image

        fps = float(self.frames_per_sec)  # type: ignore[arg-type]  # SB3 types it loosely; render_fps of the env
        every, durations = gif_timing(fps, self.gif_max_fps, len(self.recorded_frames))
        frames = [Image.fromarray(frame) for frame in self.recorded_frames[::every]]
        width, height = frames[0].size
        if width > self.gif_width:
            size = (self.gif_width, max(1, round(height * self.gif_width / width)))
            frames = [frame.resize(size, Image.Resampling.LANCZOS) for frame in frames]
        atomic_write(
            path,
            lambda file: frames[0].save(
                file, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=True
            ),
        )
        print(f"Saving GIF to {path}")
        return path


def _offscreen_mujoco_rendering() -> None:
    """
    Without a display (Linux, ``DISPLAY`` unset) and without a ``MUJOCO_GL`` choice, render MuJoCo frames with EGL:
    MuJoCo's default (GLFW) needs a display, and its ``FatalError`` ("an OpenGL platform library has not been loaded")
    came as a traceback. Read by mujoco when it is imported and by gymnasium's renderer.
    """
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("MUJOCO_GL"):
        os.environ["MUJOCO_GL"] = "egl"


def cmd_video(argv: list[str]) -> list[str]:
    """
    ``sb3-cherry video``: an MP4 (``--gif``: and a GIF) of a trained agent, as rl_zoo3's ``record_video``.

    :param argv: arguments after ``video``
    :return: the files written
    """
    parser = argparse.ArgumentParser(
        prog="sb3-cherry video",
        description="Record an MP4 of a trained agent (rl_zoo3's record_video with sb3_cherry registered); --gif also "
        "writes a GIF. Output: OUTPUT_FOLDER/<model>-step-0-to-step-N.mp4 (.gif).",
    )
    _add_model_args(parser)
    parser.add_argument(
        "-n", "--n-timesteps", type=int, default=1000, help="length in agent steps, one frame each (default: %(default)s)"
    )
    parser.add_argument("-o", "--output-folder", help="output folder (default: the run folder's videos/)")
    parser.add_argument("--gif", action="store_true", help="also write an animated GIF")
    parser.add_argument("--gif-width", type=int, default=320, help="maximal GIF width in pixels (default: %(default)s)")
    parser.add_argument(
        "--gif-fps",
        type=float,
        default=25.0,
        help=f"maximal GIF frame rate, at most {MAX_GIF_FPS}: a GIF frame lasts at least 20 ms (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    for flag, value in (("-n/--n-timesteps", args.n_timesteps), ("--gif-width", args.gif_width)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}.")
    if args.gif and not 0 < args.gif_fps <= MAX_GIF_FPS:  # (False for NaN)
        raise ValueError(f"--gif-fps must be in (0, {MAX_GIF_FPS}] (a GIF frame lasts at least 20 ms), got {args.gif_fps}.")
    prefix, _, exp_dir = _model_path(args)
    output_folder = args.output_folder or str(exp_dir / "videos")
    check_writable_folder(output_folder, "-o/--output-folder")
    _offscreen_mujoco_rendering()
    model, env = _load_for_eval(args, render_mode="rgb_array")
    recorder = GifVideoRecorder(
        env,
        output_folder,
        record_video_trigger=lambda step: step == 0,
        video_length=args.n_timesteps,
        name_prefix=prefix,
        gif=args.gif,
        gif_width=args.gif_width,
        gif_max_fps=args.gif_fps,
    )
    obs = recorder.reset()
    state, episode_start = None, np.ones((recorder.num_envs,), dtype=bool)
    for _ in range(args.n_timesteps):
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=not args.stochastic)
        obs, _, episode_start, _ = recorder.step(action)
    recorder.close()
    print("Wrote " + ", ".join(recorder.written))
    return recorder.written


COMMANDS: dict[str, Callable[[list[str]], Any]] = {
    "train": cmd_train,
    "enjoy": cmd_enjoy,
    "evaluate": cmd_evaluate,
    "record": cmd_record,
    "video": cmd_video,
}


def main(argv: list[str] | None = None) -> None:
    """
    Entry point of ``sb3-cherry`` / ``python -m sb3_cherry``.

    :param argv: command line arguments (default: ``sys.argv[1:]``)
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--version":
        print(f"sb3-cherry {sb3_cherry.__version__}")
        return
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"sb3-cherry: error: unknown command {argv[0]!r}: choose one of {', '.join(COMMANDS)}.\n", file=sys.stderr)
            print(USAGE, file=sys.stderr)
            sys.exit(2)
        print(USAGE)
        return
    try:
        COMMANDS[argv[0]](argv[1:])
    except BrokenPipeError:  # output piped into e.g. `head`, which exited: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except (ValueError, OSError, ImportError, gym.error.Error) as exc:  # gymnasium's: e.g. an unknown env id
        message = _one_line_error(exc)
        if message is None:
            raise
        print(f"sb3-cherry {argv[0]}: error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
