"""GAIL / AIRL (SB3 algorithms over imitation): runs, SB3 method set, save/load, Tuple actions, VecNormalize, errors, zoo;
slow CartPole GAIL."""

import base64
import dataclasses
import io
import json
import pathlib
import pickle
import re
import subprocess
import sys
import time
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch as th
import yaml
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import sb3_cherry
from sb3_cherry import PPORollback, RecurrentPPORollback
from sb3_cherry.adversarial import AIRL, GAIL, reward_net_path
from sb3_cherry.adversarial.serialization import CONFIG_ENTRY, REWARD_NET_ENTRY
from sb3_cherry.adversarial.wrappers import canonical_flat_actions
from sb3_cherry.common.zoo_config import load_zoo_entry
from sb3_cherry.demos import load_demos, record_demos
from sb3_cherry.envs.hybrid_goal import expert_action

ALGOS = [GAIL, AIRL]
SMALL = dict(
    generator_kwargs=dict(n_steps=128, batch_size=128, n_epochs=2),
    demo_batch_size=256,
    allow_variable_horizon=True,  # CartPole-v1 ends episodes on failure
    seed=0,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ScriptedModel:
    """An "expert" from a function of the (batched) observations."""

    def __init__(self, policy):
        self.policy = policy

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self.policy(obs), state


def balance(obs):
    """Hand-written CartPole controller (keeps the pole up for the 500 steps)."""
    return (obs[:, 2] + 0.5 * obs[:, 3] + 0.1 * obs[:, 1] > 0).astype(np.int64)


@pytest.fixture(scope="module")
def cartpole_demos(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "cartpole.npz"
    trajectories = record_demos(ScriptedModel(balance), "CartPole-v1", n_episodes=4, path=path, seed=0)
    assert all(len(t) == 500 for t in trajectories)
    return str(path)


@pytest.fixture(scope="module")
def hybrid_demos(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "hybrid.npz"
    expert = ScriptedModel(lambda obs: [expert_action(o) for o in obs])
    record_demos(expert, "sb3_cherry/HybridGoal-v0", n_episodes=20, path=path, seed=0)
    return str(path)


@pytest.fixture
def zoo_with_adversarial(monkeypatch):
    """``gail`` / ``airl`` in ``sb3_cherry.zoo_algorithms()`` (a no-op once the package registers them)."""
    algos = sb3_cherry.zoo_algorithms()
    if "gail" not in algos or "airl" not in algos:
        monkeypatch.setattr(sb3_cherry, "zoo_algorithms", lambda: {**algos, "gail": GAIL, "airl": AIRL})


def cartpole(n_envs=4, seed=0):
    return make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed)


def demo_observations(path, n=64):
    return np.concatenate([np.asarray(t.obs[:-1]) for t in load_demos(path)])[:n]


def assert_state_dicts_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert th.equal(a[key].cpu(), b[key].cpu()), key


# ------------------------------------------------------------------------------------------------------- imitation
def test_import_without_imitation():
    """``import sb3_cherry`` / ``sb3_cherry.adversarial`` neither need nor import imitation."""
    code = (
        "import sys\n"
        "sys.modules['imitation'] = None\n"
        "import sb3_cherry, sb3_cherry.adversarial\n"
        "from sb3_cherry.adversarial import AIRL, GAIL\n"
        "assert not [m for m in sys.modules if m.startswith('imitation.')], 'imitation submodule imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("algo", ALGOS)
def test_missing_imitation_says_how_to_install(monkeypatch, cartpole_demos, tmp_path, algo):
    monkeypatch.setitem(sys.modules, "imitation", None)
    for make in (
        lambda: algo("MlpPolicy", "CartPole-v1", demonstrations=cartpole_demos),
        lambda: algo.load(tmp_path / "model.zip"),
    ):
        with pytest.raises(ImportError) as info:
            make()
        message = str(info.value)
        assert f"{algo.__name__} needs the `imitation` package" in message
        assert "pip install --no-deps imitation==1.0.1" in message and "\n" not in message
        assert "sb3_cherry[imitation]" not in message  # an empty extra: installing it does nothing


# ---------------------------------------------------------------------------------------------------------- runs
@pytest.mark.parametrize("algo", ALGOS)
def test_run_cartpole(cartpole_demos, algo):
    model = algo("MlpPolicy", cartpole(), demonstrations=cartpole_demos, n_disc_updates_per_round=3, **SMALL)
    initial = {key: value.clone() for key, value in model.reward_net.state_dict().items()}
    model.learn(2048)
    assert model.num_timesteps == 2048
    assert model.trainer._disc_step == 4 * 3  # a round of 3 updates after each of the 4 rollouts (4 envs x 128 steps)
    assert model.trainer._gen_replay_buffer.size() == 512
    changed = [key for key, value in model.reward_net.state_dict().items() if not th.equal(value, initial[key])]
    assert changed, "the discriminator did not train"
    obs = demo_observations(cartpole_demos)
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (len(obs),)


def test_gen_train_timesteps_spaces_the_rounds(cartpole_demos):
    model = GAIL("MlpPolicy", cartpole(), demonstrations=cartpole_demos, gen_train_timesteps=1024, **SMALL)
    model.learn(2048)
    assert model.trainer._disc_step == 2 * 2  # every second rollout, 2 updates each (the default)


def test_same_seed_same_result(cartpole_demos):
    models = [GAIL("MlpPolicy", cartpole(), demonstrations=cartpole_demos, **SMALL).learn(1024) for _ in range(2)]
    assert_state_dicts_equal(models[0].generator.policy.state_dict(), models[1].generator.policy.state_dict())
    assert_state_dicts_equal(models[0].reward_net.state_dict(), models[1].reward_net.state_dict())


def test_schedules_follow_the_whole_budget(cartpole_demos):
    """One ``generator.learn`` call for the budget: schedules see progress 1 -> 0, not 0 every round."""
    seen = []

    def learning_rate(progress_remaining):
        seen.append(progress_remaining)
        return 3e-4

    kwargs = {**SMALL, "generator_kwargs": {**SMALL["generator_kwargs"], "learning_rate": learning_rate}}
    model = GAIL("MlpPolicy", cartpole(), demonstrations=cartpole_demos, **kwargs)
    seen.clear()
    model.learn(2048)
    np.testing.assert_allclose(sorted(set(seen), reverse=True), [0.75, 0.5, 0.25, 0.0])


def test_callbacks_and_logging(cartpole_demos, tmp_path):
    class Recorder(BaseCallback):
        def __init__(self):
            super().__init__()
            self.starts, self.steps, self.values = 0, 0, {}

        def _on_training_start(self):
            self.starts += 1

        def _on_step(self):
            self.steps += 1
            return self.num_timesteps < 1024  # stop early

        def _on_rollout_end(self):
            # after the discriminator round (the adapter's callback runs first), before SB3 dumps the logs
            self.values.update(getattr(self.logger, "default_logger", self.logger).name_to_value)

    recorder = Recorder()
    model = GAIL("MlpPolicy", cartpole(), demonstrations=cartpole_demos, tensorboard_log=str(tmp_path), **SMALL)
    model.learn(4096, callback=recorder)
    assert recorder.model is model  # callbacks see the GAIL model, not its generator
    assert recorder.starts == 1
    assert model.num_timesteps == 1024  # the callback stopped training
    expected = {f"discriminator/{stat}" for stat in ("loss", "acc", "acc_expert", "acc_gen", "entropy", "rounds")}
    assert expected <= set(recorder.values)
    assert not [key for key in recorder.values if key.startswith(("mean/", "raw/"))]
    assert list((tmp_path / "GAIL_1").glob("events.out.tfevents.*"))
    assert list((tmp_path / "GAIL_1" / "raw" / "disc").glob("events.out.tfevents.*"))


def test_logger_keys_in_sb3_scheme(cartpole_demos, tmp_path):
    """``set_logger`` with a plain SB3 logger (kept by ``learn``); every key is ``train/``, ``rollout/``, ``time/`` or
    ``discriminator/``."""
    model = GAIL("MlpPolicy", cartpole(), demonstrations=cartpole_demos, **SMALL)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(1024)
    assert model.logger.default_logger.dir == str(tmp_path)
    with open(tmp_path / "progress.csv") as file:
        header = file.readline().strip().split(",")
    assert {"train/policy_gradient_loss", "rollout/ep_rew_mean", "discriminator/loss", "discriminator/acc"} <= set(header)
    assert {key.split("/")[0] for key in header} <= {"train", "rollout", "time", "discriminator"}, header


# ----------------------------------------------------------------------------------------------------- save/load
def assert_parameters_equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        if name.endswith("optimizer"):
            continue  # optimiser state dicts nest lists; the modules are what predict uses
        assert_state_dicts_equal(a[name], b[name])


@pytest.mark.parametrize("algo", ALGOS)
def test_save_load_round_trip(cartpole_demos, tmp_path, algo):
    """One zip: ``algo.load(path, env=...)`` restores generator, reward net and hyperparameters; then learns again."""
    hidden = {"reward_hid_sizes" if algo is AIRL else "hid_sizes": [16, 16]}
    kwargs = {**SMALL, "reward_net_kwargs": hidden, "n_disc_updates_per_round": 3, "disc_lr": 5e-4}
    model = algo("MlpPolicy", cartpole(), demonstrations=cartpole_demos, **kwargs).learn(1024)
    assert isinstance(model, BaseAlgorithm)
    model.save(tmp_path / "model")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.zip"]  # one file
    obs = demo_observations(cartpole_demos)
    expected, _ = model.predict(obs, deterministic=True)

    # the file is data: the adapter's hyperparameters as JSON, the reward net a plain state_dict (weights_only)
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        config = json.loads(archive.read(CONFIG_ENTRY))
        state_dict = th.load(io.BytesIO(archive.read(REWARD_NET_ENTRY)), weights_only=True)
    assert config["algo"] == algo.__name__ and config["generator_class"] == "ppo_rollback"
    assert config["hyperparameters"]["reward_net_kwargs"] == hidden
    assert config["discriminator"] == {"rounds": 2, "updates": 6}
    assert_state_dicts_equal(state_dict, model.reward_net.state_dict())
    # the generator part is a normal PPORollback model
    generator = PPORollback.load(tmp_path / "model.zip")
    np.testing.assert_array_equal(generator.predict(obs, deterministic=True)[0], expected)

    loaded = algo.load(tmp_path / "model", env=cartpole(), demonstrations=cartpole_demos)  # no constructor arguments
    assert type(loaded.generator) is PPORollback
    assert_parameters_equal(loaded.get_parameters(), model.get_parameters())
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], expected)
    kept = ("demo_batch_size", "n_disc_updates_per_round", "disc_lr", "allow_variable_horizon", "seed", "reward_net_kwargs")
    for key in kept:
        assert getattr(loaded, key) == getattr(model, key), key
    assert loaded.generator.n_steps == 128 and loaded.num_timesteps == 1024
    assert (loaded.trainer._global_step, loaded.trainer._disc_step) == (2, 6)
    loaded.learn(512, reset_num_timesteps=False)
    assert loaded.num_timesteps == 1024 + 512
    assert loaded.trainer._disc_step == 6 + 3

    # prediction only
    predictor = algo.load(tmp_path / "model.zip")
    np.testing.assert_array_equal(predictor.predict(obs, deterministic=True)[0], expected)
    with pytest.raises(ValueError, match="needs an environment"):
        predictor.learn(512)


def test_set_parameters_round_trip(cartpole_demos, tmp_path):
    """``get_parameters`` -> ``set_parameters`` (dict and file) on a fresh model gives the same networks."""
    model = GAIL("MlpPolicy", cartpole(), demonstrations=cartpole_demos, **SMALL).learn(512)
    params = model.get_parameters()
    assert set(params) == {"policy", "policy.optimizer", "reward_net"}
    obs = demo_observations(cartpole_demos)
    expected, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model")
    for source in (params, tmp_path / "model.zip"):
        other = GAIL("MlpPolicy", cartpole(), demonstrations=cartpole_demos, **{**SMALL, "seed": 1})
        other.set_parameters(source)
        assert_parameters_equal(other.get_parameters(), params)
        np.testing.assert_array_equal(other.predict(obs, deterministic=True)[0], expected)
    # bad input raises (SB3's checks)
    with pytest.raises(ValueError, match="invalid object name"):
        other.set_parameters({**params, "no_such_module": {}})
    with pytest.raises(ValueError, match="do not match"):
        other.set_parameters({"policy": params["policy"]})
    with pytest.raises(RuntimeError):
        other.set_parameters({**params, "reward_net": {"bogus": th.zeros(1)}})


def test_set_env_and_get_env(cartpole_demos, tmp_path):
    model = GAIL("MlpPolicy", cartpole(), demonstrations=cartpole_demos, **SMALL).learn(512)
    model.save(tmp_path / "model")
    predictor = GAIL.load(tmp_path / "model", demonstrations=cartpole_demos)
    assert predictor.get_env() is None and predictor.env is None
    with pytest.raises(ValueError, match="needs an environment"):
        predictor.learn(512)
    predictor.set_env(cartpole(n_envs=4, seed=3))  # SB3's set_env: same number of envs
    assert predictor.get_env() is predictor.generator.get_env() and predictor.n_envs == 4
    reward_before = {key: value.clone() for key, value in predictor.reward_net.state_dict().items()}
    predictor.learn(1024)
    assert predictor.num_timesteps == 1024 and predictor.trainer._disc_step == 2 * 2  # 2 rollouts of 4 x 128 steps
    assert any(not th.equal(value, reward_before[key]) for key, value in predictor.reward_net.state_dict().items())
    # set_env on a trained model keeps the discriminator's state
    steps = predictor.trainer._disc_step
    predictor.set_env(cartpole(n_envs=4, seed=4))
    assert predictor.trainer._disc_step == steps
    predictor.learn(512)
    assert predictor.trainer._disc_step == steps + 2
    with pytest.raises(ValueError):
        predictor.set_env(make_vec_env("Pendulum-v1", n_envs=4))  # other spaces


def test_callbacks_save_the_whole_model(cartpole_demos, tmp_path):
    """EvalCallback / CheckpointCallback see the GAIL model: their files load with GAIL.load, reward net included."""
    model = GAIL("MlpPolicy", cartpole(), demonstrations=cartpole_demos, **SMALL)
    eval_env = cartpole(n_envs=1, seed=9)
    eval_callback = EvalCallback(eval_env, eval_freq=128, n_eval_episodes=1, best_model_save_path=str(tmp_path))
    checkpoint = CheckpointCallback(save_freq=256, save_path=str(tmp_path), name_prefix="ckpt")
    model.learn(1024, callback=[eval_callback, checkpoint])
    assert eval_callback.model is model and checkpoint.model is model
    for path in (tmp_path / "best_model.zip", tmp_path / "ckpt_1024_steps.zip"):
        with zipfile.ZipFile(path) as archive:
            assert {CONFIG_ENTRY, REWARD_NET_ENTRY} <= set(archive.namelist()), path
    with zipfile.ZipFile(tmp_path / "ckpt_1024_steps.zip") as archive:
        # saved at the last step of the second rollout: after the first discriminator round, before the second
        assert json.loads(archive.read(CONFIG_ENTRY))["discriminator"] == {"rounds": 1, "updates": 2}
    checkpoint_model = GAIL.load(tmp_path / "ckpt_1024_steps.zip")
    assert checkpoint_model.reward_net.state_dict().keys() == model.reward_net.state_dict().keys()


def test_load_errors_and_older_files(cartpole_demos, tmp_path):
    model = GAIL("MlpPolicy", cartpole(), demonstrations=cartpole_demos, **SMALL)
    model.save(tmp_path / "model")
    with pytest.raises(ValueError, match="does not fit"):
        GAIL.load(tmp_path / "model", reward_net_kwargs=dict(hid_sizes=[8]))
    with pytest.raises(ValueError, match="holds a GAIL model"):
        AIRL.load(tmp_path / "model")
    # a damaged reward net entry
    with zipfile.ZipFile(tmp_path / "model.zip") as source, zipfile.ZipFile(tmp_path / "bad.zip", "w") as target:
        for name in source.namelist():
            target.writestr(name, b"not a torch file" if name == REWARD_NET_ENTRY else source.read(name))
    with pytest.raises(ValueError, match=r"reward_net\.pt entry is not a reward net state_dict"):
        GAIL.load(tmp_path / "bad.zip")
    # earlier sb3_cherry versions: the generator's file and the reward net next to it (constructor arguments given)
    model.generator.save(tmp_path / "old.zip")
    th.save(model.reward_net.state_dict(), reward_net_path(tmp_path / "old"))
    old = GAIL.load(tmp_path / "old", **SMALL)
    assert_state_dicts_equal(old.reward_net.state_dict(), model.reward_net.state_dict())
    (tmp_path / "old_reward_net.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"old_reward_net\.pt is not a reward net state_dict"):
        GAIL.load(tmp_path / "old")
    # a generator-only file (PPORollback.save): untrained reward net, with a warning
    (tmp_path / "old_reward_net.pt").unlink()
    with pytest.warns(UserWarning, match="holds no reward net"):
        GAIL.load(tmp_path / "old")


@pytest.mark.parametrize("entry", [{"allow_pickle": True}, {"generator_kwargs": {"allow_pickle": True}}])
def test_a_file_cannot_switch_on_unpickling(cartpole_demos, tmp_path, entry):
    """allow_pickle (and generator_kwargs) are load arguments: a file that sets them is refused before anything in it is
    unpickled (here a pickled ``data`` value that would create a marker file)."""
    model = GAIL("MlpPolicy", cartpole(), demonstrations=cartpole_demos, **SMALL)
    model.save(tmp_path / "model")
    marker = tmp_path / "unpickled"
    payload = base64.b64encode(pickle.dumps(_Touch(str(marker)))).decode()
    with zipfile.ZipFile(tmp_path / "model.zip") as source, zipfile.ZipFile(tmp_path / "evil.zip", "w") as target:
        for name in source.namelist():
            content = source.read(name)
            if name == "data":
                data = json.loads(content)
                data["evil"] = {":type:": "<class 'x'>", ":serialized:": payload}
                content = json.dumps(data).encode()
            elif name == CONFIG_ENTRY:
                config = json.loads(content)
                config["hyperparameters"].update(entry)
                content = json.dumps(config).encode()
            target.writestr(name, content)
    with pytest.raises(ValueError, match=r"never writes .*refusing the file"):
        GAIL.load(tmp_path / "evil.zip")
    assert not marker.exists()


class _Touch:
    """Unpickling it creates a file (what a malicious model file would do)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


# -------------------------------------------------------------------------------------------- Tuple / recurrent
def test_canonical_flat_actions():
    space = spaces.Tuple((spaces.Discrete(3), spaces.Box(-1, 1, (2,), np.float32)))
    flat = np.array([[1.6, 3.0, -0.5], [0.2, -2.0, 0.25]], dtype=np.float32)
    expected = np.array([[2.0, 1.0, -0.5], [0.0, -1.0, 0.25]], dtype=np.float32)
    np.testing.assert_array_equal(canonical_flat_actions(space, flat, 2), expected)
    tuples = [(2, np.array([3.0, -0.5])), (0, np.array([-2.0, 0.25]))]
    np.testing.assert_array_equal(canonical_flat_actions(space, tuples, 2), expected)


@pytest.mark.parametrize("algo", ALGOS)
def test_tuple_actions_hybrid_goal(hybrid_demos, tmp_path, algo):
    env = make_vec_env("sb3_cherry/HybridGoal-v0", n_envs=2, seed=0)
    tuple_space = env.action_space
    model = algo(
        "MlpPolicy",
        env,
        demonstrations=hybrid_demos,
        generator_kwargs=dict(n_steps=64, batch_size=64, n_epochs=2),
        demo_batch_size=32,
        allow_variable_horizon=True,
        seed=0,
    )
    # the reward net sees the flat encoding: club index + putt (2) + chip (1) + drive (1)
    assert model.reward_net.action_space == spaces.Box(-np.inf, np.inf, (5,), np.float32)
    assert model.action_space == tuple_space
    model.learn(256)
    assert model.num_timesteps == 256
    # generator transitions: the flat encoding of the executed actions, as the demonstration files store them
    acts = model.trainer._gen_replay_buffer._buffer._arrays["acts"][: model.trainer._gen_replay_buffer.size()]
    np.testing.assert_array_equal(acts, canonical_flat_actions(tuple_space, acts, len(acts)))
    assert set(np.unique(acts[:, 0])) <= {0.0, 1.0, 2.0}
    assert acts[:, 1:4].min() >= -1 and acts[:, 1:4].max() <= 1 and acts[:, 4].min() >= 0 and acts[:, 4].max() <= 2
    demo_acts = np.concatenate([t.acts for t in load_demos(hybrid_demos)])
    assert demo_acts.shape[1:] == acts.shape[1:] and demo_acts.dtype == acts.dtype

    obs = np.concatenate([np.asarray(t.obs[:-1]) for t in load_demos(hybrid_demos)])[:16]
    actions, _ = model.predict(obs, deterministic=True)
    assert all(tuple_space.contains(action) for action in actions)
    model.save(tmp_path / "hybrid")
    generator = PPORollback.load(tmp_path / "hybrid.zip")
    for ours, theirs in zip(actions, generator.predict(obs, deterministic=True)[0], strict=True):
        assert ours[0] == theirs[0]
        for a, b in zip(ours[1], theirs[1], strict=True):
            np.testing.assert_array_equal(a, b)


def test_recurrent_generator(cartpole_demos, tmp_path):
    model = GAIL(
        "MlpLstmPolicy",
        cartpole(n_envs=2),
        demonstrations=cartpole_demos,
        generator_class="recurrent_ppo_rollback",
        generator_kwargs=dict(n_steps=64, batch_size=64, n_epochs=1),
        policy_kwargs=dict(lstm_hidden_size=16),
        demo_batch_size=128,
        allow_variable_horizon=True,
        seed=0,
    )
    model.learn(256)
    model.save(tmp_path / "lstm")
    obs = demo_observations(cartpole_demos, 8)
    starts = np.ones(len(obs), dtype=bool)
    expected, _ = model.predict(obs, episode_start=starts, deterministic=True)
    generator = RecurrentPPORollback.load(tmp_path / "lstm.zip")
    np.testing.assert_array_equal(generator.predict(obs, episode_start=starts, deterministic=True)[0], expected)
    loaded = GAIL.load(tmp_path / "lstm")  # the generator class is read from the file
    assert type(loaded.generator) is RecurrentPPORollback
    np.testing.assert_array_equal(loaded.predict(obs, episode_start=starts, deterministic=True)[0], expected)
    with pytest.raises(ValueError, match="recurrent policy"):
        AIRL("MlpLstmPolicy", cartpole(n_envs=2), demonstrations=cartpole_demos, generator_class="recurrent_ppo_rollback")


# ------------------------------------------------------------------------------------------------ VecNormalize
@pytest.mark.parametrize("algo", ALGOS)
def test_vec_normalize_and_eval_callback(tmp_path, algo):
    """The discriminator sees raw observations, the policy normalised ones; EvalCallback syncs the statistics."""

    def swing(obs):
        return np.clip(-2 * obs[:, 1:2] - 0.5 * obs[:, 2:3], -2, 2).astype(np.float32)

    path = tmp_path / "pendulum.npz"
    record_demos(ScriptedModel(swing), "Pendulum-v1", n_episodes=2, path=path, seed=0)
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    eval_env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=5), training=False, norm_reward=False)
    model = algo(
        "MlpPolicy",
        env,
        demonstrations=path,
        generator_kwargs=dict(n_steps=64, batch_size=64, n_epochs=2),
        demo_batch_size=128,
        seed=0,
    )
    callback = EvalCallback(eval_env, eval_freq=64, n_eval_episodes=1, log_path=str(tmp_path), verbose=0)
    model.learn(512, callback=callback)
    assert model.get_vec_normalize_env() is env
    assert env.obs_rms.count > 500
    np.testing.assert_array_equal(eval_env.obs_rms.mean, env.obs_rms.mean)  # synchronised at the last evaluation
    assert (tmp_path / "evaluations.npz").exists()
    buffer = model.trainer._gen_replay_buffer
    obs = buffer._buffer._arrays["obs"][: buffer.size()]
    np.testing.assert_allclose(obs[:, 0] ** 2 + obs[:, 1] ** 2, 1.0, atol=1e-4)  # raw (cos, sin, speed)


# ------------------------------------------------------------------------------------------------------ errors
def test_bad_input_errors(cartpole_demos, tmp_path):
    pendulum = tmp_path / "pendulum.npz"
    record_demos(ScriptedModel(lambda obs: np.zeros((len(obs), 1), np.float32)), "Pendulum-v1", 1, pendulum, seed=0)
    with pytest.raises(ValueError, match=r"observations of shape \(3,\).*shape \(4,\)"):
        GAIL("MlpPolicy", cartpole(), demonstrations=pendulum, demo_batch_size=64)
    with pytest.raises(ValueError, match="fewer than demo_batch_size=4096"):
        GAIL("MlpPolicy", cartpole(), demonstrations=cartpole_demos, demo_batch_size=4096)
    with pytest.raises(ValueError, match="needs demonstrations"):
        GAIL("MlpPolicy", cartpole(), **SMALL).learn(512)
    with pytest.raises(ValueError, match="disc_lr"):
        GAIL("MlpPolicy", cartpole(), disc_opt_kwargs=dict(lr=1e-4))
    with pytest.raises(ValueError, match=r"pass \['seed'\] to GAIL directly"):
        GAIL("MlpPolicy", cartpole(), generator_kwargs=dict(seed=1))
    with pytest.raises(ValueError, match="Unknown generator_class 'sac'"):
        GAIL("MlpPolicy", cartpole(), generator_class="sac")
    with pytest.raises(ValueError, match="reward_net_class"):
        GAIL("MlpPolicy", cartpole(), reward_net_class="NoSuchNet")
    with pytest.raises(ValueError, match="normalize_input_layer"):
        GAIL("MlpPolicy", cartpole(), reward_net_kwargs=dict(normalize_input_layer="NoSuchNorm"))
    with pytest.raises(ValueError, match="Dict observation spaces"):
        GAIL("MultiInputPolicy", make_vec_env("sb3_cherry/DictReach-v0", n_envs=1))
    # imitation's own check: CartPole-v1 episodes differ in length
    model = GAIL("MlpPolicy", cartpole(), demonstrations=cartpole_demos, demo_batch_size=256)
    with pytest.raises(ValueError, match="allow_variable_horizon=True"):
        model.learn(2048)


# --------------------------------------------------------------------------------------------------------- zoo
def test_zoo_config_validates(zoo_with_adversarial):
    from sb3_cherry.cli import validate_config

    with open("zoo_configs/gail.yml") as file:
        config = yaml.safe_load(file)
    assert set(config) == {"CartPole-v1", "BipedalWalker-v3"}
    for env_id, entry in config.items():
        assert "demonstrations" in entry, env_id
        validate_config("zoo_configs/gail.yml", "gail", env_id)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"generator_kwargs": {"n_stepz": 5}}, "generator_kwargs: unknown hyperparameter 'n_stepz' for PPORollback"),
        ({"generator_kwargs": {"n_steps": 256.0}}, "generator_kwargs: hyperparameter 'n_steps'=256.0 has the wrong type"),
        ({"generator_kwargs": {"learning_rate": "lin_abc"}}, "or lin_<value> with a positive value"),
        ({"generator_kwargs": {"seed": 1}}, "put ['seed'] at the top level of the entry"),
        ({"generator_kwargs": [1]}, "hyperparameter 'generator_kwargs'=[1] has the wrong type (expected dict)"),
        ({"demo_minibatch_size": "8"}, "hyperparameter 'demo_minibatch_size'='8' has the wrong type (expected int)"),
        ({"generator_class": "ppo"}, "Unknown generator_class 'ppo'"),
        ({"policy": "MlpLstmPolicy"}, "unknown policy 'MlpLstmPolicy' for the generator PPORollback"),
        ({"policy_kwargs": "dict(lstm_hidden_size=8)"}, "lstm_hidden_size"),
    ],
)
@pytest.mark.parametrize("algo", ["gail", "airl"])
def test_zoo_entry_nested_hyperparameters_checked(zoo_with_adversarial, tmp_path, algo, change, message):
    """What GAIL / AIRL pass on to the generator is checked before a run starts (it failed at construction before)."""
    from sb3_cherry.cli import validate_config

    with open("zoo_configs/gail.yml") as file:
        entry = yaml.safe_load(file)["CartPole-v1"]
    config = tmp_path / "gail.yml"
    config.write_text(yaml.safe_dump({"CartPole-v1": {**entry, **change}}))
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_config(config, algo, "CartPole-v1")


def test_zoo_entry_airl_with_a_recurrent_generator_refused(zoo_with_adversarial, tmp_path):
    from sb3_cherry.cli import validate_config

    with open("zoo_configs/gail.yml") as file:
        entry = yaml.safe_load(file)["CartPole-v1"]
    config = tmp_path / "gail.yml"
    config.write_text(
        yaml.safe_dump({"CartPole-v1": {**entry, "generator_class": "recurrent_ppo_rollback", "policy": "MlpLstmPolicy"}})
    )
    validate_config(config, "gail", "CartPole-v1")  # GAIL takes a recurrent generator
    with pytest.raises(ValueError, match="AIRL needs log pi"):
        validate_config(config, "airl", "CartPole-v1")


@pytest.mark.parametrize("env_id", ["CartPole-v1", "BipedalWalker-v3"])
def test_zoo_entries_build_gail_and_airl(zoo_with_adversarial, env_id):
    """Every gail.yml entry builds as GAIL and as AIRL (``--algo airl`` reads gail.yml): ``hid_sizes`` sizes GAIL's
    reward net and both of AIRL's shaped nets, whose discount is the generator's gamma."""
    from imitation.rewards import reward_nets

    entry = load_zoo_entry("gail", env_id)
    kwargs = {key: value for key, value in entry.model_kwargs.items() if key != "demonstrations"}
    hid_sizes = list(kwargs.get("reward_net_kwargs", {}).get("hid_sizes", (32, 32)))

    def widths(module):
        return [layer.out_features for layer in module.modules() if isinstance(layer, th.nn.Linear)][:-1]

    env = make_vec_env(env_id, n_envs=1)
    gail = GAIL(env=env, **kwargs)
    assert widths(gail.reward_net) == hid_sizes
    airl = AIRL(env=env, **kwargs)
    assert isinstance(airl.reward_net, reward_nets.BasicShapedRewardNet)
    if "hid_sizes" in kwargs.get("reward_net_kwargs", {}):
        assert widths(airl.reward_net.base) == hid_sizes and widths(airl.reward_net.potential) == hid_sizes
    assert airl.reward_net.discount_factor == airl.generator.gamma
    explicit = AIRL(env=env, **{**kwargs, "reward_net_kwargs": {"hid_sizes": [8], "potential_hid_sizes": [4, 4]}})
    assert widths(explicit.reward_net.base) == [8] and widths(explicit.reward_net.potential) == [4, 4]


def test_sb3_cherry_train(zoo_with_adversarial, monkeypatch, cartpole_demos, tmp_path, capsys):
    """``sb3-cherry train --algo gail`` (rl_zoo3 with EvalCallback and tensorboard): one file per model, which loads as
    GAIL (and its generator part as PPORollback); ``sb3-cherry evaluate --algo gail`` reads it."""
    import rl_zoo3.utils

    from sb3_cherry.cli import main

    monkeypatch.setitem(rl_zoo3.utils.ALGOS, "gail", GAIL)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with open("zoo_configs/gail.yml") as file:
        entry = yaml.safe_load(file)["CartPole-v1"]
    entry.update(demonstrations=cartpole_demos, demo_batch_size=256, n_envs=4)
    entry["generator_kwargs"]["n_steps"] = 64
    entry["generator_kwargs"]["learning_rate"] = "lin_4e-4"  # a schedule in the nested generator_kwargs (was refused)
    # a buffer class by name there too (was passed on as the string: issubclass() failed in the generator)
    entry["generator_kwargs"]["rollout_buffer_class"] = "stable_baselines3.common.buffers.RolloutBuffer"
    config = tmp_path / "gail.yml"
    config.write_text(yaml.safe_dump({"CartPole-v1": entry}))
    args = ["train", "--algo", "gail", "--env", "CartPole-v1", "-c", str(config), "-f", str(tmp_path / "logs")]
    main([*args, "-n", "1024", "--seed", "0", "--eval-freq", "256", "--eval-episodes", "2", "-tb", str(tmp_path / "tb")])
    exp = tmp_path / "logs" / "gail" / "CartPole-v1_1"
    assert not (exp / "CartPole-v1_reward_net.pt").exists()  # one file
    for name in ("CartPole-v1.zip", "best_model.zip"):
        model = GAIL.load(exp / name)
        assert model.demo_batch_size == 256 and model.n_disc_updates_per_round == 8, name
    assert model.num_timesteps <= 1024
    generator = PPORollback.load(exp / "CartPole-v1.zip")
    assert generator.num_timesteps == 1024
    assert generator.lr_schedule(0.25) == pytest.approx(1e-4) and generator.lr_schedule(1.0) == pytest.approx(4e-4)
    # the same entry read from Python
    zoo = load_zoo_entry("gail", "CartPole-v1", config)
    assert zoo.model_kwargs["generator_kwargs"]["learning_rate"](0.25) == pytest.approx(1e-4)
    assert zoo.model_kwargs["generator_kwargs"]["rollout_buffer_class"] is RolloutBuffer
    assert type(generator.rollout_buffer) is RolloutBuffer
    capsys.readouterr()
    main(["evaluate", "--algo", "gail", "--env", "CartPole-v1", "-f", str(tmp_path / "logs"), "-n", "2", "--json", "-"])
    captured = capsys.readouterr()
    assert "gail on CartPole-v1: mean return" in captured.err and json.loads(captured.out)["algo"] == "gail"


# -------------------------------------------------------------------------------------------------------- slow
class _Curve(BaseCallback):
    """Deterministic mean return every ``every`` generator steps."""

    def __init__(self, every: int):
        super().__init__()
        self.every, self.next, self.points = every, every, []

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next:
            mean, _ = evaluate_policy(self.model, make_vec_env("CartPole-v1", seed=1000 + self.next), n_eval_episodes=5)
            self.points.append((self.num_timesteps, float(mean)))
            self.next += self.every
        return True


@pytest.fixture(scope="module")
def cartpole_expert_demos(tmp_path_factory):
    """20 episodes of the PPORollback CartPole expert trained from its zoo entry: (path, trajectories, expert return)."""
    start = time.time()
    expert_entry = load_zoo_entry("ppo_rollback", "CartPole-v1")
    expert_env = make_vec_env("CartPole-v1", n_envs=expert_entry.n_envs, seed=0)
    expert = PPORollback(env=expert_env, seed=0, **expert_entry.model_kwargs)
    expert.learn(expert_entry.n_timesteps)
    expert_return, _ = evaluate_policy(expert, make_vec_env("CartPole-v1", seed=100), n_eval_episodes=20)
    assert expert_return >= 475, expert_return
    path = tmp_path_factory.mktemp("expert") / "cartpole.npz"
    trajectories = record_demos(expert, "CartPole-v1", n_episodes=20, path=path, seed=0)
    print(
        f"\nexpert (PPORollback, {expert_entry.n_timesteps} steps, {time.time() - start:.0f} s): {expert_return:.1f} "
        f"over 20 episodes; demonstrations: 20 episodes, mean return {np.mean([t.rews.sum() for t in trajectories]):.1f}"
    )
    return path, trajectories, float(expert_return)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["gail", "airl", "gail_untrained_discriminator"])
def test_gail_cartpole(zoo_with_adversarial, cartpole_expert_demos, variant, record_property):
    """
    GAIL (and AIRL) from 20 episodes of a PPORollback expert reach >= 95% of the expert's return within 300k generator
    steps, and pick the expert's action on most demonstrated states. The control shows why the agreement is checked:
    on CartPole-v1 the always-positive reward of an untrained discriminator (``n_disc_updates_per_round=0``) rewards
    survival alone, which also reaches the expert's return, with actions that agree with the expert's at chance only.
    """
    path, trajectories, expert_return = cartpole_expert_demos
    start = time.time()
    entry = load_zoo_entry("gail", "CartPole-v1")
    kwargs = {**entry.model_kwargs, "demonstrations": str(path)}
    if variant == "gail_untrained_discriminator":
        kwargs["n_disc_updates_per_round"] = 0
    algo = AIRL if variant == "airl" else GAIL
    model = algo(env=make_vec_env("CartPole-v1", n_envs=entry.n_envs, seed=0), seed=0, **kwargs)
    curve = _Curve(every=25_000)
    model.learn(entry.n_timesteps, callback=curve)
    gail_time = time.time() - start
    gail_return, gail_std = evaluate_policy(model, make_vec_env("CartPole-v1", seed=100), n_eval_episodes=20)

    # how often the imitator picks the expert's action on the demonstrated states
    demo_obs = np.concatenate([t.obs[:-1] for t in trajectories])
    demo_acts = np.concatenate([t.acts for t in trajectories])
    agreement = float(np.mean(model.predict(demo_obs, deterministic=True)[0] == demo_acts))
    first = next((steps for steps, value in curve.points if value >= 0.95 * expert_return), None)
    print(
        f"\n{variant} ({model.num_timesteps} generator steps, {gail_time:.0f} s): {gail_return:.1f} +- {gail_std:.1f} "
        f"over 20 episodes; first >= 95% of the expert at {first} steps; action agreement on demo states "
        f"{agreement:.3f}\ncurve (steps, mean return over 5 episodes): {curve.points}"
    )
    for key, value in dict(
        expert_return=round(expert_return, 3),
        mean_return=round(float(gail_return), 3),
        return_std=round(float(gail_std), 3),
        num_timesteps=model.num_timesteps,
        first_at_95_percent=first,
        action_agreement=round(agreement, 4),
    ).items():
        record_property(key, value)
    assert gail_return >= 0.95 * expert_return
    if variant == "gail_untrained_discriminator":
        assert agreement < 0.65  # chance is 0.5
    else:
        assert agreement >= 0.7


@pytest.mark.parametrize("algo", [GAIL, AIRL])
def test_image_demonstrations_are_refused_with_the_reason(algo):
    # SB3 wraps image envs in VecTransposeImage for CnnPolicy: channel-last demos of the same env are not "another env"
    demos = record_demos(ScriptedModel(lambda obs: np.zeros(len(obs), np.int64)), "sb3_cherry/PixelCatch-v0", 6, seed=0)
    with pytest.raises(ValueError, match="image observations are not supported"):
        algo(
            "CnnPolicy", make_vec_env("sb3_cherry/PixelCatch-v0", n_envs=1, seed=0), demonstrations=demos,
            demo_batch_size=32, allow_variable_horizon=True, generator_kwargs=dict(n_steps=32, batch_size=32), seed=0,
        )  # fmt: skip


@pytest.mark.parametrize("algo", [GAIL, AIRL])
def test_time_limit_ends_are_done_for_expert_and_generator_alike(algo):
    # imitation's rollouts finish every generator episode with terminal=True (time limits too); demonstrations
    # truncated by the time limit (terminal=False in the file) are handed over the same way
    from imitation.data import rollout

    demos = record_demos(ScriptedModel(lambda obs: np.zeros((len(obs), 1), np.float32)), "Pendulum-v1", 2, seed=0)
    assert not any(t.terminal for t in demos)  # Pendulum only ends by its time limit
    venv = make_vec_env("Pendulum-v1", n_envs=1, seed=0)
    model = algo("MlpPolicy", venv, demonstrations=demos, demo_batch_size=64, generator_kwargs=dict(n_steps=64), seed=0)
    assert all(t.terminal for t in model._demo_trajectories(model.trainer.venv))
    generated = rollout.generate_trajectories(
        model.generator, venv, rollout.make_sample_until(min_episodes=1), rng=np.random.default_rng(0)
    )
    assert generated[0].terminal  # the generator's side, by imitation


def test_gail_loaded_for_evaluation_leaves_the_env_rewards(tmp_path):
    # GAIL.load(path, env=...) rewires the env for training (its VecNormalize then returns the discriminator's reward);
    # sb3-cherry evaluate / record / video load GAIL and AIRL without the env
    from sb3_cherry.cli import _training_env, evaluate_model

    demos = record_demos(ScriptedModel(balance), "CartPole-v1", n_episodes=2, seed=0)
    model = GAIL(
        "MlpPolicy", VecNormalize(cartpole(n_envs=1)), demonstrations=demos, demo_batch_size=64,
        allow_variable_horizon=True, generator_kwargs=dict(n_steps=64, batch_size=64, n_epochs=1), seed=0,
    )  # fmt: skip
    model.learn(64)
    model.save(tmp_path / "gail")

    def evaluation_env():
        return VecNormalize(cartpole(n_envs=1, seed=1), training=False, norm_reward=False)

    assert _training_env("gail", evaluation_env()) is None and _training_env("airl", evaluation_env()) is None
    env = evaluation_env()
    summary = evaluate_model(GAIL.load(tmp_path / "gail", env=_training_env("gail", env)), env, n_episodes=3)
    # CartPole's own reward: +1 per step, so each return is the episode's length
    assert summary["mean_return"] == summary["mean_length"]
    rewired = evaluation_env()
    GAIL.load(tmp_path / "gail", env=rewired)
    _, rewards, _, _ = rewired.step(np.zeros(1, np.int64))
    assert rewards[0] != 1.0  # what the CLI avoids: the discriminator's reward


def test_airl_trains_from_the_gail_config(zoo_with_adversarial):
    from sb3_cherry.common.config_schema import default_config

    assert default_config("airl") == default_config("gail") and default_config("airl").name == "gail.yml"


# --------------------------------------------------------------------------------- non-finite data, wrong demos
@pytest.mark.parametrize("algo", ALGOS)
def test_demonstrations_that_cannot_be_the_envs_are_refused(cartpole_demos, algo):
    from imitation.data.types import TrajectoryWithRew

    good = load_demos(cartpole_demos)[0]
    nan_obs = good.obs.copy()
    nan_obs[3, 1] = np.nan
    with pytest.raises(ValueError, match="demonstration 0 of the given trajectories has a non-finite observation at step 3"):
        algo("MlpPolicy", cartpole(), demonstrations=[dataclasses.replace(good, obs=nan_obs)], **SMALL)
    wrong_acts = good.acts.copy()
    wrong_acts[7] = 2  # CartPole has actions 0 and 1: a file recorded on another env (torch failed in one_hot)
    with pytest.raises(ValueError, match=r"actions outside the environment's action space Discrete\(2\) \(step 7: 2"):
        algo("MlpPolicy", cartpole(), demonstrations=[dataclasses.replace(good, acts=wrong_acts)], **SMALL)
    with pytest.raises(ValueError, match=r"a list of trajectories .* got TrajectoryWithRew"):
        algo("MlpPolicy", cartpole(), demonstrations=good, **SMALL)
    assert isinstance(good, TrajectoryWithRew)


def test_demonstrated_tuple_actions_are_checked_per_component(hybrid_demos):
    good = load_demos(hybrid_demos)
    acts = good[0].acts.copy()
    acts[0, 0] = 3  # the club index of HybridGoal's Tuple(Discrete(3), ...) in the flat encoding
    with pytest.raises(ValueError, match=r"Discrete\(3\) \(step 0: 3"):
        GAIL("MlpPolicy", make_vec_env("sb3_cherry/HybridGoal-v0", n_envs=1), demonstrations=[
            dataclasses.replace(good[0], acts=acts), *good[1:]], demo_batch_size=32, allow_variable_horizon=True)  # fmt: skip


class _FaultEnv(gym.Env):
    """
    6-step episodes of uniform observations; at the env's step ``fault_step`` (counted over episodes; every 6th step
    ends an episode, so 18 gives a terminal observation), and only there, ``observation[0]`` is ``value``. Logs every
    (observation, next observation) pair it produces: the reference for the discriminator's replay buffer.
    """

    def __init__(self, fault_step: int = 0, value: float = np.nan, dtype: type = np.float32):
        self.observation_space = spaces.Box(-np.inf, np.inf, (3,), dtype)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.fault_step, self.value, self.dtype = fault_step, value, dtype
        self.t = self.steps = 0
        self.transitions: list[tuple[np.ndarray, np.ndarray]] = []

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.obs = 0, self.np_random.uniform(-1, 1, 3).astype(self.dtype)
        return self.obs.copy(), {}

    def step(self, action):
        self.t, self.steps = self.t + 1, self.steps + 1
        obs = self.np_random.uniform(-1, 1, 3).astype(self.dtype)
        if self.steps == self.fault_step:
            obs[0] = self.value
        self.transitions.append((self.obs, obs.copy()))
        self.obs = obs
        return obs.copy(), 0.0, False, self.t >= 6, {}


def _fault_demos(dtype=np.float32):
    zero = ScriptedModel(lambda obs: np.zeros((len(obs), 2), np.float32))
    return record_demos(zero, _FaultEnv(dtype=dtype), n_episodes=8, seed=0)  # 48 transitions


def _fault_model(algo, venv, demonstrations=None, **kwargs):
    demonstrations = _fault_demos(venv.observation_space.dtype) if demonstrations is None else demonstrations
    return algo("MlpPolicy", venv, demonstrations=demonstrations, demo_batch_size=32,
                generator_kwargs=dict(n_steps=32, batch_size=32, n_epochs=1), allow_variable_horizon=True, seed=0,
                **kwargs)  # fmt: skip


def _stored_pairs(model):
    """The (obs, next_obs) rows of the discriminator's generator replay buffer, as bytes."""
    buffer = model.trainer._gen_replay_buffer
    arrays = buffer._buffer._arrays
    n = buffer.size()
    return [
        (o.astype(np.float32).tobytes(), p.astype(np.float32).tobytes())
        for o, p in zip(arrays["obs"][:n], arrays["next_obs"][:n], strict=True)
    ]


class _RaiseAt(BaseCallback):
    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def _on_step(self) -> bool:
        if self.num_timesteps == self.step:
            raise RuntimeError("callback failure")
        return True


@pytest.mark.parametrize("reset_num_timesteps", [True, False])
@pytest.mark.parametrize("fault", ["nan observation", "callback error"])
@pytest.mark.parametrize("algo", ALGOS)
def test_learn_after_an_error_keeps_no_step_of_it(algo, fault, reset_num_timesteps):
    """
    A learn that raised mid-rollout (a transient NaN observation at step 20, or a callback's error there) leaves
    nothing behind: no buffered transition, and the next learn (either reset_num_timesteps) stores only transitions the
    env really made and rewards each step from the observation the generator acted on (hand-computed, _RewardCheck).
    Before, the step that raised stayed buffered: the NaN went into AIRL's replay buffer ("lower disc_lr"), or the next
    rewards came from the reward wrapper's stale NaN observation ("Non-finite reward ... Fix the environment").
    """
    env = _FaultEnv(fault_step=20 if fault == "nan observation" else 0)
    model = _fault_model(algo, DummyVecEnv([lambda: env]), gen_replay_buffer_capacity=512)
    if fault == "nan observation":
        with pytest.raises(ValueError, match=r"Non-finite observation \(nan\) from env 0 at num_timesteps=20"):
            model.learn(64)
    else:
        with pytest.raises(RuntimeError, match="callback failure"):
            model.learn(64, callback=_RaiseAt(20))
    assert model.trainer.venv_buffering.n_transitions == 0
    assert model.trainer._gen_replay_buffer.size() == 0  # no round was due before step 32
    check = _RewardCheck("gail" if algo is GAIL else "airl", normalized=False)
    model.learn(64, reset_num_timesteps=reset_num_timesteps, callback=check)
    assert check.steps == 64 and check.max_error < 1e-5
    genuine = {(o.tobytes(), p.tobytes()) for o, p in env.transitions}
    stored = _stored_pairs(model)
    assert len(stored) == 64  # two rounds of 32
    assert np.isfinite(np.frombuffer(b"".join(o + p for o, p in stored), dtype=np.float32)).all()
    assert all(pair in genuine for pair in stored)


@pytest.mark.parametrize("value", [np.nan, 1e39])
@pytest.mark.parametrize("where", ["observation", "terminal observation"])
@pytest.mark.parametrize("algo", ALGOS)
def test_raw_non_finite_observation_under_vec_normalize_named_before_it_is_used(algo, where, value):
    """
    Through a VecNormalize, a raw NaN / 1e39 observation of env 1 is reported as that observation, before the
    VecNormalize takes it into its statistics (they stay those of uniform(-1, 1) values, variance ~1/3) and before
    imitation's wrappers record it or compute the discriminator's reward from it. Before, a 1e39 terminal
    observation (clipped to clip_obs for the policy) trained GAIL's discriminator silently, AIRL reported a NaN
    "reward (before VecNormalize)", and a non-terminal one reached the statistics.
    """
    fault_step = 18 if where == "terminal observation" else 20
    venv = VecNormalize(DummyVecEnv([lambda: _FaultEnv(dtype=np.float64), lambda: _FaultEnv(fault_step, value, np.float64)]),
                        norm_reward=False)  # fmt: skip
    model = _fault_model(algo, venv)
    shown = "nan" if np.isnan(value) else r"1e\+39, beyond float32's range"
    with pytest.raises(
        ValueError,
        match=rf"Non-finite {where}( \(before VecNormalize\))? \({shown}.* from env 1 at num_timesteps={2 * fault_step}",
    ) as info:
        model.learn(128)
    assert np.isfinite(venv.obs_rms.var).all() and venv.obs_rms.var.max() < 1.0
    assert "has not seen the value" in str(info.value) and "reload them" not in str(info.value)
    assert model.trainer.venv_buffering.n_transitions == 0 and model.trainer._gen_replay_buffer.size() == 0


@pytest.mark.parametrize("algo", ALGOS)
def test_non_finite_transitions_never_enter_the_discriminator_replay_buffer(algo, monkeypatch):
    """Transitions changed after the step checks (here: a NaN written into the buffered ones) are refused when moved to
    the discriminator's replay buffer, which stays empty."""
    model = _fault_model(algo, DummyVecEnv([_FaultEnv]))
    buffering = model.trainer.venv_buffering
    pop = buffering.pop_trajectories

    def corrupted_pop():
        trajectories, lengths = pop()
        if trajectories:
            trajectories[-1].obs[-1, 1] = np.nan  # the next observation of the round's last transition
        return trajectories, lengths

    monkeypatch.setattr(buffering, "pop_trajectories", corrupted_pop)
    with pytest.raises(ValueError, match=r"generator transition 31 of the 32 .* non-finite next observation .* dropped"):
        model.learn(64)
    assert model.trainer._gen_replay_buffer.size() == 0


@pytest.mark.parametrize("algo", ALGOS)
def test_demonstrations_beyond_float32_are_refused(algo):
    """float64 demonstration values beyond float32's range (1e39, inf for the float32 reward net) are refused like NaN,
    naming the trajectory, the step and the fix (np.isfinite accepted them)."""
    demos = _fault_demos(np.float64)
    obs = demos[1].obs.copy()
    obs[3, 0] = 1e39
    expected = r"demonstration 1 of the given trajectories has a non-finite observation at step 3 \(1e\+39; 1 such steps\)"
    with pytest.raises(ValueError, match=expected + r": NaN, inf, or beyond float32's range.*Re-record the demonstrations"):
        _fault_model(
            algo,
            DummyVecEnv([lambda: _FaultEnv(dtype=np.float64)]),
            demonstrations=[demos[0], dataclasses.replace(demos[1], obs=obs), *demos[2:]],
        )
    acts = demos[2].acts.astype(np.float64)
    acts[4, 1] = -1e39
    with pytest.raises(
        ValueError, match=r"demonstration 2 .* non-finite actions .*beyond float32's range.* \(step 4: -1e\+39\)"
    ):
        _fault_model(
            algo,
            DummyVecEnv([lambda: _FaultEnv(dtype=np.float64)]),
            demonstrations=[*demos[:2], dataclasses.replace(demos[2], acts=acts), *demos[3:]],
        )


@pytest.mark.parametrize("algo", ALGOS)
def test_non_finite_discriminator_update_is_undone(cartpole_demos, algo, monkeypatch):
    model = algo("MlpPolicy", cartpole(), demonstrations=cartpole_demos, **SMALL)
    model.learn(512)  # a few finite rounds
    before = {k: v.clone() for k, v in model.reward_net.state_dict().items()}
    optimizer = model.trainer._disc_opt
    state_before = {k: v.clone() for k, v in optimizer.state[next(iter(optimizer.state))].items()}
    step = optimizer.step

    def diverging_step(*args, **kwargs):
        step(*args, **kwargs)
        with th.no_grad():
            next(model.reward_net.parameters()).fill_(float("nan"))

    monkeypatch.setattr(optimizer, "step", diverging_step)
    with pytest.raises(ValueError, match=r"discriminator update .* the update was undone.*lower disc_lr"):
        model.learn(512, reset_num_timesteps=False)
    assert_state_dicts_equal(before, model.reward_net.state_dict())
    for key, value in optimizer.state[next(iter(optimizer.state))].items():
        assert th.equal(value, state_before[key]), key


@pytest.mark.parametrize("algo", ALGOS)
def test_non_finite_reward_net_is_refused_before_learn(cartpole_demos, algo):
    model = algo("MlpPolicy", cartpole(), demonstrations=cartpole_demos, **SMALL)
    with th.no_grad():
        next(model.reward_net.parameters())[0] = float("inf")
    with pytest.raises(ValueError, match=r"reward net's .* are not finite .* before learn"):
        model.learn(512)


@pytest.mark.parametrize("algo", ALGOS)
def test_discriminator_statistics_cover_the_whole_batch(cartpole_demos, algo):
    """With minibatches, the logged loss / accuracy / counts are those of the whole batch, as imitation's own
    train_disc computes them with one minibatch (the reference), not those of the last minibatch."""
    from imitation.algorithms.adversarial.common import AdversarialTrainer

    model = algo("MlpPolicy", cartpole(), demonstrations=cartpole_demos, demo_minibatch_size=64, disc_lr=0.0, **SMALL)
    model.learn(512)  # fills the generator's replay buffer
    demos = load_demos(cartpole_demos)
    index = np.random.default_rng(0).choice(sum(len(t.acts) for t in demos), 256, replace=False)
    expert = dict(
        obs=np.concatenate([t.obs[:-1] for t in demos])[index],
        acts=np.concatenate([t.acts for t in demos])[index],
        next_obs=np.concatenate([t.obs[1:] for t in demos])[index],
        dones=np.zeros(256, bool),
    )
    sample = model.trainer._gen_replay_buffer.sample(256)
    gen = dict(obs=sample.obs, acts=sample.acts, next_obs=sample.next_obs, dones=sample.dones)
    model.reward_net.eval()  # (RunningNorm's statistics fixed: in training mode every forward pass updates them)
    ours = model.trainer.train_disc(expert_samples=expert, gen_samples=gen)  # 4 minibatches of 64 + 64
    model.trainer.demo_minibatch_size = 256  # disc_lr=0: the same parameters
    reference = AdversarialTrainer.train_disc(model.trainer, expert_samples=expert, gen_samples=gen)
    keys = ("disc_loss", "disc_acc", "disc_acc_expert", "disc_acc_gen", "disc_entropy", "n_expert", "n_generated")
    for key in keys:
        assert ours[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-6), key
    assert ours["n_expert"] == 256


def test_tuple_actions_with_vec_normalize_and_eval_callback(hybrid_demos, tmp_path):
    # SB3's sync_envs_normalization walks the eval env's wrappers in step with the generator's: the eval env needs
    # the VecTupleActions layer the training env has (the adapter wraps the user's callback, which hid it)
    env = VecNormalize(make_vec_env("sb3_cherry/HybridGoal-v0", n_envs=2, seed=0))
    eval_env = VecNormalize(make_vec_env("sb3_cherry/HybridGoal-v0", n_envs=1, seed=5), training=False, norm_reward=False)
    model = GAIL("MlpPolicy", env, demonstrations=hybrid_demos, generator_kwargs=dict(n_steps=64, batch_size=64,
                 n_epochs=1), demo_batch_size=32, allow_variable_horizon=True, seed=0)  # fmt: skip
    model.learn(256, callback=EvalCallback(eval_env, eval_freq=64, n_eval_episodes=1, log_path=str(tmp_path)))
    assert (tmp_path / "evaluations.npz").exists()


class _RewardCheck(BaseCallback):
    """At every generator step, the reward the generator received against one computed here from the reward net's
    parts on the raw transition: GAIL softplus(logit) = -log(1 - D), AIRL g(s, a) + gamma (1 - done) h(s') - h(s)."""

    def __init__(self, kind: str, normalized: bool):
        super().__init__()
        self.kind, self.normalized, self.max_error, self.steps, self.dones = kind, normalized, 0.0, 0, 0

    def _on_rollout_start(self) -> None:  # the raw observation the first action is taken on
        vec_normalize = self.model.get_vec_normalize_env()
        self.previous = vec_normalize.get_original_obs().copy() if self.normalized else self.model.generator._last_obs.copy()

    def _on_step(self) -> bool:
        local, net = self.locals, self.model.reward_net
        dones = local["dones"]
        # the raw observations after the step (VecNormalize keeps them), the reset ones where an episode ended
        after = self.model.get_vec_normalize_env().get_original_obs().copy() if self.normalized else local["new_obs"].copy()
        next_obs = after.copy()
        for i in np.flatnonzero(dones):  # the episode's last observation, not the reset one
            terminal = local["infos"][i]["terminal_observation"]
            next_obs[i] = self.model.get_vec_normalize_env().unnormalize_obs(terminal) if self.normalized else terminal
        was_training = net.training
        net.eval()
        with th.no_grad():
            obs, acts, nxt, done = net.preprocess(self.previous, local["clipped_actions"], next_obs, dones)
            if self.kind == "gail":
                expected = th.nn.functional.softplus(net(obs, acts, nxt, done))
            else:
                base, h, h_next = net.base(obs, acts, nxt, done), net.potential(obs).flatten(), net.potential(nxt).flatten()
                expected = base + net.discount_factor * (1 - done.float()) * h_next - h
        net.train(was_training)
        self.max_error = max(self.max_error, float(np.abs(expected.numpy() - local["rewards"]).max()))
        self.steps, self.dones = self.steps + 1, self.dones + int(dones.sum())
        self.previous = after
        return True


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("algo", ALGOS)
def test_generator_rewards_equal_hand_computed_ones(cartpole_demos, algo, normalized):
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    if normalized:  # the reward net sees raw observations, the policy normalised ones
        env = VecNormalize(env, norm_reward=False)
    model = algo("MlpPolicy", env, demonstrations=cartpole_demos, demo_batch_size=128, allow_variable_horizon=True,
                 generator_kwargs=dict(n_steps=64, batch_size=64, n_epochs=1), seed=0)  # fmt: skip
    check = _RewardCheck("gail" if algo is GAIL else "airl", normalized)
    model.learn(512, callback=check)
    assert check.steps == 256 and check.dones > 0
    assert check.max_error < 1e-5
