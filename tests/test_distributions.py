"""
Action distributions, checked against independent references.

Every expected value is computed with ``torch.distributions`` (or numerically, or by an explicit formula) from the
parameter layout the design fixes: one flat parameter tensor per distribution, the components' parameters
concatenated in order for Tuples; Gaussian families ``[mean, log_std]``; Beta ``[alpha_raw, beta_raw]`` with
concentrations ``softplus(raw) + 1``; logits for Categorical / Gumbel-Softmax / MultiCategorical / Bernoulli.
"""

import warnings
from functools import partial

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common import distributions as sb3_dist
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv
from torch.distributions import (
    AffineTransform,
    Bernoulli,
    Beta,
    Categorical,
    Normal,
    TanhTransform,
    TransformedDistribution,
)
from torch.distributions import kl_divergence as th_kl
from torch.nn import functional as F

from sb3_cherry import PPORollback
from sb3_cherry.common.distributions import (
    BernoulliDistribution,
    BetaDistribution,
    CategoricalDistribution,
    CherryDistribution,
    GumbelSoftmaxDistribution,
    MultiCategoricalDistribution,
    NormalDistribution,
    TanhNormalDistribution,
    TupleDistribution,
    gaussian_range_warning,
    kl_divergence,
    make_distribution,
    resolve_spec,
)
from sb3_cherry.common.policies import CherryActorCriticPolicy
from sb3_cherry.common.spaces import flatten_action, unflatten_action, unflatten_actions

# Non-symmetric, non-unit bounds (exactly representable in float32)
LOW = np.array([-1.0, 0.0, 2.0], dtype=np.float32)
HIGH = np.array([1.0, 5.0, 3.0], dtype=np.float32)
BOX3 = spaces.Box(LOW, HIGH, dtype=np.float32)
LOW_T, HIGH_T = th.as_tensor(LOW, dtype=th.float64), th.as_tensor(HIGH, dtype=th.float64)

NESTED = spaces.Tuple(
    (
        spaces.Discrete(3),
        spaces.Tuple((spaces.Box(-1, 1, (1,)), spaces.Box(0, 2, (2,)), spaces.Box(-5, 5, (1,)))),
    )
)
NESTED_SPEC = ("gumbel_softmax", ("beta", "tanh_normal", "normal"))


@pytest.fixture(autouse=True)
def _seed():
    th.manual_seed(0)
    np.random.seed(0)


# ---------------------------------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------------------------------


def ref_beta(params: th.Tensor, low: th.Tensor, high: th.Tensor) -> TransformedDistribution:
    alpha_raw, beta_raw = params.chunk(2, dim=-1)
    base = Beta(F.softplus(alpha_raw) + 1.0, F.softplus(beta_raw) + 1.0)
    return TransformedDistribution(base, AffineTransform(low.to(params.dtype), (high - low).to(params.dtype)))


def ref_tanh_normal(params: th.Tensor, low: th.Tensor, high: th.Tensor) -> TransformedDistribution:
    mean, log_std = params.chunk(2, dim=-1)
    low, high = low.to(params.dtype), high.to(params.dtype)
    return TransformedDistribution(
        Normal(mean, log_std.exp()), [TanhTransform(), AffineTransform(loc=(high + low) / 2, scale=(high - low) / 2)]
    )


def ref_normal(params: th.Tensor) -> Normal:
    mean, log_std = params.chunk(2, dim=-1)
    return Normal(mean, log_std.exp())


def ks_statistic(samples: np.ndarray, cdf) -> float:
    """Kolmogorov-Smirnov distance between the empirical CDF of ``samples`` and ``cdf``."""
    x = np.sort(samples)
    n = len(x)
    ref = cdf(x)
    return float(max(np.max(np.arange(1, n + 1) / n - ref), np.max(ref - np.arange(n) / n)))


def ks_critical(n: int) -> float:
    return 1.95 / np.sqrt(n)  # p = 0.001


# ---------------------------------------------------------------------------------------------------------------------
# log-prob against torch.distributions
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [th.float64, th.float32])
def test_beta_log_prob(dtype):
    params = (2.0 * th.randn(256, 6, dtype=th.float64)).to(dtype)
    ref = ref_beta(params.double(), LOW_T, HIGH_T)
    actions = ref.sample()
    # stay away from the epsilon margin at the bounds (tested separately)
    margin = 1e-4 * (HIGH_T - LOW_T)
    actions = th.maximum(th.minimum(actions, HIGH_T - margin), LOW_T + margin)
    dist = BetaDistribution(BOX3).proba_distribution(params)
    # float64: the log(high - low) term is computed from the float32 bounds (~1e-7 relative)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == th.float64 else dict(rtol=1e-4, atol=1e-4)
    th.testing.assert_close(dist.log_prob(actions.to(dtype)).double(), ref.log_prob(actions).sum(-1), **tol)


@pytest.mark.parametrize("dtype", [th.float64, th.float32])
def test_tanh_normal_log_prob(dtype):
    mean = 2.0 * th.rand(256, 3, dtype=th.float64) - 1.0
    log_std = th.rand(256, 3, dtype=th.float64) - 0.8
    params = th.cat([mean, log_std], dim=1)
    ref = ref_tanh_normal(params, LOW_T, HIGH_T)
    actions = ref.sample()
    margin = 1e-4 * (HIGH_T - LOW_T)
    actions = th.maximum(th.minimum(actions, HIGH_T - margin), LOW_T + margin)
    dist = TanhNormalDistribution(BOX3).proba_distribution(params.to(dtype))
    tol = dict(rtol=1e-7, atol=1e-7) if dtype == th.float64 else dict(rtol=2e-3, atol=2e-3)
    th.testing.assert_close(dist.log_prob(actions.to(dtype)).double(), ref.log_prob(actions).sum(-1), **tol)


def test_normal_log_prob():
    params = th.randn(64, 6)
    actions = 3.0 * th.randn(64, 3)
    dist = NormalDistribution(BOX3).proba_distribution(params)
    th.testing.assert_close(dist.log_prob(actions), ref_normal(params).log_prob(actions).sum(-1))


def test_one_column_actions_accept_flat_shape():
    space = spaces.Box(0, 2, (1,))
    params = th.randn(10, 2)
    for name in ("normal", "beta", "tanh_normal"):
        dist = make_distribution(space, name) if name != "normal" else NormalDistribution(space)
        dist.proba_distribution(params)
        actions = th.rand(10, 1) * 2
        th.testing.assert_close(dist.log_prob(actions), dist.log_prob(actions.flatten()))


@pytest.mark.parametrize("cls", [CategoricalDistribution, GumbelSoftmaxDistribution])
def test_categorical_log_prob(cls):
    space = spaces.Discrete(5, start=-2)
    logits = th.randn(64, 5)
    index = Categorical(logits=logits).sample()
    dist = cls(space).proba_distribution(logits)
    expected = Categorical(logits=logits).log_prob(index)
    # (batch,) long, (batch, 1) float (as stored in rollout buffers): both accepted
    th.testing.assert_close(dist.log_prob(index - 2), expected)
    th.testing.assert_close(dist.log_prob((index - 2).float().unsqueeze(1)), expected)


def test_multi_categorical_log_prob():
    space = spaces.MultiDiscrete([3, 2, 4], start=[1, 0, -1])
    logits = th.randn(64, 9)
    refs = [Categorical(logits=x) for x in logits.split([3, 2, 4], dim=1)]
    index = th.stack([r.sample() for r in refs], dim=1)
    expected = sum(r.log_prob(i) for r, i in zip(refs, index.unbind(1), strict=True))
    dist = MultiCategoricalDistribution(space).proba_distribution(logits)
    th.testing.assert_close(dist.log_prob((index + th.tensor([1, 0, -1])).float()), expected)


def test_bernoulli_log_prob():
    logits = th.randn(64, 4)
    actions = Bernoulli(logits=logits).sample()
    dist = BernoulliDistribution(spaces.MultiBinary(4)).proba_distribution(logits)
    th.testing.assert_close(dist.log_prob(actions), Bernoulli(logits=logits).log_prob(actions).sum(-1))


def test_log_prob_from_params():
    dist = BetaDistribution(BOX3)
    params = th.randn(8, 6)
    actions, log_prob = dist.log_prob_from_params(params)
    th.testing.assert_close(log_prob, ref_beta(params.double(), LOW_T, HIGH_T).log_prob(actions.double()).sum(-1).float())
    assert th.equal(dist.actions_from_params(params, deterministic=True), dist.deterministic_action())


# ---------------------------------------------------------------------------------------------------------------------
# Densities, samples, entropies, modes of the Box distributions (1-D, non-unit intervals)
# ---------------------------------------------------------------------------------------------------------------------

INTERVALS = [(0.0, 2.0), (-3.0, 1.0)]
BOX_PARAMS = {
    "beta": [(0.0, 0.0), (2.0, -1.0), (-3.0, 3.0), (4.0, 4.0)],
    "tanh_normal": [(0.0, 0.0), (1.5, -0.5), (-1.0, 0.3), (0.3, -2.0)],
}


@pytest.mark.parametrize("low, high", INTERVALS)
@pytest.mark.parametrize("name", ["beta", "tanh_normal", "normal"])
def test_density_integrates_to_one(name, low, high):
    space = spaces.Box(low, high, (1,))
    dist = NormalDistribution(space) if name == "normal" else make_distribution(space, name)
    for p in BOX_PARAMS.get(name, [(0.5, 0.0), (-1.0, -1.5)]):
        params = th.tensor([p], dtype=th.float64)
        if name == "normal":
            a, b = p[0] - 12 * np.exp(p[1]), p[0] + 12 * np.exp(p[1])
        else:
            delta = 1e-6 * (high - low)  # the endpoint singularities of atanh / log are left out
            a, b = low + delta, high - delta
        grid = th.linspace(a, b, 20_001, dtype=th.float64)
        dist.proba_distribution(params.expand(len(grid), 2))
        density = dist.log_prob(grid.unsqueeze(1)).exp()
        assert th.isfinite(density).all()
        assert th.trapezoid(density, grid).item() == pytest.approx(1.0, abs=2e-3), p


def _beta_cdf(alpha: float, beta: float, low: float, high: float):
    grid = th.linspace(0.0, 1.0, 20_001, dtype=th.float64)
    reference = Beta(th.tensor(alpha, dtype=th.float64), th.tensor(beta, dtype=th.float64))
    pdf = reference.log_prob(grid.clamp(1e-12, 1 - 1e-12)).exp()
    cdf = th.cat([th.zeros(1, dtype=th.float64), th.cumulative_trapezoid(pdf, grid)]).numpy()
    cdf /= cdf[-1]
    return lambda x: np.interp((x - low) / (high - low), grid.numpy(), cdf)


def _tanh_normal_cdf(base: Normal, low: float, high: float, x: np.ndarray) -> np.ndarray:
    squashed = th.as_tensor(2 * (x - low) / (high - low) - 1).clamp(-1 + 1e-15, 1 - 1e-15)
    return base.cdf(th.atanh(squashed)).numpy()


