"""collection="async": the learner process computes exactly the lag-one, re-centred updates of a hand-written loop."""

import copy
import hashlib
import math
import multiprocessing as mp
import os
import signal
import struct
import time
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

import sb3_cherry  # noqa: F401  (registers the sb3_cherry/ envs)
from sb3_cherry import CherryA2C, PPORollback
from sb3_cherry.common.async_learner import SharedStateDict
from sb3_cherry.common.buffers import truncated_weights
from sb3_cherry.ppo_rollback.policies import MlpPolicy
from sb3_cherry.ppo_rollback.ppo_rollback import rollback_surrogate

N_ENVS, N_STEPS = 4, 32


def _make(algo, collection, seed=0, env_id="CartPole-v1", **kwargs):
    env = make_vec_env(env_id, n_envs=N_ENVS, seed=seed)
    if algo is PPORollback:
        kwargs = dict(dict(batch_size=64, n_epochs=3), **kwargs)
    return algo("MlpPolicy", env, n_steps=N_STEPS, seed=seed, device="cpu", collection=collection, **kwargs)


def _params(model) -> np.ndarray:
    return th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().numpy().copy()


def _env_major(x: np.ndarray) -> np.ndarray:
    """(n_steps, n_envs, ...) to (n_envs * n_steps, ...), the order of SB3's flattened buffer."""
    return x.swapaxes(0, 1).reshape(N_ENVS * N_STEPS, *x.shape[2:])


