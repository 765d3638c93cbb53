"""
Action distributions that Stable-Baselines3 lacks, behind SB3's ``Distribution`` interface.

Every distribution here (a :class:`CherryDistribution`) is parameterised by ONE flat tensor produced by the
module returned from :meth:`CherryDistribution.proba_distribution_net`, and evaluates actions in the flat encoding of
:mod:`sb3_cherry.common.spaces` (shape ``(batch, action_dim)``; ``(batch,)`` is accepted for one-column actions).
This uniform interface is what lets a :class:`TupleDistribution` hold one distribution per component.

Distributions by action space (first one is the default):

====================  ==========================================================
space                 names accepted by :func:`make_distribution`
====================  ==========================================================
``Box``               ``"normal"``, ``"beta"``, ``"tanh_normal"`` (inside a Tuple, a Box with finite
                      bounds defaults to ``"beta"``, see :func:`default_distribution`)
``Discrete``          ``"categorical"``, ``"gumbel_softmax"``
``MultiDiscrete``     ``"multi_categorical"`` (alias ``"categorical"``)
``MultiBinary``       ``"bernoulli"``
``Tuple``             a tuple of the above, one per component (nested for nested Tuples)
====================  ==========================================================

For a non-Tuple space, the default pairing returns SB3's own distribution class, so that sb3_cherry reproduces
SB3 exactly.
"""

import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, TypeVar, Union, cast

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common import distributions as sb3_dist
from stable_baselines3.common.distributions import Distribution, make_proba_distribution
from torch import nn
from torch.distributions import Bernoulli, Beta, Categorical, Normal
from torch.distributions import Distribution as TorchDistribution
from torch.distributions import kl_divergence as th_kl_divergence
from torch.nn import functional as F

from sb3_cherry.common.spaces import check_action_space

SelfNormalDistribution = TypeVar("SelfNormalDistribution", bound="NormalDistribution")
SelfTanhNormalDistribution = TypeVar("SelfTanhNormalDistribution", bound="TanhNormalDistribution")
SelfBetaDistribution = TypeVar("SelfBetaDistribution", bound="BetaDistribution")
SelfCategoricalDistribution = TypeVar("SelfCategoricalDistribution", bound="CategoricalDistribution")
SelfMultiCategoricalDistribution = TypeVar("SelfMultiCategoricalDistribution", bound="MultiCategoricalDistribution")
SelfBernoulliDistribution = TypeVar("SelfBernoulliDistribution", bound="BernoulliDistribution")
SelfTupleDistribution = TypeVar("SelfTupleDistribution", bound="TupleDistribution")

#: A distribution spec: a name, ``None`` (the space's default) or a sequence of specs for a Tuple space.
DistributionSpec = Union[str, None, Sequence["DistributionSpec"]]  # noqa: UP007 (recursive alias needs Union)

BOX_DISTRIBUTIONS = ("normal", "beta", "tanh_normal")
DISCRETE_DISTRIBUTIONS = ("categorical", "gumbel_softmax")
MULTI_DISCRETE_DISTRIBUTIONS = ("multi_categorical", "categorical")
MULTI_BINARY_DISTRIBUTIONS = ("bernoulli",)


def _as_columns(actions: th.Tensor, dim: int) -> th.Tensor:
    """Reshape actions to ``(batch, dim)``."""
    return actions.reshape(-1, dim)


def _finite_bounds(space: spaces.Box, name: str) -> tuple[th.Tensor, th.Tensor]:
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise ValueError(
            f"The '{name}' distribution maps onto the Box bounds, but {space} has infinite bounds. "
            "Use action_distribution='normal' or give the Box finite bounds (in a Tuple action space: one spec per "
            "component, 'normal' for this Box)."
        )
    if not np.all(space.high > space.low):
        raise ValueError(
            f"The '{name}' distribution maps onto the Box bounds, but {space} has a dimension with high <= low (a "
            "zero-width dimension has no density). Remove that dimension from the action space or widen its bounds."
        )
    # float32 bounds rounded towards the interior: float32(0.1) > 0.1, so a saturated sample of a float64 Box would
    # leave the space (float32 spaces keep their bounds exactly)
    low, high = space.low.reshape(-1).astype(np.float32), space.high.reshape(-1).astype(np.float32)
    low = np.where(low < space.low.reshape(-1), np.nextafter(low, np.float32(np.inf)), low)
    high = np.where(high > space.high.reshape(-1), np.nextafter(high, np.float32(-np.inf)), high)
    if not np.all(high > low):
        raise ValueError(
            f"The '{name}' distribution maps onto the Box bounds in float32, but {space} has a dimension narrower than "
            "float32 can tell apart. Rescale that action dimension (e.g. gymnasium.wrappers.RescaleAction)."
        )
    return th.as_tensor(low, dtype=th.float32), th.as_tensor(high, dtype=th.float32)


