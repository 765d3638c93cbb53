"""
Diagnosis of the BipedalWalker-v3 zoo entry (issue 20: why does seed 0 stall at ~160?).

Trains the ``ppo_rollback`` zoo entry of BipedalWalker-v3 (``--set`` overrides as in :mod:`benchmarks.learning`) and
records, per window of ``--log-every`` rollouts, into ``benchmarks/results/bipedal_diagnosis/diag_<variant>_s<seed>.csv``:

- the Beta policy on the rollout's states: mean concentration ``alpha + beta`` per action dimension (``conc_d<i>``),
  mean and std over states of the Beta's mode (``mode_mean_d<i>``, ``mode_std_d<i>``), the fraction of states whose
  mode is within 5% of a bound (``mode_sat_d<i>``), the mean entropy (``entropy``, nats, summed over dimensions);
- the std over the rollout of the actions taken (``act_std_d<i>``);
- SB3's logger values of the update (``model.logger.name_to_value``: ``train/clip_fraction``,
  ``train/rollback_fraction``, ``train/approx_kl``, ``train/explained_variance``, ``train/value_loss``,
  ``train/entropy_loss``), averaged over the window's updates;
- gradient norms of the loss terms on the rollout (:func:`gradient_norms`: ``grad_pi``, ``grad_vf``, ``grad_ent``)
  and the mean scale ``grad_scale`` that ``max_grad_norm``'s joint clipping applies to the step;
- the rollout's advantages' std (``adv_std``, in normalised-reward units: the policy gradient's scale, advantages
  are not normalised in the zoo entry) and mean value target (``return_target_mean``);
- ``VecNormalize``'s reward scale (``ret_rms_var``; rewards are divided by ``sqrt(ret_rms_var + eps)``) and its
  observation statistics (``obs_var_min``/``obs_var_max``/``obs_var_mean`` over dimensions);
- the training episodes that ended in the window (raw returns, from the ``Monitor``): count, mean return and length,
  fraction truncated by the 1600-step time limit (``ep_timeout``), fraction terminated before it (``ep_terminated``:
  a fall or the end of the course) and fraction ended by a fall (``ep_fall``: the env's last reward is its -100
  fall penalty). (The zoo runs' CSVs were written before ``ep_fall`` was told apart from ``ep_terminated``: their
  ``ep_terminated`` column counts both.)

Deterministic evaluations (10 episodes, as in :mod:`benchmarks.learning`) are appended to
``benchmarks/results/bipedal_diagnosis/BipedalWalker-v3.csv`` every ``--eval-freq`` steps: variant ``<variant>``
with SB3's deterministic action (the Beta's mode), and variant ``<variant>@mean`` with the Beta's mean
``alpha / (alpha + beta)`` (the deterministic action of the cherry_rl reference, whose comment says "mean works better
than median in practice"). With ``--save-models``, the model and VecNormalize statistics are saved at every evaluation
(``models/<variant>_s<seed>_<steps>.zip`` / ``.pkl``, not committed). ``--ent-decay-steps N`` decays ``ent_coef``
linearly from its value to 0 at step ``N`` (:class:`EntropyDecayCallback`). ``--plot`` draws the given runs side by side.

    python -m benchmarks.bipedal_diagnosis --seed 0 --variant zoo --set ent_coef=0 --timesteps 1000000
    python -m benchmarks.bipedal_diagnosis --seed 0 --variant ent0.003 --set ent_coef=0.003 --timesteps 1000000
    python -m benchmarks.bipedal_diagnosis --plot zoo_s0 zoo_s1 ent0.003_s0
"""

import argparse
import csv
import pathlib
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from benchmarks.learning import EvalAppendCallback, build_model, csv_path
from sb3_cherry.common.schedules import coefficient_schedule, scheduled_value

ENV_ID = "BipedalWalker-v3"
TIME_LIMIT = 1600
RESULTS = pathlib.Path(__file__).parent / "results" / "bipedal_diagnosis"
TRAIN_KEYS = (
    "clip_fraction",
    "rollback_fraction",
    "approx_kl",
    "explained_variance",
    "value_loss",
    "entropy_loss",
    "policy_gradient_loss",
)


