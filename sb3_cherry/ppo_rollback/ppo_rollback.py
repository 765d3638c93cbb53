from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

from sb3_cherry.common.buffers import truncated_weights
from sb3_cherry.common.flat_adam import flat_adam_steps
from sb3_cherry.common.flat_rmsprop import clear_grads
from sb3_cherry.common.on_policy import CherryOnPolicyAlgorithm
from sb3_cherry.common.policies import CherryActorCriticPolicy
from sb3_cherry.common.schedules import CoefficientSchedule
from sb3_cherry.common.speed import (
    GradNormClipper,
    check_compile_update,
    compiled,
    compiled_versions,
    mean_of,
    minibatch_means,
)
from sb3_cherry.ppo_rollback.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_cherry.ppo_rollback.trust_region import (
    ROLLBACKS,
    TRUST_REGIONS,
    TrustRegionUpdate,
    check_trust_region_args,
    resolve_rollback_alpha,
)

SelfPPORollback = TypeVar("SelfPPORollback", bound="PPORollback")


def rollback_surrogate(
    ratio: th.Tensor, advantages: th.Tensor, clip_range: float | th.Tensor, rollback_alpha: float
) -> th.Tensor:
    """
    Per-sample rollback surrogate ``A * f(r)`` of Truly PPO (Wang et al., 2019, eq. 11, "PPO-RB").

    ``f(r) = r`` inside the trust region; outside it, on the side where the clipped PPO objective would be flat,
    ``f`` rolls back with slope ``-alpha``:

    - ``A >= 0`` and ``r > 1 + eps``: ``f(r) = -alpha * r + (1 + alpha) * (1 + eps)``
    - ``A < 0`` and ``r < 1 - eps``: ``f(r) = -alpha * r + (1 + alpha) * (1 - eps)``

    ``alpha = 0`` is computed as SB3 PPO's ``min(r A, clip(r, 1 - eps, 1 + eps) A)``, values and gradients alike
    (``th.min`` shares the gradient between equal sides: a ratio one float past the clip bound whose two products
    round to the same float gets half of each, about 1 sample in 2M); ``alpha > 0`` as the piecewise definition above
    (gradient ``A`` inside, ``-alpha A`` in the rollback region, exactly).

    :param ratio: probability ratios ``pi / pi_old``
    :param advantages: advantages (same shape)
    :param clip_range: ``eps`` (a number, or a scalar tensor in the compiled update)
    :param rollback_alpha: ``alpha`` >= 0
    :return: the surrogate per sample (to be maximised)
    """
    if rollback_alpha == 0:  # SB3 PPO's clipped surrogate, operation for operation
        clipped = th.clamp(ratio, 1 - clip_range, 1 + clip_range)  # type: ignore[arg-type]  # or scalar tensors
        return th.min(advantages * ratio, advantages * clipped)
    positive = advantages >= 0
    # outside the trust region on the side where clipped PPO is flat, and the rollback line's intercept there
    outside = th.where(positive, ratio > 1.0 + clip_range, ratio < 1.0 - clip_range)
    if isinstance(clip_range, th.Tensor):  # the compiled update's (a float64 scalar tensor: no recompilation)
        upper = ((1.0 + rollback_alpha) * (1.0 + clip_range)).to(ratio.dtype)
        intercept = th.where(positive, upper, ((1.0 + rollback_alpha) * (1.0 - clip_range)).to(ratio.dtype))
    else:
        upper = ratio.new_tensor((1.0 + rollback_alpha) * (1.0 + clip_range))  # in the ratio's dtype
        intercept = th.where(positive, upper, (1.0 + rollback_alpha) * (1.0 - clip_range))
    return advantages * th.where(outside, -rollback_alpha * ratio + intercept, ratio)


def check_clip_ranges(clip_range: Any, clip_range_vf: Any) -> None:
    """
    Refuse a clip range that is a number <= 0 (or NaN): ``clamp(r, 1 + eps, 1 - eps)`` with ``eps < 0`` clips every
    ratio and trains nonsense, and SB3 asserts on a negative ``clip_range_vf`` (rl-zoo's old "no clipping" value).
    Schedules and None pass.

    :param clip_range: the policy's clip range
    :param clip_range_vf: the value function's clip range
    :raises ValueError: naming the parameter and the fix
    """
    for name, value in (("clip_range", clip_range), ("clip_range_vf", clip_range_vf)):
        if isinstance(value, int | float) and not isinstance(value, bool) and not value > 0:
            hint = " (None: no value clipping)" if name == "clip_range_vf" else ""
            raise ValueError(f"{name}={value!r} must be a number > 0 or a schedule{hint}.")


