"""
SB3's ``VecNormalize`` with less Python work per step, and the same floats (issue 19).

With one environment (the zoo's MuJoCo entries: ``n_envs: 1``, ``normalize: true``), SB3's ``VecNormalize`` costs
about 70 us per step on these machines, more than the Hopper-v5 simulator's own step: at every step
``np.mean`` and ``np.var`` of a one-row batch for the observation and the return statistics (each through numpy's
Python wrappers), a ``deepcopy`` of the observation that is thrown away, and ``np.clip``'s wrapper.
:class:`CherryVecNormalize` removes that work and nothing else:

- the moments of a one-row batch are written out: numpy's mean of one row is ``0.0 + row`` (its sum starts from
  +0.0 and has one term; divided by 1, exact; in float64 for integer and boolean observations, as ``np.mean``), and its
  variance ``(row - mean) ** 2`` computed as ``np.var`` computes it (``x = arr - mean``, ``x * x``, divided by 1):
  zero, or NaN where the row is not finite; the same bits as numpy's, signed zeros and NaN payloads included. Batches
  of two rows or more, statistics classes with their own ``update`` and other dtypes take the statistics' ``update``
  unchanged. The moments then go through the statistics' own ``update_from_moments`` (SB3's arithmetic);
- ``normalize_obs`` of an array skips the ``deepcopy`` SB3 makes and then replaces (the normalised array is new
  anyway); ``np.clip`` is called as the ufunc it dispatches to.

Observations, rewards, terminal observations and statistics are equal to SB3's bit for bit
(``tests/test_vec_normalize.py`` steps both side by side and compares the bytes); ``benchmarks/env_stack_cost.py``
measures the difference. A saved ``CherryVecNormalize`` is SB3's ``VecNormalize`` (same state), so its files load with
SB3's and rl_zoo3's ``VecNormalize.load`` without sb3_cherry, and sb3_cherry's restricted loader reads them as it reads
SB3's.
"""

import inspect

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecNormalize
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

try:  # the ufunc np.clip calls (numpy's ``_methods._clip``), without its Python wrapper
    from numpy._core.umath import clip as _clip_ufunc  # type: ignore[attr-defined]  # numpy >= 2
except ImportError:  # pragma: no cover (numpy 1.x)
    from numpy.core.umath import clip as _clip_ufunc  # type: ignore[no-redef]


def _clip(values: np.ndarray, bound: float) -> np.ndarray:
    """
    ``np.clip(values, -bound, bound)``: for float arrays, the ufunc ``np.clip`` calls with both bounds given.

    :param values: the values
    :param bound: the bound of their absolute value
    :return: the clipped values
    """
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return _clip_ufunc(values, -bound, bound)
    return np.clip(values, -bound, bound)


def sb3_vec_normalize(vec_normalize: VecNormalize) -> VecNormalize:
    """
    The wrapper to pickle for a statistics file: SB3's ``VecNormalize`` with the state of a :class:`CherryVecNormalize`,
    any other wrapper as it is.

    :param vec_normalize: the normalisation wrapper
    :return: the wrapper to pickle
    """
    return vec_normalize.to_vec_normalize() if isinstance(vec_normalize, CherryVecNormalize) else vec_normalize


def update_running_mean_std(statistics: RunningMeanStd, batch: np.ndarray) -> None:
    """
    ``statistics.update(batch)`` (SB3's ``RunningMeanStd``), with the moments of a one-row batch written out; same
    floats (see the module docstring). Statistics whose class overrides ``update``, and batches that are not arrays
    of booleans, integers or floats, take their own ``update``.

    :param statistics: the running statistics to update
    :param batch: a batch of values, one row per environment
    """
    if (
        type(statistics).update is not RunningMeanStd.update
        or not isinstance(batch, np.ndarray)
        or batch.ndim == 0
        or batch.shape[0] != 1
        or batch.dtype.kind not in "biuf"
    ):
        statistics.update(batch)
        return
    row = batch[0]
    # np.mean reduces integer and boolean input in float64, float input in its own dtype, starting its sum from +0.0
    # (which turns a -0.0 into +0.0 and quiets a signalling NaN): 0.0 + row, divided by 1
    mean = row.astype(np.float64) if row.dtype.kind in "biu" else row + 0.0
    # np.var: x = batch - mean, x * x, summed (one term) and divided by 1
    deviation = row - mean
    statistics.update_from_moments(mean, deviation * deviation, 1)


