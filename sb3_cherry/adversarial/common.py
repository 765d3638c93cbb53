"""
Adapter between imitation's adversarial trainers (``imitation.algorithms.adversarial``) and sb3_cherry's generators.

imitation (https://github.com/HumanCompatibleAI/imitation, 1.0.1) is imported lazily: importing this module works
without it, constructing or loading a model raises an ``ImportError`` that says how to install it.

What the adapter adds to imitation's ``GAIL`` / ``AIRL``:

- demonstrations from sb3_cherry's demonstration files (:mod:`sb3_cherry.demos`) or trajectories, checked against
  the environment;
- ``Tuple`` action spaces: imitation sees the flat encoding (:mod:`sb3_cherry.adversarial.wrappers`), for generator
  rollouts and demonstrations alike;
- the user's ``VecNormalize`` kept above imitation's reward wrapper: the discriminator sees raw observations (as the
  demonstration files store them), the policy normalised ones;
- one ``generator.learn`` call for the whole budget, with a discriminator round after each rollout (see
  :meth:`AdversarialImitation.learn`), so SB3 callbacks, progress bars, logging and learning-rate / clip-range
  schedules behave as in plain SB3 training;
- SB3 2.9 / sb3_cherry fixes: GAIL does not evaluate the generator's log-probabilities (imitation computes them for
  every discriminator batch; recurrent policies cannot do it without their hidden states), AIRL evaluates them on
  normalised observations when the env has a ``VecNormalize``;
- an SB3 ``BaseAlgorithm``: ``learn``, ``predict``, ``save`` / ``load`` of one zip (the generator's archive, which
  ``PPORollback.load`` still reads, plus the reward net and the adapter's hyperparameters as data:
  :mod:`sb3_cherry.adversarial.serialization`), ``get_parameters`` / ``set_parameters``, ``set_env``, ``logger``
  (discriminator metrics under ``discriminator/``); callbacks see the adapter as ``self.model``.
"""

import contextlib
import dataclasses
import io
import os
import pathlib
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, TensorDict
from stable_baselines3.common.utils import get_latest_run_id
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, unwrap_vec_normalize

from sb3_cherry.adversarial.serialization import (
    load_state_dict,
    read_adversarial_entries,
    to_json_value,
    write_model_archive,
    zip_bytes,
)
from sb3_cherry.adversarial.trainers import (
    discriminator_logger_class,
    import_imitation,
    resolve_reward_net_kwargs,
    trainer_class,
)
from sb3_cherry.adversarial.wrappers import OpaqueVecEnv, VecFiniteCheck, VecFlatActionSpace, VecTupleActionSpace
from sb3_cherry.common.config_schema import RESERVED_ARGS, check_constructor_kwargs
from sb3_cherry.common.finite import (
    UpdateSnapshot,
    check_finite_weights,
    check_update,
    non_finite_rows,
    undone_if_raised,
)
from sb3_cherry.common.on_policy import wrap_tuple_eval_envs
from sb3_cherry.common.safe_config import check_policy_kwargs, parse_policy_kwargs
from sb3_cherry.common.safe_load import stored_policy_class
from sb3_cherry.common.save_util import atomic_write, check_model_file, resolve_zip_path
from sb3_cherry.common.spaces import check_actions_start_at_zero, flat_action_dim, flat_action_space
from sb3_cherry.common.vec_env.tuple_actions import VecTupleActions
from sb3_cherry.demos import load_demos
from sb3_cherry.ppo_recurrent import RecurrentPPORollback
from sb3_cherry.ppo_rollback import PPORollback

SelfAdversarialImitation = TypeVar("SelfAdversarialImitation", bound="AdversarialImitation")

#: Generator classes by name (``generator_class`` in zoo configs)
GENERATOR_CLASSES: dict[str, type[OnPolicyAlgorithm]] = {
    "ppo_rollback": PPORollback,
    "recurrent_ppo_rollback": RecurrentPPORollback,
}

#: The hyperparameters a model file may hold (what ``_config_data`` writes; ``generator_class``, ``policy`` and
#: ``policy_kwargs`` are tolerated and ignored): anything else in a file is refused by ``load``
_SAVED_HYPERPARAMETERS = frozenset(
    {
        "reward_net_class",
        "reward_net_kwargs",
        "demo_batch_size",
        "demo_minibatch_size",
        "n_disc_updates_per_round",
        "gen_train_timesteps",
        "gen_replay_buffer_capacity",
        "disc_lr",
        "disc_opt_kwargs",
        "allow_variable_horizon",
        "tensorboard_log",
        "verbose",
        "seed",
        "generator_class",
        "policy",
        "policy_kwargs",
    }
)

#: Arguments of GAIL / AIRL that are the generator's too: given to the adversarial class, never in generator_kwargs
_GENERATOR_RESERVED = frozenset({"policy_kwargs", "seed", "verbose", "device", "tensorboard_log", "env", "policy"})

_AIRL_RECURRENT = (
    "AIRL needs log pi(a|s) of the generator for single transitions, which a recurrent policy cannot give without its "
    "hidden states: use GAIL with a recurrent generator, or a feed-forward generator with AIRL."
)


def reward_net_path(path: str | os.PathLike) -> pathlib.Path:
    """
    The reward net file that earlier sb3_cherry versions saved next to a model, ``<path>_reward_net.pt`` (``.zip``
    stripped from ``path``); :meth:`AdversarialImitation.load` still reads it for files of that layout.

    :param path: the model path given to ``save`` / ``load``
    :return: the reward net path
    """
    model_path = resolve_zip_path(pathlib.Path(path))
    base = model_path.with_suffix("") if model_path.suffix == ".zip" else model_path
    return base.with_name(f"{base.name}_reward_net.pt")


def resolve_generator_class(generator_class: str | type[OnPolicyAlgorithm]) -> type[OnPolicyAlgorithm]:
    """
    The generator class from a class or a name (``"ppo_rollback"``, ``"recurrent_ppo_rollback"``).

    :param generator_class: class or name
    :return: the class
    :raises ValueError: unknown name, or not an on-policy algorithm
    """
    if isinstance(generator_class, str):
        if generator_class not in GENERATOR_CLASSES:
            raise ValueError(f"Unknown generator_class {generator_class!r}: choose one of {sorted(GENERATOR_CLASSES)}.")
        return GENERATOR_CLASSES[generator_class]
    if isinstance(generator_class, type) and issubclass(generator_class, OnPolicyAlgorithm):
        return generator_class
    raise ValueError(
        f"generator_class must be an on-policy algorithm class (PPORollback, RecurrentPPORollback) or one of "
        f"{sorted(GENERATOR_CLASSES)}, got {generator_class!r}: the discriminator is trained after each rollout."
    )


def _detect_generator_class(archive: io.BytesIO) -> type[OnPolicyAlgorithm]:
    """RecurrentPPORollback when the saved policy is recurrent, else PPORollback (generator-only files)."""
    archive.seek(0)
    policy_class = stored_policy_class(archive)  # read by name from an allow-list: nothing unpickled
    archive.seek(0)
    if isinstance(policy_class, type) and issubclass(policy_class, RecurrentActorCriticPolicy):
        return RecurrentPPORollback
    return PPORollback


