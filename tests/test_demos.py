"""Demonstration files: record -> save -> load round trips, VecNormalize, bad files, imitation hidden."""

import importlib
import json
import re
import sys
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecNormalize
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

import sb3_cherry.demos as demos
from sb3_cherry.common.spaces import flat_action_dim, flatten_action
from sb3_cherry.demos import demos_to_transitions, load_demo_spaces, load_demos, record_demos, save_demos

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class LineEnv(gym.Env):
    """``s' = s + (a - 1)``; terminates at ``|s| >= 3``, truncated after ``max_steps``; reward -1 per step."""

    observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = spaces.Discrete(3)

    def __init__(self, max_steps: int = 6):
        self.max_steps = max_steps

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.steps = 0.0, 0
        return np.array([self.pos], dtype=np.float32), {}

    def step(self, action):
        self.pos += float(int(action) - 1)
        self.steps += 1
        terminated = abs(self.pos) >= 3
        return np.array([self.pos], dtype=np.float32), -1.0, terminated, self.steps >= self.max_steps, {}


class TupleEnv(gym.Env):
    """Parameterised action ``(Discrete(3), Box(-1, 1, (1,)))``: ``s' = s + [d - 1, p]``; truncated after 5 steps."""

    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = spaces.Tuple((spaces.Discrete(3), spaces.Box(-1, 1, (1,), np.float32)))

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.state, self.steps = np.zeros(2, dtype=np.float32), 0
        return self.state.copy(), {}

    def step(self, action):
        discrete, box = action
        self.state = self.state + np.array([int(discrete) - 1, float(np.clip(box, -1, 1)[0])], dtype=np.float32)
        self.steps += 1
        return self.state.copy(), float(-np.abs(self.state).sum()), False, self.steps >= 5, {}


class DictEnv(gym.Env):
    """Dict observations (a Box and a Discrete key), Box actions; terminates after 4 steps."""

    observation_space = spaces.Dict(
        {"pos": spaces.Box(-10, 10, (2,), np.float32), "step": spaces.Discrete(5)},
    )
    action_space = spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.steps = np.zeros(2, dtype=np.float32), 0
        return self._obs(), {}

    def _obs(self):
        return {"pos": self.pos.copy(), "step": self.steps}

    def step(self, action):
        self.pos = (self.pos + np.clip(action, -1, 1)).astype(np.float32)
        self.steps += 1
        return self._obs(), 1.0, self.steps >= 4, False, {}


class RandomModel:
    """A stand-in for a trained model: ``predict`` samples the action space (seeded)."""

    def __init__(self, action_space: spaces.Space, seed: int = 0):
        self.action_space = action_space
        self.action_space.seed(seed)

    def predict(self, obs: Any, state=None, episode_start=None, deterministic: bool = False):
        n_envs = len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)
        actions = [self.action_space.sample() for _ in range(n_envs)]
        if isinstance(self.action_space, spaces.Tuple):
            return actions, state
        return np.stack(actions), state


class WorkerRestarts(VecEnvWrapper):
    """
    A VecEnv whose (single) worker is restarted at the given steps, reported as :class:`~sb3_cherry.common.vec_env.
    RayVecEnv` reports it: the actions are not applied, the envs are reset, and the step returns the reset
    observations, reward 0, ``done=True`` and info ``{"TimeLimit.truncated": False, "worker_restarted": True,
    "terminal_observation": <the previous observation>}``.

    :param venv: the envs of the worker
    :param restart_at: the steps (counted from 1) that restart it
    """

    def __init__(self, venv: VecEnv, restart_at: set[int]):
        super().__init__(venv)
        self.restart_at, self.n_steps, self.n_restarts = set(restart_at), 0, 0
        self.last_obs: Any = None

    def reset(self) -> VecEnvObs:
        self.last_obs = self.venv.reset()
        return self.last_obs

    def step_async(self, actions: np.ndarray) -> None:
        self.n_steps += 1
        if self.n_steps not in self.restart_at:
            self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self.n_steps in self.restart_at:
            self.n_restarts += 1
            previous = self.last_obs
            obs = self.venv.reset()
            infos = [
                {"TimeLimit.truncated": False, "worker_restarted": True, "terminal_observation": np.array(previous[i])}
                for i in range(self.num_envs)
            ]
            rewards, dones = np.zeros(self.num_envs, np.float32), np.ones(self.num_envs, dtype=bool)
        else:
            obs, rewards, dones, infos = self.venv.step_wait()
        self.last_obs = obs
        return obs, rewards, dones, infos


