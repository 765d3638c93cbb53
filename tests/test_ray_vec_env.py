import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

ray = pytest.importorskip("ray")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402

from sb3_cherry.common.vec_env import RayVecEnv  # noqa: E402
from sb3_cherry.common.vec_env import ray_vec_env as ray_vec_env_module  # noqa: E402

# Ray workers cannot import this test module: ship the helpers below by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_CPUS = 2


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=N_CPUS, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture
def ray_vec_env():
    """``RayVecEnv`` factory: whatever a test leaves open (e.g. when it fails) is closed, so its actors do not leak."""
    created = []

    def make(*args, **kwargs) -> RayVecEnv:
        # A generous default timeout: on a loaded 2-core CI machine a healthy actor can be starved for a minute
        kwargs.setdefault("step_timeout", 300.0)
        venv = RayVecEnv(*args, **kwargs)
        created.append(venv)
        return venv

    yield make
    for venv in created:
        venv.close()


def make_cartpole() -> gym.Env:
    return gym.make("CartPole-v1")


class Controllable(gym.Wrapper):
    """CartPole whose ``step`` can be made to hang or to raise, through ``set_attr``."""

    delay = 0.0
    explode = False

    def step(self, action):
        if self.delay:
            time.sleep(self.delay)
        if self.explode:
            raise ValueError("boom")
        return self.env.step(action)

    def add(self, x: int, y: int = 0) -> int:
        return x + y


def make_controllable() -> gym.Env:
    return Controllable(gym.make("CartPole-v1"))


class TupleActionEnv(gym.Env):
    """Observation = the last action, flattened: checks that per-env Tuple actions reach their env."""

    observation_space = spaces.Box(-10, 10, shape=(3,), dtype=np.float32)
    action_space = spaces.Tuple((spaces.Discrete(3), spaces.Box(-1, 1, shape=(2,), dtype=np.float32)))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action):
        discrete, box = action
        obs = np.array([discrete, *box], dtype=np.float32)
        return obs, float(discrete), bool(discrete == 2), False, {}


def wait_until_dead(actor, timeout: float = 30.0) -> bool:
    """``ray.kill`` is asynchronous: a call made right after it may still be served."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(actor.get_spaces.remote(), timeout=timeout)
        except ray.exceptions.RayActorError:
            return True
        time.sleep(0.05)
    return False


def kill(actor) -> None:
    ray.kill(actor)
    assert wait_until_dead(actor)


def assert_same_step(ray_out, dummy_out):
    (obs_r, rew_r, done_r, infos_r), (obs_d, rew_d, done_d, infos_d) = ray_out, dummy_out
    np.testing.assert_array_equal(obs_r, obs_d)
    np.testing.assert_array_equal(rew_r, rew_d)
    np.testing.assert_array_equal(done_r, done_d)
    assert len(infos_r) == len(infos_d)
    for info_r, info_d in zip(infos_r, infos_d, strict=True):
        assert info_r.keys() == info_d.keys()
        assert info_r["TimeLimit.truncated"] == info_d["TimeLimit.truncated"]
        if "terminal_observation" in info_d:
            np.testing.assert_array_equal(info_r["terminal_observation"], info_d["terminal_observation"])
            assert info_r["terminal_observation"].flags.writeable  # as SB3's (Ray hands arrays over read-only)


@pytest.mark.parametrize("envs_per_actor", [1, 2])
def test_matches_dummy_vec_env(ray_vec_env, envs_per_actor):
    n_envs, n_steps = 3, 300
    actions = np.random.default_rng(0).integers(0, 2, size=(n_steps, n_envs))
    ray_env = ray_vec_env([make_cartpole] * n_envs, envs_per_actor=envs_per_actor, num_cpus_per_actor=0.5)
    dummy_env = DummyVecEnv([make_cartpole] * n_envs)
    assert ray_env.actor_env_indices == ([[0], [1], [2]] if envs_per_actor == 1 else [[0, 1], [2]])
    assert ray_env.observation_space == dummy_env.observation_space
    assert ray_env.action_space == dummy_env.action_space
    n_done = 0
    for venv in (ray_env, dummy_env):
        venv.seed(42)
        venv.set_options({"low": -0.02, "high": 0.02})
    np.testing.assert_array_equal(ray_env.reset(), dummy_env.reset())
    for t in range(n_steps):
        if t == n_steps // 2:
            # A second explicit reset: new seeds are used once, then forgotten
            for venv in (ray_env, dummy_env):
                venv.seed(7)
            np.testing.assert_array_equal(ray_env.reset(), dummy_env.reset())
        ray_out, dummy_out = ray_env.step(actions[t]), dummy_env.step(actions[t])
        assert_same_step(ray_out, dummy_out)
        assert ray_env.reset_infos == dummy_env.reset_infos
        n_done += int(dummy_out[2].sum())
    assert n_done > 10, "the action sequence should end several episodes"
    ray_env.close()
    dummy_env.close()


class ClipsInPlace(gym.Env):
    """Clips its action in place (as some envs do), which needs a writable action array."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, action):
        np.clip(action, -0.5, 0.5, out=action)
        return action.astype(np.float32), 0.0, False, False, {}


