from sb3_cherry.ppo_recurrent.policies import (
    CnnGruPolicy,
    CnnLstmPolicy,
    MlpGruPolicy,
    MlpLstmPolicy,
    MultiInputGruPolicy,
    MultiInputLstmPolicy,
)
from sb3_cherry.ppo_recurrent.ppo_recurrent import RecurrentPPORollback

__all__ = [
    "CnnGruPolicy",
    "CnnLstmPolicy",
    "MlpGruPolicy",
    "MlpLstmPolicy",
    "MultiInputGruPolicy",
    "MultiInputLstmPolicy",
    "RecurrentPPORollback",
]
