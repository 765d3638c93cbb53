"""
Recurrent (LSTM or GRU) actor-critic policies with sb3_cherry's action distributions.

:class:`RecurrentCherryActorCriticPolicy` is sb3-contrib's ``RecurrentActorCriticPolicy`` combined with
:class:`~sb3_cherry.common.policies.CherryActorCriticPolicy`, in that method resolution order::

    RecurrentCherryActorCriticPolicy -> CherryActorCriticPolicy -> RecurrentActorCriticPolicy -> ActorCriticPolicy

so that

- ``CherryActorCriticPolicy.__init__`` resolves ``action_distribution`` and hands a flat ``Box`` placeholder to the
  constructors below it for a ``Tuple`` action space; its ``_build`` / ``_get_action_dist_from_latent`` replace the
  distribution (``_build`` calls contrib's ``_build_mlp_extractor``, whose input is the recurrent layer's output);
- contrib's constructor then adds the recurrent layers, and contrib's ``_process_sequence``, ``get_distribution``,
  ``predict_values`` and ``evaluate_actions`` run unchanged;
- ``forward`` / ``predict`` / ``_predict`` are re-pointed to contrib's recurrent signatures (the feed-forward ones of
  ``CherryActorCriticPolicy`` come first in the MRO). For a ``Tuple`` action space, contrib's ``forward`` and ``predict``
  run with the flat placeholder as ``action_space`` (they only use it to reshape and clip the actions, see
  :meth:`RecurrentCherryActorCriticPolicy._flat_action_space`), and ``predict`` turns the flat actions into tuples.

GRU (``rnn_type="gru"``): contrib stores and passes LSTM states as ``(h, c)`` pairs everywhere (``RNNStates``, the
rollout buffers, ``_process_sequence``, ``RecurrentPPO.collect_rollouts``, ``predict``). :class:`LSTMCompatibleGRU` is an
``nn.GRU`` with ``nn.LSTM``'s calling convention: it takes ``(h, c)``, ignores ``c`` and returns ``(h_n, zeros)``.
The cell state of a GRU policy is therefore always a zero tensor carried along (it costs one extra hidden-state array in
the rollout buffer), and all of contrib's machinery works unchanged. With ``rnn_type="lstm"`` (default) the networks are
exactly contrib's.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.torch_layers import CombinedExtractor, NatureCNN
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from sb3_cherry.common.policies import CherryActorCriticPolicy
from sb3_cherry.common.spaces import flat_action_dim, flat_action_space, unflatten_actions

RNN_TYPES = ("lstm", "gru")


class LSTMCompatibleGRU(nn.GRU):
    """
    ``nn.GRU`` with the calling convention of ``nn.LSTM``, so that sb3-contrib's recurrent machinery (which stores
    ``(hidden, cell)`` pairs) runs a GRU unchanged.

    ``forward(input, (h_0, c_0))`` returns ``(output, (h_n, c_n))`` where ``c_0`` is ignored and ``c_n`` is a zero
    tensor shaped like ``h_n``. Parameters and ``state_dict`` keys are those of ``nn.GRU``.
    """

    def forward(  # type: ignore[override]
        self, input: th.Tensor, hx: tuple[th.Tensor, th.Tensor] | th.Tensor | None = None
    ) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
        """
        :param input: ``(seq_len, batch, input_size)``
        :param hx: ``(h_0, c_0)`` each ``(num_layers, batch, hidden_size)`` (``c_0`` is ignored), ``h_0`` alone, or None
        :return: the GRU output and ``(h_n, zeros_like(h_n))``
        """
        if isinstance(hx, (tuple, list)):
            hx = hx[0]
        output, h_n = super().forward(input, hx)
        return output, (h_n, th.zeros_like(h_n))


def make_rnn(rnn_type: str, input_size: int, hidden_size: int, num_layers: int, **kwargs: Any) -> nn.Module:
    """
    Build the recurrent layer of a policy.

    :param rnn_type: ``"lstm"`` (``nn.LSTM``) or ``"gru"`` (:class:`LSTMCompatibleGRU`)
    :param input_size: features dimension
    :param hidden_size: hidden units per layer
    :param num_layers: number of stacked layers
    :param kwargs: other ``nn.LSTM`` / ``nn.GRU`` arguments (``lstm_kwargs``)
    :return: the module
    """
    if rnn_type == "gru":
        return LSTMCompatibleGRU(input_size, hidden_size, num_layers=num_layers, **kwargs)
    return nn.LSTM(input_size, hidden_size, num_layers=num_layers, **kwargs)


class RecurrentCherryActorCriticPolicy(CherryActorCriticPolicy, RecurrentActorCriticPolicy):
    """
    sb3-contrib's ``RecurrentActorCriticPolicy`` with a choice of recurrent cell (LSTM or GRU), a choice of action
    distribution and support for ``Tuple`` action spaces.

    All of ``RecurrentActorCriticPolicy``'s arguments are accepted (``net_arch``, ``activation_fn``, ``ortho_init``,
    ``lstm_hidden_size``, ``n_lstm_layers``, ``shared_lstm``, ``enable_critic_lstm``, ``lstm_kwargs``, ...; the
    ``lstm_`` names keep contrib's spelling and apply to the GRU as well), plus:

    :param observation_space: Observation space
    :param action_space: Action space (Box, Discrete, MultiDiscrete, MultiBinary or a, possibly nested, Tuple of them)
    :param lr_schedule: Learning rate schedule (could be constant)
    :param rnn_type: ``"lstm"`` (default) or ``"gru"``; a GRU policy carries a zero cell state (see the module docstring)
    :param whole_sequences: run each sequence of a training minibatch through the recurrent layers in one call
        instead of contrib's loop over its time steps (:meth:`_process_sequence`): the same forward values, and weight
        gradients equal up to float rounding (autograd sums the per-step contributions in another order; a GRU's
        outputs may differ in the last bit too, and dropout in ``lstm_kwargs`` draws its masks in another order); about
        3x faster forward and backward passes through an LSTM. Off by default (contrib's computation, bit for bit).
    :param action_distribution: ``"normal"``, ``"beta"``, ``"tanh_normal"`` (Box), ``"categorical"``,
        ``"gumbel_softmax"`` (Discrete), ``"multi_categorical"`` (MultiDiscrete), ``"bernoulli"`` (MultiBinary);
        for a Tuple space one name per component, or one name applied to every component that accepts it.
        ``None`` picks the default of each space.
    :param action_distribution_kwargs: extra constructor arguments per distribution name,
        e.g. ``{"gumbel_softmax": {"temperature": 0.5}}``
    :param kwargs: the other ``RecurrentActorCriticPolicy`` arguments
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        *args: Any,
        rnn_type: str = "lstm",
        whole_sequences: bool = False,
        **kwargs: Any,
    ):
        if rnn_type not in RNN_TYPES:
            raise ValueError(f"Unknown rnn_type={rnn_type!r}: choose one of {list(RNN_TYPES)}.")
        if not isinstance(whole_sequences, bool):
            raise ValueError(f"whole_sequences must be True or False, got {whole_sequences!r}.")
        self.rnn_type = rnn_type
        self.whole_sequences = whole_sequences
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)
        if rnn_type == "gru":
            # contrib's constructor builds nn.LSTM layers: replace them (same sizes) and rebuild the optimizer.
            # contrib types these attributes nn.LSTM; LSTMCompatibleGRU has nn.LSTM's call interface (ignores below).
            n_layers = self.lstm_actor.num_layers
            self.lstm_actor = make_rnn("gru", self.features_dim, self.lstm_output_dim, n_layers, **self.lstm_kwargs)  # type: ignore[assignment]
            if self.lstm_critic is not None:
                self.lstm_critic = make_rnn("gru", self.features_dim, self.lstm_output_dim, n_layers, **self.lstm_kwargs)  # type: ignore[assignment]
            self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            rnn_type=self.rnn_type,
            whole_sequences=self.whole_sequences,
            lstm_hidden_size=self.lstm_output_dim,
            n_lstm_layers=self.lstm_actor.num_layers,
            shared_lstm=self.shared_lstm,
            enable_critic_lstm=self.enable_critic_lstm,
            lstm_kwargs=self.lstm_kwargs,
        )
        return data

    #: the one-call path of :meth:`_process_sequence` (a class default as well: policies pickled before the switch)
    whole_sequences: bool = False

    def _process_sequence(  # type: ignore[override]  # (contrib's is a staticmethod; called on the instance)
        self,
        features: th.Tensor,
        lstm_states: tuple[th.Tensor, th.Tensor],
        episode_starts: th.Tensor,
        lstm: nn.LSTM,
    ) -> tuple[th.Tensor, Any]:
        """
        contrib's ``_process_sequence`` (the recurrent layer over ``n_seq`` padded sequences, states reset where an
        episode starts); with ``whole_sequences``, a batch whose episodes start only at the first step of its
        sequences (every training minibatch of contrib's buffer, which splits sequences at episode starts) runs in one
        call of the layer, from the states reset where the first step starts an episode. contrib then loops over the
        time steps (one call per step, states multiplied by ``1 - episode_start``, i.e. by 1 after the first step),
        which computes the same values in ``max length`` times as many calls and autograd nodes.

        :param features: ``(n_seq * max length, features_dim)``, sequence by sequence
        :param lstm_states: the states before each sequence, each ``(n_layers, n_seq, hidden)``
        :param episode_starts: ``(n_seq * max length,)``, 1.0 where an episode starts
        :param lstm: the recurrent layer (an ``nn.LSTM``, or :class:`LSTMCompatibleGRU` with its calling convention)
        :return: the outputs ``(n_seq * max length, hidden)`` and the states after the sequences
        """
        n_seq = lstm_states[0].shape[1]
        starts = episode_starts.reshape((n_seq, -1)).swapaxes(0, 1)  # (max length, n_seq)
        # contrib's code for one step or no episode start (one call of the layer there too) and for an episode start
        # after the first step of a sequence
        if not self.whole_sequences or len(starts) == 1 or bool(th.any(starts[1:] != 0.0)) or not bool(th.any(starts[0])):
            return RecurrentActorCriticPolicy._process_sequence(features, lstm_states, episode_starts, lstm)
        features_sequence = features.reshape((n_seq, -1, lstm.input_size)).swapaxes(0, 1)
        keep = (1.0 - starts[0]).view(1, n_seq, 1)  # contrib's reset at the first step
        output, states = lstm(features_sequence, (keep * lstm_states[0], keep * lstm_states[1]))
        return th.flatten(output.transpose(0, 1), start_dim=0, end_dim=1), states

    @contextmanager
    def _flat_action_space(self) -> Iterator[None]:
        """
        For a ``Tuple`` action space, let contrib's code see the flat ``Box`` placeholder as ``action_space``:
        ``forward`` and ``predict`` only use it to reshape actions to ``(batch, *action_space.shape)`` and to clip
        ``Box`` actions, which with the unbounded placeholder gives the flat encoding, unclipped.
        """
        if not isinstance(self.action_space, spaces.Tuple):
            yield
            return
        tuple_space = self.action_space
        self.action_space = flat_action_space(tuple_space)
        try:
            yield
        finally:
            self.action_space = tuple_space

    def forward(  # type: ignore[override]
        self,
        obs: th.Tensor,
        lstm_states: RNNStates,
        episode_starts: th.Tensor,
        deterministic: bool = False,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, RNNStates]:
        """
        Forward pass in all the networks (contrib's ``forward``; flat actions ``(batch, flat_action_dim)`` for Tuple).

        :param obs: Observation
        :param lstm_states: The last hidden and cell states of the recurrent layers
        :param episode_starts: Whether the observations correspond to new episodes (the states are reset then)
        :param deterministic: Whether to sample or use deterministic actions
        :return: action, value and log probability of the action, new states
        """
        with self._flat_action_space():
            return RecurrentActorCriticPolicy.forward(self, obs, lstm_states, episode_starts, deterministic)

    _predict = RecurrentActorCriticPolicy._predict  # type: ignore[assignment]

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[Any, tuple[np.ndarray, ...] | None]:
        """
        Get the policy action from an observation and the recurrent state (contrib's ``predict``).

        For a Tuple action space the action is a tuple the environment accepts (``Box`` components clipped to their
        bounds); for a batch of observations, a list of such tuples, which ``VecEnv.step`` accepts.

        :param observation: the input observation
        :param state: the last ``(hidden, cell)`` states, each ``(n_layers, n_envs, hidden_size)`` (None: zeros)
        :param episode_start: whether each observation starts an episode (the state is reset then); None: no reset
        :param deterministic: return the mode instead of a sample
        :return: the action(s) and the next state
        """
        if not isinstance(self.action_space, spaces.Tuple):
            return RecurrentActorCriticPolicy.predict(self, observation, state, episode_start, deterministic)
        tuple_space = self.action_space
        with self._flat_action_space():
            flat, state = RecurrentActorCriticPolicy.predict(self, observation, state, episode_start, deterministic)
        actions = unflatten_actions(tuple_space, flat.reshape(-1, flat_action_dim(tuple_space)))
        # contrib squeezes the batch dimension for a single, non-vectorized observation
        return (actions if flat.ndim == 2 else actions[0]), state


