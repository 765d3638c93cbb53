"""
Learning curves: train with the ``zoo_configs/`` entry of an algorithm on one env, evaluate periodically, and append
one CSV row per evaluation to ``benchmarks/results/<env>.csv`` (so an interrupted run keeps what it measured).

    python -m benchmarks.learning --env CartPole-v1 --algo ppo_rollback --seeds 0 1
    python -m benchmarks.learning --env CartPole-v1 --algo ppo_rollback --seeds 0 1 --variant vtrace \\
        --set returns_estimator=vtrace
    python -m benchmarks.learning --env Pendulum-v1 --algo ppo_rollback --seeds 0 --variant beta \\
        --set use_sde=false --set policy_kwargs.action_distribution=beta
    python -m benchmarks.learning --env Hopper-v5 --algo ppo --seeds 0 --timesteps 200000 --eval-freq 20000
    python -m benchmarks.learning --env sb3_cherry/CartPoleNoVel-v0 --algo recurrent_ppo_rollback --seeds 0 --variant gru
    python -m benchmarks.learning --env sb3_cherry/CartPoleNoVel-v0 --algo ppo_rollback --seeds 0 \
        --hyperparams-from recurrent_ppo_rollback --variant feed_forward

Algorithms: ``ppo_rollback``, ``cherry_a2c`` and ``recurrent_ppo_rollback`` (their own zoo entries) and ``ppo``: SB3's
PPO with the hyperparameters of the ``ppo_rollback`` entry minus ``rollback_alpha`` (the baseline).
``--hyperparams-from recurrent_ppo_rollback`` trains a feed-forward algorithm with a recurrent entry minus its recurrent
parts (the memory-task baseline). ``--set key=value`` overrides a hyperparameter
(values parsed as YAML: ``true``, ``8``, ``1e-3``, ``beta``; ``lin_<v>`` is a linear schedule; a dotted key sets an
entry of a dict argument, e.g. ``policy_kwargs.action_distribution``); ``--variant`` names the row (default ``zoo``).

Evaluation: ``--eval-episodes`` (10) deterministic episodes on a separate env (seed ``1000 + seed``); with
observation normalisation, the training ``VecNormalize`` statistics are copied into it and reward normalisation is off,
so the reported return is the true episodic return. Evaluations at step 0, every ``--eval-freq`` steps, and at the end.

Long runs in chunks (``--checkpoint-dir DIR --chunk-steps N``): every ``N`` steps the run writes a run checkpoint
(:mod:`sb3_cherry.common.checkpoint`: model, optimizer, VecNormalize statistics, RNG and env states, the evaluation
schedule) to ``DIR/<env>_<algo>_<variant>_<seed>/`` and the process moves on to the next seed; the same command run
again continues each unfinished seed exactly where it stopped, skips finished ones (a CSV row at the full budget) and
deletes a checkpoint once its run is complete (``--keep-final`` keeps it: the final model for ``sb3-cherry evaluate
--model DIR/<run>``).

CSV columns: ``env, algo, variant, seed, timesteps, mean_return, std_return, wall_time_s`` (training wall time since
the start of ``learn``, summed over chunks, evaluation time excluded). ``python -m benchmarks.plot`` turns the CSVs
into curves and a summary.
"""

import argparse
import copy
import csv
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack, VecNormalize

RESULTS = pathlib.Path(__file__).parent / "results"
COLUMNS = ["env", "algo", "variant", "seed", "timesteps", "mean_return", "std_return", "wall_time_s"]
# Keys of the ppo_rollback entry that SB3's PPO does not have (dropped for the ``ppo`` baseline)
ROLLBACK_ONLY = (
    "rollback_alpha",
    "returns_estimator",
    "n_step",
    "rho_bar",
    "c_bar",
    "recompute_returns",
    "trust_region",
    "kl_threshold",
    "rollback",
    "imp_samp_max",
)
# policy_kwargs of the recurrent policies (dropped by --hyperparams-from recurrent_ppo_rollback)
RECURRENT_ONLY = (
    "lstm_hidden_size",
    "n_lstm_layers",
    "enable_critic_lstm",
    "shared_lstm",
    "lstm_kwargs",
    "rnn_type",
    "whole_sequences",
)


def csv_path(env_id: str, results: pathlib.Path = RESULTS) -> pathlib.Path:
    """
    The results file of an env.

    :param env_id: environment id (``/`` replaced by ``_`` in the file name)
    :param results: results folder
    :return: ``<results>/<env>.csv``
    """
    return results / f"{env_id.replace('/', '_')}.csv"


def parse_value(text: str) -> Any:
    """
    Parse a ``--set`` value: YAML scalars (``true``, ``8``, ``1e-3``, ``beta``), ``lin_<v>`` as a linear schedule.

    :param text: the value as typed
    :return: the Python value
    """
    if text.startswith("lin_"):
        return LinearSchedule(float(text[4:]), 0.0, 1.0)
    value = yaml.safe_load(text)
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(kwargs: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """
    Apply ``key=value`` assignments to constructor arguments (a dotted key sets an entry of a dict argument).

    :param kwargs: constructor arguments (not modified)
    :param assignments: ``["returns_estimator=vtrace", "policy_kwargs.action_distribution=beta", ...]``
    :return: the updated copy
    """
    kwargs = copy.deepcopy(kwargs)
    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"--set expects key=value, got {assignment!r}")
        key, text = assignment.split("=", 1)
        *parents, leaf = key.strip().split(".")
        target = kwargs
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise ValueError(f"--set {key}: {parent!r} is not a dict argument")
        target[leaf] = parse_value(text.strip())
    return kwargs


def load_entry(algo: str, env_id: str, hyperparams_from: str | None = None, config: str | pathlib.Path | None = None) -> Any:
    """
    The zoo entry a benchmark run of ``algo`` on ``env_id`` reads (``ppo``: the ``ppo_rollback`` entry).

    :param algo: algorithm of the run
    :param env_id: environment id
    :param hyperparams_from: read this algorithm's entry instead
    :param config: YAML file instead of the shipped zoo config
    :return: the :class:`~sb3_cherry.common.zoo_config.ZooEntry`
    """
    from sb3_cherry.common.zoo_config import load_zoo_entry

    return load_zoo_entry(hyperparams_from or ("ppo_rollback" if algo == "ppo" else algo), env_id, config)


