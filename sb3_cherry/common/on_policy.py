"""
Shared machinery of sb3_cherry's on-policy algorithms.

:class:`CherryOnPolicyAlgorithm` sits between an SB3 algorithm and ``OnPolicyAlgorithm`` in the method resolution
order (``class PPORollback(PPO, CherryOnPolicyAlgorithm)``), so that the SB3 algorithm's own code runs unchanged and
only three hooks are added:

- ``Tuple`` action spaces are accepted, and the env is wrapped in :class:`VecTupleActions`; a gymnasium env is
  vectorised in a :class:`~sb3_cherry.common.vec_env.dummy_vec_env.CherryDummyVecEnv` (SB3's ``DummyVecEnv``, same
  values, cheaper copies);
- the default rollout buffer is a :class:`CherryRolloutBuffer` carrying the returns estimator;
- saving is atomic and loading a foreign or corrupt file fails with a clear message;
- the default policies pick their action distribution from ``policy_kwargs["action_distribution"]``;
- with ``collection="async"``, ``learn`` trains in a learner process while the next rollout is collected
  (:mod:`sb3_cherry.common.async_learner`);
- non-finite data never trains silently (:mod:`sb3_cherry.common.finite`): the first NaN/inf observation or reward
  raises a ValueError naming the env and the step, and an update whose loss or parameters turn non-finite is undone
  and raises (an update that raises any other exception, Ctrl-C included, is undone too).
"""

import functools
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback, EvalCallback
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback
from stable_baselines3.common.vec_env import VecEnv, is_vecenv_wrapped
from stable_baselines3.common.vec_env.patch_gym import _patch_env

from sb3_cherry.common.async_learner import (
    COLLECTION_MODES,
    AsyncLearner,
    check_collection,
    forget_learner_rng_states,
)
from sb3_cherry.common.buffers import (
    RETURNS_ESTIMATORS,
    CherryDictRolloutBuffer,
    CherryRolloutBuffer,
    ReturnsEstimatorMixin,
    check_estimator_args,
    check_imp_samp_max,
)
from sb3_cherry.common.fast_forward import InferenceCache
from sb3_cherry.common.finite import (
    FiniteCheckCallback,
    UpdateSnapshot,
    check_finite_weights,
    check_update,
    undone_if_raised,
)
from sb3_cherry.common.policies import CherryActorCriticPolicy
from sb3_cherry.common.returns import check_unit_interval
from sb3_cherry.common.save_util import AtomicSaveAlgorithm
from sb3_cherry.common.schedules import coefficient_schedule, scheduled_value
from sb3_cherry.common.speed import fast_learn, inference_forward
from sb3_cherry.common.vec_env.dummy_vec_env import CherryDummyVecEnv
from sb3_cherry.common.vec_env.tuple_actions import VecTupleActions

SelfCherryOnPolicyAlgorithm = TypeVar("SelfCherryOnPolicyAlgorithm", bound="CherryOnPolicyAlgorithm")

#: Losses the SB3 / sb3_cherry trainers log (PPO and A2C names); a non-finite one undoes the update
_LOSS_KEYS = ("train/policy_gradient_loss", "train/policy_loss", "train/value_loss", "train/entropy_loss", "train/loss")


def _train_checked(train: Callable[[Any], None]) -> Callable[[Any], None]:
    """
    Wrap an algorithm's ``train`` so that an update with a non-finite loss or non-finite parameters, or one that
    raises, is undone.
    """

    @functools.wraps(train)
    def train_checked(self: "CherryOnPolicyAlgorithm") -> None:
        if not self.check_finite:
            train(self)
            return
        snapshot = self.__dict__.get("_update_snapshot")
        # (re)built for the policy and optimizer of this update: a user may have replaced either between learn calls
        if snapshot is None or snapshot.modules[0] is not self.policy or snapshot.optimizers[0] is not self.policy.optimizer:
            snapshot = self._update_snapshot = UpdateSnapshot([self.policy], [self.policy.optimizer])
        snapshot.take()
        name = type(self).__name__
        with undone_if_raised(snapshot, name, lambda: (self.num_timesteps, self._n_updates)):
            train(self)
        logged = self.logger.name_to_value
        check_update(snapshot, {key: logged.get(key) for key in _LOSS_KEYS}, name, self.num_timesteps, self._n_updates)

    train_checked._checks_finite = True  # type: ignore[attr-defined]
    return train_checked


