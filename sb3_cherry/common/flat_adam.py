"""
Adam steps on one flat tensor per parameter group: the same floats as ``torch.optim.Adam``, in a fraction of its
per-tensor work (issue 19).

Adam is element-wise: every entry of a parameter is updated from the same entries of its gradient and moment
estimates, with the same scalars (learning rate, betas, bias corrections of the step count). Laying a group's
parameters, gradients and moments out in one tensor each and running torch's single-tensor Adam on those computes
exactly the same operations on every entry, so the parameters and optimizer state are equal bit for bit to torch's
per-parameter loop (and to its ``foreach`` implementation, equal to the loop on CPU), while the ~10 kernels of a step
run once per group instead of once per parameter tensor. Each parameter starts at a 64-byte boundary, as its own
tensor does: CPU matrix kernels can round differently for a differently aligned operand, which would change the
forward and backward passes that run on the parameters inside the update (the zero padding stays zero under Adam).
On the small networks of on-policy RL the optimizer is a sizeable share of an update: PPORollback's ``train`` ran
1.04-1.18x faster (one CartPole round 1.42) on the CartPole, Hopper and BipedalWalker zoo entries, with the same parameters
(``python -m benchmarks.flat_adam_ab``, ``benchmarks/results/flat_adam_ab.md``).

:func:`flat_adam_steps` is used around one update (``n_epochs`` of minibatches). At the first step it points the
parameters' ``.data`` at views of one flat tensor per group and copies the moments into flat tensors; at the end of
the block it copies the values back into the parameters' and the optimizer state's own tensors and points the
parameters at them again. Outside the block nothing is different: the same tensor objects, at the same addresses
(saving, loading, device moves, the non-finite update snapshot and the async learner see plain tensors).

A step falls back to the optimizer's own ``step`` (after copying the values back) when the flat step would not be
exact: a parameter without a gradient in that step (torch's Adam skips it), optimizer step hooks, or settings the flat
step does not reproduce (see :func:`flat_adam_eligible`).
"""

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch as th
from torch.optim.adam import adam as adam_functional
from torch.optim.optimizer import _get_scalar_dtype, _global_optimizer_post_hooks, _global_optimizer_pre_hooks

#: byte alignment of each parameter in the flat tensor (torch's CPU allocator aligns to 64 bytes)
_ALIGNMENT = 64
#: the Adam state keys a flat step reproduces (``amsgrad`` adds ``max_exp_avg_sq``: not handled)
_STATE_KEYS = {"step", "exp_avg", "exp_avg_sq"}


def _hooked(optimizer: th.optim.Optimizer) -> bool:
    """Whether step (pre-/post-) hooks are registered on ``optimizer`` or globally."""
    return bool(
        _global_optimizer_pre_hooks
        or _global_optimizer_post_hooks
        or getattr(optimizer, "_optimizer_step_pre_hooks", None)
        or getattr(optimizer, "_optimizer_step_post_hooks", None)
    )


