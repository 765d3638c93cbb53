"""
Actor-critic policies that pick an action distribution per action space (or per Tuple component).

They are SB3's ``ActorCriticPolicy`` / ``ActorCriticCnnPolicy`` / ``MultiInputActorCriticPolicy`` with one extra
keyword, ``action_distribution`` (see :mod:`sb3_cherry.common.distributions`). With the default distribution of a
non-Tuple space they build exactly SB3's networks, in the same order, so results match SB3 to the bit.
"""

import warnings
from functools import partial
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import CombinedExtractor, NatureCNN
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from sb3_cherry.common.distributions import (
    CherryDistribution,
    DistributionSpec,
    gaussian_range_warning,
    make_distribution,
    resolve_spec,
)
from sb3_cherry.common.spaces import flat_action_dim, flat_action_space, unflatten_actions

#: ``nn.Module``'s methods that :func:`set_training_flags` relies on (``train`` follows ``children``, the loop there
#: follows ``modules``, and sets the flag as ``__setattr__`` does)
_MODULE_METHODS = frozenset({"train", "__setattr__", "children", "named_children", "modules", "named_modules"})


def set_training_flags(module: nn.Module, mode: bool) -> None:
    """
    ``module.train(mode)``: set ``training`` on ``module`` and every submodule. ``nn.Module.train`` recurses through
    ``train`` calls and ``nn.Module.__setattr__``; when no module in the tree has its own ``train``, ``__setattr__`` or
    tree walk (``children`` / ``named_children`` / ``modules`` / ``named_modules``, class or instance), the same flags
    are set in one loop. Otherwise ``module.train(mode)`` runs.

    :param module: the root module
    :param mode: the flag (a bool, as ``nn.Module.train`` requires)
    """
    modules = list(module.modules())
    # train() recurses through children(), modules() through _modules: the same tree unless either is overridden
    plain = (
        isinstance(mode, bool)
        and all(
            all(getattr(kind, name) is getattr(nn.Module, name) for name in _MODULE_METHODS)
            for kind in {type(m) for m in modules}
        )
        and not any(m.__dict__.keys() & _MODULE_METHODS for m in modules)
    )
    if not plain:
        module.train(mode)
        return
    for m in modules:
        # what nn.Module.__setattr__ does with a value that is not a parameter, buffer or module
        object.__setattr__(m, "training", mode)


