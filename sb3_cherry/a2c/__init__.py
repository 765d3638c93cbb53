from sb3_cherry.a2c.a2c import CherryA2C
from sb3_cherry.a2c.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["CherryA2C", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
