"""
Long ``sb3-cherry train`` runs in chunks: run checkpoints inside rl_zoo3's run folder, and ``--resume RUN_FOLDER``.

- ``--run-checkpoint-freq N``: every ``N`` steps (counted as ``n_timesteps``, over all envs) the run writes a run
  checkpoint (:mod:`sb3_cherry.common.checkpoint`: model with optimizer state, VecNormalize statistics, RNG and env
  states, the evaluation env's state and the evaluation history) to ``<run folder>/run_checkpoint/``;
  ``--stop-after STEPS`` ends the process at the first run checkpoint after ``STEPS`` steps (a chunk).
- ``--resume RUN_FOLDER``: the run continues from that checkpoint to its total budget with the settings it was started
  with (``<env>/args.yml`` and ``<env>/config.yml``, read as data), writing into the same folder as rl_zoo3 does
  (monitor files appended, ``evaluations.npz``, ``best_model.zip``, the final model and ``vecnormalize.pkl``).

rl_zoo3's own ``train`` runs unchanged: :class:`ChunkedExperimentManager` (an ``ExperimentManager`` adding the
checkpoint callback, loading the checkpoint instead of building a new model, and learning the remaining steps) is put
in its place for the duration of the call (:func:`chunked_experiment_manager`).
"""

import argparse
import contextlib
import csv
import dataclasses
import io
import os
import pathlib
import pickle
import shutil
import threading
import time
import traceback
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, ClassVar

import gymnasium as gym
import rl_zoo3.exp_manager
from rl_zoo3.callbacks import SaveVecNormalizeCallback
from rl_zoo3.exp_manager import ExperimentManager
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback, EvalCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

import sb3_cherry
from sb3_cherry.checkpoint_eval import RUN_CHECKPOINT
from sb3_cherry.common.checkpoint import (
    RunCheckpointCallback,
    RunState,
    continue_callback_counts,
    has_run_checkpoint,
    load_run_checkpoint,
    read_run_state,
)
from sb3_cherry.common.config_schema import VEC_ENV_CHOICES, config_entry, validate_config
from sb3_cherry.common.restricted_pickle import load_vec_normalize
from sb3_cherry.common.safe_config import (
    check_imported_names,
    check_yaml_config,
    parse_literal_string,
    parse_policy_kwargs,
    resolve_rollout_buffer_class,
    safe_load_yaml,
)
from sb3_cherry.common.save_util import atomic_write
from sb3_cherry.common.schedules import ZooLinearSchedule
from sb3_cherry.common.vec_env.vec_normalize import CherryVecNormalize, sb3_vec_normalize

#: Hyperparameters rl_zoo3 turns into objects with ``eval`` when they are strings (parsed as data on resume instead)
_STRING_KEYS = ("policy_kwargs", "replay_buffer_class", "replay_buffer_kwargs", "monitor_kwargs", "normalize")
#: Schedules passed again when loading, so that they are the very objects a new run builds (rl_zoo3's ``-i`` does so)
_SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")
#: rl_zoo3 train options that ``--resume`` accepts (the others are the run's own, from its args.yml)
RESUME_OPTIONS = ("--num-threads", "-P", "--progress", "--gym-packages", "-tb", "--tensorboard-log")


@dataclasses.dataclass
class RunFolder:
    """
    A run folder of ``sb3-cherry train`` that holds a run checkpoint.

    :param path: the run folder (``<log folder>/<algo>/<env>_<id>``)
    :param params_path: its ``<env>`` sub-folder (``args.yml``, ``config.yml``, ``vecnormalize.pkl``)
    :param args: the run's command line options (``args.yml``)
    :param hyperparams: the run's hyperparameters (``config.yml``)
    :param checkpoint: the run checkpoint folder
    :param num_timesteps: steps done at the checkpoint
    :param total_timesteps: the run's budget
    :param extra: the data stored with the checkpoint (evaluation history, checkpoint period)
    """

    path: pathlib.Path
    params_path: pathlib.Path
    args: argparse.Namespace
    hyperparams: dict[str, Any]
    checkpoint: pathlib.Path
    num_timesteps: int
    total_timesteps: int
    extra: dict[str, Any]


def check_checkpointable(hyperparams: dict[str, Any], where: str) -> None:
    """
    Refuse run checkpoints for a config that cannot have them.

    :param hyperparams: the config entry (overrides merged)
    :param where: file and env, for the error message
    :raises ValueError: ``collection='async'``
    """
    collection = hyperparams.get("collection", "sync")
    if collection != "sync":
        raise ValueError(
            f"{where}: collection={collection!r}: run checkpoints (--run-checkpoint-freq / --stop-after / --resume) need "
            "collection='sync' (with 'async' the weights of an update boundary live in the learner process). Train with "
            "-params collection:'sync', or without run checkpoints."
        )


def _refuse_symlinks(path: pathlib.Path) -> None:
    """
    Refuse a run folder holding symbolic links: resuming appends to its monitor files and replaces its models and
    statistics, which through a link would write outside the folder.

    :param path: the run folder
    :raises ValueError: naming the first link
    """
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            entry = pathlib.Path(root, name)
            if entry.is_symlink():
                raise ValueError(
                    f"{entry} is a symbolic link: --resume writes to the files of the run folder (monitor files, models, "
                    "statistics) and would write through it, outside the folder. Copy the run folder without links."
                )