class BetaMeanPredictor:
    """
    Stand-in for a model in :func:`~stable_baselines3.common.evaluation.evaluate_policy` that acts with the mean of
    the model's Beta policy instead of its mode.

    :param model: a model whose policy's action distribution is sb3_cherry's ``BetaDistribution``
    """

    def __init__(self, model: Any):
        self.model = model

    def predict(
        self, observation: np.ndarray, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        """
        The Beta's mean mapped onto the action bounds.

        :param observation: a batch of (normalised) observations
        :param state: unused (feed-forward policy)
        :param episode_start: unused
        :param deterministic: unused (always the mean)
        :return: actions and no state
        """
        policy = self.model.policy
        obs, _ = policy.obs_to_tensor(observation)
        with th.no_grad():
            dist = policy.get_distribution(obs)
            actions = dist._to_bounds(dist.distribution.mean)
        return actions.cpu().numpy(), None

    def get_vec_normalize_env(self) -> Any:
        """
        :return: the model's training ``VecNormalize``
        """
        return self.model.get_vec_normalize_env()


class BetaMeanEvalCallback(EvalAppendCallback):
    """
    :class:`~benchmarks.learning.EvalAppendCallback` acting with the Beta's mean (:class:`BetaMeanPredictor`).

    :param args: as :class:`~benchmarks.learning.EvalAppendCallback`
    :param save_dir: if given, save the model and its VecNormalize statistics there at every evaluation
    :param name: file name prefix of the saved models
    """

    def __init__(self, *args: Any, save_dir: pathlib.Path | None = None, name: str = "model"):
        super().__init__(*args)
        self.save_dir, self.name = save_dir, name

    def evaluate(self) -> None:
        """Evaluate with the Beta's mean (and save the model)."""
        model = self.model
        self.model = BetaMeanPredictor(model)  # type: ignore[assignment]
        try:
            super().evaluate()
        finally:
            self.model = model
        if self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            model.save(self.save_dir / f"{self.name}_{self.num_timesteps}.zip")
            model.get_vec_normalize_env().save(str(self.save_dir / f"{self.name}_{self.num_timesteps}.pkl"))


def beta_statistics(model: Any, observations: th.Tensor) -> dict[str, float]:
    """
    Statistics of the model's Beta policy on a batch of (normalised) observations.

    :param model: a model whose policy's action distribution is sb3_cherry's ``BetaDistribution``
    :param observations: ``(batch, obs_dim)`` observations as the policy sees them
    :return: ``conc_d<i>``, ``mode_mean_d<i>``, ``mode_std_d<i>``, ``mode_sat_d<i>`` per dimension and ``entropy``
    """
    with th.no_grad():
        dist = model.policy.get_distribution(observations)
        alpha, beta = dist.distribution.concentration1, dist.distribution.concentration0
        mode = dist.mode()  # in the action bounds
        low, high = dist.low, dist.high
        unit = (mode - low) / (high - low)
        entropy = dist.entropy()
    stats: dict[str, float] = {"entropy": float(entropy.mean())}
    for i in range(alpha.shape[1]):
        stats[f"conc_d{i}"] = float((alpha[:, i] + beta[:, i]).mean())
        stats[f"mode_mean_d{i}"] = float(mode[:, i].mean())
        stats[f"mode_std_d{i}"] = float(mode[:, i].std())
        stats[f"mode_sat_d{i}"] = float(((unit[:, i] < 0.05) | (unit[:, i] > 0.95)).float().mean())
    return stats


def gradient_norms(model: Any, observations: th.Tensor, actions: th.Tensor, advantages: th.Tensor, returns: th.Tensor) -> dict:
    """
    Gradient norms of the update's loss terms at the rollout's first gradient step (ratio 1), averaged over the
    rollout's minibatches of ``batch_size`` (taken in order: no random number is drawn). SB3 clips the norm of the
    joint gradient of policy and value losses (``max_grad_norm``), so a large value gradient shrinks the policy's step.

    :param model: the PPO model
    :param observations: ``(n, obs_dim)`` observations of the rollout
    :param actions: ``(n, action_dim)`` actions taken
    :param advantages: ``(n,)`` advantages (as the update uses them: not normalised in the zoo entry)
    :param returns: ``(n,)`` value targets
    :return: ``grad_pi`` (policy-gradient term), ``grad_vf`` (``vf_coef`` times the value loss), ``grad_ent``
        (the mean entropy, per unit ``ent_coef``), ``grad_scale`` (mean factor ``min(1, max_grad_norm / total)`` that
        the clipping applies to the step of the zoo entry's loss)
    """
    policy = model.policy
    params = [p for p in policy.parameters() if p.requires_grad]
    if model.normalize_advantage:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    norms: dict[str, list[float]] = {"grad_pi": [], "grad_vf": [], "grad_ent": [], "grad_scale": []}

    def norm(loss: th.Tensor) -> th.Tensor:
        grads = th.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return th.sqrt(sum((g**2).sum() for g in grads if g is not None))

    for start in range(0, len(observations), model.batch_size):
        batch = slice(start, start + model.batch_size)
        values, log_prob, entropy = policy.evaluate_actions(observations[batch], actions[batch])
        ratio = th.exp(log_prob - log_prob.detach())
        pg_loss = -(advantages[batch] * ratio).mean()
        vf_loss = model.vf_coef * ((returns[batch] - values.flatten()) ** 2).mean()
        ent_loss = -entropy.mean()
        ent_coef = scheduled_value(coefficient_schedule(model.ent_coef), model._current_progress_remaining)
        total = norm(pg_loss + vf_loss + ent_coef * ent_loss)
        norms["grad_pi"].append(float(norm(pg_loss)))
        norms["grad_vf"].append(float(norm(vf_loss)))
        norms["grad_ent"].append(float(norm(ent_loss)))
        norms["grad_scale"].append(min(1.0, model.max_grad_norm / float(total)))
    return {key: float(np.mean(values)) for key, values in norms.items()}


class EntropyDecayCallback(BaseCallback):
    """
    Decay the entropy coefficient linearly from its initial value to 0 at ``decay_steps`` environment steps (set
    before each update; SB3's PPO takes ``ent_coef`` as a constant).

    :param decay_steps: step count at which the coefficient reaches 0
    """

    def __init__(self, decay_steps: int):
        super().__init__()
        self.decay_steps = decay_steps
        self.initial = 0.0

    def _on_training_start(self) -> None:
        if isinstance(self.model.ent_coef, bool) or not isinstance(self.model.ent_coef, (int, float)):
            raise ValueError(
                f"--ent-decay-steps decays a constant ent_coef, the model has {self.model.ent_coef!r}: pass "
                "--set ent_coef=<value> (or give the schedule to the model itself, e.g. --set ent_coef=lin_0.005)."
            )
        self.initial = float(self.model.ent_coef)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.model.ent_coef = self.initial * max(0.0, 1.0 - self.num_timesteps / self.decay_steps)
        self.logger.record("train/ent_coef", self.model.ent_coef)


class DiagnosisCallback(BaseCallback):
    """
    Record the policy, update and normalisation statistics listed in the module docstring, one CSV row per window
    of ``log_every`` rollouts.

    :param path: the CSV file (overwritten)
    :param log_every: rollouts per row
    """

    def __init__(self, path: pathlib.Path, log_every: int = 4):
        super().__init__()
        self.path, self.log_every = path, log_every
        self.rollouts = 0
        self.train_values: list[dict[str, float]] = []
        self.episodes: list[tuple[float, int, bool, bool]] = []  # (return, length, truncated, fell)
        self.writer: Any = None
        self.file: Any = None

    def _on_training_start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "w", newline="")

    def _on_step(self) -> bool:
        norm = self.model.get_vec_normalize_env()
        # the env's own last reward: BipedalWalker sets it to exactly -100 when the walker falls
        last_rewards = norm.get_original_reward() if norm is not None else self.locals["rewards"]
        for info, last_reward in zip(self.locals["infos"], last_rewards, strict=True):
            episode = info.get("episode")
            if episode is not None:
                truncated = bool(info.get("TimeLimit.truncated", False))
                self.episodes.append((float(episode["r"]), int(episode["l"]), truncated, bool(last_reward <= -100.0)))
        return True

    def _on_rollout_end(self) -> None:
        # SB3 records the update's values after dumping the logs, so they are still in name_to_value here (the dump
        # of the next iteration comes after this rollout); the first rollout has no update before it.
        values = self.model.logger.name_to_value
        if "train/clip_fraction" in values:
            self.train_values.append({key: float(values[f"train/{key}"]) for key in TRAIN_KEYS})
        self.rollouts += 1
        if self.rollouts % self.log_every == 0:
            self.write_row()

    def write_row(self) -> None:
        """Append the row of the current window and reset the window's accumulators."""
        buffer = self.model.rollout_buffer
        observations = th.as_tensor(buffer.observations.reshape(-1, buffer.observations.shape[-1]), dtype=th.float32)
        actions = buffer.actions.reshape(-1, buffer.actions.shape[-1])
        row: dict[str, Any] = {"timesteps": self.num_timesteps}
        row.update(beta_statistics(self.model, observations))
        for i in range(actions.shape[1]):
            row[f"act_std_d{i}"] = float(actions[:, i].std())
        row.update(
            gradient_norms(
                self.model,
                observations,
                th.as_tensor(actions, dtype=th.float32),
                th.as_tensor(buffer.advantages.reshape(-1), dtype=th.float32),
                th.as_tensor(buffer.returns.reshape(-1), dtype=th.float32),
            )
        )
        row["adv_std"] = float(buffer.advantages.std())
        row["return_target_mean"] = float(buffer.returns.mean())
        for key in TRAIN_KEYS:
            row[key] = float(np.mean([v[key] for v in self.train_values])) if self.train_values else float("nan")
        norm = self.model.get_vec_normalize_env()
        if norm is not None:
            row["ret_rms_var"] = float(norm.ret_rms.var) if norm.norm_reward else float("nan")
            obs_var = np.asarray(norm.obs_rms.var)
            row.update(obs_var_min=float(obs_var.min()), obs_var_max=float(obs_var.max()), obs_var_mean=float(obs_var.mean()))
        returns = np.array([e[0] for e in self.episodes])
        lengths = np.array([e[1] for e in self.episodes])
        truncated = np.array([e[2] for e in self.episodes], dtype=bool)
        empty = len(self.episodes) == 0
        row["ep_count"] = len(self.episodes)
        row["ep_return"] = float("nan") if empty else float(returns.mean())
        row["ep_length"] = float("nan") if empty else float(lengths.mean())
        row["ep_timeout"] = float("nan") if empty else float((truncated | (lengths >= TIME_LIMIT)).mean())
        fell = np.array([e[3] for e in self.episodes], dtype=bool)
        terminated = ~truncated & (lengths < TIME_LIMIT)
        row["ep_terminated"] = float("nan") if empty else float(terminated.mean())
        row["ep_fall"] = float("nan") if empty else float(fell.mean())
        if self.writer is None:
            self.writer = csv.DictWriter(self.file, fieldnames=list(row))
            self.writer.writeheader()
        self.writer.writerow({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()})
        self.file.flush()
        self.train_values, self.episodes = [], []

    def _on_training_end(self) -> None:
        if self.file is not None:
            self.file.close()