def _evaluate_all(model, obs: th.Tensor, actions: th.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Values and log-probs of every stored step under the current policy (eval mode, no gradient)."""
    model.policy.set_training_mode(False)
    with th.no_grad():
        values, log_probs, _ = model.policy.evaluate_actions(obs, actions)
    return values.flatten().numpy().astype(np.float64), log_probs.numpy().astype(np.float64)


def _vtrace_by_hand(model, rewards, dones, values, last_values, log_ratios):
    """
    V-trace (IMPALA eq. 1, lambda-weighted traces) in float64 on (n_envs * n_steps,) env-major arrays; returns the
    targets and the surrogate's advantages r_s + gamma v_{s+1} - V(x_s) (no rho: PPO's ratio is the weight).
    """
    gamma, lam = model.gamma, model.gae_lambda
    vs, adv = np.zeros_like(values), np.zeros_like(values)
    for e in range(N_ENVS):
        sl = slice(e * N_STEPS, (e + 1) * N_STEPS)
        r, d, v, ratio = rewards[sl], dones[sl], values[sl], np.exp(log_ratios[sl])
        rho, c = np.minimum(model.rho_bar, ratio), lam * np.minimum(model.c_bar, ratio)
        acc, next_v, next_vs = 0.0, last_values[e], last_values[e]
        for t in reversed(range(N_STEPS)):
            nonterminal = 1.0 - d[t]
            acc = rho[t] * (r[t] + gamma * next_v * nonterminal - v[t]) + gamma * c[t] * nonterminal * acc
            vs[sl][t] = v[t] + acc
            adv[sl][t] = r[t] + gamma * next_vs * nonterminal - v[t]
            next_v, next_vs = v[t], vs[sl][t]
    return vs, adv


def _decoupled_update(model) -> None:
    """
    One update on a rollout of the behaviour policy mu (the weights before the previous update), written out by hand
    from Hilton et al. (2021) eq. 3 and openai/ppo-ewma's compute_losses: the ratio, its trust region and the value
    clipping are centred on pi_prox (the weights the update starts from); each sample's surrogate is multiplied by
    the weight pi_prox / mu_adj after the minibatch's advantages are normalised, with compute_losses' cap of the whole
    ratio pi / mu at imp_samp_max = 100 written in its log form, logp_adj = max(log mu, log pi (no gradient) - log 100).
    PPORollback: the rollback surrogate (Wang et al. 2019); CherryA2C: -w A log pi with w = min(100, pi_prox / mu)
    (its single step starts from pi_prox). With V-trace + recompute_returns, targets and advantages are
    recomputed before every epoch with the ratios pi / mu. Minibatches follow SB3's ``np.random.permutation`` per
    epoch, so that the random stream matches the learner's.
    """
    buf, policy = model.rollout_buffer, model.policy
    obs = th.as_tensor(_env_major(buf.observations))
    actions = th.as_tensor(_env_major(buf.actions)).long().flatten()
    rewards = _env_major(buf.rewards).astype(np.float64)
    dones = _env_major(np.concatenate([buf.episode_starts[1:], model._last_episode_starts[None]]).astype(np.float64))
    mu = _env_major(buf.log_probs).astype(np.float64)
    advantages, returns = _env_major(buf.advantages), _env_major(buf.returns)
    prox_values, prox_log_probs = _evaluate_all(model, obs, actions)
    w = th.as_tensor(np.minimum(np.exp(prox_log_probs - mu), 100.0), dtype=th.float32)
    log_mu = th.as_tensor(mu, dtype=th.float32)
    old_log_prob, old_values = th.as_tensor(prox_log_probs, dtype=th.float32), th.as_tensor(prox_values, dtype=th.float32)
    last_obs = th.as_tensor(model._last_obs)

    def recompute():
        values, log_probs = _evaluate_all(model, obs, actions)
        with th.no_grad():
            last_values = policy.predict_values(last_obs).flatten().numpy().astype(np.float64)
        return _vtrace_by_hand(model, rewards, dones, values, last_values, log_probs - mu)

    recompute_vtrace = getattr(model, "recompute_returns", False) and model.returns_estimator == "vtrace"
    policy.set_training_mode(True)
    model._update_learning_rate(policy.optimizer)
    is_ppo = isinstance(model, PPORollback)
    n_epochs, batch_size = (model.n_epochs, model.batch_size) if is_ppo else (1, N_ENVS * N_STEPS)
    progress = model._current_progress_remaining
    for _ in range(n_epochs):
        if recompute_vtrace:
            returns, advantages = recompute()
        returns_t, advantages_t = th.as_tensor(returns, dtype=th.float32), th.as_tensor(advantages, dtype=th.float32)
        policy.set_training_mode(True)
        permutation = np.random.permutation(N_ENVS * N_STEPS)
        for start in range(0, N_ENVS * N_STEPS, batch_size):
            idx = th.as_tensor(permutation[start : start + batch_size])
            values, log_prob, entropy = policy.evaluate_actions(obs[idx], actions[idx])
            values = values.flatten()
            adv = advantages_t[idx]
            if model.normalize_advantage:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            if is_ppo:
                eps, alpha = model.clip_range(progress), model.rollback_alpha
                ratio = th.exp(log_prob - old_log_prob[idx])
                # rollback surrogate: f(r) = r inside [1 - eps, 1 + eps], slope -alpha beyond it where A pushes out
                beyond_up = (adv >= 0) & (ratio > 1 + eps)
                beyond_down = (adv < 0) & (ratio < 1 - eps)
                f = th.where(beyond_up, -alpha * ratio + (1 + alpha) * (1 + eps), ratio)
                f = th.where(beyond_down, -alpha * ratio + (1 + alpha) * (1 - eps), f)
                log_mu_adj = th.maximum(log_mu[idx], log_prob.detach() - math.log(100.0))
                policy_loss = -(th.exp(old_log_prob[idx] - log_mu_adj) * (adv * f)).mean()
                if model.clip_range_vf is not None:
                    c = model.clip_range_vf(progress)
                    values = old_values[idx] + th.clamp(values - old_values[idx], -c, c)
            else:
                policy_loss = -(w[idx] * adv * log_prob).mean()
            value_loss = ((returns_t[idx] - values) ** 2).mean()
            loss = policy_loss + model.ent_coef * -entropy.mean() + model.vf_coef * value_loss
            policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), model.max_grad_norm)
            policy.optimizer.step()


def _lag_one_reference(model, iterations: int):
    """
    The semantics of async collection written out in one process: SB3's ``collect_rollouts`` with the weights from
    before update i - 1 for rollout i >= 1 (one update older than the weights the update starts from), SB3's own
    update for the first rollout, and the decoupled update written out by hand (:func:`_decoupled_update`) after.
    """
    total, callback = model._setup_learn(iterations * N_STEPS * N_ENVS, None)
    callback.on_training_start(locals(), globals())
    behaviour = copy.deepcopy(model.policy.state_dict())
    for i in range(iterations):
        current = copy.deepcopy(model.policy.state_dict())
        model.policy.load_state_dict(behaviour)
        model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)
        model._update_current_progress_remaining(model.num_timesteps, total)
        behaviour = current
        model.policy.load_state_dict(current)
        if i == 0:
            model.policy.set_training_mode(True)
            model.train()  # no lag yet: the synchronous update (pinned to SB3's by the parity tests)
        else:
            _decoupled_update(model)
    return model


@pytest.mark.parametrize("algo", [PPORollback, CherryA2C])
def test_first_update_equals_sync(algo):
    # one rollout: no lag yet, the learner process must reproduce the in-process update bit for bit
    sync = _make(algo, "sync").learn(N_STEPS * N_ENVS)
    async_ = _make(algo, "async").learn(N_STEPS * N_ENVS)
    np.testing.assert_array_equal(_params(async_), _params(sync))
    assert async_._n_updates == sync._n_updates


@pytest.mark.parametrize(
    "algo, kwargs",
    [
        (PPORollback, {}),
        (PPORollback, dict(clip_range_vf=0.05)),
        (PPORollback, dict(returns_estimator="vtrace", recompute_returns=True, gae_lambda=0.9)),
        (CherryA2C, {}),
        (CherryA2C, dict(normalize_advantage=True)),
    ],
)
def test_matches_lag_one_reference(algo, kwargs):
    iterations = 4
    reference = _lag_one_reference(_make(algo, "sync", **kwargs), iterations)
    async_ = _make(algo, "async", **kwargs).learn(iterations * N_STEPS * N_ENVS)
    # float32 rounding differs between the hand-written update and the trainer (same minibatches, same math)
    np.testing.assert_allclose(_params(async_), _params(reference), rtol=1e-5, atol=1e-6)
    # the optimizer state is brought back too (Adam / RMSprop moments), so training can continue after learn()
    ref_state = reference.policy.optimizer.state_dict()["state"]
    async_state = async_.policy.optimizer.state_dict()["state"]
    for key, value in ref_state.items():
        for name, tensor in value.items():
            np.testing.assert_allclose(async_state[key][name].numpy(), tensor.numpy(), rtol=1e-3, atol=1e-7)
    # ... and it differs from plain sync training (the lag is real)
    sync = _make(algo, "sync", **kwargs).learn(iterations * N_STEPS * N_ENVS)
    assert not np.array_equal(_params(sync), _params(async_))


def test_async_logs_train_metrics():
    model = _make(PPORollback, "async")
    from stable_baselines3.common.logger import Logger

    class Capture(Logger):
        def __init__(self):
            super().__init__(folder=None, output_formats=[])
            self.dumped = []

        def dump(self, step=0):
            self.dumped.append(dict(self.name_to_value))
            super().dump(step)

    logger = Capture()
    model.set_logger(logger)
    model.learn(3 * N_STEPS * N_ENVS)
    keys = set().union(*logger.dumped)
    assert {"train/rollback_fraction", "train/approx_kl", "train/n_updates", "time/fps"} <= keys


def test_async_learns_cartpole():
    # the zoo configuration of CartPole (zoo_configs/ppo_rollback.yml, constant learning rate) and its 100k-step budget,
    # with a one-update-old behaviour policy (measured: 500 at 75k steps for seeds 0, 1, 2)
    env = make_vec_env("CartPole-v1", n_envs=8, seed=0)
    model = PPORollback(
        "MlpPolicy",
        env,
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        learning_rate=1e-3,
        seed=0,
        device="cpu",
        collection="async",
    ).learn(100_000)
    mean, _ = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=1, seed=100), n_eval_episodes=10)
    assert mean >= 475


@pytest.mark.parametrize("env_id", ["sb3_cherry/HybridGoal-v0", "sb3_cherry/DictReach-v0"])
def test_async_tuple_actions_and_dict_observations(env_id):
    policy = "MultiInputPolicy" if "Dict" in env_id else "MlpPolicy"
    env = make_vec_env(env_id, n_envs=2, seed=0)
    sync = PPORollback(policy, env, n_steps=16, batch_size=16, n_epochs=2, seed=0, device="cpu").learn(32)
    env = make_vec_env(env_id, n_envs=2, seed=0)
    async_ = PPORollback(policy, env, n_steps=16, batch_size=16, n_epochs=2, seed=0, device="cpu", collection="async")
    async_.learn(32)
    np.testing.assert_array_equal(_params(async_), _params(sync))
    async_.learn(64, reset_num_timesteps=False)  # a second learn() call starts a new learner from the current state
    assert async_.num_timesteps == 96


class _KillLearner(BaseCallback):
    def __init__(self):
        super().__init__()
        self.rollouts = 0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.rollouts += 1
        if self.rollouts == 2:
            for child in mp.active_children():
                if child.name == "sb3_cherry-learner":
                    os.kill(child.pid, signal.SIGKILL)


@pytest.mark.timeout(120)
def test_learner_death_is_reported_not_hung():
    model = _make(PPORollback, "async")
    with pytest.raises(RuntimeError, match=r"learner process.*killed by SIGKILL: out of memory"), pytest.warns(
        UserWarning, match="could not be fetched"
    ):
        model.learn(20 * N_STEPS * N_ENVS, callback=_KillLearner())
    assert not [child for child in mp.active_children() if child.name == "sb3_cherry-learner"]


def test_learner_error_is_reported():
    model = _make(PPORollback, "async", batch_size=64)
    model.clip_range = None  # the learner process cannot start from it (None is not a schedule)
    # re-raised as its own type (SB3's assert), with the learner's traceback in the message
    with pytest.raises(AssertionError, match=r"(?s)must be a float or a callable.*async learner process.*Traceback"):
        model.learn(3 * N_STEPS * N_ENVS)
    assert not [child for child in mp.active_children() if child.name == "sb3_cherry-learner"]


def test_save_load_after_async(tmp_path):
    model = _make(PPORollback, "async").learn(2 * N_STEPS * N_ENVS)
    model.save(tmp_path / "model.zip")
    loaded = PPORollback.load(tmp_path / "model.zip", device="cpu")
    assert loaded.collection == "async"
    np.testing.assert_array_equal(_params(loaded), _params(model))


def test_bad_collection():
    with pytest.raises(ValueError, match="collection='threads'"):
        _make(PPORollback, "threads")


def test_shared_state_dict_round_trip():
    module = th.nn.Sequential(th.nn.Linear(3, 4), th.nn.BatchNorm1d(4))
    target = copy.deepcopy(module)
    with th.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    module.state_dict()["1.num_batches_tracked"].fill_(7)  # an int64 buffer
    shared = SharedStateDict(SharedStateDict.layout_of(module.state_dict()))
    attached = SharedStateDict(shared.layout, name=shared.shm.name)
    attached.write(module.state_dict())
    shared.read_into(target)
    for key, value in module.state_dict().items():
        assert th.equal(target.state_dict()[key], value), key
    attached.close()
    shared.close()


def test_recentre_weights_and_log_probs():
    # A 2-step, 1-env buffer whose behaviour log-probs and advantages are set by hand: w = pi / mu is stored per
    # sample, untruncated; the advantages stay as they are (the trainer normalises them, then applies w truncated)
    from sb3_cherry.common.buffers import CherryRolloutBuffer

    class FixedPolicy:  # log pi(a) = -1 and V = 0.5 for every sample
        def evaluate_actions(self, obs, actions):
            n = len(actions)
            return th.full((n, 1), 0.5), th.full((n,), -1.0), None

    buf = CherryRolloutBuffer(2, spaces.Box(-1, 1, (1,)), spaces.Box(-1, 1, (1,)), n_envs=1)
    buf.log_probs[:] = np.array([[-2.0], [-0.5]])  # mu
    buf.values[:] = np.array([[3.0], [-3.0]])  # mu's critic
    buf.advantages[:] = np.array([[3.0], [4.0]])
    buf.recentre(FixedPolicy())
    # pi/mu = e^1 and e^-0.5
    np.testing.assert_allclose(buf.advantage_weights[:, 0], [np.exp(1.0), np.exp(-0.5)], rtol=1e-6)
    np.testing.assert_array_equal(buf.advantages[:, 0], [3.0, 4.0])
    np.testing.assert_array_equal(buf.log_probs[:, 0], [-1.0, -1.0])
    np.testing.assert_array_equal(buf.values[:, 0], [0.5, 0.5])  # value clipping centred on the proximal critic
    np.testing.assert_array_equal(buf.behaviour_log_probs[:, 0], [-2.0, -0.5])
    buf.reset()
    assert buf.behaviour_log_probs is None and buf.advantage_weights is None


# ----------------------------------------------------------------------------------------------------------------------
# Exact expectations on a 3-armed softmax bandit (issue 15, items 1 and 2). A rollout of 10 one-step episodes holds
# each action in proportion to the behaviour policy mu = (0.7, 0.2, 0.1): a mean over it is an exact expectation
# under mu, so the gradient the trainer computes on it (one minibatch, one epoch) is the expected gradient. The
# policy has no hidden layer and a constant observation 1: its logits are action_net.bias.
# ----------------------------------------------------------------------------------------------------------------------

MU = np.array([0.7, 0.2, 0.1])
PI_PROX = np.array([0.4, 0.3, 0.3])
BANDIT_A = np.array([1.0, 1.2, 2.0])
BANDIT_ACTIONS = np.repeat([0, 1, 2], [7, 2, 1])  # 10 samples in the proportions of MU


class _Bandit(gym.Env):
    """A constant observation, three actions, every episode one step long (only its spaces are used)."""

    observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.ones(1, np.float32), {}

    def step(self, action):
        return np.ones(1, np.float32), 0.0, True, False, {}


def _policy_gradient(pi: np.ndarray, advantages: np.ndarray) -> np.ndarray:
    """The on-policy gradient of E_pi[A] w.r.t. the softmax logits z: sum_a pi(a) A(a) (e_a - pi) = pi * (A - E_pi[A])."""
    return pi * (advantages - pi @ advantages)


def _bandit_model(algo, **kwargs):
    from stable_baselines3.common.logger import Logger

    n = len(BANDIT_ACTIONS)
    if algo is PPORollback:
        kwargs = dict(dict(batch_size=n, n_epochs=1, rollback_alpha=0.0), **kwargs)
    model = algo(
        "MlpPolicy",
        _Bandit(),
        n_steps=n,
        max_grad_norm=1e9,  # no gradient clipping: the raw gradient is read
        policy_kwargs=dict(net_arch=dict(pi=[], vf=[])),
        seed=0,
        device="cpu",
        **kwargs,
    )
    model.set_logger(Logger(folder=None, output_formats=[]))
    model._last_obs = np.ones((1, 1), np.float32)
    return model


def _set_bandit_policy(model, pi: np.ndarray, value: float = 0.0) -> None:
    with th.no_grad():
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.copy_(th.as_tensor(np.log(pi), dtype=th.float32))
        model.policy.value_net.weight.zero_()
        model.policy.value_net.bias.fill_(value)


def _fill_bandit_rollout(model, mu: np.ndarray, rewards: np.ndarray, values: float = 0.0) -> None:
    """The 10-sample rollout of mu: one-step episodes, stored log-probs of mu, advantages = rewards - values."""
    buf = model.rollout_buffer
    buf.reset()
    buf.observations[:] = 1.0
    buf.actions[:, 0, 0] = BANDIT_ACTIONS
    buf.log_probs[:, 0] = np.log(mu[BANDIT_ACTIONS])
    buf.rewards[:, 0] = rewards[BANDIT_ACTIONS]
    buf.values[:, 0] = values
    buf.advantages[:, 0] = rewards[BANDIT_ACTIONS] - values
    buf.returns[:, 0] = rewards[BANDIT_ACTIONS]
    buf.episode_starts[:] = 1.0
    buf.last_dones = np.ones(1, np.float32)
    buf.pos, buf.full = buf.buffer_size, True


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_bandit_hand_reference_shows_the_old_bias():
    # the reference of the tests below tells the two maths apart: weighting the advantages by w = pi_prox / mu BEFORE
    # the normalisation (the old recentre) raises action 1's logit, which the on-policy gradient of pi_prox lowers
    w = PI_PROX / MU
    wa = (w * BANDIT_A)[BANDIT_ACTIONS]
    normalised = (wa - wa.mean()) / wa.std(ddof=1)
    old = np.zeros(3)
    for action, adv in zip(BANDIT_ACTIONS, normalised, strict=True):
        old += adv * (np.eye(3)[action] - PI_PROX) / len(BANDIT_ACTIONS)
    true = _policy_gradient(PI_PROX, BANDIT_A)
    assert true[1] < 0 < old[1]
    assert _cosine(old, true) == pytest.approx(0.92, abs=0.01)  # the figure for rho_bar=100


@pytest.mark.parametrize(
    "algo, normalize",
    [(PPORollback, True), (PPORollback, False), (CherryA2C, True), (CherryA2C, False)],
)
def test_async_first_epoch_gradient_is_the_on_policy_gradient(algo, normalize):
    # a rollout of mu, re-centred on pi_prox (the update's start): the first-epoch gradient of the trainer's loss is
    # E_mu[w (A - m) / s grad log pi] = E_pi_prox[A grad log pi] / s, with m, s the minibatch's mean / std of A
    model = _bandit_model(algo, normalize_advantage=normalize)
    _set_bandit_policy(model, PI_PROX)
    _fill_bandit_rollout(model, MU, BANDIT_A)
    model._prepare_lagged_rollout()
    np.testing.assert_allclose(model.rollout_buffer.advantage_weights[:, 0], (PI_PROX / MU)[BANDIT_ACTIONS], rtol=1e-5)
    model.train()
    ascent = -model.policy.action_net.bias.grad.numpy()
    true = _policy_gradient(PI_PROX, BANDIT_A)
    assert ascent[1] < 0  # action 1's logit goes down, as on-policy
    assert _cosine(ascent, true) == pytest.approx(1.0, abs=1e-6)
    scale = BANDIT_A[BANDIT_ACTIONS].std(ddof=1) if normalize else 1.0
    np.testing.assert_allclose(ascent, true / scale, rtol=1e-5, atol=1e-7)


def test_lagged_rollout_carries_untruncated_weights():
    model = _bandit_model(PPORollback, imp_samp_max=1.2)
    _set_bandit_policy(model, PI_PROX)
    _fill_bandit_rollout(model, MU, BANDIT_A)
    model._prepare_lagged_rollout()
    expected = (PI_PROX / MU)[BANDIT_ACTIONS]  # the trainer truncates, with the current ratio
    np.testing.assert_allclose(model.rollout_buffer.advantage_weights[:, 0], expected, rtol=1e-5)
    # the advantages themselves are not weighted (the trainer normalises them first)
    np.testing.assert_array_equal(model.rollout_buffer.advantages[:, 0], BANDIT_A[BANDIT_ACTIONS].astype(np.float32))
    samples = next(model.rollout_buffer.get(len(BANDIT_ACTIONS)))
    np.testing.assert_allclose(np.sort(samples.weights.numpy()), np.sort(expected), rtol=1e-5)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="imp_samp_max must be > 0"):
            _bandit_model(PPORollback, imp_samp_max=bad)


def _compute_losses_pg(newlogp, rec_logp, logp, adv, clip_param, imp_samp_max):
    """The policy-gradient loss per sample of openai/ppo-ewma's compute_losses (ppo_ewma/ppo.py), transcribed."""
    logratio = newlogp - rec_logp
    logp_adj = th.max(logp, newlogp.detach() - math.log(imp_samp_max))
    pg_losses = -adv * th.exp(newlogp - logp_adj)
    clipped_logratio = th.clamp(logratio, math.log(1.0 - clip_param), math.log(1.0 + clip_param))
    pg_losses2 = -adv * th.exp(clipped_logratio + rec_logp - logp_adj)
    return th.max(pg_losses, pg_losses2)


