"""Rollback surrogate against hand-worked values, and PPORollback(alpha=0) == SB3 PPO."""

import warnings

import numpy as np
import pytest
import torch as th
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_cherry import CherryA2C, PPORollback
from sb3_cherry.ppo_rollback.ppo_rollback import rollback_mask, rollback_surrogate

EPS = 0.2
ALPHA = 0.3


# Worked by hand from Truly PPO's rollback function with eps = 0.2, alpha = 0.3:
#   A >= 0, r > 1.2:  f = -0.3 r + 1.3 * 1.2 = -0.3 r + 1.56
#   A <  0, r < 0.8:  f = -0.3 r + 1.3 * 0.8 = -0.3 r + 1.04
#   otherwise f = r
@pytest.mark.parametrize(
    "ratio, advantage, expected, in_rollback",
    [
        (1.1, 2.0, 2.2, False),  # A >= 0, inside: 2 * 1.1
        (1.5, 2.0, 2.22, True),  # A >= 0, above 1 + eps: 2 * (-0.45 + 1.56) = 2 * 1.11
        (0.5, 2.0, 1.0, False),  # A >= 0, below 1 - eps: no rollback on that side, 2 * 0.5
        (0.9, -1.0, -0.9, False),  # A < 0, inside
        (0.5, -1.0, -0.89, True),  # A < 0, below 1 - eps: -1 * (-0.15 + 1.04) = -0.89
        (1.5, -1.0, -1.5, False),  # A < 0, above 1 + eps: no rollback on that side
        (1.2, 3.0, 3.6, False),  # A >= 0 on the boundary: both branches agree, 3 * 1.2
        (2.0, 0.0, 0.0, True),  # A = 0 counts as A >= 0 and contributes nothing
    ],
)
def test_rollback_surrogate_hand_values(ratio, advantage, expected, in_rollback):
    r, a = th.tensor([ratio], dtype=th.float64), th.tensor([advantage], dtype=th.float64)
    assert rollback_surrogate(r, a, EPS, ALPHA).item() == pytest.approx(expected, abs=1e-12)
    assert bool(rollback_mask(r, a, EPS).item()) is in_rollback


def test_rollback_gradient_sign():
    # In the rollback region the gradient pushes the ratio back towards the trust region: d/dr = -alpha * A
    r = th.tensor([1.5, 0.5], dtype=th.float64, requires_grad=True)
    a = th.tensor([2.0, -1.0], dtype=th.float64)
    rollback_surrogate(r, a, EPS, ALPHA).sum().backward()
    assert r.grad.tolist() == pytest.approx([-ALPHA * 2.0, -ALPHA * -1.0])
    # Plain PPO (alpha = 0): zero gradient there
    r.grad = None
    rollback_surrogate(r, a, EPS, 0.0).sum().backward()
    assert r.grad.tolist() == pytest.approx([0.0, 0.0])


def test_alpha_zero_is_clipped_ppo_objective():
    gen = th.Generator().manual_seed(0)
    ratio = th.exp(th.randn(10_000, generator=gen) * 0.4)
    adv = th.randn(10_000, generator=gen)
    ppo = th.min(adv * ratio, adv * th.clamp(ratio, 1 - EPS, 1 + EPS))
    assert th.equal(rollback_surrogate(ratio, adv, EPS, 0.0), ppo)
    # and the rollback objective is never above PPO's
    assert th.all(rollback_surrogate(ratio, adv, EPS, ALPHA) <= ppo + 1e-6)


def test_alpha_zero_keeps_ppo_values_for_an_overflowed_ratio():
    """An overflowed ratio (inf) outside the region: PPO's clipped value, as SB3's min(...), not 0 * inf = NaN."""
    ratio = th.tensor([float("inf"), 0.0, 1.5, 0.5])
    adv = th.tensor([1.0, -1.0, 2.0, -2.0])
    ppo = th.min(adv * ratio, adv * th.clamp(ratio, 1 - EPS, 1 + EPS))
    assert th.equal(rollback_surrogate(ratio, adv, EPS, 0.0), ppo)


