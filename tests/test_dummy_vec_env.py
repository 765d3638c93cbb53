"""CherryDummyVecEnv against SB3's DummyVecEnv (the independent reference: SB3's own class), stepped side by side."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_cherry import PPORollback
from sb3_cherry.common.vec_env import CherryDummyVecEnv
from sb3_cherry.common.vec_env.dummy_vec_env import copy_infos

_SHARED = {"list": [1, 2]}  # one object in every env's info: a deep copy keeps it shared within a step


class _InfoEnv(gym.Env):
    """Random observations of the given space; infos of every kind: numbers, numpy scalars, strings, None, nested
    dicts, arrays, an object shared between envs, and the same dict object returned at every step (mutated in place,
    as some envs do)."""

    def __init__(self, observation_space: spaces.Space, seed: int = 0):
        self.observation_space = observation_space
        self.observation_space.seed(seed)
        self.action_space = spaces.Discrete(3)
        self.rng = np.random.default_rng(seed)
        self.reused: dict = {}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {"reset": True}

    def step(self, action):
        kind = int(self.rng.integers(5))
        if kind == 0:
            info = {"x": float(self.rng.random()), "n": int(action), "np": np.float64(self.rng.random()), "s": "a", "z": None}
        elif kind == 1:
            info = {"nested": {"v": float(self.rng.random())}, "b": np.bool_(True), "f32": np.float32(1.5)}
        elif kind == 2:
            info = {"array": self.rng.random(3), "shared": _SHARED}
        elif kind == 3:
            self.reused["count"] = self.reused.get("count", 0) + 1  # the same object at every such step
            info = self.reused
        else:
            info = {1: "int key", "x": 0.5}
        terminated, truncated = bool(self.rng.random() < 0.1), bool(self.rng.random() < 0.05)
        return self.observation_space.sample(), float(self.rng.normal()), terminated, truncated, info


def _same(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert type(a) is type(b) and list(a) == list(b), where
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert type(b) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape, where
        assert a.tobytes() == b.tobytes(), where
    else:
        assert type(a) is type(b) and (a == b or (a != a and b != b)), where


def _objects(value):
    """Every mutable object reachable in ``value`` (dicts, lists, arrays)."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _objects(item)
    elif isinstance(value, (list, tuple)):
        if isinstance(value, list):
            yield value
        for item in value:
            yield from _objects(item)
    elif isinstance(value, np.ndarray):
        yield value


SPACES = {
    "box": lambda: spaces.Box(-1, 1, (2, 3), np.float32),
    "discrete": lambda: spaces.Discrete(4),
    "dict": lambda: spaces.Dict({"a": spaces.Box(-1, 1, (2,)), "b": spaces.MultiBinary(3)}),
    "tuple": lambda: spaces.Tuple((spaces.Box(-1, 1, (2,)), spaces.Discrete(2))),
}


@pytest.mark.parametrize("space", list(SPACES))
@pytest.mark.parametrize("n_envs", [1, 3])
def test_steps_are_sb3s(space, n_envs):
    """Same observations, rewards, dones and infos as SB3's DummyVecEnv; every returned object is a new one (not the
    buffer's, not the env's, not the previous step's), and objects shared between infos stay shared within a step."""

    def fns():
        return [lambda i=i: _InfoEnv(SPACES[space](), seed=i) for i in range(n_envs)]

    reference, cherry = DummyVecEnv(fns()), CherryDummyVecEnv(fns())
    _same(reference.reset(), cherry.reset(), "reset")
    rng = np.random.default_rng(0)
    seen: list = []
    for step in range(300):
        actions = rng.integers(3, size=n_envs)
        ref_step, step_out = reference.step(actions), cherry.step(actions)
        _same(ref_step, step_out, f"step {step}")
        obs, rewards, dones, infos = step_out
        internal = list(_objects(cherry.buf_obs)) + list(_objects(cherry.buf_infos))
        for env in cherry.envs:
            internal += list(_objects(env.unwrapped.reused))
        returned = [*_objects([obs, infos]), rewards, dones]
        assert not {id(o) for o in returned} & {id(o) for o in internal + seen}, f"step {step}"
        shared = [info["shared"] for info in infos if "shared" in info]
        assert len({id(s) for s in shared}) <= 1 and all(s is not _SHARED for s in shared)
        seen += returned[-20:]  # keep them alive, so that ids are not reused


def test_copy_infos_is_deepcopy():
    from copy import deepcopy

    infos = [{"a": 1, "b": np.float32(2.0), "c": "x"}, {"a": [1]}, {"episode": {"r": 1.0}}, {"t": np.array(1.0)}]
    copies = copy_infos(infos)
    _same(deepcopy(infos), copies, "infos")
    assert all(c is not i for c, i in zip(copies, infos, strict=True))
    assert copies[1]["a"] is not infos[1]["a"] and copies[3]["t"] is not infos[3]["t"]


def test_monitor_episodes_and_object_observations():
    """Monitor's episode infos, and an observation buffer of dtype object (SB3's deepcopy path), as SB3's."""
    reference = make_vec_env("CartPole-v1", n_envs=2, seed=3)
    cherry = make_vec_env("CartPole-v1", n_envs=2, seed=3, vec_env_cls=CherryDummyVecEnv)
    _same(reference.reset(), cherry.reset(), "reset")
    for step in range(200):
        actions = np.array([step % 2, (step // 3) % 2])
        ref_step, step_out = reference.step(actions), cherry.step(actions)
        for info in ref_step[3] + step_out[3]:
            if "episode" in info:
                info["episode"]["t"] = 0.0  # Monitor's wall-clock time
        _same(ref_step, step_out, f"step {step}")
    venv = CherryDummyVecEnv([lambda: _InfoEnv(spaces.Box(-1, 1, (2,)))])
    venv.buf_obs[None] = venv.buf_obs[None].astype(object)
    assert venv.reset().dtype == object


def test_algorithms_and_the_cli_vectorise_with_it():
    import rl_zoo3.exp_manager

    from sb3_cherry.cli import register_zoo

    model = PPORollback("MlpPolicy", Monitor(gym.make("CartPole-v1")), n_steps=8, batch_size=8, device="cpu")
    assert type(model.get_env()) is CherryDummyVecEnv
    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=8, batch_size=8, device="cpu")
    assert type(model.get_env()) is CherryDummyVecEnv
    register_zoo()
    assert rl_zoo3.exp_manager.DummyVecEnv is CherryDummyVecEnv


def test_info_dicts_shared_between_envs_stay_shared():
    """Found by review: an env returning one module-level info dict (or one env's info inside another's) gave shared
    copies in SB3's single deepcopy of the list, and separate copies here."""
    shared = {"speed": 0.0}

    class SharedInfo(gym.Env):
        observation_space = spaces.Box(-1, 1, (2,), np.float32)
        action_space = spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            return np.zeros(2, np.float32), {}

        def step(self, action):
            shared["speed"] = float(action)
            return np.zeros(2, np.float32), 0.0, False, False, shared

    for venv_class in (DummyVecEnv, CherryDummyVecEnv):
        venv = venv_class([SharedInfo, SharedInfo])
        venv.reset()
        infos = venv.step(np.array([1, 0]))[3]
        assert infos[0] is infos[1] and infos[0] is not shared, venv_class
    a = {"x": 1.0}
    for infos in ([a, {"peer": a}], [{"peer": a}, a]):
        copies = copy_infos(infos)
        peer = copies[1]["peer"] if "peer" in copies[1] else copies[0]["peer"]
        own = copies[0] if "peer" in copies[1] else copies[1]
        assert peer is own and own is not a