#: The ``args.yml`` fields ``--resume`` hands to rl_zoo3, and the values rl_zoo3's options take: a type, or the choices
_ARG_FIELDS: dict[str, Any] = {
    "algo": str,
    "env": str,
    "log_folder": str,
    "device": str,
    "n_timesteps": int,
    "eval_freq": int,
    "save_freq": int,
    "seed": int,
    "log_interval": int,
    "verbose": int,
    "eval_episodes": int,
    "n_eval_envs": int,
    "num_threads": int,
    "truncate_last_trajectory": bool,
    "save_replay_buffer": bool,
    "hyperparams": (dict, type(None)),
    "env_kwargs": (dict, type(None)),
    "eval_env_kwargs": (dict, type(None)),
    "vec_env": ("dummy", "subproc"),
}
#: the least value of the count fields of ``args.yml``
_ARG_MINIMUM = {"eval_episodes": 0, "n_eval_envs": 1}
#: what an error about a run folder's ``args.yml`` tells to do
_ARGS_FIX = "restore the file as 'sb3-cherry train' wrote it (or fix that field), then --resume again."


def _check_saved_args(saved_args: dict[str, Any], where: pathlib.Path) -> None:
    """
    Check the ``args.yml`` fields that ``--resume`` passes to rl_zoo3 as rl_zoo3's own options would (their type,
    choices and least value): a damaged or edited file is named here rather than failing inside rl_zoo3.

    :param saved_args: the file's mapping
    :param where: the file, for the error message
    :raises ValueError: a missing ``algo`` / ``env``, or a field of another type or value, naming the file and the field
    """
    names = [name for name in saved_args if not isinstance(name, str) or not name.isidentifier()]
    if names:
        raise ValueError(f"{where}: {names[0]!r} is not an option name; {_ARGS_FIX}")
    for name in ("algo", "env"):
        if name not in saved_args:
            raise ValueError(f"{where} has no {name!r} field: the run's options are incomplete; {_ARGS_FIX}")
    for name, kind in _ARG_FIELDS.items():
        if name not in saved_args:
            continue
        value = saved_args[name]
        if isinstance(kind, tuple) and all(isinstance(choice, str) for choice in kind):
            if value not in kind:
                raise ValueError(f"{where}: {name} is {value!r}, not one of {list(kind)}; {_ARGS_FIX}")
            continue
        wrong_type = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if wrong_type or (name in _ARG_MINIMUM and value < _ARG_MINIMUM[name]):
            if kind is int:
                expected = f"an integer >= {_ARG_MINIMUM[name]}" if name in _ARG_MINIMUM else "an integer"
            else:
                expected = {str: "a string", bool: "true or false"}.get(kind, "a mapping or null")
            raise ValueError(f"{where}: {name} is {value!r}, not {expected}; {_ARGS_FIX}")


def read_run_folder(folder: str | pathlib.Path, algo: str | None = None, env_id: str | None = None) -> RunFolder:
    """
    Read a run folder to continue: its ``args.yml`` / ``config.yml`` (as data) and its run checkpoint.

    :param folder: the run folder (``sb3-cherry train`` prints it as ``Log path:``) or its ``run_checkpoint/``
    :param algo: the ``--algo`` given with ``--resume`` (None: the run's)
    :param env_id: the ``--env`` given with ``--resume`` (None: the run's)
    :return: the run
    :raises FileNotFoundError: no such folder, not a run folder, or no run checkpoint in it
    :raises ValueError: another algorithm or env than given, a checkpoint of another algorithm, ``collection='async'``,
        a symbolic link in the folder, an ``args.yml`` field of another type or value than rl_zoo3's option takes
    """
    path = pathlib.Path(folder)
    if path.name == RUN_CHECKPOINT and has_run_checkpoint(path):  # the checkpoint folder itself: its run folder
        path = path.parent
    example = "e.g. logs/ppo_rollback/CartPole-v1_1"
    if not path.is_dir():
        raise FileNotFoundError(
            f"No run folder {path}: pass the folder 'sb3-cherry train' printed as 'Log path:' ({example})."
        )
    _refuse_symlinks(path)
    candidates = sorted(p for p in path.iterdir() if (p / "args.yml").is_file() and (p / "config.yml").is_file())
    if len(candidates) != 1:
        found = "none" if not candidates else ", ".join(p.name for p in candidates)
        raise FileNotFoundError(
            f"{path} is not a run folder of 'sb3-cherry train': expected one <env>/ sub-folder with args.yml and "
            f"config.yml, found {found}. Pass the run folder itself ({example})."
        )
    params_path = candidates[0]
    saved_args = safe_load_yaml(params_path / "args.yml")
    hyperparams = safe_load_yaml(params_path / "config.yml")
    if not isinstance(saved_args, dict) or not isinstance(hyperparams, dict):
        raise ValueError(f"{params_path}: args.yml and config.yml must be mappings (as rl_zoo3 writes them).")
    check_imported_names(hyperparams, str(params_path / "config.yml"))
    _check_saved_args(saved_args, params_path / "args.yml")
    args = argparse.Namespace(**saved_args)
    checkpoint = path / RUN_CHECKPOINT
    if not has_run_checkpoint(checkpoint):
        raise FileNotFoundError(
            f"No run checkpoint in {path} ({checkpoint}/ is missing or incomplete): only a run trained with "
            f"--run-checkpoint-freq N (or --stop-after STEPS) continues exactly. Train again with one of them; to "
            f"continue its final model approximately (counters, schedules and env states restart), use rl_zoo3's "
            f"-i {params_path.name}.zip of that folder."
        )
    if algo is not None and algo != args.algo:
        raise ValueError(
            f"Algorithm mismatch: {path} was trained with --algo {args.algo}, not {algo}. Drop --algo (the run's own "
            f"is used) or pass a run folder of {algo}."
        )
    if env_id is not None and env_id != args.env:
        raise ValueError(f"Env mismatch: {path} was trained on --env {args.env}, not {env_id}. Drop --env.")
    # sb3_cherry's algorithms only: they load without pickle; rl_zoo3's ALGOS also lists SB3's, whose load unpickles
    # (a downloaded folder naming --algo ppo ran a pickle of its checkpoint's model.zip)
    algos = sb3_cherry.zoo_algorithms()
    algo_class = algos.get(args.algo)
    if algo_class is None:
        raise ValueError(
            f"{params_path / 'args.yml'}: --algo {args.algo!r} is not an sb3_cherry algorithm; known: {sorted(algos)}."
        )
    state = read_run_state(checkpoint)
    if state["algorithm"] != algo_class.__name__:
        raise ValueError(
            f"Algorithm mismatch: {checkpoint} holds a {state['algorithm']} checkpoint, but the run's args.yml says "
            f"--algo {args.algo} ({algo_class.__name__}). The folder's files come from different runs: pass the run "
            "folder the checkpoint was written in."
        )
    check_checkpointable(hyperparams, str(params_path / "config.yml"))
    return RunFolder(
        path, params_path, args, hyperparams, checkpoint, state["num_timesteps"], state["total_timesteps"], state["extra"]
    )