@pytest.mark.parametrize("alpha", [0.0, ALPHA])
def test_gradient_at_float_ties_next_to_the_clip_bound(alpha):
    # a ratio one float past the bound: r * A and clip(r) * A often round to the same float32, where th.min gives each
    # side half the gradient (SB3: A / 2). alpha = 0 must be SB3's expression (the th.where form gave 0 or A, so
    # alpha = 0 left SB3's parameters after ~1 such sample in 2M, about 20k CartPole steps); alpha > 0 the piecewise
    # definition, -alpha * A on the rollback side (half of A added there would even flip its sign)
    gen = th.Generator().manual_seed(0)
    adv = th.randn(8000, generator=gen)
    bound = th.where(adv >= 0, th.tensor(1.0 + EPS), th.tensor(1.0 - EPS))
    ratio = th.nextafter(bound, th.where(adv >= 0, th.tensor(2.0), th.tensor(0.0))).requires_grad_()
    ties = adv * ratio == adv * th.clamp(ratio, 1 - EPS, 1 + EPS)
    assert ties.sum() > 100  # the case is common among such ratios
    (got,) = th.autograd.grad(rollback_surrogate(ratio, adv, EPS, alpha).sum(), ratio)
    if alpha == 0:
        sb3 = th.min(adv * ratio, adv * th.clamp(ratio, 1 - EPS, 1 + EPS))
        (expected,) = th.autograd.grad(sb3.sum(), ratio)
        assert th.equal(got, expected) and th.equal(expected[ties], adv[ties] / 2)
    else:
        assert th.equal(got, -alpha * adv)  # every ratio here is in the rollback region


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_alpha_zero_reproduces_sb3_ppo_when_ratios_sit_on_the_clip_bounds(env_id):
    # a tiny clip range puts many ratios one float past 1 +- eps (float ties of th.min): the parameters parted within
    # 2048 steps before the surrogate was written as SB3's min
    kwargs = dict(n_steps=256, batch_size=64, n_epochs=10, seed=1, clip_range=1e-5, learning_rate=1e-5)
    ppo = PPO("MlpPolicy", env_id, **kwargs).learn(2048)
    ours = PPORollback("MlpPolicy", env_id, rollback_alpha=0.0, **kwargs).learn(2048)
    np.testing.assert_array_equal(_params(ppo), _params(ours))


def _params(model) -> np.ndarray:
    return th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().numpy()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_alpha_zero_reproduces_sb3_ppo(env_id):
    kwargs = dict(n_steps=64, batch_size=32, n_epochs=3, seed=7, clip_range_vf=0.5, ent_coef=0.01)
    ppo = PPO("MlpPolicy", env_id, **kwargs).learn(256)
    ours = PPORollback("MlpPolicy", env_id, rollback_alpha=0.0, **kwargs).learn(256)
    np.testing.assert_array_equal(_params(ppo), _params(ours))


@pytest.mark.parametrize(
    "env_id, n_steps, batch_size", [("Pendulum-v1", 64, 7), ("CartPole-v1", 64, 7), ("Pendulum-v1", 65, 32)]
)
def test_alpha_zero_reproduces_sb3_ppo_with_small_and_ragged_minibatches(env_id, n_steps, batch_size):
    """
    Tiny and ragged minibatches: CPU matrix kernels can round differently for small batches when an operand's address
    is aligned differently, so the parameters must keep their alignment inside the update (flat Adam steps).
    """
    kwargs = dict(n_steps=n_steps, batch_size=batch_size, n_epochs=2, seed=7)
    ppo = PPO("MlpPolicy", env_id, **kwargs).learn(2 * n_steps)
    ours = PPORollback("MlpPolicy", env_id, rollback_alpha=0.0, **kwargs).learn(2 * n_steps)
    np.testing.assert_array_equal(_params(ppo), _params(ours))


