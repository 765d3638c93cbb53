"""
A Beta policy evaluated three ways: with the Beta's mean (sb3_cherry's deterministic action), with its mode, and with
sampled actions (README, "Beta"; ``BetaDistribution``'s docstring). Same checkpoint, same env seeds for each way.

    python -m benchmarks.beta_deterministic                       # Humanoid-v5 seed 1 at 2.25M, 10 episodes each
    python -m benchmarks.beta_deterministic --checkpoint DIR --env-id ENV --episodes N --out FILE.json

The checkpoint is a run checkpoint (``benchmarks/checkpoints/...``): its model and observation statistics, the
env wrapped as the run's was (:func:`sb3_cherry.checkpoint_eval.checkpoint_eval_env`). An episode that ends by
termination (the humanoid fell) is a failure.
"""

import argparse
import json
import pathlib
from typing import Any

import torch as th

from sb3_cherry.checkpoint_eval import checkpoint_eval_env
from sb3_cherry.cli import evaluate_model, register_zoo
from sb3_cherry.common.checkpoint import read_run_state
from sb3_cherry.common.distributions import BetaDistribution
from sb3_cherry.common.save_util import atomic_write

DEFAULT_CHECKPOINT = "benchmarks/checkpoints/Humanoid-v5_ppo_rollback_zoo_1"
DEFAULT_OUT = "benchmarks/results/humanoid/beta_deterministic_seed1_2.25M.json"


def evaluate_three_ways(checkpoint: str, env_id: str, episodes: int, seed: int = 0) -> dict[str, Any]:
    """
    :param checkpoint: the run checkpoint folder
    :param env_id: its env
    :param episodes: episodes per way
    :param seed: env seed (the same episodes' starts for each way)
    :return: ``{"mean": summary, "mode": summary, "samples": summary}`` (summaries of :func:`evaluate_model`)
    """
    from sb3_cherry import PPORollback

    register_zoo()  # rl_zoo3's algorithm table knows sb3_cherry's
    folder = pathlib.Path(checkpoint)
    env = checkpoint_eval_env(folder, "ppo_rollback", env_id, seed=seed)  # the shipped entry's wrappers
    model = PPORollback.load(folder / "model.zip", env=env, device="cpu")
    dist = model.policy.action_dist
    if not isinstance(dist, BetaDistribution):
        raise ValueError(f"{checkpoint}: the policy's distribution is {type(dist).__name__}, not a Beta.")
    results: dict[str, Any] = {"checkpoint": str(folder), "num_timesteps": read_run_state(folder)["num_timesteps"]}
    for way in ("mean", "mode", "samples"):
        env.seed(seed)
        th.manual_seed(seed)
        dist.deterministic = "mode" if way == "mode" else "mean"
        summary = evaluate_model(model, env, n_episodes=episodes, deterministic=way != "samples", fail_on_termination=True)
        results[way] = {key: summary[key] for key in ("mean_return", "std_return", "mean_length", "n_failed", "n_episodes")}
        print(
            f"{way:8s} {summary['mean_return']:8.1f} ± {summary['std_return']:6.1f}, mean length "
            f"{summary['mean_length']:6.1f}, {summary['n_failed']} falls out of {episodes}"
        )
    dist.deterministic = "mean"
    return results


def main() -> None:
    """Evaluate and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    parser.add_argument("--env-id", default="Humanoid-v5")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    th.set_num_threads(1)
    results = evaluate_three_ways(args.checkpoint, args.env_id, args.episodes)
    atomic_write(args.out, lambda file: file.write(json.dumps(results, indent=2).encode()))


if __name__ == "__main__":
    main()
