"""
BCO's networks: the policy (sb3_cherry's actor-critic policies, of which BCO uses the actor) and the inverse dynamics
model ``p(a | s, s')``.
"""

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_cherry.common.distributions import CherryDistribution, DistributionSpec, make_distribution, resolve_spec
from sb3_cherry.common.policies import (
    CherryActorCriticCnnPolicy,
    CherryActorCriticPolicy,
    CherryMultiInputActorCriticPolicy,
    _tuple_from_list,
)
from sb3_cherry.common.spaces import flat_action_dim

MlpPolicy = CherryActorCriticPolicy
CnnPolicy = CherryActorCriticCnnPolicy
MultiInputPolicy = CherryMultiInputActorCriticPolicy

#: Activation functions accepted by name (YAML configs cannot name a class)
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
}


class InverseDynamicsModel(BaseModel):
    """
    Inverse dynamics model ``p(a | s, s')``: a features extractor applied to ``s`` and to ``s'`` (shared weights), an
    MLP on ``concat(f(s), f(s'), f(s') - f(s))`` (the difference is optional) and an sb3_cherry action distribution
    head (:func:`sb3_cherry.common.distributions.make_distribution`), so every action space sb3_cherry supports works,
    Tuple spaces included. Trained by maximum likelihood; labels are the distribution's mode.

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (the optimizer starts at ``lr_schedule(1)``)
    :param net_arch: hidden layer sizes of the MLP
    :param activation_fn: activation function (a class, or one of the names in :data:`ACTIVATIONS`)
    :param action_distribution: distribution of the head (see :class:`sb3_cherry.common.policies.CherryActorCriticPolicy`);
        ``None`` picks the default of the space (categorical / Gaussian)
    :param action_distribution_kwargs: extra constructor arguments per distribution name
    :param log_std_init: initial log standard deviation of Gaussian heads
    :param use_difference: also feed ``f(s') - f(s)`` to the MLP
    :param features_extractor_class: features extractor applied to each observation
    :param features_extractor_kwargs: its keyword arguments
    :param normalize_images: divide image observations by 255
    :param optimizer_class: optimizer class
    :param optimizer_kwargs: optimizer keyword arguments (besides the learning rate)
    """

    features_extractor: BaseFeaturesExtractor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] | str = nn.ReLU,
        action_distribution: DistributionSpec = None,
        action_distribution_kwargs: dict[str, dict[str, Any]] | None = None,
        log_std_init: float = 0.0,
        use_difference: bool = True,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ):
        if isinstance(activation_fn, str):
            if activation_fn.lower() not in ACTIVATIONS:
                raise ValueError(
                    f"Unknown activation_fn {activation_fn!r} for the inverse model: choose one of {sorted(ACTIVATIONS)}."
                )
            activation_fn = ACTIVATIONS[activation_fn.lower()]
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        self.net_arch = [256, 256] if net_arch is None else list(net_arch)
        self.activation_fn = activation_fn
        self.action_distribution = resolve_spec(action_space, _tuple_from_list(action_distribution))
        self.action_distribution_kwargs = action_distribution_kwargs or {}
        self.log_std_init = log_std_init
        self.use_difference = use_difference
        self.flat_dim = flat_action_dim(action_space)

        self.features_extractor = self.make_features_extractor()
        input_dim = self.features_extractor.features_dim * (3 if use_difference else 2)
        self.mlp = nn.Sequential(*create_mlp(input_dim, -1, self.net_arch, activation_fn))
        latent_dim = self.net_arch[-1] if self.net_arch else input_dim

        self.action_dist = make_distribution(
            action_space, self.action_distribution, distribution_kwargs=self.action_distribution_kwargs
        )
        self.log_std: nn.Parameter | None = None
        if isinstance(self.action_dist, CherryDistribution):
            self.action_net = self.action_dist.proba_distribution_net(latent_dim, log_std_init=log_std_init)
        elif isinstance(self.action_dist, DiagGaussianDistribution):
            self.action_net, self.log_std = self.action_dist.proba_distribution_net(latent_dim, log_std_init=log_std_init)
        elif isinstance(self.action_dist, (CategoricalDistribution, MultiCategoricalDistribution, BernoulliDistribution)):
            self.action_net = self.action_dist.proba_distribution_net(latent_dim)
        else:  # pragma: no cover - make_distribution returns one of the above
            raise ValueError(f"Unsupported distribution {self.action_dist} for the inverse dynamics model.")
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            action_distribution=self.action_distribution,
            action_distribution_kwargs=self.action_distribution_kwargs,
            log_std_init=self.log_std_init,
            use_difference=self.use_difference,
            features_extractor_class=self.features_extractor_class,
            features_extractor_kwargs=self.features_extractor_kwargs,
        )
        return data

    def get_distribution(self, obs: PyTorchObs, next_obs: PyTorchObs) -> Distribution:
        """
        The distribution ``p(. | s, s')`` for a batch of observation pairs.

        :param obs: observations ``s`` (tensors, as the env returns them; preprocessing is done here)
        :param next_obs: next observations ``s'``
        :return: the action distribution
        """
        features = self.extract_features(obs, self.features_extractor)
        next_features = self.extract_features(next_obs, self.features_extractor)
        parts = [features, next_features]
        if self.use_difference:
            parts.append(next_features - features)
        latent = self.mlp(th.cat(parts, dim=1))
        if isinstance(self.action_dist, DiagGaussianDistribution):
            assert self.log_std is not None  # created with the Gaussian head in __init__
            return self.action_dist.proba_distribution(self.action_net(latent), self.log_std)
        return self.action_dist.proba_distribution(self.action_net(latent))

    def forward(self, obs: PyTorchObs, next_obs: PyTorchObs) -> th.Tensor:
        """
        The most likely actions (flat encoding, ``(batch, flat_action_dim)``).

        :param obs: observations ``s``
        :param next_obs: next observations ``s'``
        :return: the deterministic action of ``p(. | s, s')`` (the mode; a Beta part's mean)
        """
        return self.get_distribution(obs, next_obs).get_actions(deterministic=True).float().reshape(-1, self.flat_dim)

    def log_prob(self, obs: PyTorchObs, next_obs: PyTorchObs, actions: th.Tensor) -> th.Tensor:
        """
        ``log p(a | s, s')``.

        :param obs: observations ``s``
        :param next_obs: next observations ``s'``
        :param actions: flat actions ``(batch, flat_action_dim)``
        :return: shape ``(batch,)``
        """
        return self.get_distribution(obs, next_obs).log_prob(distribution_actions(self.action_space, actions))