def build_model(
    algo: str,
    env_id: str,
    seed: int,
    overrides: list[str],
    hyperparams_from: str | None = None,
    config: str | pathlib.Path | None = None,
    entry: Any = None,
    vec_env: str = "dummy",
    envpool_threads: int | None = None,
) -> tuple[BaseAlgorithm, int]:
    """
    Build the model of ``algo`` on ``env_id`` from its zoo entry (training env with ``VecNormalize`` if the entry asks).

    :param algo: ``ppo_rollback``, ``cherry_a2c``, ``recurrent_ppo_rollback`` or ``ppo`` (SB3 PPO with the
        ppo_rollback entry minus rollback keys)
    :param env_id: environment id
    :param seed: random seed of the model and the training env
    :param overrides: ``--set`` assignments
    :param hyperparams_from: read the entry of this algorithm's config instead; ``recurrent_ppo_rollback`` for a
        feed-forward ``algo`` drops the recurrent policy keys
    :param config: read the entry from this YAML file instead of the shipped ``zoo_configs/<algo>.yml`` (validated
        against the algorithm whose entry it is, ``ppo_rollback`` for ``ppo``)
    :param entry: the entry already read by :func:`load_entry` for these arguments (None: read it here)
    :param vec_env: ``dummy`` (SB3's ``DummyVecEnv`` of gymnasium envs) or ``envpool`` (EnvPool's port of the env,
        :func:`~sb3_cherry.common.vec_env.envpool_vec_env.make_envpool_vec_env`, ``envpool_threads`` threads, the
        entry's wrappers translated); the evaluation env is gymnasium's either way. Run checkpoints of EnvPool runs
        resume with new episodes (EnvPool's env states are not plain data)
    :param envpool_threads: EnvPool worker threads with ``vec_env="envpool"`` (``None``: EnvPool's default)
    :return: the model and the zoo entry's ``n_timesteps``
    """
    from sb3_cherry import CherryA2C, PPORollback, RecurrentPPORollback

    classes: dict[str, type[BaseAlgorithm]] = {
        "ppo_rollback": PPORollback,
        "cherry_a2c": CherryA2C,
        "recurrent_ppo_rollback": RecurrentPPORollback,
        "ppo": PPO,
    }
    entry = entry if entry is not None else load_entry(algo, env_id, hyperparams_from, config)
    kwargs = dict(entry.model_kwargs)
    if hyperparams_from == "recurrent_ppo_rollback" and algo != hyperparams_from:
        kwargs["policy"] = kwargs["policy"].replace("Gru", "").replace("Lstm", "")  # MlpGruPolicy -> MlpPolicy
        policy_kwargs = kwargs.get("policy_kwargs", {})
        kwargs["policy_kwargs"] = {k: v for k, v in policy_kwargs.items() if k not in RECURRENT_ONLY}
    if algo == "ppo":
        kwargs = {k: v for k, v in kwargs.items() if k not in ROLLBACK_ONLY}
    kwargs = apply_overrides(kwargs, overrides)
    if algo == "ppo":
        policy_kwargs = dict(kwargs.get("policy_kwargs", {}))
        # SB3's own default pairing ("--set policy_kwargs.action_distribution=normal" on a Beta entry) is plain PPO
        if policy_kwargs.get("action_distribution") in ("normal", "categorical"):
            del policy_kwargs["action_distribution"]
            kwargs["policy_kwargs"] = policy_kwargs
        if "action_distribution" in policy_kwargs:
            raise ValueError(
                "SB3's PPO has no action_distribution: for the ppo baseline of an entry with another distribution, "
                "add --set policy_kwargs.action_distribution=normal (or categorical)."
            )
        ent_coef = kwargs.get("ent_coef", 0.0)
        if isinstance(ent_coef, bool) or not isinstance(ent_coef, (int, float)):
            raise ValueError(
                f"SB3's PPO takes a constant ent_coef, the entry has {ent_coef!r}: for the ppo baseline add "
                "--set ent_coef=<value> (or use the same schedule through a callback)."
            )
    spec = EnvSpec.of(env_id, entry)
    env: VecEnv = spec.make(entry.n_envs, seed, vec_env, envpool_threads)
    if entry.normalize is not None:
        # VecNormalize discounts with the model's gamma, --set gamma=... included (as rl_zoo3 with --hyperparams)
        normalize = {**entry.normalize, "gamma": kwargs["gamma"]} if "gamma" in kwargs else entry.normalize
        env = VecNormalize(env, **normalize)
    env = spec.stack(env)
    return classes[algo](env=env, seed=seed, device="cpu", **kwargs), entry.n_timesteps


@dataclass
class EnvSpec:
    """
    How a zoo entry builds its envs, in rl_zoo3's order: ``make_vec_env`` with the entry's ``env_wrapper`` and
    ``env_kwargs``, then ``VecNormalize`` (by the caller), then ``VecFrameStack`` (``frame_stack``); SB3 adds
    ``VecTransposeImage`` for image observations.

    :param env_id: environment id
    :param env_wrapper: the entry's ``env_wrapper`` value (None: none)
    :param env_kwargs: keyword arguments of the env constructor
    :param frame_stack: frames stacked (None: no stacking)
    """

    env_id: str
    env_wrapper: Any = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    frame_stack: int | None = None

    @classmethod
    def of(cls, env_id: str, entry: Any) -> "EnvSpec":
        """
        :param env_id: environment id
        :param entry: a :class:`~sb3_cherry.common.zoo_config.ZooEntry`
        :return: the entry's env construction
        """
        return cls(env_id, entry.env_wrapper, dict(entry.env_kwargs), entry.frame_stack)

    def make(self, n_envs: int, seed: int, vec_env: str = "dummy", envpool_threads: int | None = None) -> VecEnv:
        """
        :param n_envs: number of envs
        :param seed: seed of the first env
        :param vec_env: ``dummy`` or ``envpool`` (see :func:`build_model`)
        :param envpool_threads: EnvPool worker threads (``None``: EnvPool's default)
        :return: the VecEnv before normalisation and frame stacking
        """
        from sb3_cherry.common.zoo_config import make_env_wrapper

        if vec_env == "envpool":
            from sb3_cherry.common.vec_env.envpool_vec_env import make_envpool_vec_env

            if self.env_kwargs:
                raise ValueError(f"--vec-env envpool: the entry of {self.env_id} has env_kwargs")
            # the entry's wrappers translated: FrameSkip inside the pool, observation wrappers per env
            return make_envpool_vec_env(
                self.env_id, n_envs=n_envs, seed=seed, num_threads=envpool_threads, env_wrapper=self.env_wrapper
            )

        # (the entry comes from the config file the benchmark was given: your own wrappers are accepted)
        wrapper = make_env_wrapper(self.env_wrapper, f"entry of {self.env_id}", trusted_only=False)
        return make_vec_env(self.env_id, n_envs=n_envs, seed=seed, wrapper_class=wrapper, env_kwargs=self.env_kwargs)

    def stack(self, env: VecEnv) -> VecEnv:
        """
        :param env: the (normalised) VecEnv
        :return: it with ``VecFrameStack`` if the entry stacks frames
        """
        return VecFrameStack(env, self.frame_stack) if self.frame_stack else env


