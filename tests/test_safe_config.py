"""Configs are data: safe YAML (rl_zoo3's OrderedDict tag only), restricted policy_kwargs parser, CLI errors (rc 2)."""

import base64
import collections
import json
import os
import pathlib

import cloudpickle
import pytest
import yaml
from torch import nn

from sb3_cherry import PPORollback
from sb3_cherry.cli import main, validate_config
from sb3_cherry.common.safe_config import (
    UnsafeConfigError,
    parse_policy_kwargs,
    rl_zoo3_reads_safely,
    safe_load_yaml,
    saved_hyperparams,
)


def _crafted_yaml(marker: pathlib.Path) -> str:
    return f"!!python/object/apply:os.system ['touch {marker}']\n"


def test_reads_rl_zoo3_config_with_ordered_dict_tag(tmp_path):
    path = tmp_path / "config.yml"
    with open(path, "w") as file:  # exactly how rl_zoo3's ExperimentManager writes config.yml / args.yml
        pairs = [("n_steps", 32), ("policy", "MlpPolicy"), ("normalize", "dict(norm_obs=True)")]
        yaml.dump(collections.OrderedDict(pairs), file)
    assert path.read_text().startswith("!!python/object/apply:collections.OrderedDict")
    assert safe_load_yaml(path) == {"n_steps": 32, "policy": "MlpPolicy", "normalize": "dict(norm_obs=True)"}
    hyperparams, stats = saved_hyperparams(str(tmp_path), norm_reward=False, test_mode=True)
    assert hyperparams["normalize_kwargs"] == {"norm_obs": True, "norm_reward": False} and stats == str(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        "!!python/object/apply:os.system ['touch {marker}']\n",
        "a: !!python/object/apply:os.system ['touch {marker}']\n",
        "!!python/object/apply:collections.OrderedDict\n- - - a\n    - !!python/object/apply:os.system ['touch {marker}']\n",
        "!!python/object/new:os.system ['touch {marker}']\n",
    ],
)
def test_crafted_yaml_runs_nothing(tmp_path, text):
    marker = tmp_path / "marker"
    path = tmp_path / "config.yml"
    path.write_text(text.format(marker=marker))
    with pytest.raises(UnsafeConfigError, match="refused a YAML tag"):
        safe_load_yaml(path)
    assert not marker.exists()
    yaml.load(path.read_text(), Loader=yaml.UnsafeLoader)  # what rl_zoo3 does: the file is a real attack
    assert marker.exists()


def test_ordered_dict_with_a_list_key_is_a_value_error(tmp_path):
    # (a TypeError "unhashable type: 'list'" traceback before)
    path = tmp_path / "config.yml"
    path.write_text("!!python/object/apply:collections.OrderedDict [[[[1, 2], 3]]]\n")
    with pytest.raises(ValueError, match="scalar keys"):
        safe_load_yaml(path)


def test_python_name_tags_of_allowed_classes_only(tmp_path):
    # rl_zoo3 writes a class given through -params as !!python/name:<import path>: allow-listed classes are read back
    # (looked up, nothing imported); any other name is refused
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

    path = tmp_path / "config.yml"
    path.write_text(yaml.dump({"policy_kwargs": {"activation_fn": nn.ReLU, "optimizer_class": RMSpropTFLike}}))
    assert safe_load_yaml(path) == {"policy_kwargs": {"activation_fn": nn.ReLU, "optimizer_class": RMSpropTFLike}}
    for name in ("os.system", "subprocess.Popen", "torch.load", "builtins.eval"):
        path.write_text(f"a: !!python/name:{name} ''\n")
        with pytest.raises(UnsafeConfigError, match="is not one of the allowed classes"):
            safe_load_yaml(path)