def _normal_cdf(base: Normal, x: np.ndarray) -> np.ndarray:
    return base.cdf(th.as_tensor(x)).numpy()


@pytest.mark.parametrize("low, high", INTERVALS)
@pytest.mark.parametrize("name", ["beta", "tanh_normal", "normal"])
def test_sample_histogram_matches_density(name, low, high):
    n = 2000
    space = spaces.Box(low, high, (1,))
    dist = NormalDistribution(space) if name == "normal" else make_distribution(space, name)
    for p in BOX_PARAMS.get(name, [(0.5, 0.0), (-1.0, -1.5)]):
        params = th.tensor([p], dtype=th.float64).expand(n, 2)
        with th.no_grad():
            samples = dist.proba_distribution(params).sample().numpy().reshape(-1)
        base = Normal(th.tensor(p[0], dtype=th.float64), th.tensor(np.exp(p[1]), dtype=th.float64))
        if name == "beta":
            alpha, beta = (F.softplus(th.tensor(x, dtype=th.float64)).item() + 1.0 for x in p)
            cdf = _beta_cdf(alpha, beta, low, high)
        elif name == "tanh_normal":
            cdf = partial(_tanh_normal_cdf, base, low, high)
        else:
            cdf = partial(_normal_cdf, base)
        if name != "normal":
            assert samples.min() >= low and samples.max() <= high
        assert ks_statistic(samples, cdf) < ks_critical(n), p


@pytest.mark.parametrize("name", ["beta", "tanh_normal"])
@pytest.mark.parametrize("scale", [1.0, 25.0])
def test_samples_inside_bounds(name, scale):
    dist = make_distribution(BOX3, name)
    params = scale * th.randn(5000, 6)
    if name == "tanh_normal":
        params[:, 3:] = th.randn(5000, 3).clamp(-5.0, 2.0)  # extreme means; log_std within float32 range
    with th.no_grad():
        samples = dist.proba_distribution(params).sample()
        mode = dist.mode()
    for a in (samples, mode):
        assert th.isfinite(a).all()
        assert (a >= th.as_tensor(LOW)).all() and (a <= th.as_tensor(HIGH)).all()
        assert all(BOX3.contains(x) for x in a[:200].numpy())


@pytest.mark.parametrize("cls", [CategoricalDistribution, GumbelSoftmaxDistribution])
def test_categorical_sample_frequencies(cls):
    """Gumbel-max samples are exact categorical samples (any temperature)."""
    n = 20_000
    logits = th.tensor([[1.0, -0.5, 0.0, 2.0]])
    kwargs = {"temperature": 0.3} if cls is GumbelSoftmaxDistribution else {}
    dist = cls(spaces.Discrete(4, start=3), **kwargs).proba_distribution(logits.expand(n, 4))
    samples = dist.sample()
    assert samples.shape == (n, 1) and samples.min() >= 3 and samples.max() <= 6
    freq = th.bincount(samples[:, 0] - 3, minlength=4).float() / n
    th.testing.assert_close(freq, th.softmax(logits[0], 0), atol=0.015, rtol=0)
    assert dist.mode()[0].item() == 6


def test_gumbel_softmax_relaxed_sample():
    dist = GumbelSoftmaxDistribution(spaces.Discrete(4), temperature=0.5)
    logits = th.randn(32, 4, requires_grad=True)
    dist.proba_distribution(logits)
    soft = dist.relaxed_sample()
    th.testing.assert_close(soft.sum(1), th.ones(32))
    hard = dist.relaxed_sample(hard=True)
    assert ((hard == 0) | (hard == 1)).all() and (hard.sum(1) == 1).all()
    (hard * th.arange(4.0)).sum().backward()
    assert logits.grad is not None and th.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="temperature"):
        GumbelSoftmaxDistribution(spaces.Discrete(4), temperature=0.0)


def _entropy_check(dist, params: th.Tensor, n: int = 5000) -> th.Tensor:
    """Analytic entropy vs -mean log-prob over ``n`` samples for each row of ``params``; returns the entropy."""
    batch = len(params)
    with th.no_grad():
        dist.proba_distribution(params.repeat(n, 1))
        log_prob = dist.log_prob(dist.sample()).reshape(n, batch)
        entropy = dist.entropy().reshape(n, batch)[0]
    estimate = -log_prob.mean(0)
    tol = 4.0 * log_prob.std(0) / np.sqrt(n) + 1e-3
    assert (estimate - entropy).abs().le(tol).all(), (estimate, entropy)
    return entropy


def test_entropy_beta():
    params = th.randn(3, 6, dtype=th.float64)
    entropy = _entropy_check(BetaDistribution(BOX3), params)
    alpha, beta = (F.softplus(x) + 1 for x in params.chunk(2, dim=1))
    # differential entropy of the affine map: H(Beta) + log(high - low), summed over dimensions
    th.testing.assert_close(entropy, (Beta(alpha, beta).entropy() + th.log(HIGH_T - LOW_T)).sum(1))


@pytest.mark.parametrize("dtype", [th.float64, th.float32])
def test_beta_closed_forms_and_gradients_match_torch(dtype):
    """Entropy, KL and log-density are written out on (alpha, beta): values and gradients against torch's Beta, from
    near-uniform (alpha - 1 ~ 2e-9) to concentrated dimensions (alpha ~ 3000 in float64; ~ 9 in float32, where both
    closed forms lose digits to cancellation at large concentrations, differently)."""
    th.manual_seed(3)
    high = 3000.0 if dtype == th.float64 else 8.0
    raw_p = (th.rand(512, 6, dtype=th.float64) * (high + 20.0) - 20.0).to(dtype).requires_grad_()
    raw_q = (th.rand(512, 6, dtype=th.float64) * (high + 20.0) - 20.0).to(dtype).requires_grad_()
    p, q = BetaDistribution(BOX3).proba_distribution(raw_p), BetaDistribution(BOX3).proba_distribution(raw_q)
    unit = th.rand(512, 3, dtype=th.float64).clamp(1e-3, 1 - 1e-3)
    actions = (LOW_T + unit * (HIGH_T - LOW_T)).to(dtype)
    ours = (p.entropy(), p.kl(q), p.log_prob(actions))
    ref_p, ref_q = (Beta(*(F.softplus(x) + 1 for x in raw.chunk(2, dim=1)), validate_args=False) for raw in (raw_p, raw_q))
    # the affine map's constants from the distribution's own (float32) bounds, in the parameters' dtype: the closed
    # forms are under test
    low, high = p.low.to(dtype), p.high.to(dtype)
    log_range = th.log(high - low)
    unit_actions = ((actions - low) / (high - low)).clamp(1e-6, 1 - 1e-6)
    refs = (
        (ref_p.entropy() + log_range).sum(1),
        th_kl(ref_p, ref_q).sum(1),
        (ref_p.log_prob(unit_actions) - log_range).sum(1),
    )
    tol = dict(rtol=1e-9, atol=1e-8) if dtype == th.float64 else dict(rtol=2e-4, atol=2e-3)
    for got, expected in zip(ours, refs, strict=True):
        th.testing.assert_close(got, expected, **tol)
        grads = th.autograd.grad(got.sum(), (raw_p, raw_q), retain_graph=True, materialize_grads=True)
        ref_grads = th.autograd.grad(expected.sum(), (raw_p, raw_q), retain_graph=True, materialize_grads=True)
        for g, r in zip(grads, ref_grads, strict=True):
            th.testing.assert_close(g, r, **tol)
    # torch's Beta is still available, built from the same concentrations (None before any parameters, as in SB3)
    th.testing.assert_close(p.distribution.concentration1, F.softplus(raw_p[:, :3]) + 1)
    assert BetaDistribution(BOX3).distribution is None
    with pytest.raises(AttributeError, match="built from its parameters"):
        p.distribution = ref_p


def test_beta_shared_log_beta_follows_parameters_and_grad_mode():
    """log B(alpha, beta) is shared between log_prob, entropy and kl: a value computed without gradient (e.g. for
    logging) must not stand in for one with gradient, nor survive new concentrations."""
    raw = th.tensor([[0.3, -1.2, 2.0, 0.5, 1.0, -0.3]], requires_grad=True)
    actions = th.tensor([[0.2, 0.5, 0.0]])

    def grad_of_log_prob(dist):
        return th.autograd.grad(dist.log_prob(actions).sum(), raw)[0]

    expected = grad_of_log_prob(BetaDistribution(BOX3).proba_distribution(raw))
    for mode in (th.no_grad, th.inference_mode):
        dist = BetaDistribution(BOX3).proba_distribution(raw)
        with mode():
            dist.entropy()
        th.testing.assert_close(grad_of_log_prob(dist), expected)
    dist = BetaDistribution(BOX3).proba_distribution(raw.detach())
    dist.entropy()
    dist.alpha = dist.alpha * 5.0
    alpha, beta = (F.softplus(x) + 1 for x in raw.detach().chunk(2, dim=1))
    ref = (Beta(alpha * 5.0, beta).entropy() + th.log(HIGH_T - LOW_T).float()).sum(1)
    th.testing.assert_close(dist.entropy(), ref)


def test_categorical_written_out_matches_torch():
    """Log-probs, entropy, KL (values and gradients) and samples (same random stream) against torch's Categorical."""
    th.manual_seed(4)
    space = spaces.Discrete(5, start=2)
    raw_p = (3.0 * th.randn(256, 5, dtype=th.float64)).requires_grad_()
    raw_q = (3.0 * th.randn(256, 5, dtype=th.float64)).requires_grad_()
    p, q = CategoricalDistribution(space).proba_distribution(raw_p), CategoricalDistribution(space).proba_distribution(raw_q)
    ref_p, ref_q = Categorical(logits=raw_p), Categorical(logits=raw_q)
    index = th.randint(0, 5, (256,))
    ours = (p.log_prob((index + 2).double().unsqueeze(1)), p.entropy(), p.kl(q))
    refs = (ref_p.log_prob(index), ref_p.entropy(), th_kl(ref_p, ref_q))
    for got, expected in zip(ours, refs, strict=True):
        th.testing.assert_close(got, expected)
        grads = th.autograd.grad(got.sum(), (raw_p, raw_q), retain_graph=True, materialize_grads=True)
        ref_grads = th.autograd.grad(expected.sum(), (raw_p, raw_q), retain_graph=True, materialize_grads=True)
        for g, r in zip(grads, ref_grads, strict=True):
            th.testing.assert_close(g, r)
    th.manual_seed(5)
    sample = p.sample()
    th.manual_seed(5)
    th.testing.assert_close(sample, ref_p.sample().unsqueeze(1) + 2)
    th.testing.assert_close(p.mode(), ref_p.probs.argmax(dim=1, keepdim=True) + 2)
    assert isinstance(p.distribution, Categorical)
    th.testing.assert_close(p.distribution.probs, ref_p.probs)
    assert CategoricalDistribution(space).distribution is None
    # broadcasting as torch's: one action for every state, one state for every action
    th.testing.assert_close(p.log_prob(th.tensor([[4.0]])), ref_p.log_prob(th.tensor(2)))
    one = CategoricalDistribution(space).proba_distribution(raw_p[:1])
    th.testing.assert_close(one.log_prob(th.tensor([[2.0], [6.0]])), Categorical(logits=raw_p[:1]).log_prob(th.tensor([0, 4])))
    # masked (-inf) logits: values as torch's, a finite KL gradient where p has no mass
    masked = raw_p.detach().clone()
    masked[:, 1] = -float("inf")
    m = CategoricalDistribution(space).proba_distribution(masked)
    ref_m = Categorical(logits=masked)
    th.testing.assert_close(m.entropy(), ref_m.entropy())
    th.testing.assert_close(m.log_prob(th.tensor([[3.0]])), ref_m.log_prob(th.tensor(1)))
    raw_q2 = raw_q.detach().clone().requires_grad_()
    kl = m.kl(CategoricalDistribution(space).proba_distribution(raw_q2))
    th.testing.assert_close(kl, th_kl(ref_m, Categorical(logits=raw_q2.detach())))
    assert th.isfinite(th.autograd.grad(kl.sum(), raw_q2)[0]).all()


