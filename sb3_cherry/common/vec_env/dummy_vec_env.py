"""
SB3's ``DummyVecEnv`` with cheaper copies of what a step returns (issue 19).

At every step SB3's ``DummyVecEnv`` returns ``deepcopy`` s of its observation buffer and of the envs' info dicts, so
that the caller owns what it gets. For the usual infos (``TimeLimit.truncated`` and a few numbers: MuJoCo's
``x_position``, ``reward_ctrl``, ...) and observation arrays, ``deepcopy``'s generic machinery costs ~10 us per step
on one env (Hopper-v5: ~9 % of a ``DummyVecEnv`` + ``Monitor`` step), more than the copying itself.
:class:`CherryDummyVecEnv` returns the same values, as independent objects, with less work:

- an info dict whose keys are strings and whose values are immutable scalars (``bool``, ``int``, ``float``, ``str``,
  ``None``, numpy numbers and booleans) is copied as a new dict holding the same values: a deep copy of an immutable
  scalar is an equal immutable scalar. Any other info (nested dicts such as ``Monitor``'s ``episode``, arrays such as
  ``terminal_observation``, other objects) is deep-copied as SB3 does, with one ``deepcopy`` memo for the step, so
  that objects shared between infos stay shared in the copy, as in SB3's single ``deepcopy`` of the list;
- observation buffers without Python objects are copied with ``ndarray.copy(order="K")``, what ``deepcopy`` does
  for them (buffers of ``object`` dtype keep SB3's ``deepcopy``).

``tests/test_dummy_vec_env.py`` steps it against SB3's ``DummyVecEnv`` (values, dtypes, independence of the returned
objects, shared objects); ``benchmarks/env_stack_cost.py`` times both.
"""

from collections import OrderedDict
from copy import deepcopy
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.util import dict_to_obs

#: the Python types whose instances are immutable scalars (a deep copy returns an equal object)
_IMMUTABLE_SCALARS = frozenset({bool, int, float, str, type(None)})


def _scalar_info(info: Any) -> bool:
    """Whether ``info`` is a plain dict of string keys and immutable scalar values."""
    return type(info) is dict and all(
        type(key) is str and (type(value) in _IMMUTABLE_SCALARS or isinstance(value, (np.number, np.bool_)))
        for key, value in info.items()
    )


def copy_infos(infos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """
    ``deepcopy(infos)``'s values as independent objects, with a shallow copy for dicts of immutable scalars (see the
    module docstring).

    :param infos: the envs' info dicts
    :return: the copies
    """
    memo: dict[int, Any] = {}
    copies = []
    for info in infos:
        if id(info) in memo:  # copied already (the same dict returned by two envs, or met inside an earlier info)
            copies.append(memo[id(info)])
        elif _scalar_info(info):
            memo[id(info)] = copy = dict(info)  # registered, so that a later deepcopy reaching it shares the copy
            copies.append(copy)
        else:
            copies.append(deepcopy(info, memo))
    return copies


class CherryDummyVecEnv(DummyVecEnv):
    """
    SB3's ``DummyVecEnv`` (same arguments, attributes, values and episode handling), with cheaper copies of the
    observations and infos a step returns; see the module docstring. The ``dummy`` VecEnv of ``sb3-cherry train`` and
    the one sb3_cherry's algorithms wrap a gymnasium env in.

    :param env_fns: functions that return the environments to vectorize
    """

    def step_wait(self) -> VecEnvStepReturn:
        """
        SB3's ``DummyVecEnv.step_wait``: step every env, reset those whose episode ended (the last observation in
        ``info["terminal_observation"]``), and return copies of the observations, rewards, dones and infos.

        :return: observations, rewards, dones, infos
        """
        for env_idx in range(self.num_envs):
            obs, self.buf_rews[env_idx], terminated, truncated, self.buf_infos[env_idx] = self.envs[env_idx].step(  # type: ignore[assignment]
                self.actions[env_idx]
            )
            self.buf_dones[env_idx] = terminated or truncated
            self.buf_infos[env_idx]["TimeLimit.truncated"] = truncated and not terminated
            if self.buf_dones[env_idx]:
                self.buf_infos[env_idx]["terminal_observation"] = obs
                obs, self.reset_infos[env_idx] = self.envs[env_idx].reset()
            self._save_obs(env_idx, obs)
        return (self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones), copy_infos(self.buf_infos))

    def _obs_from_buf(self) -> VecEnvObs:
        """
        A copy of the observation buffers, as the observation space's type (``DummyVecEnv._obs_from_buf``).

        :return: the observations
        """
        if not all(isinstance(buffer, np.ndarray) and not buffer.dtype.hasobject for buffer in self.buf_obs.values()):
            return super()._obs_from_buf()
        copies = OrderedDict([(key, buffer.copy(order="K")) for key, buffer in self.buf_obs.items()])
        return dict_to_obs(self.observation_space, copies)
