"""
imitation's pieces the GAIL / AIRL adapter builds on, with its fixes: the trainers, the logger, reward net arguments.

imitation is imported lazily (inside the functions): importing this module works without it, and
:func:`import_imitation` says how to install it.
"""

from collections.abc import Mapping
from typing import Any

import torch as th
import torch.nn.functional as F
from stable_baselines3.common.vec_env import VecNormalize

#: How to install imitation (its metadata pins an old SB3 / gymnasium, hence ``--no-deps``)
INSTALL_HINT = (
    "Install it with `pip install --no-deps imitation==1.0.1` (imitation's metadata pins old Stable-Baselines3 / "
    "gymnasium versions, hence --no-deps; the packages its modules import are sb3_cherry's own dependencies)."
)

_TRAINER_CLASSES: dict[str, type] = {}


def import_imitation(algo_name: str = "GAIL") -> None:
    """
    Import imitation's adversarial trainers, or raise an ``ImportError`` saying how to install imitation.

    :param algo_name: the algorithm that needs it (for the message)
    :raises ImportError: imitation is missing or cannot be imported
    """
    try:
        import imitation  # noqa: F401
        from imitation.algorithms.adversarial import airl, gail  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"{algo_name} needs the `imitation` package (https://github.com/HumanCompatibleAI/imitation), which could "
            f"not be imported ({exc}). {INSTALL_HINT}"
        ) from exc


def trainer_class(kind: str) -> type:
    """
    imitation's GAIL or AIRL trainer with the adapter's fixes (classes built on first use: imitation is lazy).

    :param kind: ``"gail"`` or ``"airl"``
    :return: the trainer class
    """
    if not _TRAINER_CLASSES:
        from imitation.algorithms.adversarial import airl, common, gail

        class WholeBatchStats(common.AdversarialTrainer):
            """
            imitation's ``train_disc`` with its statistics (loss, accuracies, counts) over the whole batch of
            ``demo_batch_size`` expert and as many generator samples: imitation computes them from the last of the
            ``demo_batch_size / demo_minibatch_size`` minibatches only (e.g. a quarter of the batch, and that
            minibatch's loss scaled by 1/4 reported as the loss). The update itself is imitation's.
            """

            def train_disc(
                self, *, expert_samples: Mapping[str, Any] | None = None, gen_samples: Mapping[str, Any] | None = None
            ) -> Mapping[str, float]:
                with self.logger.accumulate_means("disc"):
                    write_summaries = self._init_tensorboard and self._global_step % 20 == 0
                    self._disc_opt.zero_grad()
                    logits, labels, losses = [], [], []
                    for batch in self._make_disc_train_batches(gen_samples=gen_samples, expert_samples=expert_samples):
                        disc_logits = self.logits_expert_is_high(
                            batch["state"], batch["action"], batch["next_state"], batch["done"], batch["log_policy_act_prob"]
                        )
                        loss = F.binary_cross_entropy_with_logits(disc_logits, batch["labels_expert_is_one"].float())
                        # the mean over the whole batch: each minibatch's mean weighted by its share
                        loss = loss * (self.demo_minibatch_size / self.demo_batch_size)
                        loss.backward()
                        logits.append(disc_logits.detach())
                        labels.append(batch["labels_expert_is_one"])
                        losses.append(loss.detach())
                    self._disc_opt.step()
                    self._disc_step += 1
                    all_logits = th.cat(logits)
                    with th.no_grad():
                        train_stats = common.compute_train_stats(all_logits, th.cat(labels), th.stack(losses).sum())
                    self.logger.record("global_step", self._global_step)
                    for key, value in train_stats.items():
                        self.logger.record(key, value)
                    self.logger.dump(self._disc_step)
                    if write_summaries:
                        self._summary_writer.add_histogram("disc_logits", all_logits)
                return train_stats

        class GAILTrainer(WholeBatchStats, gail.GAIL):
            """imitation's GAIL, without evaluating generator log-probabilities (the GAIL discriminator ignores them)."""

            def _get_log_policy_act_prob(self, obs_th: th.Tensor, acts_th: th.Tensor) -> th.Tensor | None:
                return None

        class AIRLTrainer(WholeBatchStats, airl.AIRL):
            """imitation's AIRL, evaluating ``log pi(a|s)`` on observations normalised as the policy sees them."""

            obs_normalizer: VecNormalize | None = None

            def _get_log_policy_act_prob(self, obs_th: th.Tensor, acts_th: th.Tensor) -> th.Tensor | None:
                if self.obs_normalizer is not None and self.obs_normalizer.norm_obs:
                    normalised = self.obs_normalizer.normalize_obs(obs_th.cpu().numpy())
                    obs_th = th.as_tensor(normalised, device=obs_th.device)
                if acts_th.dtype in (th.bool, th.int8, th.uint8):  # MultiBinary, stored as int8: the Bernoulli needs
                    acts_th = acts_th.float()  # floats (as SB3's rollout buffer hands them to the generator's update)
                return super()._get_log_policy_act_prob(obs_th, acts_th)

        _TRAINER_CLASSES.update(gail=GAILTrainer, airl=AIRLTrainer)
    return _TRAINER_CLASSES[kind]