def test_truncated_surrogate_equals_the_reference_compute_losses():
    # random samples, the cap binding on some of them (pi / mu up to e^4 > imp_samp_max = 5): the per-sample loss
    # -w * rollback_surrogate(r, A) (alpha = 0) and its gradient w.r.t. log pi equal the reference's
    gen = th.Generator().manual_seed(0)
    n, clip, cap = 2000, 0.2, 5.0
    logp_mu = -2.0 + th.randn(n, generator=gen, dtype=th.float64)
    rec_logp = logp_mu + 2.0 * th.rand(n, generator=gen, dtype=th.float64)  # pi_prox / mu in [1, e^2]
    adv = th.randn(n, generator=gen, dtype=th.float64)
    newlogp = (rec_logp + 0.5 * th.randn(n, generator=gen, dtype=th.float64)).requires_grad_(True)
    reference = _compute_losses_pg(newlogp, rec_logp, logp_mu, adv, clip, cap)
    (reference_grad,) = th.autograd.grad(reference.sum(), newlogp)
    ratio = th.exp(newlogp - rec_logp)
    ours = -truncated_weights(th.exp(rec_logp - logp_mu), cap, ratio) * rollback_surrogate(ratio, adv, clip, 0.0)
    (ours_grad,) = th.autograd.grad(ours.sum(), newlogp)
    binding = (newlogp - logp_mu).detach() > math.log(cap)
    assert 100 < int(binding.sum()) < n - 100
    th.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)
    th.testing.assert_close(ours_grad, reference_grad, rtol=1e-10, atol=1e-12)
    # the old truncation of pi_prox / mu alone (fixed for the update) differs where the cap binds
    old = -th.clamp(th.exp(rec_logp - logp_mu), max=cap) * rollback_surrogate(ratio, adv, clip, 0.0)
    assert not th.allclose(old[binding], reference[binding])