class GoRight:
    """A stand-in for a trained model that always takes action 2 (one step right in :class:`LineEnv`)."""

    def predict(self, obs: Any, state=None, episode_start=None, deterministic: bool = False):
        return np.full(len(obs), 2), state


def _assert_same_trajectories(a: list, b: list) -> None:
    assert len(a) == len(b)
    for ta, tb in zip(a, b, strict=True):
        obs_a, obs_b = demos._unwrap_obs(ta.obs), demos._unwrap_obs(tb.obs)
        if isinstance(obs_a, dict):
            assert obs_a.keys() == obs_b.keys()
            for key in obs_a:
                np.testing.assert_array_equal(obs_a[key], obs_b[key])
        else:
            np.testing.assert_array_equal(obs_a, obs_b)
        np.testing.assert_array_equal(ta.acts, tb.acts)
        np.testing.assert_array_equal(ta.rews, tb.rews)
        assert ta.terminal == tb.terminal


@pytest.mark.parametrize("env_class", [LineEnv, TupleEnv, DictEnv])
def test_round_trip(tmp_path, env_class):
    env = env_class()
    path = tmp_path / "demos.npz"
    trajectories = record_demos(RandomModel(env.action_space), env, n_episodes=4, path=path, seed=0)
    assert len(trajectories) == 4
    loaded = load_demos(path)
    _assert_same_trajectories(trajectories, loaded)
    observation_space, action_space = load_demo_spaces(path)
    assert observation_space == env.observation_space
    assert action_space == env.action_space
    for traj in loaded:
        assert len(demos._unwrap_obs(traj.obs)["pos"] if env_class is DictEnv else traj.obs) == len(traj.acts) + 1
        if isinstance(env.action_space, spaces.Tuple):
            assert traj.acts.shape == (len(traj), flat_action_dim(env.action_space)) and traj.acts.dtype == np.float32
        elif isinstance(env.action_space, spaces.Discrete):
            assert traj.acts.shape == (len(traj),) and traj.acts.dtype == np.int64
        else:
            assert traj.acts.shape == (len(traj), 2)

    transitions = demos_to_transitions(loaded)
    assert len(transitions) == sum(len(t) for t in loaded)
    if env_class is DictEnv:
        assert type(loaded[0].obs).__name__ == "DictObs"  # imitation is installed in the test environment
        assert transitions.obs["step"].shape == (len(transitions),) and transitions.next_obs["pos"].shape[1:] == (2,)
    assert transitions.dones.sum() == sum(t.terminal for t in loaded)


def test_final_observation_and_terminal_flags():
    # The line env terminates at |s| >= 3 and the VecEnv resets automatically: the final observation must be the
    # terminal one (|s| = 3, not the reset observation 0), and the dynamics s' = s + a - 1 hold on every step.
    env = LineEnv(max_steps=6)
    trajectories = record_demos(RandomModel(env.action_space, seed=3), env, n_episodes=30, seed=3)
    for traj in trajectories:
        np.testing.assert_array_equal(np.diff(traj.obs[:, 0]), traj.acts - 1)
        assert traj.obs[0, 0] == 0
        if traj.terminal:
            assert abs(traj.obs[-1, 0]) == 3
        else:
            assert len(traj) == 6  # truncated by the time limit
    assert {t.terminal for t in trajectories} == {True, False}


