"""The sb3-cherry command line: train -> evaluate / enjoy / record, and config validation."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from sb3_cherry.cli import main, validate_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A few thousand steps of `sb3-cherry train` (in a subprocess, as a user runs it)."""
    folder = tmp_path_factory.mktemp("logs")
    cmd = [sys.executable, "-m", "sb3_cherry", "train", "--algo", "ppo_rollback", "--env", "CartPole-v1"]
    cmd += ["-f", str(folder), "-n", "2048", "--seed", "0", "--eval-freq", "-1", "-tb", str(folder / "tb")]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    return folder


def test_train_writes_model_and_logs(trained):
    exp = trained / "ppo_rollback" / "CartPole-v1_1"
    assert (exp / "CartPole-v1.zip").exists()
    assert (exp / "CartPole-v1" / "config.yml").exists()
    assert list((trained / "tb").rglob("events.out.tfevents.*"))


def test_evaluate_json(trained, tmp_path, capsys):
    out = tmp_path / "eval.json"
    main(["evaluate", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(trained), "-n", "3", "--json", str(out)])
    summary = json.loads(out.read_text())
    assert summary["n_episodes"] == 3 and len(summary["returns"]) == 3
    # CartPole episodes that end before the time limit are failures (zoo_configs/evaluation.yml)
    assert summary["n_failed"] == sum(r < 500 for r in summary["returns"])
    assert "fails out of 3" in capsys.readouterr().out


def test_enjoy_headless(trained):
    cmd = [sys.executable, "-m", "sb3_cherry", "enjoy", "--algo", "ppo_rollback", "--env", "CartPole-v1"]
    cmd += ["-f", str(trained), "--no-render", "-n", "200"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)


def test_record_writes_loadable_demos(trained, tmp_path):
    from sb3_cherry.demos import load_demos

    out = tmp_path / "demos.npz"
    main(["record", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(trained), "-n", "2", "-o", str(out)])
    trajectories = load_demos(out)
    assert len(trajectories) == 2
    assert all(len(t.obs) == len(t.acts) + 1 for t in trajectories)
    assert np.isfinite(np.concatenate([t.rews for t in trajectories])).all()


def _write(tmp_path, entry):
    path = tmp_path / "conf.yml"
    path.write_text(yaml.safe_dump({"CartPole-v1": entry}))
    return path


def test_unknown_yaml_key_names_file_env_and_key(tmp_path, capsys):
    path = _write(tmp_path, {"n_timesteps": 1000, "policy": "MlpPolicy", "rollback_alfa": 0.3})
    with pytest.raises(ValueError, match=r"conf\.yml \[CartPole-v1\]: unknown hyperparameter 'rollback_alfa'"):
        validate_config(path, "ppo_rollback", "CartPole-v1")
    with pytest.raises(SystemExit):
        main(["train", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-c", str(path)])
    assert "rollback_alfa" in capsys.readouterr().err


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"n_timesteps": 1000, "policy": "MlpPolicy", "n_epochs": "ten"}, "'n_epochs'='ten' has the wrong type"),
        ({"n_timesteps": 1000, "policy": "MlpPolicy", "learning_rate": "fast"}, "'learning_rate'='fast'"),
        ({"n_timesteps": 1000, "policy": "MlpPolicy", "policy_kwargs": "dict(action_distribution='beta')"}, "Allowed"),
        ({"policy": "MlpPolicy"}, "missing 'n_timesteps'"),
    ],
)
def test_bad_config_values(tmp_path, entry, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_config(_write(tmp_path, entry), "ppo_rollback", "CartPole-v1")


def test_shipped_configs_validate():
    for algo, env_ids in {
        "ppo_rollback": ["CartPole-v1", "Pendulum-v1", "BipedalWalker-v3", "Hopper-v5", "HalfCheetah-v5", "Humanoid-v5"],
        "cherry_a2c": ["CartPole-v1", "Pendulum-v1", "BipedalWalker-v3"],
    }.items():
        for env_id in env_ids:
            validate_config(f"zoo_configs/{algo}.yml", algo, env_id)
