"""
What a VecEnv step costs with SB3's ``VecNormalize`` and with ``CherryVecNormalize`` (the same floats), on the
normalising zoo entries' VecEnv stacks, stepped with pre-sampled random actions (no policy, no learning).

    python -m benchmarks.vec_normalize_cost                     # markdown table on stdout
    python -m benchmarks.vec_normalize_cost --out benchmarks/results/vec_normalize_cost.md

Per case: microseconds per ``VecEnv.step`` (all envs) of the stack without normalisation (SB3's ``DummyVecEnv`` and
``Monitor``), with ``VecNormalize`` and with ``CherryVecNormalize``, best of ``--repeats`` rounds in which the three
stacks run one after the other (process CPU time; torch is not involved), and the wrapper's own cost (stack minus
the bare stack) for each.
"""

import argparse
import time
from collections.abc import Callable

import numpy as np
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from sb3_cherry.common.vec_env import CherryVecNormalize
from sb3_cherry.common.zoo_config import load_zoo_entry

#: the normalising zoo entries of ``zoo_configs/ppo_rollback.yml`` timed by default
CASES = ("Hopper-v5", "HalfCheetah-v5", "Humanoid-v5", "BipedalWalker-v3")


def _stacks(env_id: str) -> dict[str, VecEnv]:
    """The entry's VecEnv bare, in SB3's VecNormalize and in CherryVecNormalize (same seed, same arguments)."""
    entry = load_zoo_entry("ppo_rollback", env_id)
    normalize = entry.normalize or {}

    def bare() -> VecEnv:
        return make_vec_env(env_id, n_envs=entry.n_envs, seed=0)

    return {"bare": bare(), "sb3": VecNormalize(bare(), **normalize), "cherry": CherryVecNormalize(bare(), **normalize)}


def measure(env_id: str, steps: int, repeats: int) -> dict[str, float]:
    """
    Best-of-``repeats`` CPU microseconds per step of each stack.

    :param env_id: a zoo entry's env
    :param steps: env steps per round (``steps // n_envs`` VecEnv steps, at least 50)
    :param repeats: rounds
    :return: ``{stack: microseconds per step}`` and ``n_envs``
    """
    stacks = _stacks(env_id)
    n_envs = stacks["bare"].num_envs
    space = stacks["bare"].action_space
    space.seed(0)
    calls = max(50, steps // n_envs)
    actions = [np.stack([space.sample() for _ in range(n_envs)]) for _ in range(calls)]
    best = dict.fromkeys(stacks, float("inf"))

    def run(env: VecEnv) -> Callable[[], None]:
        def steps_() -> None:
            for action in actions:
                env.step(action)

        return steps_

    for env in stacks.values():
        env.reset()
    for _ in range(repeats):
        for name, env in stacks.items():
            start = time.process_time()
            run(env)()
            best[name] = min(best[name], (time.process_time() - start) / calls * 1e6)
    for env in stacks.values():
        env.close()
    return {**best, "n_envs": n_envs}


def main() -> None:
    """Print (and optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--steps", type=int, default=4000, help="env steps per round and stack")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", help="write the markdown table to this file")
    args = parser.parse_args()
    lines = [
        f"`python -m benchmarks.vec_normalize_cost --steps {args.steps} --repeats {args.repeats}`, "
        f"{time.strftime('%Y-%m-%d')}: best-of-{args.repeats} process CPU microseconds per VecEnv step.",
        "",
        "| env | n_envs | bare stack us | with VecNormalize us | with CherryVecNormalize us | VecNormalize's own us "
        "| CherryVecNormalize's own us | own cost ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for env_id in args.cases:
        best = measure(env_id, args.steps, args.repeats)
        sb3_own, cherry_own = best["sb3"] - best["bare"], best["cherry"] - best["bare"]
        # with many envs the wrapper's cost is within the simulator's noise (its resets): no ratio then
        noise = 0.02 * best["bare"]
        ratio = f"{sb3_own / cherry_own:.2f}" if min(sb3_own, cherry_own) > noise else "— (within noise)"
        lines.append(
            f"| {env_id} | {best['n_envs']:.0f} | {best['bare']:.1f} | {best['sb3']:.1f} | {best['cherry']:.1f} | "
            f"{sb3_own:.1f} | {cherry_own:.1f} | {ratio} |"
        )
        print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "w") as file:
            file.write("# The cost of the normalisation wrapper per step (issue 19)\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