def test_policy_kwargs_parser_accepts_zoo_spellings():
    from stable_baselines3.common.torch_layers import NatureCNN

    text = (
        "dict(log_std_init=-2, ortho_init=False, activation_fn=nn.ReLU, net_arch=dict(pi=[256, 256], vf=[256]),"
        " optimizer_class=th.optim.Adam, optimizer_kwargs=dict(eps=1e-5), features_extractor_class=NatureCNN)"
    )
    kwargs = parse_policy_kwargs(text)
    assert kwargs["activation_fn"] is nn.ReLU and kwargs["features_extractor_class"] is NatureCNN
    assert kwargs["net_arch"] == {"pi": [256, 256], "vf": [256]} and kwargs["log_std_init"] == -2
    assert parse_policy_kwargs("{'activation_fn': torch.nn.Tanh}") == {"activation_fn": nn.Tanh}


@pytest.mark.parametrize(
    "text",
    [
        "dict(net_arch=[__import__('os').system('touch {marker}') or 64])",
        "dict(activation_fn=nn.Module.__subclasses__)",
        "dict(a=open('{marker}', 'w'))",
        "dict(**{{'a': 1}})",
        "[x for x in ().__class__.__base__.__subclasses__()]",
        "dict(a=(lambda: __import__('os').system('touch {marker}'))())",
        "dict(net_arch=[64]); import os",
    ],
)
def test_crafted_policy_kwargs_run_nothing(tmp_path, text):
    marker = tmp_path / "marker"
    with pytest.raises(UnsafeConfigError):
        parse_policy_kwargs(text.format(marker=marker), "conf.yml [CartPole-v1] policy_kwargs")
    assert not marker.exists()


def _conf(tmp_path, text: str) -> pathlib.Path:
    path = tmp_path / "conf.yml"
    path.write_text(text)
    return path


ENTRY = "CartPole-v1:\n  n_timesteps: 1000\n  policy: MlpPolicy\n"


