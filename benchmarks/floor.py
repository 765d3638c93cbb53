"""
How fast can a PPO with SB3's arithmetic be on a case's env? An estimate of the least time of one rollout plus one
update (issue 19), measured next to SB3's PPO and sb3_cherry's PPORollback in one process.

The *floor* keeps only the work that a bit-exact PPO cannot skip, written as bare loops (torch operations from Python
on one thread, no module, distribution, buffer or VecEnv object), and is generous everywhere else:

- **sim**: the simulators alone (``env.unwrapped.step`` of each env, and ``reset`` at the end of an episode or at the
  time limit) driven by the actions of SB3's last rollout; no gymnasium wrapper, no VecEnv, no ``Monitor``;
- **normalize**: VecNormalize's arithmetic, when the entry normalises (observation and return statistics, the
  normalised observation and reward), on the batched arrays;
- **forward**: per step, the policy and value networks on the batch of observations in inference mode, the action
  draw and its log-probability, actions to NumPy and clipped, values and log-probabilities stored;
- **returns**: SB3's GAE (``RolloutBuffer.compute_returns_and_advantage``, a Python loop over the steps);
- **update**: per minibatch, the gather, the networks with gradients, log-probability and entropy, the clipped
  surrogate, value and entropy losses, ``backward``, ``clip_grad_norm_`` (``foreach``) and Adam's step on one flat
  tensor (:func:`sb3_cherry.common.flat_adam.flat_adam_steps`, the same arithmetic), nothing logged;
- **vec_env**: the case's whole VecEnv stack stepped on SB3's actions;
- **collect**: ``forward`` and a VecEnv stack interleaved, step by step, as a collection runs them (the networks on
  the VecEnv's observations, the VecEnv stepped with the drawn actions).

Timed alone in its own loop, each part finds its data in the caches; in a collection the simulator and the networks
evict each other's (on Hopper-v5 the same forward took ~100 us per step alone and ~160 us between env steps), so
``floor`` (the parts alone) and ``floor with the VecEnv`` (vec_env + forward + returns + update) are optimistic, and
``floor interleaved`` (collect + returns + update) is the closer estimate.

``SB3 / floor`` is then an estimate of the highest speed-up over SB3's PPO of any implementation that computes SB3's
arithmetic with torch from Python on the same simulator (the issue's "same math", bit for bit by default); a shipped
entry with other math (Beta, V-trace) does more work than the floor. Best-of-N process CPU time per part,
interleaved, torch on one thread.

    python -m benchmarks.floor --cases zoo_cartpole zoo_hopper zoo_bipedal_same_math --repeats 10 \
        --out benchmarks/results/floor.md
"""

import argparse
import copy
import math
import pathlib
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch as th
import torch.nn.functional as F
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

from benchmarks.throughput import Case, cases, make_env, side_env
from sb3_cherry.common.fast_forward import _sequential_plan
from sb3_cherry.common.flat_adam import flat_adam_steps
from sb3_cherry.common.speed import distribution_validation

PARTS = ("sim", "normalize", "forward", "returns", "update")
#: the bound with the benchmark's VecEnv kept (both sides of ``benchmarks.throughput`` step the same VecEnv stack)
SAME_VEC_ENV = ("vec_env", "forward", "returns", "update")
#: the same with the forward and the VecEnv interleaved per step (``collect``), as a real collection runs them
INTERLEAVED = ("collect", "returns", "update")


def _layers(sequential: nn.Sequential) -> list[Callable[[th.Tensor], th.Tensor]]:
    """
    An MlpExtractor branch's layers as bare functions (sb3_cherry's fast collection forward's, which reads the
    parameters at call time); an error for a layer it does not write out.
    """
    plan = _sequential_plan(sequential)
    if plan is None:
        raise ValueError(f"the floor writes out Linear / ReLU / Tanh networks only, not {sequential}")
    return plan


