"""
Training throughput (env steps per second, collection + updates) of sb3_cherry vs SB3's PPO, measured alternately
in ONE process so that machine noise hits both sides alike; the ratio is what we report.

    python -m benchmarks.throughput                 # all cases, 3 alternating repetitions
    python -m benchmarks.throughput --out throughput.csv --cases zoo_cartpole zoo_hopper zoo_bipedal \
        zoo_bipedal_same_math cartpole_cherry_a2c zoo_cartpole_fused_adam zoo_hopper_fused_adam zoo_bipedal_fused_adam
    python -m benchmarks.throughput --cases cartpole_ppo_rollback --repeats 5
    python -m benchmarks.throughput --out throughput_bipedal_long.csv --cases zoo_bipedal zoo_bipedal_same_math \
        --steps 32768 --repeats 5    # 4x the case's steps: BipedalWalker's short runs are the noisiest
    python -m benchmarks.throughput --out throughput_extra.csv --cases cartpole_gumbel_softmax_vs_sb3_categorical \
        cartpole_recurrent_lstm_vs_sb3_contrib cartpole_recurrent_gru_vs_sb3_contrib_lstm
    python -m benchmarks.throughput --out throughput_whole_sequences.csv --cases cartpole_recurrent_lstm_vs_sb3_contrib \
        cartpole_recurrent_lstm_whole_sequences_vs_sb3_contrib
    python -m benchmarks.throughput --guard --out throughput_guard.csv --repeats 5 --cases cartpole_ppo_rollback ...
    python -m benchmarks.throughput --out throughput_envpool.csv --cases zoo_cartpole_envpool zoo_hopper_envpool \
        zoo_bipedal_envpool zoo_bipedal_envpool_2threads zoo_bipedal_both_envpool

The ``*_envpool`` cases train PPORollback on EnvPool's C++ port of the env (``EnvPoolVecEnv``, ``pip install
"sb3_cherry[envpool]"``) and SB3's PPO on gymnasium's (both sides on EnvPool in ``zoo_bipedal_both_envpool``); the
CPU-time ratio then counts EnvPool's worker threads too. ``zoo_bipedal_parallel`` trains PPORollback on the entry's own
VecEnv (``vec_env: parallel``: ``CherryParallelVecEnv``, half the envs in a worker process on 2 cores; the same values),
as ``sb3-cherry train`` does since that key; its CPU-time ratio leaves the worker's time out (compare wall clock), and
``zoo_bipedal`` keeps one process (the algorithm's speed alone).

``--guard`` compares sb3_cherry with its non-finite checks (``check_finite=True``, the default) against the same
model with ``check_finite=False`` instead of SB3 (the "sb3" columns are then the unguarded runs), timed in process
CPU time: the difference sought (a few %) is below the wall-clock noise of a shared machine, and with one torch
thread and in-process envs the CPU time is the work done.

Writes ``benchmarks/results/throughput.csv`` (one row per case, median steps/s of each side and their ratio, and the
raw env step rate of the baseline's VecEnv with random actions, with each side's ratio to it, and the ratio of steps per
second of process CPU time, robust to a loaded machine) and
``benchmarks/results/throughput.png``.
"""

import argparse
import csv
import dataclasses
import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from sb3_cherry import CherryA2C, PPORollback, RecurrentPPORollback
from sb3_cherry.common.vec_env import CherryDummyVecEnv, CherryVecNormalize

RESULTS = pathlib.Path(__file__).parent / "results"


@dataclass
class Case:
    """One comparison: ``ours`` vs ``baseline``, same env and hyperparameters."""

    name: str
    env_id: str
    n_envs: int
    steps: int
    ours: Callable
    baseline: Callable
    normalize: dict | None = None  # VecNormalize arguments (zoo entries with ``normalize: true``)
    #: VecEnv of each side: ``dummy`` (gymnasium's envs in one process), ``parallel`` (sb3_cherry's side only:
    #: ``CherryParallelVecEnv``, the envs in groups stepped at once here and in worker processes, the same values) or
    #: ``envpool:<threads>`` (EnvPoolVecEnv)
    ours_vec_env: str = "dummy"
    baseline_vec_env: str = "dummy"
    #: VecEnv classes of sb3_cherry's side with ``dummy``: ``cherry`` (``CherryDummyVecEnv``, and
    #: ``CherryVecNormalize`` when the entry normalises: what ``sb3-cherry train`` builds; the same values as SB3's) or
    #: ``sb3`` (SB3's ``DummyVecEnv`` / ``VecNormalize``, the baseline's)
    ours_stack: str = "sb3"