def wrap_tuple_eval_envs(callback: MaybeCallback) -> None:
    """
    Give the eval env of every ``EvalCallback`` with a ``Tuple`` action space the ``VecTupleActions`` wrapper the
    training env got in ``_wrap_env``: SB3's ``sync_envs_normalization`` walks both wrapper stacks in step, so
    ``VecTupleActions(VecNormalize(...))`` against ``VecNormalize(...)`` failed on its assertion.

    :param callback: the callback of ``learn`` (lists and ``CallbackList`` are searched, nested ones too)
    """
    if isinstance(callback, (list, CallbackList)):
        for child in callback if isinstance(callback, list) else callback.callbacks:
            wrap_tuple_eval_envs(child)
    elif isinstance(callback, EvalCallback):
        eval_env = callback.eval_env
        if isinstance(eval_env.action_space, spaces.Tuple) and not is_vecenv_wrapped(eval_env, VecTupleActions):
            callback.eval_env = VecTupleActions(eval_env)


class CherryOnPolicyAlgorithm(AtomicSaveAlgorithm, OnPolicyAlgorithm):
    """
    Mixin base adding Tuple action spaces and returns estimators to an SB3 on-policy algorithm.

    The concrete algorithm sets ``returns_estimator``, ``n_step``, ``rho_bar``, ``c_bar`` and ``recompute_returns``
    (with :meth:`_init_estimator`) before ``_setup_model`` runs.

    ``check_finite`` (attribute, default True): raise a ValueError at the first non-finite observation or reward
    (env index and ``num_timesteps`` in the message) and undo an update whose loss or parameters are non-finite, or
    that raises (the model keeps its parameters and optimizer state from before it). Setting it to False removes the
    checks (``benchmarks/throughput.py --guard`` measures their cost); it never changes a float of training.
    """

    check_finite: bool = True

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        # Each concrete algorithm's train (its own, or SB3's PPO / A2C one) gets the non-finite update check once
        if not getattr(cls.train, "_checks_finite", False):
            setattr(cls, "train", _train_checked(cls.train))  # noqa: B010 (mypy: SB3's train is a method)

    #: the accepted values of string hyperparameters, checked in zoo configs before a run starts
    #: (:func:`~sb3_cherry.common.config_schema.check_constructor_kwargs`)
    config_choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "returns_estimator": RETURNS_ESTIMATORS,
        "collection": COLLECTION_MODES,
    }
    returns_estimator: str
    n_step: int
    rho_bar: float
    c_bar: float
    recompute_returns: bool = False
    collection: str = "sync"
    #: parameters and optimizer state before the current update (set by the non-finite check of train)
    _update_snapshot: UpdateSnapshot
    #: validate the parameters of ``torch.distributions`` objects during ``learn`` (torch's default; off for speed,
    #: values are identical either way; set True on the model to debug a NaN policy)
    validate_distribution_args: bool = False
    #: opt-in (issue 19): torch's fused Adam for the policy's optimizer (faster steps; float rounding differs from
    #: SB3's per-parameter Adam, so ``rollback_alpha=0`` is then no longer bit-identical to SB3's PPO). Set
    #: ``model.fused_optimizer = True`` before ``learn``. Off: the default ``foreach`` Adam, bit-identical to SB3.
    fused_optimizer: bool = False
    # class default: models saved before the argument existed load with the reference's value
    imp_samp_max: float = 100.0

    def __init__(self, *args: Any, supported_action_spaces: tuple[type[spaces.Space], ...] | None = None, **kwargs: Any):
        if supported_action_spaces is not None and spaces.Tuple not in supported_action_spaces:
            supported_action_spaces = (*supported_action_spaces, spaces.Tuple)
        coefficient_schedule(kwargs.get("ent_coef", 0.0))  # a malformed ent_coef fails here, not at the first update
        super().__init__(*args, supported_action_spaces=supported_action_spaces, **kwargs)  # type: ignore[misc]

    def _current_ent_coef(self) -> float:
        """
        The entropy coefficient of the update about to run: ``ent_coef`` (a number, an SB3 schedule, ``"lin_<value>"``
        or ``{"start", "end", "end_fraction"}``, see :func:`~sb3_cherry.common.schedules.coefficient_schedule`) at
        the current ``progress_remaining``, logged as ``train/ent_coef``. A constant gives ``float(ent_coef)``, the
        value SB3 multiplies with, so ``rollback_alpha=0`` stays bit-identical to SB3's PPO.

        :return: the coefficient
        """
        value = scheduled_value(coefficient_schedule(self.ent_coef), self._current_progress_remaining)
        self.logger.record("train/ent_coef", value)
        return value

    def _init_estimator(
        self, returns_estimator: str, n_step: int, rho_bar: float, c_bar: float, recompute_returns: bool
    ) -> None:
        """
        Validate and store the returns estimator arguments (call before ``_setup_model``).

        :param returns_estimator: ``"gae"``, ``"one_step"``, ``"n_step"`` or ``"vtrace"``
        :param n_step: horizon of the n-step estimator
        :param rho_bar: V-trace truncation of the importance weights in the TD errors
        :param c_bar: V-trace truncation of the traces
        :param recompute_returns: recompute targets with the current networks before every epoch
        :raises ValueError: a bad argument, or ``gamma`` / ``gae_lambda`` (set by SB3's ``__init__``) outside [0, 1]
            (found here, not at the end of the first rollout)
        """
        check_estimator_args(returns_estimator, n_step, rho_bar, c_bar)
        check_unit_interval("gamma", self.gamma)
        check_unit_interval("gae_lambda", self.gae_lambda)
        self.returns_estimator = returns_estimator
        self.n_step = int(n_step)
        self.rho_bar = float(rho_bar)
        self.c_bar = float(c_bar)
        self.recompute_returns = bool(recompute_returns)

    def _init_collection(self, collection: str, imp_samp_max: float = 100.0) -> None:
        """
        Validate and store the collection mode.

        :param collection: ``"sync"`` (collect, then train, as SB3) or ``"async"`` (train in a learner process while
            the next rollout is collected with the previous weights)
        :param imp_samp_max: truncation level of decoupled PPO's importance weights ``pi_prox / mu`` (async only)
        """
        self.collection = check_collection(collection)
        self.imp_samp_max = check_imp_samp_max(imp_samp_max)

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        if "_update_snapshot" in self.__dict__:
            self._update_snapshot.invalidate()  # parameters may have been set or loaded since the last update
        if self.check_finite:
            check_finite_weights(self.policy, "The policy's parameters")
            # first, so that no other callback (e.g. an EvalCallback) runs on a non-finite step
            if callback is None:
                callback = []
            elif not isinstance(callback, list):
                callback = [callback if isinstance(callback, BaseCallback) else ConvertCallback(callback)]
            callback = [FiniteCheckCallback(), *callback]
            if len(callback) == 1:
                callback = callback[0]  # alone: called directly, without a CallbackList around it at every step
        wrap_tuple_eval_envs(callback)  # before EvalCallback's own init compares the env types
        return super()._init_callback(callback, progress_bar)

    def set_random_seed(self, seed: int | None = None) -> None:
        """
        SB3's ``set_random_seed``; with ``collection="async"`` the learner of the next ``learn`` call also starts from
        this seed instead of continuing the previous learner's random streams.

        :param seed: the seed (None: nothing is seeded)
        """
        super().set_random_seed(seed)
        if seed is not None:
            forget_learner_rng_states(self)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_update_snapshot", "_inference_cache"]

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        """
        SB3's ``_wrap_env`` (a gymnasium env in a ``Monitor`` and a one-env VecEnv, image transposition), with
        :class:`~sb3_cherry.common.vec_env.dummy_vec_env.CherryDummyVecEnv` as the VecEnv, and Tuple action spaces
        in :class:`VecTupleActions`.

        :param env: the env (a VecEnv is kept)
        :param verbose: print the wrappers added
        :param monitor_wrapper: wrap a gymnasium env in a ``Monitor`` (unless it is already)
        :return: the VecEnv
        """
        if not isinstance(env, VecEnv):
            env = _patch_env(env)
            if monitor_wrapper and not is_wrapped(env, Monitor):
                if verbose >= 1:
                    print("Wrapping the env with a `Monitor` wrapper")
                env = Monitor(env)
            if verbose >= 1:
                print("Wrapping the env in a CherryDummyVecEnv.")
            single = env
            env = CherryDummyVecEnv([lambda: single])
        env = OnPolicyAlgorithm._wrap_env(env, verbose, monitor_wrapper)
        if isinstance(env.action_space, spaces.Tuple) and not is_vecenv_wrapped(env, VecTupleActions):
            env = VecTupleActions(env)
        return env

    def _setup_model(self) -> None:
        if self.rollout_buffer_class is None:
            dict_obs = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = CherryDictRolloutBuffer if dict_obs else CherryRolloutBuffer
        if issubclass(self.rollout_buffer_class, ReturnsEstimatorMixin):
            self.rollout_buffer_kwargs = {
                **self.rollout_buffer_kwargs,
                "returns_estimator": self.returns_estimator,
                "n_step": self.n_step,
                "rho_bar": self.rho_bar,
                "c_bar": self.c_bar,
            }
        elif self.returns_estimator != "gae" or self.recompute_returns or isinstance(self.action_space, spaces.Tuple):
            raise ValueError(
                f"rollout_buffer_class={self.rollout_buffer_class.__name__} does not support returns_estimator="
                f"{self.returns_estimator!r}, recompute_returns or Tuple actions: use a subclass of "
                "sb3_cherry.common.buffers.CherryRolloutBuffer (or leave rollout_buffer_class=None)."
            )
        elif self.collection == "async":
            raise ValueError(
                f"collection='async' re-centres each lagged rollout on the current policy, which "
                f"rollout_buffer_class={self.rollout_buffer_class.__name__} cannot do: use a subclass of "
                "sb3_cherry.common.buffers.CherryRolloutBuffer (or leave rollout_buffer_class=None), or collection='sync'."
            )
        super()._setup_model()

    def _maybe_recommend_cpu(self, mlp_class_name: str = "ActorCriticPolicy") -> None:
        """
        SB3's warning that an MLP policy runs better on the CPU, for sb3_cherry's ``MlpPolicy`` too: SB3 recognises the
        MLP policy by its class name (``ActorCriticPolicy``), which :class:`CherryActorCriticPolicy` does not have.

        :param mlp_class_name: the class name of the MLP policy (SB3's, kept when the policy is not ours)
        """
        if self.policy_class is CherryActorCriticPolicy:
            mlp_class_name = CherryActorCriticPolicy.__name__
        super()._maybe_recommend_cpu(mlp_class_name)

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """
        SB3's ``collect_rollouts``, with the policy's forward passes in ``torch.inference_mode``
        (:func:`sb3_cherry.common.speed.inference_forward`; same values, less autograd bookkeeping).

        :param env: the training environment
        :param callback: callback called at every step
        :param rollout_buffer: buffer to fill
        :param n_rollout_steps: number of steps to collect per environment
        :return: False if a callback stopped the rollout
        """
        # (the fast forward built for the policy is kept between rollouts; not saved, copied or pickled)
        cache = self.__dict__.get("_inference_cache")
        if not isinstance(cache, InferenceCache):
            cache = self._inference_cache = InferenceCache()
        with inference_forward(self.policy, cache):
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        """
        SB3's episode bookkeeping (called at every collected step, before SB3 bootstraps time-limit truncations and
        adds the step to the buffer); when the targets are recomputed (``recompute_returns``, or V-trace with
        ``collection="async"``), also note each truncation with the critic's value of its terminal observation, which
        ``recompute_returns_and_advantage`` replaces by the current critic's
        (:class:`~sb3_cherry.common.buffers.ReturnsEstimatorMixin`).

        :param infos: the envs' infos of this step
        :param dones: the envs' done flags of this step
        """
        super()._update_info_buffer(infos, dones)
        buffer = self.rollout_buffer
        if not (self._reevaluates_targets and dones is not None and isinstance(buffer, ReturnsEstimatorMixin)):
            return
        if not buffer.rebootstraps_truncations:
            return
        truncated = [
            (idx, infos[idx]["terminal_observation"])
            for idx, done in enumerate(dones)
            # SB3's condition in collect_rollouts
            if done and infos[idx].get("terminal_observation") is not None and infos[idx].get("TimeLimit.truncated", False)
        ]
        if truncated:
            for (idx, terminal_obs), value in zip(truncated, self._truncation_bootstrap_values(truncated), strict=True):
                buffer.note_truncation(idx, terminal_obs, value)

    def _truncation_bootstrap_values(self, truncated: list[tuple[int, Any]]) -> list[float]:
        """
        The collecting critic's values of this step's time-limit truncations' terminal observations, as
        ``collect_rollouts`` adds them (times ``gamma``) to the rewards (SB3's computation, one observation at a time;
        recurrent algorithms override it).

        :param truncated: ``(env index, terminal observation)`` of each env whose episode was truncated at this step
        :return: the values, in the same order
        """
        values = []
        with th.no_grad():
            for _, terminal_obs in truncated:
                values.append(float(self.policy.predict_values(self.policy.obs_to_tensor(terminal_obs)[0])[0].item()))
        return values

    @property
    def _reevaluates_targets(self) -> bool:
        """Whether the returns / advantages are recomputed with the update's networks: ``recompute_returns``, or
        V-trace on the lagged rollouts of ``collection="async"`` (its ratios ``pi_prox / mu``)."""
        return self.recompute_returns or (
            getattr(self, "collection", "sync") == "async" and self.returns_estimator == "vtrace"
        )

    def _prepare_lagged_rollout(self) -> None:
        """
        Off-policy correction of a rollout collected by the previous weights (``collection="async"``): centre PPO's
        trust region and the value clipping on the current (proximal) policy and critic, and store the per-sample
        importance weights ``pi_prox / mu`` that the trainers truncate at ``imp_samp_max`` and apply to the
        per-sample surrogate after advantage normalisation (:meth:`CherryRolloutBuffer.recentre`,
        :func:`~sb3_cherry.common.buffers.truncated_weights`). With V-trace, its targets and advantages are
        recomputed with ``pi_prox``'s critic and the ratios ``pi_prox / mu`` (the collecting process computed them
        on-policy, ratio 1); with ``recompute_returns`` that happens before every epoch instead
        (:meth:`_recompute_returns`).
        """
        assert isinstance(self.rollout_buffer, ReturnsEstimatorMixin)
        self.policy.set_training_mode(False)
        self.rollout_buffer.recentre(self.policy)
        if self.returns_estimator == "vtrace" and not self.recompute_returns:
            self.rollout_buffer.recompute_returns_and_advantage(self.policy, self._last_obs)
        self.policy.set_training_mode(True)

    def _recompute_returns(self) -> None:
        """Recompute returns/advantages with the current networks (no-op unless ``recompute_returns``)."""
        if self.recompute_returns:
            assert isinstance(self.rollout_buffer, ReturnsEstimatorMixin)
            self.policy.set_training_mode(False)
            self.rollout_buffer.recompute_returns_and_advantage(self.policy, self._last_obs)
            self.policy.set_training_mode(True)

    @fast_learn
    def learn(
        self: SelfCherryOnPolicyAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "OnPolicyAlgorithm",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfCherryOnPolicyAlgorithm:
        """
        SB3's on-policy training loop; with ``collection="async"`` the updates run in a learner process, overlapping
        the collection of the next rollout (whose behaviour policy is then one update old). During an async ``learn``,
        ``self.policy`` holds the behaviour weights; the learner's final weights and optimizer state are copied back
        before ``learn`` returns.

        :param total_timesteps: the total number of samples (env steps) to train on
        :param callback: callback(s) called at every step with state of the algorithm
        :param log_interval: the number of rollouts before logging
        :param tb_log_name: the name of the run for TensorBoard logging
        :param reset_num_timesteps: whether or not to reset the current timestep number (used in logging)
        :param progress_bar: display a progress bar using tqdm and rich
        :return: the trained model
        """
        if self.collection == "sync":
            return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)

        iteration = 0
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        assert self.env is not None
        learner = AsyncLearner(self)
        try:
            while self.num_timesteps < total_timesteps:
                continue_training = self.collect_rollouts(
                    self.env, callback, self.rollout_buffer, n_rollout_steps=self.n_steps
                )
                if not continue_training:
                    break
                iteration += 1
                self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
                # wait for the update of the previous rollout and take its weights (and its train/ logs, dumped next
                # as SB3 dumps those of the update before), then start training on this rollout: the next rollout is
                # collected with these weights while the learner trains
                learner.sync(self)
                if log_interval is not None and iteration % log_interval == 0:
                    assert self.ep_info_buffer is not None
                    self.dump_logs(iteration)
                learner.submit(self)
            learner.finish(self)
        except BaseException:
            learner.salvage(self)  # weights and optimizer state of the same update, for a save after the error
            raise
        finally:
            learner.close()
        callback.on_training_end()
        return self
