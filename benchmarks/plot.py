"""
Learning curves and summary from the CSVs written by ``benchmarks/learning.py``.

    python -m benchmarks.plot                        # every benchmarks/results/<env>.csv
    python -m benchmarks.plot --envs CartPole-v1 Hopper-v5

Per env: ``benchmarks/results/<env>.png``, mean ± std over seeds of the evaluation return per (algo, variant) against
environment steps. For all envs: ``benchmarks/results/summary.csv`` (and ``summary.md``, the README table, by
:mod:`benchmarks.table`) with one row per (env, algo, variant):

- ``seeds``: number of seeds, ``seed_list``: which;
- ``steps``: the environment steps actually run (the last evaluation common to all seeds), next to
  ``zoo_n_timesteps``, the budget of the zoo entry (``steps < zoo_n_timesteps``: a shortened run);
- ``final_mean``, ``final_std``: mean and std over seeds of the evaluation return at ``steps``;
- ``auc_mean``, ``auc_std``: area under each seed's curve from 0 to ``steps`` (trapezoid rule) divided by ``steps``,
  i.e. the average return over training, then mean and std over seeds;
- ``wall_time_s``: mean training wall time per seed (evaluation excluded).

If a (algo, variant, seed, timesteps) point was measured twice (a rerun), the last row wins.
"""

import argparse
import csv
import pathlib
from collections import defaultdict

import numpy as np

from benchmarks import table

RESULTS = pathlib.Path(__file__).parent / "results"
SUMMARY_COLUMNS = [
    "env",
    "algo",
    "variant",
    "seeds",
    "seed_list",
    "steps",
    "zoo_n_timesteps",
    "final_mean",
    "final_std",
    "auc_mean",
    "auc_std",
    "wall_time_s",
]
LEARNING_COLUMNS = ["env", "algo", "variant", "seed", "timesteps", "mean_return", "std_return", "wall_time_s"]


def read_curves(path: pathlib.Path) -> dict[tuple[str, str], dict[int, dict[int, tuple[float, float]]]]:
    """
    Read one env's CSV.

    :param path: ``<env>.csv`` written by ``benchmarks/learning.py``
    :return: ``{(algo, variant): {seed: {timesteps: (mean_return, wall_time_s)}}}``
    """
    curves: dict[tuple[str, str], dict[int, dict[int, tuple[float, float]]]] = defaultdict(lambda: defaultdict(dict))
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            key = (row["algo"], row["variant"])
            curves[key][int(row["seed"])][int(row["timesteps"])] = (float(row["mean_return"]), float(row["wall_time_s"]))
    return curves


