import contextlib
import math
import os
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, TypeVar, cast

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, Schedule
from stable_baselines3.common.utils import obs_as_tensor, safe_mean
from stable_baselines3.common.vec_env import (
    VecEnv,
    VecEnvWrapper,
    VecFrameStack,
    VecNormalize,
    VecTransposeImage,
    is_vecenv_wrapped,
)

from sb3_cherry.bco.policies import (
    CnnPolicy,
    InverseDynamicsModel,
    MlpPolicy,
    MultiInputPolicy,
    distribution_actions,
    flat_columns,
)
from sb3_cherry.common.finite import (
    UpdateSnapshot,
    check_finite_normalization,
    check_finite_observation,
    check_finite_raw_step,
    check_finite_step,
    check_finite_weights,
    check_update,
    non_finite_rows,
    undone_if_raised,
)
from sb3_cherry.common.policies import CherryActorCriticPolicy
from sb3_cherry.common.save_util import AtomicSaveAlgorithm
from sb3_cherry.common.spaces import check_actions_start_at_zero, flatten_action
from sb3_cherry.common.speed import distribution_validation
from sb3_cherry.common.vec_env.tuple_actions import VecTupleActions
from sb3_cherry.demos import DemoTransitions, RawTerminalObservations, demos_to_transitions, load_demos

SelfBCO = TypeVar("SelfBCO", bound="BCO")

Observation = np.ndarray | dict[str, np.ndarray]


def _obs_concat(parts: Sequence[Observation]) -> Observation:
    if isinstance(parts[0], dict):
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}  # type: ignore[index]
    return np.concatenate(parts)  # type: ignore[arg-type]


def _obs_take(obs: Observation, index: np.ndarray) -> Observation:
    if isinstance(obs, dict):
        return {key: value[index] for key, value in obs.items()}
    return obs[index]


def _obs_copy(obs: Observation) -> Observation:
    if isinstance(obs, dict):
        return {key: np.array(value) for key, value in obs.items()}
    return np.array(obs)


def _tensor_take(obs: PyTorchObs, index: th.Tensor) -> PyTorchObs:
    if isinstance(obs, dict):
        return {key: value[index] for key, value in obs.items()}
    return obs[index]


class _TransitionStore:
    """The agent's own transitions ``(s, a, s')`` (inverse model data), split into a training and a held-out part."""

    def __init__(self) -> None:
        self._chunks: dict[bool, list[tuple[Observation, Observation, np.ndarray]]] = {False: [], True: []}

    def add(self, obs: Observation, next_obs: Observation, actions: np.ndarray, held_out: np.ndarray) -> None:
        """
        Add a batch of transitions.

        :param obs: observations ``s`` (batch first)
        :param next_obs: next observations ``s'``
        :param actions: flat actions
        :param held_out: boolean mask of the transitions kept for validation
        """
        for flag in (False, True):
            index = np.flatnonzero(held_out == flag)
            if len(index) > 0:
                self._chunks[flag].append((_obs_take(obs, index), _obs_take(next_obs, index), actions[index]))

    def size(self, held_out: bool) -> int:
        return sum(len(chunk[2]) for chunk in self._chunks[held_out])

    def __len__(self) -> int:
        return self.size(False) + self.size(True)

    def get(self, held_out: bool) -> tuple[Observation, Observation, np.ndarray] | None:
        """
        All transitions of one part (consolidated into one chunk), or None when empty.

        :param held_out: the held-out part instead of the training part
        :return: ``(obs, next_obs, actions)``
        """
        chunks = self._chunks[held_out]
        if not chunks:
            return None
        if len(chunks) > 1:
            merged = (
                _obs_concat([c[0] for c in chunks]),
                _obs_concat([c[1] for c in chunks]),
                np.concatenate([c[2] for c in chunks]),
            )
            self._chunks[held_out] = [merged]
        return self._chunks[held_out][0]


