"""
Training throughput (env steps per second, collection + updates) of sb3_cherry vs SB3's PPO, measured alternately
in ONE process so that machine noise hits both sides alike; the ratio is what we report.

    python -m benchmarks.throughput                 # all cases, 3 alternating repetitions
    python -m benchmarks.throughput --cases cartpole_ppo_rollback --repeats 5
    python -m benchmarks.throughput --out throughput_extra.csv --cases cartpole_gumbel_softmax_vs_sb3_categorical \
        cartpole_recurrent_lstm_vs_sb3_contrib cartpole_recurrent_gru_vs_sb3_contrib_lstm

Writes ``benchmarks/results/throughput.csv`` (one row per case, median steps/s of each side and their ratio) and
``benchmarks/results/throughput.png``.
"""

import argparse
import csv
import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_cherry import CherryA2C, PPORollback, RecurrentPPORollback

RESULTS = pathlib.Path(__file__).parent / "results"


@dataclass
class Case:
    """One comparison: ``ours`` vs ``baseline``, same env and hyperparameters."""

    name: str
    env_id: str
    n_envs: int
    steps: int
    ours: Callable
    baseline: Callable


def _ppo_kwargs(n_steps: int, batch_size: int, n_epochs: int) -> dict:
    return dict(n_steps=n_steps, batch_size=batch_size, n_epochs=n_epochs, seed=0, device="cpu")


def cases() -> list[Case]:
    """The benchmark cases (the issue's CartPole 8 envs / Hopper 1 env, plus distributions)."""
    cp = _ppo_kwargs(32, 256, 20)  # rl-zoo CartPole PPO entry
    hop = _ppo_kwargs(512, 32, 5)  # rl-zoo Hopper PPO entry
    pend = _ppo_kwargs(1024, 64, 10)
    a2c = dict(n_steps=5, seed=0, device="cpu")
    rec = _ppo_kwargs(128, 256, 4)  # 8 envs x 128 steps, 4 minibatches of 256
    study = _ppo_kwargs(2048, 64, 10)  # the trust-region study's base entry (benchmarks/trust_region.yml)
    tr_ppo_rb = dict(trust_region="kl", kl_threshold=0.03, rollback_alpha=0.05)
    truly_ppo = dict(trust_region="kl", kl_threshold=0.03, rollback="kl", rollback_alpha=5.0)
    from sb3_contrib import RecurrentPPO
    from stable_baselines3 import A2C

    return [
        Case(
            "cartpole_ppo_rollback",
            "CartPole-v1",
            8,
            16_384,
            lambda e: PPORollback("MlpPolicy", e, **cp),
            lambda e: PPO("MlpPolicy", e, **cp),
        ),
        Case(
            "hopper_ppo_rollback",
            "Hopper-v5",
            1,
            4_096,
            lambda e: PPORollback("MlpPolicy", e, **hop),
            lambda e: PPO("MlpPolicy", e, **hop),
        ),
        Case(
            "pendulum_beta_vs_sb3_gaussian",
            "Pendulum-v1",
            4,
            8_192,
            lambda e: PPORollback("MlpPolicy", e, policy_kwargs=dict(action_distribution="beta"), **pend),
            lambda e: PPO("MlpPolicy", e, **pend),
        ),
        Case(
            "pendulum_tanh_normal_vs_sb3_gaussian",
            "Pendulum-v1",
            4,
            8_192,
            lambda e: PPORollback("MlpPolicy", e, policy_kwargs=dict(action_distribution="tanh_normal"), **pend),
            lambda e: PPO("MlpPolicy", e, **pend),
        ),
        Case(
            "hybrid_tuple_vs_sb3_gaussian",
            "sb3_cherry/HybridGoal-v0",
            4,
            8_192,
            lambda e: PPORollback("MlpPolicy", e, **pend),
            # SB3 cannot handle the Tuple space: its baseline is a Gaussian policy on the flattened action vector
            lambda e: PPO("MlpPolicy", _flat_box_env(e), **pend),
        ),
        Case(
            "cartpole_cherry_a2c",
            "CartPole-v1",
            8,
            16_384,
            lambda e: CherryA2C("MlpPolicy", e, **a2c),
            lambda e: A2C("MlpPolicy", e, **a2c),
        ),
        Case(
            "cartpole_gumbel_softmax_vs_sb3_categorical",
            "CartPole-v1",
            8,
            16_384,
            lambda e: PPORollback("MlpPolicy", e, policy_kwargs=dict(action_distribution="gumbel_softmax"), **cp),
            lambda e: PPO("MlpPolicy", e, **cp),
        ),
        Case(
            "cartpole_recurrent_lstm_vs_sb3_contrib",
            "CartPole-v1",
            8,
            8_192,
            lambda e: RecurrentPPORollback("MlpLstmPolicy", e, **rec),
            lambda e: RecurrentPPO("MlpLstmPolicy", e, **rec),
        ),
        Case(
            "cartpole_recurrent_gru_vs_sb3_contrib_lstm",
            "CartPole-v1",
            8,
            8_192,
            lambda e: RecurrentPPORollback("MlpGruPolicy", e, **rec),
            lambda e: RecurrentPPO("MlpLstmPolicy", e, **rec),
        ),
        # the cost of the exact per-state KL (pi_old recomputed per minibatch): the baseline is PPO-RB, not SB3
        Case(
            "hopper_tr_ppo_rb_vs_ppo_rb",
            "Hopper-v5",
            1,
            4_096,
            lambda e: PPORollback("MlpPolicy", e, **tr_ppo_rb, **study),
            lambda e: PPORollback("MlpPolicy", e, rollback_alpha=0.3, **study),
        ),
        Case(
            "hopper_truly_ppo_vs_ppo_rb",
            "Hopper-v5",
            1,
            4_096,
            lambda e: PPORollback("MlpPolicy", e, **truly_ppo, **study),
            lambda e: PPORollback("MlpPolicy", e, rollback_alpha=0.3, **study),
        ),
    ]


