"""CherryVecNormalize against SB3's VecNormalize (the independent reference: SB3's own code), stepped side by side."""

import pickle
import pickletools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_cherry.common.restricted_pickle import load_vec_normalize
from sb3_cherry.common.vec_env.vec_normalize import CherryVecNormalize, update_running_mean_std


class _RandomEnv(gym.Env):
    """Random observations (of a given dtype, with a non-finite value now and then if asked), rewards on a wide
    scale, and episodes that end by termination or truncation at random."""

    def __init__(self, dtype: type = np.float64, dict_obs: bool = False, non_finite: bool = False, seed: int = 0):
        box = spaces.Box(-1000, 1000, (5,), dtype)
        self.observation_space = spaces.Dict({"a": box, "b": spaces.Box(-1, 1, (2, 3))}) if dict_obs else box
        self.action_space = spaces.Box(-1, 1, (2,))
        self.dtype, self.dict_obs, self.non_finite = dtype, dict_obs, non_finite
        self.rng = np.random.default_rng(seed)

    def _obs(self):
        values = self.rng.normal(3.0, 50.0, 5)
        if self.non_finite and self.rng.random() < 0.05:
            values[self.rng.integers(5)] = self.rng.choice([np.nan, np.inf, -np.inf])
        values = values.astype(self.dtype) if np.dtype(self.dtype).kind == "f" else values.round().astype(self.dtype)
        if self.dict_obs:
            return {"a": values, "b": self.rng.uniform(-1, 1, (2, 3)).astype(np.float32)}
        return values

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        reward = float(self.rng.normal(0.0, 10.0) * self.rng.choice([0.01, 1.0, 100.0]))
        terminated, truncated = bool(self.rng.random() < 0.03), bool(self.rng.random() < 0.03)
        return self._obs(), reward, terminated, truncated, {"x": self.rng.random()}


def _pair(n_envs: int, **kwargs):
    env_kwargs = kwargs.pop("env_kwargs", {})

    def venv():
        return DummyVecEnv([lambda i=i: _RandomEnv(seed=i, **env_kwargs) for i in range(n_envs)])

    return VecNormalize(venv(), **kwargs), CherryVecNormalize(venv(), **kwargs)


def _same(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}[{key}]")
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, where
    assert a.tobytes() == b.tobytes(), where  # bit for bit, NaN payloads included


def _same_statistics(reference: VecNormalize, cherry: VecNormalize, where: str, returns: bool = True) -> None:
    pairs = [(reference.ret_rms, cherry.ret_rms)]
    if reference.norm_obs:
        if isinstance(reference.obs_rms, dict):
            pairs += [(reference.obs_rms[key], cherry.obs_rms[key]) for key in reference.obs_rms]
        else:
            pairs.append((reference.obs_rms, cherry.obs_rms))
    for ref, mine in pairs:
        _same(ref.mean, mine.mean, f"{where} mean")
        _same(ref.var, mine.var, f"{where} var")
        assert type(ref.count) is type(mine.count) and ref.count == mine.count, where
    if returns:
        _same(reference.returns, cherry.returns, f"{where} returns")


def _run(reference: VecNormalize, cherry: VecNormalize, steps: int, freeze_at: int | None = None) -> None:
    _same(reference.reset(), cherry.reset(), "reset")
    rng = np.random.default_rng(1)
    ends = 0
    for step in range(steps):
        if step == freeze_at:
            reference.training = cherry.training = False
        actions = rng.uniform(-1, 1, (reference.num_envs, 2)).astype(np.float32)
        ref_obs, ref_rew, ref_done, ref_info = reference.step(actions)
        obs, rew, done, info = cherry.step(actions)
        _same(ref_obs, obs, f"obs at {step}")
        _same(ref_rew, rew, f"reward at {step}")
        _same(ref_done, done, f"done at {step}")
        ends += int(done.sum())
        for ref_i, mine_i in zip(ref_info, info, strict=True):
            assert ref_i.keys() == mine_i.keys()
            if "terminal_observation" in ref_i:
                _same(ref_i["terminal_observation"], mine_i["terminal_observation"], f"terminal obs at {step}")
        _same_statistics(reference, cherry, f"step {step}")
        _same(reference.get_original_obs(), cherry.get_original_obs(), f"original obs at {step}")
        _same(reference.get_original_reward(), cherry.get_original_reward(), f"original reward at {step}")
    assert ends > 0  # episodes did end, so terminal observations were compared


