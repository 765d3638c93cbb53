"""
Non-finite data never trains silently (issue 15 item 5) and arguments are rejected at construction (item 6).

The references are the environments' own injected values (which env, which step) and copies of the parameters and
optimizer state taken by the test itself before the failing rollout / update.
"""

import copy
import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_cherry import CherryA2C, PPORollback, RecurrentPPORollback
from sb3_cherry.bco import BCO
from sb3_cherry.common.finite import check_finite_observation, check_finite_step
from sb3_cherry.demos import record_demos

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class InjectEnv(gym.Env):
    """
    Random observations in [-1, 1], 6-step episodes; at its ``at_step``-th step (counted over episodes) it returns a
    NaN in the observation or the reward, or a huge finite reward (``"huge_reward"``: finite data, non-finite loss).
    """

    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)

    def __init__(self, action_space: spaces.Space, what: str | None = None, at_step: int = 0):
        self.action_space = action_space
        self.what, self.at_step, self.steps, self._t = what, at_step, 0, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action):
        self.steps += 1
        self._t += 1
        obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        reward = 0.0
        if self.what is not None and self.steps >= self.at_step:
            if self.what == "observation" and self.steps == self.at_step:
                obs[1] = np.nan
            elif self.what == "reward" and self.steps == self.at_step:
                reward = float("inf")
            elif self.what == "huge_reward":
                reward = 1e30  # finite, but its square (the value loss) overflows float32
        return obs, reward, False, self._t >= 6, {}


BOX = spaces.Box(-1.0, 1.0, (2,), np.float32)
N_STEPS = 8


def _make(algo: str, env, distribution: str | None):
    kwargs = dict(n_steps=N_STEPS, seed=0, device="cpu")
    policy_kwargs = {} if distribution is None else dict(action_distribution=distribution)
    if algo == "ppo":
        return PPORollback("MlpPolicy", env, batch_size=8, n_epochs=2, policy_kwargs=policy_kwargs, **kwargs)
    if algo == "a2c":
        return CherryA2C("MlpPolicy", env, policy_kwargs=policy_kwargs, **kwargs)
    policy_kwargs.update(lstm_hidden_size=8, net_arch=[16])
    return RecurrentPPORollback("MlpLstmPolicy", env, batch_size=8, n_epochs=2, policy_kwargs=policy_kwargs, **kwargs)


class RecordState(BaseCallback):
    """Copies of the parameters and optimizer state at every rollout start / end (the test's own reference)."""

    def _on_rollout_start(self) -> None:
        self.at_rollout_start = copy.deepcopy(self.model.policy.state_dict())

    def _on_rollout_end(self) -> None:
        self.at_rollout_end = copy.deepcopy(self.model.policy.state_dict())
        self.optimizer_at_rollout_end = copy.deepcopy(self.model.policy.optimizer.state_dict())

    def _on_step(self) -> bool:
        return True


def _assert_state_equal(state: dict, expected: dict) -> None:
    assert state.keys() == expected.keys()
    for key in expected:
        assert th.equal(state[key], expected[key]), key


def _assert_optimizer_equal(state: dict, expected: dict) -> None:
    assert state["state"].keys() == expected["state"].keys()
    for index, values in expected["state"].items():
        for name, value in values.items():
            got = state["state"][index][name]
            assert th.equal(got, value) if isinstance(value, th.Tensor) else got == value, (index, name)


CASES = [
    ("ppo", "beta"),
    ("ppo", "tanh_normal"),
    ("ppo", "gumbel_softmax"),
    ("ppo", None),
    ("a2c", "beta"),
    ("recurrent", "tanh_normal"),
]


def _space(distribution: str | None) -> spaces.Space:
    return spaces.Discrete(3) if distribution == "gumbel_softmax" else BOX


@pytest.mark.parametrize("algo, distribution", CASES)
@pytest.mark.parametrize("what", ["observation", "reward"])
def test_non_finite_env_data_raises_and_keeps_parameters(tmp_path, algo, distribution, what):
    space = _space(distribution)
    # env 1 of 2 returns a NaN observation / an inf reward at its 20th step: num_timesteps = 2 * 20 = 40 then
    env = DummyVecEnv([lambda: InjectEnv(space), lambda: InjectEnv(space, what, at_step=20)])
    model = _make(algo, env, distribution)
    model.learn(2 * N_STEPS)  # one clean rollout and update
    model.save(tmp_path / "checkpoint")
    obs = np.stack([InjectEnv.observation_space.sample() for _ in range(5)])
    before, _ = model.predict(obs, deterministic=True)
    record = RecordState()
    value = "nan" if what == "observation" else "inf"
    with pytest.raises(ValueError, match=rf"Non-finite {what} \({value}\) from env 1 at num_timesteps=40"):
        model.learn(200, callback=record, reset_num_timesteps=False)
    assert model.num_timesteps == 40
    # the failing rollout never reached train: parameters are those from its start, all finite
    _assert_state_equal(model.policy.state_dict(), record.at_rollout_start)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    after, _ = model.predict(obs, deterministic=True)
    assert np.all(np.isfinite(after))
    # the checkpoint written before still loads and predicts what it predicted
    loaded = type(model).load(tmp_path / "checkpoint", device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], before)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's own overflow warnings on the 1e30 rewards
