"""
Exact per-state KL divergence ``KL(p(.|s) || q(.|s))`` between two action distributions of the same kind, one value per
state, for every distribution sb3_cherry's policies use (SB3's and sb3_cherry's), as the trust-region methods of Truly
PPO need it (:func:`sb3_cherry.ppo_rollback.trust_region_surrogate`).

- diagonal Gaussian (SB3's ``DiagGaussianDistribution``, sb3_cherry's ``NormalDistribution``): closed form, summed
  over action dimensions;
- gSDE (SB3's ``StateDependentNoiseDistribution``): the policy is, per state, the diagonal Gaussian
  ``N(mean(s), sigma(s)^2)`` with ``sigma(s)^2 = latent_sde(s)^2 @ exp(log_std)^2`` (the exploration matrix only draws
  the sample), so the KL is that of the two Gaussians; with ``squash_output`` the tanh is invertible and the KL is that
  of the base Gaussians;
- tanh-Normal (sb3_cherry's ``TanhNormalDistribution``, SB3's ``SquashedDiagGaussianDistribution``): the squash (and the
  affine map onto the bounds) is an invertible map applied to both distributions, which leaves the KL unchanged: the KL
  of the base Gaussians;
- Beta on the Box bounds: the affine map is invertible, the KL is that of the two Beta distributions;
- Categorical and Gumbel-Softmax (exact categorical log-probabilities), Bernoulli (summed over the bits),
  MultiCategorical (summed over the sub-actions);
- Tuple: the components are independent given the state, the KL is the sum of the components' KLs.
"""

import torch as th
from stable_baselines3.common import distributions as sb3_dist
from torch.distributions import kl_divergence as th_kl_divergence

from sb3_cherry.common.distributions import CherryDistribution, bernoulli_kl, categorical_kl

# SB3 distributions whose ``.distribution`` is a torch distribution over independent action dimensions (last axis)
_SB3_FACTORISED = (
    sb3_dist.DiagGaussianDistribution,  # includes SquashedDiagGaussianDistribution (KL of the base Normals)
    sb3_dist.StateDependentNoiseDistribution,
)


def per_state_kl(p: sb3_dist.Distribution, q: sb3_dist.Distribution) -> th.Tensor:
    """
    ``KL(p(.|s) || q(.|s))`` per state: the exact divergence between the whole action distributions at each state
    (summed over independent action dimensions and Tuple components), not a sample estimate.

    Both distributions must be of the same class and hold the parameters of the same batch of states
    (``proba_distribution`` called). Gradients flow into both.

    :param p: the first distribution (for Truly PPO: the collecting policy ``pi_old``)
    :param q: the second distribution (the current policy ``pi``)
    :return: shape ``(batch,)``
    :raises TypeError: for two different classes, or a distribution without a closed-form KL here
    """
    if type(p) is not type(q):
        raise TypeError(
            f"per_state_kl needs two distributions of the same class, got {type(p).__name__} and {type(q).__name__}."
        )
    if isinstance(p, CherryDistribution) and isinstance(q, CherryDistribution):
        # sb3_cherry's classes carry their closed forms (Tuple: sum over parts); see their ``kl`` methods
        return p.kl(q)
    if isinstance(p, _SB3_FACTORISED) and isinstance(q, _SB3_FACTORISED):
        kl = th_kl_divergence(p.distribution, q.distribution)
        return kl.reshape(kl.shape[0], -1).sum(dim=1)
    # the discrete ones from logits: torch's KLs are inf where q's probability rounds to 0 or 1 (a Bernoulli logit
    # above 16.6 in float32), where the divergence is tiny
    if isinstance(p, sb3_dist.BernoulliDistribution) and isinstance(q, sb3_dist.BernoulliDistribution):
        kl = bernoulli_kl(p.distribution.logits, q.distribution.logits)
        return kl.reshape(kl.shape[0], -1).sum(dim=1)
    if isinstance(p, sb3_dist.CategoricalDistribution) and isinstance(q, sb3_dist.CategoricalDistribution):
        return categorical_kl(p.distribution.logits, q.distribution.logits)
    if isinstance(p, sb3_dist.MultiCategoricalDistribution) and isinstance(q, sb3_dist.MultiCategoricalDistribution):
        parts = [categorical_kl(a.logits, b.logits) for a, b in zip(p.distribution, q.distribution, strict=True)]
        return th.stack(parts, dim=1).sum(dim=1)
    raise TypeError(
        f"No exact per-state KL for {type(p).__name__}: use one of sb3_cherry's action distributions "
        "(normal, beta, tanh_normal, categorical, gumbel_softmax, bernoulli, multi_categorical, Tuple of them)."
    )
