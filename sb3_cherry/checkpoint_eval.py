"""
Run checkpoints as models to evaluate: ``sb3-cherry evaluate / video / record --model CHECKPOINT`` load a checkpoint's
``model.zip`` into an env wrapped as the run's training env was, with the ``VecNormalize`` observation statistics
stored in the checkpoint (``training=False``, ``norm_reward=False``).

A checkpoint is a run folder of ``sb3-cherry train --run-checkpoint-freq`` (its ``run_checkpoint/``), or a checkpoint
folder of ``benchmarks/learning.py --checkpoint-dir``.
"""

import pathlib
import warnings
from collections.abc import Mapping
from typing import Any

from stable_baselines3.common.vec_env import VecEnv, VecFrameStack, VecNormalize

from sb3_cherry.common.checkpoint import MODEL_FILE, checkpoint_normalization, has_run_checkpoint, read_run_state
from sb3_cherry.common.safe_config import UnsafeConfigError, check_imported_names, parse_literal_string, safe_load_yaml

#: Sub-folder of a run folder that holds its run checkpoint (written by ``sb3-cherry train --run-checkpoint-freq``)
RUN_CHECKPOINT = "run_checkpoint"


def checkpoint_folder(path: str | pathlib.Path) -> pathlib.Path | None:
    """
    The run checkpoint a ``--model`` path names: a checkpoint folder, or a run folder holding ``run_checkpoint/``.

    :param path: the path given
    :return: the checkpoint folder, or None when ``path`` is not one
    """
    path = pathlib.Path(path)
    if has_run_checkpoint(path):
        return path
    if has_run_checkpoint(path / RUN_CHECKPOINT):
        return path / RUN_CHECKPOINT
    return None


def run_env_kwargs(hyperparams: Mapping[str, Any], env_folder: str | pathlib.Path) -> dict[str, Any]:
    """
    The env keyword arguments a run was trained with: its config's ``env_kwargs``, updated with the ``--env-kwargs``
    of the training command (rl_zoo3 stores those in ``args.yml``, which its ``enjoy`` reads, read here as data with
    :func:`~sb3_cherry.common.safe_config.safe_load_yaml`).

    :param hyperparams: the run's ``config.yml``, already read
    :param env_folder: the run's ``<env>`` folder (``args.yml``)
    :return: the keyword arguments (empty when neither names any)
    :raises ValueError: ``env_kwargs`` that is not a mapping
    """
    kwargs: dict[str, Any] = {}
    sources: list[tuple[str, Any]] = [("config.yml", hyperparams)]
    path = pathlib.Path(env_folder) / "args.yml"
    try:
        sources.append(("args.yml", safe_load_yaml(path) if path.is_file() else None))
    except UnsafeConfigError as exc:
        # rl_zoo3 dumps every training option into args.yml: one the safe loader refuses (e.g. a tuple) must not make
        # the run unusable; only its --env-kwargs are lost
        warnings.warn(f"{path} was not read ({exc}): pass the run's training --env-kwargs with --env-kwargs.")
    for name, content in sources:
        value = content.get("env_kwargs") if isinstance(content, Mapping) else None
        if value is None:
            continue
        if isinstance(value, str):  # a config's dict(...) string, parsed as data (as training does)
            value = parse_literal_string(value, f"{pathlib.Path(env_folder) / name} env_kwargs")
        if not isinstance(value, dict):
            raise ValueError(f"{pathlib.Path(env_folder) / name}: env_kwargs must be a mapping, got {value!r}.")
        kwargs.update(value)
    return kwargs


def checkpoint_eval_env(
    folder: pathlib.Path,
    algo: str,
    env_id: str,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    config: str | pathlib.Path | None = None,
) -> VecEnv:
    """
    A one-env evaluation VecEnv for the model of a run checkpoint, wrapped as the run's training env was: the config
    entry's ``env_wrapper`` / ``vec_env_wrapper`` / ``frame_stack``, and ``VecNormalize`` with the observation
    statistics stored in the checkpoint (``training=False``, ``norm_reward=False``).

    :param folder: the checkpoint folder
    :param algo: the algorithm name (checked against the checkpoint)
    :param env_id: environment id
    :param seed: seed of the env
    :param env_kwargs: keyword arguments of the env constructor (override the run's: :func:`run_env_kwargs`)
    :param config: the config entry to follow: the run's ``<env>/config.yml`` when the checkpoint is in a run folder,
        else this zoo config file (default: the shipped one of ``algo``)
    :return: the env
    :raises ValueError: a checkpoint of another algorithm, or one whose normalisation disagrees with the config
    """
    import rl_zoo3.utils
    from huggingface_sb3 import EnvironmentName
    from rl_zoo3.utils import create_test_env

    from sb3_cherry.common.config_schema import config_entry, default_config

    read_run_state(folder, rl_zoo3.utils.ALGOS[algo])  # a checkpoint of this algorithm
    run_config = folder.parent / EnvironmentName(env_id) / "config.yml"
    if folder.name == RUN_CHECKPOINT and run_config.is_file():
        source = run_config
        hyperparams = safe_load_yaml(run_config) or {}
    else:
        source = pathlib.Path(config) if config is not None else default_config(algo)
        entries = safe_load_yaml(source) or {}
        try:  # (the entry rl_zoo3 reads: the env id's, `atari` for an Atari env, `default`)
            entry = config_entry(entries, env_id, source) if isinstance(entries, dict) else None
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            raise ValueError(
                f"{source}: no entry for {env_id!r}: the wrappers of the checkpoint's run are unknown. Pass the zoo config "
                "the run used with -c FILE."
            )
        hyperparams = dict(entry)
    check_imported_names(hyperparams, str(source))
    normalize = hyperparams.get("normalize", False)
    if isinstance(normalize, str):
        normalize = parse_literal_string(normalize, f"{source} [{env_id}] normalize")
    norm_obs = bool(normalize) and (not isinstance(normalize, dict) or normalize.get("norm_obs", True))
    stats = checkpoint_normalization(folder)
    stored = stats is not None and bool(stats["norm_obs"])
    if norm_obs != stored:
        raise ValueError(
            f"{folder}: the checkpoint's training env {'normalised' if stored else 'did not normalise'} observations, "
            f"but {source} [{env_id}] says normalize: {hyperparams.get('normalize', False)!r}. Evaluate with --algo/--env "
            "of the run that wrote the checkpoint."
        )
    wrappers = {key: hyperparams[key] for key in ("env_wrapper", "vec_env_wrapper") if key in hyperparams}
    # the run's (its config's and its training command's), then the caller's
    trained = run_env_kwargs(hyperparams, run_config.parent) if source == run_config else hyperparams.get("env_kwargs") or {}
    kwargs = {**trained, **(env_kwargs or {})}
    env = create_test_env(
        env_id, n_envs=1, stats_path=None, seed=seed, should_render=False, hyperparams=wrappers, env_kwargs=kwargs
    )
    if stats is not None:
        env = VecNormalize(
            env,
            training=False,
            norm_obs=bool(stats["norm_obs"]),
            norm_reward=False,
            clip_obs=float(stats["clip_obs"]),
            gamma=float(stats["gamma"]),
            epsilon=float(stats["epsilon"]),
            norm_obs_keys=stats.get("norm_obs_keys"),
        )
        env.obs_rms = stats["obs_rms"]
    if hyperparams.get("frame_stack"):
        env = VecFrameStack(env, int(hyperparams["frame_stack"]))
    return env


__all__ = ["MODEL_FILE", "RUN_CHECKPOINT", "checkpoint_eval_env", "checkpoint_folder", "run_env_kwargs"]
