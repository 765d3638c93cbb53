"""
The README's learning-curve table, generated from ``benchmarks/results/summary.csv``: one row per (env, algo,
variant) with its published reference figure and the one command that reproduces it.

    python -m benchmarks.table          # writes benchmarks/results/summary.md and prints it
    python -m benchmarks.table --trust-region   # the trust-region study's table (benchmarks/results/trust_region/)

(``python -m benchmarks.plot`` calls it after writing the summary.)
"""

import csv
import pathlib

import numpy as np

RESULTS = pathlib.Path(__file__).parent / "results"

# Published figures: rl-zoo's benchmark table (https://github.com/DLR-RM/rl-baselines3-zoo/blob/master/benchmark.md,
# MuJoCo v3), CleanRL's ppo_continuous_action (MuJoCo v4, https://docs.cleanrl.dev/rl-algorithms/ppo/) and the
# cherry_rl seed (its README).
# PPO-family rows (ppo, ppo_rollback, recurrent_ppo_rollback) take the env's PPO figure, cherry_a2c rows its A2C one.
PPO_REFERENCES = {
    "CartPole-v1": "rl-zoo PPO: 500 @ 100k",
    "Pendulum-v1": "rl-zoo PPO: -172 ± 104 @ 100k",
    "Hopper-v5": "rl-zoo PPO (v3): 2410 @ 1M; CleanRL (v4) ≈ 2383",
    "HalfCheetah-v5": "rl-zoo PPO (v3): 5819 @ 1M; CleanRL (v4) ≈ 1443",
    "BipedalWalker-v3": "rl-zoo PPO: 213 ± 129 @ 5M (issue: ≈ 288)",
    "Humanoid-v5": "Truly PPO paper (v2, 20M): PPO 7510, TR-PPO-RB 6501 (top-10 training episodes)",
}
A2C_REFERENCES = {"CartPole-v1": "rl-zoo A2C: 500 @ 500k", "Pendulum-v1": "rl-zoo A2C: -163 ± 103 @ 1M"}
# appended to the reference of one (env, algo)
GOALS = {
    ("BipedalWalker-v3", "ppo_rollback"): "cherry_rl seed (Beta): 333; goal ≥ 320 over 3 seeds",
    ("Humanoid-v5", "ppo_rollback"): "goal ≥ 5000 at ≤ 10M (met at 2.25M)",
    ("CarRacing-v3", "ppo_rollback"): "cherry_rl seed (Beta): 894 ± 32; goal ≥ 850 on 2 seeds at ≤ 4M",
}


def reference(env: str, algo: str) -> str:
    """
    The published figure (and goal) a summary row is compared with.

    :param env: env id
    :param algo: algorithm name of ``benchmarks/learning.py``
    :return: the reference text, or ``"—"``
    """
    ref = (A2C_REFERENCES if algo == "cherry_a2c" else PPO_REFERENCES).get(env)
    parts = [p for p in (ref, GOALS.get((env, algo))) if p]
    return "; ".join(parts) if parts else "—"


