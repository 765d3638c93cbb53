"""The benchmark scripts' model construction and README table (the runs themselves are in benchmarks/)."""

import csv

import pytest
from stable_baselines3 import PPO

from benchmarks.learning import apply_overrides, build_model
from benchmarks.table import RESULTS, command, rows
from sb3_cherry import PPORollback


def test_overrides():
    kwargs = apply_overrides({"policy_kwargs": {"net_arch": [8]}}, ["n_step=8", "policy_kwargs.action_distribution=beta"])
    assert kwargs == {"n_step": 8, "policy_kwargs": {"net_arch": [8], "action_distribution": "beta"}}
    with pytest.raises(ValueError, match="not a dict"):
        apply_overrides({"gamma": 0.9}, ["gamma.x=1"])


def test_ppo_baseline_of_a_beta_entry():
    beta = ["use_sde=false", "policy_kwargs.action_distribution=beta"]
    model, _ = build_model("ppo_rollback", "Pendulum-v1", 0, beta)
    assert isinstance(model, PPORollback) and type(model.policy.action_dist).__name__ == "BetaDistribution"
    with pytest.raises(ValueError, match="action_distribution=normal"):
        build_model("ppo", "Pendulum-v1", 0, beta)
    # the Gaussian baseline: SB3's PPO, same entry, rollback keys dropped
    model, n_timesteps = build_model("ppo", "Pendulum-v1", 0, [*beta, "policy_kwargs.action_distribution=normal"])
    assert type(model) is PPO and type(model.policy.action_dist).__name__ == "DiagGaussianDistribution"
    assert n_timesteps == 200_000 and not hasattr(model, "rollback_alpha")


def test_throughput_zoo_baseline_takes_a_number_for_a_scheduled_ent_coef():
    from benchmarks.throughput import cases, make_env

    case = next(c for c in cases() if c.name == "zoo_bipedal")
    env = make_env(case)
    try:
        ours, baseline = case.ours(env), case.baseline(env)
        assert isinstance(ours.ent_coef, dict)  # the entry's schedule, 0.005 -> 0 over the first 30%
        assert type(baseline) is PPO and baseline.ent_coef == pytest.approx(0.005)
    finally:
        env.close()


