"""
Truly PPO's trust-region methods (TR-PPO, TR-PPO-RB, Truly PPO): the per-sample objective on hand-worked cases, the
exact per-state KL of every distribution against torch / Monte-Carlo references, the KL inside PPORollback's update
against an independent recomputation, configuration (YAML, CLI, optuna) and the behaviour the paper reports.
"""

import math

import numpy as np
import optuna
import pytest
import torch as th
import yaml
from gymnasium import spaces
from stable_baselines3.common import distributions as sb3_dist
from stable_baselines3.common.callbacks import BaseCallback
from torch.distributions import Bernoulli, Beta, Categorical, Normal
from torch.distributions import kl_divergence as th_kl

from benchmarks.trust_region_behaviour import UpdateProbe
from sb3_cherry import PPORollback, RecurrentPPORollback
from sb3_cherry.common.distributions import (
    BernoulliDistribution,
    GumbelSoftmaxDistribution,
    MultiCategoricalDistribution,
    NormalDistribution,
    make_distribution,
)
from sb3_cherry.common.kl import per_state_kl
from sb3_cherry.ppo_rollback import trust_region as tr_module
from sb3_cherry.ppo_rollback import trust_region_surrogate

DELTA = 0.03

# ---------------------------------------------------------------------------------------------------------------------
# trust_region_surrogate: hand-worked cases
# (r, A, k) -> expected (value, d/dr, d/dk) for each mode, worked out by hand from the definitions:
# T = (k >= delta) and (r A > A); ratio rollback: value r A, slope -alpha A on r where T (alpha = 0: TR-PPO, no
# gradient where T); KL rollback: r A - alpha k where T.
# ---------------------------------------------------------------------------------------------------------------------

CASES = [
    # r,   A,    k,    T      (A > 0, moved up, outside: triggered)
    (1.5, 2.0, 0.05, True),
    # inside the KL region: never triggered
    (1.5, 2.0, 0.01, False),
    # A < 0, moved down (r A = -1 > -2), outside: triggered
    (0.5, -2.0, 0.05, True),
    # A < 0 but moved up (r A = -3 < -2): not triggered however far
    (1.5, -2.0, 0.05, False),
    # A > 0 but moved down (r A = 1 < 2): not triggered
    (0.5, 2.0, 0.05, False),
    # k exactly at the threshold counts (k >= delta)
    (1.2, 1.0, DELTA, True),
    # A = 0: r A > A never holds
    (1.5, 0.0, 0.05, False),
]


def _hand(r, a, k, triggered, mode, alpha):
    """Value and gradients (d/dr, d/dk) written out for one sample."""
    if not triggered:
        return r * a, a, 0.0
    if mode == "ratio":
        return r * a, -alpha * a, 0.0
    return r * a - alpha * k, a, -alpha


@pytest.mark.parametrize("mode, alpha", [("ratio", 0.0), ("ratio", 0.05), ("kl", 5.0), ("kl", 0.4)])
def test_surrogate_hand_worked_cases(mode, alpha):
    r = th.tensor([c[0] for c in CASES], dtype=th.float64, requires_grad=True)
    a = th.tensor([c[1] for c in CASES], dtype=th.float64)
    k = th.tensor([c[2] for c in CASES], dtype=th.float64, requires_grad=True)
    out = trust_region_surrogate(r, a, k, DELTA, alpha, rollback=mode)
    out.sum().backward()
    k_grad = th.zeros_like(k) if k.grad is None else k.grad  # the ratio rollback does not differentiate k
    for i, (ri, ai, ki, triggered) in enumerate(CASES):
        value, d_r, d_k = _hand(ri, ai, ki, triggered, mode, alpha)
        assert out[i].item() == pytest.approx(value, abs=1e-12), (i, mode)
        assert r.grad[i].item() == pytest.approx(d_r, abs=1e-12), (i, mode)
        assert k_grad[i].item() == pytest.approx(d_k, abs=1e-12), (i, mode)
    # spelled out for the first case: TR-PPO gives no gradient, TR-PPO-RB a negative slope, Truly PPO r A - 5 k
    if mode == "ratio" and alpha == 0.0:
        assert r.grad[0].item() == 0.0 and out[0].item() == 3.0
    if mode == "kl" and alpha == 5.0:
        assert out[0].item() == pytest.approx(2.75) and k_grad[0].item() == -5.0


def test_surrogate_is_plain_policy_gradient_inside_the_region():
    r = th.rand(100, dtype=th.float64) + 0.5
    a = th.randn(100, dtype=th.float64)
    k = th.full((100,), 0.001, dtype=th.float64)
    for mode in ("ratio", "kl"):
        th.testing.assert_close(trust_region_surrogate(r, a, k, DELTA, 0.3, mode), r * a)
    with pytest.raises(ValueError, match="rollback"):
        trust_region_surrogate(r, a, k, DELTA, 0.3, "clip")


# ---------------------------------------------------------------------------------------------------------------------
# per_state_kl against independent references
# ---------------------------------------------------------------------------------------------------------------------

BOX = spaces.Box(-2.0, 3.0, (3,), np.float32)


