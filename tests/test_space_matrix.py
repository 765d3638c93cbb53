"""
The "untested" cells of docs/guide/algos.rst, each tried for real: CherryA2C with MultiDiscrete / MultiBinary / Tuple
actions and Dict observations, RecurrentPPORollback with MultiDiscrete, BCO with MultiDiscrete / MultiBinary, GAIL and
AIRL with MultiDiscrete / MultiBinary and with ``collection="async"``.

Each cell is checked against an independent reference, not only "learn() runs": the log-probabilities an update trains
on against torch.distributions (Categorical per MultiDiscrete column, Bernoulli for MultiBinary, the product for
Tuple), every action the env receives inside its action space (the envs assert it, shifted spaces included), SB3 /
sb3-contrib parameters bit for bit where they have the combination, the rewards GAIL / AIRL hand the generator against
the reward net, and save / load keeping the predictions.

Two bugs this found are fixed (AIRL's discriminator evaluated the int8 MultiBinary actions of imitation's replay buffer;
GAIL / AIRL accepted shifted Discrete / MultiDiscrete spaces, then imitation's one-hot encoding failed at the first step:
now refused at construction, as BCO does).
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3 import A2C
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_cherry import CherryA2C, RecurrentPPORollback
from sb3_cherry.adversarial import AIRL, GAIL
from sb3_cherry.bco import BCO
from sb3_cherry.common.spaces import flat_action_dim
from sb3_cherry.demos import demos_to_transitions, record_demos

SMALL_NET = dict(net_arch=[8])
SMALL_RNN = dict(lstm_hidden_size=8, net_arch=[8])
SHIFTED_MD = spaces.MultiDiscrete([3, 2], start=[1, -1])
# no two consecutive Gaussians (they would fuse into one head): the reference below reads one head per component
TUPLE = spaces.Tuple(
    (
        spaces.Discrete(3, start=1),
        spaces.MultiBinary(2),
        spaces.Box(-1, 1, (2,), np.float32),
        spaces.MultiDiscrete([2, 3], start=[0, -1]),
    )
)
TUPLE_DISTRIBUTIONS = ("categorical", "bernoulli", "normal", "multi_categorical")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------------- helpers
class CheckedEnv(gym.Env):
    """Any action space; asserts that every action it receives is in it. 7-step episodes, reward: columns equal to 1."""

    def __init__(self, action_space: spaces.Space, dict_obs: bool = False):
        self.action_space = action_space
        self.dict_obs = dict_obs
        box = spaces.Box(-1, 1, (3,), np.float32)
        self.observation_space = spaces.Dict({"x": box, "k": spaces.Discrete(4)}) if dict_obs else box

    def _obs(self):
        x = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return {"x": x, "k": int(self.np_random.integers(4))} if self.dict_obs else x

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        assert self.action_space.contains(action), (action, self.action_space)
        self.t += 1
        first = action[0] if isinstance(action, tuple) else action
        return self._obs(), float(np.sum(np.ravel(first) == 1)), self.t >= 7, False, {}


class WalkEnv(gym.Env):
    """
    ``s' = s + a - start - 1`` per column (MultiDiscrete / Discrete) or ``s' = s + a`` (MultiBinary): the action is
    readable from ``(s, s')`` (BCO's inverse model, GAIL's discriminator). Asserts every action is in its space;
    episodes of 8 steps (terminated: imitation wants a fixed horizon).
    """

    def __init__(self, action_space: spaces.Space):
        self.action_space = action_space
        self.observation_space = spaces.Box(-1e3, 1e3, (flat_action_dim(action_space),), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.s = self.np_random.integers(-3, 4, self.observation_space.shape).astype(np.float32)
        return self.s.copy(), {}

    def step(self, action):
        assert self.action_space.contains(action), (action, self.action_space)
        a = np.asarray(action, np.float32).reshape(-1)
        if not isinstance(self.action_space, spaces.MultiBinary):
            a = a - np.asarray(self.action_space.start, np.float32).reshape(-1) - 1
        self.s = self.s + a
        self.t += 1
        return self.s.copy(), 0.0, self.t >= 8, False, {}


class Scripted:
    """An "expert" playing a constant action."""

    def __init__(self, action):
        self.action = np.asarray(action)

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return np.repeat(self.action[None], len(obs), axis=0).reshape(len(obs), *self.action.shape), state


class RandomActions:
    """Uniformly random actions of a space (seeded)."""

    def __init__(self, space: spaces.Space, seed: int = 5):
        self.space = space
        self.space.seed(seed)

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return np.stack([self.space.sample() for _ in range(len(obs))]), state


def _param_dim(space: spaces.Space) -> int:
    if isinstance(space, spaces.Tuple):
        return sum(_param_dim(s) for s in space.spaces)
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(space.nvec.sum())
    if isinstance(space, spaces.MultiBinary):
        return int(np.prod(space.shape))
    return 2 * int(np.prod(space.shape))  # a 'normal' Box: [mean, log_std]


def reference_log_prob(space: spaces.Space, params: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """log pi(a) from torch.distributions, given the action head's output ``params`` and flat actions."""
    actions = actions.reshape(len(params), -1).float()
    if isinstance(space, spaces.Tuple):  # the product distribution: one head per component, in order
        total, p, a = th.zeros(len(params)), 0, 0
        for sub in space.spaces:
            p_dim, a_dim = _param_dim(sub), flat_action_dim(sub)
            total = total + reference_log_prob(sub, params[:, p : p + p_dim], actions[:, a : a + a_dim])
            p, a = p + p_dim, a + a_dim
        assert p == params.shape[1]
        return total
    if isinstance(space, spaces.Discrete):
        return th.distributions.Categorical(logits=params).log_prob(actions[:, 0].round().long() - int(space.start))
    if isinstance(space, spaces.MultiDiscrete):
        start = np.asarray(space.start).reshape(-1)
        columns = th.split(params, space.nvec.reshape(-1).tolist(), dim=1)
        return sum(
            th.distributions.Categorical(logits=logits).log_prob(actions[:, i].round().long() - int(start[i]))
            for i, logits in enumerate(columns)
        )
    if isinstance(space, spaces.MultiBinary):
        return th.distributions.Bernoulli(logits=params).log_prob(actions).sum(dim=1)
    dim = actions.shape[1]
    return th.distributions.Normal(params[:, :dim], params[:, dim:].exp()).log_prob(actions).sum(dim=1)


def record_log_probs(policy) -> list[tuple[th.Tensor, th.Tensor]]:
    """
    Wrap a feed-forward policy's ``evaluate_actions``: at every call (an update, BC, AIRL's discriminator), record the
    log-probabilities it returns and the torch.distributions reference on the same actions.
    """
    records = []
    evaluate = policy.evaluate_actions

    def recording(obs, actions, *args):
        out = evaluate(obs, actions, *args)
        with th.no_grad():
            features = policy.extract_features(obs)
            latent = policy.mlp_extractor.forward_actor(features if policy.share_features_extractor else features[0])
            reference = reference_log_prob(policy.action_space, policy.action_net(latent), actions)
        records.append((out[1].detach().clone(), reference))
        return out

    policy.evaluate_actions = recording
    return records


def assert_log_probs_match(records) -> None:
    assert records, "no update evaluated the actions"
    for ours, reference in records:
        th.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def _params(model) -> np.ndarray:
    return th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().numpy()


def _flat(actions) -> np.ndarray:
    """Predictions as one array (a list of Tuple actions included)."""
    rows = actions if isinstance(actions, list) else list(actions)
    return np.concatenate([np.concatenate([np.ravel(c) for c in a]) if isinstance(a, tuple) else np.ravel(a) for a in rows])


def _contains(space: spaces.Space, action) -> bool:
    if isinstance(space, spaces.Tuple) or not isinstance(space, (spaces.MultiDiscrete, spaces.MultiBinary)):
        return space.contains(action)
    return space.contains(np.asarray(action).astype(space.dtype)) and np.array_equal(action, np.round(action))


# ---------------------------------------------------------------------------------------------------- CherryA2C
@pytest.mark.parametrize(
    "space, dict_obs",
    [(spaces.MultiDiscrete([3, 2]), False), (spaces.MultiBinary(3), False), (spaces.Discrete(3), True),
     (spaces.MultiDiscrete([3, 2]), True)],
    ids=["multi_discrete", "multi_binary", "dict_obs", "dict_obs_multi_discrete"],
)  # fmt: skip
def test_a2c_reproduces_sb3_a2c(space, dict_obs):
    # SB3's A2C has these combinations: the default distributions and buffers must give its parameters bit for bit
    policy = "MultiInputPolicy" if dict_obs else "MlpPolicy"
    kwargs = dict(n_steps=8, seed=3, ent_coef=0.01, policy_kwargs=SMALL_NET)
    sb3 = A2C(policy, make_vec_env(lambda: CheckedEnv(space, dict_obs), n_envs=2, seed=1), **kwargs).learn(160)
    ours = CherryA2C(policy, make_vec_env(lambda: CheckedEnv(space, dict_obs), n_envs=2, seed=1), **kwargs).learn(160)
    np.testing.assert_array_equal(_params(sb3), _params(ours))


@pytest.mark.parametrize(
    "space, distribution, dict_obs",
    [
        (spaces.MultiDiscrete([3, 2]), None, False),
        (SHIFTED_MD, None, False),
        (spaces.MultiBinary(3), None, False),
        (TUPLE, TUPLE_DISTRIBUTIONS, False),
        (TUPLE, TUPLE_DISTRIBUTIONS, True),
    ],
    ids=["multi_discrete", "shifted_multi_discrete", "multi_binary", "tuple", "tuple_dict_obs"],
)
def test_a2c_log_probs_actions_and_save_load(tmp_path, space, distribution, dict_obs):
    # the update's log pi(a) equals torch's on the stored actions (a shifted MultiDiscrete's start subtracted, Tuple
    # components summed), the env asserts every action, and a saved model predicts the same actions
    policy = "MultiInputPolicy" if dict_obs else "MlpPolicy"
    env = make_vec_env(lambda: CheckedEnv(space, dict_obs), n_envs=2, seed=1)
    model = CherryA2C(policy, env, n_steps=8, seed=0, policy_kwargs=dict(action_distribution=distribution, **SMALL_NET))
    records = record_log_probs(model.policy)
    model.learn(160)
    assert len(records) == 10
    assert_log_probs_match(records)
    obs = [model.observation_space.sample() for _ in range(6)]
    obs = {k: np.stack([o[k] for o in obs]) for k in obs[0]} if dict_obs else np.stack(obs)
    before, _ = model.predict(obs, deterministic=True)
    assert all(_contains(space, action) for action in before)
    model.save(tmp_path / "a2c")
    loaded = CherryA2C.load(tmp_path / "a2c", env=make_vec_env(lambda: CheckedEnv(space, dict_obs), n_envs=2, seed=2))
    np.testing.assert_array_equal(_flat(before), _flat(loaded.predict(obs, deterministic=True)[0]))
    loaded.learn(16)  # and the loaded model trains on


# ----------------------------------------------------------------------------------------- RecurrentPPORollback
def test_recurrent_multi_discrete_reproduces_sb3_contrib():
    # contrib's RecurrentPPO has MultiDiscrete: rollback_alpha=0 must give its parameters bit for bit
    kwargs = dict(n_steps=16, batch_size=8, n_epochs=2, seed=3, ent_coef=0.01, policy_kwargs=SMALL_RNN)
    space = spaces.MultiDiscrete([3, 2])
    contrib = RecurrentPPO("MlpLstmPolicy", make_vec_env(lambda: CheckedEnv(space), n_envs=2, seed=5), **kwargs)
    contrib.learn(64)
    ours = RecurrentPPORollback(
        "MlpLstmPolicy", make_vec_env(lambda: CheckedEnv(space), n_envs=2, seed=5), rollback_alpha=0.0, **kwargs
    )
    ours.learn(64)
    np.testing.assert_array_equal(_params(contrib), _params(ours))


@pytest.mark.parametrize("space", [spaces.MultiDiscrete([3, 2]), SHIFTED_MD], ids=["multi_discrete", "shifted"])
def test_recurrent_multi_discrete_log_probs_and_save_load(tmp_path, space):
    # the update's log pi(a) (through the recurrent latent of each sequence) equals one Categorical per column on the
    # stored actions; sb3-contrib pads sequences with action 0 (below the shifted space's start): those padded steps
    # are masked out of the loss, so only actions inside the space are compared
    model = RecurrentPPORollback(
        "MlpGruPolicy", make_vec_env(lambda: CheckedEnv(space), n_envs=2, seed=5), n_steps=16, batch_size=8,
        n_epochs=2, seed=3, policy_kwargs=SMALL_RNN,
    )  # fmt: skip
    policy, records = model.policy, []
    evaluate = policy.evaluate_actions
    low, n = th.as_tensor(np.asarray(space.start)), th.as_tensor(space.nvec)

    def recording(obs, actions, lstm_states, episode_starts):
        out = evaluate(obs, actions, lstm_states, episode_starts)
        with th.no_grad():
            latent, _ = policy._process_sequence(
                policy.extract_features(obs), lstm_states.pi, episode_starts, policy.lstm_actor
            )
            params = policy.action_net(policy.mlp_extractor.forward_actor(latent))
            inside = ((actions >= low) & (actions < low + n)).all(dim=1)
            records.append((out[1].detach()[inside], reference_log_prob(space, params[inside], actions[inside])))
        return out

    policy.evaluate_actions = recording
    model.learn(64)
    assert len(records) == 16
    assert_log_probs_match(records)
    obs = np.stack([model.observation_space.sample() for _ in range(4)])
    starts = np.ones(4, dtype=bool)
    before, _ = model.predict(obs, episode_start=starts, deterministic=True)
    assert all(space.contains(a) for a in before)
    model.save(tmp_path / "rppo")
    loaded = RecurrentPPORollback.load(tmp_path / "rppo")
    np.testing.assert_array_equal(before, loaded.predict(obs, episode_start=starts, deterministic=True)[0])


# ------------------------------------------------------------------------------------------------------------ BCO
@pytest.mark.parametrize(
    "space, expert_action",
    [(spaces.MultiDiscrete([3, 3]), [2, 0]), (spaces.MultiBinary(3), np.array([1, 0, 1], np.int8))],
    ids=["multi_discrete", "multi_binary"],
)
def test_bco_multi_discrete_and_multi_binary(tmp_path, space, expert_action):
    # the inverse model recovers the actions of fresh random transitions exactly, the cloning log pi(a) equals torch's
    # reference, the cloned policy plays the expert's action on the demonstrated states, every action the env gets
    # (random and policy phases) is in its space, and a saved model keeps its predictions and labels
    demos = record_demos(Scripted(expert_action), WalkEnv(space), n_episodes=4, seed=0)
    model = BCO(
        "MlpPolicy", WalkEnv(space), demonstrations=demos, alpha=0.5, n_pre_interactions=800, n_epochs_inverse=30,
        n_epochs_bc=20, learning_rate=3e-3, batch_size=64, inverse_model_kwargs=dict(net_arch=[32]),
        policy_kwargs=dict(net_arch=[16]), seed=0,
    )  # fmt: skip
    records = record_log_probs(model.policy)
    model.learn(1200)
    assert model._n_rounds == 2
    assert_log_probs_match(records)
    fresh = demos_to_transitions(record_demos(RandomActions(space), WalkEnv(space), n_episodes=20, seed=5))
    labels = model.infer_actions(fresh.obs, fresh.next_obs)
    np.testing.assert_array_equal(labels, fresh.acts)
    demo_obs = demos_to_transitions(demos).obs[:8]
    actions, _ = model.predict(demo_obs, deterministic=True)
    np.testing.assert_array_equal(actions, np.repeat(np.asarray(expert_action)[None], len(demo_obs), axis=0))
    model.save(tmp_path / "bco")
    loaded = BCO.load(tmp_path / "bco", env=WalkEnv(space))
    np.testing.assert_array_equal(actions, loaded.predict(demo_obs, deterministic=True)[0])
    np.testing.assert_array_equal(labels, loaded.infer_actions(fresh.obs, fresh.next_obs))


def test_bco_shifted_multi_discrete_is_refused_clearly():
    # not supported: refused at construction, naming the space (not a failure deep in training)
    with pytest.raises(ValueError, match=r"MultiDiscrete\(\[3 2\], start=\[ 1 -1\]\) does not start at 0"):
        BCO("MlpPolicy", WalkEnv(SHIFTED_MD))


# ---------------------------------------------------------------------------------------------------- GAIL / AIRL
def _adversarial(algo, space, demos, collection="sync", batch_size=32):
    return algo(
        "MlpPolicy", make_vec_env(lambda: WalkEnv(space), n_envs=2, seed=0), demonstrations=demos,
        generator_kwargs=dict(n_steps=32, batch_size=batch_size, n_epochs=1, collection=collection), demo_batch_size=32,
        policy_kwargs=SMALL_NET, reward_net_kwargs=dict(hid_sizes=[8]), seed=0,
    )  # fmt: skip


class _RewardCheck(BaseCallback):
    """
    At every generator step, the reward the generator received against the reward net's on the raw transition (GAIL:
    softplus(logit) = -log(1 - D); AIRL: g(s, a) + gamma (1 - done) h(s') - h(s)), and the actions executed in the space.
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind, self.max_error, self.steps = kind, 0.0, 0

    def _on_rollout_start(self) -> None:
        self.previous = self.model.generator._last_obs.copy()

    def _on_step(self) -> bool:
        local, net = self.locals, self.model.reward_net
        actions = local["clipped_actions"]
        assert all(_contains(self.model.action_space, a) for a in actions)
        next_obs = local["new_obs"].copy()
        for i in np.flatnonzero(local["dones"]):
            next_obs[i] = local["infos"][i]["terminal_observation"]
        was_training = net.training
        net.eval()
        with th.no_grad():
            obs, acts, nxt, done = net.preprocess(self.previous, actions, next_obs, local["dones"])
            if self.kind == "gail":
                expected = th.nn.functional.softplus(net(obs, acts, nxt, done))
            else:
                h, h_next = net.potential(obs).flatten(), net.potential(nxt).flatten()
                expected = net.base(obs, acts, nxt, done) + net.discount_factor * (1 - done.float()) * h_next - h
        net.train(was_training)
        self.max_error = max(self.max_error, float(np.abs(expected.numpy() - local["rewards"]).max()))
        self.steps += 1
        self.previous = local["new_obs"].copy()
        return True


ADVERSARIAL_CELLS = [
    pytest.param(GAIL, spaces.MultiDiscrete([3, 3]), [2, 0], id="gail-multi_discrete"),
    pytest.param(GAIL, spaces.MultiBinary(3), np.array([1, 0, 1], np.int8), id="gail-multi_binary"),
    pytest.param(AIRL, spaces.MultiDiscrete([3, 3]), [2, 0], id="airl-multi_discrete"),
    pytest.param(AIRL, spaces.MultiBinary(3), np.array([1, 0, 1], np.int8), id="airl-multi_binary"),
]


@pytest.mark.parametrize("algo, space, expert_action", ADVERSARIAL_CELLS)
def test_adversarial_multi_discrete_and_multi_binary(tmp_path, algo, space, expert_action):
    # the generator's rewards are the reward net's on the executed (in-space) actions, the discriminator trains after
    # each rollout on the executed actions, the log pi(a) the generator (and AIRL's discriminator) evaluates equals
    # torch's reference, and the saved model predicts the same actions
    demos = record_demos(Scripted(expert_action), WalkEnv(space), n_episodes=8, seed=0)
    model = _adversarial(algo, space, demos)
    records = record_log_probs(model.generator.policy)
    initial = {k: v.clone() for k, v in model.reward_net.state_dict().items()}
    check = _RewardCheck("gail" if algo is GAIL else "airl")
    model.learn(256, callback=check)
    assert check.steps == 128 and check.max_error < 1e-5
    assert model.trainer._disc_step == 4 * 2  # 4 rollouts, 2 updates each
    assert any(not th.equal(v, initial[k]) for k, v in model.reward_net.state_dict().items())
    buffer = model.trainer._gen_replay_buffer
    acts = buffer._buffer._arrays["acts"][: buffer.size()]
    assert buffer.size() == 64 and all(_contains(space, a) for a in acts)
    assert len(records) == 4 * 2 + (4 * 2 if algo is AIRL else 0)  # PPO minibatches (+ AIRL's discriminator batches)
    assert_log_probs_match(records)
    obs = demos_to_transitions(demos).obs[:8]
    before, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "adv")
    np.testing.assert_array_equal(before, algo.load(tmp_path / "adv").predict(obs, deterministic=True)[0])


@pytest.mark.parametrize("algo", [GAIL, AIRL])
@pytest.mark.parametrize(
    "space, expert_action", [(SHIFTED_MD, [3, -1]), (spaces.Discrete(3, start=1), 3)], ids=["multi_discrete", "discrete"]
)
def test_adversarial_shifted_discrete_spaces_are_refused_clearly(algo, space, expert_action):
    # imitation's reward nets one-hot encode actions without the space's start: accepted, such a space failed at the
    # first generator step inside torch's one_hot; refused at construction, naming the space
    demos = record_demos(Scripted(expert_action), WalkEnv(space), n_episodes=8, seed=0)
    with pytest.raises(ValueError, match=rf"{algo.__name__}: the action space .* does not start at 0"):
        _adversarial(algo, space, demos)


class _BehaviourWeights(BaseCallback):
    """Notes the weights each rollout is collected with (the behaviour policy)."""

    def _on_rollout_start(self) -> None:
        self.model.behaviour = th.nn.utils.parameters_to_vector(self.model.policy.parameters()).detach().clone()

    def _on_step(self) -> bool:
        return True


@pytest.mark.parametrize("algo", [GAIL, AIRL])
def test_adversarial_async_collection(algo):
    # collection="async": the first update is the sync one (no lag yet; to float rounding only, see below), then a
    # discriminator round follows each rollout, the generator's rewards are the reward net's, and AIRL evaluates
    # log pi(a|s) with the policy that collected the rollout (the behaviour weights), as the class docstring says
    space = spaces.MultiDiscrete([3, 3])
    demos = record_demos(Scripted([2, 0]), WalkEnv(space), n_episodes=8, seed=0)
    # one minibatch per epoch: imitation's replay buffer draws its samples from the global np.random in the main
    # process, which moves the sync update's minibatch permutation but not the learner process's
    sync = _adversarial(algo, space, demos, batch_size=64).learn(64)
    async_ = _adversarial(algo, space, demos, "async", batch_size=64).learn(64)
    np.testing.assert_allclose(_params(async_), _params(sync), rtol=0, atol=1e-7)
    for ours, theirs in zip(async_.reward_net.state_dict().values(), sync.reward_net.state_dict().values(), strict=True):
        assert th.equal(ours, theirs)

    model = _adversarial(algo, space, demos, "async")
    behaviour_used = []
    if algo is AIRL:
        trainer = model.trainer
        evaluate = type(trainer)._get_log_policy_act_prob

        def noting(obs, acts):
            current = th.nn.utils.parameters_to_vector(trainer.policy.parameters()).detach()
            behaviour_used.append(th.equal(current, model.behaviour))
            return evaluate(trainer, obs, acts)

        trainer._get_log_policy_act_prob = noting
    check = _RewardCheck("gail" if algo is GAIL else "airl")
    model.learn(192, callback=[_BehaviourWeights(), check])
    assert check.steps == 96 and check.max_error < 1e-5
    assert model.trainer._disc_step == 3 * 2 and model.generator._n_updates == 3
    assert behaviour_used == ([True] * 6 if algo is AIRL else [])
    assert not np.array_equal(_params(model), _params(_adversarial(algo, space, demos).learn(192)))  # the lag is real