class CherryVecNormalize(VecNormalize):
    """
    SB3's ``VecNormalize`` (same arguments, attributes and floats), cheaper per step; see the module docstring. The
    default normalisation wrapper of ``sb3-cherry train`` (zoo entries with ``normalize``); any SB3 algorithm can use
    it in place of ``VecNormalize``.

    :param venv: the vectorized environment to wrap
    :param training: whether to update the moving averages
    :param norm_obs: whether to normalize observations
    :param norm_reward: whether to normalize rewards
    :param clip_obs: max absolute value of a normalized observation
    :param clip_reward: max absolute value of a normalized reward
    :param gamma: discount factor of the returns whose variance scales the rewards
    :param epsilon: to avoid division by zero
    :param norm_obs_keys: which keys of a Dict observation to normalize (default: all)
    """

    @classmethod
    def from_vec_normalize(cls, vec_normalize: VecNormalize) -> "CherryVecNormalize":
        """
        A ``CherryVecNormalize`` with the state of an SB3 ``VecNormalize`` (e.g. one read from a file), wrapping the
        same env and sharing its statistics objects.

        :param vec_normalize: the wrapper to take the state of
        :return: the new wrapper
        """
        converted = cls.__new__(cls)
        converted.__dict__.update(vec_normalize.__dict__)
        # what VecEnvWrapper.__init__ records of the class, read by outer wrappers' attribute lookup
        converted.class_attributes = dict(inspect.getmembers(cls))
        return converted

    def to_vec_normalize(self) -> VecNormalize:
        """
        SB3's ``VecNormalize`` with this wrapper's state (the same env and statistics objects): what :meth:`save` and
        sb3_cherry's statistics files pickle, so that they name only SB3's classes.

        :return: the SB3 wrapper
        """
        twin = VecNormalize.__new__(VecNormalize)
        twin.__dict__.update(self.__dict__)
        return twin

    def save(self, save_path: str) -> None:
        """
        SB3's ``VecNormalize.save``, writing SB3's ``VecNormalize`` (loadable by ``VecNormalize.load`` without
        sb3_cherry).

        :param save_path: the file
        """
        self.to_vec_normalize().save(save_path)

    def step_wait(self) -> VecEnvStepReturn:
        """
        SB3's ``VecNormalize.step_wait`` (statistics, then normalised observations, rewards and terminal
        observations), with :func:`update_running_mean_std`.

        :return: observations, rewards, dones and infos, normalised
        """
        obs, rewards, dones, infos = self.venv.step_wait()
        assert isinstance(obs, (np.ndarray, dict))
        self.old_obs = obs
        self.old_reward = rewards
        if self.training and self.norm_obs:
            if isinstance(obs, dict) and isinstance(self.obs_rms, dict):
                for key in self.obs_rms.keys():
                    update_running_mean_std(self.obs_rms[key], obs[key])
            else:
                update_running_mean_std(self.obs_rms, obs)  # type: ignore[arg-type]
        obs = self.normalize_obs(obs)
        if self.training:
            self._update_reward(rewards)
        rewards = self.normalize_reward(rewards)
        for idx, done in enumerate(dones):
            if done and "terminal_observation" in infos[idx]:
                infos[idx]["terminal_observation"] = self.normalize_obs(infos[idx]["terminal_observation"])
        self.returns[dones] = 0
        return obs, rewards, dones, infos

    def _update_reward(self, reward: np.ndarray) -> None:
        """
        SB3's update of the discounted returns and their statistics, with :func:`update_running_mean_std`.

        :param reward: the rewards of this step
        """
        self.returns = self.returns * self.gamma + reward
        update_running_mean_std(self.ret_rms, self.returns)

    def _normalize_obs(self, obs: np.ndarray, obs_rms: RunningMeanStd) -> np.ndarray:
        """
        SB3's ``(obs - mean) / sqrt(var + epsilon)`` clipped to ``clip_obs``.

        :param obs: the observation
        :param obs_rms: its statistics
        :return: the normalised observation (float64 for float64 statistics, as SB3's)
        """
        return _clip((obs - obs_rms.mean) / np.sqrt(obs_rms.var + self.epsilon), self.clip_obs)

    def normalize_obs(self, obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        """
        SB3's ``normalize_obs`` (statistics not updated; the input is not modified): an array observation is not
        deep-copied first, as its normalised copy is a new array.

        :param obs: the observation(s)
        :return: the normalised observation(s), float32
        """
        if self.norm_obs and isinstance(obs, np.ndarray) and isinstance(self.obs_rms, RunningMeanStd):
            return self._normalize_obs(obs, self.obs_rms).astype(np.float32)
        return super().normalize_obs(obs)

    def normalize_reward(self, reward: np.ndarray) -> np.ndarray:
        """
        SB3's ``normalize_reward`` (statistics not updated).

        :param reward: the rewards
        :return: the normalised rewards, float32
        """
        if self.norm_reward:
            reward = _clip(reward / np.sqrt(self.ret_rms.var + self.epsilon), self.clip_reward)
        return reward.astype(np.float32)