def _ppo_kwargs(n_steps: int, batch_size: int, n_epochs: int) -> dict:
    return dict(n_steps=n_steps, batch_size=batch_size, n_epochs=n_epochs, seed=0, device="cpu")


#: PPORollback arguments SB3's PPO does not have (dropped for the baseline, with ``action_distribution``)
_CHERRY_ONLY = ("rollback_alpha", "returns_estimator", "n_step", "rho_bar", "c_bar", "recompute_returns", "collection")


def _zoo_case(
    name: str,
    env_id: str,
    steps: int,
    fused: bool = False,
    same_math: bool = False,
    compiled: bool = False,
    ours_vec_env: str = "dummy",
    baseline_vec_env: str = "dummy",
    ours_stack: str = "cherry",
) -> Case:
    """
    PPORollback with the shipped zoo entry of ``env_id`` (``zoo_configs/ppo_rollback.yml``: n_envs, normalize,
    hyperparameters, distribution) vs SB3's PPO with the same hyperparameters (its default Gaussian / categorical
    distribution and GAE, as SB3 has no other).

    :param fused: PPORollback with the opt-in fused Adam (``fused_optimizer = True``; not bit-identical to SB3)
    :param compiled: PPORollback with the opt-in compiled update (``compile_update=True``; not bit-identical to SB3;
        the compilation, or its reuse by the next model, is inside the timed ``learn``)
    :param same_math: PPORollback with ``rollback_alpha=0``, GAE and the default distribution, i.e. SB3's PPO
        computed by sb3_cherry's loop (the speed of the loop alone, without the entry's Beta / V-trace costs)
    :param ours_vec_env: PPORollback's VecEnv (see :class:`Case`)
    :param baseline_vec_env: SB3 PPO's VecEnv
    :param ours_stack: PPORollback's VecEnv classes (see :class:`Case`; SB3's PPO always has SB3's): ``cherry`` by
        default, as ``sb3-cherry train`` runs the entry
    """
    from sb3_cherry.common.schedules import coefficient_schedule
    from sb3_cherry.common.zoo_config import load_zoo_entry

    entry = load_zoo_entry("ppo_rollback", env_id)
    ours_kwargs = {**entry.model_kwargs, "seed": 0, "device": "cpu"}
    base_kwargs = {k: v for k, v in ours_kwargs.items() if k not in _CHERRY_ONLY}
    policy_kwargs = {k: v for k, v in base_kwargs.get("policy_kwargs", {}).items() if k != "action_distribution"}
    base_kwargs["policy_kwargs"] = policy_kwargs
    if not isinstance(base_kwargs.get("ent_coef", 0.0), (int, float)):
        # SB3's PPO takes a number: a scheduled ent_coef (the BipedalWalker entry's) costs what its start value costs
        base_kwargs["ent_coef"] = coefficient_schedule(base_kwargs["ent_coef"])(1.0)
    if same_math:
        ours_kwargs = {**base_kwargs, "rollback_alpha": 0.0}
    policy = ours_kwargs.pop("policy")
    base_policy = base_kwargs.pop("policy")

    def ours(env: VecEnv) -> PPORollback:
        model = PPORollback(policy, env, **ours_kwargs, compile_update=compiled)
        model.fused_optimizer = fused
        return model

    return Case(
        name,
        env_id,
        entry.n_envs,
        steps,
        ours,
        lambda e: PPO(base_policy, e, **base_kwargs),
        normalize=entry.normalize,
        ours_vec_env=ours_vec_env,
        baseline_vec_env=baseline_vec_env,
        ours_stack=ours_stack,
    )