@pytest.mark.parametrize("recurrent", [False, True])
def test_alpha_zero_early_stop_at_target_kl_falls_where_sb3_s_does(recurrent, monkeypatch):
    """
    A ``target_kl`` whose 1.5x lies just below an approx_kl of the run, but rounds up to it in float32: SB3 / sb3-contrib
    compare in float32 (a NumPy float32 against a Python float) and keep training; comparing ``.item()`` in float64
    stopped one minibatch early.
    """
    from sb3_contrib import RecurrentPPO

    import sb3_cherry.ppo_rollback.ppo_rollback as module
    from sb3_cherry import RecurrentPPORollback

    ours_cls, sb3_cls = (RecurrentPPORollback, RecurrentPPO) if recurrent else (PPORollback, PPO)
    policy = "MlpLstmPolicy" if recurrent else "MlpPolicy"
    kwargs = dict(n_steps=128, batch_size=64, n_epochs=4, learning_rate=3e-3, seed=3)
    if recurrent:
        kwargs["policy_kwargs"] = dict(lstm_hidden_size=8, net_arch=[8])
    seen: list[float] = []
    masked_mean = module._masked_mean

    def recording(values, mask):
        out = masked_mean(values, mask)
        if not th.is_grad_enabled():  # the approx_kl of each minibatch
            seen.append(out.item())
        return out

    monkeypatch.setattr(module, "_masked_mean", recording)
    ours_cls(policy, make_vec_env("CartPole-v1", n_envs=2, seed=5), rollback_alpha=0.0, **kwargs).learn(256)
    monkeypatch.undo()
    largest = max(seen[: 2 * 128 // 64 * 4])  # the first update's largest approx_kl (a float32 value)
    target_kl = float(np.nextafter(largest, 0.0)) / 1.5
    while not (1.5 * target_kl < largest and float(np.float32(1.5 * target_kl)) == largest):
        target_kl = float(np.nextafter(target_kl, 0.0))
    models = [
        cls(policy, make_vec_env("CartPole-v1", n_envs=2, seed=5), target_kl=target_kl, **kwargs, **extra).learn(512)
        for cls, extra in ((sb3_cls, {}), (ours_cls, dict(rollback_alpha=0.0)))
    ]
    assert models[0]._n_updates == models[1]._n_updates
    np.testing.assert_array_equal(_params(models[0]), _params(models[1]))


def test_default_alpha_differs_from_ppo():
    kwargs = dict(n_steps=64, batch_size=32, n_epochs=10, seed=7, learning_rate=3e-3)
    ppo = PPO("MlpPolicy", "CartPole-v1", **kwargs).learn(256)
    ours = PPORollback("MlpPolicy", "CartPole-v1", rollback_alpha=0.3, **kwargs).learn(256)
    assert not np.array_equal(_params(ppo), _params(ours))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_cherry_a2c_reproduces_sb3_a2c(env_id):
    a2c = A2C("MlpPolicy", env_id, seed=3).learn(200)
    ours = CherryA2C("MlpPolicy", env_id, seed=3).learn(200)
    np.testing.assert_array_equal(_params(a2c), _params(ours))


def test_rollback_fraction_logged():
    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=10, learning_rate=1e-2, seed=0)
    model.learn(128)
    # SB3 dumps the logs before train(): the last update's values are still in the logger
    values = model.logger.name_to_value
    assert 0.0 <= values["train/rollback_fraction"] <= values["train/clip_fraction"] + 1e-9


def test_bad_arguments():
    with pytest.raises(ValueError, match="rollback_alpha"):
        PPORollback("MlpPolicy", "CartPole-v1", rollback_alpha=-0.1)
    with pytest.raises(ValueError, match="returns_estimator"):
        PPORollback("MlpPolicy", "CartPole-v1", returns_estimator="td_lambda")
    with pytest.raises(ValueError, match="Allowed choices"):
        PPORollback("MlpPolicy", "CartPole-v1", policy_kwargs=dict(action_distribution="beta"))


def test_vtrace_lambda_one_equals_gae_lambda_one():
    # On-policy, one epoch on one minibatch: V-trace targets are the lambda-returns and, with lambda = 1, its
    # advantages r_s + gamma v_{s+1} - V(x_s) equal GAE(1)'s, so the update is identical.
    kwargs = dict(n_steps=64, batch_size=64, n_epochs=1, gae_lambda=1.0, seed=5)
    gae = PPORollback("MlpPolicy", "CartPole-v1", returns_estimator="gae", **kwargs).learn(128)
    vtrace = PPORollback("MlpPolicy", "CartPole-v1", returns_estimator="vtrace", **kwargs).learn(128)
    np.testing.assert_allclose(_params(gae), _params(vtrace), rtol=0, atol=1e-6)


def _gpu_recommendations(model, policy_class) -> list[str]:
    """SB3's CPU recommendation emitted by ``model`` for ``policy_class`` if it ran on a GPU (the check called directly)."""
    model.policy_class = policy_class
    model.device = th.device("cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model._maybe_recommend_cpu()
    return [str(w.message) for w in caught if "on the GPU" in str(w.message)]


@pytest.mark.parametrize("sb3_algo, algo", [(PPO, PPORollback), (A2C, CherryA2C)])
def test_gpu_recommendation_as_in_sb3(sb3_algo, algo):
    kwargs = dict(n_steps=8, device="cpu", **(dict(batch_size=8) if sb3_algo is PPO else {}))
    sb3_model, ours = sb3_algo("MlpPolicy", "CartPole-v1", **kwargs), algo("MlpPolicy", "CartPole-v1", **kwargs)
    # MlpPolicy: SB3 recommends the CPU, and so do we, with SB3's message (our class name in it)
    (expected,) = _gpu_recommendations(sb3_model, sb3_model.policy_aliases["MlpPolicy"])
    (message,) = _gpu_recommendations(ours, ours.policy_aliases["MlpPolicy"])
    assert message == expected.replace(sb3_algo.__name__, algo.__name__, 1).replace(
        "ActorCriticPolicy", "CherryActorCriticPolicy"
    )
    # CNN / MultiInput policies: neither warns; SB3's own MLP policy passed to our algorithm: still warns
    for alias in ("CnnPolicy", "MultiInputPolicy"):
        assert _gpu_recommendations(sb3_model, sb3_model.policy_aliases[alias]) == []
        assert _gpu_recommendations(ours, ours.policy_aliases[alias]) == []
    assert len(_gpu_recommendations(ours, ActorCriticPolicy)) == 1
    # on the CPU nothing is recommended
    ours.device = th.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours._maybe_recommend_cpu()


def test_masked_advantage_normalisation():
    # over the real (unpadded) samples only; a single real sample is left as it is (its std would be NaN)
    from sb3_cherry.ppo_rollback.ppo_rollback import _normalized_advantages

    adv, mask = th.tensor([1.0, 3.0, 100.0]), th.tensor([True, True, False])
    expected = (adv - 2.0) / (float(np.std([1.0, 3.0], ddof=1)) + 1e-8)
    th.testing.assert_close(_normalized_advantages(adv, mask), expected)
    one = th.tensor([2.0, 0.0, 0.0])
    assert th.equal(_normalized_advantages(one, th.tensor([True, False, False])), one)


def test_alpha_zero_logs_sb3_ppo_values():
    # every train/ value SB3's PPO logs is logged with the same value (clip_fraction is computed once per update as a
    # mean of per-minibatch means, so it agrees to float32 rounding); a learning rate that moves the ratio past the
    # clip range, value clipping and an entropy bonus make each term non-trivial
    kwargs = dict(n_steps=64, batch_size=32, n_epochs=10, seed=7, learning_rate=3e-2, clip_range_vf=0.5, ent_coef=0.01)
    ppo = PPO("MlpPolicy", "CartPole-v1", **kwargs).learn(128)
    ours = PPORollback("MlpPolicy", "CartPole-v1", rollback_alpha=0.0, **kwargs).learn(128)
    expected, got = ppo.logger.name_to_value, ours.logger.name_to_value
    keys = [k for k in expected if k.startswith("train/")]
    assert {"train/clip_fraction", "train/approx_kl", "train/policy_gradient_loss", "train/value_loss"} <= set(keys)
    assert expected["train/clip_fraction"] > 0
    for key in keys:
        assert got[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), key


@pytest.mark.parametrize("cls", [PPORollback, "recurrent"])
@pytest.mark.parametrize(
    "kwargs, name",
    [({"clip_range": -0.2}, "clip_range"), ({"clip_range": 0.0}, "clip_range"), ({"clip_range_vf": -1.0}, "clip_range_vf")],
)
def test_non_positive_clip_ranges_are_refused(cls, kwargs, name):
    # clip_range=-0.2 trained with clamp(r, 1.2, 0.8) (every ratio clipped, clip_fraction 1); clip_range_vf=-1.0 (the
    # old rl-zoo "no clipping") ended in SB3's AssertionError
    from sb3_cherry import RecurrentPPORollback

    cls, policy = (RecurrentPPORollback, "MlpLstmPolicy") if cls == "recurrent" else (cls, "MlpPolicy")
    with pytest.raises(ValueError, match=rf"{name}=-?[01]\.[0-9] must be a number > 0 or a schedule"):
        cls(policy, "CartPole-v1", **kwargs)
    cls(policy, "CartPole-v1", clip_range=lambda _: 0.1, clip_range_vf=None)  # schedules and None pass
