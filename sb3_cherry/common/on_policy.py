"""
Shared machinery of sb3_cherry's on-policy algorithms.

:class:`CherryOnPolicyAlgorithm` sits between an SB3 algorithm and ``OnPolicyAlgorithm`` in the method resolution
order (``class PPORollback(PPO, CherryOnPolicyAlgorithm)``), so that the SB3 algorithm's own code runs unchanged and
only three hooks are added:

- ``Tuple`` action spaces are accepted, and the env is wrapped in :class:`VecTupleActions`;
- the default rollout buffer is a :class:`CherryRolloutBuffer` carrying the returns estimator;
- saving is atomic and loading a foreign or corrupt file fails with a clear message;
- the default policies pick their action distribution from ``policy_kwargs["action_distribution"]``;
- with ``collection="async"``, ``learn`` trains in a learner process while the next rollout is collected
  (:mod:`sb3_cherry.common.async_learner`).
"""

from typing import Any, TypeVar

from gymnasium import spaces
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback
from stable_baselines3.common.vec_env import VecEnv, is_vecenv_wrapped

from sb3_cherry.common.async_learner import AsyncLearner, check_collection
from sb3_cherry.common.buffers import (
    CherryDictRolloutBuffer,
    CherryRolloutBuffer,
    ReturnsEstimatorMixin,
    check_estimator_args,
    check_imp_samp_max,
)
from sb3_cherry.common.save_util import AtomicSaveAlgorithm
from sb3_cherry.common.vec_env.tuple_actions import VecTupleActions

SelfCherryOnPolicyAlgorithm = TypeVar("SelfCherryOnPolicyAlgorithm", bound="CherryOnPolicyAlgorithm")


class CherryOnPolicyAlgorithm(AtomicSaveAlgorithm, OnPolicyAlgorithm):
    """
    Mixin base adding Tuple action spaces and returns estimators to an SB3 on-policy algorithm.

    The concrete algorithm sets ``returns_estimator``, ``n_step``, ``rho_bar``, ``c_bar`` and ``recompute_returns``
    (with :meth:`_init_estimator`) before ``_setup_model`` runs.
    """

    returns_estimator: str
    n_step: int
    rho_bar: float
    c_bar: float
    recompute_returns: bool = False
    collection: str = "sync"
    # class default: models saved before the argument existed load with the reference's value
    imp_samp_max: float = 100.0

    def __init__(self, *args: Any, supported_action_spaces: tuple[type[spaces.Space], ...] | None = None, **kwargs: Any):
        if supported_action_spaces is not None and spaces.Tuple not in supported_action_spaces:
            supported_action_spaces = (*supported_action_spaces, spaces.Tuple)
        super().__init__(*args, supported_action_spaces=supported_action_spaces, **kwargs)

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
        """
        check_estimator_args(returns_estimator, n_step, rho_bar, c_bar)
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

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
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
        super()._setup_model()

    def _prepare_lagged_rollout(self) -> None:
        """
        Off-policy correction of a rollout collected by the previous weights (``collection="async"``): centre PPO's
        trust region and the value clipping on the current (proximal) policy and critic, and store the per-sample
        importance weights ``min(imp_samp_max, pi_prox / mu)`` that the trainers apply to the per-sample surrogate
        after advantage normalisation (:meth:`CherryRolloutBuffer.recentre`).
        """
        assert isinstance(self.rollout_buffer, ReturnsEstimatorMixin)
        self.policy.set_training_mode(False)
        self.rollout_buffer.recentre(self.policy, self.imp_samp_max)
        self.policy.set_training_mode(True)

    def _recompute_returns(self) -> None:
        """Recompute returns/advantages with the current networks (no-op unless ``recompute_returns``)."""
        if self.recompute_returns:
            assert isinstance(self.rollout_buffer, ReturnsEstimatorMixin)
            self.policy.set_training_mode(False)
            self.rollout_buffer.recompute_returns_and_advantage(self.policy, self._last_obs)
            self.policy.set_training_mode(True)

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
                if log_interval is not None and iteration % log_interval == 0:
                    assert self.ep_info_buffer is not None
                    self.dump_logs(iteration)
                # wait for the update of the previous rollout, take its weights, and start training on this one:
                # the next rollout is collected with these weights while the learner trains
                learner.sync(self)
                learner.submit(self)
            learner.finish(self)
        finally:
            learner.close()
        callback.on_training_end()
        return self