def test_envs_get_writable_actions(ray_vec_env):
    actions = np.ones((2, 2), np.float32)
    expected = DummyVecEnv([ClipsInPlace] * 2).step(actions.copy())[0]
    ray_env = ray_vec_env([ClipsInPlace] * 2, envs_per_actor=2, num_cpus_per_actor=0.5)
    ray_env.reset()
    np.testing.assert_array_equal(ray_env.step(actions.copy())[0], expected)
    ray_env.close()


def test_tuple_actions(ray_vec_env):
    n_envs = 3
    ray_env = ray_vec_env([TupleActionEnv] * n_envs, envs_per_actor=2, num_cpus_per_actor=0.5)
    dummy_env = DummyVecEnv([TupleActionEnv] * n_envs)
    ray_env.reset(), dummy_env.reset()
    rng = np.random.default_rng(0)
    for _ in range(10):
        actions = [(int(rng.integers(3)), rng.uniform(-1, 1, size=2).astype(np.float32)) for _ in range(n_envs)]
        assert_same_step(ray_env.step(actions), dummy_env.step(actions))
    ray_env.close()


def test_ppo_same_parameters(ray_vec_env):
    def train(venv):
        model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=2, seed=0, device="cpu")
        model.learn(256)
        venv.close()
        return model.policy.state_dict()

    params_ray = train(ray_vec_env([make_cartpole] * 2, num_cpus_per_actor=0.5))
    params_dummy = train(DummyVecEnv([make_cartpole] * 2))
    assert params_ray.keys() == params_dummy.keys()
    for key in params_dummy:
        np.testing.assert_array_equal(params_ray[key].numpy(), params_dummy[key].numpy(), err_msg=key)


def test_dead_worker_without_restart_raises(ray_vec_env):
    venv = ray_vec_env([make_cartpole] * 2, num_cpus_per_actor=0.5, max_restarts=0)
    venv.reset()
    venv.step(np.zeros(2, dtype=np.int64))
    kill(venv.actors[1])
    with pytest.raises(RuntimeError, match=r"worker actor 1 \(holding env 1\) died .*max_restarts=0"):
        venv.step(np.zeros(2, dtype=np.int64))
    venv.close()


class KillWorker(BaseCallback):
    """Kills the actor of env 0 at the 10th step and records the infos of restarted envs."""

    def __init__(self, venv: RayVecEnv):
        super().__init__()
        self.venv = venv
        self.restarted: list[tuple[int, bool, dict]] = []

    def _on_step(self) -> bool:
        if self.n_calls == 10:
            kill(self.venv.actors[0])
        for env_idx, (info, done) in enumerate(zip(self.locals["infos"], self.locals["dones"], strict=True)):
            if info.get("worker_restarted"):
                self.restarted.append((env_idx, bool(done), info))
        return True


def test_dead_worker_restarted_training_continues(ray_vec_env):
    venv = ray_vec_env([make_cartpole] * 2, num_cpus_per_actor=0.5, max_restarts=1)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    callback = KillWorker(venv)
    with pytest.warns(UserWarning, match=r"worker actor 0 \(holding env 0\) died .*restarting it \(restart 1/1\)"):
        model.learn(128, callback=callback)
    assert model.num_timesteps == 128
    assert venv.n_restarts == [1, 0]
    assert len(callback.restarted) == 1
    env_idx, done, info = callback.restarted[0]
    assert env_idx == 0 and done
    assert info["TimeLimit.truncated"] is False
    assert info["terminal_observation"].shape == (4,)
    # The restart budget of actor 0 is used up
    kill(venv.actors[0])
    with pytest.raises(RuntimeError, match=r"worker actor 0 .*max_restarts=1 \(restarts so far: 1\)"):
        venv.step(np.zeros(2, dtype=np.int64))
    venv.close()