def test_imp_samp_max_caps_the_whole_ratio_in_training():
    # the bandit's first minibatch after the policy moved from pi_prox to pi: with pi / mu = (0.29, 1.5, 5) and the cap
    # 2, the trainer's gradient is the reference's E_mu[A min(pi / mu, cap) grad log pi] (the capped sample's
    # surrogate is worth cap * A), not the one of pi_prox / mu truncated once (min(3, 2) * r)
    pi, cap = np.array([0.2, 0.3, 0.5]), 2.0
    model = _bandit_model(PPORollback, imp_samp_max=cap, normalize_advantage=False, clip_range=0.9)
    _set_bandit_policy(model, PI_PROX)
    _fill_bandit_rollout(model, MU, BANDIT_A)
    model._prepare_lagged_rollout()
    _set_bandit_policy(model, pi)
    model.train()  # one minibatch, one epoch: the gradient is read at pi
    ascent = -model.policy.action_net.bias.grad.numpy()
    expected = np.zeros(3)
    for action in BANDIT_ACTIONS:
        expected += BANDIT_A[action] * min(pi[action] / MU[action], cap) * (np.eye(3)[action] - pi) / len(BANDIT_ACTIONS)
    np.testing.assert_allclose(ascent, expected, rtol=1e-5, atol=1e-7)


