"""Optuna samplers for ``sb3-cherry train -optimize`` (rl_zoo3's hyperparameter search)."""

from typing import Any

import optuna
from rl_zoo3 import hyperparams_opt


def sample_ppo_rollback_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    rl_zoo3's PPO search space plus the rollback slope and the returns estimator.

    :param trial: the optuna trial
    :param n_actions: number of actions (unused, rl_zoo3's sampler signature)
    :param n_envs: number of environments
    :param additional_args: rl_zoo3's extra sampler arguments
    :return: hyperparameters for :class:`sb3_cherry.PPORollback`
    """
    hyperparams = hyperparams_opt.sample_ppo_params(trial, n_actions, n_envs, additional_args)
    hyperparams["rollback_alpha"] = trial.suggest_categorical("rollback_alpha", [0.0, 0.05, 0.1, 0.3, 0.5])
    hyperparams["returns_estimator"] = trial.suggest_categorical("returns_estimator", ["gae", "vtrace", "n_step"])
    if hyperparams["returns_estimator"] == "n_step":
        hyperparams["n_step"] = trial.suggest_categorical("n_step", [3, 5, 10, 20])
    return hyperparams


def register_samplers() -> None:
    """Register sb3_cherry's samplers (and parameter converters) with rl_zoo3."""
    hyperparams_opt.HYPERPARAMS_SAMPLER["ppo_rollback"] = sample_ppo_rollback_params
    hyperparams_opt.HYPERPARAMS_CONVERTER["ppo_rollback"] = hyperparams_opt.convert_onpolicy_params
    hyperparams_opt.HYPERPARAMS_SAMPLER["cherry_a2c"] = hyperparams_opt.sample_a2c_params
    hyperparams_opt.HYPERPARAMS_CONVERTER["cherry_a2c"] = hyperparams_opt.convert_onpolicy_params
