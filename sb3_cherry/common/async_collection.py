"""
Collection that overlaps learning.

SB3 collects a rollout, then trains on it, so the environment workers idle while the learner trains and the learner
idles while the workers step. With ``collection="async"``, a background thread steps the environments with a snapshot
of the policy (the *behaviour* policy, at most one update old) into a second rollout buffer while the learner trains
on the previous one; the buffers are then swapped.

Correction for the lag: the stored log-probabilities are the behaviour policy's, so PPO's ratio (and the rollback
surrogate) is taken with respect to the policy that actually acted; before the first epoch, values are re-evaluated
with the learner's critic and, with ``returns_estimator="vtrace"``, the returns use the truncated importance weights
``min(rho_bar, pi/mu)`` (IMPALA). Weights reach the behaviour policy with one in-process ``load_state_dict`` per
update (shared memory, nothing pickled). Environment stepping happens in the VecEnv (use ``SubprocVecEnv`` so that
stepping runs on other cores; its pipe waits release the GIL).

Callbacks run in the main thread: the steps of a rollout are replayed to ``callback.on_step()`` (with ``infos``,
``dones``, ``rewards`` and ``new_obs`` in ``locals``) once the rollout is handed over.
"""

import copy
import threading
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv


class AsyncCollector:
    """
    Background rollout collection for an SB3 on-policy algorithm.

    :param model: the algorithm (its ``policy``, ``env``, ``rollout_buffer`` and ``_last_obs`` are used)
    """

    def __init__(self, model: OnPolicyAlgorithm):
        self.model = model
        self.behaviour = copy.deepcopy(model.policy)
        self.behaviour.set_training_mode(False)
        for param in self.behaviour.parameters():
            param.requires_grad_(False)
        # The second buffer, filled in the background while the learner trains on model.rollout_buffer
        self.spare: RolloutBuffer = copy.deepcopy(model.rollout_buffer)
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.steps: list[dict[str, Any]] = []
        self.last_obs: Any = None
        self.last_episode_starts: np.ndarray | None = None

    def _start(self, env: VecEnv, n_rollout_steps: int) -> None:
        """Copy the learner's weights to the behaviour policy and start collecting into the spare buffer."""
        self.behaviour.load_state_dict(self.model.policy.state_dict())
        if self.last_obs is None:
            self.last_obs, self.last_episode_starts = self.model._last_obs, self.model._last_episode_starts
        self.error, self.steps = None, []
        self.thread = threading.Thread(target=self._collect, args=(env, n_rollout_steps), daemon=True)
        self.thread.start()

    def _collect(self, env: VecEnv, n_rollout_steps: int) -> None:
        try:
            self._collect_rollout(env, self.spare, n_rollout_steps)
        except BaseException as exc:  # re-raised in the main thread
            self.error = exc

    def _collect_rollout(self, env: VecEnv, buffer: RolloutBuffer, n_rollout_steps: int) -> None:
        """SB3's ``collect_rollouts`` loop with the behaviour policy and no callbacks (they are replayed later)."""
        model, policy = self.model, self.behaviour
        buffer.reset()
        if model.use_sde:
            policy.reset_noise(env.num_envs)
        for n_steps in range(n_rollout_steps):
            if model.use_sde and model.sde_sample_freq > 0 and n_steps % model.sde_sample_freq == 0:
                policy.reset_noise(env.num_envs)
            with th.no_grad():
                actions, values, log_probs = policy(obs_as_tensor(self.last_obs, model.device))
            actions = actions.cpu().numpy()
            clipped_actions = actions
            if isinstance(model.action_space, spaces.Box):
                if policy.squash_output:
                    clipped_actions = policy.unscale_action(clipped_actions)
                else:
                    clipped_actions = np.clip(actions, model.action_space.low, model.action_space.high)
            new_obs, rewards, dones, infos = env.step(clipped_actions)
            if isinstance(model.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)
            # Bootstrap on time-limit truncation, as SB3 does (GitHub issue #633)
            for idx, done in enumerate(dones):
                if done and infos[idx].get("terminal_observation") is not None and infos[idx].get("TimeLimit.truncated"):
                    terminal_obs = policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                    with th.no_grad():
                        rewards[idx] += model.gamma * policy.predict_values(terminal_obs)[0].item()
            buffer.add(self.last_obs, actions, rewards, self.last_episode_starts, values, log_probs)
            self.steps.append({"infos": infos, "dones": dones, "rewards": rewards, "new_obs": new_obs})
            self.last_obs, self.last_episode_starts = new_obs, dones
        with th.no_grad():
            last_values = policy.predict_values(obs_as_tensor(self.last_obs, model.device))
        buffer.compute_returns_and_advantage(last_values=last_values, dones=self.last_episode_starts)

    def wait(self) -> None:
        """Wait for the rollout in flight (re-raising its error, if any)."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            error, self.error = self.error, None
            raise RuntimeError(f"Asynchronous rollout collection failed: {error!r}") from error

    def next_rollout(self, env: VecEnv, callback: BaseCallback, n_rollout_steps: int) -> bool:
        """
        Hand over a collected rollout as ``model.rollout_buffer`` and start collecting the next one.

        :param env: the training VecEnv
        :param callback: the learn() callback (replayed step by step)
        :param n_rollout_steps: steps per env and rollout
        :return: False if a callback stopped training
        """
        model = self.model
        if self.thread is None:  # first call: nothing in flight yet
            self._start(env, n_rollout_steps)
        self.wait()
        model.rollout_buffer, self.spare = self.spare, model.rollout_buffer
        steps = self.steps
        # The next rollout starts from where this one stopped, with the weights the learner is about to update
        model._last_obs, model._last_episode_starts = self.last_obs, self.last_episode_starts
        self._start(env, n_rollout_steps)

        callback.on_rollout_start()
        for step in steps:
            model.num_timesteps += env.num_envs
            callback.update_locals(step)
            if not callback.on_step():
                return False
            model._update_info_buffer(step["infos"], step["dones"])
        callback.update_locals({"rollout_buffer": model.rollout_buffer})
        callback.on_rollout_end()
        return True

    def stop(self) -> None:
        """Wait for the rollout in flight and discard it (called at the end of ``learn``)."""
        try:
            self.wait()
        finally:
            if self.last_obs is not None:
                self.model._last_obs, self.model._last_episode_starts = self.last_obs, self.last_episode_starts
            self.last_obs = None