def distribution_actions(action_space: spaces.Space, flat_actions: th.Tensor) -> th.Tensor:
    """
    Flat actions in the form SB3 / sb3_cherry distributions evaluate (as PPO feeds them): ``Discrete`` as a ``(batch,)``
    long tensor, ``MultiDiscrete`` as long columns, everything else unchanged.

    :param action_space: the action space
    :param flat_actions: ``(batch, flat_action_dim)``
    :return: the actions to pass to ``log_prob`` / ``evaluate_actions``
    """
    if isinstance(action_space, spaces.Discrete):
        return flat_actions.long().flatten()
    if isinstance(action_space, spaces.MultiDiscrete):
        return flat_actions.long()
    return flat_actions


def flat_columns(action_space: spaces.Space) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Per column of the flat action encoding: lower bound, upper bound (``±inf`` for discrete columns) and whether the
    column is discrete.

    :param action_space: the action space
    :return: ``(low, high, discrete)``, each of shape ``(flat_action_dim,)``
    """
    if isinstance(action_space, spaces.Tuple):
        parts = [flat_columns(sub) for sub in action_space.spaces]
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]
    dim = flat_action_dim(action_space)
    if isinstance(action_space, spaces.Box):
        return (
            action_space.low.reshape(-1).astype(np.float32),
            action_space.high.reshape(-1).astype(np.float32),
            np.zeros(dim, dtype=bool),
        )
    return np.full(dim, -np.inf, dtype=np.float32), np.full(dim, np.inf, dtype=np.float32), np.ones(dim, dtype=bool)


__all__ = ["CnnPolicy", "InverseDynamicsModel", "MlpPolicy", "MultiInputPolicy"]
