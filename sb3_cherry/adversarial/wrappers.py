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
    VecFiniteCheck                  (raises at a non-finite observation before imitation records or rewards it)
    VecFlatActionSpace              (the Tuple action space exposed as a flat Box; flat actions -> tuples)
    the user's VecEnv               (Monitor: ``rollout/ep_rew_mean`` stays the environment's true return)

so imitation records exactly the flat encoding (:mod:`sb3_cherry.common.spaces`) of the actions the environment
executed, the same encoding the demonstration files store. Without a ``Tuple`` action space, the two Tuple wrappers
are left out; without ``VecNormalize``, so is it.
"""

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from sb3_cherry.common.finite import check_finite_observation, check_finite_step
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


#: What :mod:`sb3_cherry.common.finite`'s message says of a VecNormalize, untrue below it (:class:`VecFiniteCheck`)
_VEC_NORMALIZE_CLAUSE = (
    "(a VecNormalize in the env has already taken the value into its running statistics: reload them before going on)"
)


@contextlib.contextmanager
def _below_vec_normalize() -> Iterator[None]:
    """The check's error, saying that a VecNormalize above has not taken the value into its statistics."""
    try:
        yield
    except ValueError as error:
        message = str(error).replace(_VEC_NORMALIZE_CLAUSE, "(a VecNormalize in the env has not seen the value)")
        raise ValueError(message) from None


class VecFiniteCheck(VecEnvWrapper):
    """
    Raises a ValueError at the first non-finite observation or terminal observation (NaN, inf, or a float64 value
    beyond float32's range) that the user's environment returns, while ``model.check_finite`` is True. It sits right
    above that environment: before imitation's ``BufferingWrapper`` records the step for the discriminator, before its
    ``RewardVecEnvWrapper`` computes the discriminator's reward from it (a NaN reward would be reported instead of the
    observation) and keeps it as the next step's observation, and before the user's ``VecNormalize`` normalises and
    clips it (a raw ``1e39`` terminal observation reached the policy as ``clip_obs``, the discriminator as ``inf``)
    or takes it into its statistics. The step that raised is recorded nowhere. Rewards are not checked: imitation
    replaces them with the discriminator's (the generator's own checks see those).

    :param venv: the user's VecEnv (through :class:`VecFlatActionSpace` for ``Tuple`` action spaces)
    :param model: the generator: its ``check_finite`` switches the check on, its ``num_timesteps`` is reported
    """

    def __init__(self, venv: VecEnv, model: Any):
        super().__init__(venv)
        self.model = model

    def _enabled(self) -> bool:
        return bool(getattr(self.model, "check_finite", True))

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        if self._enabled():
            with _below_vec_normalize():
                check_finite_observation(obs, "observation", f"reset, num_timesteps={self.model.num_timesteps}")  # type: ignore[arg-type]
        return obs

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        if self._enabled():
            with _below_vec_normalize():  # the generator counts the step after it: report the count it will have
                check_finite_step(obs, None, dones, infos, self.model.num_timesteps + self.num_envs)  # type: ignore[arg-type]
        return obs, rewards, dones, infos


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
