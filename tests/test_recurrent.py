"""RecurrentPPORollback: GRU / LSTM policies, every distribution, exactness vs sb3-contrib, save/load, memory task."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from torch import nn

from sb3_cherry.common.policies import CherryActorCriticPolicy
from sb3_cherry.ppo_recurrent import RecurrentPPORollback
from sb3_cherry.ppo_recurrent.policies import LSTMCompatibleGRU, make_rnn
from sb3_cherry.ppo_rollback import PPORollback

TINY = dict(n_steps=16, batch_size=16, n_epochs=1)
SMALL_NET = dict(lstm_hidden_size=8, net_arch=[8])


class _NoVelocity(gym.ObservationWrapper):
    """CartPole with the velocities hidden (fallback until ``sb3_cherry/CartPoleNoVel-v0`` is registered)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        low, high = env.observation_space.low[[0, 2]], env.observation_space.high[[0, 2]]
        self.observation_space = spaces.Box(low, high, dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[[0, 2]]


def cartpole_no_vel() -> gym.Env:
    try:
        return gym.make("sb3_cherry/CartPoleNoVel-v0")
    except gym.error.Error:
        return _NoVelocity(gym.make("CartPole-v1"))


class TupleEnv(gym.Env):
    """Discrete + Box actions; 7-step episodes, so sequences in the buffer cross episode boundaries."""

    observation_space = spaces.Box(-1, 1, (2,), np.float32)

    def __init__(self, action_space: spaces.Space | None = None):
        self.action_space = action_space or spaces.Tuple((spaces.Discrete(3), spaces.Box(-1, 1, (2,), np.float32)))

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.t += 1
        if isinstance(self.action_space, spaces.Tuple):
            reward = float(action[0] == 1) - float(np.abs(action[1]).sum())
        else:
            reward = float(np.sum(action == 1))
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), reward, self.t >= 7, False, {}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _params(model) -> np.ndarray:
    return th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().numpy()


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
@pytest.mark.parametrize(
    "env, distribution",
    [
        ("CartPole-v1", None),
        ("Pendulum-v1", "beta"),
        (TupleEnv, ("gumbel_softmax", "beta")),
    ],
)
def test_run(rnn_type, env, distribution):
    env = env() if callable(env) else env
    policy_kwargs = dict(rnn_type=rnn_type, action_distribution=distribution, **SMALL_NET)
    model = RecurrentPPORollback("MlpLstmPolicy", env, policy_kwargs=policy_kwargs, seed=0, **TINY)
    model.learn(32)
    expected = LSTMCompatibleGRU if rnn_type == "gru" else nn.LSTM
    assert type(model.policy.lstm_actor) is expected and type(model.policy.lstm_critic) is expected
    action, state = model.predict(model.observation_space.sample(), episode_start=np.ones(1, dtype=bool))
    assert model.action_space.contains(action if isinstance(action, tuple) else np.asarray(action, model.action_space.dtype))
    assert state[0].shape == (1, 1, 8)


@pytest.mark.parametrize(
    "space",
    [
        spaces.Discrete(3, start=1),
        spaces.MultiDiscrete([3, 2], start=[1, -1]),
        spaces.Tuple((spaces.Discrete(3, start=2), spaces.Box(-1, 1, (2,), np.float32))),
    ],
    ids=["discrete", "multi_discrete", "tuple"],
)
def test_shifted_discrete_spaces_train_through_padded_sequences(space):
    # sb3-contrib pads sequences with action 0, below these spaces' start: the padded steps' log-prob is evaluated (then
    # masked out) and failed with an index error; the env asserts that every action it receives is in its space
    model = RecurrentPPORollback("MlpGruPolicy", TupleEnv(space), policy_kwargs=SMALL_NET, seed=0, **TINY)
    model.learn(64)
    assert model.num_timesteps == 64
    assert not any(sample.mask.all() for sample in model.rollout_buffer.get(16))  # every minibatch had padded steps


