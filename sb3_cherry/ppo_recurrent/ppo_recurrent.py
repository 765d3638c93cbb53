from typing import Any, ClassVar, TypeVar, cast

import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_cherry.common.on_policy import CherryOnPolicyAlgorithm
from sb3_cherry.common.schedules import CoefficientSchedule
from sb3_cherry.common.speed import inference_forward
from sb3_cherry.ppo_recurrent.buffers import CherryRecurrentDictRolloutBuffer, CherryRecurrentRolloutBuffer
from sb3_cherry.ppo_recurrent.policies import (
    CnnGruPolicy,
    CnnLstmPolicy,
    MlpGruPolicy,
    MlpLstmPolicy,
    MultiInputGruPolicy,
    MultiInputLstmPolicy,
)
from sb3_cherry.ppo_rollback.ppo_rollback import check_clip_ranges, rollback_train
from sb3_cherry.ppo_rollback.trust_region import ROLLBACKS, TRUST_REGIONS, check_trust_region_args, resolve_rollback_alpha

SelfRecurrentPPORollback = TypeVar("SelfRecurrentPPORollback", bound="RecurrentPPORollback")


def _has_inference_tensor(states: Any) -> bool:
    """:return: whether ``RNNStates`` (or a nested tuple of tensors) holds an inference tensor"""
    if isinstance(states, th.Tensor):
        return states.is_inference()
    return any(_has_inference_tensor(part) for part in states)


def _clone_states(states: Any) -> Any:
    """:return: a copy of ``RNNStates`` (or a ``(hidden, cell)`` pair) made of ordinary tensors"""
    if isinstance(states, th.Tensor):
        return states.clone()
    parts = (_clone_states(part) for part in states)
    return type(states)(*parts) if hasattr(states, "_fields") else tuple(parts)


