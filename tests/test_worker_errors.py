"""Failures of worker processes name their cause: SubprocVecEnv workers, and the async learner's main-guard check."""

import os
import subprocess
import sys
import textwrap

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env

from sb3_cherry import PPORollback
from sb3_cherry.common.vec_env import CherrySubprocVecEnv, WorkerDiedError

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import the tests folder


class Failing(gym.Wrapper):
    """CartPole that raises, or exits its process, at a given step / reset."""

    def __init__(self, env: gym.Env, mode: str, at_step: int = 20):
        super().__init__(env)
        self.mode, self.at_step, self.t = mode, at_step, 0

    def step(self, action):
        self.t += 1
        if self.t == self.at_step:
            if self.mode == "raise":
                raise ValueError("the env's own message")
            if self.mode == "exit":
                os._exit(3)
        return self.env.step(action)

    def reset(self, **kwargs):
        if self.mode == "reset":
            raise KeyError("reset failed")
        return self.env.reset(**kwargs)


def _venv(mode: str, at_step: int = 20, start_method: str | None = "fork") -> CherrySubprocVecEnv:
    """Two workers (``fork``: quick to start; the default start method is used once)."""
    kwargs = dict(mode=mode, at_step=at_step)
    return make_vec_env(
        "CartPole-v1",
        n_envs=2,
        vec_env_cls=CherrySubprocVecEnv,
        wrapper_class=Failing,
        wrapper_kwargs=kwargs,
        vec_env_kwargs=dict(start_method=start_method),
    )


def test_env_exception_in_step_reaches_learn_with_traceback():
    venv = _venv("raise", start_method=None)
    model = PPORollback("MlpPolicy", venv, n_steps=64, batch_size=64)
    with pytest.raises(ValueError, match="the env's own message") as info:
        model.learn(256)
    note = "\n".join(info.value.__notes__)
    assert "raised by env 0 of a SubprocVecEnv in step()" in note and "in step" in note and "Traceback" in note
    with pytest.raises(RuntimeError, match="unusable after the error of worker 0"):
        venv.reset()
    venv.close()  # does not hang on the answers that were not read
    assert all(not p.is_alive() for p in venv.processes)


def test_env_exception_in_reset():
    venv = _venv("reset")
    with pytest.raises(KeyError, match="reset failed") as info:
        venv.reset()
    assert "in reset()" in "\n".join(info.value.__notes__)
    venv.close()


def test_dead_worker_named_with_exit_code():
    venv = _venv("exit")
    model = PPORollback("MlpPolicy", venv, n_steps=64, batch_size=64)
    with pytest.raises(WorkerDiedError, match=r"worker 0 \(env 0\) died \(exit code 3\)"):
        model.learn(256)
    venv.close()


def test_env_constructor_failure():
    def broken() -> gym.Env:
        raise OSError("no display")

    with pytest.raises(WorkerDiedError, match="died while creating the envs"):
        CherrySubprocVecEnv([broken, broken], start_method="fork")


def test_rl_zoo3_uses_it():
    import rl_zoo3.exp_manager

    from sb3_cherry.cli import register_zoo

    register_zoo()
    assert rl_zoo3.exp_manager.SubprocVecEnv is CherrySubprocVecEnv