@pytest.mark.parametrize("algo, distribution", [("ppo", "beta"), ("ppo", None), ("a2c", None), ("recurrent", "tanh_normal")])
def test_non_finite_loss_undoes_the_update(algo, distribution):
    """Finite data whose value loss overflows (reward 1e30): the update is undone, parameters and optimizer state
    equal the test's copies from before the update, and the error names the loss."""
    space = _space(distribution)
    env = DummyVecEnv([lambda: InjectEnv(space), lambda: InjectEnv(space, "huge_reward", at_step=N_STEPS + 1)])
    model = _make(algo, env, distribution)
    model.learn(2 * N_STEPS)  # one clean update: the optimizer has state to restore
    record = RecordState()
    with pytest.raises(ValueError, match=r"Non-finite loss .*value_loss=(inf|nan).* update at num_timesteps=32"):
        model.learn(2 * N_STEPS, callback=record, reset_num_timesteps=False)
    _assert_state_equal(model.policy.state_dict(), record.at_rollout_end)
    _assert_optimizer_equal(model.policy.optimizer.state_dict(), record.optimizer_at_rollout_end)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_first_update_failing_drops_the_new_optimizer_state():
    env = DummyVecEnv([lambda: InjectEnv(BOX, "huge_reward", at_step=1)])
    model = _make("ppo", env, "tanh_normal")
    initial = copy.deepcopy(model.policy.state_dict())
    with pytest.raises(ValueError, match="Non-finite loss"):
        model.learn(N_STEPS)
    _assert_state_equal(model.policy.state_dict(), initial)
    assert len(model.policy.optimizer.state) == 0


def test_guard_changes_no_float():
    """The checks only read: the same run with check_finite off gives the same parameters bit for bit."""
    states = []
    for check in (True, False):
        model = PPORollback("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu")
        model.check_finite = check
        model.learn(128)
        states.append(model.policy.state_dict())
    _assert_state_equal(states[0], states[1])


def test_check_functions_name_key_terminal_observation_and_env():
    obs = {"a": np.zeros((3, 2), np.float32), "b": np.array([[0.0], [1.0], [np.inf]], np.float32)}
    with pytest.raises(ValueError, match=r"Non-finite observation \(key 'b'\) \(inf\) from env 2 at num_timesteps=7"):
        check_finite_observation(obs, "observation", "num_timesteps=7")
    check_finite_observation(np.arange(6).reshape(3, 2), "observation", "x")  # integer observations: nothing to check
    finite = np.zeros((3, 2), np.float32)
    infos = [{}, {"terminal_observation": np.array([0.0, np.nan], np.float32)}, {}]
    with pytest.raises(ValueError, match=r"Non-finite terminal observation \(nan\) from env 1 at num_timesteps=9"):
        check_finite_step(finite, np.zeros(3), np.array([False, True, False]), infos, 9)
    check_finite_step(finite, np.zeros(3), np.array([False, False, False]), infos, 9)  # not done: not read
    with pytest.raises(ValueError, match=r"Non-finite reward \(nan\) from env 0"):
        check_finite_step(finite, np.array([np.nan, 0.0, 0.0]), np.zeros(3, bool), infos, 9)


def test_bco_non_finite_observation(tmp_path):
    path = tmp_path / "demos.npz"

    class Expert:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.zeros((len(obs), 2), np.float32), state

    record_demos(Expert(), InjectEnv(BOX), n_episodes=2, path=path, seed=0)
    env = DummyVecEnv([lambda: InjectEnv(BOX), lambda: InjectEnv(BOX, "observation", at_step=29)])
    model = BCO("MlpPolicy", env, demonstrations=path, n_pre_interactions=40, alpha=0.5, n_epochs_bc=1, seed=0)
    with pytest.raises(ValueError, match=r"Non-finite observation \(nan\) from env 1 at num_timesteps=58"):
        model.learn(200)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    assert all(th.isfinite(p).all() for p in model.inverse_model.parameters())


# ------------------------------------------------------------------------------------------------ argument checks
@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), -0.1])
@pytest.mark.parametrize("cls, policy", [(PPORollback, "MlpPolicy"), (RecurrentPPORollback, "MlpLstmPolicy")])
def test_rollback_alpha_rejected(cls, policy, alpha):
    with pytest.raises(ValueError, match="rollback_alpha must be a finite number >= 0"):
        cls(policy, "CartPole-v1", rollback_alpha=alpha)


