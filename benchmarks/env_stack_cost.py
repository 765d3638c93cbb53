"""
What a VecEnv step costs with SB3's classes and with sb3_cherry's (``CherryDummyVecEnv``, ``CherryVecNormalize``:
the same values), on the zoo entries' VecEnv stacks, stepped with pre-sampled random actions (no policy, no
learning).

    python -m benchmarks.env_stack_cost                     # markdown table on stdout
    python -m benchmarks.env_stack_cost --out benchmarks/results/env_stack_cost.md

Per case: CPU microseconds per ``VecEnv.step`` (all envs) of four stacks, best of ``--repeats`` rounds in which they
run one after the other (process CPU time; torch is not involved): SB3's ``DummyVecEnv`` (with ``Monitor``, as
``make_vec_env`` builds it), ``CherryDummyVecEnv``, and, for entries that normalise, each in its library's
normalisation wrapper (``VecNormalize`` / ``CherryVecNormalize``: what rl_zoo3 and ``sb3-cherry train`` build), with
the normalisation wrapper's own cost (stack minus its bare stack). (This script was ``vec_normalize_cost.py``, which
timed the normalisation wrappers only: ``benchmarks/results/vec_normalize_cost.md``.)
"""

import argparse
import time

import numpy as np
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from sb3_cherry.common.vec_env import CherryDummyVecEnv, CherryVecNormalize
from sb3_cherry.common.zoo_config import load_zoo_entry

#: zoo entries of ``zoo_configs/ppo_rollback.yml`` timed by default
CASES = ("CartPole-v1", "Hopper-v5", "HalfCheetah-v5", "Humanoid-v5", "BipedalWalker-v3")


def _stacks(env_id: str) -> dict[str, VecEnv]:
    """The entry's VecEnv with SB3's and sb3_cherry's classes (same seed, same arguments)."""
    entry = load_zoo_entry("ppo_rollback", env_id)
    stacks: dict[str, VecEnv] = {
        "sb3": make_vec_env(env_id, n_envs=entry.n_envs, seed=0),
        "cherry": make_vec_env(env_id, n_envs=entry.n_envs, seed=0, vec_env_cls=CherryDummyVecEnv),
    }
    if entry.normalize is not None:
        stacks["sb3_normalized"] = VecNormalize(make_vec_env(env_id, n_envs=entry.n_envs, seed=0), **entry.normalize)
        base = make_vec_env(env_id, n_envs=entry.n_envs, seed=0, vec_env_cls=CherryDummyVecEnv)
        stacks["cherry_normalized"] = CherryVecNormalize(base, **entry.normalize)
    return stacks


def measure(env_id: str, steps: int, repeats: int) -> dict[str, float]:
    """
    Best-of-``repeats`` CPU microseconds per step of each stack.

    :param env_id: a zoo entry's env
    :param steps: env steps per round (``steps // n_envs`` VecEnv steps, at least 50)
    :param repeats: rounds
    :return: ``{stack: microseconds per step}`` and ``n_envs``
    """
    stacks = _stacks(env_id)
    n_envs = stacks["sb3"].num_envs
    space = stacks["sb3"].action_space
    space.seed(0)
    calls = max(50, steps // n_envs)
    actions = [np.stack([space.sample() for _ in range(n_envs)]) for _ in range(calls)]
    best = dict.fromkeys(stacks, float("inf"))
    for env in stacks.values():
        env.reset()
    for _ in range(repeats):
        for name, env in stacks.items():
            start = time.process_time()
            for action in actions:
                env.step(action)
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
        f"`python -m benchmarks.env_stack_cost --steps {args.steps} --repeats {args.repeats}`, "
        f"{time.strftime('%Y-%m-%d')}: best-of-{args.repeats} process CPU microseconds per VecEnv step.",
        "",
        "| env | n_envs | DummyVecEnv us | CherryDummyVecEnv us | SB3 stack with VecNormalize us | sb3_cherry stack with "
        "CherryVecNormalize us | whole stack SB3 / sb3_cherry | VecNormalize's own us | CherryVecNormalize's own us |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for env_id in args.cases:
        best = measure(env_id, args.steps, args.repeats)
        noise = 0.02 * best["sb3"]  # with many envs, the simulator's resets move the times by more than this
        sb3_top, cherry_top = best.get("sb3_normalized", best["sb3"]), best.get("cherry_normalized", best["cherry"])
        cells = [f"{best['sb3']:.1f}", f"{best['cherry']:.1f}"]
        if "sb3_normalized" in best:
            sb3_own, cherry_own = best["sb3_normalized"] - best["sb3"], best["cherry_normalized"] - best["cherry"]
            cells += [f"{sb3_top:.1f}", f"{cherry_top:.1f}"]
            own = [f"{sb3_own:.1f}", f"{cherry_own:.1f}"]
        else:
            cells += ["—", "—"]
            own = ["—", "—"]
        whole = f"{sb3_top / cherry_top:.2f}" if abs(sb3_top - cherry_top) > noise else "— (within noise)"
        lines.append(f"| {env_id} | {best['n_envs']:.0f} | {' | '.join(cells)} | {whole} | {' | '.join(own)} |")
        print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "w") as file:
            file.write("# The cost of the VecEnv stack per step (issue 19)\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
