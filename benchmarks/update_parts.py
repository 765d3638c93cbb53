"""
Per-call cost of the bookkeeping pieces of a CherryA2C update, sb3_cherry's bit-exact version against the SB3 / torch
code it replaces (issue 19), on the CartPole-v1 x 8 A2C zoo entry's policy (MlpPolicy, 5-step rollouts):

- RMSprop's step: :func:`sb3_cherry.common.flat_rmsprop.rmsprop_step` against ``optimizer.step()`` (torch's
  ``foreach`` RMSprop, as sb3_cherry's ``learn`` sets it, and its default per-parameter loop);
- clearing gradients: :func:`~sb3_cherry.common.flat_rmsprop.clear_grads` against ``optimizer.zero_grad()``;
- gradient clipping: :class:`~sb3_cherry.common.speed.GradNormClipper` (built per update) against
  ``torch.nn.utils.clip_grad_norm_``;
- the train / eval switch: ``CherryActorCriticPolicy.set_training_mode`` against ``nn.Module.train``;
- the categorical draw of a collection step: ``argmax(p / q)`` with ``q ~ Exp(1)`` and one sum as the check, against
  ``torch.multinomial(p, 1, True)`` (equal draws and random stream: ``tests/test_fast_forward.py``);
- the fast forward at the start of a rollout: reused (:meth:`FastActorCriticForward.build_or_reuse`) against built.

Each piece runs interleaved with its reference, best of ``--rounds`` medians of ``--calls`` calls, torch on one thread.
Every pair is also checked for equal results before timing (parameters, optimizer state, gradients, flags, draws).

    python -m benchmarks.update_parts --out update_parts.md
"""

import argparse
import copy
import math
import pathlib
import statistics
import time
from collections.abc import Callable

import torch as th

from sb3_cherry import CherryA2C
from sb3_cherry.common.fast_forward import FastActorCriticForward
from sb3_cherry.common.flat_rmsprop import clear_grads, rmsprop_step
from sb3_cherry.common.speed import GradNormClipper, training_switches

RESULTS = pathlib.Path(__file__).parent / "results"