@pytest.mark.parametrize("n_envs", [1, 2, 9])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64])
def test_steps_are_sb3s_bit_for_bit(n_envs, dtype):
    reference, cherry = _pair(n_envs, gamma=0.97, clip_obs=1.5, clip_reward=2.0, env_kwargs={"dtype": dtype})
    _run(reference, cherry, 400)


@pytest.mark.parametrize("norm_obs, norm_reward", [(True, False), (False, True), (False, False)])
def test_switches_and_frozen_statistics_are_sb3s(norm_obs, norm_reward):
    reference, cherry = _pair(1, norm_obs=norm_obs, norm_reward=norm_reward, clip_obs=0.7)
    _run(reference, cherry, 300, freeze_at=150)


@pytest.mark.parametrize("n_envs", [1, 3])
def test_dict_observations_are_sb3s(n_envs):
    reference, cherry = _pair(n_envs, norm_obs_keys=["a"], env_kwargs={"dict_obs": True})
    _run(reference, cherry, 300)
    reference, cherry = _pair(n_envs, env_kwargs={"dict_obs": True})
    _run(reference, cherry, 300)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_observations_give_sb3s_statistics():
    """NaN / inf observations (which sb3_cherry's learn refuses, but a user's VecNormalize may see) reach the same
    statistics, NaN for NaN."""
    reference, cherry = _pair(1, env_kwargs={"non_finite": True})
    _run(reference, cherry, 200)
    assert np.isnan(cherry.obs_rms.var).any()


