"""
Vectorized environments.

``CherrySubprocVecEnv``: SB3's ``SubprocVecEnv`` whose worker failures name their cause.
``RayVecEnv`` is exported lazily: importing this package does not import Ray (an optional dependency,
``pip install "sb3_cherry[distributed]"``).
"""

from typing import TYPE_CHECKING, Any

from sb3_cherry.common.vec_env.subproc_vec_env import CherrySubprocVecEnv, WorkerDiedError

if TYPE_CHECKING:
    from sb3_cherry.common.vec_env.ray_vec_env import RayVecEnv

__all__ = ["CherrySubprocVecEnv", "RayVecEnv", "WorkerDiedError"]


def __getattr__(name: str) -> Any:
    if name == "RayVecEnv":
        from sb3_cherry.common.vec_env.ray_vec_env import RayVecEnv

        return RayVecEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
