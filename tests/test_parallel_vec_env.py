"""CherryParallelVecEnv against SB3's DummyVecEnv (the independent reference: same values, same order), its routing
of attribute calls to the groups, its failures, and `sb3-cherry train --vec-env parallel`."""

import os
import sys

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_cherry import PPORollback
from sb3_cherry.common.vec_env import CherryParallelVecEnv, WorkerDiedError, WorkerTimeoutError
from sb3_cherry.common.vec_env.parallel_vec_env import default_workers

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import the tests folder


def _pair(env_id: str = "CartPole-v1", n_envs: int = 5, n_workers: int = 2, seed: int = 3, **kwargs):
    """The same envs in a CherryParallelVecEnv (``fork``: quick to start) and in SB3's DummyVecEnv."""
    vec_kwargs = dict(n_workers=n_workers, start_method="fork")
    parallel = make_vec_env(env_id, n_envs, seed=seed, vec_env_cls=CherryParallelVecEnv, vec_env_kwargs=vec_kwargs, **kwargs)
    return parallel, make_vec_env(env_id, n_envs, seed=seed, vec_env_cls=DummyVecEnv, **kwargs)


def _assert_same_step(got, want):
    for a, b in zip(got[:3], want[:3], strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    for a, b in zip(got[3], want[3], strict=True):
        assert set(a) == set(b)
        if "terminal_observation" in b:
            np.testing.assert_array_equal(a["terminal_observation"], b["terminal_observation"])
            assert (a["episode"]["r"], a["episode"]["l"]) == (b["episode"]["r"], b["episode"]["l"])
            assert a["TimeLimit.truncated"] == b["TimeLimit.truncated"]


@pytest.mark.parametrize("n_envs, n_workers, groups", [(5, 2, [1, 2, 2]), (4, 1, [2, 2]), (2, 1, [1, 1])])
def test_steps_and_resets_as_dummy_vec_env(n_envs, n_workers, groups):
    parallel, dummy = _pair(n_envs=n_envs, n_workers=n_workers)
    try:
        assert [len(g) for g in parallel.groups] == groups and len(parallel.processes) == n_workers
        np.testing.assert_array_equal(parallel.reset(), dummy.reset())
        assert parallel.reset_infos == dummy.reset_infos
        rng, ends = np.random.default_rng(0), 0
        for _ in range(150):
            actions = rng.integers(0, 2, size=n_envs)
            got, want = parallel.step(actions), dummy.step(actions)
            _assert_same_step(got, want)
            ends += int(want[2].sum())
        assert ends >= n_envs  # episodes ended, and the workers reset their envs as DummyVecEnv does
        # seeds and options reach every group (then are cleared, as SB3's)
        parallel.seed(11), dummy.seed(11)
        np.testing.assert_array_equal(parallel.reset(), dummy.reset())
        assert parallel._seeds == [None] * n_envs
    finally:
        parallel.close(), dummy.close()


class DictCartPole(gym.ObservationWrapper):
    """CartPole seen as a Dict observation (positions, velocities)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        box = env.observation_space
        self.observation_space = gym.spaces.Dict(
            {"pos": gym.spaces.Box(box.low[::2], box.high[::2]), "vel": gym.spaces.Box(box.low[1::2], box.high[1::2])}
        )

    def observation(self, observation):
        return {"pos": observation[::2], "vel": observation[1::2]}


def test_dict_observations_as_dummy_vec_env():
    parallel, dummy = _pair(n_envs=3, n_workers=1, wrapper_class=DictCartPole)
    try:
        first, expected = parallel.reset(), dummy.reset()
        assert set(first) == set(expected) == {"pos", "vel"}
        for key in expected:
            np.testing.assert_array_equal(first[key], expected[key])
        for step in range(60):
            actions = np.array([step % 2, 1, 0])
            (obs, rewards, dones, infos), want = parallel.step(actions), dummy.step(actions)
            for key in want[0]:
                np.testing.assert_array_equal(obs[key], want[0][key])
            np.testing.assert_array_equal(rewards, want[1]), np.testing.assert_array_equal(dones, want[2])
            for got, expected_info in zip(infos, want[3], strict=True):
                if "terminal_observation" in expected_info:
                    for key in expected_info["terminal_observation"]:
                        np.testing.assert_array_equal(
                            got["terminal_observation"][key], expected_info["terminal_observation"][key]
                        )
    finally:
        parallel.close(), dummy.close()


def test_trains_the_same_parameters_as_dummy_vec_env():
    """A model on either VecEnv (and VecNormalize around it) computes the same floats: PPORollback with V-trace."""
    params = []
    for venv in _pair("Pendulum-v1", n_envs=4, n_workers=1, seed=0):
        model = PPORollback(
            "MlpPolicy", VecNormalize(venv), n_steps=32, batch_size=64, n_epochs=2, returns_estimator="vtrace", seed=0
        )
        model.learn(256)
        params.append(th.nn.utils.parameters_to_vector(model.policy.parameters()).detach())
        venv.close()
    assert th.equal(params[0], params[1])


class Tagged(gym.Wrapper):
    """CartPole with an attribute and a method to route calls to, and failures on demand."""

    def __init__(self, env: gym.Env, fail_at: int = -1, fail_how: str = "raise"):
        super().__init__(env)
        self.tag, self.t, self.fail_at, self.fail_how = None, 0, fail_at, fail_how

    def scaled(self, x, factor=1):
        return (self.tag, x * factor)

    def step(self, action):
        self.t += 1
        if self.t == self.fail_at:
            if self.fail_how == "exit":
                os._exit(5)
            if self.fail_how == "hang":
                import time

                time.sleep(60)
            raise ValueError("the env's own message")
        return self.env.step(action)


def _tagged(n_envs: int = 5, n_workers: int = 2, fail_env: int = -1, timeout: float | None = None, **failure):
    def make(i):
        return lambda: Tagged(Monitor(gym.make("CartPole-v1")), **(failure if i == fail_env else {}))

    return CherryParallelVecEnv([make(i) for i in range(n_envs)], n_workers, "fork", step_timeout=timeout)


def test_attribute_calls_reach_the_right_envs_in_order():
    venv = _tagged()
    try:
        venv.set_attr("tag", "x", indices=[4, 0, 2])
        assert venv.get_attr("tag") == ["x", None, "x", None, "x"]
        for i in range(5):
            venv.set_attr("tag", i, indices=i)
        assert venv.get_attr("tag", [3, 0, 4]) == [3, 0, 4]
        assert venv.env_method("scaled", 2, indices=[4, 1], factor=10) == [(4, 20), (1, 20)]
        assert venv.env_is_wrapped(Monitor) == [True] * 5 and venv.env_is_wrapped(gym.wrappers.RecordVideo, [1]) == [False]
        assert venv.get_attr("render_mode") == [None] * 5
    finally:
        venv.close()


@pytest.mark.parametrize("missing_in", [[0], [2], [4], [0, 2, 4], [1, 3]])
def test_a_missing_attribute_raises_and_the_env_stays_usable(missing_in):
    """Groups [0], [1, 2] (worker 0), [3, 4] (worker 1): a failure in any of them, with other answers still due."""
    venv = _tagged()
    try:
        venv.set_attr("only_here", 1, indices=[i for i in range(5) if i not in missing_in])
        with pytest.raises(AttributeError, match="only_here"):
            venv.get_attr("only_here")
        with pytest.raises(AttributeError, match="no_method"):
            venv.env_method("no_method")
        with pytest.raises(Exception, match=r"pickle|lambda"):  # (pickle.PicklingError or AttributeError)
            venv.set_attr("fn", lambda: 1)
        assert venv.get_attr("render_mode") == [None] * 5  # the pipes are still in step
        venv.reset()
        venv.step(np.zeros(5, dtype=int))
    finally:
        venv.close()


class RenderFails(gym.Wrapper):
    """CartPole (rgb_array) whose render raises; its reset info counts its resets; a lambda attribute."""

    def __init__(self, env: gym.Env, fails: bool = False):
        super().__init__(env)
        self.fails, self.resets, self.fn = fails, 0, lambda: 1

    def render(self):
        if self.fails:
            raise ValueError("no picture")
        return self.env.render()

    def reset(self, **kwargs):
        self.resets += 1
        obs, info = self.env.reset(**kwargs)
        return obs, {**info, "resets": self.resets}


def test_indices_reset_infos_metadata_and_failing_calls_as_dummy_vec_env():
    fns = [lambda i=i: RenderFails(Monitor(gym.make("CartPole-v1", render_mode="rgb_array")), i == 0) for i in range(5)]
    parallel, dummy = CherryParallelVecEnv(fns, 2, "fork"), DummyVecEnv(fns)
    try:
        assert parallel.metadata == dummy.metadata and parallel.metadata["render_fps"] == 50
        for indices in (-1, [-5, 4, 4, 0], range(4, 0, -1), np.array([1, 3]), None):
            assert parallel.get_attr("resets", indices) == dummy.get_attr("resets", indices)
        for bad in (5, -6, [0, 7]):
            with pytest.raises(IndexError):
                parallel.get_attr("resets", bad)
        parallel.set_attr("tag", "last", -1)
        assert parallel.get_attr("tag", [4]) == ["last"]
        # a worker's answer that does not pickle is raised here; the VecEnv stays usable
        with pytest.raises(Exception, match=r"pickle|lambda"):  # (pickle.PicklingError or AttributeError)
            parallel.get_attr("fn", [3])
        # a render failure in this process's group: the workers' images are still read
        with pytest.raises(ValueError, match="no picture"):
            parallel.get_images()
        assert parallel.get_attr("render_mode", [1]) == ["rgb_array"]
        parallel.seed(2), dummy.seed(2)
        parallel.reset(), dummy.reset()
        rng = np.random.default_rng(1)
        for _ in range(60):  # auto-resets update reset_infos, as DummyVecEnv does
            actions = rng.integers(0, 2, size=5)
            parallel.step(actions), dummy.step(actions)
            assert parallel.reset_infos == dummy.reset_infos
        assert max(info["resets"] for info in dummy.reset_infos) >= 2
    finally:
        parallel.close(), dummy.close()


@pytest.mark.parametrize("fail_env", [0, 3])
def test_an_env_exception_in_step_is_raised_with_its_traceback(fail_env):
    venv = _tagged(fail_env=fail_env, fail_at=3)
    venv.reset()
    venv.step(np.zeros(5, dtype=int)), venv.step(np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="the env's own message") as info:
        venv.step(np.zeros(5, dtype=int))
    if fail_env == 3:  # in a worker: the note names its envs and carries the worker's traceback
        note = "\n".join(info.value.__notes__)
        assert "env(s) 3-4 of a CherryParallelVecEnv in step()" in note and "Traceback" in note
    with pytest.raises(RuntimeError, match=r"unusable .* close it and create a new one"):
        venv.step(np.zeros(5, dtype=int))
    venv.close()
    assert venv.closed and not any(p.is_alive() for p in venv.processes)
    for call in (venv.reset, lambda: venv.step(np.zeros(5, dtype=int)), lambda: venv.get_attr("tag")):
        with pytest.raises(RuntimeError, match="is closed: create a new one"):
            call()


def test_a_dead_worker_is_reported():
    venv = _tagged(fail_env=4, fail_at=2, fail_how="exit")
    venv.reset()
    venv.step(np.zeros(5, dtype=int))
    with pytest.raises(WorkerDiedError, match=r"CherryParallelVecEnv worker 1 \(envs 3-4\) died \(exit code 5\)"):
        venv.step(np.zeros(5, dtype=int))
    venv.close()


def test_a_hung_worker_times_out():
    venv = _tagged(fail_env=2, fail_at=1, fail_how="hang", timeout=1.0)
    venv.reset()
    with pytest.raises(WorkerTimeoutError, match=r"worker 0 \(envs 1-2\) did not answer 'step' within step_timeout=1.0"):
        venv.step(np.zeros(5, dtype=int))
    venv.close()


def _broken_env():
    raise RuntimeError("cannot build this env")


def test_an_env_constructor_failing_in_a_worker_is_raised():
    with pytest.raises(RuntimeError, match="cannot build this env") as info:
        CherryParallelVecEnv([lambda: gym.make("CartPole-v1"), _broken_env], 1, "fork")
    assert "in the env constructor" in "\n".join(info.value.__notes__)


def test_arguments_are_checked():
    fns = [lambda: gym.make("CartPole-v1")] * 3
    with pytest.raises(ValueError, match="at least 2 envs"):
        CherryParallelVecEnv(fns[:1])
    for bad in (0, 3, True, 1.0):
        with pytest.raises(ValueError, match="n_workers must be an int from 1 to 2"):
            CherryParallelVecEnv(fns, bad)
    with pytest.raises(ValueError, match="step_timeout"):
        CherryParallelVecEnv(fns, 1, step_timeout=0)
    assert 1 <= default_workers(32) <= 31 and default_workers(2) == 1


def test_default_start_method_runs_registered_envs():
    """forkserver (the default where available, as SB3's SubprocVecEnv) with an env registered by id."""
    venv = make_vec_env("CartPole-v1", 3, seed=0, vec_env_cls=CherryParallelVecEnv)
    dummy = make_vec_env("CartPole-v1", 3, seed=0, vec_env_cls=DummyVecEnv)
    try:
        np.testing.assert_array_equal(venv.reset(), dummy.reset())
        _assert_same_step(venv.step(np.ones(3, dtype=int)), dummy.step(np.ones(3, dtype=int)))
    finally:
        venv.close(), dummy.close()


def test_cli_trains_on_a_parallel_vec_env(tmp_path, monkeypatch, capsys):
    """`sb3-cherry train --vec-env parallel` builds the training envs as a CherryParallelVecEnv (evaluation: one
    process); --parallel-workers is checked."""
    from sb3_cherry.cli import main
    from sb3_cherry.common.vec_env import parallel_vec_env

    built = []

    class Recording(CherryParallelVecEnv):
        def __init__(self, env_fns, n_workers=None, start_method=None, step_timeout=None):
            built.append((len(env_fns), n_workers))
            super().__init__(env_fns, n_workers, "fork", step_timeout)

    monkeypatch.setattr(parallel_vec_env, "CherryParallelVecEnv", Recording)
    args = ["train", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-n", "128", "-f", str(tmp_path), "--seed", "0"]
    args += ["--vec-env", "parallel", "--parallel-workers", "9", "--eval-freq", "64", "--eval-episodes", "1"]
    main([*args, "--hyperparams", "n_envs:4", "n_steps:32", "batch_size:64"])
    assert built == [(4, 3)]  # 9 workers asked, at most n_envs - 1 started; the evaluation env is not one
    assert (tmp_path / "ppo_rollback" / "CartPole-v1_1" / "CartPole-v1.zip").exists()
    assert "Training and eval env are not of the same type" not in capsys.readouterr().err  # (one process by design)
    for extra, message in (
        (["--parallel-workers", "2"], "--parallel-workers is an option of --vec-env parallel"),
        (["--vec-env", "parallel", "--parallel-workers", "0"], "--parallel-workers must be at least 1"),
        (["--vec-env", "dummy", "--parallel-workers", "2"], "--parallel-workers is an option of --vec-env parallel"),
        (["--resume", str(tmp_path / "ppo_rollback" / "CartPole-v1_1"), "--parallel-workers", "2"], "'--parallel-workers'"),
    ):
        with pytest.raises(SystemExit):
            main(["train", "--algo", "ppo_rollback", "--env", "CartPole-v1", *extra])
        assert message in capsys.readouterr().err


def _entry(tmp_path, **extra):
    import yaml

    entry = {"n_timesteps": 128, "policy": "MlpPolicy", "n_envs": 4, "n_steps": 32, "batch_size": 64, **extra}
    path = tmp_path / "conf.yml"
    path.write_text(yaml.safe_dump({"CartPole-v1": entry}))
    return str(path)


@pytest.mark.parametrize("option, expected", [(None, [(4, None)]), ("dummy", []), ("subproc", [])])
def test_an_entry_chooses_parallel_and_the_command_line_overrides_it(tmp_path, monkeypatch, option, expected):
    from sb3_cherry.cli import main
    from sb3_cherry.common.vec_env import parallel_vec_env

    built = []

    class Recording(CherryParallelVecEnv):
        def __init__(self, env_fns, n_workers=None, start_method=None, step_timeout=None):
            built.append((len(env_fns), n_workers))
            super().__init__(env_fns, 1, "fork", step_timeout)

    monkeypatch.setattr(parallel_vec_env, "CherryParallelVecEnv", Recording)
    monkeypatch.setattr(parallel_vec_env, "available_cores", lambda: 2)
    args = ["train", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-c", _entry(tmp_path, vec_env="parallel")]
    args += ["-f", str(tmp_path / "runs"), "--eval-freq", "-1", *(["--vec-env", option] if option else [])]
    main(args)
    assert built == expected
    # the run's config.yml records the VecEnv it ran on: --resume continues on it
    from sb3_cherry.common.safe_config import saved_hyperparams

    config, _ = saved_hyperparams(str(tmp_path / "runs" / "ppo_rollback" / "CartPole-v1_1" / "CartPole-v1"))
    assert config["vec_env"] == (option or "parallel")


def test_an_entry_in_one_core_steps_in_one_process(tmp_path, monkeypatch, capsys):
    from sb3_cherry.cli import main
    from sb3_cherry.common.vec_env import parallel_vec_env

    monkeypatch.setattr(parallel_vec_env, "available_cores", lambda: 1)
    args = ["train", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-c", _entry(tmp_path, vec_env="parallel")]
    main([*args, "-f", str(tmp_path / "runs"), "--eval-freq", "-1"])
    assert "this process has one core" in capsys.readouterr().out


def test_an_unknown_vec_env_in_an_entry_is_refused(tmp_path):
    from sb3_cherry.common.config_schema import validate_config
    from sb3_cherry.common.zoo_config import load_zoo_entry

    with pytest.raises(ValueError, match=r"vec_env='threads' must be one of \['dummy', 'subproc', 'parallel'\]"):
        validate_config(_entry(tmp_path, vec_env="threads"), "ppo_rollback", "CartPole-v1")
    entry = load_zoo_entry("ppo_rollback", "BipedalWalker-v3")  # the shipped entry: parallel, not a model argument
    assert entry.vec_env == "parallel" and "vec_env" not in entry.model_kwargs
    assert load_zoo_entry("ppo_rollback", "CartPole-v1").vec_env == "dummy"


def test_register_zoo_lets_rl_zoo3_train_read_the_vec_env_key():
    import rl_zoo3.exp_manager
    import rl_zoo3.train

    from sb3_cherry.cli import register_zoo
    from sb3_cherry.resume import SafeExperimentManager

    saved = rl_zoo3.train.ExperimentManager
    try:
        rl_zoo3.train.ExperimentManager = rl_zoo3.exp_manager.ExperimentManager
        register_zoo()
        assert rl_zoo3.train.ExperimentManager is SafeExperimentManager
    finally:
        rl_zoo3.train.ExperimentManager = saved