@dataclasses.dataclass
class ChunkOptions:
    """
    What :class:`ChunkedExperimentManager` adds to rl_zoo3's run.

    :param run_checkpoint_freq: steps between run checkpoints (None: no checkpoints)
    :param stop_after: end this process at the first run checkpoint after this many steps, within one rollout (see
        :class:`~sb3_cherry.common.checkpoint.RunCheckpointCallback`; None: run to the end)
    :param resume: the run to continue (None: a new run)
    """

    run_checkpoint_freq: int | None = None
    stop_after: int | None = None
    resume: RunFolder | None = None


def _truncate_monitor_files(venv: VecEnv) -> None:
    """
    Cut each ``Monitor`` file of a restored DummyVecEnv back to the episodes its restored ``Monitor`` counted (rows a
    process wrote after its last checkpoint are written again by the resumed run), and continue its ``t`` column.

    :param venv: the run's env, restored from a checkpoint with exact env states
    """
    base = venv.unwrapped
    if not isinstance(base, DummyVecEnv):
        return
    for env in base.envs:
        monitor = env
        while isinstance(monitor, gym.Wrapper) and not isinstance(monitor, Monitor):
            monitor = monitor.env
        writer = getattr(monitor, "results_writer", None) if isinstance(monitor, Monitor) else None
        if writer is None:
            continue
        assert isinstance(monitor, Monitor)
        writer.file_handler.flush()
        name = writer.file_handler.name
        with open(name, "rb") as file:
            lines = file.readlines()
        keep = 2 + len(monitor.episode_returns)  # "#{...}" line, csv header, one row per episode
        os.truncate(name, sum(len(line) for line in lines[:keep]))
        rows = list(csv.DictReader(io.StringIO(b"".join(lines[1:keep]).decode())))
        if rows:  # wall time continues from the last kept row
            monitor.t_start = time.time() - float(rows[-1]["t"])


#: the ``VecNormalize`` statistics of ``best_model.zip``, next to it in the run folder
BEST_STATISTICS = "best_model_vecnormalize.pkl"


def save_statistics(vec_normalize: VecNormalize, path: str) -> None:
    """
    ``VecNormalize.save`` written atomically (the same pickle: SB3's ``save`` pickles the wrapper, whose state leaves
    out the wrapped env; a ``CherryVecNormalize`` as SB3's ``VecNormalize``): an interrupted write keeps the previous
    file whole, where ``save`` truncates it first.

    :param vec_normalize: the statistics
    :param path: the file
    """
    atomic_write(path, lambda file: pickle.dump(sb3_vec_normalize(vec_normalize), file))


