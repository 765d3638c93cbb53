"""Scheduled entropy coefficients: the forms ``ent_coef`` accepts, against hand formulas and SB3 driven by hand."""

import math

import numpy as np
import pytest
import torch as th
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.utils import LinearSchedule

from sb3_cherry import CherryA2C, PPORollback, RecurrentPPORollback
from sb3_cherry.common.config_schema import validate_config
from sb3_cherry.common.schedules import coefficient_schedule, scheduled_value


@pytest.mark.parametrize(
    "value, expected",
    [
        # progress_remaining: 1 (start of learn), 0.75, 0.5, 0.25, 0 (end)
        (0.01, [0.01, 0.01, 0.01, 0.01, 0.01]),
        ("lin_0.04", [0.04, 0.03, 0.02, 0.01, 0.0]),  # c * progress_remaining
        ({"start": 0.04}, [0.04, 0.03, 0.02, 0.01, 0.0]),
        # 0.08 -> 0.02 over the first half of the run, then 0.02
        ({"start": 0.08, "end": 0.02, "end_fraction": 0.5}, [0.08, 0.05, 0.02, 0.02, 0.02]),
        ({"start": 0.005, "end_fraction": 0.25}, [0.005, 0.0, 0.0, 0.0, 0.0]),
        (lambda progress: 0.1 * progress**2, [0.1, 0.05625, 0.025, 0.00625, 0.0]),
    ],
)
def test_schedule_forms_hand_values(value, expected):
    schedule = coefficient_schedule(value)
    got = [scheduled_value(schedule, p) for p in (1.0, 0.75, 0.5, 0.25, 0.0)]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "value, match",
    [
        ("exp_0.1", "lin_<value>"),
        ("lin_abc", "lin_<value>"),
        ({"end": 0.0}, "'start'"),
        ({"start": 0.1, "stop": 0.0}, "'start'"),
        ({"start": 0.1, "end_fraction": 0.0}, r"\(0, 1\]"),
        ({"start": 0.1, "end_fraction": 1.5}, r"\(0, 1\]"),
        ({"start": "0.1"}, "must be a number"),
        (math.nan, "finite"),
        ({"start": math.inf}, "finite"),
        (True, "must be a number"),
    ],
)
def test_bad_schedules_name_the_problem(value, match):
    with pytest.raises(ValueError, match=match):
        coefficient_schedule(value)
    with pytest.raises(ValueError, match="ent_coef"):
        PPORollback("MlpPolicy", "CartPole-v1", ent_coef=value, n_steps=16, batch_size=16)


@pytest.mark.parametrize("value", [np.float32(0.01), np.int64(0), -0.01, "lin_-0.1"])
def test_numbers_sb3_accepts_are_accepted(value):
    # SB3 multiplies with any real number: numpy scalars and negative coefficients (entropy minimisation) included
    expected = float(value) if not isinstance(value, str) else -0.1
    assert scheduled_value(coefficient_schedule(value), 1.0) == pytest.approx(expected)


def test_sb3_schedule_past_the_end_of_the_run_is_read_at_the_end():
    # 100 steps with rollouts of 32: the last update runs at progress_remaining 1 - 128/100 < 0, where rl_zoo3's
    # linear_schedule (p * v) would be negative; it is read at progress 0 instead
    from rl_zoo3.utils import linear_schedule

    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, ent_coef=linear_schedule(0.01))
    model.learn(100)
    assert model._current_progress_remaining < 0 and model.logger.name_to_value["train/ent_coef"] == 0.0


def test_schedule_returning_nan_stops_training():
    model = PPORollback("MlpPolicy", "CartPole-v1", ent_coef=lambda progress: math.nan, n_steps=16, batch_size=16)
    before = th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().clone()
    with pytest.raises(ValueError, match=r"ent_coef.*progress_remaining"):
        model.learn(16)
    assert th.equal(before, th.nn.utils.parameters_to_vector(model.policy.parameters()))