# The script under benchmarks/ that produced each row: (env, algo, variant) -> command; None matches any.
COMMANDS = [
    (None, "ppo_rollback", ("fused_adam",), "./benchmarks/run_fused_curves.sh a; ./benchmarks/run_fused_curves.sh b"),
    (None, "ppo_rollback", ("compiled",), "run_compiled_curves.sh"),
    (
        "CartPole-v1",
        "ppo_rollback",
        ("gae", "one_step", "n_step8", "vtrace", "vtrace_recompute"),
        "run_cartpole_estimators.sh",
    ),
    (None, "cherry_a2c", None, "run_cherry_a2c.sh"),
    ("Pendulum-v1", "ppo_rollback", ("beta", "normal_sde", "tanh_normal"), "run_pendulum.sh"),
    ("sb3_cherry/CartPoleNoVel-v0", None, None, "run_memory.sh"),
    ("Hopper-v5", None, None, "run_mujoco_1m.sh"),
    ("HalfCheetah-v5", None, None, "ENV=HalfCheetah-v5 ./benchmarks/run_mujoco_1m.sh"),
    ("BipedalWalker-v3", "ppo_rollback", ("zoo",), "SEEDS='0 1 2' ./benchmarks/run_bipedal.sh"),
    ("BipedalWalker-v3", "ppo_rollback", ("beta",), "VARIANT=beta SEEDS='0 1 2' ./benchmarks/run_bipedal.sh"),
    ("BipedalWalker-v3", "ppo_rollback", ("beta_rlzoo_config",), "VARIANT=beta_rlzoo_config ./benchmarks/run_bipedal.sh"),
    ("BipedalWalker-v3", "ppo", None, "ALGO=ppo VARIANT=normal SEEDS='1 2' ./benchmarks/run_bipedal.sh"),
    ("Humanoid-v5", "ppo_rollback", ("zoo",), "SEEDS='0 1' ./benchmarks/run_humanoid.sh"),
    (
        "BipedalWalker-v3",
        "ppo_rollback",
        ("zoo_envpool",),
        "python -m benchmarks.learning --env BipedalWalker-v3 --algo ppo_rollback --variant zoo_envpool --vec-env "
        "envpool --seeds 0 1 2 --timesteps 1000000 --eval-freq 250000",
    ),
    ("CarRacing-v3", "ppo_rollback", ("envpool",), "SEEDS=0 ./benchmarks/run_carracing.sh; SEEDS=1 (other core)"),
    ("CartPole-v1", None, None, "run_short.sh"),
    ("Pendulum-v1", "ppo", None, "run_short.sh"),
]


def command(env: str, algo: str, variant: str) -> str:
    """
    The command that reproduces a summary row.

    :param env: env id
    :param algo: algorithm name of ``benchmarks/learning.py``
    :param variant: variant name
    :return: a shell command, or ``"—"`` if no script produced it
    """
    for c_env, c_algo, c_variants, cmd in COMMANDS:
        if (c_env in (None, env)) and (c_algo in (None, algo)) and (c_variants is None or variant in c_variants):
            return f"`{cmd}`" if " " in cmd else f"`./benchmarks/{cmd}`"
    return "—"


