"""The sb3-cherry command line: train -> evaluate / enjoy / record, and config validation."""

import json
import os
import re
import stat
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import yaml

from sb3_cherry.cli import main, validate_config
from sb3_cherry.common.safe_config import safe_load_yaml


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
    out = tmp_path / "results" / "eval.json"
    out.parent.mkdir()
    out.write_text("an earlier summary")
    out.chmod(0o640)
    main(["evaluate", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(trained), "-n", "3", "--json", str(out)])
    summary = json.loads(out.read_text())
    # replaced by a temporary file renamed over it: the mode is carried over, no temporary file is left
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and os.listdir(out.parent) == ["eval.json"]
    assert summary["n_episodes"] == 3 and len(summary["returns"]) == 3
    # CartPole episodes that end before the time limit are failures (zoo_configs/evaluation.yml)
    assert summary["n_failed"] == sum(r < 500 for r in summary["returns"])
    assert "fails out of 3" in capsys.readouterr().out


def test_evaluate_json_failed_write_keeps_previous_file(trained, tmp_path, monkeypatch):
    import sb3_cherry.cli as cli

    evaluate = cli.evaluate_model
    monkeypatch.setattr(cli, "evaluate_model", lambda *args: {**evaluate(*args), "not JSON": object()})
    out = tmp_path / "eval.json"
    out.write_text('{"previous": true}')
    with pytest.raises(TypeError, match="not JSON serializable"):
        main(["evaluate", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(trained), "-n", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == {"previous": True} and os.listdir(tmp_path) == ["eval.json"]


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


def test_record_names_the_file_it_wrote(trained, tmp_path, capsys):
    main(
        ["record", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(trained), "-n", "1", "-o", str(tmp_path / "d")]
    )
    assert f"to {tmp_path / 'd.npz'} " in capsys.readouterr().out and (tmp_path / "d.npz").exists()
    # a folder given as -o: refused (the file was written next to it, as <folder>.npz)
    (tmp_path / "demos").mkdir()
    with pytest.raises(SystemExit) as info:
        main(["record", "--env", "CartPole-v1", "-f", str(trained), "-n", "1", "-o", str(tmp_path / "demos")])
    assert info.value.code == 2 and "is a folder; give a file name" in capsys.readouterr().err
    assert not (tmp_path / "demos.npz").exists()


@pytest.mark.parametrize("command", ["record", "evaluate", "video"])
def test_unwritable_outputs_are_refused_before_the_episodes(trained, tmp_path, capsys, monkeypatch, command):
    # record checked -o only after recording every episode, then printed a FileExistsError traceback
    import sb3_cherry.cli as cli

    (tmp_path / "file.npz").write_bytes(b"")
    out = {"record": ["-o", str(tmp_path / "file.npz" / "d.npz")], "evaluate": ["--json", str(tmp_path / "file.npz" / "s")]}
    out["video"] = ["-o", str(tmp_path / "file.npz")]  # a file where the output folder should be
    loads = []
    # the check comes first (video's folder was made by SB3's recorder after loading: FileExistsError, then an
    # "Exception ignored in VecVideoRecorder.__del__" traceback)
    monkeypatch.setattr(cli, "_load_for_eval", lambda *args, **kwargs: loads.append(1))
    with pytest.raises(SystemExit) as info:
        main([command, "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(trained), "-n", "1", *out[command]])
    assert info.value.code == 2 and not loads
    err = capsys.readouterr().err
    assert err.startswith(f"sb3-cherry {command}: error: ") and "file.npz" in err and "Traceback" not in err
    if command == "video":
        assert "-o/--output-folder" in err and "give a folder" in err


def test_missing_optional_dependency_is_one_line(monkeypatch, capsys):
    # e.g. rl_zoo3's `-optimize --sampler auto` imports optunahub (an extra of rl_zoo3): a traceback before
    import sb3_cherry.cli as cli

    def train(argv):
        raise ModuleNotFoundError("No module named 'optunahub'", name="optunahub")

    monkeypatch.setitem(cli.COMMANDS, "train", train)
    with pytest.raises(SystemExit) as info:
        main(["train"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == "sb3-cherry train: error: No module named 'optunahub' (an optional dependency: pip install optunahub)\n"
    # not an optional dependency (a bug, or a broken install), or an OSError that is not about a file: the traceback
    for error in (
        ModuleNotFoundError("No module named 'sb3_cherry.gone'", name="sb3_cherry.gone"),
        ConnectionResetError(104, "reset"),
    ):

        def failing(argv, error=error):
            raise error

        monkeypatch.setitem(cli.COMMANDS, "train", failing)
        with pytest.raises(type(error)):
            main(["train"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--hyperparams=n_steps:16.5"], "hyperparameter 'n_steps'=16.5 has the wrong type"),
        (["--hyper", "n_steps:16.5"], "hyperparameter 'n_steps'=16.5 has the wrong type"),
        # (a key of the command line named as such: the message blamed the shipped config file, which lacks it)
        (
            ["--hyperparams=rollback_alfa:0.1"],
            r"-params/--hyperparams \[CartPole-v1\]: unknown hyperparameter 'rollback_alfa'",
        ),
        (["-params", "rollback_alpha:'abc'"], r"'rollback_alpha'='abc' has the wrong type \(expected float\)"),
        (["-params", "target_kl:'1e-2'"], "YAML reads 1e-2 as a string: write the number with a dot"),
        (["-params", "rollout_buffer_kwargs:3"], r"'rollout_buffer_kwargs'=3 has the wrong type \(expected dict\)"),
    ],
)
def test_hyperparameters_checked_in_every_spelling_and_for_none_defaults(tmp_path, capsys, extra, message):
    # --hyperparams=... and abbreviations skipped the command line's pre-check; arguments whose default is None
    # (target_kl, rollback_alpha, rollout_buffer_kwargs) had no type check: a traceback, exit 1 and a run folder
    with pytest.raises(SystemExit) as info:
        main(["train", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(tmp_path / "logs"), "-n", "64", *extra])
    assert info.value.code == 2 and not (tmp_path / "logs").exists()
    assert re.search(message, capsys.readouterr().err)


def test_repeated_params_are_merged(tmp_path, monkeypatch):
    # rl_zoo3's StoreDict kept the last -params only (the first one's values silently dropped)
    import functools

    from sb3_cherry import PPORollback

    built = []
    original = PPORollback.__init__

    @functools.wraps(original)  # (the config check reads the constructor's signature)
    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(PPORollback, "__init__", spy)
    main(["train", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(tmp_path), "-n", "64", "--eval-freq", "-1",
          "-params", "n_steps:16", "batch_size:16", "-params", "n_epochs:2"])  # fmt: skip
    assert (built[0].n_steps, built[0].batch_size, built[0].n_epochs) == (16, 16, 2)


@pytest.mark.parametrize("bad", ["gamma:1.5", "rollback_alpha:-3", "rho_bar:inf"])
def test_a_model_refusing_its_arguments_leaves_no_run_folder(tmp_path, capsys, bad):
    # values the model's constructor refuses (out of range) left a run folder with monitor files only, which the
    # next `evaluate` without --exp-id picked ("No model found")
    with pytest.raises(SystemExit) as info:
        main(["train", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(tmp_path), "-n", "64", "-params", bad])
    assert info.value.code == 2 and "error:" in capsys.readouterr().err
    assert not list((tmp_path / "ppo_rollback").glob("CartPole-v1_*"))
    assert not (tmp_path / "ppo_rollback").exists()  # (the <algo>/ folder the run created: it was left empty)


def test_an_entry_without_policy_is_refused(tmp_path, capsys):
    conf = tmp_path / "c.yml"
    conf.write_text("CartPole-v1:\n  n_timesteps: 64\n")
    with pytest.raises(SystemExit) as info:
        main(["train", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-c", str(conf), "-f", str(tmp_path / "logs")])
    assert info.value.code == 2 and "missing 'policy'" in capsys.readouterr().err


def test_check_writable(tmp_path):
    from sb3_cherry.cli import check_writable

    check_writable(tmp_path / "new" / "folders" / "file.npz")  # created when written
    check_writable("/dev/null")  # written in place
    (tmp_path / "a_file").write_bytes(b"")
    (tmp_path / "link.json").symlink_to(tmp_path / "a_file" / "x.json")  # written through: into a file's "folder"
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_writable(tmp_path / "link.json")
    (tmp_path / "locked").mkdir(mode=0o500)
    (tmp_path / "protected").write_bytes(b"")
    (tmp_path / "protected").chmod(0o400)
    for path, message in [
        (tmp_path, "is a folder; give a file name"),
        (tmp_path / "protected" / "x", "is a file, not a folder"),
        (tmp_path / "locked" / "x", "no permission to write in"),
        (tmp_path / "protected", "write-protected"),
    ]:
        if os.geteuid() == 0 and message != "is a folder; give a file name" and "file, not" not in message:
            continue  # root writes anywhere
        with pytest.raises(ValueError, match=message):
            check_writable(path)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--env", "Foo-v9"], "Environment `Foo` doesn't exist"),
        (["--env", "CartPole-v1", "--device", "cudax"], "--device 'cudax' is not a torch device"),
        (["--env", "CartPole-v1", "--env-kwargs", "foo:1"], r"the env did not accept --env-kwargs \{'foo': 1\}"),
    ],
)
@pytest.mark.parametrize("command", ["evaluate", "record", "video"])
def test_bad_env_device_and_env_kwargs_are_clean_errors(trained, tmp_path, capsys, command, extra, message):
    model = trained / "ppo_rollback" / "CartPole-v1_1" / "CartPole-v1.zip"
    out = ["-o", str(tmp_path / ("d.npz" if command == "record" else "videos"))] if command != "evaluate" else []
    with pytest.raises(SystemExit) as info:
        main([command, "--algo", "ppo_rollback", "--model", str(model), "-n", "1", *extra, *out])
    assert info.value.code == 2 and re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "-n", "-5"], "-n/--n-timesteps must be at least 1, got -5"),
        (["train", "--n-timesteps", "0"], "-n/--n-timesteps must be at least 1, got 0"),
        (["video", "--env", "CartPole-v1", "-n", "0"], "-n/--n-timesteps must be at least 1, got 0"),
        (["video", "--env", "CartPole-v1", "--gif", "--gif-fps", "0"], "--gif-fps must be in (0, 50]"),
        # refused under the option's name before the model loaded (was GifVideoRecorder's gif_max_fps=60.0 after it)
        (["video", "--env", "CartPole-v1", "--gif", "--gif-fps", "60"], "--gif-fps must be in (0, 50]"),
        (["video", "--env", "CartPole-v1", "--gif", "--gif-fps", "nan"], "--gif-fps must be in (0, 50]"),
        (["record", "--env", "CartPole-v1", "-n", "0", "-o", "x.npz"], "-n/--n-episodes must be at least 1, got 0"),
        # rl_zoo3 takes trial 0 for "no trial" and trained the config's hyperparameters instead
        (["train", "--env", "CartPole-v1", "--storage", "s.log", "--study-name", "s", "--trial-id", "0"], "numbered from 1"),
    ],
)
def test_budgets_below_one_are_refused_before_anything_runs(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_model_of_another_algo_names_the_algo_to_give(trained, capsys):
    model = trained / "ppo_rollback" / "CartPole-v1_1" / "CartPole-v1.zip"
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--algo", "cherry_a2c", "--env", "CartPole-v1", "--model", str(model), "-n", "1"])
    assert info.value.code == 2 and "is a ppo_rollback model: use --algo ppo_rollback" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_env_kwargs_are_parsed_not_evaluated(command, tmp_path, monkeypatch, capsys):
    # rl_zoo3's StoreDict evaluates each value as Python: a value that is code ran (it created a file)
    monkeypatch.chdir(tmp_path)
    code = "__import__('pathlib').Path('ran').touch()"
    with pytest.raises(SystemExit) as info:
        main([command, "--env", "CartPole-v1", "-n", "64", "-f", str(tmp_path / "logs"), "--env-kwargs", f"x:{code}"])
    assert info.value.code == 2 and "is not allowed" in capsys.readouterr().err
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("name", ["conf.py", "conf", "conf.YML"])
def test_train_reads_yaml_configs_only(name, tmp_path, monkeypatch, capsys):
    # rl_zoo3 runs a .py config and imports an extension-less one: a file valid as YAML and as Python ran its code
    monkeypatch.chdir(tmp_path)
    config = tmp_path / name
    config.write_text("CartPole-v1:\n  n_timesteps: 64\n  policy: 'MlpPolicy'\n")
    with pytest.raises(SystemExit) as info:
        main(["train", "--env", "CartPole-v1", "-c", str(config), "-f", str(tmp_path / "logs")])
    assert info.value.code == 2 and "reads YAML configs only" in capsys.readouterr().err


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
    "algo, entry",
    [
        ("ppo_rollback", {"n_timesteps": 1000, "frame_stack": None}),  # rl_zoo3: no stacking
        ("ppo_rollback", {"n_timesteps": 1e3, "n_steps": 64, "learning_rate": "lin_1e-3"}),
        ("bco", {"n_timesteps": 1000, "n_pre_interactions": 1e4, "demonstrations": "demos.npz"}),  # BCO converts it
    ],
)
def test_config_values_still_accepted(tmp_path, algo, entry):
    validate_config(_write(tmp_path, {"policy": "MlpPolicy", **entry}), algo, "CartPole-v1")


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"n_timesteps": 1000, "policy": "MlpPolicy", "n_epochs": "ten"}, "'n_epochs'='ten' has the wrong type"),
        ({"n_timesteps": 1000, "policy": "MlpPolicy", "learning_rate": "fast"}, "'learning_rate'='fast'"),
        ({"n_timesteps": 1000, "policy": "MlpPolicy", "policy_kwargs": "dict(action_distribution='beta')"}, "Allowed"),
        ({"policy": "MlpPolicy"}, "missing 'n_timesteps'"),
        # each of these passed validation before and failed inside SB3 / rl_zoo3 after the run folder was created
        ({"n_timesteps": 1000, "n_steps": 2048.0}, "'n_steps'=2048.0 has the wrong type (expected int)"),
        ({"n_timesteps": 1000, "learning_rate": "lin_abc"}, "'learning_rate'='lin_abc' has the wrong type"),
        ({"n_timesteps": 1000, "clip_range": "lin_0.1_0"}, "expected float or lin_<value> with a positive value"),
        ({"n_timesteps": 1000, "n_envs": 2.0}, "n_envs=2.0 must be an integer"),
        ({"n_timesteps": 1000.5}, "n_timesteps=1000.5 must be a whole number"),
        ({"n_timesteps": 1000, "policy": "MlpPolcy"}, "unknown policy 'MlpPolcy'"),
        ({"n_timesteps": 1000, "env_kwargs": ["a"]}, "env_kwargs=['a'] must be a mapping"),
        ({"n_timesteps": 1000, "env_kwargs": "[1]"}, "env_kwargs='[1]' must be a mapping"),
        ({"n_timesteps": 1000, "normalize": 3}, "normalize=3 must be true/false"),
        # values of the right type that the constructor refuses after rl_zoo3 created the run folder
        ({"n_timesteps": 1000, "returns_estimator": "gea"}, "'returns_estimator'='gea' is not one of ['gae', 'one_step'"),
        ({"n_timesteps": 1000, "collection": "asyn"}, "'collection'='asyn' is not one of ['sync', 'async']"),
        ({"n_timesteps": 1000, "trust_region": "KL"}, "'trust_region'='KL' is not one of ['ratio', 'kl']"),
        ({"n_timesteps": 1000, "rollback": "klr"}, "'rollback'='klr' is not one of ['ratio', 'kl']"),
        # a negative clip range trained with clamp(r, 1.2, 0.8) = 0.8; rl-zoo's old clip_range_vf: -1 met SB3's assert
        ({"n_timesteps": 1000, "clip_range": -0.2}, "clip_range=-0.2 must be positive"),
        ({"n_timesteps": 1000, "clip_range": 0}, "clip_range=0 must be positive"),
        ({"n_timesteps": 1000, "clip_range_vf": -1.0}, "clip_range_vf=-1.0 must be positive; for no value clipping write"),
        ({"n_timesteps": 1000, "clip_range_vf": 0.0}, "clip_range_vf=0.0 must be positive"),
        # a rollout buffer class is named by its dotted name, and must be one
        (
            {"n_timesteps": 1000, "policy": "MlpPolicy", "rollout_buffer_class": "CherryRolloutBuffer"},
            "must be the dotted name",
        ),
        (
            {"n_timesteps": 1000, "policy": "MlpPolicy", "rollout_buffer_class": "os.system"},
            "rollout_buffer_class 'os.system' is not a class of",
        ),
        (
            {"n_timesteps": 1000, "policy": "MlpPolicy", "rollout_buffer_class": "sb3_cherry.common.buffers.Nope"},
            "cannot be imported",
        ),
    ],
)
def test_bad_config_values(tmp_path, entry, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_config(_write(tmp_path, entry), "ppo_rollback", "CartPole-v1")


@pytest.mark.parametrize("in_yaml", [True, False])
@pytest.mark.parametrize(
    "name", ["stable_baselines3.common.buffers.RolloutBuffer", "sb3_cherry.common.buffers.CherryRolloutBuffer"]
)
def test_rollout_buffer_class_named_in_yaml_is_used(tmp_path, monkeypatch, name, in_yaml):
    # rl_zoo3 passed the string on to the algorithm, which failed in issubclass() after the run folder was made
    import importlib

    from sb3_cherry import PPORollback

    module, _, attribute = name.rpartition(".")
    models = []
    monkeypatch.setattr(PPORollback, "learn", lambda self, *args, **kwargs: models.append(self) or self)
    monkeypatch.chdir(tmp_path)
    entry = {"n_timesteps": 64, "policy": "MlpPolicy", "n_steps": 32, "n_envs": 2}
    path = _write(tmp_path, {**entry, "rollout_buffer_class": name} if in_yaml else entry)
    extra = [] if in_yaml else ["--hyperparams", f"rollout_buffer_class:'{name}'"]
    main(["train", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-c", str(path), *extra])
    assert type(models[0].rollout_buffer) is getattr(importlib.import_module(module), attribute)


@pytest.mark.parametrize("key", ["clip_range_vf", "learning_rate"])
def test_a_null_schedule_is_the_constructors_default(tmp_path, monkeypatch, key):
    # rl_zoo3 refused clip_range_vf: null ("Invalid value for clip_range_vf: None"), SB3's own default
    from sb3_cherry import PPORollback

    models = []
    monkeypatch.setattr(PPORollback, "learn", lambda self, *args, **kwargs: models.append(self) or self)
    monkeypatch.chdir(tmp_path)
    entry = {"n_timesteps": 64, "policy": "MlpPolicy", "n_steps": 32, "n_envs": 2, "clip_range_vf": None}
    if key == "learning_rate":  # not None-able: still refused, before the run folder exists
        with pytest.raises(SystemExit):
            main(["train", "--env", "CartPole-v1", "-c", str(_write(tmp_path, {**entry, key: None}))])
        assert not (tmp_path / "logs").exists()
        return
    main(["train", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-c", str(_write(tmp_path, entry))])
    assert models[0].clip_range_vf is None


def test_shipped_configs_validate():
    for algo, env_ids in {
        "ppo_rollback": ["CartPole-v1", "Pendulum-v1", "BipedalWalker-v3", "Hopper-v5", "HalfCheetah-v5", "Humanoid-v5"],
        "cherry_a2c": ["CartPole-v1", "Pendulum-v1", "BipedalWalker-v3"],
    }.items():
        for env_id in env_ids:
            validate_config(f"zoo_configs/{algo}.yml", algo, env_id)


# ------------------------------------------------------------------------------------------ packaging and help texts
def test_shipped_configs_found_from_any_directory(tmp_path, monkeypatch):
    """The configs are package data (a symlink to the top-level zoo_configs/ in a checkout), found from any cwd."""
    import pathlib

    import sb3_cherry
    from sb3_cherry.common.config_schema import default_config

    monkeypatch.chdir(tmp_path)
    package_configs = pathlib.Path(sb3_cherry.__file__).parent / "zoo_configs"
    for algo in ("ppo_rollback", "cherry_a2c", "evaluation"):
        assert default_config(algo).resolve() == (package_configs / f"{algo}.yml").resolve()
    top_level = pathlib.Path(__file__).parents[1] / "zoo_configs"
    assert sorted(p.name for p in package_configs.glob("*.yml")) == sorted(p.name for p in top_level.glob("*.yml"))
    with pytest.raises(FileNotFoundError, match="Pass -c"):
        default_config("no_such_algo")


def test_common_does_not_import_cli():
    """Arrows point down: importing common/ (schema, zoo entries, async learner) never loads the CLI."""
    code = (
        "import sys, sb3_cherry.common.zoo_config, sb3_cherry.common.async_learner, sb3_cherry.common.on_policy; "
        "assert 'sb3_cherry.cli' not in sys.modules, 'cli imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_help_is_plain_text(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert "video" in out and "evaluate" in out
    for reST in (":param", "``", ":mod:"):
        assert reST not in out
    main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--algo {airl,bco,cherry_a2c,gail,ppo_rollback,recurrent_ppo_rollback}" in out
    assert "rl_zoo3 train options" in out and "--eval-freq" in out and "--n-trials" in out  # rl_zoo3's own options
    assert out.count("--conf-file") == 1 and ":param" not in out
    for command in ("evaluate", "record", "video"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "--load-best" in out and "--env-kwargs" in out and "--device" in out and ":param" not in out


def test_unknown_command_and_algo(capsys):
    with pytest.raises(SystemExit):
        main(["trian"])
    assert "unknown command 'trian'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--algo", "ppo"])
    assert "invalid choice: 'ppo'" in capsys.readouterr().err


def test_train_algo_equals_form_and_user_config_wins(tmp_path, monkeypatch):
    """``--algo=cherry_a2c`` validates cherry_a2c's shipped config (not ppo_rollback's); ``-c FILE`` replaces it."""
    import rl_zoo3.train

    import sb3_cherry.cli as cli

    seen = {}
    monkeypatch.setattr(rl_zoo3.train, "train", lambda: seen.setdefault("argv", list(sys.argv)))
    monkeypatch.chdir(tmp_path)
    main(["train", "--algo=cherry_a2c", "--env=Pendulum-v1", "-n", "100", "--eval-freq", "-1"])
    argv = seen.pop("argv")
    conf = argv[argv.index("--conf-file") + 1]
    assert argv[argv.index("--algo") + 1] == "cherry_a2c" and conf.endswith("cherry_a2c.yml")
    assert argv[-4:] == ["-n", "100", "--eval-freq", "-1"]
    user = _write(tmp_path, {"n_timesteps": 1000, "policy": "MlpPolicy", "n_steps": 8})
    validated = []
    monkeypatch.setattr(
        cli, "validate_config", lambda path, algo, env, overrides=None, env_kwargs=None: validated.append((path, algo, env))
    )
    main(["train", "--algo", "cherry_a2c", "-c", str(user)])
    assert validated == [(str(user), "cherry_a2c", "CartPole-v1")]
    assert seen["argv"][seen["argv"].index("--conf-file") + 1] == str(user)


def test_enjoy_defaults_follow_the_other_commands(monkeypatch):
    import rl_zoo3.enjoy

    seen = []
    monkeypatch.setattr(rl_zoo3.enjoy, "enjoy", lambda: seen.append(list(sys.argv[1:])))
    main(["enjoy", "--no-render"])
    main(["enjoy", "--algo=cherry_a2c", "-f", "elsewhere"])
    assert seen == [["--algo", "ppo_rollback", "-f", "logs", "--no-render"], ["--algo=cherry_a2c", "-f", "elsewhere"]]


# ------------------------------------------------------------------------------------------------- evaluate / video
class _ScriptedEpisodes(gym.Env):
    """Episodes whose rewards and endings are written by hand in :meth:`outcome`; the observation is always 0."""

    observation_space = gym.spaces.Box(-1, 1, (1,))
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.episode, self.t = -1, 0

    def reset(self, seed=None, options=None):
        self.episode, self.t = self.episode + 1, 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, dtype=np.float32), *self.outcome(self.episode, self.t), {}

    def outcome(self, episode: int, t: int) -> tuple[float, bool, bool]:
        """(reward, terminated, truncated) of step ``t`` (from 1) of episode ``episode`` (from 0)."""
        raise NotImplementedError


class _EndsTwoWays(_ScriptedEpisodes):
    """Episode k lasts k + 1 steps with reward 1 per step; even episodes terminate, odd ones are truncated."""

    def outcome(self, episode, t):
        end = t == episode + 1
        return 1.0, end and episode % 2 == 0, end and episode % 2 == 1


class _AnyModel:
    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return np.zeros(len(obs), dtype=np.int64), None


@pytest.mark.parametrize("monitor", [True, False])
def test_evaluate_model_counts_failures_per_episode(monitor):
    """Hand-computed reference: returns 1..6; episodes 1, 3, 5 (returns 1, 3, 5) terminate, the others are truncated."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sb3_cherry.cli import evaluate_model

    make = (lambda: Monitor(_EndsTwoWays())) if monitor else _EndsTwoWays
    summary = evaluate_model(_AnyModel(), DummyVecEnv([make]), n_episodes=6, fail_on_termination=True)
    assert summary["returns"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and summary["mean_length"] == 3.5
    assert summary["n_failed"] == 3
    summary = evaluate_model(_AnyModel(), DummyVecEnv([make]), n_episodes=6, fail_below=4.5)
    assert summary["n_failed"] == 4
    summary = evaluate_model(_AnyModel(), DummyVecEnv([make]), n_episodes=6, fail_below=2.5, fail_on_termination=True)
    assert summary["n_failed"] == 4  # returns 1, 2 (below) and 3, 5 (terminated)
    assert "n_falls" not in summary


class _FallsOrFinishes(_ScriptedEpisodes):
    """BipedalWalker's endings by hand: episode k ends after 2 steps; k % 3 == 0 falls (-100), 1 finishes (+5), 2 times out."""

    def outcome(self, episode, t):
        kind = episode % 3
        if t < 2:
            return 1.0, False, False
        reward = {0: -100.0, 1: 5.0, 2: -100.0}[kind]  # a time-out with a -100 step is no fall: it did not terminate
        return reward, kind in (0, 1), kind == 2


@pytest.mark.parametrize("monitor", [True, False])
def test_evaluate_model_counts_falls(monitor):
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sb3_cherry.cli import evaluate_model

    make = (lambda: Monitor(_FallsOrFinishes())) if monitor else _FallsOrFinishes
    summary = evaluate_model(_AnyModel(), DummyVecEnv([make]), n_episodes=7, fail_below=0.0, fall_reward=-100.0)
    assert summary["returns"] == [-99.0, 6.0, -99.0] * 2 + [-99.0]
    assert summary["n_falls"] == 3  # episodes 0, 3, 6
    assert summary["n_failed"] == 5  # every return below 0, falls and time-outs alike


def _evaluate_json(argv, capsys):
    """``evaluate --json -``: stdout holds the JSON alone."""
    main([*argv, "--json", "-"])
    return json.loads(capsys.readouterr().out)


def test_evaluate_options(trained, capsys):
    base = ["evaluate", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(trained), "-n", "2"]
    # Sutton & Barto's CartPole reward (0 per step, -1 on failure) reaches the env through --env-kwargs
    summary = _evaluate_json([*base, "--env-kwargs", "sutton_barto_reward:True", "--device", "cpu"], capsys)
    assert all(r in (-1.0, 0.0) for r in summary["returns"])
    for flags, message in ((["--load-best"], "--eval-freq > 0"), (["--load-checkpoint", "77"], "rl_model_77_steps")):
        with pytest.raises(SystemExit):
            main(base + flags)
        assert message in capsys.readouterr().err


def test_evaluate_failure_definition_from_the_command_line(trained, capsys):
    """CartPole's default (evaluation.yml: termination is a failure) can be switched off, and a return threshold set or
    removed: an untrained-ish agent falls, so the counts tell the definitions apart."""
    base = ["evaluate", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(trained), "-n", "4"]
    default = _evaluate_json(base, capsys)
    terminated = sum(ret < 500 for ret in default["returns"])  # CartPole: return = length
    assert terminated > 0 and default["n_failed"] == terminated
    assert _evaluate_json([*base, "--no-fail-on-termination"], capsys)["n_failed"] == 0
    assert _evaluate_json([*base, "--no-fail-on-termination", "--fail-below", "1000"], capsys)["n_failed"] == 4
    assert _evaluate_json([*base, "--fail-below", "none"], capsys)["n_failed"] == terminated
    # an env default threshold is switched off by 'none' (evaluation.yml has none for CartPole: patched in)
    import sb3_cherry.cli as cli

    defaults = cli._eval_defaults
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "_eval_defaults", lambda env: {**defaults(env), "fail_below": 1000.0})
        assert _evaluate_json([*base, "--no-fail-on-termination"], capsys)["n_failed"] == 4
        assert _evaluate_json([*base, "--no-fail-on-termination", "--fail-below", "none"], capsys)["n_failed"] == 0
    with pytest.raises(SystemExit):
        main([*base, "--fail-below", "high"])
    assert "expected a number or 'none', got 'high'" in capsys.readouterr().err
    # the file says which definitions gave its counts (it held n_failed alone), and the fall count can be switched off
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "_eval_defaults", lambda env: {**defaults(env), "fall_reward": 0.5})
        summary = _evaluate_json([*base, "--fail-below", "20", "--seed", "3"], capsys)
        assert "n_falls" in summary and summary["fall_reward"] == 0.5
        assert "n_falls" not in _evaluate_json([*base, "--fall-reward", "none"], capsys)
    expected = {"fail_below": 20.0, "fail_on_termination": True, "seed": 3, "deterministic": True}
    assert {key: summary[key] for key in expected} == expected


def test_shipped_evaluation_defaults_are_checked(monkeypatch, tmp_path):
    import sb3_cherry.cli as cli

    for env_id in safe_load_yaml(cli.default_config("evaluation")):
        cli._eval_defaults(env_id)  # every shipped entry passes
    bad = tmp_path / "evaluation.yml"
    for entry in ({"fail_bellow": 300}, {"fail_on_termination": "yes"}, {"fall_reward": True}):
        bad.write_text(yaml.safe_dump({"CartPole-v1": entry}))
        monkeypatch.setattr(cli, "default_config", lambda name: bad)
        with pytest.raises(ValueError, match=re.escape(f"{next(iter(entry))}={next(iter(entry.values()))!r}")):
            cli._eval_defaults("CartPole-v1")
    bad.write_text(yaml.safe_dump({"CartPole-v1": [300]}))
    with pytest.raises(ValueError, match="must be a mapping"):
        cli._eval_defaults("CartPole-v1")
    bad.write_text(yaml.safe_dump({"CartPole-v1": {"fail_below": None, "fall_reward": None}}))
    assert cli._eval_defaults("CartPole-v1") == {"fail_below": None, "fall_reward": None}


def test_video_writes_mp4_and_gif(trained, tmp_path, capsys):
    from PIL import Image

    from sb3_cherry.cli import cmd_video

    args = ["--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(trained), "-n", "20", "-o", str(tmp_path)]
    written = cmd_video([*args, "--gif"])
    assert capsys.readouterr().out.count("Loading latest experiment") == 1  # the run folder is looked up once (was twice)
    mp4 = [p for p in written if p.endswith(".mp4")]
    gif = [p for p in written if p.endswith(".gif")]
    assert len(mp4) == 1 and len(gif) == 1 and all(os.path.getsize(p) > 0 for p in written)
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in written)  # no temporary file left
    with Image.open(gif[0]) as image:
        # 21 frames (reset + 20 steps) at CartPole's 50 fps, every 2nd kept for <= 25 fps (40 ms each; Pillow merges
        # identical frames, so count time, not frames), the 600x400 render at the default width of 320 pixels
        durations = []
        for index in range(image.n_frames):
            image.seek(index)
            durations.append(image.info["duration"])
        assert sum(durations) == 11 * 40 and image.size == (320, 213)
    # the GIF options do not matter without --gif (--gif-fps 60 failed the MP4 too)
    (written,) = cmd_video([*args[:-1], str(tmp_path / "mp4_only"), "--gif-fps", "60"])
    assert written.endswith(".mp4")


@pytest.mark.parametrize("fps", [24.0, 30.0, 50.0, 60.0, 67.0, 1000 / 15])
@pytest.mark.parametrize("max_fps", [10.0, 25.0, 50.0])
def test_gif_timing_plays_in_real_time(fps, max_fps):
    """At most ``max_fps`` frames per second (30 fps at a 25 fps cap kept every frame before), durations in GIF's
    10 ms unit and at least 20 ms, and the whole GIF as long as the recording (within 5 ms)."""
    from sb3_cherry.cli import gif_timing

    n_frames = 301
    every, durations = gif_timing(fps, max_fps, n_frames)
    assert fps / every <= max_fps and (every == 1 or fps / (every - 1) > max_fps)  # fewest frames dropped
    assert len(durations) == len(range(0, n_frames, every))
    assert all(d % 10 == 0 and d >= 20 for d in durations)
    assert abs(sum(durations) - 1000 * len(durations) * every / fps) <= 5 + 1e-9
    # and at every frame: frame k starts at k * every / fps seconds (within 5 ms)
    starts = np.cumsum([0, *durations[:-1]])
    assert np.all(np.abs(starts - 1000 * np.arange(len(durations)) * every / fps) <= 5 + 1e-9)


def test_train_subproc_with_sb3_cherry_env(tmp_path):
    """`--vec-env subproc` workers (started by forkserver) find the envs registered under `sb3_cherry/`."""
    cmd = [sys.executable, "-m", "sb3_cherry", "train", "--algo", "ppo_rollback", "--env", "sb3_cherry/HybridGoal-v0"]
    cmd += ["-f", str(tmp_path), "-n", "128", "--seed", "0", "--eval-freq", "-1", "--vec-env", "subproc"]
    cmd += ["--hyperparams", "n_envs:2", "n_steps:64", "batch_size:64"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    assert (tmp_path / "ppo_rollback" / "sb3_cherry-HybridGoal-v0_1" / "sb3_cherry-HybridGoal-v0.zip").exists()


class _Marker:
    """Unpickling it creates the file ``path`` (stands for any code a downloaded pickle could run)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("normalize", [False, True])
def test_train_never_unpickles_a_vecnormalize_file_in_the_working_directory(tmp_path, monkeypatch, capsys, normalize):
    """rl_zoo3 loads <working directory>/<env>/vecnormalize.pkl with pickle when no -i model is given; sb3-cherry not."""
    import pickle

    marker = tmp_path / "code_ran"
    (tmp_path / "CartPole-v1").mkdir()
    with open(tmp_path / "CartPole-v1" / "vecnormalize.pkl", "wb") as file:
        pickle.dump(_Marker(marker), file)
    entry = {"n_timesteps": 64, "policy": "MlpPolicy", "n_steps": 32, "batch_size": 32, "n_epochs": 1}
    if normalize:
        entry["normalize"] = True
    conf = _write(tmp_path, entry)
    monkeypatch.chdir(tmp_path)
    main(["train", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-c", str(conf), "--eval-freq", "-1", "-f", "runs"])
    assert not marker.exists()
    assert "Loading saved VecNormalize stats" not in capsys.readouterr().out
    # the experiment manager rl_zoo3 would use does run it (what the test guards against)
    from rl_zoo3.exp_manager import ExperimentManager
    from stable_baselines3.common.vec_env import DummyVecEnv

    manager = ExperimentManager.__new__(ExperimentManager)
    manager.trained_agent, manager.env_name = "", "CartPole-v1"
    with pytest.raises(AttributeError):  # the unpickled object is a file, not a VecNormalize
        manager._maybe_normalize(DummyVecEnv([lambda: gym.make("CartPole-v1")]), False)
    assert marker.exists()


def test_trained_agent_statistics_are_read_with_the_restricted_unpickler(tmp_path):
    """With -i, the statistics next to the model are loaded without pickle's code execution (and still loaded)."""
    import pickle

    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from sb3_cherry.common.restricted_pickle import UnsafeModelFileError
    from sb3_cherry.resume import SafeExperimentManager

    folder = tmp_path / "run" / "CartPole-v1"
    folder.mkdir(parents=True)
    venv = DummyVecEnv([lambda: gym.make("CartPole-v1")])
    saved = VecNormalize(venv, norm_reward=False)
    saved.obs_rms.mean[:] = [1.0, 2.0, 3.0, 4.0]
    saved.save(str(folder / "vecnormalize.pkl"))
    manager = SafeExperimentManager.__new__(SafeExperimentManager)
    manager.trained_agent, manager.env_name = str(tmp_path / "run" / "model.zip"), "CartPole-v1"
    loaded = manager._maybe_normalize(DummyVecEnv([lambda: gym.make("CartPole-v1")]), True)
    assert isinstance(loaded, VecNormalize) and not loaded.training and not loaded.norm_reward
    np.testing.assert_array_equal(loaded.obs_rms.mean, [1.0, 2.0, 3.0, 4.0])
    with open(folder / "vecnormalize.pkl", "wb") as file:
        pickle.dump(_Marker(tmp_path / "code_ran"), file)
    with pytest.raises(UnsafeModelFileError):
        manager._maybe_normalize(DummyVecEnv([lambda: gym.make("CartPole-v1")]), False)
    assert not (tmp_path / "code_ran").exists()


class _Unpicklable:
    """Pickling it fails (stands for a write interrupted half-way)."""

    def __reduce__(self):
        raise RuntimeError("interrupted")


def test_every_statistics_file_of_a_run_is_written_atomically(tmp_path):
    """rl_zoo3 / SB3 write vecnormalize.pkl (at each new best and at the end) and each checkpoint's statistics with
    VecNormalize.save, which truncates the previous file before pickling: an interrupted save lost it."""
    from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from sb3_cherry import PPORollback
    from sb3_cherry.resume import BEST_STATISTICS, SafeExperimentManager

    def venv():
        return DummyVecEnv([lambda: gym.make("Pendulum-v1")])

    manager = SafeExperimentManager.__new__(SafeExperimentManager)
    manager.callbacks, manager.show_progress, manager.verbose, manager.optimize_hyperparameters = [], False, 0, False
    manager.save_freq, manager.eval_freq, manager.n_envs, manager.n_eval_envs = 4, 4, 1, 1
    manager.n_eval_episodes, manager.deterministic_eval, manager.normalize = 1, True, True
    manager.save_path, manager.params_path, manager.env_name = str(tmp_path), str(tmp_path / "Pendulum-v1"), "Pendulum-v1"
    manager.create_envs = lambda n_envs, eval_env=False, no_log=False: VecNormalize(venv(), training=False)
    manager.create_callbacks()
    model = PPORollback("MlpPolicy", VecNormalize(venv()), n_steps=8, batch_size=8, device="cpu")
    model.num_timesteps = 4
    checkpoint = next(c for c in manager.callbacks if isinstance(c, CheckpointCallback))
    evaluation = next(c for c in manager.callbacks if isinstance(c, EvalCallback))
    for callback in (checkpoint, evaluation):
        callback.init_callback(model)
    paths = [tmp_path / "Pendulum-v1" / "vecnormalize.pkl", tmp_path / BEST_STATISTICS]
    paths.append(tmp_path / "rl_model_vecnormalize_4_steps.pkl")
    (tmp_path / "Pendulum-v1").mkdir(exist_ok=True)
    for path in paths:
        path.write_bytes(b"previous statistics")
    model.get_vec_normalize_env().interrupted = _Unpicklable()
    saves = [lambda: manager.save_trained_model(model), evaluation.callback_on_new_best.on_step]
    saves.append(lambda: [checkpoint.on_step() for _ in range(4)])
    for save in saves:
        with pytest.raises(RuntimeError, match="interrupted"):
            save()
    assert [path.read_bytes() for path in paths] == [b"previous statistics"] * 3
    del model.get_vec_normalize_env().interrupted  # and they are written
    for save in saves:
        save()
    assert all(path.read_bytes() != b"previous statistics" for path in paths)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp") == []


def test_a_configs_checkpoint_callback_subclass_is_kept(tmp_path):
    # create_callbacks rebuilt every CheckpointCallback as the atomic-statistics one: a config's subclass lost its own
    # behaviour; only rl_zoo3's plain CheckpointCallback is replaced
    from stable_baselines3.common.callbacks import CheckpointCallback

    from sb3_cherry.resume import SafeExperimentManager

    class MyCheckpoint(CheckpointCallback):
        pass

    manager = SafeExperimentManager.__new__(SafeExperimentManager)
    mine = MyCheckpoint(10, str(tmp_path))
    manager.callbacks, manager.show_progress, manager.verbose, manager.optimize_hyperparameters = [mine], False, 0, False
    manager.save_freq, manager.eval_freq, manager.n_envs, manager.save_path = 4, 0, 1, str(tmp_path)
    manager.create_callbacks()
    assert manager.callbacks[0] is mine and type(manager.callbacks[1]).__name__ == "_CheckpointWithStatistics"


def test_evaluate_uses_the_training_commands_env_kwargs(tmp_path, monkeypatch):
    """--env-kwargs of `train` (rl_zoo3 keeps them in args.yml) apply to evaluate / record / video, as to rl_zoo3's enjoy."""
    monkeypatch.chdir(tmp_path)
    main(
        [
            "train",
            "--env",
            "CartPole-v1",
            "-f",
            "runs",
            "-n",
            "256",
            "--eval-freq",
            "-1",
            "--env-kwargs",
            "sutton_barto_reward:True",
            "--run-checkpoint-freq",
            "128",
        ]
    )
    args = safe_load_yaml(tmp_path / "runs" / "ppo_rollback" / "CartPole-v1_1" / "CartPole-v1" / "args.yml")
    assert args["env_kwargs"] == {"sutton_barto_reward": True}
    for extra, check in (
        ([], lambda returns: all(r <= 0 for r in returns)),
        (["--env-kwargs", "sutton_barto_reward:False"], lambda returns: all(r >= 8 for r in returns)),
    ):
        for source in (["-f", "runs"], ["--model", "runs/ppo_rollback/CartPole-v1_1"]):  # the final model, the checkpoint
            main(["evaluate", "--env", "CartPole-v1", *source, "-n", "2", "--json", "eval.json", *extra])
            # Sutton & Barto's reward: 0 per step, -1 when the pole falls (the default gives +1 per step)
            assert check(json.loads((tmp_path / "eval.json").read_text())["returns"])


def test_run_env_kwargs_survives_an_args_file_the_safe_loader_refuses(tmp_path):
    from sb3_cherry.checkpoint_eval import run_env_kwargs

    (tmp_path / "args.yml").write_text("env_kwargs: !!python/tuple [1, 2]\n")  # rl_zoo3 dumps tuples like this
    with pytest.warns(UserWarning, match="args.yml was not read"):
        assert run_env_kwargs({"env_kwargs": {"a": 1}}, tmp_path) == {"a": 1}


def test_optimize_keeps_the_configs_policy_kwargs(tmp_path, monkeypatch):
    """``-optimize`` (rl_zoo3's optuna search): the trials of a Beta entry build Beta policies with the sampled net_arch
    (rl_zoo3's objective replaces the config's policy_kwargs by the sampled ones); RecurrentPPORollback is searchable."""
    import rl_zoo3.utils

    import sb3_cherry

    built = []

    def recording(cls):
        class Recording(cls):
            def __init__(self, *args, **kwargs):
                built.append(kwargs.get("policy_kwargs"))
                # (what is tested is the policy_kwargs: a sampled 4096-step rollout in minibatches of 4 took ~40 s)
                kwargs.update(n_steps=32, batch_size=32, n_epochs=1)
                super().__init__(*args, **kwargs)

        return Recording

    algos = sb3_cherry.zoo_algorithms()
    recorded = {name: recording(algos[name]) for name in ("ppo_rollback", "recurrent_ppo_rollback")}
    for name, cls in recorded.items():
        monkeypatch.setitem(rl_zoo3.utils.ALGOS, name, cls)  # restored after the test
    monkeypatch.setattr(sb3_cherry, "zoo_algorithms", lambda: {**algos, **recorded})  # what `train` registers
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.chdir(tmp_path)
    entry = {"n_timesteps": 512, "policy": "MlpPolicy", "policy_kwargs": "dict(action_distribution='beta')"}
    config = tmp_path / "conf.yml"
    config.write_text(yaml.safe_dump({"Pendulum-v1": entry}))
    common = [
        "-optimize",
        "--n-trials",
        "2",
        "--n-jobs",
        "1",
        "-n",
        "512",
        "--n-evaluations",
        "1",
        "--eval-episodes",
        "1",
        "--seed",
        "0",
    ]
    study = ["--storage", str(tmp_path / "study.log"), "--study-name", "beta"]
    main(["train", "--algo", "ppo_rollback", "--env", "Pendulum-v1", "-c", str(config), *common, *study, "-f", "logs"])
    assert len(built) == 2
    for policy_kwargs in built:
        assert policy_kwargs["action_distribution"] == "beta" and "net_arch" in policy_kwargs
    # retraining a trial (rl_zoo3 skips --trial-id 0) keeps the entry's policy_kwargs too
    retrain = ["--trial-id", "1", "-n", "64", "--eval-freq", "-1", "-f", "logs"]
    main(["train", "--algo", "ppo_rollback", "--env", "Pendulum-v1", "-c", str(config), *study, *retrain])
    assert built[-1]["action_distribution"] == "beta" and built[-1]["net_arch"] == built[1]["net_arch"]
    built.clear()
    config.write_text(yaml.safe_dump({"Pendulum-v1": {**entry, "policy": "MlpLstmPolicy"}}))
    main(["train", "--algo", "recurrent_ppo_rollback", "--env", "Pendulum-v1", "-c", str(config), *common, "-f", "logs"])
    assert len(built) == 2
    for policy_kwargs in built:
        assert policy_kwargs["action_distribution"] == "beta" and "net_arch" in policy_kwargs


@pytest.mark.parametrize("algo", ["bco", "gail", "airl"])
@pytest.mark.parametrize("flag", ["-optimize", "--optimize-hyperparameters", "--optimize"])
def test_optimize_without_a_search_space_is_refused(algo, flag, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--algo", algo, "--env", "CartPole-v1", flag])
    assert f"-optimize has no search space for --algo {algo}" in capsys.readouterr().err


def test_train_env_kwargs_string_parsed_as_data(tmp_path, monkeypatch, capsys):
    """``env_kwargs: "dict(...)"`` (as load_zoo_entry reads it): rl_zoo3 passed the string on to gym.make (TypeError)."""
    import sb3_cherry.resume as resume

    made = []
    monkeypatch.setattr(resume.SafeExperimentManager, "create_envs", _recording_create_envs(made), raising=False)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    entry = {"n_timesteps": 64, "policy": "MlpPolicy", "n_steps": 32, "env_kwargs": "dict(sutton_barto_reward=True)"}
    config = _write(tmp_path, entry)
    main(["train", "--algo", "ppo_rollback", "-c", str(config), "-f", str(tmp_path / "logs"), "--eval-freq", "-1"])
    assert made and all(kwargs == {"sutton_barto_reward": True} for kwargs in made)
    # evaluated on the env it was trained on (Sutton & Barto's reward: 0 per step, -1 at the fall)
    capsys.readouterr()
    summary = _evaluate_json(
        ["evaluate", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(tmp_path / "logs"), "-n", "2"], capsys
    )
    assert all(r in (-1.0, 0.0) for r in summary["returns"])


def _recording_create_envs(made):
    from rl_zoo3.exp_manager import ExperimentManager

    def create_envs(self, n_envs, eval_env=False, no_log=False):
        made.append(self.eval_env_kwargs if eval_env else self.env_kwargs)
        return ExperimentManager.create_envs(self, n_envs, eval_env, no_log)

    return create_envs


def test_zoo_linear_schedules_stop_at_zero_when_the_last_rollout_overshoots(tmp_path, monkeypatch):
    """rl_zoo3's ``lin_<v>`` is progress_remaining * v, negative once the last rollout passes n_timesteps (here 2 x 64
    steps for -n 100: progress -0.28): the last update ran with a negative learning rate and clip range."""
    import sb3_cherry

    models = []
    learn = sb3_cherry.PPORollback.learn

    def learn_with_record(self, *args, **kwargs):
        models.append(self)
        return learn(self, *args, **kwargs)

    monkeypatch.setattr(sb3_cherry.PPORollback, "learn", learn_with_record)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    entry = {"n_timesteps": 100, "policy": "MlpPolicy", "n_steps": 64, "batch_size": 64, "n_epochs": 1}
    config = _write(tmp_path, {**entry, "learning_rate": "lin_0.001", "clip_range": "lin_0.2"})
    main(["train", "--algo", "ppo_rollback", "-c", str(config), "-f", str(tmp_path / "logs"), "--eval-freq", "-1"])
    (model,) = models
    assert model.num_timesteps == 128
    # the progress of the last update, as SB3 computes it after the last rollout
    progress = 1.0 - model.num_timesteps / model._total_timesteps
    assert progress < 0
    # the values of the last update: 0 (rl_zoo3's SimpleLinearSchedule gave -0.00028 and -0.056)
    assert model.lr_schedule(progress) == 0.0 and model.clip_range(progress) == 0.0
    assert model.policy.optimizer.param_groups[0]["lr"] == 0.0
    assert model.lr_schedule(1.0) == 0.001 and abs(model.lr_schedule(0.5) - 0.0005) < 1e-12


def test_params_items_end_at_any_option():
    """The -params items ended at an option without a colon only: '--env-kwargs=g:9.81' or '--storage=sqlite:///x.db'
    after them was read as a hyperparameter ("unknown hyperparameter '--env-kwargs=g'")."""
    from sb3_cherry.cli import _hyperparams_overrides

    argv = ["-params", "n_steps:32", "ent_coef:-0.1", "--env-kwargs=g:9.81", "--storage=sqlite:///x.db", "-n", "64"]
    assert _hyperparams_overrides(argv) == {"n_steps": 32, "ent_coef": -0.1}
    assert _hyperparams_overrides(["--env-kwargs", "g:9.81", "-params", "n_steps:32"], ("--env-kwargs",)) == {"g": 9.81}
    assert _hyperparams_overrides(["-params", "gamma:0.9", "-f:x"]) == {"gamma": 0.9}


def _built_models(monkeypatch, algo_class=None):
    """The models ``sb3-cherry train`` builds, recorded instead of trained."""
    from sb3_cherry import PPORollback

    models = []
    monkeypatch.setattr(algo_class or PPORollback, "learn", lambda self, *args, **kwargs: models.append(self) or self)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    return models


def test_params_then_an_equals_option_trains(tmp_path, monkeypatch):
    models = _built_models(monkeypatch)
    main(["train", "--algo", "ppo_rollback", "--env", "Pendulum-v1", "-f", str(tmp_path / "logs"), "-n", "64",
          "--eval-freq", "-1", "-params", "n_steps:32", "--env-kwargs=g:9.81"])  # fmt: skip
    (model,) = models
    assert model.n_steps == 32 and model.env.envs[0].unwrapped.g == 9.81  # (Pendulum's default g: 10.0)


@pytest.fixture
def gym_package(tmp_path, monkeypatch):
    """A module registering two envs when imported (as --gym-packages imports it): a CartPole and an 'Atari' one
    (rl_zoo3 takes an env whose entry point names AtariEnv for an Atari env)."""
    name = "sb3_cherry_test_gym_package"
    (tmp_path / f"{name}.py").write_text(
        "import gymnasium as gym\n"
        "from gymnasium.envs.classic_control.cartpole import CartPoleEnv\n\n\n"
        "class AtariEnv(CartPoleEnv):\n"
        "    pass\n\n\n"
        f"gym.register('TestPole-v0', entry_point='{name}:CartPoleEnv', max_episode_steps=50)\n"
        f"gym.register('TestPong-v0', entry_point='{name}:AtariEnv', max_episode_steps=50)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)
    for env_id in ("TestPole-v0", "TestPong-v0"):
        gym.envs.registry.pop(env_id, None)


def test_gym_packages_are_imported_before_the_config_check(gym_package, tmp_path, monkeypatch):
    """The check of an action_distribution makes the env: an env of --gym-packages was unknown to it (rl_zoo3 imports
    the packages later), and the entry was refused ("Environment `TestPole` doesn't exist")."""
    models = _built_models(monkeypatch)
    entry = {"n_timesteps": 64, "policy": "MlpPolicy", "n_steps": 32, "policy_kwargs": "dict(action_distribution='bernoulli')"}
    config = tmp_path / "conf.yml"
    config.write_text(yaml.safe_dump({"TestPole-v0": entry}))
    argv = ["train", "--algo", "ppo_rollback", "--env", "TestPole-v0", "-c", str(config), "-f", str(tmp_path / "logs")]
    with pytest.raises(SystemExit):  # (checked against the env: Discrete actions take no Bernoulli distribution)
        main([*argv, "--eval-freq", "-1", "--gym-packages", gym_package])
    config.write_text(yaml.safe_dump({"TestPole-v0": {**entry, "policy_kwargs": "dict(action_distribution='categorical')"}}))
    main([*argv, "--eval-freq", "-1", "--gym-packages", gym_package])
    (model,) = models
    assert type(model.policy.action_dist).__name__ == "CategoricalDistribution"
    assert model.env.envs[0].unwrapped.spec.id == "TestPole-v0"


def test_atari_entry_is_read_for_atari_envs(gym_package, tmp_path, monkeypatch, capsys):
    """rl_zoo3 reads an Atari env's entry, then 'atari', then 'default'; the check read the env's, then 'default'."""
    import importlib

    from sb3_cherry.common.zoo_config import load_zoo_entry

    importlib.import_module(gym_package)
    atari = {"n_timesteps": 64, "policy": "MlpPolicy", "n_steps": 16, "n_envs": 1}
    default = {"n_timesteps": 128, "policy": "MlpPolicy", "n_steps": 32, "n_envs": 2}
    config = tmp_path / "conf.yml"
    config.write_text(yaml.safe_dump({"atari": atari, "default": default}))
    assert validate_config(config, "ppo_rollback", "TestPong-v0") == atari
    assert validate_config(config, "ppo_rollback", "TestPole-v0") == default
    zoo_entry = load_zoo_entry("ppo_rollback", "TestPong-v0", config)
    assert (zoo_entry.n_timesteps, zoo_entry.n_envs, zoo_entry.model_kwargs["n_steps"]) == (64, 1, 16)
    config.write_text(yaml.safe_dump({"default": default}))  # rl_zoo3 does not read 'default' for an Atari env
    with pytest.raises(ValueError, match="an Atari env, and no 'atari' entry"):
        validate_config(config, "ppo_rollback", "TestPong-v0")
    # the command line: an 'atari' entry alone was refused ("no entry for env 'TestPong-v0' (and no 'default')")
    config.write_text(yaml.safe_dump({"atari": atari}))
    models = _built_models(monkeypatch)
    main(["train", "--algo", "ppo_rollback", "--env", "TestPong-v0", "-c", str(config), "-f", str(tmp_path / "logs"),
          "--eval-freq", "-1", "--gym-packages", gym_package])  # fmt: skip
    (model,) = models
    assert (model.n_steps, model.n_envs) == (16, 1)


def _study_with_a_trial(path, study_name):
    """An optuna study (rl_zoo3's journal storage) whose trials 0 and 1 sampled net_arch 'tiny', activation 'elu'."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize")
    params = {
        "one_minus_gamma": 0.01,
        "one_minus_gae_lambda": 0.05,
        "net_arch": "tiny",
        "activation_fn": "elu",
        "trust_region": "ratio",
    }
    distributions = {
        "one_minus_gamma": FloatDistribution(0.0001, 0.03, log=True),
        "one_minus_gae_lambda": FloatDistribution(0.0001, 0.1, log=True),
        "net_arch": CategoricalDistribution(["tiny", "small"]),
        "activation_fn": CategoricalDistribution(["tanh", "elu"]),
        "trust_region": CategoricalDistribution(["ratio", "kl"]),
    }
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=1.0))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "TestPong-v0"])
def test_retrained_trial_keeps_its_sampled_policy_kwargs_with_params(gym_package, tmp_path, monkeypatch, env_id):
    """--trial-id with -params policy_kwargs: rl_zoo3 applies -params after the trial, so the trial's sampled net_arch
    and activation_fn were replaced (the search merged them over the same -params); an Atari env's trial merges them
    into the 'atari' entry's."""
    from torch import nn

    models = _built_models(monkeypatch)
    _study_with_a_trial(tmp_path / "study.log", "s")
    config = tmp_path / "conf.yml"
    entry = {"n_timesteps": 64, "policy": "MlpPolicy", "n_steps": 32, "policy_kwargs": "dict(log_std_init=-1.0)"}
    config.write_text(yaml.safe_dump({"atari" if env_id == "TestPong-v0" else env_id: entry}))
    argv = ["train", "--algo", "ppo_rollback", "--env", env_id, "-c", str(config), "-f", str(tmp_path / "logs"), "-n", "64"]
    argv += ["--eval-freq", "-1", "--gym-packages", gym_package, "--storage", str(tmp_path / "study.log")]
    main([*argv, "--study-name", "s", "--trial-id", "1", "-params", "policy_kwargs:dict(ortho_init=False)"])
    main([*argv, "--study-name", "s", "--trial-id", "1"])
    with_params, without = (model.policy for model in models)
    for policy in (with_params, without):
        assert policy.net_arch == {"pi": [64], "vf": [64]} and policy.activation_fn is nn.ELU
    assert with_params.ortho_init is False  # -params' own key kept (and the entry's replaced, as rl_zoo3 does)
    assert without.ortho_init is True and without.log_std_init == -1.0  # the entry's merged under the trial's


# ----------------------------------------------------------------------------------- evaluating what was trained
def _eval_args(argv):
    import argparse

    from sb3_cherry.cli import _add_model_args

    parser = argparse.ArgumentParser()
    _add_model_args(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def normalized_run(tmp_path_factory):
    """Pendulum with VecNormalize, a checkpoint every 256 steps and a best model (in a subprocess, as a user runs it)."""
    folder = tmp_path_factory.mktemp("logs_norm")
    cmd = [sys.executable, "-m", "sb3_cherry", "train", "--algo", "ppo_rollback", "--env", "Pendulum-v1", "-f", str(folder)]
    cmd += ["-n", "1024", "--seed", "0", "--save-freq", "256", "--eval-freq", "256", "--eval-episodes", "1"]
    cmd += ["-params", "n_envs:1", "n_steps:128", "batch_size:64", "n_epochs:1", "normalize:True"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    return folder


def test_checkpoints_and_best_model_are_evaluated_with_their_own_statistics(normalized_run, capsys):
    # rl_zoo3 keeps only the end-of-training vecnormalize.pkl: --load-checkpoint / --load-best evaluated an earlier
    # model with it (-1788 instead of -1716 for a Pendulum checkpoint in the review)
    from stable_baselines3.common.vec_env import unwrap_vec_normalize

    from sb3_cherry.cli import _load_for_eval

    run = normalized_run / "ppo_rollback" / "Pendulum-v1_1"
    assert (run / "rl_model_vecnormalize_256_steps.pkl").is_file() and (run / "best_model_vecnormalize.pkl").is_file()
    base = ["--algo", "ppo_rollback", "--env", "Pendulum-v1", "-f", str(normalized_run)]
    _, final_env = _load_for_eval(_eval_args(base))
    final_count = unwrap_vec_normalize(final_env).obs_rms.count
    _, env = _load_for_eval(_eval_args([*base, "--load-checkpoint", "256"]))
    count = unwrap_vec_normalize(env).obs_rms.count
    assert count < 300 < final_count  # the statistics after 256 steps, not after 1024
    _, env = _load_for_eval(_eval_args([*base, "--load-best"]))
    assert unwrap_vec_normalize(env).obs_rms.count <= final_count
    (run / "rl_model_vecnormalize_512_steps.pkl").unlink()  # a run of an older version: said, not hidden
    _load_for_eval(_eval_args([*base, "--load-checkpoint", "512"]))
    assert "end-of-training VecNormalize statistics" in capsys.readouterr().err


def test_enjoy_plays_checkpoints_and_best_model_with_their_own_statistics(normalized_run, monkeypatch):
    # enjoy went through rl_zoo3, which loads the end-of-training vecnormalize.pkl for every model
    import rl_zoo3.enjoy
    from stable_baselines3.common.vec_env import unwrap_vec_normalize

    from sb3_cherry.cli import main

    envs = []
    create_test_env = rl_zoo3.enjoy.create_test_env

    def spy(*args, **kwargs):
        envs.append(create_test_env(*args, **kwargs))
        return envs[-1]

    monkeypatch.setattr(rl_zoo3.enjoy, "create_test_env", spy)
    base = ["enjoy", "--algo", "ppo_rollback", "--env", "Pendulum-v1", "-f", str(normalized_run), "--no-render", "-n", "3"]
    for extra in ([], ["--load-checkpoint", "256"], ["--load-best"]):
        main([*base, *extra])
    final, checkpoint, best = (unwrap_vec_normalize(env).obs_rms.count for env in envs)
    assert checkpoint < 300 < final and best <= final
    assert rl_zoo3.enjoy.create_test_env is spy  # sb3_cherry's patch was undone


def test_seed_decides_stochastic_actions_too(normalized_run):
    # loading re-seeded torch with the training seed: every --seed sampled the same --stochastic actions
    from sb3_cherry.cli import _load_for_eval

    base = ["--algo", "ppo_rollback", "--env", "Pendulum-v1", "-f", str(normalized_run)]
    obs = np.zeros((1, 3), np.float32)
    samples = {}
    for seed in (1, 2, 1):
        model, _ = _load_for_eval(_eval_args([*base, "--seed", str(seed)]))
        samples.setdefault(seed, []).append(np.concatenate([model.predict(obs, deterministic=False)[0] for _ in range(5)]))
    np.testing.assert_array_equal(samples[1][0], samples[1][1])
    assert not np.array_equal(samples[1][0], samples[2][0])


def test_model_outside_its_run_folder_says_it_has_no_statistics(normalized_run, tmp_path, capsys):
    import shutil

    from sb3_cherry.cli import _load_for_eval

    copy = tmp_path / "model.zip"
    shutil.copy(normalized_run / "ppo_rollback" / "Pendulum-v1_1" / "Pendulum-v1.zip", copy)
    _load_for_eval(_eval_args(["--algo", "ppo_rollback", "--env", "Pendulum-v1", "--model", str(copy)]))
    assert "evaluated without the run's wrappers and VecNormalize statistics" in capsys.readouterr().err


def test_films_play_at_the_envs_speed_with_frame_skips(tmp_path):
    # one frame per agent step: with FrameSkip(2) (the CarRacing entry) the env's render_fps played them twice as fast
    from rl_zoo3.wrappers import FrameSkip
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sb3_cherry.cli import GifVideoRecorder, frame_skip

    plain = DummyVecEnv([lambda: gym.make("CartPole-v1", render_mode="rgb_array")])
    skipped = DummyVecEnv([lambda: FrameSkip(FrameSkip(gym.make("CartPole-v1", render_mode="rgb_array"), 2), 3)])
    assert (frame_skip(plain), frame_skip(skipped)) == (1, 6)
    fps = gym.make("CartPole-v1").metadata["render_fps"]
    recorder = GifVideoRecorder(skipped, str(tmp_path / "videos"), lambda step: False)
    assert recorder.frames_per_sec == fps / 6
    recorder.close()


def test_video_renders_mujoco_offscreen_without_a_display(monkeypatch):
    # MuJoCo's default GL (GLFW) needs a display: `video --env Hopper-v5` died with mujoco.FatalError on a headless
    # machine unless the user knew to set MUJOCO_GL=egl
    import sb3_cherry.cli as cli

    monkeypatch.setattr(cli.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    cli._offscreen_mujoco_rendering()
    assert os.environ["MUJOCO_GL"] == "egl"
    monkeypatch.setenv("MUJOCO_GL", "osmesa")  # the user's choice is kept
    cli._offscreen_mujoco_rendering()
    assert os.environ["MUJOCO_GL"] == "osmesa"
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setenv("DISPLAY", ":0")  # a display: MuJoCo's default works
    cli._offscreen_mujoco_rendering()
    assert "MUJOCO_GL" not in os.environ