def test_timeout_restart_then_raise(ray_vec_env):
    venv = ray_vec_env([make_controllable] * 3, envs_per_actor=2, num_cpus_per_actor=0.5, max_restarts=1, step_timeout=2.0)
    venv.reset()
    venv.set_attr("delay", 30.0, indices=[1])
    with pytest.warns(UserWarning, match=r"worker actor 0 \(holding envs \[0, 1\]\) did not answer within"):
        _, rewards, dones, infos = venv.step(np.zeros(3, dtype=np.int64))
    # Both envs of the restarted actor end their episode; env 2 is untouched
    assert dones.tolist()[:2] == [True, True] and rewards.tolist()[:2] == [0.0, 0.0]
    assert [info.get("worker_restarted", False) for info in infos] == [True, True, False]
    assert venv.get_attr("delay") == [0.0, 0.0, 0.0]  # recreated from env_fns
    venv.step(np.zeros(3, dtype=np.int64))
    venv.set_attr("delay", 30.0, indices=[0])
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"worker actor 0 \(holding envs \[0, 1\]\) did not answer within step_timeout"):
        venv.step(np.zeros(3, dtype=np.int64))
    assert time.monotonic() - start < 10
    venv.close()


def test_attributes_methods_and_env_errors(ray_vec_env):
    venv = ray_vec_env([make_controllable] * 3, envs_per_actor=2, num_cpus_per_actor=0.5)
    assert venv.get_attr("delay") == [0.0, 0.0, 0.0]
    venv.set_attr("delay", 0.5, indices=[2])
    assert venv.get_attr("delay", indices=[2, 0]) == [0.5, 0.0]
    assert venv.get_attr("delay", indices=-1) == [0.5]
    assert venv.env_method("add", 1, y=2) == [3, 3, 3]
    assert venv.env_method("add", 4, indices=[1]) == [4]
    assert [spec.id for spec in venv.get_attr("spec")] == ["CartPole-v1"] * 3
    assert venv.has_attr("delay") and not venv.has_attr("no_such_attribute")
    # Not gym.wrappers.TimeLimit: importing rl_zoo3 (test_cli) replaces it in this process by a patched subclass that the
    # workers' envs, made before the patch reached them, are not instances of.
    assert venv.env_is_wrapped(Controllable) == [True, True, True]
    assert venv.env_is_wrapped(Monitor, indices=[0]) == [False]
    with pytest.raises(AttributeError):
        venv.get_attr("no_such_attribute")
    with pytest.raises(IndexError):
        venv.get_attr("delay", indices=[3])
    with pytest.warns(UserWarning, match="render mode is None"):
        assert venv.get_images() == [None, None, None]
    # An exception raised by an env is re-raised as is (not a worker failure: no restart)
    venv.reset()
    venv.set_attr("explode", True, indices=[2])
    with pytest.raises(ValueError, match="boom") as excinfo:
        venv.step(np.zeros(3, dtype=np.int64))
    if sys.version_info >= (3, 11):
        assert "raised by env 2 of a RayVecEnv" in str(excinfo.value)
    assert venv.n_restarts == [0, 0]
    venv.close()


def test_render_rgb_array(ray_vec_env):
    pytest.importorskip("pygame")
    venv = ray_vec_env(
        [lambda: gym.make("CartPole-v1", render_mode="rgb_array")] * 2, envs_per_actor=2, num_cpus_per_actor=0.5
    )
    venv.reset()
    images = venv.get_images()
    assert len(images) == 2 and images[0].shape == (400, 600, 3)
    assert venv.render().shape == (800, 600, 3)
    venv.close()


def test_close_idempotent_releases_actors(ray_vec_env):
    venv = ray_vec_env([make_cartpole] * 2, num_cpus_per_actor=1)
    venv.reset()
    actors = list(venv.actors)
    venv.close()
    venv.close()
    assert venv.closed and venv.actors == []
    assert ray.is_initialized(), "a Ray session started by the user must not be shut down"
    assert all(wait_until_dead(actor) for actor in actors)
    deadline = time.monotonic() + 10
    while ray.available_resources().get("CPU", 0) < N_CPUS and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray.available_resources().get("CPU", 0) == N_CPUS
    with pytest.raises(RuntimeError, match="closed"):
        venv.get_attr("render_mode")


def test_missing_ray(monkeypatch):
    # Importing the package must not import Ray
    code = "import sys, sb3_cherry, sb3_cherry.common.vec_env; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "sb3_cherry\[distributed\]"'):
        RayVecEnv([make_cartpole])