def rows(summary: pathlib.Path = RESULTS / "summary.csv") -> list[str]:
    """
    Markdown table lines for ``summary.csv``.

    :param summary: the summary written by ``benchmarks.plot``
    :return: header, separator and one line per row
    """
    lines = [
        "| env | algorithm / variant | steps | seeds | final return (mean ± std over seeds) | AUC | reference | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with open(summary, newline="") as file:
        for r in sorted(csv.DictReader(file), key=lambda r: (r["env"], r["algo"], r["variant"])):
            ref = reference(r["env"], r["algo"])
            final = f"{float(r['final_mean']):.1f} ± {float(r['final_std']):.1f}"
            lines.append(
                f"| {r['env']} | {r['algo']} / {r['variant']} | {r['steps']} | {r['seeds']} | {final} "
                f"| {float(r['auc_mean']):.1f} | {ref} | {command(r['env'], r['algo'], r['variant'])} |"
            )
    return lines


# The trust-region study (benchmarks/run_trust_region.sh): the Truly PPO paper's Table 1 measure, the environment steps
# until the evaluation return first reaches a threshold, per env
TRUST_REGION_THRESHOLDS = {"HalfCheetah-v5": 2100.0, "Hopper-v5": 3000.0, "Walker2d-v5": 3000.0}
TRUST_REGION_METHODS = {
    ("ppo", "base"): "SB3 PPO",
    ("ppo_rollback", "pporb"): "PPO-RB (alpha 0.3)",
    ("ppo_rollback", "trppo_rb"): "TR-PPO-RB (delta 0.03, alpha 0.05)",
    ("ppo_rollback", "truly_ppo"): "Truly PPO (delta 0.03, alpha 5)",
}


def steps_to_threshold(curve: dict[int, float], threshold: float) -> int | None:
    """
    The first evaluation step at which the return reaches ``threshold``.

    :param curve: ``{timesteps: mean evaluation return}`` of one seed
    :param threshold: the return to reach
    :return: the steps, or None if never reached
    """
    return next((t for t in sorted(curve) if curve[t] >= threshold), None)


def trust_region_rows(results: pathlib.Path = RESULTS / "trust_region") -> list[str]:
    """
    Markdown table of the trust-region study: per env and method, the seeds finished, final return and AUC (as in
    ``summary.csv``: mean ± std over seeds, AUC = average return over training) and the steps to the paper's Table 1
    threshold (mean over the seeds that reached it, and how many did).

    :param results: the study's results folder (one ``<env>.csv`` per env, written by ``benchmarks/learning.py``)
    :return: header, separator and one line per (env, method)
    """
    from benchmarks.plot import common_curve, read_curves, summarise

    lines = [
        "| env | method | seeds | steps | final return | AUC | steps to threshold (seeds reaching it) |",
        "|---|---|---|---|---|---|---|",
    ]
    for env, threshold in TRUST_REGION_THRESHOLDS.items():
        path = results / f"{env}.csv"
        if not path.exists():
            continue
        curves = read_curves(path)
        summary = {(r["algo"], r["variant"]): r for r in summarise(env, curves)}
        for key, name in TRUST_REGION_METHODS.items():
            if key not in summary:
                continue
            r = summary[key]
            steps, returns, _ = common_curve(curves[key])
            reached = [
                steps_to_threshold(dict(zip(steps.tolist(), seed_returns.tolist(), strict=True)), threshold)
                for seed_returns in returns
            ]
            hits = [t for t in reached if t is not None]
            to_threshold = f"{np.mean(hits) / 1e3:.0f}k ({len(hits)}/{len(reached)})" if hits else f"— (0/{len(reached)})"
            lines.append(
                f"| {env} | {name} | {r['seeds']} | {r['steps']} | {r['final_mean']:.1f} ± {r['final_std']:.1f} "
                f"| {r['auc_mean']:.1f} ± {r['auc_std']:.1f} | {threshold:.0f}: {to_threshold} |"
            )
    return lines


# The methods of the paper's trust-region family, each compared with SB3 PPO for the study's goal (issue 18)
TRUST_REGION_VARIANTS = [("ppo_rollback", "trppo_rb"), ("ppo_rollback", "truly_ppo"), ("ppo_rollback", "pporb")]
TRUST_REGION_SEEDS = 3


def final_returns(per_seed: dict[int, dict[int, tuple[float, float]]]) -> dict[int, float]:
    """
    The return of each seed's last evaluation.

    :param per_seed: ``{seed: {timesteps: (mean_return, wall_time_s)}}`` of one (algo, variant)
    :return: ``{seed: final return}``
    """
    return late_returns(per_seed, last=1)


def late_returns(per_seed: dict[int, dict[int, tuple[float, float]]], last: int = 5) -> dict[int, float]:
    """
    The mean return of each seed's last ``last`` evaluations (the last 100k steps at the study's 20k evaluation
    interval): less noisy than a single final evaluation, which swings by ±1000 late in training on Hopper.

    :param per_seed: ``{seed: {timesteps: (mean_return, wall_time_s)}}`` of one (algo, variant)
    :param last: how many evaluations
    :return: ``{seed: mean of the last evaluations}``
    """
    return {
        seed: float(np.mean([points[t][0] for t in sorted(points)[-last:]])) for seed, points in per_seed.items() if points
    }


def trust_region_goal_rows(results: pathlib.Path = RESULTS / "trust_region") -> list[str]:
    """
    The study's goal, a trust-region variant ahead of SB3 PPO on final return on at least 2 of the 3 envs: the final
    return of every seed, then per env and variant the mean (± std) over the seeds both it and SB3 PPO finished, the
    difference, on how many of those seeds the variant is ahead (paired by seed) and the difference of the means of
    each seed's last 5 evaluations (:func:`late_returns`), and a verdict line per variant that says whether the
    comparison is complete (the variant and SB3 PPO have all seeds of all envs) or provisional.

    :param results: the study's results folder (one ``<env>.csv`` per env)
    :return: markdown lines (two tables and the verdicts)
    """
    from benchmarks.plot import read_curves

    seeds = list(range(TRUST_REGION_SEEDS))
    per_seed = [
        "| env | method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
        "|---|---|" + "---|" * (len(seeds) + 1),
    ]
    versus = [
        "| env | method | seeds (both finished) | method mean ± std | SB3 PPO mean ± std | difference | seeds ahead "
        "| difference, mean of the last 5 evaluations |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ahead: dict[tuple[str, str], list[str]] = {key: [] for key in TRUST_REGION_VARIANTS}
    # a variant's verdict is final once it and SB3 PPO have every seed on every env
    complete = {key: True for key in TRUST_REGION_VARIANTS}
    for env in TRUST_REGION_THRESHOLDS:
        path = results / f"{env}.csv"
        curves = read_curves(path) if path.exists() else {}
        finals = {key: final_returns(curves[key]) for key in TRUST_REGION_METHODS if key in curves}
        lates = {key: late_returns(curves[key]) for key in TRUST_REGION_METHODS if key in curves}
        for key, name in TRUST_REGION_METHODS.items():
            values = finals.get(key, {})
            if values:
                cells = " | ".join(f"{values[s]:.0f}" if s in values else "—" for s in seeds)
                per_seed.append(f"| {env} | {name} | {cells} | {np.mean(list(values.values())):.0f} |")
        base = finals.get(("ppo", "base"), {})
        for key in TRUST_REGION_VARIANTS:
            complete[key] &= len(base) == len(seeds) and len(finals.get(key, {})) == len(seeds)
            shared = sorted(set(base) & set(finals.get(key, {})))
            if not shared:
                continue
            ours, ours_std = np.mean([finals[key][s] for s in shared]), np.std([finals[key][s] for s in shared])
            theirs, theirs_std = np.mean([base[s] for s in shared]), np.std([base[s] for s in shared])
            wins = sum(finals[key][s] > base[s] for s in shared)
            late_gap = np.mean([lates[key][s] - lates[("ppo", "base")][s] for s in shared])
            versus.append(
                f"| {env} | {TRUST_REGION_METHODS[key]} | {' '.join(map(str, shared))} | {ours:.0f} ± {ours_std:.0f} "
                f"| {theirs:.0f} ± {theirs_std:.0f} "
                f"| {ours - theirs:+.0f} | {wins}/{len(shared)} | {late_gap:+.0f} |"
            )
            if ours > theirs:
                ahead[key].append(env)

    def status(key: tuple[str, str]) -> str:
        return "complete" if complete[key] else "provisional: not all seeds finished"

    verdicts = [
        f"- {TRUST_REGION_METHODS[key]}: ahead of SB3 PPO on mean final return on {len(envs)} of "
        f"{len(TRUST_REGION_THRESHOLDS)} envs ({', '.join(envs) if envs else 'none'}); "
        + (
            f"goal (≥ 2): {'met' if len(envs) >= 2 else 'not met'} ({status(key)})"
            if key[1] != "pporb"
            else f"for reference, PPO-RB's trigger is the ratio, not a trust region ({status(key)})"
        )
        for key, envs in ahead.items()
    ]
    return [
        "Final return per seed (last evaluation, 1M steps):",
        "",
        *per_seed,
        "",
        "Against SB3 PPO:",
        "",
        *versus,
        "",
        *verdicts,
    ]


def main(argv: list[str] | None = None) -> None:
    """
    Write ``benchmarks/results/summary.md`` (or, with ``--trust-region``, ``summary.md`` in the study's results folder,
    ``benchmarks/results/trust_region`` by default) and print it.

    :param argv: arguments (default: ``sys.argv[1:]``)
    """
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trust-region", action="store_true", help="the trust-region study's table")
    parser.add_argument(
        "--results", default=str(RESULTS / "trust_region"), help="with --trust-region: the study's results folder"
    )
    # known args only: benchmarks.plot calls main() under its own command line
    args = parser.parse_known_args(argv)[0]
    if args.trust_region:
        results = pathlib.Path(args.results)
        text = "\n".join([*trust_region_rows(results), "", *trust_region_goal_rows(results)]) + "\n"
        (results / "summary.md").write_text(text)
    else:
        text = "\n".join(rows()) + "\n"
        (RESULTS / "summary.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