def test_vec_normalize_records_original_values():
    venv = VecNormalize(DummyVecEnv([LineEnv]), norm_obs=True, norm_reward=True, clip_obs=0.5)
    model = RandomModel(venv.action_space, seed=1)
    before = (venv.obs_rms.count, venv.ret_rms.count, venv.obs_rms.mean.copy())
    trajectories = record_demos(model, venv, n_episodes=10, seed=1)
    # the statistics of a training VecNormalize are left as they were (recording updated them), training mode too
    assert (venv.obs_rms.count, venv.ret_rms.count) == before[:2] and venv.training
    np.testing.assert_array_equal(venv.obs_rms.mean, before[2])
    for traj in trajectories:
        # Unnormalised (and unclipped) observations, terminal ones included, and the raw rewards
        np.testing.assert_array_equal(np.diff(traj.obs[:, 0]), traj.acts - 1)
        np.testing.assert_array_equal(traj.rews, -1.0)
    # the recorder wrapper was removed again
    assert isinstance(venv.venv, DummyVecEnv)


@pytest.mark.parametrize("env_id, norm_obs", [("line", True), ("sb3_cherry/PixelCatch-v0", False), ("image", True)])
def test_recordings_hold_the_same_observations_with_and_without_normalisation(env_id, norm_obs, tmp_path):
    # rl_zoo3 puts its frame_stack above its normalize (and SB3 its VecTransposeImage above both): the recording held
    # the VecNormalize's single frames there, the stacked ones without a VecNormalize (CarRacing: (96, 96, 3) vs 6)
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    def record(normalize: bool):
        venv = DummyVecEnv([LineEnv if env_id == "line" else (lambda: gym.make("sb3_cherry/PixelCatch-v0"))])
        venv = VecNormalize(venv, norm_obs=norm_obs, norm_reward=True, clip_obs=0.5) if normalize else venv
        venv = VecFrameStack(venv, n_stack=3)
        # (SB3 transposes the images it can: not normalised ones, which are float32 in [-clip_obs, clip_obs])
        venv = VecTransposeImage(venv) if env_id == "sb3_cherry/PixelCatch-v0" else venv
        path = tmp_path / f"{normalize}.npz"
        return venv, record_demos(RandomModel(venv.action_space, seed=1), venv, n_episodes=5, path=path, seed=1)

    (plain_env, plain), (_, normalized) = record(False), record(True)
    # the file's space is the unnormalised one (a normalised image's was float32 in [-clip_obs, clip_obs])
    assert load_demo_spaces(tmp_path / "True.npz")[0] == load_demo_spaces(tmp_path / "False.npz")[0]
    assert load_demo_spaces(tmp_path / "False.npz")[0] == plain_env.observation_space
    assert [len(t) for t in plain] == [len(t) for t in normalized]
    for a, b in zip(plain, normalized, strict=True):
        np.testing.assert_array_equal(a.acts, b.acts)
        np.testing.assert_allclose(a.obs, b.obs, rtol=1e-6)  # (float32 through VecNormalize's unnormalisation)
        assert a.obs.shape[1:] == plain_env.observation_space.shape and a.terminal == b.terminal
    if env_id == "line":  # independent of both: the stack holds the last three positions, zeros before the episode
        for traj in plain:
            positions = np.concatenate([[0.0, 0.0], np.cumsum(np.concatenate([[0], traj.acts - 1]))])
            np.testing.assert_array_equal(traj.obs, np.stack([positions[i : i + 3] for i in range(len(traj) + 1)]))


def test_record_rejects_several_envs():
    venv = DummyVecEnv([LineEnv, LineEnv])
    with pytest.raises(ValueError, match="one environment"):
        record_demos(RandomModel(venv.action_space), venv, n_episodes=1)


def test_record_from_env_id_and_sb3_model(tmp_path):
    from sb3_cherry import PPORollback

    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, seed=0)
    trajectories = record_demos(model, "CartPole-v1", n_episodes=2, path=tmp_path / "cartpole", seed=0)
    assert (tmp_path / "cartpole.npz").exists()
    _assert_same_trajectories(trajectories, load_demos(tmp_path / "cartpole"))
    metadata = json.loads(str(np.load(tmp_path / "cartpole.npz")["metadata"]))
    assert metadata["env_id"] == "CartPole-v1"


