import math
from typing import Any, ClassVar, TypeVar

import torch as th
from gymnasium import spaces
from stable_baselines3 import A2C
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

from sb3_cherry.a2c.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_cherry.common.buffers import truncated_weights
from sb3_cherry.common.finite import raise_non_finite_update
from sb3_cherry.common.flat_rmsprop import clear_grads, rmsprop_step
from sb3_cherry.common.on_policy import CherryOnPolicyAlgorithm
from sb3_cherry.common.policies import CherryActorCriticPolicy
from sb3_cherry.common.schedules import CoefficientSchedule
from sb3_cherry.common.speed import GradNormClipper

SelfCherryA2C = TypeVar("SelfCherryA2C", bound="CherryA2C")


class CherryA2C(A2C, CherryOnPolicyAlgorithm):
    """
    Advantage Actor Critic (A2C) with sb3_cherry's action distributions (Beta, tanh-Normal, Gumbel-Softmax, Tuple
    action spaces) and returns estimators (GAE, 1-step, n-step, V-trace).

    SB3's A2C update, with one addition for ``collection="async"``: a rollout of the previous weights carries
    decoupled PPO's per-sample importance weights ``w = min(imp_samp_max, pi_prox / mu)``, and the policy loss is
    ``-w A log pi`` (after the optional advantage normalisation). With the default estimator and distributions this is
    SB3's A2C exactly.

    Paper: https://arxiv.org/abs/1602.01783
    Code: Stable-Baselines3's A2C (https://github.com/DLR-RM/stable-baselines3), cherry_rl

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy, ...)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for GAE (and the trace coefficient of V-trace).
        Equivalent to classic advantage when set to 1.
    :param ent_coef: Entropy coefficient for the loss calculation: a number, or a schedule of it (an SB3 schedule of
        ``progress_remaining``, rl_zoo3's ``"lin_<value>"``, or ``{"start": ..., "end": 0.0, "end_fraction": ...}``
        for a linear decay over the first ``end_fraction`` of the run, see
        :func:`~sb3_cherry.common.schedules.coefficient_schedule`); logged as ``train/ent_coef``
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param rms_prop_eps: RMSProp epsilon. It stabilizes square root computation in denominator of RMSProp update
    :param use_rms_prop: Whether to use RMSprop (default) or Adam as optimizer
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE) (``"normal"`` distribution only)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, a ``CherryRolloutBuffer`` (or its Dict
        variant) carrying the returns estimator.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation.
    :param normalize_advantage: Whether to normalize or not the advantage
    :param returns_estimator: ``"gae"`` (default), ``"one_step"``, ``"n_step"`` or ``"vtrace"``
    :param n_step: horizon of the ``"n_step"`` estimator
    :param rho_bar: V-trace truncation level of the importance weights in the TD errors
    :param c_bar: V-trace truncation level of the traces
    :param collection: ``"sync"`` (collect, then train, as SB3) or ``"async"``: the updates run in a learner process
        while the next rollout is collected with the previous weights (behaviour policy one update old; see
        :mod:`sb3_cherry.common.async_learner`)
    :param imp_samp_max: ``collection="async"`` only: truncation level of the per-sample importance weights
        ``w = min(imp_samp_max, pi_prox / mu)`` of the policy loss ``-w A log pi`` (100, as in Hilton et al.'s
        decoupled PPO code; ``float("inf")`` for no truncation). Independent of V-trace's ``rho_bar``.
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

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }

    def __init__(
        self,
        policy: str | type[CherryActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 7e-4,
        n_steps: int = 5,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        ent_coef: CoefficientSchedule = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        rms_prop_eps: float = 1e-5,
        use_rms_prop: bool = True,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        normalize_advantage: bool = False,
        returns_estimator: str = "gae",
        n_step: int = 5,
        rho_bar: float = 1.0,
        c_bar: float = 1.0,
        collection: str = "sync",
        imp_samp_max: float = 100.0,
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
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,  # type: ignore[arg-type]  # or its schedule: read through _current_ent_coef
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            rms_prop_eps=rms_prop_eps,
            use_rms_prop=use_rms_prop,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            normalize_advantage=normalize_advantage,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        # A2C makes one gradient step per rollout: there is no later epoch to recompute returns for
        self._init_estimator(returns_estimator, n_step, rho_bar, c_bar, recompute_returns=False)

        self._init_collection(collection, imp_samp_max)

        if _init_setup_model:
            self._setup_model()

    def train(self) -> None:
        """
        Update policy using the currently gathered rollout buffer (one gradient step over whole data): SB3's
        ``A2C.train``, with the policy loss ``-w A log pi`` when the rollout carries importance weights ``w``
        (a re-centred async rollout).
        """
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)

        # Update optimizer learning rate
        self._update_learning_rate(self.policy.optimizer)
        # entropy coefficient of this update (a constant, or its schedule's value)
        ent_coef = self._current_ent_coef()

        # This will only loop once (get all data in one go)
        for rollout_data in self.rollout_buffer.get(batch_size=None):
            actions = rollout_data.actions
            if isinstance(self.action_space, spaces.Discrete):
                # Convert discrete action from float to long
                actions = actions.long().flatten()

            values, log_prob, entropy = self.policy.evaluate_actions(rollout_data.observations, actions)
            values = values.flatten()

            # Normalize advantage (not present in the original implementation)
            advantages = rollout_data.advantages
            if self.normalize_advantage:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

            # Policy gradient loss
            weights = getattr(rollout_data, "weights", None)
            if weights is not None:
                # decoupled importance weight min(pi_prox / mu, imp_samp_max), after normalisation (Hilton et al. 2021;
                # the update starts from pi_prox, so PPO's ratio pi / pi_prox of the reference's cap is 1 here)
                policy_loss = -(truncated_weights(weights, self.imp_samp_max) * advantages * log_prob).mean()
            else:
                policy_loss = -(advantages * log_prob).mean()

            # Value loss using the TD(gae_lambda) target
            value_loss = F.mse_loss(rollout_data.returns, values)

            # Entropy loss favor exploration
            if entropy is None:
                # Approximate entropy when no analytical form
                entropy_loss = -th.mean(-log_prob)
            else:
                entropy_loss = -th.mean(entropy)

            loss = policy_loss + ent_coef * entropy_loss + self.vf_coef * value_loss

            # Optimization step (zero_grad, clip_grad_norm_ and RMSprop's step computed alike with less per-tensor
            # work: sb3_cherry.common.flat_rmsprop, speed.GradNormClipper)
            clear_grads(self.policy.optimizer)
            loss.backward()

            # Clip grad norm
            grad_norm = GradNormClipper(self.policy.parameters())(self.max_grad_norm)
            if self.check_finite and not (math.isfinite(loss.item()) and math.isfinite(grad_norm.item())):
                self._refuse_update(policy_loss, value_loss, entropy_loss, loss, grad_norm)
            rmsprop_step(self.policy.optimizer)

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        self._n_updates += 1
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/entropy_loss", entropy_loss.item())
        self.logger.record("train/policy_loss", policy_loss.item())
        self.logger.record("train/value_loss", value_loss.item())
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

    # The check above, before the optimizer step, keeps a non-finite loss or gradient out of the parameters and names
    # it; CherryOnPolicyAlgorithm also wraps this train with its snapshot check (one fused copy and one reduction per
    # update), which undoes a step that is non-finite although its gradients were finite (a learning rate of 1e38 or
    # inf times a clipped gradient).

    def _refuse_update(
        self, policy_loss: th.Tensor, value_loss: th.Tensor, entropy_loss: th.Tensor, loss: th.Tensor, grad_norm: th.Tensor
    ) -> None:
        """The update's loss or gradient is non-finite: drop the gradients (parameters and optimizer state are those
        from before the update) and raise the ValueError naming it."""
        self.policy.optimizer.zero_grad()
        losses = {
            "train/policy_loss": policy_loss.item(),
            "train/value_loss": value_loss.item(),
            "train/entropy_loss": entropy_loss.item(),
            "train/loss": loss.item(),
            "gradient norm": grad_norm.item(),
        }
        raise_non_finite_update(losses, type(self).__name__, self.num_timesteps, self._n_updates)

    def learn(
        self: SelfCherryA2C,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 100,
        tb_log_name: str = "CherryA2C",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfCherryA2C:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
