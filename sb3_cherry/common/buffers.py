"""
Rollout buffers with a choice of returns estimator and flat storage of Tuple actions.

They are SB3's ``RolloutBuffer`` / ``DictRolloutBuffer``; only ``compute_returns_and_advantage`` is overridden
(it dispatches to the pure functions of :mod:`sb3_cherry.common.returns`), plus
:meth:`ReturnsEstimatorMixin.recompute_returns_and_advantage`, which re-evaluates values and log-probabilities with
the current networks (cherry_rl recomputes targets before every epoch), and
:meth:`ReturnsEstimatorMixin.recentre`, which prepares a rollout of an older behaviour policy for decoupled PPO
(its minibatches then carry per-sample importance weights: :class:`WeightedRolloutBufferSamples`).
"""

import math
import numbers
from typing import Any, ClassVar, NamedTuple, cast

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples, RolloutBufferSamples, TensorDict
from stable_baselines3.common.utils import obs_as_tensor

from sb3_cherry.common import returns as returns_lib
from sb3_cherry.common.spaces import flat_action_space
from sb3_cherry.common.speed import StepAddMixin, TensorSamplesMixin

RETURNS_ESTIMATORS = ("gae", "one_step", "n_step", "vtrace")


class WeightedRolloutBufferSamples(NamedTuple):
    """
    SB3's ``RolloutBufferSamples`` plus ``weights``: the per-sample importance weights ``pi_prox / mu`` of a re-centred
    rollout (decoupled PPO), which the trainers truncate (``imp_samp_max``) and multiply into the per-sample
    surrogate after advantage normalisation.
    """

    observations: th.Tensor
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    weights: th.Tensor


class WeightedDictRolloutBufferSamples(NamedTuple):
    """SB3's ``DictRolloutBufferSamples`` plus the per-sample ``weights`` (see :class:`WeightedRolloutBufferSamples`)."""

    observations: TensorDict
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    weights: th.Tensor


def truncated_weights(weights: th.Tensor, imp_samp_max: float, ratio: th.Tensor | None = None) -> th.Tensor:
    """
    Decoupled PPO's truncated importance weights, as openai/ppo-ewma's ``compute_losses`` applies them: the whole
    ratio ``pi / mu = r * pi_prox / mu`` (``r = pi / pi_prox``, PPO's ratio) is capped at ``imp_samp_max`` by
    replacing ``mu`` with ``mu_adj = max(mu, pi / imp_samp_max)`` (``pi`` without gradient), so the weight of the
    per-sample surrogate is ``pi_prox / mu_adj = min(pi_prox / mu, imp_samp_max / r)``. Where the cap binds, the
    surrogate ``w * r * A`` is worth ``imp_samp_max * A`` with the gradient ``imp_samp_max * A * grad log pi``.

    :param weights: ``pi_prox / mu`` per sample (at most the largest float32: :meth:`~ReturnsEstimatorMixin.recentre`)
    :param imp_samp_max: the cap (``inf``: none)
    :param ratio: PPO's ratio ``r`` of the samples (its gradient is not followed); None for ``r = 1`` (A2C's single
        step from ``pi_prox``)
    :return: the truncated weights
    """
    if ratio is None:
        return weights.clamp(max=imp_samp_max)
    return th.minimum(weights, imp_samp_max / ratio.detach())


def check_imp_samp_max(imp_samp_max: float) -> float:
    """
    Validate the truncation level of decoupled PPO's importance weights.

    :param imp_samp_max: truncation level of ``pi_prox / mu`` (``> 0``; ``float("inf")`` for no truncation)
    :return: the value as a float
    :raises ValueError: if it is not > 0
    """
    if not float(imp_samp_max) > 0:
        raise ValueError(
            f"imp_samp_max must be > 0 (the truncation of the importance weights pi_prox / mu of collection='async'; "
            f"100 as in Hilton et al.'s code, inf for none), got {imp_samp_max}."
        )
    return float(imp_samp_max)