class _SaveStatistics(BaseCallback):
    """Write the training ``VecNormalize``'s statistics to a file, atomically, at every call (nothing without
    normalisation): ``EvalCallback``'s ``callback_on_new_best`` for the best model's statistics, and in place of
    rl_zoo3's ``SaveVecNormalizeCallback`` (which writes with ``VecNormalize.save``).

    :param path: the file
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def _on_step(self) -> bool:
        vec_normalize = self.model.get_vec_normalize_env()
        if vec_normalize is not None:
            save_statistics(vec_normalize, self.path)
        return True


class _CheckpointWithStatistics(CheckpointCallback):
    """
    SB3's ``CheckpointCallback`` that also saves the ``VecNormalize`` statistics of every checkpoint
    (``<prefix>_vecnormalize_<steps>_steps.pkl``, as ``save_vecnormalize=True`` names them), atomically. The model
    itself is saved atomically by every sb3_cherry algorithm's ``save``.

    :param checkpoint: the callback to take the settings of (rl_zoo3's)
    """

    def __init__(self, checkpoint: CheckpointCallback):
        super().__init__(
            checkpoint.save_freq,
            checkpoint.save_path,
            checkpoint.name_prefix,
            checkpoint.save_replay_buffer,
            save_vecnormalize=False,
            verbose=checkpoint.verbose,
        )

    def _on_step(self) -> bool:
        result = super()._on_step()
        vec_normalize = self.model.get_vec_normalize_env()
        if self.n_calls % self.save_freq == 0 and vec_normalize is not None:
            path = self._checkpoint_path("vecnormalize_", extension="pkl")
            save_statistics(vec_normalize, path)
            if self.verbose >= 2:
                print(f"Saving model VecNormalize to {path}")
        return result


#: held while a manager builds envs: optuna's ``--n-jobs`` threads share one manager, whose VecEnv class
#: :meth:`SafeExperimentManager.create_envs` swaps for the parallel training envs
_CREATE_ENVS_LOCK = threading.RLock()


class SafeExperimentManager(ExperimentManager):
    """
    rl_zoo3's ``ExperimentManager`` that never unpickles a ``vecnormalize.pkl``: rl_zoo3 loads
    ``<folder of -i>/<env>/vecnormalize.pkl`` with SB3's ``VecNormalize.load`` (``pickle``, which can run code), and
    without ``-i`` that folder is ``<working directory>/<env>``, so a new run or ``--resume`` would read whatever file a
    downloaded run folder put there. Here the statistics of a ``-i`` model are read with the restricted unpickler
    (:func:`~sb3_cherry.common.restricted_pickle.load_vec_normalize`), and runs without ``-i`` start their
    normalisation from the config (a resumed run's statistics come from its run checkpoint).
    ``sb3-cherry train`` always trains through this class (or a subclass). Its normalisation wrapper is
    :class:`~sb3_cherry.common.vec_env.vec_normalize.CherryVecNormalize` (SB3's ``VecNormalize`` with the same floats,
    cheaper per step; saved as SB3's).

    The training envs' VecEnv is the command line's ``--vec-env`` (:attr:`vec_env_option`), else the entry's
    ``vec_env``, else rl_zoo3's ``DummyVecEnv``; ``parallel`` is a
    :class:`~sb3_cherry.common.vec_env.parallel_vec_env.CherryParallelVecEnv` for two or more training envs (the
    evaluation env stays in one process).
    """

    #: ``sb3-cherry train --vec-env`` (None: not given; the entry's ``vec_env`` applies), set on a subclass
    vec_env_option: ClassVar[str | None] = None
    #: ``sb3-cherry train --parallel-workers`` (None: one per core beyond this process's)
    parallel_workers: ClassVar[int | None] = None
    #: the VecEnv of the training envs (``dummy``, ``subproc`` or ``parallel``), known after ``_preprocess_hyperparams``
    _vec_env_choice: str = "dummy"

    def _maybe_normalize(self, env: VecEnv, eval_env: bool) -> VecEnv:
        """
        :param env: the env to wrap
        :param eval_env: an evaluation env (statistics frozen, rewards not normalised)
        :return: ``env`` in a ``CherryVecNormalize`` with the ``-i`` model's statistics, or as rl_zoo3 wraps it without
            them (in a ``CherryVecNormalize`` where rl_zoo3 builds a ``VecNormalize``)
        """
        path = os.path.join(os.path.dirname(self.trained_agent), self.env_name, "vecnormalize.pkl")
        if self.trained_agent and os.path.exists(path):
            print("Loading saved VecNormalize stats (restricted unpickler)")
            normalized = CherryVecNormalize.from_vec_normalize(load_vec_normalize(path, env))
            if eval_env:
                normalized.training = False
                normalized.norm_reward = False
            return normalized
        # rl_zoo3's branch without saved statistics: it looks for <dirname(trained_agent)>/<env>/vecnormalize.pkl
        # (a relative path without -i), so point it where no file is
        trained_agent, self.trained_agent = self.trained_agent, os.devnull
        try:
            wrapped = super()._maybe_normalize(env, eval_env)
        finally:
            self.trained_agent = trained_agent
        return CherryVecNormalize.from_vec_normalize(wrapped) if type(wrapped) is VecNormalize else wrapped

    def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """
        :return: rl_zoo3's hyperparameters, from a YAML config only (whatever option spelling named it: rl_zoo3 runs a
            ``.py`` config as code and imports any other name as a module), checked with the overrides
            (:func:`~sb3_cherry.common.config_schema.validate_config`)
        :raises ValueError: another config file, or a hyperparameter the check refuses
        """
        check_yaml_config(self.config)
        self._trial_policy_kwargs: dict[str, Any] | None = None
        hyperparams, saved = super().read_hyperparameters()
        trial_kwargs = self._trial_policy_kwargs
        if trial_kwargs is not None and "policy_kwargs" in (self.custom_hyperparams or {}):
            # rl_zoo3 applies -params after the trial's values: a -params policy_kwargs replaced the trial's sampled
            # net_arch / activation_fn, which the trial searched over the same -params (see objective)
            given = parse_policy_kwargs(hyperparams.get("policy_kwargs") or {}, "-params policy_kwargs")
            hyperparams["policy_kwargs"] = saved["policy_kwargs"] = {**given, **trial_kwargs}
        # the entry with the overrides rl_zoo3 parsed, whatever their spelling (--hyperparams=..., an abbreviation),
        # checked as the command line's pre-check does, before the run folder exists
        # (self.env_kwargs: still the command line's --env-kwargs, which rl_zoo3 uses instead of the entry's)
        validate_config(
            self.config, self.algo, self.env_name.gym_id, dict(self.custom_hyperparams or {}), dict(self.env_kwargs or {})
        )
        if self.vec_env_option in VEC_ENV_CHOICES:
            # the command line's --vec-env, over the entry's: the run's config.yml records it, for --resume
            hyperparams["vec_env"] = saved["vec_env"] = self.vec_env_option
        return hyperparams, saved

    def create_callbacks(self) -> None:
        """
        rl_zoo3's callbacks, with the ``VecNormalize`` statistics saved (atomically) next to each model they belong
        to: every checkpoint's (``rl_model_vecnormalize_<steps>_steps.pkl``, the name of SB3's ``save_vecnormalize``)
        and the best model's (``best_model_vecnormalize.pkl``). rl_zoo3 keeps only the end-of-training
        ``<env>/vecnormalize.pkl``, with which ``--load-best`` / ``--load-checkpoint`` would evaluate an earlier model.
        """
        super().create_callbacks()
        for index, callback in enumerate(self.callbacks):
            if type(callback) is CheckpointCallback:  # rl_zoo3's own (a config's subclass is kept as it is)
                self.callbacks[index] = _CheckpointWithStatistics(callback)
            elif isinstance(callback, EvalCallback):
                previous = callback.callback_on_new_best
                if isinstance(previous, SaveVecNormalizeCallback) and previous.name_prefix is None:
                    # rl_zoo3's: <env>/vecnormalize.pkl at every new best (overwritten at the end of training)
                    previous = _SaveStatistics(os.path.join(previous.save_path, "vecnormalize.pkl"))
                saves = [previous] if previous is not None else []
                if callback.best_model_save_path is not None:
                    saves.append(_SaveStatistics(os.path.join(callback.best_model_save_path, BEST_STATISTICS)))
                if saves:
                    callback.callback_on_new_best = saves[0] if len(saves) == 1 else CallbackList(saves)
                    callback.callback_on_new_best.parent = callback

    def setup_experiment(self) -> tuple[BaseAlgorithm, dict[str, Any]] | None:
        """
        rl_zoo3's set-up (hyperparameters, run folder, callbacks, envs, model). If it fails after creating a new run
        folder (the model refused an argument, a demonstrations file is missing), the folder, which holds no model
        (only monitor files), is removed: the next ``evaluate`` without ``--exp-id`` would pick it and find nothing;
        so are ``<log folder>/<algo>/`` and the log folder when this call created them and they are empty. A TypeError
        or AssertionError of the set-up (the env, a wrapper, the policy or the algorithm refusing a config value that
        the checks before could not know) becomes a one-line ValueError naming the config entry (the original is
        chained); errors during training are not touched.

        :return: the model and its hyperparameters (None for an optimisation run)
        :raises ValueError: a TypeError / AssertionError of the set-up, naming the config entry
        """
        self._env_kwargs_given = dict(self.env_kwargs or {})  # the command line's --env-kwargs (rl_zoo3's __init__)
        folders = [pathlib.Path(path) for path in (self.save_path, self.log_path, self.log_folder)]
        existed = [folder.exists() for folder in folders]
        try:
            return super().setup_experiment()
        except BaseException as exc:
            run_folder, log_path, log_folder = folders
            if not existed[0] and run_folder.is_dir() and not any(run_folder.rglob("*.zip")):
                shutil.rmtree(run_folder, ignore_errors=True)
            for folder, was_there in ((log_path, existed[1]), (log_folder, existed[2])):  # <log folder>/<algo>/ made now
                if not was_there:
                    with contextlib.suppress(OSError):  # (not empty: another run's, or files of this one)
                        folder.rmdir()
            if isinstance(exc, (TypeError, AssertionError)):
                raise ValueError(self._setup_error(exc)) from exc
            raise

    def _config_where(self) -> str:
        """The config file and entry this run reads, for error messages."""
        return f"{self.config} [{self.env_name.gym_id}]"

    def _setup_error(self, exc: BaseException) -> str:
        """
        The one-line message of a TypeError / AssertionError raised while the experiment is set up (the env, the
        wrappers, the policy or the algorithm refusing a value of the config, which the checks before could not know):
        the config entry, the error and where it was raised.

        :param exc: the exception
        :return: the message
        """
        frames = traceback.extract_tb(exc.__traceback__)
        at = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
        message = " ".join(str(exc).split()) or "(no message)"
        options = (("-params", self.custom_hyperparams), ("--env-kwargs", self._env_kwargs_given))
        given = [flag for flag, value in options if value]
        overrides = f" with {' and '.join(given)}" if given else ""
        return (
            f"{self._config_where()}: the env / policy / algorithm could not be built from this entry{overrides} "
            f"({type(exc).__name__}{at}: {message}). Fix the value it names."
        )

    def save_trained_model(self, model: BaseAlgorithm) -> None:
        """
        rl_zoo3's end-of-training save, with ``<env>/vecnormalize.pkl`` written atomically (rl_zoo3 writes it with
        ``VecNormalize.save``, which truncates the previous file first).

        :param model: the trained model
        """
        normalize, self.normalize = self.normalize, False
        try:
            super().save_trained_model(model)
        finally:
            self.normalize = normalize
        vec_normalize = model.get_vec_normalize_env()
        if normalize and vec_normalize is not None:
            save_statistics(vec_normalize, os.path.join(self.params_path, "vecnormalize.pkl"))

    @staticmethod
    def _preprocess_schedules(hyperparams: dict[str, Any]) -> dict[str, Any]:
        """
        rl_zoo3's schedules, with ``lin_<value>`` as :class:`~sb3_cherry.common.schedules.ZooLinearSchedule` instead
        of rl_zoo3's ``SimpleLinearSchedule``: the same values bit for bit while ``progress_remaining >= 0``, and 0
        after, where rl_zoo3's goes negative (the last rollout of a run may overshoot ``total_timesteps``: a negative
        learning rate, a step of gradient ascent, and clip range in the run's last update). ``lin_<value>`` strings in
        GAIL / AIRL's ``generator_kwargs`` become schedules too (rl_zoo3 converts the top level only), and a ``null``
        schedule (``clip_range_vf: null``, the constructor's default) stays None (rl_zoo3 refused it).

        :param hyperparams: the entry
        :return: the entry with schedule objects
        """
        from rl_zoo3.utils import SimpleLinearSchedule

        # None is the constructor's default (clip_range_vf: no value clipping), which rl_zoo3 refuses as a schedule
        unset = [key for key in _SCHEDULE_KEYS if key in hyperparams and hyperparams[key] is None]
        hyperparams = ExperimentManager._preprocess_schedules({k: v for k, v in hyperparams.items() if k not in unset})
        hyperparams.update(dict.fromkeys(unset))
        generator_kwargs = hyperparams.get("generator_kwargs")
        if isinstance(generator_kwargs, dict):
            hyperparams["generator_kwargs"] = {
                key: ZooLinearSchedule(float(value[len("lin_") :])) if isinstance(value, str) and key in _SCHEDULE_KEYS
                else value
                for key, value in generator_kwargs.items()
            }  # fmt: skip
        return {
            key: ZooLinearSchedule(value.initial_value) if isinstance(value, SimpleLinearSchedule) else value
            for key, value in hyperparams.items()
        }

    def _preprocess_hyperparams(self, hyperparams: dict[str, Any]) -> Any:
        """
        rl_zoo3's preprocessing, with the strings it would ``eval`` (``normalize``, ``policy_kwargs``,
        ``monitor_kwargs``, ``replay_buffer_*``) and an ``env_kwargs`` ``dict(...)`` string (which it would pass on as
        the string) parsed as data first (:func:`~sb3_cherry.common.safe_config.parse_literal_string`), and a
        ``rollout_buffer_class`` name (which it would pass on as the string) imported
        (:func:`~sb3_cherry.common.safe_config.resolve_rollout_buffer_class`, after the config's checks).

        :param hyperparams: the entry
        :return: rl_zoo3's ``(hyperparams, env_wrapper, callbacks, vec_env_wrapper)``
        """
        hyperparams = dict(hyperparams)
        for key in ("env_kwargs", *_STRING_KEYS):  # the strings rl_zoo3 would eval (normalize, policy_kwargs, ...)
            if isinstance(hyperparams.get(key), str):
                hyperparams[key] = parse_literal_string(hyperparams[key], key)
        # sb3_cherry's key, not the model's: the command line's --vec-env overrides it
        entry_vec_env = hyperparams.pop("vec_env", None)
        self._vec_env_choice = self.vec_env_option or entry_vec_env or "dummy"
        if self.vec_env_option is None and entry_vec_env == "subproc":  # as rl_zoo3's --vec-env subproc
            self.vec_env_class = rl_zoo3.exp_manager.SubprocVecEnv
        where = f"{self.config} [{self.env_name.gym_id}]"
        return super()._preprocess_hyperparams(resolve_rollout_buffer_class(hyperparams, where))

    def create_envs(self, n_envs: int, eval_env: bool = False, no_log: bool = False) -> VecEnv:
        """
        :param n_envs: number of envs
        :param eval_env: an evaluation env
        :param no_log: no monitor files
        :return: rl_zoo3's env; the training envs in a ``CherryParallelVecEnv`` when ``parallel`` was chosen (in one
            process, with a printed note, for a single training env, or when this process has one core and
            ``--parallel-workers`` was not given)
        """
        from sb3_cherry.common.vec_env import parallel_vec_env

        with _CREATE_ENVS_LOCK:  # (optuna's --n-jobs threads share this manager: the class swap below is not seen by them)
            if self._vec_env_choice != "parallel" or eval_env:
                return super().create_envs(n_envs, eval_env, no_log)
            if n_envs < 2 or (self.parallel_workers is None and parallel_vec_env.available_cores() < 2):
                why = "one training env" if n_envs < 2 else "this process has one core"
                print(f"vec_env parallel: {why}, the training envs are stepped in this process (dummy)")
                return super().create_envs(n_envs, eval_env, no_log)
            return self._create_parallel_envs(n_envs, no_log)

    def _create_parallel_envs(self, n_envs: int, no_log: bool) -> VecEnv:
        """rl_zoo3's training envs, in a ``CherryParallelVecEnv`` (with ``_CREATE_ENVS_LOCK`` held)."""
        from sb3_cherry.common.vec_env import parallel_vec_env

        CherryParallelVecEnv = parallel_vec_env.CherryParallelVecEnv  # (looked up here: tests replace it)
        saved = self.vec_env_class, self.vec_env_kwargs
        workers = None if self.parallel_workers is None else min(self.parallel_workers, n_envs - 1)
        self.vec_env_class, self.vec_env_kwargs = CherryParallelVecEnv, {"n_workers": workers}  # type: ignore[assignment]
        try:
            return super().create_envs(n_envs, False, no_log)
        finally:
            self.vec_env_class, self.vec_env_kwargs = saved

    @contextlib.contextmanager
    def _parallel_eval_warning_silenced(self) -> Iterator[None]:
        """
        With ``parallel`` training envs, SB3's ``EvalCallback`` warns that the evaluation env is not of the training
        env's class: it is one process by design (the same envs; evaluation episodes are not split). Silenced here.
        """
        with warnings.catch_warnings():
            if self._vec_env_choice == "parallel":
                warnings.filterwarnings("ignore", message="Training and eval env are not of the same type")
            yield

    def learn(self, model: BaseAlgorithm) -> None:
        """
        rl_zoo3's ``learn`` (see :meth:`_parallel_eval_warning_silenced`).

        :param model: the model
        """
        with self._parallel_eval_warning_silenced():
            super().learn(model)

    def load_trial(self, storage: str, study_name: str, trial_id: int | None = None, convert: bool = True) -> dict[str, Any]:
        """
        rl_zoo3's hyperparameters of an optuna trial (``--storage --study-name --trial-id``), with the trial's
        ``policy_kwargs`` merged into the config entry's as during the search (:meth:`objective`).

        :param storage: the optuna storage
        :param study_name: the study
        :param trial_id: the trial (None: the best one)
        :param convert: convert the sampled values into hyperparameters
        :return: the trial's hyperparameters
        """
        params = super().load_trial(storage, study_name, trial_id, convert)
        if convert and isinstance(params.get("policy_kwargs"), dict):
            self._trial_policy_kwargs = dict(params["policy_kwargs"])  # merged over -params' (read_hyperparameters)
            config = safe_load_yaml(self.config) or {}
            entry = config_entry(config, self.env_name.gym_id, self.config) or {}
            entry_kwargs = parse_policy_kwargs(entry.get("policy_kwargs") or {}, f"{self.config} policy_kwargs")
            params["policy_kwargs"] = {**entry_kwargs, **params["policy_kwargs"]}
        return params

    def objective(self, trial: Any) -> float:
        """
        rl_zoo3's optuna objective (``-optimize``), with the trial's sampled ``policy_kwargs`` (``net_arch``,
        ``activation_fn``) merged into the config's instead of replacing them: a Beta entry's trials stay Beta.

        :param trial: the optuna trial
        :return: the trial's score
        """
        from sb3_cherry.common.hyperparams_opt import config_policy_kwargs

        with config_policy_kwargs(self._hyperparams.get("policy_kwargs")):
            return super().objective(trial)