def test_entropy_normal():
    params = th.randn(3, 6, dtype=th.float64)
    entropy = _entropy_check(NormalDistribution(BOX3), params)
    th.testing.assert_close(entropy, ref_normal(params).entropy().sum(1))


def test_entropy_discrete_families():
    logits = th.randn(3, 5, dtype=th.float64)
    th.testing.assert_close(
        _entropy_check(CategoricalDistribution(spaces.Discrete(5, start=1)), logits), Categorical(logits=logits).entropy()
    )
    th.testing.assert_close(
        _entropy_check(GumbelSoftmaxDistribution(spaces.Discrete(5)), logits), Categorical(logits=logits).entropy()
    )
    md = spaces.MultiDiscrete([2, 3], start=[-1, 4])
    expected = sum(Categorical(logits=x).entropy() for x in logits.split([2, 3], dim=1))
    th.testing.assert_close(_entropy_check(MultiCategoricalDistribution(md), logits), expected)
    logits = th.randn(3, 4, dtype=th.float64)
    th.testing.assert_close(
        _entropy_check(BernoulliDistribution(spaces.MultiBinary(4)), logits), Bernoulli(logits=logits).entropy().sum(1)
    )


def test_tanh_normal_entropy_is_differentiable():
    # (Monte-Carlo agreement and gradients against a numerical integral: tests/test_entropy.py)
    entropy = TanhNormalDistribution(BOX3).proba_distribution(th.zeros(2, 6, requires_grad=True)).entropy()
    assert entropy.shape == (2,) and entropy.requires_grad


# ---------------------------------------------------------------------------------------------------------------------
# Numerical robustness at the bounds and for extreme parameters (float32)
# ---------------------------------------------------------------------------------------------------------------------


def _edge_actions() -> th.Tensor:
    """Actions exactly on the bounds, 1e-7 inside, one float32 ulp inside, and mixed per dimension."""
    low, high = th.as_tensor(LOW), th.as_tensor(HIGH)
    rows = [
        low,
        high,
        low + 1e-7,
        high - 1e-7,
        th.nextafter(low, high),
        th.nextafter(high, low),
        th.where(th.tensor([True, False, True]), low, high),
        (low + high) / 2,
    ]
    return th.stack(rows).float()


@pytest.mark.parametrize("name", ["beta", "tanh_normal"])
def test_no_nan_at_bounds_and_extreme_params(name):
    if name == "tanh_normal":
        grid = [(m, s) for m in (-20.0, 0.0, 20.0) for s in (-5.0, 0.0, 2.0)]
    else:
        grid = [(a, b) for a in (-20.0, 0.0, 20.0) for b in (-20.0, 0.0, 20.0)]
    actions = _edge_actions()
    dist = make_distribution(BOX3, name)
    for first, second in grid:
        params = th.tensor([[first] * 3 + [second] * 3], dtype=th.float32).repeat(len(actions), 1).requires_grad_(True)
        dist.proba_distribution(params)
        log_prob = dist.log_prob(actions)
        assert log_prob.dtype == th.float32
        assert th.isfinite(log_prob).all(), (first, second, log_prob)
        log_prob.sum().backward()
        assert th.isfinite(params.grad).all(), (first, second, params.grad)

        # Through reparameterised samples and the mode as well
        params.grad = None
        dist.proba_distribution(params)
        sample = dist.sample()
        assert th.isfinite(sample).all() and th.isfinite(dist.mode()).all()
        log_prob = dist.log_prob(sample)
        assert th.isfinite(log_prob).all()
        log_prob.sum().backward()
        assert th.isfinite(params.grad).all()


def test_tanh_normal_log_prob_of_saturated_float32_actions():
    """
    Actions whose pre-squash value lies beyond atanh(1 - 1e-6) = 7.25 but is still resolved by float32 (tanh(8) is
    1 - 2.4e-7): the log-density is that of torch's transformed distribution at the same (float32) action, computed
    in float64. A fixed 1e-6 margin read them all as u = 7.25 (3.17 instead of 1.2 at u = 8).
    """
    space = spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
    params = th.tensor([[3.0, 0.0]])  # mean 3, std 1
    u = th.tensor([7.0, 7.5, 8.0, 8.2])
    actions = th.tanh(u).unsqueeze(1)  # float32
    assert (actions < 1.0).all()
    dist = TanhNormalDistribution(space).proba_distribution(params.expand(4, 2))
    ref = ref_tanh_normal(params.double().expand(4, 2), th.tensor([-1.0]).double(), th.tensor([1.0]).double())
    th.testing.assert_close(dist.log_prob(actions).double(), ref.log_prob(actions.double()).sum(-1), rtol=1e-3, atol=1e-3)


def test_tanh_normal_score_of_a_saturated_policy_has_zero_mean():
    """
    Monte Carlo: E[d log p(a) / d mean] = 0 for actions drawn from the distribution itself (float32, mean 6, std 1,
    400k samples, standard error 0.0016). The 1e-6 margin gave -0.052; what remains is the float32 saturation of
    tanh beyond u = 8.3 (1 % of the samples here).
    """
    th.manual_seed(0)
    space = spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
    params = th.tensor([[6.0, 0.0]]).expand(400_000, 2).clone().requires_grad_(True)
    dist = TanhNormalDistribution(space).proba_distribution(params)
    actions = dist.sample().detach()
    dist.log_prob(actions).mean().backward()
    assert abs(params.grad[:, 0].sum().item()) < 0.015


def test_tanh_normal_saturated_log_prob_is_stable():
    """On the bound, the log-density of a tanh-Normal centred far outside must stay finite and monotone."""
    dist = TanhNormalDistribution(BOX3).proba_distribution(th.tensor([[20.0, -20.0, 20.0, 0.0, 0.0, 0.0]]))
    at_mode = dist.log_prob(dist.mode())
    inside = dist.log_prob(((th.as_tensor(LOW) + th.as_tensor(HIGH)) / 2).unsqueeze(0))
    assert th.isfinite(at_mode).all() and th.isfinite(inside).all()
    assert at_mode.item() > inside.item()


# ---------------------------------------------------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------------------------------------------------


def test_beta_mode():
    params = th.randn(64, 6, dtype=th.float64)
    dist = BetaDistribution(BOX3).proba_distribution(params)
    alpha, beta = (F.softplus(x) + 1 for x in params.chunk(2, dim=1))
    expected = LOW_T + (alpha - 1) / (alpha + beta - 2) * (HIGH_T - LOW_T)
    th.testing.assert_close(dist.mode(), expected)


@pytest.mark.parametrize("p", [(0.0, 0.0), (2.0, -1.0), (-3.0, 3.0)])
def test_beta_mode_is_density_argmax(p):
    """The mode maximises the (torch reference) density on the non-unit interval [-3, 1]."""
    params = th.tensor([p], dtype=th.float64)
    mode = BetaDistribution(spaces.Box(-3.0, 1.0, (1,))).proba_distribution(params).mode()
    grid = th.linspace(-3.0 + 1e-9, 1.0 - 1e-9, 100_001, dtype=th.float64).unsqueeze(1)
    density = ref_beta(params, th.tensor([-3.0]), th.tensor([1.0])).log_prob(grid)[:, 0]
    assert mode.item() == pytest.approx(grid[density.argmax(), 0].item(), abs=2e-5)


def test_beta_mode_uniform_is_finite():
    """alpha = beta = 1 in float32 (softplus underflows for raw params below ~ -17): the mode must not be 0 / 0."""
    params = th.tensor([[-30.0, -30.0, -30.0, -30.0, -30.0, -30.0], [-30.0, 20.0, 0.0, 20.0, -30.0, 0.0]])
    mode = BetaDistribution(BOX3).proba_distribution(params).mode()
    assert th.isfinite(mode).all()
    th.testing.assert_close(mode[0], (th.as_tensor(LOW) + th.as_tensor(HIGH)) / 2)
    # alpha = 1 < beta: mode at low; alpha > 1 = beta: mode at high
    th.testing.assert_close(mode[1, 0], th.tensor(LOW[0]))
    th.testing.assert_close(mode[1, 1], th.tensor(HIGH[1]))


def test_beta_mode_near_uniform_stays_inside():
    """Concentrations within a few float32 ulps of 1: alpha + beta - 2 cancels catastrophically; the mode must not."""
    raw = th.tensor([-30.0, -17.0, -16.0, -15.5, -15.0, -14.0, -12.0, -8.0])
    pairs = th.cartesian_prod(raw, raw)
    params = th.cat([pairs[:, :1].expand(-1, 3), pairs[:, 1:].expand(-1, 3)], dim=1)
    dist = BetaDistribution(BOX3).proba_distribution(params)
    mode = dist.mode()
    assert th.isfinite(mode).all()
    assert (mode >= th.as_tensor(LOW)).all() and (mode <= th.as_tensor(HIGH)).all()
    # float64 reference from the same float32 concentrations (uniform rows: the middle of the bounds)
    alpha, beta = dist.distribution.concentration1.double(), dist.distribution.concentration0.double()
    unit = ((alpha - 1) / (alpha + beta - 2)).nan_to_num(0.5)
    th.testing.assert_close(mode.double(), LOW_T + unit * (HIGH_T - LOW_T), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["beta", "tanh_normal"])
def test_saturated_samples_and_modes_stay_inside_arbitrary_bounds(name):
    """low + 1 * (high - low) can round one ulp above high: the distributions must still return valid actions."""
    gen = th.Generator().manual_seed(1)
    low = (3 * th.randn(2000, generator=gen)).numpy().astype(np.float32)
    high = (th.as_tensor(low) + 5 * th.rand(2000, generator=gen) + 1e-3).numpy().astype(np.float32)
    space = spaces.Box(low, high, dtype=np.float32)
    dist = make_distribution(space, name)
    for sign in (1.0, -1.0):
        first = th.full((1, 2000), 40.0 * sign)
        second = th.full((1, 2000), -40.0 * sign) if name == "beta" else th.full((1, 2000), -3.0)
        dist.proba_distribution(th.cat([first, second], dim=1))
        for action in (dist.mode()[0].numpy(), dist.sample()[0].numpy()):
            assert space.contains(action)