class _HandEntCoef(BaseCallback):
    """Sets SB3's float ``ent_coef`` before every update from a hand-written linear decay (the reference)."""

    def __init__(self, start: float, end: float, end_fraction: float, total: int):
        super().__init__()
        self.start, self.end, self.end_fraction, self.total = start, end, end_fraction, total
        self.values: list[float] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        # SB3 trains on this rollout next, with progress_remaining = 1 - num_timesteps / total_timesteps
        elapsed = self.num_timesteps / self.total
        self.model.ent_coef = self.start + (self.end - self.start) * min(1.0, elapsed / self.end_fraction)
        self.values.append(self.model.ent_coef)


def _params(model) -> np.ndarray:
    return th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().numpy()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_scheduled_ent_coef_equals_sb3_ppo_with_hand_schedule(env_id):
    # 4 updates at progress_remaining 0.75, 0.5, 0.25, 0: ent_coef 0.05, 0.02, 0.02, 0.02 (large, so that it matters)
    kwargs = dict(n_steps=64, batch_size=32, n_epochs=3, seed=5, learning_rate=3e-3)
    hand = _HandEntCoef(0.08, 0.02, 0.5, total=256)
    ppo = PPO("MlpPolicy", env_id, **kwargs).learn(256, callback=hand)
    assert hand.values == pytest.approx([0.05, 0.02, 0.02, 0.02])
    schedule = {"start": 0.08, "end": 0.02, "end_fraction": 0.5}
    ours = PPORollback("MlpPolicy", env_id, rollback_alpha=0.0, ent_coef=schedule, **kwargs).learn(256)
    np.testing.assert_allclose(_params(ours), _params(ppo), rtol=0, atol=1e-7)
    assert ours.logger.name_to_value["train/ent_coef"] == pytest.approx(0.02)
    # the test can fail: the first update's coefficient held constant moves the parameters away from the reference
    constant = PPORollback("MlpPolicy", env_id, rollback_alpha=0.0, ent_coef=0.05, **kwargs).learn(256)
    assert np.abs(_params(constant) - _params(ppo)).max() > 1e-5


def test_scheduled_ent_coef_equals_sb3_a2c_with_hand_schedule():
    hand = _HandEntCoef(0.1, 0.0, 1.0, total=200)
    a2c = A2C("MlpPolicy", "CartPole-v1", seed=3).learn(200, callback=hand)
    assert hand.values[0] == pytest.approx(0.1 * (1 - 5 / 200)) and hand.values[-1] == pytest.approx(0.0)
    ours = CherryA2C("MlpPolicy", "CartPole-v1", seed=3, ent_coef="lin_0.1").learn(200)
    np.testing.assert_allclose(_params(ours), _params(a2c), rtol=0, atol=1e-7)
    constant = CherryA2C("MlpPolicy", "CartPole-v1", seed=3, ent_coef=0.1).learn(200)
    assert np.abs(_params(constant) - _params(a2c)).max() > 1e-5


def test_constant_ent_coef_is_logged_and_unchanged():
    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, ent_coef=0.01).learn(64)
    assert model.ent_coef == 0.01 and model.logger.name_to_value["train/ent_coef"] == 0.01


def test_recurrent_and_async_follow_the_schedule():
    recurrent = RecurrentPPORollback("MlpLstmPolicy", "CartPole-v1", n_steps=32, batch_size=32, ent_coef="lin_0.04")
    recurrent.learn(64)  # second update at progress_remaining 0
    assert recurrent.logger.name_to_value["train/ent_coef"] == 0.0
    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, ent_coef="lin_0.04", collection="async")
    logger = _DumpedEntCoef()
    model.set_logger(logger)
    model.learn(128)  # the learner process computes the value from the progress it is sent
    # updates at progress_remaining 0.75, 0.5, 0.25, 0; each iteration's dump holds the update before (as SB3's loop),
    # and the last update's value is logged when learn returns
    assert logger.values == pytest.approx([0.03, 0.02, 0.01]) and logger.name_to_value["train/ent_coef"] == 0.0


