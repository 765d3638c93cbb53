"""
Shared machinery of sb3_cherry's on-policy algorithms.

:class:`CherryOnPolicyAlgorithm` sits between an SB3 algorithm and ``OnPolicyAlgorithm`` in the method resolution
order (``class PPORollback(PPO, CherryOnPolicyAlgorithm)``), so that the SB3 algorithm's own code runs unchanged and
only three hooks are added:

- ``Tuple`` action spaces are accepted, and the env is wrapped in :class:`VecTupleActions`;
- the default rollout buffer is a :class:`CherryRolloutBuffer` carrying the returns estimator;
- saving is atomic and loading a foreign or corrupt file fails with a clear message;
- the default policies pick their action distribution from ``policy_kwargs["action_distribution"]``.
"""

from typing import Any

from gymnasium import spaces
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.vec_env import VecEnv, is_vecenv_wrapped

from sb3_cherry.common.buffers import CherryDictRolloutBuffer, CherryRolloutBuffer, ReturnsEstimatorMixin, check_estimator_args
from sb3_cherry.common.save_util import AtomicSaveAlgorithm
from sb3_cherry.common.vec_env.tuple_actions import VecTupleActions


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
    recompute_returns: bool

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

    def _recompute_returns(self) -> None:
        """Recompute returns/advantages with the current networks (no-op unless ``recompute_returns``)."""
        if self.recompute_returns:
            assert isinstance(self.rollout_buffer, ReturnsEstimatorMixin)
            self.policy.set_training_mode(False)
            self.rollout_buffer.recompute_returns_and_advantage(self.policy, self._last_obs)
            self.policy.set_training_mode(True)
