"""
The trust-region methods of Truly PPO (Wang, He, Tan, "Truly Proximal Policy Optimization", UAI 2019,
https://arxiv.org/abs/1903.07940, sec. 5): the per-sample objective triggers on the per-state KL divergence
``KL(pi_old(.|s) || pi(.|s))`` instead of the probability ratio.

Reference code: github.com/wangyuhuix/TrulyPPO, ``baselines/ppo2_AdaClip/ppo2.py`` (cliptypes ``kl``,
``kl_ratiorollback``, ``kl_klrollback_constant_withratio``) and its MuJoCo defaults in ``baselines/ppo2_AdaClip/run.py``.
"""

import math
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import BasePolicy

from sb3_cherry.common.kl import per_state_kl

# the frozen copy of each policy, reused from one update to the next (rebuilt only if the policy object changes)
_FROZEN: "weakref.WeakKeyDictionary[BasePolicy, BasePolicy]" = weakref.WeakKeyDictionary()

TRUST_REGIONS = ("ratio", "kl")
ROLLBACKS = ("ratio", "kl")

#: the ``rollback_alpha`` a method gets when none is given: the Truly PPO authors' MuJoCo values for PPO-RB (paper,
#: 0.3), TR-PPO-RB (``run.py``: 0.05, a slope on the ratio) and Truly PPO (``run.py``: 5, the weight of the KL penalty)
DEFAULT_ROLLBACK_ALPHA = {("ratio", "ratio"): 0.3, ("kl", "ratio"): 0.05, ("kl", "kl"): 5.0}


def check_trust_region_args(trust_region: str, kl_threshold: float, rollback: str) -> None:
    """
    Validate the trust-region arguments of :class:`~sb3_cherry.PPORollback`.

    :param trust_region: ``"ratio"`` or ``"kl"``
    :param kl_threshold: ``delta`` > 0
    :param rollback: ``"ratio"`` or ``"kl"``
    :raises ValueError: naming the bad argument and the accepted values
    """
    if trust_region not in TRUST_REGIONS:
        raise ValueError(f"Unknown trust_region={trust_region!r}: choose one of {list(TRUST_REGIONS)}.")
    if rollback not in ROLLBACKS:
        raise ValueError(f"Unknown rollback={rollback!r}: choose one of {list(ROLLBACKS)}.")
    if trust_region == "ratio" and rollback != "ratio":
        raise ValueError(
            f"rollback={rollback!r} needs trust_region='kl' (the KL rollback of Truly PPO); with trust_region='ratio' "
            "the rollback is on the ratio (PPO-RB): leave rollback='ratio'."
        )
    if not (math.isfinite(kl_threshold) and kl_threshold > 0):
        raise ValueError(
            f"kl_threshold must be a finite number > 0 (the Truly PPO authors use 0.03 on MuJoCo), got {kl_threshold}."
        )


def resolve_rollback_alpha(rollback_alpha: float | None, trust_region: str, rollback: str) -> float:
    """
    Validate ``rollback_alpha``, or pick the method's default (:data:`DEFAULT_ROLLBACK_ALPHA`) when it is None: its
    meaning depends on the method (a slope on the ratio for PPO-RB and TR-PPO-RB, the weight of a KL penalty for
    Truly PPO), and so does the authors' value (0.3, 0.05, 5).

    :param rollback_alpha: the user's value (>= 0, finite), or None for the method's default
    :param trust_region: ``"ratio"`` or ``"kl"`` (already validated by :func:`check_trust_region_args`)
    :param rollback: ``"ratio"`` or ``"kl"`` (idem)
    :return: the value to train with
    :raises ValueError: for a negative or non-finite value
    """
    if rollback_alpha is None:
        return DEFAULT_ROLLBACK_ALPHA[(trust_region, rollback)]
    if not (math.isfinite(rollback_alpha) and rollback_alpha >= 0):
        raise ValueError(
            f"rollback_alpha must be a finite number >= 0 (0 gives plain clipped PPO, or TR-PPO with trust_region='kl' "
            f"and rollback='ratio'; None takes the Truly PPO authors' value for the method: {DEFAULT_ROLLBACK_ALPHA}), "
            f"got {rollback_alpha}."
        )
    if rollback == "kl" and rollback_alpha == 0:
        raise ValueError(
            "rollback='kl' with rollback_alpha=0 has no trust region at all (Truly PPO's objective r*A - alpha*KL is "
            "then r*A on every sample, unbounded over the epochs). For TR-PPO (no gradient outside the KL region) use "
            f"rollback='ratio' with rollback_alpha=0; for Truly PPO a KL weight > 0 (the authors': "
            f"{DEFAULT_ROLLBACK_ALPHA[('kl', 'kl')]})."
        )
    return float(rollback_alpha)