def test_tanh_normal_mode():
    params = 3.0 * th.randn(64, 6, dtype=th.float64)
    dist = TanhNormalDistribution(BOX3).proba_distribution(params)
    expected = (HIGH_T + LOW_T) / 2 + th.tanh(params[:, :3]) * (HIGH_T - LOW_T) / 2
    th.testing.assert_close(dist.mode(), expected)


def test_discrete_modes():
    logits = th.randn(32, 4)
    categorical = CategoricalDistribution(spaces.Discrete(4, start=-1)).proba_distribution(logits)
    assert th.equal(categorical.mode()[:, 0], logits.argmax(1) - 1)
    assert th.equal(BernoulliDistribution(spaces.MultiBinary(4)).proba_distribution(logits).mode(), (logits > 0).float())
    md = MultiCategoricalDistribution(spaces.MultiDiscrete([2, 2], start=[5, 0])).proba_distribution(logits)
    expected = th.stack([logits[:, :2].argmax(1) + 5, logits[:, 2:].argmax(1)], dim=1)
    assert th.equal(md.mode(), expected)


# ---------------------------------------------------------------------------------------------------------------------
# Tuple distributions
# ---------------------------------------------------------------------------------------------------------------------

FLAT_TUPLE = spaces.Tuple(
    (spaces.Discrete(3, start=1), BOX3, spaces.MultiBinary(2), spaces.Box(0, 2, (1,)), spaces.MultiDiscrete([2, 3]))
)
FLAT_SPEC = ("gumbel_softmax", "beta", "bernoulli", "normal", "multi_categorical")


def _flat_tuple_refs(params: th.Tensor):
    """Torch reference distributions, one per component of FLAT_TUPLE, with their action column counts."""
    logits, beta, bern, normal, multi = params.split([3, 6, 2, 2, 5], dim=1)
    return [
        (lambda a: Categorical(logits=logits).log_prob(a[:, 0].long() - 1), Categorical(logits=logits).entropy(), 1),
        (lambda a: ref_beta(beta, LOW_T, HIGH_T).log_prob(a).sum(1), None, 3),
        (lambda a: Bernoulli(logits=bern).log_prob(a.to(bern)).sum(1), Bernoulli(logits=bern).entropy().sum(1), 2),
        (lambda a: ref_normal(normal).log_prob(a).sum(1), ref_normal(normal).entropy().sum(1), 1),
        (
            lambda a: sum(
                Categorical(logits=x).log_prob(c.long()) for x, c in zip(multi.split([2, 3], dim=1), a.unbind(1), strict=True)
            ),
            sum(Categorical(logits=x).entropy() for x in multi.split([2, 3], dim=1)),
            2,
        ),
    ]


def test_tuple_log_prob_and_entropy():
    dist = make_distribution(FLAT_TUPLE, FLAT_SPEC)
    assert isinstance(dist, TupleDistribution)
    assert [type(c) for c in dist.components] == [
        GumbelSoftmaxDistribution,
        BetaDistribution,
        BernoulliDistribution,
        NormalDistribution,
        MultiCategoricalDistribution,
    ]
    params = th.randn(128, dist.param_dim, dtype=th.float64)
    assert dist.param_dim == 18 and dist.action_dim == 9
    dist.proba_distribution(params)
    actions = dist.sample()
    assert actions.shape == (128, 9)
    columns = actions.split([1, 3, 2, 1, 2], dim=1)
    refs = _flat_tuple_refs(params)
    expected = sum(log_prob(a) for (log_prob, _, _), a in zip(refs, columns, strict=True))
    th.testing.assert_close(dist.log_prob(actions), expected)
    for got, (log_prob, _, _), a in zip(dist.component_log_probs(actions), refs, columns, strict=True):
        th.testing.assert_close(got, log_prob(a))
    alpha, beta = (F.softplus(x) + 1 for x in params[:, 3:9].chunk(2, dim=1))
    beta_entropy = (Beta(alpha, beta).entropy() + th.log(HIGH_T - LOW_T)).sum(1)
    expected_entropy = beta_entropy + sum(e for _, e, _ in refs if e is not None)
    th.testing.assert_close(dist.entropy(), expected_entropy)
    for row in actions[:50].numpy():
        assert FLAT_TUPLE.contains(unflatten_action(FLAT_TUPLE, row))


def test_consecutive_gaussians_are_fused():
    # Discrete, two Boxes (fused), a Beta Box (not fused), and a nested Tuple of two Boxes (fused inside it)
    space = spaces.Tuple(
        (
            spaces.Discrete(3),
            spaces.Box(-1, 1, (2,)),
            spaces.Box(-1, 1, (1,)),
            spaces.Box(0, 2, (1,)),
            spaces.Tuple((spaces.Box(-1, 1, (1,)), spaces.Box(-1, 1, (2,)))),
        )
    )
    dist = make_distribution(space, ("categorical", "normal", "normal", "beta", ("normal", "normal")))
    # the nested Tuple reduces to one Gaussian, which is evaluated without its Tuple wrapper
    assert [type(p) for p in dist.parts] == [CategoricalDistribution, NormalDistribution, BetaDistribution, NormalDistribution]
    assert [p.action_dim for p in dist.parts] == [1, 3, 1, 3] and dist.part_sizes == [[1], [2, 1], [1], [3]]
    assert len(dist.components) == 5 and [type(p) for p in dist.components[4].parts] == [NormalDistribution]
    assert dist.param_dim == 3 + 6 + 2 + 6 and dist.action_dim == 8
    # parameter layout: [logits | means(3), log_stds(3) | beta(2) | nested means(3), log_stds(3)]
    params = th.randn(64, dist.param_dim, dtype=th.float64)
    logits, gauss, beta, nested = params.split([3, 6, 2, 6], dim=1)
    dist.proba_distribution(params)
    actions = dist.sample().double()
    a_cat, a_g1, a_g2, a_beta, a_n1, a_n2 = actions.split([1, 2, 1, 1, 1, 2], dim=1)
    mean, log_std = gauss.chunk(2, dim=1)
    n_mean, n_log_std = nested.chunk(2, dim=1)
    low, high = th.zeros(1, dtype=th.float64), 2 * th.ones(1, dtype=th.float64)
    expected_components = [
        Categorical(logits=logits).log_prob(a_cat[:, 0].long()),
        Normal(mean[:, :2], log_std[:, :2].exp()).log_prob(a_g1).sum(1),
        Normal(mean[:, 2:], log_std[:, 2:].exp()).log_prob(a_g2).sum(1),
        ref_beta(beta, low, high).log_prob(a_beta).sum(1),
        Normal(n_mean, n_log_std.exp()).log_prob(th.cat([a_n1, a_n2], dim=1)).sum(1),
    ]
    for got, expected in zip(dist.component_log_probs(actions), expected_components, strict=True):
        th.testing.assert_close(got, expected)
    th.testing.assert_close(dist.log_prob(actions), sum(expected_components))
    expected_entropy = (
        Categorical(logits=logits).entropy()
        + Normal(mean, log_std.exp()).entropy().sum(1)
        + (Beta(*(F.softplus(x) + 1 for x in beta.chunk(2, dim=1))).entropy() + th.log(high - low)).sum(1)
        + Normal(n_mean, n_log_std.exp()).entropy().sum(1)
    )
    th.testing.assert_close(dist.entropy(), expected_entropy)
    th.testing.assert_close(dist.mode()[:, 1:4], mean.float())
    # a nested all-Gaussian Tuple next to a Gaussian: one part, component log-probs still per component
    hybrid = spaces.Tuple((spaces.Box(-1, 1, (1,)), spaces.Tuple((spaces.Box(-1, 1, (2,)), spaces.Box(-1, 1, (1,))))))
    fused = make_distribution(hybrid, "normal")
    assert len(fused.parts) == 1 and fused.part_sizes == [[1, 3]] and fused.param_dim == 8
    params = th.randn(16, 8, dtype=th.float64)
    fused.proba_distribution(params)
    actions = fused.sample().double()
    g_mean, g_log_std = params.chunk(2, dim=1)
    per_column = Normal(g_mean, g_log_std.exp()).log_prob(actions)
    got = fused.component_log_probs(actions)
    th.testing.assert_close(got[0], per_column[:, 0])
    th.testing.assert_close(got[1], per_column[:, 1:].sum(1))
    # one Gaussian head (one log_std vector) per fused group
    spec = ("categorical", "normal", "normal", "beta", ("normal", "normal"))
    model = PPORollback("MlpPolicy", ActionSpaceEnv(space), policy_kwargs=dict(action_distribution=spec), **PPO_KWARGS)
    model.learn(16)  # and trains
    log_stds = [p for name, p in model.policy.action_net.named_parameters() if name.endswith("log_std")]
    assert [p.numel() for p in log_stds] == [3, 3]


def test_consecutive_betas_are_fused_each_on_its_bounds():
    # the default for bounded Boxes inside a Tuple: Discrete, then three Beta parts with very different ranges
    space = spaces.Tuple((spaces.Discrete(3), spaces.Box(-5, 5, (2,)), spaces.Box(0, 0.1, (1,)), spaces.Box(0, 700, (1,))))
    dist = make_distribution(space, None)
    assert [type(p) for p in dist.parts] == [CategoricalDistribution, BetaDistribution]
    assert dist.part_sizes == [[1], [2, 1, 1]] and dist.param_dim == 3 + 8 and dist.action_dim == 5
    # parameter layout: [logits(3) | alpha_raw(4), beta_raw(4)] over the fused columns
    params = th.randn(256, dist.param_dim, dtype=th.float64)
    logits, beta_params = params.split([3, 8], dim=1)
    alpha_raw, beta_raw = beta_params.chunk(2, dim=1)
    bounds = [(-5.0, 5.0, slice(0, 2)), (0.0, 0.1, slice(2, 3)), (0.0, 700.0, slice(3, 4))]
    refs = [
        ref_beta(th.cat([alpha_raw[:, cols], beta_raw[:, cols]], dim=1), th.tensor(lo), th.tensor(hi))
        for lo, hi, cols in bounds
    ]
    dist.proba_distribution(params)
    actions = dist.sample().double()
    a_cat, a_box = actions[:, :1], actions[:, 1:]
    for lo, hi, cols in bounds:
        assert th.all((a_box[:, cols] >= lo) & (a_box[:, cols] <= hi))
    expected_components = [Categorical(logits=logits).log_prob(a_cat[:, 0].long())] + [
        ref.log_prob(a_box[:, cols]).sum(1) for (_, _, cols), ref in zip(bounds, refs, strict=True)
    ]
    for got, expected in zip(dist.component_log_probs(actions), expected_components, strict=True):
        th.testing.assert_close(got, expected)
    th.testing.assert_close(dist.log_prob(actions), sum(expected_components))
    expected_entropy = Categorical(logits=logits).entropy() + sum(
        (ref.base_dist.entropy() + th.log(th.tensor(hi - lo, dtype=th.float64))).sum(1)
        for (lo, hi, _), ref in zip(bounds, refs, strict=True)
    )
    th.testing.assert_close(dist.entropy(), expected_entropy)
    means = th.cat([lo + (hi - lo) * ref.base_dist.mean for (lo, hi, _), ref in zip(bounds, refs, strict=True)], dim=1)
    th.testing.assert_close(dist.deterministic_action()[:, 1:].double(), means, rtol=1e-6, atol=1e-5)
    other = make_distribution(space, None).proba_distribution(th.randn(256, dist.param_dim, dtype=th.float64))
    o_alpha, o_beta = other.parts[1].distribution.concentration1, other.parts[1].distribution.concentration0
    expected_kl = th_kl(Categorical(logits=logits), other.parts[0].distribution) + th_kl(
        Beta(F.softplus(alpha_raw) + 1, F.softplus(beta_raw) + 1), Beta(o_alpha, o_beta)
    ).sum(1)
    th.testing.assert_close(dist.kl(other), expected_kl)
    # different options do not fuse: the mode on one part keeps it apart
    assert len(make_distribution(spaces.Tuple((spaces.Box(0, 1, (1,)), spaces.Box(0, 1, (1,)))), ("beta", "beta")).parts) == 1
    apart = TupleDistribution(
        [BetaDistribution(spaces.Box(0, 1, (1,))), BetaDistribution(spaces.Box(0, 1, (1,)), deterministic="mode")]
    )
    assert len(apart.parts) == 2
    # one Beta head for the three Boxes, and it trains
    model = PPORollback("MlpPolicy", ActionSpaceEnv(space), **PPO_KWARGS)
    assert len(list(model.policy.action_net.parameters())) == 2 + 2  # categorical head + one fused Beta head
    model.learn(16)