class CherryDistribution(Distribution):
    """
    Base class of sb3_cherry distributions: parameterised by one flat tensor, evaluated on flat actions.

    :param action_dim: number of columns of the flat action encoding
    :param param_dim: number of distribution parameters per sample (output size of the action net)
    """

    def __init__(self, action_dim: int, param_dim: int):
        super().__init__()
        self.action_dim = action_dim
        self.param_dim = param_dim

    def proba_distribution_net(self, latent_dim: int, log_std_init: float = 0.0) -> nn.Module:
        """
        The layer mapping the policy latent to the distribution parameters (default: one linear layer).

        :param latent_dim: dimension of the policy latent
        :param log_std_init: initial log standard deviation (Gaussian families only)
        :return: a module mapping ``(batch, latent_dim)`` to ``(batch, param_dim)``
        """
        return nn.Linear(latent_dim, self.param_dim)

    @abstractmethod
    def entropy(self) -> th.Tensor:
        """
        Entropy of the distribution, summed over action dimensions (always defined for sb3_cherry distributions).

        :return: shape ``(batch,)``
        """

    def deterministic_action(self) -> th.Tensor:
        """
        The action of ``predict(..., deterministic=True)`` and of a deterministic evaluation: the mode, unless the
        distribution defines another point (the Beta takes its mean by default, see :class:`BetaDistribution`).

        :return: actions
        """
        return self.mode()

    def get_actions(self, deterministic: bool = False) -> th.Tensor:
        """
        :param deterministic: return :meth:`deterministic_action` instead of a sample
        :return: actions
        """
        return self.deterministic_action() if deterministic else self.sample()

    def actions_from_params(self, params: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """
        Sample (or take the deterministic action) from the distribution with the given parameters.

        :param params: distribution parameters, ``(batch, param_dim)``
        :param deterministic: return :meth:`deterministic_action` instead of a sample
        :return: actions
        """
        self.proba_distribution(params)
        return self.get_actions(deterministic=deterministic)

    def log_prob_from_params(self, params: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        Sample from the distribution with the given parameters, with the samples' log-probabilities.

        :param params: distribution parameters, ``(batch, param_dim)``
        :return: actions and their log-probabilities
        """
        actions = self.actions_from_params(params)
        return actions, self.log_prob(actions)

    def kl(self, other: "CherryDistribution") -> th.Tensor:
        """
        KL(self || other), summed over action dimensions.

        :param other: a distribution of the same class and space
        :return: shape ``(batch,)``
        """
        # Subclasses reaching this default hold one torch distribution (list-valued ones override kl)
        p, q = cast(TorchDistribution, self.distribution), cast(TorchDistribution, other.distribution)
        return th_kl_divergence(p, q).reshape(len(self._batch_ref()), -1).sum(dim=1)

    def _batch_ref(self) -> th.Tensor:
        raise NotImplementedError


def categorical_kl(p_logits: th.Tensor, q_logits: th.Tensor) -> th.Tensor:
    """
    ``KL(Categorical(p_logits) || Categorical(q_logits))`` over the last axis, from log-probabilities, so a probability
    that underflows to 0 (or rounds to 1) in the dtype gives the exact small divergence, not torch's ``inf``.

    :param p_logits: unnormalised log-probabilities of p, ``(..., n)``
    :param q_logits: those of q, same shape
    :return: shape ``(...)``
    """
    p_log, q_log = th.log_softmax(p_logits, dim=-1), th.log_softmax(q_logits, dim=-1)
    p = p_log.exp()
    # sum_k p_k (log p_k - log q_k), with 0 log 0 = 0
    return (p * th.where(p > 0, p_log - q_log, 0.0)).sum(dim=-1)


def bernoulli_kl(p_logits: th.Tensor, q_logits: th.Tensor) -> th.Tensor:
    """
    ``KL(Bernoulli(p_logits) || Bernoulli(q_logits))`` elementwise, from log-sigmoids: torch's form is ``inf`` wherever
    q's probability rounds to exactly 1 (float32 logits above 16.6), where the true divergence is tiny.

    :param p_logits: logits of p
    :param q_logits: logits of q, same shape
    :return: same shape
    """
    # p (log p - log q) + (1 - p) (log(1 - p) - log(1 - q)), log p = logsigmoid(l), log(1 - p) = logsigmoid(-l)
    logsig = th.nn.functional.logsigmoid
    return th.sigmoid(p_logits) * (logsig(p_logits) - logsig(q_logits)) + th.sigmoid(-p_logits) * (
        logsig(-p_logits) - logsig(-q_logits)
    )


class _WrittenOutDistribution(CherryDistribution):
    """
    Base of distributions whose methods are written out on their parameters, without a torch distribution object (its
    construction and methods cost more than the arithmetic at these batch sizes): ``distribution``, torch's
    equivalent, is built on demand for code that wants it (each subclass is tested against it).
    """

    #: set by ``proba_distribution``: before it there are no parameters and ``distribution`` is None, as in SB3
    _has_params = False

    @property  # type: ignore[override]
    def distribution(self) -> TorchDistribution | None:
        """The torch distribution with the current parameters (built on demand), None before ``proba_distribution``."""
        return self._torch_distribution() if self._has_params else None

    @distribution.setter
    def distribution(self, value: object) -> None:
        # SB3's ``Distribution.__init__`` sets ``distribution = None``; the parameters are the state here
        if value is not None:
            raise AttributeError(f"{type(self).__name__}.distribution is built from its parameters; set those instead.")

    def _torch_distribution(self) -> TorchDistribution:
        raise NotImplementedError


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _gaussian_log_density(x: th.Tensor, mean: th.Tensor, log_std: th.Tensor) -> th.Tensor:
    """Elementwise log N(x; mean, exp(log_std)^2), written out (torch's Normal.log_prob is ~3x slower here)."""
    return -0.5 * ((x - mean) * th.exp(-log_std)) ** 2 - log_std - _HALF_LOG_2PI


class _GaussianHead(nn.Module):
    """Linear mean and a state-independent log standard deviation, output as ``[mean, log_std]``."""

    def __init__(self, latent_dim: int, action_dim: int, log_std_init: float):
        super().__init__()
        self.mean = nn.Linear(latent_dim, action_dim)
        self.log_std = nn.Parameter(th.ones(action_dim) * log_std_init, requires_grad=True)

    def forward(self, latent: th.Tensor) -> th.Tensor:
        mean = self.mean(latent)
        return th.cat([mean, self.log_std.expand_as(mean)], dim=-1)


class NormalDistribution(CherryDistribution):
    """
    Diagonal Gaussian with a state-independent standard deviation (SB3's ``DiagGaussianDistribution``, in the
    flat-parameter interface used inside Tuple distributions). Samples are unbounded; like SB3, they are clipped to the
    Box bounds only when sent to the environment.

    :param space: the ``Box`` action space
    """

    mean: th.Tensor
    log_std: th.Tensor

    def __init__(self, space: spaces.Box):
        dim = int(np.prod(space.shape))
        super().__init__(action_dim=dim, param_dim=2 * dim)

    def proba_distribution_net(self, latent_dim: int, log_std_init: float = 0.0) -> nn.Module:
        return _GaussianHead(latent_dim, self.action_dim, log_std_init)

    # Written out on (mean, log_std) without a torch ``Normal`` object: its construction and methods cost more than
    # the arithmetic at these batch sizes, once per component of a Tuple (tested against torch's Normal).
    def proba_distribution(self: SelfNormalDistribution, params: th.Tensor) -> SelfNormalDistribution:
        self.mean, self.log_std = params.split(self.action_dim, dim=-1)
        return self

    def _batch_ref(self) -> th.Tensor:
        return self.mean

    def log_prob_columns(self, actions: th.Tensor) -> th.Tensor:
        """
        Log-density of each action dimension (independent dimensions: :meth:`log_prob` is their sum).

        :param actions: flat actions
        :return: shape ``(batch, action_dim)``
        """
        return _gaussian_log_density(_as_columns(actions, self.action_dim), self.mean, self.log_std)

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        return self.log_prob_columns(actions).sum(dim=1)

    def entropy(self) -> th.Tensor:
        # 0.5 + 0.5 log(2 pi) + log(sigma) per dimension
        return (self.log_std + (0.5 + _HALF_LOG_2PI)).sum(dim=1)

    def sample(self) -> th.Tensor:
        return self.mean + th.exp(self.log_std) * th.randn_like(self.mean)

    def mode(self) -> th.Tensor:
        return self.mean

    def kl(self, other: CherryDistribution) -> th.Tensor:
        assert isinstance(other, NormalDistribution)
        # KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2 / s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2, per dimension
        var_ratio = th.exp(2.0 * (self.log_std - other.log_std))
        scaled_gap = ((self.mean - other.mean) * th.exp(-other.log_std)) ** 2
        return (0.5 * (var_ratio + scaled_gap - 1.0) - (self.log_std - other.log_std)).sum(dim=1)


#: Gauss-Hermite rule for E_{u ~ N(mean, std^2)}[g(u)] = sum_i w_i / sqrt(pi) * g(mean + sqrt(2) * std * x_i)
TANH_ENTROPY_NODES = 64
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite.hermgauss(TANH_ENTROPY_NODES)
_GH_WEIGHTS = _GH_WEIGHTS / math.sqrt(math.pi)
_GH_CACHE: dict[tuple[th.dtype, th.device], tuple[th.Tensor, th.Tensor]] = {}


def expected_log_det_tanh(mean: th.Tensor, log_std: th.Tensor) -> th.Tensor:
    """
    ``E_{u ~ N(mean, exp(log_std)^2)}[log(1 - tanh(u)^2)]`` elementwise, by a deterministic 64-node Gauss-Hermite rule
    over ``u = mean + std * sqrt(2) * x`` (differentiable in ``mean`` and ``log_std``, the same value every call).
    ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))`` is evaluated in its stable form.

    Accuracy (absolute, per dimension, against a float64 trapezoidal integral on a 1e-4 grid, any mean): < 1e-10
    for ``std <= 1``, 2e-7 at ``std = 1.65``, 7e-5 at ``std = e``, 2e-3 at ``std = 4.5``, 2e-2 at ``std = 7.4``; in
    float32 the float rounding (~1e-6) dominates for ``std <= 2``. Its gradient is as accurate (2e-5 up to ``std = 1``,
    4e-4 at ``std = e``; tests/test_entropy.py). The integrand ``-2 log cosh(u)`` has poles at
    ``u = +-i pi / 2``, so the rule loses accuracy as ``std`` grows; a tanh-Normal's entropy is largest near
    ``std ~ 1``, so an entropy bonus does not drive ``std`` into that range.

    :param mean: means of the Gaussian, any shape
    :param log_std: log standard deviations, same shape
    :return: the expectation, same shape
    """
    key = (mean.dtype, mean.device)
    if key not in _GH_CACHE:
        _GH_CACHE[key] = (
            th.as_tensor(_GH_NODES * math.sqrt(2.0), dtype=mean.dtype, device=mean.device),
            th.as_tensor(_GH_WEIGHTS, dtype=mean.dtype, device=mean.device),
        )
    nodes, weights = _GH_CACHE[key]
    u = mean.unsqueeze(-1) + th.exp(log_std).unsqueeze(-1) * nodes
    log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return log_det @ weights


class TanhNormalDistribution(CherryDistribution):
    """
    tanh-squashed diagonal Gaussian mapped affinely onto the Box bounds: ``a = low + (tanh(u) + 1) / 2 * (high - low)``
    with ``u ~ N(mean, std)`` and a state-independent ``std``.

    The log-density is exact, change of variables included:
    ``log p(a) = log N(u) - log(1 - tanh(u)^2) - log((high - low) / 2)`` summed over dimensions, with
    ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))`` for numerical stability. It is computed from the stored
    action, so ``u = atanh(...)`` is only as precise as the action's float: actions on (or numerically at) the
    bounds are moved ``epsilon`` inside before inverting ``tanh`` (by default the dtype's machine epsilon, as SB3's
    ``TanhBijector``: ``|u|`` is read as at most ``atanh(1 - eps)``, 8.3 in float32 and 18.4 in float64, about where
    ``tanh`` itself stops telling values apart), so log-probs and gradients stay finite.

    The entropy has no closed form; by the change of variables it is, per dimension,
    ``H(a) = H(u) + E[log |da/du|] = 1/2 + log(2 pi)/2 + log(std) + E[log(1 - tanh(u)^2)] + log((high - low) / 2)``,
    with the expectation computed by a deterministic Gauss-Hermite rule (:func:`expected_log_det_tanh`, accuracy
    there): smooth, repeatable and differentiable in ``mean`` and ``log_std``, so ``ent_coef`` acts on the policy
    (the ``-log_prob`` of stored actions SB3 falls back on has zero expected gradient).

    The deterministic action (:meth:`mode`) is ``tanh(mean)`` mapped onto the bounds, the **median** of the squashed
    distribution (``tanh`` is monotone), as SB3's squashed Gaussian does; the density's mode can lie elsewhere (near
    a bound when ``std`` is large).

    :param space: the ``Box`` action space (finite bounds)
    :param epsilon: margin used when inverting ``tanh`` at the bounds; None (default): the machine epsilon of the
        log-probability's dtype (a fixed ``1e-6`` would read every ``|u| > 7.25`` as 7.25 and bias the policy
        gradient of a saturated policy)
    """

    distribution: Normal
    mean: th.Tensor
    log_std: th.Tensor

    def __init__(self, space: spaces.Box, epsilon: float | None = None):
        dim = int(np.prod(space.shape))
        super().__init__(action_dim=dim, param_dim=2 * dim)
        self.low, self.high = _finite_bounds(space, "tanh_normal")
        self.epsilon = epsilon

    def proba_distribution_net(self, latent_dim: int, log_std_init: float = 0.0) -> nn.Module:
        return _GaussianHead(latent_dim, self.action_dim, log_std_init)

    def proba_distribution(self: SelfTanhNormalDistribution, params: th.Tensor) -> SelfTanhNormalDistribution:
        self.mean, self.log_std = params.split(self.action_dim, dim=-1)
        self.distribution = Normal(self.mean, self.log_std.exp(), validate_args=False)
        return self

    def _batch_ref(self) -> th.Tensor:
        return self.distribution.loc

    def _to_bounds(self, squashed: th.Tensor) -> th.Tensor:
        low, high = self.low.to(squashed.device), self.high.to(squashed.device)
        # The clamp only removes float rounding: with tanh saturated at 1, the map can exceed high by one ulp
        return th.clamp(low + 0.5 * (squashed + 1.0) * (high - low), low, high)

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        actions = _as_columns(actions, self.action_dim).to(self.distribution.loc.dtype)
        low, high = self.low.to(actions), self.high.to(actions)  # the parameters' device and dtype
        # tanh(u) from the action: near each bound from the distance to that bound, which floats hold exactly
        # (Sterbenz); 2 (a - low) / (high - low) - 1 alone rounds a + 1 near high = 1 to 2 ulps of 2 (u = 8.2 -> 8.3)
        width = high - low
        from_low = 2.0 * (actions - low) / width - 1.0
        squashed = th.where(from_low > 0, 1.0 - 2.0 * (high - actions) / width, from_low)
        # Keep atanh finite for actions on the bounds (float32 tanh saturates at |u| ~ 9)
        epsilon = th.finfo(squashed.dtype).eps if self.epsilon is None else self.epsilon
        squashed = squashed.clamp(-1.0 + epsilon, 1.0 - epsilon)
        u = th.atanh(squashed)
        log_det_tanh = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        log_det_affine = th.log((high - low) / 2.0)
        return (_gaussian_log_density(u, self.mean, self.log_std) - log_det_tanh - log_det_affine).sum(dim=1)

    def entropy(self) -> th.Tensor:
        # H(a) = H(u) + E[log |d tanh / du|] + log|d a / d tanh| per dimension (change of variables), the middle term
        # by Gauss-Hermite quadrature
        log_scale = th.log((self.high.to(self.mean) - self.low.to(self.mean)) / 2.0)  # in the parameters' dtype
        gaussian = self.log_std + (0.5 + _HALF_LOG_2PI)
        return (gaussian + expected_log_det_tanh(self.mean, self.log_std) + log_scale).sum(dim=1)

    def sample(self) -> th.Tensor:
        return self._to_bounds(th.tanh(self.mean + th.exp(self.log_std) * th.randn_like(self.mean)))

    def mode(self) -> th.Tensor:
        """
        :return: the median ``tanh(mean)`` on the bounds (the deterministic action; see the class docstring)
        """
        return self._to_bounds(th.tanh(self.distribution.mean))


class BetaDistribution(_WrittenOutDistribution):
    """
    Beta distribution per action dimension, mapped affinely onto the Box bounds (Chou et al., 2017).
    Concentrations are ``softplus(x) + 1`` so the density is unimodal and bounded. Log-probs include the
    ``-log(high - low)`` of the affine map; actions on the bounds are moved ``epsilon`` inside (relative to the
    range), so log-probs and gradients stay finite.

    The deterministic action (``predict(..., deterministic=True)``, deterministic evaluation) is the **mean**
    ``alpha / (alpha + beta)`` by default, as in cherry_rl: the mode ``(alpha - 1) / (alpha + beta - 2)`` moves away
    from the mean when the concentrations are small (a skewed Beta), and a policy whose mean does well can fail with
    it: measured on Humanoid-v5 (seed 1 of the zoo entry at 2.25M steps, 10 episodes, ``python -m
    benchmarks.beta_deterministic``), mean 6015.9 ± 8.1 with no fall, mode 264.8 ± 306.9 (falls after 53 steps on
    average), samples 2635.8 ± 2117.7. ``deterministic="mode"`` takes the mode instead.

    :param space: the ``Box`` action space (finite bounds)
    :param epsilon: relative margin at the bounds
    :param deterministic: the deterministic action, ``"mean"`` (default) or ``"mode"``
    """

    alpha: th.Tensor
    beta: th.Tensor

    def __init__(self, space: spaces.Box, epsilon: float = 1e-6, deterministic: str = "mean"):
        dim = int(np.prod(space.shape))
        super().__init__(action_dim=dim, param_dim=2 * dim)
        self.low, self.high = _finite_bounds(space, "beta")
        self.epsilon = epsilon
        if deterministic not in ("mean", "mode"):
            raise ValueError(f"BetaDistribution: deterministic={deterministic!r}; use 'mean' (default) or 'mode'.")
        self.deterministic = deterministic
        # (alpha, beta, log B(alpha, beta)) of the last log_beta_fn() call
        self._log_beta_cache: tuple[th.Tensor, th.Tensor, th.Tensor] | None = None

    def _torch_distribution(self) -> Beta:
        return Beta(self.alpha, self.beta, validate_args=False)

    def deterministic_action(self) -> th.Tensor:
        if self.deterministic == "mode":
            return self.mode()
        return self._to_bounds(self.alpha / (self.alpha + self.beta))

    def proba_distribution(self: SelfBetaDistribution, params: th.Tensor) -> SelfBetaDistribution:
        self.alpha, self.beta = (F.softplus(p) + 1.0 for p in params.split(self.action_dim, dim=-1))
        self._has_params = True
        return self

    def _batch_ref(self) -> th.Tensor:
        return self.alpha

    def log_beta_fn(self) -> th.Tensor:
        """
        ``log B(alpha, beta) = lgamma(alpha) + lgamma(beta) - lgamma(alpha + beta)`` per dimension, shared by
        :meth:`log_prob`, :meth:`entropy` and :meth:`kl`: computed again only for other ``alpha`` / ``beta`` tensors,
        or when a gradient is needed and the stored value was computed without one (e.g. under ``no_grad``).

        :return: shape ``(batch, action_dim)``
        """
        cache = self._log_beta_cache
        if (
            cache is None
            or cache[0] is not self.alpha
            or cache[1] is not self.beta
            or (th.is_grad_enabled() and not cache[2].requires_grad and (self.alpha.requires_grad or self.beta.requires_grad))
        ):
            value = th.lgamma(self.alpha) + th.lgamma(self.beta) - th.lgamma(self.alpha + self.beta)
            cache = self._log_beta_cache = (self.alpha, self.beta, value)
        return cache[2]

    def _to_bounds(self, unit: th.Tensor) -> th.Tensor:
        low, high = self.low.to(unit.device), self.high.to(unit.device)
        # The clamp only removes float rounding: low + 1 * (high - low) can exceed high by one ulp
        return th.clamp(low + unit * (high - low), low, high)

    def log_prob_columns(self, actions: th.Tensor) -> th.Tensor:
        """
        Log-density of each action dimension (independent dimensions: :meth:`log_prob` is their sum).

        :param actions: flat actions
        :return: shape ``(batch, action_dim)``
        """
        actions = _as_columns(actions, self.action_dim).to(self.alpha.dtype)
        low, high = self.low.to(actions), self.high.to(actions)  # the parameters' device and dtype
        unit = ((actions - low) / (high - low)).clamp(self.epsilon, 1.0 - self.epsilon)
        # log p(x) = (alpha - 1) log x + (beta - 1) log(1 - x) - log B(alpha, beta), minus log(high - low) of the map
        log_density = (self.alpha - 1.0) * th.log(unit) + (self.beta - 1.0) * th.log1p(-unit) - self.log_beta_fn()
        return log_density - th.log(high - low)

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        return self.log_prob_columns(actions).sum(dim=1)

    def entropy(self) -> th.Tensor:
        # H = log B(a, b) - (a - 1) psi(a) - (b - 1) psi(b) + (a + b - 2) psi(a + b), plus log(high - low) of the map
        alpha, beta = self.alpha, self.beta
        log_range = th.log(self.high.to(alpha) - self.low.to(alpha))  # in the parameters' dtype
        unit_entropy = (
            self.log_beta_fn()
            - (alpha - 1.0) * th.digamma(alpha)
            - (beta - 1.0) * th.digamma(beta)
            + (alpha + beta - 2.0) * th.digamma(alpha + beta)
        )
        return (unit_entropy + log_range).sum(dim=1)

    def sample(self) -> th.Tensor:
        # X ~ Gamma(alpha), Y ~ Gamma(beta) => X / (X + Y) ~ Beta(alpha, beta) (reparameterised like torch's Beta,
        # without its Dirichlet stacking)
        x = th._standard_gamma(self.alpha)
        y = th._standard_gamma(self.beta)
        return self._to_bounds(x / (x + y).clamp_min(th.finfo(x.dtype).tiny))

    def mode(self) -> th.Tensor:
        # (alpha - 1) / (alpha + beta - 2), written x / (x + y) with x = alpha - 1 >= 0, y = beta - 1 >= 0 (exact
        # subtractions): computing alpha + beta - 2 directly cancels catastrophically in float32 when both
        # concentrations are close to 1, giving modes far outside the bounds (or inf). x / (x + y) is always in [0, 1].
        x, y = self.alpha - 1.0, self.beta - 1.0
        total = x + y
        # alpha = beta = 1 (uniform; softplus underflows for raw params below ~ -17 in float32): 0 / 0 would be NaN,
        # take the middle of the bounds (every point is a mode of the uniform).
        unit = th.where(total > 0, x / total.clamp_min(th.finfo(total.dtype).tiny), 0.5)
        return self._to_bounds(unit)

    def kl(self, other: CherryDistribution) -> th.Tensor:
        assert isinstance(other, BetaDistribution)
        # KL(Beta(a1, b1) || Beta(a2, b2)) = log B(a2, b2) - log B(a1, b1) + (a1 - a2) psi(a1) + (b1 - b2) psi(b1)
        #                                    + (a2 - a1 + b2 - b1) psi(a1 + b1)   per dimension (the affine map cancels)
        # in float64 at least: the terms cancel to a small difference (a sharp float32 policy at concentrations ~1000
        # lost ~1e-3 of absolute accuracy on KLs ~1e-4, as torch's float32 Beta KL does)
        dtype = th.promote_types(self.alpha.dtype, th.float64)
        a1, b1, a2, b2 = (x.to(dtype) for x in (self.alpha, self.beta, other.alpha, other.beta))
        per_dim = (
            th.lgamma(a2) + th.lgamma(b2) - th.lgamma(a2 + b2)
            - (th.lgamma(a1) + th.lgamma(b1) - th.lgamma(a1 + b1))
            + (a1 - a2) * th.digamma(a1)
            + (b1 - b2) * th.digamma(b1)
            + (a2 - a1 + b2 - b1) * th.digamma(a1 + b1)
        )  # fmt: skip
        return per_dim.sum(dim=1).to(self.alpha.dtype)


class CategoricalDistribution(_WrittenOutDistribution):
    """
    Categorical distribution over ``Discrete(n)`` (flat encoding: one column holding the index).

    :param space: the ``Discrete`` action space
    """

    logits: th.Tensor

    def __init__(self, space: spaces.Discrete):
        super().__init__(action_dim=1, param_dim=int(space.n))
        self.start = int(space.start)

    def _torch_distribution(self) -> Categorical:
        return Categorical(logits=self.logits, validate_args=False)

    def proba_distribution(self: SelfCategoricalDistribution, params: th.Tensor) -> SelfCategoricalDistribution:
        # normalised log-probabilities, as torch's Categorical(logits=params) stores them
        self.logits = params - params.logsumexp(dim=-1, keepdim=True)
        self._has_params = True
        return self

    def _batch_ref(self) -> th.Tensor:
        return self.logits

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        # clamped into the space: sb3-contrib pads recurrent sequences with action 0, below a shifted space's start (the
        # padded steps are masked out of the losses; the Box distributions clamp out-of-range actions likewise)
        index = (_as_columns(actions, 1).round().long() - self.start).clamp(0, self.logits.shape[-1] - 1)
        # broadcast as torch's Categorical.log_prob does (one action for every state, or one state for every action)
        index, log_pmf = th.broadcast_tensors(index, self.logits)
        return log_pmf.gather(-1, index[..., :1]).squeeze(-1)

    def entropy(self) -> th.Tensor:
        # -sum p log p; logits of -inf (probability 0) are clamped to the lowest float so that 0 * log 0 = 0
        logits = self.logits.clamp(min=th.finfo(self.logits.dtype).min)
        return -(logits * logits.softmax(dim=-1)).sum(dim=-1)

    def sample(self) -> th.Tensor:
        return th.multinomial(self.logits.softmax(dim=-1), 1, True) + self.start

    def mode(self) -> th.Tensor:
        return self.logits.argmax(dim=1, keepdim=True) + self.start

    def kl(self, other: CherryDistribution) -> th.Tensor:
        assert isinstance(other, CategoricalDistribution)
        # sum_k p_k (log p_k - log q_k), with 0 log 0 = 0
        p = self.logits.softmax(dim=-1)
        return (p * th.where(p > 0, self.logits - other.logits, 0.0)).sum(dim=-1)


class GumbelSoftmaxDistribution(CategoricalDistribution):
    """
    Categorical distribution with the Gumbel-Softmax relaxation (Jang et al., 2017; Maddison et al., 2017).

    Actions sent to the environment are the hard ``argmax(logits + g)``, ``g ~ Gumbel(0, 1)`` (the Gumbel-max trick,
    an exact categorical sample whatever the temperature), and log-probabilities are the exact categorical ones, so
    PPO's ratios are unbiased. :meth:`relaxed_sample` gives the differentiable relaxed one-hot sample (straight-through
    with ``hard=True``) for objectives that backpropagate through the action.

    :param space: the ``Discrete`` action space
    :param temperature: relaxation temperature (> 0)
    """

    def __init__(self, space: spaces.Discrete, temperature: float = 1.0):
        if temperature <= 0:
            raise ValueError(f"gumbel_softmax temperature must be > 0, got {temperature}.")
        super().__init__(space)
        self.temperature = temperature

    def relaxed_sample(self, hard: bool = False) -> th.Tensor:
        """
        Differentiable relaxed one-hot sample.

        :param hard: straight-through estimator (one-hot forward, relaxed gradient)
        :return: shape ``(batch, n)``
        """
        return F.gumbel_softmax(self.logits, tau=self.temperature, hard=hard)

    def sample(self) -> th.Tensor:
        gumbel = -th.log(-th.log(th.rand_like(self.logits).clamp_min(1e-20)))
        return (self.logits + gumbel).argmax(dim=1, keepdim=True) + self.start


class MultiCategoricalDistribution(CherryDistribution):
    """
    Independent categoricals over ``MultiDiscrete(nvec)``.

    :param space: the ``MultiDiscrete`` action space
    """

    distribution: list[Categorical]  # type: ignore[assignment]  # SB3 declares Distribution | list[Distribution]

    def __init__(self, space: spaces.MultiDiscrete):
        self.nvec = [int(n) for n in space.nvec.reshape(-1)]
        self.start = th.as_tensor(np.asarray(space.start).reshape(-1), dtype=th.long)
        super().__init__(action_dim=len(self.nvec), param_dim=sum(self.nvec))

    def proba_distribution(self: SelfMultiCategoricalDistribution, params: th.Tensor) -> SelfMultiCategoricalDistribution:
        self.distribution = [Categorical(logits=split, validate_args=False) for split in th.split(params, self.nvec, dim=1)]
        return self

    def _batch_ref(self) -> th.Tensor:
        return self.distribution[0].logits

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        index = _as_columns(actions, self.action_dim).round().long() - self.start.to(actions.device)
        # clamped into the space, as CategoricalDistribution.log_prob does (sb3-contrib's zero padding)
        index = th.minimum(index.clamp(min=0), th.as_tensor(self.nvec, device=index.device) - 1)
        return th.stack([d.log_prob(a) for d, a in zip(self.distribution, th.unbind(index, dim=1), strict=True)], dim=1).sum(
            dim=1
        )

    def entropy(self) -> th.Tensor:
        return th.stack([d.entropy() for d in self.distribution], dim=1).sum(dim=1)

    def sample(self) -> th.Tensor:
        return th.stack([d.sample() for d in self.distribution], dim=1) + self.start.to(self._batch_ref().device)

    def mode(self) -> th.Tensor:
        return th.stack([d.probs.argmax(dim=1) for d in self.distribution], dim=1) + self.start.to(self._batch_ref().device)

    def kl(self, other: CherryDistribution) -> th.Tensor:
        assert isinstance(other, MultiCategoricalDistribution)
        return th.stack(
            [categorical_kl(p.logits, q.logits) for p, q in zip(self.distribution, other.distribution, strict=True)], dim=1
        ).sum(dim=1)


class BernoulliDistribution(CherryDistribution):
    """
    Independent Bernoullis over ``MultiBinary(n)``.

    :param space: the ``MultiBinary`` action space
    """

    distribution: Bernoulli

    def __init__(self, space: spaces.MultiBinary):
        dim = int(np.prod(space.shape))
        super().__init__(action_dim=dim, param_dim=dim)

    def proba_distribution(self: SelfBernoulliDistribution, params: th.Tensor) -> SelfBernoulliDistribution:
        self.distribution = th.distributions.Bernoulli(logits=params, validate_args=False)
        return self

    def _batch_ref(self) -> th.Tensor:
        return self.distribution.logits

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        actions = _as_columns(actions, self.action_dim).to(self.distribution.logits.dtype)  # (float64 policies too)
        return self.distribution.log_prob(actions).sum(dim=1)

    def entropy(self) -> th.Tensor:
        return self.distribution.entropy().sum(dim=1)

    def sample(self) -> th.Tensor:
        return self.distribution.sample()

    def mode(self) -> th.Tensor:
        return th.round(self.distribution.probs)

    def kl(self, other: CherryDistribution) -> th.Tensor:
        assert isinstance(other, BernoulliDistribution)
        return bernoulli_kl(self.distribution.logits, other.distribution.logits).sum(dim=1)


class _TupleHead(nn.Module):
    """One parameter head per Tuple component, outputs concatenated."""

    def __init__(self, heads: list[nn.Module]):
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, latent: th.Tensor) -> th.Tensor:
        return th.cat([head(latent) for head in self.heads], dim=-1)


def _fused(last: CherryDistribution, component: CherryDistribution) -> CherryDistribution | None:
    """
    One distribution over the columns of ``last`` and ``component`` when they are two Gaussians, or two Betas with
    the same options (each column keeps its own bounds); None when they do not fuse.
    """
    if type(last) is NormalDistribution and type(component) is NormalDistribution:
        return NormalDistribution(spaces.Box(-np.inf, np.inf, (last.action_dim + component.action_dim,), np.float32))
    if (
        type(last) is BetaDistribution
        and type(component) is BetaDistribution
        and (last.epsilon, last.deterministic) == (component.epsilon, component.deterministic)
    ):
        low = th.cat([last.low, component.low]).numpy()
        high = th.cat([last.high, component.high]).numpy()
        return BetaDistribution(spaces.Box(low, high, dtype=np.float32), last.epsilon, last.deterministic)
    return None


class TupleDistribution(CherryDistribution):
    """
    Product distribution over a ``Tuple`` action space: one distribution per component, independent given the
    observation. Log-probabilities and entropies add; actions are the concatenation of the components' flat actions
    (:mod:`sb3_cherry.common.spaces`). The entropy is the sum of the components' entropies: exact where a closed form
    exists, the Gauss-Hermite estimate for tanh-Normal components, so every component gets its entropy gradient.

    Consecutive ``"normal"`` components, and consecutive ``"beta"`` components with the same options, are evaluated as
    one distribution over their concatenated columns (the same distribution: independent dimensions either way, each
    Beta on its own bounds) with one parameter head, which saves a head, a density, an entropy and a sample per extra
    component at every step (a Tuple of a Discrete and three bounded Boxes, the default Beta parts: ~1.8x faster
    distribution work); a nested Tuple that reduces to one distribution is evaluated as that distribution (and may
    fuse with its neighbours). Fused parameters are laid out ``[means, log_stds]`` (Gaussian) or ``[alphas, betas]``
    (Beta, before the softplus) over the fused columns; every other component keeps its own block of parameters, in
    order. ``components`` is the per-component structure (types, options); the values per component come from
    :meth:`component_log_probs`.

    :param components: one distribution per component of the Tuple
    """

    def __init__(self, components: Sequence[CherryDistribution]):
        self.components = list(components)
        super().__init__(
            action_dim=sum(c.action_dim for c in self.components), param_dim=sum(c.param_dim for c in self.components)
        )
        # parts: what is evaluated; part_sizes[i]: action columns of each component that part i covers
        self.parts: list[CherryDistribution] = []
        self.part_sizes: list[list[int]] = []
        for component in self.components:
            if isinstance(component, TupleDistribution) and len(component.parts) == 1:
                component = component.parts[0]  # a nested Tuple evaluated as one distribution: no wrapper
            fused = _fused(self.parts[-1], component) if self.parts else None
            if fused is not None:
                self.parts[-1] = fused
                self.part_sizes[-1] = [*self.part_sizes[-1], component.action_dim]
            else:
                self.parts.append(component)
                self.part_sizes.append([component.action_dim])

    def proba_distribution_net(self, latent_dim: int, log_std_init: float = 0.0) -> nn.Module:
        return _TupleHead([p.proba_distribution_net(latent_dim, log_std_init=log_std_init) for p in self.parts])

    def proba_distribution(self: SelfTupleDistribution, params: th.Tensor) -> SelfTupleDistribution:
        splits = params.split([p.param_dim for p in self.parts], dim=-1)
        for part, split in zip(self.parts, splits, strict=True):
            part.proba_distribution(split)
        return self

    def _batch_ref(self) -> th.Tensor:
        return self.parts[0]._batch_ref()

    def _split_actions(self, actions: th.Tensor) -> tuple[th.Tensor, ...]:
        return _as_columns(actions, self.action_dim).split([p.action_dim for p in self.parts], dim=1)

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        log_probs = [p.log_prob(a) for p, a in zip(self.parts, self._split_actions(actions), strict=True)]
        return log_probs[0] if len(log_probs) == 1 else th.stack(log_probs, dim=1).sum(dim=1)

    def component_log_probs(self, actions: th.Tensor) -> list[th.Tensor]:
        """
        Log-probability of each component of the actions.

        :param actions: flat actions
        :return: one ``(batch,)`` tensor per component
        """
        out = []
        for part, sizes, a in zip(self.parts, self.part_sizes, self._split_actions(actions), strict=True):
            if len(sizes) == 1:
                out.append(part.log_prob(a))
            else:  # a fused Gaussian or Beta: per-column densities, summed per component
                assert isinstance(part, (NormalDistribution, BetaDistribution))
                out += [c.sum(dim=1) for c in part.log_prob_columns(a).split(sizes, dim=1)]
        return out

    def entropy(self) -> th.Tensor:
        entropies = [p.entropy() for p in self.parts]
        return entropies[0] if len(entropies) == 1 else th.stack(entropies, dim=1).sum(dim=1)

    def sample(self) -> th.Tensor:
        return th.cat([p.sample().float().reshape(-1, p.action_dim) for p in self.parts], dim=1)

    def mode(self) -> th.Tensor:
        return th.cat([p.mode().float().reshape(-1, p.action_dim) for p in self.parts], dim=1)

    def deterministic_action(self) -> th.Tensor:
        return th.cat([p.deterministic_action().float().reshape(-1, p.action_dim) for p in self.parts], dim=1)

    def kl(self, other: CherryDistribution) -> th.Tensor:
        assert isinstance(other, TupleDistribution)
        return th.stack([p.kl(q) for p, q in zip(self.parts, other.parts, strict=True)], dim=1).sum(dim=1)


def default_distribution(space: spaces.Space, inside_tuple: bool = False) -> DistributionSpec:
    """
    The default distribution name for an action space (a nested tuple of names for Tuple spaces).

    A ``Box`` gets SB3's ``"normal"`` (so that a plain Box space reproduces SB3), except as a component of a Tuple:
    there a Box with finite bounds gets ``"beta"``, which covers the bounds whatever their scale (a Gaussian starts at
    mean 0, std 1, so it barely explores a ``[0, 700]`` parameter and piles its clipped mass on a bound), and a Box with
    an infinite bound keeps ``"normal"``. SB3 has no Tuple support, so there is no SB3 behaviour to keep there.

    :param space: the action space
    :param inside_tuple: ``space`` is a component of a Tuple (the Tuple branch passes ``True`` to its components)
    :return: the spec
    """
    if isinstance(space, spaces.Tuple):
        return tuple(default_distribution(sub, inside_tuple=True) for sub in space.spaces)
    if isinstance(space, spaces.Box):
        bounded = bool(np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high)) and np.all(space.high > space.low))
        return "beta" if inside_tuple and bounded else "normal"
    if isinstance(space, spaces.Discrete):
        return "categorical"
    if isinstance(space, spaces.MultiDiscrete):
        return "multi_categorical"
    if isinstance(space, spaces.MultiBinary):
        return "bernoulli"
    check_action_space(space)
    raise AssertionError("unreachable")


