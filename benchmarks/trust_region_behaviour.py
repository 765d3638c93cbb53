"""
The behaviour the Truly PPO paper reports (Wang et al., 2019, Figs. 3-5), measured over a training run under an
aggressive update (many epochs, high learning rate): the exact per-state KL ``KL(pi_old(.|s) || pi_new(.|s))`` and the
ratios ``pi_new / pi_old`` on each rollout after the update that trained on it, for clipped PPO, PPO-RB, TR-PPO,
TR-PPO-RB and Truly PPO. Both are computed here from the policy before and after each update (:class:`UpdateProbe`),
not read from the algorithms' logs.

    python -m benchmarks.trust_region_behaviour                       # Hopper-v5, 15 updates of 1024 steps each

Writes ``benchmarks/results/trust_region_behaviour.csv`` (one row per method and update) and
``benchmarks/results/trust_region_behaviour.png``.
"""

import argparse
import csv
import pathlib

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_cherry import PPORollback
from sb3_cherry.common.kl import per_state_kl

RESULTS = pathlib.Path(__file__).parent / "results"
COLUMNS = ["method", "update", "kl_mean", "kl_max", "ratio_excess_mean", "ratio_outside_fraction", "ratio_max"]


class UpdateProbe(BaseCallback):
    """
    After every update, the exact per-state ``KL(pi_old || pi_new)`` and the ratios ``pi_new / pi_old`` on the rollout
    the update trained on (``pi_old``: a copy of the weights taken when the rollout ended), computed from the two
    policies directly.

    Lists filled, one entry per update: ``kl_means``, ``kl_maxes``, ``ratio_excess`` (mean of
    ``max(0, |r - 1| - clip_range)``), ``ratio_outside`` (fraction of samples with ``|r - 1| > clip_range``),
    ``ratio_max``.
    """

    def __init__(self):
        super().__init__()
        self.pending: tuple | None = None
        self.kl_means: list[float] = []
        self.kl_maxes: list[float] = []
        self.ratio_excess: list[float] = []
        self.ratio_outside: list[float] = []
        self.ratio_max: list[float] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        old = type(self.model.policy)(**self.model.policy._get_constructor_parameters())
        old.load_state_dict(self.model.policy.state_dict())
        old.set_training_mode(False)
        obs = th.as_tensor(buffer.observations.reshape(-1, *buffer.obs_shape))
        actions = th.as_tensor(buffer.actions.reshape(len(obs), -1))
        self.pending = (old, obs, actions)

    def _on_rollout_start(self) -> None:
        if self.pending is not None:
            self.measure()

    def _on_training_end(self) -> None:
        if self.pending is not None:
            self.measure()

    def measure(self) -> None:
        """Compare the policy after the update with the copy taken before it."""
        assert self.pending is not None
        old, obs, actions = self.pending
        self.pending = None
        with th.no_grad():
            p, q = old.get_distribution(obs), self.model.policy.get_distribution(obs)
            old_log_prob = p.log_prob(actions)
            kl = per_state_kl(p, q)
            ratio = (q.log_prob(actions) - old_log_prob).exp()
        eps = self.model.clip_range(1.0)
        self.kl_means.append(kl.mean().item())
        self.kl_maxes.append(kl.max().item())
        self.ratio_excess.append(th.clamp((ratio - 1).abs() - eps, min=0).mean().item())
        self.ratio_outside.append(((ratio - 1).abs() > eps).float().mean().item())
        self.ratio_max.append(ratio.max().item())


# method -> PPORollback arguments (the paper's methods; delta / alpha as in the authors' code unless noted)
METHODS = {
    "PPO (clip 0.2)": dict(rollback_alpha=0.0),
    "PPO-RB (alpha 0.3)": dict(rollback_alpha=0.3),
    "TR-PPO (delta 0.01)": dict(trust_region="kl", kl_threshold=0.01, rollback_alpha=0.0),
    "TR-PPO-RB (delta 0.01, alpha 0.05)": dict(trust_region="kl", kl_threshold=0.01, rollback_alpha=0.05),
    "Truly PPO (delta 0.01, alpha 5)": dict(trust_region="kl", kl_threshold=0.01, rollback="kl", rollback_alpha=5.0),
}


def run(env_id: str, updates: int, n_steps: int, n_epochs: int, learning_rate: float, seed: int) -> list[dict]:
    """
    Train each method for ``updates`` updates and measure every update.

    :param env_id: environment
    :param updates: number of updates per method
    :param n_steps: rollout length (1 env)
    :param n_epochs: epochs per update
    :param learning_rate: constant learning rate
    :param seed: seed (the same for every method: identical first rollout)
    :return: one row per method and update
    """
    rows = []
    for method, kwargs in METHODS.items():
        probe = UpdateProbe()
        model = PPORollback(
            "MlpPolicy",
            make_vec_env(env_id, n_envs=1, seed=seed),
            n_steps=n_steps,
            batch_size=64,
            n_epochs=n_epochs,
            learning_rate=learning_rate,
            seed=seed,
            device="cpu",
            **kwargs,
        )
        model.learn(n_steps * updates, callback=probe)
        for i in range(len(probe.kl_means)):
            rows.append(
                dict(
                    method=method,
                    update=i + 1,
                    kl_mean=round(probe.kl_means[i], 6),
                    kl_max=round(probe.kl_maxes[i], 6),
                    ratio_excess_mean=round(probe.ratio_excess[i], 6),
                    ratio_outside_fraction=round(probe.ratio_outside[i], 6),
                    ratio_max=round(probe.ratio_max[i], 4),
                )
            )
        print(method, "mean KL over updates", round(float(np.mean(probe.kl_means)), 4), flush=True)
    return rows


def plot(rows: list[dict], path: pathlib.Path, title: str) -> None:
    """
    Mean and max per-state KL, and how far the ratios end outside the clip range, per update and method.

    :param rows: the rows of :func:`run`
    :param path: PNG file
    :param title: figure title
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        x = [r["update"] for r in mine]
        axes[0].plot(x, [r["kl_mean"] for r in mine], label=method)
        axes[1].plot(x, [r["kl_max"] for r in mine], label=method)
        axes[2].plot(x, [r["ratio_outside_fraction"] for r in mine], label=method)
    axes[0].axhline(0.01, color="k", ls=":", lw=1, label="delta = 0.01")
    axes[0].set_ylabel("mean per-state KL(pi_old || pi_new)")
    axes[1].set_ylabel("max per-state KL")
    axes[2].set_ylabel("fraction of samples with |r - 1| > 0.2")
    for ax in axes:
        ax.set_xlabel("update")
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--updates", type=int, default=15)
    parser.add_argument("--n-steps", type=int, default=1024)
    parser.add_argument("--n-epochs", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="trust_region_behaviour")
    args = parser.parse_args()
    th.set_num_threads(1)
    rows = run(args.env, args.updates, args.n_steps, args.n_epochs, args.learning_rate, args.seed)
    out = RESULTS / f"{args.out}.csv"
    with open(out, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    title = (
        f"{args.env}: aggressive update ({args.n_epochs} epochs of 64-sample minibatches, lr {args.learning_rate}, "
        f"{args.n_steps} steps per update), seed {args.seed}"
    )
    plot(rows, out.with_suffix(".png"), title)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