def check_estimator_args(returns_estimator: str, n_step: int, rho_bar: float, c_bar: float) -> None:
    """
    Validate the returns estimator arguments.

    :param returns_estimator: one of ``RETURNS_ESTIMATORS``
    :param n_step: horizon of the n-step estimator
    :param rho_bar: V-trace truncation of the importance weights in the TD errors
    :param c_bar: V-trace truncation of the traces
    :raises ValueError: naming the bad argument
    """
    if returns_estimator not in RETURNS_ESTIMATORS:
        raise ValueError(f"Unknown returns_estimator={returns_estimator!r}: choose one of {list(RETURNS_ESTIMATORS)}.")
    integral = isinstance(n_step, numbers.Integral) or (isinstance(n_step, numbers.Real) and float(n_step).is_integer())
    if isinstance(n_step, bool) or not integral or n_step < 1:
        raise ValueError(
            f"n_step must be an integer >= 1 (an integral float such as 5.0 is accepted), got {n_step!r}: "
            "give the horizon as a whole number of steps, e.g. n_step=3."
        )
    if not (rho_bar > 0 and c_bar > 0 and math.isfinite(rho_bar) and math.isfinite(c_bar)):
        raise ValueError(f"rho_bar and c_bar must be finite numbers > 0, got rho_bar={rho_bar}, c_bar={c_bar}.")