class CherryActorCriticPolicy(ActorCriticPolicy):
    """
    SB3's ``ActorCriticPolicy`` with a choice of action distribution and support for ``Tuple`` action spaces.

    All of ``ActorCriticPolicy``'s arguments are accepted (``net_arch``, ``activation_fn``, ``ortho_init``,
    ``log_std_init``, ``features_extractor_class``, ``share_features_extractor``, ``use_sde``, ...), plus:

    :param observation_space: Observation space
    :param action_space: Action space (Box, Discrete, MultiDiscrete, MultiBinary or a, possibly nested, Tuple of them)
    :param lr_schedule: Learning rate schedule (could be constant)
    :param action_distribution: ``"normal"``, ``"beta"``, ``"tanh_normal"`` (Box), ``"categorical"``,
        ``"gumbel_softmax"`` (Discrete), ``"multi_categorical"`` (MultiDiscrete), ``"bernoulli"`` (MultiBinary);
        for a Tuple space one name per component (nested for nested Tuples), or one name applied to every
        component that accepts it. ``None`` picks the default of each space.
    :param action_distribution_kwargs: extra constructor arguments per distribution name,
        e.g. ``{"gumbel_softmax": {"temperature": 0.5}}``
    :param kwargs: the other ``ActorCriticPolicy`` arguments
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        *args: Any,
        action_distribution: DistributionSpec = None,
        action_distribution_kwargs: dict[str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ):
        # Validate before any network is built, so a bad pairing fails with a clear message.
        # (Plain attributes may be set before nn.Module.__init__; _build below reads them.)
        self.action_distribution = resolve_spec(action_space, _tuple_from_list(action_distribution))
        range_warning = gaussian_range_warning(action_space, self.action_distribution)
        if range_warning is not None:
            warnings.warn(range_warning, UserWarning, stacklevel=2)
        self.action_distribution_kwargs = action_distribution_kwargs or {}
        self._cherry_action_space = action_space
        # SB3's constructor calls make_proba_distribution(), which rejects Tuple spaces: give it a flat Box
        # placeholder; _build() replaces the distribution and the real space is restored right after.
        placeholder = flat_action_space(action_space) if isinstance(action_space, spaces.Tuple) else action_space
        super().__init__(observation_space, placeholder, lr_schedule, *args, **kwargs)
        self.action_space = action_space

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            action_distribution=self.action_distribution,
            action_distribution_kwargs=self.action_distribution_kwargs,
        )
        return data

    def _build(self, lr_schedule: Schedule) -> None:
        self.action_dist = make_distribution(
            self._cherry_action_space,
            self.action_distribution,
            distribution_kwargs=self.action_distribution_kwargs,
            use_sde=self.use_sde,
            dist_kwargs=self.dist_kwargs,
        )
        if not isinstance(self.action_dist, CherryDistribution):
            # SB3's own distribution: build exactly as SB3 does
            super()._build(lr_schedule)
            return

        self._build_mlp_extractor()
        self.action_net = self.action_dist.proba_distribution_net(
            latent_dim=self.mlp_extractor.latent_dim_pi, log_std_init=self.log_std_init
        )
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        # Same orthogonal initialisation as SB3 (small gain on the action head)
        if self.ortho_init:
            module_gains = {
                self.features_extractor: np.sqrt(2),
                self.mlp_extractor: np.sqrt(2),
                self.action_net: 0.01,
                self.value_net: 1,
            }
            if not self.share_features_extractor:
                del module_gains[self.features_extractor]
                module_gains[self.pi_features_extractor] = np.sqrt(2)
                module_gains[self.vf_features_extractor] = np.sqrt(2)
            for module, gain in module_gains.items():
                module.apply(partial(self.init_weights, gain=gain))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def set_training_mode(self, mode: bool) -> None:
        """
        Put the policy in training or evaluation mode (this affects batch norm / dropout): SB3's ``set_training_mode``,
        i.e. ``nn.Module.train(mode)``, which sets ``training`` on the policy and every submodule, done here in one
        loop over the submodules instead of a recursion of ``train`` calls (the algorithms switch twice per update;
        issue 19). A submodule whose class or instance defines its own ``train``, ``__setattr__`` or tree walk gets
        SB3's recursion (:func:`set_training_flags`).

        :param mode: True for training mode, False for evaluation mode
        """
        set_training_flags(self, mode)

    def _get_action_dist_from_latent(self, latent_pi: th.Tensor) -> Distribution:
        if isinstance(self.action_dist, CherryDistribution):
            return self.action_dist.proba_distribution(self.action_net(latent_pi))
        return super()._get_action_dist_from_latent(latent_pi)

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        if not isinstance(self.action_space, spaces.Tuple):
            return super().forward(obs, deterministic)
        # Tuple spaces have no shape: actions stay flat, (batch, flat_action_dim)
        features = self.extract_features(obs)
        if self.share_features_extractor:
            latent_pi, latent_vf = self.mlp_extractor(features)
        else:
            pi_features, vf_features = features
            latent_pi = self.mlp_extractor.forward_actor(pi_features)
            latent_vf = self.mlp_extractor.forward_critic(vf_features)
        values = self.value_net(latent_vf)
        distribution = self._get_action_dist_from_latent(latent_pi)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        return actions, values, log_prob

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[Any, tuple[np.ndarray, ...] | None]:
        """
        Get the policy action from an observation (SB3's ``predict``).

        For a Tuple action space the action is a tuple the environment accepts (``Box`` components clipped to
        their bounds); for a batch of observations, a list of such tuples (one per observation), which
        ``VecEnv.step`` accepts.

        :param observation: the input observation
        :param state: unused (recurrent policies only)
        :param episode_start: unused (recurrent policies only)
        :param deterministic: return the mode instead of a sample
        :return: the action(s) and ``state``
        """
        if not isinstance(self.action_space, spaces.Tuple):
            return super().predict(observation, state, episode_start, deterministic)
        if isinstance(observation, tuple) and len(observation) == 2 and isinstance(observation[1], dict):
            raise ValueError(  # SB3's check of its own predict
                "You have passed a tuple to the predict() function instead of a Numpy array or a Dict. "
                "You are probably mixing Gym API with SB3 VecEnv API: `obs, info = env.reset()` (Gym) "
                "vs `obs = vec_env.reset()` (SB3 VecEnv). "
                "See related issue https://github.com/DLR-RM/stable-baselines3/issues/1694 "
                "and documentation for more information: https://stable-baselines3.readthedocs.io/en/master/guide/vec_envs.html#vecenv-api-vs-gym-api"
            )
        self.set_training_mode(False)
        obs_tensor, vectorized_env = self.obs_to_tensor(observation)
        with th.no_grad():
            flat = self._predict(obs_tensor, deterministic=deterministic)
        actions = unflatten_actions(self.action_space, flat.cpu().numpy().reshape(-1, flat_action_dim(self.action_space)))
        return (actions if vectorized_env else actions[0]), state


class CherryActorCriticCnnPolicy(CherryActorCriticPolicy):
    """
    :class:`CherryActorCriticPolicy` with SB3's ``NatureCNN`` features extractor (image observations).

    :param observation_space: Observation space (images)
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule
    :param kwargs: the other :class:`CherryActorCriticPolicy` arguments
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class CherryMultiInputActorCriticPolicy(CherryActorCriticPolicy):
    """
    :class:`CherryActorCriticPolicy` with SB3's ``CombinedExtractor`` (Dict observations).

    :param observation_space: Observation space (``Dict``)
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule
    :param kwargs: the other :class:`CherryActorCriticPolicy` arguments
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", CombinedExtractor)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


def _tuple_from_list(spec: DistributionSpec) -> DistributionSpec:
    """YAML and JSON give lists where Python users write tuples: accept both."""
    if isinstance(spec, list):
        return tuple(_tuple_from_list(s) for s in spec)
    return spec
