from typing import ClassVar

from sb3_cherry.adversarial.common import AdversarialImitation


class AIRL(AdversarialImitation):
    """
    Adversarial Inverse Reinforcement Learning: imitation's ``AIRL`` trainer with a PPORollback generator,
    sb3_cherry demonstration files and ``Tuple`` action spaces, as an SB3 algorithm (``learn``, ``predict``, ``save``,
    ``load``, ``get_parameters``, ``set_parameters``, ``set_env``, ``logger``). The discriminator's logit is
    ``f(s, a, s') - log pi(a | s)`` with a shaped reward ``f = g(s, a) + gamma * h(s') - h(s)``
    (``BasicShapedRewardNet`` by default, ``gamma`` the generator's), which is also the generator's reward. As in
    imitation, ``h(s')`` is 0 at every episode end, time-limit truncations included (expert and generator alike).

    Feed-forward generators only (``log pi(a | s)`` of single transitions). ``save`` writes one zip: the generator's
    model (``PPORollback.load`` reads it), the shaped reward net's ``state_dict`` and this class's hyperparameters as
    data; ``AIRL.load(path, env=...)`` restores all three. Constructor arguments: see
    :class:`~sb3_cherry.adversarial.common.AdversarialImitation`.

    Paper: https://arxiv.org/abs/1710.11248 (Fu, Luo and Levine, "Learning Robust Rewards with Adversarial Inverse
    Reinforcement Learning", 2018)
    Code: imitation (https://github.com/HumanCompatibleAI/imitation, ``imitation.algorithms.adversarial.airl``)
    """

    trainer_kind: ClassVar[str] = "airl"
    default_reward_net: ClassVar[str] = "BasicShapedRewardNet"
