"""The collection forward without module / distribution objects equals the policy's module path bit for bit."""

import re

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from sb3_cherry import PPORollback
from sb3_cherry.common.fast_forward import FastActorCriticForward
from sb3_cherry.common.policies import CherryActorCriticPolicy
from sb3_cherry.common.speed import distribution_validation, inference_forward

BOX_OBS = spaces.Box(-5.0, 5.0, (3,), np.float32)


def _policy(action_space, policy_class=CherryActorCriticPolicy, obs_space=BOX_OBS, **kwargs):
    th.manual_seed(0)
    return policy_class(obs_space, action_space, lambda _: 3e-4, **kwargs)


def _module_and_fast(policy, obs, deterministic, seed=123):
    """
    The module path and the fast path on the same observations, from the same random state (as during ``learn``:
    no argument validation, inference mode); both must leave the random stream in the same state.
    """
    fast = FastActorCriticForward.build(policy)
    assert fast is not None
    with distribution_validation(False), th.inference_mode():
        th.manual_seed(seed)
        expected = policy(obs, deterministic=deterministic)
        state = th.get_rng_state()
        th.manual_seed(seed)
        got = fast(obs, deterministic=deterministic)
        assert th.equal(th.get_rng_state(), state)
    return expected, got


CASES = [
    (spaces.Box(-1.0, 1.0, (2,), np.float32), {}),
    (spaces.Box(-1.0, 1.0, (2,), np.float32), {"activation_fn": th.nn.ReLU, "net_arch": [32, 16]}),
    (spaces.Box(-1.0, 1.0, (2, 2), np.float32), {"log_std_init": -0.7}),
    (spaces.Discrete(4), {}),
    (spaces.Discrete(5, start=-2), {"activation_fn": th.nn.ReLU}),
    (spaces.Box(-2.0, 3.0, (2,), np.float32), {"action_distribution": "beta"}),
    (spaces.Box(-1.0, 1.0, (2,), np.float32), {"action_distribution": "tanh_normal"}),
    (spaces.Discrete(3), {"action_distribution": "gumbel_softmax"}),
    (spaces.MultiDiscrete([3, 2]), {}),
    (spaces.MultiBinary(3), {}),
    (spaces.Tuple((spaces.Discrete(3), spaces.Box(0.0, 1.0, (2,), np.float32))), {}),
    (spaces.Box(-1.0, 1.0, (2,), np.float32), {"net_arch": {"pi": [8], "vf": [16, 16]}}),
    (spaces.Box(-1.0, 1.0, (2,), np.float32), {"net_arch": []}),
    (spaces.Box(-1.0, 1.0, (2,), np.float32), {"use_sde": True}),
]


@pytest.mark.parametrize("action_space, kwargs", CASES)
@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("deterministic", [False, True])
def test_fast_forward_equals_module_path(action_space, kwargs, batch, deterministic):
    policy = _policy(action_space, **kwargs)
    # perturb the parameters away from the orthogonal initialisation (small action head, zero biases)
    with th.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * th.randn_like(p))
    obs = th.as_tensor(np.stack([BOX_OBS.sample() for _ in range(batch)]))
    for seed in range(3):
        (actions, values, log_prob), (f_actions, f_values, f_log_prob) = _module_and_fast(policy, obs, deterministic, seed)
        for a, b in ((actions, f_actions), (values, f_values), (log_prob, f_log_prob)):
            assert a.shape == b.shape and a.dtype == b.dtype
            assert th.equal(a, b)


