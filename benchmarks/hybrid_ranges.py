"""
Action distributions for the Box parts of a Tuple action space whose parameter ranges are unscaled:
``sb3_cherry/HybridGoalUnscaled-v0`` (``Tuple(Discrete(3), Tuple(Box(-5, 5, (2,)), Box(0, 0.1, (1,)), Box(0, 700, (1,))))``,
HybridGoal-v0's task with each club's parameter in its own units).

    nice -n 10 python -m benchmarks.hybrid_ranges --timesteps 300000 --seeds 0 1 2

Variants: ``default`` (no ``action_distribution``: Beta on the bounded Box parts since issue 21, categorical on the club),
``normal`` (SB3's Gaussian, clipped to the bounds: the default before), ``tanh_normal`` and ``beta`` (one name for every
Box part). Each run: ``PPORollback("MlpPolicy", env, n_steps=512, batch_size=256, seed=seed)`` on 4 envs
(``make_vec_env``, seed ``seed``), every other hyperparameter SB3's PPO default; evaluated with ``--eval-episodes`` (20)
deterministic episodes on a separate env seeded ``1000 + seed``, at step 0, every ``--eval-freq`` steps and at the end.

Writes, in ``--out`` (``benchmarks/results/``):

- ``hybrid_ranges.csv``: one row per evaluation (``variant, spec, seed, timesteps, mean_return, std_return,
  wall_time_s``; training wall time since the start of ``learn``). Rows are appended as they come; a (variant, seed)
  whose final evaluation is already in the file is skipped, and the rows of an interrupted one are replaced, so an
  interrupted benchmark resumes where it stopped.
- ``hybrid_ranges.json``: the final return per variant (mean and std over the seeds in the CSV, per-seed values) and
  the settings.
- ``hybrid_ranges.png``: mean learning curve per variant (shaded: min..max over seeds).
"""

import argparse
import csv
import json
import pathlib
import time
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_cherry import PPORollback

RESULTS = pathlib.Path(__file__).parent / "results"
ENV_ID = "sb3_cherry/HybridGoalUnscaled-v0"
VARIANTS = ("default", "normal", "tanh_normal", "beta")
COLUMNS = ["variant", "spec", "seed", "timesteps", "mean_return", "std_return", "wall_time_s"]
N_ENVS = 4