#: A Gaussian's range warning fires when a finite Box dimension's half-width is more than this factor away from 1 (the
#: half-width of [-1, 1]), or when the dimension does not overlap [-1, 1] at all.
GAUSSIAN_RANGE_FACTOR = 10.0


def gaussian_range_warning(space: spaces.Space, spec: DistributionSpec) -> str | None:
    """
    The message of the warning for ``"normal"`` on a Box whose range is far from ``[-1, 1]``, or ``None``.

    SB3's env checker recommends a normalised ``[-1, 1]`` Box action space because SB3's Gaussian starts at mean 0 and
    std 1 whatever the bounds, then clips its samples to them. "Far" here: a finite dimension whose half-width
    ``(high - low) / 2`` is more than :data:`GAUSSIAN_RANGE_FACTOR` times larger or smaller than 1 (e.g. ``[0, 700]``,
    ``[0, 0.1]``), or whose interval does not overlap ``[-1, 1]`` (e.g. ``[5, 10]``). Dimensions with an infinite bound
    are not checked (no rescaling applies; the Gaussian is the right choice there).

    :param space: the action space
    :param spec: the resolved distribution spec of ``space`` (:func:`resolve_spec`)
    :return: one message naming every offending Box (Tuple components by index path) and the fix, or ``None``
    """
    offending: list[str] = []

    def visit(sub: spaces.Space, sub_spec: DistributionSpec, path: str) -> None:
        if isinstance(sub, spaces.Tuple):
            for i, (part, part_spec) in enumerate(zip(sub.spaces, sub_spec, strict=True)):  # type: ignore[arg-type]
                visit(part, part_spec, f"{path}[{i}]")
            return
        if not isinstance(sub, spaces.Box) or sub_spec != "normal":
            return
        low, high = sub.low.astype(np.float64).reshape(-1), sub.high.astype(np.float64).reshape(-1)
        finite = np.isfinite(low) & np.isfinite(high)
        half = (high - low) / 2.0
        with np.errstate(invalid="ignore"):  # inf - inf in unbounded dimensions (masked by ``finite``)
            scale_off = (half > GAUSSIAN_RANGE_FACTOR) | (half < 1.0 / GAUSSIAN_RANGE_FACTOR)
        far = finite & (scale_off | (low > 1.0) | (high < -1.0))
        if np.any(far):
            ranges = ", ".join(f"[{low[i]:g}, {high[i]:g}]" for i in np.flatnonzero(far)[:3])
            where = f"component {path} " if path else ""
            offending.append(f"{where}{sub} (dimension range {ranges})")

    visit(space, spec, "")
    if not offending:
        return None
    if isinstance(space, spaces.Tuple):
        fix = (
            "leave action_distribution unset (bounded Box components of a Tuple then default to 'beta'), give 'beta' or "
            "'tanh_normal' for these components, or rescale their ranges to [-1, 1] in the environment"
        )
    else:
        fix = (
            "pass policy_kwargs=dict(action_distribution='beta') (or 'tanh_normal'), which map onto the bounds, or rescale "
            "the action space to [-1, 1] (gymnasium.wrappers.RescaleAction)"
        )
    return (
        f"A Gaussian action distribution ('normal': mean 0, std 1 at initialisation, samples clipped to the bounds) is "
        f"used on {'; '.join(offending)}, far from [-1, 1]: it will explore only a sliver of that range or pile its "
        f"clipped mass onto a bound. To fix it, {fix}."
    )


