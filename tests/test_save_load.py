"""save -> load -> identical parameters and deterministic predictions; atomic saves; clear load errors."""

import os
import zipfile

import numpy as np
import pytest
import torch as th

from sb3_cherry import CherryA2C, PPORollback


def _params(model) -> np.ndarray:
    return th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().numpy()


@pytest.mark.parametrize("algo", [PPORollback, CherryA2C])
@pytest.mark.parametrize(
    "env_id, distribution", [("CartPole-v1", None), ("Pendulum-v1", "beta"), ("Pendulum-v1", "tanh_normal")]
)
def test_save_load_round_trip(tmp_path, algo, env_id, distribution):
    kwargs = dict(n_steps=32, batch_size=32, n_epochs=1) if algo is PPORollback else dict(n_steps=8)
    model = algo("MlpPolicy", env_id, policy_kwargs=dict(action_distribution=distribution), seed=0, **kwargs)
    model.learn(64)
    obs = np.stack([model.observation_space.sample() for _ in range(20)])
    before, _ = model.predict(obs, deterministic=True)
    path = tmp_path / "model"
    model.save(path)
    assert (tmp_path / "model.zip").exists()

    loaded = algo.load(path, env=model.get_env())
    np.testing.assert_array_equal(_params(model), _params(loaded))
    after, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(before, after)
    assert loaded.policy.action_distribution == model.policy.action_distribution

    # Continued learning, with and without resetting the counter
    steps = loaded.num_timesteps
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.num_timesteps == steps + 64
    loaded.learn(64)
    assert loaded.num_timesteps == 64


def test_hyperparameters_survive(tmp_path):
    model = PPORollback("MlpPolicy", "CartPole-v1", rollback_alpha=0.17, returns_estimator="vtrace", rho_bar=1.5, n_steps=32)
    model.save(tmp_path / "m.zip")
    loaded = PPORollback.load(tmp_path / "m.zip")
    assert (loaded.rollback_alpha, loaded.returns_estimator, loaded.rho_bar) == (0.17, "vtrace", 1.5)
    assert loaded.rollout_buffer.returns_estimator == "vtrace"


def test_interrupted_save_keeps_previous_file(tmp_path, monkeypatch):
    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=32)
    path = tmp_path / "model.zip"
    model.save(path)
    good = path.read_bytes()

    import stable_baselines3.common.base_class as base_class

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash in the middle of a save")

    monkeypatch.setattr(base_class, "save_to_zip_file", crash)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]  # no temporary file left behind


def test_atomic_write_to_pipe_and_folder(tmp_path):
    import threading

    from sb3_cherry.common.save_util import atomic_write

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    atomic_write(fifo, lambda file: file.write(b"summary"))  # e.g. --json /dev/stdout: written, not replaced
    reader.join(timeout=10)
    assert received == [b"summary"] and fifo.is_fifo() and os.listdir(tmp_path) == ["pipe"]
    with pytest.raises(IsADirectoryError, match="give a file name"):
        atomic_write(tmp_path, lambda file: file.write(b"x"))
    # /dev/stdout redirected to a regular file links to that file: appended to, not replaced
    import subprocess
    import sys

    script = (
        "import sys; from sb3_cherry.common.save_util import atomic_write; print('before', flush=True); "
        "atomic_write('/dev/stdout', lambda f: f.write(b'summary\\n')); print('after', flush=True)"
    )
    out = tmp_path / "out.txt"
    with open(out, "ab") as stdout:
        subprocess.run([sys.executable, "-c", script], stdout=stdout, check=True, timeout=120)
    assert out.read_text().split() == ["before", "summary", "after"]


def test_load_errors_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match=r"corrupt\.zip.*not a Stable-Baselines3 model"):
        PPORollback.load(corrupt)

    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(ValueError, match=r"foreign\.zip.*missing"):
        PPORollback.load(foreign)

    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=32)
    model.save(tmp_path / "good.zip")
    truncated = tmp_path / "truncated.zip"
    data = (tmp_path / "good.zip").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.zip"):
        PPORollback.load(truncated)

    with pytest.raises(FileNotFoundError, match="missing"):
        PPORollback.load(tmp_path / "missing")
    assert os.path.exists(tmp_path / "good.zip")


def test_set_parameters_rejects_bad_input():
    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=32)
    params = model.get_parameters()
    params["policy"].pop(next(iter(params["policy"])))
    # SB3 raises a RuntimeError from torch's load_state_dict naming the missing key
    with pytest.raises(RuntimeError, match="Missing key"):
        model.set_parameters(params, exact_match=True)
    with pytest.raises(ValueError, match="not_a_module"):
        model.set_parameters({"not_a_module": {}}, exact_match=True)


def test_save_refuses_a_write_protected_file(tmp_path, monkeypatch):
    # the atomic rename needs write access to the folder only: a model the user made read-only (chmod a-w) must not
    # be replaced, as SB3's plain open(path, "wb") would refuse
    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32)
    path = tmp_path / "model.zip"
    model.save(path)
    good = path.read_bytes()
    path.chmod(0o444)
    if os.geteuid() == 0:
        # root may write any file and os.access says so: answer as it does for another user, whose write bits are off
        real_access = os.access

        def access(name, mode, **kwargs):
            if mode & os.W_OK and os.path.isfile(name) and not os.stat(name).st_mode & 0o222:
                return False
            return real_access(name, mode, **kwargs)

        monkeypatch.setattr(os, "access", access)
    with pytest.raises(PermissionError, match=r"write-protected.*chmod u\+w") as info:
        model.save(path)
    assert info.value.filename == str(path)
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["model.zip"]
    monkeypatch.undo()
    path.chmod(0o644)
    model.save(path)  # writable again: replaced
    PPORollback.load(path)


def test_save_reads_the_umask_without_changing_it(tmp_path, umask_read_only):
    PPORollback("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32).save(tmp_path / "model.zip")
    assert (tmp_path / "model.zip").stat().st_mode & 0o777 == 0o640


def test_stale_temp_cleanup_spares_other_hosts_and_unknown_names(tmp_path):
    import re
    import socket
    import subprocess
    import sys
    import time

    # temporary names: .<name>.<host>.<pid>.<process token>-<random>.tmp
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64]
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    kept = [
        f".model.zip.other-host.{dead}.0badf00d-k3j2h1ab.tmp",  # a save running on another host sharing the folder
        f".model.zip.{dead}.k3j2h1ab.tmp",  # an unknown name (of an older version, or a user's)
        ".notes.2024.draft.tmp",
        f".model.zip.{host}.{os.getppid()}.0badf00d-k3j2h1ab.tmp",  # a save running in a live process here
    ]
    removed = [
        f".model.zip.old-host.{dead}.0badf00d-k3j2h1ab.tmp",  # another host's, untouched for two days
        f".model.zip.{host}.{dead}.0badf00d-k3j2h1ab.tmp",  # a killed process's of this host
        f".model.zip.{host}.{os.getpid()}.0badf00d-k3j2h1ab.tmp",  # an earlier process's with this pid (container)
    ]
    for name in kept + removed:
        (tmp_path / name).write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(tmp_path / removed[0], (two_days_ago, two_days_ago))
    PPORollback("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32).save(tmp_path / "other")
    assert sorted(os.listdir(tmp_path)) == sorted([*kept, "other.zip"])