def build_model(variant: str, seed: int) -> PPORollback:
    """
    The benchmark's model for one variant and seed.

    :param variant: ``"default"`` (no ``action_distribution``) or a distribution name for every Box part
    :param seed: seed of the model and of the training envs
    :return: the untrained model
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}: use one of {list(VARIANTS)}.")
    policy_kwargs = {} if variant == "default" else {"action_distribution": variant}
    env = make_vec_env(ENV_ID, n_envs=N_ENVS, seed=seed)
    return PPORollback(
        "MlpPolicy", env, n_steps=512, batch_size=256, seed=seed, device="cpu", policy_kwargs=policy_kwargs, verbose=0
    )


class _Evaluate(BaseCallback):
    """Deterministic evaluation every ``eval_freq`` steps (and at the end), one CSV row each; time excludes evaluation."""

    def __init__(self, row: dict[str, Any], path: pathlib.Path, eval_freq: int, n_episodes: int, seed: int):
        super().__init__()
        self.row, self.path, self.eval_freq, self.n_episodes = row, path, eval_freq, n_episodes
        self.eval_env = make_vec_env(ENV_ID, n_envs=1, seed=1000 + seed)
        self.next_eval = 0
        self.last_eval = -1
        self.train_time = 0.0
        self.last_start = 0.0

    def _on_training_start(self) -> None:
        self.evaluate()
        self.next_eval = self.eval_freq
        self.last_start = time.perf_counter()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_eval:
            self.train_time += time.perf_counter() - self.last_start
            self.evaluate()
            self.next_eval += self.eval_freq
            self.last_start = time.perf_counter()
        return True

    def _on_training_end(self) -> None:
        self.train_time += time.perf_counter() - self.last_start
        if self.last_eval != self.num_timesteps:  # the final evaluation, unless _on_step just made it
            self.evaluate()

    def evaluate(self) -> None:
        self.eval_env.seed(int(self.row["seed"]) + 1000)  # the same evaluation episodes at every evaluation
        mean, std = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.n_episodes, deterministic=True)
        row = dict(self.row, timesteps=self.num_timesteps, mean_return=f"{mean:.4f}", std_return=f"{std:.4f}")
        row["wall_time_s"] = f"{self.train_time:.1f}"
        with open(self.path, "a", newline="") as file:
            csv.DictWriter(file, fieldnames=COLUMNS).writerow(row)
        self.last_eval = self.num_timesteps
        print(f"{row['variant']:>12} seed {row['seed']} step {self.num_timesteps:>7}: {mean:7.3f} +- {std:.3f}", flush=True)


def read_rows(path: pathlib.Path) -> list[dict[str, str]]:
    """
    The rows of a results CSV (empty if the file does not exist).

    :param path: ``hybrid_ranges.csv``
    :return: its rows as dicts
    """
    if not path.exists():
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def summarise(rows: list[dict[str, str]], timesteps: int) -> dict[str, dict[str, Any]]:
    """
    Final return per variant: the last evaluation of each seed (at or after ``timesteps``), mean and std over seeds.

    :param rows: CSV rows
    :param timesteps: the training budget (runs without an evaluation at it are left out)
    :return: ``{variant: {"spec", "mean", "std", "per_seed": {seed: return}, "wall_time_s": mean per run}}``
    """
    summary: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        last: dict[str, dict[str, str]] = {}  # per seed, the last evaluation (learn() may overshoot the budget)
        for r in rows:
            if r["variant"] == variant and int(r["timesteps"]) >= timesteps:
                if r["seed"] not in last or int(r["timesteps"]) > int(last[r["seed"]]["timesteps"]):
                    last[r["seed"]] = r
        final = list(last.values())
        if not final:
            continue
        values = np.array([float(r["mean_return"]) for r in final])
        summary[variant] = {
            "spec": final[0]["spec"],
            "mean": float(values.mean()),
            "std": float(values.std()),
            "per_seed": {r["seed"]: float(r["mean_return"]) for r in final},
            "timesteps": {r["seed"]: int(r["timesteps"]) for r in final},
            "wall_time_s": float(np.mean([float(r["wall_time_s"]) for r in final])),
        }
    return summary


def plot(rows: list[dict[str, str]], path: pathlib.Path) -> None:
    """
    Mean learning curve per variant, min..max over seeds shaded.

    :param rows: CSV rows
    :param path: the PNG to write
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant in VARIANTS:
        per_seed: dict[str, dict[int, float]] = {}
        for r in rows:
            if r["variant"] == variant:
                per_seed.setdefault(r["seed"], {})[int(r["timesteps"])] = float(r["mean_return"])
        if not per_seed:
            continue
        steps = sorted(set.intersection(*(set(curve) for curve in per_seed.values())))
        values = np.array([[curve[s] for s in steps] for curve in per_seed.values()])
        label = f"{variant} ({len(per_seed)} seeds)"
        linestyle = "--" if variant == "default" else "-"
        ax.plot(steps, values.mean(axis=0), label=label, linestyle=linestyle)
        ax.fill_between(steps, values.min(axis=0), values.max(axis=0), alpha=0.15)
    ax.axhline(4.19, color="grey", linestyle=":", label="expert (4.19)")
    ax.axhline(-0.9, color="grey", linestyle="-.", label="best discrete-only (-0.9)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("deterministic evaluation return (20 episodes)")
    ax.set_title(f"{ENV_ID}: Box-part distributions, PPORollback")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """
    Run the missing (variant, seed) pairs, then write the JSON summary and the plot.

    :param argv: command-line arguments (``None``: ``sys.argv``)
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=300_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--eval-freq", type=int, default=25_000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "hybrid_ranges.csv"
    if not path.exists():
        with open(path, "w", newline="") as file:
            csv.DictWriter(file, fieldnames=COLUMNS).writeheader()
    for seed in args.seeds:
        for variant in args.variants:
            done = any(
                r["variant"] == variant and int(r["seed"]) == seed and int(r["timesteps"]) >= args.timesteps
                for r in read_rows(path)
            )
            if done:
                continue
            # an interrupted run of this pair starts again from scratch: drop its rows
            kept = [r for r in read_rows(path) if not (r["variant"] == variant and int(r["seed"]) == seed)]
            with open(path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(kept)
            model = build_model(variant, seed)
            spec = json.dumps(model.policy.action_distribution)
            callback = _Evaluate(dict(variant=variant, spec=spec, seed=seed), path, args.eval_freq, args.eval_episodes, seed)
            model.learn(args.timesteps, callback=callback)

    rows = read_rows(path)
    summary = summarise(rows, args.timesteps)
    settings = dict(
        env=ENV_ID,
        algo="PPORollback",
        n_envs=N_ENVS,
        n_steps=512,
        batch_size=256,
        timesteps=args.timesteps,
        eval_episodes=args.eval_episodes,
    )
    with open(args.out / "hybrid_ranges.json", "w") as file:
        json.dump({"settings": settings, "final_return": summary}, file, indent=2)
    plot(rows, args.out / "hybrid_ranges.png")
    for variant, s in summary.items():
        print(f"{variant:>12}: {s['mean']:.3f} +- {s['std']:.3f} over {len(s['per_seed'])} seeds ({s['spec']})")


if __name__ == "__main__":
    main()