def zoo_cases() -> list[Case]:
    """
    The issue-19 goal cases: the shipped zoo entries of CartPole-v1 (8 envs), Hopper-v5 (1 env), BipedalWalker-v3
    (32 envs, Beta policy, V-trace), each also with the opt-in fused Adam and with the opt-in compiled update (and
    both); BipedalWalker also with SB3's math. PPORollback's side steps ``CherryDummyVecEnv`` and normalises
    (Hopper, BipedalWalker) with ``CherryVecNormalize``, as ``sb3-cherry train`` does; the ``*_sb3_stack`` cases give
    it SB3's ``DummyVecEnv`` / ``VecNormalize`` too (the algorithms alone on the same VecEnv stack; all cases did
    before those classes existed).
    """
    return [
        _zoo_case("zoo_cartpole", "CartPole-v1", 16_384),
        _zoo_case("zoo_hopper", "Hopper-v5", 4_096),
        _zoo_case("zoo_bipedal", "BipedalWalker-v3", 8_192),
        _zoo_case("zoo_bipedal_same_math", "BipedalWalker-v3", 8_192, same_math=True),
        _zoo_case("zoo_cartpole_sb3_stack", "CartPole-v1", 16_384, ours_stack="sb3"),
        _zoo_case("zoo_hopper_sb3_stack", "Hopper-v5", 4_096, ours_stack="sb3"),
        _zoo_case("zoo_bipedal_sb3_stack", "BipedalWalker-v3", 8_192, ours_stack="sb3"),
        _zoo_case("zoo_bipedal_same_math_sb3_stack", "BipedalWalker-v3", 8_192, same_math=True, ours_stack="sb3"),
        # the entry's own VecEnv (vec_env: parallel), what sb3-cherry train runs; zoo_bipedal steps one process
        _zoo_case("zoo_bipedal_parallel", "BipedalWalker-v3", 8_192, ours_vec_env="parallel"),
        _zoo_case("zoo_cartpole_fused_adam", "CartPole-v1", 16_384, fused=True),
        _zoo_case("zoo_hopper_fused_adam", "Hopper-v5", 4_096, fused=True),
        _zoo_case("zoo_bipedal_fused_adam", "BipedalWalker-v3", 8_192, fused=True),
        _zoo_case("zoo_cartpole_compiled", "CartPole-v1", 16_384, compiled=True),
        _zoo_case("zoo_hopper_compiled", "Hopper-v5", 4_096, compiled=True),
        _zoo_case("zoo_bipedal_compiled", "BipedalWalker-v3", 8_192, compiled=True),
        _zoo_case("zoo_cartpole_compiled_fused_adam", "CartPole-v1", 16_384, compiled=True, fused=True),
        _zoo_case("zoo_hopper_compiled_fused_adam", "Hopper-v5", 4_096, compiled=True, fused=True),
    ]


def envpool_cases() -> list[Case]:
    """
    The zoo entries with PPORollback's training envs from EnvPool (``EnvPoolVecEnv``; 1 thread unless the name says
    otherwise) vs SB3's PPO on gymnasium's envs, and on BipedalWalker-v3 also both sides on EnvPool (the backend's
    share of the speed-up vs the algorithm's). EnvPool's envs are C++ ports of gymnasium's.
    """
    return [
        _zoo_case("zoo_cartpole_envpool", "CartPole-v1", 16_384, ours_vec_env="envpool:1"),
        _zoo_case("zoo_hopper_envpool", "Hopper-v5", 4_096, ours_vec_env="envpool:1"),
        _zoo_case("zoo_bipedal_envpool", "BipedalWalker-v3", 8_192, ours_vec_env="envpool:1"),
        _zoo_case("zoo_bipedal_envpool_2threads", "BipedalWalker-v3", 8_192, ours_vec_env="envpool:2"),
        _zoo_case(
            "zoo_bipedal_both_envpool", "BipedalWalker-v3", 8_192, ours_vec_env="envpool:1", baseline_vec_env="envpool:1"
        ),
    ]