def test_async_value_clipping_is_centred_on_the_proximal_critic():
    # mu's critic stored V = 5; the proximal critic (the update's start) says V = 0; targets are 1. With clip_range_vf,
    # the clipped value must move around 0 (gradient of vf_coef * (1 - V)^2 at V = 0: -2 * vf_coef), not around 5
    # (where clamp(0 - 5, -0.2, 0.2) would give no value gradient at all)
    model = _bandit_model(PPORollback, clip_range_vf=0.2, vf_coef=0.5)
    _set_bandit_policy(model, PI_PROX, value=0.0)
    _fill_bandit_rollout(model, MU, np.ones(3), values=5.0)
    model._prepare_lagged_rollout()
    np.testing.assert_allclose(model.rollout_buffer.values, 0.0, atol=1e-7)
    model.train()
    np.testing.assert_allclose(model.policy.value_net.bias.grad.numpy(), [-2 * 0.5 * 1.0], rtol=1e-5)


@pytest.mark.parametrize("lagged", [False, True])
def test_vtrace_recompute_surrogate_is_unbiased(lagged):
    # V-trace with recompute_returns: at a later epoch the policy pi_k differs from the behaviour mu. The surrogate's
    # expected gradient E_mu[(pi / mu) A grad log pi] must be the on-policy E_pi_k[A grad log pi] (importance weight
    # counted once); the old advantages rho A = min(1, pi_k / mu) A gave E_mu[r min(1, r) A grad log pi].
    # lagged: an async rollout re-centred on pi_prox first, then trained from pi_k (weight w = pi_prox / mu times
    # PPO's ratio pi / pi_prox).
    # lr = 0 keeps the policy at pi_k for both epochs; the second epoch recomputes the advantages with pi_k.
    pi_k = np.array([0.2, 0.3, 0.5])
    model = _bandit_model(
        PPORollback,
        n_epochs=2,
        learning_rate=0.0,
        clip_range=1e6,  # no clipping: the plain importance-sampled surrogate r A
        normalize_advantage=False,
        returns_estimator="vtrace",
        recompute_returns=True,
    )
    _fill_bandit_rollout(model, MU, BANDIT_A)
    if lagged:
        _set_bandit_policy(model, PI_PROX)
        model._prepare_lagged_rollout()
    _set_bandit_policy(model, pi_k)
    model.train()
    ascent = -model.policy.action_net.bias.grad.numpy()
    true = _policy_gradient(pi_k, BANDIT_A)
    np.testing.assert_allclose(ascent, true, rtol=1e-5, atol=1e-7)
    # the old weighting r * min(1, r), by hand, is measurably different on this bandit
    r = pi_k / MU
    old = np.zeros(3)
    for a in range(3):
        old += MU[a] * r[a] * min(1.0, r[a]) * BANDIT_A[a] * (np.eye(3)[a] - pi_k)
    assert np.abs(old - true).max() > 0.05


