"""
sb3-contrib's recurrent rollout buffers with sb3_cherry's returns estimators, storing ``Tuple`` actions in their flat
encoding.

SB3's buffers size their action array with ``get_action_dim(action_space)``, which rejects ``Tuple`` spaces: these
subclasses hand them the flat ``Box`` of :func:`sb3_cherry.common.spaces.flat_action_space` instead (the actions that
``collect_rollouts`` stores are already flat). Returns and advantages come from
:class:`~sb3_cherry.common.buffers.ReturnsEstimatorMixin` (GAE, 1-step, n-step, V-trace); everything else, sequence
padding and masks included, is contrib's. ``recompute_returns`` re-evaluates the rollout by replaying each env's
steps in order from the recurrent states stored at its first step (:meth:`_RecurrentReturnsEstimator.replay`), with
the terminal observations of time-limit truncations after their steps (their values re-bootstrap those rewards);
``recentre`` (``collection="async"``) is not supported.
"""

from typing import Any, NoReturn

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.utils import obs_as_tensor

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

    def reset(self) -> None:
        """
        Empty the buffer. ``MultiBinary`` actions are stored as float32 (the values SB3's feed-forward buffer hands
        out; contrib's recurrent buffers gave the Bernoulli log-probability the space's int8, which it refuses).
        """
        super().reset()
        buffer: Any = self  # contrib's buffer, next in the bases
        if isinstance(buffer.action_space, spaces.MultiBinary):
            buffer.actions = buffer.actions.astype(np.float32)

    def _flat_observations(self) -> NoReturn:
        raise NotImplementedError(
            "Recurrent rollouts cannot be re-evaluated step by step (collection='async'): the recurrent states are "
            "replayed per env instead (recompute_returns, see replay())."
        )

    def _env_major(self, name: str) -> Any:
        """The stored array ``name`` in the env-major order of contrib's ``get()``: ``(n_envs * n_steps, ...)``."""
        value = self.__dict__[name]
        if self.generator_ready:  # contrib's get() has flattened it already
            return value
        if isinstance(value, dict):
            return {key: self.swap_and_flatten(v) for key, v in value.items()}  # type: ignore[attr-defined]
        return self.swap_and_flatten(value)  # type: ignore[attr-defined]

    def _first_states(self, hidden: str, cell: str) -> tuple[th.Tensor, th.Tensor]:
        """The recurrent states stored at the first step of the rollout, ``(num_layers, n_envs, hidden_size)`` each."""
        states = []
        for name in (hidden, cell):
            value = self.__dict__[name]
            if self.generator_ready:  # (n_envs * n_steps, num_layers, hidden_size), env-major
                first = value.reshape(self.n_envs, self.buffer_size, *value.shape[1:])[:, 0].swapaxes(0, 1)
            else:  # (n_steps, num_layers, n_envs, hidden_size)
                first = value[0]
            states.append(th.as_tensor(np.ascontiguousarray(first), device=self.device))
        return states[0], states[1]

    def _dones_after(self, last_dones: np.ndarray) -> np.ndarray:
        """``dones[t]`` in ``(n_steps, n_envs)``; contrib's ``get()`` flattens ``episode_starts`` too."""
        episode_starts = self.episode_starts
        if self.generator_ready:
            self.episode_starts = self._unflat(episode_starts)
        try:
            return super()._dones_after(last_dones)
        finally:
            self.episode_starts = episode_starts

    def replay(
        self, policy: RecurrentActorCriticPolicy, last_obs: Any, log_probs: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """
        Evaluate the stored rollout under ``policy`` by replaying each env's steps in order: the recurrent networks
        start from the states stored at the rollout's first step (those of the collection), are reset where an
        episode starts, and carry their states from step to step (computed by ``policy``), as in the collection;
        the observation after the last step continues the same sequence, for the bootstrap value.

        :param policy: the (current) recurrent policy
        :param last_obs: the observation after the last step of each env (the algorithm's ``_last_obs``)
        :param log_probs: also return the log-probabilities of the stored actions
        :return: values and log-probabilities (or None) of the stored steps, each ``(n_envs * n_steps,)`` in the
            env-major order of contrib's ``get()``, and the values of ``last_obs`` ``(n_envs,)``
        """
        values, new_log_probs, last_values, _ = self._replay(policy, last_obs, log_probs)
        return values, new_log_probs, last_values

    def _replayed_truncations(self) -> tuple[np.ndarray, np.ndarray]:
        """The step and the env of each noted truncation that the replay evaluates (none unless re-bootstrapping)."""
        noted = self.truncation_steps if self.rebootstraps_truncations else np.zeros((0, 2), dtype=np.int64)
        return noted[:, 0], noted[:, 1]

    def _replay_layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """
        Where each element goes in the replayed sequences: each env's steps in order, the terminal observation of a
        noted time-limit truncation right after its step (the critic's state there is the one the step led to, as
        contrib's bootstrap computes it; the next step starts an episode, so it does not change what follows), the
        observation after the last step, then padding to a common length.

        :return: the position of each step ``(n_envs, n_steps)``, the env and the position of each replayed
            truncation's terminal observation ``(n_truncations,)`` each, the position of each env's last observation
            ``(n_envs,)``, and the sequence length
        """
        n_envs, n_steps = self.n_envs, self.buffer_size
        truncated = np.zeros((n_envs, n_steps), dtype=np.int64)
        steps, envs = self._replayed_truncations()
        truncated[envs, steps] = 1
        # step t of env e moves right by the number of terminal observations inserted before it
        step_positions = np.arange(n_steps)[None, :] + np.cumsum(truncated, axis=1) - truncated
        terminal_positions = step_positions[envs, steps] + 1
        last_positions = n_steps + truncated.sum(axis=1)
        return step_positions, envs, terminal_positions, last_positions, int(last_positions.max()) + 1

    def _replay(
        self, policy: RecurrentActorCriticPolicy, last_obs: Any, log_probs: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        """
        :meth:`replay`, and the values of the noted truncations' terminal observations (in the order of
        ``truncation_steps``; empty unless ``rebootstraps_truncations``).
        """
        n_envs, n_steps = self.n_envs, self.buffer_size
        observations = self._env_major("observations")
        episode_starts = self._env_major("episode_starts").reshape(n_envs, n_steps)
        last_starts = np.asarray(self.last_dones, dtype=np.float32).reshape(n_envs)
        step_positions, envs, terminal_positions, last_positions, length = self._replay_layout()
        rows = np.arange(n_envs)[:, None]
        terminal_obs: Any = self.truncation_obs if len(terminal_positions) else None

        def sequences(obs: np.ndarray, last: np.ndarray, terminal: np.ndarray | None) -> np.ndarray:
            """The observations laid out as :meth:`_replay_layout` says: ``(n_envs * length, ...)``."""
            shape = obs.shape[1:]
            last = np.asarray(last).reshape(n_envs, *shape)
            out = np.repeat(last[:, None], length, axis=1).astype(np.result_type(obs, last))  # padding: the last obs
            out[rows, step_positions] = obs.reshape(n_envs, n_steps, *shape)
            if terminal is not None:
                # (a Discrete observation is stored as (1,), an env returns it as an int)
                out[envs, terminal_positions] = np.asarray(terminal).reshape(len(terminal_positions), *shape)
            return out.reshape(n_envs * length, *shape)

        if isinstance(observations, dict):
            obs_seq: Any = {
                key: sequences(observations[key], last_obs[key], None if terminal_obs is None else terminal_obs[key])
                for key in observations
            }
        else:
            obs_seq = sequences(observations, last_obs, terminal_obs)
        # padding starts new episodes: terminal observations continue theirs (0)
        starts = np.ones((n_envs, length), dtype=np.float32)
        starts[rows, step_positions] = episode_starts
        starts[envs, terminal_positions] = 0.0
        starts[np.arange(n_envs), last_positions] = last_starts
        states_vf = self._first_states("hidden_states_vf", "cell_states_vf")
        with th.no_grad():
            # n_envs sequences of `length` steps (contrib's _process_sequence: one sequence per row of the states)
            values = policy.predict_values(
                obs_as_tensor(obs_seq, self.device),  # type: ignore[arg-type]
                states_vf,
                th.as_tensor(starts.reshape(-1), device=self.device),
            )
            values_np = values.cpu().numpy().reshape(n_envs, length)
            new_log_probs = None
            if log_probs:
                actions = th.as_tensor(self._env_major("actions"), device=self.device)
                if isinstance(self.original_action_space, spaces.Discrete):
                    actions = actions.long().flatten()
                states = RNNStates(self._first_states("hidden_states_pi", "cell_states_pi"), states_vf)
                _, log_prob, _ = policy.evaluate_actions(
                    obs_as_tensor(observations, self.device),  # type: ignore[arg-type]
                    actions,
                    states,
                    th.as_tensor(episode_starts.reshape(-1), device=self.device),
                )
                new_log_probs = log_prob.cpu().numpy().reshape(-1)
        step_values = values_np[rows, step_positions].reshape(-1).astype(np.float32)
        return step_values, new_log_probs, values_np[np.arange(n_envs), last_positions], values_np[envs, terminal_positions]

    def _reevaluate(self, policy: Any, last_obs: Any, chunk_size: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """
        ``recompute_returns``'s evaluation of the rollout by :meth:`replay` (log-probabilities only for V-trace).

        :param policy: the current recurrent policy
        :param last_obs: observation after the last step (the algorithm's ``_last_obs``)
        :param chunk_size: unused (the replay evaluates each env's whole sequence at once)
        :return: as :meth:`~sb3_cherry.common.buffers.ReturnsEstimatorMixin._reevaluate`
        """
        values, log_probs, last_values, self._replayed_truncation_values = self._replay(
            policy, last_obs, log_probs=self.returns_estimator == "vtrace"
        )
        return values, log_probs, last_values

    def _current_truncation_values(self, policy: Any) -> np.ndarray:
        """
        The current critic's values of the noted terminal observations, from the replay that ``_reevaluate`` has just
        run (a recurrent critic's value needs the state the truncated step led to).

        :param policy: the current policy (already replayed)
        :return: ``(n_truncations,)`` values
        """
        return self._replayed_truncation_values


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
