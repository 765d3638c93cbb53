"""
Small, fast environments for testing sb3_cherry, registered with gymnasium under the ``sb3_cherry/`` namespace.

====================================  ===========================================  ==============================
id                                    observation / action                         what it exercises
====================================  ===========================================  ==============================
``sb3_cherry/HybridGoal-v0``          ``Box(5,)`` / ``Tuple(Discrete(3), Tuple(    parameterized (hybrid) actions
                                      Box(2,), Box(1,), Box(1,)))``
``sb3_cherry/HybridGoalUnscaled-v0``  as HybridGoal, parameter Boxes in unscaled   bound-aware distributions
                                      ranges ``[-5, 5]``, ``[0, 0.1]``, ``[0, 700]``
``sb3_cherry/CartPoleNoVel-v0``       ``Box(2,)`` / ``Discrete(2)``                memory (recurrent policies)
``sb3_cherry/PixelCatch-v0``          ``Box(36, 36, 1)`` uint8 / ``Discrete(3)``   ``CnnPolicy``
``sb3_cherry/DictReach-v0``           ``Dict`` / ``Box(2,)``                       ``MultiInputPolicy``
====================================  ===========================================  ==============================

``register_envs()`` registers them all; it is called by ``import sb3_cherry`` and is safe to call again.
"""

import gymnasium as gym

from sb3_cherry.envs.cartpole_no_vel import PartialObservation, make_cartpole_no_vel
from sb3_cherry.envs.dict_reach import DictReachEnv
from sb3_cherry.envs.hybrid_goal import HybridGoalEnv, HybridGoalUnscaledEnv
from sb3_cherry.envs.pixel_catch import PixelCatchEnv

#: keyword arguments of ``gymnasium.register`` for each environment, keyed by id
ENV_SPECS: dict[str, dict] = {
    "sb3_cherry/HybridGoal-v0": dict(
        entry_point="sb3_cherry.envs.hybrid_goal:HybridGoalEnv", max_episode_steps=20, reward_threshold=2.0
    ),
    "sb3_cherry/HybridGoalUnscaled-v0": dict(
        entry_point="sb3_cherry.envs.hybrid_goal:HybridGoalUnscaledEnv", max_episode_steps=20, reward_threshold=2.0
    ),
    "sb3_cherry/CartPoleNoVel-v0": dict(
        entry_point="sb3_cherry.envs.cartpole_no_vel:make_cartpole_no_vel", max_episode_steps=500, reward_threshold=475.0
    ),
    "sb3_cherry/PixelCatch-v0": dict(entry_point="sb3_cherry.envs.pixel_catch:PixelCatchEnv", reward_threshold=1.8),
    "sb3_cherry/DictReach-v0": dict(
        entry_point="sb3_cherry.envs.dict_reach:DictReachEnv", max_episode_steps=20, reward_threshold=1.5
    ),
}


def register_envs() -> None:
    """
    Register the ``sb3_cherry/`` environments with gymnasium. Ids already in ``gymnasium.envs.registry`` are left alone,
    so calling this twice (or after a user registered an id) is harmless.
    """
    for env_id, kwargs in ENV_SPECS.items():
        if env_id not in gym.envs.registry:
            gym.register(id=env_id, **kwargs)


__all__ = [
    "ENV_SPECS",
    "DictReachEnv",
    "HybridGoalEnv",
    "HybridGoalUnscaledEnv",
    "PartialObservation",
    "PixelCatchEnv",
    "make_cartpole_no_vel",
    "register_envs",
]
