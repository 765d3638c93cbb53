"""Safe loading: no model file is unpickled unless asked to; files of SB3 / sb3-contrib / older sb3_cherry still load."""

import base64
import collections
import io
import json
import os
import pathlib
import pickle
import struct
import zipfile

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import data_to_json
from stable_baselines3.common.utils import LinearSchedule
from torch import nn

from sb3_cherry import BCO, CherryA2C, PPORollback, RecurrentPPORollback
from sb3_cherry.common.safe_load import (
    UnsafeModelFileError,
    pickled_global_name,
    rebuild_space,
    space_from_fields,
    stored_policy_class,
)


def _observations(env_id: str, n: int = 8) -> np.ndarray:
    space = gym.make(env_id).observation_space
    space.seed(0)
    return np.stack([space.sample() for _ in range(n)])


def _to_bytes(model: BaseAlgorithm, sb3_save: bool = False) -> io.BytesIO:
    file = io.BytesIO()
    if sb3_save:
        BaseAlgorithm.save(model, file)  # what SB3 and sb3_cherry before the algorithm name was stored write
    else:
        model.save(file)
    file.seek(0)
    return file


def _rewrite(source: io.BytesIO, path: pathlib.Path, data: dict | None = None, drop: str | None = None, replace=None):
    """Copy a model archive to ``path`` with a new ``data`` entry, an entry dropped or replaced."""
    source.seek(0)
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w") as new:
        for name in old.namelist():
            if name == drop:
                continue
            content = old.read(name)
            if name == "data" and data is not None:
                content = json.dumps(data).encode()
            if replace is not None and name == replace[0]:
                content = replace[1]
            new.writestr(name, content)
    return path


