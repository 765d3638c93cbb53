"""Learning: a fast test that CartPole improves on a small budget, and slow tests at the issue's thresholds."""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from sb3_cherry import CherryA2C, PPORollback
from sb3_cherry.common.zoo_config import load_zoo_entry


def train_from_zoo(algo_cls, algo: str, env_id: str, seed: int = 0, n_timesteps: int | None = None, **overrides):
    """Train with the shipped zoo config entry (optionally overriding hyperparameters)."""
    entry = load_zoo_entry(algo, env_id)
    kwargs = {**entry.model_kwargs, **overrides}
    if "policy_kwargs" in overrides:
        kwargs["policy_kwargs"] = {**entry.model_kwargs.get("policy_kwargs", {}), **overrides["policy_kwargs"]}
    env = make_vec_env(env_id, n_envs=entry.n_envs, seed=seed)
    if entry.normalize is not None:
        env = VecNormalize(env, **entry.normalize)
    model = algo_cls(env=env, seed=seed, **kwargs)
    model.learn(n_timesteps or entry.n_timesteps)
    return model


def evaluate(model, env_id: str, n_episodes: int = 10, deterministic: bool = True) -> float:
    env = make_vec_env(env_id, n_envs=1, seed=123)
    train_env = model.get_vec_normalize_env()
    if train_env is not None:
        env = VecNormalize(env, training=False, norm_reward=False)
        env.obs_rms = train_env.obs_rms
    mean, _ = evaluate_policy(model, env, n_eval_episodes=n_episodes, deterministic=deterministic)
    return float(mean)


def record(record_property, score: float, model) -> float:
    """Keep a learning test's figure in its report (``benchmarks/slow_tests.py`` collects them) and return it."""
    record_property("mean_return", round(score, 3))
    record_property("num_timesteps", model.num_timesteps)
    print(f"\nmean return {score:.3f} after {model.num_timesteps} steps")
    return score


def test_cartpole_improves_fast():
    # 50k steps of the zoo config (half its budget), fixed seed, torch on one thread so that the run is the same on
    # every machine (the result depended on the thread count: 158 at 25k steps with 1 thread, 500 with 2). The
    # *sampled* actions of the untrained policy are near random (~22); after training both the sampled and the
    # deterministic policy are near the maximum (measured with 1 thread: 500 at 40k and at 50k steps).
    threads = th.get_num_threads()
    th.set_num_threads(1)
    try:
        untrained = PPORollback("MlpPolicy", "CartPole-v1", seed=0)
        assert evaluate(untrained, "CartPole-v1", deterministic=False) < 60
        model = train_from_zoo(PPORollback, "ppo_rollback", "CartPole-v1", n_timesteps=50_000)
    finally:
        th.set_num_threads(threads)
    assert evaluate(model, "CartPole-v1", deterministic=False) > 400
    assert evaluate(model, "CartPole-v1") > 450


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_cartpole_zoo_config_solves(seed, record_property):
    model = train_from_zoo(PPORollback, "ppo_rollback", "CartPole-v1", seed=seed)
    assert model.num_timesteps <= 100_000 + 256  # the last rollout (8 envs x 32 steps) may overshoot
    score = record(record_property, evaluate(model, "CartPole-v1"), model)
    assert score >= 475


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        {},  # zoo entry: Gaussian with gSDE
        {"use_sde": False, "policy_kwargs": {"action_distribution": "beta"}},
        {"use_sde": False, "policy_kwargs": {"action_distribution": "tanh_normal"}},
    ],
    ids=["normal_sde", "beta", "tanh_normal"],
)
def test_pendulum_learns(overrides, record_property):
    model = train_from_zoo(PPORollback, "ppo_rollback", "Pendulum-v1", n_timesteps=200_000, **overrides)
    assert record(record_property, evaluate(model, "Pendulum-v1"), model) >= -300


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["one_step", "n_step", "vtrace"])
def test_estimators_solve_cartpole(estimator, record_property):
    model = train_from_zoo(PPORollback, "ppo_rollback", "CartPole-v1", returns_estimator=estimator, n_step=8)
    assert record(record_property, evaluate(model, "CartPole-v1"), model) >= 475


PENDULUM_A2C_SEED_0 = (
    "the zoo entry's A2C with gSDE is seed-sensitive on Pendulum-v1 (rl-zoo: -163 +- 103): with torch on one thread, "
    "seed 0 ends at -992 after 1M steps (benchmarks/results/slow_tests.json); CherryA2C is bit-identical to SB3's "
    "A2C on this entry and seed (checked over the first 100k steps); 3 seeds: benchmarks/results/Pendulum-v1.csv "
    "(-265 +- 113)"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "env_id, threshold",
    [
        ("CartPole-v1", 475),
        pytest.param("Pendulum-v1", -300, marks=pytest.mark.xfail(reason=PENDULUM_A2C_SEED_0, strict=False)),
    ],
)
def test_cherry_a2c_learns(env_id, threshold, record_property):
    model = train_from_zoo(CherryA2C, "cherry_a2c", env_id)
    assert record(record_property, evaluate(model, env_id), model) >= threshold


def test_random_cartpole_is_low():
    # Sanity of the threshold above: a random policy scores ~22
    env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
    rewards, _obs, total, episodes = [], env.reset(), 0.0, 0
    while episodes < 20:
        _obs, reward, done, _ = env.step(np.array([env.action_space.sample()]))
        total += reward[0]
        if done[0]:
            rewards.append(total)
            total, episodes = 0.0, episodes + 1
    assert np.mean(rewards) < 60


@pytest.mark.slow
def test_hybrid_goal_learns(record_property):
    # Tuple(Discrete, Tuple(Box, Box, Box)) policy: random -14.7, best discrete-only policy -0.9, expert 4.2
    model = train_from_zoo(PPORollback, "ppo_rollback", "sb3_cherry/HybridGoal-v0")
    assert record(record_property, evaluate(model, "sb3_cherry/HybridGoal-v0", n_episodes=50), model) >= 2.0


def test_pixel_catch_cnn_learns(record_property):
    # Image observations through CnnPolicy (NatureCNN on 36x36x1): the zoo entry's 40k steps, deterministic evaluation.
    # Random play scores -0.98, the optimum is +2.0.
    model = train_from_zoo(PPORollback, "ppo_rollback", "sb3_cherry/PixelCatch-v0", device="cpu")
    assert record(record_property, evaluate(model, "sb3_cherry/PixelCatch-v0", n_episodes=50), model) >= 1.8


def test_dict_reach_multi_input_learns(record_property):
    # Dict observations through MultiInputPolicy: the zoo entry's 30k steps. Random actions score 0.07, heading for the
    # wrong goal 0.23, the expert 2.13: >= 1.5 needs the discrete "target" key to be read.
    model = train_from_zoo(PPORollback, "ppo_rollback", "sb3_cherry/DictReach-v0", device="cpu")
    assert record(record_property, evaluate(model, "sb3_cherry/DictReach-v0", n_episodes=50), model) >= 1.5


def test_zoo_entry_normalization_as_rl_zoo3():
    # ``normalize: true`` means VecNormalize with the model's gamma (rl_zoo3's ExperimentManager); no key: none
    assert load_zoo_entry("ppo_rollback", "Hopper-v5").normalize == {"gamma": 0.999}
    assert load_zoo_entry("cherry_a2c", "Pendulum-v1").normalize == {"gamma": 0.9}
    assert load_zoo_entry("ppo_rollback", "CartPole-v1").normalize is None