def _per_call_us(function: Callable[[], object], calls: int) -> float:
    """Median wall time of one call over ``calls`` calls (after a warm-up), in microseconds."""
    for _ in range(max(10, calls // 10)):
        function()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def _model() -> CherryA2C:
    model = CherryA2C("MlpPolicy", "CartPole-v1", n_steps=5, seed=0, device="cpu")
    model.learn(400)
    return model


def _with_grads(model: CherryA2C, seed: int) -> None:
    gen = th.Generator().manual_seed(seed)
    for p in model.policy.parameters():
        p.grad = th.randn(p.shape, generator=gen) * 1e-3


def _check_rmsprop(calls: int) -> None:
    """The flat step against torch's foreach and per-parameter steps: same parameters and state after ``calls``."""
    models = [_model() for _ in range(3)]
    for model, foreach in zip(models, (True, True, False), strict=True):
        for group in model.policy.optimizer.param_groups:
            group["foreach"] = foreach
    for k in range(calls):
        for i, model in enumerate(models):
            _with_grads(model, k)
            (rmsprop_step if i == 0 else lambda o: o.step())(model.policy.optimizer)
    reference = [p.detach() for p in models[1].policy.parameters()]
    for model in (models[0], models[2]):
        assert all(th.equal(a, b.detach()) for a, b in zip(reference, model.policy.parameters(), strict=True))
        states = [model.policy.optimizer.state[p]["square_avg"] for p in model.policy.parameters()]
        ref_states = [models[1].policy.optimizer.state[p]["square_avg"] for p in models[1].policy.parameters()]
        assert all(th.equal(a, b) for a, b in zip(ref_states, states, strict=True))


def measure(calls: int) -> list[tuple[str, str, float, str, float]]:
    """
    :param calls: calls per piece and round
    :return: rows ``(piece, sb3_cherry's version, its us, the reference, its us)``
    """
    th.set_num_threads(1)
    _check_rmsprop(50)
    rows = []
    model = _model()
    policy, optimizer = model.policy, model.policy.optimizer
    with training_switches(model):  # foreach RMSprop, no argument validation: what learn() runs
        _with_grads(model, 0)
        # torch's default on CPU (SB3's A2C): the per-parameter loop, on the same parameters and a copy of the state
        loop = th.optim.RMSprop(policy.parameters())
        loop.load_state_dict(copy.deepcopy(optimizer.state_dict()))
        for group in loop.param_groups:
            group["foreach"] = False
        # steps with tiny gradients (the parameters barely move over the measurement)
        for label, reference_step in (("foreach", optimizer.step), ("per-parameter loop", loop.step)):
            flat_us = _per_call_us(lambda: rmsprop_step(optimizer), calls)
            reference_us = _per_call_us(reference_step, calls)
            rows.append(("RMSprop step", "rmsprop_step (flat)", flat_us, f"optimizer.step() ({label})", reference_us))

        def restore_then(clear: Callable[[th.optim.Optimizer], None]) -> Callable[[], None]:
            grads = [p.grad for p in policy.parameters()]

            def call() -> None:
                for p, g in zip(policy.parameters(), grads, strict=True):
                    p.grad = g
                clear(optimizer)

            return call

        set_back = restore_then(lambda o: None)
        rows.append(
            (
                "clear gradients (minus re-setting them)",
                "clear_grads",
                _per_call_us(restore_then(clear_grads), calls) - _per_call_us(set_back, calls),
                "optimizer.zero_grad()",
                _per_call_us(restore_then(lambda o: o.zero_grad()), calls) - _per_call_us(set_back, calls),
            )
        )
        _with_grads(model, 1)
        rows.append(
            (
                "gradient clipping (no-op norm limit)",
                "GradNormClipper(policy.parameters())(max_norm)",
                _per_call_us(lambda: GradNormClipper(policy.parameters())(1e9), calls),
                "clip_grad_norm_(policy.parameters(), max_norm)",
                _per_call_us(lambda: th.nn.utils.clip_grad_norm_(policy.parameters(), 1e9), calls),
            )
        )
        flags = iter(range(10**9))
        rows.append(
            (
                "train / eval switch",
                "policy.set_training_mode(mode)",
                _per_call_us(lambda: policy.set_training_mode(next(flags) % 2 == 0), calls),
                "nn.Module.train(policy, mode)",
                _per_call_us(lambda: th.nn.Module.train(policy, next(flags) % 2 == 0), calls),
            )
        )
        probs = th.softmax(th.randn(8, 2), dim=-1)

        def written() -> th.Tensor:
            if not math.isfinite(probs.sum().item()):  # (the check: one sum and a host read)
                raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
            q = th.empty_like(probs).exponential_(1)
            return th.div(probs, q, out=q).argmax(dim=-1)

        with th.inference_mode():
            th.manual_seed(3)
            draws = [written() for _ in range(100)]
            th.manual_seed(3)
            assert all(th.equal(d, th.multinomial(probs, 1, True).T.reshape(8)) for d in draws)
            rows.append(
                (
                    "categorical draw (8 x 2 probabilities)",
                    "argmax(p / Exp(1)) + check",
                    _per_call_us(written, calls),
                    "torch.multinomial(p, 1, True)",
                    _per_call_us(lambda: th.multinomial(probs, 1, True), calls),
                )
            )
        cache: dict = {}
        FastActorCriticForward.build_or_reuse(policy, cache)
        rows.append(
            (
                "fast forward at a rollout start",
                "build_or_reuse (reused)",
                _per_call_us(lambda: FastActorCriticForward.build_or_reuse(policy, cache), calls),
                "FastActorCriticForward.build",
                _per_call_us(lambda: FastActorCriticForward.build(policy), calls),
            )
        )
    return rows


def main() -> None:
    """Print (and append to ``--out``) the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="append the table to benchmarks/results/<OUT>")
    args = parser.parse_args()
    rounds = [measure(args.calls) for _ in range(args.rounds)]
    lines = [
        f"\n`python -m benchmarks.update_parts --calls {args.calls} --rounds {args.rounds}`, "
        f"{time.strftime('%Y-%m-%d %H:%M')}: best of {args.rounds} rounds of the median per-call time (us)\n",
        "| piece | sb3_cherry | us | reference | us | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for index, (piece, ours, _, reference, _) in enumerate(rounds[0]):
        ours_us = min(r[index][2] for r in rounds)
        reference_us = min(r[index][4] for r in rounds)
        lines.append(f"| {piece} | {ours} | {ours_us:.1f} | {reference} | {reference_us:.1f} | {reference_us / ours_us:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        RESULTS.mkdir(exist_ok=True)
        with open(RESULTS / args.out, "a") as file:
            file.write(text)


if __name__ == "__main__":
    main()