@contextlib.contextmanager
def _action_space_as(generator: OnPolicyAlgorithm, action_space: spaces.Space) -> Iterator[None]:
    """
    Let the generator accept a VecEnv with another action space for the duration of the block. imitation's trainer
    calls ``gen_algo.set_env(venv_train)`` with the flat action space; the adapter sets the real chain right after.
    """
    original = generator.action_space
    generator.action_space = action_space
    try:
        yield
    finally:
        generator.action_space = original


def _leaves(space: spaces.Space, offset: int = 0) -> Iterator[tuple[spaces.Space, slice]]:
    """The non-Tuple components of an action space and their columns in its flat encoding."""
    if isinstance(space, spaces.Tuple):
        for sub in space.spaces:
            yield from _leaves(sub, offset)
            offset += flat_action_dim(sub)
    else:
        yield space, slice(offset, offset + flat_action_dim(space))


def _first_bad_value(row: np.ndarray) -> Any:
    """The first entry of ``row`` (one step or sample) that :func:`~sb3_cherry.common.finite.non_finite_rows` flags."""
    entries = np.asarray(row).reshape(-1, 1)
    return entries[non_finite_rows(entries)][0, 0].item()


def _action_problem(acts: np.ndarray, space: spaces.Space) -> str | None:
    """
    What makes demonstrated actions (one row per step; Tuple actions in their flat encoding) impossible in ``space``:
    a discrete value outside the space (a file recorded on another environment would otherwise fail inside torch's
    one-hot encoding) or a non-finite continuous one; None when they fit.
    """
    flat = np.asarray(acts, dtype=np.float64).reshape(len(acts), -1)
    for sub, columns in _leaves(space):
        values = flat[:, columns]
        if isinstance(sub, spaces.Box):
            bad_rows = non_finite_rows(values)  # (float64 values beyond float32's range are inf for the reward net)
            if bad_rows.any():
                step = int(np.argmax(bad_rows))
                return (
                    f"non-finite actions (NaN, inf, or beyond float32's range: inf in the float32 reward net) for {sub} "
                    f"(step {step}: {_first_bad_value(values[step]):g})"
                )
            continue
        if isinstance(sub, spaces.Discrete):
            low, high = np.array([sub.start]), np.array([sub.start + sub.n - 1])
        elif isinstance(sub, spaces.MultiDiscrete):
            low = np.asarray(sub.start).reshape(-1)
            high = low + np.asarray(sub.nvec).reshape(-1) - 1
        else:  # MultiBinary
            low, high = np.zeros(values.shape[1]), np.ones(values.shape[1])
        bad = (values < low) | (values > high) | (values != np.round(values))
        if bad.any():
            step, column = np.argwhere(bad)[0]
            return f"actions outside the environment's action space {sub} (step {step}: {values[step, column]:g})"
    return None


class _DiscriminatorRounds(BaseCallback):
    """Runs the adapter's discriminator round at the end of each generator rollout."""

    def __init__(self, model: "AdversarialImitation"):
        super().__init__()
        self._adversarial = model

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self._adversarial._end_of_rollout()


class _AdapterCallback(BaseCallback):
    """
    Runs the user's callbacks inside the generator's ``learn`` with the adapter as their ``model``: an
    ``EvalCallback`` / ``CheckpointCallback`` then saves the whole model (generator, reward net, hyperparameters) and
    reads ``num_timesteps``, ``get_env()``, ``logger`` from the adapter.

    :param callback: the user's callbacks
    :param model: the adapter
    """

    def __init__(self, callback: BaseCallback, model: "AdversarialImitation"):
        super().__init__(verbose=callback.verbose)
        self.callback = callback
        self._adversarial = model

    def init_callback(self, model: BaseAlgorithm) -> None:
        super().init_callback(model)  # the generator
        self.callback.init_callback(self._adversarial)

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        self.callback.update_locals(locals_)

    def _on_training_start(self) -> None:
        self.callback.on_training_start(self.locals, self.globals)

    def _on_rollout_start(self) -> None:
        self.callback.on_rollout_start()

    def _on_step(self) -> bool:
        return self.callback.on_step()

    def _on_rollout_end(self) -> None:
        self.callback.on_rollout_end()

    def _on_training_end(self) -> None:
        self.callback.on_training_end()