def test_tuple_entropy_monte_carlo():
    dist = make_distribution(FLAT_TUPLE, FLAT_SPEC)
    _entropy_check(dist, th.randn(2, dist.param_dim, dtype=th.float64))


def test_nested_tuple_entropy_against_torch_monte_carlo():
    # The nested Tuple's entropy (Gumbel-Softmax's categorical, Beta, tanh-Normal by Gauss-Hermite, Normal) against
    # -E[log p] estimated with torch's own distributions: samples and log-densities from the references only
    dist = make_distribution(NESTED, NESTED_SPEC)
    params = th.randn(3, dist.param_dim, dtype=th.float64, generator=th.Generator().manual_seed(0))
    params[:, 7:9] = params[:, 7:9].clamp(-1.0, 0.5)  # tanh log_std in the range the rule is documented for
    logits, beta, tanh, normal = params.split([3, 2, 4, 2], dim=1)
    tanh_box = NESTED.spaces[1].spaces[1]
    references = [
        Categorical(logits=logits),
        ref_beta(beta, th.tensor([-1.0]), th.tensor([1.0])),
        ref_tanh_normal(tanh, th.as_tensor(tanh_box.low), th.as_tensor(tanh_box.high)),
        ref_normal(normal),
    ]
    n = 200_000
    th.manual_seed(0)
    log_p = th.zeros(n, 3, dtype=th.float64)
    for reference in references:
        sample = reference.sample((n,))
        density = reference.log_prob(sample)
        log_p += density if density.dim() == 2 else density.sum(-1)
    estimate, stderr = -log_p.mean(0), log_p.std(0) / np.sqrt(n)
    entropy = dist.proba_distribution(params).entropy()
    assert ((entropy - estimate).abs() <= 4 * stderr + 2e-3).all(), (entropy, estimate, stderr)


def test_nested_tuple_mixed_specs():
    dist = make_distribution(NESTED, [NESTED_SPEC[0], list(NESTED_SPEC[1])])  # lists, as YAML gives them
    assert dist.action_dim == 5 and dist.param_dim == 3 + 2 + 4 + 2
    params = th.randn(64, dist.param_dim, dtype=th.float64)
    params[:, 7:9] = th.rand(64, 2, dtype=th.float64) - 1.0  # tanh log_std: no float64 saturation of the reference
    logits, beta, tanh, normal = params.split([3, 2, 4, 2], dim=1)
    dist.proba_distribution(params)
    actions = dist.sample()
    a_disc, a_beta, a_tanh, a_norm = actions.split([1, 1, 2, 1], dim=1)
    expected = (
        Categorical(logits=logits).log_prob(a_disc[:, 0].long())
        + ref_beta(beta, th.tensor([-1.0]), th.tensor([1.0])).log_prob(a_beta).sum(1)
        + ref_tanh_normal(tanh, th.zeros(2), 2 * th.ones(2)).log_prob(a_tanh).sum(1)
        + ref_normal(normal).log_prob(a_norm).sum(1)
    )
    th.testing.assert_close(dist.log_prob(actions), expected)
    # entropies add: the tanh_normal component's (Gauss-Hermite) estimate included
    tanh_entropy = TanhNormalDistribution(NESTED.spaces[1].spaces[1]).proba_distribution(tanh).entropy()
    th.testing.assert_close(dist.entropy(), sum(c.entropy() for c in dist.components))
    th.testing.assert_close(dist.components[1].parts[1].entropy(), tanh_entropy)

    for decoded in unflatten_actions(NESTED, actions.numpy()) + unflatten_actions(NESTED, dist.mode().numpy()):
        assert NESTED.contains(decoded)
        assert isinstance(decoded, tuple) and isinstance(decoded[1], tuple)
    mode = dist.mode()
    # Tuple samples / modes are float32 (the rollout buffer's dtype), whatever the parameters' dtype
    th.testing.assert_close(mode[:, 0], logits.argmax(1).float())
    th.testing.assert_close(mode[:, 2:4], (1.0 + th.tanh(tanh[:, :2])).float())
    th.testing.assert_close(mode[:, 4], normal[:, 0].float())


def test_tuple_kl():
    p = make_distribution(FLAT_TUPLE, FLAT_SPEC)
    q = make_distribution(FLAT_TUPLE, FLAT_SPEC)
    params_p, params_q = th.randn(32, 18, dtype=th.float64), th.randn(32, 18, dtype=th.float64)
    p.proba_distribution(params_p)
    q.proba_distribution(params_q)
    th.testing.assert_close(kl_divergence(p, p), th.zeros(32, dtype=th.float64))
    lp, bp, np_, gp, mp = params_p.split([3, 6, 2, 2, 5], dim=1)
    lq, bq, nq, gq, mq = params_q.split([3, 6, 2, 2, 5], dim=1)
    expected = (
        th_kl(Categorical(logits=lp), Categorical(logits=lq))
        # KL is invariant under the (shared) affine map: KL of the Beta base distributions
        + th_kl(ref_beta(bp, LOW_T, HIGH_T).base_dist, ref_beta(bq, LOW_T, HIGH_T).base_dist).sum(1)
        + th_kl(Bernoulli(logits=np_), Bernoulli(logits=nq)).sum(1)
        + th_kl(ref_normal(gp), ref_normal(gq)).sum(1)
        + th_kl(Categorical(logits=mp[:, :2]), Categorical(logits=mq[:, :2]))
        + th_kl(Categorical(logits=mp[:, 2:]), Categorical(logits=mq[:, 2:]))
    )
    th.testing.assert_close(kl_divergence(p, q), expected)
    assert (kl_divergence(p, q) > 0).all()


def test_nested_tuple_kl_with_tanh_normal():
    p, q = make_distribution(NESTED, NESTED_SPEC), make_distribution(NESTED, NESTED_SPEC)
    params_p, params_q = th.randn(16, 11, dtype=th.float64), th.randn(16, 11, dtype=th.float64)
    p.proba_distribution(params_p)
    q.proba_distribution(params_q)
    th.testing.assert_close(kl_divergence(p, p), th.zeros(16, dtype=th.float64))
    sp, sq = params_p.split([3, 2, 4, 2], dim=1), params_q.split([3, 2, 4, 2], dim=1)
    expected = (
        th_kl(Categorical(logits=sp[0]), Categorical(logits=sq[0]))
        + th_kl(ref_beta(sp[1], LOW_T[:1], HIGH_T[:1]).base_dist, ref_beta(sq[1], LOW_T[:1], HIGH_T[:1]).base_dist).sum(1)
        # KL is invariant under the tanh + affine bijection: KL of the Gaussian base distributions
        + th_kl(ref_normal(sp[2]), ref_normal(sq[2])).sum(1)
        + th_kl(ref_normal(sp[3]), ref_normal(sq[3])).sum(1)
    )
    th.testing.assert_close(kl_divergence(p, q), expected)


def test_kl_single_distributions_and_sb3_passthrough():
    for name in ("beta", "tanh_normal", "normal"):
        p, q = ((NormalDistribution(BOX3) if name == "normal" else make_distribution(BOX3, name)) for _ in range(2))
        params_p, params_q = th.randn(8, 6), th.randn(8, 6)
        p.proba_distribution(params_p)
        q.proba_distribution(params_q)
        if name == "beta":
            expected = th_kl(ref_beta(params_p, LOW_T, HIGH_T).base_dist, ref_beta(params_q, LOW_T, HIGH_T).base_dist).sum(1)
        else:
            expected = th_kl(ref_normal(params_p), ref_normal(params_q)).sum(1)
        th.testing.assert_close(kl_divergence(p, q), expected)
    # the Gaussian's mode is its mean
    th.testing.assert_close(NormalDistribution(BOX3).proba_distribution(params_p).mode(), params_p[:, :3])
    # SB3's own distributions go through SB3's kl_divergence
    p, q = make_distribution(spaces.Discrete(3)), make_distribution(spaces.Discrete(3))
    lp, lq = th.randn(4, 3), th.randn(4, 3)
    p.proba_distribution(lp)
    q.proba_distribution(lq)
    th.testing.assert_close(kl_divergence(p, q), th_kl(Categorical(logits=lp), Categorical(logits=lq)))
    with pytest.raises(ValueError, match="same type"):
        kl_divergence(make_distribution(BOX3, "beta"), make_distribution(BOX3, "tanh_normal"))


