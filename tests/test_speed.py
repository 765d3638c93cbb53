"""The bit-exact speed-ups of sb3_cherry.common.speed against the SB3 / torch code they replace."""

import copy
import pickle

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_cherry import PPORollback
from sb3_cherry.common.buffers import CherryDictRolloutBuffer, CherryRolloutBuffer
from sb3_cherry.common.speed import GradNormClipper, distribution_validation, use_foreach_optimizer


def _fill(buffer: RolloutBuffer, rng: np.random.Generator) -> None:
    for _ in range(buffer.buffer_size):
        obs_space = buffer.observation_space
        if isinstance(obs_space, spaces.Dict):
            obs = {k: np.stack([s.sample() for _ in range(buffer.n_envs)]) for k, s in obs_space.spaces.items()}
        else:
            obs = np.stack([obs_space.sample() for _ in range(buffer.n_envs)])
        action = np.stack([buffer.action_space.sample() for _ in range(buffer.n_envs)])
        buffer.add(
            obs,
            action,
            rng.normal(size=buffer.n_envs).astype(np.float32),
            rng.random(buffer.n_envs) < 0.1,
            th.as_tensor(rng.normal(size=(buffer.n_envs, 1)).astype(np.float32)),
            th.as_tensor(rng.normal(size=buffer.n_envs).astype(np.float32)),
        )
    buffer.compute_returns_and_advantage(th.zeros(buffer.n_envs, 1), np.zeros(buffer.n_envs, dtype=bool))


@pytest.mark.parametrize(
    "obs_space, action_space",
    [
        (spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2,))),
        (spaces.Box(0, 255, (4, 4), dtype=np.uint8), spaces.Discrete(3)),
        (spaces.Box(-1, 1, (3,)), spaces.MultiBinary(3)),
        (spaces.Dict({"a": spaces.Box(-1, 1, (2,)), "b": spaces.Discrete(4)}), spaces.Box(-1, 1, (2,))),
    ],
)
def test_tensor_samples_equal_sb3_samples(obs_space, action_space):
    """Same permutation, same minibatches, same values and dtypes as SB3's numpy gather."""
    ours_cls, sb3_cls = (
        (CherryDictRolloutBuffer, DictRolloutBuffer)
        if isinstance(obs_space, spaces.Dict)
        else (CherryRolloutBuffer, RolloutBuffer)
    )
    ours = ours_cls(8, obs_space, action_space, device="cpu", n_envs=3)
    obs_space.seed(0)
    action_space.seed(0)
    _fill(ours, np.random.default_rng(0))
    ref = sb3_cls(8, obs_space, action_space, device="cpu", n_envs=3)
    obs_space.seed(0)
    action_space.seed(0)
    _fill(ref, np.random.default_rng(0))
    for epoch in range(2):  # the second pass reuses the cached tensor views
        np.random.seed(epoch)
        batches = list(ours.get(5))
        np.random.seed(epoch)
        expected = list(ref.get(5))
        assert len(batches) == len(expected) == 5
        for got, want in zip(batches, expected, strict=True):
            for g, w in zip(got, want, strict=True):
                if isinstance(w, dict):
                    for key in w:
                        assert g[key].dtype == w[key].dtype and th.equal(g[key], w[key])
                else:
                    assert g.dtype == w.dtype and g.shape == w.shape and th.equal(g, w)


def test_tensor_samples_follow_reassigned_arrays():
    """Returns recomputed between epochs (a new array) are what the next minibatches carry."""
    buffer = CherryRolloutBuffer(4, spaces.Box(-1, 1, (2,)), spaces.Box(-1, 1, (1,)), device="cpu", n_envs=2)
    _fill(buffer, np.random.default_rng(1))
    list(buffer.get(4))
    buffer.returns = buffer.returns + 1.0
    batch = next(buffer.get(8))
    assert th.equal(th.sort(batch.returns).values, th.sort(th.as_tensor(buffer.returns.flatten())).values)


