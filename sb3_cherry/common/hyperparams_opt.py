"""Optuna samplers for ``sb3-cherry train -optimize`` (rl_zoo3's hyperparameter search)."""

from typing import Any

import optuna
from rl_zoo3 import hyperparams_opt


def sample_ppo_rollback_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    rl_zoo3's PPO search space plus the rollback slope, the trust region (PPO's ratio or Truly PPO's per-state KL,
    with its threshold and rollback) and the returns estimator.

    With ``trust_region="kl"`` and ``rollback="kl"`` the rollback weight is sampled as ``kl_rollback_alpha`` (the
    KL penalty's scale, around the authors' 5, differs from a ratio slope); :func:`convert_ppo_rollback_params` maps
    it back to ``rollback_alpha``.

    :param trial: the optuna trial
    :param n_actions: number of actions (unused, rl_zoo3's sampler signature)
    :param n_envs: number of environments
    :param additional_args: rl_zoo3's extra sampler arguments
    :return: hyperparameters for :class:`sb3_cherry.PPORollback`
    """
    hyperparams = hyperparams_opt.sample_ppo_params(trial, n_actions, n_envs, additional_args)
    hyperparams["rollback_alpha"] = trial.suggest_categorical("rollback_alpha", [0.0, 0.05, 0.1, 0.3, 0.5])
    hyperparams["trust_region"] = trial.suggest_categorical("trust_region", ["ratio", "kl"])
    if hyperparams["trust_region"] == "kl":
        hyperparams["kl_threshold"] = trial.suggest_categorical("kl_threshold", [0.01, 0.02, 0.03, 0.05])
        hyperparams["rollback"] = trial.suggest_categorical("rollback", ["ratio", "kl"])
        if hyperparams["rollback"] == "kl":
            hyperparams["rollback_alpha"] = trial.suggest_categorical("kl_rollback_alpha", [1.0, 2.0, 5.0, 10.0])
    hyperparams["returns_estimator"] = trial.suggest_categorical("returns_estimator", ["gae", "vtrace", "n_step"])
    if hyperparams["returns_estimator"] == "n_step":
        hyperparams["n_step"] = trial.suggest_categorical("n_step", [3, 5, 10, 20])
    return hyperparams


def convert_ppo_rollback_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    Turn the raw values of an optuna trial of :func:`sample_ppo_rollback_params` into hyperparameters
    (rl_zoo3's on-policy conversion; ``kl_rollback_alpha`` becomes ``rollback_alpha``).

    :param sampled_params: ``trial.params``
    :return: hyperparameters for :class:`sb3_cherry.PPORollback`
    """
    sampled_params = dict(sampled_params)
    if "kl_rollback_alpha" in sampled_params:
        sampled_params["rollback_alpha"] = sampled_params.pop("kl_rollback_alpha")
    return hyperparams_opt.convert_onpolicy_params(sampled_params)


def register_samplers() -> None:
    """Register sb3_cherry's samplers (and parameter converters) with rl_zoo3."""
    hyperparams_opt.HYPERPARAMS_SAMPLER["ppo_rollback"] = sample_ppo_rollback_params
    hyperparams_opt.HYPERPARAMS_CONVERTER["ppo_rollback"] = convert_ppo_rollback_params
    hyperparams_opt.HYPERPARAMS_SAMPLER["cherry_a2c"] = hyperparams_opt.sample_a2c_params
    hyperparams_opt.HYPERPARAMS_CONVERTER["cherry_a2c"] = hyperparams_opt.convert_onpolicy_params