class _DumpedEntCoef(Logger):
    """A logger recording the ``train/ent_coef`` of each dump."""

    def __init__(self):
        super().__init__(folder=None, output_formats=[])
        self.values: list[float] = []

    def dump(self, step: int = 0) -> None:
        if "train/ent_coef" in self.name_to_value:
            self.values.append(self.name_to_value["train/ent_coef"])
        super().dump(step)


@pytest.mark.parametrize(
    "value", ["lin_0.02", {"start": 0.02, "end": 0.0, "end_fraction": 0.3}, LinearSchedule(0.02, 0.0, 0.3)]
)
def test_schedule_survives_safe_save_and_load(tmp_path, value):
    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, ent_coef=value)
    model.save(tmp_path / "model.zip")
    loaded = PPORollback.load(tmp_path / "model.zip")  # allow_pickle=False: no code from the file
    expected = coefficient_schedule(value)
    for progress in (1.0, 0.9, 0.5, 0.0):
        assert scheduled_value(coefficient_schedule(loaded.ent_coef), progress) == expected(progress)
    overridden = PPORollback.load(tmp_path / "model.zip", ent_coef=0.003)
    assert scheduled_value(coefficient_schedule(overridden.ent_coef), 0.5) == 0.003


def test_yaml_accepts_the_schedule_forms(tmp_path):
    path = tmp_path / "conf.yml"
    path.write_text(
        "CartPole-v1:\n  n_timesteps: 1000\n  policy: MlpPolicy\n  ent_coef: lin_0.01\n"
        "Pendulum-v1:\n  n_timesteps: 1000\n  policy: MlpPolicy\n  ent_coef: {start: 0.005, end: 0.0, end_fraction: 0.3}\n"
        "Acrobot-v1:\n  n_timesteps: 1000\n  policy: MlpPolicy\n  ent_coef: {start: 0.005, until: 0.3}\n"
    )
    assert validate_config(path, "ppo_rollback", "CartPole-v1")["ent_coef"] == "lin_0.01"
    assert validate_config(path, "ppo_rollback", "Pendulum-v1")["ent_coef"]["end_fraction"] == 0.3
    with pytest.raises(ValueError, match=r"Acrobot-v1.*ent_coef.*'start'"):
        validate_config(path, "ppo_rollback", "Acrobot-v1")
    # BCO's ent_coef (a cloning-loss bonus) is a plain number: a schedule is refused before any model is built
    with pytest.raises(ValueError, match=r"CartPole-v1.*'ent_coef'.*wrong type"):
        validate_config(path, "bco", "CartPole-v1")


def test_zoo_linear_schedule_is_rl_zoo3s_until_the_end_then_zero(tmp_path):
    """``lin_<v>`` from the CLI: rl_zoo3's values bit for bit for progress in [0, 1], 0 past the end (rl_zoo3's goes
    negative); a saved model gets the same schedule back from the safe loader."""
    from rl_zoo3.utils import SimpleLinearSchedule

    from sb3_cherry.common.schedules import ZooLinearSchedule

    ours, theirs = ZooLinearSchedule(3e-4), SimpleLinearSchedule(3e-4)
    for progress in [1.0, 0.0, *np.random.default_rng(0).random(1000)]:
        assert ours(progress) == theirs(progress)
    assert theirs(-0.25) < 0 and ours(-0.25) == 0.0
    model = PPORollback(
        "MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, learning_rate=ours, clip_range=ZooLinearSchedule(0.2)
    )
    model.save(tmp_path / "model")
    loaded = PPORollback.load(tmp_path / "model")
    for progress in (1.0, 0.37, 0.0, -0.1):
        assert loaded.lr_schedule(progress) == model.lr_schedule(progress)
        assert loaded.clip_range(progress) == model.clip_range(progress)
