"""
sb3-contrib's recurrent rollout buffers with sb3_cherry's returns estimators, storing ``Tuple`` actions in their flat
encoding.

SB3's buffers size their action array with ``get_action_dim(action_space)``, which rejects ``Tuple`` spaces: these
subclasses hand them the flat ``Box`` of :func:`sb3_cherry.common.spaces.flat_action_space` instead (the actions that
``collect_rollouts`` stores are already flat). Returns and advantages come from
:class:`~sb3_cherry.common.buffers.ReturnsEstimatorMixin` (GAE, 1-step, n-step, V-trace); everything else, sequence
padding and masks included, is contrib's. Re-evaluating a stored rollout (``recompute_returns``, ``recentre`` for
``collection="async"``) would need the recurrent states replayed sequence by sequence and is not supported.
"""

from typing import NoReturn

import torch as th
from gymnasium import spaces
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer

from sb3_cherry.common.buffers import ReturnsEstimatorMixin


class _RecurrentReturnsEstimator(ReturnsEstimatorMixin):
    """Mixin (first in the bases): the estimators of ``ReturnsEstimatorMixin`` on contrib's recurrent buffers."""

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        hidden_state_shape: tuple[int, int, int, int],
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
        # skip ReturnsEstimatorMixin.__init__ (its signature has no hidden_state_shape): contrib's buffer is next
        super(ReturnsEstimatorMixin, self).__init__(  # type: ignore[call-arg]
            buffer_size, observation_space, storage_space, hidden_state_shape, device, gae_lambda, gamma, n_envs
        )

    def _flat_observations(self) -> NoReturn:
        raise NotImplementedError(
            "Recurrent rollouts cannot be re-evaluated step by step (recompute_returns / collection='async'): "
            "the recurrent states would have to be replayed sequence by sequence."
        )


class CherryRecurrentRolloutBuffer(_RecurrentReturnsEstimator, RecurrentRolloutBuffer):  # type: ignore[misc]
    """
    sb3-contrib's ``RecurrentRolloutBuffer`` (observations, actions, values, ..., and the recurrent states at each
    step) with a choice of returns estimator; Tuple actions are stored flat.

    :param buffer_size: Max number of element in the buffer
    :param observation_space: Observation space
    :param action_space: Action space (Tuple spaces are stored in their flat encoding)
    :param hidden_state_shape: Shape of the buffer that will collect the recurrent states
        ``(n_steps, num_layers, n_envs, hidden_size)``
    :param device: PyTorch device
    :param gae_lambda: lambda of GAE, and the trace coefficient of V-trace
    :param gamma: Discount factor
    :param n_envs: Number of parallel environments
    :param returns_estimator: ``"gae"``, ``"one_step"``, ``"n_step"`` or ``"vtrace"``
    :param n_step: horizon of the ``"n_step"`` estimator
    :param rho_bar: V-trace truncation level of the importance weights in the TD errors
    :param c_bar: V-trace truncation level of the traces
    """


class CherryRecurrentDictRolloutBuffer(_RecurrentReturnsEstimator, RecurrentDictRolloutBuffer):  # type: ignore[misc]
    """
    sb3-contrib's ``RecurrentDictRolloutBuffer`` (Dict observations) with a choice of returns estimator; Tuple actions
    are stored flat.

    :param buffer_size: Max number of element in the buffer
    :param observation_space: Observation space (``Dict``)
    :param action_space: Action space (Tuple spaces are stored in their flat encoding)
    :param hidden_state_shape: Shape of the buffer that will collect the recurrent states
        ``(n_steps, num_layers, n_envs, hidden_size)``
    :param device: PyTorch device
    :param gae_lambda: lambda of GAE, and the trace coefficient of V-trace
    :param gamma: Discount factor
    :param n_envs: Number of parallel environments
    :param returns_estimator: ``"gae"``, ``"one_step"``, ``"n_step"`` or ``"vtrace"``
    :param n_step: horizon of the ``"n_step"`` estimator
    :param rho_bar: V-trace truncation level of the importance weights in the TD errors
    :param c_bar: V-trace truncation level of the traces
    """
