"""Demonstration files: non-finite values and actions outside the recorded action space are refused at load."""

import numpy as np
import pytest
from gymnasium import spaces

from sb3_cherry.demos import DemoTrajectory, load_demos, save_demos


def _file(tmp_path, action_space, actions_per_episode, change=None):
    """Two episodes (3 and 4 steps) in a Box(-10, 10, (2,)) observation space, then ``change`` applied to the arrays."""
    observation_space = spaces.Box(-10.0, 10.0, (2,), np.float32)
    trajectories = []
    for acts in actions_per_episode:
        obs = np.arange(2 * (len(acts) + 1), dtype=np.float32).reshape(-1, 2) / 10
        rews = np.ones(len(acts), np.float32)
        trajectories.append(DemoTrajectory(obs=obs, acts=acts, infos=None, terminal=True, rews=rews))  # type: ignore[arg-type]
    path = tmp_path / "demos.npz"
    save_demos(path, trajectories, observation_space, action_space)
    if change is not None:
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
        change(arrays)
        np.savez(path, **arrays)
    return path


DISCRETE = [np.array([0, 1, 1]), np.array([1, 0, 0, 1])]


def _set(key, row, value):
    def change(arrays):
        arrays[key] = arrays[key].copy()
        arrays[key][row] = value

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (_set("rewards", 4, np.nan), r"'rewards' has a non-finite value \(NaN or inf\) at episode 1, step 1"),
        (_set("observations", 6, np.inf), r"'observations' has a non-finite value .* at episode 1, step 2"),
        (_set("observations", 3, -np.inf), r"at episode 0, step 3"),  # the final observation of episode 0
        (_set("actions", 2, 5), r"the action of episode 0, step 2 \(5\) is outside the action space Discrete\(2\)"),
        (_set("actions", 6, -1), r"episode 1, step 3"),
    ],
)
def test_discrete_file_errors_name_episode_and_step(tmp_path, change, message):
    path = _file(tmp_path, spaces.Discrete(2), DISCRETE, change)
    with pytest.raises(ValueError, match=message) as info:
        load_demos(path)
    assert "demos.npz" in str(info.value)


def test_valid_file_loads(tmp_path):
    assert [len(t.acts) for t in load_demos(_file(tmp_path, spaces.Discrete(2), DISCRETE))] == [3, 4]


def test_box_actions(tmp_path):
    space = spaces.Box(-2.0, 2.0, (1,), np.float32)
    acts = [np.zeros((3, 1), np.float32), np.zeros((4, 1), np.float32)]
    with pytest.raises(ValueError, match=r"episode 1, step 0 \(\[2\.5\]\) is outside"):
        load_demos(_file(tmp_path, space, acts, _set("actions", 3, 2.5)))
    with pytest.raises(ValueError, match=r"'actions' has a non-finite value .* at episode 0, step 1"):
        load_demos(_file(tmp_path, space, acts, _set("actions", 1, np.nan)))


@pytest.mark.parametrize("row, value", [(0, [3.0, 0.5]), (0, [1.5, 0.5]), (0, [1.0, 1.5])])
def test_tuple_actions(tmp_path, row, value):
    space = spaces.Tuple((spaces.Discrete(3), spaces.Box(-1.0, 1.0, (1,), np.float32)))
    acts = [[(1, np.array([0.5], np.float32))] * 3, [(2, np.array([-0.5], np.float32))] * 4]
    load_demos(_file(tmp_path, space, acts))
    with pytest.raises(ValueError, match=r"episode 0, step 0 .* is outside the action space Tuple"):
        load_demos(_file(tmp_path, space, acts, _set("actions", row, value)))


def test_multi_discrete_and_binary(tmp_path):
    md = spaces.MultiDiscrete([2, 3])
    acts = [np.array([[0, 2]] * 3), np.array([[1, 1]] * 4)]
    load_demos(_file(tmp_path, md, acts))
    with pytest.raises(ValueError, match="episode 1, step 0"):
        load_demos(_file(tmp_path, md, acts, _set("actions", 3, [1, 3])))
    mb = spaces.MultiBinary(2)
    acts = [np.array([[0, 1]] * 3, np.int8), np.array([[1, 1]] * 4, np.int8)]
    with pytest.raises(ValueError, match="episode 0, step 1"):
        load_demos(_file(tmp_path, mb, acts, _set("actions", 1, [2, 0])))


def test_demo_file_mode_follows_umask(tmp_path):
    import os

    old = os.umask(0o027)
    try:
        path = _file(tmp_path, spaces.Discrete(2), DISCRETE)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
