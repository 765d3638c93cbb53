from sb3_cherry.ppo_rollback.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_cherry.ppo_rollback.ppo_rollback import PPORollback

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy", "PPORollback"]
