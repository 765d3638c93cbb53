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
- no class in the policy's MRO other than SB3's / sb3_cherry's own defines ``forward``, ``extract_features`` or
  ``_get_action_dist_from_latent`` (a mixin reached through ``super()`` would change the computation);
- at every call (else that call takes the module path): no forward hooks on the submodules and no global module
  hooks, the same submodules as when it was built (none replaced, none with a ``forward`` set on the instance, no
  method of the policy or of SB3's distribution object patched on the instance), and ``torch.distributions``
  argument validation off (as during sb3_cherry's ``learn``; with validation on, the module path raises on invalid
  distribution parameters as SB3 does);
- SB3's ``DiagGaussianDistribution`` and ``CategoricalDistribution`` behind an ``nn.Linear`` head are written out
  below exactly as ``torch.distributions.Normal`` / ``Categorical`` compute them; every other distribution (gSDE,
  SB3's multi-categorical and Bernoulli, sb3_cherry's, which are written out on their parameters already) comes
  from the policy's own ``_get_action_dist_from_latent``, as in the module path.

SB3's ``ActorCriticPolicy.predict_values`` (the critic half, which SB3 calls for the value of the rollout's last
observation) is written out as well when the policy's class does not override it
(:meth:`FastActorCriticForward.predict_values`).

One difference that is not a value: the policy's ``action_dist`` keeps the distribution of the previous module call
(SB3 overwrites it at every forward pass); nothing in SB3's or sb3_cherry's collection reads it.
"""

import math
from collections.abc import Callable
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel, BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor
from torch import nn
from torch.nn import functional as F
from torch.nn.modules import module as torch_module

from sb3_cherry.common.policies import CherryActorCriticPolicy

#: ``math.log(math.sqrt(2 * math.pi))``, the constant of ``torch.distributions.Normal.log_prob``
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))

#: the policy methods whose computation the fast path reproduces: only these classes may define them
_POLICY_METHODS = ("forward", "extract_features", "_get_action_dist_from_latent")
_KNOWN_CLASSES = frozenset({CherryActorCriticPolicy, ActorCriticPolicy, BasePolicy, BaseModel, nn.Module, object})
#: the methods of SB3's Gaussian / categorical distribution objects that the fast path writes out
_DISTRIBUTION_METHODS = ("proba_distribution", "get_actions", "sample", "mode", "log_prob")


def _global_hooks() -> bool:
    """Whether global module forward (pre-)hooks are registered."""
    return bool(
        torch_module._global_forward_hooks
        or torch_module._global_forward_pre_hooks
        or getattr(torch_module, "_global_forward_hooks_always_called", None)
    )


def _module_hooks(module: nn.Module) -> bool:
    """Whether ``module`` or a submodule has forward (pre-)hooks."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def _own_methods(policy: nn.Module) -> bool:
    """Whether only SB3's / sb3_cherry's classes define the reproduced methods in the policy's MRO."""
    return all(cls in _KNOWN_CLASSES or not any(name in vars(cls) for name in _POLICY_METHODS) for cls in type(policy).__mro__)


def _layer_fn(layer: nn.Module) -> Callable[[th.Tensor], th.Tensor] | None:
    """The function ``layer.forward`` computes, reading its parameters at call time; None if not supported."""
    if type(layer) is nn.Linear:
        # (read from the parameter dict, where nn.Module.__getattr__ finds them: the per-call structure check sends
        # a layer whose class, instance dict or parameter entries changed to the module path)
        params: dict[str, Any] = layer._parameters
        return lambda x: F.linear(x, params["weight"], params["bias"])
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