def test_overflowing_weights_stay_finite():
    # pi_prox / mu beyond float32: the stored weight is the largest float32, so weight * 0 stays 0 (not inf * 0 = NaN)
    model = _bandit_model(PPORollback)
    _set_bandit_policy(model, PI_PROX)
    _fill_bandit_rollout(model, np.array([1e-45, 0.5, 0.5]), BANDIT_A)
    model.rollout_buffer.log_probs[:, 0] = np.where(BANDIT_ACTIONS == 0, -200.0, np.log(0.5))
    model._prepare_lagged_rollout()
    weights = th.as_tensor(model.rollout_buffer.advantage_weights[:, 0])
    assert th.isfinite(weights).all()
    assert th.equal(truncated_weights(weights, 100.0, th.zeros(len(weights))) * 0.0, th.zeros(len(weights)))


def _dumped_train_logs(collection: str, iterations: int) -> list:
    from stable_baselines3.common.logger import Logger

    class Capture(Logger):
        def __init__(self):
            super().__init__(folder=None, output_formats=[])
            self.dumped = []

        def dump(self, step=0):
            self.dumped.append({k: v for k, v in self.name_to_value.items() if k.startswith("train/n_updates")})
            super().dump(step)

    model = _make(PPORollback, collection)
    logger = Capture()
    model.set_logger(logger)
    model.learn(iterations * N_STEPS * N_ENVS)
    return logger.dumped


def test_async_dumps_the_train_logs_of_the_same_update_as_sync():
    """At each iteration's dump, SB3 (sync) shows the train/ logs of the update before; async did one later."""
    assert _dumped_train_logs("async", 4) == _dumped_train_logs("sync", 4)


class _FailAtRollout(BaseCallback):
    def __init__(self, at: int):
        super().__init__()
        self.at, self.rollouts = at, 0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.rollouts += 1
        if self.rollouts == self.at:
            raise KeyError("stop here")


def test_an_interrupted_async_learn_leaves_weights_and_optimizer_of_the_same_update():
    """A callback raising mid-learn: the model gets the learner's last weights and the optimizer state that goes with
    them (not the behaviour weights with the optimizer state from the start of learn), so a save pairs them."""
    model = _make(PPORollback, "async")  # batch 64 of 128 samples: 2 Adam steps per epoch
    with pytest.raises(KeyError, match="stop here"):
        model.learn(10 * N_STEPS * N_ENVS, callback=_FailAtRollout(4))
    steps = {int(state["step"]) for state in model.policy.optimizer.state.values()}
    assert model._n_updates > 0 and steps == {2 * model._n_updates}
    assert not [child for child in mp.active_children() if child.name == "sb3_cherry-learner"]


def test_training_switches_are_those_of_learn():
    from sb3_cherry.common.speed import training_switches

    model = _make(PPORollback, "sync")
    before = th.distributions.Distribution._validate_args
    with training_switches(model):
        assert th.distributions.Distribution._validate_args is False
        assert all(group["foreach"] for group in model.policy.optimizer.param_groups)
    assert th.distributions.Distribution._validate_args is before


def _explicit_vtrace(rewards, values, last_values, dones, ratios, gamma, lam, rho_bar, c_bar):
    """IMPALA's V-trace targets (eq. 1) as explicit sums, one env and start step at a time (float64)."""
    n_steps, n_envs = rewards.shape
    next_values = np.vstack([values[1:], last_values[None]])
    rho, c = np.minimum(rho_bar, ratios), lam * np.minimum(c_bar, ratios)
    delta = rho * (rewards + gamma * next_values * (1 - dones) - values)
    targets = np.zeros((n_steps, n_envs))
    for e in range(n_envs):
        for s in range(n_steps):
            total, coef = 0.0, 1.0
            for t in range(s, n_steps):
                total += coef * delta[t, e]
                if dones[t, e]:
                    break
                coef *= gamma * c[t, e]
            targets[s, e] = values[s, e] + total
    return targets


