"""
Flat Adam steps (``sb3_cherry.common.flat_adam``) on and off: best-of-N CPU time of PPORollback's ``train`` on the
same rollout, interleaved in one process, and the parameters after each side's updates compared bit for bit.

    python -m benchmarks.flat_adam_ab --cases zoo_cartpole zoo_hopper zoo_bipedal --repeats 10
"""

import contextlib
import copy
import time
from collections.abc import Iterator

import numpy as np
import torch as th

import sb3_cherry.ppo_rollback.ppo_rollback as ppo_rollback_module
from benchmarks.throughput import ab_table_main, cases, make_env
from sb3_cherry.common.flat_adam import flat_adam_steps
from sb3_cherry.common.speed import distribution_validation


@contextlib.contextmanager
def _torch_steps(optimizer: th.optim.Optimizer) -> Iterator:
    """The update without flat steps: the optimizer's own ``step``."""
    yield optimizer.step


def measure(name: str, repeats: int) -> str:
    """One markdown row: the best ``train`` time per side, the speed-up, and whether the parameters are equal."""
    th.set_num_threads(1)
    case = next(c for c in cases() if c.name == name)
    model = case.ours(make_env(case))
    model.learn(model.n_steps * model.n_envs)  # a rollout in the buffer, the optimizer state created
    # two copies of the trained state, one per side (each side keeps updating its own copy)
    sides = {"torch": _torch_steps, "flat": flat_adam_steps}
    states = {
        side: (copy.deepcopy(model.policy.state_dict()), copy.deepcopy(model.policy.optimizer.state_dict())) for side in sides
    }
    best = {side: float("inf") for side in sides}
    for repeat in range(repeats):
        for side, steps in sides.items():
            model.policy.load_state_dict(states[side][0])
            model.policy.optimizer.load_state_dict(states[side][1])
            ppo_rollback_module.flat_adam_steps = steps  # type: ignore[assignment]
            np.random.seed(repeat)  # the same minibatches on both sides
            with distribution_validation(False):
                start = time.process_time()
                model.train()
                best[side] = min(best[side], time.process_time() - start)
            states[side] = (copy.deepcopy(model.policy.state_dict()), copy.deepcopy(model.policy.optimizer.state_dict()))
    ppo_rollback_module.flat_adam_steps = flat_adam_steps
    equal = all(th.equal(a, b) for a, b in zip(states["torch"][0].values(), states["flat"][0].values(), strict=True))
    return (
        f"| {name} | {best['torch'] * 1e3:.1f} | {best['flat'] * 1e3:.1f} | **{best['torch'] / best['flat']:.3f}** | "
        f"{'yes' if equal else 'NO'} |"
    )


def main() -> None:
    """Print the markdown table."""
    ab_table_main(
        __doc__,
        "| case | train ms, torch's Adam step | train ms, flat steps | speed-up | parameters equal after all updates |",
        measure,
        ["zoo_cartpole", "zoo_hopper", "zoo_bipedal"],
        10,
    )


if __name__ == "__main__":
    main()
