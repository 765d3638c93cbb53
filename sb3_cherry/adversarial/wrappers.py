"""
VecEnv plumbing between an sb3_cherry generator and imitation's adversarial trainers (no imitation import here).

imitation's reward nets and replay buffer need array action spaces (``Box``, ``Discrete``, ...), while sb3_cherry's
generators also act in ``Tuple`` action spaces. The adapter therefore builds this chain (top = what the generator
steps, bottom = the user's environment)::

    VecTupleActions                 (added by the generator: flat rollout actions -> tuples, Box parts clipped)
    VecNormalize                    (the user's, if any: the policy sees normalised observations and rewards)
    OpaqueVecEnv                    (hides the wrappers below from SB3's wrapper-chain walks)
    VecTupleActionSpace             (tuples -> their flat encoding; the action space seen above is the Tuple again)
    imitation RewardVecEnvWrapper   (replaces the reward with the discriminator's)
    imitation BufferingWrapper      (records the generator's transitions for the discriminator)
    VecFlatActionSpace              (the Tuple action space exposed as a flat Box; flat actions -> tuples)
    the user's VecEnv               (Monitor: ``rollout/ep_rew_mean`` stays the environment's true return)

so imitation records exactly the flat encoding (:mod:`sb3_cherry.common.spaces`) of the actions the environment
executed, the same encoding the demonstration files store. Without a ``Tuple`` action space, the two Tuple wrappers
are left out; without ``VecNormalize``, so is it.
"""

from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from sb3_cherry.common.spaces import (
    action_decoder,
    check_action_space,
    flat_action_space,
    flatten_action,
    unflatten_action,
    unflatten_actions,
)


def canonical_flat_actions(space: spaces.Tuple, actions: Any, num_envs: int) -> np.ndarray:
    """
    The flat encoding of the actions an environment executes: discrete columns rounded, ``Box`` columns clipped.

    :param space: the ``Tuple`` action space
    :param actions: flat actions ``(num_envs, flat_action_dim)`` or a sequence of ``num_envs`` tuples
    :param num_envs: number of environments
    :return: float32 array ``(num_envs, flat_action_dim)``
    """
    if isinstance(actions, np.ndarray) and actions.dtype != object:
        rows = unflatten_actions(space, actions.reshape(num_envs, -1))
    else:
        rows = [unflatten_action(space, flatten_action(space, action)) for action in actions]
    return np.stack([flatten_action(space, row) for row in rows]).astype(np.float32)


class VecFlatActionSpace(VecEnvWrapper):
    """
    Expose a ``Tuple`` action space as its flat encoding, a float32 ``Box`` of shape ``(flat_action_dim,)``: the
    wrapper takes flat actions ``(n_envs, flat_action_dim)`` and passes tuples to the wrapped VecEnv.

    :param venv: a VecEnv with a ``Tuple`` action space
    """

    def __init__(self, venv: VecEnv):
        if not isinstance(venv.action_space, spaces.Tuple):
            raise ValueError(f"VecFlatActionSpace needs a Tuple action space, got {venv.action_space}.")
        check_action_space(venv.action_space)
        self.tuple_space = venv.action_space
        self._decode = action_decoder(venv.action_space)
        super().__init__(venv, action_space=flat_action_space(venv.action_space))

    def step_async(self, actions: np.ndarray) -> None:
        flat = canonical_flat_actions(self.tuple_space, actions, self.num_envs)
        self.venv.step_async(self._decode(flat))  # type: ignore[arg-type]

    def step_wait(self) -> VecEnvStepReturn:
        return self.venv.step_wait()

    def reset(self) -> VecEnvObs:
        return self.venv.reset()


class VecTupleActionSpace(VecEnvWrapper):
    """
    The inverse of :class:`VecFlatActionSpace`: expose ``tuple_space`` on top of a VecEnv that takes flat actions.
    Tuples (or flat rows) are sent down as their canonical flat encoding (:func:`canonical_flat_actions`).

    :param venv: a VecEnv whose action space is the flat encoding of ``tuple_space``
    :param tuple_space: the ``Tuple`` action space to expose
    """

    def __init__(self, venv: VecEnv, tuple_space: spaces.Tuple):
        check_action_space(tuple_space)
        expected = flat_action_space(tuple_space).shape
        if venv.action_space.shape != expected:
            raise ValueError(
                f"VecTupleActionSpace: the wrapped VecEnv's action space {venv.action_space} is not the flat encoding "
                f"of {tuple_space} (shape {expected})."
            )
        self.tuple_space = tuple_space
        super().__init__(venv, action_space=tuple_space)

    def step_async(self, actions: Any) -> None:
        self.venv.step_async(canonical_flat_actions(self.tuple_space, actions, self.num_envs))

    def step_wait(self) -> VecEnvStepReturn:
        return self.venv.step_wait()

    def reset(self) -> VecEnvObs:
        return self.venv.reset()


class OpaqueVecEnv(VecEnv):
    """
    A VecEnv that forwards everything to ``venv`` without being a ``VecEnvWrapper``, so SB3 utilities that walk a
    wrapper chain stop here. ``sync_envs_normalization`` (``EvalCallback`` with ``VecNormalize``) walks the training and
    the evaluation chains in lockstep and fails when the training env has extra wrappers, here imitation's reward and
    buffering wrappers below the user's ``VecNormalize``.

    :param venv: the VecEnv to hide
    """

    def __init__(self, venv: VecEnv):
        self.venv = venv
        super().__init__(venv.num_envs, venv.observation_space, venv.action_space)
        del self.reset_infos  # read through to the wrapped VecEnv (see __getattr__)

    def __getattr__(self, name: str) -> Any:
        if name == "venv":  # not set yet (during unpickling): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.venv, name)

    def reset(self) -> VecEnvObs:
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        return self.venv.step_wait()

    def close(self) -> None:
        self.venv.close()

    def seed(self, seed: int | None = None) -> Any:
        return self.venv.seed(seed)

    def set_options(self, options: list[dict] | dict | None = None) -> None:
        self.venv.set_options(options)

    def get_images(self) -> Any:
        return self.venv.get_images()

    def render(self, mode: str | None = None) -> np.ndarray | None:
        return self.venv.render(mode)

    def has_attr(self, attr_name: str) -> bool:
        return self.venv.has_attr(attr_name)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self.venv.get_attr(attr_name, indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self.venv.set_attr(attr_name, value, indices)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list:
        return self.venv.env_method(method_name, *method_args, indices=indices, **method_kwargs)

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return self.venv.env_is_wrapped(wrapper_class, indices)

    @property
    def unwrapped(self) -> VecEnv:
        return self.venv.unwrapped