def flat_adam_eligible(optimizer: th.optim.Optimizer) -> bool:
    """
    Whether a flat step computes ``optimizer.step()`` exactly: torch's ``Adam`` itself (not a subclass, its ``step``
    not patched on the instance) without ``amsgrad``, ``maximize``, ``capturable``, ``differentiable`` or ``fused``,
    float learning rate and betas, no step hooks, dense contiguous CPU parameters of one dtype (float32 or float64)
    per group, each on a storage of its own, and a state that is either empty or the plain Adam state (``step``,
    ``exp_avg``, ``exp_avg_sq``) with one step count per group.

    :param optimizer: the optimizer
    :return: whether :func:`flat_adam_steps` may use flat steps
    """
    if type(optimizer) is not th.optim.Adam or "step" in optimizer.__dict__ or _hooked(optimizer):
        return False  # (a step patched on the instance, e.g. by a scheduler, must run)
    storages: set[int] = set()
    for group in optimizer.param_groups:
        flags = ("amsgrad", "maximize", "capturable", "differentiable", "fused")
        if any(group.get(flag) for flag in flags) or not isinstance(group["lr"], float):
            return False
        if not all(isinstance(beta, float) for beta in group["betas"]):
            return False
        params = group["params"]
        # float32 / float64 only: in half precision torch's own kernels round a tensor's tail differently from the
        # same entries inside a longer (flat) tensor
        if not params or len({p.dtype for p in params}) != 1 or params[0].dtype not in (th.float32, th.float64):
            return False
        if any(p.device.type != "cpu" or p.is_sparse or not p.is_contiguous() for p in params):
            return False
        # each parameter on its own storage: parameters sharing one (tied weights, views) are updated through it
        own = {p.untyped_storage().data_ptr() for p in params}
        if len(own) != len(params) or own & storages:
            return False
        storages |= own
        states = [optimizer.state.get(p) for p in params]
        if all(not s for s in states):
            continue
        if any(not s or set(s) != _STATE_KEYS for s in states):
            return False
        if len({float(s["step"]) for s in states}) != 1:  # type: ignore[index]
            return False
        for p, s in zip(params, states, strict=True):
            for key in ("exp_avg", "exp_avg_sq"):
                t = s[key]  # type: ignore[index]
                if t.shape != p.shape or t.dtype != p.dtype or t.device != p.device or not t.is_contiguous():
                    return False
    return True


def _grads_ready(params: list[th.nn.Parameter], dtype: th.dtype) -> bool:
    """Whether every parameter has a dense gradient of ``dtype``."""
    return all(p.grad is not None and not p.grad.is_sparse and p.grad.dtype == dtype for p in params)