@pytest.mark.parametrize(
    "batch",
    [
        np.array([[1.5, -0.0, 3e300]]),
        np.array([[1, -7]], dtype=np.int32),
        np.array([[True, False]]),
        np.array([2.5]),
        np.array([[np.nan, np.inf, -np.inf]], dtype=np.float32),
        np.array([[0.1, 0.2], [0.3, 0.4]]),
    ],
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_update_running_mean_std_is_rms_update(batch):
    """The written-out one-row moments against numpy's mean / var (via SB3's update), from a non-trivial state."""
    shape = batch.shape[1:]
    reference, mine = RunningMeanStd(shape=shape), RunningMeanStd(shape=shape)
    for rms in (reference, mine):
        rms.mean = np.full(shape, 0.25)
        rms.var = np.full(shape, 2.0)
        rms.count = 17.0001
    reference.update(batch)
    update_running_mean_std(mine, batch)
    _same(reference.mean, mine.mean, "mean")
    _same(reference.var, mine.var, "var")
    assert reference.count == mine.count


def test_saved_statistics_are_sb3s_vec_normalize(tmp_path):
    """A CherryVecNormalize saves as SB3's VecNormalize (its own save and sb3_cherry's atomic statistics files): the
    file names only SB3's classes, loads with SB3's load and the restricted loader, and continues as SB3's would."""
    from sb3_cherry.resume import save_statistics

    reference, cherry = _pair(1, gamma=0.9)
    _run(reference, cherry, 100)
    path = tmp_path / "vecnormalize.pkl"
    save_statistics(cherry, str(tmp_path / "atomic.pkl"))
    cherry.save(str(path))
    for written in (path, tmp_path / "atomic.pkl"):
        strings = [str(arg) for _, arg, _ in pickletools.genops(written.read_bytes()) if isinstance(arg, str)]
        assert "VecNormalize" in strings and not any("Cherry" in s or "sb3_cherry" in s for s in strings)
        assert type(pickle.loads(written.read_bytes())) is VecNormalize
    assert type(cherry) is CherryVecNormalize and cherry.venv is not None  # saving left the wrapper as it was
    venv = DummyVecEnv([lambda: _RandomEnv(seed=5)])
    loaded_sb3 = VecNormalize.load(str(path), venv)
    loaded_restricted = load_vec_normalize(path, DummyVecEnv([lambda: _RandomEnv(seed=5)]))
    assert type(loaded_sb3) is VecNormalize and type(loaded_restricted) is VecNormalize
    _same_statistics(loaded_sb3, cherry, "loaded", returns=False)  # load starts new returns
    # the loaded statistics, converted, step as SB3's loaded ones
    converted = CherryVecNormalize.from_vec_normalize(loaded_restricted)
    assert converted.venv is loaded_restricted.venv and converted.obs_rms is loaded_restricted.obs_rms
    _run(loaded_sb3, converted, 100)


def test_the_training_cli_normalises_with_cherry_vec_normalize(tmp_path):
    """sb3-cherry train's experiment manager wraps in CherryVecNormalize, for new statistics and loaded (-i) ones."""
    from sb3_cherry.resume import SafeExperimentManager

    manager = SafeExperimentManager.__new__(SafeExperimentManager)
    manager.trained_agent, manager.env_name, manager.verbose = "", "Pendulum-v1", 0
    manager.normalize, manager.normalize_kwargs = True, {"gamma": 0.9}
    wrapped = manager._maybe_normalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), False)
    assert type(wrapped) is CherryVecNormalize and wrapped.gamma == 0.9 and wrapped.norm_reward
    evaluation = manager._maybe_normalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), True)
    assert type(evaluation) is CherryVecNormalize and not evaluation.norm_reward
    folder = tmp_path / "run" / "Pendulum-v1"
    folder.mkdir(parents=True)
    wrapped.save(str(folder / "vecnormalize.pkl"))
    manager.trained_agent = str(tmp_path / "run" / "model.zip")
    loaded = manager._maybe_normalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), True)
    assert type(loaded) is CherryVecNormalize and not loaded.training and not loaded.norm_reward
    manager.normalize, manager.trained_agent = False, ""
    plain = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    assert manager._maybe_normalize(plain, False) is plain


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(
    "dtype, bits",
    [
        (np.float16, [0x7C01, 0x8000, 0xFC01, 0x3C00]),
        (np.float32, [0x7F800001, 0x80000000, 0xFF800001, 0x3F800000]),
        (np.float64, [0x7FF0000000000001, 0x8000000000000000, 0x3FF0000000000000]),
    ],
)
def test_one_row_moments_are_numpys_bits(dtype, bits, monkeypatch):
    """The moments handed to update_from_moments are np.mean's / np.var's to the bit: -0.0 becomes +0.0 and a
    signalling NaN is quieted, as numpy's sum from +0.0 does (found by review: the row itself was passed)."""
    unsigned = {np.float16: np.uint16, np.float32: np.uint32, np.float64: np.uint64}[dtype]
    batch = np.array(bits, dtype=unsigned).view(dtype)[None]
    seen = []
    monkeypatch.setattr(RunningMeanStd, "update_from_moments", lambda self, mean, var, count: seen.append((mean, var)))
    update_running_mean_std(RunningMeanStd(shape=batch.shape[1:]), batch)
    ((mean, var),) = seen
    _same(np.mean(batch, axis=0), mean, "mean")
    _same(np.var(batch, axis=0), var, "var")


def test_statistics_with_their_own_update_keep_it():
    """Found by review: a RunningMeanStd subclass overriding update (here: frozen) was bypassed with one env; and a
    converted wrapper's class attributes are its own (outer wrappers find its methods)."""
    from stable_baselines3.common.vec_env import VecFrameStack

    class Frozen(RunningMeanStd):
        def update(self, arr):
            pass

    reference, cherry = _pair(1)
    for wrapper in (reference, cherry):
        wrapper.obs_rms, wrapper.ret_rms = Frozen(shape=(5,)), Frozen(shape=())
    _run(reference, cherry, 50)
    assert cherry.obs_rms.count == reference.obs_rms.count == pytest.approx(1e-4)
    converted = CherryVecNormalize.from_vec_normalize(VecNormalize(DummyVecEnv([lambda: _RandomEnv()])))
    assert callable(VecFrameStack(converted, 2).to_vec_normalize)
