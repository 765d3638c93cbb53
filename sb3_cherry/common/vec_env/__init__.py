"""
Vectorized environments.

``CherrySubprocVecEnv``: SB3's ``SubprocVecEnv`` whose worker failures name their cause.
``CherryDummyVecEnv``: SB3's ``DummyVecEnv`` with cheaper copies of what a step returns (same values).
``CherryParallelVecEnv``: the envs in groups stepped at once, one here and one per worker process (same values).
``CherryVecNormalize``: SB3's ``VecNormalize`` with the same floats and less work per step (saved as SB3's).
``RayVecEnv`` and ``EnvPoolVecEnv`` / ``make_envpool_vec_env`` are exported lazily: importing this package does not
import Ray or EnvPool (optional dependencies, ``pip install "sb3_cherry[distributed]"`` / ``"sb3_cherry[envpool]"``).
"""

from typing import TYPE_CHECKING, Any

from sb3_cherry.common.vec_env.dummy_vec_env import CherryDummyVecEnv
from sb3_cherry.common.vec_env.parallel_vec_env import CherryParallelVecEnv
from sb3_cherry.common.vec_env.subproc_vec_env import CherrySubprocVecEnv, WorkerDiedError, WorkerTimeoutError
from sb3_cherry.common.vec_env.vec_normalize import CherryVecNormalize

if TYPE_CHECKING:
    from sb3_cherry.common.vec_env.envpool_vec_env import EnvPoolVecEnv, make_envpool_vec_env
    from sb3_cherry.common.vec_env.ray_vec_env import RayVecEnv

__all__ = [
    "CherryDummyVecEnv",
    "CherryParallelVecEnv",
    "CherrySubprocVecEnv",
    "CherryVecNormalize",
    "EnvPoolVecEnv",
    "RayVecEnv",
    "WorkerDiedError",
    "WorkerTimeoutError",
    "make_envpool_vec_env",
]


def __getattr__(name: str) -> Any:
    if name == "RayVecEnv":
        from sb3_cherry.common.vec_env.ray_vec_env import RayVecEnv

        return RayVecEnv
    if name in ("EnvPoolVecEnv", "make_envpool_vec_env"):
        from sb3_cherry.common.vec_env import envpool_vec_env

        return getattr(envpool_vec_env, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
