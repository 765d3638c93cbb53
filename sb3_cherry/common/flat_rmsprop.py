"""
RMSprop steps on flat tensors: the same floats as ``torch.optim.RMSprop``, in a fraction of its per-tensor work
(issue 19; A2C's optimizer).

Plain RMSprop (no momentum, not centered, no weight decay) is element-wise: every entry of ``square_avg`` and of a
parameter is updated from the same entries of the gradient with the same scalars (``alpha``, ``eps``, the learning
rate). :func:`rmsprop_step` copies a group's gradients and ``square_avg`` tensors into one flat tensor each, runs
torch's operations of the step on those (``mul_``, ``addcmul_``, ``sqrt``, ``add_``), copies ``square_avg`` back
and applies ``addcdiv_`` to the parameters through views of the flat denominator, as torch's ``foreach``
implementation does with its per-tensor denominators. Every entry sees the same operations as in torch's
per-parameter loop (and its ``foreach`` implementation, equal to the loop on CPU), so the parameters and the
optimizer state are equal bit for bit (``tests/test_flat_rmsprop.py``), while the kernels of a step run once per
group instead of once per parameter tensor. The parameters stay the tensors they are (nothing is re-pointed), so
nothing outside the step sees a difference.

A step where the flat one would not be exact runs the optimizer's own ``step``: another optimizer class or a
subclass, a ``step`` patched on the instance, step hooks, momentum / centered / weight decay / maximize /
capturable / differentiable, a non-float hyperparameter, a parameter without a dense gradient (torch skips it),
parameters that are not dense float32 / float64 CPU tensors of one dtype per group, or an optimizer state other
than torch's plain RMSprop state (see :func:`flat_rmsprop_eligible`).
"""

import weakref

import torch as th
from torch.optim.optimizer import _get_scalar_dtype

from sb3_cherry.common.flat_adam import AlignedLayout, _hooked

#: the RMSprop state keys of a plain (no momentum, not centered) step
_STATE_KEYS = {"step", "square_avg"}
#: settings a flat step does not reproduce (each must be False / 0)
_UNSUPPORTED = ("momentum", "centered", "weight_decay", "maximize", "capturable", "differentiable")


def _optimizer_eligible(optimizer: th.optim.Optimizer) -> bool:
    """The optimizer-wide conditions of :func:`flat_rmsprop_eligible` (class, instance ``step``, hooks, settings,
    each parameter once)."""
    if type(optimizer) is not th.optim.RMSprop or "step" in optimizer.__dict__ or _hooked(optimizer):
        return False
    # a parameter listed twice (torch warns, and steps it twice in a row) would get one merged flat step
    if len({id(p) for group in optimizer.param_groups for p in group["params"]}) != sum(
        len(group["params"]) for group in optimizer.param_groups
    ):
        return False
    for group in optimizer.param_groups:
        if any(group.get(flag) for flag in _UNSUPPORTED):
            return False
        if not all(isinstance(group[key], float) for key in ("lr", "alpha", "eps")):
            return False
        params = group["params"]
        if not params or params[0].dtype not in (th.float32, th.float64):
            return False
    return True


def _group_states(optimizer: th.optim.Optimizer, group: dict) -> list[dict] | None:
    """
    The per-parameter states of ``group`` (empty dicts for parameters without state yet) when every parameter is a
    dense CPU tensor of the group's dtype with a dense gradient of that dtype and its state is empty or torch's plain
    RMSprop state; None otherwise.
    """
    params = group["params"]
    dtype = params[0].dtype
    states = []
    state_of = optimizer.state
    for p in params:
        grad = p.grad
        if p.dtype is not dtype or not p.is_cpu or p.layout is not th.strided:
            return None
        # (a parameter without gradient is skipped by torch's step)
        if grad is None or grad.dtype is not dtype or not grad.is_cpu or grad.layout is not th.strided:
            return None
        state = state_of[p]  # (a defaultdict: torch's _init_group reads it the same way)
        if state:
            if state.keys() != _STATE_KEYS:
                return None
            step, square_avg = state["step"], state["square_avg"]
            if not (isinstance(step, th.Tensor) and step.is_cpu and step.dim() == 0 and step.is_floating_point()):
                return None
            if not isinstance(square_avg, th.Tensor) or square_avg.dtype is not dtype or not square_avg.is_cpu:
                return None
            if square_avg.layout is not th.strided or square_avg.shape != p.shape:
                return None
        states.append(state)
    # each parameter's own state tensors (two parameters sharing one square_avg are stepped one after the other)
    tensors = [id(state[key]) for state in states if state for key in ("step", "square_avg")]
    if len(set(tensors)) != len(tensors):
        return None
    return states