class RecurrentCherryActorCriticCnnPolicy(RecurrentCherryActorCriticPolicy):
    """
    :class:`RecurrentCherryActorCriticPolicy` with SB3's ``NatureCNN`` features extractor (image observations).

    :param observation_space: Observation space (images)
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule
    :param kwargs: the other :class:`RecurrentCherryActorCriticPolicy` arguments
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class RecurrentCherryMultiInputActorCriticPolicy(RecurrentCherryActorCriticPolicy):
    """
    :class:`RecurrentCherryActorCriticPolicy` with SB3's ``CombinedExtractor`` (Dict observations).

    :param observation_space: Observation space (``Dict``)
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule
    :param kwargs: the other :class:`RecurrentCherryActorCriticPolicy` arguments
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", CombinedExtractor)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class GruCherryActorCriticPolicy(RecurrentCherryActorCriticPolicy):
    """
    :class:`RecurrentCherryActorCriticPolicy` with ``rnn_type="gru"`` by default.

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule
    :param kwargs: the other :class:`RecurrentCherryActorCriticPolicy` arguments
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("rnn_type", "gru")
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class GruCherryActorCriticCnnPolicy(RecurrentCherryActorCriticCnnPolicy):
    """
    :class:`RecurrentCherryActorCriticCnnPolicy` with ``rnn_type="gru"`` by default.

    :param observation_space: Observation space (images)
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule
    :param kwargs: the other :class:`RecurrentCherryActorCriticPolicy` arguments
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("rnn_type", "gru")
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class GruCherryMultiInputActorCriticPolicy(RecurrentCherryMultiInputActorCriticPolicy):
    """
    :class:`RecurrentCherryMultiInputActorCriticPolicy` with ``rnn_type="gru"`` by default.

    :param observation_space: Observation space (``Dict``)
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule
    :param kwargs: the other :class:`RecurrentCherryActorCriticPolicy` arguments
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("rnn_type", "gru")
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


MlpLstmPolicy = RecurrentCherryActorCriticPolicy
CnnLstmPolicy = RecurrentCherryActorCriticCnnPolicy
MultiInputLstmPolicy = RecurrentCherryMultiInputActorCriticPolicy
MlpGruPolicy = GruCherryActorCriticPolicy
CnnGruPolicy = GruCherryActorCriticCnnPolicy
MultiInputGruPolicy = GruCherryMultiInputActorCriticPolicy