class _ManyActionDims(gym.Env):
    """40 action dimensions, episodes of 3 to 8 steps (sequences in the buffer are padded)."""

    observation_space = spaces.Box(-1, 1, (3,), np.float32)
    action_space = spaces.Box(-1, 1, (40,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.horizon = 0, int(self.np_random.integers(3, 9))
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return obs, -float(np.square(action).mean()), self.t >= self.horizon, False, {}


def test_padded_steps_do_not_make_the_gradient_non_finite():
    # A narrow Gaussian over 40 dimensions: log pi(0 | padded obs) > 88, so exp(log_prob - 0) overflowed at the padded
    # steps; masked out of the loss value, their zero gradient still became 0 * inf = NaN (sb3-contrib's code too), and
    # the non-finite check refused the update. The padded steps' log-ratio is set to 0 before the exp.
    model = RecurrentPPORollback(
        "MlpLstmPolicy", make_vec_env(_ManyActionDims, n_envs=2, seed=0), n_steps=32, batch_size=16, n_epochs=1,
        seed=0, rollback_alpha=0.0, policy_kwargs=dict(log_std_init=-4.0, lstm_hidden_size=8),
    )  # fmt: skip
    model.learn(64)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    data = next(model.rollout_buffer.get(16))
    with th.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(data.observations, data.actions, data.lstm_states, data.episode_starts)
    assert (log_prob[data.mask < 1e-8] > 88.8).any()  # the case: exp overflows in float32 at a padded step


def test_carried_states_are_ordinary_tensors():
    # as contrib's: a callback (or the user between learn calls) may reset them in place
    model = RecurrentPPORollback("MlpLstmPolicy", "CartPole-v1", policy_kwargs=SMALL_NET, seed=0, **TINY).learn(32)
    for pair in model._last_lstm_states:
        for tensor in pair:
            assert not tensor.is_inference()
            tensor[:, 0] = 0.0


@pytest.mark.parametrize("distribution", ["gumbel_softmax", "tanh_normal"])
def test_other_distributions(distribution):
    env_id = "CartPole-v1" if distribution == "gumbel_softmax" else "Pendulum-v1"
    model = RecurrentPPORollback(
        "MlpGruPolicy", env_id, policy_kwargs=dict(action_distribution=distribution, **SMALL_NET), seed=0, **TINY
    )
    model.learn(32)
    assert type(model.policy.action_dist).__name__.lower().startswith(distribution.replace("_", ""))


def test_policy_aliases():
    from stable_baselines3.common.envs import SimpleMultiObsEnv

    for policy in ("MlpLstmPolicy", "MlpGruPolicy"):
        model = RecurrentPPORollback(policy, "CartPole-v1", policy_kwargs=SMALL_NET, **TINY)
        assert model.policy.rnn_type == ("gru" if "Gru" in policy else "lstm")
    for policy in ("MultiInputLstmPolicy", "MultiInputGruPolicy"):
        model = RecurrentPPORollback(policy, SimpleMultiObsEnv(random_start=False), policy_kwargs=SMALL_NET, **TINY)
        assert model.policy.rnn_type == ("gru" if "Gru" in policy else "lstm")
    model.learn(16)  # Dict observations: the Dict recurrent buffer


def test_cnn_gru_policy():
    from stable_baselines3.common.envs import FakeImageEnv

    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=False)
    policy_kwargs = dict(action_distribution="beta", features_extractor_kwargs=dict(features_dim=16), **SMALL_NET)
    model = RecurrentPPORollback("CnnGruPolicy", env, policy_kwargs=policy_kwargs, n_steps=8, batch_size=8, n_epochs=1)
    model.learn(16)


def test_rnn_type_kwarg_overrides_alias_default():
    model = RecurrentPPORollback("MlpLstmPolicy", "CartPole-v1", policy_kwargs=dict(rnn_type="gru", **SMALL_NET), **TINY)
    assert isinstance(model.policy.lstm_actor, LSTMCompatibleGRU)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rnn_type"):
        RecurrentPPORollback("MlpLstmPolicy", "CartPole-v1", policy_kwargs=dict(rnn_type="rnn"))
    with pytest.raises(ValueError, match="rollback_alpha"):
        RecurrentPPORollback("MlpLstmPolicy", "CartPole-v1", rollback_alpha=-0.1)
    with pytest.raises(ValueError, match="recurrent policy"):
        RecurrentPPORollback(CherryActorCriticPolicy, "CartPole-v1")
    with pytest.raises(ValueError, match="not available"):
        RecurrentPPORollback("MlpGruPolicy", "CartPole-v1", policy_kwargs=dict(action_distribution="beta"))


def test_gru_wrapper_matches_gru_and_resets():
    th.manual_seed(0)
    wrapper = LSTMCompatibleGRU(3, 5, num_layers=2)
    gru = nn.GRU(3, 5, num_layers=2)
    gru.load_state_dict(wrapper.state_dict())
    x, h = th.randn(6, 4, 3), th.randn(2, 4, 5)
    out, (h_n, c_n) = wrapper(x, (h, th.randn(2, 4, 5)))
    ref_out, ref_h = gru(x, h)
    assert th.equal(out, ref_out) and th.equal(h_n, ref_h) and th.equal(c_n, th.zeros_like(h_n))

    # contrib's _process_sequence with an episode start in the middle of a sequence == two separate sequences
    features = th.randn(1 * 6, 3)  # one sequence of length 6
    starts = th.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    state = (th.randn(2, 1, 5), th.zeros(2, 1, 5))
    latent, (h_end, c_end) = RecurrentActorCriticPolicy._process_sequence(features, state, starts, wrapper)
    first, _ = gru(features[:3].unsqueeze(1), state[0])
    second, h_ref = gru(features[3:].unsqueeze(1), th.zeros(2, 1, 5))
    th.testing.assert_close(latent, th.cat([first, second]).squeeze(1))
    th.testing.assert_close(h_end, h_ref)
    assert th.equal(c_end, th.zeros_like(c_end))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_alpha_zero_reproduces_sb3_contrib_recurrent_ppo(env_id):
    kwargs = dict(n_steps=32, batch_size=24, n_epochs=2, seed=3, clip_range_vf=0.5, ent_coef=0.01)
    policy_kwargs = dict(lstm_hidden_size=16, net_arch=[16])
    env_kwargs = dict(n_envs=2, seed=5)
    # construct and learn one after the other: the seed is applied at construction, to the global generators
    contrib = RecurrentPPO("MlpLstmPolicy", make_vec_env(env_id, **env_kwargs), policy_kwargs=policy_kwargs, **kwargs)
    contrib.learn(128)
    ours = RecurrentPPORollback(
        "MlpLstmPolicy", make_vec_env(env_id, **env_kwargs), policy_kwargs=policy_kwargs, rollback_alpha=0.0, **kwargs
    )
    ours.learn(128)
    np.testing.assert_array_equal(_params(contrib), _params(ours))


def test_alpha_zero_reproduces_sb3_contrib_recurrent_ppo_when_ratios_sit_on_the_clip_bounds():
    # a tiny clip range puts many ratios one float past 1 +- eps, where th.min shares the gradient between equal sides
    kwargs = dict(n_steps=64, batch_size=32, n_epochs=10, seed=3, clip_range=1e-5, learning_rate=1e-5)
    contrib = RecurrentPPO("MlpLstmPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=5), policy_kwargs=SMALL_NET, **kwargs)
    contrib.learn(512)
    ours = RecurrentPPORollback(
        "MlpLstmPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=5), policy_kwargs=SMALL_NET, rollback_alpha=0.0, **kwargs
    )
    ours.learn(512)
    np.testing.assert_array_equal(_params(contrib), _params(ours))


class _ResetCarriedStates(BaseCallback):
    """Resets env 0's carried recurrent states in place at every step and all of them at the end of each rollout."""

    def _on_step(self) -> bool:
        for pair in self.model._last_lstm_states:
            for tensor in pair:
                tensor[:, 0] = 0.0
        return True

    def _on_rollout_end(self) -> None:
        self.model._last_lstm_states.pi[0].zero_()


class _RawRewards(BaseCallback):
    """The rewards of each step as the env returned them (before contrib folds the truncations' values in)."""

    def __init__(self):
        super().__init__()
        self.raw: list[np.ndarray] = []

    def _on_step(self) -> bool:
        self.raw.append(np.array(self.locals["rewards"], np.float32))
        return True


def test_truncation_values_noted_for_recompute_are_the_ones_folded_into_the_rewards_despite_reset_states():
    # a callback resetting the carried states in place (as above) made the noted value of a truncation's terminal
    # observation come from a new forward pass started from the reset states, while contrib folded the value of the
    # states its own forward returned: recompute_returns then kept gamma * (folded - noted) in those rewards
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0, env_kwargs=dict(max_episode_steps=5))
    model = RecurrentPPORollback(
        "MlpLstmPolicy", env, n_steps=20, batch_size=20, n_epochs=1, seed=0, recompute_returns=True, policy_kwargs=SMALL_NET
    )
    model.learn(40)
    raw = _RawRewards()
    callback = CallbackList([raw, _ResetCarriedStates()])
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    buffer, rewards = model.rollout_buffer, np.array(raw.raw)
    folded = [(buffer.rewards[t, e] - rewards[t, e]) / model.gamma for t, e in buffer.truncation_steps]
    assert len(folded) == 8 and {e for _, e in buffer.truncation_steps} == {0, 1}
    np.testing.assert_allclose(buffer.truncation_values, folded, rtol=1e-5, atol=1e-6)


def test_callbacks_reset_carried_states_in_place_as_with_contrib():
    # the states were inference tensors during the rollout (collection runs in inference mode): contrib's callbacks
    # that reset them in place raised "Inplace update to inference tensor outside InferenceMode"
    kwargs = dict(n_steps=16, batch_size=16, n_epochs=1, seed=3, policy_kwargs=SMALL_NET)
    contrib = RecurrentPPO("MlpLstmPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=5), **kwargs)
    contrib.learn(64, callback=_ResetCarriedStates())
    ours = RecurrentPPORollback("MlpLstmPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=5), rollback_alpha=0.0, **kwargs)
    ours.learn(64, callback=_ResetCarriedStates())
    np.testing.assert_array_equal(_params(contrib), _params(ours))
    assert "forward" not in ours.policy.__dict__  # the collection's wrappers are gone


class _ThreeSwitches(gym.Env):
    """MultiBinary(3) actions, reward: the number of switches on."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.MultiBinary(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), float(np.sum(action)), False, self.t >= 5, {}


@pytest.mark.parametrize("policy", ["MlpLstmPolicy", "MlpGruPolicy"])
@pytest.mark.parametrize("kwargs", [{}, dict(recompute_returns=True, returns_estimator="vtrace")])
def test_multi_binary_actions(policy, kwargs):
    # SB3 stores MultiBinary actions as int8 and its feed-forward buffer hands them out as float32; contrib's recurrent
    # buffer handed out the int8 (contrib's RecurrentPPO fails the same way): the Bernoulli log-prob refused them
    model = RecurrentPPORollback(
        policy, make_vec_env(_ThreeSwitches, n_envs=2, seed=0), policy_kwargs=SMALL_NET, seed=0, **TINY, **kwargs
    )
    model.learn(64)
    actions = model.rollout_buffer.actions
    assert actions.dtype == np.float32 and set(np.unique(actions)) <= {0.0, 1.0}
    sample = next(model.rollout_buffer.get(16))
    stored = model.policy.evaluate_actions(sample.observations, sample.actions, sample.lstm_states, sample.episode_starts)[1]
    mask = sample.mask > 1e-8
    # as a torch Bernoulli of the same logits: the log-probs of the stored actions
    with th.no_grad():
        features = model.policy.extract_features(sample.observations)
        latent, _ = model.policy._process_sequence(
            features, sample.lstm_states.pi, sample.episode_starts, model.policy.lstm_actor
        )
        logits = model.policy.action_net(model.policy.mlp_extractor.forward_actor(latent))
    reference = th.distributions.Bernoulli(logits=logits).log_prob(sample.actions).sum(dim=1)
    th.testing.assert_close(stored[mask].detach(), reference[mask])


@pytest.mark.parametrize(
    "estimator, kwargs",
    [("gae", {}), ("one_step", {}), ("n_step", dict(n_step=3)), ("vtrace", dict(rho_bar=1.0, c_bar=0.9))],
)
def test_returns_estimators(estimator, kwargs, monkeypatch):
    # The recurrent buffer's returns and advantages equal those of the feed-forward CherryRolloutBuffer (whose
    # estimators are checked against hand-written loops in test_returns / test_ppo_rollback) fed the same rollout
    from sb3_cherry.common.buffers import CherryRolloutBuffer
    from sb3_cherry.ppo_recurrent.buffers import CherryRecurrentRolloutBuffer

    env = make_vec_env("CartPole-v1", n_envs=2, seed=1)  # random-policy episodes end inside the 64-step rollout
    model = RecurrentPPORollback(
        "MlpGruPolicy",
        env,
        n_steps=64,
        batch_size=64,
        gamma=0.9,
        gae_lambda=0.8,
        policy_kwargs=SMALL_NET,
        seed=0,
        returns_estimator=estimator,
        **kwargs,
    )
    buffer = model.rollout_buffer
    assert isinstance(buffer, CherryRecurrentRolloutBuffer) and buffer.returns_estimator == estimator
    calls = []
    original = CherryRecurrentRolloutBuffer.compute_returns_and_advantage

    def spy(self, last_values, dones):
        calls.append((last_values.clone(), np.array(dones)))
        original(self, last_values, dones)

    monkeypatch.setattr(CherryRecurrentRolloutBuffer, "compute_returns_and_advantage", spy)
    _, callback = model._setup_learn(128, None)
    model.collect_rollouts(model.env, callback, buffer, n_rollout_steps=model.n_steps)
    assert len(calls) == 1 and buffer.episode_starts[1:].any()

    reference = CherryRolloutBuffer(
        64,
        env.observation_space,
        env.action_space,
        gamma=0.9,
        gae_lambda=0.8,
        n_envs=2,
        returns_estimator=estimator,
        **kwargs,
    )
    reference.rewards, reference.values = buffer.rewards.copy(), buffer.values.copy()
    reference.episode_starts = buffer.episode_starts.copy()
    reference.compute_returns_and_advantage(*calls[0])
    np.testing.assert_array_equal(buffer.returns, reference.returns)
    np.testing.assert_array_equal(buffer.advantages, reference.advantages)
    gae_reference = CherryRolloutBuffer(64, env.observation_space, env.action_space, gamma=0.9, gae_lambda=0.8, n_envs=2)
    gae_reference.rewards, gae_reference.values = buffer.rewards.copy(), buffer.values.copy()
    gae_reference.episode_starts = buffer.episode_starts.copy()
    gae_reference.compute_returns_and_advantage(*calls[0])
    # the choice reached the buffer: anything but GAE gives other advantages
    assert np.array_equal(buffer.advantages, gae_reference.advantages) == (estimator == "gae")
    model.learn(64)  # and trains


def test_recurrent_estimator_errors():
    with pytest.raises(ValueError, match="returns_estimator"):
        RecurrentPPORollback("MlpGruPolicy", "CartPole-v1", returns_estimator="td")
    with pytest.raises(ValueError, match="n_step"):
        RecurrentPPORollback("MlpGruPolicy", "CartPole-v1", returns_estimator="n_step", n_step=0)


def test_default_alpha_differs_and_logs_rollback_fraction():
    kwargs = dict(n_steps=32, batch_size=32, n_epochs=10, seed=3, learning_rate=1e-2, policy_kwargs=SMALL_NET)
    contrib = RecurrentPPO("MlpLstmPolicy", "CartPole-v1", **kwargs).learn(32)
    ours = RecurrentPPORollback("MlpLstmPolicy", "CartPole-v1", **kwargs).learn(32)
    assert ours.rollback_alpha == 0.3
    assert ours.logger.name_to_value["train/rollback_fraction"] > 0
    assert not np.array_equal(_params(contrib), _params(ours))


def _episode(model, env: gym.Env, seed: int) -> tuple[list, tuple[np.ndarray, ...]]:
    """Deterministic actions over a whole episode, carrying the recurrent state."""
    obs, _ = env.reset(seed=seed)
    state, episode_start, actions = None, np.ones(1, dtype=bool), []
    for _ in range(300):
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=True)
        actions.append(action)
        obs, _, terminated, truncated, _ = env.step(action)
        episode_start = np.zeros(1, dtype=bool)
        if terminated or truncated:
            break
    return actions, state


def _flat(actions: list) -> np.ndarray:
    return np.concatenate([np.concatenate([np.ravel(c) for c in a]) if isinstance(a, tuple) else np.ravel(a) for a in actions])


@pytest.mark.parametrize(
    "policy, make_env, distribution",
    [
        ("MlpGruPolicy", cartpole_no_vel, None),
        ("MlpLstmPolicy", lambda: gym.make("Pendulum-v1", max_episode_steps=60), "beta"),
        ("MlpGruPolicy", TupleEnv, None),
    ],
)
def test_save_load_episode(tmp_path, policy, make_env, distribution):
    model = RecurrentPPORollback(
        policy, make_env(), policy_kwargs=dict(action_distribution=distribution, **SMALL_NET), seed=0, **TINY
    )
    model.learn(32)
    before, state_before = _episode(model, make_env(), seed=42)
    model.save(tmp_path / "model")

    loaded = RecurrentPPORollback.load(tmp_path / "model", env=make_env())
    assert loaded.policy.rnn_type == model.policy.rnn_type
    assert loaded.rollback_alpha == model.rollback_alpha
    np.testing.assert_array_equal(_params(model), _params(loaded))
    after, state_after = _episode(loaded, make_env(), seed=42)
    assert len(before) == len(after) > 1
    np.testing.assert_array_equal(_flat(before), _flat(after))
    for a, b in zip(state_before, state_after, strict=True):
        np.testing.assert_array_equal(a, b)
    loaded.learn(32)


def test_load_errors(tmp_path):
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="RecurrentPPORollback"):
        RecurrentPPORollback.load(garbage)
    with pytest.raises(FileNotFoundError):
        RecurrentPPORollback.load(tmp_path / "missing")


def test_policy_save_load(tmp_path):
    model = RecurrentPPORollback("MlpGruPolicy", TupleEnv(), policy_kwargs=SMALL_NET, seed=0, **TINY)
    model.policy.save(tmp_path / "policy.pth")
    policy = type(model.policy).load(tmp_path / "policy.pth")
    assert isinstance(policy.lstm_actor, LSTMCompatibleGRU)
    obs = np.stack([model.observation_space.sample() for _ in range(4)])
    np.testing.assert_array_equal(
        _flat(model.predict(obs, deterministic=True)[0]), _flat(policy.predict(obs, deterministic=True)[0])
    )


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
def test_predict_state_and_episode_start(rnn_type):
    model = RecurrentPPORollback(
        "MlpLstmPolicy", TupleEnv(), policy_kwargs=dict(rnn_type=rnn_type, n_lstm_layers=2, **SMALL_NET), seed=0, **TINY
    )
    obs = np.stack([model.observation_space.sample() for _ in range(3)])
    actions, state = model.predict(obs, deterministic=True)
    # a batch gives a list of tuples, states are (hidden, cell), each (n_layers, n_envs, hidden_size)
    assert isinstance(actions, list) and len(actions) == 3 and all(model.action_space.contains(a) for a in actions)
    assert len(state) == 2 and state[0].shape == state[1].shape == (2, 3, 8)
    if rnn_type == "gru":
        assert not np.any(state[1])

    # the state is carried: a second step from it differs from a fresh start ...
    _, carried = model.predict(obs, state=state, episode_start=np.zeros(3, dtype=bool), deterministic=True)
    _, fresh = model.predict(obs, deterministic=True)
    assert not np.allclose(carried[0], fresh[0])
    # ... and episode_start resets it, per env
    starts = np.array([True, False, True])
    reset_actions, reset = model.predict(obs, state=state, episode_start=starts, deterministic=True)
    np.testing.assert_array_equal(reset[0][:, starts], fresh[0][:, starts])
    np.testing.assert_array_equal(reset[0][:, ~starts], carried[0][:, ~starts])
    assert _flat([reset_actions[0]]).tolist() == _flat([actions[0]]).tolist()

    # a single observation gives a single tuple
    single, single_state = model.predict(obs[0], deterministic=True)
    assert isinstance(single, tuple) and single_state[0].shape == (2, 1, 8)


def test_evaluate_policy():
    model = RecurrentPPORollback("MlpGruPolicy", "CartPole-v1", policy_kwargs=SMALL_NET, seed=0, **TINY)
    mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=2)
    assert mean > 0


# --- memory task (slow) ----------------------------------------------------------------------------------------------

# rl-zoo's ppo_lstm CartPoleNoVel-v1 entry (without normalize), GRU instead of LSTM. Measured (deterministic mean return
# over 20 episodes after 3e5 steps, seeds 0 / 1 / 2): 459.6 / 500.0 / 500.0. With n_epochs=10: 496.9 / 448.8 (seeds 0 / 1).
MEMORY_KWARGS = dict(
    n_steps=32,
    batch_size=256,
    gae_lambda=0.8,
    gamma=0.98,
    n_epochs=20,
    ent_coef=0.0,
    learning_rate=lambda progress: 1e-3 * progress,
    clip_range=lambda progress: 0.2 * progress,
)
MEMORY_POLICY_KWARGS = dict(ortho_init=False, activation_fn=nn.ReLU, net_arch=dict(pi=[64], vf=[64]))


@pytest.mark.slow
def test_memory_task_needs_recurrence(record_property):
    th.set_num_threads(1)
    budget = 300_000
    env = make_vec_env(cartpole_no_vel, n_envs=8, seed=0)
    gru = RecurrentPPORollback(
        "MlpGruPolicy",
        env,
        policy_kwargs=dict(lstm_hidden_size=64, enable_critic_lstm=True, **MEMORY_POLICY_KWARGS),
        seed=0,
        **MEMORY_KWARGS,
    ).learn(budget)
    gru_mean, _ = evaluate_policy(gru, make_vec_env(cartpole_no_vel, n_envs=1, seed=10_000), n_eval_episodes=20)

    env = make_vec_env(cartpole_no_vel, n_envs=8, seed=0)
    feed_forward = PPORollback("MlpPolicy", env, policy_kwargs=MEMORY_POLICY_KWARGS, seed=0, **MEMORY_KWARGS).learn(budget)
    ff_mean, _ = evaluate_policy(feed_forward, make_vec_env(cartpole_no_vel, n_envs=1, seed=10_000), n_eval_episodes=20)
    record_property("gru_mean_return", round(float(gru_mean), 3))
    record_property("feed_forward_mean_return", round(float(ff_mean), 3))
    assert gru_mean >= 450, f"GRU policy: {gru_mean:.1f}"
    assert ff_mean < 200, f"feed-forward policy: {ff_mean:.1f}"


def _collected(policy, policy_kwargs=None, estimator="gae", env_id="CartPole-v1", n_envs=2, n_steps=64, seed=0):
    """A model and one collected rollout (random-policy CartPole episodes end inside the 64-step rollout)."""
    env = make_vec_env(env_id, n_envs=n_envs, seed=1)
    model = RecurrentPPORollback(
        policy,
        env,
        n_steps=n_steps,
        batch_size=32,
        n_epochs=3,
        gamma=0.9,
        gae_lambda=0.8,
        policy_kwargs={**SMALL_NET, **(policy_kwargs or {})},
        seed=seed,
        returns_estimator=estimator,
        recompute_returns=True,
    )
    _, callback = model._setup_learn(2 * n_steps * n_envs, None)
    # the second rollout starts from the non-zero recurrent states the first one ended with
    for _ in range(2):
        model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=n_steps)
    assert model.rollout_buffer.episode_starts[1:].any()
    assert np.abs(model.rollout_buffer.hidden_states_pi[0]).max() > 0
    return model


@pytest.mark.parametrize(
    "policy, policy_kwargs",
    [
        ("MlpLstmPolicy", None),
        ("MlpGruPolicy", None),
        ("MlpLstmPolicy", dict(shared_lstm=True, enable_critic_lstm=False)),
        ("MlpLstmPolicy", dict(enable_critic_lstm=False)),
        ("MlpLstmPolicy", dict(n_lstm_layers=2)),
    ],
)
@pytest.mark.parametrize("after_get", [False, True])
def test_replay_equals_the_collection(policy, policy_kwargs, after_get):
    # With the collection's weights, replaying each env's rollout as one sequence gives the values and log-probs the
    # collection computed step by step (contrib's forward with the carried states), and the bootstrap value of the
    # last observation from the final states
    model = _collected(policy, policy_kwargs)
    buffer = model.rollout_buffer
    stored_values = buffer.values.copy()  # (n_steps, n_envs)
    stored_log_probs = buffer.log_probs.copy()
    with th.no_grad():
        last_values = model.policy.predict_values(
            th.as_tensor(model._last_obs),
            model._last_lstm_states.vf,
            th.as_tensor(model._last_episode_starts, dtype=th.float32),
        )
    if after_get:
        next(buffer.get(32))
    values, log_probs, last = buffer.replay(model.policy, model._last_obs)
    np.testing.assert_allclose(buffer._unflat(values), stored_values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(buffer._unflat(log_probs), stored_log_probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(last, last_values.numpy().flatten(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("estimator", ["gae", "vtrace", "n_step"])
def test_recompute_with_unchanged_weights_keeps_the_targets(estimator):
    model = _collected("MlpLstmPolicy", estimator=estimator)
    buffer = model.rollout_buffer
    next(buffer.get(32))  # as in training: recompute runs before epochs 2, 3, ... on the flattened buffer
    returns, advantages = buffer.returns.copy(), buffer.advantages.copy()
    model._recompute_returns()
    np.testing.assert_allclose(buffer.returns, returns, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(buffer.advantages, advantages, rtol=1e-5, atol=1e-5)


def _rnn_step(rnn, features: th.Tensor, state: tuple) -> tuple[th.Tensor, tuple]:
    """One step of an LSTM or GRU on ``features`` (1, 1, n) from ``state`` ``(h, c)``; a GRU ignores ``c``."""
    if isinstance(rnn, nn.GRU):
        out, h = nn.GRU.forward(rnn, features, state[0])
        return out.reshape(1, -1), (h, th.zeros_like(h))
    out, new_state = nn.LSTM.forward(rnn, features, state)
    return out.reshape(1, -1), new_state


def _vtrace_by_hand(rewards, values, last_values, dones, ratios, gamma, lam):
    """
    V-trace targets from IMPALA's eq. 1 as a sum, episode by episode: v_s = V(x_s) + sum_{t >= s} gamma^(t-s)
    (prod_{i=s}^{t-1} c_i) delta_t, delta_t = rho_t (r_t + gamma V(x_{t+1}) - V(x_t)), rho_t = min(1, pi/mu),
    c_i = lam min(1, pi/mu); the advantage r_s + gamma v_{s+1} - V(x_s) (no rho_s: PPO's ratio weighs it).
    """
    n_steps, n_envs = rewards.shape
    targets, advantages = np.zeros((n_steps, n_envs)), np.zeros((n_steps, n_envs))
    for e in range(n_envs):
        next_value = [last_values[e] if t == n_steps - 1 else values[t + 1, e] for t in range(n_steps)]
        delta = [min(1.0, ratios[t, e]) * (rewards[t, e] + gamma * next_value[t] * (1 - dones[t, e]) - values[t, e])
                 for t in range(n_steps)]  # fmt: skip
        for s in range(n_steps):
            total, weight = 0.0, 1.0
            for t in range(s, n_steps):
                total += weight * delta[t]
                if dones[t, e]:
                    break
                weight *= gamma * lam * min(1.0, ratios[t, e])
            targets[s, e] = values[s, e] + total
        for s in range(n_steps):
            next_target = 0.0 if dones[s, e] else (last_values[e] if s == n_steps - 1 else targets[s + 1, e])
            advantages[s, e] = rewards[s, e] + gamma * next_target - values[s, e]
    return targets, advantages


@pytest.mark.parametrize("policy", ["MlpGruPolicy", "MlpLstmPolicy"])
def test_recompute_after_an_update_uses_the_new_actor_and_critic(policy):
    """
    After gradient steps, recomputed V-trace targets use the current critic's values and the current actor's pi / mu.
    Reference: actor and critic stepped by hand on their modules, one env and one step at a time (states carried,
    zeroed at episode starts, starting from those stored at the rollout's first step; not the replay's sequence path),
    and V-trace in IMPALA's sum form on them.
    """
    model = _collected(policy, estimator="vtrace")
    buffer, policy_net = model.rollout_buffer, model.policy
    assert len(buffer.truncation_steps) == 0  # random CartPole in 64 steps: failures only
    obs, actions, behaviour = buffer.observations.copy(), buffer.actions.copy(), buffer.log_probs.copy()
    rewards, starts = buffer.rewards.copy(), buffer.episode_starts.copy()
    dones = np.vstack([starts[1:], model._last_episode_starts[None]]).astype(bool)
    first = {
        "pi": (buffer.hidden_states_pi[0].copy(), buffer.cell_states_pi[0].copy()),
        "vf": (buffer.hidden_states_vf[0].copy(), buffer.cell_states_vf[0].copy()),
    }
    with th.no_grad():
        for p in policy_net.parameters():
            p.add_(0.05 * th.randn_like(p))
    policy_net.set_training_mode(False)
    next(buffer.get(32))  # flattened, as the trainer leaves it after the first epoch
    model._recompute_returns()

    n_steps, n_envs = rewards.shape
    values, ratios, last_values = np.zeros((n_steps, n_envs)), np.zeros((n_steps, n_envs)), np.zeros(n_envs)
    with th.no_grad():
        for e in range(n_envs):
            state = {key: tuple(th.as_tensor(s[:, e : e + 1]) for s in first[key]) for key in first}
            for t in range(n_steps + 1):
                if starts[t, e] if t < n_steps else dones[-1, e]:  # states zeroed at an episode's first step
                    state = {key: tuple(th.zeros_like(s) for s in state[key]) for key in state}
                x = th.as_tensor(obs[t, e] if t < n_steps else model._last_obs[e]).reshape(1, 1, -1)
                latent_vf, state["vf"] = _rnn_step(policy_net.lstm_critic, x, state["vf"])
                value = float(policy_net.value_net(policy_net.mlp_extractor.forward_critic(latent_vf)))
                if t == n_steps:
                    last_values[e] = value
                    break
                latent_pi, state["pi"] = _rnn_step(policy_net.lstm_actor, x, state["pi"])
                logits = policy_net.action_net(policy_net.mlp_extractor.forward_actor(latent_pi))
                log_pi = float(th.log_softmax(logits, dim=-1)[0, int(actions[t, e, 0])])
                values[t, e], ratios[t, e] = value, np.exp(log_pi - behaviour[t, e])
    targets, advantages = _vtrace_by_hand(rewards, values, last_values, dones, ratios, 0.9, 0.8)
    # the reference tells the actors apart: on-policy ratios (pi = mu) give other targets
    assert (
        np.abs(_vtrace_by_hand(rewards, values, last_values, dones, np.ones_like(ratios), 0.9, 0.8)[0] - targets).max() > 1e-3
    )
    np.testing.assert_allclose(buffer._unflat(buffer.returns), targets, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(buffer._unflat(buffer.advantages), advantages, rtol=1e-5, atol=1e-5)


def _critic_step(policy, obs, state):
    """
    One step of a recurrent critic written out on its modules (one env, Flatten features): the value of ``obs`` and
    the states after it. ``state`` is ``(h, c)``, each ``(num_layers, 1, hidden)``; a GRU ignores ``c``.
    """
    x = th.as_tensor(np.asarray(obs, dtype=np.float32)).reshape(1, 1, -1)
    rnn = policy.lstm_critic
    with th.no_grad():
        if isinstance(rnn, nn.GRU):
            out, h = nn.GRU.forward(rnn, x, state[0])
            new_state = (h, th.zeros_like(h))
        else:
            out, new_state = nn.LSTM.forward(rnn, x, state)
        value = policy.value_net(policy.mlp_extractor.forward_critic(out.reshape(1, -1)))
    return float(value), new_state


@pytest.mark.parametrize(
    "policy, policy_kwargs", [("MlpLstmPolicy", None), ("MlpGruPolicy", None), ("MlpLstmPolicy", dict(n_lstm_layers=2))]
)
def test_recompute_rebootstraps_truncations_with_the_replayed_critic(policy, policy_kwargs, raw_step_recorder, gae_by_hand):
    """
    sb3-contrib adds ``gamma * V(terminal observation)`` to the reward of a time-limit truncation, the critic taking
    one recurrent step from the states the truncated step led to. ``recompute_returns`` must replace that value by the
    current critic's, from the current critic's own states. Reference: the critic stepped by hand on its modules, one
    env and one step at a time (states carried, zeroed at episode starts, starting from those stored at the rollout's
    first step), and GAE written out on the raw rewards (copied by a callback before contrib's in-place bootstrap).
    Pendulum cut at 10 and 7 steps (only truncations; a different number per env, one at the last step), two rollouts
    (the second starts from non-zero states), two recomputes each (the correction replaces, it does not accumulate).
    """
    from stable_baselines3.common.vec_env import DummyVecEnv

    steps = raw_step_recorder.steps
    T, E, g, lam = 30, 2, 0.9, 0.8
    env = DummyVecEnv([lambda n=n: gym.make("Pendulum-v1", max_episode_steps=n) for n in (10, 7)])
    env.seed(0)
    model = RecurrentPPORollback(
        policy, env, n_steps=T, batch_size=30, n_epochs=2, gamma=g, gae_lambda=lam, seed=0, recompute_returns=True,
        policy_kwargs={**SMALL_NET, **(policy_kwargs or {})},
    )  # fmt: skip

    def reference(policy, obs, first_starts, first_states, last_obs, last_dones):
        """Values by hand; GAE on raw rewards + gamma * V(terminal obs); the truncations and their values."""
        v, last = np.zeros((T, E)), np.zeros(E)
        rewards, dones, truncations = np.zeros((T, E)), np.zeros((T, E), dtype=bool), {}
        for t, (raw, done, _) in enumerate(steps):
            rewards[t], dones[t] = raw, done
        for e in range(E):
            state = tuple(th.as_tensor(s[:, e : e + 1].copy()) for s in first_states)
            for t in range(T):
                start = first_starts[e] if t == 0 else dones[t - 1, e]
                if start:
                    state = tuple(th.zeros_like(s) for s in state)
                v[t, e], state = _critic_step(policy, obs[t, e], state)
                if dones[t, e]:
                    assert steps[t][2][e]["TimeLimit.truncated"]
                    truncations[(t, e)] = _critic_step(policy, steps[t][2][e]["terminal_observation"], state)[0]
                    rewards[t, e] += g * truncations[(t, e)]
            if last_dones[e]:
                state = tuple(th.zeros_like(s) for s in state)
            last[e] = _critic_step(policy, last_obs[e], state)[0]
        adv = gae_by_hand(rewards, v, last, dones, g, lam)
        return adv, adv + v, truncations

    _, callback = model._setup_learn(4 * T * E, raw_step_recorder)
    seen = []
    for _ in range(2):
        steps.clear()
        first_starts = model._last_episode_starts.copy()
        model.collect_rollouts(model.env, callback, model.rollout_buffer, T)
        buf = model.rollout_buffer
        obs, last_obs, last_dones = buf.observations.copy(), model._last_obs.copy(), buf.last_dones.copy()
        first_states = (buf.hidden_states_vf[0].copy(), buf.cell_states_vf[0].copy())  # (layers, envs, hidden)
        # the collection: contrib's bootstrap is the hand-stepped critic's, and the noted value is the one added
        _, _, collected = reference(model.policy, obs, first_starts, first_states, last_obs, last_dones)
        raw = np.stack([r for r, _, _ in steps])
        assert sorted(collected) == sorted(map(tuple, buf.truncation_steps)) and len(collected) in (7, 8)
        for (t, e), noted in zip(map(tuple, buf.truncation_steps), buf.truncation_values, strict=True):
            np.testing.assert_allclose(buf.rewards[t, e] - raw[t, e], g * noted, atol=1e-5)
            np.testing.assert_allclose(noted, collected[(t, e)], atol=1e-5)
        with th.no_grad():
            for p in model.policy.parameters():
                p.add_(0.1 * th.randn_like(p))
        model.policy.set_training_mode(False)
        next(buf.get(30))  # flattened, as the trainer leaves it after the first epoch
        for _ in range(2):
            model._recompute_returns()
            adv, ret, current = reference(model.policy, obs, first_starts, first_states, last_obs, last_dones)
            np.testing.assert_allclose(buf.advantages.reshape(E, T).T, adv, atol=2e-5)
            np.testing.assert_allclose(buf.returns.reshape(E, T).T, ret, atol=2e-5)
        assert max(abs(current[k] - collected[k]) for k in current) > 0.01  # the test tells the critics apart
        assert (T - 1, 0) in current  # a truncation at the last step
        seen.append(sorted(current))
    assert seen[0] != seen[1]


@pytest.mark.parametrize("policy_kwargs", [dict(shared_lstm=True, enable_critic_lstm=False), dict(enable_critic_lstm=False)])
def test_recompute_with_unchanged_weights_keeps_truncation_bootstraps(policy_kwargs):
    """
    With the collection's weights, the replay's values of the truncations' terminal observations are those contrib's
    collection added (a shared or a feed-forward critic; Dict observations), so the recomputed targets are unchanged.
    """
    from stable_baselines3.common.envs import SimpleMultiObsEnv
    from stable_baselines3.common.vec_env import DummyVecEnv

    env = DummyVecEnv([lambda n=n: gym.wrappers.TimeLimit(SimpleMultiObsEnv(random_start=True), n) for n in (5, 7)])
    model = RecurrentPPORollback(
        "MultiInputLstmPolicy", env, n_steps=32, batch_size=32, seed=0, recompute_returns=True,
        policy_kwargs={**SMALL_NET, **policy_kwargs},
    )  # fmt: skip
    _, callback = model._setup_learn(128, None)
    for _ in range(2):
        model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=32)
    buf = model.rollout_buffer
    assert len(buf.truncation_steps) >= 6
    returns, advantages = buf.returns.copy(), buf.advantages.copy()
    next(buf.get(32))
    model._recompute_returns()
    np.testing.assert_allclose(buf._unflat(buf.returns), returns, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(buf._unflat(buf.advantages), advantages, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(buf._replayed_truncation_values, buf.truncation_values, rtol=1e-5, atol=1e-5)


def test_recompute_rebootstraps_truncations_with_discrete_observations():
    """Discrete observations (stored as ``(1,)``, returned as ints) in the replayed terminal observations, several
    truncations per rollout: the recomputed targets with unchanged weights are the collected ones."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    env = DummyVecEnv([lambda: gym.make("FrozenLake-v1", is_slippery=False, max_episode_steps=5) for _ in range(2)])
    model = RecurrentPPORollback(
        "MlpLstmPolicy", env, n_steps=32, batch_size=32, n_epochs=2, seed=0, recompute_returns=True,
        policy_kwargs=SMALL_NET,
    )  # fmt: skip
    _, callback = model._setup_learn(64, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=32)
    buf = model.rollout_buffer
    assert len(buf.truncation_steps) > 1
    returns = buf.returns.copy()
    next(buf.get(32))
    model._recompute_returns()
    np.testing.assert_allclose(buf._unflat(buf.returns), returns, rtol=1e-5, atol=1e-5)


def test_recurrent_recompute_returns_trains(monkeypatch):
    from sb3_cherry.ppo_recurrent.buffers import CherryRecurrentRolloutBuffer

    calls = []
    original = CherryRecurrentRolloutBuffer.recompute_returns_and_advantage

    def spy(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CherryRecurrentRolloutBuffer, "recompute_returns_and_advantage", spy)
    kwargs = {**TINY, "n_epochs": 3}
    model = RecurrentPPORollback(
        "MlpGruPolicy", "CartPole-v1", recompute_returns=True, returns_estimator="vtrace", policy_kwargs=SMALL_NET, **kwargs
    )
    model.learn(32)
    assert len(calls) == 2 * 2  # epochs 2 and 3 of each of the two updates


def test_replay_dict_observations():
    from stable_baselines3.common.envs import SimpleMultiObsEnv
    from stable_baselines3.common.utils import obs_as_tensor

    env = make_vec_env(lambda: SimpleMultiObsEnv(random_start=True), n_envs=2, seed=1)
    model = RecurrentPPORollback(
        "MultiInputLstmPolicy", env, n_steps=64, batch_size=32, policy_kwargs=SMALL_NET, seed=0, recompute_returns=True
    )
    _, callback = model._setup_learn(256, None)
    for _ in range(2):
        model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=64)
    buffer = model.rollout_buffer
    stored_values, stored_log_probs = buffer.values.copy(), buffer.log_probs.copy()
    with th.no_grad():
        last_values = model.policy.predict_values(
            obs_as_tensor(model._last_obs, "cpu"),
            model._last_lstm_states.vf,
            th.as_tensor(model._last_episode_starts, dtype=th.float32),
        )
    next(buffer.get(32))
    values, log_probs, last = buffer.replay(model.policy, model._last_obs)
    np.testing.assert_allclose(buffer._unflat(values), stored_values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(buffer._unflat(log_probs), stored_log_probs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(last, last_values.numpy().flatten(), rtol=1e-5, atol=1e-5)


def test_gru_collection_and_minibatches_equal_a_plain_torch_gru_loop():
    """
    The GRU policy's collected values / log-probabilities, and its training-time evaluation of sb3-contrib's padded
    minibatches, equal a step-by-step loop over plain ``torch.nn.GRU`` modules holding the same weights, with the
    hidden state zeroed at each episode start (2 envs, episode ends inside the rollout, 2 GRU layers).
    """
    env = make_vec_env("CartPole-v1", n_envs=2, seed=1)
    model = RecurrentPPORollback(
        "MlpGruPolicy", env, n_steps=40, batch_size=20, n_epochs=1, seed=0,
        policy_kwargs=dict(lstm_hidden_size=6, net_arch=[8], n_lstm_layers=2),
    )  # fmt: skip
    _, callback = model._setup_learn(200, None)
    for _ in range(2):  # the second rollout starts from hidden states carried over
        model.collect_rollouts(model.env, callback, model.rollout_buffer, 40)
    buf, policy = model.rollout_buffer, model.policy
    actor, critic = nn.GRU(4, 6, 2), nn.GRU(4, 6, 2)
    actor.load_state_dict(policy.lstm_actor.state_dict())
    critic.load_state_dict(policy.lstm_critic.state_dict())
    obs, actions, starts = th.as_tensor(buf.observations), th.as_tensor(buf.actions).long(), buf.episode_starts
    assert starts[1:].sum() > 0
    h_pi, h_vf = th.as_tensor(buf.hidden_states_pi[0]), th.as_tensor(buf.hidden_states_vf[0])
    values, log_probs = np.zeros((40, 2)), np.zeros((40, 2))
    with th.no_grad():
        for t in range(40):
            keep = th.as_tensor(1 - starts[t], dtype=th.float32).view(1, 2, 1)
            out_pi, h_pi = actor(obs[t].unsqueeze(0), h_pi * keep)
            out_vf, h_vf = critic(obs[t].unsqueeze(0), h_vf * keep)
            logits = policy.action_net(policy.mlp_extractor.forward_actor(out_pi[0]))
            log_probs[t] = th.log_softmax(logits, -1).gather(1, actions[t]).squeeze(1).numpy()
            values[t] = policy.value_net(policy.mlp_extractor.forward_critic(out_vf[0])).squeeze(1).numpy()
    np.testing.assert_allclose(buf.values, values, atol=1e-6)
    np.testing.assert_allclose(buf.log_probs, log_probs, atol=1e-6)
    for data in buf.get(20):  # padded sequences: the real samples evaluate to what was collected
        with th.no_grad():
            v, lp, _ = policy.evaluate_actions(
                data.observations, data.actions.long().flatten(), data.lstm_states, data.episode_starts
            )
        mask = data.mask > 0.5
        np.testing.assert_allclose(lp[mask].numpy(), data.old_log_prob[mask].numpy(), atol=1e-6)
        np.testing.assert_allclose(v.flatten()[mask].numpy(), data.old_values[mask].numpy(), atol=1e-6)


def _layer_calls(layer: nn.Module) -> list[int]:
    """A list that grows by one entry per call of ``layer``."""
    calls: list[int] = []
    layer.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_whole_sequences_equal_contribs_step_by_step_loop(rnn_type, n_layers):
    """
    With ``whole_sequences``, padded sequences whose episodes start only at their first step run in ONE call of the
    recurrent layer and give contrib's step-by-step loop's outputs, final states and gradients (weights, features)
    up to float rounding, states reset where the first step starts an episode.
    """
    policy = RecurrentPPORollback(
        "MlpLstmPolicy", "CartPole-v1", policy_kwargs=dict(rnn_type=rnn_type, whole_sequences=True), **TINY
    ).policy
    th.manual_seed(0)
    layer = make_rnn(rnn_type, 3, 5, n_layers)
    n_seq, length = 4, 6
    starts = th.zeros(n_seq, length)
    starts[[0, 2], 0] = 1.0  # sequences 0 and 2 start an episode (their states are reset), 1 and 3 continue one
    states = (
        th.randn(n_layers, n_seq, 5),
        th.randn(n_layers, n_seq, 5) if rnn_type == "lstm" else th.zeros(n_layers, n_seq, 5),
    )
    features = th.randn(n_seq * length, 3)
    results = []
    for process in (RecurrentActorCriticPolicy._process_sequence, policy._process_sequence):
        layer.zero_grad()
        inputs = features.clone().requires_grad_(True)
        calls = _layer_calls(layer)
        output, (h_n, c_n) = process(inputs, states, starts.reshape(-1), layer)
        (output.square().sum() + h_n.sum() + c_n.square().sum()).backward()
        results.append((output, h_n, c_n, inputs.grad, [p.grad.clone() for p in layer.parameters()], len(calls)))
        layer._forward_hooks.clear()
    (out_ref, h_ref, c_ref, dx_ref, dw_ref, calls_ref), (out, h, c, dx, dw, calls) = results
    assert (calls_ref, calls) == (length, 1)
    for ours, reference in [(out, out_ref), (h, h_ref), (c, c_ref), (dx, dx_ref), *zip(dw, dw_ref, strict=True)]:
        th.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    # the reset is there: without it, sequence 0's outputs differ
    free, _ = layer(features.reshape(n_seq, length, 3).swapaxes(0, 1), states)
    assert not th.allclose(free.transpose(0, 1)[0], out.detach().reshape(n_seq, length, 5)[0], atol=1e-3)


@pytest.mark.parametrize(
    "starts, length, n_calls",
    [
        ([[0, 0, 1, 0], [1, 0, 0, 0]], 4, 4),  # an episode starts after a first step: contrib's loop
        ([[0, 0, 0, 0], [0, 0, 0, 0]], 4, 1),  # no start: contrib's single call
        ([[1], [0]], 1, 1),  # one step (collection): contrib's code
    ],
)
def test_whole_sequences_leave_other_batches_to_contrib(starts, length, n_calls):
    """Batches the one-call path does not cover are computed by contrib's code, bit for bit."""
    policy = RecurrentPPORollback(
        "MlpLstmPolicy", "CartPole-v1", policy_kwargs=dict(whole_sequences=True, **SMALL_NET), **TINY
    ).policy
    th.manual_seed(1)
    layer = nn.LSTM(3, 5)
    states = (th.randn(1, 2, 5), th.randn(1, 2, 5))
    features, flags = th.randn(2 * length, 3), th.tensor(starts, dtype=th.float32).reshape(-1)
    calls = _layer_calls(layer)
    output, (h_n, c_n) = policy._process_sequence(features, states, flags, layer)
    assert len(calls) == n_calls
    ref_output, (ref_h, ref_c) = RecurrentActorCriticPolicy._process_sequence(features, states, flags, layer)
    assert th.equal(output, ref_output) and th.equal(h_n, ref_h) and th.equal(c_n, ref_c)


def test_policy_without_the_switch_attribute_takes_contribs_loop():
    """A policy pickled before ``whole_sequences`` existed has no such attribute: the class default (off) applies."""
    policy = RecurrentPPORollback(
        "MlpLstmPolicy", "CartPole-v1", policy_kwargs=dict(whole_sequences=True, **SMALL_NET), **TINY
    ).policy
    del policy.__dict__["whole_sequences"]
    layer = nn.LSTM(3, 5)
    calls = _layer_calls(layer)
    starts = th.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).reshape(-1)
    policy._process_sequence(th.randn(6, 3), (th.zeros(1, 2, 5), th.zeros(1, 2, 5)), starts, layer)
    assert policy.whole_sequences is False and len(calls) == 3


@pytest.mark.parametrize("policy", ["MlpLstmPolicy", "MlpGruPolicy"])
def test_whole_sequences_evaluate_minibatches_to_the_collected_values(policy, tmp_path):
    """
    A model trained with ``whole_sequences``: contrib's padded minibatches (episode ends inside the rollout, states
    carried from the previous rollout) evaluate, in one call per sequence batch, to the values and log-probabilities
    collected step by step; the switch is saved with the model, and a bad value is refused.
    """
    model = RecurrentPPORollback(
        policy, make_vec_env("CartPole-v1", n_envs=2, seed=1), n_steps=40, batch_size=20, n_epochs=1, seed=0,
        policy_kwargs=dict(whole_sequences=True, lstm_hidden_size=6, net_arch=[8]),
    )  # fmt: skip
    _, callback = model._setup_learn(400, None)
    for rollout in range(6):  # from the second rollout on, states carried from the previous one
        model.collect_rollouts(model.env, callback, model.rollout_buffer, 40)
        if rollout > 0 and model.rollout_buffer.episode_starts[1:].sum() > 0:
            break
    buf = model.rollout_buffer
    assert buf.episode_starts[1:].sum() > 0
    calls = _layer_calls(model.policy.lstm_actor)
    for data in buf.get(20):
        with th.no_grad():
            values, log_prob, _ = model.policy.evaluate_actions(
                data.observations, data.actions.long().flatten(), data.lstm_states, data.episode_starts
            )
        mask = data.mask > 0.5
        np.testing.assert_allclose(log_prob[mask].numpy(), data.old_log_prob[mask].numpy(), atol=1e-6)
        np.testing.assert_allclose(values.flatten()[mask].numpy(), data.old_values[mask].numpy(), atol=1e-6)
    assert 1 <= len(calls) < 40  # one call per minibatch with starts, not one per step
    model.learn(80, reset_num_timesteps=False)
    model.save(tmp_path / "model.zip")
    assert RecurrentPPORollback.load(tmp_path / "model.zip").policy.whole_sequences is True
    with pytest.raises(ValueError, match="whole_sequences"):
        RecurrentPPORollback(policy, "CartPole-v1", policy_kwargs=dict(whole_sequences="yes"), **TINY)