def _flat_box_env(vec_env):
    """
    The hybrid env seen through one flat Box in [-1, 1] (what a user of plain SB3 would have to do): the first
    coordinate is binned into the discrete choice, the others are mapped onto each parameter Box's bounds.
    """
    import gymnasium as gym

    class FlatActions(gym.ActionWrapper):
        def __init__(self, env: gym.Env):
            super().__init__(env)
            discrete, boxes = env.action_space.spaces
            self.n, self.boxes = int(discrete.n), list(boxes.spaces)
            dim = 1 + sum(int(np.prod(b.shape)) for b in self.boxes)
            self.action_space = gym.spaces.Box(-1, 1, (dim,), np.float32)

        def action(self, action):
            action = np.clip(np.asarray(action, np.float32), -1, 1)
            choice = int(min(self.n - 1, (action[0] + 1) / 2 * self.n))
            params, start = [], 1
            for box in self.boxes:
                size = int(np.prod(box.shape))
                unit = (action[start : start + size].reshape(box.shape) + 1) / 2
                params.append((box.low + unit * (box.high - box.low)).astype(box.dtype))
                start += size
            return choice, tuple(params)

    env_id = vec_env.envs[0].spec.id
    return make_vec_env(env_id, n_envs=vec_env.num_envs, seed=0, wrapper_class=FlatActions)


def measure(build: Callable, env_id: str, n_envs: int, steps: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Steps per second of ``learn(steps)`` (model construction excluded), timed with ``clock``."""
    model = build(make_vec_env(env_id, n_envs=n_envs, seed=0))
    start = clock()
    model.learn(steps)
    elapsed = clock() - start
    model.get_env().close()
    return steps / elapsed


def main() -> None:
    """Run the benchmark and write the CSV and the plot."""
    import sb3_cherry  # noqa: F401  (registers the sb3_cherry/ envs)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", help="subset of case names")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a shared machine)")
    parser.add_argument("--out", default=None, help="CSV name in benchmarks/results (default: throughput.csv)")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall time, or this process's CPU time (steps per CPU-second: robust on a machine shared with other jobs; "
        "everything runs in this process with the default DummyVecEnv)",
    )
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    selected = [c for c in cases() if not args.cases or c.name in args.cases]
    rows = []
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / (args.out or ("throughput.csv" if not args.cases else f"throughput_{'_'.join(args.cases)}.csv"))
    for case in selected:
        ours, base = [], []
        for _ in range(args.repeats):  # alternate, so drifting machine load hits both sides
            base.append(measure(case.baseline, case.env_id, case.n_envs, case.steps, clock))
            ours.append(measure(case.ours, case.env_id, case.n_envs, case.steps, clock))
        row = dict(
            case=case.name,
            env=case.env_id,
            n_envs=case.n_envs,
            steps=case.steps,
            repeats=args.repeats,
            clock=args.clock,
            ours_steps_per_s=round(float(np.median(ours)), 1),
            sb3_steps_per_s=round(float(np.median(base)), 1),
            ratio=round(float(np.median(np.array(ours) / np.array(base))), 3),
        )
        rows.append(row)
        print(row, flush=True)
        # written after every case, so an interrupted run keeps what it measured
        with open(out, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        _plot(rows, out.with_suffix(".png"))
    print(f"wrote {out}")


def _plot(rows: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.6 * len(rows) + 1.5))
    names = [r["case"] for r in rows]
    ax.barh(names, [r["ratio"] for r in rows], color="tab:red")
    ax.axvline(1.0, color="k", lw=1)
    ax.axvline(0.95, color="gray", ls="--", lw=1, label="goal 0.95 (PPO) / 0.85 (distributions)")
    ax.axvline(0.85, color="gray", ls=":", lw=1)
    ax.set_xlabel("steps/s ratio: sb3_cherry / SB3 (same process, alternating runs)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