def test_beta_kl_keeps_its_precision_for_sharp_float32_policies():
    # Concentrations ~1000 (a sharp policy late in training), KL ~1e-4: the closed form's terms cancel; in float32 it
    # was off by ~1e-3 (as torch's float32 Beta KL is). Reference: torch's KL in float64 at the same float32
    # concentrations; the gradient too (the KL trust region's gradient flows through it).
    box = spaces.Box(-1, 1, (2,))
    raw_p = th.tensor([[999.0, 699.0, 1040.0, 730.0]], requires_grad=True)  # softplus(raw) + 1 ~ raw + 1
    raw_q = th.tensor([[1019.0, 713.0, 1060.0, 744.0]])
    p, q = BetaDistribution(box).proba_distribution(raw_p), BetaDistribution(box).proba_distribution(raw_q)
    kl = p.kl(q)
    assert kl.dtype == th.float32
    raw64 = raw_p.detach().double().requires_grad_(True)
    conc_p, conc_q = F.softplus(raw64) + 1, F.softplus(raw_q.double()) + 1
    expected = th_kl(Beta(conc_p[:, :2], conc_p[:, 2:]), Beta(conc_q[:, :2], conc_q[:, 2:])).sum(1)
    assert 1e-5 < expected.item() < 1e-3
    assert abs(kl.item() - expected.item()) < 1e-7 * expected.item() + 1e-10
    (grad,) = th.autograd.grad(kl.sum(), raw_p)
    (grad_expected,) = th.autograd.grad(expected.sum(), raw64)
    th.testing.assert_close(grad.double(), grad_expected, rtol=1e-4, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------------
# resolve_spec / make_distribution
# ---------------------------------------------------------------------------------------------------------------------


def test_defaults():
    # Plain spaces: SB3's pairings (a Box keeps the Gaussian whatever its bounds)
    assert resolve_spec(BOX3, None) == "normal"
    assert resolve_spec(spaces.Box(0, 700, (1,)), None) == "normal"
    assert resolve_spec(spaces.Discrete(3), None) == "categorical"
    assert resolve_spec(spaces.MultiDiscrete([2, 3]), None) == "multi_categorical"
    assert resolve_spec(spaces.MultiBinary(3), None) == "bernoulli"
    # Inside a Tuple, nested or not: Beta on every bounded Box part
    assert resolve_spec(NESTED, None) == ("categorical", ("beta", "beta", "beta"))
    assert resolve_spec(FLAT_TUPLE, None) == ("categorical", "beta", "bernoulli", "beta", "multi_categorical")


def test_tuple_defaults_per_part():
    unbounded = spaces.Box(-np.inf, np.inf, (2,))
    half_bounded = spaces.Box(0.0, np.inf, (1,))
    partly_bounded = spaces.Box(np.array([-1.0, -np.inf]), np.array([1.0, np.inf]), dtype=np.float64)
    degenerate = spaces.Box(np.array([0.0, 1.0]), np.array([1.0, 1.0]), dtype=np.float64)  # zero width: no Beta density
    space = spaces.Tuple(
        (
            spaces.Box(0, 700, (1,)),
            unbounded,
            spaces.Tuple((spaces.Discrete(2), half_bounded, spaces.Tuple((spaces.Box(-5, 5, (3,)), partly_bounded)))),
            degenerate,
        )
    )
    expected = ("beta", "normal", ("categorical", "normal", ("beta", "normal")), "normal")
    assert resolve_spec(space, None) == expected
    dist = make_distribution(space)
    assert [type(c).__name__ for c in dist.components] == [
        "BetaDistribution",
        "NormalDistribution",
        "TupleDistribution",
        "NormalDistribution",
    ]
    inner = dist.components[2].components[2]
    assert [type(c) for c in inner.components] == [BetaDistribution, NormalDistribution]
    # the default Beta part maps onto its own bounds
    bounded = make_distribution(spaces.Tuple((spaces.Box(0, 700, (1,)), spaces.Box(0, 0.1, (1,)))))
    bounded.proba_distribution(th.zeros(1000, bounded.param_dim))
    samples = bounded.sample()
    assert 0 <= samples[:, 0].min() and samples[:, 0].max() <= 700 and samples[:, 0].std() > 100
    assert 0 <= samples[:, 1].min() and samples[:, 1].max() <= 0.1 and samples[:, 1].std() > 0.01


def test_explicit_spec_overrides_tuple_defaults():
    # one name for every part that accepts it, the old Gaussian default included
    assert resolve_spec(NESTED, "normal") == ("categorical", ("normal", "normal", "normal"))
    assert resolve_spec(NESTED, "tanh_normal") == ("categorical", ("tanh_normal",) * 3)
    # per component: None (or a missing name) is that part's Tuple default
    assert resolve_spec(NESTED, ("categorical", ("normal", None, "tanh_normal"))) == (
        "categorical",
        ("normal", "beta", "tanh_normal"),
    )
    assert resolve_spec(NESTED, ("gumbel_softmax", None)) == ("gumbel_softmax", ("beta", "beta", "beta"))
    # through the policy
    model = PPORollback("MlpPolicy", ActionSpaceEnv(NESTED), policy_kwargs=dict(action_distribution="normal"), **PPO_KWARGS)
    assert [type(c) for c in model.policy.action_dist.components[1].components] == [NormalDistribution] * 3
    model = PPORollback("MlpPolicy", ActionSpaceEnv(NESTED), **PPO_KWARGS)
    assert model.policy.action_distribution == ("categorical", ("beta", "beta", "beta"))
    assert [type(c) for c in model.policy.action_dist.components[1].components] == [BetaDistribution] * 3
    # a plain Box keeps SB3's Gaussian (bit-for-bit parity with SB3 PPO is tested in test_ppo_rollback.py)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Box(0, 700): the range warning, tested below
        model = PPORollback("MlpPolicy", ActionSpaceEnv(spaces.Box(0, 700, (2,))), **PPO_KWARGS)
    assert type(model.policy.action_dist) is sb3_dist.DiagGaussianDistribution


@pytest.mark.parametrize(
    "low, high, far",
    [
        (-1.0, 1.0, False),
        (-2.0, 2.0, False),  # Pendulum
        (0.0, 2.0, False),  # HybridGoal's drive: overlaps [-1, 1], half-width 1
        (-10.0, 10.0, False),  # half-width exactly 10 times 1
        (-0.1, 0.1, False),  # half-width exactly 1 / 10
        (-np.inf, np.inf, False),  # no rescaling applies
        (0.0, np.inf, False),
        (0.0, 700.0, True),
        (-20.0, 20.0, True),
        (0.0, 0.1, True),
        (5.0, 10.0, True),  # does not overlap [-1, 1]
        (-10.0, -2.0, True),
    ],
)
def test_gaussian_range_criterion(low, high, far):
    space = spaces.Box(np.array([-1.0, low]), np.array([1.0, high]), dtype=np.float64)
    message = gaussian_range_warning(space, "normal")
    assert (message is not None) == far
    if far:
        assert str(space) in message and f"[{low:g}, {high:g}]" in message and "action_distribution='beta'" in message
    for bounded in ("beta", "tanh_normal"):
        assert gaussian_range_warning(space, bounded) is None


def _range_warnings(space: spaces.Space, spec=None) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PPORollback("MlpPolicy", ActionSpaceEnv(space), policy_kwargs=dict(action_distribution=spec), **PPO_KWARGS)
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning) and "far from [-1, 1]" in str(w.message)]


def test_gaussian_range_warning_on_policy_construction():
    unscaled = spaces.Tuple(
        (spaces.Discrete(3), spaces.Tuple((spaces.Box(-5, 5, (2,)), spaces.Box(0, 0.1, (1,)), spaces.Box(0, 700, (1,)))))
    )
    # fires once per construction, naming every offending part and the fix
    (message,) = _range_warnings(unscaled, "normal")
    assert "component [1][1] Box(0.0, 0.1, (1,), float32)" in message and "component [1][2]" in message
    assert "[1][0]" not in message  # [-5, 5] is within a factor 10 of [-1, 1]
    assert "leave action_distribution unset" in message and "'beta'" in message
    (message,) = _range_warnings(spaces.Box(0, 700, (2,)))  # SB3's default Gaussian on a plain Box
    assert "Box(0.0, 700.0, (2,), float32)" in message and "RescaleAction" in message
    # does not fire: bound-aware defaults and explicit choices, unit-scale Boxes
    assert _range_warnings(unscaled) == []
    assert _range_warnings(unscaled, "tanh_normal") == []
    assert _range_warnings(unscaled, ("categorical", ("normal", "beta", "beta"))) == []
    assert _range_warnings(spaces.Box(0, 700, (2,)), "beta") == []
    assert _range_warnings(spaces.Box(-2, 2, (2,))) == []
    assert len(_range_warnings(BOX3)) == 1  # its last dimension, [2, 3], does not overlap [-1, 1]
    assert _range_warnings(spaces.Tuple((spaces.Discrete(2), spaces.Box(-np.inf, np.inf, (2,))))) == []  # default normal


def test_sb3_native_for_default_pairings():
    cases = [
        (BOX3, None, sb3_dist.DiagGaussianDistribution),
        (BOX3, "normal", sb3_dist.DiagGaussianDistribution),
        (spaces.Discrete(3), None, sb3_dist.CategoricalDistribution),
        (spaces.Discrete(3), "categorical", sb3_dist.CategoricalDistribution),
        (spaces.MultiDiscrete([2, 3]), None, sb3_dist.MultiCategoricalDistribution),
        (spaces.MultiDiscrete([2, 3]), "multi_categorical", sb3_dist.MultiCategoricalDistribution),
        (spaces.MultiDiscrete([2, 3]), "categorical", sb3_dist.MultiCategoricalDistribution),  # alias
        (spaces.MultiBinary(3), None, sb3_dist.BernoulliDistribution),
    ]
    for space, spec, cls in cases:
        dist = make_distribution(space, spec)
        assert type(dist) is cls, (space, spec, dist)
        assert not isinstance(dist, CherryDistribution)
    assert type(make_distribution(BOX3, use_sde=True)) is sb3_dist.StateDependentNoiseDistribution
    # Non-default pairings and every Tuple space: sb3_cherry's classes
    assert type(make_distribution(BOX3, "beta")) is BetaDistribution
    assert type(make_distribution(BOX3, "tanh_normal")) is TanhNormalDistribution
    assert type(make_distribution(spaces.Discrete(3), "gumbel_softmax")) is GumbelSoftmaxDistribution
    tuple_default = make_distribution(spaces.Tuple((spaces.Discrete(2), BOX3)))
    assert type(tuple_default) is TupleDistribution
    assert [type(c) for c in tuple_default.components] == [CategoricalDistribution, BetaDistribution]


def test_multi_dimensional_multi_discrete_outside_a_tuple_is_refused_naming_the_fix():
    # SB3's classes failed with a TypeError deep in torch (empty(): argument 'size'); inside a Tuple it is supported
    space = spaces.MultiDiscrete(np.array([[2, 3], [4, 5]]))
    for spec in (None, "multi_categorical"):
        with pytest.raises(ValueError, match=r"multi-dimensional nvec \(shape \(2, 2\)\).*spaces.Tuple\(\(space,\)\)"):
            make_distribution(space, spec)
    with pytest.raises(ValueError, match="multi-dimensional nvec"):
        CherryActorCriticPolicy(spaces.Box(-1, 1, (2,)), space, lambda _: 1e-3)
    wrapped = make_distribution(spaces.Tuple((space,)))
    wrapped.proba_distribution(th.zeros(4, wrapped.param_dim))
    assert wrapped.sample().shape == (4, 4)


def test_single_name_for_tuple_applies_where_accepted():
    assert resolve_spec(NESTED, "beta") == ("categorical", ("beta", "beta", "beta"))
    assert resolve_spec(NESTED, "gumbel_softmax") == ("gumbel_softmax", ("beta", "beta", "beta"))