def test_fast_forward_equals_sb3_policy():
    """SB3's own ActorCriticPolicy (not sb3_cherry's subclass) takes the fast path too."""
    for action_space in (spaces.Box(-1.0, 1.0, (3,), np.float32), spaces.Discrete(3)):
        policy = _policy(action_space, policy_class=ActorCriticPolicy)
        obs = th.as_tensor(np.stack([BOX_OBS.sample() for _ in range(5)]))
        expected, got = _module_and_fast(policy, obs, deterministic=False)
        assert all(th.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_fast_forward_reads_parameters_at_call_time():
    policy = _policy(spaces.Box(-1.0, 1.0, (2,), np.float32))
    fast = FastActorCriticForward.build(policy)
    obs = th.ones(2, 3)
    with th.no_grad(), distribution_validation(False):
        policy.load_state_dict({k: v + 0.5 for k, v in policy.state_dict().items()})
        assert th.equal(fast(obs, deterministic=True)[1], policy(obs, deterministic=True)[1])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_categorical_logits_behave_as_torch_multinomial(bad):
    """The written-out categorical draw raises torch.multinomial's error where the module path does (non-finite
    logits), instead of sampling an arbitrary action; a logit of -inf (probability 0) samples as the module path."""
    policy = _policy(spaces.Discrete(3))
    obs = th.as_tensor(np.stack([BOX_OBS.sample() for _ in range(4)]))
    with th.no_grad():
        policy.action_net.bias[1] = bad
    error = "probability tensor contains either `inf`, `nan` or element < 0"
    if bad == -float("inf"):
        (actions, _, log_prob), (f_actions, _, f_log_prob) = _module_and_fast(policy, obs, deterministic=False)
        assert th.equal(actions, f_actions) and th.equal(log_prob, f_log_prob) and not (actions == 1).any()
        return
    fast = FastActorCriticForward.build(policy)
    with distribution_validation(False), th.inference_mode():
        with pytest.raises(RuntimeError, match=re.escape(error)):
            policy(obs)
        with pytest.raises(RuntimeError, match=re.escape(error)):
            fast(obs)


class _Extractor(BaseFeaturesExtractor):
    def __init__(self, observation_space):
        super().__init__(observation_space, features_dim=3)

    def forward(self, observations):
        return observations * 2.0


class _OwnForward(CherryActorCriticPolicy):
    def forward(self, obs, deterministic=False):
        return super().forward(obs, deterministic)


@pytest.mark.parametrize(
    "make",
    [
        lambda: _policy(spaces.Box(-1.0, 1.0, (2,), np.float32), features_extractor_class=_Extractor),
        lambda: _policy(spaces.Box(-1.0, 1.0, (2,), np.float32), share_features_extractor=False),
        lambda: _policy(spaces.Box(-1.0, 1.0, (2,), np.float32), activation_fn=th.nn.ELU),
        lambda: _policy(spaces.Box(-1.0, 1.0, (2,), np.float32), policy_class=_OwnForward),
        lambda: _policy(spaces.Box(-1.0, 1.0, (2,), np.float32), obs_space=spaces.Discrete(4)),
        lambda: _policy(spaces.Discrete(2), obs_space=spaces.Box(0, 255, (8, 8, 1), np.uint8)),
    ],
    ids=["own_extractor", "separate_extractors", "elu", "own_forward", "discrete_obs", "image_obs"],
)
def test_unsupported_policies_keep_the_module_path(make):
    assert FastActorCriticForward.build(make()) is None


def test_hooks_keep_the_module_path():
    policy = _policy(spaces.Box(-1.0, 1.0, (2,), np.float32))
    calls = []
    handle = policy.mlp_extractor.policy_net[0].register_forward_hook(lambda *args: calls.append(1))
    assert FastActorCriticForward.build(policy) is None
    with inference_forward(policy), th.no_grad():
        policy(th.zeros(1, 3))
    assert calls == [1]  # the user's hook ran
    handle.remove()
    assert FastActorCriticForward.build(policy) is not None
    global_handle = th.nn.modules.module.register_module_forward_hook(lambda *args: None)
    try:
        assert FastActorCriticForward.build(policy) is None
    finally:
        global_handle.remove()


@pytest.mark.parametrize("method", ["forward_actor", "forward_critic"])
def test_patched_mlp_extractor_method_takes_the_module_path(method):
    # MlpExtractor.forward calls forward_actor / forward_critic: an instance patch of either changes policy.forward
    policy = _policy(spaces.Box(-1.0, 1.0, (2,), np.float32))
    fast = FastActorCriticForward.build(policy)
    assert fast is not None and fast.same_structure()
    original = getattr(policy.mlp_extractor, method)
    setattr(policy.mlp_extractor, method, lambda features: th.zeros_like(original(features)))
    assert not fast.same_structure()
    with inference_forward(policy), th.no_grad():
        _, values, _ = policy(th.ones(4, 3))
    if method == "forward_critic":
        th.testing.assert_close(values, policy.value_net.bias.expand(4, 1))  # zero latent: the bias alone


def test_collection_takes_the_fast_path(monkeypatch):
    """learn() collects through the fast forward (not its module-path fallback) for the default MlpPolicy."""
    calls = []
    original = FastActorCriticForward._gaussian

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FastActorCriticForward, "_gaussian", counting)
    model = PPORollback("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, n_epochs=1, seed=0)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(64)
    assert len(calls) == 64
    assert any(not th.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_relu_policy_reproduces_sb3_ppo(env_id):
    """PPORollback(alpha=0) collecting through the fast path trains SB3's PPO parameters bit for bit (ReLU nets)."""
    policy_kwargs = dict(activation_fn=th.nn.ReLU, net_arch=dict(pi=[32, 32], vf=[16]))
    kwargs = dict(n_steps=64, batch_size=32, n_epochs=2, seed=3, policy_kwargs=policy_kwargs)
    ppo = PPO("MlpPolicy", env_id, **kwargs).learn(256)
    ours = PPORollback("MlpPolicy", env_id, rollback_alpha=0.0, **kwargs).learn(256)
    for a, b in zip(ppo.policy.parameters(), ours.policy.parameters(), strict=True):
        assert th.equal(a, b)


def test_argument_validation_takes_the_module_path():
    # with torch's argument validation on (validate_distribution_args=True), invalid parameters raise as in SB3
    policy = _policy(spaces.Box(-1.0, 1.0, (2,), np.float32), log_std_init=-200.0)  # std == 0 in float32
    fast = FastActorCriticForward.build(policy)
    assert fast is not None
    with th.no_grad(), distribution_validation(False):
        assert th.isfinite(fast(th.zeros(1, 3))[1]).all()  # no check: values come out
    with th.no_grad(), distribution_validation(True), pytest.raises(ValueError, match="scale"):
        fast(th.zeros(1, 3))


class _ClampMixin(ActorCriticPolicy):
    def forward(self, obs, deterministic=False):
        actions, values, log_prob = super().forward(obs, deterministic)
        return actions.clamp(-0.5, 0.5), values, log_prob


class _ScaleObsMixin(ActorCriticPolicy):
    def extract_features(self, obs, features_extractor=None):
        return super().extract_features(obs * 10.0, features_extractor)


class _WideStdMixin(ActorCriticPolicy):
    def _get_action_dist_from_latent(self, latent_pi):
        return self.action_dist.proba_distribution(self.action_net(latent_pi), self.log_std + 1.0)


@pytest.mark.parametrize("mixin", [_ClampMixin, _ScaleObsMixin, _WideStdMixin])
def test_mixins_reached_through_super_keep_the_module_path(mixin):
    policy_class = type("Mixed", (CherryActorCriticPolicy, mixin), {})
    assert FastActorCriticForward.build(_policy(spaces.Box(-1.0, 1.0, (2,), np.float32), policy_class=policy_class)) is None


def _patch_extract_features(policy):
    original = policy.extract_features
    policy.extract_features = lambda obs, extractor=None: original(obs * 10.0, extractor)


def _patch_action_net(policy):
    original = policy.action_net.forward
    policy.action_net.forward = lambda x: original(x) + 1.0


def _patch_log_prob(policy):
    dist = policy.action_dist
    dist.log_prob = lambda actions: dist.distribution.log_prob(actions) * 0.0


def _replace_layer(policy):
    policy.mlp_extractor.policy_net[0] = th.nn.Linear(3, 64)


def _hook_layer(policy):
    policy.mlp_extractor.value_net[2].register_forward_hook(lambda module, args, out: out * 2.0)


def _append_layer(policy):
    policy.mlp_extractor.policy_net.append(th.nn.Tanh())


def _parametrize_layer(policy):
    # torch's parametrization swaps the layer's class and computes weight from the original parameter
    class Double(th.nn.Module):
        def forward(self, weight):
            return weight * 2.0

    th.nn.utils.parametrize.register_parametrization(policy.mlp_extractor.policy_net[0], "weight", Double())


def _new_parameter(policy):
    policy.value_net.weight = th.nn.Parameter(policy.value_net.weight.detach() * 3.0)


def _plain_tensor_weight(policy):
    head = policy.action_net
    weight = head.weight.detach() * -1.0
    del head.weight
    head.weight = weight  # a plain tensor attribute now (in the instance dict)


@pytest.mark.parametrize(
    "change",
    [
        _patch_extract_features,
        _patch_action_net,
        _patch_log_prob,
        _replace_layer,
        _hook_layer,
        _append_layer,
        _parametrize_layer,
        _new_parameter,
        _plain_tensor_weight,
    ],
)
def test_changes_after_build_take_the_module_path(change):
    # a fast forward built before the policy was patched, hooked or changed computes what the changed policy does
    action_space = spaces.Discrete(3) if change is _patch_log_prob else spaces.Box(-1.0, 1.0, (2,), np.float32)
    policy = _policy(action_space)
    fast = FastActorCriticForward.build(policy)
    assert fast is not None
    change(policy)
    obs = th.as_tensor(np.stack([BOX_OBS.sample() for _ in range(4)]))
    with th.no_grad(), distribution_validation(False):
        th.manual_seed(5)
        expected = policy(obs)
        th.manual_seed(5)
        got = fast(obs)
    assert all(th.equal(a, b) for a, b in zip(expected, got, strict=True))


class _HookOnRolloutStart(BaseCallback):
    """Adds a forward hook (halving the action mean) when the first rollout starts, and counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls, self.handle = 0, None

    def _hook(self, module, args, output):
        self.calls += 1
        return output * 0.5

    def _on_rollout_start(self) -> None:
        if self.handle is None:
            self.handle = self.model.policy.action_net.register_forward_hook(self._hook)

    def _on_step(self) -> bool:
        return True


def test_hook_added_by_a_callback_during_learn():
    kwargs = dict(n_steps=16, batch_size=16, n_epochs=1, seed=0)
    results = []
    for algo, extra in ((PPO, {}), (PPORollback, {"rollback_alpha": 0.0})):
        callback = _HookOnRolloutStart()
        model = algo("MlpPolicy", "Pendulum-v1", **kwargs, **extra).learn(32, callback=callback)
        results.append((callback.calls, model.rollout_buffer.actions.copy()))
    assert results[0][0] == results[1][0] > 32
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_fast_forward_is_reused_between_rollouts_and_rebuilt_when_it_no_longer_applies(monkeypatch):
    """The algorithm keeps the fast forward between rollouts (one build per policy); a new policy, a hook on the
    policy itself or a replaced layer between rollouts is seen (rebuilt, or the module path)."""
    builds = []
    original = FastActorCriticForward.build.__func__

    def counting(cls, policy):
        builds.append(policy)
        return original(cls, policy)

    monkeypatch.setattr(FastActorCriticForward, "build", classmethod(counting))
    model = PPORollback("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=16, n_epochs=1, seed=0)
    model.learn(64)
    assert len(builds) == 1  # 4 rollouts
    cached = model._inference_cache["fast_forward"]
    assert cached is not None and cached.reusable_for(model.policy)
    assert "_inference_cache" in model._excluded_save_params()
    # a hook on the policy itself: not reusable, and the rebuild refuses the fast path (the module path runs)
    handle = model.policy.register_forward_pre_hook(lambda module, args: None)
    assert not cached.reusable_for(model.policy)
    model.learn(16, reset_num_timesteps=False)
    assert len(builds) == 2 and model._inference_cache["fast_forward"] is None
    handle.remove()
    model.learn(16, reset_num_timesteps=False)
    assert len(builds) == 3 and model._inference_cache["fast_forward"] is not None
    # a replaced layer: rebuilt on the new layer
    model.policy.mlp_extractor.policy_net[0] = th.nn.Linear(3, 64)
    assert not model._inference_cache["fast_forward"].reusable_for(model.policy)
    model.learn(16, reset_num_timesteps=False)
    assert len(builds) == 4 and model._inference_cache["fast_forward"].reusable_for(model.policy)
    # another policy object
    other = PPORollback("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=16, n_epochs=1, seed=1)
    assert not model._inference_cache["fast_forward"].reusable_for(other.policy)


@pytest.mark.parametrize("action_space, kwargs", CASES)
def test_fast_predict_values_equals_module_path(action_space, kwargs):
    """The written-out predict_values (the value of a rollout's last observation) equals SB3's."""
    policy = _policy(action_space, **kwargs)
    with th.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * th.randn_like(p))
    fast = FastActorCriticForward.build(policy)
    assert fast is not None and fast.values_supported
    obs = th.as_tensor(np.stack([BOX_OBS.sample() for _ in range(7)]))
    with distribution_validation(False), th.inference_mode():
        expected, got = policy.predict_values(obs), fast.predict_values(obs)
    assert expected.shape == got.shape == (7, 1) and th.equal(expected, got)


class _OwnPredictValues(CherryActorCriticPolicy):
    def predict_values(self, obs):
        return super().predict_values(obs) + 1.0


def test_overridden_or_patched_predict_values_takes_the_module_path():
    obs = th.ones(3, 3)
    # a class that overrides predict_values: the fast forward is built, its predict_values is not used
    policy = _policy(spaces.Discrete(2), policy_class=_OwnPredictValues)
    fast = FastActorCriticForward.build(policy)
    assert fast is not None and not fast.values_supported
    with th.no_grad(), inference_forward(policy):
        assert "predict_values" not in policy.__dict__
        th.testing.assert_close(policy.predict_values(obs), ActorCriticPolicy.predict_values(policy, obs) + 1.0)
    # patched on the instance before the block: left alone (and run); after it: the fast path falls back
    policy = _policy(spaces.Discrete(2))
    policy.predict_values = lambda o: th.full((len(o), 1), 7.0)
    with th.no_grad(), inference_forward(policy):
        assert th.equal(policy.predict_values(obs), th.full((3, 1), 7.0))
    assert th.equal(FastActorCriticForward.build(policy).predict_values(obs), th.full((3, 1), 7.0))


def test_collection_takes_the_fast_predict_values(monkeypatch):
    calls = []
    original = FastActorCriticForward.predict_values

    def counting(self, obs):
        calls.append(len(obs))
        return original(self, obs)

    monkeypatch.setattr(FastActorCriticForward, "predict_values", counting)
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = PPORollback("MlpPolicy", env, n_steps=16, batch_size=32, n_epochs=1, seed=0)
    model.learn(64)
    assert len(calls) >= 2 and set(calls) <= {1, 2}  # each rollout's last observations (and time-limit truncations)
    assert "predict_values" not in model.policy.__dict__ and "forward" not in model.policy.__dict__


def test_a_copy_or_pickle_of_the_algorithm_builds_its_own_fast_forward():
    """From an independent review: the fast forward kept on the algorithm reads the layers it was built on; a deep copy
    of the algorithm (a callback's snapshot) starts with an empty cache and collects with its own weights, and the
    algorithm pickles."""
    import copy
    import pickle

    from sb3_cherry.common.fast_forward import InferenceCache

    class Snapshot(BaseCallback):
        def _on_step(self) -> bool:
            if not hasattr(self, "clone"):  # during collection, as a callback would take it
                self.clone = copy.deepcopy(self.model)
            return True

    model = PPORollback("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=16, n_epochs=1, seed=0)
    model.learn(32)
    assert model._inference_cache.get("fast_forward") is not None
    snapshot = Snapshot()
    model.learn(16, callback=snapshot, reset_num_timesteps=False)
    clone = snapshot.clone
    assert isinstance(clone._inference_cache, InferenceCache) and not clone._inference_cache
    with th.no_grad():
        for p in model.policy.parameters():
            p.mul_(-1.5)  # the original moves on; the clone must not read its weights
    clone.learn(16, reset_num_timesteps=False)
    fast = clone._inference_cache["fast_forward"]
    assert fast.policy is clone.policy
    obs = th.as_tensor(np.stack([clone.observation_space.sample() for _ in range(4)]))
    with th.no_grad(), distribution_validation(False):
        expected = clone.policy(obs, deterministic=True)
        got = fast(obs, deterministic=True)
    assert all(th.equal(a, b) for a, b in zip(expected, got, strict=True))
    restored = pickle.loads(pickle.dumps(model))
    assert isinstance(restored._inference_cache, InferenceCache) and not restored._inference_cache


class _PatchLater(CherryActorCriticPolicy):
    pass


def test_reuse_sees_class_patches_and_replaced_parameter_dicts():
    """From an independent review: a method given to the policy's class between rollouts, or a layer's parameter dict
    replaced, makes the cached fast forward unusable (build() would refuse the first; the second reads new weights)."""
    policy = _policy(spaces.Box(-1.0, 1.0, (2,), np.float32), policy_class=_PatchLater)
    fast = FastActorCriticForward.build(policy)
    assert fast is not None and fast.reusable_for(policy)
    layer = policy.mlp_extractor.value_net[0]
    layer._parameters = {"weight": th.nn.Parameter(layer.weight.detach() * 2), "bias": th.nn.Parameter(layer.bias.detach())}
    assert not fast.same_structure() and not fast.reusable_for(policy)
    fast = FastActorCriticForward.build(policy)
    assert fast.reusable_for(policy)
    _PatchLater.extract_features = lambda self, obs, features_extractor=None: obs * 0.0  # type: ignore[method-assign]
    try:
        assert not fast.reusable_for(policy) and FastActorCriticForward.build(policy) is None
    finally:
        del _PatchLater.extract_features
    _PatchLater.predict_values = lambda self, obs: th.zeros(len(obs), 1)  # type: ignore[method-assign]
    try:
        assert not fast.reusable_for(policy)  # built with the written-out predict_values
    finally:
        del _PatchLater.predict_values
    assert fast.reusable_for(policy)