def rollback_mask(ratio: th.Tensor, advantages: th.Tensor, clip_range: float) -> th.Tensor:
    """
    Samples in the rollback region (where plain PPO's gradient would vanish).

    :param ratio: probability ratios
    :param advantages: advantages
    :param clip_range: ``eps``
    :return: boolean mask
    """
    positive = advantages >= 0
    return (positive & (ratio > 1.0 + clip_range)) | (~positive & (ratio < 1.0 - clip_range))


def _ratio(log_prob: th.Tensor, old_log_prob: th.Tensor, mask: th.Tensor | None) -> th.Tensor:
    """
    ``pi / pi_old``; 1 at the padded steps of recurrent sequences (``mask`` False).

    The padded steps (observation, action and old log-prob 0) are masked out of every loss, but an overflowed ratio
    there (``log pi(0) > 88`` for a narrow Gaussian over many action dimensions) turned their zero gradient into
    ``0 * inf = NaN``; the real steps' values and gradients are unchanged.
    """
    log_ratio = log_prob - old_log_prob
    if mask is not None:
        log_ratio = th.where(mask, log_ratio, th.zeros_like(log_ratio))
    return th.exp(log_ratio)


def _masked_mean(x: th.Tensor, mask: th.Tensor | None) -> th.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is True (all entries if ``mask`` is None)."""
    return th.mean(x) if mask is None else th.mean(x[mask])


def _logged_fractions(samples: list[tuple[th.Tensor, th.Tensor, th.Tensor | None]], clip_range: float) -> tuple[float, float]:
    """
    Mean over minibatches of the fraction of samples outside the trust region (``clip_fraction``) and in the
    rollback region (``rollback_fraction``), computed once for the whole update.

    :param samples: ``(ratio, advantages, mask)`` of each minibatch
    :param clip_range: ``eps``
    :return: clip fraction and rollback fraction
    """
    if not samples:
        return float("nan"), float("nan")
    ratio = th.cat([s[0] for s in samples])
    advantages = th.cat([s[1] for s in samples])
    masks = [s[2] for s in samples]
    sizes = [len(s[0]) for s in samples]
    clipped = minibatch_means((th.abs(ratio - 1) > clip_range).float(), sizes, masks).mean()
    rolled_back = minibatch_means(rollback_mask(ratio, advantages, clip_range).float(), sizes, masks).mean()
    return clipped.item(), rolled_back.item()


def _record_fractions(
    logger: Any,
    samples: list[tuple[th.Tensor, th.Tensor, th.Tensor | None]],
    clip_range: float,
    trust: TrustRegionUpdate | None,
) -> None:
    """
    Record ``train/clip_fraction`` and, for PPO's ratio trust region, ``train/rollback_fraction``; with the KL trust
    region the samples rolled back are those of its trigger (``train/trust_region_fraction``, with the KL statistics).

    :param logger: the algorithm's logger
    :param samples: ``(ratio, advantages, mask)`` of each minibatch
    :param clip_range: ``eps``
    :param trust: the update's :class:`TrustRegionUpdate` (None: PPO's ratio trust region)
    """
    clip_fraction, rollback_fraction = _logged_fractions(samples, clip_range)
    logger.record("train/clip_fraction", clip_fraction)
    if trust is None:
        logger.record("train/rollback_fraction", rollback_fraction)
    TrustRegionUpdate.log(trust, logger)


def _normalized_advantages(advantages: th.Tensor, mask: th.Tensor | None) -> th.Tensor:
    """Advantages standardised over the minibatch (over its real samples when ``mask`` is given)."""
    if mask is not None:
        # as below, a single real sample is left as it is (its std is NaN; sb3-contrib's RecurrentPPO would train on NaN)
        if int(mask.sum()) > 1:
            return (advantages - advantages[mask].mean()) / (advantages[mask].std() + 1e-8)
        return advantages
    # Normalization does not make sense if mini batchsize == 1, see GH issue #325
    if len(advantages) > 1:
        return (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    return advantages


def _eager_loss_terms(
    model: Any,
    evaluate: Callable[[Any, th.Tensor], tuple[th.Tensor, th.Tensor, Any, Any]],
    trust: TrustRegionUpdate | None,
    epoch: int,
    rollout_data: Any,
    actions: th.Tensor,
    coefficients: tuple[float, float | None, float],
) -> tuple[tuple[th.Tensor, ...], th.Tensor | None]:
    """
    The loss of one minibatch as SB3's ``PPO.train`` computes it, with the rollback (or KL-triggered) surrogate, the
    padding mask of recurrent sequences and the async weights (the terms :func:`minibatch_loss_terms` returns).

    :param model: the algorithm
    :param evaluate: see :func:`rollback_train`
    :param trust: the update's KL trust region (None: PPO's ratio trust region)
    :param epoch: the epoch (for the trust region)
    :param rollout_data: the minibatch
    :param actions: its actions (long indices for a Discrete space)
    :param coefficients: the update's ``clip_range``, ``clip_range_vf`` and ``ent_coef``
    :return: (loss, policy loss, value loss, entropy loss, ratio, advantages used, log-probabilities), and the mask
    """
    clip_range, clip_range_vf, ent_coef = coefficients
    values, log_prob, entropy, mask = evaluate(rollout_data, actions)
    values = values.flatten()
    # Normalize advantage
    advantages = (
        _normalized_advantages(rollout_data.advantages, mask) if model.normalize_advantage else rollout_data.advantages
    )

    # ratio between old and new policy, should be one at the first iteration
    ratio = _ratio(log_prob, rollout_data.old_log_prob, mask)

    # rollback surrogate loss (clipped PPO when rollback_alpha == 0), or the KL-triggered one
    surrogate = (
        rollback_surrogate(ratio, advantages, clip_range, model.rollback_alpha)
        if trust is None
        else trust.surrogate(model, epoch, rollout_data, ratio, advantages, mask)
    )
    if hasattr(rollout_data, "weights"):
        # re-centred async rollout: decoupled PPO's weight pi_prox / mu per sample, applied after the
        # advantage normalisation, with the whole ratio pi / mu capped at imp_samp_max (Hilton et al. 2021;
        # openai/ppo-ewma compute_losses)
        surrogate = truncated_weights(rollout_data.weights, model.imp_samp_max, ratio) * surrogate
    policy_loss = -_masked_mean(surrogate, mask)

    if model.clip_range_vf is None:
        # No clipping
        values_pred = values
    else:
        # Clip the difference between old and new value (a re-centred async rollout's old_values are the
        # proximal critic's, as its old_log_prob are the proximal policy's)
        # NOTE: this depends on the reward scaling
        delta = values - rollout_data.old_values
        values_pred = rollout_data.old_values + th.clamp(delta, -clip_range_vf, clip_range_vf)  # type: ignore[operator]
    # Value loss using the returns estimator's targets
    if mask is None:
        value_loss = F.mse_loss(rollout_data.returns, values_pred)
    else:
        value_loss = _masked_mean((rollout_data.returns - values_pred) ** 2, mask)

    # Entropy loss favor exploration
    if entropy is None:
        # Approximate entropy when no analytical form
        entropy_loss = -_masked_mean(-log_prob, mask)
    else:
        entropy_loss = -_masked_mean(entropy, mask)

    loss = policy_loss + ent_coef * entropy_loss + model.vf_coef * value_loss
    return (loss, policy_loss, value_loss, entropy_loss, ratio, advantages, log_prob), mask


def minibatch_loss_terms(
    policy: Any,
    observations: Any,
    actions: th.Tensor,
    old_log_prob: th.Tensor,
    advantages: th.Tensor,
    returns: th.Tensor,
    old_values: th.Tensor,
    clip_range: th.Tensor,
    clip_range_vf: th.Tensor | None,
    ent_coef: th.Tensor,
    vf_coef: float,
    rollback_alpha: float,
    normalize_advantage: bool,
) -> tuple[th.Tensor, ...]:
    """
    PPORollback's loss on one minibatch (PPO's ratio trust region, no padding mask, no async weights): the function
    that ``compile_update=True`` hands to ``torch.compile``. The same operations as :func:`rollback_train`'s eager
    path; compiled, TorchInductor fuses them (and their backward) into generated kernels, so the floats differ from
    the eager update's in the last bits.

    :param policy: the actor-critic (its ``evaluate_actions``)
    :param observations: the minibatch's observations
    :param actions: its actions (long indices for a Discrete space)
    :param old_log_prob: the collecting policy's log-probabilities
    :param advantages: the advantages (normalised here when ``normalize_advantage``)
    :param returns: the critic's targets
    :param old_values: the collecting critic's values (for ``clip_range_vf``)
    :param clip_range: ``eps`` (scalar tensor)
    :param clip_range_vf: the value clip range (scalar tensor), or None
    :param ent_coef: the entropy coefficient (scalar tensor)
    :param vf_coef: the value loss coefficient
    :param rollback_alpha: the rollback slope
    :param normalize_advantage: standardise the advantages over the minibatch
    :return: loss, policy loss, value loss, entropy loss, ratio, advantages used, log-probabilities
    """
    values, log_prob, entropy = policy.evaluate_actions(observations, actions)
    values = values.flatten()
    if normalize_advantage:
        advantages = _normalized_advantages(advantages, None)
    ratio = _ratio(log_prob, old_log_prob, None)
    policy_loss = -th.mean(rollback_surrogate(ratio, advantages, clip_range, rollback_alpha))
    if clip_range_vf is not None:
        values = old_values + th.clamp(values - old_values, -clip_range_vf, clip_range_vf)
    value_loss = F.mse_loss(returns, values)
    # (approximate entropy when no analytical form)
    entropy_loss = th.mean(log_prob) if entropy is None else -th.mean(entropy)
    # (the coefficient in the loss's dtype first, as a Python number would be)
    loss = policy_loss + ent_coef.to(entropy_loss.dtype) * entropy_loss + vf_coef * value_loss
    return loss, policy_loss, value_loss, entropy_loss, ratio, advantages, log_prob


def compiled_loss_terms(model: Any, trust: "TrustRegionUpdate | None") -> Callable[..., tuple[th.Tensor, ...]]:
    """
    The compiled :func:`minibatch_loss_terms` (``compile_update=True``).

    :param model: the algorithm
    :param trust: the update's KL trust region (None: PPO's ratio trust region)
    :return: the compiled function
    :raises ValueError: with the KL trust region or async collection
    """
    check_compile_update(True, getattr(model, "collection", "sync"), "ratio" if trust is None else "kl")
    return compiled(minibatch_loss_terms, "compile_update=True")


def rollback_train(
    model: Any,
    evaluate: Callable[[Any, th.Tensor], tuple[th.Tensor, th.Tensor, Any, Any]],
    old_distribution: Callable[[Any, Any], Any] | None = None,
    compile_update: bool = False,
) -> None:
    """
    One PPO update (``n_epochs`` passes over the rollout buffer) with the rollback surrogate: SB3's ``PPO.train`` with
    ``rollback_surrogate`` in place of the clipped objective, shared by :class:`PPORollback` and
    ``RecurrentPPORollback`` (whose padded sequence steps are masked out, as in sb3-contrib's ``RecurrentPPO.train``).

    :param model: the algorithm (PPO hyperparameters, ``rollback_alpha``, ``policy``, ``rollout_buffer``, ``logger``)
    :param evaluate: ``evaluate(rollout_data, actions) -> (values, log_prob, entropy, mask)``; ``mask`` is None, or a
        boolean tensor of the real (not padded) samples; it leaves the current policy's distribution on the minibatch
        in ``model.policy.action_dist`` (as SB3's and contrib's ``evaluate_actions`` do)
    :param old_distribution: ``old_distribution(policy, rollout_data)``: ``policy``'s distribution on the minibatch's
        states; needed with ``trust_region="kl"`` (applied to a frozen copy of the policy taken before the first step,
        see :class:`~sb3_cherry.ppo_rollback.trust_region.TrustRegionUpdate`)
    :param compile_update: compute each minibatch's loss with the compiled :func:`minibatch_loss_terms` (PPORollback's
        opt-in switch; ``evaluate`` is then not called: its policy's ``evaluate_actions`` must take the minibatch's
        observations and actions only)
    """
    # Switch to train mode (this affects batch norm / dropout)
    model.policy.set_training_mode(True)
    # Update optimizer learning rate
    model._update_learning_rate(model.policy.optimizer)
    # Compute current clip range
    clip_range = model.clip_range(model._current_progress_remaining)
    # Optional: clip range for the value function
    clip_range_vf = None if model.clip_range_vf is None else model.clip_range_vf(model._current_progress_remaining)
    # entropy coefficient of this update (a constant, or its schedule's value)
    ent_coef = model._current_ent_coef()

    entropy_losses = []
    pg_losses, value_losses = [], []
    # (ratio, advantages, mask) per minibatch: clip / rollback fractions computed once, after the update
    logged_samples: list[tuple[th.Tensor, th.Tensor, th.Tensor | None]] = []

    # KL trust region (TR-PPO, TR-PPO-RB, Truly PPO), None for PPO's: pi_old frozen before the first gradient step
    trust = TrustRegionUpdate.start(model, old_distribution)

    continue_training = True
    # clip_grad_norm_(policy.parameters()) on the parameter list of this update (no module-tree walk per minibatch)
    clip_grad_norm = GradNormClipper(model.policy.parameters())
    # opt-in compiled loss (compile_update), with the update's coefficients as scalar tensors (no recompilation when
    # a schedule changes them)
    compiled_terms = compiled_loss_terms(model, trust) if compile_update else None
    compiled_coefficients = (
        ()
        if compiled_terms is None
        else (
            th.tensor(clip_range, dtype=th.float64, device=model.device),
            None if model.clip_range_vf is None else th.tensor(clip_range_vf, dtype=th.float64, device=model.device),
            th.tensor(ent_coef, dtype=th.float64, device=model.device),
            float(model.vf_coef),
            float(model.rollback_alpha),
            bool(model.normalize_advantage),
        )
    )
    # Adam steps on one flat tensor per parameter group where that is exact (same floats, fewer kernels)
    with flat_adam_steps(model.policy.optimizer) as optimizer_step, compiled_versions(compiled_terms is not None):
        # train for n_epochs epochs
        for epoch in range(model.n_epochs):
            if epoch > 0:
                model._recompute_returns()
            approx_kl_divs = []
            # Do a complete pass on the rollout buffer
            for rollout_data in model.rollout_buffer.get(model.batch_size):
                actions = rollout_data.actions
                if isinstance(model.action_space, spaces.Discrete):
                    # Convert discrete action from float to long
                    actions = rollout_data.actions.long().flatten()

                if compiled_terms is not None:
                    # opt-in: the whole loss as one compiled graph (forward and backward); PPO's ratio trust region only
                    terms = compiled_terms(
                        model.policy,
                        rollout_data.observations,
                        actions,
                        rollout_data.old_log_prob,
                        rollout_data.advantages,
                        rollout_data.returns,
                        rollout_data.old_values,
                        *compiled_coefficients,
                    )
                    mask = None
                else:
                    terms, mask = _eager_loss_terms(
                        model, evaluate, trust, epoch, rollout_data, actions, (clip_range, clip_range_vf, ent_coef)
                    )
                loss, policy_loss, value_loss, entropy_loss, ratio, advantages, log_prob = terms
                # log values stay tensors until the end of the update (no host transfer per minibatch)
                pg_losses.append(policy_loss.detach())
                logged_samples.append((ratio.detach(), advantages.detach(), mask))
                value_losses.append(value_loss.detach())
                entropy_losses.append(entropy_loss.detach())

                # Calculate approximate form of reverse KL Divergence for early stopping
                # see SB3 issue #417 and http://joschu.net/blog/kl-approx.html
                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = _masked_mean((th.exp(log_ratio) - 1) - log_ratio, mask)
                    approx_kl_divs.append(approx_kl_div)

                # compared as SB3 does (a float32 array against a Python float: in float32 under NumPy 2), so that the
                # early stop falls on the same minibatch when approx_kl is within float32 rounding of 1.5 * target_kl
                if model.target_kl is not None and approx_kl_div.cpu().numpy() > 1.5 * model.target_kl:
                    continue_training = False
                    if model.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                # Optimization step (zero_grad's set_to_none, without its profiler scope)
                clear_grads(model.policy.optimizer)
                loss.backward()
                # Clip grad norm
                clip_grad_norm(model.max_grad_norm)
                optimizer_step()

            model._n_updates += 1
            if not continue_training:
                break

    explained_var = explained_variance(model.rollout_buffer.values.flatten(), model.rollout_buffer.returns.flatten())

    # Logs
    model.logger.record("train/entropy_loss", mean_of(entropy_losses))
    model.logger.record("train/policy_gradient_loss", mean_of(pg_losses))
    model.logger.record("train/value_loss", mean_of(value_losses))
    model.logger.record("train/approx_kl", mean_of(approx_kl_divs))
    _record_fractions(model.logger, logged_samples, clip_range, trust)
    model.logger.record("train/loss", loss.item())
    model.logger.record("train/explained_variance", explained_var)
    if hasattr(model.policy, "log_std"):
        model.logger.record("train/std", th.exp(model.policy.log_std).mean().item())

    model.logger.record("train/n_updates", model._n_updates, exclude="tensorboard")
    model.logger.record("train/clip_range", clip_range)
    if model.clip_range_vf is not None:
        model.logger.record("train/clip_range_vf", clip_range_vf)


class PPORollback(PPO, CherryOnPolicyAlgorithm):
    """
    Proximal Policy Optimization with the rollback surrogate (Truly PPO, "PPO-RB"), sb3_cherry's action
    distributions (Beta, tanh-Normal, Gumbel-Softmax, Tuple action spaces) and returns estimators
    (GAE, 1-step, n-step, V-trace).

    Paper: https://arxiv.org/abs/1903.07940 (Truly PPO), https://arxiv.org/abs/1707.06347 (PPO),
    https://arxiv.org/abs/1802.01561 (IMPALA / V-trace)
    Code: Stable-Baselines3's PPO (https://github.com/DLR-RM/stable-baselines3), cherry_rl

    With ``rollback_alpha=0``, the default estimator and default distributions, this is SB3's PPO exactly.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy, ...)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
        (i.e. rollout buffer size is n_steps * n_envs where n_envs is number of environment copies running in parallel)
    :param batch_size: Minibatch size
    :param n_epochs: Number of epoch when optimizing the surrogate loss
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for GAE (and the trace coefficient of V-trace)
    :param clip_range: Trust region ``eps``, it can be a function of the current progress remaining (from 1 to 0).
    :param clip_range_vf: Clipping parameter for the value function, it can be a function of the current progress
        remaining (from 1 to 0). None (default): no clipping. IMPORTANT: this clipping depends on the reward scaling.
    :param normalize_advantage: Whether to normalize or not the advantage
    :param ent_coef: Entropy coefficient for the loss calculation: a number, or a schedule of it (an SB3 schedule of
        ``progress_remaining``, rl_zoo3's ``"lin_<value>"``, or ``{"start": ..., "end": 0.0, "end_fraction": ...}``
        for a linear decay over the first ``end_fraction`` of the run, see
        :func:`~sb3_cherry.common.schedules.coefficient_schedule`); logged as ``train/ent_coef``
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE) (``"normal"`` distribution only)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, a ``CherryRolloutBuffer`` (or its Dict
        variant) carrying the returns estimator.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param target_kl: Limit the KL divergence between updates (early stopping). By default, no limit.
    :param rollback_alpha: Slope ``alpha`` of the rollback outside the trust region (0: plain clipped PPO).
        With ``trust_region="kl"``: the ratio-rollback slope (0: TR-PPO) or, with ``rollback="kl"``, the weight of the
        KL penalty. None (default): the Truly PPO authors' MuJoCo value for the method, 0.3 (PPO-RB), 0.05
        (TR-PPO-RB) or 5 (Truly PPO)
    :param trust_region: ``"ratio"`` (default): PPO's trust region ``|r - 1| <= clip_range`` with the rollback
        surrogate (PPO-RB; clipped PPO when ``rollback_alpha=0``). ``"kl"``: the trust region of Truly PPO, triggered
        where the exact per-state ``KL(pi_old(.|s) || pi(.|s)) >= kl_threshold`` and ``r * A > A``
        (:func:`~sb3_cherry.ppo_rollback.trust_region_surrogate`; ``clip_range`` then only serves the logged
        ``clip_fraction``); logs ``train/kl_mean``, ``train/kl_max`` and ``train/trust_region_fraction``
    :param kl_threshold: ``delta`` of the KL trust region (the authors use 0.03 on MuJoCo, 0.035 for TR-PPO)
    :param rollback: with ``trust_region="kl"``: ``"ratio"`` (TR-PPO-RB: slope ``-rollback_alpha`` on the ratio where
        triggered) or ``"kl"`` (Truly PPO: ``r * A - rollback_alpha * KL`` where triggered)
    :param returns_estimator: ``"gae"`` (default), ``"one_step"``, ``"n_step"`` or ``"vtrace"``
    :param n_step: horizon of the ``"n_step"`` estimator
    :param rho_bar: V-trace truncation level of the importance weights in the TD errors
    :param c_bar: V-trace truncation level of the traces
    :param recompute_returns: recompute values, returns and advantages with the current networks before every epoch
        after the first (as cherry_rl does; also the critic's value SB3 adds to the reward of a time-limit truncation;
        with V-trace, the ratios current / collecting policy correct the critic's
        targets for the drift, and the surrogate takes the advantages without ``rho``: PPO's ratio already is the
        importance weight)
    :param collection: ``"sync"`` (collect, then train, as SB3) or ``"async"``: the updates run in a learner process
        while the next rollout is collected with the previous weights (behaviour policy one update old; see
        :mod:`sb3_cherry.common.async_learner`)
    :param imp_samp_max: ``collection="async"`` only: truncation level of decoupled PPO's importance ratio ``pi / mu``
        (per-sample weights ``w = min(pi_prox / mu, imp_samp_max * pi_prox / pi)``, which multiply the surrogate after
        advantage normalisation)
        (100, as in Hilton et al.'s code; ``float("inf")`` for no truncation). Independent of V-trace's ``rho_bar``.
    :param compile_update: opt-in, not bit-exact: compute each minibatch's loss (networks, log-probabilities,
        entropy, surrogate, value loss) as one ``torch.compile`` graph, forward and backward (TorchInductor's generated
        kernels; needs a C++ compiler). Faster updates on small networks (``benchmarks/results/compile_ab.md``), a few
        seconds of compilation at the first update, floats that differ from SB3's in the last bits. PPO's ratio
        trust region with ``collection="sync"`` only
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation, e.g.
        ``dict(action_distribution="beta")``
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    #: class default: models saved before the argument existed load without it
    compile_update: bool = False

    config_choices: ClassVar[dict[str, tuple[str, ...]]] = {
        **CherryOnPolicyAlgorithm.config_choices,
        "trust_region": TRUST_REGIONS,
        "rollback": ROLLBACKS,
    }

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }

    def __init__(
        self,
        policy: str | type[CherryActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: CoefficientSchedule = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
        rollback_alpha: float | None = None,
        trust_region: str = "ratio",
        kl_threshold: float = 0.03,
        rollback: str = "ratio",
        returns_estimator: str = "gae",
        n_step: int = 5,
        rho_bar: float = 1.0,
        c_bar: float = 1.0,
        recompute_returns: bool = False,
        collection: str = "sync",
        imp_samp_max: float = 100.0,
        compile_update: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,  # type: ignore[arg-type]  # or its schedule: read through _current_ent_coef
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        check_clip_ranges(clip_range, clip_range_vf)
        check_trust_region_args(trust_region, kl_threshold, rollback)
        self.rollback_alpha = resolve_rollback_alpha(rollback_alpha, trust_region, rollback)
        self.trust_region, self.kl_threshold, self.rollback = trust_region, float(kl_threshold), rollback
        self._init_estimator(returns_estimator, n_step, rho_bar, c_bar, recompute_returns)

        self._init_collection(collection, imp_samp_max)
        self.compile_update = check_compile_update(compile_update, collection, trust_region)

        if _init_setup_model:
            self._setup_model()

    def train(self) -> None:
        """
        Update policy using the currently gathered rollout buffer (SB3's PPO update with the rollback surrogate).
        """

        def evaluate(rollout_data: Any, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None, None]:
            values, log_prob, entropy = self.policy.evaluate_actions(rollout_data.observations, actions)
            return values, log_prob, entropy, None

        rollback_train(
            self,
            evaluate,
            old_distribution=lambda policy, data: policy.get_distribution(data.observations),
            compile_update=self.compile_update,
        )

    def learn(
        self: SelfPPORollback,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "PPORollback",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPPORollback:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
