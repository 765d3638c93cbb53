"""
Wall-clock of ``collection="async"`` against ``collection="sync"`` (PPORollback, same zoo entry, same seeds), run in
turn in one process so that both see the same machine load.

    python -m benchmarks.async_collection --env Hopper-v5 --seeds 0 1 2 --timesteps 300000 --threshold 900

During training, a snapshot of the policy (and of the ``VecNormalize`` statistics) is taken every ``--snapshot-freq``
steps together with the training wall-clock time; the snapshots are evaluated after training (10 deterministic
episodes on a separate env, seed ``1000 + seed``), so evaluation never overlaps the learner process and costs both
modes the same. In async mode the snapshot is the behaviour policy (one update behind the learner): a pessimistic
view of async.

Outputs in ``benchmarks/results/``: ``async_<env>.csv`` (one row per snapshot: ``env, collection, seed, timesteps,
wall_time_s, mean_return, std_return``), ``async_<env>.json`` (per seed: wall time to the first evaluation at or above
``--threshold``, total wall time, final return and mean return over the last quarter of the snapshots; ratios
async / sync) and ``async_<env>.png`` (return against wall time).
"""

import argparse
import copy
import csv
import json
import pathlib
import time
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from benchmarks.learning import RESULTS, build_model

COLUMNS = ["env", "collection", "seed", "timesteps", "wall_time_s", "mean_return", "std_return"]


class SnapshotCallback(BaseCallback):
    """
    Keep a copy of the policy weights (and observation statistics) every ``freq`` steps, at rollout boundaries.

    :param freq: snapshot period in environment steps
    """

    def __init__(self, freq: int):
        super().__init__()
        self.freq = freq
        self.next = 0
        self.start = 0.0
        self.snapshots: list[dict[str, Any]] = []

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self.next:
            self.snapshot()
            while self.next <= self.num_timesteps:
                self.next += self.freq

    def _on_step(self) -> bool:
        return True

    def snapshot(self) -> None:
        """Store the current weights with the wall time since the start of training."""
        wall = time.perf_counter() - self.start
        norm = self.model.get_vec_normalize_env()
        self.snapshots.append(
            dict(
                timesteps=self.num_timesteps,
                wall_time_s=wall,
                policy=copy.deepcopy(self.model.policy.state_dict()),
                obs_rms=copy.deepcopy(norm.obs_rms) if norm is not None else None,
            )
        )


def evaluate_snapshot(model: Any, snapshot: dict[str, Any], env_id: str, seed: int, episodes: int) -> tuple[float, float]:
    """
    Load a snapshot into ``model`` and evaluate it deterministically.

    :param model: the trained model (its policy is overwritten)
    :param snapshot: from :class:`SnapshotCallback`
    :param env_id: evaluation env id
    :param seed: evaluation env seed
    :param episodes: number of episodes
    :return: mean and std of the episodic returns
    """
    model.policy.load_state_dict(snapshot["policy"])
    env: VecEnv = make_vec_env(env_id, n_envs=1, seed=seed)
    if snapshot["obs_rms"] is not None:
        env = VecNormalize(env, training=False, norm_reward=False)
        env.obs_rms = snapshot["obs_rms"]
    returns, _ = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True, return_episode_rewards=True)
    env.close()
    return float(np.mean(returns)), float(np.std(returns))