class ReturnsEstimatorMixin:
    """
    Returns estimators for SB3 rollout buffers. Must come before the SB3 buffer class in the bases.

    Arrays are ``(n_steps, n_envs)``. ``dones[t]`` (episode ended after step t) is derived from SB3's
    ``episode_starts``; time-limit truncations arrive already bootstrapped in the rewards, as SB3's
    ``collect_rollouts`` adds ``gamma * V(terminal_obs)`` to the reward. The algorithm notes each truncation
    (:meth:`note_truncation`) so that :meth:`recompute_returns_and_advantage` replaces that collection-time value by
    the current critic's.
    """

    #: whether :meth:`recompute_returns_and_advantage` re-bootstraps time-limit truncations with the current critic
    rebootstraps_truncations: ClassVar[bool] = True

    # Set by the concrete buffers' __init__
    returns_estimator: str
    n_step: int
    rho_bar: float
    c_bar: float
    original_action_space: spaces.Space
    rewards: np.ndarray
    values: np.ndarray
    log_probs: np.ndarray
    episode_starts: np.ndarray
    returns: np.ndarray
    advantages: np.ndarray
    buffer_size: int
    n_envs: int
    gamma: float
    gae_lambda: float
    generator_ready: bool
    device: th.device

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
        returns_estimator: str = "gae",
        n_step: int = 5,
        rho_bar: float = 1.0,
        c_bar: float = 1.0,
    ):
        storage_space = self._init_estimator_fields(action_space, returns_estimator, n_step, rho_bar, c_bar)
        super().__init__(buffer_size, observation_space, storage_space, device, gae_lambda, gamma, n_envs)  # type: ignore[call-arg]

    def _init_estimator_fields(
        self, action_space: spaces.Space, returns_estimator: str, n_step: int, rho_bar: float, c_bar: float
    ) -> spaces.Space:
        """
        Validate and store the estimator arguments (before the SB3 buffer's ``__init__``, which calls ``reset``).

        :return: the action space the SB3 buffer stores (the flat ``Box`` of a ``Tuple`` space)
        """
        check_estimator_args(returns_estimator, n_step, rho_bar, c_bar)
        self.returns_estimator = returns_estimator
        self.n_step = int(n_step)
        self.rho_bar = float(rho_bar)
        self.c_bar = float(c_bar)
        self.last_dones: np.ndarray = np.zeros(0)
        # set by ``recentre`` (async collection): log-probs of the collecting policy, and the importance weights
        # pi_prox / mu of the per-sample surrogate (stored untruncated; the trainers truncate them), sampled with each
        # minibatch
        self.behaviour_log_probs: np.ndarray | None = None
        self.advantage_weights: np.ndarray | None = None
        self.original_action_space = action_space
        return flat_action_space(action_space) if isinstance(action_space, spaces.Tuple) else action_space

    def reset(self) -> None:
        """Empty the buffer (and forget any re-centring and the truncations of the previous rollout)."""
        super().reset()  # type: ignore[misc]
        self.behaviour_log_probs = None
        self.advantage_weights = None
        self._noted_truncations: list[tuple[int, int, Any, float]] = []
        # the truncations of the filled rollout as arrays (they travel with the buffer to an async learner):
        # (step, env) of each, the critic's value of its terminal observation at collection, and those observations
        self.truncation_steps = np.zeros((0, 2), dtype=np.int64)
        self.truncation_values = np.zeros(0, dtype=np.float32)
        self.truncation_obs: np.ndarray | dict[str, np.ndarray] = np.zeros(0, dtype=np.float32)

    def note_truncation(self, env_index: int, terminal_obs: Any, value: float) -> None:
        """
        Record that the step being collected (the next ``add``) ended env ``env_index``'s episode by its time limit,
        and that ``gamma * value`` (the critic's value of ``terminal_obs``) is what SB3 adds to its reward.

        :param env_index: the env
        :param terminal_obs: the observation the episode ended in (``infos[i]["terminal_observation"]``)
        :param value: the collecting critic's value of it
        """
        # a copy: the observation is kept until the rollout ends, and a VecEnv may reuse its arrays
        if isinstance(terminal_obs, dict):
            terminal_obs = {key: np.array(obs, copy=True) for key, obs in terminal_obs.items()}
        else:
            terminal_obs = np.array(terminal_obs, copy=True)
        self._noted_truncations.append((self.pos, env_index, terminal_obs, float(value)))  # type: ignore[attr-defined]

    def _store_truncations(self) -> None:
        """The noted truncations as arrays (at the end of a rollout)."""
        noted = self._noted_truncations
        if not noted:
            return
        self.truncation_steps = np.array([(step, env) for step, env, _, _ in noted], dtype=np.int64)
        self.truncation_values = np.array([value for *_, value in noted], dtype=np.float32)
        observations = [obs for _, _, obs, _ in noted]
        if isinstance(observations[0], dict):
            self.truncation_obs = {key: np.stack([np.asarray(o[key]) for o in observations]) for key in observations[0]}
        else:
            self.truncation_obs = np.stack([np.asarray(o) for o in observations])

    def _rebootstrapped_rewards(self, policy: ActorCriticPolicy) -> np.ndarray:
        """
        The rewards with each time-limit truncation's ``gamma * V(terminal_obs)`` taken from ``policy``'s critic
        instead of the collecting one's.

        :param policy: the current policy
        :return: ``(n_steps, n_envs)`` rewards (the stored array itself when there is nothing to replace)
        """
        if not self.rebootstraps_truncations or len(self.truncation_values) == 0:
            return self.rewards
        new_values = self._current_truncation_values(policy)
        rewards = self.rewards.copy()
        steps, envs = self.truncation_steps[:, 0], self.truncation_steps[:, 1]
        rewards[steps, envs] += (self.gamma * (new_values - self.truncation_values)).astype(np.float32)
        return rewards

    def _current_truncation_values(self, policy: ActorCriticPolicy) -> np.ndarray:
        """
        ``policy``'s critic's values of the noted terminal observations (in the order of ``truncation_steps``).

        :param policy: the current policy
        :return: ``(n_truncations,)`` values
        """
        with th.no_grad():
            obs_tensor, _ = policy.obs_to_tensor(self.truncation_obs)  # type: ignore[arg-type]
            return policy.predict_values(obs_tensor).cpu().numpy().flatten()  # type: ignore[arg-type]

    def _dones_after(self, last_dones: np.ndarray) -> np.ndarray:
        """``dones[t]``: the episode ended after step t (SB3 stores the shifted ``episode_starts``)."""
        dones = np.empty_like(self.episode_starts)
        dones[:-1] = self.episode_starts[1:]
        dones[-1] = np.asarray(last_dones, dtype=np.float32)
        return dones

    def _estimate(
        self, values: np.ndarray, last_values: np.ndarray, log_ratios: np.ndarray | None, rewards: np.ndarray | None = None
    ) -> None:
        """Fill ``self.returns`` and ``self.advantages`` (shape ``(n_steps, n_envs)``) from ``rewards`` (default: the
        stored ones)."""
        rewards = self.rewards if rewards is None else rewards
        dones = self._dones_after(self.last_dones)
        if self.returns_estimator == "gae":
            arrays = (rewards, values, last_values, dones)
            if all(type(a) is np.ndarray and a.dtype == np.float32 for a in arrays) and last_values.ndim == 1:
                # the buffer's own float32 arrays (the usual case): no conversion or shape check needed
                returns_lib.check_unit_interval("gamma", self.gamma)
                returns_lib.check_unit_interval("gae_lambda", self.gae_lambda)
                # gamma and lambda as given, as SB3's buffer multiplies them (a NumPy float64 computes in float64)
                ret, adv = returns_lib.gae_prepared(*arrays, self.gamma, self.gae_lambda)
            else:
                ret, adv = returns_lib.gae(rewards, values, last_values, dones, self.gamma, self.gae_lambda)
        elif self.returns_estimator == "one_step":
            ret, adv = returns_lib.one_step(rewards, values, last_values, dones, self.gamma)
        elif self.returns_estimator == "n_step":
            ret, adv = returns_lib.n_step(rewards, values, last_values, dones, self.gamma, self.n_step)
        else:
            if log_ratios is None:
                log_ratios = np.zeros_like(rewards)
            # the trainers' losses carry the importance weight themselves (PPO's ratio pi / mu, or pi / pi_prox times
            # the decoupled weight pi_prox / mu): the advantages are r_s + gamma v_{s+1} - V(x_s), without rho_s
            ret, adv = returns_lib.vtrace(
                rewards,
                values,
                last_values,
                dones,
                log_ratios,
                self.gamma,
                gae_lambda=self.gae_lambda,
                rho_bar=self.rho_bar,
                c_bar=self.c_bar,
                rho_in_advantages=False,
            )
        self.returns, self.advantages = np.asarray(ret, dtype=np.float32), np.asarray(adv, dtype=np.float32)

    def compute_returns_and_advantage(self, last_values: th.Tensor, dones: np.ndarray) -> None:
        """
        Compute returns and advantages with the chosen estimator (on-policy data: V-trace ratios are 1).

        :param last_values: state value estimation for the last step (one for each env)
        :param dones: if the last step was a terminal step (one bool for each env)
        """
        self.last_dones = np.asarray(dones, dtype=np.float32).copy()
        self._store_truncations()
        last: np.ndarray = last_values.clone().cpu().numpy().flatten()
        self._estimate(self.values, last, None)

    def _unflat(self, arr: np.ndarray) -> np.ndarray:
        """Inverse of ``swap_and_flatten`` for per-step scalars: ``(n_steps * n_envs, ...)`` to ``(n_steps, n_envs)``."""
        return arr.reshape(self.n_envs, self.buffer_size).swapaxes(0, 1)

    def _flat_observations(self) -> Any:
        raise NotImplementedError

    def _evaluate(self, policy: ActorCriticPolicy, chunk_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """
        Values and log-probabilities of the stored actions under ``policy``, in the flattened (env-major) order.

        :param policy: the policy to evaluate
        :param chunk_size: evaluation batch size
        :return: values and log-probs, each ``(n_steps * n_envs,)``
        """
        flat = self.generator_ready
        obs = self._flat_observations()
        actions = self.actions if flat else self.swap_and_flatten(self.actions)  # type: ignore[attr-defined]
        total = self.buffer_size * self.n_envs
        new_values, new_log_probs = np.empty(total, np.float32), np.empty(total, np.float32)
        with th.no_grad():
            for start in range(0, total, chunk_size):
                idx = slice(start, start + chunk_size)
                obs_chunk = {k: v[idx] for k, v in obs.items()} if isinstance(obs, dict) else obs[idx]
                act = th.as_tensor(actions[idx], device=self.device)
                if isinstance(self.original_action_space, spaces.Discrete):
                    act = act.long().flatten()
                values, log_prob, _ = policy.evaluate_actions(obs_as_tensor(obs_chunk, self.device), act)  # type: ignore[arg-type]
                new_values[idx] = values.flatten().cpu().numpy()
                new_log_probs[idx] = log_prob.cpu().numpy()
        return new_values, new_log_probs

    def recentre(self, policy: ActorCriticPolicy, chunk_size: int = 4096) -> None:
        """
        Prepare a rollout collected by an older behaviour policy ``mu`` for an update that starts from ``policy``
        (``pi_prox``), as decoupled PPO does (Hilton et al., 2021, "Batch size-invariance for policy optimization",
        eq. 3; reference code openai/ppo-ewma, ``ppo_ewma/ppo.py``):

        - the stored log-probabilities and values become ``pi_prox``'s, so that PPO's ratio ``pi / pi_prox``, its trust
          region and the value clipping (``clip_range_vf``) are centred on the proximal policy and critic;
        - the importance weights ``pi_prox / mu`` are stored per sample (``advantage_weights``, untruncated up to the largest
          float32) and sampled with each minibatch (:class:`WeightedRolloutBufferSamples`).
          The advantages are left as they are: the trainer normalises them first, then multiplies the per-sample
          surrogate by the truncated weight (PPO: ``min(pi_prox / mu, imp_samp_max * pi_prox / pi)``, the
          reference's cap of the whole ratio ``pi / mu`` at ``imp_samp_max``, see
          :func:`~sb3_cherry.common.buffers.truncated_weights`), so that the expected first-epoch gradient is
          ``E_mu[w (A - m) / s grad log pi] = E_pi_prox[A grad log pi] / s`` (no truncation).

        ``mu``'s log-probabilities are kept in ``behaviour_log_probs`` for the V-trace ratios of
        ``recompute_returns_and_advantage``.

        :param policy: the policy the update starts from
        :param chunk_size: evaluation batch size
        """
        assert not self.generator_ready, "recentre a freshly collected rollout (before get())"
        prox_values, prox = self._evaluate(policy, chunk_size)
        prox = self._unflat(prox)
        self.behaviour_log_probs = self.log_probs.copy()
        with np.errstate(over="ignore"):
            weights = np.exp(prox - self.log_probs).astype(np.float32)
        # finite (the largest float32 at most): an inf weight times a surrogate of 0 (a ratio that underflowed) is NaN
        self.advantage_weights = np.minimum(weights, np.finfo(np.float32).max)
        self.log_probs = prox.astype(np.float32)
        self.values = self._unflat(prox_values).astype(np.float32)

    def _get_samples(
        self, batch_inds: np.ndarray, *args: Any, **kwargs: Any
    ) -> RolloutBufferSamples | DictRolloutBufferSamples | WeightedRolloutBufferSamples | WeightedDictRolloutBufferSamples:
        """
        The base buffer's minibatch, plus the importance weights of a re-centred rollout (``collection="async"``).

        :param batch_inds: indices into the flattened (env-major) buffer
        :param args: the base buffer's other arguments (``env``; contrib's recurrent buffers: ``env_change, env``)
        :param kwargs: the same, by name
        :return: the base buffer's samples, or their weighted variant after :meth:`recentre`
        """
        samples = super()._get_samples(batch_inds, *args, **kwargs)  # type: ignore[misc]
        if self.advantage_weights is None:
            return samples
        # flat index i = env * n_steps + step (swap_and_flatten's order); advantage_weights stays (n_steps, n_envs)
        weights = self.to_torch(self.advantage_weights[batch_inds % self.buffer_size, batch_inds // self.buffer_size])  # type: ignore[attr-defined]
        if isinstance(samples, DictRolloutBufferSamples):
            return WeightedDictRolloutBufferSamples(*samples, weights=weights)
        return WeightedRolloutBufferSamples(*cast(RolloutBufferSamples, samples), weights=weights)

    def _reevaluate(
        self, policy: ActorCriticPolicy, last_obs: Any, chunk_size: int
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """
        The stored rollout under ``policy``, for :meth:`recompute_returns_and_advantage`.

        :param policy: the current policy
        :param last_obs: observation after the last step
        :param chunk_size: evaluation batch size
        :return: values and log-probabilities (None: not needed) of the stored steps, env-major ``(n_envs * n_steps,)``,
            and the values of ``last_obs``
        """
        new_values, new_log_probs = self._evaluate(policy, chunk_size)
        with th.no_grad():
            last_values = policy.predict_values(obs_as_tensor(last_obs, self.device)).cpu().numpy().flatten()  # type: ignore[arg-type]
        return new_values, new_log_probs, last_values

    def recompute_returns_and_advantage(self, policy: ActorCriticPolicy, last_obs: Any, chunk_size: int = 4096) -> None:
        """
        Re-evaluate values (and, for V-trace, log-probabilities of the stored actions) with the current networks,
        then recompute returns and advantages. The stored ``values`` / ``log_probs`` of the collecting policy are
        kept (PPO's ratio and value clipping refer to them).

        :param policy: the current policy
        :param last_obs: observation after the last step (the algorithm's ``_last_obs``)
        :param chunk_size: evaluation batch size
        """
        flat = self.generator_ready
        new_values, new_log_probs, last_values = self._reevaluate(policy, last_obs, chunk_size)
        log_ratios = None
        if new_log_probs is not None:
            if self.behaviour_log_probs is not None:  # (n_steps, n_envs), never flattened
                old_log_probs = self.swap_and_flatten(self.behaviour_log_probs).reshape(-1)  # type: ignore[attr-defined]
            else:
                old_log_probs = self.log_probs.reshape(-1) if flat else self.swap_and_flatten(self.log_probs).reshape(-1)  # type: ignore[attr-defined]
            log_ratios = self._unflat(new_log_probs - old_log_probs)
        self._estimate(self._unflat(new_values), last_values, log_ratios, self._rebootstrapped_rewards(policy))
        if flat:
            self.returns = self.swap_and_flatten(self.returns)  # type: ignore[attr-defined]
            self.advantages = self.swap_and_flatten(self.advantages)  # type: ignore[attr-defined]


# (mypy cannot match the mixins' ``_get_samples(batch_inds, *args)`` with each base's own signature: same call, see
# ReturnsEstimatorMixin._get_samples)
class CherryRolloutBuffer(ReturnsEstimatorMixin, TensorSamplesMixin, StepAddMixin, RolloutBuffer):  # type: ignore[misc]
    """
    SB3's ``RolloutBuffer`` with a choice of returns estimator; Tuple actions are stored flat.

    :param buffer_size: Max number of element in the buffer
    :param observation_space: Observation space
    :param action_space: Action space (Tuple spaces are stored in their flat encoding)
    :param device: PyTorch device
    :param gae_lambda: lambda of GAE, and the trace coefficient of V-trace
    :param gamma: Discount factor
    :param n_envs: Number of parallel environments
    :param returns_estimator: ``"gae"``, ``"one_step"``, ``"n_step"`` or ``"vtrace"``
    :param n_step: horizon of the ``"n_step"`` estimator
    :param rho_bar: V-trace truncation level of the importance weights in the TD errors
    :param c_bar: V-trace truncation level of the traces
    """

    def _flat_observations(self) -> np.ndarray:
        return self.observations if self.generator_ready else self.swap_and_flatten(self.observations)


class CherryDictRolloutBuffer(ReturnsEstimatorMixin, TensorSamplesMixin, DictRolloutBuffer):  # type: ignore[misc]
    """
    SB3's ``DictRolloutBuffer`` (Dict observations) with a choice of returns estimator; Tuple actions are stored flat.

    :param buffer_size: Max number of element in the buffer
    :param observation_space: Observation space (``Dict``)
    :param action_space: Action space (Tuple spaces are stored in their flat encoding)
    :param device: PyTorch device
    :param gae_lambda: lambda of GAE, and the trace coefficient of V-trace
    :param gamma: Discount factor
    :param n_envs: Number of parallel environments
    :param returns_estimator: ``"gae"``, ``"one_step"``, ``"n_step"`` or ``"vtrace"``
    :param n_step: horizon of the ``"n_step"`` estimator
    :param rho_bar: V-trace truncation level of the importance weights in the TD errors
    :param c_bar: V-trace truncation level of the traces
    """

    def _flat_observations(self) -> dict[str, np.ndarray]:
        if self.generator_ready:
            return self.observations
        return {key: self.swap_and_flatten(obs) for key, obs in self.observations.items()}
