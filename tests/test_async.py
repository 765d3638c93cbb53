"""collection="async": the learner process computes exactly the lag-one, re-centred updates of a hand-written loop."""

import copy
import multiprocessing as mp
import os
import signal

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

N_ENVS, N_STEPS = 4, 32


def _make(algo, collection, seed=0, env_id="CartPole-v1", **kwargs):
    env = make_vec_env(env_id, n_envs=N_ENVS, seed=seed)
    if algo is PPORollback:
        kwargs = dict(dict(batch_size=64, n_epochs=3), **kwargs)
    return algo("MlpPolicy", env, n_steps=N_STEPS, seed=seed, device="cpu", collection=collection, **kwargs)


def _params(model) -> np.ndarray:
    return th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().numpy().copy()


def _decoupled_correction(model) -> None:
    """
    Decoupled PPO's correction of a rollout from an older behaviour policy mu, by hand: PPO's old log-probs become
    those of the current policy pi_prox, the advantages are weighted by min(rho_bar, pi_prox / mu).
    """
    buf = model.rollout_buffer
    obs = th.as_tensor(buf.swap_and_flatten(buf.observations))
    actions = th.as_tensor(buf.swap_and_flatten(buf.actions))
    if isinstance(model.action_space, spaces.Discrete):
        actions = actions.long().flatten()
    model.policy.set_training_mode(False)
    with th.no_grad():
        _, log_prox, _ = model.policy.evaluate_actions(obs, actions)
    log_prox = log_prox.numpy().reshape(N_ENVS, N_STEPS).T  # env-major back to (n_steps, n_envs)
    mu = buf.log_probs.copy()
    rho = np.exp(np.minimum(log_prox - mu, np.log(model.rho_bar))).astype(np.float32)
    buf.behaviour_log_probs, buf.advantage_weights = mu, rho
    buf.log_probs = log_prox.astype(np.float32)
    buf.advantages = buf.advantages * rho


def _lag_one_reference(model, iterations: int):
    """
    The semantics of async collection written out with SB3's own ``collect_rollouts`` and ``train``, in one process:
    rollout i >= 1 is collected with the weights from before update i - 1, i.e. one update older than the weights
    the update starts from, and corrected by hand before the update.
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
        if i > 0:
            _decoupled_correction(model)
            model._recompute_returns()
        model.policy.set_training_mode(True)
        model.train()
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
        (PPORollback, dict(returns_estimator="vtrace", recompute_returns=True, gae_lambda=0.9)),
        (CherryA2C, {}),
    ],
)
def test_matches_lag_one_reference(algo, kwargs):
    iterations = 4
    reference = _lag_one_reference(_make(algo, "sync", **kwargs), iterations)
    async_ = _make(algo, "async", **kwargs).learn(iterations * N_STEPS * N_ENVS)
    np.testing.assert_array_equal(_params(async_), _params(reference))
    # the optimizer state is brought back too (Adam / RMSprop moments), so training can continue after learn()
    ref_state = reference.policy.optimizer.state_dict()["state"]
    async_state = async_.policy.optimizer.state_dict()["state"]
    for key, value in ref_state.items():
        for name, tensor in value.items():
            np.testing.assert_array_equal(async_state[key][name].numpy(), tensor.numpy())
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
    with pytest.raises(RuntimeError, match="learner process"):
        model.learn(20 * N_STEPS * N_ENVS, callback=_KillLearner())
    assert not [child for child in mp.active_children() if child.name == "sb3_cherry-learner"]


def test_learner_error_is_reported():
    model = _make(PPORollback, "async", batch_size=64)
    model.batch_size = 0  # makes the learner's train() fail
    with pytest.raises(RuntimeError, match="learner process failed"):
        model.learn(3 * N_STEPS * N_ENVS)


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
    # A 2-step, 1-env buffer whose behaviour log-probs and advantages are set by hand: rho = min(rho_bar, pi / mu)
    from sb3_cherry.common.buffers import CherryRolloutBuffer

    class FixedPolicy:  # log pi(a) = -1 for every sample
        def evaluate_actions(self, obs, actions):
            n = len(actions)
            return th.zeros(n, 1), th.full((n,), -1.0), None

    buf = CherryRolloutBuffer(2, spaces.Box(-1, 1, (1,)), spaces.Box(-1, 1, (1,)), n_envs=1, rho_bar=1.0)
    buf.log_probs[:] = np.array([[-2.0], [-0.5]])  # mu
    buf.advantages[:] = np.array([[3.0], [4.0]])
    buf.recentre(FixedPolicy())
    # pi/mu = e^1 (truncated to 1) and e^-0.5
    np.testing.assert_allclose(buf.advantage_weights[:, 0], [1.0, np.exp(-0.5)], rtol=1e-6)
    np.testing.assert_allclose(buf.advantages[:, 0], [3.0, 4.0 * np.exp(-0.5)], rtol=1e-6)
    np.testing.assert_array_equal(buf.log_probs[:, 0], [-1.0, -1.0])
    np.testing.assert_array_equal(buf.behaviour_log_probs[:, 0], [-2.0, -0.5])
    buf.reset()
    assert buf.behaviour_log_probs is None and buf.advantage_weights is None