#: Discriminator statistics of imitation (``compute_train_stats`` and ``global_step``) -> SB3-style keys
DISCRIMINATOR_KEYS = {"global_step": "rounds"}
_LOGGER_CLASSES: dict[str, type] = {}


def discriminator_logger_class() -> type:
    """
    imitation's ``HierarchicalLogger`` writing the discriminator's means under ``discriminator/<stat>`` (``loss``,
    ``acc``, ``acc_expert``, ``acc_gen``, ``entropy``, ...: imitation's ``disc_`` prefix dropped) next to SB3's
    ``train/`` and ``rollout/`` keys, instead of ``mean/disc/disc_<stat>``. Per-update values stay in imitation's
    ``raw/disc`` sub-logger (tensorboard only). Built on first use: imitation is imported lazily.

    :return: the logger class
    """
    if not _LOGGER_CLASSES:
        from imitation.util.logger import HierarchicalLogger

        class DiscriminatorLogger(HierarchicalLogger):
            """HierarchicalLogger with the discriminator's means under ``discriminator/``."""

            def record(self, key: str, val: Any, exclude: str | tuple[str, ...] | None = None) -> None:
                if self.current_logger is not None and self._name == "disc" and not self._accumulate_prefixes:
                    stat = DISCRIMINATOR_KEYS.get(key, key.removeprefix("disc_"))
                    self.current_logger.record(f"raw/discriminator/{stat}", val, exclude)
                    self.default_logger.record_mean(f"discriminator/{stat}", val, exclude)
                else:
                    super().record(key, val, exclude)

        _LOGGER_CLASSES["discriminator"] = DiscriminatorLogger
    return _LOGGER_CLASSES["discriminator"]


def resolve_reward_net_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Names from YAML files to objects: ``normalize_input_layer`` (``"RunningNorm"``, ...) and ``activation``."""
    from imitation.util import networks

    resolved = dict(kwargs)
    layer = resolved.get("normalize_input_layer")
    if isinstance(layer, str):
        if layer in ("None", "none", ""):
            resolved["normalize_input_layer"] = None
        elif isinstance(getattr(networks, layer, None), type):
            resolved["normalize_input_layer"] = getattr(networks, layer)
        else:
            raise ValueError(
                f"reward_net_kwargs: unknown normalize_input_layer {layer!r} (use 'RunningNorm', 'EMANorm' or None)."
            )
    activation = resolved.get("activation")
    if isinstance(activation, str):
        name = activation.removeprefix("nn.")
        if not isinstance(getattr(th.nn, name, None), type):
            raise ValueError(f"reward_net_kwargs: unknown activation {activation!r} (a torch.nn class, e.g. 'ReLU').")
        resolved["activation"] = getattr(th.nn, name)
    return resolved