class EvalAppendCallback(BaseCallback):
    """
    Evaluate every ``eval_freq`` environment steps on a separate env and append one CSV row per evaluation.

    :param env_id: environment id of the evaluation env, or its :class:`EnvSpec` (wrappers, frame stacking)
    :param row: constant columns of the rows (env, algo, variant, seed)
    :param path: CSV file (header written if it does not exist yet)
    :param eval_freq: evaluation period in environment steps (counted over all training envs); evaluations happen
        between updates, at the first rollout boundary at or after each multiple, and once more at the end
    :param n_episodes: episodes per evaluation
    :param seed: seed of the evaluation env
    """

    def __init__(
        self, env_id: "str | EnvSpec", row: dict[str, Any], path: pathlib.Path, eval_freq: int, n_episodes: int, seed: int
    ):
        super().__init__()
        self.spec = env_id if isinstance(env_id, EnvSpec) else EnvSpec(env_id)
        self.env_id, self.row, self.path = self.spec.env_id, row, path
        self.eval_freq, self.n_episodes, self.eval_seed = eval_freq, n_episodes, seed
        self.next_eval = 0
        self.eval_time = 0.0
        self.start = 0.0
        self.last_timesteps = -1
        self.resumed: dict[str, Any] | None = None
        # set by run_chunk: True when a chunk ended at a checkpoint (no final evaluation: the run goes on later)
        self.chunk_stopped: Any = None

    def state(self) -> dict[str, Any]:
        """The evaluation schedule and the training wall time so far (stored with run checkpoints)."""
        training_time = time.perf_counter() - self.start - self.eval_time
        return {"next_eval": self.next_eval, "last_timesteps": self.last_timesteps, "training_time": training_time}

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()
        self.next_eval = self.num_timesteps
        if self.resumed is not None:  # continue the schedule and the wall clock of a checkpointed run
            self.next_eval, self.last_timesteps = self.resumed["next_eval"], self.resumed["last_timesteps"]
            self.start -= self.resumed["training_time"]

    def _on_rollout_start(self) -> None:
        # between two updates: the policy evaluated is the one trained on exactly ``num_timesteps`` steps (with
        # collection="async", the behaviour weights, one update behind, while the learner trains on; its time counts)
        if self.num_timesteps >= self.next_eval:
            self.evaluate()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self.chunk_stopped is not None and self.chunk_stopped():
            return
        if self.num_timesteps != self.last_timesteps:
            self.evaluate()

    def evaluate(self) -> None:
        """Run the evaluation episodes and append the row."""
        tic = time.perf_counter()
        env: VecEnv = self.spec.make(1, self.eval_seed)
        train_norm = self.model.get_vec_normalize_env()
        if train_norm is not None:
            env = VecNormalize(
                env, training=False, norm_obs=train_norm.norm_obs, norm_reward=False, clip_obs=train_norm.clip_obs,
                epsilon=train_norm.epsilon, norm_obs_keys=train_norm.norm_obs_keys,
            )  # fmt: skip
            if train_norm.norm_obs:  # (reward-only normalisation keeps no observation statistics)
                env.obs_rms = copy.deepcopy(train_norm.obs_rms)
        env = self.spec.stack(env)
        returns, _ = evaluate_policy(
            self.model, env, n_eval_episodes=self.n_episodes, deterministic=True, return_episode_rewards=True
        )
        env.close()
        wall = tic - self.start - self.eval_time  # training time only
        self.eval_time += time.perf_counter() - tic
        row = dict(
            self.row,
            timesteps=self.num_timesteps,
            mean_return=round(float(np.mean(returns)), 3),
            std_return=round(float(np.std(returns)), 3),
            wall_time_s=round(wall, 1),
        )
        new = not self.path.exists()
        with open(self.path, "a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        print(row, flush=True)
        self.last_timesteps = self.num_timesteps
        while self.next_eval <= self.num_timesteps:
            self.next_eval += self.eval_freq


def run(args: argparse.Namespace) -> None:
    """
    Train and evaluate every seed in turn, appending rows as they are measured.

    :param args: parsed command line
    """
    th.set_num_threads(args.threads)
    path = csv_path(args.env, pathlib.Path(args.results))
    path.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        entry = load_entry(args.algo, args.env, args.hyperparams_from, args.config)
        model, zoo_timesteps = build_model(
            args.algo, args.env, seed, args.set, args.hyperparams_from, args.config, entry, args.vec_env, args.envpool_threads
        )
        if args.fused_optimizer:
            if not hasattr(model, "fused_optimizer"):
                raise ValueError(f"--fused-optimizer: {args.algo} has no fused_optimizer switch (sb3_cherry algorithms only)")
            model.fused_optimizer = True  # opt-in, not bit-exact: torch's fused Adam (see docs, Performance)
        timesteps = args.timesteps or zoo_timesteps
        row = dict(env=args.env, algo=args.algo, variant=args.variant, seed=seed)
        callback = EvalAppendCallback(
            EnvSpec.of(args.env, entry),
            row,
            path,
            args.eval_freq or max(1, timesteps // 10),
            args.eval_episodes,
            seed=1000 + seed,
        )
        print(f"{args.algo}/{args.variant} on {args.env}, seed {seed}: {timesteps} steps (zoo: {zoo_timesteps})", flush=True)
        if args.checkpoint_dir is None:
            if finished(path, row, timesteps):  # a second command naming the same run (e.g. two run_*.sh scripts)
                print(f"{args.variant} seed {seed}: already in {path}, skipped (delete its rows to rerun it)", flush=True)
                continue
            drop_rows_after(path, row, -1)  # the rows of an earlier attempt that did not finish
            model.learn(timesteps, callback=callback)
        else:
            run_chunk(model, callback, timesteps, args, row)
        model.get_env().close()
    print(f"appended to {path}")


def finished(path: pathlib.Path, row: dict[str, Any], timesteps: int) -> bool:
    """
    Whether the CSV already holds the final evaluation of this run.

    :param path: the CSV file
    :param row: the run's constant columns (env, algo, variant, seed)
    :param timesteps: the run's budget
    :return: a row of this run at ``timesteps`` or more exists
    """
    if not path.exists():
        return False
    with open(path, newline="") as file:
        for line in csv.DictReader(file):
            same = all(str(line[key]) == str(value) for key, value in row.items())
            if same and int(line["timesteps"]) >= timesteps:
                return True
    return False


def drop_rows_after(path: pathlib.Path, row: dict[str, Any], timesteps: int) -> None:
    """
    Remove the CSV rows of one run measured after ``timesteps`` (the file is rewritten atomically).

    :param path: the CSV file
    :param row: the run's constant columns (env, algo, variant, seed)
    :param timesteps: keep this run's rows up to this step count
    """
    if not path.exists():
        return
    with open(path, newline="") as file:
        lines = list(csv.DictReader(file))
    kept = [
        line
        for line in lines
        if not (all(str(line[key]) == str(value) for key, value in row.items()) and int(line["timesteps"]) > timesteps)
    ]
    if len(kept) == len(lines):
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(kept)
    tmp.replace(path)


def run_chunk(model: BaseAlgorithm, callback: EvalAppendCallback, timesteps: int, args: argparse.Namespace, row: dict) -> None:
    """
    Train one chunk of a checkpointed run: skip a finished run, continue an unfinished one from its checkpoint, stop
    after ``--chunk-steps`` steps with a checkpoint, delete the checkpoint when the run is complete (with
    ``--keep-final``, keep it: the final model with its VecNormalize statistics, for ``sb3-cherry evaluate --model``).

    :param model: a freshly built model (its env is the one the run uses)
    :param callback: the evaluation callback of the run
    :param timesteps: the run's budget
    :param args: the command line (``checkpoint_dir``, ``chunk_steps``)
    :param row: the run's constant columns
    """
    import shutil

    from sb3_cherry.common.checkpoint import RunCheckpointCallback, continue_run, has_run_checkpoint, load_run_checkpoint

    folder = pathlib.Path(args.checkpoint_dir) / "_".join(str(v).replace("/", "_") for v in row.values())
    if finished(callback.path, row, timesteps) and (args.keep_final or not has_run_checkpoint(folder)):
        print(f"{folder.name}: finished, skipped", flush=True)
        return
    chunk = args.chunk_steps or timesteps
    saver = RunCheckpointCallback(folder, save_freq=chunk, stop_after=chunk, extra=callback.state)
    callback.chunk_stopped = lambda: saver.stop
    if has_run_checkpoint(folder):
        model, state = load_run_checkpoint(type(model), folder, model.get_env(), device="cpu")
        callback.resumed = state.extra
        # rows this run wrote after its checkpoint (a process stopped mid-chunk) are measured again: drop them
        drop_rows_after(callback.path, row, state.num_timesteps)
        print(f"{folder.name}: resuming at {state.num_timesteps} of {state.total_timesteps} steps", flush=True)
        # (envs that are not captured exactly start new episodes, seeded anew per chunk by load_run_checkpoint with
        # the model's seed, the run's, plus the steps done: a chunk does not replay the first chunk's tracks)
        continue_run(model, state, callback=[callback, saver])
    else:
        model.learn(timesteps, callback=[callback, saver])
    if model.num_timesteps >= timesteps and not args.keep_final:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """
    Command line entry point.

    :param argv: arguments (default: ``sys.argv[1:]``)
    """
    import sb3_cherry  # noqa: F401  (registers the sb3_cherry/ envs)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True, help="environment id (a key of the zoo config)")
    parser.add_argument("--algo", required=True, choices=["ppo_rollback", "cherry_a2c", "recurrent_ppo_rollback", "ppo"])
    parser.add_argument(
        "--hyperparams-from", default=None, help="zoo config of another algorithm (e.g. recurrent_ppo_rollback)"
    )
    parser.add_argument(
        "--config", default=None, help="YAML file of the entries (default: zoo_configs/<algo>.yml); e.g. the study's"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--timesteps", type=int, default=None, help="training steps per seed (default: the zoo entry's)")
    parser.add_argument("--eval-freq", type=int, default=None, help="evaluation period in steps (default: timesteps/10)")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--variant", default="zoo", help="name of the row (e.g. the --set overrides)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hyperparameter")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a shared machine)")
    parser.add_argument(
        "--fused-optimizer",
        action="store_true",
        help="train with the opt-in fused Adam (model.fused_optimizer = True; not bit-identical to SB3's Adam)",
    )
    parser.add_argument(
        "--vec-env",
        choices=["dummy", "envpool"],
        default="dummy",
        help="training envs: gymnasium's in a DummyVecEnv, or EnvPool's port (evaluation: gymnasium's env either way)",
    )
    parser.add_argument("--envpool-threads", type=int, default=None, help="EnvPool threads (default: EnvPool's)")
    parser.add_argument("--results", default=str(RESULTS), help="results folder")
    parser.add_argument("--checkpoint-dir", default=None, help="run checkpoints: resumable runs in chunks")
    parser.add_argument("--chunk-steps", type=int, default=None, help="steps per process and checkpoint period")
    parser.add_argument(
        "--keep-final",
        action="store_true",
        help="keep the run checkpoint of a finished run (the final model, for sb3-cherry evaluate/video --model)",
    )
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
