"""
Interleaved best-of-N CPU time of one ``collect_rollouts`` and one ``train`` for the two sides of a throughput case
(the same models, each on its own freshly collected buffer), a less noisy view than whole ``learn`` runs on a loaded
machine.

    python -m benchmarks.phase_ab zoo_bipedal_same_math --repeats 8
    python -m benchmarks.phase_ab zoo_hopper --repeats 15 --with-sb3-stack   # also sb3_cherry on SB3's VecEnv classes

``--with-sb3-stack`` adds a third model to the same interleaved loop: sb3_cherry's side on SB3's ``DummyVecEnv`` /
``VecNormalize`` (its rows ``<case>, sb3_cherry on SB3's stack``), so that the share of the VecEnv classes in the speed-up is
measured in the same minutes as the rest.
"""

import argparse
import time

import torch as th
from stable_baselines3.common.callbacks import CallbackList

from benchmarks.throughput import cases, make_env, side_env
from sb3_cherry.common.speed import distribution_validation


def main() -> None:
    """Print the best CPU time per phase of each side and the speed-up."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--out", help="also append the results as a Markdown table to this file (benchmarks/results/...)")
    parser.add_argument("--with-sb3-stack", action="store_true", help="also sb3_cherry on SB3's VecEnv classes")
    args = parser.parse_args()
    th.set_num_threads(1)
    case = next(c for c in cases() if c.name == args.case)
    sides = [("sb3", case.baseline, side_env(case, "sb3")), ("ours", case.ours, side_env(case, "ours"))]
    if args.with_sb3_stack:
        sides.append(("ours_sb3_stack", case.ours, make_env(case, case.ours_vec_env, "sb3")))
    models = {}
    for side, build, env in sides:
        model = build(env)
        model.learn(model.n_steps * model.n_envs)  # logger, buffer, last observation, foreach optimizer for ours
        models[side] = model
    best = {(side, phase): float("inf") for side in models for phase in ("collect", "train")}
    for _ in range(args.repeats):
        for side, model in models.items():
            callback = CallbackList([])
            callback.init_callback(model)
            # what learn() does: sb3_cherry trains without distribution validation, SB3 with torch's default
            with distribution_validation(side == "sb3"):
                start = time.process_time()
                model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
                best[(side, "collect")] = min(best[(side, "collect")], time.process_time() - start)
                start = time.process_time()
                model.train()
                best[(side, "train")] = min(best[(side, "train")], time.process_time() - start)
    rows = []
    for ours_side in [side for side in models if side != "sb3"]:
        label = case.name if ours_side == "ours" else f"{case.name}, sb3_cherry on SB3's stack"
        for phase in ("collect", "train"):
            sb3, ours = best[("sb3", phase)], best[(ours_side, phase)]
            print(f"{label} {phase}: SB3 {sb3 * 1e3:.1f} ms, sb3_cherry {ours * 1e3:.1f} ms, speed-up {sb3 / ours:.3f}")
            rows.append(f"| {label} | {phase} | {sb3 * 1e3:.2f} | {ours * 1e3:.2f} | {sb3 / ours:.3f} |")
        sb3_total = best[("sb3", "collect")] + best[("sb3", "train")]
        ours_total = best[(ours_side, "collect")] + best[(ours_side, "train")]
        rows.append(f"| {label} | both | {sb3_total * 1e3:.2f} | {ours_total * 1e3:.2f} | {sb3_total / ours_total:.3f} |")
        print(f"{label} both: speed-up {sb3_total / ours_total:.3f}")
    if args.out:
        with open(args.out, "a") as file:
            if file.tell() == 0:
                file.write(f"# `python -m benchmarks.phase_ab {args.case} --repeats {args.repeats} --out ...`\n\n")
            extra = " (with `--with-sb3-stack`)" if args.with_sb3_stack else ""
            file.write(
                f"\nRound of {time.strftime('%Y-%m-%d %H:%M')}, best-of-{args.repeats} process CPU time per phase{extra}:\n\n"
            )
            file.write("| case | phase | SB3 ms | sb3_cherry ms | SB3 / sb3_cherry |\n|---|---|---|---|---|\n")
            file.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
