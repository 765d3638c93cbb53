"""
Adam steps on one flat tensor per parameter group: the same floats as ``torch.optim.Adam``, in a fraction of its
per-tensor work (issue 19).

Adam is element-wise: every entry of a parameter is updated from the same entries of its gradient and moment
estimates, with the same scalars (learning rate, betas, bias corrections of the step count). Concatenating a group's
parameters, gradients and moments into one tensor each and running torch's single-tensor Adam on those computes
exactly the same operations on every entry, so the parameters and optimizer state are equal bit for bit to torch's
per-parameter loop (and to its ``foreach`` implementation, equal to the loop on CPU), while the ~10 kernels of a step
run once per group instead of once per parameter tensor. On the small networks of on-policy RL that is a sizeable
share of an update: PPORollback's ``train`` ran 1.04-1.18x faster on the CartPole, Hopper and BipedalWalker zoo
entries, with the same parameters (``python -m benchmarks.flat_adam_ab``, ``benchmarks/results/flat_adam_ab.md``).

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
from collections.abc import Callable, Iterator

import torch as th
from torch.optim.adam import adam as adam_functional
from torch.optim.optimizer import _get_scalar_dtype, _global_optimizer_post_hooks, _global_optimizer_pre_hooks

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
    Whether a flat step computes ``optimizer.step()`` exactly: torch's ``Adam`` itself (not a subclass) without
    ``amsgrad``, ``maximize``, ``capturable``, ``differentiable`` or ``fused``, a float learning rate, no step hooks,
    dense contiguous CPU parameters of one floating dtype per group, each parameter once, and a state that is
    either empty or the plain Adam state (``step``, ``exp_avg``, ``exp_avg_sq``) with one step count per group.

    :param optimizer: the optimizer
    :return: whether :func:`flat_adam_steps` may use flat steps
    """
    if type(optimizer) is not th.optim.Adam or _hooked(optimizer):
        return False
    seen: set[int] = set()
    for group in optimizer.param_groups:
        flags = ("amsgrad", "maximize", "capturable", "differentiable", "fused")
        if any(group.get(flag) for flag in flags) or not isinstance(group["lr"], float):
            return False
        params = group["params"]
        if not params or len({p.dtype for p in params}) != 1 or not params[0].is_floating_point():
            return False
        if any(p.device.type != "cpu" or p.is_sparse or not p.is_contiguous() or id(p) in seen for p in params):
            return False
        seen.update(id(p) for p in params)
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


class _FlatGroup:
    """One parameter group's flat parameters, gradients and moments, and the tensors they came from."""

    def __init__(self, optimizer: th.optim.Optimizer, group: dict):
        self.group = group
        self.params: list[th.nn.Parameter] = list(group["params"])
        if not optimizer.state.get(self.params[0]):
            # Adam's _init_group for a new parameter (non-capturable, non-fused), created at the first step as torch does
            for p in self.params:
                optimizer.state[p] = {
                    "step": th.tensor(0.0, dtype=_get_scalar_dtype()),
                    "exp_avg": th.zeros_like(p, memory_format=th.preserve_format),
                    "exp_avg_sq": th.zeros_like(p, memory_format=th.preserve_format),
                }
        self.states = [optimizer.state[p] for p in self.params]
        self.originals = [p.data for p in self.params]
        with th.no_grad():
            self.flat = th.cat([p.data.reshape(-1) for p in self.params])
            self.exp_avg = th.cat([s["exp_avg"].reshape(-1) for s in self.states])
            self.exp_avg_sq = th.cat([s["exp_avg_sq"].reshape(-1) for s in self.states])
        self.step_count = self.states[0]["step"].clone()
        self.grad = th.empty_like(self.flat)
        self.views: list[th.Tensor] = []
        offset = 0
        for p in self.params:
            view = self.flat[offset : offset + p.numel()].view_as(p)
            self.views.append(view)
            p.data = view
            offset += p.numel()
        self.addresses = [v.data_ptr() for v in self.views]

    def intact(self) -> bool:
        """Whether every parameter still points at its flat view (nothing replaced a ``.data`` in the block)."""
        return [p.data_ptr() for p in self.params] == self.addresses

    def ready(self) -> bool:
        """Whether every parameter has a dense gradient of the group's dtype (torch's Adam skips one without)."""
        return _grads_ready(self.params, self.flat.dtype)

    def step(self) -> None:
        """One Adam step on the flat tensors (after :meth:`ready`)."""
        group = self.group
        with th.no_grad():
            th.cat([p.grad.reshape(-1) for p in self.params], out=self.grad)  # type: ignore[union-attr]
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

    def restore(self) -> None:
        """
        Copy the values back into the parameters' and the state's own tensors and point the parameters at them (a
        parameter whose ``.data`` was replaced in the block keeps the replacement).
        """
        with th.no_grad():
            offset = 0
            for p, view, address, original, state in zip(
                self.params, self.views, self.addresses, self.originals, self.states, strict=True
            ):
                n = p.numel()
                if p.data_ptr() == address:
                    original.copy_(view)
                    p.data = original
                state["exp_avg"].copy_(self.exp_avg[offset : offset + n].view_as(original))
                state["exp_avg_sq"].copy_(self.exp_avg_sq[offset : offset + n].view_as(original))
                state["step"].copy_(self.step_count)
                offset += n


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
