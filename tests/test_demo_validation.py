"""Demonstration files: non-finite values and actions outside the recorded action space are refused at load."""

import io

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
        (
            _set("rewards", 4, np.nan),
            r"'rewards' has a non-finite value \(NaN, inf, or beyond float32's range.*at episode 1, step 1",
        ),
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


def test_float64_values_beyond_float32_range_are_refused(tmp_path):
    # 1e39 is finite in float64, inf once the float32 policy / inverse model takes it: the first update then failed
    # with "The data were finite, so the update itself diverged: lower the learning rate"
    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float64)
    obs = np.zeros((4, 2))
    obs[2, 1] = 1e39
    path = tmp_path / "wide.npz"
    trajectories = [DemoTrajectory(obs=obs, acts=np.array([0, 1, 0]), infos=None, terminal=True, rews=np.ones(3))]
    with pytest.raises(ValueError, match=r"'observations' has a non-finite value \(NaN, inf, or beyond float32's range"):
        save_demos(path, trajectories, observation_space, spaces.Discrete(2))  # type: ignore[arg-type]
    obs[2, 1] = 3e38  # within float32's range
    save_demos(path, trajectories, observation_space, spaces.Discrete(2))  # type: ignore[arg-type]
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["observations"][2, 1] = -1e39
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"beyond float32's range.* at episode 0, step 2"):
        load_demos(path)


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


def test_episode_lengths_whose_int64_sum_wraps_are_refused(tmp_path):
    # four lengths of 2**62 (+3) add up to 3 in int64: every size check passed, then np.repeat overran its buffer and
    # the process died (SIGSEGV) instead of refusing the file; run in a subprocess so a crash fails only this test
    import subprocess
    import sys

    lengths = np.array([2**62, 2**62, 2**62, 2**62 + 3], dtype=np.int64)

    def change(arrays):
        arrays.update(episode_lengths=lengths, terminal=np.ones(4, bool), observations=np.zeros((7, 2), np.float32))
        arrays["actions"], arrays["rewards"] = arrays["actions"][:3], arrays["rewards"][:3]

    path = _file(tmp_path, spaces.Discrete(2), DISCRETE, change)
    code = "from sb3_cherry.demos import load_demos, load_demo_spaces\n"
    code += "import sys\nfor load in (load_demos, load_demo_spaces):\n"
    code += "    try:\n        load(sys.argv[1])\n    except ValueError as error:\n        print(error)\n"
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("'episode_lengths' add up to 18446744073709551619 transitions") == 2


def _nested(kind, depth):
    space = {"type": "Discrete", "n": 2}
    for _ in range(depth):
        space = {"type": "Tuple", "spaces": [space]} if kind == "Tuple" else {"type": "Dict", "spaces": [["a", space]]}
    return space


BOX = {"type": "Box", "shape": [2], "dtype": "float32", "low": -10.0, "high": 10.0}


@pytest.mark.parametrize(
    "description, message",
    [
        ({"observation_space": {"type": "Tuple", "spaces": [BOX]}, "action_space": _nested("Tuple", 0)}, "Tuple observa"),
        ({"observation_space": BOX, "action_space": _nested("Dict", 1)}, "Unsupported action space component Dict"),
        (
            {"observation_space": {"type": "Dict", "spaces": [["a", _nested("Dict", 1)]]}, "action_space": _nested("", 0)},
            "Nest",
        ),
        ({"observation_space": BOX, "action_space": _nested("Tuple", 400)}, "nest more than 32 Tuple / Dict spaces deep"),
        ('{"observation_space": ' + "[" * 3000 + "]" * 3000 + "}", "nests too deeply"),
        (  # 100 Boxes of 2**20 entries: each below the cap of 2**24, all together far above (1.6 GB of bounds)
            {"observation_space": BOX, "action_space": {"type": "Tuple", "spaces": [{**BOX, "shape": [2**20]}] * 100}},
            r"a Box and the components before it hold 68157440 entries in all, more than the 67108864",
        ),
    ],
)
def test_spaces_a_file_describes_but_a_demonstration_cannot_have(tmp_path, description, message):
    # a Tuple observation / Dict action space failed with TypeError inside the shape checks, deep nesting with a
    # RecursionError; many Boxes each under the size cap were all built
    import json

    text = description if isinstance(description, str) else json.dumps(description)
    path = _file(tmp_path, spaces.Discrete(2), DISCRETE, lambda arrays: arrays.update(spaces=np.array(text)))
    with pytest.raises(ValueError, match=message) as info:
        load_demos(path)
    assert "demos.npz" in str(info.value) and len(str(info.value)) < 1000


def test_an_entry_shadowing_a_checked_one_is_refused(tmp_path):
    # numpy reads a member named exactly 'rewards' before 'rewards.npy': the header of one was checked, the other read
    # (a crafted 'rewards' declaring 2**40 float64 allocated 8 TiB)
    import zipfile

    path = _file(tmp_path, spaces.Discrete(2), DISCRETE)
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (2**40,)
    crafted = io.BytesIO()
    np.lib.format.write_array_header_1_0(crafted, header)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("rewards", crafted.getvalue())
    with pytest.raises(ValueError, match=r"holds both 'rewards' and 'rewards\.npy'"):
        load_demos(path)
