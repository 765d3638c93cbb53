"""Collection overlapping learning (collection="async")."""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import SubprocVecEnv

from sb3_cherry import CherryA2C, PPORollback
from sb3_cherry.common.zoo_config import load_zoo_entry


class CountSteps(BaseCallback):
    def __init__(self):
        super().__init__()
        self.calls, self.rollouts, self.episodes = 0, 0, 0

    def _on_step(self) -> bool:
        self.calls += 1
        self.episodes += int(np.sum(self.locals["dones"]))
        return True

    def _on_rollout_end(self) -> None:
        self.rollouts += 1


def test_async_counts_steps_and_calls_callbacks():
    callback = CountSteps()
    model = PPORollback("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), n_steps=32, batch_size=64, collection="async")
    model.learn(256, callback=callback)
    assert model.num_timesteps == 256
    assert callback.calls == 128 and callback.rollouts == 4 and callback.episodes > 0
    assert model._async_collector.thread is None  # nothing left running after learn()
    # learn again, continuing the counter
    model.learn(128, reset_num_timesteps=False)
    assert model.num_timesteps == 384


def test_behaviour_policy_lags_one_update():
    model = PPORollback(
        "MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, n_epochs=5, learning_rate=1e-2, collection="async", seed=0
    )
    model.learn(64 * 3)
    buffer = model.rollout_buffer  # the last rollout trained on: collected by the policy before the last update
    obs = th.as_tensor(buffer.observations.reshape(-1, 4))
    actions = th.as_tensor(buffer.actions.reshape(-1)).long()
    with th.no_grad():
        _, log_prob_now, _ = model.policy.evaluate_actions(obs, actions)
    # the learner has moved on: current log-probs differ from the stored behaviour log-probs
    assert not np.allclose(log_prob_now.numpy(), buffer.log_probs.reshape(-1), atol=1e-4)


@pytest.mark.parametrize("algo", [PPORollback, CherryA2C])
def test_async_subproc_save_load(tmp_path, algo):
    env = make_vec_env("Pendulum-v1", n_envs=2, vec_env_cls=SubprocVecEnv)
    try:
        kwargs = dict(n_steps=32, batch_size=64) if algo is PPORollback else dict(n_steps=8)
        model = algo("MlpPolicy", env, collection="async", returns_estimator="vtrace", **kwargs).learn(256)
        model.save(tmp_path / "m.zip")
        loaded = algo.load(tmp_path / "m.zip", env=env)
        assert loaded.collection == "async"
        obs = np.stack([env.observation_space.sample() for _ in range(5)])
        np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
        loaded.learn(128)
    finally:
        env.close()


def test_bad_collection_mode():
    with pytest.raises(ValueError, match="collection"):
        PPORollback("MlpPolicy", "CartPole-v1", collection="parallel")


@pytest.mark.slow
def test_async_vtrace_solves_cartpole():
    entry = load_zoo_entry("ppo_rollback", "CartPole-v1")
    env = make_vec_env("CartPole-v1", n_envs=entry.n_envs, seed=0)
    model = PPORollback(env=env, seed=0, collection="async", returns_estimator="vtrace", **entry.model_kwargs)
    model.learn(entry.n_timesteps)
    mean, _ = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=1, seed=123), n_eval_episodes=10)
    assert mean >= 475