def _allowed(space: spaces.Space) -> tuple[str, ...]:
    if isinstance(space, spaces.Box):
        return BOX_DISTRIBUTIONS
    if isinstance(space, spaces.Discrete):
        return DISCRETE_DISTRIBUTIONS
    if isinstance(space, spaces.MultiDiscrete):
        return MULTI_DISCRETE_DISTRIBUTIONS
    return MULTI_BINARY_DISTRIBUTIONS


def resolve_spec(space: spaces.Space, spec: DistributionSpec, inside_tuple: bool = False) -> DistributionSpec:
    """
    Validate a distribution spec against an action space and fill in defaults.

    For a Tuple space, ``spec`` is ``None`` (all defaults), one name applied to every component that accepts it
    (others get their default), or a sequence with one spec per component. Defaults are those of
    :func:`default_distribution` (a bounded Box inside a Tuple defaults to ``"beta"``).

    :param space: the action space
    :param spec: the user's ``action_distribution``
    :param inside_tuple: ``space`` is a component of a Tuple (for its default, see :func:`default_distribution`)
    :return: a fully specified spec (names, nested tuples for Tuple spaces)
    :raises ValueError: for an unknown name or an unsupported space/distribution pairing
    """
    check_action_space(space)
    if isinstance(space, spaces.Tuple):
        if isinstance(spec, str) and spec not in _leaf_names(space):
            # Without this check a misspelt or inapplicable name would silently fall back to every default.
            raise ValueError(
                f"action_distribution={spec!r} is not available for any component of {space}. "
                f"Allowed choices: {sorted(_leaf_names(space))}, or one spec per component."
            )
        if spec is None or isinstance(spec, str):
            return tuple(resolve_spec(sub, spec if spec in _leaf_names(sub) else None, True) for sub in space.spaces)
        if not isinstance(spec, Sequence) or len(spec) != len(space.spaces):
            raise ValueError(
                f"action_distribution for {space} must be None, a name, or a sequence of {len(space.spaces)} specs "
                f"(one per component), got {spec!r}."
            )
        return tuple(resolve_spec(sub, sub_spec, True) for sub, sub_spec in zip(space.spaces, spec, strict=True))
    if spec is None:
        return default_distribution(space, inside_tuple)
    if not isinstance(spec, str):
        raise ValueError(f"action_distribution for {space} must be a name, got {spec!r}.")
    allowed = _allowed(space)
    if spec not in allowed:
        raise ValueError(
            f"action_distribution={spec!r} is not available for the action space {space}. Allowed choices: {list(allowed)}."
        )
    if isinstance(space, spaces.MultiDiscrete) and spec == "categorical":
        # "categorical" is an alias: normalise it so that make_distribution returns SB3's own class for it too
        return "multi_categorical"
    return spec