def cases() -> list[Case]:
    """The benchmark cases (the zoo entries, the issue's CartPole 8 envs / Hopper 1 env, plus distributions)."""
    cp = _ppo_kwargs(32, 256, 20)  # rl-zoo CartPole PPO entry
    hop = _ppo_kwargs(512, 32, 5)  # rl-zoo Hopper PPO entry
    pend = _ppo_kwargs(1024, 64, 10)
    a2c = dict(n_steps=5, seed=0, device="cpu")
    rec = _ppo_kwargs(128, 256, 4)  # 8 envs x 128 steps, 4 minibatches of 256
    study = _ppo_kwargs(2048, 64, 10)  # the trust-region study's base entry (benchmarks/trust_region.yml)
    tr_ppo_rb = dict(trust_region="kl", kl_threshold=0.03, rollback_alpha=0.05)
    truly_ppo = dict(trust_region="kl", kl_threshold=0.03, rollback="kl", rollback_alpha=5.0)
    from sb3_contrib import RecurrentPPO
    from stable_baselines3 import A2C

    a2c_case = Case(
        "cartpole_cherry_a2c",
        "CartPole-v1",
        8,
        16_384,
        lambda e: CherryA2C("MlpPolicy", e, **a2c),
        lambda e: A2C("MlpPolicy", e, **a2c),
        ours_stack="cherry",  # as sb3-cherry train builds it (the *_sb3_stack case: SB3's DummyVecEnv)
    )
    return [
        *zoo_cases(),
        *envpool_cases(),
        Case(
            "cartpole_ppo_rollback",
            "CartPole-v1",
            8,
            16_384,
            lambda e: PPORollback("MlpPolicy", e, **cp),
            lambda e: PPO("MlpPolicy", e, **cp),
        ),
        Case(
            "hopper_ppo_rollback",
            "Hopper-v5",
            1,
            4_096,
            lambda e: PPORollback("MlpPolicy", e, **hop),
            lambda e: PPO("MlpPolicy", e, **hop),
        ),
        Case(
            "pendulum_beta_vs_sb3_gaussian",
            "Pendulum-v1",
            4,
            8_192,
            lambda e: PPORollback("MlpPolicy", e, policy_kwargs=dict(action_distribution="beta"), **pend),
            lambda e: PPO("MlpPolicy", e, **pend),
        ),
        Case(
            "pendulum_tanh_normal_vs_sb3_gaussian",
            "Pendulum-v1",
            4,
            8_192,
            lambda e: PPORollback("MlpPolicy", e, policy_kwargs=dict(action_distribution="tanh_normal"), **pend),
            lambda e: PPO("MlpPolicy", e, **pend),
        ),
        Case(
            "hybrid_tuple_vs_sb3_gaussian",
            "sb3_cherry/HybridGoal-v0",
            4,
            8_192,
            lambda e: PPORollback("MlpPolicy", e, **pend),
            # SB3 cannot handle the Tuple space: its baseline is a Gaussian policy on the flattened action vector
            lambda e: PPO("MlpPolicy", _flat_box_env(e), **pend),
        ),
        a2c_case,
        dataclasses.replace(a2c_case, name="cartpole_cherry_a2c_sb3_stack", ours_stack="sb3"),
        Case(
            "cartpole_gumbel_softmax_vs_sb3_categorical",
            "CartPole-v1",
            8,
            16_384,
            lambda e: PPORollback("MlpPolicy", e, policy_kwargs=dict(action_distribution="gumbel_softmax"), **cp),
            lambda e: PPO("MlpPolicy", e, **cp),
        ),
        Case(
            "cartpole_recurrent_lstm_vs_sb3_contrib",
            "CartPole-v1",
            8,
            8_192,
            lambda e: RecurrentPPORollback("MlpLstmPolicy", e, **rec),
            lambda e: RecurrentPPO("MlpLstmPolicy", e, **rec),
        ),
        # the opt-in whole-sequence recurrent pass (policy_kwargs whole_sequences=True; weight gradients equal to
        # contrib's up to float rounding): the same LSTM policy against contrib's step-by-step loop
        Case(
            "cartpole_recurrent_lstm_whole_sequences_vs_sb3_contrib",
            "CartPole-v1",
            8,
            8_192,
            lambda e: RecurrentPPORollback("MlpLstmPolicy", e, policy_kwargs=dict(whole_sequences=True), **rec),
            lambda e: RecurrentPPO("MlpLstmPolicy", e, **rec),
        ),
        Case(
            "cartpole_recurrent_gru_vs_sb3_contrib_lstm",
            "CartPole-v1",
            8,
            8_192,
            lambda e: RecurrentPPORollback("MlpGruPolicy", e, **rec),
            lambda e: RecurrentPPO("MlpLstmPolicy", e, **rec),
        ),
        # the cost of the exact per-state KL (pi_old recomputed per minibatch): the baseline is PPO-RB, not SB3
        Case(
            "hopper_tr_ppo_rb_vs_ppo_rb",
            "Hopper-v5",
            1,
            4_096,
            lambda e: PPORollback("MlpPolicy", e, **tr_ppo_rb, **study),
            lambda e: PPORollback("MlpPolicy", e, rollback_alpha=0.3, **study),
        ),
        Case(
            "hopper_truly_ppo_vs_ppo_rb",
            "Hopper-v5",
            1,
            4_096,
            lambda e: PPORollback("MlpPolicy", e, **truly_ppo, **study),
            lambda e: PPORollback("MlpPolicy", e, rollback_alpha=0.3, **study),
        ),
    ]


