"""
Would stepping the envs in worker processes bring the BipedalWalker zoo entry to issue 19's 1.3x? A probe, not a
library feature.

The shipped BipedalWalker-v3 entry (32 envs) is simulator-bound: gymnasium's Box2D walker is about half of SB3 PPO's
time (``benchmarks/results/floor.md``). The same math on the same envs can only go faster if the simulators run in
parallel. :class:`WorkerSplitVecEnv` splits the envs into contiguous groups, each stepped by a ``CherryDummyVecEnv``
in a forked worker process, optionally one group in this process while the workers step theirs; it returns what one
``CherryDummyVecEnv`` of all the envs returns (the same observations, rewards, dones and infos, in the same order:
``tests/test_benchmarks.py`` steps it against SB3's ``DummyVecEnv``), so a model trained on it computes the same
floats. It has none of ``CherrySubprocVecEnv``'s failure reporting and only the methods ``learn`` calls: a
measurement harness.

    python -m benchmarks.worker_split                            # markdown on stdout
    python -m benchmarks.worker_split --out worker_split         # also benchmarks/results/worker_split.{md,csv}
    python -m benchmarks.worker_split --configs 2 3 main+1       # VecEnvs: k workers, or this process + k workers
    python -m benchmarks.worker_split --library-envs --out worker_split_envs   # CherryParallelVecEnv on other envs

Two parts, wall-clock time (the workers' CPU time is not the main process's), torch on 1 thread:

- ``raw``: env steps per second of the entry's 32 envs with pre-sampled random actions, one process
  (``CherryDummyVecEnv``) against each config, best of ``--repeats`` rounds;
- ``learn``: milliseconds per rollout + update of ``learn`` (whole runs of ``--steps`` env steps), alternating in one
  process: SB3's PPO on SB3's ``DummyVecEnv`` + ``VecNormalize``, then PPORollback with the entry's settings and
  ``CherryVecNormalize`` on each VecEnv (``one``: what ``sb3-cherry train`` runs); per run the collection, the time
  spent waiting for the VecEnv inside it, and the update. ``sb3_over_row`` is SB3's time over the row's, per round,
  median (and range) over the rounds.
"""

import argparse
import csv
import itertools
import multiprocessing as mp
import pathlib
import statistics
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from sb3_cherry.common.vec_env import CherryDummyVecEnv, CherryVecNormalize

RESULTS = pathlib.Path(__file__).parent / "results"
ENV_ID = "BipedalWalker-v3"


def _worker(remote: Connection, parent: Connection, env_fns: list[Callable[[], gym.Env]]) -> None:
    """A worker's loop: its ``CherryDummyVecEnv`` answers ``step``, ``reset`` and ``close``."""
    parent.close()
    venv = CherryDummyVecEnv(env_fns)
    while True:
        command, data = remote.recv()
        if command == "step":
            venv.step_async(data)
            remote.send(venv.step_wait())
        elif command == "reset":
            seeds, options = data
            for i, (seed, option) in enumerate(zip(seeds, options, strict=True)):
                venv._seeds[i], venv._options[i] = seed, option
            remote.send((venv.reset(), venv.reset_infos))
        else:  # close
            venv.close()
            remote.close()
            return