def trust_region_surrogate(
    ratio: th.Tensor,
    advantages: th.Tensor,
    kl: th.Tensor,
    kl_threshold: float,
    rollback_alpha: float,
    rollback: str = "ratio",
) -> th.Tensor:
    """
    Per-sample objective (to be maximised) of the trust-region methods of Truly PPO.

    With ratio ``r = pi / pi_old``, advantage ``A``, per-state ``k = KL(pi_old(.|s) || pi(.|s))`` and the trigger
    ``T = (k >= delta) and (r * A > A)`` (the policy has left the trust region *and* still moves in the direction
    the advantage rewards):

    - ``rollback="ratio"`` (TR-PPO-RB; TR-PPO when ``alpha = 0``): the value is ``r * A`` everywhere; where ``T`` its
      gradient with respect to ``r`` is ``-alpha * A`` instead of ``A`` (written
      ``A * (-alpha * r + stopgrad((1 + alpha) * r))``, so the objective stays continuous). With ``alpha = 0`` the
      samples where ``T`` holds give no gradient (TR-PPO).
    - ``rollback="kl"`` (Truly PPO): where ``T`` the objective is ``r * A - alpha * k``, with gradients through both
      ``r`` and ``k``; elsewhere ``r * A``. This one jumps by ``-alpha * k`` where the trigger switches on.

    There is no ratio clipping in either (the authors use ``clip_range`` only for the value function).
    These definitions follow the authors' code (``ppo2.py``) wherever it and the paper may differ (only the paper's
    abstract could be retrieved when this was written, so sec. 5 was not compared line by line): the
    trigger is ``r * A > A`` (strict); TR-PPO-RB keeps the value ``r * A`` and only changes the slope (cliptype
    ``kl_ratiorollback``: ``slope * r + stop_gradient((1 - slope) * r)`` with ``slope = -alpha``); Truly PPO keeps the
    full ``r * A`` term next to the KL penalty (cliptype ``kl_klrollback_constant_withratio`` with
    ``slope_likelihood = 1``, ``slope_rollback = -alpha``); TR-PPO is cliptype ``kl`` (``stop_gradient`` where ``T``).
    The authors' MuJoCo defaults (``run.py``): TR-PPO ``delta = 0.035``; TR-PPO-RB ``delta = 0.03, alpha = 0.05``;
    Truly PPO ``delta = 0.03, alpha = 5``.

    :param ratio: probability ratios ``pi / pi_old`` per sample, with gradient
    :param advantages: advantages (same shape)
    :param kl: per-state ``KL(pi_old || pi)`` of each sample's state (same shape; with gradient for ``rollback="kl"``)
    :param kl_threshold: ``delta``
    :param rollback_alpha: ``alpha`` >= 0
    :param rollback: ``"ratio"`` or ``"kl"``
    :return: the objective per sample
    """
    triggered = trust_region_mask(ratio, advantages, kl, kl_threshold)
    if rollback == "kl":
        return th.where(triggered, ratio * advantages - rollback_alpha * kl, ratio * advantages)
    if rollback != "ratio":
        raise ValueError(f"Unknown rollback={rollback!r}: choose one of {list(ROLLBACKS)}.")
    rolled = -rollback_alpha * ratio + ((1.0 + rollback_alpha) * ratio).detach()
    return advantages * th.where(triggered, rolled, ratio)


def trust_region_mask(ratio: th.Tensor, advantages: th.Tensor, kl: th.Tensor, kl_threshold: float) -> th.Tensor:
    """
    The trigger ``T = (k >= delta) and (r * A > A)`` of :func:`trust_region_surrogate`.

    :param ratio: probability ratios
    :param advantages: advantages
    :param kl: per-state KL divergences
    :param kl_threshold: ``delta``
    :return: boolean mask
    """
    with th.no_grad():
        return (kl >= kl_threshold) & (ratio * advantages > advantages)


def frozen_copy(policy: BasePolicy) -> BasePolicy:
    """
    A copy of ``policy`` with the same weights and no gradients (built as SB3 rebuilds a saved policy, from its
    constructor parameters and ``state_dict``; a deep copy would fail on the graph tensors a gSDE distribution holds).
    The copy is cached per policy and refreshed on every call; building it does not consume the global torch random
    stream.

    :param policy: the policy
    :return: the frozen copy, in evaluation mode
    """
    frozen = _FROZEN.get(policy)
    if frozen is None:
        # the constructor initialises weights at random: leave the training's random stream untouched
        with th.random.fork_rng(devices=[]):
            frozen = type(policy)(**policy._get_constructor_parameters()).to(policy.device)  # type: ignore[operator]
        frozen.set_training_mode(False)
        frozen.requires_grad_(False)
        _FROZEN[policy] = frozen
    frozen.load_state_dict(policy.state_dict())
    return frozen