class _RunsCommand:
    """A pickle payload: unpickling it runs ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _evil(marker: pathlib.Path) -> dict:
    payload = base64.b64encode(cloudpickle.dumps(_RunsCommand(f"touch {marker}"))).decode()
    return {":type:": "<class 'function'>", ":serialized:": payload}


@pytest.mark.parametrize(
    "writer, loader, env_id, kwargs",
    [
        (PPO, PPORollback, "CartPole-v1", dict(n_steps=32, batch_size=32, policy_kwargs=dict(activation_fn=nn.ReLU))),
        (A2C, CherryA2C, "Pendulum-v1", dict(n_steps=8)),
        (RecurrentPPO, RecurrentPPORollback, "CartPole-v1", dict(n_steps=32, batch_size=32)),
    ],
)
def test_files_of_sb3_and_contrib_load_safely(writer, loader, env_id, kwargs):
    policy = "MlpLstmPolicy" if writer is RecurrentPPO else "MlpPolicy"
    model = writer(policy, env_id, seed=0, **kwargs).learn(64)
    obs = _observations(env_id)
    loaded = loader.load(_to_bytes(model))
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.policy_class is model.policy_class
    assert loaded.observation_space == model.observation_space and loaded.action_space == model.action_space
    loaded = loader.load(_to_bytes(model), env=gym.make(env_id))
    assert loaded.observation_space is loaded.env.observation_space  # the env's exact space, same as stored
    loaded.learn(64)


@pytest.mark.parametrize("sb3_save", [False, True], ids=["current", "without-algorithm-name"])
@pytest.mark.parametrize(
    "algo, env_id, kwargs",
    [
        (PPORollback, "Pendulum-v1", dict(n_steps=32, batch_size=32, policy_kwargs=dict(action_distribution="beta"))),
        (CherryA2C, "CartPole-v1", dict(n_steps=8, learning_rate=LinearSchedule(1e-3, 0.0, 1.0))),
        (RecurrentPPORollback, "CartPole-v1", dict(n_steps=32, batch_size=32)),
    ],
)
def test_sb3_cherry_files_load_safely(algo, env_id, kwargs, sb3_save):
    policy = "MlpLstmPolicy" if algo is RecurrentPPORollback else "MlpPolicy"
    model = algo(policy, env_id, seed=0, **kwargs).learn(64)
    obs = _observations(env_id)
    loaded = algo.load(_to_bytes(model, sb3_save))
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.policy_kwargs == model.policy_kwargs
    if isinstance(model.learning_rate, LinearSchedule):  # rebuilt from its stored numbers
        assert isinstance(loaded.learning_rate, LinearSchedule)
        assert loaded.lr_schedule(0.25) == pytest.approx(model.lr_schedule(0.25))


def test_bco_file_loads_safely(tmp_path):
    from sb3_cherry.demos import record_demos

    expert = PPORollback("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=0).learn(32)
    demos = tmp_path / "demos.npz"
    record_demos(expert, gym.make("CartPole-v1"), 2, demos)
    model = BCO("MlpPolicy", "CartPole-v1", demonstrations=str(demos), seed=0)
    model.save(tmp_path / "bco")
    loaded = BCO.load(tmp_path / "bco")
    obs = _observations("CartPole-v1")
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])


def test_bco_inverse_model_kwargs_with_classes_load_safely(tmp_path):
    """inverse_model_kwargs' classes are looked up in the allow-list, as policy_kwargs' are (not unpickled)."""
    kwargs = dict(activation_fn=nn.Tanh, optimizer_class=th.optim.AdamW, optimizer_kwargs=dict(eps=1e-5), net_arch=[16])
    model = BCO("MlpPolicy", "CartPole-v1", inverse_model_kwargs=kwargs, seed=0)
    model.save(tmp_path / "bco")
    loaded = BCO.load(tmp_path / "bco")
    assert loaded.inverse_model_kwargs == {
        "activation_fn": nn.Tanh,
        "optimizer_class": th.optim.AdamW,
        "optimizer_kwargs": {"eps": 1e-5},
        "net_arch": [16],
    }
    assert type(loaded.inverse_model.optimizer) is th.optim.AdamW
    assert [type(m) for m in loaded.inverse_model.mlp] == [nn.Linear, nn.Tanh]
    for (key, value), other in zip(
        loaded.inverse_model.state_dict().items(), model.inverse_model.state_dict().values(), strict=True
    ):
        assert th.equal(value, other), key
    # a class outside the allow-list is refused, naming the entry and the fixes
    source = io.BytesIO((tmp_path / "bco.zip").read_bytes())
    data = json.loads(zipfile.ZipFile(source).read("data"))
    data["inverse_model_kwargs"]["activation_fn"] = "<class 'posix.system'>"
    path = _rewrite(source, tmp_path / "crafted.zip", data=data)
    with pytest.raises(UnsafeModelFileError, match=r"inverse_model_kwargs\['activation_fn'\]: class 'posix.system' is not"):
        BCO.load(path)
    with pytest.raises(UnsafeModelFileError, match=r"custom_objects=\{'inverse_model_kwargs': \{...\}\}, or allow_pickle"):
        BCO.load(path)


def test_opaque_schedule_becomes_constant_with_warning():
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, learning_rate=lambda p: 3e-4 * p, seed=0).learn(64)
    last_lr = model.policy.optimizer.param_groups[0]["lr"]
    with pytest.warns(UserWarning, match="learning_rate was stored as a function"):
        loaded = PPORollback.load(_to_bytes(model))
    assert loaded.lr_schedule(1.0) == pytest.approx(last_lr)


@pytest.mark.parametrize(
    "space",
    [
        spaces.Box(-1.0, 2.0, (3, 2), np.float32),
        spaces.Box(np.array([-1.5, 0.0]), np.array([1.0, np.inf]), dtype=np.float64),
        spaces.Box(0, 255, (4, 4, 3), np.uint8),
        spaces.Discrete(5, start=-2),
        spaces.MultiDiscrete([3, 4]),
        spaces.MultiDiscrete([[2, 3], [4, 5]], start=[[1, 1], [0, 0]]),
        spaces.MultiBinary(4),
        spaces.MultiBinary([2, 3]),
        spaces.Tuple((spaces.Discrete(3, start=1), spaces.Box(-1.0, np.array([1.0, 2.0]), dtype=np.float32))),
        spaces.Dict(
            {
                "image": spaces.Box(0, 255, (8, 8, 1), np.uint8),
                "inner": spaces.Tuple((spaces.MultiBinary(2), spaces.Dict({"x": spaces.Discrete(2)}))),
            }
        ),
    ],
    ids=lambda space: type(space).__name__,
)
def test_spaces_rebuilt_from_readable_fields(space):
    stored = json.loads(data_to_json({"space": space}))["space"]
    assert space_from_fields(stored) == space


def test_float64_bounds_are_exact():
    """numpy prints 8 digits; the bounds come back bit for bit (restricted pickle, checked against the fields)."""
    space = spaces.Box(np.array([0.123456789012345, -1.0]), np.array([1.0, 2.718281828459045]), dtype=np.float64)
    stored = json.loads(data_to_json({"space": space}))["space"]
    assert not np.array_equal(space_from_fields(stored).low, space.low)  # the printed fields lose digits
    rebuilt = rebuild_space("action_space", stored, None)
    assert np.array_equal(rebuilt.low, space.low) and np.array_equal(rebuilt.high, space.high)


TRUNCATED = [
    spaces.Box(-np.arange(2000.0, dtype=np.float32), 1.0, dtype=np.float32),
    spaces.Box(0, 255, (84, 84, 3), np.uint8),
]


@pytest.mark.parametrize("space", TRUNCATED, ids=["Box2000", "image"])
def test_truncated_space_from_restricted_pickle(space):
    """numpy printed '...': the space is read from its pickle by an unpickler that resolves only spaces and numpy."""
    stored = json.loads(data_to_json({"space": space}))["space"]
    with pytest.raises(ValueError, match="truncated"):
        space_from_fields(stored)
    rebuilt = rebuild_space("observation_space", stored, None)
    assert rebuilt == space and np.array_equal(rebuilt.low, space.low)


@pytest.mark.parametrize("space", TRUNCATED, ids=["Box2000", "image"])
def test_truncated_space_with_crafted_pickle_needs_the_env(tmp_path, space):
    marker = tmp_path / "marker"
    stored = json.loads(data_to_json({"space": space}))["space"]
    stored[":serialized:"] = _evil(marker)[":serialized:"]
    with pytest.raises(UnsafeModelFileError, match=r"pass env=\.\.\. to load"):
        rebuild_space("observation_space", stored, None)
    env_space = spaces.Box(space.low, space.high, dtype=space.dtype)
    assert rebuild_space("observation_space", stored, env_space) is env_space
    with pytest.raises(UnsafeModelFileError):  # an env space of another shape is not taken
        rebuild_space("observation_space", stored, spaces.Box(0, 255, (3,), np.uint8))
    assert not marker.exists()


def test_vec_normalize_restricted(tmp_path):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_cherry.common.restricted_pickle import load_vec_normalize

    venv = VecNormalize(make_vec_env("CartPole-v1", 2))
    venv.reset()
    venv.step(np.array([0, 1]))
    venv.save(tmp_path / "vecnormalize.pkl")
    loaded = load_vec_normalize(tmp_path / "vecnormalize.pkl", make_vec_env("CartPole-v1", 2))
    np.testing.assert_array_equal(loaded.obs_rms.mean, venv.obs_rms.mean)
    marker = tmp_path / "marker"
    (tmp_path / "evil.pkl").write_bytes(cloudpickle.dumps(_RunsCommand(f"touch {marker}")))
    with pytest.raises(UnsafeModelFileError, match=r"posix\.system"):
        load_vec_normalize(tmp_path / "evil.pkl", make_vec_env("CartPole-v1", 2))
    assert not marker.exists()


@pytest.mark.parametrize(
    "field, value", [("obs_rms", None), ("obs_rms", 5), ("ret_rms", None), ("observation_space", None), ("gamma", "x")]
)
def test_vec_normalize_fields_of_another_type_are_refused(tmp_path, field, value):
    # a VecNormalize pickle with obs_rms=None loaded, then failed with a bare AssertionError in normalize_obs
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_cherry.common.restricted_pickle import load_vec_normalize

    for norm_obs in (True, False):  # (norm_obs=False has no obs_rms at all: still loads)
        venv = VecNormalize(make_vec_env("CartPole-v1", 2), norm_obs=norm_obs)
        venv.save(tmp_path / f"{norm_obs}.pkl")
        load_vec_normalize(tmp_path / f"{norm_obs}.pkl", make_vec_env("CartPole-v1", 2))
    setattr(venv, field, value)
    venv.norm_obs = True
    venv.save(tmp_path / "bad.pkl")
    with pytest.raises(ValueError, match=f"not a VecNormalize file as VecNormalize.save writes it .*{field}"):
        load_vec_normalize(tmp_path / "bad.pkl", make_vec_env("CartPole-v1", 2))


def test_pickled_global_name_reads_without_executing():
    from stable_baselines3.common.policies import ActorCriticPolicy

    assert pickled_global_name(base64.b64encode(cloudpickle.dumps(ActorCriticPolicy)).decode()) == (
        "stable_baselines3.common.policies.ActorCriticPolicy"
    )
    assert pickled_global_name(base64.b64encode(cloudpickle.dumps(_RunsCommand("true"))).decode()) is None


@pytest.fixture(scope="module")
def ppo_rollback_bytes():
    return _to_bytes(PPORollback("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=0).learn(32))


@pytest.mark.parametrize(
    "key", ["extra_key", "lr_schedule", "clip_range", "policy_class", "observation_space", "policy_kwargs", "_last_obs"]
)
def test_crafted_pickle_does_not_run(tmp_path, ppo_rollback_bytes, key):
    marker = tmp_path / "marker"
    data = json.loads(zipfile.ZipFile(ppo_rollback_bytes).read("data"))
    data[key] = _evil(marker)
    path = _rewrite(ppo_rollback_bytes, tmp_path / "crafted.zip", data=data)
    try:
        model = PPORollback.load(path)  # either refused with a clear error, or loaded without the pickle
        if key in ("_last_obs",):
            assert model._last_obs is None
    except UnsafeModelFileError as exc:
        assert key in str(exc) or "not one of the known" in str(exc) or "stored as" in str(exc)
        assert "allow_pickle=True" in str(exc)
    assert not marker.exists()
    # the same file does run its payload with SB3's behaviour (allow_pickle=True): the crafted file is a real attack
    try:
        PPORollback.load(path, allow_pickle=True)
    except Exception:
        pass
    assert marker.exists()


def test_crafted_policy_class_naming_another_callable_is_refused(tmp_path, ppo_rollback_bytes):
    data = json.loads(zipfile.ZipFile(ppo_rollback_bytes).read("data"))
    data["policy_class"][":serialized:"] = base64.b64encode(cloudpickle.dumps(os.system)).decode()
    path = _rewrite(ppo_rollback_bytes, tmp_path / "crafted.zip", data=data)
    with pytest.raises(UnsafeModelFileError, match=r"policy_class .*posix\.system.* is not one of the known"):
        PPORollback.load(path)


def test_other_algorithm_file_is_refused(ppo_rollback_bytes):
    with pytest.raises(ValueError, match="written by PPORollback, not by CherryA2C"):
        CherryA2C.load(io.BytesIO(ppo_rollback_bytes.getvalue()))


def test_stored_policy_class_for_the_generator(tmp_path):
    from sb3_cherry.ppo_recurrent.policies import RecurrentCherryActorCriticPolicy

    RecurrentPPORollback("MlpLstmPolicy", "CartPole-v1", n_steps=32, batch_size=32).save(tmp_path / "gen")
    assert stored_policy_class(tmp_path / "gen.zip") is RecurrentCherryActorCriticPolicy


# ------------------------------------------------------------------------------------------------ failure messages
def test_truncated_file(tmp_path, ppo_rollback_bytes):
    path = tmp_path / "half.zip"
    content = ppo_rollback_bytes.getvalue()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        PPORollback.load(path)


def test_missing_optimizer_entry(tmp_path, ppo_rollback_bytes):
    path = _rewrite(ppo_rollback_bytes, tmp_path / "no_opt.zip", drop="policy.optimizer.pth")
    with pytest.raises(ValueError, match=r"lacks the entry .policy\.optimizer\.pth."):
        PPORollback.load(path)


def test_non_json_data(tmp_path, ppo_rollback_bytes):
    path = _rewrite(ppo_rollback_bytes, tmp_path / "bad_data.zip", replace=("data", b"{not json"))
    with pytest.raises(ValueError, match="'data' entry is not valid JSON"):
        PPORollback.load(path)


def test_corrupt_policy_entry(tmp_path, ppo_rollback_bytes):
    path = _rewrite(ppo_rollback_bytes, tmp_path / "bad_policy.zip", replace=("policy.pth", b"garbage" * 10))
    with pytest.raises(ValueError, match=r"entry .policy\.pth. is corrupt"):
        PPORollback.load(path)


# ------------------------------------------------------------------------------------------------ files
def test_saved_file_mode_follows_umask(tmp_path):
    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32)
    old = os.umask(0o022)
    try:
        model.save(tmp_path / "model")
    finally:
        os.umask(old)
    assert (tmp_path / "model.zip").stat().st_mode & 0o777 == 0o644


def test_save_through_symlink_writes_target(tmp_path):
    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32)
    target = tmp_path / "runs" / "model.zip"
    model.save(target)
    link = tmp_path / "latest.zip"
    link.symlink_to(target)
    before = target.stat().st_mtime_ns
    model.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.stat().st_mtime_ns >= before
    PPORollback.load(link)


def test_stale_temp_file_removed_by_next_save(tmp_path):
    import subprocess
    import sys

    from sb3_cherry.common.save_util import _host

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".model.zip.{_host()}.{int(dead.stdout)}.0badf00d-abc123.tmp"
    stale.write_bytes(b"partial")
    alive = tmp_path / f".model.zip.{_host()}.{os.getppid()}.0badf00d-abc123.tmp"  # a save in progress, live process
    alive.write_bytes(b"partial")
    PPORollback("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32).save(tmp_path / "other")
    assert not stale.exists() and alive.exists()


@pytest.mark.parametrize("algo_name", ["GAIL", "AIRL"])
def test_crafted_generator_file_runs_nothing_through_adversarial_load(tmp_path, ppo_rollback_bytes, algo_name):
    pytest.importorskip("imitation")
    import sb3_cherry

    marker = tmp_path / "marker"
    data = json.loads(zipfile.ZipFile(ppo_rollback_bytes).read("data"))
    data["extra_key"] = _evil(marker)
    path = _rewrite(ppo_rollback_bytes, tmp_path / "gail.zip", data=data)
    with pytest.raises(UnsafeModelFileError, match="extra_key"):
        getattr(sb3_cherry, algo_name).load(path)
    assert not marker.exists()


def test_file_replaced_between_check_and_load_runs_nothing(tmp_path, ppo_rollback_bytes, monkeypatch):
    # the entries to rebuild safely are taken from the bytes SB3 then reads, not from the file as first checked
    import sb3_cherry.common.save_util as save_util

    marker = tmp_path / "marker"
    clean = _rewrite(ppo_rollback_bytes, tmp_path / "clean.zip")
    data = json.loads(zipfile.ZipFile(ppo_rollback_bytes).read("data"))
    data["extra_key"] = _evil(marker)
    crafted = _rewrite(ppo_rollback_bytes, tmp_path / "crafted.zip", data=data)
    read_archive_bytes = save_util.read_archive_bytes
    monkeypatch.setattr(save_util, "read_archive_bytes", lambda path: read_archive_bytes(crafted))  # the swap
    try:
        PPORollback.load(clean)
    except UnsafeModelFileError:
        pass
    assert not marker.exists()


class _CallsBox:
    """Pickles as a call of ``Box`` with a shape of the file's choosing (what no pickle of a space does)."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape

    def __reduce__(self):
        return (spaces.Box, (0.0, 1.0, self.shape))