def _flat_box_env(vec_env):
    """
    The hybrid env seen through one flat Box in [-1, 1] (what a user of plain SB3 would have to do): the first
    coordinate is binned into the discrete choice, the others are mapped onto each parameter Box's bounds.
    """
    import gymnasium as gym

    class FlatActions(gym.ActionWrapper):
        def __init__(self, env: gym.Env):
            super().__init__(env)
            discrete, boxes = env.action_space.spaces
            self.n, self.boxes = int(discrete.n), list(boxes.spaces)
            dim = 1 + sum(int(np.prod(b.shape)) for b in self.boxes)
            self.action_space = gym.spaces.Box(-1, 1, (dim,), np.float32)

        def action(self, action):
            action = np.clip(np.asarray(action, np.float32), -1, 1)
            choice = int(min(self.n - 1, (action[0] + 1) / 2 * self.n))
            params, start = [], 1
            for box in self.boxes:
                size = int(np.prod(box.shape))
                unit = (action[start : start + size].reshape(box.shape) + 1) / 2
                params.append((box.low + unit * (box.high - box.low)).astype(box.dtype))
                start += size
            return choice, tuple(params)

    env_id = vec_env.envs[0].spec.id
    return make_vec_env(env_id, n_envs=vec_env.num_envs, seed=0, wrapper_class=FlatActions)


def make_env(case: Case, vec_env: str = "dummy", stack: str = "sb3") -> VecEnv:
    """
    The case's VecEnv (seed 0, VecNormalize when the zoo entry normalises).

    :param vec_env: ``dummy``, ``parallel`` or ``envpool:<threads>`` (see :class:`Case`)
    :param stack: ``sb3`` (SB3's ``DummyVecEnv`` / ``VecNormalize``) or ``cherry`` (``CherryDummyVecEnv`` /
        ``CherryVecNormalize``)
    """
    if vec_env == "parallel":
        from sb3_cherry.common.vec_env import CherryParallelVecEnv

        env: VecEnv = make_vec_env(case.env_id, n_envs=case.n_envs, seed=0, vec_env_cls=CherryParallelVecEnv)
    elif vec_env.startswith("envpool:"):
        from sb3_cherry.common.vec_env.envpool_vec_env import make_envpool_vec_env

        threads = int(vec_env.partition(":")[2])
        env = make_envpool_vec_env(case.env_id, n_envs=case.n_envs, seed=0, num_threads=threads)
    else:
        env = make_vec_env(
            case.env_id, n_envs=case.n_envs, seed=0, vec_env_cls=CherryDummyVecEnv if stack == "cherry" else None
        )
    if case.normalize is None:
        return env
    return (CherryVecNormalize if stack == "cherry" else VecNormalize)(env, **case.normalize)


def side_env(case: Case, side: str) -> VecEnv:
    """
    The VecEnv of one side of a case: ``ours`` (its VecEnv and normalisation wrapper) or ``sb3`` (the baseline's).

    :param case: the case
    :param side: ``ours`` or ``sb3``
    """
    if side == "ours":
        return make_env(case, case.ours_vec_env, case.ours_stack)
    return make_env(case, case.baseline_vec_env)