def common_curve(per_seed: dict[int, dict[int, tuple[float, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Align the seeds of one (algo, variant) on the evaluation steps they all reached.

    :param per_seed: ``{seed: {timesteps: (mean_return, wall_time_s)}}``
    :return: steps ``(n_points,)``, returns ``(n_seeds, n_points)``, wall times ``(n_seeds, n_points)``
    """
    steps = sorted(set.intersection(*(set(points) for points in per_seed.values())))
    returns = np.array([[per_seed[seed][t][0] for t in steps] for seed in sorted(per_seed)])
    walls = np.array([[per_seed[seed][t][1] for t in steps] for seed in sorted(per_seed)])
    return np.array(steps), returns, walls


def zoo_budget(algo: str, env_id: str) -> int | None:
    """
    The ``n_timesteps`` of the zoo entry the run used (``ppo`` uses the ``ppo_rollback`` entry).

    :param algo: algorithm name of the CSV row
    :param env_id: environment id
    :return: the budget, or ``None`` if the entry cannot be read
    """
    from sb3_cherry.common.zoo_config import load_zoo_entry

    try:
        return load_zoo_entry("ppo_rollback" if algo == "ppo" else algo, env_id).n_timesteps
    except Exception:  # a CSV may outlive its zoo entry
        return None


def summarise(env_id: str, curves: dict[tuple[str, str], dict[int, dict[int, tuple[float, float]]]]) -> list[dict]:
    """
    Summary rows of one env (see the module docstring for the columns).

    :param env_id: environment id
    :param curves: output of :func:`read_curves`
    :return: one row per (algo, variant)
    """
    rows = []
    for (algo, variant), per_seed in sorted(curves.items()):
        steps, returns, walls = common_curve(per_seed)
        if len(steps) == 0:
            continue
        span = steps[-1] - steps[0]
        aucs = np.trapezoid(returns, steps, axis=1) / span if span > 0 else returns[:, -1]
        rows.append(
            dict(
                env=env_id,
                algo=algo,
                variant=variant,
                seeds=len(per_seed),
                seed_list=" ".join(str(s) for s in sorted(per_seed)),
                steps=int(steps[-1]),
                zoo_n_timesteps=zoo_budget(algo, env_id),
                # 4 decimals: the tables print one, which rounding to 2 first could change (275.5485 -> 275.55 -> 275.6)
                final_mean=round(float(returns[:, -1].mean()), 4),
                final_std=round(float(returns[:, -1].std()), 4),
                auc_mean=round(float(aucs.mean()), 4),
                auc_std=round(float(aucs.std()), 4),
                wall_time_s=round(float(walls[:, -1].mean()), 1),
            )
        )
    return rows


def plot(env_id: str, curves: dict[tuple[str, str], dict[int, dict[int, tuple[float, float]]]], path: pathlib.Path) -> None:
    """
    Mean ± std over seeds of every (algo, variant) curve of one env.

    :param env_id: environment id (title)
    :param curves: output of :func:`read_curves`
    :param path: PNG file
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for (algo, variant), per_seed in sorted(curves.items()):
        steps, returns, _ = common_curve(per_seed)
        mean, std = returns.mean(axis=0), returns.std(axis=0)
        label = f"{algo}/{variant} ({len(per_seed)} seed{'s' if len(per_seed) > 1 else ''})"
        (line,) = ax.plot(steps, mean, label=label)
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_title(f"{env_id}: deterministic evaluation return (mean ± std over seeds)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return (10 episodes)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """
    Command line entry point.

    :param argv: arguments (default: ``sys.argv[1:]``)
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="*", help="env ids (default: every CSV of the results folder)")
    parser.add_argument("--results", default=str(RESULTS), help="results folder")
    args = parser.parse_args(argv)
    results = pathlib.Path(args.results)
    if args.envs:
        files = [results / f"{env.replace('/', '_')}.csv" for env in args.envs]
    else:
        files = sorted(p for p in results.glob("*.csv") if is_learning_csv(p))
    summary = []
    for path in files:
        curves = read_curves(path)
        if not curves:
            continue
        env_id = _env_of(path)
        plot(env_id, curves, path.with_suffix(".png"))
        summary += summarise(env_id, curves)
        print(f"wrote {path.with_suffix('.png')}")
    out = results / "summary.csv"
    previous = []
    if args.envs and out.exists():  # keep the other envs' rows
        with open(out, newline="") as file:
            previous = [row for row in csv.DictReader(file) if row["env"] not in set(args.envs)]
    with open(out, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(previous + summary)
    for row in previous + summary:
        print(
            f"{row['env']:<14} {row['algo'] + '/' + row['variant']:<32} steps {row['steps']:>8} (zoo {row['zoo_n_timesteps']})"
            f" seeds {row['seeds']}  final {row['final_mean']} ± {row['final_std']}  AUC {row['auc_mean']} ± {row['auc_std']}"
            f"  wall {row['wall_time_s']} s"
        )
    print(f"wrote {out}")
    if out.resolve() == (table.RESULTS / "summary.csv").resolve():
        table.main()  # the README table, benchmarks/results/summary.md


def is_learning_csv(path: pathlib.Path) -> bool:
    """
    Whether a CSV of the results folder was written by ``benchmarks/learning.py`` (other benchmarks share the folder).

    :param path: CSV file
    :return: ``True`` if its header is :data:`benchmarks.learning.COLUMNS`
    """
    with open(path, newline="") as file:
        return next(csv.reader(file), []) == LEARNING_COLUMNS


def _env_of(path: pathlib.Path) -> str:
    """The env id stored in the first row of a results CSV (the file name has ``/`` replaced)."""
    with open(path, newline="") as file:
        return next(csv.DictReader(file))["env"]


if __name__ == "__main__":
    main()