class ChunkedExperimentManager(SafeExperimentManager):
    """
    rl_zoo3's ``ExperimentManager`` with run checkpoints (:class:`~sb3_cherry.common.checkpoint.RunCheckpointCallback`)
    and ``--resume``: the constructor takes the run's saved options, ``read_hyperparameters`` its saved config,
    ``_load_pretrained_agent`` loads the checkpoint (model, env and evaluation-env states, evaluation history) and
    ``learn`` trains the remaining steps without resetting the counters. Configure it through :attr:`options` (see
    :func:`chunked_experiment_manager`).

    :param args: the options ``rl_zoo3.train`` parsed (replaced by the run's saved ones on resume)
    :param positional: ``ExperimentManager``'s positional arguments, as ``rl_zoo3.train`` passes them
    :param keywords: ``ExperimentManager``'s keyword arguments, as ``rl_zoo3.train`` passes them
    """

    options: ClassVar[ChunkOptions] = ChunkOptions()

    def __init__(self, args: argparse.Namespace, *positional: Any, **keywords: Any):
        run = self.options.resume
        self.saver: RunCheckpointCallback | None = None
        self.eval_callback: EvalCallback | None = None
        self.run_state: RunState | None = None
        if run is None:
            super().__init__(args, *positional, **keywords)
            return
        saved = run.args

        def get(name: str, default: Any = None) -> Any:
            return getattr(saved, name, default)

        # tensorboard logs go where THIS command says (-tb), not where the run folder's args.yml says: a run folder's
        # files do not choose where --resume writes outside it
        tensorboard_log = getattr(args, "tensorboard_log", "") or ""
        if get("tensorboard_log") and not tensorboard_log:
            print(
                f"The run logged to tensorboard under {get('tensorboard_log')}; pass -tb {get('tensorboard_log')} with "
                "--resume to continue there (not taken from the run folder)."
            )

        super().__init__(
            saved,
            saved.algo,
            saved.env,
            get("log_folder", "logs"),
            tensorboard_log=tensorboard_log,
            n_timesteps=get("n_timesteps", -1),
            eval_freq=get("eval_freq", 25000),
            n_eval_episodes=get("eval_episodes", 5),
            save_freq=get("save_freq", -1),
            hyperparams=get("hyperparams"),
            env_kwargs=get("env_kwargs"),
            eval_env_kwargs=get("eval_env_kwargs"),
            truncate_last_trajectory=get("truncate_last_trajectory", True),
            seed=get("seed", 0),
            log_interval=get("log_interval", -1),
            save_replay_buffer=get("save_replay_buffer", False),
            verbose=get("verbose", 1),
            vec_env_type=get("vec_env", "dummy"),
            n_eval_envs=get("n_eval_envs", 1),
            device=get("device", "auto"),
            show_progress=keywords.get("show_progress", False),
        )
        # the run's folder, not a new <env>_<id + 1>
        self.save_path, self.params_path = str(run.path), str(run.params_path)
        self.continue_training = True

    def _config_where(self) -> str:
        """The config file and entry this run reads (on resume: the run's ``config.yml``), for error messages."""
        run = self.options.resume
        return str(run.params_path / "config.yml") if run is not None else super()._config_where()

    def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """
        :return: rl_zoo3's hyperparameters; on resume the run's ``config.yml`` (overrides already merged in), with the
            strings rl_zoo3 would ``eval`` parsed as data
        """
        run = self.options.resume
        if run is None:
            return super().read_hyperparameters()
        hyperparams = dict(run.hyperparams)
        where = str(run.params_path / "config.yml")
        for key in _STRING_KEYS:
            if isinstance(hyperparams.get(key), str):
                hyperparams[key] = parse_literal_string(hyperparams[key], f"{where} [{key}]")
        print(f"Resuming {run.path} at {run.num_timesteps} of {run.total_timesteps} steps (hyperparameters: {where})")
        return hyperparams, OrderedDict(sorted(run.hyperparams.items()))

    def create_envs(self, n_envs: int, eval_env: bool = False, no_log: bool = False) -> VecEnv:
        """
        :param n_envs: number of envs
        :param eval_env: an evaluation env
        :param no_log: no monitor files
        :return: rl_zoo3's env; on resume its monitor files are appended to, not overwritten
        """
        if self.options.resume is not None:
            self.monitor_kwargs = {**self.monitor_kwargs, "override_existing": False}
        return super().create_envs(n_envs, eval_env, no_log)

    def create_callbacks(self) -> None:
        """rl_zoo3's callbacks, then the run checkpoint callback (which also stores the evaluation env's state)."""
        super().create_callbacks()
        self.eval_callback = next((cb for cb in self.callbacks if isinstance(cb, EvalCallback)), None)
        freq = self.options.run_checkpoint_freq
        if freq is None:
            return
        other_envs = {"eval": self.eval_callback.eval_env} if self.eval_callback is not None else None
        self.saver = RunCheckpointCallback(
            pathlib.Path(self.save_path) / RUN_CHECKPOINT,
            save_freq=freq,
            stop_after=self.options.stop_after,
            extra=self._callback_state,
            other_envs=other_envs,
            verbose=self.verbose,
        )
        self.callbacks.append(self.saver)

    def _callback_state(self) -> dict[str, Any]:
        """The data stored with each run checkpoint: its period and the evaluation history (JSON)."""
        state: dict[str, Any] = {"run_checkpoint_freq": self.options.run_checkpoint_freq}
        evaluation = self.eval_callback
        if evaluation is not None:
            state["evaluation"] = {
                "timesteps": [int(t) for t in evaluation.evaluations_timesteps],
                "results": [[float(r) for r in rs] for rs in evaluation.evaluations_results],
                "ep_lengths": [[int(n) for n in ns] for ns in evaluation.evaluations_length],
                "successes": [[bool(s) for s in ss] for ss in evaluation.evaluations_successes],
                "best_mean_reward": float(evaluation.best_mean_reward),
                "last_mean_reward": float(evaluation.last_mean_reward),
            }
        return state

    def _load_pretrained_agent(self, hyperparams: dict[str, Any], env: VecEnv) -> BaseAlgorithm:
        """
        :param hyperparams: the processed hyperparameters
        :param env: the run's env
        :return: rl_zoo3's ``-i`` model; on resume the run checkpoint's model with every state restored
        """
        run = self.options.resume
        if run is None:
            return super()._load_pretrained_agent(hyperparams, env)
        import rl_zoo3.utils

        schedules = {key: hyperparams[key] for key in _SCHEDULE_KEYS if key in hyperparams}
        other_envs = {"eval": self.eval_callback.eval_env} if self.eval_callback is not None else None
        model, self.run_state = load_run_checkpoint(
            rl_zoo3.utils.ALGOS[self.algo],
            run.checkpoint,
            env,
            other_envs=other_envs,
            device=self.device,
            tensorboard_log=self.tensorboard_log,
            verbose=self.verbose,
            **schedules,
        )
        self._restore_callbacks(model)
        if self.run_state.envs_exact:
            _truncate_monitor_files(env)
        return model

    def _restore_callbacks(self, model: BaseAlgorithm) -> None:
        """Continue the callbacks' step counts (their periods count calls) and the evaluation history."""
        assert self.run_state is not None
        continue_callback_counts(self.callbacks, model)
        saved = self.run_state.extra.get("evaluation")
        if self.eval_callback is not None and saved is not None:
            evaluation = self.eval_callback
            evaluation.evaluations_timesteps = list(saved["timesteps"])
            evaluation.evaluations_results = [list(rs) for rs in saved["results"]]
            evaluation.evaluations_length = [list(ns) for ns in saved["ep_lengths"]]
            evaluation.evaluations_successes = [list(ss) for ss in saved["successes"]]
            evaluation.best_mean_reward = saved["best_mean_reward"]
            evaluation.last_mean_reward = saved["last_mean_reward"]

    def _save_config(self, saved_hyperparams: dict[str, Any]) -> None:
        """
        :param saved_hyperparams: the hyperparameters as read
        """
        if self.options.resume is None:  # on resume the run's config.yml, args.yml and command.txt stay as they are
            super()._save_config(saved_hyperparams)

    def learn(self, model: BaseAlgorithm) -> None:
        """
        rl_zoo3's ``learn``; on resume ``model.learn(remaining, reset_num_timesteps=False)`` so that the counters and
        schedules continue. Prints how to go on when the process stopped after a chunk.

        :param model: the model
        """
        if self.run_state is None:
            super().learn(model)
        else:
            with self._parallel_eval_warning_silenced():
                kwargs: dict[str, Any] = {}
                if self.log_interval > -1:
                    kwargs["log_interval"] = self.log_interval
                elif self.log_interval < -1:
                    kwargs["log_interval"] = None
                if self.callbacks:
                    kwargs["callback"] = self.callbacks
                try:
                    if self.run_state.remaining > 0:
                        model.learn(self.run_state.remaining, reset_num_timesteps=False, **kwargs)
                except KeyboardInterrupt:
                    pass
                finally:
                    if self.callbacks:
                        self.callbacks[0].on_training_end()
                    with contextlib.suppress(EOFError):
                        assert model.env is not None
                        model.env.close()
        if self.saver is not None and self.saver.stop:
            print(
                f"Stopped after this chunk at {self.saver.saved_at} of {model._total_timesteps} steps (run checkpoint: "
                f"{self.saver.folder}). Continue with: sb3-cherry train --resume {self.save_path}"
            )