def _mc_kl(p, q, n=40_000):
    """E_{a ~ p}[log p(a) - log q(a)] per state, with the distributions' own log-densities on the actions."""
    total = 0.0
    for _ in range(n // 2000):
        actions = p.sample()
        total = total + (p.log_prob(actions) - q.log_prob(actions)).double()
    return total / (n // 2000)


def _repeat(params, n):
    return params.repeat_interleave(n, dim=0)


def test_kl_sb3_gaussians_and_discrete():
    th.manual_seed(0)
    # DiagGaussian: state-independent log_std
    p, q = sb3_dist.DiagGaussianDistribution(3), sb3_dist.DiagGaussianDistribution(3)
    m1, m2, s1, s2 = th.randn(5, 3), th.randn(5, 3), th.randn(3) * 0.3, th.randn(3) * 0.3
    p.proba_distribution(m1, s1)
    q.proba_distribution(m2, s2)
    ref = th_kl(Normal(m1, s1.exp()), Normal(m2, s2.exp())).sum(1)
    th.testing.assert_close(per_state_kl(p, q), ref)
    # squashed Gaussian: KL of the base Gaussians == Monte-Carlo KL of the squashed actions
    p, q = sb3_dist.SquashedDiagGaussianDistribution(3), sb3_dist.SquashedDiagGaussianDistribution(3)
    m1, m2 = th.randn(4, 3) * 0.5, th.randn(4, 3) * 0.5
    p.proba_distribution(m1, s1)
    q.proba_distribution(m2, s2)
    th.testing.assert_close(per_state_kl(p, q), th_kl(Normal(m1, s1.exp()), Normal(m2, s2.exp())).sum(1))
    p_mc, q_mc = sb3_dist.SquashedDiagGaussianDistribution(3), sb3_dist.SquashedDiagGaussianDistribution(3)
    kl = per_state_kl(p, q)
    mc = []
    for i in range(4):
        p_mc.proba_distribution(m1[i : i + 1].expand(2000, 3), s1)
        q_mc.proba_distribution(m2[i : i + 1].expand(2000, 3), s2)
        mc.append(_mc_kl(p_mc, q_mc).mean())
    np.testing.assert_allclose(th.stack(mc).numpy(), kl.numpy(), rtol=0.08, atol=0.02)
    # gSDE: per state N(mean, latent^2 @ exp(log_std)^2)
    p, q = sb3_dist.StateDependentNoiseDistribution(2), sb3_dist.StateDependentNoiseDistribution(2)
    latent = th.randn(6, 4)
    ls1, ls2 = th.randn(4, 2) * 0.3, th.randn(4, 2) * 0.3
    m1, m2 = th.randn(6, 2), th.randn(6, 2)
    p.proba_distribution(m1, ls1, latent)
    q.proba_distribution(m2, ls2, latent)
    std1 = ((latent**2) @ (ls1.exp() ** 2)).sqrt()
    std2 = ((latent**2) @ (ls2.exp() ** 2)).sqrt()
    th.testing.assert_close(per_state_kl(p, q), th_kl(Normal(m1, std1), Normal(m2, std2)).sum(1))
    # Categorical, MultiCategorical, Bernoulli: sum_a p log(p / q), written out
    l1, l2 = th.randn(7, 4), th.randn(7, 4)
    p, q = sb3_dist.CategoricalDistribution(4), sb3_dist.CategoricalDistribution(4)
    p.proba_distribution(l1)
    q.proba_distribution(l2)
    pp, qq = l1.softmax(1), l2.softmax(1)
    th.testing.assert_close(per_state_kl(p, q), (pp * (pp / qq).log()).sum(1))
    p, q = sb3_dist.MultiCategoricalDistribution([2, 2]), sb3_dist.MultiCategoricalDistribution([2, 2])
    p.proba_distribution(l1)
    q.proba_distribution(l2)
    a1, b1, a2, b2 = l1[:, :2].softmax(1), l1[:, 2:].softmax(1), l2[:, :2].softmax(1), l2[:, 2:].softmax(1)
    ref = (a1 * (a1 / a2).log()).sum(1) + (b1 * (b1 / b2).log()).sum(1)
    th.testing.assert_close(per_state_kl(p, q), ref)
    p, q = sb3_dist.BernoulliDistribution(4), sb3_dist.BernoulliDistribution(4)
    p.proba_distribution(l1)
    q.proba_distribution(l2)
    s, t = l1.sigmoid(), l2.sigmoid()
    th.testing.assert_close(per_state_kl(p, q), (s * (s / t).log() + (1 - s) * ((1 - s) / (1 - t)).log()).sum(1))


def test_kl_of_saturated_discrete_policies_is_the_small_exact_value():
    # float32 sigmoid(l) is exactly 1 for l >= 16.64 and a softmax probability underflows to 0 at a gap of ~104: torch's
    # KLs were inf there (a spurious trust-region trigger; Truly PPO's loss inf) while the true KL is ~1e-7 / ~1e-25.
    # Reference: the same torch KLs on float64 parameters, where these probabilities are still representable.
    bits_p, bits_q = th.tensor([[16.60, 16.0, -3.0]]), th.tensor([[16.70, 25.0, -3.0]])
    expected = th_kl(Bernoulli(logits=bits_p.double()), Bernoulli(logits=bits_q.double())).sum(1)
    assert th.isinf(th_kl(Bernoulli(logits=bits_p), Bernoulli(logits=bits_q)).sum(1)).all()  # (torch's float32 form)
    p, q = sb3_dist.BernoulliDistribution(3), sb3_dist.BernoulliDistribution(3)
    p.proba_distribution(bits_p)
    q.proba_distribution(bits_q)
    mine, other = BernoulliDistribution(spaces.MultiBinary(3)), BernoulliDistribution(spaces.MultiBinary(3))
    mine.proba_distribution(bits_p)
    other.proba_distribution(bits_q)
    for kl in (per_state_kl(p, q), per_state_kl(mine, other)):
        np.testing.assert_allclose(kl.double().numpy(), expected.numpy(), rtol=1e-4)
    logits_p, logits_q = th.tensor([[0.0, -60.0, 1.0]]), th.tensor([[0.0, -110.0, 1.0]])
    expected = th_kl(Categorical(logits=logits_p.double()), Categorical(logits=logits_q.double()))
    p, q = sb3_dist.CategoricalDistribution(3), sb3_dist.CategoricalDistribution(3)
    p.proba_distribution(logits_p)
    q.proba_distribution(logits_q)
    np.testing.assert_allclose(per_state_kl(p, q).double().numpy(), expected.numpy(), rtol=1e-4)
    p, q = sb3_dist.MultiCategoricalDistribution([3, 3]), sb3_dist.MultiCategoricalDistribution([3, 3])
    p.proba_distribution(th.cat([logits_p, logits_p], 1))
    q.proba_distribution(th.cat([logits_q, logits_q], 1))
    np.testing.assert_allclose(per_state_kl(p, q).double().numpy(), 2 * expected.numpy(), rtol=1e-4)
    mine, other = (MultiCategoricalDistribution(spaces.MultiDiscrete([3, 3])) for _ in range(2))
    mine.proba_distribution(th.cat([logits_p, logits_p], 1))
    other.proba_distribution(th.cat([logits_q, logits_q], 1))
    np.testing.assert_allclose(per_state_kl(mine, other).double().numpy(), 2 * expected.numpy(), rtol=1e-4)
    # a probability that is 0 in float64 too (-inf logit): the KL is inf where p has mass there, 0 log 0 = 0 elsewhere
    p, q = sb3_dist.CategoricalDistribution(2), sb3_dist.CategoricalDistribution(2)
    p.proba_distribution(th.tensor([[0.0, 0.0], [0.0, -math.inf]]))
    q.proba_distribution(th.tensor([[0.0, -math.inf], [0.0, 0.0]]))
    assert per_state_kl(p, q).tolist() == [math.inf, pytest.approx(math.log(2.0))]


@pytest.mark.parametrize("name", ["normal", "beta", "tanh_normal"])
def test_kl_cherry_box_distributions(name):
    th.manual_seed(1)
    p, q = make_distribution(BOX, name), make_distribution(BOX, name)
    if name == "normal":  # the default pairing is SB3's: build sb3_cherry's flat-parameter Normal directly
        p, q = NormalDistribution(BOX), NormalDistribution(BOX)
    # moderate parameters: float32 tanh saturates for |u| > ~9, where the squashed log-density is clamped
    x1, x2 = th.randn(4, 6) * 0.3, th.randn(4, 6) * 0.3
    p.proba_distribution(x1)
    q.proba_distribution(x2)
    kl = per_state_kl(p, q)
    if name == "beta":
        c = [th.nn.functional.softplus(x) + 1 for x in (*x1.split(3, 1), *x2.split(3, 1))]
        ref = th_kl(Beta(c[0], c[1]), Beta(c[2], c[3])).sum(1)
    else:
        ref = th_kl(Normal(x1[:, :3], x1[:, 3:].exp()), Normal(x2[:, :3], x2[:, 3:].exp())).sum(1)
    th.testing.assert_close(kl, ref)
    # Monte-Carlo on the actions in the Box (log-densities with the affine / tanh Jacobians): the maps are invertible
    mc = []
    for i in range(4):
        p.proba_distribution(_repeat(x1[i : i + 1], 2000))
        q.proba_distribution(_repeat(x2[i : i + 1], 2000))
        mc.append(_mc_kl(p, q).mean())
    np.testing.assert_allclose(th.stack(mc).numpy(), kl.numpy(), rtol=0.08, atol=0.02)


def test_kl_cherry_discrete_and_tuple():
    th.manual_seed(2)
    # sb3_cherry's classes (the default pairings of MultiBinary / MultiDiscrete are SB3's, tested above)
    for space, name, cls in [
        (spaces.Discrete(4), "gumbel_softmax", GumbelSoftmaxDistribution),
        (spaces.MultiBinary(3), "bernoulli", BernoulliDistribution),
        (spaces.MultiDiscrete([3, 2]), "multi_categorical", MultiCategoricalDistribution),
    ]:
        p, q = cls(space), cls(space)
        x1, x2 = th.randn(5, p.param_dim), th.randn(5, p.param_dim)
        p.proba_distribution(x1)
        q.proba_distribution(x2)
        if name == "gumbel_softmax":
            ref = th_kl(Categorical(logits=x1), Categorical(logits=x2))
        elif name == "bernoulli":
            ref = th_kl(Bernoulli(logits=x1), Bernoulli(logits=x2)).sum(1)
        else:
            ref = th_kl(Categorical(logits=x1[:, :3]), Categorical(logits=x2[:, :3])) + th_kl(
                Categorical(logits=x1[:, 3:]), Categorical(logits=x2[:, 3:])
            )
        th.testing.assert_close(per_state_kl(p, q), ref)
    # Tuple: sum of the parts, and Monte-Carlo with the Tuple's own log-probabilities
    space = spaces.Tuple((spaces.Discrete(3), spaces.Box(-1.0, 1.0, (2,), np.float32), spaces.MultiBinary(2)))
    p, q = (make_distribution(space, ("categorical", "tanh_normal", "bernoulli")) for _ in range(2))
    x1, x2 = th.randn(3, p.param_dim) * 0.5, th.randn(3, p.param_dim) * 0.5
    p.proba_distribution(x1)
    q.proba_distribution(x2)
    kl = per_state_kl(p, q)
    s1, s2 = x1.split([3, 4, 2], 1), x2.split([3, 4, 2], 1)
    ref = (
        th_kl(Categorical(logits=s1[0]), Categorical(logits=s2[0]))
        + th_kl(Normal(s1[1][:, :2], s1[1][:, 2:].exp()), Normal(s2[1][:, :2], s2[1][:, 2:].exp())).sum(1)
        + th_kl(Bernoulli(logits=s1[2]), Bernoulli(logits=s2[2])).sum(1)
    )
    th.testing.assert_close(kl, ref)
    mc = []
    for i in range(3):
        p.proba_distribution(_repeat(x1[i : i + 1], 2000))
        q.proba_distribution(_repeat(x2[i : i + 1], 2000))
        mc.append(_mc_kl(p, q).mean())
    np.testing.assert_allclose(th.stack(mc).numpy(), kl.numpy(), rtol=0.08, atol=0.02)


def test_kl_rejects_mismatched_or_unknown():
    with pytest.raises(TypeError, match="same class"):
        per_state_kl(make_distribution(BOX, "beta"), make_distribution(BOX, "tanh_normal"))

    class Odd(sb3_dist.Distribution):
        def proba_distribution_net(self, *args, **kwargs): ...
        def proba_distribution(self, *args, **kwargs): ...
        def log_prob(self, x): ...
        def entropy(self): ...
        def sample(self): ...
        def mode(self): ...
        def actions_from_params(self, *args, **kwargs): ...
        def log_prob_from_params(self, *args, **kwargs): ...

    with pytest.raises(TypeError, match="No exact per-state KL"):
        per_state_kl(Odd(), Odd())


# ---------------------------------------------------------------------------------------------------------------------
# PPORollback / RecurrentPPORollback with trust_region="kl"
# ---------------------------------------------------------------------------------------------------------------------


class _Snapshot(BaseCallback):
    """The policy's weights when each rollout ends (= the collecting policy, pi_old of the next update)."""

    def __init__(self):
        super().__init__()
        self.states = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.states.append({k: v.clone() for k, v in self.model.policy.state_dict().items()})


def _record_kls(monkeypatch):
    """Record (observations, new mean, new std, kl) of every minibatch the trust region evaluates."""
    calls = []
    original = tr_module.TrustRegionUpdate.kl

    def kl(self, rollout_data, new_distribution, mask):
        out = original(self, rollout_data, new_distribution, mask)
        dist = getattr(new_distribution, "distribution", None)
        params = (dist.mean.detach().clone(), dist.stddev.detach().clone()) if isinstance(dist, Normal) else None
        calls.append((rollout_data.observations.clone(), params, out.detach().clone(), mask))
        return out

    monkeypatch.setattr(tr_module.TrustRegionUpdate, "kl", kl)
    return calls


@pytest.mark.parametrize("use_sde", [False, True])
def test_kl_in_the_update_matches_an_independent_recomputation(monkeypatch, use_sde):
    """The KL of each minibatch is KL(pi_old(.|s) || pi(.|s)) at the minibatch's own states."""
    calls = _record_kls(monkeypatch)
    snap = _Snapshot()
    model = PPORollback(
        "MlpPolicy",
        "Pendulum-v1",
        n_steps=128,
        batch_size=32,
        n_epochs=3,
        learning_rate=3e-3,
        seed=0,
        trust_region="kl",
        use_sde=use_sde,
    )
    model.learn(128, callback=snap)
    assert len(calls) == 3 * 4
    # pi_old: a fresh policy with the weights at the end of the rollout, evaluated here by hand
    old = type(model.policy)(**model.policy._get_constructor_parameters())
    old.load_state_dict(snap.states[0])
    for i, (obs, (mean, std), kl, _) in enumerate(calls):
        with th.no_grad():
            features = old.extract_features(obs)
            latent = old.mlp_extractor.forward_actor(features)
            old_mean = old.action_net(latent)
            if use_sde:
                old_std = ((latent**2) @ (old.log_std.exp() ** 2)).sqrt()
            else:
                old_std = old.log_std.exp().expand_as(old_mean)
        ref = th_kl(Normal(old_mean, old_std), Normal(mean, std)).sum(1)
        th.testing.assert_close(kl, ref, rtol=1e-4, atol=1e-7)
        if i < 1:  # before the first gradient step pi == pi_old
            assert kl.abs().max() < 1e-6
    assert calls[-1][2].max() > 0  # the policy moved
    for key in ("train/kl_mean", "train/kl_max", "train/trust_region_fraction"):
        assert key in model.logger.name_to_value
    # PPO-RB's ratio rule is not what rolls back here: its fraction would be an unrelated number
    assert "train/rollback_fraction" not in model.logger.name_to_value
    # the logged statistics are those of the last epoch (each sample once)
    last = th.cat([c[2] for c in calls[-4:]])
    assert model.logger.name_to_value["train/kl_mean"] == pytest.approx(last.mean().item(), rel=1e-6)
    assert model.logger.name_to_value["train/kl_max"] == pytest.approx(last.max().item(), rel=1e-6)


def test_recurrent_and_tuple_kl_start_at_zero(monkeypatch):
    """pi_old replayed from the stored recurrent states / recomputed for Tuple actions equals pi before any step."""
    calls = _record_kls(monkeypatch)
    model = RecurrentPPORollback(
        "MlpLstmPolicy",
        "CartPole-v1",
        n_steps=64,
        batch_size=32,
        n_epochs=2,
        seed=0,
        trust_region="kl",
        rollback="kl",
        rollback_alpha=5.0,
        policy_kwargs=dict(lstm_hidden_size=16),
    )
    model.learn(64)
    first_kl, first_mask = calls[0][2], calls[0][3]
    assert first_mask is not None and first_kl[first_mask].abs().max() < 1e-6
    assert "train/trust_region_fraction" in model.logger.name_to_value
    calls.clear()
    model = PPORollback(
        "MlpPolicy",
        "sb3_cherry/HybridGoal-v0",
        n_steps=64,
        batch_size=32,
        n_epochs=2,
        seed=0,
        trust_region="kl",
    )
    model.learn(64)
    assert calls[0][2].abs().max() < 1e-6 and calls[-1][2].max() > 0


def test_ratio_trust_region_is_unchanged_and_args_are_checked():
    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=1, seed=0)
    assert (model.trust_region, model.rollback) == ("ratio", "ratio")
    model.learn(64)
    assert "train/kl_mean" not in model.logger.name_to_value
    for kwargs, match in [
        (dict(trust_region="kll"), "trust_region"),
        (dict(trust_region="kl", rollback="clip"), "rollback"),
        (dict(rollback="kl"), "needs trust_region='kl'"),
        (dict(trust_region="kl", kl_threshold=0.0), "kl_threshold"),
        (dict(trust_region="kl", kl_threshold=float("inf")), "kl_threshold must be a finite number"),
        (dict(trust_region="kl", kl_threshold=float("nan")), "kl_threshold must be a finite number"),
        # Truly PPO without its KL weight is r*A everywhere: no trust region at all (was accepted silently)
        (dict(trust_region="kl", rollback="kl", rollback_alpha=0.0), "has no trust region at all"),
    ]:
        with pytest.raises(ValueError, match=match):
            PPORollback("MlpPolicy", "CartPole-v1", **kwargs)
        with pytest.raises(ValueError, match=match):
            RecurrentPPORollback("MlpLstmPolicy", "CartPole-v1", **kwargs)


@pytest.mark.parametrize("cls, policy", [(PPORollback, "MlpPolicy"), (RecurrentPPORollback, "MlpLstmPolicy")])
def test_rollback_alpha_defaults_to_the_authors_value_of_each_method(cls, policy):
    """rollback_alpha is a ratio slope for PPO-RB / TR-PPO-RB and a KL weight for Truly PPO: each gets its own default."""
    expected = {("ratio", "ratio"): 0.3, ("kl", "ratio"): 0.05, ("kl", "kl"): 5.0}  # the paper, run.py
    for (trust_region, rollback), alpha in expected.items():
        model = cls(policy, "CartPole-v1", trust_region=trust_region, rollback=rollback, _init_setup_model=False)
        assert model.rollback_alpha == alpha
        if rollback == "ratio":
            model = cls(
                policy, "CartPole-v1", trust_region=trust_region, rollback=rollback, rollback_alpha=0, _init_setup_model=False
            )
            assert model.rollback_alpha == 0.0  # TR-PPO / plain PPO stay reachable


def test_save_load_keeps_the_trust_region(tmp_path):
    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=64, trust_region="kl", kl_threshold=0.02, rollback="kl")
    model.save(tmp_path / "m")
    loaded = PPORollback.load(tmp_path / "m")
    assert (loaded.trust_region, loaded.kl_threshold, loaded.rollback) == ("kl", 0.02, "kl")