def test_closes_the_ray_session_it_started(monkeypatch):
    # Pretend Ray is not initialized: RayVecEnv then "starts" it, and "shuts it down" when the last RayVecEnv is closed
    # (the real session of this module keeps running underneath)
    session = {"initialized": False, "init_kwargs": None}

    def fake_init(**kwargs):
        session.update(initialized=True, init_kwargs=kwargs)

    monkeypatch.setattr(ray, "is_initialized", lambda: session["initialized"])
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "shutdown", lambda: session.update(initialized=False))
    # Count only the RayVecEnvs of this test
    monkeypatch.setattr(ray_vec_env_module, "_RAY_SESSION", {"started_here": False, "n_open": 0})
    first = RayVecEnv([make_cartpole], address="auto", num_cpus_per_actor=0.5, ray_init_kwargs={"namespace": "test"})
    assert session["init_kwargs"] == {"address": "auto", "namespace": "test"}
    second = RayVecEnv([make_cartpole], num_cpus_per_actor=0.5)
    first.close()
    assert session["initialized"], "the second RayVecEnv is still open"
    second.close()
    assert not session["initialized"]
    assert ray_vec_env_module._RAY_SESSION == {"started_here": False, "n_open": 0}


# ------------------------------------------------------------------------ DummyVecEnv's dtypes, metadata and repeats
class ThirdReward(gym.Wrapper):
    """CartPole with a reward float32 cannot hold exactly (as most MuJoCo / Box2D / Pendulum rewards)."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, float(reward) / 3.0, terminated, truncated, info


class Float64Obs(gym.ObservationWrapper):
    """float64 observations for CartPole's float32 Box (DummyVecEnv's buffers cast them to the space's dtype)."""

    def observation(self, obs):
        return obs.astype(np.float64) / 3.0


class Counter(gym.Wrapper):
    """CartPole counting the calls of ``bump``."""

    calls = 0

    def bump(self):
        self.calls += 1
        return self.calls


def make_third_reward():
    return ThirdReward(gym.make("CartPole-v1"))


def make_float64_obs():
    return Float64Obs(gym.make("CartPole-v1"))


def make_counter():
    return Counter(gym.make("CartPole-v1"))


def make_pixel_catch():
    from sb3_cherry.envs.pixel_catch import PixelCatchEnv

    return PixelCatchEnv(render_mode="rgb_array")


@pytest.mark.parametrize("make", [make_third_reward, make_float64_obs])
def test_rewards_and_observations_in_dummy_vec_envs_dtypes(ray_vec_env, make):
    # RayVecEnv returned the envs' float64 rewards / observations (as SubprocVecEnv); DummyVecEnv's buffers hold float32
    # rewards and the observation space's dtype, and VecNormalize's return statistics differ by the rounding
    ray_env, dummy_env = ray_vec_env([make] * 2), DummyVecEnv([make] * 2)
    for venv in (ray_env, dummy_env):
        venv.seed(0)
        venv.reset()
    actions = np.array([0, 1])
    (obs_r, rew_r, _, _), (obs_d, rew_d, _, _) = ray_env.step(actions), dummy_env.step(actions)
    assert rew_r.dtype == rew_d.dtype == np.float32 and obs_r.dtype == obs_d.dtype == np.float32
    np.testing.assert_array_equal(rew_r, rew_d)
    np.testing.assert_array_equal(obs_r, obs_d)


def test_ppo_rollback_with_vecnormalize_same_parameters(ray_vec_env):
    # Pendulum's float64 rewards reached VecNormalize's return statistics unrounded through RayVecEnv (445 of 8963
    # parameters differed after 512 steps)
    import torch as th
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_cherry import PPORollback

    def train(venv):
        model = PPORollback("MlpPolicy", VecNormalize(venv), n_steps=128, batch_size=64, n_epochs=2, seed=0, device="cpu")
        model.learn(512)
        return th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().numpy()

    make_pendulum = [lambda: gym.make("Pendulum-v1")] * 2
    np.testing.assert_array_equal(train(ray_vec_env(make_pendulum)), train(DummyVecEnv(make_pendulum)))


def test_metadata_is_the_envs(ray_vec_env):
    # SB3's VecVideoRecorder reads venv.metadata["render_fps"] (30 when missing): PixelCatch's 10 fps was recorded at 30
    from stable_baselines3.common.vec_env import VecVideoRecorder

    ray_env = ray_vec_env([make_pixel_catch])
    assert ray_env.metadata["render_fps"] == DummyVecEnv([make_pixel_catch]).metadata["render_fps"] == 10
    assert VecVideoRecorder(ray_env, "unused", lambda step: False, video_length=5).frames_per_sec == 10


def test_env_method_with_repeated_indices_calls_as_often_as_dummy_vec_env(ray_vec_env):
    ray_env, dummy_env = ray_vec_env([make_counter] * 2), DummyVecEnv([make_counter] * 2)
    assert ray_env.env_method("bump", indices=[0, 0, 1]) == dummy_env.env_method("bump", indices=[0, 0, 1]) == [1, 2, 1]
