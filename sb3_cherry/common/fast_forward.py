"""
A bit-exact, cheaper collection forward pass for SB3's standard MLP actor-critic (issue 19).

At every environment step, SB3's ``collect_rollouts`` calls ``policy(obs)``: about fifteen ``nn.Module`` calls
(features extractor, MLP extractor, each layer, the two heads), a ``torch.distributions`` object, its sample and its
log-probability. For the small networks of on-policy RL this Python work costs as much as the arithmetic (measured
on Hopper-v5: 108 us per step through the modules, 57 us for the same operations called directly).

:class:`FastActorCriticForward` runs the same tensor operations, in the same order, on the same parameters, without
the module and distribution objects, so actions, values and log-probabilities are equal to the module path bit for
bit (``tests/test_fast_forward.py`` compares them, and the PPO / A2C parity tests compare whole training runs with
SB3's). It applies only where that equality is guaranteed by construction, and :meth:`FastActorCriticForward.build`
returns None otherwise (the module path then runs, unchanged):

- the policy's class uses SB3's ``ActorCriticPolicy.forward`` and ``extract_features``, or sb3_cherry's
  ``CherryActorCriticPolicy`` ones (the same computation, with flat actions for Tuple action spaces);
- a ``Box`` observation space (no image normalisation), SB3's ``FlattenExtractor`` shared by actor and critic;
- SB3's ``MlpExtractor`` whose networks are ``nn.Sequential`` of ``nn.Linear``, ``nn.ReLU`` and ``nn.Tanh`` only,
  ``nn.Linear`` heads;
- no forward hooks on the policy or any submodule, and no global module hooks;
- SB3's ``DiagGaussianDistribution`` and ``CategoricalDistribution`` behind an ``nn.Linear`` head are written out
  below exactly as ``torch.distributions.Normal`` / ``Categorical`` compute them; every other distribution (gSDE,
  SB3's multi-categorical and Bernoulli, sb3_cherry's, which are written out on their parameters already) comes
  from the policy's own ``_get_action_dist_from_latent``, as in the module path.

One difference that is not a value: the policy's ``action_dist`` keeps the distribution of the previous module call
(SB3 overwrites it at every forward pass); nothing in SB3's or sb3_cherry's collection reads it.
"""

import math
from collections.abc import Callable

import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor
from torch import nn
from torch.nn import functional as F
from torch.nn.modules import module as torch_module

from sb3_cherry.common.policies import CherryActorCriticPolicy

#: ``math.log(math.sqrt(2 * math.pi))``, the constant of ``torch.distributions.Normal.log_prob``
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))

#: the policies' own ``_get_action_dist_from_latent`` that :meth:`FastActorCriticForward._gaussian` /
#: :meth:`FastActorCriticForward._categorical` write out (sb3_cherry's defers to SB3's for SB3's distributions)
_SB3_DIST_FROM_LATENT = (ActorCriticPolicy._get_action_dist_from_latent, CherryActorCriticPolicy._get_action_dist_from_latent)

#: what each supported layer's ``forward`` computes (``nn.ReLU`` with ``inplace=True`` is excluded in ``_layer_fn``)
_LAYER_TYPES = (nn.Linear, nn.ReLU, nn.Tanh)


def _has_hooks(module: nn.Module) -> bool:
    """Whether ``module`` or a submodule has forward (pre-)hooks, or global module hooks are registered."""
    global_hooks = (
        torch_module._global_forward_hooks,
        torch_module._global_forward_pre_hooks,
        getattr(torch_module, "_global_forward_hooks_always_called", {}),
    )
    if any(global_hooks):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def _layer_fn(layer: nn.Module) -> Callable[[th.Tensor], th.Tensor] | None:
    """The function ``layer.forward`` computes, reading its parameters at call time; None if not supported."""
    if type(layer) is nn.Linear:
        return lambda x: F.linear(x, layer.weight, layer.bias)
    if type(layer) is nn.ReLU and not layer.inplace:
        return th.relu  # F.relu(x, inplace=False) is torch.relu(x)
    if type(layer) is nn.Tanh:
        return th.tanh
    return None


def _sequential_plan(net: nn.Module) -> list[Callable[[th.Tensor], th.Tensor]] | None:
    """The layers of an ``nn.Sequential`` as functions; None if a layer is not supported."""
    if type(net) is not nn.Sequential:
        return None
    plan = [_layer_fn(layer) for layer in net]
    return None if any(fn is None for fn in plan) else plan  # type: ignore[return-value]