@pytest.mark.parametrize("algo", [PPORollback, CherryA2C])
def test_lagged_vtrace_targets_use_pi_prox_over_mu(algo):
    """With collection="async", V-trace's targets of a lagged rollout are recomputed in the learner with pi_prox's
    critic and the ratios pi_prox / mu (the collecting process computes them on-policy, ratio 1), time-limit
    bootstraps included; without recompute_returns they were left on-policy."""
    gamma, lam, rho_bar, c_bar = 0.95, 0.9, 0.8, 0.7
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=5, env_kwargs=dict(max_episode_steps=40))
    kwargs = dict(batch_size=32, n_epochs=1) if algo is PPORollback else {}
    model = algo("MlpPolicy", env, n_steps=64, seed=5, gamma=gamma, gae_lambda=lam, returns_estimator="vtrace",
                 rho_bar=rho_bar, c_bar=c_bar, collection="async", device="cpu", **kwargs)  # fmt: skip
    _, callback = model._setup_learn(10_000, None)
    callback.on_training_start(locals(), globals())
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=64)
    buf = model.rollout_buffer
    n_steps, n_envs = buf.buffer_size, buf.n_envs
    obs = th.as_tensor(buf.swap_and_flatten(buf.observations.copy()))
    actions = th.as_tensor(buf.swap_and_flatten(buf.actions.copy()))
    mu_log_probs, rewards = buf.log_probs.astype(np.float64), buf.rewards.astype(np.float64)
    dones = np.vstack([buf.episode_starts[1:], buf.last_dones[None]]).astype(np.float64)
    assert len(buf.truncation_steps) > 0  # time limits inside the rollout
    mu = copy.deepcopy(model.policy)
    generator = th.Generator().manual_seed(0)
    with th.no_grad():  # pi_prox: the learner's weights, one update further than mu
        for parameter in model.policy.parameters():
            parameter.add_(0.1 * th.randn(parameter.shape, generator=generator))
    prox = copy.deepcopy(model.policy)

    model._prepare_lagged_rollout()

    def env_major(x):
        return np.asarray(x, dtype=np.float64).reshape(n_envs, n_steps).T

    prox.set_training_mode(False)
    mu.set_training_mode(False)
    with th.no_grad():
        values, prox_log_probs, _ = prox.evaluate_actions(obs, actions)
        last_values = prox.predict_values(th.as_tensor(model._last_obs)).flatten().double().numpy()
        terminal = th.as_tensor(buf.truncation_obs)
        rebootstrap = gamma * (prox.predict_values(terminal) - mu.predict_values(terminal)).flatten().double().numpy()
    for (step, index), extra in zip(buf.truncation_steps, rebootstrap, strict=True):
        rewards[step, index] += extra  # the truncation's gamma * V(terminal) by pi_prox's critic, not mu's
    ratios = np.exp(env_major(prox_log_probs) - mu_log_probs)
    assert ratios.min() < 0.9 and ratios.max() > 1.1  # pi_prox != mu
    expected = _explicit_vtrace(rewards, env_major(values), last_values, dones, ratios, gamma, lam, rho_bar, c_bar)
    np.testing.assert_allclose(buf.returns, expected, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize(
    "env_id, policy", [("sb3_cherry/DictReach-v0", "MultiInputPolicy"), ("sb3_cherry/HybridGoal-v0", "MlpPolicy")]
)
def test_lagged_weights_and_log_probs_follow_their_samples(env_id, policy):
    """Dict observations and Tuple actions: after re-centring, each shuffled minibatch carries pi_prox's log-probs
    and the weights pi_prox / mu of its own samples, both evaluated here with the two policies."""
    model = PPORollback(policy, make_vec_env(env_id, n_envs=2, seed=0), n_steps=32, batch_size=16, n_epochs=1,
                        seed=0, device="cpu", collection="async")  # fmt: skip
    _, callback = model._setup_learn(1000, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, 32)
    mu = copy.deepcopy(model.policy)
    generator = th.Generator().manual_seed(0)
    with th.no_grad():
        for parameter in model.policy.parameters():
            parameter.add_(0.2 * th.randn(parameter.shape, generator=generator))
    model._prepare_lagged_rollout()
    mu.set_training_mode(False)
    model.policy.set_training_mode(False)
    batches = 0
    for batch in model.rollout_buffer.get(16):
        with th.no_grad():
            _, mu_log_prob, _ = mu.evaluate_actions(batch.observations, batch.actions)
            _, prox_log_prob, _ = model.policy.evaluate_actions(batch.observations, batch.actions)
        th.testing.assert_close(batch.old_log_prob, prox_log_prob, atol=1e-5, rtol=0)
        expected = th.exp(prox_log_prob.double() - mu_log_prob.double())
        th.testing.assert_close(batch.weights.double(), expected, rtol=1e-4, atol=0)
        assert (expected - 1).abs().max() > 0.05  # pi_prox != mu
        batches += 1
    assert batches == 4


def test_a_replaced_policy_is_refused_with_the_reason():
    # the learner rebuilds the policy from policy_class / policy_kwargs: another net_arch failed deep in load_state_dict
    from sb3_cherry.common.policies import CherryActorCriticPolicy

    model = _make(PPORollback, "async")
    model.policy = CherryActorCriticPolicy(model.observation_space, model.action_space, model.lr_schedule, net_arch=[8]).to(
        model.device
    )
    with pytest.raises(ValueError, match="does not have the layout policy_kwargs build"):
        model.learn(N_ENVS * N_STEPS)


def test_main_guard_inside_a_condition_is_recognised(tmp_path):
    from sb3_cherry.common.async_learner import _has_main_guard

    script = tmp_path / "train.py"
    script.write_text('import sys\nif __name__ == "__main__" and len(sys.argv) > 0:\n    pass\n')
    assert _has_main_guard(str(script))
    script.write_text("import sys\nif len(sys.argv) > 0:\n    pass\n")
    assert not _has_main_guard(str(script))


# --- lifecycle: a hung, interrupted, failing or re-started learner ---------------------------------------------------


def _in_learner() -> bool:
    return mp.current_process().name == "sb3_cherry-learner"


class _HangingPolicy(MlpPolicy):
    """Hangs in the learner process's first update, as a deadlocked CUDA call or collective would."""

    def evaluate_actions(self, obs, actions):
        if _in_learner():
            time.sleep(10_000)
        return super().evaluate_actions(obs, actions)


class _RngSpyPolicy(MlpPolicy):
    """Appends, at each minibatch the learner process evaluates, a digest of numpy's and torch's global random states
    (after the minibatch permutation) to the file ``record_to``."""

    def __init__(self, *args, record_to: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.record_to = record_to

    def evaluate_actions(self, obs, actions):
        if _in_learner() and self.training:
            _, keys, pos, *_ = np.random.get_state()
            digest = hashlib.md5(keys.tobytes() + bytes([pos % 256, pos // 256]) + th.get_rng_state().numpy().tobytes())
            with open(self.record_to, "a") as file:
                file.write(f"{digest.hexdigest()}\n")
        return super().evaluate_actions(obs, actions)


def _learner_with(monkeypatch, timeout: float = 3600.0, hook=None) -> list:
    """Make learn() start learners with an update timeout of ``timeout`` s (the start-up keeps the default) and call
    ``hook(learner)`` when each is ready; returns the list of the learners started."""
    import sb3_cherry.common.on_policy as on_policy
    from sb3_cherry.common.async_learner import AsyncLearner

    started = []

    class Learner(AsyncLearner):
        def __init__(self, model):
            super().__init__(model)
            self.timeout = timeout
            self.ready_at = time.monotonic()
            started.append(self)
            if hook is not None:
                hook(self)

    monkeypatch.setattr(on_policy, "AsyncLearner", Learner)
    return started


def _no_learner_left() -> bool:
    return not [child for child in mp.active_children() if child.name == "sb3_cherry-learner"]


@pytest.mark.timeout(120)
def test_a_hung_learner_is_reported_after_one_timeout(monkeypatch, one_torch_thread):
    # was: the update's timeout, then the same again in salvage (fetching the optimizer state), then 10 s in close
    started = _learner_with(monkeypatch, timeout=2.0)
    model = PPORollback(_HangingPolicy, make_vec_env("CartPole-v1", n_envs=2, seed=0), n_steps=16, batch_size=16,
                        n_epochs=1, seed=0, device="cpu", collection="async")  # fmt: skip
    with pytest.raises(RuntimeError, match="did not answer 'trained' within 2 s"), pytest.warns(
        UserWarning, match=r"could not be fetched .*did not answer 'trained'"
    ):
        model.learn(10 * 32)
    assert time.monotonic() - started[0].ready_at < 2.0 + 3.0  # one timeout, no second wait, no 10 s join
    assert _no_learner_left()


def _cut_next_send(learner) -> None:
    """The next message to the learner is cut in the middle by a KeyboardInterrupt (a Ctrl-C during the pipe write),
    whether it is written by Connection.send or send_bytes (both go through _send_bytes)."""
    conn = learner.conn

    def cut(buffer):
        del conn._send_bytes  # (once)
        conn._send(struct.pack("!i", len(buffer)) + bytes(buffer[: len(buffer) // 2]))
        raise KeyboardInterrupt

    conn._send_bytes = cut


@pytest.mark.timeout(120)
def test_an_interrupt_during_submit_does_not_wait_for_the_learner(monkeypatch, one_torch_thread):
    # was: salvage sent "optimizer" behind the half message, the learner waited for the rest: a whole timeout, then
    # 10 s in close
    cut_at = []

    class CutThirdRollout(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            if self.model._n_updates > 0 and not cut_at:  # (the third rollout, about to be submitted)
                _cut_next_send(started[0])
                cut_at.append(time.monotonic())

    started = _learner_with(monkeypatch, timeout=3.0)
    model = _make(PPORollback, "async")
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match=r"interrupted while sending .*out of step"):
        model.learn(10 * N_STEPS * N_ENVS, callback=CutThirdRollout())
    assert time.monotonic() - cut_at[0] < 3.0  # no timeout waited, no 10 s join
    assert _no_learner_left()


@pytest.mark.timeout(120)
def test_a_ctrl_c_reaching_the_learner_does_not_stop_it(monkeypatch, one_torch_thread):
    # a terminal's Ctrl-C reaches the whole process group: the learner ignores it (the main process's KeyboardInterrupt
    # then salvages its last update and stops it); it used to die in its update, without its state
    class InterruptLearner(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            os.kill(started[0].process.pid, signal.SIGINT)

    started = _learner_with(monkeypatch)
    model = _make(PPORollback, "async")
    model.learn(4 * N_STEPS * N_ENVS, callback=InterruptLearner())
    assert model._n_updates == 4 * 3  # 4 updates of 3 epochs
    assert _no_learner_left()


def test_consecutive_learn_calls_continue_the_learners_random_streams(tmp_path, one_torch_thread):
    """Each learner used to re-seed numpy and torch from model.seed (load runs _setup_model): every learn call of a
    chunked training drew the same minibatch permutations. They now continue, as the one process of sync does."""
    record = tmp_path / "rng.txt"
    model = PPORollback(_RngSpyPolicy, make_vec_env("CartPole-v1", n_envs=2, seed=0), n_steps=16, batch_size=16,
                        n_epochs=1, seed=0, device="cpu", collection="async",
                        policy_kwargs=dict(record_to=str(record)))  # fmt: skip
    calls = []
    for _ in range(2):
        model.learn(2 * 32, reset_num_timesteps=False)  # two updates of two minibatches per call
        calls.append(record.read_text().split())
        record.unlink()
    # one permutation per epoch (shared by its two minibatches): two states per call, none repeated by the next call
    assert [len(states) for states in calls] == [4, 4] and [len(set(states)) for states in calls] == [2, 2], calls
    assert not set(calls[0]) & set(calls[1]), calls
    # set_random_seed starts them again from the seed (as in sync, where it seeds the one process's generators)
    model.set_random_seed(0)
    model.learn(2 * 32, reset_num_timesteps=False)
    assert record.read_text().split() == calls[0]


def test_a_learner_error_is_re_raised_with_its_type_and_traceback(one_torch_thread):
    model = _make(PPORollback, "async")
    model.learning_rate = lambda progress: float("nan") if progress < 0.9 else 3e-4  # a non-finite second update
    model._setup_lr_schedule()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=r"(?s)^Non-finite loss.*async learner process.*Traceback.*in _learner_main"):
            model.learn(10 * N_STEPS * N_ENVS)
    messages = [(str(w.message), w.filename) for w in caught if "learner" in str(w.message)]
    # no "killed or out of memory" guess after an error the learner reported; the warning points at this learn call
    assert messages == [(messages[0][0], __file__)] and "learner process raised ValueError" in messages[0][0], messages
    assert _no_learner_left()


@pytest.mark.parametrize("error", [KeyError("missing"), ValueError("bad"), FileNotFoundError(2, "gone")])
def test_learner_errors_come_back_as_their_standard_type(error):
    # (only strings cross the pipe); a KeyError came back as a LookupError, which `except KeyError` missed
    from sb3_cherry.common.async_learner import _error_report, _learner_error

    try:
        raise error
    except Exception as exc:
        report = _error_report(exc)
    rebuilt = _learner_error(*report)
    expected = RuntimeError if isinstance(error, OSError) else type(error)
    assert isinstance(rebuilt, expected) and str(error) in str(rebuilt) and "traceback" in str(rebuilt)
    assert type(rebuilt).__mro__[1 if isinstance(error, KeyError) else 0] is expected  # (KeyError: prints as text)
