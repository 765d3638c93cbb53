"""
What a CarRacing-v3 run of the shipped zoo entry costs on this machine: the env alone (random actions, the entry's
wrappers and frame stacking, 8 envs) and a whole ``learn`` (collection + update), in steps per CPU-second of one
process with torch on one thread, and the CPU hours a 4M-step run would take.

    python -m benchmarks.carracing_cost            # writes benchmarks/results/carracing_cost.json
    python -m benchmarks.carracing_cost --vec-env envpool --out benchmarks/results/carracing_cost_envpool.json

``--vec-env envpool``: the training envs from EnvPool's C++ CarRacing-v3 on one worker thread, the entry's wrappers
translated (frame skip inside the pool, resize and grayscale per env); the process CPU time then counts that thread.
"""

import argparse
import json
import pathlib
import time

import numpy as np
import torch as th

from benchmarks.learning import RESULTS, EnvSpec, build_model, load_entry


def measure(env_steps: int = 128, learn_steps: int = 4096, vec_env: str = "dummy") -> dict[str, float]:
    """
    :param env_steps: steps of the VecEnv with random actions
    :param learn_steps: steps of ``learn`` timed after one warm-up rollout
    :param vec_env: ``dummy`` (gymnasium's envs) or ``envpool`` (EnvPool's, one thread)
    :return: steps per CPU-second of the env alone and of ``learn``, and the CPU hours of a 4M-step run
    """
    th.set_num_threads(1)
    entry = load_entry("ppo_rollback", "CarRacing-v3")
    spec = EnvSpec.of("CarRacing-v3", entry)
    env = spec.stack(spec.make(entry.n_envs, 0, vec_env, envpool_threads=1))
    env.reset()
    tic = time.process_time()
    for _ in range(env_steps):
        env.step(np.stack([env.action_space.sample() for _ in range(entry.n_envs)]))
    env_rate = env_steps * entry.n_envs / (time.process_time() - tic)
    env.close()
    model, n_timesteps = build_model("ppo_rollback", "CarRacing-v3", 0, [], vec_env=vec_env, envpool_threads=1)
    model.learn(learn_steps)  # warm-up: one rollout and its update
    tic = time.process_time()
    model.learn(learn_steps, reset_num_timesteps=False)
    learn_rate = learn_steps / (time.process_time() - tic)
    return {
        "env_steps_per_cpu_s": round(env_rate, 1),
        "learn_steps_per_cpu_s": round(learn_rate, 1),
        "budget_steps": n_timesteps,
        "cpu_hours_per_run": round(n_timesteps / learn_rate / 3600, 1),
    }


def main() -> None:
    """Measure and write ``benchmarks/results/carracing_cost.json``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(RESULTS / "carracing_cost.json"))
    parser.add_argument("--vec-env", choices=["dummy", "envpool"], default="dummy")
    args = parser.parse_args()
    result = measure(vec_env=args.vec_env)
    print(result)
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