def train(args: argparse.Namespace) -> Any:
    """
    Train one seed of the zoo entry with the diagnosis and evaluation callbacks.

    :param args: parsed command line
    :return: the trained model
    """
    th.set_num_threads(1)
    results = pathlib.Path(args.results)
    model, _ = build_model("ppo_rollback", ENV_ID, args.seed, args.set)
    row = dict(env=ENV_ID, algo="ppo_rollback", variant=args.variant, seed=args.seed)
    evaluation = EvalAppendCallback(ENV_ID, row, csv_path(ENV_ID, results), args.eval_freq, 10, seed=1000 + args.seed)
    mean_row = dict(row, variant=f"{args.variant}@mean")
    save_dir = results / "models" if args.save_models else None
    mean_evaluation = BetaMeanEvalCallback(
        ENV_ID,
        mean_row,
        csv_path(ENV_ID, results),
        args.eval_freq,
        10,
        1000 + args.seed,
        save_dir=save_dir,
        name=f"{args.variant}_s{args.seed}",
    )
    diagnosis = DiagnosisCallback(results / f"diag_{args.variant}_s{args.seed}.csv", args.log_every)
    if args.no_reward_norm:
        model.get_vec_normalize_env().norm_reward = False
    print(f"{args.variant} seed {args.seed}: {args.timesteps} steps, overrides {args.set}", flush=True)
    callbacks: list[BaseCallback] = [evaluation, mean_evaluation, diagnosis]
    if args.ent_decay_steps is not None:
        callbacks.insert(0, EntropyDecayCallback(args.ent_decay_steps))
    model.learn(args.timesteps, callback=callbacks)
    model.get_env().close()
    return model


