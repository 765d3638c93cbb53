"""
Would ``torch.compile`` make the update faster (issue 19)? Best-of-N CPU time of one PPO update (``train``) on the
zoo cases, interleaved in one process, torch on one thread:

- **sb3**: SB3's ``PPO.train``;
- **ours**: PPORollback's ``train`` (the default, bit-exact path);
- **ours_compiled**: the same model class with ``policy.evaluate_actions`` wrapped in ``torch.compile`` (TorchInductor:
  the networks, log-probability and entropy as one generated C++ kernel graph, forward and backward);
- **floor** / **floor_compiled**: :mod:`benchmarks.floor`'s bare minibatch loop (SB3's arithmetic without module,
  distribution or buffer objects), eager and with its whole per-minibatch loss (networks, log-probability, entropy,
  clipped surrogate, value and entropy losses) compiled.

Also reported: the wall-clock time of the first compiled update (compilation included; TorchInductor's cache in
``/tmp/torchinductor_<user>`` makes later processes faster), and how far the compiled update's parameters land from the
eager update's from the same start (TorchInductor fuses element-wise operations and reorders reductions, so the
floats are not SB3's: a compiled update would be a switch off by default, issue 19's "same math").

    python -m benchmarks.compile_ab --cases zoo_cartpole zoo_hopper zoo_bipedal_same_math zoo_bipedal --repeats 10 \
        --out benchmarks/results/compile_ab.md
"""

import copy
import math
import time
from collections.abc import Callable

import numpy as np
import torch as th

from benchmarks.floor import Floor, table_main
from benchmarks.throughput import Case, make_env
from sb3_cherry.common.speed import distribution_validation


class CompiledFloor(Floor):
    """:class:`benchmarks.floor.Floor` whose per-minibatch loss (``Floor.minibatch_loss``) is ``torch.compile``'d."""

    def __init__(self, model, case: Case) -> None:
        super().__init__(model, case)
        self.loss = th.compile(self.minibatch_loss)


def _max_gap(a, b) -> float:
    """Largest |difference| between two lists of parameters."""
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def _compiled_model(case: Case):
    """PPORollback on the case with ``policy.evaluate_actions`` compiled."""
    model = case.ours(make_env(case))
    model.policy.evaluate_actions = th.compile(model.policy.evaluate_actions)
    return model


def _parameter_gap(case: Case) -> float:
    """Largest |difference| of the parameters after one eager and one compiled PPORollback update from one start."""
    eager = case.ours(make_env(case))
    eager.learn(eager.n_steps * eager.n_envs)  # one rollout and one (eager) update: a trained buffer
    start_policy = copy.deepcopy(eager.policy.state_dict())
    start_optimizer = copy.deepcopy(eager.policy.optimizer.state_dict())
    results = []
    for compiled in (False, True):
        eager.policy.load_state_dict(start_policy)
        eager.policy.optimizer.load_state_dict(copy.deepcopy(start_optimizer))
        if compiled:
            eager.policy.evaluate_actions = th.compile(eager.policy.evaluate_actions)
        th.manual_seed(1)
        np.random.seed(1)  # the minibatch order (SB3's RolloutBuffer.get)
        with distribution_validation(False):
            eager.train()
        results.append([p.detach().clone() for p in eager.policy.parameters()])
    return _max_gap(*results)


def measure(case: Case, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` CPU seconds of each side's update, the first compiled updates' wall time, the gap."""
    th.set_num_threads(1)
    models = {"sb3": case.baseline(make_env(case)), "ours": case.ours(make_env(case)), "ours_compiled": _compiled_model(case)}
    best: dict[str, float] = {}
    for name, model in models.items():
        start = time.perf_counter()
        model.learn(model.n_steps * model.n_envs)
        if name == "ours_compiled":
            best["compile_ours_s"] = time.perf_counter() - start
    floors = {"floor": Floor(models["sb3"], case), "floor_compiled": CompiledFloor(models["sb3"], case)}
    # one update of each from the same parameters and minibatch order: the compilation's time and the floats' gap
    np.random.seed(0)
    start = time.perf_counter()
    floors["floor_compiled"].update()
    best["compile_floor_s"] = time.perf_counter() - start
    np.random.seed(0)
    floors["floor"].update()
    best["floor_gap"] = _max_gap(floors["floor"].params, floors["floor_compiled"].params)

    def clock(key: str, fn: Callable[[], None]) -> None:
        begin = time.process_time()
        fn()
        best[key] = min(best.get(key, math.inf), time.process_time() - begin)

    for _ in range(repeats):
        for name, model in models.items():
            with distribution_validation(name == "sb3"):  # as their learn() runs
                clock(name, model.train)
        for name, floor in floors.items():
            clock(name, floor.update)
    best["gap"] = _parameter_gap(case)
    return best


HEADER = (
    "| case | SB3 train ms | PPORollback ms | PPORollback, evaluate_actions compiled ms | floor update ms | "
    "floor update, loss compiled ms | SB3 / PPORollback | SB3 / compiled PPORollback | SB3 / floor | "
    "SB3 / compiled floor | first compiled learn (s, wall) | first compiled floor update (s, wall) | "
    "max parameter gap eager vs compiled, PPORollback / floor (one update) |\n|" + "---|" * 13
)


def report(name: str, best: dict[str, float]) -> str:
    """A markdown row of :data:`HEADER`."""
    keys = ("sb3", "ours", "ours_compiled", "floor", "floor_compiled")
    ms = " | ".join(f"{best[k] * 1e3:.1f}" for k in keys)
    ratios = " | ".join(f"{best['sb3'] / best[k]:.2f}" for k in keys[1:])
    return (
        f"| {name} | {ms} | {ratios} | {best['compile_ours_s']:.1f} | {best['compile_floor_s']:.1f} | "
        f"{best['gap']:.1e} / {best['floor_gap']:.1e} |"
    )


def main() -> None:
    """Measure the cases and print (and optionally write) the markdown table."""
    table_main(__doc__, HEADER, measure, report, ["zoo_cartpole", "zoo_hopper", "zoo_bipedal_same_math", "zoo_bipedal"])


if __name__ == "__main__":
    main()
