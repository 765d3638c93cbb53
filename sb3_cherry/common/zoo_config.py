"""Read an rl-zoo style entry of ``zoo_configs/`` into constructor arguments (for scripts, tests and benchmarks)."""

import pathlib
from dataclasses import dataclass, field
from typing import Any

from stable_baselines3.common.utils import LinearSchedule

from sb3_cherry.common.config_schema import default_config, validate_config
from sb3_cherry.common.safe_config import parse_literal_string, parse_policy_kwargs


@dataclass
class ZooEntry:
    """
    One env entry of a zoo config, split the way rl_zoo3's ExperimentManager splits it.

    :param n_timesteps: training budget
    :param n_envs: number of parallel environments
    :param normalize: VecNormalize arguments (``None``: no normalisation); its ``gamma`` is the model's, as in rl_zoo3
    :param model_kwargs: arguments for the algorithm's constructor (policy included; schedules and
        ``policy_kwargs`` strings converted)
    """

    n_timesteps: int
    n_envs: int
    normalize: dict[str, Any] | None
    model_kwargs: dict[str, Any] = field(default_factory=dict)


def load_zoo_entry(algo: str, env_id: str, path: str | pathlib.Path | None = None) -> ZooEntry:
    """
    Load the entry of ``env_id`` from ``zoo_configs/<algo>.yml`` (validated as ``sb3-cherry train`` validates it).

    :param algo: algorithm name (``ppo_rollback``, ...)
    :param env_id: environment id
    :param path: config file (default: the shipped ``zoo_configs/<algo>.yml``)
    :return: the entry
    """
    path = path or default_config(algo)
    entry = dict(validate_config(path, algo, env_id))
    n_timesteps = int(entry.pop("n_timesteps"))
    n_envs = int(entry.pop("n_envs", 1))
    normalize = entry.pop("normalize", False)
    if isinstance(normalize, str):
        normalize = parse_literal_string(normalize, f"{path} [{env_id}] normalize")
    if normalize is True:
        normalize = {}
    elif normalize is False:
        normalize = None
    if normalize is not None and "gamma" in entry:
        normalize = {**normalize, "gamma": entry["gamma"]}  # as rl_zoo3: VecNormalize discounts with the model's gamma
    for key in ("learning_rate", "clip_range", "clip_range_vf"):
        if isinstance(entry.get(key), str):
            entry[key] = LinearSchedule(float(entry[key].split("_")[1]), 0.0, 1.0)
    if isinstance(entry.get("policy_kwargs"), str):
        entry["policy_kwargs"] = parse_policy_kwargs(entry["policy_kwargs"], f"{path} [{env_id}] policy_kwargs")
    for key in ("env_wrapper", "vec_env_wrapper", "frame_stack", "callback", "env_kwargs", "monitor_kwargs"):
        if key in entry:
            raise ValueError(f"load_zoo_entry does not handle {key!r}; train this entry with `sb3-cherry train`.")
    return ZooEntry(n_timesteps, n_envs, normalize, entry)