class FastActorCriticForward:
    """
    ``policy.forward(obs, deterministic)`` for the standard MLP actor-critic, without module or distribution objects
    (same values bit for bit; see the module docstring for where it applies). Build it with :meth:`build`; it reads
    the policy's parameters at every call, so in-place updates and ``load_state_dict`` are seen, but replacing a
    submodule needs a new instance (:func:`~sb3_cherry.common.speed.inference_forward` builds one per rollout).

    :param policy: the policy
    :param actor: the actor network's layers as functions
    :param critic: the critic network's layers as functions
    """

    def __init__(
        self,
        policy: ActorCriticPolicy,
        actor: list[Callable[[th.Tensor], th.Tensor]],
        critic: list[Callable[[th.Tensor], th.Tensor]],
    ):
        self.policy = policy
        self.actor, self.critic = actor, critic
        self.action_net: nn.Module = policy.action_net
        self.value_net: nn.Linear = policy.value_net  # type: ignore[assignment]
        # ActorCriticPolicy.forward reshapes the actions to the space's shape; Tuple actions stay flat (sb3_cherry)
        tuple_actions = isinstance(policy.action_space, spaces.Tuple)
        self.action_shape = None if tuple_actions else (-1, *policy.action_space.shape)  # type: ignore[misc]
        # SB3's Gaussian and categorical heads are written out below; any other distribution (sb3_cherry's are
        # written out on their parameters already) is built by the policy's own _get_action_dist_from_latent
        self.kind = "generic"
        own_head = type(policy)._get_action_dist_from_latent in _SB3_DIST_FROM_LATENT and type(policy.action_net) is nn.Linear
        if own_head and type(policy.action_dist) is DiagGaussianDistribution:
            self.kind = "gaussian"
        elif own_head and type(policy.action_dist) is CategoricalDistribution:
            self.kind = "categorical"

    @classmethod
    def build(cls, policy: nn.Module) -> "FastActorCriticForward | None":
        """
        The fast forward of ``policy``, or None where it is not guaranteed to equal ``policy.forward``.

        :param policy: an SB3 / sb3_cherry policy
        :return: the fast forward, or None
        """
        if not isinstance(policy, ActorCriticPolicy):
            return None
        kind = type(policy)
        if (
            kind.forward not in (ActorCriticPolicy.forward, CherryActorCriticPolicy.forward)
            or kind.extract_features is not ActorCriticPolicy.extract_features
            or "forward" in policy.__dict__
        ):
            return None
        if isinstance(policy.action_space, spaces.Tuple) and kind.forward is not CherryActorCriticPolicy.forward:
            return None
        obs_space = policy.observation_space
        if not isinstance(obs_space, spaces.Box) or (policy.normalize_images and is_image_space(obs_space)):
            return None
        extractor = policy.features_extractor
        if not policy.share_features_extractor or type(extractor) is not FlattenExtractor:
            return None
        if type(extractor.flatten) is not nn.Flatten or (extractor.flatten.start_dim, extractor.flatten.end_dim) != (1, -1):
            return None
        mlp = policy.mlp_extractor
        if type(mlp) is not MlpExtractor:
            return None
        actor, critic = _sequential_plan(mlp.policy_net), _sequential_plan(mlp.value_net)
        if actor is None or critic is None or type(policy.value_net) is not nn.Linear:
            return None
        if _has_hooks(policy):
            return None
        return cls(policy, actor, critic)

    def __call__(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        Actions, values and log-probabilities of ``obs``, as ``policy.forward(obs, deterministic)``.

        :param obs: a batch of observations (tensor)
        :param deterministic: the distribution's mode instead of a sample
        :return: actions, values, log-probabilities
        """
        # BaseModel.extract_features -> preprocess_obs (Box: obs.float()) -> FlattenExtractor (nn.Flatten(1, -1))
        features = obs.float().flatten(1, -1)
        latent_pi = features
        for layer in self.actor:
            latent_pi = layer(latent_pi)
        latent_vf = features
        for layer in self.critic:
            latent_vf = layer(latent_vf)
        values = F.linear(latent_vf, self.value_net.weight, self.value_net.bias)
        if self.kind == "gaussian":
            actions, log_prob = self._gaussian(latent_pi, deterministic)
        elif self.kind == "categorical":
            actions, log_prob = self._categorical(latent_pi, deterministic)
        else:
            distribution = self.policy._get_action_dist_from_latent(latent_pi)
            actions = distribution.get_actions(deterministic=deterministic)
            log_prob = distribution.log_prob(actions)
        return (actions if self.action_shape is None else actions.reshape(self.action_shape)), values, log_prob

    def _gaussian(self, latent_pi: th.Tensor, deterministic: bool) -> tuple[th.Tensor, th.Tensor]:
        """SB3's DiagGaussianDistribution on torch's Normal: proba_distribution, get_actions, log_prob."""
        net: nn.Linear = self.action_net  # type: ignore[assignment]
        mean = F.linear(latent_pi, net.weight, net.bias)
        std = th.ones_like(mean) * self.policy.log_std.exp()
        if deterministic:
            actions = mean  # Normal.mean is loc
        else:
            # Normal.rsample: loc + eps * scale, eps from torch.distributions.utils._standard_normal
            eps = th.empty(mean.shape, dtype=mean.dtype, device=mean.device).normal_()
            actions = mean + eps * std
        # Normal.log_prob, then sb3's sum_independent_dims
        log_prob = -((actions - mean) ** 2) / (2 * std**2) - std.log() - _LOG_SQRT_2PI
        return actions, log_prob.sum(dim=1) if log_prob.dim() > 1 else log_prob.sum()

    def _categorical(self, latent_pi: th.Tensor, deterministic: bool) -> tuple[th.Tensor, th.Tensor]:
        """SB3's CategoricalDistribution on torch's Categorical(logits=...): get_actions, log_prob."""
        net: nn.Linear = self.action_net  # type: ignore[assignment]
        logits = F.linear(latent_pi, net.weight, net.bias)
        logits = logits - logits.logsumexp(dim=-1, keepdim=True)  # Categorical.__init__
        probs = F.softmax(logits, dim=-1)  # Categorical.probs (logits_to_probs)
        if deterministic:
            actions = th.argmax(probs, dim=1)  # sb3's CategoricalDistribution.mode
        else:
            # Categorical.sample(): multinomial on probs reshaped (-1, n), one draw, transposed, batch shape
            actions = th.multinomial(probs.reshape(-1, probs.shape[-1]), 1, True).T.reshape(probs.shape[:-1])
        # Categorical.log_prob: the normalised logit of the action
        log_prob = logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        return actions, log_prob
