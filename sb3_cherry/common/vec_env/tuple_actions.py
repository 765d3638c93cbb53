"""VecEnv wrapper that turns flat Tuple actions (as stored in rollout buffers) back into tuples."""

from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from sb3_cherry.common.spaces import action_decoder, check_action_space


class VecTupleActions(VecEnvWrapper):
    """
    Accept actions for a ``Tuple`` action space either as a flat array ``(n_envs, flat_action_dim)`` (what SB3's
    ``collect_rollouts`` sends) or as a list of tuples (what ``predict`` returns), and pass tuples to the envs.
    ``Box`` components of flat actions are clipped to their bounds, as SB3 clips Gaussian actions.
    The action space seen by the algorithm stays the original ``Tuple``.

    :param venv: a VecEnv with a ``Tuple`` action space
    """

    def __init__(self, venv: VecEnv):
        if not isinstance(venv.action_space, spaces.Tuple):
            raise ValueError(f"VecTupleActions needs a Tuple action space, got {venv.action_space}.")
        check_action_space(venv.action_space)
        super().__init__(venv)
        self._decode = action_decoder(venv.action_space)

    def step_async(self, actions: Any) -> None:
        if isinstance(actions, np.ndarray):
            actions = self._decode(actions.reshape(self.num_envs, -1))
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        return self.venv.step_wait()

    def reset(self) -> Any:
        return self.venv.reset()
