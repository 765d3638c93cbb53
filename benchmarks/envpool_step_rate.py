"""
Raw step rate of EnvPool's envs (``EnvPoolVecEnv``, SB3's VecEnv API) vs gymnasium's in SB3's ``DummyVecEnv``: the
same number of envs stepped with pre-sampled random actions, no policy, alternately, best of ``--repeats``.

    python -m benchmarks.envpool_step_rate          # writes benchmarks/results/envpool_step_rate.csv
"""

import argparse
import csv
import time

import numpy as np
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

from benchmarks.learning import RESULTS
from sb3_cherry.common.vec_env.envpool_vec_env import EnvPoolVecEnv

#: (env id, number of envs, steps per measurement)
CASES = [("CartPole-v1", 8, 40_000), ("Pendulum-v1", 1, 10_000), ("Hopper-v5", 1, 10_000), ("BipedalWalker-v3", 32, 32_000)]


def rate(venv: VecEnv, n_envs: int, steps: int) -> float:
    """:return: env steps per second of ``venv`` over ``steps`` steps of random actions"""
    venv.reset()
    actions = [np.stack([venv.action_space.sample() for _ in range(n_envs)]) for _ in range(100)]
    start = time.perf_counter()
    for i in range(steps // n_envs):
        venv.step(actions[i % 100])
    elapsed = time.perf_counter() - start
    venv.close()
    return steps / elapsed


def main() -> None:
    """Measure every case and write the CSV."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for env_id, n_envs, steps in CASES:
        best = {"gymnasium": 0.0, "envpool_1_thread": 0.0, "envpool_2_threads": 0.0}
        for _ in range(args.repeats):
            best["gymnasium"] = max(best["gymnasium"], rate(make_vec_env(env_id, n_envs=n_envs, seed=0), n_envs, steps))
            for threads in (1, 2):
                venv = EnvPoolVecEnv(env_id, n_envs=n_envs, seed=0, num_threads=threads)
                key = f"envpool_{threads}_thread{'s' if threads > 1 else ''}"
                best[key] = max(best[key], rate(venv, n_envs, steps))
        row = {"env": env_id, "n_envs": n_envs, **{f"{k}_steps_per_s": round(v) for k, v in best.items()}}
        row["envpool_1_thread_ratio"] = round(best["envpool_1_thread"] / best["gymnasium"], 2)
        row["envpool_2_threads_ratio"] = round(best["envpool_2_threads"] / best["gymnasium"], 2)
        rows.append(row)
        print(row, flush=True)
    with open(RESULTS / "envpool_step_rate.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
