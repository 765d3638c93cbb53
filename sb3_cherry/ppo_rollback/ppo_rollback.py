from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

from sb3_cherry.common.on_policy import CherryOnPolicyAlgorithm
from sb3_cherry.common.policies import CherryActorCriticPolicy
from sb3_cherry.ppo_rollback.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

SelfPPORollback = TypeVar("SelfPPORollback", bound="PPORollback")


def rollback_surrogate(ratio: th.Tensor, advantages: th.Tensor, clip_range: float, rollback_alpha: float) -> th.Tensor:
    """
    Per-sample rollback surrogate ``A * f(r)`` of Truly PPO (Wang et al., 2019, eq. 11, "PPO-RB").

    ``f(r) = r`` inside the trust region; outside it, on the side where the clipped PPO objective would be flat,
    ``f`` rolls back with slope ``-alpha``:

    - ``A >= 0`` and ``r > 1 + eps``: ``f(r) = -alpha * r + (1 + alpha) * (1 + eps)``
    - ``A < 0`` and ``r < 1 - eps``: ``f(r) = -alpha * r + (1 + alpha) * (1 - eps)``

    With ``alpha = 0`` this is exactly PPO's ``min(r * A, clip(r, 1 - eps, 1 + eps) * A)``.

    :param ratio: probability ratios ``pi / pi_old``
    :param advantages: advantages (same shape)
    :param clip_range: ``eps``
    :param rollback_alpha: ``alpha`` >= 0
    :return: the surrogate per sample (to be maximised)
    """
    upper = -rollback_alpha * ratio + (1.0 + rollback_alpha) * (1.0 + clip_range)
    lower = -rollback_alpha * ratio + (1.0 + rollback_alpha) * (1.0 - clip_range)
    positive = advantages >= 0
    f = th.where(positive & (ratio > 1.0 + clip_range), upper, ratio)
    f = th.where(~positive & (ratio < 1.0 - clip_range), lower, f)
    return advantages * f


def rollback_mask(ratio: th.Tensor, advantages: th.Tensor, clip_range: float) -> th.Tensor:
    """
    Samples in the rollback region (where plain PPO's gradient would vanish).

    :param ratio: probability ratios
    :param advantages: advantages
    :param clip_range: ``eps``
    :return: boolean mask
    """
    positive = advantages >= 0
    return (positive & (ratio > 1.0 + clip_range)) | (~positive & (ratio < 1.0 - clip_range))