class RecurrentPPORollback(RecurrentPPO, CherryOnPolicyAlgorithm):
    """
    Recurrent (LSTM or GRU) Proximal Policy Optimization with the rollback surrogate (Truly PPO, "PPO-RB") and
    sb3_cherry's action distributions (Beta, tanh-Normal, Gumbel-Softmax, Tuple action spaces).

    sb3-contrib's ``RecurrentPPO`` (rollout collection with recurrent states, sequence minibatches with padding masks)
    with the rollback surrogate in place of the clipped one. ``CherryOnPolicyAlgorithm`` adds Tuple action spaces
    (``VecTupleActions``), atomic saving and clear load errors; the returns estimator is a choice (GAE, 1-step,
    n-step, V-trace on contrib's buffers); ``recompute_returns`` replays each env's rollout with the current networks.
    Not available here: ``collection="async"``.

    With ``rollback_alpha=0`` and the LSTM policies with default distributions, this is sb3-contrib's ``RecurrentPPO``
    exactly.

    Paper: https://arxiv.org/abs/1903.07940 (Truly PPO), https://arxiv.org/abs/1707.06347 (PPO)
    Code: sb3-contrib's RecurrentPPO (https://github.com/Stable-Baselines-Team/stable-baselines3-contrib), cherry_rl

    :param policy: The policy model to use (MlpLstmPolicy, MlpGruPolicy, CnnLstmPolicy, CnnGruPolicy,
        MultiInputLstmPolicy, MultiInputGruPolicy, ...)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
        (i.e. rollout buffer size is n_steps * n_envs where n_envs is number of environment copies running in parallel)
    :param batch_size: Minibatch size (in transitions; minibatches are cut into sequences and padded)
    :param n_epochs: Number of epoch when optimizing the surrogate loss
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param clip_range: Trust region ``eps``, it can be a function of the current progress remaining (from 1 to 0).
    :param clip_range_vf: Clipping parameter for the value function, it can be a function of the current progress
        remaining (from 1 to 0). None (default): no clipping. IMPORTANT: this clipping depends on the reward scaling.
    :param normalize_advantage: Whether to normalize or not the advantage
    :param ent_coef: Entropy coefficient for the loss calculation: a number, or a schedule of it (an SB3 schedule of
        ``progress_remaining``, rl_zoo3's ``"lin_<value>"``, or ``{"start": ..., "end": 0.0, "end_fraction": ...}``
        for a linear decay over the first ``end_fraction`` of the run, see
        :func:`~sb3_cherry.common.schedules.coefficient_schedule`); logged as ``train/ent_coef``
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE) (``"normal"`` distribution only)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
    :param target_kl: Limit the KL divergence between updates (early stopping). By default, no limit.
    :param rollback_alpha: Slope ``alpha`` of the rollback outside the trust region (0: plain clipped PPO).
        With ``trust_region="kl"``: the ratio-rollback slope (0: TR-PPO) or, with ``rollback="kl"``, the weight of the
        KL penalty. None (default): the Truly PPO authors' MuJoCo value for the method, 0.3 (PPO-RB), 0.05
        (TR-PPO-RB) or 5 (Truly PPO)
    :param trust_region: ``"ratio"`` (default, PPO-RB) or ``"kl"``: the per-state KL trust region of Truly PPO, as
        in :class:`~sb3_cherry.PPORollback` (the collecting policy's distribution is recomputed by replaying each
        minibatch's sequences from their stored recurrent states with the weights frozen at the start of the update)
    :param kl_threshold: ``delta`` of the KL trust region (the authors use 0.03 on MuJoCo)
    :param rollback: with ``trust_region="kl"``: ``"ratio"`` (TR-PPO-RB) or ``"kl"`` (Truly PPO)
    :param returns_estimator: ``"gae"`` (default), ``"one_step"``, ``"n_step"`` or ``"vtrace"``
    :param n_step: horizon of the ``"n_step"`` estimator
    :param rho_bar: V-trace truncation level of the importance weights in the TD errors
    :param c_bar: V-trace truncation level of the traces
    :param recompute_returns: recompute values, returns and advantages with the current networks before every epoch
        after the first (as cherry_rl does): each env's rollout is replayed in order from the recurrent states stored
        at its first step, resetting them where episodes start, and the observation after the last step continues the
        sequence for the bootstrap value (see :meth:`~sb3_cherry.ppo_recurrent.buffers.CherryRecurrentRolloutBuffer.replay`);
        the terminal observation of a time-limit truncation is replayed right after its step, so the
        ``gamma * V(terminal observation)`` in that step's reward is the current critic's too
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation, e.g.
        ``dict(rnn_type="gru", lstm_hidden_size=64, action_distribution="beta")``
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    config_choices: ClassVar[dict[str, tuple[str, ...]]] = {
        **CherryOnPolicyAlgorithm.config_choices,
        "trust_region": TRUST_REGIONS,
        "rollback": ROLLBACKS,
    }

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpLstmPolicy": MlpLstmPolicy,
        "CnnLstmPolicy": CnnLstmPolicy,
        "MultiInputLstmPolicy": MultiInputLstmPolicy,
        "MlpGruPolicy": MlpGruPolicy,
        "CnnGruPolicy": CnnGruPolicy,
        "MultiInputGruPolicy": MultiInputGruPolicy,
    }

    def __init__(
        self,
        policy: str | type[RecurrentActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 128,
        batch_size: int | None = 128,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: CoefficientSchedule = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        target_kl: float | None = None,
        rollback_alpha: float | None = None,
        trust_region: str = "ratio",
        kl_threshold: float = 0.03,
        rollback: str = "ratio",
        returns_estimator: str = "gae",
        n_step: int = 5,
        rho_bar: float = 1.0,
        c_bar: float = 1.0,
        recompute_returns: bool = False,
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
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,  # type: ignore[arg-type]  # or its schedule: read through _current_ent_coef
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        check_clip_ranges(clip_range, clip_range_vf)
        check_trust_region_args(trust_region, kl_threshold, rollback)
        self.rollback_alpha = resolve_rollback_alpha(rollback_alpha, trust_region, rollback)
        self.trust_region, self.kl_threshold, self.rollback = trust_region, float(kl_threshold), rollback
        self._init_estimator(returns_estimator, n_step, rho_bar, c_bar, recompute_returns)

        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        # contrib's RecurrentPPO._setup_model, except for the buffer classes (contrib's hard-coded ones cannot store
        # Tuple actions) and the error message for a non-recurrent policy. Same order of construction (and of
        # random number draws) as contrib.
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)

        dict_obs = isinstance(self.observation_space, spaces.Dict)
        buffer_cls = CherryRecurrentDictRolloutBuffer if dict_obs else CherryRecurrentRolloutBuffer

        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space,
            self.action_space,
            self.lr_schedule,
            use_sde=self.use_sde,
            **self.policy_kwargs,
        )
        self.policy = self.policy.to(self.device)
        if not isinstance(self.policy, RecurrentActorCriticPolicy):
            raise ValueError(
                f"{type(self).__name__} needs a recurrent policy (a RecurrentActorCriticPolicy subclass, e.g. 'MlpLstmPolicy' "
                f"or 'MlpGruPolicy'), got {type(self.policy).__name__}."
            )

        # The actor and the critic recurrent layers have the same architecture
        rnn = self.policy.lstm_actor
        single_hidden_state_shape = (rnn.num_layers, self.n_envs, rnn.hidden_size)
        # hidden and cell states for actor and critic (the cell states of a GRU stay zero)
        # (RecurrentPPO.__init__ declares it None)
        self._last_lstm_states = RNNStates(  # type: ignore[assignment]
            (
                th.zeros(single_hidden_state_shape, device=self.device),
                th.zeros(single_hidden_state_shape, device=self.device),
            ),
            (
                th.zeros(single_hidden_state_shape, device=self.device),
                th.zeros(single_hidden_state_shape, device=self.device),
            ),
        )
        hidden_state_buffer_shape = (self.n_steps, rnn.num_layers, self.n_envs, rnn.hidden_size)
        self.rollout_buffer = buffer_cls(
            self.n_steps,
            self.observation_space,
            self.action_space,
            hidden_state_buffer_shape,
            self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            returns_estimator=self.returns_estimator,
            n_step=self.n_step,
            rho_bar=self.rho_bar,
            c_bar=self.c_bar,
        )

        # Initialize schedules for policy/value clipping
        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            if isinstance(self.clip_range_vf, (float, int)):
                assert self.clip_range_vf > 0, "`clip_range_vf` must be positive, pass `None` to deactivate vf clipping"
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """
        sb3-contrib's ``collect_rollouts``, with the policy's forward passes in ``torch.inference_mode``
        (:func:`sb3_cherry.common.speed.inference_forward`; same values).

        :param env: the training environment
        :param callback: callback called at every step
        :param rollout_buffer: buffer to fill
        :param n_rollout_steps: number of steps to collect per environment
        :return: False if a callback stopped the rollout
        """
        self._collection_callback = callback  # its locals hold each step's recurrent states (contrib's update_locals)
        try:
            with inference_forward(self.policy):
                return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        finally:
            self._collection_callback = None

    #: the callback of the running ``collect_rollouts`` (None outside it)
    _collection_callback: BaseCallback | None = None

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_collection_callback"]

    @property
    def _last_lstm_states(self) -> Any:
        """The recurrent states contrib's ``collect_rollouts`` carries from step to step (and between rollouts)."""
        return self.__dict__.get("_last_lstm_states")

    @_last_lstm_states.setter
    def _last_lstm_states(self, states: Any) -> None:
        # Stored as ordinary tensors: the collection's forward passes run in inference mode, and contrib keeps their
        # states here, where a callback may reset them in place during the rollout or after it, as with contrib's
        # RecurrentPPO (inference tensors refuse in-place updates outside inference mode). One copy per step.
        if states is not None and _has_inference_tensor(states):
            states = _clone_states(states)
        self.__dict__["_last_lstm_states"] = states

    def _truncation_bootstrap_values(self, truncated: list[tuple[int, Any]]) -> list[float]:
        """
        The values contrib's ``collect_rollouts`` adds (times ``gamma``) to the rewards of this step's time-limit
        truncations: the critic's value of each terminal observation one recurrent step after the states the step's
        observation led to. Those states are a local of ``collect_rollouts``, which contrib hands to the callback
        (``update_locals``) before ``_update_info_buffer``: they are read there (a callback may have reset the carried
        ``_last_lstm_states`` in place, from which a new forward pass would start). Outside that loop they are computed
        again by the same forward pass on the same batch (``_last_obs`` with the states before it), deterministic, so
        no random number is drawn.

        :param truncated: ``(env index, terminal observation)`` of each env whose episode was truncated at this step
        :return: the values, in the same order
        """
        policy = cast(RecurrentActorCriticPolicy, self.policy)
        values = []
        callback = self._collection_callback
        states = None if callback is None else callback.locals.get("lstm_states")
        with th.no_grad():
            if states is None:
                starts = th.tensor(self._last_episode_starts, dtype=th.float32, device=self.device)
                obs = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                states = self.policy(obs, self._last_lstm_states, starts, deterministic=True)[3]
            not_start = th.tensor([False], dtype=th.float32, device=self.device)
            for env_index, terminal_obs in truncated:
                state = (
                    states.vf[0][:, env_index : env_index + 1, :].contiguous(),
                    states.vf[1][:, env_index : env_index + 1, :].contiguous(),
                )
                terminal = policy.obs_to_tensor(terminal_obs)[0]
                value = policy.predict_values(terminal, state, not_start)[0]  # type: ignore[arg-type]  # (contrib's call)
                values.append(float(value.item()))
        return values

    def train(self) -> None:
        """
        Update policy using the currently gathered rollout buffer (contrib's RecurrentPPO update, padded steps masked
        out, with the rollback surrogate).
        """

        def evaluate(rollout_data: Any, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None, th.Tensor]:
            policy = cast(RecurrentActorCriticPolicy, self.policy)
            values, log_prob, entropy = policy.evaluate_actions(
                rollout_data.observations, actions, rollout_data.lstm_states, rollout_data.episode_starts
            )
            # Convert mask from float to bool
            return values, log_prob, entropy, rollout_data.mask > 1e-8

        def old_distribution(policy: Any, rollout_data: Any) -> Any:
            return policy.get_distribution(
                rollout_data.observations, rollout_data.lstm_states.pi, rollout_data.episode_starts
            )[0]

        rollback_train(self, evaluate, old_distribution)

    def learn(
        self: SelfRecurrentPPORollback,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "RecurrentPPORollback",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfRecurrentPPORollback:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