class _Reconstructs:
    """Pickles as numpy's ``_reconstruct`` of an empty array of a huge shape."""

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return (_reconstruct, (np.ndarray, (10**5, 10**5), b"b"))


@pytest.mark.parametrize("payload", [_CallsBox((3000, 3000)), _Reconstructs()])
def test_a_space_pickle_cannot_allocate_a_huge_array(payload):
    """A few bytes of pickle must not make the restricted unpickler build gigabytes: refused before the call."""
    from sb3_cherry.common.restricted_pickle import SPACE_GLOBALS, RestrictedUnpickler

    blob = cloudpickle.dumps(payload)
    assert len(blob) < 200
    with pytest.raises(ValueError, match=r"constructs a Box by calling it|entries\) is refused"):
        RestrictedUnpickler(io.BytesIO(blob), SPACE_GLOBALS, "space").load()
    # the spaces SB3 pickles still load
    for space in (spaces.Box(-1, 1, (3, 2)), spaces.Dict({"a": spaces.MultiDiscrete([2, 3]), "b": spaces.Discrete(4)})):
        assert RestrictedUnpickler(io.BytesIO(cloudpickle.dumps(space)), SPACE_GLOBALS, "space").load() == space


def test_space_texts_and_demo_spaces_of_a_huge_shape_are_refused():
    from sb3_cherry.common.safe_load import parse_space_text
    from sb3_cherry.demos import space_from_dict

    with pytest.raises(ValueError, match="is refused"):
        parse_space_text("Box(0.0, 1.0, (100000, 100000), float32)")
    description = {"type": "Box", "shape": [6000, 6000], "dtype": "float32", "low": "-inf", "high": "inf"}
    with pytest.raises(ValueError, match="is refused"):
        space_from_dict(description)
    assert space_from_dict({**description, "shape": [4, 3]}) == spaces.Box(-np.inf, np.inf, (4, 3), np.float32)