def test_lists_accepted_where_tuples_are():
    assert resolve_spec(NESTED, ["gumbel_softmax", ["beta", "tanh_normal", "normal"]]) == NESTED_SPEC
    assert resolve_spec(NESTED, ["gumbel_softmax", None]) == ("gumbel_softmax", ("beta", "beta", "beta"))
    assert resolve_spec(NESTED, ("categorical", "tanh_normal")) == ("categorical", ("tanh_normal",) * 3)


def test_distribution_kwargs():
    kwargs = {"gumbel_softmax": {"temperature": 0.5}}
    dist = make_distribution(spaces.Discrete(3), "gumbel_softmax", distribution_kwargs=kwargs)
    assert dist.temperature == 0.5
    dist = make_distribution(NESTED, NESTED_SPEC, distribution_kwargs={"beta": {"epsilon": 1e-4}})
    assert dist.components[1].components[0].epsilon == 1e-4


def test_bad_specs():
    with pytest.raises(ValueError, match=r"(?s)'beta'.*Discrete.*categorical.*gumbel_softmax"):
        resolve_spec(spaces.Discrete(3), "beta")
    with pytest.raises(ValueError, match=r"(?s)'beta'.*Discrete.*categorical.*gumbel_softmax"):
        make_distribution(spaces.Discrete(3), "beta")
    with pytest.raises(ValueError, match=r"(?s)MultiBinary.*bernoulli"):
        resolve_spec(spaces.MultiBinary(2), "categorical")
    with pytest.raises(ValueError, match="Allowed choices"):
        resolve_spec(BOX3, "gaussian")
    # Wrong length for a Tuple, at the top level and nested
    with pytest.raises(ValueError, match="2 specs"):
        resolve_spec(NESTED, ("categorical",))
    with pytest.raises(ValueError, match="3 specs"):
        resolve_spec(NESTED, ("categorical", ("beta", "beta")))
    with pytest.raises(ValueError, match="must be a name"):
        resolve_spec(BOX3, ("beta",))
    # A misspelt single name must not silently fall back to the defaults
    with pytest.raises(ValueError, match="'betta'"):
        resolve_spec(NESTED, "betta")
    with pytest.raises(ValueError, match="'bernoulli'"):
        resolve_spec(NESTED, "bernoulli")
    # Unsupported spaces
    with pytest.raises(ValueError, match="Unsupported"):
        make_distribution(spaces.Dict({"a": spaces.Discrete(2)}))
    with pytest.raises(ValueError, match="Unsupported"):
        resolve_spec(spaces.Tuple((spaces.Discrete(2), spaces.Text(3))), None)
    # Infinite bounds for bounded distributions
    with pytest.raises(ValueError, match="infinite bounds"):
        make_distribution(spaces.Box(-np.inf, np.inf, (2,)), "beta")
    with pytest.raises(ValueError, match="infinite bounds"):
        make_distribution(spaces.Tuple((spaces.Box(0, np.inf, (1,)),)), ("tanh_normal",))


def test_use_sde_only_with_normal():
    for space, spec in [(BOX3, "beta"), (BOX3, "tanh_normal"), (spaces.Discrete(3), None), (NESTED, None)]:
        with pytest.raises(ValueError, match="use_sde"):
            make_distribution(space, spec, use_sde=True)


# ---------------------------------------------------------------------------------------------------------------------
# Policy level: CherryActorCriticPolicy through PPORollback
# ---------------------------------------------------------------------------------------------------------------------


class ActionSpaceEnv(gym.Env):
    """Tiny env with any action space: asserts every action is valid, 6-step episodes, reward from the observation."""

    observation_space = spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)

    def __init__(self, action_space: spaces.Space = NESTED):
        self.action_space = action_space
        self._t = 0

    def _obs(self) -> np.ndarray:
        return self.np_random.uniform(-1, 1, 3).astype(np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        assert self.action_space.contains(action), f"invalid action {action!r} for {self.action_space}"
        self._t += 1
        obs = self._obs()
        return obs, float(-np.abs(obs).sum()), False, self._t >= 6, {}


PPO_KWARGS = dict(n_steps=8, batch_size=8, n_epochs=1, seed=0, device="cpu")
POLICY_CASES = [
    ("beta", BOX3),
    ("tanh_normal", BOX3),
    ("gumbel_softmax", spaces.Discrete(4, start=1)),
    (None, spaces.Discrete(4, start=1)),  # the default pairing on a shifted space: not SB3's class (it ignores start)
    (None, spaces.MultiDiscrete([3, 2], start=[1, -1])),
    (["gumbel_softmax", ["beta", "tanh_normal", "normal"]], NESTED),
    (FLAT_SPEC, FLAT_TUPLE),
]


def _env_action(space: spaces.Space, action):
    """An action as returned by predict, cast the way the env receives it (non-Tuple: array of the space's shape)."""
    if isinstance(space, spaces.Tuple):
        return action
    return np.asarray(action, dtype=space.dtype).reshape(space.shape)


@pytest.mark.parametrize("spec, space", POLICY_CASES)
def test_policy_forward_evaluate_predict(spec, space):
    model = PPORollback("MlpPolicy", ActionSpaceEnv(space), policy_kwargs=dict(action_distribution=spec), **PPO_KWARGS)
    policy = model.policy
    assert policy.action_distribution == resolve_spec(space, spec)
    obs = th.as_tensor(np.stack([ActionSpaceEnv.observation_space.sample() for _ in range(16)]))
    with th.no_grad():
        for deterministic in (False, True):
            actions, values, log_prob = policy(obs, deterministic=deterministic)
            # As stored in and read from the rollout buffer: float (batch, action_dim); Discrete: long (batch,)
            stored = actions.reshape(16, -1).float()
            if isinstance(space, spaces.Discrete):
                stored = stored.long().flatten()
            values_eval, log_prob_eval, entropy = policy.evaluate_actions(obs, stored)
            th.testing.assert_close(log_prob_eval, log_prob)
            th.testing.assert_close(values_eval, values)
            assert th.isfinite(log_prob).all()
            assert entropy is not None and th.isfinite(entropy).all()

        if spec in ("beta", "tanh_normal"):
            # The policy's log-prob is the reference distribution's, evaluated at the head's parameters
            latent_pi = policy.mlp_extractor.forward_actor(policy.extract_features(obs))
            params = policy.action_net(latent_pi).double()
            ref = ref_beta(params, LOW_T, HIGH_T) if spec == "beta" else ref_tanh_normal(params, LOW_T, HIGH_T)
            actions, _, log_prob = policy(obs)
            th.testing.assert_close(log_prob.double(), ref.log_prob(actions.double()).sum(1), rtol=1e-4, atol=1e-4)

    single, _ = model.predict(obs[0].numpy())
    assert space.contains(_env_action(space, single))
    batch, _ = model.predict(obs.numpy(), deterministic=True)
    assert len(batch) == 16
    for action in batch:
        assert space.contains(_env_action(space, action))
    if isinstance(space, spaces.Tuple):
        assert isinstance(single, tuple) and isinstance(batch, list) and all(isinstance(a, tuple) for a in batch)


class _RecordingEnv(ActionSpaceEnv):
    """ActionSpaceEnv that keeps every action it receives."""

    def __init__(self, action_space: spaces.Space):
        super().__init__(action_space)
        self.received: list = []

    def step(self, action):
        self.received.append(np.array(action))
        return super().step(action)


@pytest.mark.parametrize(
    "space", [spaces.Discrete(3, start=1), spaces.MultiDiscrete([3, 2], start=[1, -1])], ids=["discrete", "multi_discrete"]
)
def test_shifted_discrete_actions_reach_the_env_inside_the_space(space):
    # SB3's Categorical classes ignore ``start``: with them the env received 0..n-1 (outside Discrete(3, start=1)), with
    # no error; the default distribution of a shifted space is sb3_cherry's, whose log-prob is torch's at action - start
    env = _RecordingEnv(space)
    model = PPORollback("MlpPolicy", env, **{**PPO_KWARGS, "n_steps": 64, "batch_size": 64})
    model.learn(64)
    received = np.array(env.received).reshape(len(env.received), -1)
    assert all(space.contains(np.asarray(a, dtype=space.dtype).reshape(space.shape)) for a in received)
    starts, sizes = np.atleast_1d(space.start), np.atleast_1d(space.nvec if hasattr(space, "nvec") else space.n)
    for column in range(received.shape[1]):  # every value of every column is taken
        assert set(received[:, column]) == set(range(starts[column], starts[column] + sizes[column]))
    obs = th.as_tensor(np.stack([ActionSpaceEnv.observation_space.sample() for _ in range(8)]))
    actions = th.as_tensor(received[:8], dtype=th.float32)
    with th.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(obs, actions.flatten() if received.shape[1] == 1 else actions)
        logits = model.policy.action_net(model.policy.mlp_extractor.forward_actor(model.policy.extract_features(obs)))
    expected = sum(
        Categorical(logits=chunk).log_prob(actions[:, column].long() - int(starts[column]))
        for column, chunk in enumerate(th.split(logits, list(sizes), dim=1))
    )
    th.testing.assert_close(log_prob, expected)


@pytest.mark.parametrize("spec", ["beta", "tanh_normal", ("categorical", "beta")])
def test_zero_width_box_dimension_is_refused(spec):
    # high == low: no density (log-probs were NaN, entropies -inf)
    box = spaces.Box(np.array([0.0, 1.0], np.float32), np.array([1.0, 1.0], np.float32))
    space = box if isinstance(spec, str) else spaces.Tuple((spaces.Discrete(2), box))
    with pytest.raises(ValueError, match="high <= low"):
        make_distribution(space, spec)


def test_tuple_env_with_vec_normalize_and_eval_callback():
    # The training env becomes VecTupleActions(VecNormalize(...)), the eval env was VecNormalize(...): SB3's
    # sync_envs_normalization walks both stacks in step and failed its assertion (sb3-cherry train --eval-freq too)
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.vec_env import VecNormalize

    def make():
        return VecNormalize(make_vec_env(ActionSpaceEnv, n_envs=2, env_kwargs=dict(action_space=NESTED), seed=0))

    callback = EvalCallback(make(), eval_freq=8, n_eval_episodes=2, verbose=0)
    model = PPORollback("MlpPolicy", make(), policy_kwargs=dict(action_distribution=NESTED_SPEC), **PPO_KWARGS)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Training and eval env are not of the same type")
        model.learn(32, callback=[callback])
    assert callback.n_calls == 16 and np.isfinite(callback.last_mean_reward)  # evaluated


@pytest.mark.parametrize("vec_env_cls", [DummyVecEnv, SubprocVecEnv])
def test_tuple_env_learns_with_vec_envs(vec_env_cls):
    # fork: the workers need no fresh interpreter importing torch (keeps the test fast on a shared machine)
    vec_env_kwargs = dict(start_method="fork") if vec_env_cls is SubprocVecEnv else None
    env = make_vec_env(
        ActionSpaceEnv, n_envs=2, vec_env_cls=vec_env_cls, env_kwargs=dict(action_space=NESTED), vec_env_kwargs=vec_env_kwargs
    )
    try:
        model = PPORollback("MlpPolicy", env, policy_kwargs=dict(action_distribution=NESTED_SPEC), **PPO_KWARGS)
        model.learn(32)
        assert model.num_timesteps == 32
        assert model.rollout_buffer.actions.reshape(-1, 5).shape == (16, 5)  # flat Tuple actions
        actions, _ = model.predict(model.get_env().reset())
        assert len(actions) == 2 and all(NESTED.contains(a) for a in actions)
        model.get_env().step(actions)  # predict's output is accepted by the VecEnv as is
    finally:
        env.close()


def test_tuple_save_load_round_trip(tmp_path):
    model = PPORollback(
        "MlpPolicy", ActionSpaceEnv(FLAT_TUPLE), policy_kwargs=dict(action_distribution=list(FLAT_SPEC)), **PPO_KWARGS
    )
    model.learn(16)
    obs = np.stack([ActionSpaceEnv.observation_space.sample() for _ in range(10)])
    before, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "tuple_model")
    loaded = PPORollback.load(tmp_path / "tuple_model", env=model.get_env(), device="cpu")
    assert loaded.action_space == FLAT_TUPLE
    assert loaded.policy.action_distribution == FLAT_SPEC
    after, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(
        np.stack([flatten_action(FLAT_TUPLE, a) for a in before]), np.stack([flatten_action(FLAT_TUPLE, a) for a in after])
    )
    loaded.learn(16)