@pytest.mark.parametrize("n_step", [2.7, 0, -1, float("nan"), "3", True])
def test_non_integer_n_step_rejected(n_step):
    with pytest.raises(ValueError, match=r"n_step must be an integer >= 1 .*e\.g\. n_step=3"):
        PPORollback("MlpPolicy", "CartPole-v1", returns_estimator="n_step", n_step=n_step)
    with pytest.raises(ValueError, match="n_step must be an integer"):
        CherryA2C("MlpPolicy", "CartPole-v1", returns_estimator="n_step", n_step=n_step)


def test_integral_n_step_accepted():
    for n_step in (5, 5.0, np.int64(5)):
        model = PPORollback("MlpPolicy", "CartPole-v1", returns_estimator="n_step", n_step=n_step, n_steps=16, batch_size=16)
        assert model.n_step == 5 and type(model.n_step) is int


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0])
def test_rho_bar_rejected(value):
    with pytest.raises(ValueError, match="rho_bar and c_bar must be finite numbers > 0"):
        PPORollback("MlpPolicy", "CartPole-v1", returns_estimator="vtrace", rho_bar=value)


def test_distribution_kwargs_for_unused_distribution_rejected():
    kwargs = {"gumbel_softmax": {"temperature": 0.5}}
    with pytest.raises(ValueError, match=r"action_distribution_kwargs has arguments for \['gumbel_softmax'\], but the "):
        PPORollback("MlpPolicy", "CartPole-v1", policy_kwargs=dict(action_distribution_kwargs=kwargs))
    with pytest.raises(ValueError, match=r"arguments for \['beta'\].*\['tanh_normal'\]"):
        PPORollback(
            "MlpPolicy",
            "Pendulum-v1",
            policy_kwargs=dict(action_distribution="tanh_normal", action_distribution_kwargs={"beta": {"epsilon": 1e-5}}),
        )
    model = PPORollback(
        "MlpPolicy",
        "CartPole-v1",
        policy_kwargs=dict(action_distribution="gumbel_softmax", action_distribution_kwargs=kwargs),
    )
    assert model.policy.action_dist.temperature == 0.5


def test_async_with_buffer_that_cannot_recentre_rejected():
    with pytest.raises(ValueError, match=r"collection='async' re-centres .*RolloutBuffer cannot do: use a subclass"):
        PPORollback("MlpPolicy", "CartPole-v1", collection="async", rollout_buffer_class=RolloutBuffer)
    with pytest.raises(ValueError, match="collection='async'"):
        CherryA2C("MlpPolicy", "CartPole-v1", collection="async", rollout_buffer_class=RolloutBuffer)
    PPORollback("MlpPolicy", "CartPole-v1", collection="sync", rollout_buffer_class=RolloutBuffer)  # fine when sync


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_parameters_set_between_learns_are_what_a_failed_update_restores():
    """The snapshot is refreshed at each learn: parameters loaded in between are the ones restored, not older ones."""
    env = DummyVecEnv([lambda: InjectEnv(BOX, "huge_reward", at_step=N_STEPS + 1)])
    model = _make("ppo", env, None)
    model.learn(N_STEPS)
    other = _make("ppo", DummyVecEnv([lambda: InjectEnv(BOX)]), None)
    other.learn(2 * N_STEPS)
    model.policy.load_state_dict(other.policy.state_dict())  # in place: same tensors, same optimizer state
    expected = copy.deepcopy(model.policy.state_dict())
    with pytest.raises(ValueError, match="Non-finite loss"):
        model.learn(N_STEPS, reset_num_timesteps=False)
    _assert_state_equal(model.policy.state_dict(), expected)