def flat_rmsprop_eligible(optimizer: th.optim.Optimizer) -> bool:
    """
    Whether :func:`rmsprop_step` computes ``optimizer.step()`` on flat tensors exactly: torch's ``RMSprop`` itself
    (not a subclass, its ``step`` not patched on the instance), no step hooks, no momentum, not centered, no weight
    decay, not ``maximize`` / ``capturable`` / ``differentiable``, float ``lr`` / ``alpha`` / ``eps``, every
    parameter a dense CPU tensor of the group's dtype (float32 or float64) with a dense gradient of that dtype, and
    each parameter's state either empty or the plain RMSprop state (a floating-point CPU scalar ``step`` tensor and a
    ``square_avg`` of the parameter's shape and dtype), every parameter listed once and no state tensor shared.

    :param optimizer: the optimizer
    :return: whether a flat step is exact
    """
    return _optimizer_eligible(optimizer) and all(
        _group_states(optimizer, group) is not None for group in optimizer.param_groups
    )


class _FlatBuffers:
    """The flat gradient, ``square_avg`` and denominator tensors of one parameter group, with per-parameter views."""

    def __init__(self, params: list[th.Tensor]):
        # each parameter's entries at a 64-byte aligned offset, as a tensor of its own (the padding stays zero)
        self.layout = AlignedLayout(params)
        self.grad, self.square_avg, self.avg = (self.layout.zeros() for _ in range(3))
        self.grad_views, self.square_avg_views = self.layout.views(self.grad), self.layout.views(self.square_avg)
        self.avg_views = self.layout.views(self.avg)

    def fits(self, params: list[th.Tensor]) -> bool:
        """Whether the buffers were made for parameters of these shapes and dtype."""
        return params[0].dtype == self.layout.dtype and [p.shape for p in params] == self.layout.shapes


#: flat buffers per optimizer and parameter group (dropped with the optimizer)
_BUFFERS: "weakref.WeakKeyDictionary[th.optim.Optimizer, list[_FlatBuffers]]" = weakref.WeakKeyDictionary()


def _group_step(group: dict, states: list[dict], buffers: _FlatBuffers) -> None:
    """One RMSprop step of ``group`` on the flat buffers (torch's ``_init_group`` and ``_multi_tensor_rmsprop``)."""
    params: list[th.Tensor] = group["params"]
    for p, state in zip(params, states, strict=True):
        if not state:  # torch's state initialisation (non-capturable)
            state["step"] = th.zeros((), dtype=_get_scalar_dtype())
            state["square_avg"] = th.zeros_like(p, memory_format=th.preserve_format)
    grads: list[th.Tensor] = [p.grad for p in params]  # type: ignore[misc]  # (checked: none is None)
    square_avgs = [state["square_avg"] for state in states]
    alpha, lr = group["alpha"], group["lr"]
    with th.no_grad():
        th._foreach_add_([state["step"] for state in states], th.tensor(1.0, device="cpu"), alpha=1.0)
        th._foreach_copy_(buffers.grad_views, grads)
        th._foreach_copy_(buffers.square_avg_views, square_avgs)
        buffers.square_avg.mul_(alpha).addcmul_(buffers.grad, buffers.grad, value=1 - alpha)
        th.sqrt(buffers.square_avg, out=buffers.avg)
        buffers.avg.add_(group["eps"])
        th._foreach_copy_(square_avgs, buffers.square_avg_views)
        th._foreach_addcdiv_(params, grads, buffers.avg_views, value=-lr)


def rmsprop_step(optimizer: th.optim.Optimizer) -> None:
    """
    ``optimizer.step()``: for torch's plain RMSprop (:func:`flat_rmsprop_eligible`) computed on flat tensors, the same
    parameters and optimizer state bit for bit; any other optimizer or setting runs its own ``step``.

    :param optimizer: the optimizer (its parameters hold their gradients)
    """
    groups = optimizer.param_groups
    states = [_group_states(optimizer, group) for group in groups] if _optimizer_eligible(optimizer) else [None]
    if any(group_states is None for group_states in states):
        optimizer.step()
        return
    buffers = _BUFFERS.get(optimizer)
    if (
        buffers is None
        or len(buffers) != len(groups)
        or not all(b.fits(g["params"]) for b, g in zip(buffers, groups, strict=True))
    ):
        buffers = _BUFFERS[optimizer] = [_FlatBuffers(group["params"]) for group in groups]
    for group, group_states, group_buffers in zip(groups, states, buffers, strict=True):
        _group_step(group, group_states, group_buffers)  # type: ignore[arg-type]


def clear_grads(optimizer: th.optim.Optimizer) -> None:
    """
    ``optimizer.zero_grad()`` (``set_to_none=True``, its default) without the profiler scope it opens at every call:
    every parameter's ``.grad`` is set to None. An optimizer class that overrides ``zero_grad``, or an instance
    whose ``zero_grad`` was patched, runs its own.

    :param optimizer: the optimizer
    """
    if type(optimizer).zero_grad is not th.optim.Optimizer.zero_grad or "zero_grad" in optimizer.__dict__:
        optimizer.zero_grad()
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                p.grad = None