@pytest.mark.parametrize(
    "text, extra, message",
    [
        ("CartPole-v1:\n  n_timesteps: [1000\n", [], "YAML syntax error at line"),
        ("- CartPole-v1\n- n_timesteps: 10\n", [], "top level must map env ids"),
        (ENTRY + '  policy_kwargs: "dict(net_arhc=[64])"\n', [], r"unknown policy_kwargs key\(s\) \['net_arhc'\]"),
        (ENTRY + "  n_steps: 0\n", [], "n_steps=0 must be at least 1"),
        (ENTRY, ["-params", "rollback_alfa:0.3"], "unknown hyperparameter 'rollback_alfa'"),
        (ENTRY, ["-params", "n_steps:0"], "n_steps=0 must be at least 1"),
        (ENTRY, ["--hyperparams", "gamma:'high'"], "hyperparameter 'gamma'='high' has the wrong type"),
        (ENTRY, ["-params", "policy_kwargs:\"dict(net_arch=[__import__('os').getpid()])\""], "not allowed"),
        (ENTRY + "  policy_kwargs: \"dict(net_arch=[__import__('os').getpid()])\"\n", [], "not allowed"),
        ("CartPole-v1:\n  n_timesteps: 10\n  x: !!python/object/apply:os.getpid []\n", [], "refused a YAML tag"),
        # rl_zoo3 evals a normalize string: parsed as data instead
        (ENTRY + "  normalize: \"__import__('os').getpid() or dict()\"\n", [], "not allowed|not a literal"),
        # rl_zoo3 imports and calls callback / wrapper names with the config's arguments: classes of the right kind only
        (ENTRY + "  callback:\n  - os.system:\n      command: 'true'\n", [], "not a BaseCallback subclass"),
        (ENTRY + "  env_wrapper: stable_baselines3.common.save_util.json_to_data\n", [], "not a Wrapper subclass"),
        (ENTRY + "  vec_env_wrapper: stable_baselines3.common.vec_env.DummyVecEnv\n", [], "not a VecEnvWrapper subclass"),
        # each of these was a TypeError / AssertionError traceback from building the env or the model (exit 1), which
        # left an empty logs/<algo>/ folder
        (ENTRY + "  policy_kwargs: \"dict(net_arch='big')\"\n", [], "policy_kwargs net_arch='big' must be layer sizes"),
        (ENTRY + "  policy_kwargs:\n    net_arch: 5\n", [], "policy_kwargs net_arch=5 must be layer sizes"),
        (
            ENTRY + "  policy_kwargs:\n    activation_fn: nn.ReLU\n",
            [],
            "policy_kwargs activation_fn='nn.ReLU': a YAML mapping passes the string on",
        ),
        (ENTRY + '  normalize: "dict(norm_obss=True)"\n', [], r"unknown normalize key\(s\) \['norm_obss'\] for VecNormalize"),
        (ENTRY + "  env_kwargs:\n    foo: 1\n", [], r"\[CartPole-v1\] env_kwargs: CartPole-v1 .* takes no argument \['foo'\]"),
        (ENTRY, ["--env-kwargs", "foo:1"], r"--env-kwargs: CartPole-v1 .* takes no argument \['foo'\]"),
        (ENTRY, ["--env-kwargs=foo:1"], r"--env-kwargs: CartPole-v1 .* takes no argument \['foo'\]"),
        (ENTRY + "  clip_range_vf: -1.0\n", [], "clip_range_vf=-1.0 must be positive; for no value clipping write"),
        (ENTRY, ["-params", "clip_range:-0.2"], "clip_range=-0.2 must be positive"),
        # refused by the env / policy / algorithm while the experiment is set up (no check knew them before)
        (
            ENTRY + '  policy_kwargs: "dict(features_extractor_kwargs=dict(foo=1))"\n',
            [],
            r"conf\.yml \[CartPole-v1\]: the env / policy / algorithm could not be built from this entry \(TypeError at "
            r".*FlattenExtractor.__init__\(\) got an unexpected keyword argument 'foo'\)",
        ),
        (
            ENTRY + "  env_wrapper:\n  - gymnasium.wrappers.TimeLimit:\n      foo: 1\n",
            [],
            r"could not be built from this entry \(TypeError at .*TimeLimit.__init__\(\) got an unexpected keyword",
        ),
        (ENTRY, ["-params", "batch_size:1"], r"with -params \(AssertionError at .*`batch_size` must be greater than 1"),
    ],
)
def test_train_config_errors_are_one_line_rc2_and_leave_no_folder(tmp_path, capsys, text, extra, message):
    conf = _conf(tmp_path, text)
    logs = tmp_path / "logs"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-c", str(conf), "-f", str(logs), *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert pytest.importorskip("re").search(message, err), err
    assert not logs.exists()


def test_shipped_configs_parse_without_eval():
    for path in sorted(pathlib.Path("zoo_configs").glob("*.yml")):
        config = safe_load_yaml(path)
        if path.stem == "evaluation":
            continue
        for env_id in config:
            validate_config(path, path.stem, env_id)