def _step_inputs(obs_space: spaces.Space, action_space: spaces.Space, n_envs: int, rng: np.random.Generator):
    """One step's ``add`` arguments as ``collect_rollouts`` passes them (inference-mode tensors, bool starts)."""
    obs = np.stack([obs_space.sample() for _ in range(n_envs)])
    if isinstance(obs_space, spaces.Box) and obs.dtype == np.float32:
        obs = obs.astype(np.float64)  # an env returning float64 into the float32 buffer: the same cast either way
    action = np.stack([action_space.sample() for _ in range(n_envs)])
    values = rng.normal(size=(n_envs, 1)).astype(np.float32)
    log_probs = rng.normal(size=n_envs).astype(np.float32)
    values[0, 0], log_probs[-1] = -0.0, np.nan
    with th.inference_mode():
        value, log_prob = th.as_tensor(values), th.as_tensor(log_probs)
    return obs, action, rng.normal(size=n_envs).astype(np.float32), rng.random(n_envs) < 0.3, value, log_prob


@pytest.mark.parametrize(
    "obs_space, action_space, n_envs",
    [
        (spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2,)), 1),
        (spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2,)), 4),
        (spaces.Box(0, 255, (4, 4), dtype=np.uint8), spaces.Discrete(3), 3),
        (spaces.Box(-1, 1, (3,)), spaces.MultiDiscrete([2, 3]), 2),
        (spaces.Box(-1, 1, (3,)), spaces.MultiBinary(3), 2),
        (spaces.Discrete(5), spaces.Discrete(2), 3),  # SB3 reshapes Discrete observations: its own add runs
    ],
)
def test_step_add_stores_what_sb3_add_stores(obs_space, action_space, n_envs, monkeypatch):
    """Every array of the buffer equal bit for bit (bytes, so -0.0 and NaN too) to SB3's after the same adds."""
    obs_space.seed(0)
    action_space.seed(0)
    rng = np.random.default_rng(0)
    steps = [_step_inputs(obs_space, action_space, n_envs, rng) for _ in range(4)]
    ref = RolloutBuffer(4, obs_space, action_space, device="cpu", n_envs=n_envs)
    for step in steps:
        ref.add(*step)
    sb3_adds = []
    sb3_add = RolloutBuffer.add
    monkeypatch.setattr(RolloutBuffer, "add", lambda self, *args: sb3_adds.append(1) or sb3_add(self, *args))
    ours = CherryRolloutBuffer(4, obs_space, action_space, device="cpu", n_envs=n_envs)
    for step in steps:
        ours.add(*step)
    # the lean path ran (SB3's add only for Discrete observations)
    assert len(sb3_adds) == (4 if isinstance(obs_space, spaces.Discrete) else 0)
    for name in ("observations", "actions", "rewards", "episode_starts", "values", "log_probs"):
        got, want = getattr(ours, name), getattr(ref, name)
        assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes(), name
    assert (ours.pos, ours.full) == (ref.pos, ref.full) == (4, True)


def test_step_add_leaves_unusual_inputs_to_sb3(monkeypatch):
    """A 0-d log-probability, a tensor with gradient and list observations take SB3's add (and its behaviour)."""
    box = spaces.Box(-1, 1, (2,))
    buffer = CherryRolloutBuffer(4, box, box, device="cpu", n_envs=1)
    sb3_adds = []
    sb3_add = RolloutBuffer.add
    monkeypatch.setattr(RolloutBuffer, "add", lambda self, *args: sb3_adds.append(1) or sb3_add(self, *args))
    obs, action, reward, start = np.ones((1, 2), np.float32), np.ones((1, 2), np.float32), np.ones(1), np.ones(1, bool)
    buffer.add(obs, action, reward, start, th.ones(1, 1), th.tensor(-1.5))  # SB3 reshapes a 0-d log-probability
    assert len(sb3_adds) == 1 and buffer.log_probs[0, 0] == -1.5
    buffer.add([[2.0, 3.0]], action, reward, start, th.ones(1, 1), th.ones(1))
    assert len(sb3_adds) == 2 and buffer.observations[1].tolist() == [[2.0, 3.0]]
    with pytest.raises(RuntimeError, match="requires grad"):  # as SB3: values must come from a no-grad forward
        buffer.add(obs, action, reward, start, th.ones(1, 1, requires_grad=True), th.ones(1))
    assert len(sb3_adds) == 3


