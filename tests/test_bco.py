"""BCO: inverse model accuracy, learning budget, logging, save/load, clear errors; slow imitation runs."""

import csv
import time

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from test_demos import DictEnv, LineEnv, RandomModel, TupleEnv, WorkerRestarts

from sb3_cherry import PPORollback
from sb3_cherry.bco import BCO
from sb3_cherry.demos import DemoTrajectory, demos_to_transitions, load_demos, record_demos

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class BoxLineEnv(gym.Env):
    """``s' = s + a`` with ``a`` in ``Box(-1, 1, (2,))``; truncated after 10 steps."""

    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.state, self.steps = self.np_random.uniform(-3, 3, 2).astype(np.float32), 0
        return self.state.copy(), {}

    def step(self, action):
        self.state = (self.state + np.clip(action, -1, 1)).astype(np.float32)
        self.steps += 1
        return self.state.copy(), float(-np.abs(self.state).sum()), False, self.steps >= 10, {}


class ScriptedModel:
    """An "expert" from a function of the (batched) observations."""

    def __init__(self, policy):
        self.policy = policy

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self.policy(obs), state


def go_right(obs):
    return np.full(len(obs), 2)


def go_home(obs):
    return np.clip(-0.5 * obs, -1, 1).astype(np.float32)


def _random_transitions(env: gym.Env, n: int, seed: int = 123):
    """Fresh (s, a, s') from uniformly random actions (flat actions)."""
    trajectories = record_demos(RandomModel(env.action_space, seed=seed), env, n_episodes=n, seed=seed)
    return demos_to_transitions(trajectories)