def test_update_guard_follows_a_replaced_optimizer():
    # an optimizer replaced between learn calls (e.g. new hyperparameters) is snapshotted and restored as well: an
    # undone update leaves it as it was (here: without state), not with the undone step's moments
    env = DummyVecEnv([lambda: InjectEnv(BOX, "huge_reward", at_step=N_STEPS + 1)])
    model = PPORollback("MlpPolicy", env, n_steps=N_STEPS, batch_size=8, n_epochs=2, seed=0)
    model.learn(N_STEPS)  # one clean update
    model.policy.optimizer = th.optim.Adam(model.policy.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    with pytest.raises(ValueError, match="Non-finite"):
        model.learn(N_STEPS, reset_num_timesteps=False)
    assert all(th.equal(before[k], v) for k, v in model.policy.state_dict().items())
    assert len(model.policy.optimizer.state) == 0


@pytest.mark.parametrize("flat, error", [(True, RuntimeError), (False, RuntimeError), (True, KeyboardInterrupt)])
def test_an_update_that_raises_is_undone(flat, error, monkeypatch):
    """An error (or Ctrl-C) in a later minibatch, values finite, leaves parameters and optimizer state from before the
    update, and the exception itself propagates (with flat Adam steps and with torch's own)."""
    env = DummyVecEnv([lambda: InjectEnv(BOX)])
    model = PPORollback("MlpPolicy", env, n_steps=N_STEPS, batch_size=4, n_epochs=2, seed=0)
    model.learn(N_STEPS)  # one clean update: the optimizer has state to restore
    if not flat:
        step = model.policy.optimizer.step
        model.policy.optimizer.step = lambda *args, **kwargs: step(*args, **kwargs)  # (flat steps refused)
    record = RecordState()
    evaluate = model.policy.evaluate_actions
    calls = []

    def failing_evaluate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # after two optimizer steps of this update
            raise error("an error in the third minibatch")
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(model.policy, "evaluate_actions", failing_evaluate)
    with pytest.raises(error, match="third minibatch"):
        model.learn(N_STEPS, callback=record, reset_num_timesteps=False)
    assert len(calls) == 3
    _assert_state_equal(model.policy.state_dict(), record.at_rollout_end)
    _assert_optimizer_equal(model.policy.optimizer.state_dict(), record.optimizer_at_rollout_end)


def test_non_finite_parameters_before_learn_name_the_model_not_the_env():
    # a model file holding NaN weights: the first step got NaN actions, and the error blamed the environment
    model = PPORollback("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, seed=0)
    with th.no_grad():
        model.policy.action_net.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"parameters \['action_net.weight'\] are not finite .* before learn"):
        model.learn(32)
    assert model.num_timesteps == 0


# ---------------------------------------------------------------------------------- from a review of every fault path
class FaultEnv(gym.Env):
    """Random obs in [-1, 1], 6-step episodes (time-limit truncation); ``fault`` from global step ``at`` on."""

    def __init__(self, fault=None, at=20, dtype=np.float32):
        self.observation_space = spaces.Box(-np.inf, np.inf, (3,), dtype)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.fault, self.at, self.dtype, self.steps, self.t = fault, at, dtype, 0, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 3).astype(self.dtype), {}

    def step(self, action):
        self.steps += 1
        self.t += 1
        obs = self.np_random.uniform(-1, 1, 3).astype(self.dtype)
        reward = 0.0
        if self.fault == "obs_1e39" and self.steps == self.at:
            obs[1] = 1e39  # finite in float64, inf once the policy casts it to float32
        elif self.fault == "obs_1e200" and self.steps >= self.at:
            obs[1] = 1e200  # its square overflows VecNormalize's float64 running variance
        elif self.fault == "reward_1e38" and self.steps >= self.at:
            reward = 1e38  # finite float32; the GAE sum over the rollout overflows
        elif self.fault == "obs_cancelling" and self.steps == self.at:
            obs[:2] = (5e38, -3e38)  # both beyond float32's range, their sum (2e38) within it
        elif self.fault == "obs_inf" and self.steps == self.at:
            obs[1] = np.inf
        elif self.fault == "terminal_inf" and self.t == 6 and self.steps >= self.at:
            self.fault = None
            obs[1] = np.inf  # the last observation of an episode only: a terminal observation
        elif self.fault == "reward_inf" and self.steps == self.at:
            reward = float("inf")
        return obs, reward, False, self.t >= 6, {}


def _finite(module):
    return all(bool(th.isfinite(t).all()) for t in module.state_dict().values() if t.is_floating_point())


# ------------------------------------------------------------------------------------------------ CherryA2C
@pytest.mark.parametrize("lr", [1e38, float("inf")])
def test_a2c_update_that_makes_parameters_non_finite_is_refused(lr):
    """CherryA2C checks only the loss and gradient norm before its optimizer step; a finite clipped gradient times a
    huge learning rate gives inf/NaN parameters, which are kept, and learn returns normally."""
    model = CherryA2C("MlpPolicy", DummyVecEnv([FaultEnv, FaultEnv]), n_steps=8, learning_rate=lr, seed=0, device="cpu")
    before = copy.deepcopy(model.policy.state_dict())
    with pytest.raises(ValueError, match="Non-finite"):
        model.learn(16)  # one update
    assert _finite(model.policy)
    for key, value in before.items():
        assert th.equal(model.policy.state_dict()[key], value), key


# ------------------------------------------------------------------------------------------------ BCO
def _bco_demos():
    class Expert:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.zeros((len(obs), 2), np.float32), state

    return record_demos(Expert(), FaultEnv(), n_episodes=3, seed=0)


@pytest.mark.parametrize("lr", [1e6, float("inf")])
def test_bco_round_that_raises_midway_is_undone(lr):
    """BCO.train takes a snapshot but does not restore it when the round raises (here torch's distribution
    validation on the inverse model's NaN / zero-scale output after a diverged minibatch step): the inverse model keeps
    the half-done (with lr=inf: NaN) parameters and the error is torch's, not the non-finite-update message."""
    model = BCO(
        "MlpPolicy",
        DummyVecEnv([FaultEnv, FaultEnv]),
        demonstrations=_bco_demos(),
        n_pre_interactions=40,
        alpha=0.5,
        n_epochs_bc=2,
        n_epochs_inverse=2,
        seed=0,
        learning_rate=lr,
    )
    inverse_before = copy.deepcopy(model.inverse_model.state_dict())
    with pytest.raises(ValueError, match="Non-finite"):
        model.learn(200)
    assert _finite(model.inverse_model) and _finite(model.policy)
    for key, value in inverse_before.items():
        assert th.equal(model.inverse_model.state_dict()[key], value), key