class _FromGenerator:
    """
    An attribute of the adapter that is the generator's once the generator exists (``policy``, ``env``,
    ``num_timesteps``, ...): SB3 tools reading ``model.<name>`` see the generator's run, and ``BaseAlgorithm.__init__``
    can still assign its defaults before the generator is built.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        generator = instance.__dict__.get("generator")
        if generator is not None:
            return getattr(generator, self.name)
        return instance.__dict__.get(self.name)

    def __set__(self, instance: Any, value: Any) -> None:
        generator = instance.__dict__.get("generator")
        if generator is not None:
            setattr(generator, self.name, value)
        else:
            instance.__dict__[self.name] = value


class AdversarialImitation(BaseAlgorithm):
    """
    Base of the :class:`~sb3_cherry.adversarial.GAIL` and :class:`~sb3_cherry.adversarial.AIRL` adapters: an
    SB3 algorithm over ``imitation.algorithms.adversarial`` with a PPORollback (or RecurrentPPORollback) generator.

    Training (:meth:`learn`) is one ``generator.learn`` call on the environment whose reward imitation replaces with
    the discriminator's; after each rollout (once ``gen_train_timesteps`` new transitions are buffered), the adapter
    moves them to imitation's generator replay buffer and runs ``n_disc_updates_per_round`` discriminator updates,
    then the generator trains on the rollout. This is imitation's round (``train_gen`` then ``train_disc``) with the
    discriminator update placed before the policy update of the same rollout: the generator's rewards were computed
    when the rollout was collected, so GAIL trains the same way; AIRL's discriminator evaluates the generator's
    log-probabilities with the policy that collected the rollout.

    :param policy: the generator's policy (MlpPolicy, ..., MlpLstmPolicy for ``generator_class="recurrent_ppo_rollback"``)
    :param env: the environment (VecEnv, gymnasium env or env id); a ``VecNormalize`` on it normalises the policy's
        observations and the discriminator's rewards, while the discriminator sees raw observations. ``rollout/ep_rew_mean``
        reports the environment's own return (Monitor)
    :param demonstrations: a demonstration file (:func:`sb3_cherry.demos.record_demos`, ``sb3-cherry record``) or a list
        of trajectories (imitation's ``TrajectoryWithRew`` or :class:`sb3_cherry.demos.DemoTrajectory`; ``Tuple``
        actions in the flat encoding of :mod:`sb3_cherry.common.spaces`). Required by :meth:`learn`
    :param generator_class: ``"ppo_rollback"`` (default), ``"recurrent_ppo_rollback"`` or an on-policy algorithm class
    :param generator_kwargs: the generator's hyperparameters (``n_steps``, ``batch_size``, ``learning_rate``,
        ``rollback_alpha``, ...; not ``policy_kwargs``, ``seed``, ``verbose``, ``device``, ``tensorboard_log``, which are
        arguments of this class)
    :param policy_kwargs: the generator's policy arguments, e.g. ``dict(action_distribution="beta")``
    :param reward_net_class: an ``imitation.rewards.reward_nets.RewardNet`` subclass or its name; None: the
        algorithm's default (``BasicRewardNet`` for GAIL, ``BasicShapedRewardNet`` for AIRL)
    :param reward_net_kwargs: arguments of the reward net, e.g. ``dict(hid_sizes=[64, 64])``. Default
        ``normalize_input_layer=RunningNorm``; names are accepted for ``normalize_input_layer`` (``"RunningNorm"``,
        ``"EMANorm"``, None) and ``activation`` (``"ReLU"``). For a ``BasicShapedRewardNet`` (AIRL's default),
        ``hid_sizes`` stands for both ``reward_hid_sizes`` and ``potential_hid_sizes`` unless those are given, so one
        entry of ``gail.yml`` serves ``--algo gail`` and ``--algo airl``
    :param demo_batch_size: expert transitions per discriminator update (as many generator transitions are added)
    :param demo_minibatch_size: split each discriminator batch in minibatches of this size (gradient accumulation);
        None: ``demo_batch_size``
    :param n_disc_updates_per_round: discriminator updates per round
    :param gen_train_timesteps: generator transitions between discriminator rounds, rounded up to whole rollouts;
        None: one rollout (``n_envs * n_steps``)
    :param gen_replay_buffer_capacity: generator transitions the discriminator samples from; None:
        ``gen_train_timesteps`` (only the latest round)
    :param disc_lr: the discriminator's Adam learning rate
    :param disc_opt_kwargs: other Adam arguments of the discriminator (``betas``, ``weight_decay``, ...)
    :param allow_variable_horizon: accept episodes of different lengths (imitation refuses them by default: the
        termination condition leaks information about the reward; CartPole-v1, for one, needs True)
    :param tensorboard_log: the log location for tensorboard (if None, no logging). Generator metrics as in SB3
        (``train/``, ``rollout/``, ``time/``), discriminator metrics as ``discriminator/loss``, ``discriminator/acc``,
        ... (means over the updates since the last dump; per-update values in the run's ``raw/disc`` folder)
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators (generator, environment, reward net, discriminator batches)
    :param device: Device (cpu, cuda, ...) of the generator and the reward net
    :param _init_setup_model: Whether or not to build the generator, the reward net and imitation's trainer at the
        creation of the instance
    """

    #: ``"gail"`` or ``"airl"``
    trainer_kind: ClassVar[str]
    #: run checkpoints (sb3_cherry.common.checkpoint) do not hold this state: a resumed run differs
    run_checkpoint_approximate: ClassVar[str] = (
        "the discriminator's optimizer state and replay buffer and the transitions buffered since its last update are "
        "not saved, and the envs (behind the reward wrapper) start new episodes"
    )
    #: name of the default reward net class in ``imitation.rewards.reward_nets``
    default_reward_net: ClassVar[str]

    generator: OnPolicyAlgorithm
    reward_net: th.nn.Module
    trainer: Any

    # The generator's run, seen through the adapter (see _FromGenerator)
    policy = _FromGenerator()  # type: ignore[assignment]
    env = _FromGenerator()  # type: ignore[assignment]
    num_timesteps = _FromGenerator()  # type: ignore[assignment]
    _total_timesteps = _FromGenerator()  # type: ignore[assignment]
    _num_timesteps_at_start = _FromGenerator()  # type: ignore[assignment]
    observation_space = _FromGenerator()  # type: ignore[assignment]
    action_space = _FromGenerator()  # type: ignore[assignment]
    n_envs = _FromGenerator()  # type: ignore[assignment]
    learning_rate = _FromGenerator()  # type: ignore[assignment]
    lr_schedule = _FromGenerator()  # type: ignore[assignment]
    _vec_normalize_env = _FromGenerator()  # type: ignore[assignment]
    ep_info_buffer = _FromGenerator()  # type: ignore[assignment]
    ep_success_buffer = _FromGenerator()  # type: ignore[assignment]
    _n_updates = _FromGenerator()  # type: ignore[assignment]
    _episode_num = _FromGenerator()  # type: ignore[assignment]
    _current_progress_remaining = _FromGenerator()  # type: ignore[assignment]
    start_time = _FromGenerator()  # type: ignore[assignment]
    _last_obs = _FromGenerator()  # type: ignore[assignment]
    _last_episode_starts = _FromGenerator()  # type: ignore[assignment]
    _last_original_obs = _FromGenerator()  # type: ignore[assignment]
    _stats_window_size = _FromGenerator()  # type: ignore[assignment]
    use_sde = _FromGenerator()  # type: ignore[assignment]
    sde_sample_freq = _FromGenerator()  # type: ignore[assignment]
    action_noise = _FromGenerator()  # type: ignore[assignment]

    def __init__(
        self,
        policy: str | type[BasePolicy],
        env: GymEnv | str | None,
        demonstrations: str | os.PathLike | Sequence[Any] | None = None,
        generator_class: str | type[OnPolicyAlgorithm] = "ppo_rollback",
        generator_kwargs: dict[str, Any] | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        reward_net_class: str | type | None = None,
        reward_net_kwargs: dict[str, Any] | None = None,
        demo_batch_size: int = 1024,
        demo_minibatch_size: int | None = None,
        n_disc_updates_per_round: int = 2,
        gen_train_timesteps: int | None = None,
        gen_replay_buffer_capacity: int | None = None,
        disc_lr: float = 1e-3,
        disc_opt_kwargs: dict[str, Any] | None = None,
        allow_variable_horizon: bool = False,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        import_imitation(type(self).__name__)
        name = type(self).__name__
        if demo_batch_size < 1:
            raise ValueError(f"{name}: demo_batch_size must be >= 1, got {demo_batch_size}.")
        if demo_minibatch_size is not None and (demo_minibatch_size < 1 or demo_batch_size % demo_minibatch_size != 0):
            raise ValueError(
                f"{name}: demo_minibatch_size={demo_minibatch_size} must divide demo_batch_size={demo_batch_size}."
            )
        if n_disc_updates_per_round < 0:
            raise ValueError(f"{name}: n_disc_updates_per_round must be >= 0, got {n_disc_updates_per_round}.")
        if disc_opt_kwargs is not None and "lr" in disc_opt_kwargs:
            raise ValueError(f"{name}: give the discriminator's learning rate as disc_lr, not in disc_opt_kwargs.")
        generator_kwargs = dict(generator_kwargs or {})
        reserved = sorted(_GENERATOR_RESERVED & set(generator_kwargs))
        if reserved:
            raise ValueError(f"{name}: pass {reserved} to {name} directly, not in generator_kwargs.")
        # needed by BaseAlgorithm.__init__ to resolve policy names (the generator's policy_aliases)
        self.generator_class = resolve_generator_class(generator_class)
        super().__init__(
            policy=policy,  # type: ignore[arg-type]
            env=None,  # the generator wraps the environment (see _setup_model)
            learning_rate=disc_lr,  # replaced by the generator's learning_rate once it exists
            policy_kwargs=policy_kwargs,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            support_multi_env=True,
        )
        self.demonstrations = demonstrations
        self.generator_kwargs = generator_kwargs
        self.reward_net_class = reward_net_class
        self.reward_net_kwargs = dict(reward_net_kwargs or {})
        self.demo_batch_size = int(demo_batch_size)
        self.demo_minibatch_size = demo_minibatch_size
        self.n_disc_updates_per_round = int(n_disc_updates_per_round)
        self.gen_train_timesteps = gen_train_timesteps
        self.gen_replay_buffer_capacity = gen_replay_buffer_capacity
        self.disc_lr = float(disc_lr)
        self.disc_opt_kwargs = dict(disc_opt_kwargs or {})
        self.allow_variable_horizon = bool(allow_variable_horizon)
        self._user_env = env
        self.trainer = None
        self._vec_normalize: VecNormalize | None = None
        self._scratch_dir = tempfile.TemporaryDirectory(prefix=f"sb3_cherry_{self.trainer_kind}_")
        if _init_setup_model:
            self._setup_model()

    @classmethod
    def check_config_entry(cls, entry: Mapping[str, Any], where: str) -> None:
        """
        Check the parts of a zoo config entry that the constructor's signature does not show (called by
        :func:`~sb3_cherry.common.config_schema.validate_config`): ``generator_class``; ``generator_kwargs`` against the
        generator's constructor (names, types; ``lin_<value>`` learning rate / clip range as at the top level, converted
        by :class:`~sb3_cherry.resume.SafeExperimentManager`); the policy name and ``policy_kwargs`` against the
        generator's policies; ``reward_net_kwargs`` a mapping.

        :param entry: the config entry
        :param where: file and env, for the error message
        :raises ValueError: naming the key
        """
        try:
            generator_class = resolve_generator_class(entry.get("generator_class", "ppo_rollback"))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        if cls.trainer_kind == "airl" and issubclass(generator_class, RecurrentPPO):
            raise ValueError(f"{where}: {_AIRL_RECURRENT}")
        for key in ("generator_kwargs", "reward_net_kwargs"):
            if not isinstance(entry.get(key) or {}, dict):
                raise ValueError(f"{where}: {key}={entry[key]!r} must be a mapping.")
        generator_kwargs = entry.get("generator_kwargs") or {}
        reserved = sorted(_GENERATOR_RESERVED & set(generator_kwargs))
        if reserved:
            raise ValueError(f"{where}: put {reserved} at the top level of the entry, not in generator_kwargs.")
        check_constructor_kwargs(
            generator_kwargs,
            generator_class,
            f"{where} generator_kwargs",
            reserved=frozenset(RESERVED_ARGS | _GENERATOR_RESERVED),
        )
        aliases: dict[str, type[BasePolicy]] = getattr(generator_class, "policy_aliases", {})
        policy = entry.get("policy", "MlpPolicy")
        if isinstance(policy, str) and "." not in policy:
            if policy not in aliases:
                raise ValueError(
                    f"{where}: unknown policy {policy!r} for the generator {generator_class.__name__}: choose one of "
                    f"{sorted(aliases)}."
                )
            policy_kwargs = parse_policy_kwargs(entry.get("policy_kwargs") or {}, f"{where} policy_kwargs")
            check_policy_kwargs(policy_kwargs, aliases[policy], where)

    def _get_policy_from_name(self, policy_name: str) -> type[BasePolicy]:
        """
        The generator's policy class for ``policy_name`` (its ``policy_aliases``).

        :param policy_name: alias of the policy
        :return: the policy class
        :raises ValueError: the generator class has no such policy
        """
        aliases: dict[str, type[BasePolicy]] = getattr(self.generator_class, "policy_aliases", {})
        if policy_name not in aliases:
            raise ValueError(
                f"Policy {policy_name!r} unknown for the generator {self.generator_class.__name__}: choose one of "
                f"{sorted(aliases)}."
            )
        return aliases[policy_name]

    # ------------------------------------------------------------------------------------------------------ setup
    def _setup_model(self, generator: OnPolicyAlgorithm | None = None) -> None:
        """
        Build (or adopt) the generator, build the reward net, and, when there is an environment, imitation's trainer
        and the VecEnv chain of :mod:`sb3_cherry.adversarial.wrappers`.

        :param generator: an existing generator (``load``); None: build one from the constructor arguments
        """
        name = type(self).__name__
        if self.trainer_kind == "airl" and issubclass(self.generator_class, RecurrentPPO):
            raise ValueError(_AIRL_RECURRENT)
        if generator is None:
            if self._user_env is None:
                raise ValueError(f"{name} needs an environment (env=None is only possible with {name}.load).")
            generator = self.generator_class(
                self.policy_class,  # type: ignore[arg-type]
                self._user_env,
                policy_kwargs=self.policy_kwargs,
                verbose=self.verbose,
                seed=self.seed,
                device=self.device,
                **self.generator_kwargs,
            )
        self._user_env = None
        self.generator = generator
        if isinstance(generator.observation_space, spaces.Dict):
            raise ValueError(
                f"{name}: Dict observation spaces are not supported (imitation 1.0.1's adversarial replay buffer needs "
                "array observations)."
            )
        if self.trainer_kind == "airl" and isinstance(generator.policy, RecurrentActorCriticPolicy):
            raise ValueError(_AIRL_RECURRENT)
        # imitation's reward nets one-hot encode Discrete / MultiDiscrete actions without their start (torch's one_hot
        # failed at the first step); Tuple components are fine: imitation sees their flat Box encoding
        check_actions_start_at_zero(generator.action_space, name, within_tuples=False)
        tuple_space = generator.action_space if isinstance(generator.action_space, spaces.Tuple) else None
        # imitation's reward nets and replay buffer see the flat encoding of Tuple actions
        imitation_action_space = flat_action_space(tuple_space) if tuple_space is not None else generator.action_space
        self.reward_net = self._build_reward_net(generator.observation_space, imitation_action_space)
        if not self._custom_logger:
            self._logger = self._make_logger(None, True)
        self._build_trainer()

    def _build_trainer(self) -> None:
        """
        imitation's trainer on the generator's environment, and the generator's environment replaced by the chain of
        :mod:`sb3_cherry.adversarial.wrappers`. Without an environment (loaded for prediction), no trainer. A trainer
        built before (``set_env``) hands over the discriminator's optimiser state, counters and replay buffer.
        """
        name = type(self).__name__
        previous, self.trainer, self._vec_normalize = self.trainer, None, None
        generator = self.generator
        venv = generator.get_env()
        if venv is None:  # loaded for prediction only
            return
        tuple_space = generator.action_space if isinstance(generator.action_space, spaces.Tuple) else None
        top = venv.venv if isinstance(venv, VecTupleActions) else venv
        self._vec_normalize = top if isinstance(top, VecNormalize) else None
        raw = self._vec_normalize.venv if self._vec_normalize is not None else top
        if unwrap_vec_normalize(raw) is not None:
            raise ValueError(
                f"{name}: VecNormalize must be the outermost wrapper of the environment (VecFrameStack / "
                "VecTransposeImage above it are not supported): the discriminator needs the raw observations."
            )
        imitation_venv = VecFlatActionSpace(raw) if tuple_space is not None else raw
        trajectories = self._demo_trajectories(imitation_venv) if self.demonstrations is not None else None
        trainer_type = trainer_class(self.trainer_kind)
        with _action_space_as(generator, imitation_venv.action_space):
            self.trainer = trainer_type(
                demonstrations=trajectories,
                demo_batch_size=self.demo_batch_size,
                # the env's non-finite values raise before imitation's wrappers record them or reward them
                venv=VecFiniteCheck(imitation_venv, generator),
                gen_algo=generator,
                reward_net=self.reward_net,
                demo_minibatch_size=self.demo_minibatch_size,
                n_disc_updates_per_round=self.n_disc_updates_per_round,
                log_dir=self._scratch_dir.name,
                disc_opt_cls=th.optim.Adam,
                disc_opt_kwargs={"lr": self.disc_lr, **self.disc_opt_kwargs},
                gen_train_timesteps=self.gen_train_timesteps,
                gen_replay_buffer_capacity=self.gen_replay_buffer_capacity,
                custom_logger=self._logger,
                allow_variable_horizon=self.allow_variable_horizon,
            )
        if self.trainer_kind == "airl":
            self.trainer.obs_normalizer = self._vec_normalize
        if previous is not None:
            self.trainer._disc_opt.load_state_dict(previous._disc_opt.state_dict())
            self.trainer._gen_replay_buffer = previous._gen_replay_buffer
            self.trainer._global_step, self.trainer._disc_step = previous._global_step, previous._disc_step
        # The generator's env: imitation's reward-wrapped VecEnv, the Tuple action space restored, the user's
        # VecNormalize on top (re-pointed at the new chain, as sb3_cherry.demos.record_demos does)
        generator_env: VecEnv = self.trainer.venv_train
        if tuple_space is not None:
            generator_env = VecTupleActionSpace(generator_env, tuple_space)
        generator_env = OpaqueVecEnv(generator_env)
        if self._vec_normalize is not None:
            self._vec_normalize.venv = generator_env
            generator_env = self._vec_normalize
        generator.set_env(generator_env)

    def _build_reward_net(self, observation_space: spaces.Space, action_space: spaces.Space) -> th.nn.Module:
        from imitation.rewards import reward_nets
        from imitation.util import networks

        net_class: Any = self.reward_net_class or self.default_reward_net
        if isinstance(net_class, str):
            net_class = getattr(reward_nets, net_class, None)
        if not (isinstance(net_class, type) and issubclass(net_class, reward_nets.RewardNet)):
            raise ValueError(
                f"{type(self).__name__}: reward_net_class must be an imitation.rewards.reward_nets.RewardNet subclass or "
                f"its name (BasicRewardNet, BasicShapedRewardNet, ...), got {self.reward_net_class!r} (a model saved with "
                "a reward net class of your own loads with reward_net_class=<that class>)."
            )
        kwargs = {"normalize_input_layer": networks.RunningNorm, **resolve_reward_net_kwargs(self.reward_net_kwargs)}
        if issubclass(net_class, reward_nets.BasicShapedRewardNet):
            # potential shaping gamma * phi(s') - phi(s) with the generator's discount
            kwargs.setdefault("discount_factor", float(self.generator.gamma))
            if "hid_sizes" in kwargs:
                # one reward_net_kwargs for GAIL and AIRL (gail.yml serves both): hid_sizes sizes both of AIRL's nets
                hid_sizes = kwargs.pop("hid_sizes")
                kwargs.setdefault("reward_hid_sizes", hid_sizes)
                kwargs.setdefault("potential_hid_sizes", hid_sizes)
        return net_class(observation_space, action_space, **kwargs).to(self.generator.device)

    def _demo_trajectories(self, venv: VecEnv) -> list[Any]:
        """The demonstrations as imitation trajectories, checked against the spaces imitation sees."""
        from imitation.data.types import Trajectory, TrajectoryWithRew

        name = type(self).__name__
        hint = "Record the demonstrations on the same environment (sb3_cherry.demos.record_demos or `sb3-cherry record`)."
        if isinstance(self.demonstrations, (str, os.PathLike)):
            source = str(self.demonstrations)
            loaded = load_demos(self.demonstrations)
        else:
            source = "the given trajectories"
            if not isinstance(self.demonstrations, Sequence) or not all(
                hasattr(t, "obs") and hasattr(t, "acts") for t in self.demonstrations
            ):
                raise ValueError(
                    f"{name}: demonstrations must be a demonstration file or a list of trajectories (objects with "
                    f"obs and acts, e.g. imitation's TrajectoryWithRew), got {type(self.demonstrations).__name__} "
                    "(a single trajectory: pass [trajectory]; imitation's Transitions are not supported)."
                )
            loaded = list(self.demonstrations)
        if len(loaded) == 0:
            raise ValueError(f"{name}: no demonstrations in {source}.")
        obs_shape = tuple(venv.observation_space.shape)  # type: ignore[arg-type]
        act_shape = tuple(venv.action_space.shape)  # type: ignore[arg-type]
        trajectories = []
        for i, trajectory in enumerate(loaded):
            if isinstance(trajectory.obs, dict) or hasattr(trajectory.obs, "dict_len"):
                raise ValueError(f"{name}: demonstration {i} of {source} has Dict observations, which are not supported.")
            obs, acts = np.asarray(trajectory.obs), np.asarray(trajectory.acts)
            if obs.ndim == 4 and obs.shape[1:] != obs_shape and (obs.shape[3], *obs.shape[1:3]) == obs_shape:
                raise ValueError(
                    f"{name}: demonstration {i} of {source} has channel-last images {obs.shape[1:]}, the generator's "
                    f"env channel-first ones {obs_shape} (SB3 wraps image envs in VecTransposeImage for CnnPolicy): "
                    "GAIL / AIRL on image observations are not supported (BCO is)."
                )
            if obs.shape[1:] != obs_shape:
                raise ValueError(
                    f"{name}: demonstration {i} of {source} has observations of shape {obs.shape[1:]}, but the "
                    f"environment's observation space {venv.observation_space} has shape {obs_shape}. {hint}"
                )
            if acts.shape[1:] != act_shape or acts.dtype == object:
                what = "the flat encoding of the Tuple action space, " if isinstance(self.action_space, spaces.Tuple) else ""
                raise ValueError(
                    f"{name}: demonstration {i} of {source} has actions of shape {acts.shape[1:]} ({acts.dtype}), but "
                    f"the environment needs {what}shape {act_shape}. {hint}"
                )
            bad_steps = non_finite_rows(obs)  # float64 values beyond float32's range are inf for the reward net
            if bad_steps.any():
                step = int(np.argmax(bad_steps))
                value, count = _first_bad_value(obs[step]), int(bad_steps.sum())
                raise ValueError(
                    f"{name}: demonstration {i} of {source} has a non-finite observation at step {step} ({value:g}; "
                    f"{count} such steps): NaN, inf, or beyond float32's range (inf in the float32 reward net and "
                    "policy). Re-record the demonstrations, or drop that trajectory."
                )
            problem = _action_problem(acts, self.action_space)
            if problem is not None:
                raise ValueError(f"{name}: demonstration {i} of {source} has {problem}. {hint}")
            # every episode end is "done", as on the generator's side: imitation's rollouts finish each episode with
            # terminal=True, time limits included (TrajectoryAccumulator.add_steps_and_auto_finish), so a truncated
            # demonstration marked not terminal would feed the reward net (AIRL's shaping gamma * h(s') * (1 - done),
            # GAIL with use_done) a flag that tells expert from generator samples by their bookkeeping alone
            if isinstance(trajectory, Trajectory):
                trajectories.append(dataclasses.replace(trajectory, terminal=True))
            else:
                rews = np.asarray(getattr(trajectory, "rews", np.zeros(len(acts))), dtype=np.float32)
                trajectories.append(TrajectoryWithRew(obs=obs, acts=acts, infos=None, terminal=True, rews=rews))
        n_transitions = sum(len(t.acts) for t in trajectories)
        if n_transitions < self.demo_batch_size:
            raise ValueError(
                f"{name}: {source} holds {n_transitions} transitions, fewer than demo_batch_size={self.demo_batch_size}: "
                "record more episodes or lower demo_batch_size."
            )
        return trajectories

    def set_demonstrations(self, demonstrations: str | os.PathLike | Sequence[Any]) -> None:
        """
        Replace the demonstrations (e.g. after ``load`` without them).

        :param demonstrations: a demonstration file or a list of trajectories (see the ``demonstrations`` argument)
        :raises ValueError: the model has no environment, or the demonstrations do not fit it
        """
        if self.trainer is None:
            raise ValueError(f"{type(self).__name__}: a model loaded without an environment cannot take demonstrations.")
        previous, self.demonstrations = self.demonstrations, demonstrations
        try:
            self.trainer.set_demonstrations(self._demo_trajectories(self.trainer.venv))
        except Exception:
            self.demonstrations = previous
            raise

    # ---------------------------------------------------------------------------------------------------- logging
    def _make_logger(self, tb_log_name: str | None, reset_num_timesteps: bool) -> Logger:
        """
        The adapter's logger, writing like SB3's default logger: stdout when ``verbose >= 1``, tensorboard in
        ``<tensorboard_log>/<tb_log_name>_<run>`` when ``tensorboard_log`` is set (per-update discriminator values under
        ``raw/``, stdout excluded). Without tensorboard, imitation's scratch folders go to a temporary directory.
        """
        from stable_baselines3.common.logger import configure

        formats = ["stdout"] if self.verbose >= 1 and tb_log_name is not None else []
        folder = self._scratch_dir.name
        if self.tensorboard_log is not None and tb_log_name is not None:
            latest_run_id = get_latest_run_id(self.tensorboard_log, tb_log_name)
            if not reset_num_timesteps:
                latest_run_id -= 1  # continue in the same folder
            folder = os.path.join(self.tensorboard_log, f"{tb_log_name}_{latest_run_id + 1}")
            formats.append("tensorboard")
        return discriminator_logger_class()(configure(folder, formats), [f for f in formats if f != "stdout"])

    def set_logger(self, logger: Logger) -> None:
        """
        Log the generator and the discriminator to ``logger`` (SB3's ``set_logger``: ``learn`` then keeps it). A plain
        SB3 ``Logger`` is wrapped in the adapter's hierarchical logger (imitation's discriminator update needs one).

        :param logger: the logger
        """
        logger_class = discriminator_logger_class()
        if not isinstance(logger, logger_class):
            if logger.dir is None:  # imitation's per-update sub-loggers need a folder (they write nothing here)
                logger.dir = self._scratch_dir.name
            logger = logger_class(logger, format_strs=[])
        self._logger = logger
        self._custom_logger = True
        if "generator" in self.__dict__:
            self.generator.set_logger(logger)
        if self.trainer is not None:
            self.trainer.logger = logger

    # --------------------------------------------------------------------------------------------------- training
    def _end_of_rollout(self) -> None:
        """After a rollout: once ``gen_train_timesteps`` transitions are buffered, run a discriminator round."""
        if self.trainer.venv_buffering.n_transitions >= self.trainer.gen_train_timesteps:
            self._store_generator_samples()
            from imitation.util import networks

            for _ in range(self.n_disc_updates_per_round):
                with networks.training(self.trainer.reward_train):
                    self._checked_disc_update()

    def _checked_disc_update(self) -> None:
        """
        One discriminator update (imitation's ``train_disc``), undone and reported like the generator's updates when
        its loss or the reward net's parameters or optimizer state come out non-finite (the samples are finite: the
        generator's are checked during collection, the demonstrations when set).
        """
        trainer = self.trainer
        if not getattr(self.generator, "check_finite", True):
            trainer.train_disc()
            return
        snapshot = self.__dict__.get("_disc_snapshot")
        if snapshot is None or snapshot.optimizers[0] is not trainer._disc_opt:
            snapshot = self._disc_snapshot = UpdateSnapshot([self.reward_net], [trainer._disc_opt])
        snapshot.take()
        name = f"{type(self).__name__} discriminator"
        with undone_if_raised(snapshot, name, lambda: (self.num_timesteps, trainer._disc_step), "lower disc_lr."):
            stats = trainer.train_disc()
        check_update(
            snapshot, {"discriminator/loss": stats.get("disc_loss")}, name, self.num_timesteps, trainer._disc_step,
            remedy="lower disc_lr.",
        )  # fmt: skip

    def _store_generator_samples(self) -> None:
        """
        Move the buffered generator transitions to the discriminator's replay buffer (what imitation's ``train_gen``
        does after ``gen_algo.learn``).
        """
        from imitation.data import rollout

        trajectories, episode_lengths = self.trainer.venv_buffering.pop_trajectories()
        self.trainer._check_fixed_horizon(episode_lengths)
        if len(trajectories) > 0:
            transitions = rollout.flatten_trajectories_with_rew(trajectories)
            if getattr(self.generator, "check_finite", True):
                self._check_generator_transitions(transitions)
            self.trainer._gen_replay_buffer.store(transitions)
        self.trainer._global_step += 1

    def _check_generator_transitions(self, transitions: Any) -> None:
        """
        Refuse non-finite generator transitions before they enter the discriminator's replay buffer. The env's values
        are checked at each step (:class:`~sb3_cherry.adversarial.wrappers.VecFiniteCheck`), before imitation records
        them: what is found here was changed afterwards, e.g. by a callback writing into the observations in place.

        :param transitions: imitation's ``TransitionsWithRew`` of the round
        :raises ValueError: naming the field and the transition; the transitions are dropped
        """
        for field, what in (("obs", "observation"), ("next_obs", "next observation"), ("acts", "action")):
            values = np.asarray(getattr(transitions, field))
            bad = non_finite_rows(values)
            if bad.any():
                row = int(np.argmax(bad))
                value = _first_bad_value(values[row])
                raise ValueError(
                    f"{type(self).__name__}: generator transition {row} of the {len(bad)} buffered for the discriminator "
                    f"has a non-finite {what} ({value:g}) at num_timesteps={self.num_timesteps}: NaN, inf, or beyond "
                    "float32's range. The transitions were dropped, the discriminator does not train on them. "
                    "The environment's values are checked at each step, so they were changed after it (e.g. by a "
                    "callback writing into the observations in place): keep the recorded transitions finite."
                )

    def _drop_unfinished_round(self) -> None:
        """
        After ``generator.learn`` raised: drop the generator transitions buffered since the last discriminator round,
        and have the next ``learn`` reset the env (SB3 resets when ``_last_obs`` is None). imitation's wrappers take
        each step before the generator's callbacks see it, so a step that raised there (a callback's error, Ctrl-C)
        is buffered and is the reward wrapper's last observation, while the generator's is the one before: the
        discriminator would train on a step the generator never used, and the next learn would compute the rewards
        from a stale observation. The rollout did not finish: the generator does not train on its transitions either.
        """
        buffering = self.trainer.venv_buffering
        if buffering.n_transitions:  # (None before imitation's first reset)
            buffering.pop_trajectories()
        self.generator._last_obs = None

    def learn(
        self: SelfAdversarialImitation,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int | None = 1,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfAdversarialImitation:
        """
        Train the generator for ``total_timesteps`` environment steps on the discriminator's reward, with a
        discriminator round (``n_disc_updates_per_round`` updates) after each rollout (see the class docstring). When
        training raises (a non-finite observation, a callback's error, Ctrl-C), the generator transitions buffered
        since the last discriminator round are dropped and the next ``learn`` starts new episodes.

        :param total_timesteps: generator environment steps (all envs together; rounded up to whole rollouts)
        :param callback: callback(s) called at every step with state of the algorithm (EvalCallback,
            CheckpointCallback, ...: they see this model as ``self.model``, so their saves hold the reward net too)
        :param log_interval: dump the logs every ``log_interval`` rollouts (None: never)
        :param tb_log_name: the name of the run for TensorBoard logging (default: the class name)
        :param reset_num_timesteps: whether or not to reset the current timestep number (used in logging)
        :param progress_bar: display a progress bar using tqdm and rich
        :return: the trained model
        :raises ValueError: without environment or demonstrations
        """
        name = type(self).__name__
        if self.trainer is None:
            raise ValueError(
                f"{name}.learn needs an environment: {name}.load(path, env=..., demonstrations=...) or model.set_env(env)."
            )
        if self.demonstrations is None:
            raise ValueError(
                f"{name}.learn needs demonstrations: pass demonstrations=<a file written by sb3_cherry.demos.record_demos "
                f"or `sb3-cherry record`> or a list of trajectories (also to {name}.load), or call set_demonstrations."
            )
        if not self._custom_logger:
            self._logger.close()
            self._logger = self._make_logger(tb_log_name or name, reset_num_timesteps)
            self.trainer.logger = self._logger
            self.generator.set_logger(self._logger)
        if getattr(self.generator, "check_finite", True):  # else the first round would report a diverged update
            check_finite_weights(self.reward_net, f"{name}: the reward net's", "Load an earlier model.")
        if "_disc_snapshot" in self.__dict__:
            self._disc_snapshot.invalidate()  # the reward net may have been loaded or set since the last round
        wrap_tuple_eval_envs(callback)  # (the generator's learn sees them inside the adapter's callback)
        if reset_num_timesteps and self.trainer.venv_buffering.n_transitions > 0:
            # the generator resets the env, which imitation's BufferingWrapper refuses while it holds transitions
            self._store_generator_samples()
        callbacks: list[BaseCallback] = [_DiscriminatorRounds(self), self.trainer.gen_callback]
        if callback is not None:
            if isinstance(callback, list):
                callback = CallbackList(callback)
            if not isinstance(callback, BaseCallback):
                from stable_baselines3.common.callbacks import ConvertCallback

                callback = ConvertCallback(callback)
            callbacks.append(_AdapterCallback(callback, self))
        try:
            self.generator.learn(
                total_timesteps=total_timesteps,
                callback=callbacks,
                log_interval=log_interval,  # type: ignore[arg-type]
                tb_log_name=tb_log_name or name,
                reset_num_timesteps=reset_num_timesteps,
                progress_bar=progress_bar,
            )
        except BaseException:
            self._drop_unfinished_round()
            raise
        return self

    # ------------------------------------------------------------------------------------------------- prediction
    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[Any, tuple[np.ndarray, ...] | None]:
        """
        The generator's action(s) (its ``predict``: tuples for ``Tuple`` action spaces).

        :param observation: the input observation (normalised, when the env has a ``VecNormalize``)
        :param state: the last hidden states (recurrent generators)
        :param episode_start: the last masks (recurrent generators)
        :param deterministic: whether or not to return deterministic actions
        :return: the model's action and the next hidden state
        """
        return self.generator.predict(observation, state=state, episode_start=episode_start, deterministic=deterministic)

    def set_random_seed(self, seed: int | None = None) -> None:
        """
        Seed the generator (Python, NumPy, torch, action space, environment).

        :param seed: the seed
        """
        if "generator" in self.__dict__:
            self.generator.set_random_seed(seed)

    # -------------------------------------------------------------------------------------------------- env
    def get_env(self) -> VecEnv | None:
        """
        :return: the generator's environment (the VecEnv chain described in :mod:`sb3_cherry.adversarial.wrappers`)
        """
        return self.generator.get_env()

    def get_vec_normalize_env(self) -> VecNormalize | None:
        """
        :return: the user's ``VecNormalize`` (its statistics are what evaluation needs), or None
        """
        return self.generator.get_vec_normalize_env()

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """
        Train on another environment with the same spaces (e.g. after ``load`` without one). imitation's trainer is
        rebuilt on it; the discriminator keeps its weights, optimiser state and replay buffer.

        :param env: the new environment
        :param force_reset: force a call to ``reset()`` before training
        :raises ValueError: the spaces differ from the model's
        """
        self.generator.set_env(env, force_reset=force_reset)
        self._build_trainer()

    # -------------------------------------------------------------------------------------------------- save/load
    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        """
        :return: the generator's state dicts (``policy``, ``policy.optimizer``) and ``reward_net``; the generator's
            other torch variables
        """
        state_dicts, torch_variables = self.generator._get_torch_save_params()
        return [*state_dicts, "reward_net"], torch_variables

    def set_parameters(
        self,
        load_path_or_dict: str | os.PathLike | io.BufferedIOBase | TensorDict,
        exact_match: bool = True,
        device: th.device | str = "auto",
    ) -> None:
        """
        Load the parameters of the generator and the reward net (see ``get_parameters``) from a dict or a model file.

        :param load_path_or_dict: a model file written by :meth:`save`, or ``{name: state_dict}`` with the names of
            ``get_parameters`` (``policy``, ``policy.optimizer``, ``reward_net``)
        :param exact_match: if True, every module must be given, each with all its parameters
        :param device: device on which the code should run
        :raises ValueError: unknown names, or missing ones with ``exact_match``
        """
        if not isinstance(load_path_or_dict, dict):
            archive = zip_bytes(load_path_or_dict)
            _, loaded, _ = load_from_zip_file(archive, device=device, load_data=False)
            params: dict[str, Any] = dict(loaded)
            _, reward_state = read_adversarial_entries(archive, type(self).__name__)
            if reward_state is not None:
                params["reward_net"] = reward_state
            load_path_or_dict = params
        super().set_parameters(load_path_or_dict, exact_match=exact_match, device=device)  # type: ignore[arg-type]

    def _config_data(self) -> dict[str, Any]:
        """The adapter's part of the model file (:data:`~sb3_cherry.adversarial.serialization.CONFIG_ENTRY`), JSON data."""
        from imitation.rewards import reward_nets

        net_class = type(self.reward_net)
        if getattr(reward_nets, net_class.__name__, None) is net_class:
            net_class_name = net_class.__name__
        else:  # a user class: load needs reward_net_class=<the class> (no code is imported from a file)
            net_class_name = f"{net_class.__module__}.{net_class.__qualname__}"
        name = type(self).__name__
        hyperparameters = {
            "reward_net_class": net_class_name,
            "reward_net_kwargs": to_json_value(self.reward_net_kwargs, f"{name}.save: reward_net_kwargs"),
            "demo_batch_size": self.demo_batch_size,
            "demo_minibatch_size": self.demo_minibatch_size,
            "n_disc_updates_per_round": self.n_disc_updates_per_round,
            "gen_train_timesteps": self.gen_train_timesteps,
            "gen_replay_buffer_capacity": self.gen_replay_buffer_capacity,
            "disc_lr": self.disc_lr,
            "disc_opt_kwargs": to_json_value(self.disc_opt_kwargs, f"{name}.save: disc_opt_kwargs"),
            "allow_variable_horizon": self.allow_variable_horizon,
            "tensorboard_log": self.tensorboard_log,
            "verbose": self.verbose,
            "seed": self.seed,
        }
        generator_name = next((key for key, cls in GENERATOR_CLASSES.items() if cls is type(self.generator)), None)
        counters = {}
        if self.trainer is not None:
            counters = {"rounds": int(self.trainer._global_step), "updates": int(self.trainer._disc_step)}
        return {
            "algo": name,
            "generator_class": generator_name,
            "hyperparameters": hyperparameters,
            "discriminator": counters,
        }

    def save(
        self,
        path: str | os.PathLike | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """
        Save the model in one zip archive: the generator's own archive (``PPORollback.load`` / ``sb3-cherry evaluate
        --algo ppo_rollback`` read it as a normal model), the reward net's ``state_dict`` and this class's
        hyperparameters as JSON (:mod:`sb3_cherry.adversarial.serialization`). Writing a path is atomic. Not saved:
        the demonstrations (pass them to :meth:`load`), the discriminator's optimiser state and replay buffer.

        :param path: path to the file (``.zip`` is appended when there is no suffix) or a file object
        :param exclude: names of generator attributes to exclude in addition to the default ones
        :param include: names of generator attributes that might be excluded but should be included anyway
        :raises ValueError: a hyperparameter has no data (JSON) form
        """
        config = self._config_data()
        generator_archive = io.BytesIO()
        self.generator.save(generator_archive, exclude=exclude, include=include)
        state = {key: value.detach().cpu() for key, value in self.reward_net.state_dict().items()}
        if isinstance(path, io.IOBase):
            write_model_archive(path, generator_archive, config, state)
            return
        atomic_write(
            resolve_zip_path(pathlib.Path(path)), lambda file: write_model_archive(file, generator_archive, config, state)
        )

    def load_reward_net(self, path: str | os.PathLike) -> None:
        """
        Load a reward net ``state_dict`` file (``th.load(..., weights_only=True)``) into :attr:`reward_net`, e.g. the
        ``<path>_reward_net.pt`` that earlier sb3_cherry versions saved next to the generator.

        :param path: the reward net file
        :raises ValueError: not a torch file, or a reward net of another architecture
        """
        self._load_reward_state(load_state_dict(path, str(path), type(self).__name__), str(path))

    def _load_reward_state(self, state_dict: dict[str, Any], source: str) -> None:
        try:
            self.reward_net.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise ValueError(
                f"{type(self).__name__}.load: the reward net in {source} does not fit the one built from reward_net_class "
                f"/ reward_net_kwargs (pass the values used for training): {exc}"
            ) from exc

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfAdversarialImitation],
        path: str | os.PathLike | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        demonstrations: str | os.PathLike | Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> SelfAdversarialImitation:
        """
        Load a model saved with :meth:`save`: the generator, the reward net and the hyperparameters of this class, all
        from the one file. Also reads a generator-only file: the two-file layout of earlier sb3_cherry versions (the
        reward net next to it as ``<path>_reward_net.pt``), or a ``PPORollback`` model (the reward net then starts
        untrained, with a warning).

        :param path: path to the model file (or a file object)
        :param env: the environment to keep training on (None: prediction only; see also :meth:`set_env`)
        :param device: device of the generator and the reward net
        :param custom_objects: objects to replace upon loading the generator (see SB3's ``load``)
        :param print_system_info: print the system info of the saved generator and the current one
        :param force_reset: force a call to ``reset()`` before training
        :param demonstrations: the demonstrations to keep training with (they are not in the file)
        :param kwargs: ``allow_pickle=True`` to unpickle the generator part as SB3 does (only for files you trust;
            by default nothing is unpickled, see :class:`~sb3_cherry.common.save_util.AtomicSaveAlgorithm`), and
            constructor arguments that replace the saved ones (``demo_batch_size``, ``disc_lr``, ...;
            ``reward_net_class`` for a user reward net class); ``generator_kwargs`` change the generator's
            hyperparameters
        :return: the loaded model
        :raises ValueError: the file is not a model of this class, or its reward net does not fit
        """
        import_imitation(cls.__name__)
        check_model_file(path if isinstance(path, io.IOBase) else pathlib.Path(path), cls.__name__)
        name = cls.__name__
        archive = zip_bytes(path)
        config, reward_state = read_adversarial_entries(archive, name)
        saved: dict[str, Any] = {}
        saved_generator_class = None
        if config is not None:
            if config.get("algo") != name:
                raise ValueError(f"{name}.load: the file holds a {config.get('algo')} model: load it with that class.")
            saved = dict(config.get("hyperparameters") or {})
            saved_generator_class = config.get("generator_class")
        # only the data save() writes: load's own switches (allow_pickle, generator_kwargs) never come from a file
        unexpected = sorted(set(saved) - _SAVED_HYPERPARAMETERS)
        if unexpected:
            raise ValueError(
                f"{name}.load: {path} holds hyperparameters {unexpected} that {name}.save never writes (allow_pickle, "
                "generator_kwargs and other load arguments are taken from the caller only): refusing the file."
            )
        hyperparameters = {**saved, **kwargs}
        generator_class = resolve_generator_class(
            hyperparameters.pop("generator_class", None) or saved_generator_class or _detect_generator_class(archive)
        )
        hyperparameters.pop("policy", None)
        hyperparameters.pop("policy_kwargs", None)  # stored in the generator's part of the file
        generator = generator_class.load(
            archive if isinstance(path, io.IOBase) else pathlib.Path(path),
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            allow_pickle=hyperparameters.pop("allow_pickle", False),
            **(hyperparameters.pop("generator_kwargs", None) or {}),
        )
        if kwargs.get("seed") is not None:
            generator.set_random_seed(kwargs["seed"])
        if "verbose" in kwargs:
            generator.verbose = kwargs["verbose"]
        model = cls(
            policy=generator.policy_class,
            env=None,
            demonstrations=demonstrations,
            generator_class=generator_class,
            device=device,
            _init_setup_model=False,
            **hyperparameters,
        )
        model.policy_kwargs = generator.policy_kwargs
        model._setup_model(generator=generator)
        if reward_state is not None:
            model._load_reward_state(reward_state, f"{path}")
        elif not isinstance(path, io.IOBase) and reward_net_path(path).exists():
            model.load_reward_net(reward_net_path(path))  # the two-file layout of earlier sb3_cherry versions
        else:
            warnings.warn(f"{name}.load: {path} holds no reward net (a generator-only file); the reward net starts untrained.")
        counters = (config or {}).get("discriminator") or {}
        if model.trainer is not None and counters:
            model.trainer._global_step = int(counters.get("rounds", 0))
            model.trainer._disc_step = int(counters.get("updates", 0))
        return model
