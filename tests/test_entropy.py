"""
Entropy of tanh(Normal) and of Tuple distributions containing it (issue 15 item 3), against independent references:
a Monte-Carlo ``-E[log p]`` with torch's ``TransformedDistribution`` (float64), finite differences of a high-precision
numerical integral, and torch's ``Categorical`` for the logits' gradient; then its effect in training.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from torch.distributions import AffineTransform, Categorical, Normal, TanhTransform

from sb3_cherry import PPORollback
from sb3_cherry.common.distributions import TanhNormalDistribution, TupleDistribution, make_distribution

LOW = np.array([-1.0, 0.0, 2.0], dtype=np.float32)
HIGH = np.array([1.0, 5.0, 3.0], dtype=np.float32)
BOX3 = spaces.Box(LOW, HIGH, dtype=np.float32)

# (mean, log_std) per case: centred, the case, off-centre, wide, saturated (|mean| >> std), narrow + saturated
CASES = [(0.0, 0.0), (0.5, -0.5), (-1.5, -1.0), (0.3, 1.0), (4.0, 0.0), (-6.0, -2.0), (9.0, -4.0), (0.0, 1.5)]


@pytest.fixture(autouse=True)
def _seed():
    th.manual_seed(0)
    np.random.seed(0)


def _params(cases, dim: int = 1) -> th.Tensor:
    mean = th.tensor([[m] * dim for m, _ in cases], dtype=th.float64)
    log_std = th.tensor([[s] * dim for _, s in cases], dtype=th.float64)
    return th.cat([mean, log_std], dim=1)


def _integral_entropy(mean: float, log_std: float, low: float = -1.0, high: float = 1.0) -> float:
    """H(a) by a float64 trapezoidal integral over z ~ N(0, 1) (step 1e-4 on [-14, 14]): E[-log p(a)] with
    log p(a) = log N(u) - log(1 - tanh(u)^2) - log((high - low) / 2), u = mean + std z, written with log cosh."""
    z = np.linspace(-14.0, 14.0, 280_001)
    weight = np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi) * (z[1] - z[0])
    u = mean + np.exp(log_std) * z
    log_cosh = np.logaddexp(u, -u) - np.log(2.0)
    gaussian_entropy = 0.5 + 0.5 * np.log(2.0 * np.pi) + log_std
    return float(gaussian_entropy + np.sum(weight * (-2.0 * log_cosh)) + np.log((high - low) / 2.0))


def test_tanh_normal_entropy_matches_monte_carlo():
    """-E[log p(a)] over 200k samples of a tanh-Normal built from torch's Normal, TanhTransform and AffineTransform
    (float64) agrees with the quadrature within 4 standard errors, per (mean, std) case, saturated ones included."""
    n = 200_000
    for dim_low, dim_high in zip(LOW, HIGH, strict=True):
        params = _params(CASES)
        dist = TanhNormalDistribution(spaces.Box(dim_low, dim_high, (1,), np.float32))
        entropy = dist.proba_distribution(params).entropy()
        mean, log_std = params.chunk(2, dim=1)
        low, high = th.tensor(float(dim_low), dtype=th.float64), th.tensor(float(dim_high), dtype=th.float64)
        base, tanh, affine = Normal(mean, log_std.exp()), TanhTransform(), AffineTransform((high + low) / 2, (high - low) / 2)
        u = base.sample((n,))
        squashed = tanh(u)
        # log p(a) = log N(u) - log|d tanh/du| - log|d affine|, each term from torch at the known pre-image u (inverting
        # a saturated tanh(u) == 1.0 would give inf)
        log_prob = base.log_prob(u) - tanh.log_abs_det_jacobian(u, squashed) - affine.log_abs_det_jacobian(squashed, None)
        neg_log_prob = -log_prob[..., 0]  # (n, cases)
        estimate, stderr = neg_log_prob.mean(0), neg_log_prob.std(0) / np.sqrt(n)
        assert ((estimate - entropy).abs() <= 4.0 * stderr + 1e-6).all(), (estimate, entropy, stderr)


def test_tanh_normal_entropy_matches_own_log_prob_and_integral():
    """Against the distribution's own sampler and log-prob (unsaturated cases, float32 as in training) and against
    the numerical integral (every case, float64)."""
    n = 100_000
    moderate = CASES[:4]
    dist = TanhNormalDistribution(BOX3)
    params = _params(moderate, dim=3).float()
    with th.no_grad():
        dist.proba_distribution(params.repeat(n, 1))
        log_prob = dist.log_prob(dist.sample()).reshape(n, len(moderate))
        entropy = dist.entropy().reshape(n, len(moderate))[0]
    estimate, stderr = -log_prob.mean(0), log_prob.std(0) / np.sqrt(n)
    assert ((estimate - entropy).abs() <= 4.0 * stderr + 1e-4).all(), (estimate, entropy)

    single = TanhNormalDistribution(spaces.Box(-1.0, 1.0, (1,), np.float32))
    entropy = single.proba_distribution(_params(CASES)).entropy()
    expected = th.tensor([_integral_entropy(m, s) for m, s in CASES], dtype=th.float64)
    # 64 Gauss-Hermite nodes: < 1e-9 up to std = 1, 7e-5 at std = e, 2e-3 at std = e^1.5 (see expected_log_det_tanh)
    tolerance = th.tensor([1e-9 if s <= 0.0 else 1e-4 if s <= 1.0 else 3e-3 for _, s in CASES], dtype=th.float64)
    assert ((entropy - expected).abs() <= tolerance).all(), entropy - expected
    # the same value every call (deterministic quadrature)
    assert th.equal(single.entropy(), entropy)


def test_tanh_normal_entropy_gradient_matches_finite_differences():
    """dH/d(mean, log_std) by autograd vs central differences of the high-precision integral, incl. the issue's
    case (mean 0.5, log_std -0.5): (-0.742, +0.499), where -log_prob of stored actions gives ~0 in expectation."""
    dist = TanhNormalDistribution(spaces.Box(-1.0, 1.0, (1,), np.float32))
    step = 1e-4
    for mean, log_std in CASES[:-1]:  # the last case has std = e^1.5, where the quadrature is accurate to ~2e-3 only
        params = th.tensor([[mean, log_std]], dtype=th.float64, requires_grad=True)
        dist.proba_distribution(params).entropy().sum().backward()
        d_mean = (_integral_entropy(mean + step, log_std) - _integral_entropy(mean - step, log_std)) / (2 * step)
        d_log_std = (_integral_entropy(mean, log_std + step) - _integral_entropy(mean, log_std - step)) / (2 * step)
        tolerance = 2e-5 if log_std <= 0.0 else 1e-3  # quadrature error of the gradient: ~4e-4 at std = e
        np.testing.assert_allclose(params.grad[0].numpy(), [d_mean, d_log_std], atol=tolerance, err_msg=f"{(mean, log_std)}")
        if (mean, log_std) == (0.5, -0.5):
            np.testing.assert_allclose(params.grad[0].numpy(), [-0.742, 0.499], atol=1e-3)


def test_tuple_entropy_is_the_sum_and_reaches_the_logits():
    """Tuple(categorical, tanh_normal): entropy = Categorical entropy + tanh-Normal entropy, and its gradient on the
    logits is torch's Categorical entropy gradient (before, the whole Tuple's entropy was None)."""
    space = spaces.Tuple((spaces.Discrete(3), spaces.Box(-1.0, 1.0, (2,), np.float32)))
    dist = make_distribution(space, ("categorical", "tanh_normal"))
    assert isinstance(dist, TupleDistribution)
    params = th.randn(5, 3 + 4, dtype=th.float64, requires_grad=True)
    dist.proba_distribution(params)
    entropy = dist.entropy()
    logits = params[:, :3].detach().clone().requires_grad_(True)
    expected_categorical = Categorical(logits=logits).entropy()
    tanh_part = TanhNormalDistribution(space.spaces[1]).proba_distribution(params[:, 3:].detach()).entropy()
    th.testing.assert_close(entropy, expected_categorical + tanh_part)
    entropy.sum().backward()
    expected_categorical.sum().backward()
    th.testing.assert_close(params.grad[:, :3], logits.grad)
    assert params.grad[:, :3].abs().max() > 0.05


class ZeroRewardEnv(gym.Env):
    """Constant observation, reward 0, 8-step episodes: only the entropy bonus moves the policy's std."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, action_space: spaces.Space):
        self.action_space = action_space
        self._t = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self._t += 1
        return np.zeros(2, np.float32), 0.0, False, self._t >= 8, {}