class TrustRegionUpdate:
    """
    The KL trust region during one PPO update: a frozen copy of the policy as it is when the update starts
    (``pi_old``: the collecting policy; with ``collection="async"`` the policy the rollout was re-centred on, the same
    one PPO's ratio refers to), the per-state KL of every minibatch and the statistics logged at the end.

    The collecting distribution of a minibatch is recomputed from the frozen copy on the minibatch's observations
    (and recurrent states): exact (same weights, same inputs as at collection) and cheaper than storing the
    parameters of every distribution family in the rollout buffer.

    :param policy: the policy at the start of the update
    :param old_distribution: ``old_distribution(frozen_policy, rollout_data)``: the frozen policy's distribution on
        the minibatch's states (aligned with the samples the ratio is computed on)
    """

    def __init__(self, policy: BasePolicy, old_distribution: Callable[[Any, Any], Distribution]):
        self.old_policy = frozen_copy(policy)
        self.old_distribution = old_distribution
        self.fractions: list[float] = []
        self.epoch = -1
        self.epoch_kls: list[th.Tensor] = []

    @classmethod
    def start(cls, model: Any, old_distribution: Callable[[Any, Any], Distribution] | None) -> "TrustRegionUpdate | None":
        """
        Freeze ``pi_old`` before the first gradient step of an update, if the model uses the KL trust region.

        :param model: the algorithm (``trust_region``, ``policy``)
        :param old_distribution: see :class:`TrustRegionUpdate`
        :return: the trust region of this update, or None with ``trust_region="ratio"``
        """
        if getattr(model, "trust_region", "ratio") != "kl":
            return None
        if old_distribution is None:
            raise ValueError("trust_region='kl' needs rollback_train(..., old_distribution=...)")
        return cls(model.policy, old_distribution)

    def surrogate(
        self,
        model: Any,
        epoch: int,
        rollout_data: Any,
        ratio: th.Tensor,
        advantages: th.Tensor,
        mask: th.Tensor | None,
    ) -> th.Tensor:
        """
        :func:`trust_region_surrogate` of a minibatch, with the exact per-state KL, recording the statistics.
        The current policy's distribution on the minibatch is ``model.policy.action_dist``, which
        ``evaluate_actions`` has just parameterised (SB3's distributions are updated in place).

        :param model: the algorithm (``kl_threshold``, ``rollback_alpha``, ``rollback``, ``policy``)
        :param epoch: the epoch of the update (the statistics logged are those of the last one)
        :param rollout_data: the minibatch
        :param ratio: ``pi / pi_old`` per sample
        :param advantages: the (normalised) advantages
        :param mask: real (not padded) samples, or None
        :return: the objective per sample
        """
        if epoch != self.epoch:
            self.epoch, self.epoch_kls = epoch, []
        # the ratio rollback uses k only in the trigger: no graph through the KL then
        with th.set_grad_enabled(model.rollback == "kl"):
            kl = self.kl(rollout_data, model.policy.action_dist, mask)
        triggered = trust_region_mask(ratio, advantages, kl, model.kl_threshold)
        self.fractions.append((triggered if mask is None else triggered[mask]).float().mean().item())
        return trust_region_surrogate(ratio, advantages, kl, model.kl_threshold, model.rollback_alpha, model.rollback)

    def kl(self, rollout_data: Any, new_distribution: Distribution, mask: th.Tensor | None) -> th.Tensor:
        """
        Per-state ``KL(pi_old || pi)`` of a minibatch, with gradient through ``pi``.

        :param rollout_data: the minibatch
        :param new_distribution: the current policy's distribution on the minibatch (from ``evaluate_actions``)
        :param mask: real (not padded) samples, or None
        :return: shape ``(batch,)``
        """
        with th.no_grad():
            old = self.old_distribution(self.old_policy, rollout_data)
        kl = per_state_kl(old, new_distribution)
        self.epoch_kls.append((kl if mask is None else kl[mask]).detach())
        return kl

    @staticmethod
    def log(trust: "TrustRegionUpdate | None", logger: Any) -> None:
        """
        Record ``train/kl_mean``, ``train/kl_max`` (per-state KL over the samples of the last epoch) and
        ``train/trust_region_fraction`` (fraction of samples where the trigger holds, over all minibatches).

        :param trust: the update's trust region (nothing is logged for None, PPO's ratio trust region)
        :param logger: the algorithm's logger
        """
        if trust is None:
            return
        if trust.epoch_kls:
            kls = th.cat(trust.epoch_kls)
            logger.record("train/kl_mean", kls.mean().item())
            logger.record("train/kl_max", kls.max().item())
        if trust.fractions:
            logger.record("train/trust_region_fraction", float(np.mean(trust.fractions)))
