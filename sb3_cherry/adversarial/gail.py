from typing import ClassVar

from sb3_cherry.adversarial.common import AdversarialImitation


class GAIL(AdversarialImitation):
    """
    Generative Adversarial Imitation Learning: imitation's ``GAIL`` trainer with a PPORollback (default) or
    RecurrentPPORollback generator, sb3_cherry demonstration files and ``Tuple`` action spaces, as an SB3 algorithm
    (``learn``, ``predict``, ``save``, ``load``, ``get_parameters``, ``set_parameters``, ``set_env``, ``logger``). The
    generator maximises ``-log(1 - D(s, a))``, ``D`` being the discriminator's probability that ``(s, a)`` comes from
    the expert (a ``BasicRewardNet`` on ``(s, a)`` by default).

    ``save`` writes one zip: the generator's model (``PPORollback.load`` reads it), the discriminator's ``state_dict``
    and this class's hyperparameters as data (:mod:`sb3_cherry.adversarial.serialization`); ``GAIL.load(path, env=...)``
    restores all three. Constructor arguments: see :class:`~sb3_cherry.adversarial.common.AdversarialImitation`.

    Note that the GAIL reward is positive: on environments whose episodes end early on failure (CartPole-v1, which
    needs ``allow_variable_horizon=True``), it also rewards survival.

    Paper: https://arxiv.org/abs/1606.03476 (Ho and Ermon, "Generative Adversarial Imitation Learning", 2016)
    Code: imitation (https://github.com/HumanCompatibleAI/imitation, ``imitation.algorithms.adversarial.gail``)
    """

    trainer_kind: ClassVar[str] = "gail"
    default_reward_net: ClassVar[str] = "BasicRewardNet"