def test_yaml_cli_and_optuna(tmp_path):
    from sb3_cherry.cli import main, validate_config
    from sb3_cherry.common.hyperparams_opt import convert_ppo_rollback_params, sample_ppo_rollback_params

    entry = {
        "n_timesteps": 128, "policy": "MlpPolicy", "n_steps": 64, "batch_size": 32, "n_epochs": 2,
        "trust_region": "kl", "kl_threshold": 0.03, "rollback": "kl", "rollback_alpha": 5.0,
    }  # fmt: skip
    path = tmp_path / "conf.yml"
    path.write_text(yaml.safe_dump({"CartPole-v1": entry}))
    assert validate_config(path, "ppo_rollback", "CartPole-v1")["trust_region"] == "kl"
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"CartPole-v1": {**entry, "kl_threshold": "small"}}))
    with pytest.raises(ValueError, match="'kl_threshold'='small' has the wrong type"):
        validate_config(bad, "ppo_rollback", "CartPole-v1")
    main(["train", "--algo", "ppo_rollback", "--env", "CartPole-v1", "-c", str(path), "-f", str(tmp_path / "logs")])
    (zip_path,) = (tmp_path / "logs").rglob("CartPole-v1.zip")
    loaded = PPORollback.load(zip_path)
    assert (loaded.trust_region, loaded.rollback, loaded.rollback_alpha) == ("kl", "kl", 5.0)
    # optuna: a KL-rollback trial samples its own weight, converted back to rollback_alpha
    fixed = {
        "batch_size_pow": 5, "n_steps_pow": 6, "one_minus_gamma": 0.01, "one_minus_gae_lambda": 0.05,
        "learning_rate": 3e-4, "ent_coef": 1e-6, "clip_range": 0.2, "n_epochs": 5, "max_grad_norm": 0.5,
        "net_arch": "small", "activation_fn": "tanh", "rollback_alpha": 0.3, "returns_estimator": "gae",
        "trust_region": "kl", "kl_threshold": 0.03, "rollback": "kl", "kl_rollback_alpha": 5.0,
    }  # fmt: skip
    sampled = sample_ppo_rollback_params(optuna.trial.FixedTrial(fixed), 1, 1, {})
    assert (sampled["trust_region"], sampled["rollback"], sampled["rollback_alpha"]) == ("kl", "kl", 5.0)
    converted = convert_ppo_rollback_params(fixed)
    assert converted["rollback_alpha"] == 5.0 and "kl_rollback_alpha" not in converted
    PPORollback("MlpPolicy", "CartPole-v1", **{k: v for k, v in sampled.items() if k != "policy_kwargs"})
    # a trial of the ratio's trust region, merged over this Truly PPO entry as rl_zoo3 merges it, builds (the entry's
    # rollback="kl" stayed and the model refused it: the whole study stopped at its first such trial)
    fixed = {**fixed, "trust_region": "ratio"}
    for sampled in sample_ppo_rollback_params(optuna.trial.FixedTrial(fixed), 1, 1, {}), convert_ppo_rollback_params(
        {k: v for k, v in fixed.items() if k not in ("rollback", "kl_threshold", "kl_rollback_alpha")}
    ):
        kwargs = {**entry, **sampled}
        assert (kwargs["trust_region"], kwargs["rollback"], kwargs["rollback_alpha"]) == ("ratio", "ratio", 0.3)
        del kwargs["n_timesteps"], kwargs["policy"], kwargs["policy_kwargs"]
        PPORollback("MlpPolicy", "CartPole-v1", **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Behaviour the paper reports (Figs. 3-5), measured from outside the algorithm (benchmarks/trust_region_behaviour.py's
# probe compares the policies before and after each update): under an aggressive update TR-PPO keeps the per-state KL
# near delta, below clipped PPO's; PPO-RB keeps the ratios closer to the clip range than PPO.
# ---------------------------------------------------------------------------------------------------------------------


def _first_update(seed, **kwargs):
    """One aggressive update (50 epochs at lr 5e-3) on Pendulum: every method starts from the same policy and rollout."""
    probe = UpdateProbe()
    model = PPORollback(
        "MlpPolicy", "Pendulum-v1", n_steps=1024, batch_size=64, n_epochs=50, learning_rate=5e-3, seed=seed, **kwargs
    )
    model.learn(1024, callback=probe)
    return probe.kl_means[0], probe.ratio_excess[0]


def test_aggressive_update_tr_ppo_keeps_kl_near_delta_and_rollback_keeps_ratios():
    delta = 0.002
    ppo = np.mean([_first_update(seed, rollback_alpha=0.0) for seed in (0, 1)], axis=0)
    tr_ppo = np.mean(
        [_first_update(seed, trust_region="kl", kl_threshold=delta, rollback_alpha=0.0) for seed in (0, 1)], axis=0
    )
    pporb = np.mean([_first_update(seed, rollback_alpha=0.3) for seed in (0, 1)], axis=0)
    # TR-PPO: mean per-state KL near delta (loose bound: below 2 delta) and below clipped PPO's
    # (measured: PPO 0.0057, TR-PPO 0.0017)
    assert tr_ppo[0] < 2 * delta and tr_ppo[0] < ppo[0], (tr_ppo, ppo)
    # PPO-RB: ratios end closer to the clip range than PPO's (measured: mean excess 0.0026 vs 0.0052)
    assert pporb[1] < ppo[1], (pporb, ppo)


# ---------------------------------------------------------------------------------------------------------------------
# The study's scripts: every method of run_trust_region.sh builds from the base entry; the Table 1 measure
# ---------------------------------------------------------------------------------------------------------------------


def test_study_methods_build_from_the_base_entry():
    import re
    import subprocess

    from benchmarks.learning import build_model

    script = open("benchmarks/run_trust_region.sh").read()
    for method in ("ppo", "pporb", "trppo_rb", "truly_ppo"):
        args = subprocess.run(
            ["sh", "-c", _method_args(script) + f"\nmethod_args {method}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        algo = args[args.index("--algo") + 1]
        sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        model, n_timesteps = build_model(algo, "Walker2d-v5", 0, sets, config="benchmarks/trust_region.yml")
        assert n_timesteps == 1_000_000 and model.n_steps == 2048 and model.batch_size == 64
        if method in ("trppo_rb", "truly_ppo"):
            assert model.trust_region == "kl" and model.kl_threshold == 0.03
            assert (model.rollback, model.rollback_alpha) == (("kl", 5.0) if method == "truly_ppo" else ("ratio", 0.05))
        model.get_env().close()
    assert re.search(r"for method in ppo truly_ppo trppo_rb pporb", script)


def _method_args(script):
    """The ``method_args`` shell function of the study script."""
    start = script.index("method_args() {")
    return script[start : script.index("\n}\n", start) + 3]


def test_trust_region_table(tmp_path):
    from benchmarks.learning import COLUMNS
    from benchmarks.table import steps_to_threshold, trust_region_rows

    assert steps_to_threshold({0: 10.0, 20: 3100.0, 40: 2900.0, 60: 3500.0}, 3000.0) == 20
    assert steps_to_threshold({0: 10.0, 20: 2900.0}, 3000.0) is None
    rows = []
    for variant, algo, curves in [
        ("base", "ppo", {0: [100, 3200, 3300], 1: [100, 1000, 2000]}),
        ("truly_ppo", "ppo_rollback", {0: [100, 2000, 3100], 1: [100, 3050, 3400]}),
    ]:
        for seed, returns in curves.items():
            for t, ret in zip((0, 500_000, 1_000_000), returns, strict=True):
                rows.append(dict(env="Hopper-v5", algo=algo, variant=variant, seed=seed, timesteps=t, mean_return=ret,
                                 std_return=0, wall_time_s=0))  # fmt: skip
    with open(tmp_path / "Hopper-v5.csv", "w", newline="") as file:
        writer = __import__("csv").DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = trust_region_rows(tmp_path)
    assert len(lines) == 4
    assert "| Hopper-v5 | SB3 PPO | 2 | 1000000 | 2650.0 ± 650.0 |" in lines[2] and "3000: 500k (1/2)" in lines[2]
    assert "Truly PPO" in lines[3] and "3000: 750k (2/2)" in lines[3]


def _write_study_csv(path, env, finals):
    """One env's study CSV: ``finals`` maps (algo, variant) to ``{seed: final return}``, with a start point at 0."""
    from benchmarks.learning import COLUMNS

    with open(path / f"{env}.csv", "w", newline="") as file:
        writer = __import__("csv").DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        for (algo, variant), per_seed in finals.items():
            for seed, final in per_seed.items():
                for t, ret in ((0, 100.0), (1_000_000, final)):
                    writer.writerow(dict(env=env, algo=algo, variant=variant, seed=seed, timesteps=t, mean_return=ret,
                                         std_return=0, wall_time_s=0))  # fmt: skip


def test_trust_region_goal_table(tmp_path):
    from benchmarks.table import late_returns, trust_region_goal_rows

    # the last 5 evaluations (here of a start point and 6 more), per seed
    curve = {t: (float(t), 0.0) for t in range(0, 140, 20)}
    assert late_returns({0: curve, 3: {0: (7.0, 0.0)}}) == {0: 80.0, 3: 7.0}

    ppo, trpporb, truly = ("ppo", "base"), ("ppo_rollback", "trppo_rb"), ("ppo_rollback", "truly_ppo")
    # TR-PPO-RB ahead on Hopper (paired 2 of 3) and Walker2d (1 of 1 shared seed: seed 2 has no SB3 PPO run), behind on
    # HalfCheetah; Truly PPO ahead nowhere
    _write_study_csv(tmp_path, "Hopper-v5", {ppo: {0: 2000, 1: 3000, 2: 2500}, trpporb: {0: 3300, 1: 2900, 2: 3200},
                                             truly: {0: 1900, 1: 2900, 2: 2400}})  # fmt: skip
    _write_study_csv(tmp_path, "Walker2d-v5", {ppo: {0: 3500}, trpporb: {0: 3600, 2: 1000}})
    _write_study_csv(tmp_path, "HalfCheetah-v5", {ppo: {0: 2000}, trpporb: {0: 1900}, truly: {0: 1000}})
    text = "\n".join(trust_region_goal_rows(tmp_path))
    assert "| Hopper-v5 | TR-PPO-RB (delta 0.03, alpha 0.05) | 3300 | 2900 | 3200 | 3133 |" in text
    assert "| Walker2d-v5 | TR-PPO-RB (delta 0.03, alpha 0.05) | 3600 | — | 1000 | 2300 |" in text
    # Hopper: mean 3133 vs 2500, paired 2 of 3; Walker2d compared on seed 0 only (3600 vs 3500), not on the mean 2300;
    # the last column averages each seed's last 5 evaluations, here the start point (100) and the final return
    assert "| Hopper-v5 | TR-PPO-RB (delta 0.03, alpha 0.05) | 0 1 2 | 3133 ± 170 | 2500 ± 408 | +633 | 2/3 | +317 |" in text
    assert "| Walker2d-v5 | TR-PPO-RB (delta 0.03, alpha 0.05) | 0 | 3600 ± 0 | 3500 ± 0 | +100 | 1/1 | +50 |" in text
    assert "| HalfCheetah-v5 | Truly PPO (delta 0.03, alpha 5) | 0 | 1000 ± 0 | 2000 ± 0 | -1000 | 0/1 | -500 |" in text
    verdicts = [line for line in text.splitlines() if line.startswith("- ")]
    assert verdicts[0].startswith("- TR-PPO-RB") and "on 2 of 3 envs (Hopper-v5, Walker2d-v5)" in verdicts[0]
    assert "goal (≥ 2): met (provisional" in verdicts[0]
    assert "on 0 of 3 envs (none); goal (≥ 2): not met (provisional" in verdicts[1]
    assert "PPO-RB" in verdicts[2] and "for reference" in verdicts[2]
    # every seed of every method on every env: the verdict is final
    for env, offset in (("Hopper-v5", 10), ("Walker2d-v5", 10), ("HalfCheetah-v5", -10)):
        finals = {key: {s: 1000.0 + s for s in range(3)} for key in (ppo, trpporb, ("ppo_rollback", "pporb"))}
        finals[truly] = {s: 1000.0 + s + offset for s in range(3)}
        _write_study_csv(tmp_path, env, finals)
    verdicts = [line for line in trust_region_goal_rows(tmp_path) if line.startswith("- ")]
    assert "on 0 of 3 envs (none); goal (≥ 2): not met (complete)" in verdicts[0]  # equal is not ahead
    assert "on 2 of 3 envs (Hopper-v5, Walker2d-v5); goal (≥ 2): met (complete)" in verdicts[1]


def test_frozen_copy_is_exact_and_leaves_the_random_stream():
    model = PPORollback("MlpPolicy", "Pendulum-v1", n_steps=64, seed=0, use_sde=True)
    state = th.random.get_rng_state()
    frozen = tr_module.frozen_copy(model.policy)
    assert th.equal(state, th.random.get_rng_state())
    assert tr_module.frozen_copy(model.policy) is frozen  # cached, refreshed in place
    for (name, a), (_, b) in zip(model.policy.state_dict().items(), frozen.state_dict().items(), strict=True):
        assert th.equal(a, b), name
    assert not any(p.requires_grad for p in frozen.parameters())


def test_async_collection_with_the_kl_trust_region():
    model = PPORollback(
        "MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, n_epochs=2, seed=0, trust_region="kl", collection="async"
    )
    model.learn(64 * 3)
    assert model.logger.name_to_value["train/kl_max"] >= 0.0
    assert "train/trust_region_fraction" in model.logger.name_to_value


def _authors_objective(ratio, adv, kl, delta, alpha, method):
    """The per-sample objective of the authors' ppo2.py cliptypes, transcribed (TrulyPPO)."""
    triggered = (kl >= delta) & (ratio * adv > adv)
    if method == "tr_ppo":  # cliptype "kl": stop_gradient where triggered
        return th.where(triggered, ratio.detach() * adv, ratio * adv)
    if method == "tr_ppo_rb":  # "kl_ratiorollback": slope * r + stop_gradient((1 - slope) * r), slope = -alpha
        return th.where(triggered, (-alpha * ratio + ((1 + alpha) * ratio).detach()) * adv, ratio * adv)
    # "kl_klrollback_constant_withratio" (slope_likelihood 1, slope_rollback -alpha)
    return th.where(triggered, ratio * adv - alpha * kl, ratio * adv)


@pytest.mark.parametrize(
    "method, kwargs",
    [
        ("tr_ppo", dict(rollback="ratio", rollback_alpha=0.0)),
        ("tr_ppo_rb", dict(rollback="ratio", rollback_alpha=0.3)),
        ("truly_ppo", dict(rollback="kl", rollback_alpha=5.0)),
    ],
)
def test_kl_trust_region_update_equals_a_hand_written_update(method, kwargs):
    """
    The trainer's whole update with the KL trust region (8 epochs of one minibatch, the trigger firing) equals an
    update written out here: normalised advantages, pi_old frozen before the first step, KL(pi_old || pi) from
    torch.distributions, the authors' objective, SB3's value loss, gradient clipping and Adam.
    """
    import copy

    delta = 0.002
    model = PPORollback(
        "MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, n_epochs=8, learning_rate=1e-2, ent_coef=0.0, seed=0,
        trust_region="kl", kl_threshold=delta, device="cpu", **kwargs,
    )  # fmt: skip
    _, callback = model._setup_learn(64, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, 64)
    buf = model.rollout_buffer
    obs = th.as_tensor(buf.observations.reshape(64, -1))
    actions = th.as_tensor(buf.actions.reshape(64)).long()
    old_log_prob, returns = th.as_tensor(buf.log_probs.reshape(64)), th.as_tensor(buf.returns.reshape(64))
    raw_advantages = th.as_tensor(buf.advantages.reshape(64))
    start = copy.deepcopy(model.policy)  # parameters and optimizer state before the update

    model.train()
    fraction = model.logger.name_to_value["train/trust_region_fraction"]
    assert 0.0 < fraction < 1.0  # the trigger fired on some samples (and not on all)

    def hand_update(normalise: bool) -> list[th.Tensor]:
        policy = copy.deepcopy(start)
        policy.set_training_mode(True)
        with th.no_grad():
            old_logits = policy.action_net(policy.mlp_extractor.forward_actor(obs))  # pi_old, frozen
        adv = (raw_advantages - raw_advantages.mean()) / (raw_advantages.std() + 1e-8) if normalise else raw_advantages
        for _ in range(8):
            latent_pi, latent_vf = policy.mlp_extractor(obs)
            logits, values = policy.action_net(latent_pi), policy.value_net(latent_vf).flatten()
            log_prob = Categorical(logits=logits).log_prob(actions)
            ratio = th.exp(log_prob - old_log_prob)
            kl = th_kl(Categorical(logits=old_logits), Categorical(logits=logits))
            objective = _authors_objective(ratio, adv, kl, delta, kwargs["rollback_alpha"], method)
            loss = -objective.mean() + model.vf_coef * ((returns - values) ** 2).mean()
            policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), model.max_grad_norm)
            policy.optimizer.step()
        return [p.detach() for p in policy.parameters()]

    # minibatch order (SB3 shuffles) and the KL's formula only change float rounding
    for expected, got in zip(hand_update(normalise=True), model.policy.parameters(), strict=True):
        th.testing.assert_close(got.detach(), expected, rtol=1e-4, atol=2e-6)
    # the comparison can tell the advantages the trainer passes apart (raw ones give other parameters)
    raw = hand_update(normalise=False)
    assert any(
        not th.allclose(a, b.detach(), rtol=1e-3, atol=1e-5) for a, b in zip(raw, model.policy.parameters(), strict=True)
    )


def _continuous_head(policy, obs, beta):
    """pi and V of an SB3-style MLP policy built from torch.distributions (Beta: softplus + 1 concentrations)."""
    latent_pi, latent_vf = policy.mlp_extractor(policy.extract_features(obs))
    values = policy.value_net(latent_vf).flatten()
    if beta:
        alpha_raw, beta_raw = policy.action_net(latent_pi).chunk(2, dim=-1)
        softplus = th.nn.functional.softplus
        return Beta(softplus(alpha_raw) + 1, softplus(beta_raw) + 1), values
    return Normal(policy.action_net(latent_pi), policy.log_std.exp().expand(len(obs), -1)), values


@pytest.mark.parametrize(
    "method, beta, kwargs",
    [
        ("ppo_rb", False, dict(rollback_alpha=0.3)),
        ("ppo_rb", True, dict(rollback_alpha=0.3)),
        ("tr_ppo", False, dict(trust_region="kl", rollback_alpha=0.0)),
        ("tr_ppo_rb", False, dict(trust_region="kl")),
        ("tr_ppo_rb", True, dict(trust_region="kl", rollback_alpha=0.3)),
        ("truly_ppo", False, dict(trust_region="kl", rollback="kl")),
        ("truly_ppo", True, dict(trust_region="kl", rollback="kl", rollback_alpha=5.0)),
    ],
)
def test_continuous_update_equals_a_hand_written_update(method, beta, kwargs):
    """
    As the CartPole test above, for Gaussian and Beta policies on Pendulum with an entropy bonus and SB3's value
    clipping (``clip_range_vf``): log-probs, entropies and KL(pi_old || pi) from torch.distributions (the Beta on
    ``(a - low) / (high - low)``, its density and entropy moved by ``log(high - low)``), PPO-RB's objective as the
    authors' ``ratio_rollback`` (slope ``-alpha`` beyond the clip range, on the advantage's side).
    """
    import copy

    n, epochs, eps, clip_vf, ent_coef, delta = 256, 6, 0.2, 0.3, 0.01, 0.002
    model = PPORollback(
        "MlpPolicy", "Pendulum-v1", n_steps=n, batch_size=n, n_epochs=epochs, learning_rate=3e-3, clip_range=eps,
        clip_range_vf=clip_vf, ent_coef=ent_coef, seed=0, device="cpu",
        policy_kwargs=dict(action_distribution="beta") if beta else {},
        **(dict(kl_threshold=delta) if "trust_region" in kwargs else {}), **kwargs,
    )  # fmt: skip
    _, callback = model._setup_learn(n, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n)
    buf = model.rollout_buffer
    obs, actions = th.as_tensor(buf.observations.reshape(n, -1)), th.as_tensor(buf.actions.reshape(n, -1))
    old_log_prob, returns = th.as_tensor(buf.log_probs.reshape(n)), th.as_tensor(buf.returns.reshape(n))
    old_values, raw_adv = th.as_tensor(buf.values.reshape(n)), th.as_tensor(buf.advantages.reshape(n))
    low, high = th.as_tensor(model.action_space.low), th.as_tensor(model.action_space.high)
    start = copy.deepcopy(model.policy)

    model.train()
    logged = model.logger.name_to_value
    fraction = logged["train/trust_region_fraction" if "trust_region" in kwargs else "train/rollback_fraction"]
    assert 0.0 < fraction < 1.0  # the rollback / trigger branch was taken on some samples

    def hand_update(sign: float) -> list[th.Tensor]:
        policy = copy.deepcopy(start)
        policy.set_training_mode(True)
        with th.no_grad():
            old_dist, _ = _continuous_head(policy, obs, beta)
        adv = (raw_adv - raw_adv.mean()) / (raw_adv.std() + 1e-8)
        alpha = sign * model.rollback_alpha
        for _ in range(epochs):
            dist, values = _continuous_head(policy, obs, beta)
            if beta:
                unit = ((actions - low) / (high - low)).clamp(1e-6, 1 - 1e-6)
                log_prob = (dist.log_prob(unit) - th.log(high - low)).sum(1)
                entropy = (dist.entropy() + th.log(high - low)).sum(1)
            else:
                log_prob, entropy = dist.log_prob(actions).sum(1), dist.entropy().sum(1)
            ratio = th.exp(log_prob - old_log_prob)
            if method == "ppo_rb":  # the authors' ClipType.ratio_rollback, slope = -alpha
                bound = th.where(adv >= 0, th.full_like(ratio, 1 + eps), th.full_like(ratio, 1 - eps))
                outside = th.where(adv >= 0, ratio > 1 + eps, ratio < 1 - eps)
                objective = th.where(outside, -alpha * ratio + (1 + alpha) * bound, ratio) * adv
            else:
                kl = th_kl(old_dist, dist).sum(1)
                objective = _authors_objective(ratio, adv, kl, delta, alpha, method)
            clipped_values = old_values + th.clamp(values - old_values, -clip_vf, clip_vf)
            loss = -objective.mean() - ent_coef * entropy.mean() + model.vf_coef * ((returns - clipped_values) ** 2).mean()
            policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), model.max_grad_norm)
            policy.optimizer.step()
        return [p.detach() for p in policy.parameters()]

    for expected, got in zip(hand_update(1.0), model.policy.parameters(), strict=True):
        th.testing.assert_close(got.detach(), expected, rtol=0.0, atol=1e-6)
    moved = max(
        (a.detach() - b.detach()).abs().max().item()
        for a, b in zip(start.parameters(), model.policy.parameters(), strict=True)
    )
    assert moved > 1e-3
    if method != "tr_ppo":  # (alpha = 0: no slope to flip) the comparison tells the rollback's sign apart
        flipped = hand_update(-1.0)
        assert any(not th.allclose(a, b.detach(), atol=1e-5) for a, b in zip(flipped, model.policy.parameters(), strict=True))