def test_step_add_rejects_a_bad_action_before_writing():
    """As SB3's add: an action of the wrong size raises before anything is stored (the row keeps its values)."""
    box = spaces.Box(-1, 1, (2,))
    buffer = CherryRolloutBuffer(4, box, box, device="cpu", n_envs=2)
    with pytest.raises(ValueError, match="reshape"):
        buffer.add(
            np.ones((2, 2), np.float32), np.ones(3, np.float32), np.ones(2), np.ones(2, bool), th.ones(2, 1), th.ones(2)
        )
    assert buffer.pos == 0 and not buffer.observations.any()


def test_grad_norm_clipper_matches_torch():
    th.manual_seed(0)
    net = th.nn.Sequential(th.nn.Linear(5, 7), th.nn.Tanh(), th.nn.Linear(7, 2))
    other = copy.deepcopy(net)
    for max_norm in (0.01, 1e6):  # clipped and not clipped
        for model in (net, other):
            model.zero_grad()
            model(th.arange(10.0).reshape(2, 5)).pow(2).sum().backward()
        norm = GradNormClipper(net.parameters())(max_norm)
        ref = th.nn.utils.clip_grad_norm_(other.parameters(), max_norm)
        assert th.equal(norm, ref)
        for p, q in zip(net.parameters(), other.parameters(), strict=True):
            assert th.equal(p.grad, q.grad)


@pytest.mark.parametrize("optimizer_class", [th.optim.Adam, th.optim.RMSprop])
def test_foreach_optimizer_is_bit_exact_on_cpu(optimizer_class):
    th.manual_seed(0)
    net = th.nn.Sequential(th.nn.Linear(4, 16), th.nn.Tanh(), th.nn.Linear(16, 3))
    other = copy.deepcopy(net)
    opt, ref = optimizer_class(net.parameters(), lr=1e-2), optimizer_class(other.parameters(), lr=1e-2)
    assert use_foreach_optimizer(opt) and opt.param_groups[0]["foreach"] is True
    x = th.randn(32, 4)
    for _ in range(20):
        for model, optimizer in ((net, opt), (other, ref)):
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()
    for p, q in zip(net.parameters(), other.parameters(), strict=True):
        assert th.equal(p, q)
    # an explicit user choice is left alone
    fused = th.optim.Adam(net.parameters(), fused=True)
    assert not use_foreach_optimizer(fused)
    assert not use_foreach_optimizer(th.optim.SGD(net.parameters(), lr=0.1))