@pytest.fixture
def run_folder(tmp_path):
    """An rl_zoo3 run folder (``<logs>/ppo_rollback/CartPole-v1_1``) as a user would download it."""
    exp = tmp_path / "logs" / "ppo_rollback" / "CartPole-v1_1"
    (exp / "CartPole-v1").mkdir(parents=True)
    PPORollback("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32).save(exp / "CartPole-v1.zip")
    return exp


@pytest.mark.parametrize("command", ["evaluate", "enjoy", "record"])
def test_crafted_run_folder_config_runs_nothing(run_folder, tmp_path, capsys, command):
    marker = tmp_path / "marker"
    (run_folder / "CartPole-v1" / "config.yml").write_text(_crafted_yaml(marker))
    argv = [command, "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(run_folder.parents[1])]
    tails = {
        "evaluate": ["-n", "1"],
        "enjoy": ["--no-render", "-n", "5"],
        "record": ["-n", "1", "-o", str(tmp_path / "d.npz")],
    }
    argv += tails[command]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "refused a YAML tag" in capsys.readouterr().err
    assert not marker.exists()


def test_crafted_run_folder_args_runs_nothing_in_enjoy(run_folder, tmp_path, capsys):
    marker = tmp_path / "marker"
    with open(run_folder / "CartPole-v1" / "config.yml", "w") as file:
        yaml.dump(collections.OrderedDict([("policy", "MlpPolicy"), ("n_timesteps", 100)]), file)
    (run_folder / "CartPole-v1" / "args.yml").write_text(f"env_kwargs: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SystemExit):
        main(["enjoy", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(run_folder.parents[1]), "--no-render"])
    assert "refused a YAML tag" in capsys.readouterr().err
    assert not marker.exists()
    import rl_zoo3.enjoy

    with rl_zoo3_reads_safely():
        assert rl_zoo3.enjoy.get_saved_hyperparams is saved_hyperparams
    assert rl_zoo3.enjoy.get_saved_hyperparams is not saved_hyperparams  # restored after the block


def test_evaluate_zero_episodes_is_an_error(run_folder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(run_folder.parents[1]), "-n", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "at least 1" in err


def test_crafted_vecnormalize_in_run_folder_runs_nothing(run_folder, tmp_path, capsys):
    import cloudpickle

    marker = tmp_path / "marker"

    class RunsCommand:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(run_folder / "CartPole-v1" / "config.yml", "w") as file:
        yaml.dump(collections.OrderedDict([("normalize", True), ("policy", "MlpPolicy")]), file)
    (run_folder / "CartPole-v1" / "vecnormalize.pkl").write_bytes(cloudpickle.dumps(RunsCommand()))
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(run_folder.parents[1]), "-n", "1"])
    assert exit_info.value.code == 2
    assert "posix.system, which a safe load does not resolve" in capsys.readouterr().err
    assert not marker.exists()


def test_run_folder_wrapper_outside_trusted_packages_refused(run_folder, capsys):
    with open(run_folder / "CartPole-v1" / "config.yml", "w") as file:
        yaml.dump(collections.OrderedDict([("env_wrapper", ["os.system"]), ("policy", "MlpPolicy")]), file)
    with pytest.raises(SystemExit):
        main(["evaluate", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(run_folder.parents[1]), "-n", "1"])
    assert "env_wrapper 'os.system' is not a class of" in capsys.readouterr().err


def test_run_folder_callback_must_be_a_callback_class(run_folder, tmp_path, capsys):
    """A function of a trusted package (here one that unpickles its argument) is no callback: refused, nothing runs."""
    marker = tmp_path / "unpickled"

    class Touch:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    payload = base64.b64encode(cloudpickle.dumps(Touch())).decode()
    callback = {
        "stable_baselines3.common.save_util.json_to_data": {"json_string": json.dumps({"x": {":serialized:": payload}})}
    }
    with open(run_folder / "CartPole-v1" / "config.yml", "w") as file:
        yaml.dump(collections.OrderedDict([("callback", [callback]), ("policy", "MlpPolicy")]), file)
    with pytest.raises(SystemExit):
        main(["evaluate", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(run_folder.parents[1]), "-n", "1"])
    assert "is not a BaseCallback subclass" in capsys.readouterr().err
    assert not marker.exists()


def test_resume_refuses_a_run_folder_with_links(tmp_path):
    """--resume appends to and replaces the folder's files: a link would make it write outside the folder."""
    from sb3_cherry.resume import read_run_folder

    run = tmp_path / "CartPole-v1_1"
    (run / "CartPole-v1").mkdir(parents=True)
    (run / "CartPole-v1" / "args.yml").write_text("algo: ppo_rollback\n")
    (run / "CartPole-v1" / "config.yml").write_text("policy: MlpPolicy\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (run / "0.monitor.csv").symlink_to(victim)
    with pytest.raises(ValueError, match="symbolic link"):
        read_run_folder(run)
    assert victim.read_text() == "keep me\n"


@pytest.mark.parametrize("policy", ["this.MlpPolicy", "os.system", "evil.Policy"])
def test_dotted_policy_outside_trusted_packages_is_refused(policy):
    # rl_zoo3 imports the module of a dotted policy name (get_class_by_name); aliases and trusted classes pass
    from sb3_cherry.common.safe_config import check_imported_names

    with pytest.raises(UnsafeConfigError, match="policy") as info:
        check_imported_names({"policy": policy}, "config.yml")
    # the way out names the class (sb3-cherry evaluate has no custom_objects option)
    assert f"custom_objects={{'policy_class': {policy.split('.')[-1]}}}" in str(info.value)
    for fine in ("MlpPolicy", "CnnPolicy", "sb3_cherry.ppo_rollback.policies.MlpPolicy"):
        check_imported_names({"policy": fine}, "config.yml")


def test_run_folder_rollout_buffer_class_from_trusted_packages_only():
    from sb3_cherry.common.safe_config import check_imported_names

    with pytest.raises(UnsafeConfigError, match=r"rollout_buffer_class 'evil\.Buffer' is not a class of"):
        check_imported_names({"rollout_buffer_class": "evil.Buffer"}, "config.yml")
    with pytest.raises(UnsafeConfigError, match="not a RolloutBuffer subclass"):
        check_imported_names({"rollout_buffer_class": "sb3_cherry.common.buffers.ReturnsEstimatorMixin"}, "config.yml")
    check_imported_names({"rollout_buffer_class": "sb3_cherry.common.buffers.CherryRolloutBuffer"}, "config.yml")
    # also from a config of your own (-c: trusted_only=False), whose runs evaluate / --resume would then refuse, and in
    # GAIL / AIRL's generator_kwargs (passed on as a string before: issubclass() failed in the generator)
    with pytest.raises(UnsafeConfigError, match="could not be evaluated or resumed"):
        check_imported_names({"rollout_buffer_class": "mypackage.MyBuffer"}, "my.yml", trusted_only=False)
    with pytest.raises(UnsafeConfigError, match=r"my\.yml generator_kwargs: rollout_buffer_class 'os\.system'"):
        check_imported_names({"generator_kwargs": {"rollout_buffer_class": "os.system"}}, "my.yml", trusted_only=False)
    from sb3_cherry.common.buffers import CherryRolloutBuffer
    from sb3_cherry.common.safe_config import resolve_rollout_buffer_class

    entry = {"generator_kwargs": {"rollout_buffer_class": "sb3_cherry.common.buffers.CherryRolloutBuffer", "n_steps": 8}}
    assert resolve_rollout_buffer_class(entry)["generator_kwargs"] == {
        "rollout_buffer_class": CherryRolloutBuffer,
        "n_steps": 8,
    }
    with pytest.raises(UnsafeConfigError, match="not a RolloutBuffer subclass"):  # (checks, whoever calls it)
        resolve_rollout_buffer_class({"rollout_buffer_class": "sb3_cherry.common.buffers.ReturnsEstimatorMixin"})


def test_training_errors_keep_their_traceback(tmp_path, monkeypatch):
    """Only the set-up's TypeError / AssertionError become one-line errors: one raised while training is a bug."""

    def learn(self, *args, **kwargs):
        raise TypeError("a bug while training")

    monkeypatch.setattr(PPORollback, "learn", learn)
    with pytest.raises(TypeError, match="a bug while training"):
        main(["train", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-c", str(_conf(tmp_path, ENTRY)), "-f",
              str(tmp_path / "logs"), "-n", "64", "--eval-freq", "-1"])  # fmt: skip


def test_own_wrapper_of_a_config_of_your_own_in_load_zoo_entry(tmp_path, monkeypatch):
    """load_zoo_entry / make_env_wrapper checked a config of your own as a downloaded run folder (its wrappers from
    gymnasium, stable_baselines3, ... only), refusing the config that 'sb3-cherry train -c' trains."""
    import sys

    import gymnasium as gym

    from sb3_cherry.common.zoo_config import load_zoo_entry, make_env_wrapper

    name = "sb3_cherry_test_own_wrapper"
    (tmp_path / f"{name}.py").write_text(
        "import gymnasium as gym\n\n\n"
        "class ScaleReward(gym.RewardWrapper):\n"
        "    def __init__(self, env, scale=1.0):\n"
        "        super().__init__(env)\n"
        "        self.scale = scale\n\n"
        "    def reward(self, reward):\n"
        "        return reward * self.scale\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    wrapper = [{f"{name}.ScaleReward": {"scale": 0.5}}]
    config = _conf(tmp_path, ENTRY + f"  env_wrapper:\n  - {name}.ScaleReward:\n      scale: 0.5\n")
    try:
        entry = load_zoo_entry("ppo_rollback", "CartPole-v1", config)
        assert entry.env_wrapper == wrapper
        env = make_env_wrapper(entry.env_wrapper, "conf.yml [CartPole-v1]", trusted_only=False)(gym.make("CartPole-v1"))
        env.reset(seed=0)
        assert type(env).__name__ == "ScaleReward" and env.step(0)[1] == 0.5  # CartPole's reward 1, scaled
        # by default (a file you did not write, e.g. a run folder's) only the trusted packages; a function stays refused
        with pytest.raises(UnsafeConfigError, match="is not a class of"):
            make_env_wrapper(wrapper, "config.yml")
        with pytest.raises(UnsafeConfigError, match="not a Wrapper subclass"):
            load_zoo_entry("ppo_rollback", "CartPole-v1", _conf(tmp_path, ENTRY + "  env_wrapper: os.system\n"))
    finally:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("frame_stack", [300_000_000, -1, "4", 2.5, True])
def test_run_folder_frame_stack_is_bounded(frame_stack):
    # frame_stack: 300000000 in a downloaded config.yml made evaluate allocate gigabytes in VecFrameStack
    from sb3_cherry.common.safe_config import check_imported_names

    with pytest.raises(UnsafeConfigError, match="frame_stack"):
        check_imported_names({"frame_stack": frame_stack}, "config.yml")
    check_imported_names({"frame_stack": 4}, "config.yml")
    check_imported_names({"frame_stack": frame_stack}, "my.yml", trusted_only=False)  # your own config: rl_zoo3 checks


# ------------------------------------------------------------------------------- a security review's findings
def _payload(marker: pathlib.Path) -> str:
    return f"__import__('os').system('touch {marker}')"


@pytest.mark.parametrize(
    "command, argv",
    [
        # spellings of rl_zoo3's eval'ed key:value options that the exact-flag checks missed
        ("train", ["--hyperpar", "n_steps:{p}"]),
        ("train", ["--hyperparams=n_steps:{p}"]),
        ("train", ["--env-kw", "a:{p}"]),
        ("train", ["--eval-env-kwargs", "a:{p}"]),
        ("enjoy", ["--env-kwargs", "a:{p}"]),
    ],
)
def test_rl_zoo3_options_are_parsed_not_evaluated_in_any_spelling(tmp_path, monkeypatch, capsys, command, argv):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "ran"
    argv = [a.replace("{p}", _payload(marker)) for a in argv]
    with pytest.raises(SystemExit) as info:
        main([command, "--env", "CartPole-v1", "-f", str(tmp_path / "logs"), "-n", "64", *argv])
    assert info.value.code == 2 and "is not allowed" in capsys.readouterr().err
    assert not marker.exists()


def test_sb3_algorithms_are_not_reachable_through_the_cli(run_folder, tmp_path, capsys):
    # SB3's own load unpickles: `enjoy --algo ppo` on a downloaded folder ran its pickles
    with pytest.raises(SystemExit) as info:
        main(["enjoy", "--algo", "ppo", "--env", "CartPole-v1", "-f", str(run_folder.parents[1]), "--no-render"])
    assert info.value.code == 2 and "invalid choice: 'ppo'" in capsys.readouterr().err
    import rl_zoo3.utils

    assert "ppo" in rl_zoo3.utils.ALGOS  # restored after the command


def test_a_python_config_is_refused_in_any_option_spelling(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "ran"
    config = tmp_path / "evil.py"
    config.write_text(f"import os\nos.system('touch {marker}')\nhyperparams = {{}}\n")
    with pytest.raises(SystemExit) as info:
        main(["train", "--env", "CartPole-v1", "--conf", str(config), "-f", str(tmp_path / "logs"), "-n", "64"])
    assert info.value.code == 2 and "reads YAML configs only" in capsys.readouterr().err
    assert not marker.exists()


def test_resume_accepts_sb3_cherry_algorithms_only(tmp_path):
    from sb3_cherry.resume import read_run_folder

    run = tmp_path / "ppo" / "CartPole-v1_1"
    (run / "CartPole-v1").mkdir(parents=True)
    (run / "CartPole-v1" / "args.yml").write_text("algo: ppo\nenv: CartPole-v1\n")
    (run / "CartPole-v1" / "config.yml").write_text("n_timesteps: 1000\npolicy: MlpPolicy\n")
    (run / "run_checkpoint").mkdir()
    for name in ("model.zip", "run_state.json", "run_state.npz"):
        (run / "run_checkpoint" / name).write_bytes(b"")
    with pytest.raises(ValueError, match="--algo 'ppo' is not an sb3_cherry algorithm"):
        read_run_folder(run)


def test_run_folder_classes_import_no_script_module_and_write_nowhere_else():
    import sys

    from sb3_cherry.common.safe_config import check_imported_names

    sys.modules.pop("rl_zoo3.benchmark", None)
    with pytest.raises(UnsafeConfigError, match="importing it could run code"):
        check_imported_names({"env_wrapper": "rl_zoo3.benchmark.Anything"}, "config.yml")
    assert "rl_zoo3.benchmark" not in sys.modules  # (it parses sys.argv and reads files with yaml.UnsafeLoader)
    check_imported_names({"env_wrapper": [{"rl_zoo3.wrappers.FrameSkip": {"skip": 2}}]}, "config.yml")  # still fine
    monitor = {"stable_baselines3.common.monitor.Monitor": {"filename": "/tmp/elsewhere/victim"}}
    with pytest.raises(UnsafeConfigError, match=r"file / folder argument\(s\) \['filename'\]"):
        check_imported_names({"env_wrapper": [monitor]}, "config.yml")
    callback = {"stable_baselines3.common.callbacks.CheckpointCallback": {"save_freq": 32, "save_path": "/tmp/x"}}
    with pytest.raises(UnsafeConfigError, match="save_path"):
        check_imported_names({"callback": [callback]}, "config.yml")
    check_imported_names({"env_wrapper": [monitor]}, "my_config.yml", trusted_only=False)  # your own -c config


def test_deep_nesting_is_a_one_line_error(tmp_path):
    from sb3_cherry.common.safe_config import parse_literal_string

    with pytest.raises(UnsafeConfigError, match="nested too deeply"):
        parse_literal_string("-" * 3000 + "1", "normalize")
    with pytest.raises(UnsafeConfigError, match="characters is refused"):
        parse_literal_string("[" * 60_000 + "]" * 60_000, "policy_kwargs")
    path = tmp_path / "deep.yml"
    path.write_text("a: " + "[" * 20_000 + "]" * 20_000 + "\n")
    with pytest.raises(ValueError, match="nested too deeply"):
        safe_load_yaml(path)


def test_yaml_alias_expansion_is_bounded(tmp_path):
    # ~900 bytes of nested aliases expanded to 2.3 GB when an error message printed the value
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 8):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    path = tmp_path / "laughs.yml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="anchors and aliases expand to more than"):
        safe_load_yaml(path)
    shared = tmp_path / "shared.yml"  # rl-zoo's own use of anchors stays fine
    shared.write_text("base: &base {n_envs: 8, policy: MlpPolicy}\nCartPole-v1:\n  <<: *base\n  n_timesteps: 1000\n")
    assert safe_load_yaml(shared)["CartPole-v1"] == {"n_envs": 8, "policy": "MlpPolicy", "n_timesteps": 1000}
