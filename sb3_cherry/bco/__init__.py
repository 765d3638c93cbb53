from sb3_cherry.bco.bco import BCO
from sb3_cherry.bco.policies import CnnPolicy, InverseDynamicsModel, MlpPolicy, MultiInputPolicy

__all__ = ["BCO", "CnnPolicy", "InverseDynamicsModel", "MlpPolicy", "MultiInputPolicy"]
