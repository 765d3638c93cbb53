"""
The rollout buffer's ``add`` (one call per collected step): SB3's ``RolloutBuffer.add`` against sb3_cherry's
:class:`~sb3_cherry.common.speed.StepAddMixin` on the same inputs, on each case's own buffer, interleaved in one
process (best-of-N process CPU time of filling the whole buffer), and the two buffers compared bit for bit.

    python -m benchmarks.step_add_ab --cases zoo_cartpole zoo_hopper zoo_bipedal cartpole_cherry_a2c --repeats 20
"""

import time

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer

from benchmarks.throughput import ab_table_main, cases, make_env

_ARRAYS = ("observations", "actions", "rewards", "episode_starts", "values", "log_probs")


def _steps(model, rng: np.random.Generator) -> list[tuple]:
    """``add`` arguments for a whole buffer, shaped as ``collect_rollouts`` passes them (inference-mode tensors)."""
    env, n_envs = model.env, model.n_envs
    steps = []
    for _ in range(model.n_steps):
        obs = rng.normal(size=(n_envs, *env.observation_space.shape)).astype(np.float32)
        actions = np.stack([env.action_space.sample() for _ in range(n_envs)])
        with th.inference_mode():
            values = th.as_tensor(rng.normal(size=(n_envs, 1)).astype(np.float32))
            log_probs = th.as_tensor(rng.normal(size=n_envs).astype(np.float32))
        steps.append((obs, actions, rng.normal(size=n_envs).astype(np.float32), rng.random(n_envs) < 0.01, values, log_probs))
    return steps


def measure(name: str, repeats: int) -> str:
    """One markdown row: best CPU time of one buffer's adds per side, per add, the speed-up, buffers equal."""
    th.set_num_threads(1)
    case = next(c for c in cases() if c.name == name)
    model = case.ours(make_env(case))
    buffer = model.rollout_buffer
    steps = _steps(model, np.random.default_rng(0))
    sides = {"sb3": lambda *args: RolloutBuffer.add(buffer, *args), "ours": buffer.add}
    best = {side: float("inf") for side in sides}
    filled = {}
    for _ in range(repeats):
        for side, add in sides.items():
            buffer.reset()
            start = time.process_time()
            for step in steps:
                add(*step)
            best[side] = min(best[side], time.process_time() - start)
            filled[side] = [getattr(buffer, key).tobytes() for key in _ARRAYS]
    n_adds = len(steps)
    per_add = {side: best[side] / n_adds * 1e6 for side in sides}
    return (
        f"| {name} ({case.env_id} x {case.n_envs}) | {n_adds} | {per_add['sb3']:.1f} / {per_add['ours']:.1f} | "
        f"{best['sb3'] * 1e3:.2f} / {best['ours'] * 1e3:.2f} | **{best['sb3'] / best['ours']:.2f}** | "
        f"{'yes' if filled['sb3'] == filled['ours'] else 'NO'} |"
    )


def main() -> None:
    """Print the markdown table."""
    ab_table_main(
        __doc__,
        "| case | adds per rollout | µs per add: SB3 / sb3_cherry | ms per rollout | speed-up | buffers equal |",
        measure,
        ["zoo_cartpole", "zoo_hopper", "zoo_bipedal", "cartpole_cherry_a2c"],
        20,
    )


if __name__ == "__main__":
    main()
