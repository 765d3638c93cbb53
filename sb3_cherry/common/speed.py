"""
Bit-exact speed-ups of SB3's on-policy loop (issue 19): each helper computes the same floats as the SB3 / torch code
it replaces, with less per-call Python work.

- :func:`distribution_validation`: switch off ``torch.distributions`` argument validation while training (the
  checks only raise on bad parameters; the values are unchanged);
- :func:`use_foreach_optimizer`: run SB3's Adam / RMSprop with torch's ``foreach`` implementation, which on CPU
  gives the same parameters bit for bit as the default per-parameter loop (checked by the parity tests), in fewer
  Python calls;
- :class:`GradNormClipper`: ``torch.nn.utils.clip_grad_norm_`` on a parameter list collected once, without the
  per-call grouping by device and dtype;
- :class:`TensorSamplesMixin`: rollout minibatches gathered from tensors that share memory with the buffer's arrays,
  instead of a numpy gather and a copy per array;
- :class:`StepAddMixin`: SB3's ``RolloutBuffer.add`` without its extra copy of each input;
- :mod:`sb3_cherry.common.flat_adam`: Adam's step on one flat tensor per parameter group during an update.

Switches that change float rounding are opt-in: torch's fused Adam (:func:`use_fused_optimizer`, enabled by
setting ``model.fused_optimizer = True`` before ``learn``) and PPORollback's compiled update (``compile_update=True``,
through :func:`compiled`) are faster still but not bit-identical to SB3.
"""

import contextlib
import copy
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples, RolloutBufferSamples

from sb3_cherry.common.fast_forward import FastActorCriticForward


@contextlib.contextmanager
def distribution_validation(enabled: bool) -> Iterator[None]:
    """
    Set ``torch.distributions.Distribution``'s default argument validation inside the block (restored after it).

    SB3's Gaussian and categorical heads build a ``torch.distributions`` object per forward pass, validating the
    parameters (and every ``log_prob`` argument) each time; sb3_cherry's own heads already pass
    ``validate_args=False``. Validation only raises on bad input, so switching it off leaves every value unchanged.

    :param enabled: validate (torch's default) or not
    """
    previous = th.distributions.Distribution._validate_args
    th.distributions.Distribution.set_default_validate_args(enabled)
    try:
        yield
    finally:
        th.distributions.Distribution.set_default_validate_args(previous)


#: the wrapper of :func:`compiled` per (function, switch)
_COMPILED: dict[tuple[Callable[..., Any], str], Callable[..., Any]] = {}

#: versions of one compiled function torch keeps per process inside :func:`compiled_versions` (its default, 8, is
#: reached by a sweep: each network size, minibatch size and static setting is a version; beyond the limit torch
#: runs the function uncompiled, with a warning in its log)
RECOMPILE_LIMIT = 64


@contextlib.contextmanager
def compiled_versions(enabled: bool = True) -> Iterator[None]:
    """
    Inside the block, torch keeps up to :data:`RECOMPILE_LIMIT` compiled versions of a function (around an update,
    not per call: the switch costs ~20 us).

    :param enabled: False: a no-op block
    """
    if not enabled:
        yield
        return
    import torch._dynamo.config as dynamo_config

    with dynamo_config.patch(recompile_limit=max(RECOMPILE_LIMIT, dynamo_config.recompile_limit)):
        yield


def compiled(function: Callable[..., Any], switch: str) -> Callable[..., Any]:
    """
    ``torch.compile(function)`` (TorchInductor), made once per function and switch and shared by every model: torch
    compiles at the first call and again for a new policy architecture or minibatch shape (the parameters are inputs
    of the graph, so a new model of the same architecture reuses it); call it inside :func:`compiled_versions`. A
    compiler failure (TorchInductor needs a C++ compiler on the CPU) is a RuntimeError naming ``switch``.

    :param function: a function of tensors (and of an ``nn.Module``)
    :param switch: the user's setting that asked for it, for the error message
    :return: the compiled function
    """
    key = (function, switch)
    if key not in _COMPILED:
        from torch._dynamo.exc import BackendCompilerFailed

        compiled_function = th.compile(function)

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return compiled_function(*args, **kwargs)
            except BackendCompilerFailed as error:
                raise RuntimeError(
                    f"{switch}: torch.compile could not build the kernels ({type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''}). TorchInductor needs a working C++ compiler "
                    f"(gcc or clang) and Python's headers; install them, or turn {switch.split('=')[0]} off."
                ) from error

        _COMPILED[key] = call
    return _COMPILED[key]