@contextlib.contextmanager
def experiment_manager_class(manager_class: type) -> Iterator[type]:
    """
    Within the block, ``rl_zoo3.train.train`` builds ``manager_class`` instead of its ``ExperimentManager`` (restored
    afterwards).

    :param manager_class: an ``ExperimentManager`` subclass
    :return: ``manager_class``
    """
    import rl_zoo3.train

    saved = rl_zoo3.train.ExperimentManager
    rl_zoo3.train.ExperimentManager = manager_class  # type: ignore[assignment, misc]
    try:
        yield manager_class
    finally:
        rl_zoo3.train.ExperimentManager = saved  # type: ignore[misc]


@contextlib.contextmanager
def chunked_experiment_manager(options: ChunkOptions) -> Iterator[type[ChunkedExperimentManager]]:
    """
    Within the block, ``rl_zoo3.train.train`` builds a :class:`ChunkedExperimentManager` configured with ``options``.

    :param options: run checkpoints, chunk length and the run to resume
    :return: the configured class
    """

    class Configured(ChunkedExperimentManager):
        """A :class:`ChunkedExperimentManager` with its options."""

    Configured.options = options
    with experiment_manager_class(Configured):
        yield Configured


__all__ = [
    "RESUME_OPTIONS",
    "RUN_CHECKPOINT",
    "ChunkOptions",
    "ChunkedExperimentManager",
    "RunFolder",
    "SafeExperimentManager",
    "check_checkpointable",
    "chunked_experiment_manager",
    "experiment_manager_class",
    "read_run_folder",
]