def read_run(results: pathlib.Path, run: str) -> tuple[dict[str, np.ndarray], dict[str, list[tuple[int, float, float]]]]:
    """
    The diagnosis columns and the evaluations of one run.

    :param results: results folder
    :param run: ``<variant>_s<seed>``
    :return: the columns of ``diag_<run>.csv`` as arrays and the run's (timesteps, mean, std) evaluations with the
        Beta's mode (``"mode"``) and mean (``"mean"``)
    """
    with open(results / f"diag_{run}.csv", newline="") as file:
        lines = list(csv.DictReader(file))
    columns = {key: np.array([float(line[key]) for line in lines]) for key in lines[0]}
    variant, seed = run.rsplit("_s", 1)
    evaluations: dict[str, list[tuple[int, float, float]]] = {"mode": [], "mean": []}
    with open(csv_path(ENV_ID, results), newline="") as file:
        for line in csv.DictReader(file):
            kind = {variant: "mode", f"{variant}@mean": "mean"}.get(line["variant"])
            if kind is not None and line["seed"] == seed:
                evaluations[kind].append((int(line["timesteps"]), float(line["mean_return"]), float(line["std_return"])))
    return columns, evaluations


def smooth(values: np.ndarray, window: int = 10) -> np.ndarray:
    """
    Running mean ignoring NaNs (windows without episodes).

    :param values: the series
    :param window: window length in rows
    :return: the smoothed series (NaN where the whole window is NaN)
    """
    out = np.full_like(values, np.nan)
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        if np.isfinite(chunk).any():
            out[i] = np.nanmean(chunk)
    return out