def check_compile_update(compile_update: bool, collection: str, trust_region: str = "ratio") -> bool:
    """
    Refuse PPORollback's ``compile_update`` where the compiled loss does not apply: the KL trust region and async
    collection (whose rollouts carry importance weights) keep the eager update.

    :param compile_update: the switch
    :param collection: ``"sync"`` or ``"async"``
    :param trust_region: ``"ratio"`` or ``"kl"`` (PPORollback)
    :return: the switch, as a bool
    :raises ValueError: naming the setting and the fix
    """
    if not isinstance(compile_update, bool | int | np.bool_) or compile_update not in (0, 1):
        raise ValueError(f"compile_update={compile_update!r} must be True or False.")
    if compile_update and (trust_region != "ratio" or collection != "sync"):
        setting = f"trust_region={trust_region!r}" if trust_region != "ratio" else f"collection={collection!r}"
        raise ValueError(
            f"compile_update=True compiles the loss of synchronous collection (and PPO's ratio trust region); got "
            f"{setting}: set compile_update=False."
        )
    return bool(compile_update)


def fast_learn(learn: Callable[..., Any]) -> Callable[..., Any]:
    """
    Decorator of an algorithm's ``learn``: train with the bit-exact switches of this module, i.e. without
    ``torch.distributions`` argument validation (unless the algorithm's ``validate_distribution_args`` is True) and
    with the ``foreach`` optimizer (:func:`use_foreach_optimizer`).

    :param learn: the ``learn`` method
    :return: the wrapped method
    """

    @functools.wraps(learn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with training_switches(self):
            return learn(self, *args, **kwargs)

    return wrapper


@contextlib.contextmanager
def training_switches(model: Any) -> Iterator[None]:
    """
    Inside the block, ``model`` trains with the bit-exact switches of this module (:func:`fast_learn`'s): its
    optimizer set to ``foreach`` (or fused, if ``model.fused_optimizer``), no ``torch.distributions`` argument
    validation unless ``model.validate_distribution_args``. Also used by the async learner process.

    :param model: the algorithm
    """
    if getattr(model, "fused_optimizer", False):
        use_fused_optimizer(model.policy.optimizer)
    else:
        use_foreach_optimizer(model.policy.optimizer)
    with distribution_validation(bool(getattr(model, "validate_distribution_args", False))):
        yield


#: ids of the ``_InferenceForward`` wrappers of the running ``inference_forward`` blocks
_ACTIVE_WRAPPERS: set[int] = set()


class _InferenceForward:
    """
    A policy's ``forward`` (or ``predict_values``) inside :func:`inference_forward`. An object rather than a closure so
    that a deep copy or a pickle of the policy taken during the block (a callback's snapshot) holds a wrapper of its
    OWN method: a copy is not an active wrapper, so it runs that method as the class defines it (no inference mode, no
    fast path); the next ``inference_forward`` block on the copy replaces it.

    :param forward: the policy's method (bound)
    :param inference: what runs without gradient inside the block (the fast path, or the method itself)
    """

    calls_fast_forward = True  # (FastActorCriticForward.unchanged)

    def __init__(self, forward: Callable[..., Any], inference: Callable[..., Any] | None):
        self.forward, self.inference = forward, inference

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.inference is None or th.is_grad_enabled() or id(self) not in _ACTIVE_WRAPPERS:
            return self.forward(*args, **kwargs)
        with th.inference_mode():
            return self.inference(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {"forward": self.forward, "inference": None}  # a copy never runs the block's fast path

    def __deepcopy__(self, memo: dict[int, Any]) -> "_InferenceForward":
        return _InferenceForward(copy.deepcopy(self.forward, memo), None)


def _release_graph(distribution: Any) -> None:
    """
    Detach the tensors a policy's ``action_dist`` still holds from the last training step (the fast path does not
    refresh it during collection): they keep that step's autograd graph alive, and a deep copy of the policy (a
    callback's snapshot) refuses non-leaf tensors. Values are unchanged; the next ``evaluate_actions`` replaces them.

    :param distribution: ``policy.action_dist`` (SB3's or sb3_cherry's)
    """
    for owner in (distribution, getattr(distribution, "distribution", None)):
        for item in owner if isinstance(owner, list) else [owner]:
            state = getattr(item, "__dict__", {})
            for name, value in list(state.items()):
                if isinstance(value, th.Tensor) and value.grad_fn is not None:
                    state[name] = value.detach()


@contextlib.contextmanager
def inference_forward(policy: th.nn.Module, cache: dict[str, Any] | None = None) -> Iterator[None]:
    """
    Inside the block, the policy's forward passes that run without gradient (SB3's ``collect_rollouts`` calls the
    policy under ``th.no_grad()``) run in ``torch.inference_mode`` instead, which skips autograd's version counting
    and view tracking, and, for the standard MLP actor-critic, without module and distribution objects
    (:class:`~sb3_cherry.common.fast_forward.FastActorCriticForward`, built on entering the block; its
    ``predict_values``, the value of the rollout's last observation, is written out the same way). Forward passes
    with gradient, and everything else in the block (callbacks, the env), are unchanged; the values are the same. The
    tensors those passes return are inference tensors (``policy.forward``'s outputs seen by callbacks, e.g. the
    ``values`` in ``self.locals``): use them as they are or ``.clone()`` them before autograd or in-place use.

    :param policy: the policy (its ``forward``, and ``predict_values`` where written out, are wrapped for the duration
        of the block)
    :param cache: a dict kept by the caller across blocks (the algorithm's): the fast forward built for the policy
        is reused while it still stands for it (:meth:`FastActorCriticForward.build_or_reuse`); None: built anew
    """
    existing = policy.__dict__.get("forward")
    if existing is not None:
        if not isinstance(existing, _InferenceForward) or id(existing) in _ACTIVE_WRAPPERS:
            yield  # patched by the user, or a nested block
            return
        del policy.forward  # left on a copy of a policy taken during another block
    _release_graph(getattr(policy, "action_dist", None))
    forward = policy.forward
    fast = FastActorCriticForward.build(policy) if cache is None else FastActorCriticForward.build_or_reuse(policy, cache)
    wrappers = {"forward": _InferenceForward(forward, fast or forward)}
    if fast is not None and fast.values_supported:
        existing_values = policy.__dict__.get("predict_values")
        if isinstance(existing_values, _InferenceForward) and id(existing_values) not in _ACTIVE_WRAPPERS:
            del policy.predict_values  # left on a copy
            existing_values = None
        if existing_values is None:  # (else patched by the user: left alone)
            predict_values: Callable[..., Any] = policy.predict_values  # type: ignore[assignment]  # (an ActorCriticPolicy)
            wrappers["predict_values"] = _InferenceForward(predict_values, fast.predict_values)
    for name, wrapper in wrappers.items():
        setattr(policy, name, wrapper)
        _ACTIVE_WRAPPERS.add(id(wrapper))
    try:
        yield
    finally:
        for name, wrapper in wrappers.items():
            _ACTIVE_WRAPPERS.discard(id(wrapper))
            if policy.__dict__.get(name) is wrapper:
                delattr(policy, name)


#: Optimizers whose ``foreach`` implementation matches the per-parameter loop bit for bit on CPU (same element-wise
#: kernels, same order of operations; ``tests/test_ppo_rollback.py`` parity tests check it through PPO and A2C)
FOREACH_EXACT_OPTIMIZERS = (th.optim.Adam, th.optim.RMSprop)


def use_foreach_optimizer(optimizer: th.optim.Optimizer) -> bool:
    """
    Switch ``optimizer`` to torch's ``foreach`` implementation when that is bit-exact and the user did not choose.

    Only Adam and RMSprop on CPU parameters whose ``foreach`` and ``fused`` options are unset (``None`` / ``False``)
    are switched; torch's own default on CPU is the per-parameter loop.

    :param optimizer: the policy's optimizer
    :return: whether it was switched
    """
    if type(optimizer) not in FOREACH_EXACT_OPTIMIZERS:
        return False
    switched = False
    for group in optimizer.param_groups:
        if group.get("foreach") is not None or group.get("fused") or group.get("differentiable"):
            continue
        if all(p.device.type == "cpu" and not p.is_sparse for p in group["params"]):
            group["foreach"] = True
            switched = True
    return switched


def use_fused_optimizer(optimizer: th.optim.Optimizer) -> bool:
    """
    Opt-in: switch an Adam / AdamW optimizer to torch's fused implementation (one kernel per parameter; 2-4x faster
    steps on CPU here). It rounds differently from the per-parameter loop, so training is no longer bit-identical
    to SB3's (see ``CherryOnPolicyAlgorithm.fused_optimizer``).

    :param optimizer: the policy's optimizer
    :return: whether it was switched (False for other optimizers, e.g. A2C's RMSprop, which torch does not fuse)
    """
    if type(optimizer) not in (th.optim.Adam, th.optim.AdamW):
        return False
    for group in optimizer.param_groups:
        if group.get("differentiable") or group.get("capturable"):
            return False
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, False
    return True


class GradNormClipper:
    """
    ``torch.nn.utils.clip_grad_norm_(parameters, max_norm)`` (2-norm, ``foreach``) for a fixed parameter list: the
    same operations in the same order, so the same gradients bit for bit, without collecting the parameters through
    the module tree and grouping them by device and dtype at every call.

    Build it once per update (the trainers do): the list is then the policy's parameters of that update, also after a
    submodule was replaced or moved between updates.

    :param parameters: the parameters whose gradients are clipped (e.g. ``policy.parameters()``)
    """

    def __init__(self, parameters: Iterable[th.nn.Parameter]):
        self.parameters = list(parameters)
        devices_dtypes = {(p.device, p.dtype) for p in self.parameters}
        # one device and dtype: torch's grouping is a no-op, and its foreach path runs on CPU and CUDA
        self.fast = len(devices_dtypes) == 1 and next(iter(devices_dtypes))[0].type in ("cpu", "cuda")

    def __call__(self, max_norm: float) -> th.Tensor:
        """
        Clip the gradients in place.

        :param max_norm: max 2-norm of all gradients viewed as one vector
        :return: the total norm before clipping
        """
        if not self.fast:
            return th.nn.utils.clip_grad_norm_(self.parameters, max_norm)
        grads = [p.grad for p in self.parameters if p.grad is not None]
        if not grads:
            return th.tensor(0.0)
        with th.no_grad():
            # torch.nn.utils.clip_grad._get_total_norm and _clip_grads_with_norm_, foreach branch
            total_norm = th.linalg.vector_norm(th.stack(th._foreach_norm(grads, 2.0)), 2.0)
            clip_coef = float(max_norm) / (total_norm + 1e-6)
            clip_coef_clamped = th.clamp(clip_coef, max=1.0)
            th._foreach_mul_(grads, clip_coef_clamped)
        return total_norm


def mean_of(values: list[th.Tensor]) -> float:
    """
    Mean of per-minibatch log values kept as tensors, with one host transfer (``np.mean`` of their ``.item()``).

    :param values: scalar tensors
    :return: their mean (NaN if there are none, as ``np.mean([])``)
    """
    if not values:
        return float("nan")
    return th.stack([v.reshape(()) for v in values]).double().mean().item()


def minibatch_means(flat: th.Tensor, sizes: list[int], masks: list[th.Tensor | None]) -> th.Tensor:
    """
    The mean of each minibatch's per-sample values (over its mask), for all minibatches in a few vectorised ops.

    :param flat: the minibatches' per-sample values, concatenated
    :param sizes: number of samples of each minibatch
    :param masks: per minibatch, None (all samples) or a boolean tensor of the samples to average
    :return: one mean per minibatch
    """
    segments = th.repeat_interleave(th.arange(len(sizes), device=flat.device), th.tensor(sizes, device=flat.device))
    if all(m is None for m in masks):
        weights = th.ones_like(flat)
    else:
        weights = th.cat(
            [
                th.ones(n, dtype=flat.dtype, device=flat.device) if m is None else m.to(flat.dtype)
                for n, m in zip(sizes, masks, strict=True)
            ]
        )
    totals = th.zeros(len(sizes), dtype=flat.dtype, device=flat.device).index_add_(0, segments, flat * weights)
    counts = th.zeros(len(sizes), dtype=flat.dtype, device=flat.device).index_add_(0, segments, weights)
    return totals / counts


class TensorSamplesMixin:
    """
    Rollout buffer mixin (before SB3's ``RolloutBuffer`` / ``DictRolloutBuffer`` in the bases): minibatches are
    gathered with ``index_select`` from tensors that share memory with the flattened arrays (``torch.from_numpy``,
    made once per array), instead of a numpy gather plus a ``torch.tensor`` copy per array and minibatch. SB3's
    ``get`` runs unchanged, so the minibatch order (``np.random.permutation``) and every value are SB3's.
    """

    device: th.device
    observations: Any
    actions: np.ndarray

    def _tensor_view(self, name: str, array: np.ndarray) -> th.Tensor:
        """A tensor sharing memory with ``array`` (cached while the attribute ``name`` holds that same array)."""
        views = self.__dict__.setdefault("_tensor_views", {})
        cached = views.get(name)
        if cached is None or cached[0] is not array:
            cached = (array, th.from_numpy(array))
            views[name] = cached
        return cached[1]

    def _gather(self, name: str, array: np.ndarray, index: th.Tensor) -> th.Tensor:
        batch = self._tensor_view(name, array).index_select(0, index)
        return batch.to(self.device) if self.device.type != "cpu" else batch

    def _get_samples(self, batch_inds: np.ndarray, env: Any = None) -> RolloutBufferSamples | DictRolloutBufferSamples:  # type: ignore[override]
        """
        The minibatch ``batch_inds`` (SB3's ``_get_samples``, same values and dtypes).

        :param batch_inds: indices into the flattened buffer
        :param env: unused (SB3's signature)
        :return: SB3's samples tuple (dict observations for a ``DictRolloutBuffer``)
        """
        index = th.from_numpy(np.asarray(batch_inds, dtype=np.int64))
        if isinstance(self.observations, dict):
            observations: Any = {key: self._gather(f"obs/{key}", obs, index) for key, obs in self.observations.items()}
        else:
            observations = self._gather("observations", self.observations, index)
        actions = self._gather("actions", self.actions, index)
        if actions.dtype != th.float32:  # SB3 casts to float32 (e.g. MultiBinary)
            actions = actions.float()
        rest = [self._gather(name, self.__dict__[name], index).flatten() for name in _FLAT_FIELDS]
        if isinstance(observations, dict):
            return DictRolloutBufferSamples(observations, actions, *rest)
        return RolloutBufferSamples(observations, actions, *rest)


#: the per-sample scalars of SB3's samples tuples, in their order
_FLAT_FIELDS = ("values", "log_probs", "advantages", "returns")


def _plain_tensor(tensor: Any) -> bool:
    """Whether ``tensor`` is a CPU tensor that ``.numpy()`` reads as ``.clone().cpu().numpy()`` would."""
    return (
        isinstance(tensor, th.Tensor)
        and tensor.device.type == "cpu"
        and tensor.dim() > 0
        and not (tensor.requires_grad or tensor.is_neg() or tensor.is_conj())
    )


class StepAddMixin:
    """
    Rollout buffer mixin (before SB3's ``RolloutBuffer`` in the bases): SB3's ``RolloutBuffer.add`` storing the same
    values, without its copies. SB3 copies each input once more before the assignment that copies it into the buffer
    (``np.array(obs)``, ``value.clone().cpu().numpy()``); NumPy's assignment alone converts and copies the same
    way (same casts, same broadcasting), so the buffer's arrays are equal bit for bit. About 4 us less per collected
    step (``tests/test_speed.py`` compares the arrays with SB3's ``add`` on the same inputs).

    Inputs that SB3's ``add`` reshapes or converts specially take SB3's ``add``: observations that are not a NumPy
    array or come from a ``Discrete`` observation space, and values / log-probabilities that are not CPU tensors with
    at least one dimension that ``.numpy()`` can read (no gradient, no negative / conjugate bit).
    """

    pos: int
    full: bool
    buffer_size: int
    n_envs: int
    action_dim: int
    observation_space: Any
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    episode_starts: np.ndarray
    values: np.ndarray
    log_probs: np.ndarray

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        episode_start: np.ndarray,
        value: th.Tensor,
        log_prob: th.Tensor,
    ) -> None:
        """
        Store one collected step (SB3's ``RolloutBuffer.add``: same arguments, same stored values).

        :param obs: observations, one row per env
        :param action: actions
        :param reward: rewards
        :param episode_start: whether each env's episode started at this step
        :param value: the critic's values of ``obs``
        :param log_prob: log-probabilities of the actions
        """
        plain = type(obs) is np.ndarray and not isinstance(self.observation_space, spaces.Discrete)
        if not (plain and _plain_tensor(value) and _plain_tensor(log_prob)):
            super().add(obs, action, reward, episode_start, value, log_prob)  # type: ignore[misc]
            return
        pos = self.pos
        action = action.reshape((self.n_envs, self.action_dim))  # first, as SB3: a bad action leaves the buffer as it was
        self.observations[pos] = obs
        self.actions[pos] = action
        self.rewards[pos] = reward
        self.episode_starts[pos] = episode_start
        self.values[pos] = value.numpy().reshape(-1)
        self.log_probs[pos] = log_prob.numpy()
        self.pos = pos + 1
        if self.pos == self.buffer_size:
            self.full = True