@pytest.fixture(scope="module")
def line_demos(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "line.npz"
    record_demos(ScriptedModel(go_right), LineEnv(), n_episodes=10, path=path, seed=0)
    return path


def test_inverse_model_labels_discrete_actions(line_demos):
    model = BCO("MlpPolicy", LineEnv(), demonstrations=line_demos, n_pre_interactions=2000, seed=0)
    model.learn(2000)
    assert model.num_timesteps == 2000
    # held-out style check on fresh random interactions: s' = s + a - 1 is recovered
    fresh = _random_transitions(LineEnv(), 100)
    labels = model.infer_actions(fresh.obs, fresh.next_obs)
    assert labels.shape == (len(fresh), 1)
    assert np.mean(labels[:, 0] == fresh.acts) >= 0.95
    # the demonstrations' actions (which BCO does not read) are what the inverse model infers from their states
    demos = demos_to_transitions(load_demos(line_demos))
    assert np.mean(model.infer_actions(demos.obs, demos.next_obs)[:, 0] == demos.acts) >= 0.95
    # and the policy cloned "go right"
    actions, _ = model.predict(np.array([[0.0], [1.0], [2.0]], dtype=np.float32), deterministic=True)
    np.testing.assert_array_equal(actions, [2, 2, 2])


def test_inverse_model_continuous_and_tuple_actions(tmp_path):
    box_demos = tmp_path / "box.npz"
    record_demos(ScriptedModel(go_home), BoxLineEnv(), n_episodes=5, path=box_demos, seed=0)
    model = BCO(
        "MlpPolicy",
        BoxLineEnv(),
        demonstrations=box_demos,
        n_pre_interactions=2000,
        n_epochs_inverse=20,
        n_epochs_bc=300,
        seed=0,
    )
    model.learn(2000)
    fresh = _random_transitions(BoxLineEnv(), 50)
    assert np.mean(np.abs(model.infer_actions(fresh.obs, fresh.next_obs) - fresh.acts)) < 0.05
    obs = np.array([[1.0, -1.0], [0.5, 0.5]], dtype=np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(actions, go_home(obs), atol=0.2)

    tuple_demos = tmp_path / "tuple.npz"
    record_demos(RandomModel(TupleEnv.action_space), TupleEnv(), n_episodes=5, path=tuple_demos, seed=0)
    model = BCO("MlpPolicy", TupleEnv(), demonstrations=tuple_demos, n_pre_interactions=2000, n_epochs_inverse=20, seed=0)
    model.learn(2000)
    fresh = _random_transitions(TupleEnv(), 100)
    labels = model.infer_actions(fresh.obs, fresh.next_obs)
    assert np.mean(labels[:, 0] == fresh.acts[:, 0]) >= 0.95
    assert np.mean(np.abs(labels[:, 1] - fresh.acts[:, 1])) < 0.1
    action, _ = model.predict(fresh.obs[0], deterministic=True)
    assert TupleEnv.action_space.contains((action[0], np.asarray(action[1], dtype=np.float32)))


@pytest.mark.parametrize("distribution", ["beta", "tanh_normal"])
def test_bounded_distributions(tmp_path, distribution):
    path = tmp_path / "box.npz"
    record_demos(ScriptedModel(go_home), BoxLineEnv(), n_episodes=3, path=path, seed=0)
    model = BCO(
        "MlpPolicy",
        BoxLineEnv(),
        demonstrations=path,
        n_pre_interactions=300,
        n_epochs_bc=2,
        policy_kwargs=dict(action_distribution=distribution),
        inverse_model_kwargs=dict(action_distribution=distribution, net_arch=[32], activation_fn="tanh"),
        seed=0,
    )
    model.learn(300)
    actions, _ = model.predict(np.zeros((4, 2), dtype=np.float32))
    assert np.all(np.abs(actions) <= 1)


def test_alpha_rounds_budget_and_logs(tmp_path, line_demos):
    env = make_vec_env(LineEnv, n_envs=2, seed=0)
    model = BCO("MlpPolicy", env, demonstrations=line_demos, alpha=0.6, n_pre_interactions=100, n_epochs_bc=50, seed=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    n_demo = len(model._demo_transitions())  # 10 episodes of 3 steps
    assert n_demo == 30
    model.learn(400)
    # 100 random interactions |I_pre|, then rounds of alpha * |I_pre| = 60 policy interactions (Torabi et al. 2018,
    # Algorithm 1; the number of demonstration transitions plays no part): 100 + 5 * 60 = 400
    assert model.num_timesteps == 400
    assert model._n_rounds == 6
    assert len(model._agent_data) == 400
    with open(tmp_path / "progress.csv") as file:
        logs = list(csv.DictReader(file))
    assert len(logs) == 6
    for key in ["bco/inverse_loss", "bco/inverse_val_loss", "bco/inverse_accuracy", "bco/bc_loss", "rollout/ep_rew_mean"]:
        assert all(row[key] != "" for row in logs), key
    assert [int(row["time/total_timesteps"]) for row in logs] == [100, 160, 220, 280, 340, 400]
    # the cloned policy goes right: 3 steps per episode, return -3 (the random phase's episodes are not reported)
    assert float(logs[-1]["rollout/ep_rew_mean"]) > -3.5

    # a budget that does not divide into rounds is never exceeded
    model.learn(130)
    assert model.num_timesteps == 130


def test_round_size_follows_pre_interactions_and_budget_is_used(line_demos):
    """BCO(alpha) per Torabi et al. 2018, Algorithm 1: |I_post| = alpha * |I_pre| per round, whatever the number of
    demonstration transitions; with the defaults, learn(n) spends n; alpha=0 warns that the budget is not used."""
    for n_demo_episodes in (2, 10):
        trajectories = record_demos(ScriptedModel(go_right), LineEnv(), n_episodes=n_demo_episodes, seed=0)
        model = BCO("MlpPolicy", LineEnv(), demonstrations=trajectories, alpha=0.25, n_pre_interactions=80, n_epochs_bc=1)
        model.learn(80 + 3 * 20)
        assert (model.num_timesteps, model._n_rounds, len(model._agent_data)) == (140, 4, 140)
    model = BCO("MlpPolicy", LineEnv(), demonstrations=line_demos, n_epochs_inverse=1, n_epochs_bc=1)
    assert (model.alpha, model.n_pre_interactions) == (0.1, 10_000)
    model.learn(12_500)  # 10k random steps + rounds of 1000 policy steps, the last one 500
    assert (model.num_timesteps, model._n_rounds) == (12_500, 4)
    model = BCO("MlpPolicy", LineEnv(), demonstrations=line_demos, alpha=0.0, n_pre_interactions=50, n_epochs_bc=1)
    with pytest.warns(UserWarning, match=r"alpha=0 \(plain BCO\) stops after the pre-demonstration phase, having used 50 of"):
        model.learn(200)
    assert model.num_timesteps == 50


def test_save_load_round_trip(tmp_path, line_demos):
    model = BCO("MlpPolicy", LineEnv(), demonstrations=line_demos, alpha=1.0, n_pre_interactions=200, n_epochs_bc=2, seed=0)
    model.learn(260)
    obs = np.linspace(-3, 3, 13, dtype=np.float32).reshape(-1, 1)
    before, _ = model.predict(obs, deterministic=True)
    fresh = _random_transitions(LineEnv(), 10)
    labels = model.infer_actions(fresh.obs, fresh.next_obs)
    model.save(tmp_path / "bco")
    assert (tmp_path / "bco.zip").exists()

    loaded = BCO.load(tmp_path / "bco", env=model.get_env())
    after, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(labels, loaded.infer_actions(fresh.obs, fresh.next_obs))
    for name in ("policy", "inverse_model"):
        for p, q in zip(getattr(model, name).parameters(), getattr(loaded, name).parameters(), strict=True):
            assert th.equal(p, q)
    assert (loaded.alpha, loaded.n_pre_interactions, loaded._n_rounds) == (1.0, 200, model._n_rounds)
    assert loaded.demonstrations == str(line_demos)
    # the agent's transitions are not saved: learning again starts with a new pre-demonstration phase
    assert len(loaded._agent_data) == 0
    loaded.learn(200)
    assert len(loaded._agent_data) == 200

    # in-memory demonstrations are not saved with the model
    trajectories = record_demos(ScriptedModel(go_right), LineEnv(), n_episodes=2, seed=0)
    model = BCO("MlpPolicy", LineEnv(), demonstrations=trajectories, n_pre_interactions=50, n_epochs_bc=1, seed=0)
    model.learn(50)
    model.save(tmp_path / "in_memory.zip")
    loaded = BCO.load(tmp_path / "in_memory.zip", env=model.get_env())
    with pytest.raises(ValueError, match="BCO needs demonstrations"):
        loaded.learn(50)
    loaded = BCO.load(tmp_path / "in_memory.zip", env=model.get_env(), demonstrations=trajectories)
    loaded.learn(50)


def test_load_errors_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match=r"corrupt\.zip.*not a Stable-Baselines3 model"):
        BCO.load(corrupt)


def test_wrong_demonstrations_raise_clear_errors(tmp_path, line_demos):
    with pytest.raises(ValueError, match=r"line.npz\) have observations of shape \(1,\), but the environment's observation"):
        BCO("MlpPolicy", TupleEnv(), demonstrations=line_demos)
    with pytest.raises(ValueError, match="have Dict observations"):
        trajectories = record_demos(RandomModel(DictEnv.action_space), DictEnv(), n_episodes=1, seed=0)
        BCO("MlpPolicy", BoxLineEnv(), demonstrations=trajectories)
    with pytest.raises(ValueError, match="BCO needs demonstrations"):
        BCO("MlpPolicy", LineEnv()).learn(10)
    with pytest.raises(ValueError, match="left no environment interaction"):
        BCO("MlpPolicy", LineEnv(), demonstrations=line_demos, n_pre_interactions=0, alpha=0.0).learn(10)
    with pytest.raises(ValueError, match="give n_pre_interactions > 0, or alpha=0"):
        BCO("MlpPolicy", LineEnv(), demonstrations=line_demos, n_pre_interactions=0)
    for alpha in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha must be >= 0"):
            BCO("MlpPolicy", LineEnv(), demonstrations=line_demos, alpha=alpha)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        BCO("MlpPolicy", LineEnv(), demonstrations=line_demos, alpha=-1)
    with pytest.raises(ValueError, match="Unknown activation_fn"):
        BCO("MlpPolicy", LineEnv(), inverse_model_kwargs=dict(activation_fn="swish"))
    with pytest.raises(FileNotFoundError):
        BCO("MlpPolicy", LineEnv(), demonstrations=tmp_path / "nowhere.npz")


def test_dict_observations_and_vec_normalize(tmp_path):
    path = tmp_path / "dict.npz"
    record_demos(RandomModel(DictEnv.action_space), DictEnv(), n_episodes=3, path=path, seed=0)
    model = BCO("MultiInputPolicy", DictEnv(), demonstrations=path, alpha=1.0, n_pre_interactions=100, n_epochs_bc=1, seed=0)
    model.learn(124)
    action, _ = model.predict(DictEnv.observation_space.sample(), deterministic=True)
    assert action.shape == (2,)

    # VecNormalize: raw demonstrations and stored transitions are normalised with the current statistics
    box_demos = tmp_path / "box.npz"
    record_demos(ScriptedModel(go_home), BoxLineEnv(), n_episodes=5, path=box_demos, seed=0)
    env = VecNormalize(DummyVecEnv([BoxLineEnv]), norm_reward=False)
    model = BCO("MlpPolicy", env, demonstrations=box_demos, n_pre_interactions=2000, n_epochs_inverse=20, seed=0)
    model.learn(2000)
    fresh = _random_transitions(BoxLineEnv(), 50)
    assert np.mean(np.abs(model.infer_actions(fresh.obs, fresh.next_obs) - fresh.acts)) < 0.1


# ------------------------------------------------------------------------------------------------------------ slow
def _linear(value: float):
    return lambda progress_remaining: progress_remaining * value


def _record(record_property, model, **returns: float) -> None:
    """Keep a slow test's figures in its report (``benchmarks/slow_tests.py`` collects them)."""
    for key, value in returns.items():
        record_property(f"{key}_return" if key != "bco_std" else "bco_return_std", round(float(value), 3))
    record_property("num_timesteps", model.num_timesteps)


@pytest.mark.slow
def test_bco_cartpole(tmp_path, record_property):
    """BCO(alpha) from 20 state-only expert episodes reaches >= 95% of the expert's return within 50k interactions."""
    start = time.time()
    expert = PPORollback(
        "MlpPolicy",
        make_vec_env("CartPole-v1", n_envs=8, seed=0),
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        ent_coef=0.0,
        learning_rate=_linear(1e-3),
        clip_range=_linear(0.2),
        rollback_alpha=0.1,
        seed=0,
    )
    expert.learn(100_000)
    expert_time = time.time() - start
    expert_return, _ = evaluate_policy(expert, make_vec_env("CartPole-v1", seed=100), n_eval_episodes=20)
    path = tmp_path / "cartpole.npz"
    trajectories = record_demos(expert, "CartPole-v1", n_episodes=20, path=path, seed=0)
    demo_return = np.mean([t.rews.sum() for t in trajectories])

    start = time.time()
    # the defaults alone (issue 21): BCO(0.1) with |I_pre| = 10k, i.e. 10k random steps + 40 rounds of 1k policy steps
    model = BCO("MlpPolicy", "CartPole-v1", demonstrations=path, seed=0)
    model.learn(50_000)
    bco_time = time.time() - start
    bco_return, bco_std = evaluate_policy(model, make_vec_env("CartPole-v1", seed=200), n_eval_episodes=20)
    print(
        f"\nCartPole: expert {expert_return:.1f} (demos {demo_return:.1f}, trained in {expert_time:.0f}s); "
        f"BCO {bco_return:.1f} ± {bco_std:.1f} after {model.num_timesteps} interactions, {model._n_rounds} rounds, "
        f"{bco_time:.0f}s"
    )
    _record(record_property, expert=expert_return, demos=demo_return, bco=bco_return, bco_std=bco_std, model=model)
    assert model.num_timesteps == 50_000  # the whole budget is used
    assert model._n_rounds == 41
    assert bco_return >= 0.95 * expert_return


@pytest.mark.slow
def test_bco_pendulum(tmp_path, record_property):
    """BCO(alpha) from 20 state-only expert episodes gets within 20% of the expert's (negative) return."""
    start = time.time()
    expert = PPORollback(
        "MlpPolicy",
        make_vec_env("Pendulum-v1", n_envs=4, seed=0),
        n_steps=1024,
        gae_lambda=0.95,
        gamma=0.9,
        n_epochs=10,
        ent_coef=0.0,
        learning_rate=1e-3,
        clip_range=0.2,
        use_sde=True,
        sde_sample_freq=4,
        seed=0,
    )
    expert.learn(100_000)
    expert_time = time.time() - start
    expert_return, _ = evaluate_policy(expert, make_vec_env("Pendulum-v1", seed=100), n_eval_episodes=20)
    assert expert_return >= -300, f"the PPORollback expert only reached {expert_return:.1f}"
    path = tmp_path / "pendulum.npz"
    record_demos(expert, "Pendulum-v1", n_episodes=20, path=path, seed=0)

    start = time.time()
    model = BCO(
        "MlpPolicy",
        "Pendulum-v1",
        demonstrations=path,
        alpha=0.1,  # alpha * |I_pre| = 2k policy steps per round
        n_pre_interactions=20_000,
        n_epochs_inverse=3,
        n_epochs_bc=50,
        seed=0,
    )
    model.learn(50_000)
    bco_time = time.time() - start
    bco_return, bco_std = evaluate_policy(model, make_vec_env("Pendulum-v1", seed=200), n_eval_episodes=20)
    print(
        f"\nPendulum: expert {expert_return:.1f} (trained in {expert_time:.0f}s); BCO {bco_return:.1f} ± {bco_std:.1f} "
        f"after {model.num_timesteps} interactions, {bco_time:.0f}s"
    )
    _record(record_property, expert=expert_return, bco=bco_return, bco_std=bco_std, model=model)
    assert bco_return >= 1.2 * expert_return


def test_load_accepts_a_path_object_for_the_demonstrations(tmp_path, line_demos):
    import pathlib

    model = BCO("MlpPolicy", LineEnv(), demonstrations=line_demos, n_pre_interactions=50, alpha=0, n_epochs_bc=1, seed=0)
    model.learn(50)
    model.save(tmp_path / "bco")
    loaded = BCO.load(tmp_path / "bco", env=LineEnv(), demonstrations=pathlib.Path(line_demos))
    loaded.learn(50)
    assert loaded.demonstrations == str(line_demos)  # a str, saved with the model as the constructor's
    loaded.save(tmp_path / "again")
    assert BCO.load(tmp_path / "again").demonstrations == str(line_demos)


def test_transitions_stay_consistent_after_a_callback_stop(line_demos):
    # LineEnv: s' = s + a - 1 per step; a callback that stops learn() after 30 steps, then learn() continues: every
    # stored (s, a, s') must be one real step (the step the stop came at included)
    from stable_baselines3.common.callbacks import BaseCallback

    class StopAt(BaseCallback):
        def _on_step(self):
            return self.num_timesteps < 30

    model = BCO(
        "MlpPolicy", LineEnv(max_steps=50), demonstrations=line_demos, n_pre_interactions=100, alpha=0.5, n_epochs_bc=1,
        n_epochs_inverse=1, seed=0, validation_fraction=0.0,
    )  # fmt: skip
    model.learn(200, callback=StopAt())
    assert model.num_timesteps == len(model._agent_data) == model._n_pre_collected == 30
    model.learn(170, reset_num_timesteps=False)
    obs, next_obs, actions = model._agent_data.get(False)
    np.testing.assert_allclose(next_obs[:, 0], obs[:, 0] + actions[:, 0] - 1, atol=1e-5)


def test_chunk_stop_rule_measures_rounds_not_the_random_phase(line_demos, tmp_path):
    """The chunk stop rule compares the next rollout with the room left: after BCO's 300 random steps come rounds of
    96 (alpha * 300). A checkpoint every 256 steps and a stop after 512: checkpoints at 300 (for 256: 256 + 96 <= 512,
    go on) and 588 (for 512: stop); taking the random phase as the rollout stopped at 300."""
    from sb3_cherry.common.checkpoint import RunCheckpointCallback

    model = BCO(
        "MlpPolicy", LineEnv(max_steps=50), demonstrations=line_demos, n_pre_interactions=300, alpha=0.32,
        n_epochs_bc=1, n_epochs_inverse=1, seed=0, validation_fraction=0.0,
    )  # fmt: skip
    assert model.next_rollout_steps() == 300  # the random phase first
    saver = RunCheckpointCallback(tmp_path / "ckpt", save_freq=256, stop_after=512)
    model.learn(2000, callback=saver)
    assert saver.saved_at == 588
    assert model.next_rollout_steps() == 96  # then rounds


def test_run_checkpoints_continue_exactly(line_demos, tmp_path):
    """A BCO run stopped at a run checkpoint and resumed in a fresh model ends with the uninterrupted run's policy and
    inverse model bit for bit: the checkpoint holds the agent's transitions, the random steps taken and whether a
    round is due (the resumed learn does not start with another round on the same data)."""
    from stable_baselines3.common.monitor import Monitor

    from sb3_cherry.common.checkpoint import RunCheckpointCallback, continue_run, load_run_checkpoint

    def env():
        return DummyVecEnv([lambda: Monitor(LineEnv(max_steps=50))])

    kwargs = dict(n_pre_interactions=300, alpha=0.32, n_epochs_bc=2, n_epochs_inverse=2, seed=0)
    reference = BCO("MlpPolicy", env(), demonstrations=line_demos, **kwargs).learn(800)
    first = BCO("MlpPolicy", env(), demonstrations=line_demos, **kwargs)
    first.learn(800, callback=RunCheckpointCallback(tmp_path / "ckpt", save_freq=256, stop_after=256))
    # chunk 2 from the checkpoint after the random phase and its round; chunk 3 from one after a policy round
    model, state = load_run_checkpoint(BCO, tmp_path / "ckpt", env(), demonstrations=line_demos)
    assert state.num_timesteps == 300 and state.approximate is None
    assert model._n_pre_collected == 300 and len(model._agent_data) == 300 and not model._round_pending
    continue_run(model, state, callback=RunCheckpointCallback(tmp_path / "ckpt", save_freq=96, stop_after=96))
    model, state = load_run_checkpoint(BCO, tmp_path / "ckpt", env(), demonstrations=line_demos)
    assert state.num_timesteps == 396 and len(model._agent_data) == 396
    continue_run(model, state)
    assert model.num_timesteps == reference.num_timesteps and model._n_rounds == reference._n_rounds
    for ours, theirs in ((model.policy, reference.policy), (model.inverse_model, reference.inverse_model)):
        for (key, value), other in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
            assert th.equal(value, other), key


class FlagEnv(gym.Env):
    """``[step, flag]``: the flag is 1 only in the final observation (a "landed" / "fell" indicator)."""

    observation_space = spaces.Box(-1e9, 1e9, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0, 0], np.float32), {}

    def step(self, action):
        self.t += 1
        ended = self.t >= 20
        return np.array([self.t, 1.0 if ended else 0.0], np.float32), 1.0, ended, False, {}


def test_final_observations_through_vec_normalize_are_the_raw_ones(tmp_path):
    """VecNormalize's terminal_observation is normalised and clipped to clip_obs (a rare flag hits the clip): BCO must
    store the env's own final observation, as the demonstrations hold it, not unnormalize(clip(...))."""
    path = tmp_path / "flag.npz"
    record_demos(ScriptedModel(lambda obs: np.zeros(len(obs), int)), FlagEnv(), n_episodes=2, path=path, seed=0)
    venv = VecNormalize(DummyVecEnv([FlagEnv]), norm_reward=False, clip_obs=3.0)
    model = BCO("MlpPolicy", venv, demonstrations=path, n_pre_interactions=400, alpha=0, n_epochs_inverse=1, n_epochs_bc=1)
    model.learn(400)
    obs, next_obs, _ = model._agent_data.get(False)
    final = obs[:, 0] == 19
    assert final.sum() > 5 and np.all(next_obs[final] == np.array([20.0, 1.0], np.float32))
    assert venv.venv.__class__ is DummyVecEnv  # the reader sits under the VecNormalize only during steps


def test_a_second_learn_does_not_train_again_on_the_last_round(line_demos):
    """Rounds happen on new transitions only: two learn calls give the rounds of one (and learn after a finished
    alpha=0 run warns instead of training again on the same data)."""
    kwargs = dict(n_pre_interactions=200, alpha=0.5, n_epochs_inverse=1, n_epochs_bc=1, seed=0)
    one = BCO("MlpPolicy", LineEnv(), demonstrations=line_demos, **kwargs).learn(600)
    two = BCO("MlpPolicy", LineEnv(), demonstrations=line_demos, **kwargs)
    two.learn(300).learn(300, reset_num_timesteps=False)
    assert (one._n_rounds, one.num_timesteps) == (two._n_rounds, two.num_timesteps) == (5, 600)
    plain = BCO("MlpPolicy", LineEnv(), demonstrations=line_demos, **{**kwargs, "alpha": 0.0})
    plain.learn(200)  # the pre-demonstration phase and its round
    with pytest.warns(UserWarning, match="has already collected its pre-demonstration phase"):
        plain.learn(200)
    assert plain._n_rounds == 1


def test_actions_that_do_not_start_at_zero_are_refused(line_demos):
    class Shifted(LineEnv):
        action_space = spaces.Discrete(3, start=-1)

    with pytest.raises(ValueError, match=r"does not start at 0"):
        BCO("MlpPolicy", Shifted(), demonstrations=line_demos)

    class NestedShifted(LineEnv):
        action_space = spaces.Tuple((spaces.Tuple((spaces.Discrete(3, start=1),)), spaces.Discrete(2)))

    with pytest.raises(ValueError, match=r"Discrete\(3, start=1\) does not start at 0"):
        BCO("MlpPolicy", NestedShifted(), demonstrations=line_demos)


def test_frame_stack_above_vec_normalize_is_refused(line_demos):
    from stable_baselines3.common.vec_env import VecFrameStack

    venv = VecFrameStack(VecNormalize(DummyVecEnv([LineEnv])), 2)
    with pytest.raises(ValueError, match="VecFrameStack above a VecNormalize"):
        BCO("MlpPolicy", venv, demonstrations=line_demos)


def test_held_out_loss_is_evaluated_in_chunks(tmp_path, line_demos):
    # the held-out check runs in chunks of max(batch_size, 4096) (one pass needed memory for the whole set): its loss is
    # the mean negative log-likelihood over all held-out transitions, as one pass over them computes it
    model = BCO(
        "MlpPolicy", make_vec_env(LineEnv, n_envs=4, seed=0), demonstrations=line_demos, n_pre_interactions=6000,
        alpha=0, validation_fraction=0.9, n_epochs_inverse=1, n_epochs_bc=1, seed=0,
    )  # fmt: skip
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(6000)
    obs, next_obs, actions = model._agent_data.get(held_out=True)
    assert len(actions) > 4096  # more than one chunk
    with th.no_grad():
        one_pass = -model.inverse_model.log_prob(th.as_tensor(obs), th.as_tensor(next_obs), th.as_tensor(actions)).mean()
    with open(tmp_path / "progress.csv") as file:
        logged = float(list(csv.DictReader(file))[-1]["bco/inverse_val_loss"])
    assert logged == pytest.approx(one_pass.item(), rel=1e-5)


class WideBoxEnv(BoxLineEnv):
    """BoxLineEnv with actions in ``Box(-2, 2)``: a squashed policy's [-1, 1] is not the env's scale."""

    action_space = spaces.Box(-2, 2, (2,), np.float32)

    def step(self, action):
        self.state = (self.state + np.clip(action, -2, 2)).astype(np.float32)
        self.steps += 1
        return self.state.copy(), 0.0, False, self.steps >= 10, {}


def test_squashed_gsde_policy_learns_labels_in_the_envs_scale(tmp_path):
    # the expert always plays 1.5; a tanh-squashed policy (SB3 rescales its [-1, 1] for the env) was trained on the
    # env-scale labels, clamped to its bound: it played 2.0
    path = tmp_path / "wide.npz"
    record_demos(ScriptedModel(lambda obs: np.full((len(obs), 2), 1.5, np.float32)), WideBoxEnv(), 10, path, seed=0)
    model = BCO("MlpPolicy", WideBoxEnv(), demonstrations=path, alpha=0.2, n_pre_interactions=1000, n_epochs_inverse=20,
                n_epochs_bc=100, policy_kwargs=dict(use_sde=True, squash_output=True), seed=0)  # fmt: skip
    exploration = model.policy.action_dist.exploration_mat.clone()
    model.learn(1600)
    actions, _ = model.predict(np.zeros((3, 2), np.float32), deterministic=True)
    np.testing.assert_allclose(actions, 1.5, atol=0.15)
    # gSDE's exploration matrix is drawn anew for each round of policy interactions (it stayed the initial one)
    assert not th.equal(model.policy.action_dist.exploration_mat, exploration)


def test_images_with_vec_normalize_are_refused():
    # SB3 puts VecTransposeImage above the VecNormalize: BCO stored channel-last observations for an inverse model
    # that sees channel-first demonstrations (labels near chance, or a CNN shape error)
    env = VecNormalize(make_vec_env("sb3_cherry/PixelCatch-v0", n_envs=1), norm_obs=False)
    with pytest.raises(ValueError, match="image observations with a VecNormalize"):
        BCO("CnnPolicy", env, demonstrations=None)


class _NoTerminal(DummyVecEnv):
    """A VecEnv that reports episode ends without the final observation."""

    def step_wait(self):
        obs, rewards, dones, infos = super().step_wait()
        for info in infos:
            info.pop("terminal_observation", None)
        return obs, rewards, dones, infos


def test_episode_end_without_terminal_observation_is_refused(line_demos):
    from test_demos import LineEnv as Line

    model = BCO("MlpPolicy", _NoTerminal([Line]), demonstrations=line_demos, n_pre_interactions=200, seed=0)
    with pytest.raises(ValueError, match="without info\\['terminal_observation'\\]"):
        model.learn(200)


class WalkEnv(gym.Env):
    """``[position, time]``; ``Discrete(3)`` moves by ``a - 1``; episodes of 2-7 steps end by termination or time limit;
    resets far from any final position, so a transition paired with the next episode's reset shows."""

    observation_space = spaces.Box(-1e6, 1e6, (2,), np.float32)
    action_space = spaces.Discrete(3)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.position, self.t = 100.0 + 7 * int(self.np_random.integers(10)), 0
        self.length = int(self.np_random.integers(2, 8))
        return np.array([self.position, self.t], np.float32), {}

    def step(self, action):
        self.position += float(int(action) - 1)
        self.t += 1
        done = self.t >= self.length
        terminated = done and bool(self.np_random.random() < 0.5)
        return np.array([self.position, self.t], np.float32), 0.0, terminated, done and not terminated, {}


@pytest.mark.parametrize("normalize", [False, True])
def test_stored_transitions_are_the_envs_own_across_auto_resets(normalize):
    """Every stored (s, a, s') of 4 auto-resetting envs obeys the env's dynamics (s' = s + a - 1, time + 1), the
    random and the policy phases, training and held-out parts, also under a clipping VecNormalize (raw values)."""
    demos = record_demos(ScriptedModel(lambda obs: np.full(len(obs), 2)), WalkEnv(), n_episodes=5, seed=0)
    env = make_vec_env(WalkEnv, n_envs=4, seed=0)
    if normalize:
        env = VecNormalize(env, norm_reward=False, clip_obs=2.0)
    model = BCO("MlpPolicy", env, demonstrations=demos, alpha=0.5, n_pre_interactions=400, n_epochs_bc=1,
                n_epochs_inverse=1, validation_fraction=0.3, seed=0)  # fmt: skip
    model.learn(1200)
    stored = 0
    for held_out in (False, True):
        obs, next_obs, actions = model._agent_data.get(held_out)
        np.testing.assert_array_equal(next_obs[:, 1], obs[:, 1] + 1)
        np.testing.assert_allclose(next_obs[:, 0] - obs[:, 0], actions[:, 0] - 1, atol=1e-4)
        stored += len(actions)
    assert stored == 1200 and model._n_rounds >= 2


def test_steps_that_restart_a_worker_are_not_stored():
    """A RayVecEnv worker restart reports done=True with info["worker_restarted"] and the previous observation as
    terminal observation, without applying the action: no (s, a, s) transition is stored, every other one is."""
    demos = record_demos(ScriptedModel(lambda obs: np.full(len(obs), 2)), WalkEnv(), n_episodes=5, seed=0)
    env = WorkerRestarts(make_vec_env(WalkEnv, n_envs=2, seed=0), restart_at={3, 150})  # in both phases
    model = BCO("MlpPolicy", env, demonstrations=demos, alpha=0.5, n_pre_interactions=200, n_epochs_bc=1,
                n_epochs_inverse=1, validation_fraction=0.3, seed=0)  # fmt: skip
    model.learn(400)
    assert env.n_restarts == 2
    stored = 0
    for held_out in (False, True):
        obs, next_obs, actions = model._agent_data.get(held_out)
        np.testing.assert_array_equal(next_obs[:, 1], obs[:, 1] + 1)  # time advances by one: a real env step
        np.testing.assert_allclose(next_obs[:, 0] - obs[:, 0], actions[:, 0] - 1, atol=1e-4)
        stored += len(actions)
    assert model.num_timesteps == 400 and stored == 400 - 2 * 2  # 2 restarts of both envs (one worker)


def test_float_budget():
    """learn(350.0), as SB3 algorithms accept: 200 random steps, a round of 0.5 * 200 = 100 policy steps, and the 50
    left."""
    demos = record_demos(ScriptedModel(go_right), LineEnv(), n_episodes=2, seed=0)
    model = BCO("MlpPolicy", LineEnv(), demonstrations=demos, n_pre_interactions=200, alpha=0.5, n_epochs_bc=1,
                n_epochs_inverse=1, seed=0)  # fmt: skip
    model.learn(350.0)
    assert model.num_timesteps == 350 and model._n_rounds == 3


def test_tuple_actions_given_as_tuples_in_memory():
    """Trajectories in memory whose Tuple actions are tuples (save_demos takes them): BCO does not read the actions."""
    obs = np.array([[0, 0], [1, 0.5], [2, 0.2]], np.float32)
    acts = [(2, np.array([0.5], np.float32)), (2, np.array([-0.3], np.float32))]
    trajectory = DemoTrajectory(obs=obs, acts=acts, infos=None, terminal=False, rews=np.zeros(2, np.float32))  # type: ignore[arg-type]
    model = BCO("MlpPolicy", TupleEnv(), demonstrations=[trajectory], n_pre_interactions=20, alpha=0, n_epochs_bc=1,
                n_epochs_inverse=1, seed=0)  # fmt: skip
    demos = model._demo_transitions()
    np.testing.assert_array_equal(demos.obs, obs[:2])
    np.testing.assert_array_equal(demos.next_obs, obs[1:])
    model.learn(20)
    assert model._n_rounds == 1


class ScheduledLengthsEnv(gym.Env):
    """Episodes of the given lengths (then 10 steps each), reward 1 per step: ``rollout/ep_len_mean`` and
    ``rollout/ep_rew_mean`` name the episodes that were reported."""

    observation_space = spaces.Box(-1e3, 1e3, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, lengths: list[int]):
        self.lengths = list(lengths)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.length = 0, self.lengths.pop(0) if self.lengths else 10
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), 1.0, False, self.t >= self.length, {}