def ab_table_main(description: str, header: str, measure: Callable[[str, int], str], cases: list[str], repeats: int) -> None:
    """
    Command line of the A/B scripts (``flat_adam_ab``, ``step_add_ab``): ``--cases`` and ``--repeats``, then print a
    markdown table, one ``measure(case, repeats)`` row per case.

    :param description: the script's docstring (``--help``)
    :param header: the table's header row (its separator row is added)
    :param measure: one row of a case
    :param cases: default cases
    :param repeats: default repeats
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=cases)
    parser.add_argument("--repeats", type=int, default=repeats)
    args = parser.parse_args()
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in args.cases:
        print(measure(name, args.repeats), flush=True)


def measure_wall_and_cpu(build: Callable, case: Case, side: str, check_finite: bool | None = None) -> tuple[float, float]:
    """
    Steps per second of ``learn(steps)``, per wall-clock second and per second of this process's CPU time (model
    construction excluded). With torch on 1 thread and a DummyVecEnv the two agree on an idle machine; on a loaded
    one the CPU-time rate is not diluted by waiting for a core (with EnvPool it counts its worker threads too).
    ``check_finite``, when given, is set on the model (``--guard``); ``side`` (``ours`` / ``sb3``) picks the VecEnv
    (:func:`side_env`).
    """
    model = build(side_env(case, side))
    if check_finite is not None:
        model.check_finite = check_finite
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(case.steps)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    model.get_env().close()
    return case.steps / elapsed, case.steps / cpu


def measure_raw(case: Case) -> float:
    """
    Raw env step rate: steps per second of the case's VecEnv (the baseline's) stepped with pre-sampled random actions
    (no policy, no learning), the ceiling that ``learn`` is compared to.
    """
    env = make_env(case, case.baseline_vec_env)
    env.reset()
    n_calls = max(1, case.steps // case.n_envs)
    space = env.action_space
    actions = []
    for _ in range(min(n_calls, 64)):
        batch = [space.sample() for _ in range(case.n_envs)]
        actions.append(batch if isinstance(space, gym.spaces.Tuple) else np.stack(batch))  # VecEnv takes Tuples as a list
    start = time.perf_counter()
    for i in range(n_calls):
        env.step(actions[i % len(actions)])
    elapsed = time.perf_counter() - start
    env.close()
    return n_calls * case.n_envs / elapsed


def main() -> None:
    """Run the benchmark and write the CSV and the plot."""
    import sb3_cherry  # noqa: F401  (registers the sb3_cherry/ envs)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", help="subset of case names")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a shared machine)")
    parser.add_argument("--out", default=None, help="CSV name in benchmarks/results (default: throughput.csv)")
    parser.add_argument("--guard", action="store_true", help="baseline: sb3_cherry with check_finite=False, not SB3")
    parser.add_argument("--steps", type=int, default=None, help="env steps per learn (default: each case's own)")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    selected = [c for c in cases() if not args.cases or c.name in args.cases]
    if args.steps is not None:
        selected = [dataclasses.replace(c, steps=args.steps) for c in selected]
    rows = []
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / (args.out or ("throughput.csv" if not args.cases else f"throughput_{'_'.join(args.cases)}.csv"))
    for case in selected:
        ours, base, raw, ours_cpu, base_cpu = [], [], [], [], []
        for _ in range(args.repeats):  # alternate, so drifting machine load hits both sides
            if args.guard:  # the same model with the non-finite checks off ("sb3" columns) and on
                sides = ((base, case.ours, False, "ours"), (ours, case.ours, True, "ours"))
            else:
                sides = ((base, case.baseline, None, "sb3"), (ours, case.ours, None, "ours"))
            for side, build, check_finite, env_side in sides:
                wall, cpu = measure_wall_and_cpu(build, case, env_side, check_finite)
                side.append(wall)
                (base_cpu if side is base else ours_cpu).append(cpu)
            raw.append(measure_raw(case))
        row = dict(
            case=case.name,
            env=case.env_id,
            n_envs=case.n_envs,
            ours_vec_env=case.ours_vec_env,
            sb3_vec_env=case.baseline_vec_env,
            ours_stack=case.ours_stack if not case.ours_vec_env.startswith("envpool") else "-",
            steps=case.steps,
            repeats=args.repeats,
            ours_steps_per_s=round(float(np.median(ours)), 1),
            sb3_steps_per_s=round(float(np.median(base)), 1),
            ratio=round(float(np.median(np.array(ours) / np.array(base))), 3),
            raw_env_steps_per_s=round(float(np.median(raw)), 1),
            ours_vs_raw=round(float(np.median(np.array(ours) / np.array(raw))), 3),
            sb3_vs_raw=round(float(np.median(np.array(base) / np.array(raw))), 3),
            ratio_cpu_time=round(float(np.median(np.array(ours_cpu) / np.array(base_cpu))), 3),
        )
        rows.append(row)
        print(row, flush=True)
        # written after every case, so an interrupted run keeps what it measured
        with open(out, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        _plot(rows, out.with_suffix(".png"))
    print(f"wrote {out}")


def _plot(rows: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.6 * len(rows) + 1.5))
    names = [r["case"] for r in rows]
    ax.barh(names, [r["ratio"] for r in rows], color="tab:red")
    ax.axvline(1.0, color="k", lw=1)
    ax.axvline(1.3, color="tab:green", ls="--", lw=1, label="goal 1.3 (issue 19: zoo cases, A2C)")
    ax.axvline(0.85, color="gray", ls=":", lw=1, label="goal 0.85 (distributions vs SB3 Gaussian)")
    ax.set_xlabel("steps/s ratio: sb3_cherry / SB3 (same process, alternating runs)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