class InferenceCache(dict):
    """
    The dict an algorithm keeps its fast forward in between rollouts (:meth:`FastActorCriticForward.build_or_reuse`):
    a copy or a pickle of it is empty, so that a deep copy of the algorithm (a callback's snapshot) builds a fast
    forward on its own policy instead of reusing one that reads the original's layers, and the algorithm still
    pickles (the fast forward holds functions of the layers).
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> "InferenceCache":
        return InferenceCache()

    def __copy__(self) -> "InferenceCache":
        return InferenceCache()

    def __reduce__(self) -> tuple[type, tuple]:
        return InferenceCache, ()


class FastActorCriticForward:
    """
    ``policy.forward(obs, deterministic)`` for the standard MLP actor-critic, without module or distribution objects
    (same values bit for bit; see the module docstring for where it applies). Build it with :meth:`build`. It reads
    the policy's parameters at every call, so in-place updates and ``load_state_dict`` are seen; a call after a
    submodule was replaced or hooked, a method patched, or with argument validation on, runs the module path.

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
        self.policy_type = type(policy)
        self.module_forward = policy.forward  # the module path (before inference_forward wraps it)
        self.module_predict_values = policy.predict_values
        # SB3's ActorCriticPolicy.predict_values (critic half of forward) is written out too, unless overridden
        self.values_supported = type(policy).predict_values is ActorCriticPolicy.predict_values
        self.actor, self.critic = actor, critic
        # every (parent's submodule dict, name, submodule) the fast path stands for, checked at each call
        # (with the submodule's hook dicts and instance dict, which hooks and patches mutate in place)
        self.watched: list[tuple[dict[str, Any], str, nn.Module, dict, dict, dict, type, dict]] = []
        self.sizes: list[tuple[dict[str, Any], int]] = []
        for parent in (policy, policy.features_extractor, policy.mlp_extractor, *self._sequentials(policy)):
            if isinstance(parent, nn.Sequential):
                self.sizes.append((parent._modules, len(parent._modules)))
            for name, child in parent._modules.items():
                if child is not None:
                    state = child.__dict__
                    hooks, pre_hooks = state["_forward_hooks"], state["_forward_pre_hooks"]
                    params = state["_parameters"]
                    self.watched.append((parent._modules, name, child, hooks, pre_hooks, state, type(child), params))
        self.dist = policy.action_dist
        self.action_net: nn.Module = policy.action_net
        self.value_net: nn.Linear = policy.value_net  # type: ignore[assignment]
        # the heads' parameter dicts (nn.Linear heads where written out; see _layer_fn)
        self.action_params: dict[str, Any] = policy.action_net._parameters
        self.value_params: dict[str, Any] = policy.value_net._parameters
        # ActorCriticPolicy.forward reshapes the actions to the space's shape; Tuple actions stay flat (sb3_cherry)
        tuple_actions = isinstance(policy.action_space, spaces.Tuple)
        self.action_shape = None if tuple_actions else (-1, *policy.action_space.shape)  # type: ignore[misc]
        # SB3's Gaussian and categorical heads are written out below (build() has checked that the policy's
        # _get_action_dist_from_latent is SB3's / sb3_cherry's, which defers to SB3's for SB3's distributions); any
        # other distribution (sb3_cherry's are written out on their parameters already) is built by that method
        self.kind = "generic"
        own_head = type(policy.action_net) is nn.Linear
        if own_head and type(policy.action_dist) is DiagGaussianDistribution:
            self.kind = "gaussian"
        elif own_head and type(policy.action_dist) is CategoricalDistribution:
            self.kind = "categorical"

    @staticmethod
    def _sequentials(policy: ActorCriticPolicy) -> tuple[nn.Module, nn.Module]:
        """The actor's and the critic's ``nn.Sequential`` of the MLP extractor."""
        return policy.mlp_extractor.policy_net, policy.mlp_extractor.value_net

    def unchanged(self) -> bool:
        """
        Whether the fast path still computes ``policy.forward`` (checked at every call; a few dict lookups).

        :return: no argument validation, global hook, replaced / hooked / patched submodule or patched method
        """
        if th.distributions.Distribution._validate_args:
            return False
        return self.same_structure()

    def same_structure(self) -> bool:
        """
        Whether the policy's structure is still the one the fast path was built for.

        :return: no global hook, replaced / hooked / patched submodule or patched method
        """
        if _global_hooks():
            return False
        for modules, name, module, hooks, pre_hooks, state, kind, params in self.watched:
            # (a parametrization swaps the module's class; a tensor set over a deleted parameter is in its dict)
            if hooks or pre_hooks or modules.get(name) is not module or "forward" in state or type(module) is not kind:
                return False
            # (the fast path reads a linear layer's weight and bias from the parameter dict it was built on)
            if kind is nn.Linear and (
                "weight" in state or "bias" in state or state["_parameters"] is not params or len(params) != 2
            ):
                return False
            if type(module) is MlpExtractor and ("forward_actor" in state or "forward_critic" in state):
                return False  # MlpExtractor.forward calls them: an instance patch of either changes the policy
            if state["_forward_hooks"] is not hooks or state["_forward_pre_hooks"] is not pre_hooks:
                return False
        if any(len(modules) != size for modules, size in self.sizes):
            return False
        policy_dict = self.policy.__dict__
        if any(name in policy_dict for name in _POLICY_METHODS[1:]) or self.policy.action_dist is not self.dist:
            return False
        # the instance's forward is allowed only as inference_forward's wrapper (which calls this object)
        forward = policy_dict.get("forward")
        if forward is not None and not getattr(forward, "calls_fast_forward", False):
            return False
        return self.kind == "generic" or not any(name in self.dist.__dict__ for name in _DISTRIBUTION_METHODS)

    def reusable_for(self, policy: nn.Module) -> bool:
        """
        Whether this fast forward, built earlier, still stands for ``policy.forward`` (what :meth:`build` would
        check, in a few microseconds: the same policy object and class, no class in its MRO given one of the
        reproduced methods since (``predict_values`` included), no hooks on the policy itself, and
        :meth:`same_structure` for every submodule it was built on).

        :param policy: the policy about to be run
        :return: whether it can be used instead of a new :meth:`build`
        """
        if policy is not self.policy or type(policy) is not self.policy_type or not _own_methods(policy):
            return False
        if (type(policy).predict_values is ActorCriticPolicy.predict_values) != self.values_supported:
            return False
        if policy._forward_hooks or policy._forward_pre_hooks or "forward" in policy.__dict__:
            return False
        return self.same_structure()

    @classmethod
    def build_or_reuse(cls, policy: nn.Module, cache: dict[str, Any]) -> "FastActorCriticForward | None":
        """
        :meth:`build`, or the fast forward built for ``policy`` before (kept in ``cache``) while
        :meth:`reusable_for` holds: building costs tens of microseconds, once per rollout.

        :param policy: an SB3 / sb3_cherry policy
        :param cache: a dict owned by the caller (e.g. the algorithm), the same at every call
        :return: the fast forward, or None
        """
        cached = cache.get("fast_forward")  # (an InferenceCache: empty in a copy or pickle of its owner)
        if cached is not None and cached.reusable_for(policy):
            return cached
        fast = cls.build(policy)
        cache["fast_forward"] = fast
        return fast

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
        if not _own_methods(policy) or any(name in policy.__dict__ for name in _POLICY_METHODS):
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
        if _module_hooks(policy):  # the policy's own and unwatched submodules' hooks; same_structure does the rest
            return None
        fast = cls(policy, actor, critic)
        return fast if fast.same_structure() else None

    def __call__(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        Actions, values and log-probabilities of ``obs``, as ``policy.forward(obs, deterministic)``.

        :param obs: a batch of observations (tensor)
        :param deterministic: the distribution's mode instead of a sample
        :return: actions, values, log-probabilities
        """
        if not self.unchanged():
            return self.module_forward(obs, deterministic)
        # BaseModel.extract_features -> preprocess_obs (Box: obs.float()) -> FlattenExtractor (nn.Flatten(1, -1))
        features = obs.float().flatten(1, -1)
        latent_pi = features
        for layer in self.actor:
            latent_pi = layer(latent_pi)
        latent_vf = features
        for layer in self.critic:
            latent_vf = layer(latent_vf)
        values = F.linear(latent_vf, self.value_params["weight"], self.value_params["bias"])
        if self.kind == "gaussian":
            actions, log_prob = self._gaussian(latent_pi, deterministic)
        elif self.kind == "categorical":
            actions, log_prob = self._categorical(latent_pi, deterministic)
        else:
            distribution = self.policy._get_action_dist_from_latent(latent_pi)
            actions = distribution.get_actions(deterministic=deterministic)
            log_prob = distribution.log_prob(actions)
        return (actions if self.action_shape is None else actions.reshape(self.action_shape)), values, log_prob

    def predict_values(self, obs: th.Tensor) -> th.Tensor:
        """
        The critic's values of ``obs``, as SB3's ``ActorCriticPolicy.predict_values(obs)`` (the critic half of
        :meth:`__call__`; SB3 calls it for the value after the last step of a rollout).

        :param obs: a batch of observations (tensor)
        :return: values, shape ``(batch, 1)``
        """
        patched = self.policy.__dict__.get("predict_values")
        if (
            not self.values_supported
            or (patched is not None and not getattr(patched, "calls_fast_forward", False))
            or not self.unchanged()
        ):
            return self.module_predict_values(obs)
        # BaseModel.extract_features(obs, vf_features_extractor) -> preprocess_obs (Box: obs.float()) -> Flatten
        latent_vf = obs.float().flatten(1, -1)
        for layer in self.critic:
            latent_vf = layer(latent_vf)
        return F.linear(latent_vf, self.value_params["weight"], self.value_params["bias"])

    def _gaussian(self, latent_pi: th.Tensor, deterministic: bool) -> tuple[th.Tensor, th.Tensor]:
        """SB3's DiagGaussianDistribution on torch's Normal: proba_distribution, get_actions, log_prob."""
        mean = F.linear(latent_pi, self.action_params["weight"], self.action_params["bias"])
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
        logits = F.linear(latent_pi, self.action_params["weight"], self.action_params["bias"])
        logits = logits - logits.logsumexp(dim=-1, keepdim=True)  # Categorical.__init__
        probs = F.softmax(logits, dim=-1)  # Categorical.probs (logits_to_probs)
        if deterministic:
            actions = th.argmax(probs, dim=1)  # sb3's CategoricalDistribution.mode
        else:
            # Categorical.sample(): torch.multinomial(probs_2d, 1, True), which for one draw is (ATen's
            # multinomial_out) a validity check of the probabilities, then argmax(p / q) with q ~ Exp(1) drawn by
            # exponential_ on a tensor like p: the same draw and random stream here, with one sum as the check
            # (softmax rows are finite and sum to 1 unless a logit was non-finite, then the row is NaN)
            probs_2d = probs.reshape(-1, probs.shape[-1])
            if not math.isfinite(probs_2d.sum().item()):
                raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
            q = th.empty_like(probs_2d).exponential_(1)
            actions = th.div(probs_2d, q, out=q).argmax(dim=-1).reshape(probs.shape[:-1])
        # Categorical.log_prob: the normalised logit of the action
        log_prob = logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        return actions, log_prob