class Floor:
    """
    The bare loops of one case, on a copy of SB3's trained-for-one-rollout PPO (its networks, optimizer settings,
    hyperparameters) and on a second set of the case's envs.

    :param model: SB3's PPO after one ``learn`` of a rollout (its buffer holds the rollout, and its actions drive the
        simulators); the floor's update trains a copy of its networks and optimizer like ``model.train()`` would
        (``tests/test_benchmarks.py`` checks the resulting parameters against SB3's)
    :param case: the throughput case (env id, number of envs, VecNormalize arguments)
    """

    def __init__(self, model, case: Case) -> None:
        policy = model.policy_class(model.observation_space, model.action_space, model.lr_schedule, **model.policy_kwargs)
        policy.load_state_dict(model.policy.state_dict())
        self.pi_layers = _layers(policy.mlp_extractor.policy_net)
        self.vf_layers = _layers(policy.mlp_extractor.value_net)
        self.action_net, self.value_net = policy.action_net, policy.value_net
        self.log_std = getattr(policy, "log_std", None)  # Gaussian; Categorical otherwise
        self.params = [p for p in policy.parameters() if p.requires_grad]
        # SB3's optimizer (class, settings and state) on the copy, with torch's foreach implementation
        self.optimizer = policy.optimizer
        # (a deep copy: load_state_dict keeps the given state tensors, which Adam then updates in place)
        self.optimizer.load_state_dict(copy.deepcopy(model.policy.optimizer.state_dict()))
        for group in self.optimizer.param_groups:
            group["foreach"] = True
        self.n_steps, self.n_envs = model.n_steps, model.n_envs
        self.batch_size, self.n_epochs = model.batch_size, model.n_epochs
        self.clip, self.ent_coef, self.vf_coef = model.clip_range(1.0), float(model.ent_coef), model.vf_coef
        self.max_grad_norm, self.normalize_advantage = model.max_grad_norm, model.normalize_advantage
        self.last_values = th.zeros(self.n_envs)
        self.dones = np.zeros(self.n_envs, dtype=np.float32)
        box = isinstance(model.action_space, gym.spaces.Box)
        self.low, self.high = (model.action_space.low, model.action_space.high) if box else (None, None)
        # the simulators: a second set of the case's envs, unwrapped, with their time limits
        venv = make_env(case)
        self.normalizer = venv if isinstance(venv, VecNormalize) else None
        envs = (venv.venv if isinstance(venv, VecNormalize) else venv).envs
        self.sims = [env.unwrapped for env in envs]
        self.limits = [env.spec.max_episode_steps or 10**9 for env in envs]
        for i, sim in enumerate(self.sims):
            sim.reset(seed=i)
        self.elapsed = [0] * len(self.sims)
        self.venv = make_env(case)  # a third set: the whole VecEnv stack, as the benchmark's models step it
        self.venv.reset()
        self.collect_venv = make_env(case)  # a fourth, stepped with the floor's own actions (``collect``)
        self.venv_obs = self.collect_venv.reset()
        # SB3's last rollout, as its train() left the buffer (the sample arrays flattened env-major by get())
        rollout = model.rollout_buffer
        assert rollout.generator_ready, "expects the buffer after train()"
        per_step = {
            name: getattr(rollout, name).reshape(self.n_envs, self.n_steps, -1).swapaxes(0, 1)
            for name in ("observations", "actions")
        }
        actions = per_step["actions"]
        if isinstance(model.action_space, gym.spaces.Box):
            actions = np.clip(actions, model.action_space.low, model.action_space.high)
        else:
            actions = actions.astype(np.int64).reshape(self.n_steps, self.n_envs)
        self.actions = actions
        self.obs_batches = [np.ascontiguousarray(per_step["observations"][t]) for t in range(self.n_steps)]
        self.obs_t = th.as_tensor(rollout.observations.copy()).float()
        self.act_t = th.as_tensor(rollout.actions.copy())
        self.old_log_prob = th.as_tensor(rollout.log_probs.copy()).flatten()
        self.advantages = th.as_tensor(rollout.advantages.copy()).flatten()
        self.returns = th.as_tensor(rollout.returns.copy()).flatten()
        self.n_samples = self.n_steps * self.n_envs
        # SB3's GAE on the rollout's rewards and values
        self.buffer = RolloutBuffer(
            self.n_steps, model.observation_space, model.action_space, "cpu", model.gae_lambda, model.gamma, self.n_envs
        )
        self.buffer.rewards = rollout.rewards.copy()
        self.buffer.episode_starts = rollout.episode_starts.copy()
        self.buffer.values = rollout.values.reshape(self.n_envs, self.n_steps).T.copy()
        self.rewards = model.rollout_buffer.rewards.copy()
        self.loss: Callable[..., th.Tensor] = self.minibatch_loss  # (compile_ab compiles it)

    def sim(self) -> None:
        """The simulators on the recorded actions, with resets at episode ends and time limits."""
        for t in range(self.n_steps):
            for i, sim in enumerate(self.sims):
                _, _, terminated, _, _ = sim.step(self.actions[t, i])
                self.elapsed[i] += 1
                if terminated or self.elapsed[i] >= self.limits[i]:
                    sim.reset()
                    self.elapsed[i] = 0

    def vec_env(self) -> None:
        """The case's whole VecEnv stack (DummyVecEnv, Monitor, gymnasium's wrappers, VecNormalize) on the actions."""
        for t in range(self.n_steps):
            self.venv.step(self.actions[t])

    def normalize(self) -> None:
        """VecNormalize's statistics and normalised observation / reward, per step on the batch."""
        norm = self.normalizer
        if norm is None:
            return
        for t in range(self.n_steps):
            obs, reward = self.obs_batches[t], self.rewards[t]
            norm.returns = norm.returns * norm.gamma + reward
            norm.obs_rms.update(obs)
            norm.ret_rms.update(norm.returns)
            np.clip((obs - norm.obs_rms.mean) / np.sqrt(norm.obs_rms.var + norm.epsilon), -norm.clip_obs, norm.clip_obs)
            np.clip(reward / np.sqrt(norm.ret_rms.var + norm.epsilon), -norm.clip_reward, norm.clip_reward)
            norm.returns[self.dones.astype(bool)] = 0

    def _nets(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Action-net output (mean or logits) and values, SB3's operations without modules."""
        pi = vf = obs
        for layer in self.pi_layers:
            pi = layer(pi)
        for layer in self.vf_layers:
            vf = layer(vf)
        out = F.linear(pi, self.action_net.weight, self.action_net.bias)
        return out, F.linear(vf, self.value_net.weight, self.value_net.bias).flatten()

    def _draw(self, obs: np.ndarray) -> tuple[np.ndarray, th.Tensor, th.Tensor]:
        """One step's networks, action draw and log-probability (inference mode): the action as the env takes it."""
        out, value = self._nets(th.as_tensor(obs).float())
        if self.log_std is not None:
            std = self.log_std.exp().expand_as(out)
            action = th.normal(out, std)
            log_prob = (-((action - out) ** 2) / (2 * std**2) - std.log() - math.log(math.sqrt(2 * math.pi))).sum(1)
            return np.clip(action.numpy(), self.low, self.high), value, log_prob
        logits = out - out.logsumexp(-1, keepdim=True)
        action = th.multinomial(logits.exp(), 1).squeeze(1)
        log_prob = logits.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        return action.numpy(), value, log_prob

    def forward(self) -> None:
        """Per step: networks, action draw, log-probability, to NumPy (and clipped), stored."""
        values = np.zeros((self.n_steps, self.n_envs), dtype=np.float32)
        log_probs = np.zeros((self.n_steps, self.n_envs), dtype=np.float32)
        with th.inference_mode():
            for t in range(self.n_steps):
                _, value, log_prob = self._draw(self.obs_batches[t])
                values[t] = value.numpy()
                log_probs[t] = log_prob.numpy()
            self.last_values = self._nets(th.as_tensor(self.obs_batches[-1]).float())[1]

    def collect(self) -> None:
        """
        ``forward`` and ``vec_env`` interleaved, as a collection runs them: per step the networks on the VecEnv's
        current observations, then the VecEnv stepped with the drawn actions. Each part then runs with the other's
        data in the caches, which the two parts timed in their own tight loops do not see.
        """
        values = np.zeros((self.n_steps, self.n_envs), dtype=np.float32)
        log_probs = np.zeros((self.n_steps, self.n_envs), dtype=np.float32)
        obs = self.venv_obs
        with th.inference_mode():
            for t in range(self.n_steps):
                action, value, log_prob = self._draw(obs)
                values[t] = value.numpy()
                log_probs[t] = log_prob.numpy()
                obs = self.collect_venv.step(action)[0]
            self.last_values = self._nets(th.as_tensor(obs).float())[1]
        self.venv_obs = obs

    def returns_(self) -> None:
        """SB3's GAE on the rollout."""
        self.buffer.compute_returns_and_advantage(last_values=self.last_values, dones=self.dones)

    def minibatch_loss(
        self, obs: th.Tensor, act: th.Tensor, adv: th.Tensor, old_log_prob: th.Tensor, returns: th.Tensor
    ) -> th.Tensor:
        """SB3's PPO loss on one minibatch (networks, log-probability, entropy, clipped surrogate, value loss)."""
        out, values = self._nets(obs)
        if self.log_std is not None:
            log_std = self.log_std.expand_as(out)
            var = (2 * log_std).exp()
            log_prob = (-((act - out) ** 2) / (2 * var) - log_std - math.log(math.sqrt(2 * math.pi))).sum(1)
            entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(1)
        else:
            logits = out - out.logsumexp(-1, keepdim=True)
            log_prob = logits.gather(-1, act.long().view(-1, 1)).squeeze(-1)
            entropy = -(logits.exp() * logits).sum(-1)
        if self.normalize_advantage and len(adv) > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        ratio = th.exp(log_prob - old_log_prob)
        policy_loss = -th.min(adv * ratio, adv * th.clamp(ratio, 1 - self.clip, 1 + self.clip)).mean()
        value_loss = F.mse_loss(returns, values)
        return policy_loss + self.ent_coef * -th.mean(entropy) + self.vf_coef * value_loss

    def update(self) -> None:
        """``n_epochs`` passes of minibatches: loss, backward, clip, Adam (one flat step per minibatch)."""
        with flat_adam_steps(self.optimizer) as step:  # Adam on one flat tensor (as sb3_cherry)
            for _ in range(self.n_epochs):
                permutation = th.as_tensor(np.random.permutation(self.n_samples))  # as SB3's RolloutBuffer.get
                for start in range(0, self.n_samples, self.batch_size):
                    idx = permutation[start : start + self.batch_size]
                    loss = self.loss(
                        self.obs_t.index_select(0, idx),
                        self.act_t.index_select(0, idx),
                        self.advantages.index_select(0, idx),
                        self.old_log_prob.index_select(0, idx),
                        self.returns.index_select(0, idx),
                    )
                    self.optimizer.zero_grad()
                    loss.backward()
                    th.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm, foreach=True)
                    step()