def _policy_std(model: PPORollback, distribution: str) -> float:
    if distribution == "normal":
        return float(model.policy.log_std.detach().exp().mean())
    return float(model.policy.action_net.log_std.detach().exp().mean())


@pytest.mark.parametrize("distribution", ["normal", "tanh_normal"])
def test_entropy_bonus_raises_the_std(distribution):
    """On a zero-reward env, ent_coef > 0 raises the std of a tanh-Normal policy (from std e^-1.5, below the
    entropy-maximising std ~ 1), as it does for SB3's Gaussian; without the bonus it stays put."""
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    stds = {}
    for ent_coef in (0.0, 0.05):
        model = PPORollback(
            "MlpPolicy",
            ZeroRewardEnv(action_space),
            n_steps=64,
            batch_size=64,
            n_epochs=4,
            learning_rate=1e-2,
            ent_coef=ent_coef,
            rollback_alpha=0.0,
            policy_kwargs=dict(action_distribution=distribution, log_std_init=-1.5),
            seed=0,
            device="cpu",
        )
        model.learn(64 * 25)
        stds[ent_coef] = _policy_std(model, distribution)
    initial = float(np.exp(-1.5))
    assert abs(stds[0.0] - initial) < 0.25 * initial, stds
    assert stds[0.05] > 1.5 * initial, stds