def test_episode_straddling_the_switch_to_the_policy_is_not_reported(tmp_path):
    """Random phase: steps 0-30 (an episode of 20 steps, then one of 45 that ends at step 65, in the policy's first
    round); rounds of 30 policy steps. After the random phase only the policy's own episodes (10 steps) are reported."""
    demos = record_demos(ScriptedModel(lambda obs: np.zeros(len(obs), int)), ScheduledLengthsEnv([5]), n_episodes=1)
    model = BCO("MlpPolicy", ScheduledLengthsEnv([20, 45]), demonstrations=demos, n_pre_interactions=30, alpha=1.0,
                n_epochs_bc=1, n_epochs_inverse=1, seed=0)  # fmt: skip
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(120)
    with open(tmp_path / "progress.csv") as file:
        logged = {int(row["time/total_timesteps"]): row["rollout/ep_len_mean"] for row in csv.DictReader(file)}
    # 30: the random episode; 60: none ended since (the 45-step one began in the random phase); 90, 120: 10-step ones
    assert logged == {30: "20.0", 60: "", 90: "10.0", 120: "10.0"}


def test_episode_flags_of_the_random_phase_end_with_a_reset():
    """A new learn that resets the env starts new episodes: the flag of an episode begun in the random phase must not
    hide the policy's first episode after the reset."""
    demos = record_demos(ScriptedModel(lambda obs: np.zeros(len(obs), int)), ScheduledLengthsEnv([5]), n_episodes=1)
    model = BCO("MlpPolicy", ScheduledLengthsEnv([20, 100]), demonstrations=demos, n_pre_interactions=30, alpha=1.0,
                n_epochs_bc=1, n_epochs_inverse=1, seed=0)  # fmt: skip
    model.learn(60)  # the 100-step episode began at step 20, in the random phase, and runs on
    assert model._random_episode_running is not None
    model.learn(90, reset_num_timesteps=True)  # a reset: 10-step policy episodes from here on, all reported
    lengths = [info["l"] for info in model.ep_info_buffer]
    assert lengths == [10] * 9, lengths
