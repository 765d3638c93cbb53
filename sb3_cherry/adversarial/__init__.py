from sb3_cherry.adversarial.airl import AIRL
from sb3_cherry.adversarial.common import AdversarialImitation, reward_net_path
from sb3_cherry.adversarial.gail import GAIL

__all__ = ["AIRL", "GAIL", "AdversarialImitation", "reward_net_path"]