# ------------------------------------------------------------------------------------ restricted unpickler: opcodes
# Hand-assembled pickles (what a crafted file can hold, whatever pickle.dumps writes): every opcode that calls something
# must go through the same checks, and BUILD must not change what the load did not create.
def _op_global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _op_str(text: str) -> bytes:
    return pickle.BINUNICODE + struct.pack("<I", len(text.encode())) + text.encode()


def _op_int(value: int) -> bytes:
    return pickle.LONG1 + bytes([len(raw := value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True))]) + raw


def _op_float(value: float) -> bytes:
    return pickle.BINFLOAT + struct.pack(">d", value)


def _op_shape(n: int) -> bytes:
    return pickle.MARK + _op_int(n) + pickle.TUPLE


def _op_pickle(body: bytes) -> bytes:
    return pickle.PROTO + bytes([4]) + body + pickle.STOP


_NDARRAY = _op_global("numpy", "ndarray")
_BOX = _op_global("gymnasium.spaces.box", "Box")
_CALLS = {  # a way of calling an allow-listed callable -> the pickle asking for an array / space of n entries
    "REDUCE ndarray": lambda n: _NDARRAY + pickle.MARK + _op_shape(n) + _op_str("f8") + pickle.TUPLE + pickle.REDUCE,
    "REDUCE object ndarray": lambda n: _NDARRAY + pickle.MARK + _op_shape(n) + _op_str("O") + pickle.TUPLE + pickle.REDUCE,
    "NEWOBJ ndarray": lambda n: _NDARRAY + pickle.MARK + _op_shape(n) + pickle.TUPLE + pickle.NEWOBJ,
    "NEWOBJ_EX ndarray": lambda n: _NDARRAY
    + pickle.MARK
    + _op_shape(n)
    + pickle.TUPLE
    + pickle.EMPTY_DICT
    + _op_str("dtype")
    + _op_str("f8")
    + pickle.SETITEM
    + pickle.NEWOBJ_EX,
    "OBJ ndarray": lambda n: pickle.MARK + _NDARRAY + _op_shape(n) + pickle.OBJ,
    "INST ndarray": lambda n: pickle.MARK + _op_shape(n) + pickle.INST + b"numpy\nndarray\n",
    "OBJ Box": lambda n: pickle.MARK + _BOX + _op_float(0.0) + _op_float(1.0) + _op_shape(n) + pickle.OBJ,
    "INST Box": lambda n: pickle.MARK
    + _op_float(0.0)
    + _op_float(1.0)
    + _op_shape(n)
    + pickle.INST
    + b"gymnasium.spaces.box\nBox\n",
    "REDUCE RunningMeanStd": lambda n: _op_global("stable_baselines3.common.running_mean_std", "RunningMeanStd")
    + pickle.MARK
    + _op_float(1e-4)
    + _op_shape(n)
    + pickle.TUPLE
    + pickle.REDUCE,
    # numpy's _reconstruct of n entries of a dtype of 1 GiB each
    "REDUCE _reconstruct of a void dtype": lambda n: _op_global("numpy._core.multiarray", "_reconstruct")
    + pickle.MARK
    + _NDARRAY
    + _op_shape(n // 2**30)
    + _op_global("numpy", "dtype")
    + pickle.MARK
    + _op_str(f"V{2**30}")
    + pickle.NEWFALSE
    + pickle.NEWTRUE
    + pickle.TUPLE
    + pickle.REDUCE
    + pickle.TUPLE
    + pickle.REDUCE,
    # numpy's __generator_ctor(name, ctor) calls ctor(name): here ndarray((n,))
    "REDUCE __generator_ctor calling ndarray": lambda n: _op_global("numpy.random._pickle", "__generator_ctor")
    + pickle.MARK
    + _op_shape(n)
    + _NDARRAY
    + pickle.TUPLE
    + pickle.REDUCE,
}


@pytest.mark.parametrize("way", list(_CALLS))
def test_every_way_to_call_is_size_checked(way):
    """A few bytes cannot allocate 2**40 entries, whatever opcode calls the allow-listed class (old: MemoryError)."""
    from sb3_cherry.common.restricted_pickle import VEC_NORMALIZE_GLOBALS, RestrictedUnpickler

    blob = _op_pickle(_CALLS[way](2**40))
    assert len(blob) < 120
    with pytest.raises(ValueError, match=r"is refused|by calling it"):
        RestrictedUnpickler(io.BytesIO(blob), VEC_NORMALIZE_GLOBALS, "crafted.pkl").load()


@pytest.mark.parametrize("way", ["NEWOBJ ndarray", "OBJ ndarray", "INST ndarray", "NEWOBJ_EX ndarray"])
def test_array_just_over_the_limit_is_refused_before_allocation(way):
    import tracemalloc

    from sb3_cherry.common.restricted_pickle import MAX_SPACE_ELEMENTS, SPACE_GLOBALS, RestrictedUnpickler

    blob = _op_pickle(_CALLS[way](MAX_SPACE_ELEMENTS + 1))  # 128 MiB of float64 if it were built
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"\(16777217 entries\) is refused"):
            RestrictedUnpickler(io.BytesIO(blob), SPACE_GLOBALS, "space").load()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**22
    # the limit itself is allowed
    array = RestrictedUnpickler(io.BytesIO(_op_pickle(_CALLS[way](1000))), SPACE_GLOBALS, "space").load()
    assert array.shape == (1000,) and array.dtype == np.float64