class PPORollback(PPO, CherryOnPolicyAlgorithm):
    """
    Proximal Policy Optimization with the rollback surrogate (Truly PPO, "PPO-RB"), sb3_cherry's action
    distributions (Beta, tanh-Normal, Gumbel-Softmax, Tuple action spaces) and returns estimators
    (GAE, 1-step, n-step, V-trace).

    Paper: https://arxiv.org/abs/1903.07940 (Truly PPO), https://arxiv.org/abs/1707.06347 (PPO),
    https://arxiv.org/abs/1802.01561 (IMPALA / V-trace)
    Code: Stable-Baselines3's PPO (https://github.com/DLR-RM/stable-baselines3), cherry_rl

    With ``rollback_alpha=0``, the default estimator and default distributions, this is SB3's PPO exactly.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy, ...)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
        (i.e. rollout buffer size is n_steps * n_envs where n_envs is number of environment copies running in parallel)
    :param batch_size: Minibatch size
    :param n_epochs: Number of epoch when optimizing the surrogate loss
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for GAE (and the trace coefficient of V-trace)
    :param clip_range: Trust region ``eps``, it can be a function of the current progress remaining (from 1 to 0).
    :param clip_range_vf: Clipping parameter for the value function, it can be a function of the current progress
        remaining (from 1 to 0). None (default): no clipping. IMPORTANT: this clipping depends on the reward scaling.
    :param normalize_advantage: Whether to normalize or not the advantage
    :param ent_coef: Entropy coefficient for the loss calculation
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE) (``"normal"`` distribution only)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, a ``CherryRolloutBuffer`` (or its Dict
        variant) carrying the returns estimator.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param target_kl: Limit the KL divergence between updates (early stopping). By default, no limit.
    :param rollback_alpha: Slope ``alpha`` of the rollback outside the trust region (0: plain clipped PPO;
        the Truly PPO paper uses 0.3 on MuJoCo)
    :param returns_estimator: ``"gae"`` (default), ``"one_step"``, ``"n_step"`` or ``"vtrace"``
    :param n_step: horizon of the ``"n_step"`` estimator
    :param rho_bar: V-trace truncation level of the importance weights in the TD errors
    :param c_bar: V-trace truncation level of the traces
    :param recompute_returns: recompute values, returns and advantages with the current networks before every epoch
        after the first (as cherry_rl does; with V-trace, the ratios current / collecting policy correct the drift)
    :param collection: ``"sync"`` (collect, then train, as SB3) or ``"async"``: the updates run in a learner process
        while the next rollout is collected with the previous weights (behaviour policy one update old; see
        :mod:`sb3_cherry.common.async_learner`)
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
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
        rollback_alpha: float = 0.3,
        returns_estimator: str = "gae",
        n_step: int = 5,
        rho_bar: float = 1.0,
        c_bar: float = 1.0,
        recompute_returns: bool = False,
        collection: str = "sync",
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
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        if rollback_alpha < 0:
            raise ValueError(f"rollback_alpha must be >= 0 (0 gives plain clipped PPO), got {rollback_alpha}.")
        self.rollback_alpha = float(rollback_alpha)
        self._init_estimator(returns_estimator, n_step, rho_bar, c_bar, recompute_returns)

        self._init_collection(collection)

        if _init_setup_model:
            self._setup_model()

    def train(self) -> None:
        """
        Update policy using the currently gathered rollout buffer (SB3's PPO update with the rollback surrogate).
        """
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update optimizer learning rate
        self._update_learning_rate(self.policy.optimizer)
        # Compute current clip range
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        # Optional: clip range for the value function
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]

        entropy_losses = []
        pg_losses, value_losses = [], []
        clip_fractions, rollback_fractions = [], []

        continue_training = True
        # train for n_epochs epochs
        for epoch in range(self.n_epochs):
            if epoch > 0:
                self._recompute_returns()
            approx_kl_divs = []
            # Do a complete pass on the rollout buffer
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                actions = rollout_data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    # Convert discrete action from float to long
                    actions = rollout_data.actions.long().flatten()

                values, log_prob, entropy = self.policy.evaluate_actions(rollout_data.observations, actions)
                values = values.flatten()
                # Normalize advantage
                advantages = rollout_data.advantages
                # Normalization does not make sense if mini batchsize == 1, see GH issue #325
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                # ratio between old and new policy, should be one at the first iteration
                ratio = th.exp(log_prob - rollout_data.old_log_prob)

                # rollback surrogate loss (clipped PPO when rollback_alpha == 0)
                policy_loss = -rollback_surrogate(ratio, advantages, clip_range, self.rollback_alpha).mean()

                # Logging
                pg_losses.append(policy_loss.item())
                clip_fraction = th.mean((th.abs(ratio - 1) > clip_range).float()).item()
                clip_fractions.append(clip_fraction)
                rollback_fractions.append(th.mean(rollback_mask(ratio, advantages, clip_range).float()).item())

                if self.clip_range_vf is None:
                    # No clipping
                    values_pred = values
                else:
                    # Clip the difference between old and new value
                    # NOTE: this depends on the reward scaling
                    values_pred = rollout_data.old_values + th.clamp(
                        values - rollout_data.old_values, -clip_range_vf, clip_range_vf
                    )
                # Value loss using the returns estimator's targets
                value_loss = F.mse_loss(rollout_data.returns, values_pred)
                value_losses.append(value_loss.item())

                # Entropy loss favor exploration
                if entropy is None:
                    # Approximate entropy when no analytical form
                    entropy_loss = -th.mean(-log_prob)
                else:
                    entropy_loss = -th.mean(entropy)

                entropy_losses.append(entropy_loss.item())

                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

                # Calculate approximate form of reverse KL Divergence for early stopping
                # see SB3 issue #417 and http://joschu.net/blog/kl-approx.html
                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                # Optimization step
                self.policy.optimizer.zero_grad()
                loss.backward()
                # Clip grad norm
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        # Logs
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/rollback_fraction", np.mean(rollback_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def learn(
        self: SelfPPORollback,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "PPORollback",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPPORollback:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
