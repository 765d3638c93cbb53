"""
Share of training CPU time spent in the non-finite checks (``sb3_cherry.common.finite``), attributed by cProfile in
one ``learn`` call per case. Complements ``python -m benchmarks.throughput --guard`` (checks on vs off, alternating
runs), whose ratio is dominated by machine noise when the machine is shared: the profile measures the checks' own
time, whatever the load.

    python -m benchmarks.guard_cost        # writes benchmarks/results/guard_cost.csv

The per-step check (``FiniteCheckCallback._on_step``) and the per-update snapshot and test (``UpdateSnapshot.take``,
``check_update``) are reported separately; the profiler's own per-call overhead inflates both, so the shares are upper
bounds.
"""

import argparse
import cProfile
import csv
import pathlib
import pstats

import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_cherry import CherryA2C, PPORollback

RESULTS = pathlib.Path(__file__).parent / "results"

CASES = {
    "cartpole_ppo_rollback": (
        "CartPole-v1",
        8,
        16_384,
        lambda e: PPORollback("MlpPolicy", e, n_steps=32, batch_size=256, n_epochs=20, seed=0, device="cpu"),
    ),
    "cartpole_cherry_a2c": ("CartPole-v1", 8, 16_384, lambda e: CherryA2C("MlpPolicy", e, n_steps=5, seed=0, device="cpu")),
    "pendulum_tanh_normal": (
        "Pendulum-v1",
        4,
        8_192,
        lambda e: PPORollback(
            "MlpPolicy",
            e,
            n_steps=1024,
            batch_size=64,
            n_epochs=10,
            policy_kwargs=dict(action_distribution="tanh_normal"),
            seed=0,
            device="cpu",
        ),
    ),
}


def main() -> None:
    """Profile each case and write the CSV."""
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    th.set_num_threads(1)
    rows = []
    for name, (env_id, n_envs, steps, build) in CASES.items():
        model = build(make_vec_env(env_id, n_envs=n_envs, seed=0))
        model.learn(steps // 8)  # warm-up (optimizer state created)
        profile = cProfile.Profile()
        profile.enable()
        model.learn(steps)
        profile.disable()
        stats = pstats.Stats(profile)
        per_step = per_update = 0.0
        for (file, _, function), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
            if file.endswith("finite.py") and function == "_on_step":
                per_step += cumulative
            if file.endswith("finite.py") and function in ("take", "check_update", "_on_rollout_start"):
                per_update += cumulative
        total = stats.total_tt  # type: ignore[attr-defined]
        row = dict(
            case=name,
            env=env_id,
            n_envs=n_envs,
            steps=steps,
            total_cpu_s=round(total, 3),
            per_step_checks_pct=round(100 * per_step / total, 2),
            per_update_checks_pct=round(100 * per_update / total, 2),
            total_pct=round(100 * (per_step + per_update) / total, 2),
        )
        rows.append(row)
        print(row, flush=True)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "guard_cost.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
