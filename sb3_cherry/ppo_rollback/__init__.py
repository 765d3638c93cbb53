from sb3_cherry.ppo_rollback.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_cherry.ppo_rollback.ppo_rollback import PPORollback
from sb3_cherry.ppo_rollback.trust_region import trust_region_surrogate

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy", "PPORollback", "trust_region_surrogate"]