class AlignedLayout:
    """
    Tensors laid out one after another in a flat tensor of their dtype, each starting at a 64-byte boundary (as the
    CPU allocator places a tensor of its own; the padding between them is zero).

    :param tensors: the tensors (one dtype), in layout order
    """

    def __init__(self, tensors: Sequence[th.Tensor]):
        self.shapes = [t.shape for t in tensors]
        self.dtype = tensors[0].dtype
        align = max(1, _ALIGNMENT // tensors[0].element_size())
        self.offsets, self.size = [], 0
        for t in tensors:
            self.offsets.append(self.size)
            self.size += -(-t.numel() // align) * align

    def zeros(self) -> th.Tensor:
        """:return: a flat tensor of zeros for this layout"""
        return th.zeros(self.size, dtype=self.dtype)

    def views(self, flat: th.Tensor) -> list[th.Tensor]:
        """
        :param flat: a flat tensor of this layout
        :return: each tensor's view into it, with the tensor's shape
        """
        return [flat[o : o + shape.numel()].view(shape) for o, shape in zip(self.offsets, self.shapes, strict=True)]


class _FlatGroup:
    """One parameter group's flat parameters, gradients and moments, and the tensors they came from."""

    def __init__(self, optimizer: th.optim.Optimizer, group: dict):
        self.group = group
        self.params: list[th.nn.Parameter] = list(group["params"])
        if not optimizer.state.get(self.params[0]):
            # Adam's _init_group for a new parameter (non-capturable, non-fused), created at the first step as torch does
            for p in self.params:
                optimizer.state[p] = {
                    "step": th.tensor(0.0, dtype=_get_scalar_dtype(), device="cpu"),
                    "exp_avg": th.zeros_like(p, memory_format=th.preserve_format),
                    "exp_avg_sq": th.zeros_like(p, memory_format=th.preserve_format),
                }
        self.states = [optimizer.state[p] for p in self.params]
        self.originals = [p.data for p in self.params]
        # Each parameter at a 64-byte aligned offset (the CPU allocator's alignment, which the originals have): CPU
        # matrix kernels may round differently for a differently aligned operand, so unaligned views would change
        # the forward and backward passes inside the update. The padding is zero and stays zero under Adam.
        layout = AlignedLayout(self.params)
        self.flat, self.grad, self.exp_avg, self.exp_avg_sq = (layout.zeros() for _ in range(4))
        self.views, self.grad_views = layout.views(self.flat), layout.views(self.grad)
        self.exp_avg_views, self.exp_avg_sq_views = layout.views(self.exp_avg), layout.views(self.exp_avg_sq)
        with th.no_grad():
            th._foreach_copy_(self.views, self.originals)
            th._foreach_copy_(self.exp_avg_views, [s["exp_avg"] for s in self.states])
            th._foreach_copy_(self.exp_avg_sq_views, [s["exp_avg_sq"] for s in self.states])
        self.step_count = self.states[0]["step"].clone()
        for p, view in zip(self.params, self.views, strict=True):
            p.data = view
        self.addresses = [v.data_ptr() for v in self.views]
        self.aligned = all(
            v % _ALIGNMENT == o.data_ptr() % _ALIGNMENT for v, o in zip(self.addresses, self.originals, strict=True)
        )

    def intact(self) -> bool:
        """
        Whether every parameter still points at its flat view (nothing replaced a ``.data`` in the block), aligned
        as its own tensor is.
        """
        return self.aligned and [p.data_ptr() for p in self.params] == self.addresses

    def ready(self) -> bool:
        """Whether every parameter has a dense gradient of the group's dtype (torch's Adam skips one without)."""
        return _grads_ready(self.params, self.flat.dtype)

    def step(self) -> None:
        """One Adam step on the flat tensors (after :meth:`ready`)."""
        group = self.group
        with th.no_grad():
            grads: list[th.Tensor] = [p.grad for p in self.params]  # type: ignore[misc]  # (ready(): none is None)
            th._foreach_copy_(self.grad_views, grads)  # (the padding stays zero)
            beta1, beta2 = group["betas"]
            adam_functional(
                [self.flat],
                [self.grad],
                [self.exp_avg],
                [self.exp_avg_sq],
                [],
                [self.step_count],
                foreach=False,
                capturable=False,
                differentiable=False,
                fused=None,
                grad_scale=None,
                found_inf=None,
                has_complex=False,
                decoupled_weight_decay=bool(group.get("decoupled_weight_decay", False)),
                amsgrad=False,
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
            )
        # as torch's in-place step does: autograd's check of tensors modified after being saved for backward
        th.autograd.graph.increment_version(self.params)

    def restore(self) -> None:
        """
        Copy the values back into the parameters' and the state's own tensors and point the parameters at them (a
        parameter whose ``.data`` was replaced in the block keeps the replacement).
        """
        with th.no_grad():
            for p, view, address, original in zip(self.params, self.views, self.addresses, self.originals, strict=True):
                if p.data_ptr() == address:
                    original.copy_(view)
                    p.data = original
            th._foreach_copy_([s["exp_avg"] for s in self.states], self.exp_avg_views)
            th._foreach_copy_([s["exp_avg_sq"] for s in self.states], self.exp_avg_sq_views)
            for state in self.states:
                state["step"].copy_(self.step_count)


@contextlib.contextmanager
def flat_adam_steps(optimizer: th.optim.Optimizer) -> Iterator[Callable[[], None]]:
    """
    Within the block, ``step()`` (the yielded function) is ``optimizer.step()`` computed on one flat tensor per
    parameter group when that is exact (:func:`flat_adam_eligible`), and ``optimizer.step()`` itself otherwise; the
    parameters and the optimizer state hold the results after the block (also when it raises).

    :param optimizer: the policy's optimizer
    :return: the step function to call in place of ``optimizer.step()``
    """
    groups: list[_FlatGroup] = []
    enabled = True

    def restore() -> None:
        for flat_group in groups:
            flat_group.restore()
        groups.clear()

    def step() -> None:
        nonlocal enabled
        if enabled and not groups:
            # eligible, and every parameter has a gradient (else torch's step skips some: no state is created here)
            if flat_adam_eligible(optimizer) and all(
                _grads_ready(group["params"], group["params"][0].dtype) for group in optimizer.param_groups
            ):
                groups.extend(_FlatGroup(optimizer, group) for group in optimizer.param_groups)
            else:
                enabled = False
        if enabled and not _hooked(optimizer) and all(g.intact() and g.ready() for g in groups):
            for flat_group in groups:
                flat_group.step()
            return
        # not exact as a flat step: this one and the rest of the block run torch's own step on the parameters' tensors
        restore()
        enabled = False
        optimizer.step()

    try:
        yield step
    finally:
        restore()
