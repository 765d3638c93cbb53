"""
Where a collection's time goes: SB3's ``collect_rollouts`` loop, written out with a timer around each part, run on
CherryA2C (sb3_cherry's VecEnv classes, its collection block: fast forward, inference mode, check callback, buffer)
and on SB3's A2C, CartPole-v1 x 8 with 5-step rollouts (the CherryA2C zoo entry; issue 19). The parts run
interleaved as in a real collection, so each one's time includes the cache misses the others cause. Values are the
algorithms' own (the loop is SB3's, the callback the one ``learn`` would build).

    python -m benchmarks.collect_parts --rollouts 600 --rounds 3 --out collect_parts.md
    PYTHONPATH=. python -m benchmarks.collect_parts ...    # from a git worktree of older code, for a before / after

Prints (and appends to ``benchmarks/results/<OUT>``) the median over rounds of the mean time per rollout of each part,
in microseconds: start (train/eval switch, buffer reset, callback's rollout start), forward (policy call and the
actions' conversion), env (``VecEnv.step``), callback (``update_locals`` + ``on_step``: sb3_cherry's non-finite
check), info (episode bookkeeping), timeout (SB3's time-limit bootstrap loop), add (buffer), last value, gae, end
(callback's rollout end).
"""

import argparse
import contextlib
import pathlib
import statistics
import time
from typing import Any

import torch as th
from stable_baselines3 import A2C
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_cherry import CherryA2C
from sb3_cherry.common.fast_forward import InferenceCache
from sb3_cherry.common.speed import inference_forward, training_switches
from sb3_cherry.common.vec_env import CherryDummyVecEnv

RESULTS = pathlib.Path(__file__).parent / "results"
PARTS = ("start", "forward", "env", "callback", "info", "timeout", "add", "last value", "gae", "end")


def _model(ours: bool, check_finite: bool) -> Any:
    env = make_vec_env("CartPole-v1", n_envs=8, vec_env_cls=CherryDummyVecEnv if ours else DummyVecEnv)
    model: Any = (CherryA2C if ours else A2C)("MlpPolicy", env, n_steps=5, seed=0, device="cpu")
    if ours:
        model.check_finite = check_finite
    model.learn(2000)
    return model


def time_rollouts(model: Any, ours: bool, rollouts: int) -> dict[str, float]:
    """
    Mean time per rollout of each part of SB3's ``collect_rollouts`` (its code, with timers).

    :param model: a trained A2C / CherryA2C
    :param ours: run inside sb3_cherry's collection block (training switches, ``inference_forward``)
    :param rollouts: rollouts to time
    :return: part -> microseconds per rollout
    """
    _, callback = model._setup_learn(10**9, None, False, "collect_parts", False)
    totals = dict.fromkeys(PARTS, 0.0)
    self, buffer, env = model, model.rollout_buffer, model.env
    cache = InferenceCache()

    def tick(part: str, start: float) -> float:
        now = time.perf_counter()
        totals[part] += now - start
        return now

    with training_switches(model) if ours else contextlib.nullcontext():
        for _ in range(rollouts):
            with inference_forward(model.policy, cache) if ours else contextlib.nullcontext():
                t = time.perf_counter()
                self.policy.set_training_mode(False)
                buffer.reset()
                callback.on_rollout_start()
                t = tick("start", t)
                for _ in range(self.n_steps):
                    with th.no_grad():
                        obs_tensor = obs_as_tensor(self._last_obs, self.device)
                        actions, values, log_probs = self.policy(obs_tensor)
                    actions = actions.cpu().numpy()
                    t = tick("forward", t)
                    clipped_actions = actions
                    new_obs, rewards, dones, infos = env.step(clipped_actions)
                    t = tick("env", t)
                    self.num_timesteps += env.num_envs
                    callback.update_locals(locals())
                    callback.on_step()
                    t = tick("callback", t)
                    self._update_info_buffer(infos, dones)
                    t = tick("info", t)
                    actions = actions.reshape(-1, 1)
                    for idx, done in enumerate(dones):
                        info = infos[idx]
                        if done and info.get("terminal_observation") is not None and info.get("TimeLimit.truncated"):
                            terminal_obs = self.policy.obs_to_tensor(info["terminal_observation"])[0]
                            with th.no_grad():
                                rewards[idx] += self.gamma * self.policy.predict_values(terminal_obs)[0]
                    t = tick("timeout", t)
                    buffer.add(self._last_obs, actions, rewards, self._last_episode_starts, values, log_probs)
                    self._last_obs, self._last_episode_starts = new_obs, dones
                    t = tick("add", t)
                with th.no_grad():
                    values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))
                t = tick("last value", t)
                buffer.compute_returns_and_advantage(last_values=values, dones=dones)
                t = tick("gae", t)
                callback.update_locals(locals())
                callback.on_rollout_end()
                tick("end", t)
    return {part: total / rollouts * 1e6 for part, total in totals.items()}


def main() -> None:
    """Print (and append to ``--out``) the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="append the table to benchmarks/results/<OUT>")
    args = parser.parse_args()
    th.set_num_threads(1)
    sides = {"SB3 A2C": (False, True), "CherryA2C": (True, True), "CherryA2C, check_finite=False": (True, False)}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, (ours, check) in sides.items():
            runs[name].append(time_rollouts(_model(ours, check), ours, args.rollouts))
    lines = [
        f"\n`python -m benchmarks.collect_parts --rollouts {args.rollouts} --rounds {args.rounds}`, "
        f"{time.strftime('%Y-%m-%d %H:%M')}: us per 5-step rollout (CartPole-v1 x 8), median of the rounds\n",
        "| side | " + " | ".join(PARTS) + " | total |",
        "|---|" + "---|" * (len(PARTS) + 1),
    ]
    for name, rounds in runs.items():
        medians = [statistics.median(r[part] for r in rounds) for part in PARTS]
        lines.append(f"| {name} | " + " | ".join(f"{m:.0f}" for m in medians) + f" | {sum(medians):.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(RESULTS / args.out, "a") as file:
            file.write(text)


if __name__ == "__main__":
    main()