def test_distribution_validation_restored():
    default = th.distributions.Distribution._validate_args
    with distribution_validation(False):
        th.distributions.Normal(th.tensor(0.0), th.tensor(-1.0))  # would raise with validation
    assert th.distributions.Distribution._validate_args == default
    model = PPORollback("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=16, n_epochs=1, seed=0)
    model.learn(32)
    assert th.distributions.Distribution._validate_args == default
    assert model.policy.optimizer.param_groups[0]["foreach"] is True


def test_minibatch_means_match_a_loop():
    """The vectorised per-minibatch (masked) means of the deferred logging against a loop of th.mean."""
    from sb3_cherry.common.speed import mean_of, minibatch_means
    from sb3_cherry.ppo_rollback.ppo_rollback import _logged_fractions, rollback_mask

    gen = th.Generator().manual_seed(0)
    sizes = [5, 5, 3]
    ratios = [th.exp(0.3 * th.randn(n, generator=gen)) for n in sizes]
    advs = [th.randn(n, generator=gen) for n in sizes]
    for masks in ([None, None, None], [th.tensor([1, 1, 0, 1, 0]).bool(), None, th.tensor([0, 1, 1]).bool()]):
        values = [(th.abs(r - 1) > 0.2).float() for r in ratios]
        got = minibatch_means(th.cat(values), sizes, masks)
        want = th.stack([v.mean() if m is None else v[m].mean() for v, m in zip(values, masks, strict=True)])
        assert th.allclose(got, want, atol=1e-7)
        clip, rolled = _logged_fractions(list(zip(ratios, advs, masks, strict=True)), 0.2)
        flags = [rollback_mask(r, a, 0.2).float() for r, a in zip(ratios, advs, strict=True)]
        want_rb = np.mean([(f if m is None else f[m]).mean().item() for f, m in zip(flags, masks, strict=True)])
        assert clip == pytest.approx(want.mean().item()) and rolled == pytest.approx(want_rb)
    assert mean_of([th.tensor(1.0), th.tensor(2.0)]) == 1.5 and np.isnan(mean_of([]))


def test_fused_optimizer_is_opt_in():
    """The rounding-changing fused Adam is only used when asked for, and then trains without error."""
    kwargs = dict(n_steps=32, batch_size=16, n_epochs=2, seed=0)
    model = PPORollback("MlpPolicy", "Pendulum-v1", **kwargs)
    model.fused_optimizer = True
    model.learn(64)
    assert model.policy.optimizer.param_groups[0]["fused"] is True
    assert np.all(np.isfinite(th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().numpy()))
    default = PPORollback("MlpPolicy", "Pendulum-v1", **kwargs).learn(64)
    assert not default.policy.optimizer.param_groups[0]["fused"]


@pytest.mark.parametrize("algo", ["ppo_rollback", "cherry_a2c"])
def test_clipping_follows_a_replaced_submodule(algo):
    """A submodule replaced between ``learn`` calls is clipped with the rest (the clipper is built per update)."""
    from sb3_cherry import CherryA2C

    if algo == "ppo_rollback":
        model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, n_epochs=2, max_grad_norm=0.5, seed=0)
    else:
        model = CherryA2C("MlpPolicy", "CartPole-v1", n_steps=8, max_grad_norm=0.5, seed=0)
    model.learn(32)
    policy = model.policy
    policy.value_net = th.nn.Linear(64, 1)  # e.g. a fresh value head, and an optimizer over the new parameters
    policy.optimizer = policy.optimizer_class(policy.parameters(), lr=1e-3, **policy.optimizer_kwargs)
    norms = []
    step = policy.optimizer.step

    def recording_step(*args, **kwargs):  # (a step patched on the instance: PPORollback's flat Adam steps aside)
        grads = [p.grad for p in policy.parameters() if p.grad is not None]
        norms.append(th.linalg.vector_norm(th.stack([g.norm() for g in grads])).item())
        return step(*args, **kwargs)

    policy.optimizer.step = recording_step
    model.learn(32, reset_num_timesteps=False)
    assert norms and max(norms) <= 0.5 + 1e-4


