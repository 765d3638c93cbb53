"""Optuna samplers for ``sb3-cherry train -optimize`` (rl_zoo3's hyperparameter search)."""

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from rl_zoo3 import hyperparams_opt


def sample_ppo_rollback_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    rl_zoo3's PPO search space plus the rollback slope, the trust region (PPO's ratio or Truly PPO's per-state KL,
    with its threshold and rollback) and the returns estimator.

    With ``trust_region="kl"`` and ``rollback="kl"`` the rollback weight is sampled as ``kl_rollback_alpha`` (the
    KL penalty's scale, around the authors' 5, differs from a ratio slope); :func:`convert_ppo_rollback_params` maps
    it back to ``rollback_alpha``. Every trial sets ``rollback``: rl_zoo3 merges the sampled values over the config
    entry, whose ``rollback="kl"`` would otherwise meet a sampled ``trust_region="ratio"``; a ``trust_region="kl"``
    trial sets ``compile_update=False`` (the compiled update is the ratio trust region's; an entry's
    ``compile_update: true`` stays for the other trials).

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
        # the compiled update is PPO's ratio trust region's: a KL trial of an entry with compile_update runs eagerly
        hyperparams["compile_update"] = False
    else:  # a trial of the ratio's trust region overrides a config entry's rollback="kl" (which needs "kl")
        hyperparams["rollback"] = "ratio"
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
    if sampled_params.get("trust_region") == "ratio":  # as the sampler: not the config entry's rollback
        sampled_params.setdefault("rollback", "ratio")
    elif sampled_params.get("trust_region") == "kl":  # as the sampler: not the entry's compile_update
        sampled_params.setdefault("compile_update", False)
    if "kl_rollback_alpha" in sampled_params:
        sampled_params["rollback_alpha"] = sampled_params.pop("kl_rollback_alpha")
    return hyperparams_opt.convert_onpolicy_params(sampled_params)


def sample_recurrent_ppo_rollback_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict
) -> dict[str, Any]:
    """
    RecurrentPPORollback's search space: :func:`sample_ppo_rollback_params`'s, without ``compile_update`` (a
    PPORollback argument only).

    :param trial: the optuna trial
    :param n_actions: number of actions
    :param n_envs: number of environments
    :param additional_args: rl_zoo3's extra sampler arguments
    :return: hyperparameters for :class:`sb3_cherry.RecurrentPPORollback`
    """
    hyperparams = sample_ppo_rollback_params(trial, n_actions, n_envs, additional_args)
    hyperparams.pop("compile_update", None)
    return hyperparams


def convert_recurrent_ppo_rollback_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    :func:`convert_ppo_rollback_params` for RecurrentPPORollback (without ``compile_update``).

    :param sampled_params: ``trial.params``
    :return: hyperparameters for :class:`sb3_cherry.RecurrentPPORollback`
    """
    hyperparams = convert_ppo_rollback_params(sampled_params)
    hyperparams.pop("compile_update", None)
    return hyperparams


Sampler = Callable[[optuna.Trial, int, int, dict], dict[str, Any]]

#: The config's ``policy_kwargs`` of the trial running in this thread (optuna's ``n_jobs`` runs trials in threads)
_trial_config = threading.local()


@contextlib.contextmanager
def config_policy_kwargs(policy_kwargs: dict[str, Any] | None) -> Iterator[None]:
    """
    Within this context the samplers registered by :func:`register_samplers` keep the config's ``policy_kwargs``
    (e.g. ``action_distribution="beta"``) and override only the keys they sample (``net_arch``, ``activation_fn``);
    rl_zoo3's objective would otherwise replace the config's ``policy_kwargs`` by the sampled ones.

    :param policy_kwargs: the config's policy arguments (None: none)
    """
    _trial_config.policy_kwargs = policy_kwargs
    try:
        yield
    finally:
        del _trial_config.policy_kwargs


def _keeping_config_policy_kwargs(sampler: Sampler) -> Sampler:
    """``sampler`` whose sampled ``policy_kwargs`` are merged into the config's (see :func:`config_policy_kwargs`)."""

    @functools.wraps(sampler)
    def sample(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
        hyperparams = sampler(trial, n_actions, n_envs, additional_args)
        config = getattr(_trial_config, "policy_kwargs", None)
        if config and "policy_kwargs" in hyperparams:
            hyperparams["policy_kwargs"] = {**config, **hyperparams["policy_kwargs"]}
        return hyperparams

    return sample


#: The algorithms ``-optimize`` can search: sampler and converter of the best trial's parameters. RecurrentPPORollback
#: shares PPORollback's space but ``compile_update`` (rl_zoo3's RecurrentPPO sampler is its PPO one); BCO, GAIL and
#: AIRL have none.
SAMPLERS: dict[str, tuple[Sampler, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "ppo_rollback": (sample_ppo_rollback_params, convert_ppo_rollback_params),
    "recurrent_ppo_rollback": (sample_recurrent_ppo_rollback_params, convert_recurrent_ppo_rollback_params),
    "cherry_a2c": (hyperparams_opt.sample_a2c_params, hyperparams_opt.convert_onpolicy_params),
}


def register_samplers() -> None:
    """Register sb3_cherry's samplers (and parameter converters) with rl_zoo3."""
    samplers: dict[str, Any] = hyperparams_opt.HYPERPARAMS_SAMPLER
    converters: dict[str, Any] = hyperparams_opt.HYPERPARAMS_CONVERTER
    for algo, (sampler, converter) in SAMPLERS.items():
        samplers[algo] = _keeping_config_policy_kwargs(sampler)
        converters[algo] = converter