def _leaf_names(space: spaces.Space) -> set[str]:
    """All distribution names accepted by at least one (possibly nested) component of ``space``."""
    if isinstance(space, spaces.Tuple):
        return set().union(*(_leaf_names(sub) for sub in space.spaces))
    return set(_allowed(space))


def _spec_names(spec: DistributionSpec) -> set[str]:
    """The distribution names a resolved spec uses."""
    if isinstance(spec, str):
        return {spec}
    return set().union(*(_spec_names(sub) for sub in spec or ()))


#: the distributions that take constructor arguments (``action_distribution_kwargs``)
_TAKES_ARGUMENTS = ("beta", "tanh_normal", "gumbel_softmax")


def _make_component(space: spaces.Space, spec: DistributionSpec, kwargs: dict[str, dict[str, Any]]) -> CherryDistribution:
    if isinstance(space, spaces.Tuple):
        assert isinstance(spec, tuple)
        return TupleDistribution([_make_component(sub, s, kwargs) for sub, s in zip(space.spaces, spec, strict=True)])
    assert isinstance(spec, str)
    extra = kwargs.get(spec, {})
    if isinstance(space, spaces.Box):
        cls = {"normal": NormalDistribution, "beta": BetaDistribution, "tanh_normal": TanhNormalDistribution}[spec]
        return cls(space, **extra)  # type: ignore[abstract]
    if isinstance(space, spaces.Discrete):
        if spec == "gumbel_softmax":
            return GumbelSoftmaxDistribution(space, **extra)
        return CategoricalDistribution(space)
    if isinstance(space, spaces.MultiDiscrete):
        return MultiCategoricalDistribution(space)
    assert isinstance(space, spaces.MultiBinary)
    return BernoulliDistribution(space)