class WorkerSplitVecEnv(VecEnv):
    """
    The envs of ``env_fns`` split into contiguous groups, each stepped by a ``CherryDummyVecEnv`` in a forked worker
    process (and, with ``in_main``, the first group in this process while the workers step theirs); returns what one
    ``CherryDummyVecEnv`` of all of them returns.

    :param env_fns: functions creating the envs
    :param n_workers: worker processes (at least 1; groups: ``n_workers``, plus one with ``in_main``)
    :param in_main: step the first group in this process, between sending the workers their actions and reading
        their answers (on 2 cores: one worker, and this process, which otherwise waits)
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]], n_workers: int = 2, in_main: bool = False):
        groups = n_workers + int(in_main)
        if not 1 <= n_workers or groups > len(env_fns):
            raise ValueError(f"need 1 <= n_workers and at most {len(env_fns)} groups, got {n_workers} (in_main={in_main}).")
        bounds = np.linspace(0, len(env_fns), groups + 1).astype(int)
        parts = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        #: the main process's group (None: all in workers) and the workers' groups
        self.main_slice, self.slices = (parts[0], parts[1:]) if in_main else (None, parts)
        self.main = None if self.main_slice is None else CherryDummyVecEnv(env_fns[self.main_slice])
        probe = env_fns[0]()
        observation_space, action_space = probe.observation_space, probe.action_space
        self._render_mode = probe.render_mode
        probe.close()
        context = mp.get_context("fork")
        self.remotes: list[Connection] = []
        self.processes: list[Any] = []
        for part in self.slices:
            remote, worker_remote = context.Pipe()
            process = context.Process(target=_worker, args=(worker_remote, remote, env_fns[part]), daemon=True)
            process.start()
            worker_remote.close()
            self.remotes.append(remote)
            self.processes.append(process)
        super().__init__(len(env_fns), observation_space, action_space)
        self._main_actions: np.ndarray | None = None

    def step_async(self, actions: np.ndarray) -> None:
        """:param actions: one action per env"""
        for remote, part in zip(self.remotes, self.slices, strict=True):
            remote.send(("step", actions[part]))
        if self.main_slice is not None:
            self._main_actions = actions[self.main_slice]

    def step_wait(self) -> VecEnvStepReturn:
        """:return: observations, rewards, dones and infos of all envs, in order"""
        results = []
        if self.main is not None:
            self.main.step_async(self._main_actions)
            results.append(self.main.step_wait())
        results += [remote.recv() for remote in self.remotes]
        obs, rewards, dones, infos = zip(*results, strict=True)
        return np.concatenate(obs), np.concatenate(rewards), np.concatenate(dones), [i for part in infos for i in part]

    def reset(self) -> np.ndarray:
        """:return: the first observations (seeds and options as set by ``seed`` / ``set_options``)"""
        for remote, part in zip(self.remotes, self.slices, strict=True):
            remote.send(("reset", (self._seeds[part], self._options[part])))
        results = []
        if self.main is not None and self.main_slice is not None:
            self.main._seeds = self._seeds[self.main_slice]
            self.main._options = self._options[self.main_slice]
            results.append((self.main.reset(), self.main.reset_infos))
        results += [remote.recv() for remote in self.remotes]
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [info for _, infos in results for info in infos]
        return np.concatenate([obs for obs, _ in results])

    def close(self) -> None:
        """Stop the workers."""
        for remote in self.remotes:
            remote.send(("close", None))
        for process in self.processes:
            process.join()
        if self.main is not None:
            self.main.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Only ``render_mode`` (what ``VecEnv.__init__`` reads)."""
        if attr_name != "render_mode":
            raise AttributeError(f"WorkerSplitVecEnv (a benchmark harness) has no get_attr({attr_name!r}).")
        return [self._render_mode for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Not supported (a benchmark harness)."""
        raise AttributeError(f"WorkerSplitVecEnv (a benchmark harness) has no set_attr({attr_name!r}).")

    def env_method(self, method_name: str, *args: Any, indices: VecEnvIndices = None, **kwargs: Any) -> list[Any]:
        """Not supported (a benchmark harness)."""
        raise AttributeError(f"WorkerSplitVecEnv (a benchmark harness) has no env_method({method_name!r}).")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Not asked of the workers: False (``learn`` asks for ``Monitor`` only to warn)."""
        return [False for _ in self._get_indices(indices)]


def split_env(env_id: str, n_envs: int, config: str) -> VecEnv:
    """
    ``make_vec_env(env_id, n_envs, seed=0)`` (with ``Monitor``) in a VecEnv of ``config``: ``one`` (one process,
    ``CherryDummyVecEnv``), ``<k>`` (:class:`WorkerSplitVecEnv` with ``k`` workers) or ``main+<k>`` (the same with a
    group in this process).
    """
    if config == "one":
        return make_vec_env(env_id, n_envs=n_envs, seed=0, vec_env_cls=CherryDummyVecEnv)
    in_main, _, workers = config.rpartition("+")
    if in_main not in ("", "main") or not workers.isdigit():
        raise ValueError(f"config must be 'one', '<k>' or 'main+<k>', got {config!r}.")

    def vec_env_cls(env_fns: list[Callable[[], gym.Env]]) -> VecEnv:
        return WorkerSplitVecEnv(env_fns, int(workers), in_main=bool(in_main))

    return make_vec_env(env_id, n_envs=n_envs, seed=0, vec_env_cls=vec_env_cls)  # type: ignore[arg-type]


def raw_rates(configs: Sequence[str], repeats: int, calls: int = 200) -> dict[str, float]:
    """Best-of-``repeats`` env steps per second of the entry's 32 envs stepped with random actions, per config."""
    best = dict.fromkeys(configs, 0.0)
    for _ in range(repeats):
        for config in configs:
            env = split_env(ENV_ID, 32, config)
            env.action_space.seed(0)
            actions = [np.stack([env.action_space.sample() for _ in range(32)]) for _ in range(16)]
            env.reset()
            start = time.perf_counter()
            for i in range(calls):
                env.step(actions[i % len(actions)])
            best[config] = max(best[config], calls * 32 / (time.perf_counter() - start))
            env.close()
    return best


def library_raw_rates(repeats: int) -> list[dict[str, Any]]:
    """
    Best-of-``repeats`` env steps per second with random actions of ``CherryDummyVecEnv`` and of the library's
    ``CherryParallelVecEnv`` (default workers) on a cheap, a mid and a simulator-bound env.

    :param repeats: rounds (the two VecEnvs alternate)
    :return: one row per env
    """
    from sb3_cherry.common.vec_env import CherryParallelVecEnv

    rows = []
    for env_id, n_envs, calls in (("CartPole-v1", 8, 3000), ("Hopper-v5", 2, 2000), ("Humanoid-v5", 32, 100)):
        best = {"one": 0.0, "parallel": 0.0}
        for _ in range(repeats):
            for name, cls in (("one", CherryDummyVecEnv), ("parallel", CherryParallelVecEnv)):
                env = make_vec_env(env_id, n_envs=n_envs, seed=0, vec_env_cls=cls)  # type: ignore[arg-type]
                env.action_space.seed(0)
                actions = [np.stack([env.action_space.sample() for _ in range(n_envs)]) for _ in range(16)]
                env.reset()
                start = time.perf_counter()
                for i in range(calls):
                    env.step(actions[i % len(actions)])
                best[name] = max(best[name], calls * n_envs / (time.perf_counter() - start))
                env.close()
        rows.append({"env": f"{env_id} x {n_envs}", **{k: round(v) for k, v in best.items()}})
        rows[-1]["parallel_over_one"] = round(best["parallel"] / best["one"], 2)
    return rows


def _timed_learn(model: Any, steps: int, inner: VecEnv) -> dict[str, float]:
    """Milliseconds per rollout of ``model.learn(steps)``: total, collection, VecEnv wait within it, update."""
    totals = {"collect": 0.0, "env_wait": 0.0, "train": 0.0}

    def timed(function: Callable[..., Any], key: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = function(*args, **kwargs)
            totals[key] += time.perf_counter() - start
            return result

        return call

    inner.step_wait = timed(inner.step_wait, "env_wait")  # type: ignore[method-assign]
    model.collect_rollouts = timed(model.collect_rollouts, "collect")
    model.train = timed(model.train, "train")
    start = time.perf_counter()
    model.learn(steps)
    total = time.perf_counter() - start
    model.get_env().close()
    rollouts = steps / (model.n_steps * model.n_envs)
    return {"total": 1000 * total / rollouts, **{k: 1000 * v / rollouts for k, v in totals.items()}}


def learn_rounds(configs: Sequence[str], steps: int, repeats: int) -> list[dict[str, Any]]:
    """Per row (SB3, then PPORollback on each VecEnv config): medians over alternating rounds."""
    from benchmarks.throughput import _zoo_case, make_env

    case = _zoo_case("zoo_bipedal", ENV_ID, steps)
    runs: dict[str, list[dict[str, float]]] = {"sb3": [], **{f"ours_{c}": [] for c in configs}}
    for _ in range(repeats):
        sb3_env = make_env(case, stack="sb3")
        assert isinstance(sb3_env, VecEnvWrapper)  # (the entry normalises: VecNormalize around the DummyVecEnv)
        runs["sb3"].append(_timed_learn(case.baseline(sb3_env), steps, sb3_env.venv))
        for config in configs:
            inner = split_env(ENV_ID, case.n_envs, config)
            env = CherryVecNormalize(inner, **(case.normalize or {}))
            runs[f"ours_{config}"].append(_timed_learn(case.ours(env), steps, inner))
    rows = []
    for name, timings in runs.items():
        ratios = [b["total"] / t["total"] for b, t in zip(runs["sb3"], timings, strict=True)]
        row: dict[str, Any] = {"run": name, "repeats": repeats, "steps": steps}
        row.update({f"{k}_ms": round(statistics.median(t[k] for t in timings), 1) for k in timings[0]})
        row["sb3_over_row"] = round(statistics.median(ratios), 3)
        row["sb3_over_row_min"], row["sb3_over_row_max"] = round(min(ratios), 3), round(max(ratios), 3)
        rows.append(row)
    return rows


def main() -> None:
    """Run both parts and print (and optionally write) the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs", nargs="+", default=["2", "main+1"], help="VecEnvs to compare with one process ('<k>', 'main+<k>')"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8_192, help="env steps per learn (16 rollouts of the entry)")
    parser.add_argument("--out", default=None, help="file stem in benchmarks/results (writes .md and .csv)")
    parser.add_argument(
        "--library-envs",
        action="store_true",
        help="instead: raw step rates, CherryDummyVecEnv vs CherryParallelVecEnv, on CartPole x 8, Hopper x 2, Humanoid x 32",
    )
    args = parser.parse_args()
    th.set_num_threads(1)
    if args.library_envs:
        rows = library_raw_rates(args.repeats)
        lines = [
            f"`python -m benchmarks.worker_split --library-envs --repeats {args.repeats}` ({time.strftime('%Y-%m-%d %H:%M')})",
            "",
        ]
        lines += ["| env | one process (env steps/s) | CherryParallelVecEnv | parallel / one |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
        print("\n".join(lines))
        if args.out:
            (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
        return
    configs = ["one", *args.configs]
    command = f"python -m benchmarks.worker_split --configs {' '.join(args.configs)} --repeats {args.repeats}"
    lines = [f"`{command}` ({time.strftime('%Y-%m-%d %H:%M')})", ""]
    rates = raw_rates(configs, args.repeats)
    lines += ["| VecEnv | env steps/s (best of rounds) | vs one process |", "|---|---|---|"]
    lines += [f"| {c} | {rates[c]:.0f} | {rates[c] / rates['one']:.2f} |" for c in configs]
    rows = learn_rounds(configs, args.steps, args.repeats)
    lines += ["", "| run | " + " | ".join(list(rows[0])[1:]) + " |", "|---" * len(rows[0]) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    text = "\n".join(lines)
    print(text)
    if args.out:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.out}.md").write_text(text + "\n")
        with open(RESULTS / f"{args.out}.csv", "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