def test_bco_in_memory_demonstrations_with_nan_refused():
    """A list of trajectories was not checked for NaN / inf (a file is, at load): the NaN reached the inverse model
    and the error was torch's 'Expected parameter loc ... invalid values'; refused when BCO is built."""
    demos = _bco_demos()
    demos[1].obs[3, 0] = np.nan
    with pytest.raises(
        ValueError, match=r"non-finite observation \(NaN, inf, or beyond float32's range\) at transition 9 \(1"
    ):
        BCO("MlpPolicy", DummyVecEnv([FaultEnv, FaultEnv]), demonstrations=demos, n_pre_interactions=40)


def test_bco_in_memory_demonstrations_beyond_float32_range_refused():
    # a float64 1e39 (inf for the float32 inverse model) passed, and the first round failed with "The data were
    # finite, so the update itself diverged: lower the learning rate"
    demos = _bco_demos()
    wide = demos[1].obs.astype(np.float64)
    wide[6, 2] = 1e39  # the episode's final observation: the next observation of transition 11 only
    demos[1] = dataclasses.replace(demos[1], obs=wide)
    venv = DummyVecEnv([lambda: FaultEnv(dtype=np.float64)] * 2)
    with pytest.raises(
        ValueError, match=r"non-finite next observation \(NaN, inf, or beyond float32's range\) at transition 11"
    ):
        BCO("MlpPolicy", venv, demonstrations=demos, n_pre_interactions=40)


# ------------------------------------------------------------------------------------------------ env checks
@pytest.mark.parametrize("algo", [PPORollback, CherryA2C])
def test_float64_observation_beyond_float32_range_raises_at_collection(algo):
    """1e39 in a float64 Box observation is finite for the check but inf for the float32 policy: collection goes
    on (NaN actions reach the env) and the update fails with 'The data were finite, so the update itself diverged:
    lower the learning rate'."""
    env = DummyVecEnv([lambda: FaultEnv("obs_1e39", at=20, dtype=np.float64)])
    kwargs = dict(batch_size=16, n_epochs=1) if algo is PPORollback else {}
    model = algo("MlpPolicy", env, n_steps=16, seed=0, device="cpu", **kwargs)
    with pytest.raises(ValueError, match=r"Non-finite observation .* at num_timesteps=20"):
        model.learn(96)


