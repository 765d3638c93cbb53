import os

from sb3_cherry.a2c import CherryA2C
from sb3_cherry.adversarial import AIRL, GAIL
from sb3_cherry.bco import BCO
from sb3_cherry.common.config_schema import register_algorithms
from sb3_cherry.envs import register_envs
from sb3_cherry.ppo_recurrent import RecurrentPPORollback
from sb3_cherry.ppo_rollback import PPORollback

register_envs()

# Read version from file
version_file = os.path.join(os.path.dirname(__file__), "version.txt")
with open(version_file) as file_handler:
    __version__ = file_handler.read().strip()


def zoo_algorithms() -> dict[str, type]:
    """
    sb3_cherry's algorithms under their rl_zoo3 names (``--algo`` of ``sb3-cherry train``).

    :return: ``{name: class}``
    """
    return {
        "ppo_rollback": PPORollback,
        "cherry_a2c": CherryA2C,
        "bco": BCO,
        "recurrent_ppo_rollback": RecurrentPPORollback,
        "gail": GAIL,
        "airl": AIRL,
    }


register_algorithms(zoo_algorithms())


__all__ = ["AIRL", "BCO", "GAIL", "CherryA2C", "PPORollback", "RecurrentPPORollback", "zoo_algorithms"]