def _collect(model, callback: CallbackList) -> Callable[[], None]:
    """One ``collect_rollouts`` of ``model`` into its own buffer."""
    return lambda: model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)


def measure(case: Case, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` CPU seconds of each part, and of SB3's and sb3_cherry's two phases, interleaved."""
    th.set_num_threads(1)
    models = {"sb3": case.baseline(side_env(case, "sb3")), "ours": case.ours(side_env(case, "ours"))}
    for model in models.values():
        model.learn(model.n_steps * model.n_envs)
    floor = Floor(models["sb3"], case)
    parts: dict[str, Callable[[], None]] = {
        "sim": floor.sim,
        "vec_env": floor.vec_env,
        "normalize": floor.normalize,
        "forward": floor.forward,
        "collect": floor.collect,
        "returns": floor.returns_,
        "update": floor.update,
    }
    best: dict[str, float] = {}

    def clock(key: str, fn: Callable[[], None]) -> None:
        start = time.process_time()
        fn()
        best[key] = min(best.get(key, math.inf), time.process_time() - start)

    for _ in range(repeats):
        for side, model in models.items():
            callback = CallbackList([])
            callback.init_callback(model)
            with distribution_validation(side == "sb3"):  # as their learn() runs
                clock(f"{side}_collect", _collect(model, callback))
                clock(f"{side}_train", model.train)
        for name, fn in parts.items():
            clock(name, fn)
    return best


def report(name: str, best: dict[str, float]) -> str:
    """A markdown row: milliseconds per rollout + update, and the bound."""
    sb3 = best["sb3_collect"] + best["sb3_train"]
    ours = best["ours_collect"] + best["ours_train"]
    floor = sum(best[p] for p in PARTS)
    same_vec_env = sum(best[p] for p in SAME_VEC_ENV)
    interleaved = sum(best[p] for p in INTERLEAVED)
    cells = [f"{best[p] * 1e3:.1f}" for p in (*PARTS, "vec_env", "collect")]
    phases = [f"{best[k] * 1e3:.1f}" for k in ("sb3_collect", "sb3_train", "ours_collect", "ours_train")]
    return (
        f"| {name} | {' / '.join(phases[:2])} | {' / '.join(phases[2:])} | {' | '.join(cells)} | {floor * 1e3:.1f} | "
        f"{same_vec_env * 1e3:.1f} | {interleaved * 1e3:.1f} | {sb3 / ours:.3f} | **{sb3 / floor:.3f}** | "
        f"**{sb3 / same_vec_env:.3f}** | **{sb3 / interleaved:.3f}** |"
    )


HEADER = (
    "| case | SB3 PPO ms (collect / train) | sb3_cherry ms (collect / train) | "
    + " | ".join(f"{p} ms" for p in (*PARTS, "vec_env", "collect"))
    + " | floor ms | floor with the VecEnv ms | floor interleaved ms | SB3 / sb3_cherry | SB3 / floor | "
    + "SB3 / floor with the VecEnv | SB3 / floor interleaved |\n|"
    + "---|" * (len(PARTS) + 12)
)


def table_main(
    description: str,
    header: str,
    measure_case: Callable[[Case, int], dict[str, float]],
    report_case: Callable[[str, dict[str, float]], str],
    default_cases: list[str],
) -> None:
    """
    Command line of the markdown-table benchmarks (this one, ``compile_ab``): ``--cases``, ``--repeats`` and
    ``--out``; prints the header and one row per case, ``report_case(name, measure_case(case, repeats))``, and writes
    the table atomically to ``--out``.

    :param description: the script's docstring (``--help``)
    :param header: the table's header and separator rows
    :param measure_case: the measurements of a case
    :param report_case: its markdown row
    :param default_cases: the cases without ``--cases``
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=default_cases)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args()
    by_name = {c.name: c for c in cases()}
    rows = [header]
    print(header, flush=True)
    for name in args.cases:
        rows.append(report_case(name, measure_case(by_name[name], args.repeats)))
        print(rows[-1], flush=True)
    if args.out is not None:
        text = "\n".join(rows) + "\n"
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)


def main() -> None:
    """Measure the cases and print (and optionally write) the markdown table."""
    table_main(__doc__, HEADER, measure, report, ["zoo_cartpole", "zoo_hopper", "zoo_bipedal_same_math"])


if __name__ == "__main__":
    main()
