"""
Share of a RecurrentPPORollback ``learn`` spent in the LSTM's calls and in the backward passes, under cProfile
(issue 19: what bounds the recurrent default path), with and without the opt-in ``whole_sequences``. CartPole-v1 x 8,
contrib's ``MlpLstmPolicy`` (256 units), the throughput case's settings (128-step rollouts, minibatches of 256,
4 epochs), torch on 1 thread. The profiler inflates Python-level calls, so the shares of the C++ calls are lower
bounds of their share without it.

    python -m benchmarks.recurrent_profile --steps 8192 --out recurrent_profile.md
"""

import argparse
import cProfile
import pathlib
import pstats
import time

import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_cherry import RecurrentPPORollback

RESULTS = pathlib.Path(__file__).parent / "results"
CALLS = {
    "<built-in method torch.lstm>": "LSTM calls",
    "<method 'run_backward' of 'torch._C._EngineBase' objects>": "backward passes",
}


def profile(whole_sequences: bool, steps: int) -> tuple[float, dict[str, float]]:
    """
    :param whole_sequences: the policy's switch
    :param steps: environment steps of the profiled ``learn`` (after a 1024-step warm-up)
    :return: profiled total seconds, and the cumulative seconds of each call of :data:`CALLS`
    """
    model = RecurrentPPORollback(
        "MlpLstmPolicy",
        make_vec_env("CartPole-v1", n_envs=8),
        n_steps=128,
        batch_size=256,
        n_epochs=4,
        seed=0,
        device="cpu",
        policy_kwargs=dict(whole_sequences=whole_sequences),
    )
    model.learn(1024)
    profiler = cProfile.Profile()
    profiler.enable()
    model.learn(steps, reset_num_timesteps=False)
    profiler.disable()
    stats = pstats.Stats(profiler)
    found = {CALLS[key[2]]: value[3] for key, value in stats.stats.items() if key[2] in CALLS}  # type: ignore[attr-defined]
    return stats.total_tt, found  # type: ignore[attr-defined]


def main() -> None:
    """Print (and append to ``--out``) the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8192)
    parser.add_argument("--out", help="append the table to benchmarks/results/<OUT>")
    args = parser.parse_args()
    th.set_num_threads(1)
    lines = [
        f"\n`python -m benchmarks.recurrent_profile --steps {args.steps}`, {time.strftime('%Y-%m-%d %H:%M')}\n",
        "| whole_sequences | profiled s | " + " | ".join(f"{name} (s, share)" for name in CALLS.values()) + " |",
        "|---|---|" + "---|" * len(CALLS),
    ]
    for whole in (False, True):
        total, found = profile(whole, args.steps)
        cells = [f"{found.get(name, 0.0):.2f}, {found.get(name, 0.0) / total:.0%}" for name in CALLS.values()]
        lines.append(f"| {whole} | {total:.2f} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(RESULTS / args.out, "a") as file:
            file.write(text)


if __name__ == "__main__":
    main()