def _run_script(tmp_path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def test_async_without_main_guard_says_so(tmp_path):
    result = _run_script(
        tmp_path,
        """
        import os, pathlib
        from sb3_cherry import PPORollback
        pathlib.Path(f"ran_{os.getpid()}").touch()
        PPORollback("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, collection="async").learn(64)
        pathlib.Path("trained").touch()
        """,
    )
    assert result.returncode != 0
    assert "RuntimeError: " in result.stderr and 'no `if __name__ == "__main__":` guard' in result.stderr
    assert len(list(tmp_path.glob("ran_*"))) == 1 and not (tmp_path / "trained").exists()  # the script ran once


def test_async_learn_outside_the_guard_says_so(tmp_path):
    result = _run_script(
        tmp_path,
        """
        from sb3_cherry import PPORollback
        if __name__ == "__main__":
            print("guarded")
        PPORollback("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, collection="async").learn(64)
        """,
    )
    assert result.returncode != 0
    assert "while a child process imported the main script" in result.stderr  # the child's own error
    assert "move that code under the guard" in result.stderr  # the main process's error


class SimError(Exception):
    """An exception whose __init__ takes other arguments than its message: it pickles, but does not unpickle."""

    def __init__(self, step, reason):
        super().__init__(f"step {step}: {reason}")


class FailingWithSimError(gym.Wrapper):
    def step(self, action):
        raise SimError(3, "solver diverged")


def test_exception_that_does_not_unpickle_keeps_its_text_and_close_returns():
    venv = CherrySubprocVecEnv([lambda: FailingWithSimError(gym.make("CartPole-v1"))] * 2, start_method="fork")
    venv.reset()
    with pytest.raises(RuntimeError, match=r"SimError: step 3: solver diverged \(raised by env 0") as info:
        venv.step([0, 0])
    assert "Traceback" in str(info.value)
    assert venv.broken == 0 and not venv.waiting
    venv.close()  # returned: no answer left to wait for
    assert all(not p.is_alive() for p in venv.processes)


class Curriculum(gym.Env):
    """Its reset returns its ``difficulty`` attribute (a knob set from the main process with ``set_attr``)."""

    observation_space = gym.spaces.Box(-10, 10, (1,))
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.difficulty = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return [float(self.difficulty)], {}

    def step(self, action):
        return [float(self.difficulty)], 0.0, True, False, {}


def test_set_attr_reaches_the_env_as_in_sb3():
    from stable_baselines3.common.vec_env import SubprocVecEnv

    observations = []
    for cls in (SubprocVecEnv, CherrySubprocVecEnv):
        venv = cls([Curriculum, Curriculum], start_method="fork")
        venv.set_attr("difficulty", 5)
        assert venv.get_attr("difficulty") == [5, 5]
        observations.append(venv.reset().ravel().tolist())
        venv.close()
    assert observations == [[5.0, 5.0], [5.0, 5.0]]


def test_missing_attribute_is_an_attribute_error_and_the_workers_live_on():
    """SB3's worker dies on ``get_attr`` / ``env_method`` of a name the env lacks (it looked like a crash); here it is
    an AttributeError naming the attribute, and the VecEnv stays usable."""
    venv = CherrySubprocVecEnv([Curriculum, Curriculum], start_method="fork")
    with pytest.raises(AttributeError, match="no attribute 'difficulti'"):
        venv.get_attr("difficulti")
    with pytest.raises(AttributeError, match="no attribute 'set_difficulty'"):
        venv.env_method("set_difficulty", 3, indices=[1])
    assert venv.get_attr("difficulty", indices=[1]) == [0]
    assert venv.env_method("reset", indices=0)[0][0] == [0.0]
    assert all(p.is_alive() for p in venv.processes)
    venv.close()


class Knobs(Curriculum):
    """A ``_private`` attribute its methods read, a method and a property that raise."""

    def __init__(self):
        super().__init__()
        self._scale = 1

    def scaled(self):
        return self._scale * 10

    def explode(self):
        raise KeyError("no such level")

    @property
    def broken_property(self):
        raise ZeroDivisionError("property failed")


def test_private_attributes_reach_the_env_as_in_sb3():
    """set_attr of a ``_name`` goes to the env (SB3's worker sets it on the outermost env; the reporting wrapper must
    not keep it): a TimeLimit's ``_max_episode_steps``, an env's own ``_scale``."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    results = []
    for cls in (SubprocVecEnv, CherrySubprocVecEnv):
        venv = cls([lambda: gym.make("CartPole-v1")] * 2, start_method="fork")
        venv.set_attr("_max_episode_steps", 3)
        venv.reset()
        dones = [venv.step([0, 0])[2].tolist() for _ in range(3)]
        venv.close()
        knobs = cls([Knobs], start_method="fork")
        knobs.set_attr("_scale", 7)
        results.append((dones, knobs.get_attr("_scale"), knobs.env_method("scaled")))
        knobs.close()
    assert results[0] == results[1] == ([[False, False], [False, False], [True, True]], [7], [70])


def test_indices_may_be_a_one_shot_iterable():
    venv = CherrySubprocVecEnv([Knobs, Knobs], start_method="fork")
    assert venv.get_attr("difficulty", indices=(i for i in [1, 0])) == [0, 0]
    assert venv.env_method("scaled", indices=iter([1])) == [10]
    assert venv.reset().shape == (2, 1)  # the pipes are still in step
    venv.close()


def test_env_method_and_get_attr_errors_are_raised_in_the_main_process():
    """SB3's worker dies on them (looks like a crash); here the env's exception is raised with the worker's
    traceback. A call to one env leaves the VecEnv usable; one whose other answers are unread does not."""
    venv = CherrySubprocVecEnv([Knobs, Knobs], start_method="fork")
    with pytest.raises(KeyError, match="no such level") as info:
        venv.env_method("explode", indices=[1])
    assert "raised by env 1 of a SubprocVecEnv in env_method('explode')" in "\n".join(info.value.__notes__)
    with pytest.raises(ZeroDivisionError, match="property failed"):
        venv.get_attr("broken_property", indices=[0])
    assert venv.env_method("scaled") == [10, 10] and venv.reset().shape == (2, 1)
    assert all(p.is_alive() for p in venv.processes)
    with pytest.raises(KeyError, match="no such level"):
        venv.env_method("explode")  # env 0 fails first: env 1's answer is left unread
    with pytest.raises(RuntimeError, match="unusable after the error of worker 0"):
        venv.reset()
    venv.close()


@pytest.mark.parametrize("start_method, when", [(None, "sending 'step'"), ("fork", "waiting for its answer")])
def test_a_worker_found_dead_makes_the_vecenv_unusable(start_method, when):
    """Worker 1 dies idle; step() sends to worker 0 first, then finds 1 dead: worker 0's answer is never read, so
    later calls must not read it as theirs. With "fork", worker 0 holds a copy of worker 1's end of the pipe (it was
    forked first), so the death shows only as a process that exited while its answer is awaited (no EOF comes)."""
    import signal

    venv = CherrySubprocVecEnv([Knobs, Knobs], start_method=start_method)
    venv.reset()
    os.kill(venv.processes[1].pid, signal.SIGKILL)
    venv.processes[1].join(timeout=5.0)
    with pytest.raises(WorkerDiedError, match=rf"worker 1 \(env 1\) died \(killed by signal 9\) while {when}"):
        venv.step([0, 0])
    with pytest.raises(RuntimeError, match="unusable after the error of worker 1"):
        venv.get_attr("difficulty", indices=[0])
    venv.close()
    assert all(not p.is_alive() for p in venv.processes)


def test_constructor_failure_names_the_worker_and_its_exit_code():
    def fine() -> gym.Env:
        return Knobs()

    def broken() -> gym.Env:
        raise OSError("no display")

    with pytest.raises(WorkerDiedError, match=r"worker, exit code: \[\(1, 1\)\]"):
        CherrySubprocVecEnv([fine, broken], start_method="fork")


class Levels(Curriculum):
    """A property whose setter refuses some values."""

    @property
    def level(self):
        return self.difficulty

    @level.setter
    def level(self, value):
        if value < 0:
            raise ValueError("level must be >= 0")
        self.difficulty = value


def test_set_attr_error_is_raised_in_the_main_process():
    """SB3's worker dies on it (a 'crash' with exit code 1); here the setter's exception comes back with the worker's
    traceback and, set on one env, the VecEnv stays usable."""
    venv = CherrySubprocVecEnv([Levels, Levels], start_method="fork")
    venv.set_attr("level", 3)
    assert venv.get_attr("level") == [3, 3]
    with pytest.raises(ValueError, match="level must be >= 0") as info:
        venv.set_attr("level", -1, indices=[1])
    assert "raised by env 1 of a SubprocVecEnv in set_attr('level')" in "\n".join(info.value.__notes__)
    assert venv.get_attr("level") == [3, 3] and venv.reset().ravel().tolist() == [3.0, 3.0]
    assert all(p.is_alive() for p in venv.processes)
    venv.close()


class Hanging(gym.Wrapper):
    """CartPole whose step hangs (sleeps for a minute) at a given step."""

    def __init__(self, env: gym.Env, at_step: int = 3):
        super().__init__(env)
        self.at_step, self.t = at_step, 0

    def step(self, action):
        self.t += 1
        if self.t == self.at_step:
            import time

            time.sleep(60)
        return self.env.step(action)


def test_step_timeout_reports_a_hung_worker():
    import time

    from sb3_cherry.common.vec_env import WorkerTimeoutError

    venv = make_vec_env(
        "CartPole-v1",
        n_envs=2,
        vec_env_cls=CherrySubprocVecEnv,
        wrapper_class=Hanging,
        wrapper_kwargs=dict(at_step=3),
        vec_env_kwargs=dict(start_method="fork", step_timeout=1.0),
    )
    venv.reset()
    for _ in range(2):
        venv.step(venv.action_space.sample()[None].repeat(2, 0))  # answers in time are read as before
    start = time.monotonic()
    with pytest.raises(WorkerTimeoutError, match=r"worker 0 \(env 0\) did not answer 'step' within step_timeout=1.0 s"):
        venv.step(venv.action_space.sample()[None].repeat(2, 0))  # (SB3's SubprocVecEnv waits for the minute)
    assert time.monotonic() - start < 10
    with pytest.raises(RuntimeError, match="unusable after the error of worker 0"):
        venv.reset()
    start = time.monotonic()
    venv.close()  # the hung worker was terminated: closing does not wait for it
    assert time.monotonic() - start < 10 and not any(process.is_alive() for process in venv.processes)


@pytest.mark.parametrize("step_timeout", [0, -1.0, float("nan"), float("inf"), "60", True])
def test_step_timeout_is_checked(step_timeout):
    with pytest.raises(ValueError, match="step_timeout must be a number of seconds > 0"):
        CherrySubprocVecEnv([lambda: gym.make("CartPole-v1")], start_method="fork", step_timeout=step_timeout)


class _NoteLessError(ValueError):
    """An exception without ``add_note``, as every exception on Python 3.10 (which setup.cfg supports)."""

    @property
    def add_note(self):
        raise AttributeError("add_note")


class RaisingNoteless(gym.Wrapper):
    def step(self, action):
        raise _NoteLessError("the env's own message")


def test_worker_error_without_exception_notes_keeps_its_type_and_names_the_worker():
    # Python 3.10: add_note does not exist, and the env's error became "AttributeError: ... add_note"
    venv = CherrySubprocVecEnv([lambda: RaisingNoteless(gym.make("CartPole-v1"))] * 2, start_method="fork")
    venv.reset()
    with pytest.raises(_NoteLessError, match="the env's own message") as info:
        venv.step(np.zeros(2, dtype=np.int64))
    cause = info.value.__cause__
    assert isinstance(cause, RuntimeError) and "raised by env 0 of a SubprocVecEnv in step()" in str(cause)
    assert "Traceback" in str(cause)
    venv.close()