class BCO(AtomicSaveAlgorithm):
    """
    Behavioral Cloning from Observation, BCO(alpha): imitation from state-only demonstrations.

    An inverse dynamics model ``p(a | s, s')`` is learnt from the agent's own interactions (first
    ``n_pre_interactions`` steps of a uniformly random policy), used to label the demonstrations' state pairs
    ``(s, s')`` with actions (its mode), and the policy is behaviour-cloned on the labelled pairs by maximising the
    log-likelihood ``evaluate_actions`` returns (so every sb3_cherry distribution, Beta and Tuple included, works).
    With ``alpha > 0`` (BCO(alpha)), each further round collects ``alpha * |I_pre|`` interactions with the current
    policy (``|I_pre|`` = the pre-demonstration interactions, ``n_pre_interactions``), adds them to the inverse model's
    data and repeats, until ``learn``'s budget is spent. This is alpha as Torabi et al. define it (Algorithm 1: a
    round's post-demonstration interactions are a fraction of ``|I_pre|``); earlier sb3_cherry versions collected
    ``alpha * |demonstration transitions|`` (the same rounds when the demonstrations hold ``n_pre_interactions``
    transitions, as 20 CartPole episodes of 500 steps with the default 10k do).
    The defaults (``alpha=0.1``, ``n_pre_interactions=10_000``: rounds of 1000 policy steps) spend the whole budget;
    with ``alpha=0`` (plain BCO) ``learn`` stops after the pre-demonstration phase and warns if budget is left.

    The demonstrations' actions (stored in a file or given in memory, tuples included) are not read: only the
    observations are used. A non-finite observation
    from the environment raises a ValueError (env index and ``num_timesteps`` in the message), and a round whose
    losses or parameters turn non-finite is undone and raises (``check_finite``, as for the on-policy algorithms;
    rewards are not used, so not checked).
    ``learn(total_timesteps)`` counts environment interactions (random and policy steps).

    Logged per round: ``bco/inverse_loss`` (training NLL of the inverse model), ``bco/inverse_val_loss``,
    ``bco/inverse_accuracy`` (discrete action columns) and ``bco/inverse_mae`` (continuous columns) on held-out agent
    transitions, ``bco/bc_loss`` (cloning NLL), and ``rollout/ep_rew_mean`` (after the first round: episodes of the
    policy only, an episode that began in the random phase and ended in the policy's is not reported; the first round
    reports the random policy's episodes). Steps that restarted a worker of a
    :class:`~sb3_cherry.common.vec_env.RayVecEnv` (``info["worker_restarted"]``) count as interactions but are not
    stored as transitions.

    Paper: https://arxiv.org/abs/1805.01954 (Torabi, Warnell and Stone, "Behavioral Cloning from Observation", 2018)
    Code: this implementation (cherry_rl's BCO for the algorithm structure; no official code was released)

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy, ...). Its actor is cloned; its
        value head is unused.
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param demonstrations: a demonstration file (:func:`sb3_cherry.demos.record_demos`, ``sb3-cherry record``) or a
        list of trajectories (imitation's or :class:`sb3_cherry.demos.DemoTrajectory`). Required by ``learn``; a path
        is saved with the model, a list is not (pass ``demonstrations=`` to ``load`` to keep learning)
    :param alpha: BCO(alpha)'s post-demonstration interactions per round, as a fraction of the pre-demonstration
        interactions ``|I_pre|`` (Torabi et al. 2018, Algorithm 1; 0: plain BCO, one round after the pre-demonstration
        phase, leaving the rest of ``learn``'s budget unused)
    :param n_pre_interactions: interactions of the uniformly random policy collected first (pre-demonstration phase)
    :param learning_rate: learning rate of the policy and of the inverse model, it can be a function of the current
        progress remaining (from 1 to 0)
    :param batch_size: minibatch size of both regressions
    :param n_epochs_inverse: epochs over the agent's transitions when fitting the inverse model, per round
    :param n_epochs_bc: epochs over the labelled demonstrations when cloning, per round
    :param inverse_model_kwargs: arguments of :class:`sb3_cherry.bco.policies.InverseDynamicsModel` (``net_arch``,
        ``activation_fn``, ``action_distribution``, ``log_std_init``, ``use_difference``, ``optimizer_kwargs``, ...);
        the features extractor defaults to the policy's
    :param ent_coef: entropy bonus of the cloning loss (``loss = -log_prob - ent_coef * entropy``)
    :param validation_fraction: fraction of the agent's transitions held out to measure the inverse model
        (``bco/inverse_accuracy``, ``bco/inverse_mae``, ``bco/inverse_val_loss``)
    :param deterministic_collection: collect post-demonstration interactions with the policy's mode instead of samples
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation, e.g.
        ``dict(action_distribution="beta")``
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    #: integer arguments the constructor also takes as whole-number floats (a YAML ``!!float 1e4``)
    config_whole_floats: ClassVar[frozenset[str]] = frozenset({"n_pre_interactions"})
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    #: Saved arrays that ``_setup_model`` recomputes (not unpickled by a safe load)
    setup_rebuilds: ClassVar[frozenset[str]] = frozenset({"_flat_low", "_flat_high", "_discrete_columns"})
    #: Keyword-argument dicts a safe load rebuilds like ``policy_kwargs`` (classes looked up in the same allow-list)
    kwargs_entries: ClassVar[frozenset[str]] = frozenset({"inverse_model_kwargs"})
    policy: CherryActorCriticPolicy
    inverse_model: InverseDynamicsModel
    #: raise at the first non-finite observation, undo a round with non-finite losses (see sb3_cherry.common.finite)
    check_finite: bool = True

    def __init__(
        self,
        policy: str | type[CherryActorCriticPolicy],
        env: GymEnv | str,
        demonstrations: str | os.PathLike | Sequence[Any] | None = None,
        alpha: float = 0.1,
        n_pre_interactions: int = 10_000,
        learning_rate: float | Schedule = 1e-3,
        batch_size: int = 256,
        n_epochs_inverse: int = 10,
        n_epochs_bc: int = 10,
        inverse_model_kwargs: dict[str, Any] | None = None,
        ent_coef: float = 0.0,
        validation_fraction: float = 0.1,
        deterministic_collection: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=True,
            monitor_wrapper=True,
            seed=seed,
            supported_action_spaces=(spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Tuple),
        )
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be >= 0 (0: plain BCO without post-demonstration rounds), got {alpha}.")
        if n_pre_interactions < 0 or float(n_pre_interactions) != int(n_pre_interactions):
            raise ValueError(f"n_pre_interactions must be an integer >= 0, got {n_pre_interactions}.")
        if alpha > 0 and n_pre_interactions == 0:
            raise ValueError(
                f"alpha={alpha} collects alpha * n_pre_interactions policy steps per round (Torabi et al. 2018), but "
                "n_pre_interactions=0: give n_pre_interactions > 0, or alpha=0."
            )
        for name, value in (("batch_size", batch_size), ("n_epochs_inverse", n_epochs_inverse), ("n_epochs_bc", n_epochs_bc)):
            if value < 1 or float(value) != int(value):
                raise ValueError(f"{name} must be an integer >= 1, got {value}.")
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}.")
        self.demonstrations = str(demonstrations) if isinstance(demonstrations, (str, os.PathLike)) else demonstrations
        self.alpha = float(alpha)
        self.n_pre_interactions = int(n_pre_interactions)
        self.batch_size = int(batch_size)
        self.n_epochs_inverse = int(n_epochs_inverse)
        self.n_epochs_bc = int(n_epochs_bc)
        self.inverse_model_kwargs = dict(inverse_model_kwargs or {})
        self.ent_coef = float(ent_coef)
        self.validation_fraction = float(validation_fraction)
        self.deterministic_collection = bool(deterministic_collection)
        self._n_rounds = 0
        # Runtime state, not saved: the agent's transitions and how much of the pre-demonstration phase they hold
        self._agent_data = _TransitionStore()
        self._n_pre_collected = 0
        # transitions stored since the last round (a run checkpoint records it): a learn starts with a round only then,
        # not again on the data of the last one (a second learn call, a run resumed after a round)
        self._round_pending = False
        self._demo_cache: tuple[Any, DemoTransitions] | None = None
        self._episodes_from_random_policy = False
        # per env, its episode began in the random phase and runs on in the policy's: not reported in rollout/ep_*
        self._random_episode_running: np.ndarray | None = None

        if env is not None:
            # the inverse model's labels and the flat action bounds are not written or tested for shifted spaces
            check_actions_start_at_zero(self.action_space, "BCO")
            self._check_env_stack()
        if self.demonstrations is not None and env is not None:
            self._demo_transitions()  # fail now, not after the pre-demonstration phase
        if _init_setup_model:
            self._setup_model()

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        env = BaseAlgorithm._wrap_env(env, verbose, monitor_wrapper)
        if isinstance(env.action_space, spaces.Tuple) and not is_vecenv_wrapped(env, VecTupleActions):
            env = VecTupleActions(env)
        return env

    def _setup_model(self) -> None:
        if isinstance(self.demonstrations, os.PathLike):  # BCO.load(..., demonstrations=pathlib.Path(...)): a str, as
            self.demonstrations = os.fspath(self.demonstrations)  # the constructor stores it (saved with the model)
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        inverse_kwargs: dict[str, Any] = {
            "features_extractor_class": self.policy.features_extractor_class,
            "features_extractor_kwargs": self.policy.features_extractor_kwargs,
            "normalize_images": self.policy.normalize_images,
            **self.inverse_model_kwargs,
        }
        self.inverse_model = InverseDynamicsModel(
            self.observation_space, self.action_space, self.lr_schedule, **inverse_kwargs
        )
        self.inverse_model = self.inverse_model.to(self.device)
        self._flat_low, self._flat_high, self._discrete_columns = flat_columns(self.action_space)

    def _excluded_save_params(self) -> list[str]:
        excluded = [
            *super()._excluded_save_params(),
            "_agent_data",
            "_n_pre_collected",
            "_round_pending",
            "_demo_cache",
            "_update_snapshot",
            "_random_episode_running",
        ]
        if not isinstance(self.demonstrations, str):
            excluded.append("demonstrations")  # trajectories given in memory are not saved (a path is)
        return excluded

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer", "inverse_model", "inverse_model.optimizer"], []

    # ------------------------------------------------------------------------------------------------ demonstrations
    def _check_env_stack(self) -> None:
        """
        Refuse wrappers that change observations above a VecNormalize: BCO stores the VecNormalize's unnormalised
        observations (as ``record_demos`` records them), which the policy above such a wrapper does not see.

        :raises ValueError: naming the wrapper and what to do
        """
        if self.env is None or self._vec_normalize_env is None:
            return
        env: VecEnv = self.env
        while env is not self._vec_normalize_env and isinstance(env, VecEnvWrapper):
            if isinstance(env, VecFrameStack):
                raise ValueError(
                    "BCO does not support a VecFrameStack above a VecNormalize (rl_zoo3's frame_stack with normalize): "
                    "it stores the VecNormalize's unnormalised, unstacked observations, while the policy (and a "
                    "recording from this env) sees stacked ones. Stack below the normalisation (VecNormalize(VecFrameStack("
                    "env))), or normalise in a gymnasium wrapper."
                )
            if isinstance(env, VecTransposeImage):
                raise ValueError(
                    "BCO does not support image observations with a VecNormalize (SB3 puts its VecTransposeImage above "
                    "it): BCO stores the VecNormalize's channel-last observations, while the policy and the inverse "
                    "model see channel-first ones. Train on images without normalize (pixel values are scaled by the "
                    "CNN policies already)."
                )
            env = env.venv

    def _demo_transitions(self) -> DemoTransitions:
        """The demonstrations as transitions (loaded once per ``demonstrations`` object), checked against the env."""
        if self.demonstrations is None:
            raise ValueError(
                "BCO needs demonstrations: pass demonstrations=<a file written by sb3_cherry.demos.record_demos or "
                "`sb3-cherry record`> or a list of trajectories (BCO.load(..., demonstrations=...) for a loaded model)."
            )
        if self._demo_cache is not None and self._demo_cache[0] is self.demonstrations:
            return self._demo_cache[1]
        if isinstance(self.demonstrations, str):
            source = self.demonstrations
            transitions = demos_to_transitions(load_demos(self.demonstrations), include_actions=False)
        else:
            source = "the given trajectories"
            # BCO labels the demonstrations itself: their actions (tuples for Tuple spaces, placeholders) are not read
            transitions = demos_to_transitions(list(self.demonstrations), include_actions=False)
        transitions = self._match_env_layout(transitions)
        _check_demo_observations(transitions.obs, self.observation_space, source)
        _check_demo_finite(transitions, source)  # a file's are checked at load, trajectories in memory here
        self._demo_cache = (self.demonstrations, transitions)
        return transitions

    def _match_env_layout(self, transitions: DemoTransitions) -> DemoTransitions:
        """Channel-last demonstration images become channel-first when SB3 wrapped the env in ``VecTransposeImage``."""
        if self.env is None or not is_vecenv_wrapped(self.env, VecTransposeImage):
            return transitions

        def transpose(obs: Observation) -> Observation:
            if isinstance(obs, dict):
                assert isinstance(self.observation_space, spaces.Dict)
                return {
                    key: (
                        VecTransposeImage.transpose_image(value)
                        if value.shape[1:] != self.observation_space[key].shape
                        else value
                    )
                    for key, value in obs.items()
                }
            return VecTransposeImage.transpose_image(obs) if obs.shape[1:] != self.observation_space.shape else obs

        return DemoTransitions(
            transpose(transitions.obs), transitions.acts, transpose(transitions.next_obs), transitions.dones
        )

    # -------------------------------------------------------------------------------------------------- inference
    def _to_tensor(self, obs: Observation) -> PyTorchObs:
        """Raw env observations -> tensors on the device (normalised with the VecNormalize statistics, if any)."""
        if self._vec_normalize_env is not None:
            obs = self._vec_normalize_env.normalize_obs(obs)
        return obs_as_tensor(obs, self.device)  # type: ignore[arg-type]

    def infer_actions(self, obs: Observation, next_obs: Observation) -> np.ndarray:
        """
        Label state pairs with the inverse dynamics model (its mode), ``Box`` components clipped to their bounds.

        :param obs: raw observations ``s`` (batch first; not normalised, as stored in demonstration files)
        :param next_obs: raw next observations ``s'``
        :return: flat actions, shape ``(batch, flat_action_dim)`` (see :mod:`sb3_cherry.common.spaces`)
        """
        self.inverse_model.set_training_mode(False)
        labels = []
        with th.no_grad():
            for index in self._eval_chunks(obs):
                s, s_next = self._to_tensor(_obs_take(obs, index)), self._to_tensor(_obs_take(next_obs, index))
                labels.append(self.inverse_model(s, s_next).cpu().numpy())
        return np.clip(np.concatenate(labels), self._flat_low, self._flat_high).astype(np.float32)

    def _eval_chunks(self, obs: Observation) -> Iterable[np.ndarray]:
        """Consecutive index chunks of a batch evaluated without gradient (bounded memory for large image sets)."""
        n = len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)
        chunk = max(self.batch_size, 4096)
        for start in range(0, n, chunk):
            yield np.arange(start, min(start + chunk, n))

    # --------------------------------------------------------------------------------------------------- training
    def _minibatches(self, n: int) -> Iterable[th.Tensor]:
        permutation = th.randperm(n, device=self.device)
        for start in range(0, n, self.batch_size):
            yield permutation[start : start + self.batch_size]

    def _train_inverse_model(self) -> float:
        """Fit the inverse model on the agent's training transitions; return the last epoch's mean NLL."""
        data = self._agent_data.get(held_out=False)
        if data is None:
            data = self._agent_data.get(held_out=True)  # only held-out data so far (tiny budgets): train on it
        assert data is not None
        obs, next_obs = self._to_tensor(data[0]), self._to_tensor(data[1])
        actions = th.as_tensor(data[2], device=self.device)
        self.inverse_model.set_training_mode(True)
        losses: list[float] = []
        for _ in range(self.n_epochs_inverse):
            losses = []
            for index in self._minibatches(len(actions)):
                log_prob = self.inverse_model.log_prob(_tensor_take(obs, index), _tensor_take(next_obs, index), actions[index])
                loss = -log_prob.mean()
                self.inverse_model.optimizer.zero_grad()
                loss.backward()
                self.inverse_model.optimizer.step()
                losses.append(loss.item())
                self._n_updates += 1
        return float(np.mean(losses))

    def _log_inverse_validation(self) -> None:
        """Held-out negative log-likelihood, accuracy (discrete columns) and mean absolute error (continuous columns)."""
        data = self._agent_data.get(held_out=True)
        if data is None:
            return
        self.inverse_model.set_training_mode(False)
        obs, next_obs, actions = data
        predicted = self.infer_actions(obs, next_obs)
        log_prob_sum = 0.0
        with th.no_grad():
            for index in self._eval_chunks(obs):
                log_prob_sum += (
                    self.inverse_model.log_prob(
                        self._to_tensor(_obs_take(obs, index)),
                        self._to_tensor(_obs_take(next_obs, index)),
                        th.as_tensor(actions[index], device=self.device),
                    )
                    .sum()
                    .item()
                )
        self.logger.record("bco/inverse_val_loss", -log_prob_sum / len(actions))
        if self._discrete_columns.any():
            columns = self._discrete_columns
            self.logger.record("bco/inverse_accuracy", float(np.mean(np.rint(predicted[:, columns]) == actions[:, columns])))
        if (~self._discrete_columns).any():
            columns = ~self._discrete_columns
            self.logger.record("bco/inverse_mae", float(np.mean(np.abs(predicted[:, columns] - actions[:, columns]))))

    def _behavior_clone(self, obs: Observation, labels: np.ndarray) -> float:
        """Maximise the policy's log-likelihood of the labels; return the last epoch's mean loss."""
        obs_tensor = self._to_tensor(obs)
        if self.policy.squash_output:
            # a squashed (tanh) policy's distribution is over [-1, 1] (SB3 rescales its actions for the env): labels
            # in the env's scale are rescaled, and kept off the bounds, where tanh's inverse is infinite
            eps = np.finfo(np.float32).eps
            labels = np.clip(self.policy.scale_action(labels), -1.0 + eps, 1.0 - eps).astype(np.float32)
        actions = th.as_tensor(labels, device=self.device)
        self.policy.set_training_mode(True)
        losses: list[float] = []
        for _ in range(self.n_epochs_bc):
            losses = []
            for index in self._minibatches(len(actions)):
                _, log_prob, entropy = self.policy.evaluate_actions(
                    _tensor_take(obs_tensor, index), distribution_actions(self.action_space, actions[index])
                )
                loss = -log_prob.mean()
                if self.ent_coef != 0.0 and entropy is not None:
                    loss = loss - self.ent_coef * entropy.mean()
                self.policy.optimizer.zero_grad()
                loss.backward()
                self.policy.optimizer.step()
                losses.append(loss.item())
                self._n_updates += 1
        self.policy.set_training_mode(False)
        return float(np.mean(losses))

    def train(self) -> None:
        """
        One BCO round: fit the inverse model on the agent's transitions, label the demonstrations with it and
        behaviour-clone the policy on the labels.
        """
        self._update_learning_rate([self.policy.optimizer, self.inverse_model.optimizer])
        snapshot = self.__dict__.get("_update_snapshot")
        if self.check_finite:
            if snapshot is None:
                snapshot = self._update_snapshot = UpdateSnapshot(
                    [self.policy, self.inverse_model], [self.policy.optimizer, self.inverse_model.optimizer]
                )
            snapshot.take()
        counters = lambda: (self.num_timesteps, self._n_updates)  # noqa: E731
        checked = self.check_finite and snapshot is not None
        undone = undone_if_raised(snapshot, "BCO", counters) if checked else contextlib.nullcontext()  # type: ignore[arg-type]
        # a round that raises midway is undone; without torch's argument validation (as the on-policy algorithms
        # train), a diverged inverse model's zero scales give a non-finite loss, named below, not torch's error
        with undone, distribution_validation(False) if checked else contextlib.nullcontext():
            inverse_loss = self._train_inverse_model()
            self._log_inverse_validation()
            demos = self._demo_transitions()
            labels = self.infer_actions(demos.obs, demos.next_obs)
            bc_loss = self._behavior_clone(demos.obs, labels)
        if self.check_finite:
            losses = {"bco/inverse_loss": inverse_loss, "bco/bc_loss": bc_loss}
            check_update(snapshot, losses, "BCO", self.num_timesteps, self._n_updates)  # type: ignore[arg-type]
        self._n_rounds += 1
        self.logger.record("bco/inverse_loss", inverse_loss)
        self.logger.record("bco/bc_loss", bc_loss)
        self.logger.record("bco/round", self._n_rounds)
        self.logger.record("bco/n_agent_transitions", len(self._agent_data))
        self.logger.record("bco/n_demo_transitions", len(demos))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    # ------------------------------------------------------------------------------------------------- collection
    def next_rollout_steps(self) -> int:
        """
        The environment steps of the next collection: what is left of the random pre-demonstration phase, else one
        round (``alpha * n_pre_interactions``), in whole steps of every env. The chunk stop rule of
        :class:`~sb3_cherry.common.checkpoint.RunCheckpointCallback` reads it (the rollout it would measure first is
        the random phase, longer than the rounds).

        :return: steps (0 when no round follows: ``alpha=0`` after the random phase)
        """
        n_envs = self.n_envs or 1
        if self._n_pre_collected < self.n_pre_interactions:
            wanted = self.n_pre_interactions - self._n_pre_collected
        elif self.alpha > 0:
            wanted = max(1, math.ceil(self.alpha * self.n_pre_interactions))
        else:
            return 0
        return math.ceil(wanted / n_envs) * n_envs

    def _collect(self, n_steps: int, callback: BaseCallback, use_policy: bool) -> bool:
        """
        Step every env ``n_steps`` times with the random policy or the current policy; store the transitions.

        :return: False if the callback asked to stop
        """
        assert self.env is not None and self._last_obs is not None
        if use_policy and self._episodes_from_random_policy:
            # rollout/ep_rew_mean reports the policy's episodes, not the random phase's, nor those that began in it
            self.ep_info_buffer.clear()  # type: ignore[union-attr]
            self.ep_success_buffer.clear()  # type: ignore[union-attr]
            self._episodes_from_random_policy = False
            started = self._last_episode_starts
            running = np.ones(self.env.num_envs, dtype=bool) if started is None else ~np.asarray(started, dtype=bool)
            self._random_episode_running = running
        self._episodes_from_random_policy |= not use_policy
        tuple_actions = isinstance(self.action_space, spaces.Tuple)
        self.policy.set_training_mode(False)
        if self.check_finite:
            check_finite_observation(
                self._last_obs, "observation", f"reset / rollout start, num_timesteps={self.num_timesteps}"
            )
        if use_policy and self.policy.use_sde:
            self.policy.reset_noise(self.env.num_envs)  # a new exploration matrix per round, at the current std
        callback.on_rollout_start()
        vec_normalize = self._vec_normalize_env
        recorder = RawTerminalObservations(vec_normalize) if vec_normalize is not None else None
        for _ in range(n_steps):
            if use_policy:
                actions, _ = self.policy.predict(self._last_obs, deterministic=self.deterministic_collection)
                rows = list(actions)
            else:
                rows = [self.action_space.sample() for _ in range(self.env.num_envs)]
                actions = rows if tuple_actions else np.stack(rows)
            flat = np.stack([flatten_action(self.action_space, row) for row in rows]).astype(np.float32)
            # through a VecNormalize, the raw terminal observations are read below it, during the step only
            with recorder.attached() if recorder is not None else contextlib.nullcontext():
                new_obs, rewards, dones, infos = self.env.step(actions)
            new_obs = cast(Observation, new_obs)  # VecEnvObs also allows tuples, which SB3 policies do not take
            self.num_timesteps += self.env.num_envs
            if not use_policy:
                self._n_pre_collected += self.env.num_envs
            if self.check_finite:  # before the policy or the inverse model sees it (rewards are not used)
                check_finite_step(new_obs, None, dones, infos, self.num_timesteps)
                if (
                    vec_normalize is not None and recorder is not None
                ):  # the raw values BCO stores (frozen statistics clip inf)
                    _check_raw_step(vec_normalize, recorder.terminal_observations, self.num_timesteps)
            # stored before the callbacks run: a callback that stops training must not leave this step counted but
            # unstored, or the next (s, a, s') would span two steps
            self._update_episode_stats(infos, dones)
            raw_terminals = recorder.terminal_observations if recorder is not None else None
            self._store(new_obs, dones, infos, flat, raw_terminals)
            self._round_pending = True
            self._last_obs = new_obs
            self._last_episode_starts = dones
            callback.update_locals(locals())
            if not callback.on_step():
                return False
        if self.check_finite:  # statistics the per-step checks cannot see (normalised values stay finite)
            check_finite_normalization(
                self._vec_normalize_env, f"the end of the collection, num_timesteps={self.num_timesteps}"
            )
        callback.on_rollout_end()
        return True

    def _update_episode_stats(self, infos: list[dict[str, Any]], dones: np.ndarray) -> None:
        """
        ``_update_info_buffer`` without the episodes that began in the random phase and ended in the policy's.

        :param infos: the step's infos
        :param dones: the step's episode ends
        """
        running = self._random_episode_running
        if running is None:
            self._update_info_buffer(infos, dones)
            return
        report = ~running
        self._update_info_buffer([info for info, keep in zip(infos, report, strict=True) if keep], dones[report])
        running &= ~np.asarray(dones, dtype=bool)
        if not running.any():
            self._random_episode_running = None

    def _store(
        self,
        new_obs: Observation,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
        flat_actions: np.ndarray,
        raw_terminals: list[Any] | None = None,
    ) -> None:
        """
        Store ``(s, a, s')`` with unnormalised observations; ``s'`` is the terminal observation at episode ends. A
        step that restarted the env's worker (``info["worker_restarted"]``, :class:`~sb3_cherry.common.vec_env.RayVecEnv`:
        the action was not applied, the "terminal observation" is the previous one) is not a transition and is dropped.

        :param new_obs: the step's observations (normalised, if the env normalises)
        :param dones: the step's episode ends
        :param infos: the step's infos
        :param flat_actions: the actions taken, flat
        :param raw_terminals: with a VecNormalize, the unnormalised terminal observations read below it
            (:class:`~sb3_cherry.demos.RawTerminalObservations`; the info's are normalised and clipped)
        """
        if self._vec_normalize_env is not None:
            obs = self._last_original_obs
            new_original = self._vec_normalize_env.get_original_obs()
            next_obs = _obs_copy(new_original)
        else:
            obs = self._last_obs
            next_obs = _obs_copy(new_obs)
        restarted = np.array([bool(info.get("worker_restarted", False)) for info in infos], dtype=bool)
        for i, done in enumerate(dones):
            if not done or restarted[i]:
                continue
            terminal = infos[i].get("terminal_observation") if raw_terminals is None else raw_terminals[i]
            if terminal is None:  # (s, a, the next episode's reset observation) would teach the inverse model nonsense
                raise ValueError(
                    f"BCO: env {i} of the VecEnv reported the end of an episode without info['terminal_observation'] "
                    "(SB3's VecEnvs set it; BCO needs each episode's final observation): use an SB3 VecEnv or add it."
                )
            if isinstance(next_obs, dict):
                for key in next_obs:
                    next_obs[key][i] = terminal[key]
            else:
                next_obs[i] = terminal
        held_out = np.random.random_sample(len(dones)) < self.validation_fraction
        if restarted.any():
            kept = np.flatnonzero(~restarted)
            obs, next_obs = _obs_take(obs, kept), _obs_take(next_obs, kept)  # type: ignore[arg-type]
            flat_actions, held_out = flat_actions[kept], held_out[kept]
        self._agent_data.add(_obs_copy(obs), next_obs, flat_actions, held_out)  # type: ignore[arg-type]
        if self._vec_normalize_env is not None:
            self._last_original_obs = new_original

    def dump_logs(self, iteration: int = 0) -> None:
        """
        Write the logs of a round: time, rollout statistics and the ``bco/`` metrics recorded by ``train``.

        :param iteration: number of rounds so far
        """
        assert self.ep_info_buffer is not None and self.ep_success_buffer is not None
        time_elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        fps = int((self.num_timesteps - self._num_timesteps_at_start) / time_elapsed)
        if iteration > 0:
            self.logger.record("time/iterations", iteration, exclude="tensorboard")
        if len(self.ep_info_buffer) > 0 and len(self.ep_info_buffer[0]) > 0:
            self.logger.record("rollout/ep_rew_mean", safe_mean([ep_info["r"] for ep_info in self.ep_info_buffer]))
            self.logger.record("rollout/ep_len_mean", safe_mean([ep_info["l"] for ep_info in self.ep_info_buffer]))
        if len(self.ep_success_buffer) > 0:
            self.logger.record("rollout/success_rate", safe_mean(self.ep_success_buffer))
        self.logger.record("time/fps", fps)
        self.logger.record("time/time_elapsed", int(time_elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

    def _run_checkpoint_state(self) -> dict[str, Any]:
        """
        What a run checkpoint (:mod:`sb3_cherry.common.checkpoint`) stores besides the model file: the agent's
        transitions (training and held-out parts), the random steps taken and whether a round is due on them.

        :return: plain data (arrays, numbers)
        """
        parts = {}
        for name, held_out in (("train", False), ("held_out", True)):
            data = self._agent_data.get(held_out)
            parts[name] = None if data is None else list(data)
        running = self._random_episode_running
        return {
            "agent_data": parts,
            "n_pre_collected": int(self._n_pre_collected),
            "round_pending": self._round_pending,
            "random_episode_running": None if running is None else [bool(flag) for flag in running],
        }

    def _restore_run_checkpoint_state(self, state: dict[str, Any]) -> None:
        """
        Restore :meth:`_run_checkpoint_state`'s data (after loading the checkpoint's model).

        :param state: the decoded data
        """
        store = _TransitionStore()
        for name, held_out in (("train", False), ("held_out", True)):
            chunk = state["agent_data"][name]
            if chunk is not None:
                obs, next_obs, actions = chunk
                store._chunks[held_out] = [(obs, next_obs, actions)]
        self._agent_data = store
        self._n_pre_collected = int(state["n_pre_collected"])
        self._round_pending = bool(state["round_pending"])
        running = state.get("random_episode_running")  # absent from checkpoints of earlier versions
        self._random_episode_running = None if running is None else np.array(running, dtype=bool)

    def _round(self, log_interval: int | None) -> None:
        self._update_current_progress_remaining(self.num_timesteps, self._total_timesteps)
        self.train()
        self._round_pending = False
        if log_interval is not None and self._n_rounds % log_interval == 0:
            self.dump_logs(self._n_rounds)

    def learn(
        self: SelfBCO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int | None = 1,
        tb_log_name: str = "BCO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfBCO:
        """
        Run BCO(alpha) with a budget of ``total_timesteps`` environment interactions: the pre-demonstration phase
        (``n_pre_interactions`` random steps, if not done yet), a round (inverse model, labels, cloning), then, while
        ``alpha > 0`` and the budget allows, ``alpha * n_pre_interactions`` policy steps (the last round takes what is
        left) and another round. With ``alpha=0`` the budget left after the first round is unused (a warning says so).
        The agent's transitions are not saved with the model (``save``): a loaded model starts with a new
        pre-demonstration phase; run checkpoints (:mod:`sb3_cherry.common.checkpoint`) hold them and continue exactly.

        :param total_timesteps: the number of environment interactions (all envs together; a float such as ``1e4``
            is taken as its whole part)
        :param callback: callback(s) called at every step with state of the algorithm
        :param log_interval: dump the logs every ``log_interval`` rounds (None: never)
        :param tb_log_name: the name of the run for TensorBoard logging
        :param reset_num_timesteps: whether or not to reset the current timestep number (used in logging)
        :param progress_bar: display a progress bar using tqdm and rich
        :return: the trained model
        :raises ValueError: without demonstrations, or when the budget leaves no interaction to learn from
        """
        check_actions_start_at_zero(self.action_space, "BCO")
        self._check_env_stack()
        self._demo_transitions()  # no demonstrations, or ones that do not fit the env: fail before collecting
        if self.check_finite:
            check_finite_weights(self.policy, "BCO: the policy's parameters")
            check_finite_weights(self.inverse_model, "BCO: the inverse model's parameters")
        total_timesteps = int(total_timesteps)  # steps_for's integer division needs an int (SB3 accepts floats)
        if reset_num_timesteps or self._last_obs is None:  # _setup_learn resets the env: new episodes everywhere
            self._random_episode_running = None
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        assert self.env is not None
        n_envs = self.env.num_envs

        def steps_for(wanted: int) -> int:
            return min(math.ceil(wanted / n_envs), (total_timesteps - self.num_timesteps) // n_envs)

        rounds_at_start, stopped = self._n_rounds, False
        if self._n_pre_collected < self.n_pre_interactions:
            n_steps = steps_for(self.n_pre_interactions - self._n_pre_collected)
            stopped = n_steps > 0 and not self._collect(n_steps, callback, use_policy=False)
        if not stopped and self._round_pending:
            self._round(log_interval)
        while not stopped and self.alpha > 0:
            # Torabi et al. 2018, Algorithm 1: |I_post| = alpha * |I_pre| interactions per round
            n_steps = steps_for(max(1, math.ceil(self.alpha * self.n_pre_interactions)))
            if n_steps <= 0:
                break
            stopped = not self._collect(n_steps, callback, use_policy=True)
            if not stopped:
                self._round(log_interval)
        if not stopped and self._n_rounds == rounds_at_start:
            if self.alpha == 0 and self._n_rounds > 0 and self._n_pre_collected >= self.n_pre_interactions:
                warnings.warn(
                    "BCO.learn: alpha=0 (plain BCO) has already collected its pre-demonstration phase and trained on "
                    "it: this call has nothing to collect or train. Give alpha > 0 (BCO(alpha)) for post-demonstration "
                    "rounds.",
                    stacklevel=2,
                )
                callback.on_training_end()
                return self
            raise ValueError(
                f"BCO.learn: total_timesteps={total_timesteps - self._num_timesteps_at_start} left no environment "
                f"interaction to train the inverse model on (n_envs={n_envs}, n_pre_interactions={self.n_pre_interactions}, "
                f"alpha={self.alpha}). Give a budget of at least n_envs steps and n_pre_interactions > 0 or alpha > 0."
            )
        if not stopped and self.alpha == 0 and total_timesteps - self.num_timesteps >= n_envs:
            warnings.warn(
                f"BCO.learn: alpha=0 (plain BCO) stops after the pre-demonstration phase, having used "
                f"{self.num_timesteps - self._num_timesteps_at_start} of total_timesteps="
                f"{total_timesteps - self._num_timesteps_at_start} interactions. Give alpha > 0 (BCO(alpha), e.g. the "
                "default 0.1) to spend the budget on post-demonstration rounds, or a smaller total_timesteps.",
                stacklevel=2,
            )
        callback.on_training_end()
        return self


def _check_raw_step(vec_normalize: VecNormalize, raw_terminals: list[Any], num_timesteps: int) -> None:
    """
    NaN / inf in the unnormalised observations and terminal observations of a step through a VecNormalize (what BCO
    stores; float64 values beyond float32's range are fine: they are normalised in float64).

    :param vec_normalize: the env's VecNormalize
    :param raw_terminals: per env, the raw terminal observation of the step (None where the episode did not end)
    :param num_timesteps: the step count, for the message
    :raises ValueError: naming what was non-finite, the env index and the step
    """
    check_finite_raw_step(vec_normalize, num_timesteps)
    for index, terminal in enumerate(raw_terminals):
        if terminal is None:
            continue
        batch = (
            {key: np.asarray(value)[None] for key, value in terminal.items()}
            if isinstance(terminal, dict)
            else np.asarray(terminal)[None]
        )
        try:
            check_finite_observation(
                batch, "terminal observation (before VecNormalize)", f"num_timesteps={num_timesteps}", False
            )
        except ValueError as error:  # the env's own index, not 0 of the one-row batch
            raise ValueError(str(error).replace("from env 0 ", f"from env {index} ", 1)) from None


def _check_demo_finite(transitions: DemoTransitions, source: str) -> None:
    """Raise a ValueError naming the first demonstration transition whose observation or next observation is not
    finite (the inverse model would label it NaN, and the error would come from a torch distribution)."""
    for name, obs in (("observation", transitions.obs), ("next observation", transitions.next_obs)):
        for key, value in obs.items() if isinstance(obs, dict) else [(None, obs)]:
            bad = non_finite_rows(np.asarray(value))
            if bad.any():
                where = f" (key {key!r})" if key is not None else ""
                raise ValueError(
                    f"BCO: the demonstrations ({source}) have a non-finite {name}{where} (NaN, inf, or beyond float32's "
                    f"range) at transition "
                    f"{int(np.argmax(bad))} ({int(bad.sum())} such transitions): fix or re-record them."
                )


def _check_demo_observations(obs: Observation, space: spaces.Space, source: str) -> None:
    """Raise a ValueError when the demonstrations' observations do not fit the environment's observation space."""
    hint = "Record the demonstrations on the same environment (sb3_cherry.demos.record_demos or `sb3-cherry record`)."
    if isinstance(space, spaces.Dict):
        if not isinstance(obs, dict) or set(obs) != set(space.spaces):
            keys = sorted(obs) if isinstance(obs, dict) else "none (array observations)"
            raise ValueError(
                f"BCO: the demonstrations ({source}) have observation keys {keys}, but the environment's Dict observation "
                f"space has keys {sorted(space.spaces)}. {hint}"
            )
        for key, sub in space.spaces.items():
            _check_demo_observations(obs[key], sub, f"{source}, key {key!r}")
        return
    if isinstance(obs, dict):
        raise ValueError(
            f"BCO: the demonstrations ({source}) have Dict observations (keys {sorted(obs)}), but the environment's "
            f"observation space is {space}. {hint}"
        )
    expected = () if isinstance(space, spaces.Discrete) else tuple(space.shape)  # type: ignore[arg-type]
    if tuple(obs.shape[1:]) != expected:
        raise ValueError(
            f"BCO: the demonstrations ({source}) have observations of shape {tuple(obs.shape[1:])}, but the environment's "
            f"observation space {space} has shape {expected}. {hint}"
        )