def test_save_demos_accepts_tuple_actions(tmp_path):
    space = TupleEnv.action_space
    acts = [(1, np.array([0.5], dtype=np.float32)), (2, np.array([-0.25], dtype=np.float32))]
    obs = np.zeros((3, 2), np.float32)
    traj = demos.DemoTrajectory(obs=obs, acts=acts, infos=None, terminal=True, rews=np.zeros(2, np.float32))  # type: ignore[arg-type]
    save_demos(tmp_path / "t.npz", [traj], TupleEnv.observation_space, space)
    loaded = load_demos(tmp_path / "t.npz")
    np.testing.assert_array_equal(loaded[0].acts, np.stack([flatten_action(space, a) for a in acts]))


# ----------------------------------------------------------------------------------------------------- bad files
@pytest.fixture
def good_arrays(tmp_path) -> dict[str, np.ndarray]:
    env = LineEnv()
    record_demos(RandomModel(env.action_space), env, n_episodes=3, path=tmp_path / "good.npz", seed=0)
    with np.load(tmp_path / "good.npz") as data:
        return {key: data[key] for key in data.files}


def _write(tmp_path, arrays: dict[str, np.ndarray], name: str = "bad.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_not_an_archive(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not a numpy archive")
    with pytest.raises(ValueError, match=r"garbage\.npz is not a demonstration file"):
        load_demos(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        load_demos(tmp_path / "missing.npz")


def test_single_array_file(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ValueError, match=r"array.npy holds a single array"):
        load_demos(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("format_version"), "missing 'format_version': not an sb3_cherry demonstration file"),
        (lambda a: a.update(format_version=np.array(99)), "format_version 99 is not supported"),
        (lambda a: a.pop("actions"), r"missing \['actions'\]"),
        (lambda a: a.pop("observations"), "missing observation array 'observations'"),
        (lambda a: a.update(observations=a["observations"][:-1]), r"observations in 'observations'.*need.*final observation"),
        (lambda a: a.update(actions=a["actions"][:-1]), "'actions' has shape"),
        (lambda a: a.update(rewards=a["rewards"][:-1]), "'rewards' must be a float array"),
        (lambda a: a.update(episode_lengths=np.array([0, 1, 2])), "'episode_lengths' must be"),
        (lambda a: a.update(terminal=np.array([1, 0, 1])), "'terminal' must be a bool array"),
        (lambda a: a.update(observations=a["observations"][:, :, None]), "per-step shape"),
        (lambda a: a.update(spaces=np.array("{not json")), "'spaces' is not a valid space description"),
        (lambda a: a.update(spaces=np.array(json.dumps({"observation_space": {"type": "Graph"}}))), "not a valid space"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, good_arrays, change, message):
    change(good_arrays)
    path = _write(tmp_path, good_arrays)
    with pytest.raises(ValueError, match=message) as info:
        load_demos(path)
    assert "bad.npz" in str(info.value)


def test_pickled_arrays_are_refused(tmp_path, good_arrays):
    good_arrays["rewards"] = np.array([{"evil": 1}] * len(good_arrays["rewards"]), dtype=object)
    path = _write(tmp_path, good_arrays)
    with pytest.raises(ValueError, match=r"bad\.npz: cannot read array 'rewards'"):
        load_demos(path)


def test_dict_observation_keys_checked(tmp_path):
    env = DictEnv()
    record_demos(RandomModel(env.action_space), env, n_episodes=2, path=tmp_path / "dict.npz", seed=0)
    with np.load(tmp_path / "dict.npz") as data:
        arrays = {key: data[key] for key in data.files}
    arrays["obs/extra"] = arrays["obs/pos"]
    with pytest.raises(ValueError, match=r"\['obs/extra'\] are not keys"):
        load_demos(_write(tmp_path, arrays))
    del arrays["obs/extra"], arrays["obs/step"]
    with pytest.raises(ValueError, match="missing observation array 'obs/step'"):
        load_demos(_write(tmp_path, arrays))


def test_atomic_write_keeps_previous_file(tmp_path, monkeypatch):
    env = LineEnv()
    path = tmp_path / "demos.npz"
    record_demos(RandomModel(env.action_space), env, n_episodes=2, path=path, seed=0)
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash in the middle of a write")

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(KeyboardInterrupt):
        record_demos(RandomModel(env.action_space), env, n_episodes=2, path=path, seed=1)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["demos.npz"]


def test_load_without_imitation(tmp_path, monkeypatch):
    for env in (LineEnv(), DictEnv()):
        record_demos(RandomModel(env.action_space), env, n_episodes=2, path=tmp_path / f"{type(env).__name__}.npz", seed=0)
    with_imitation = load_demos(tmp_path / "DictEnv.npz")

    for name in [m for m in sys.modules if m == "imitation" or m.startswith("imitation.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "imitation", None)
    reloaded = importlib.reload(demos)
    try:
        line = reloaded.load_demos(tmp_path / "LineEnv.npz")
        assert all(type(t) is reloaded.DemoTrajectory for t in line)
        assert line[0].rews.dtype == np.float32 and len(line[0].obs) == len(line[0]) + 1
        dict_demos = reloaded.load_demos(tmp_path / "DictEnv.npz")
        assert isinstance(dict_demos[0].obs, dict)
        _assert_same_trajectories(with_imitation, dict_demos)
        # recording works too
        trajectories = reloaded.record_demos(RandomModel(LineEnv.action_space), LineEnv(), n_episodes=1)
        assert type(trajectories[0]) is reloaded.DemoTrajectory
    finally:
        monkeypatch.undo()
        importlib.reload(demos)


class _SpaceCase:
    cases: ClassVar[list[spaces.Space]] = [
        spaces.Box(-1.0, 2.0, (3,), np.float32),
        spaces.Box(np.array([-np.inf, 0.0]), np.array([1.0, np.inf]), dtype=np.float64),
        spaces.Box(0, 255, (4, 4, 3), np.uint8),
        spaces.Discrete(4, start=2),
        spaces.MultiDiscrete([3, 2]),
        spaces.MultiBinary(5),
        spaces.Tuple((spaces.Discrete(2), spaces.Tuple((spaces.Box(-1, 1, (2,)), spaces.MultiBinary(2))))),
        spaces.Dict({"a": spaces.Box(-1, 1, (2,)), "b": spaces.Discrete(3)}),
    ]


@pytest.mark.parametrize("space", _SpaceCase.cases, ids=lambda s: type(s).__name__)
def test_space_json_round_trip(space):
    text = json.dumps(demos.space_to_dict(space), allow_nan=False)  # strict JSON: no Infinity / NaN literals
    assert demos.space_from_dict(json.loads(text)) == space


def test_trajectories_without_rewards_round_trip(tmp_path, good_arrays):
    # save_demos stores NaN rewards for trajectories recorded without them ("unknown"), and they load back
    obs = np.arange(8, dtype=np.float32).reshape(4, 2) / 10

    class NoRewards:
        acts, terminal = np.array([0, 1, 0]), True

    NoRewards.obs = obs
    space = spaces.Box(-1, 1, (2,), np.float32)
    save_demos(tmp_path / "n.npz", [NoRewards()], space, spaces.Discrete(2))
    loaded = load_demos(tmp_path / "n.npz")
    assert np.isnan(loaded[0].rews).all() and loaded[0].acts.tolist() == [0, 1, 0]
    # an episode with some NaN rewards among known ones is a broken file
    good_arrays["rewards"][1] = np.nan
    with pytest.raises(ValueError, match=r"'rewards' has a non-finite value .* episode 0, step 1"):
        load_demos(_write(tmp_path, good_arrays))


def test_save_demos_checks_each_trajectorys_lengths(tmp_path):
    # totals that agree (4 + 2 rewards for 3 + 3 actions) would shift a reward into the next episode
    space = spaces.Box(-1, 1, (2,), np.float32)

    class Traj:
        def __init__(self, n_acts, n_rews):
            self.obs, self.acts = np.zeros((n_acts + 1, 2), np.float32), np.zeros(n_acts, np.int64)
            self.rews, self.terminal = np.zeros(n_rews, np.float32), True

    with pytest.raises(ValueError, match="trajectory 0 has 4 rewards for 3 actions"):
        save_demos(tmp_path / "b.npz", [Traj(3, 4), Traj(3, 2)], space, spaces.Discrete(2))
    dict_space = spaces.Dict({"a": space, "b": space})
    bad = Traj(3, 3)
    bad.obs = {"a": np.zeros((4, 2), np.float32), "b": np.zeros((3, 2), np.float32)}
    with pytest.raises(ValueError, match="trajectory 0 has 3 observations of 'b' for 3 actions"):
        save_demos(tmp_path / "d.npz", [bad], dict_space, spaces.Discrete(2))
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------- memory of bad files
def _add_entry(path, name: str, shape: tuple[int, ...], n_bytes: int | None = None) -> None:
    """Append a deflated .npy entry of zeros (written in chunks: the test itself stays small) whose header declares
    ``shape``; ``n_bytes``: the data actually written, when not what the shape needs (what a crafted file can hold)."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open(name, "w", force_zip64=True) as entry:
            entry.write(header.getvalue())
            left, chunk = int(np.prod(shape)) * 8 if n_bytes is None else n_bytes, bytes(2**20)
            while left > 0:
                entry.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)


def _peak_of(load) -> tuple[Any, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        try:
            result: Any = load()
        except ValueError as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_unknown_entries_are_not_read(tmp_path):
    """The review's demo bomb: an extra deflated entry (here 128 MiB of zeros, ~130 KiB in the file) is not read."""
    env = LineEnv()
    path = tmp_path / "demos.npz"
    record_demos(RandomModel(env.action_space), env, n_episodes=2, path=path, seed=0)
    _add_entry(path, "padding.npy", (2**24,))
    assert path.stat().st_size < 2**20
    result, peak = _peak_of(lambda: load_demos(path))
    assert isinstance(result, list) and len(result) == 2
    assert peak < 2**24


def test_an_array_larger_than_the_files_shapes_allow_is_refused_before_reading(tmp_path, good_arrays):
    """'rewards' of 16 M entries in a file of 3 short episodes: refused from its header, before inflating 128 MiB."""
    good_arrays.pop("rewards")
    path = _write(tmp_path, good_arrays)
    _add_entry(path, "rewards.npy", (2**24,))
    result, peak = _peak_of(lambda: load_demos(path))
    assert isinstance(result, ValueError)
    assert re.search(
        r"bad\.npz: cannot read array 'rewards' \(\(16777216,\) float64 is 134217728 bytes, more than", str(result)
    )
    assert "episode lengths and spaces allow" in str(result)
    assert peak < 2**24


def test_an_entry_whose_header_disagrees_with_its_size_is_refused(tmp_path, good_arrays):
    """A header asking for 2**40 entries in a small entry (numpy would allocate the header's shape first)."""
    good_arrays.pop("observations")
    path = _write(tmp_path, good_arrays)
    _add_entry(path, "observations.npy", (2**40,), n_bytes=4096)
    with pytest.raises(ValueError, match=r"cannot read array 'observations' \(the entry declares 4224 bytes, but its header"):
        load_demos(path)


def test_episode_interrupted_by_a_worker_restart_is_discarded(tmp_path):
    """Going right in LineEnv ends every episode after 3 steps at position 3. A worker restart at step 2 (after one
    applied step) interrupts the first episode: it is discarded with a warning, not written as [0, 1, 1] and terminal."""
    venv = WorkerRestarts(DummyVecEnv([LineEnv]), restart_at={2})
    with pytest.warns(UserWarning, match=r"worker was restarted .* 1 steps into an episode: the interrupted episode is"):
        trajectories = record_demos(GoRight(), venv, n_episodes=2, path=tmp_path / "demos.npz", seed=0)
    assert venv.n_restarts == 1
    for loaded in (trajectories, load_demos(tmp_path / "demos.npz")):
        assert len(loaded) == 2
        for traj in loaded:
            np.testing.assert_array_equal(traj.obs, [[0.0], [1.0], [2.0], [3.0]])
            np.testing.assert_array_equal(traj.acts, [2, 2, 2])
            assert traj.terminal


class Float64BoundEnv(gym.Env):
    """A Tuple action whose float64 Box bound 0.1 is not a float32 number (``float32(0.1) > 0.1``)."""

    observation_space = spaces.Box(-10, 10, (1,), np.float32)
    action_space = spaces.Tuple((spaces.Discrete(2), spaces.Box(-0.1, 0.1, (1,), np.float64)))

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.t += 1
        return np.full(1, self.t, np.float32), 0.0, False, self.t >= 3, {}


class OnTheBound:
    """Takes ``(1, [0.1])``: on the float64 Box's upper bound (what clipping a Gaussian policy's action gives)."""

    def predict(self, obs: Any, state=None, episode_start=None, deterministic: bool = False):
        return [(1, np.array([0.1]))] * len(obs), state


def test_tuple_actions_with_a_float64_box_are_stored_exactly(tmp_path):
    path = tmp_path / "f64.npz"
    record_demos(OnTheBound(), Float64BoundEnv(), n_episodes=1, path=path, seed=0)
    (loaded,) = load_demos(path)
    assert loaded.acts.dtype == np.float64
    np.testing.assert_array_equal(loaded.acts, [[1.0, 0.1]] * 3)  # 0.1 exactly, not float32(0.1)
    # a float32 flat encoding (files of earlier versions, flatten_action) holds float32(0.1): still accepted
    obs = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)
    old_acts = np.array([[1.0, 0.1]] * 3, dtype=np.float32)
    arrays = dict(np.load(path))
    arrays["actions"] = old_acts
    np.savez(tmp_path / "old.npz", **arrays)
    np.testing.assert_array_equal(load_demos(tmp_path / "old.npz")[0].acts, old_acts)
    trajectory = demos.DemoTrajectory(obs=obs, acts=old_acts, infos=None, terminal=False, rews=np.zeros(3, np.float32))
    save_demos(tmp_path / "resaved.npz", [trajectory], Float64BoundEnv.observation_space, Float64BoundEnv.action_space)
    # beyond the float32 rounding of the bound is outside the space
    arrays["actions"] = np.array([[1.0, 0.1 + 1e-6]] * 3)
    np.savez(tmp_path / "outside.npz", **arrays)
    with pytest.raises(ValueError, match=r"episode 0, step 0 .* is outside the action space"):
        load_demos(tmp_path / "outside.npz")


def test_transitions_of_tuple_actions_given_as_tuples():
    obs = np.array([[0, 0], [1, 0.5], [2, 0.2]], np.float32)
    acts = [(2, np.array([0.5], np.float32)), (0, np.array([-0.25], np.float32))]
    trajectory = demos.DemoTrajectory(obs=obs, acts=acts, infos=None, terminal=False, rews=np.zeros(2, np.float32))  # type: ignore[arg-type]
    transitions = demos_to_transitions([trajectory], action_space=TupleEnv.action_space)
    np.testing.assert_array_equal(transitions.acts, np.array([[2.0, 0.5], [0.0, -0.25]], np.float32))
    np.testing.assert_array_equal(transitions.next_obs, obs[1:])
    with pytest.raises(ValueError, match=r"pass action_space=<the env's action space>"):
        demos_to_transitions([trajectory])
    state_only = demos_to_transitions([trajectory], include_actions=False)
    assert state_only.acts.shape == (2, 0) and len(state_only) == 2