def summarise(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """
    Time to threshold, total time and final return per (collection, seed), and async / sync ratios.

    :param rows: the CSV rows
    :param threshold: return threshold
    :return: JSON-able summary
    """
    runs: dict[str, dict[str, Any]] = {}
    for row in rows:
        runs.setdefault(f"{row['collection']}/{row['seed']}", []).append(row)  # type: ignore[arg-type]
    summary: dict[str, Any] = {"threshold": threshold, "runs": {}}
    for key, run in runs.items():
        run = sorted(run, key=lambda r: int(r["timesteps"]))
        hit = next((r for r in run if float(r["mean_return"]) >= threshold), None)
        summary["runs"][key] = dict(
            time_to_threshold_s=float(hit["wall_time_s"]) if hit else None,
            steps_to_threshold=int(hit["timesteps"]) if hit else None,
            total_time_s=float(run[-1]["wall_time_s"]),
            timesteps=int(run[-1]["timesteps"]),
            final_return=float(run[-1]["mean_return"]),
            # one evaluation is noisy (a Hopper that stands for 1000 steps can fall at the next snapshot)
            last_quarter_return=float(np.mean([float(r["mean_return"]) for r in run[-max(1, len(run) // 4) :]])),
        )
    seeds = sorted({key.split("/")[1] for key in runs})
    ratios: dict[str, list[float]] = {"time_to_threshold": [], "total_time": []}
    for seed in seeds:
        sync, async_ = summary["runs"].get(f"sync/{seed}"), summary["runs"].get(f"async/{seed}")
        if sync is None or async_ is None:
            continue
        ratios["total_time"].append(async_["total_time_s"] / sync["total_time_s"])
        if sync["time_to_threshold_s"] and async_["time_to_threshold_s"]:
            ratios["time_to_threshold"].append(async_["time_to_threshold_s"] / sync["time_to_threshold_s"])
    summary["ratio_async_over_sync"] = {
        key: dict(per_seed=[round(v, 3) for v in values], mean=round(float(np.mean(values)), 3) if values else None)
        for key, values in ratios.items()
    }
    for mode in ("sync", "async"):
        finals = [r["final_return"] for k, r in summary["runs"].items() if k.startswith(mode + "/")]
        lates = [r["last_quarter_return"] for k, r in summary["runs"].items() if k.startswith(mode + "/")]
        times = [r["time_to_threshold_s"] for k, r in summary["runs"].items() if k.startswith(mode + "/")]
        hits = [t for t in times if t is not None]
        summary[mode] = dict(
            final_return_mean=round(float(np.mean(finals)), 1) if finals else None,
            final_return_std=round(float(np.std(finals)), 1) if finals else None,
            last_quarter_return_mean=round(float(np.mean(lates)), 1) if lates else None,
            seeds_reaching_threshold=f"{len(hits)}/{len(times)}",
            time_to_threshold_mean_s=round(float(np.mean(hits)), 1) if hits else None,
        )
    # pooled: mean time to threshold (seeds reaching it in both modes) async / sync
    both = [
        (summary["runs"][f"sync/{s}"]["time_to_threshold_s"], summary["runs"][f"async/{s}"]["time_to_threshold_s"])
        for s in seeds
        if f"sync/{s}" in summary["runs"] and f"async/{s}" in summary["runs"]
    ]
    both = [(a, b) for a, b in both if a and b]
    if both:
        summary["ratio_of_mean_time_to_threshold"] = round(
            float(np.mean([b for _, b in both]) / np.mean([a for a, _ in both])), 3
        )
    return summary


def plot(rows: list[dict[str, Any]], path: pathlib.Path, env_id: str, threshold: float) -> None:
    """
    Return against wall-clock, one line per (collection, seed).

    :param rows: the CSV rows
    :param path: PNG file
    :param env_id: title
    :param threshold: drawn as a horizontal line
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"sync": "tab:blue", "async": "tab:orange"}
    for mode in ("sync", "async"):
        seeds = sorted({r["seed"] for r in rows if r["collection"] == mode})
        for i, seed in enumerate(seeds):
            run = sorted((r for r in rows if r["collection"] == mode and r["seed"] == seed), key=lambda r: int(r["timesteps"]))
            label = mode if i == 0 else None
            x_time = [float(r["wall_time_s"]) for r in run]
            x_steps = [int(r["timesteps"]) for r in run]
            y = [float(r["mean_return"]) for r in run]
            axes[0].plot(x_time, y, color=colors[mode], alpha=0.8, label=label)
            axes[1].plot(x_steps, y, color=colors[mode], alpha=0.8, label=label)
    for ax, xlabel in zip(axes, ("training wall-clock (s)", "environment steps"), strict=True):
        ax.axhline(threshold, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("deterministic return (10 episodes)")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"{env_id}: PPORollback, collection sync vs async (one line per seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """
    Command line entry point.

    :param argv: arguments (default: ``sys.argv[1:]``)
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--timesteps", type=int, default=300_000)
    parser.add_argument("--snapshot-freq", type=int, default=20_000)
    parser.add_argument("--threshold", type=float, default=900.0)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process (and of the learner)")
    parser.add_argument(
        "--modes", nargs="+", default=["sync", "async"], choices=["sync", "async"], help="collection modes to run, in turn"
    )
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--summarise-only", action="store_true", help="redo the JSON and the plot from the CSV")
    args = parser.parse_args(argv)
    import sb3_cherry  # noqa: F401

    th.set_num_threads(args.threads)
    results = pathlib.Path(args.results)
    stem = f"async_{args.env.replace('/', '_')}"
    csv_file = results / f"{stem}.csv"
    for seed in [] if args.summarise_only else args.seeds:
        for mode in args.modes:
            model, _ = build_model("ppo_rollback", args.env, seed, [f"collection={mode}"])
            callback = SnapshotCallback(args.snapshot_freq)
            model.learn(args.timesteps, callback=callback)
            callback.snapshot()  # final weights (after the learner's last update)
            model.get_env().close()
            for snap in callback.snapshots:
                mean, std = evaluate_snapshot(model, snap, args.env, 1000 + seed, args.eval_episodes)
                row = dict(
                    env=args.env,
                    collection=mode,
                    seed=seed,
                    timesteps=snap["timesteps"],
                    wall_time_s=round(snap["wall_time_s"], 1),
                    mean_return=round(mean, 3),
                    std_return=round(std, 3),
                )
                new = not csv_file.exists()
                with open(csv_file, "a", newline="") as file:
                    writer = csv.DictWriter(file, fieldnames=COLUMNS)
                    if new:
                        writer.writeheader()
                    writer.writerow(row)
            print(f"{mode} seed {seed}: {callback.snapshots[-1]['wall_time_s']:.1f} s, final {mean:.1f}", flush=True)
    rows = list(csv.DictReader(open(csv_file)))
    summary = summarise(rows, args.threshold)
    (results / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    plot(rows, results / f"{stem}.png", args.env, args.threshold)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