class _Snapshot(BaseCallback):
    """Deep copies (and pickles) the policy at one step of the collection, as a self-play pool or "keep the best"."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.snapshot, self.pickled = at, None, None

    def _on_step(self) -> bool:
        if self.snapshot is None and self.num_timesteps >= self.at:
            self.snapshot = copy.deepcopy(self.model.policy)
            self.pickled = pickle.dumps(self.model.policy)
        return True


@pytest.mark.parametrize("algo", ["ppo_rollback", "cherry_a2c", "recurrent"])
def test_policy_copied_during_collection_is_its_own(algo):
    # The collection's wrapper of policy.forward was a closure over the original policy: a deep copy taken in a
    # callback ran the original's (later trained) weights, pickle failed, and after the first update the deep copy
    # failed on the distribution's graph tensors. Reference: the copy's predict_values (no forward involved).
    from sb3_cherry import CherryA2C, RecurrentPPORollback

    env = make_vec_env("CartPole-v1", n_envs=2, seed=5)
    if algo == "cherry_a2c":
        model = CherryA2C("MlpPolicy", env, seed=3)
    elif algo == "recurrent":
        model = RecurrentPPORollback("MlpLstmPolicy", env, n_steps=64, batch_size=64, n_epochs=2, seed=3)
    else:
        model = PPORollback("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=2, seed=3)
    early, late = _Snapshot(at=50), _Snapshot(at=300)  # before and after the first update
    model.learn(640, callback=[early, late])
    obs = th.tensor([[0.1, -0.2, 0.03, 0.4]])
    for snapshot in (early.snapshot, late.snapshot, pickle.loads(early.pickled)):
        with th.no_grad():
            if algo == "recurrent":
                states = model._last_lstm_states
                zeros = type(states)(*(tuple(th.zeros_like(s[:, :1]) for s in pair) for pair in states))
                value = snapshot(obs, zeros, th.ones(1))[1]
                expected = snapshot.predict_values(obs, zeros.vf, th.ones(1))
            else:
                value, expected = snapshot(obs)[1], snapshot.predict_values(obs)
            trained = model.policy.predict_values(obs) if algo != "recurrent" else None
        assert th.equal(value, expected)
        assert trained is None or not th.equal(value, trained)  # the test tells the policies apart


def test_policy_restored_from_a_copy_collects_with_its_own_weights():
    # "Restore the best policy": a copy taken during collection put back as model.policy collected with the old
    # object's weights (its leftover wrapper was taken for a user's patch)
    snapshot = _Snapshot(at=100)
    model = PPORollback("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=5), n_steps=64, batch_size=64, seed=3)
    model.learn(128, callback=snapshot)
    model.policy = snapshot.snapshot
    with th.no_grad():
        for parameter in model.policy.value_net.parameters():
            parameter.zero_()  # the restored critic: V = 0 everywhere
    values = []

    class Grab(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            values.append(self.model.rollout_buffer.values.copy())

    model.learn(128, reset_num_timesteps=False, callback=Grab())
    assert np.abs(values[0]).max() == 0.0
    assert "forward" not in model.policy.__dict__  # the leftover wrapper was replaced, then removed


class _OwnTrain(th.nn.Module):
    """A module whose ``train`` does more than set the flag (recorded)."""

    def __init__(self):
        super().__init__()
        self.calls: list[bool] = []
        self.layer = th.nn.Linear(2, 2)

    def train(self, mode: bool = True):
        self.calls.append(mode)
        return super().train(mode)


def _training_flags(module: th.nn.Module) -> list[tuple[str, bool]]:
    return [(name, m.training) for name, m in module.named_modules(remove_duplicate=False)]


@pytest.mark.parametrize("extra", [None, "dropout", "own_train", "instance_train"])
def test_set_training_mode_sets_the_flags_of_nn_module_train(extra):
    """CherryActorCriticPolicy.set_training_mode leaves every (sub)module's flag as nn.Module.train(mode) does; a module
    with its own train (class or instance) gets nn.Module.train's recursion."""
    from sb3_cherry import CherryA2C
    from sb3_cherry.common.policies import set_training_flags

    ours = CherryA2C("MlpPolicy", "CartPole-v1", seed=0).policy
    reference = CherryA2C("MlpPolicy", "CartPole-v1", seed=0).policy
    own = None
    for policy in (ours, reference):
        if extra == "dropout":
            policy.mlp_extractor.policy_net.append(th.nn.Dropout(0.5))
        elif extra == "own_train":
            policy.extra = own = _OwnTrain()
        elif extra == "instance_train":
            policy.action_net.train = lambda mode=True, net=policy.action_net: th.nn.Module.train(net, mode)
    for mode in (True, False, True, False):
        ours.set_training_mode(mode)
        th.nn.Module.train(reference, mode)
        assert _training_flags(ours) == _training_flags(reference)
        assert all(flag is mode for _, flag in _training_flags(ours))
    if extra == "own_train":
        assert own is not None and own.calls == [True, False, True, False]
    with pytest.raises(ValueError, match="boolean"):
        set_training_flags(ours, 1)  # type: ignore[arg-type]  # as nn.Module.train


def test_set_training_flags_follows_an_overridden_children_walk():
    """From an independent review: a module whose named_children leaves a frozen teacher out of train() keeps it in
    eval mode, as nn.Module.train does (the flat loop over modules() would reach it)."""
    from torch import nn

    from sb3_cherry.common.policies import set_training_flags

    class KeepsTeacherInEval(nn.Module):
        def __init__(self):
            super().__init__()
            self.student = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
            self.teacher = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))

        def named_children(self):
            return ((n, m) for n, m in super().named_children() if n != "teacher")

    flags = []
    for setter in (nn.Module.train, set_training_flags):
        root = KeepsTeacherInEval()
        root.teacher.eval()
        setter(root, True)
        flags.append(_training_flags(root))
    assert flags[0] == flags[1]
    assert dict(flags[1])["teacher"] is False and dict(flags[1])["student"] is True
