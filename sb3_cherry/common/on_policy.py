"""
Shared machinery of sb3_cherry's on-policy algorithms.

:class:`CherryOnPolicyAlgorithm` sits between an SB3 algorithm and ``OnPolicyAlgorithm`` in the method resolution
order (``class PPORollback(PPO, CherryOnPolicyAlgorithm)``), so that the SB3 algorithm's own code runs unchanged and
only three hooks are added:

- ``Tuple`` action spaces are accepted, and the env is wrapped in :class:`VecTupleActions`;
- the default rollout buffer is a :class:`CherryRolloutBuffer` carrying the returns estimator;
- ``collection="async"``: rollouts are collected in a background thread while the learner trains
  (:mod:`sb3_cherry.common.async_collection`);
- saving is atomic and loading a foreign or corrupt file fails with a clear message;
- the default policies pick their action distribution from ``policy_kwargs["action_distribution"]``.
"""

import io
import pathlib
from collections.abc import Iterable
from typing import Any, TypeVar

import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback
from stable_baselines3.common.vec_env import VecEnv, is_vecenv_wrapped

from sb3_cherry.common.save_util import atomic_write, check_model_file, resolve_zip_path
from sb3_cherry.common.async_collection import AsyncCollector
from sb3_cherry.common.buffers import CherryDictRolloutBuffer, CherryRolloutBuffer, ReturnsEstimatorMixin, check_estimator_args
from sb3_cherry.common.vec_env.tuple_actions import VecTupleActions

SelfCherryOnPolicyAlgorithm = TypeVar("SelfCherryOnPolicyAlgorithm", bound="CherryOnPolicyAlgorithm")


class CherryOnPolicyAlgorithm(OnPolicyAlgorithm):
    """
    Mixin base adding Tuple action spaces and returns estimators to an SB3 on-policy algorithm.

    The concrete algorithm sets ``returns_estimator``, ``n_step``, ``rho_bar``, ``c_bar`` and ``recompute_returns``
    (with :meth:`_init_estimator`) before ``_setup_model`` runs.
    """

    returns_estimator: str
    n_step: int
    rho_bar: float
    c_bar: float
    recompute_returns: bool
    collection: str = "sync"
    _async_collector: AsyncCollector | None = None

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

    def _init_collection(self, collection: str) -> None:
        """
        Validate and store the collection mode (call before ``_setup_model``).

        :param collection: ``"sync"`` (SB3's collect-then-train) or ``"async"`` (collection overlaps learning)
        """
        if collection not in ("sync", "async"):
            raise ValueError(f"collection must be 'sync' or 'async', got {collection!r}.")
        self.collection = collection
        self._async_collector = None

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """
        SB3's ``collect_rollouts``; with ``collection="async"``, hand over the rollout collected in the background
        (by a policy one update old) and start the next one.

        :param env: the training environment
        :param callback: callback called at each step (replayed in the main thread when asynchronous)
        :param rollout_buffer: buffer to fill (synchronous mode)
        :param n_rollout_steps: number of experiences to collect per environment
        :return: False if a callback stopped training
        """
        if self.collection != "async":
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        if self._async_collector is None:
            self._async_collector = AsyncCollector(self)
        return self._async_collector.next_rollout(env, callback, n_rollout_steps)

    def learn(  # type: ignore[override]
        self: SelfCherryOnPolicyAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "OnPolicyAlgorithm",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfCherryOnPolicyAlgorithm:
        """
        SB3's ``learn``; with asynchronous collection, the rollout still in flight at the end is waited for and
        discarded, so that no thread touches the env after ``learn`` returns.

        :param total_timesteps: total number of samples (env steps) to train on
        :param callback: callback(s) called at every step with state of the algorithm
        :param log_interval: the number of rollouts before logging
        :param tb_log_name: the name of the run for TensorBoard logging
        :param reset_num_timesteps: whether or not to reset the current timestep number (used in logging)
        :param progress_bar: display a progress bar using tqdm and rich
        :return: the trained model
        """
        try:
            return super().learn(  # type: ignore[return-value]
                total_timesteps=total_timesteps,
                callback=callback,
                log_interval=log_interval,
                tb_log_name=tb_log_name,
                reset_num_timesteps=reset_num_timesteps,
                progress_bar=progress_bar,
            )
        finally:
            if self._async_collector is not None:
                self._async_collector.stop()

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_async_collector"]

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

    def _recompute_returns(self, first_epoch: bool = False) -> None:
        """
        Recompute returns/advantages with the current networks: before every epoch after the first with
        ``recompute_returns``, and before the first one too with asynchronous collection (the rollout was collected
        by an older policy: current critic, V-trace ratios current / behaviour).

        :param first_epoch: called before the first epoch
        """
        if (self.recompute_returns and not first_epoch) or (first_epoch and self.collection == "async"):
            assert isinstance(self.rollout_buffer, ReturnsEstimatorMixin)
            self.policy.set_training_mode(False)
            self.rollout_buffer.recompute_returns_and_advantage(self.policy, self._last_obs)
            self.policy.set_training_mode(True)

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """
        Save the model (SB3's zip format). Writing a path is atomic: the archive is written to a temporary file next
        to it and renamed, so an interrupted save never destroys the previous checkpoint.

        :param path: path to the file (``.zip`` is appended when there is no suffix) or a file object
        :param exclude: names of parameters that should be excluded in addition to the default ones
        :param include: names of parameters that might be excluded but should be included anyway
        """
        if isinstance(path, io.IOBase):
            super().save(path, exclude=exclude, include=include)
            return
        atomic_write(resolve_zip_path(path), lambda f: super(CherryOnPolicyAlgorithm, self).save(f, exclude, include))

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfCherryOnPolicyAlgorithm],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfCherryOnPolicyAlgorithm:
        """
        Load a model saved with ``save`` (SB3's ``load``, after checking the file is an SB3 model archive).

        :param path: path to the file (or a file object)
        :param env: the new environment to run the loaded model on (can be None if you only need prediction)
        :param device: device on which the code should run
        :param custom_objects: objects to replace upon loading (see SB3's ``load``)
        :param print_system_info: print the system info of the saved model and the current one
        :param force_reset: force a call to ``reset()`` before training
        :param kwargs: extra arguments to change the model when loading
        :return: the loaded model
        :raises ValueError: the file is corrupt or not an SB3 model
        """
        check_model_file(path, cls.__name__)
        return super().load(  # type: ignore[return-value]
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )
