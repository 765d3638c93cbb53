"""
sb3-contrib's recurrent rollout buffers, storing ``Tuple`` actions in their flat encoding.

SB3's buffers size their action array with ``get_action_dim(action_space)``, which rejects ``Tuple`` spaces: these
subclasses hand them the flat ``Box`` of :func:`sb3_cherry.common.spaces.flat_action_space` instead (the actions that
``collect_rollouts`` stores are already flat). Everything else, sequence padding and masks included, is contrib's.
"""

import torch as th
from gymnasium import spaces
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer

from sb3_cherry.common.spaces import flat_action_space


class _FlatTupleActions:
    """Mixin (first in the bases): store Tuple actions flat; ``original_action_space`` keeps the Tuple."""

    original_action_space: spaces.Space

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
    ):
        self.original_action_space = action_space
        storage_space = flat_action_space(action_space) if isinstance(action_space, spaces.Tuple) else action_space
        super().__init__(  # type: ignore[call-arg]
            buffer_size, observation_space, storage_space, hidden_state_shape, device, gae_lambda, gamma, n_envs
        )


class CherryRecurrentRolloutBuffer(_FlatTupleActions, RecurrentRolloutBuffer):
    """
    sb3-contrib's ``RecurrentRolloutBuffer`` (observations, actions, values, ..., and the recurrent states at each
    step); Tuple actions are stored flat.

    :param buffer_size: Max number of element in the buffer
    :param observation_space: Observation space
    :param action_space: Action space (Tuple spaces are stored in their flat encoding)
    :param hidden_state_shape: Shape of the buffer that will collect the recurrent states
        ``(n_steps, num_layers, n_envs, hidden_size)``
    :param device: PyTorch device
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param gamma: Discount factor
    :param n_envs: Number of parallel environments
    """


class CherryRecurrentDictRolloutBuffer(_FlatTupleActions, RecurrentDictRolloutBuffer):
    """
    sb3-contrib's ``RecurrentDictRolloutBuffer`` (Dict observations); Tuple actions are stored flat.

    :param buffer_size: Max number of element in the buffer
    :param observation_space: Observation space (``Dict``)
    :param action_space: Action space (Tuple spaces are stored in their flat encoding)
    :param hidden_state_shape: Shape of the buffer that will collect the recurrent states
        ``(n_steps, num_layers, n_envs, hidden_size)``
    :param device: PyTorch device
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param gamma: Discount factor
    :param n_envs: Number of parallel environments
    """
