"""
``sb3-cherry train --stop-after`` / ``--resume``: a run in two processes gives the run of one process, and
``sb3-cherry evaluate --model`` reads run checkpoints.
"""

import copy
import csv
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch as th
import yaml
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from sb3_cherry import PPORollback
from sb3_cherry.cli import main
from sb3_cherry.common.checkpoint import save_run_checkpoint
from sb3_cherry.common.restricted_pickle import load_vec_normalize
from sb3_cherry.common.safe_config import safe_load_yaml

# linear learning-rate and clip-range schedules, VecNormalize, DummyVecEnv of 2 envs: 16 updates of 128 steps
ENTRY = {
    "normalize": True,
    "n_envs": 2,
    "n_timesteps": 2048,
    "policy": "MlpPolicy",
    "n_steps": 64,
    "batch_size": 64,
    "n_epochs": 2,
    "gamma": 0.98,
    "learning_rate": "lin_0.001",
    "clip_range": "lin_0.2",
    "rollback_alpha": 0.1,
}
RUN = ("ppo_rollback", "CartPole-v1_1")


def _train(conf, folder, *extra):
    cmd = [sys.executable, "-m", "sb3_cherry", "train", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-c", str(conf)]
    cmd += ["-f", str(folder), "--seed", "3", "--eval-freq", "256", "--eval-episodes", "2", "--log-interval", "1", *extra]
    return _run(cmd)


def _run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One uninterrupted run, and the same run in three chunks (--stop-after, --resume --stop-after, --resume), each
    in its own process."""
    root = tmp_path_factory.mktemp("resume")
    conf = root / "conf.yml"
    conf.write_text(yaml.safe_dump({"CartPole-v1": ENTRY}))
    reference = _train(conf, root / "one")
    first = _train(conf, root / "chunks", "--stop-after", "700")
    folder = root / "chunks" / RUN[0] / RUN[1]
    # an episode a killed process logged after its checkpoint: the resumed run drops it and logs its own
    with open(folder / "0.monitor.csv", "a") as file:
        file.write("999.0,999,1.0\n")
    resume = [sys.executable, "-m", "sb3_cherry", "train", "--resume", str(folder / "run_checkpoint")]
    second = _run([*resume, "--stop-after", "500"])
    third = _run([*resume[:-1], str(folder)])
    stdout = (reference, first, second, third)
    return {"root": root, "one": root / "one" / RUN[0] / RUN[1], "chunks": folder, "stdout": stdout}


def _logged_schedule(stdout):
    """``{n_updates: (learning_rate, clip_range)}`` from SB3's printed log tables."""
    schedule = {}
    for table in re.split(r"\n-{20,}\n", stdout):
        values = dict(re.findall(r"\|\s+(\w+)\s+\|\s+(\S+)\s+\|", table))
        if "n_updates" in values:
            schedule[int(values["n_updates"])] = (values["learning_rate"], values["clip_range"])
    return schedule


def _monitor_rows(folder, index):
    with open(folder / f"{index}.monitor.csv") as file:
        lines = file.readlines()[1:]  # after the "#{...}" line
    return [(row["r"], row["l"]) for row in csv.DictReader(lines)]


def test_two_chunks_equal_one_run(runs):
    one, chunks = runs["one"], runs["chunks"]
    reference, first, second, third = runs["stdout"]
    # checkpoints every 700 steps (--stop-after 700 alone: the run's period, kept on resume), at the first update
    # boundary (every 2 x 64 steps) after each multiple; a chunk stops at the first checkpoint after its --stop-after
    assert "Stopped after this chunk at 768 of 2048 steps" in first
    assert f"Continue with: sb3-cherry train --resume {chunks}" in first
    assert "Resuming" in second and "at 768 of 2048 steps" in second
    assert "Stopped after this chunk at 1408 of 2048 steps" in second and "at 1408 of 2048 steps" in third
    assert json.loads((chunks / "run_checkpoint" / "run_state.json").read_text())["num_timesteps"] == 2048
    a = PPORollback.load(one / "CartPole-v1.zip")
    b = PPORollback.load(chunks / "CartPole-v1.zip")
    assert a.num_timesteps == b.num_timesteps == 2048 and a._n_updates == b._n_updates
    assert a.policy.optimizer.param_groups[0]["lr"] == b.policy.optimizer.param_groups[0]["lr"]
    for key, value in a.policy.state_dict().items():
        assert th.equal(value, b.policy.state_dict()[key]), key
    for state_a, state_b in zip(
        a.policy.optimizer.state_dict()["state"].values(), b.policy.optimizer.state_dict()["state"].values(), strict=True
    ):
        assert all(th.equal(state_a[k], state_b[k]) for k in state_a)
    # the schedules as SB3 logged them at every update: the chunks' logs together are the uninterrupted run's
    schedule = _logged_schedule(reference)
    logged = {**_logged_schedule(first), **_logged_schedule(second), **_logged_schedule(third)}
    # (a process prints an update's values after its next rollout: a chunk's last update is not printed)
    assert len(schedule) == 15 and logged.items() <= schedule.items() and len(logged) >= len(schedule) - 2
    # VecNormalize statistics, evaluation log (the evaluation env continues its episodes), monitor files
    env = make_vec_env("CartPole-v1", n_envs=2)
    norm_a = load_vec_normalize(one / "CartPole-v1" / "vecnormalize.pkl", env)
    norm_b = load_vec_normalize(chunks / "CartPole-v1" / "vecnormalize.pkl", env)
    np.testing.assert_array_equal(norm_a.obs_rms.mean, norm_b.obs_rms.mean)
    np.testing.assert_array_equal(norm_a.ret_rms.var, norm_b.ret_rms.var)
    eval_a, eval_b = np.load(one / "evaluations.npz"), np.load(chunks / "evaluations.npz")
    assert list(eval_a["timesteps"]) == list(range(256, 2049, 256)) == list(eval_b["timesteps"])
    np.testing.assert_array_equal(eval_a["results"], eval_b["results"])
    np.testing.assert_array_equal(eval_a["ep_lengths"], eval_b["ep_lengths"])
    for index in (0, 1):
        rows = _monitor_rows(one, index)
        assert rows and rows == _monitor_rows(chunks, index)


def test_resume_of_a_complete_run(runs, capsys):
    main(["train", "--resume", str(runs["chunks"])])
    assert "the run is complete (2048 of 2048 steps)" in capsys.readouterr().out


def _error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_resume_errors(runs, tmp_path, capsys):
    assert "No run folder" in _error(["train", "--resume", str(tmp_path / "nothing")], capsys)
    err = _error(["train", "--resume", str(runs["one"])], capsys)  # trained without run checkpoints
    assert "No run checkpoint in" in err and "--run-checkpoint-freq" in err
    err = _error(["train", "--resume", str(runs["chunks"]), "--algo", "cherry_a2c"], capsys)
    assert "Algorithm mismatch" in err and "Drop --algo" in err
    assert "cannot be given with it" in _error(["train", "--resume", str(runs["chunks"]), "-n", "100"], capsys)
    # a run folder whose files disagree: args.yml names another algorithm than the checkpoint's
    mixed = tmp_path / "mixed"
    shutil.copytree(runs["chunks"], mixed)
    args_file = mixed / "CartPole-v1" / "args.yml"
    args_file.write_text(args_file.read_text().replace("ppo_rollback", "cherry_a2c"))
    assert "holds a PPORollback checkpoint" in _error(["train", "--resume", str(mixed)], capsys)
    # collection='async' cannot be checkpointed: refused before training (new run) and before loading (resume)
    conf = runs["root"] / "conf.yml"
    argv = ["train", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-c", str(conf), "-f", str(tmp_path / "logs")]
    err = _error([*argv, "--run-checkpoint-freq", "256", "-params", "collection:'async'"], capsys)
    assert "collection='async'" in err and "collection:'sync'" in err
    assert not (tmp_path / "logs").exists()
    shutil.copytree(runs["chunks"], tmp_path / "async")
    config = tmp_path / "async" / "CartPole-v1" / "config.yml"
    config.write_text(yaml.safe_dump({**safe_load_yaml(config), "collection": "async"}))
    assert "collection='async'" in _error(["train", "--resume", str(tmp_path / "async")], capsys)
    assert "must be at least 1" in _error([*argv, "--stop-after", "0"], capsys)


def _json(out):
    """The JSON summary that ``evaluate --json -`` prints (alone on stdout)."""
    return json.loads(out)


def test_evaluate_run_checkpoint_as_the_run_folder(runs, capsys):
    """The run's final checkpoint evaluates as its final model with rl_zoo3's vecnormalize.pkl."""
    base = ["evaluate", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-n", "3", "--json", "-"]
    main([*base, "-f", str(runs["chunks"].parents[1])])
    from_folder = _json(capsys.readouterr().out)
    main([*base, "--model", str(runs["chunks"])])
    from_checkpoint = _json(capsys.readouterr().out)
    assert from_checkpoint["returns"] == from_folder["returns"]


def test_evaluate_standalone_checkpoint(tmp_path, capsys):
    """A checkpoint as benchmarks/learning.py writes it (no run folder): wrappers from the zoo entry given by -c."""
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=1), gamma=0.98)
    model = PPORollback("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=2, seed=1)
    model.learn(512)
    folder = save_run_checkpoint(model, tmp_path / "CartPole-v1_ppo_rollback_zoo_1")
    conf = tmp_path / "conf.yml"
    conf.write_text(yaml.safe_dump({"CartPole-v1": ENTRY}))
    base = ["evaluate", "--algo", "ppo_rollback", "--env", "CartPole-v1", "--model", str(folder), "-n", "4"]
    main([*base, "-c", str(conf), "--fail-on-termination", "--json", "-"])
    summary = _json(capsys.readouterr().out)
    # reference built by hand: the training statistics, frozen, rewards not normalised
    eval_env = VecNormalize(make_vec_env("CartPole-v1", n_envs=1, seed=0), training=False, norm_reward=False)
    eval_env.obs_rms = copy.deepcopy(env.obs_rms)
    returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=4, deterministic=True, return_episode_rewards=True)
    assert summary["returns"] == [float(r) for r in returns]
    assert summary["n_failed"] == sum(r < 500 for r in returns)
    # the shipped CartPole-v1 entry does not normalise: evaluating with it would feed raw observations
    err = _error(base, capsys)
    assert "normalised observations" in err and "normalize: False" in err
    assert "pass a model .zip" in _error([*base[:-3], str(tmp_path), "-n", "1"], capsys)


def test_run_with_a_class_in_params_resumes_and_evaluates(tmp_path, capsys):
    # -params policy_kwargs:"dict(activation_fn=nn.ReLU)" (accepted by the -params check): rl_zoo3 writes the class
    # into config.yml as a !!python/name tag, which the safe loader refused, so --resume and evaluate failed on the
    # run folder sb3-cherry itself wrote; an allow-listed class is read back (by its import path, nothing imported)
    conf = tmp_path / "conf.yml"
    conf.write_text(yaml.safe_dump({"CartPole-v1": {**ENTRY, "n_timesteps": 256, "normalize": False}}))
    _train(conf, tmp_path, "--stop-after", "128", "-params", "policy_kwargs:dict(activation_fn=nn.ReLU)")
    folder = tmp_path / RUN[0] / RUN[1]
    assert "!!python/name:torch.nn.modules.activation.ReLU" in (folder / "CartPole-v1" / "config.yml").read_text()
    _run([sys.executable, "-m", "sb3_cherry", "train", "--resume", str(folder)])
    model = PPORollback.load(folder / "CartPole-v1.zip")
    assert model.num_timesteps == 256 and model.policy.activation_fn is th.nn.ReLU
    main(["evaluate", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-f", str(tmp_path), "-n", "1"])
    assert "mean return" in capsys.readouterr().out


def test_resume_writes_tensorboard_logs_where_the_command_says(tmp_path):
    # args.yml's tensorboard_log chose where --resume wrote event files, outside the run folder; now only -tb does
    conf = tmp_path / "conf.yml"
    conf.write_text(yaml.safe_dump({"CartPole-v1": {**ENTRY, "n_timesteps": 512, "normalize": False}}))
    saved_tb, given_tb = tmp_path / "saved_tb", tmp_path / "given_tb"
    _train(conf, tmp_path / "logs", "--stop-after", "128", "-tb", str(saved_tb))
    before = sorted(saved_tb.rglob("events.*"))
    folder = tmp_path / "logs" / RUN[0] / RUN[1]
    resume = [sys.executable, "-m", "sb3_cherry", "train", "--resume", str(folder)]
    out = _run([*resume, "--stop-after", "64"])
    assert f"pass -tb {saved_tb} with --resume" in out
    assert before and sorted(saved_tb.rglob("events.*")) == before  # nothing written there
    _run([*resume, "-tb", str(given_tb)])
    assert list(given_tb.rglob("events.*"))


def test_dict_observations_with_normalize_checkpoint_and_resume(tmp_path):
    # VecNormalize of Dict observations keeps their spaces (obs_spaces): the first run checkpoint crashed training
    base = [sys.executable, "-m", "sb3_cherry", "train", "--algo", "ppo_rollback", "--env", "sb3_cherry/DictReach-v0"]
    params = ["-params", "normalize:dict(norm_obs_keys=['position'])", "n_steps:64", "n_epochs:1"]
    _run([*base, "-n", "512", "--run-checkpoint-freq", "256", "--stop-after", "256", "-f", str(tmp_path), *params])
    folder = tmp_path / "ppo_rollback" / "sb3_cherry-DictReach-v0_1"
    _run([sys.executable, "-m", "sb3_cherry", "train", "--resume", str(folder)])
    assert PPORollback.load(folder / "sb3_cherry-DictReach-v0.zip").num_timesteps == 512


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A run folder stopped after its first run checkpoint (without normalisation: one short process)."""
    root = tmp_path_factory.mktemp("small")
    conf = root / "conf.yml"
    conf.write_text(yaml.safe_dump({"CartPole-v1": {**ENTRY, "n_timesteps": 256, "normalize": False}}))
    _train(conf, root, "--stop-after", "128")
    return root / RUN[0] / RUN[1]


@pytest.mark.parametrize(
    "field, value",
    [
        ("vec_env", "bogus"),
        ("eval_episodes", "abc"),
        ("env_kwargs", [1, 2]),
        ("n_eval_envs", 0),
        ("seed", True),
        ("num_threads", "2 --gym-packages os"),
    ],
)
def test_resume_checks_args_yml(small_run, tmp_path, capsys, field, value):
    # args.yml's fields went to rl_zoo3 unchecked: KeyError, TypeError, IndexError tracebacks
    folder = tmp_path / "run"
    shutil.copytree(small_run, folder)
    args_file = folder / "CartPole-v1" / "args.yml"
    args_file.write_text(yaml.safe_dump({**safe_load_yaml(args_file), field: value}))
    err = _error(["train", "--resume", str(folder)], capsys)
    assert f"args.yml: {field} is {value!r}, not" in err and "Traceback" not in err


@pytest.mark.parametrize("content", ["[]", '{"format_version": 1', '{"format_version": 1, "algorithm": "PPORollback"}'])
def test_resume_of_a_crafted_run_state_is_one_line(small_run, tmp_path, capsys, content):
    folder = tmp_path / "run"
    shutil.copytree(small_run, folder)
    (folder / "run_checkpoint" / "run_state.json").write_text(content)
    err = _error(["train", "--resume", str(folder)], capsys)
    assert "run_state.json" in err and "damaged or crafted" in err and "Traceback" not in err