SUMMARY_COLUMNS = (
    "entropy",
    "conc",
    "mode_sat",
    "act_std",
    "clip_fraction",
    "rollback_fraction",
    "approx_kl",
    "explained_variance",
    "adv_std",
    "grad_pi",
    "grad_vf",
    "grad_scale",
    "ret_rms_var",
    "ep_count",
    "ep_return",
    "ep_length",
    "ep_timeout",
    "ep_terminated",
    "ep_fall",
)


def summarize(results: pathlib.Path, run: str, bin_steps: int = 50_000) -> str:
    """
    A text table of one run's diagnosis, averaged over bins of ``bin_steps`` steps (episode columns weighted by the
    number of episodes; ``conc``, ``mode_sat`` and ``act_std`` list the action dimensions).

    :param results: results folder
    :param run: ``<variant>_s<seed>``
    :param bin_steps: bin width in environment steps
    :return: the table
    """
    columns, _ = read_run(results, run)
    dims = len([k for k in columns if k.startswith("conc_d")])
    bins = (columns["timesteps"] - 1) // bin_steps
    lines = [f"{run}: bins of {bin_steps} steps", "  ".join(["steps_to", *SUMMARY_COLUMNS])]
    for b in np.unique(bins):
        rows = bins == b
        count = columns["ep_count"][rows]
        cells = [str(int((b + 1) * bin_steps))]
        for key in SUMMARY_COLUMNS:
            if key in ("conc", "mode_sat", "act_std"):
                cells.append("/".join(f"{columns[f'{key}_d{i}'][rows].mean():.2f}" for i in range(dims)))
            elif key == "ep_count":
                cells.append(str(int(count.sum())))
            elif key.startswith("ep_") and key in columns:
                values = columns[key][rows]
                ok = count > 0
                cells.append(f"{np.average(values[ok], weights=count[ok]):.3g}" if ok.any() else "nan")
            elif key in columns:
                values = columns[key][rows]
                cells.append(f"{np.nanmean(values):.3g}" if np.isfinite(values).any() else "nan")
            else:  # a column added after the run
                cells.append("-")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def plot(results: pathlib.Path, runs: list[str], output: pathlib.Path, max_steps: int | None = None) -> None:
    """
    Draw the runs' diagnosis side by side.

    :param results: results folder
    :param runs: ``<variant>_s<seed>`` names
    :param output: the PNG file
    :param max_steps: draw only the first ``max_steps`` steps
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("evaluation return, Beta mode (10 det. episodes)", "mode"),
        ("training episode return", "ep_return"),
        ("training episode length", "ep_length"),
        ("fraction of episodes hitting 1600 steps", "ep_timeout"),
        ("Beta concentration alpha+beta, max over dims", "conc_max"),
        ("Beta concentration alpha+beta, min over dims", "conc_min"),
        ("policy entropy (nats, sum of 4 dims)", "entropy"),
        ("std of actions taken, mean over dims", "act_std"),
        ("fraction of modes within 5% of a bound", "mode_sat"),
        ("clip fraction", "clip_fraction"),
        ("rollback fraction (ratio outside, advantage pushing out)", "rollback_fraction"),
        ("approx KL", "approx_kl"),
        ("explained variance", "explained_variance"),
        ("VecNormalize ret_rms.var", "ret_rms_var"),
        ("evaluation return, Beta mean (10 det. episodes)", "mean"),
    ]
    fig, axes = plt.subplots(5, 3, figsize=(16, 20))
    for run in runs:
        columns, evaluations = read_run(results, run)
        dims = [k for k in columns if k.startswith("conc_d")]
        columns["conc_max"] = np.max([columns[k] for k in dims], axis=0)
        columns["conc_min"] = np.min([columns[k] for k in dims], axis=0)
        columns["act_std"] = np.mean([columns[f"act_std_d{i}"] for i in range(len(dims))], axis=0)
        columns["mode_sat"] = np.mean([columns[f"mode_sat_d{i}"] for i in range(len(dims))], axis=0)
        if max_steps is not None:
            columns = {key: values[columns["timesteps"] <= max_steps] for key, values in columns.items()}
        steps = columns["timesteps"]
        for ax, (title, key) in zip(axes.flat, panels, strict=True):
            if key in evaluations:
                points = [p for p in sorted(evaluations[key]) if max_steps is None or p[0] <= max_steps]
                if points:
                    t, mean, std = (np.array(x) for x in zip(*points, strict=True))
                    ax.errorbar(t, mean, yerr=std, marker="o", capsize=3, label=run)
            else:
                series = columns[key]
                ax.plot(steps, smooth(series) if key.startswith("ep_") else series, label=run, lw=1)
            ax.set_title(title, fontsize=10)
    for ax in axes.flat:
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    axes.flat[-1].legend(fontsize=8)
    axes.flat[4].set_yscale("log")
    fig.tight_layout()
    fig.savefig(output, dpi=80)
    print(f"wrote {output}")


def main(argv: list[str] | None = None) -> Any:
    """
    Command line entry point.

    :param argv: arguments (default: ``sys.argv[1:]``)
    :return: the trained model (None with ``--summary`` or ``--plot``)
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", default="zoo", help="name of the run (e.g. the --set overrides)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hyperparameter")
    parser.add_argument("--timesteps", type=int, default=1_000_000)
    parser.add_argument("--eval-freq", type=int, default=125_000)
    parser.add_argument("--no-reward-norm", action="store_true", help="VecNormalize without reward normalisation")
    parser.add_argument("--ent-decay-steps", type=int, default=None, help="decay ent_coef linearly to 0 at this step count")
    parser.add_argument("--save-models", action="store_true", help="save the model at every evaluation")
    parser.add_argument("--log-every", type=int, default=4, help="rollouts per diagnosis row")
    parser.add_argument("--results", default=str(RESULTS), help="results folder")
    parser.add_argument("--plot", nargs="+", default=None, metavar="RUN", help="plot these <variant>_s<seed> runs")
    parser.add_argument("--summary", nargs="+", default=None, metavar="RUN", help="print these runs' binned tables")
    parser.add_argument("--bin-steps", type=int, default=50_000, help="bin width of --summary")
    parser.add_argument("--max-steps", type=int, default=None, help="--plot: only the first steps")
    parser.add_argument("--output", default=None, help="PNG of --plot (default: <results>/diagnosis.png)")
    args = parser.parse_args(argv)
    if args.summary:
        for run in args.summary:
            print(summarize(pathlib.Path(args.results), run, args.bin_steps))
    elif args.plot:
        results = pathlib.Path(args.results)
        output = pathlib.Path(args.output) if args.output else results / "diagnosis.png"
        plot(results, args.plot, output, args.max_steps)
    else:
        return train(args)
    return None


if __name__ == "__main__":
    main()
