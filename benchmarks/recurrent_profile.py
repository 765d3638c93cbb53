"""
Share of a RecurrentPPORollback ``learn`` spent in the LSTM's calls and in the backward passes, under cProfile
(issue 19: what bounds the recurrent default path), with and without the opt-in ``whole_sequences``. CartPole-v1 x 8,
contrib's ``MlpLstmPolicy`` (256 units), the throughput case's settings (128-step rollouts, minibatches of 256,
4 epochs), torch on 1 thread. The profiler inflates Python-level calls, so the shares of the C++ calls are lower
bounds of their share without it. A second table compares the two paths on the padded minibatches of one rollout
(LSTM and GRU, 16 and 256 units, one and two layers): whether values and log-probabilities are equal bit for bit,
their largest absolute difference, and the largest relative difference (norm of the difference over the norm) of a
parameter's gradient.

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


def compare(policy: str, hidden: int, layers: int = 1) -> tuple[bool, float, float]:
    """
    :param policy: ``MlpLstmPolicy`` or ``MlpGruPolicy``
    :param hidden: recurrent units
    :param layers: recurrent layers
    :return: forward outputs equal bit for bit on every minibatch, their largest absolute difference, the largest
        relative gradient difference of a parameter
    """
    model = RecurrentPPORollback(
        policy, make_vec_env("CartPole-v1", n_envs=8, seed=0), n_steps=128, batch_size=256, n_epochs=1, seed=0,
        device="cpu", policy_kwargs=dict(lstm_hidden_size=hidden, n_lstm_layers=layers),
    )  # fmt: skip
    model.learn(1024)
    model.policy.set_training_mode(True)
    equal, forward_gap, gradient_gap = True, 0.0, 0.0
    for data in model.rollout_buffer.get(256):
        results = []
        for whole in (False, True):
            model.policy.whole_sequences = whole
            model.policy.zero_grad()
            values, log_prob, _ = model.policy.evaluate_actions(
                data.observations, data.actions.long().flatten(), data.lstm_states, data.episode_starts
            )
            (log_prob * data.advantages).mean().backward()
            values.square().mean().backward()
            grads = [p.grad.clone() for p in model.policy.parameters() if p.grad is not None]
            results.append((th.cat([values.flatten(), log_prob]).detach(), grads))
        (out_a, grads_a), (out_b, grads_b) = results
        equal = equal and th.equal(out_a, out_b)
        forward_gap = max(forward_gap, (out_a - out_b).abs().max().item())
        for a, b in zip(grads_a, grads_b, strict=True):
            gradient_gap = max(gradient_gap, ((a - b).norm() / a.norm().clamp_min(1e-30)).item())
    return equal, forward_gap, gradient_gap


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
    lines += [
        "",
        "| policy | units | layers | outputs equal bit for bit | largest output difference | largest relative gradient "
        "difference |",
        "|---|---|---|---|---|---|",
    ]
    for policy in ("MlpLstmPolicy", "MlpGruPolicy"):
        for hidden, layers in ((16, 1), (256, 1), (16, 2)):
            equal, forward_gap, gradient_gap = compare(policy, hidden, layers)
            lines.append(f"| {policy} | {hidden} | {layers} | {equal} | {forward_gap:.1e} | {gradient_gap:.1e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(RESULTS / args.out, "a") as file:
            file.write(text)


if __name__ == "__main__":
    main()