def _shifted(space: spaces.Space) -> bool:
    """A Discrete / MultiDiscrete space whose values do not start at 0."""
    return isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)) and bool(np.any(np.asarray(space.start) != 0))


def make_distribution(
    action_space: spaces.Space,
    spec: DistributionSpec = None,
    distribution_kwargs: dict[str, dict[str, Any]] | None = None,
    use_sde: bool = False,
    dist_kwargs: dict[str, Any] | None = None,
) -> Distribution:
    """
    Build the action distribution for ``action_space``.

    The SB3 default pairings (``"normal"`` on Box, ``"categorical"`` on Discrete, ``"multi_categorical"`` on
    MultiDiscrete, ``"bernoulli"`` on MultiBinary) return SB3's own classes (gSDE included), so results match SB3
    exactly; every other pairing, every Tuple space and every Discrete / MultiDiscrete space with a non-zero ``start``
    (which SB3's classes ignore) returns a :class:`CherryDistribution`.

    :param action_space: the action space
    :param spec: distribution name, or a sequence of specs for a Tuple space (see :func:`resolve_spec`)
    :param distribution_kwargs: extra constructor arguments per distribution name,
        e.g. ``{"gumbel_softmax": {"temperature": 0.5}, "beta": {"epsilon": 1e-5}}``; a name the spec does not use
        raises a ValueError (the arguments would be silently ignored)
    :param use_sde: use gSDE (only with ``"normal"`` on a Box space)
    :param dist_kwargs: SB3 gSDE arguments
    :return: the distribution
    """
    resolved = resolve_spec(action_space, spec)
    if isinstance(action_space, spaces.MultiDiscrete) and action_space.nvec.ndim > 1:
        raise ValueError(
            f"A MultiDiscrete action space with a multi-dimensional nvec (shape {action_space.nvec.shape}) is supported "
            "only as a component of a Tuple action space (SB3's rollout buffers and policies store len(nvec) actions): "
            "use spaces.Tuple((space,)), or a 1-D MultiDiscrete(nvec.flatten()) reshaped by an ActionWrapper."
        )
    if distribution_kwargs is not None and not (
        isinstance(distribution_kwargs, dict) and all(isinstance(v, dict) for v in distribution_kwargs.values())
    ):
        raise ValueError(
            "action_distribution_kwargs must map distribution names to dicts of arguments, e.g. "
            f"{{'beta': {{'epsilon': 1e-5}}}}, got {distribution_kwargs!r}."
        )
    without = sorted(name for name, extra in (distribution_kwargs or {}).items() if extra and name not in _TAKES_ARGUMENTS)
    if without:
        raise ValueError(
            f"action_distribution_kwargs: {without} take no arguments (only {list(_TAKES_ARGUMENTS)} do; a Gaussian's "
            "initial log-std is the policy's log_std_init): remove the entries."
        )
    unused = sorted(set(distribution_kwargs or {}) - _spec_names(resolved))
    if unused:
        raise ValueError(
            f"action_distribution_kwargs has arguments for {unused}, but the policy uses {sorted(_spec_names(resolved))} "
            f"on {action_space}: select that distribution with action_distribution=..., or remove its entry."
        )
    if use_sde and not (isinstance(action_space, spaces.Box) and resolved == "normal"):
        raise ValueError(
            f"use_sde=True is only available with action_distribution='normal' on a Box space, "
            f"got {resolved!r} on {action_space}."
        )
    if resolved == default_distribution(action_space) and not isinstance(action_space, spaces.Tuple):
        if not _shifted(action_space):
            return make_proba_distribution(action_space, use_sde=use_sde, dist_kwargs=dist_kwargs)
        # SB3's classes ignore ``start``: they would send actions 0..n-1 to a space starting elsewhere
    return _make_component(action_space, resolved, distribution_kwargs or {})


def kl_divergence(dist_true: Distribution, dist_pred: Distribution) -> th.Tensor:
    """
    KL(dist_true || dist_pred) for SB3 and sb3_cherry distributions, Tuple distributions included
    (sum over components). Returns shape ``(batch,)`` for sb3_cherry distributions.

    :param dist_true: the p distribution
    :param dist_pred: the q distribution
    :return: the KL divergence
    """
    if dist_true.__class__ != dist_pred.__class__:
        raise ValueError(f"KL divergence needs two distributions of the same type, got {dist_true} and {dist_pred}.")
    if isinstance(dist_true, CherryDistribution):
        return dist_true.kl(dist_pred)  # type: ignore[arg-type]
    return sb3_dist.kl_divergence(dist_true, dist_pred)