def test_evaluate_policy_on_tuple_env():
    model = PPORollback("MlpPolicy", ActionSpaceEnv(NESTED), policy_kwargs=dict(action_distribution=NESTED_SPEC), **PPO_KWARGS)
    for env in (model.get_env(), Monitor(ActionSpaceEnv(NESTED))):
        mean, std = evaluate_policy(model, env, n_eval_episodes=2, deterministic=True)
        assert np.isfinite(mean) and np.isfinite(std)
        rewards, lengths = evaluate_policy(model, env, n_eval_episodes=2, return_episode_rewards=True)
        assert lengths == [6, 6] and len(rewards) == 2


def test_policy_rejects_bad_pairings():
    beta = dict(action_distribution="beta")
    with pytest.raises(ValueError, match=r"(?s)'beta'.*Discrete.*gumbel_softmax"):
        PPORollback("MlpPolicy", ActionSpaceEnv(spaces.Discrete(3)), policy_kwargs=beta, **PPO_KWARGS)
    with pytest.raises(ValueError, match="use_sde"):
        PPORollback("MlpPolicy", ActionSpaceEnv(BOX3), use_sde=True, policy_kwargs=beta, **PPO_KWARGS)
    with pytest.raises(ValueError, match="2 specs"):
        PPORollback("MlpPolicy", ActionSpaceEnv(NESTED), policy_kwargs=dict(action_distribution=["beta"]), **PPO_KWARGS)


def test_beta_deterministic_action_is_the_mean_by_default_or_the_mode():
    """predict(deterministic=True) with a Beta policy is the Beta's mean mapped onto the bounds (cherry_rl's choice),
    or its mode with deterministic='mode'; both against torch's Beta, independently of the head's code."""
    space = spaces.Box(low=np.array([-2.0, 0.0], np.float32), high=np.array([2.0, 10.0], np.float32))
    params = th.tensor([[0.3, -1.2, 2.0, 0.7], [-3.0, 1.5, 0.1, -0.4]])
    alpha, beta = F.softplus(params[:, :2]) + 1.0, F.softplus(params[:, 2:]) + 1.0
    low, high = th.as_tensor(space.low), th.as_tensor(space.high)
    mean = low + Beta(alpha, beta).mean * (high - low)
    mode = low + (alpha - 1.0) / (alpha + beta - 2.0) * (high - low)
    th.testing.assert_close(BetaDistribution(space).actions_from_params(params, deterministic=True), mean)
    th.testing.assert_close(
        BetaDistribution(space, deterministic="mode").actions_from_params(params, deterministic=True), mode
    )
    th.testing.assert_close(BetaDistribution(space).proba_distribution(params).mode(), mode)  # mode() stays the mode
    with pytest.raises(ValueError, match="'mean' \\(default\\) or 'mode'"):
        BetaDistribution(space, deterministic="median")
    # through a policy, and inside a Tuple; action_distribution_kwargs selects the mode
    env = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    for kwargs, expected in ((None, "mean"), ({"beta": {"deterministic": "mode"}}, "mode")):
        policy_kwargs = dict(action_distribution="beta", action_distribution_kwargs=kwargs)
        model = PPORollback("MlpPolicy", env, policy_kwargs=policy_kwargs, n_steps=64, device="cpu", seed=0)
        obs = env.reset()
        with th.no_grad():
            distribution = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0])
            d = distribution.distribution
            unit = d.mean if expected == "mean" else (d.concentration1 - 1) / (d.concentration1 + d.concentration0 - 2)
        action, _ = model.predict(obs, deterministic=True)
        np.testing.assert_allclose(action, (-2.0 + 4.0 * unit).numpy(), rtol=1e-5, atol=1e-6)
    tuple_space = spaces.Tuple((spaces.Discrete(2), space))
    tuple_dist = make_distribution(tuple_space, ("categorical", "beta"))
    logits = th.tensor([[0.1, 2.0], [1.0, -1.0]])
    action = tuple_dist.actions_from_params(th.cat([logits, params], dim=1), deterministic=True)
    th.testing.assert_close(action, th.cat([logits.argmax(dim=1, keepdim=True).float(), mean], dim=1))


def test_tanh_normal_mode_is_the_median():
    # the deterministic action of the tanh-Normal is its median (Monte-Carlo: half the samples on each side)
    th.manual_seed(0)
    params = th.tensor([[0.3, -1.2, 2.0, 0.7, 0.0, -0.5]])  # means, log-stds (std up to 2: mode != median there)
    dist = TanhNormalDistribution(BOX3).proba_distribution(params)
    samples = th.stack([dist.sample()[0] for _ in range(20_000)])
    below = (samples <= dist.mode()[0]).float().mean(dim=0)
    th.testing.assert_close(below, th.full((3,), 0.5), atol=0.015, rtol=0)


def test_distribution_kwargs_are_never_dropped_silently():
    # arguments for a distribution that takes none were accepted and ignored (Box 'normal' through SB3's class,
    # 'categorical' / 'bernoulli'), a string instead of a mapping gave an error listing its characters
    from sb3_cherry import PPORollback

    for env_id, kwargs in (("Pendulum-v1", {"normal": {"log_std": 1}}), ("CartPole-v1", {"categorical": {"t": 0.5}})):
        with pytest.raises(ValueError, match="take no arguments"):
            PPORollback("MlpPolicy", env_id, policy_kwargs=dict(action_distribution_kwargs=kwargs))
    with pytest.raises(ValueError, match="must map distribution names to dicts"):
        PPORollback("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(action_distribution_kwargs="{'beta': {}}"))


def test_numpy_scalars_in_distribution_kwargs_load_safely(tmp_path):
    # SB3 stores the kwargs as printed text: numpy 2 prints np.float32(1e-05), which the safe loader kept as a string
    from sb3_cherry import PPORollback

    kwargs = dict(action_distribution="beta", action_distribution_kwargs={"beta": {"epsilon": np.float32(1e-5)}})
    PPORollback("MlpPolicy", "Pendulum-v1", n_steps=64, policy_kwargs=kwargs).save(tmp_path / "m")
    loaded = PPORollback.load(tmp_path / "m")  # allow_pickle=False
    assert loaded.policy_kwargs["action_distribution_kwargs"] == {"beta": {"epsilon": pytest.approx(1e-5)}}


def test_tuple_discrete_parts_keep_the_spaces_dtype():
    from sb3_cherry.common.spaces import unflatten_actions

    space = spaces.Tuple((spaces.Discrete(3, dtype=np.int32), spaces.Box(-1, 1, (1,))))
    action = unflatten_actions(space, np.array([[2.0, 0.5]], np.float32))[0]
    assert space.contains(action) and action[0].dtype == np.int32


def test_tuple_predict_names_the_gym_vs_vecenv_mistake():
    from sb3_cherry import PPORollback

    model = PPORollback("MlpPolicy", "sb3_cherry/HybridGoal-v0", n_steps=64)
    obs, info = model.env.envs[0].reset(seed=0)
    with pytest.raises(ValueError, match="mixing Gym API with SB3 VecEnv API"):
        model.predict((obs, info))


# ------------------------------------------------------------------------------- float64 policies and spaces (review)
def test_bernoulli_log_prob_keeps_float64_precision():
    # BernoulliDistribution.log_prob cast the actions with .float(): with float64 logits torch evaluated in float32
    logits = th.tensor([[0.1234567890123, -2.345678901234, 5.6789012345678]], dtype=th.float64)
    x = th.tensor([[1, 0, 1]], dtype=th.int8)
    lp = BernoulliDistribution(spaces.MultiBinary(3)).proba_distribution(logits).log_prob(x)
    ref = (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum(1)
    assert lp.dtype == th.float64
    assert th.allclose(lp, ref, atol=1e-12, rtol=0)


def test_bernoulli_log_prob_gradcheck_float64():
    logits = th.randn(4, 3, dtype=th.float64, requires_grad=True)
    x = th.randint(0, 2, (4, 3))

    def log_prob(p):
        return BernoulliDistribution(spaces.MultiBinary(3)).proba_distribution(p).log_prob(x)

    assert th.autograd.gradcheck(log_prob, (logits,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_tuple_with_multibinary_log_prob_float64():
    space = spaces.Tuple((spaces.Discrete(3), spaces.MultiBinary(2)))
    dist = make_distribution(space)
    params = th.randn(5, dist.param_dim, dtype=th.float64)
    actions = th.cat([th.randint(0, 3, (5, 1)), th.randint(0, 2, (5, 2))], 1).double()
    lp = dist.proba_distribution(params).log_prob(actions)
    cat = th.log_softmax(params[:, :3], 1).gather(1, actions[:, :1].long())[:, 0]
    bits = actions[:, 1:]
    ref = cat + (bits * F.logsigmoid(params[:, 3:]) + (1 - bits) * F.logsigmoid(-params[:, 3:])).sum(1)
    assert th.allclose(lp, ref, atol=1e-12, rtol=0), (lp - ref).abs().max()


def test_tanh_normal_samples_inside_float64_box():
    # bounds were cast to float32 (_finite_bounds): float32(0.1) = 0.10000000149 > 0.1, a saturated sample left the space
    space = spaces.Box(np.array([0.0]), np.array([0.1]), dtype=np.float64)
    dist = TanhNormalDistribution(space).proba_distribution(th.tensor([[20.0, -3.0]]).expand(100, -1))
    samples = dist.sample().double().numpy()
    assert all(space.contains(s) for s in samples), samples.max()


def test_float64_box_narrower_than_float32_refused():
    # rounded inwards, float32 bounds of a dimension narrower than one float32 step crossed (low > high: NaN log-probs)
    space = spaces.Box(np.array([1.0]), np.array([1.0 + 1e-9]), dtype=np.float64)
    with pytest.raises(ValueError, match="narrower than float32 can tell apart"):
        TanhNormalDistribution(space)
