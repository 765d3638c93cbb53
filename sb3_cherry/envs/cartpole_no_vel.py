"""
``sb3_cherry/CartPoleNoVel-v0``: CartPole-v1 with the velocities hidden, a memory task for recurrent policies.

The observation keeps the cart position and the pole angle (entries 0 and 2 of CartPole's observation) and drops the cart
velocity and the pole angular velocity, so a feed-forward policy cannot tell which way the pole is falling and an agent
needs memory (an LSTM, or frame stacking) to balance it. Dynamics, reward (+1 per step), termination, the 500-step limit
and the reward threshold of 475 are those of ``CartPole-v1``.
"""

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class PartialObservation(gym.ObservationWrapper):
    """
    Keep only some entries of a flat ``Box`` observation.

    :param env: environment with a 1-D ``Box`` observation space
    :param keep: indices of the observation entries to keep, in order
    """

    def __init__(self, env: gym.Env, keep: Sequence[int]) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"PartialObservation needs a 1-D Box observation space, got {space!r}.")
        self.keep = np.asarray(keep, dtype=np.intp)
        if self.keep.size == 0 or self.keep.min() < 0 or self.keep.max() >= space.shape[0]:
            raise ValueError(f"Indices {list(keep)} are out of range for an observation of length {space.shape[0]}.")
        self.observation_space = spaces.Box(space.low[self.keep], space.high[self.keep], dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """
        :param observation: the full observation
        :return: the kept entries
        """
        return observation[self.keep]


#: CartPole observation entries kept by ``CartPoleNoVel``: cart position and pole angle.
CARTPOLE_POSITION_INDICES = (0, 2)


def make_cartpole_no_vel(**kwargs: Any) -> gym.Env:
    """
    Entry point of ``sb3_cherry/CartPoleNoVel-v0``: ``CartPoleEnv`` wrapped in ``PartialObservation``.

    The time limit (500 steps) is added by ``gymnasium.make`` from the registration, as for ``CartPole-v1``.

    :param kwargs: forwarded to ``CartPoleEnv`` (``render_mode``, ``sutton_barto_reward``)
    :return: the environment
    """
    return PartialObservation(CartPoleEnv(**kwargs), keep=CARTPOLE_POSITION_INDICES)
