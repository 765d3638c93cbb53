"""Smoke runs per algorithm x environment x distribution (tiny settings)."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

from sb3_cherry import CherryA2C, PPORollback

ALGOS = [
    (PPORollback, dict(n_steps=32, batch_size=32, n_epochs=2)),
    (CherryA2C, dict(n_steps=8)),
]


@pytest.mark.parametrize("algo, kwargs", ALGOS)
@pytest.mark.parametrize(
    "env_id, distribution",
    [
        ("CartPole-v1", None),
        ("CartPole-v1", "gumbel_softmax"),
        ("Pendulum-v1", None),
        ("Pendulum-v1", "beta"),
        ("Pendulum-v1", "tanh_normal"),
    ],
)
def test_run(algo, kwargs, env_id, distribution):
    model = algo("MlpPolicy", env_id, policy_kwargs=dict(action_distribution=distribution), seed=0, **kwargs)
    model.learn(64)
    action, _ = model.predict(model.get_env().observation_space.sample())
    assert model.action_space.contains(np.asarray(action, dtype=model.action_space.dtype).reshape(model.action_space.shape))


@pytest.mark.parametrize("estimator", ["gae", "one_step", "n_step", "vtrace"])
@pytest.mark.parametrize("recompute", [False, True])
def test_estimators_run(estimator, recompute):
    model = PPORollback(
        "MlpPolicy",
        "CartPole-v1",
        n_steps=32,
        batch_size=32,
        n_epochs=2,
        returns_estimator=estimator,
        recompute_returns=recompute,
        seed=0,
    )
    model.learn(64)


def test_multi_discrete_and_multibinary():
    class Env(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (2,))

        def __init__(self, action_space):
            self.action_space = action_space

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            return self.observation_space.sample(), {}

        def step(self, action):
            assert self.action_space.contains(action), action
            return self.observation_space.sample(), 0.0, False, True, {}

    for space in (gym.spaces.MultiDiscrete([3, 2]), gym.spaces.MultiBinary(3)):
        PPORollback("MlpPolicy", Env(space), n_steps=16, batch_size=16, n_epochs=1).learn(32)


def test_cnn_policy():
    from stable_baselines3.common.envs import FakeImageEnv

    env = FakeImageEnv(screen_height=40, screen_width=40, n_channels=1, discrete=False)
    model = PPORollback(
        "CnnPolicy", env, n_steps=16, batch_size=16, n_epochs=1, policy_kwargs=dict(action_distribution="beta")
    )
    model.learn(32)


def test_multi_input_policy():
    from stable_baselines3.common.envs import SimpleMultiObsEnv

    model = PPORollback("MultiInputPolicy", SimpleMultiObsEnv(random_start=False), n_steps=16, batch_size=16, n_epochs=1)
    model.learn(32)


def test_subproc_vec_env():
    env = make_vec_env("CartPole-v1", n_envs=2, vec_env_cls=SubprocVecEnv)
    try:
        PPORollback("MlpPolicy", env, n_steps=16, batch_size=32, n_epochs=1).learn(64)
    finally:
        env.close()


def test_tensorboard_and_progress_bar(tmp_path):
    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, tensorboard_log=str(tmp_path))
    model.learn(64, progress_bar=True)
    assert list(tmp_path.glob("PPORollback_1/events.out.tfevents.*"))