def test_arrays_of_one_file_are_limited_in_total(monkeypatch):
    """Each array under the limit, but a pickle's memo lets a few bytes ask for one many times: limited in total."""
    import sb3_cherry.common.restricted_pickle as restricted_pickle

    monkeypatch.setattr(restricted_pickle, "MAX_LOAD_BYTES", 2**20)
    one = _CALLS["NEWOBJ ndarray"](2**16)  # 512 KiB
    ok = _op_pickle(pickle.MARK + one + pickle.LIST)
    assert len(restricted_pickle.RestrictedUnpickler(io.BytesIO(ok), restricted_pickle.SPACE_GLOBALS, "s").load()) == 1
    blob = _op_pickle(pickle.MARK + one * 3 + pickle.LIST)
    with pytest.raises(ValueError, match=r"its arrays add up to more than 1048576 bytes"):
        restricted_pickle.RestrictedUnpickler(io.BytesIO(blob), restricted_pickle.SPACE_GLOBALS, "s").load()


def test_model_space_pickle_cannot_allocate(tmp_path):
    """The space pickle of a model file (read when its readable fields are complete, for exact bounds): a crafted one
    is refused before allocating, and the space comes from the readable fields."""
    import tracemalloc

    space = spaces.Box(-1.0, 1.0, (4,), np.float32)
    stored = json.loads(data_to_json({"space": space}))["space"]
    stored[":serialized:"] = base64.b64encode(_op_pickle(_CALLS["NEWOBJ ndarray"](2**25))).decode()  # 256 MiB
    tracemalloc.start()
    try:
        rebuilt = rebuild_space("observation_space", stored, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rebuilt == space
    assert peak < 2**24


def test_vec_normalize_file_cannot_allocate(tmp_path):
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_cherry.common.restricted_pickle import load_vec_normalize

    path = tmp_path / "vecnormalize.pkl"
    path.write_bytes(_op_pickle(_CALLS["REDUCE object ndarray"](2**40)))  # the review's 35-byte file, 2**40 entries
    with pytest.raises(ValueError, match=rf"{path}.*is refused"):
        load_vec_normalize(path, make_vec_env("CartPole-v1", 1))


def test_object_array_state_is_refused():
    """numpy crashes (segfault) on the state of an object array with too few items: refused before numpy sees it."""
    import subprocess
    import sys

    class ObjectArrayState:
        def __reduce__(self):
            from numpy._core.multiarray import _reconstruct

            return (_reconstruct, (np.ndarray, (0,), b"b"), (1, (2**20,), np.dtype("O"), False, []))

    blob = pickle.dumps(ObjectArrayState(), protocol=4)
    code = (
        "import io, sys\n"
        "from sb3_cherry.common.restricted_pickle import SPACE_GLOBALS, RestrictedUnpickler\n"
        "try:\n"
        "    RestrictedUnpickler(io.BytesIO(sys.stdin.buffer.read()), SPACE_GLOBALS, 'space').load()\n"
        "except ValueError as exc:\n"
        "    print('refused:', exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"refused: space: an array of dtype object is refused" in result.stdout


def test_build_cannot_change_a_class():
    """BUILD on a class pushed by GLOBAL would setattr on it for the whole process (the review's vecnormalize.pkl set
    RunningMeanStd.update = None and still loaded)."""
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    from sb3_cherry.common.restricted_pickle import VEC_NORMALIZE_GLOBALS, RestrictedUnpickler

    update = RunningMeanStd.__dict__["update"]
    blob = _op_pickle(
        _op_global("stable_baselines3.common.running_mean_std", "RunningMeanStd")
        + pickle.NONE
        + pickle.EMPTY_DICT
        + _op_str("update")
        + pickle.NONE
        + pickle.SETITEM
        + pickle.TUPLE2
        + pickle.BUILD
    )
    try:
        with pytest.raises(UnsafeModelFileError, match=r"crafted\.pkl sets the state of .*RunningMeanStd"):
            RestrictedUnpickler(io.BytesIO(blob), VEC_NORMALIZE_GLOBALS, "crafted.pkl").load()
        assert RunningMeanStd.__dict__["update"] is update
    finally:
        RunningMeanStd.update = update  # (the old unpickler changed it: keep the rest of the session sound)


def _dtype_op(code: str) -> bytes:
    return (
        _op_global("numpy", "dtype")
        + pickle.MARK
        + _op_str(code)
        + pickle.NEWFALSE
        + pickle.NEWTRUE
        + pickle.TUPLE
        + pickle.REDUCE
    )


_DTYPE_STATE = (
    pickle.MARK + _op_int(3) + _op_str("|") + pickle.NONE * 3 + _op_int(2**20) + _op_int(1) + _op_int(0) + pickle.TUPLE
)
_BUILDS = {
    # a space whose state declares 2**40 entries (what networks and buffers are then sized from), with no arrays
    "space shape": _BOX
    + pickle.EMPTY_TUPLE
    + pickle.NEWOBJ
    + pickle.EMPTY_DICT
    + pickle.MARK
    + _op_str("_shape")
    + _op_shape(2**40)
    + _op_str("low_repr")
    + _op_str("0.0")
    + _op_str("high_repr")
    + _op_str("1.0")
    + pickle.SETITEMS
    + pickle.BUILD,
    # numpy's singleton float64, shared by the whole process
    "numpy's own dtype": _op_global("numpy", "dtype")
    + pickle.MARK
    + _op_str("f8")
    + pickle.NEWFALSE
    + pickle.NEWFALSE
    + pickle.TUPLE
    + pickle.REDUCE
    + pickle.MARK
    + _op_int(3)
    + _op_str(">")
    + pickle.NONE * 3
    + _op_int(-1) * 2
    + _op_int(0)
    + pickle.TUPLE
    + pickle.BUILD,
    # a dtype made 1 MiB wide after a 2-entry array of 8 bytes each uses it (numpy would then read past the array)
    "dtype of an array": _dtype_op("V8")
    + pickle.MEMOIZE
    + _op_global("numpy._core.numeric", "_frombuffer")
    + pickle.MARK
    + pickle.SHORT_BINBYTES
    + bytes([16])
    + bytes(16)
    + pickle.BINGET
    + bytes([0])
    + _op_shape(2)
    + _op_str("C")
    + pickle.TUPLE
    + pickle.REDUCE
    + pickle.BINGET
    + bytes([0])
    + _DTYPE_STATE
    + pickle.BUILD
    + pickle.TUPLE2,
    # items added to a class (cls[key] = value, cls.append(...)): only lists, dicts and sets are filled
    "SETITEMS on a class": _BOX + pickle.MARK + _op_str("low") + pickle.NONE + pickle.SETITEMS,
    "APPEND on a class": _BOX + pickle.NONE + pickle.APPEND,
}


@pytest.mark.parametrize("what", list(_BUILDS))
def test_state_changes_are_restricted(what):
    from sb3_cherry.common.restricted_pickle import SPACE_GLOBALS, RestrictedUnpickler

    with pytest.raises(ValueError, match=r"space: .*(is refused|sets the state of)|space sets the state of"):
        RestrictedUnpickler(io.BytesIO(_op_pickle(_BUILDS[what])), SPACE_GLOBALS, "space").load()
    assert np.dtype("f8").byteorder == "="


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_restricted_unpickler_reads_what_sb3_writes(protocol):
    """Seeded spaces of every kind and dtype, and VecNormalize (also with Dict observations), still load."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_cherry.common.restricted_pickle import SPACE_GLOBALS, VEC_NORMALIZE_GLOBALS, RestrictedUnpickler

    space = spaces.Dict(
        {
            "image": spaces.Box(0, 255, (8, 8, 3), np.uint8),
            "big_endian": spaces.Box(-1, 1, (3,), np.dtype(">f4")),
            "half": spaces.Box(-1, 1, (2,), np.float16),
            "flags": spaces.Box(0, 1, (2,), np.bool_),
            "inner": spaces.Tuple((spaces.MultiBinary([2, 3]), spaces.Discrete(3, start=-1), spaces.MultiDiscrete([2, 5]))),
        }
    )
    space.seed(0)
    for dumps in (cloudpickle.dumps, lambda obj: pickle.dumps(obj, protocol=protocol)):
        blob = dumps(space)
        loaded = RestrictedUnpickler(io.BytesIO(blob), SPACE_GLOBALS, "space").load()
        assert loaded == space
        assert str(loaded.sample()) == str(pickle.loads(blob).sample())  # the same random generator state
    venv = VecNormalize(make_vec_env("Pendulum-v1", 2))
    venv.reset()
    venv.step(np.zeros((2, 1)))
    state = venv.__getstate__()
    loaded = RestrictedUnpickler(io.BytesIO(pickle.dumps(state, protocol=protocol)), VEC_NORMALIZE_GLOBALS, "v").load()
    np.testing.assert_array_equal(loaded["obs_rms"].var, venv.obs_rms.var)


_PAIRS = pickle.MARK + pickle.MARK + _op_int(1) + _op_int(2) + pickle.TUPLE + pickle.LIST  # [(1, 2)]


@pytest.mark.parametrize(
    "module, name, argument",
    [
        ("collections", "OrderedDict", _PAIRS),
        ("numpy.random._pcg64", "PCG64", pickle.MARK + _op_int(1) + _op_int(2) + pickle.LIST),
        ("numpy.random.bit_generator", "SeedSequence", pickle.MARK + _op_int(1) + _op_int(2) + pickle.LIST),
    ],
)
def test_classes_pickles_call_without_arguments_get_none(module, name, argument):
    """With an array of the file as argument, each would iterate over or copy it: pickles never pass one (nor any)."""
    from sb3_cherry.common.restricted_pickle import SPACE_GLOBALS, RestrictedUnpickler

    blob = _op_pickle(_op_global(module, name) + pickle.MARK + argument + pickle.TUPLE + pickle.REDUCE)
    with pytest.raises(UnsafeModelFileError, match=rf"space calls {name} with arguments"):
        RestrictedUnpickler(io.BytesIO(blob), SPACE_GLOBALS, "space").load()
    ordered = collections.OrderedDict(b=np.arange(3), a=spaces.Discrete(2))
    assert RestrictedUnpickler(io.BytesIO(pickle.dumps(ordered)), SPACE_GLOBALS, "space").load().keys() == ordered.keys()


def test_every_allowed_global_has_a_call_check():
    """A global added to an allow-list without deciding how it may be called is resolved but never called."""
    from sb3_cherry.common.restricted_pickle import CALL_CHECKS, VEC_NORMALIZE_GLOBALS, RestrictedUnpickler

    assert set(CALL_CHECKS) == VEC_NORMALIZE_GLOBALS
    blob = _op_pickle(_op_global("builtins", "len") + pickle.MARK + _op_str("x") + pickle.TUPLE + pickle.REDUCE)
    with pytest.raises(UnsafeModelFileError, match=r"space calls builtins\.len, which a safe load never calls"):
        RestrictedUnpickler(io.BytesIO(blob), frozenset({("builtins", "len")}), "space").load()


@pytest.mark.parametrize(
    "fields, description",
    [
        ({"n": str(2**40), "start": "0", "dtype": "int64"}, {"type": "Discrete", "n": 2**40}),
        ({"n": "[65536, 65536]"}, {"type": "MultiBinary", "n": [65536, 65536]}),
        ({"nvec": f"[{2**30}, 2]", "start": "[0, 0]", "dtype": "int64"}, {"type": "MultiDiscrete", "nvec": [2**30, 2]}),
    ],
    ids=["discrete", "multi_binary", "multi_discrete"],
)
def test_discrete_spaces_read_as_data_are_capped(fields, description):
    # read from a model file's readable fields or a demo file's description: a Discrete(2**40) made the policy's head
    # allocate 2**40 logits per sample; MultiBinary((65536, 65536)) 4.3e9 entries
    from sb3_cherry.common.safe_load import space_from_fields
    from sb3_cherry.demos import space_from_dict

    kind = description["type"]
    module = {"Discrete": "discrete", "MultiBinary": "multi_binary", "MultiDiscrete": "multi_discrete"}[kind]
    item = {":type:": f"<class 'gymnasium.spaces.{module}.{kind}'>", **fields}
    with pytest.raises(ValueError, match="is refused"):
        space_from_fields(item)
    with pytest.raises(ValueError, match="is refused"):
        space_from_dict(description)


@pytest.mark.parametrize("field", ["mean", "var", "count"])
def test_vec_normalize_file_with_non_finite_statistics_is_refused(tmp_path, field):
    # every normalised observation would be NaN; `sb3-cherry evaluate` reported a NaN return with exit code 0
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_cherry.common.restricted_pickle import load_vec_normalize

    vec_normalize = VecNormalize(make_vec_env("Pendulum-v1", 1))
    value = getattr(vec_normalize.obs_rms, field)
    setattr(vec_normalize.obs_rms, field, np.full_like(value, np.nan) if isinstance(value, np.ndarray) else float("inf"))
    vec_normalize.save(tmp_path / "vecnormalize.pkl")
    with pytest.raises(ValueError, match=f"obs_rms.{field} are not finite"):
        load_vec_normalize(tmp_path / "vecnormalize.pkl", make_vec_env("Pendulum-v1", 1))


def test_vec_normalize_file_without_observation_statistics_loads(tmp_path):
    # norm_obs=False (the shipped CarRacing entry): the file has no obs_rms, and the finite check looked it up through
    # VecEnvWrapper.__getattr__ before the venv was set: RecursionError in evaluate / enjoy / record / video
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_cherry.common.restricted_pickle import load_vec_normalize

    VecNormalize(make_vec_env("Pendulum-v1", 1), norm_obs=False).save(tmp_path / "vecnormalize.pkl")
    loaded = load_vec_normalize(tmp_path / "vecnormalize.pkl", make_vec_env("Pendulum-v1", 1))
    assert not loaded.norm_obs and loaded.norm_reward
    loaded.ret_rms.var[...] = np.nan
    loaded.save(tmp_path / "nan.pkl")
    with pytest.raises(ValueError, match=r"ret_rms\.var are not finite"):
        load_vec_normalize(tmp_path / "nan.pkl", make_vec_env("Pendulum-v1", 1))


def test_nested_spaces_of_a_model_file_are_capped(tmp_path):
    # a Dict / Tuple's components skipped the caps of a top-level space: Discrete(10**12) inside a Dict was accepted
    import json
    import zipfile

    import sb3_cherry  # noqa: F401  (registers the sb3_cherry/ envs)
    from sb3_cherry import PPORollback

    path = tmp_path / "m.zip"
    PPORollback("MultiInputPolicy", "sb3_cherry/DictReach-v0", n_steps=64).save(path)
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(entries["data"])
    assert "'target': Discrete(2)" in data["observation_space"]["spaces"]
    data["observation_space"]["spaces"] = data["observation_space"]["spaces"].replace("Discrete(2)", "Discrete(1000000000000)")
    data["observation_space"][":serialized:"] = "x"  # (no pickle to fall back on: the readable fields decide)
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    with pytest.raises(ValueError, match=r"cannot be rebuilt|a component of a Tuple / Dict space"):
        PPORollback.load(path)


def test_decompression_bombs_are_refused_before_inflating(tmp_path):
    # a 3 MB model file whose 'data' entry (JSON allows trailing whitespace) inflated to 3 GiB was read whole
    from sb3_cherry.common.safe_load import MAX_DATA_ENTRY_BYTES

    source = _to_bytes(PPORollback("MlpPolicy", "CartPole-v1", n_steps=64))
    with zipfile.ZipFile(source) as archive:
        data = archive.read("data")
    path = _rewrite(source, tmp_path / "bomb.zip", replace=("data", data + b" " * (MAX_DATA_ENTRY_BYTES + 1)))
    small = tmp_path / "small_bomb.zip"  # (_rewrite stores the entries: deflated, the file is small)
    with zipfile.ZipFile(path) as old, zipfile.ZipFile(small, "w", zipfile.ZIP_DEFLATED) as new:
        for name in old.namelist():
            new.writestr(name, old.read(name))
    assert small.stat().st_size < 1_000_000
    with pytest.raises(ValueError, match=r"'data' inflates to .* bytes, more than .*decompression bomb"):
        PPORollback.load(small)
    with pytest.raises(ValueError, match="decompression bomb"):
        stored_policy_class(small)
