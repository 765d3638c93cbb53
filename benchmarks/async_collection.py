"""
Wall-clock time to reach a return threshold with synchronous vs asynchronous collection (``collection="async"``),
same hyperparameters, runs alternated in one process so that machine load hits both modes alike.

    python -m benchmarks.async_collection                       # CartPole-v1, 8 SubprocVecEnv workers, 2 seeds
    python -m benchmarks.async_collection --env Pendulum-v1 --threshold -300 --seeds 0 1 2

Each run trains PPORollback (zoo config, V-trace returns) and evaluates every ``--eval-freq`` steps (deterministic,
10 episodes, separate env); it stops at the first evaluation reaching ``--threshold``. Results:
``benchmarks/results/async_<env>.csv`` (appended run by run) and ``async_<env>.png``.
"""

import argparse
import csv
import pathlib
import time

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

from sb3_cherry import PPORollback
from sb3_cherry.common.zoo_config import load_zoo_entry

RESULTS = pathlib.Path(__file__).parent / "results"


def run(env_id: str, mode: str, seed: int, threshold: float, eval_freq: int, max_steps: int, n_envs: int) -> dict:
    """One training run; returns wall-clock seconds and steps to the threshold (or to ``max_steps``)."""
    entry = load_zoo_entry("ppo_rollback", env_id)
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed, vec_env_cls=SubprocVecEnv)
    eval_env = make_vec_env(env_id, n_envs=1, seed=seed + 1000)
    stop = StopTrainingOnRewardThreshold(reward_threshold=threshold, verbose=0)
    callback = EvalCallback(
        eval_env, callback_on_new_best=stop, eval_freq=max(eval_freq // n_envs, 1), n_eval_episodes=10, verbose=0
    )
    model = PPORollback(env=env, seed=seed, collection=mode, returns_estimator="vtrace", **entry.model_kwargs)
    start = time.perf_counter()
    model.learn(max_steps, callback=callback)
    elapsed = time.perf_counter() - start
    env.close()
    return dict(
        env=env_id,
        mode=mode,
        seed=seed,
        n_envs=n_envs,
        reached=bool(callback.best_mean_reward >= threshold),
        best_mean_return=round(float(callback.best_mean_reward), 1),
        steps=model.num_timesteps,
        wall_time_s=round(elapsed, 1),
    )


def main() -> None:
    """Run the comparison and write the CSV and the plot."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--threshold", type=float, default=475.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--eval-freq", type=int, default=5_000)
    parser.add_argument("--max-steps", type=int, default=200_000)
    args = parser.parse_args()
    th.set_num_threads(1)  # the learner on one core, the env workers on the other
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"async_{args.env.replace('/', '-')}.csv"
    rows = []
    for seed in args.seeds:
        for mode in ("sync", "async"):
            row = run(args.env, mode, seed, args.threshold, args.eval_freq, args.max_steps, args.n_envs)
            rows.append(row)
            print(row, flush=True)
            with open(out, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=list(row))
                writer.writeheader()
                writer.writerows(rows)
    sync = np.array([r["wall_time_s"] for r in rows if r["mode"] == "sync"])
    asyn = np.array([r["wall_time_s"] for r in rows if r["mode"] == "async"])
    print(f"async / sync wall-clock ratio per seed: {np.round(asyn / sync, 3)}; mean {np.mean(asyn / sync):.3f}")
    _plot(rows, out.with_suffix(".png"), args)


def _plot(rows: list[dict], path: pathlib.Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, mode in enumerate(("sync", "async")):
        times = [r["wall_time_s"] for r in rows if r["mode"] == mode]
        ax.bar(np.arange(len(times)) + 0.4 * i, times, width=0.4, label=mode)
    ax.set_xticks(np.arange(len(args.seeds)) + 0.2, [f"seed {s}" for s in args.seeds])
    ax.set_ylabel(f"seconds to reach {args.threshold:g}")
    ax.set_title(f"{args.env}: PPORollback + V-trace, {args.n_envs} SubprocVecEnv workers")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