def test_throughput_sides_step_their_libraries_vec_envs():
    """The zoo cases' sb3_cherry side steps CherryDummyVecEnv and normalises with CherryVecNormalize (as sb3-cherry
    train), SB3's side SB3's DummyVecEnv / VecNormalize; the *_sb3_stack cases give both SB3's."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from benchmarks.throughput import cases, side_env
    from sb3_cherry.common.vec_env import CherryDummyVecEnv, CherryVecNormalize

    by_name = {c.name: c for c in cases()}
    expected = {
        "zoo_hopper": (CherryVecNormalize, CherryDummyVecEnv),
        "zoo_hopper_sb3_stack": (VecNormalize, DummyVecEnv),
        "zoo_cartpole": (CherryDummyVecEnv, CherryDummyVecEnv),
        "zoo_cartpole_sb3_stack": (DummyVecEnv, DummyVecEnv),
    }
    for name, (top, base) in expected.items():
        ours, sb3 = side_env(by_name[name], "ours"), side_env(by_name[name], "sb3")
        assert type(ours) is top and type(ours.unwrapped) is base
        assert type(sb3) in (VecNormalize, DummyVecEnv) and type(sb3.unwrapped) is DummyVecEnv
        ours.close(), sb3.close()


@pytest.mark.parametrize("in_main", [False, True])
def test_worker_split_vec_env_returns_what_one_process_returns(in_main):
    """benchmarks/worker_split.py's harness (envs stepped in worker processes) against SB3's DummyVecEnv: the same
    observations, rewards, dones and infos (episode ends, terminal observations, auto-resets), and the same first
    observations after a reseed; so a model trained on it computes the same floats."""
    import numpy as np
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    from benchmarks.worker_split import WorkerSplitVecEnv

    split = make_vec_env("CartPole-v1", n_envs=5, seed=3, vec_env_cls=lambda fns: WorkerSplitVecEnv(fns, 2, in_main))
    single = make_vec_env("CartPole-v1", n_envs=5, seed=3, vec_env_cls=DummyVecEnv)
    try:
        groups = [split.main_slice, *split.slices] if in_main else split.slices
        assert [s.stop - s.start for s in groups] == ([1, 2, 2] if in_main else [2, 3])
        np.testing.assert_array_equal(split.reset(), single.reset())
        rng = np.random.default_rng(0)
        ends = 0
        for _ in range(120):
            actions = rng.integers(0, 2, size=5)
            (obs, rewards, dones, infos), expected = split.step(actions), single.step(actions)
            for got, want in zip((obs, rewards, dones), expected[:3], strict=True):
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(got, want)
            for got, want in zip(infos, expected[3], strict=True):
                assert set(got) == set(want)
                if "terminal_observation" in want:
                    np.testing.assert_array_equal(got["terminal_observation"], want["terminal_observation"])
                    assert got["episode"]["r"] == want["episode"]["r"] and got["episode"]["l"] == want["episode"]["l"]
                    ends += 1
        assert ends >= 5  # episodes ended and the envs were reset inside the workers
        split.seed(11), single.seed(11)
        np.testing.assert_array_equal(split.reset(), single.reset())
        with pytest.raises(AttributeError, match="benchmark harness"):
            split.get_attr("spec")
    finally:
        split.close(), single.close()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_floor_update_trains_like_sb3_ppo(env_id, monkeypatch):
    """
    The floor's bare update (benchmarks/floor.py) is SB3's PPO update: same parameters after it, same minibatches;
    and every one of its Adam steps is a flat step (what the floor claims to time).
    """
    import numpy as np
    import torch as th

    from benchmarks.floor import Floor
    from benchmarks.throughput import Case, make_env
    from sb3_cherry.common import flat_adam

    flat_steps = []
    flat_step = flat_adam._FlatGroup.step
    monkeypatch.setattr(flat_adam._FlatGroup, "step", lambda self: flat_steps.append(1) or flat_step(self))

    # a large step and a narrow clip range, so that the clipping and the entropy term act on the result
    kwargs = dict(
        n_steps=32, batch_size=16, n_epochs=4, ent_coef=0.1, learning_rate=3e-3, clip_range=0.1, seed=0, device="cpu"
    )

    def build(env):
        return PPO("MlpPolicy", env, **kwargs)

    case = Case("floor_test", env_id, 2, 64, build, build)
    model = build(make_env(case))
    model.learn(64)  # one rollout and one update: the buffer and the optimizer state the floor starts from
    floor = Floor(model, case)
    before = [p.detach().clone() for p in floor.params]
    np.random.seed(1)
    floor.update()
    np.random.seed(1)
    model.train()  # SB3's update on the same (already flattened) buffer, from the same weights and Adam state
    ours = [p.detach() for p in floor.params]
    sb3 = [p.detach() for p in model.policy.parameters() if p.requires_grad]
    assert len(ours) == len(sb3)
    for a, b in zip(ours, sb3, strict=True):
        assert th.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not any(th.equal(a, b) for a, b in zip(ours, before, strict=True))  # every parameter moved
    assert len(flat_steps) == kwargs["n_epochs"] * (2 * kwargs["n_steps"] // kwargs["batch_size"])  # one group


def test_every_summary_row_has_a_command():
    with open(RESULTS / "summary.csv", newline="") as file:
        summary = list(csv.DictReader(file))
    assert summary
    for row in summary:
        assert command(row["env"], row["algo"], row["variant"]) != "—", row
    assert len(rows()) == len(summary) + 2


def test_learning_runs_in_resumable_chunks(tmp_path):
    from benchmarks.learning import main

    common = ["--env", "CartPole-v1", "--algo", "ppo_rollback", "--timesteps", "768", "--eval-freq", "256"]
    common += ["--eval-episodes", "2"]
    main([*common, "--results", str(tmp_path / "one")])
    chunked = [*common, "--results", str(tmp_path / "chunks"), "--checkpoint-dir", str(tmp_path / "ckpt")]
    main([*chunked, "--chunk-steps", "256"])  # stops after the first chunk, with a checkpoint
    assert (tmp_path / "ckpt" / "CartPole-v1_ppo_rollback_zoo_0").is_dir()
    # a process killed after its checkpoint had already appended a later evaluation: that row is measured again
    with open(tmp_path / "chunks" / "CartPole-v1.csv", "a", newline="") as file:
        file.write("CartPole-v1,ppo_rollback,zoo,0,384,-1.0,0.0,0.0\n")
    main([*chunked, "--chunk-steps", "256"])
    main([*chunked, "--chunk-steps", "256"])  # reaches the budget and deletes the checkpoint
    assert not (tmp_path / "ckpt" / "CartPole-v1_ppo_rollback_zoo_0").exists()
    main([*chunked, "--chunk-steps", "256"])  # finished: skipped, no new rows

    def read(folder):
        with open(tmp_path / folder / "CartPole-v1.csv", newline="") as file:
            return [(row["timesteps"], row["mean_return"]) for row in csv.DictReader(file)]

    assert read("chunks") == read("one")
    assert [t for t, _ in read("one")] == ["0", "256", "512", "768"]
    # without checkpoints too: the same run named again (two run_*.sh scripts) adds no duplicate rows, and the rows
    # of an attempt that did not finish are replaced
    main([*common, "--results", str(tmp_path / "one")])
    assert [t for t, _ in read("one")] == ["0", "256", "512", "768"]
    with open(tmp_path / "one" / "CartPole-v1.csv", "a", newline="") as file:
        file.write("CartPole-v1,ppo_rollback,other,0,256,-1.0,0.0,0.0\n")
    main([*common, "--results", str(tmp_path / "one"), "--variant", "other"])
    assert [t for t, _ in read("one")] == ["0", "256", "512", "768"] * 2
    assert ("256", "-1.0") not in read("one")


def test_learning_keep_final_keeps_the_final_model(tmp_path):
    from benchmarks.learning import main
    from sb3_cherry.common.checkpoint import read_run_state

    args = ["--env", "CartPole-v1", "--algo", "ppo_rollback", "--timesteps", "512", "--eval-freq", "256"]
    args += ["--eval-episodes", "2", "--results", str(tmp_path), "--checkpoint-dir", str(tmp_path / "ckpt")]
    main([*args, "--chunk-steps", "512", "--keep-final"])
    folder = tmp_path / "ckpt" / "CartPole-v1_ppo_rollback_zoo_0"
    state = read_run_state(folder, PPORollback)
    assert state["num_timesteps"] == state["total_timesteps"] == 512
    rows = (tmp_path / "CartPole-v1.csv").read_text().splitlines()
    main([*args, "--chunk-steps", "512", "--keep-final"])  # finished: skipped, no new rows, checkpoint kept
    assert (tmp_path / "CartPole-v1.csv").read_text().splitlines() == rows and folder.is_dir()


def test_hybrid_ranges_variants():
    from benchmarks.hybrid_ranges import build_model

    default, beta = build_model("default", 0), build_model("beta", 0)
    assert default.policy.action_distribution == beta.policy.action_distribution == ("categorical", ("beta",) * 3)
    assert default.n_envs == 4 and default.n_steps == 512 and default.batch_size == 256
    with pytest.warns(UserWarning, match=r"component \[1\]\[2\] Box\(0.0, 700.0"):
        normal = build_model("normal", 0)
    assert normal.policy.action_distribution == ("categorical", ("normal",) * 3)
    with pytest.raises(ValueError, match="Unknown variant"):
        build_model("gaussian", 0)


def test_env_wrapper_frame_stack_and_env_kwargs_built_as_rl_zoo3(tmp_path):
    """An entry's env_wrapper (with kwargs), env_kwargs and frame_stack: wrappers applied per env, VecNormalize, then
    VecFrameStack on top, as rl_zoo3 builds them; the evaluation env is built the same way."""
    from gymnasium.wrappers import TimeAwareObservation
    from stable_baselines3.common.vec_env import VecFrameStack, VecNormalize

    from benchmarks.learning import EnvSpec, load_entry

    config = tmp_path / "ppo_rollback.yml"
    config.write_text(
        "Pendulum-v1:\n"
        "  env_wrapper:\n"
        "    - gymnasium.wrappers.TimeAwareObservation:\n"
        "        normalize_time: true\n"
        '  env_kwargs: "dict(g=9.0)"\n'
        "  frame_stack: 3\n"
        "  normalize: true\n"
        "  n_envs: 2\n"
        "  n_timesteps: 1000\n"
        "  policy: 'MlpPolicy'\n"
        "  n_steps: 64\n"
    )
    model, _ = build_model("ppo_rollback", "Pendulum-v1", 0, [], config=config)
    env = model.get_env()
    assert isinstance(env, VecFrameStack) and isinstance(env.venv, VecNormalize)
    assert env.observation_space.shape == (3 * 4,)  # (cos, sin, velocity, time) x 3 frames
    inner = env.venv.venv.envs[0]
    assert isinstance(inner, TimeAwareObservation) and inner.unwrapped.g == 9.0
    spec = EnvSpec.of("Pendulum-v1", load_entry("ppo_rollback", "Pendulum-v1", config=config))
    eval_env = spec.stack(spec.make(1, seed=5))
    assert eval_env.observation_space == env.observation_space


def test_untrusted_env_wrapper_is_refused(tmp_path):
    from sb3_cherry.common.safe_config import UnsafeConfigError

    config = tmp_path / "ppo_rollback.yml"
    config.write_text("Pendulum-v1:\n  env_wrapper: os.system\n  n_timesteps: 1000\n  policy: 'MlpPolicy'\n")
    with pytest.raises(UnsafeConfigError, match=r"os\.system"):
        build_model("ppo_rollback", "Pendulum-v1", 0, [], config=config)


def test_slow_tests_report_parsing(tmp_path):
    # pytest's JUnit XML (xunit1) as benchmarks/slow_tests.py reads it: figures keep their types, failures their message
    from benchmarks.slow_tests import parse_report

    report = tmp_path / "report.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_bco" name="test_bco_cartpole" time="61.27"><properties>'
        '<property name="bco_return" value="500.0"/><property name="num_timesteps" value="50000"/>'
        '<property name="first_at_95_percent" value="None"/></properties></testcase>'
        '<testcase classname="tests.test_learning" name="test_hybrid_goal_learns" time="3.0">'
        '<failure message="assert 1.5 &gt;= 2.0">trace</failure></testcase>'
        '<testcase classname="tests.test_learning" name="test_x" time="1.0">'
        '<skipped type="pytest.xfail" message="seed-sensitive"/></testcase>'
        "</testsuite></testsuites>"
    )
    cases = parse_report(report)
    assert cases["tests/test_bco.py::test_bco_cartpole"] == {
        "outcome": "passed",
        "duration_s": 61.3,
        "figures": {"bco_return": 500.0, "num_timesteps": 50000, "first_at_95_percent": None},
    }
    failed = cases["tests/test_learning.py::test_hybrid_goal_learns"]
    assert failed["outcome"] == "failed" and failed["message"] == "assert 1.5 >= 2.0"
    assert cases["tests/test_learning.py::test_x"]["outcome"] == "xfailed"


def test_update_parts_checks_each_pair_and_times_it():
    """benchmarks.update_parts checks every sb3_cherry piece against its reference (equal parameters, state and draws)
    before timing it; a short run returns one time pair per piece."""
    import math

    from benchmarks.update_parts import measure

    rows = measure(calls=20)
    assert [row[0] for row in rows][:2] == ["RMSprop step", "RMSprop step"] and len(rows) == 7
    assert all(math.isfinite(ours) and math.isfinite(reference) for _, _, ours, _, reference in rows)