def test_vecnormalize_variance_overflow_does_not_train_silently():
    """A 1e200 float64 observation makes VecNormalize's running variance inf; normalised values become 0 (finite),
    so learn trains on them silently, and the saved statistics are later refused by load_vec_normalize."""
    venv = VecNormalize(DummyVecEnv([lambda: FaultEnv("obs_1e200", at=20, dtype=np.float64)]), norm_reward=False)
    model = PPORollback("MlpPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    with pytest.raises(ValueError, match=r"The VecNormalize statistics obs_rms\.var are not finite .* end of the rollout"):
        model.learn(96)


@pytest.mark.parametrize("fault", ["obs_inf", "reward_inf"])
@pytest.mark.parametrize("algo", ["ppo", "a2c", "recurrent"])
def test_frozen_vecnormalize_clipping_an_inf_does_not_train_silently(algo, fault):
    # with frozen statistics (training=False, e.g. fine-tuning with loaded ones) VecNormalize clips a raw inf to
    # clip_obs / clip_reward: finite values, trained on silently; its raw values of each step are checked now
    venv = VecNormalize(DummyVecEnv([lambda: FaultEnv(fault, at=11)]))
    venv.training = False
    model = _make(algo, venv, None)
    state = RecordState()
    what = "observation" if fault == "obs_inf" else "reward"
    with pytest.raises(ValueError, match=rf"Non-finite {what} \(before VecNormalize\) \(inf\) from env 0 at num_timesteps=11"):
        model.learn(64, callback=state)
    for key, value in state.at_rollout_start.items():  # the update after the faulty rollout did not happen
        assert th.equal(model.policy.state_dict()[key], value)


@pytest.mark.parametrize("fault", ["obs_inf", "terminal_inf"])
def test_bco_under_frozen_vecnormalize_refuses_a_raw_inf(fault):
    # BCO stores the raw observations: with frozen statistics a raw inf was stored and trained on as clip_obs
    venv = VecNormalize(DummyVecEnv([lambda: FaultEnv(fault, at=11)]), norm_reward=False)
    venv.training = False
    model = BCO("MlpPolicy", venv, demonstrations=_bco_demos(), n_pre_interactions=40, seed=0)
    what = "observation" if fault == "obs_inf" else "terminal observation"
    with pytest.raises(
        ValueError, match=rf"Non-finite {what} \(before VecNormalize\) \(inf\) from env 0 at num_timesteps=1[12]"
    ):
        model.learn(80)


def test_raw_float64_values_beyond_float32_range_under_vecnormalize_train():
    # normalised in float64, the policy sees finite values: the raw check (NaN / inf) must not refuse them
    venv = VecNormalize(DummyVecEnv([lambda: FaultEnv("obs_1e39", at=20, dtype=np.float64)]), norm_reward=False)
    model = PPORollback("MlpPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    venv.training = False
    model.learn(64)
    assert _finite(model.policy)


def test_float64_values_beyond_float32_range_are_found_when_their_sum_is_not():
    # the fast test summed each array: float64 entries beyond float32's range can cancel (5e38 - 3e38 = 2e38)
    cancelling = np.array([[5e38, -3e38, 0.0]])
    with pytest.raises(ValueError, match=r"Non-finite observation \(5e\+38, beyond float32's range"):
        check_finite_observation(cancelling, "observation", "x")
    infos = [{"terminal_observation": cancelling[0]}, {}]
    finite = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"Non-finite terminal observation \(5e\+38, .*from env 0"):
        check_finite_step(finite, np.zeros(2), np.array([True, False]), infos, 3)
    with pytest.raises(ValueError, match=r"Non-finite reward \(5e\+38, .*from env 0"):
        check_finite_step(finite, np.array([5e38, -3e38]), np.zeros(2, bool), [{}, {}], 3)
    # legitimate values whose sum overflows float32 (float32 arrays too): no error and no numpy overflow warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in (np.float32, np.float64):
            big = np.array([[3e38, 3e38], [-3e38, 3e38]], dtype)
            check_finite_step(big, np.array([3e38, 3e38], dtype), np.zeros(2, bool), [{}, {}], 3)
        check_finite_observation(np.zeros((0, 3)), "observation", "x")


@pytest.mark.parametrize("algo", [PPORollback, CherryA2C])
def test_cancelling_float64_observation_beyond_float32_range_is_named(algo):
    # collection went on and the update failed with 'The data were finite, so the update itself diverged'
    env = DummyVecEnv([lambda: FaultEnv("obs_cancelling", at=20, dtype=np.float64)])
    kwargs = dict(batch_size=16, n_epochs=1) if algo is PPORollback else {}
    model = algo("MlpPolicy", env, n_steps=16, seed=0, device="cpu", **kwargs)
    with pytest.raises(ValueError, match=r"Non-finite observation \(5e\+38, beyond float32's range.* at num_timesteps=20"):
        model.learn(96)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_returns_overflow_not_reported_as_finite_data():
    """A finite reward of 1e38 overflows the float32 GAE returns; the update error then says 'The data were finite,
    so the update itself diverged: lower the learning rate' (the returns were inf)."""
    model = PPORollback(
        "MlpPolicy",
        DummyVecEnv([lambda: FaultEnv("reward_1e38")]),
        n_steps=16,
        batch_size=16,
        n_epochs=1,
        seed=0,
        device="cpu",
    )
    with pytest.raises(ValueError) as info:
        model.learn(96)
    assert "data were finite" not in str(info.value)
    assert "return" in str(info.value).lower() or "reward" in str(info.value).lower()


def test_airl_nan_terminal_observation_named_as_such():
    """With AIRL the reward is computed from next_obs; a NaN terminal observation of a truncation turns the learned
    reward NaN, and the error says 'Non-finite reward ... Fix the environment' (the env's reward is finite) because
    check_finite_step tests rewards before terminal observations."""
    pytest.importorskip("imitation")
    from sb3_cherry.adversarial import AIRL

    class TermNaN(FaultEnv):
        def step(self, action):
            obs, reward, terminated, truncated, info = super().step(action)
            if truncated and self.steps >= 29:
                obs[0] = np.nan
            return obs, reward, terminated, truncated, info

    class Expert:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.zeros((len(obs), 2), np.float32), state

    demos = record_demos(Expert(), FaultEnv(), n_episodes=8, seed=0)
    model = AIRL(
        "MlpPolicy",
        DummyVecEnv([FaultEnv, TermNaN]),
        demonstrations=demos,
        demo_batch_size=32,
        generator_kwargs=dict(n_steps=32, batch_size=32, n_epochs=2),
        allow_variable_horizon=True,
        seed=0,
    )
    with pytest.raises(ValueError, match="Non-finite terminal observation"):
        model.learn(400)


def test_ppo_learning_rate_overflow_reported_as_non_finite_update():
    """A learning rate of 1e38 makes torch's Adam raise 'value cannot be converted to type float without overflow'; the update
    is undone but the error names neither the problem nor the fix."""
    model = PPORollback(
        "MlpPolicy",
        DummyVecEnv([FaultEnv, FaultEnv]),
        n_steps=16,
        batch_size=16,
        n_epochs=2,
        learning_rate=1e38,
        seed=0,
        device="cpu",
    )
    with pytest.raises(ValueError, match="learning rate"):
        model.learn(64)


def test_half_precision_observations_checked_without_overflow():
    # float16 batches whose sum exceeds 65504 (8 frames of 84 x 84 values near 1) took the slow path at every step,
    # and comparing them with float32's maximum warned "overflow encountered in cast"
    import warnings

    obs = np.full((8, 84 * 84), 0.9, dtype=np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_finite_observation(obs, "observation", "num_timesteps=8")
        obs[3, 5] = np.inf
        with pytest.raises(ValueError, match=r"Non-finite observation \(inf\) from env 3"):
            check_finite_observation(obs, "observation", "num_timesteps=8")


def test_bco_vecnormalize_statistics_checked_after_collection():
    # PPORollback refused a VecNormalize whose running variance overflowed (an observation of 1e200); BCO trained on
    import copy as copy_module

    def make():
        return FaultEnv("obs_1e200", at=20, dtype=np.float64)

    venv = VecNormalize(DummyVecEnv([make]), norm_reward=False)
    model = BCO("MlpPolicy", venv, demonstrations=_bco_demos(), n_pre_interactions=40, seed=0)
    before = copy_module.deepcopy(model.policy.state_dict())
    with pytest.raises(ValueError, match=r"The VecNormalize statistics obs_rms\.var are not finite .* end of the collection"):
        model.learn(200)
    for key, value in before.items():
        assert th.equal(model.policy.state_dict()[key], value), key


@pytest.mark.parametrize(
    "case, error",
    [
        ("finite", None),
        ("float32_sum_overflows", None),  # 3e38 + 3e38: every entry finite, the float32 sum is not
        ("nan_obs", "Non-finite observation .* from env 1"),
        ("inf_reward", "Non-finite reward .* from env 2"),
        ("nan_terminal_obs", "Non-finite terminal observation .* from env 0"),
        ("float64_obs_beyond_float32", "Non-finite observation .* from env 1"),
        ("nan_obs_and_done", "Non-finite observation .* from env 1"),
        ("inf_reward_and_done", "Non-finite reward .* from env 2"),
        ("float64_terminal_obs_beyond_float32", "Non-finite terminal observation .* from env 2"),
        ("large_finite", None),  # more than SMALL_ARRAY entries: the float32-sum path
        ("large_nan_obs", "Non-finite observation .* from env 2"),
        ("byteswapped_nan_obs", "Non-finite observation .* from env 1"),
        ("list_dones_finite", None),
    ],
)
def test_finite_check_callback_step(case, error):
    """The callback's per-step test (small float32 arrays summed as Python floats, larger ones in float32, the exact
    check when a test fails, terminal observations when an episode ended; byte-swapped arrays take the exact check)
    raises exactly where check_finite_step does, naming the env."""
    from stable_baselines3.common.callbacks import CallbackList

    from sb3_cherry.common.finite import FiniteCheckCallback

    model = PPORollback("MlpPolicy", DummyVecEnv([lambda: InjectEnv(spaces.Discrete(2))] * 3), n_steps=8, batch_size=8)
    obs = np.zeros((3, 3), np.float32)
    rewards = np.zeros(3, np.float32)
    dones = np.zeros(3, bool)
    infos: list[dict] = [{}, {}, {}]
    if case == "float32_sum_overflows":
        obs[:, 0] = 3e38
        rewards[:] = 3e38
    elif case == "nan_obs":
        obs[1, 2] = np.nan
    elif case == "inf_reward":
        rewards[2] = np.inf
    elif case == "nan_terminal_obs":
        dones[0] = True
        infos[0]["terminal_observation"] = np.array([0.0, np.nan, 0.0], np.float32)
    elif case == "float64_obs_beyond_float32":
        obs = obs.astype(np.float64)
        obs[1, 0] = 1e39
    elif case == "nan_obs_and_done":
        obs[1, 0] = np.nan
        dones[0] = True
        infos[0]["terminal_observation"] = np.zeros(3, np.float32)
    elif case == "inf_reward_and_done":
        rewards[2] = -np.inf
        dones[1] = True
        infos[1]["terminal_observation"] = np.zeros(3, np.float32)
    elif case == "float64_terminal_obs_beyond_float32":
        dones[2] = True
        infos[2]["terminal_observation"] = np.array([0.0, -1e39, 0.0])
    elif case in ("large_finite", "large_nan_obs"):
        obs = np.ones((3, 100), np.float32)
        if case == "large_nan_obs":
            obs[2, 99] = np.nan
    elif case == "byteswapped_nan_obs":
        obs = obs.astype(">f4")
        obs[1, 1] = np.nan
    elif case == "list_dones_finite":
        dones = [False, True, False]  # type: ignore[assignment]
        infos[1]["terminal_observation"] = np.zeros(3, np.float32)
    callback = CallbackList([FiniteCheckCallback()])
    callback.init_callback(model)
    callback.on_rollout_start()
    callback.update_locals(dict(new_obs=obs, rewards=rewards, dones=dones, infos=infos))
    if error is None:
        assert callback.on_step()
        check_finite_step(obs, rewards, dones, infos, 0)  # the reference agrees
    else:
        with pytest.raises(ValueError, match=error):
            callback.on_step()
        with pytest.raises(ValueError, match=error):
            check_finite_step(obs, rewards, dones, infos, 0)


def test_non_finite_reset_observation_raises_at_rollout_start():
    """A reset observation (not seen by any step check) is tested when the rollout starts, also when it was written
    into the array object a step check had already passed (a VecEnv reusing its buffer; from an independent review)."""
    from stable_baselines3.common.callbacks import CallbackList

    from sb3_cherry.common.finite import FiniteCheckCallback

    model = PPORollback("MlpPolicy", DummyVecEnv([lambda: InjectEnv(spaces.Discrete(2))] * 2), n_steps=8, batch_size=8)
    callback = CallbackList([FiniteCheckCallback()])
    callback.init_callback(model)
    model._last_obs = np.array([[0.0, 0.0, 0.0], [0.0, np.inf, 0.0]], np.float32)
    with pytest.raises(ValueError, match=r"Non-finite observation \(inf\) from env 1 at reset / rollout start"):
        callback.on_rollout_start()
    checked = np.zeros((2, 3), np.float32)
    callback.update_locals(dict(new_obs=checked, rewards=np.zeros(2, np.float32), dones=np.zeros(2, bool), infos=[{}, {}]))
    assert callback.on_step()
    model._last_obs = checked
    callback.on_rollout_start()
    checked[0, 0] = np.nan  # the same array, overwritten in place by a reset between rollouts
    with pytest.raises(ValueError, match="from env 0 at reset / rollout start"):
        callback.on_rollout_start()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's own overflow warnings on the 1e30 rewards
@pytest.mark.parametrize("algo, distribution", [("ppo", None), ("a2c", None), ("recurrent", "tanh_normal")])
def test_failing_update_restores_the_snapshot_of_the_previous_checked_update(algo, distribution):
    """Three clean updates, then one whose loss overflows, in ONE learn call: the snapshot it is undone to is the copy
    taken when the previous update was checked (not the one taken when learn started); parameters and optimizer state
    equal the test's copies from the end of the last rollout."""
    space = _space(distribution)
    env = DummyVecEnv([lambda: InjectEnv(space), lambda: InjectEnv(space, "huge_reward", at_step=3 * N_STEPS + 1)])
    model = _make(algo, env, distribution)
    record = RecordState()
    with pytest.raises(ValueError, match=r"Non-finite loss .*value_loss=(inf|nan).* update at num_timesteps=64"):
        model.learn(8 * N_STEPS, callback=record)
    _assert_state_equal(model.policy.state_dict(), record.at_rollout_end)
    _assert_optimizer_equal(model.policy.optimizer.state_dict(), record.optimizer_at_rollout_end)


@pytest.mark.parametrize("size", [1, 8, 32, 63, 64, 65, 256, 2048])
def test_fast_step_tests_against_isfinite(size):
    """_float32_finite is True only for float32 arrays whose entries are all finite (np.isfinite as the reference):
    up to SMALL_ARRAY entries it decides exactly, also where the float32 sum would overflow; _any_done is np.any."""
    from sb3_cherry.common.finite import SMALL_ARRAY, _any_done, _float32_finite

    rng = np.random.default_rng(size)
    for trial in range(40):
        with np.errstate(over="ignore"):  # (beyond float32's range: inf, a non-finite case like the others)
            values = (rng.normal(size=size) * 10.0 ** int(rng.integers(-30, 39))).astype(np.float32)
        if trial % 3 == 1:
            values[rng.integers(size)] = rng.choice([np.nan, np.inf, -np.inf])
        values = values.reshape(-1, 1) if trial % 2 else values
        exact = bool(np.isfinite(values).all())
        fast = _float32_finite(values)
        assert not fast or exact  # never finite where an entry is not
        assert values.dtype == np.float32 and (not _float32_finite(values.T) or exact)  # (.T: a strided view)
        if size <= SMALL_ARRAY:
            assert fast == exact == _float32_finite(values.T)
        dones = rng.random(size) < 0.02 * (trial % 4)
        assert _any_done(dones) == bool(np.any(dones))
    big = np.full(8, 3e38, np.float32)  # every entry finite, the float32 sum overflows: exact below the limit
    assert _float32_finite(big) and not _float32_finite(big.astype(np.float64)) and not _float32_finite(list(big))
    assert _any_done([False, True]) and not _any_done(np.zeros(SMALL_ARRAY + 1, bool))
    assert _any_done(np.array(True)) and not _any_done(np.zeros((3, 1), bool))  # (0-d, 2-D: np.any)
