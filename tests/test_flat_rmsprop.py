"""Flat RMSprop steps (sb3_cherry.common.flat_rmsprop) against torch's own RMSprop: the same floats, bit for bit."""

import copy

import numpy as np
import pytest
import torch as th
from torch import nn

from sb3_cherry import CherryA2C
from sb3_cherry.common import flat_rmsprop
from sb3_cherry.common.flat_rmsprop import clear_grads, flat_rmsprop_eligible, rmsprop_step


def _net(seed: int = 0) -> nn.Module:
    # odd sizes: tensors whose length is not a multiple of the vector width (the kernels' scalar tails)
    th.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 17), nn.Tanh(), nn.Linear(17, 3))
    net.register_parameter("log_std", nn.Parameter(th.zeros(3)))
    net.register_parameter("scalar", nn.Parameter(th.zeros(1)))
    return net


def _loss(net: nn.Module, step: int, use_log_std: bool = True) -> th.Tensor:
    gen = th.Generator().manual_seed(100 + step)
    dtype = net[0].weight.dtype
    x, y = th.randn(32, 5, generator=gen).to(dtype), th.randn(32, 3, generator=gen).to(dtype)
    out = net[2](net[1](net[0](x)))
    loss = ((out - y) ** 2).mean() + (net.scalar**2).sum() * 0.5
    return loss + (net.log_std.exp().sum() if use_log_std else 0.0)


def _step_both(ref, ref_opt, flat, flat_opt, ks, use_log_std=lambda k: True):
    """Steps ``ks``: torch's ``ref_opt.step`` on ``ref``, :func:`rmsprop_step` on ``flat``."""
    for k in ks:
        for net, opt, step in ((ref, ref_opt, ref_opt.step), (flat, flat_opt, lambda: rmsprop_step(flat_opt))):
            for group in opt.param_groups:
                group["lr"] *= 0.9  # SB3 sets the scheduled learning rate before each update
            opt.zero_grad()
            _loss(net, k, use_log_std=use_log_std(k)).backward()
            step()


def _count_flat_steps(monkeypatch) -> dict[str, int]:
    counts = {"flat": 0}
    original = flat_rmsprop._group_step

    def counting(*args):
        counts["flat"] += 1
        original(*args)

    monkeypatch.setattr(flat_rmsprop, "_group_step", counting)
    return counts


@pytest.mark.parametrize("foreach", [None, False, True])
@pytest.mark.parametrize("dtype", [th.float32, th.float64])
def test_flat_steps_equal_torch_rmsprop(monkeypatch, foreach, dtype, assert_same_optimizer_run):
    """Torch's RMSprop (per-parameter loop or foreach) vs flat steps: two groups with their own learning rate and
    alpha, SB3's A2C settings in one of them, the learning rates changed between steps."""
    counts = _count_flat_steps(monkeypatch)

    def make(net):
        head = [net[2].weight, net[2].bias]
        rest = [p for p in net.parameters() if all(p is not h for h in head)]
        groups = [{"params": rest}, {"params": head, "lr": 5e-3, "alpha": 0.9, "eps": 1e-8}]
        return th.optim.RMSprop(groups, lr=7e-4, alpha=0.99, eps=1e-5, foreach=foreach)

    ref, flat = _net().to(dtype), _net().to(dtype)
    ref_opt, flat_opt = make(ref), make(flat)
    assert flat_rmsprop_eligible(flat_opt) is False  # no gradients yet
    _step_both(ref, ref_opt, flat, flat_opt, range(30))
    assert counts["flat"] == 2 * 30
    assert_same_optimizer_run(ref, ref_opt, flat, flat_opt)
    # the parameters are still their own tensors (nothing re-pointed)
    assert all(p._base is None for p in flat.parameters())


def test_state_of_torchs_steps_and_of_a_loaded_checkpoint_is_continued(monkeypatch, assert_same_optimizer_run):
    counts = _count_flat_steps(monkeypatch)
    ref, flat = _net(), _net()
    ref_opt = th.optim.RMSprop(ref.parameters(), lr=1e-2, alpha=0.99, eps=1e-5)
    flat_opt = th.optim.RMSprop(flat.parameters(), lr=1e-2, alpha=0.99, eps=1e-5)
    for k in range(3):  # torch's steps on both sides, then the flat path continues flat_opt's state
        for net, opt in ((ref, ref_opt), (flat, flat_opt)):
            opt.zero_grad()
            _loss(net, k).backward()
            opt.step()
    _step_both(ref, ref_opt, flat, flat_opt, range(3, 6))
    assert_same_optimizer_run(ref, ref_opt, flat, flat_opt)
    # a state dict loaded into a fresh optimizer (as SB3's load does), including the flat buffers' reuse afterwards
    flat_opt2 = th.optim.RMSprop(flat.parameters(), lr=1.0)
    flat_opt2.load_state_dict(copy.deepcopy(flat_opt.state_dict()))
    _step_both(ref, ref_opt, flat, flat_opt2, range(6, 9))
    assert_same_optimizer_run(ref, ref_opt, flat, flat_opt2)
    assert counts["flat"] == 6


def test_a_parameter_without_gradient_takes_torchs_step(monkeypatch, assert_same_optimizer_run):
    """Torch's RMSprop skips a parameter without gradient (no state, its step count stays): so does rmsprop_step."""
    counts = _count_flat_steps(monkeypatch)
    ref, flat = _net(), _net()
    ref_opt, flat_opt = th.optim.RMSprop(ref.parameters(), lr=1e-2), th.optim.RMSprop(flat.parameters(), lr=1e-2)
    _step_both(ref, ref_opt, flat, flat_opt, range(4), use_log_std=lambda k: 1 <= k < 3)
    assert_same_optimizer_run(ref, ref_opt, flat, flat_opt)
    assert counts["flat"] == 2  # steps 1 and 2


@pytest.mark.parametrize(
    "case",
    ["momentum", "centered", "weight_decay", "maximize", "tensor_lr", "adam", "subclass", "step_hook", "patched_step"],
)
def test_ineligible_optimizers_take_their_own_step(monkeypatch, case, assert_same_optimizer_run):
    counts = _count_flat_steps(monkeypatch)

    class MyRMSprop(th.optim.RMSprop):
        pass

    def make(net):
        if case == "adam":
            return th.optim.Adam(net.parameters(), lr=1e-2)
        if case == "subclass":
            return MyRMSprop(net.parameters(), lr=1e-2)
        kwargs = {"momentum": 0.9 * (case == "momentum"), "centered": case == "centered"}
        kwargs.update(weight_decay=0.1 * (case == "weight_decay"), maximize=case == "maximize")
        return th.optim.RMSprop(net.parameters(), lr=th.tensor(1e-2) if case == "tensor_lr" else 1e-2, **kwargs)

    ref, flat = _net(), _net()
    ref_opt, flat_opt = make(ref), make(flat)
    calls = []
    if case == "step_hook":
        for opt in (ref_opt, flat_opt):
            opt.register_step_post_hook(lambda *args: calls.append(1))
    if case == "patched_step":
        own_step = flat_opt.step
        flat_opt.step = lambda: (calls.append(1), own_step())  # type: ignore[method-assign]
    if case == "tensor_lr":
        for k in range(3):
            for net, opt, step in ((ref, ref_opt, ref_opt.step), (flat, flat_opt, lambda: rmsprop_step(flat_opt))):
                opt.zero_grad()
                _loss(net, k).backward()
                step()
    else:
        _step_both(ref, ref_opt, flat, flat_opt, range(3))
    assert_same_optimizer_run(ref, ref_opt, flat, flat_opt)
    assert counts["flat"] == 0
    if case in ("step_hook", "patched_step"):
        assert len(calls) == (6 if case == "step_hook" else 3)


@pytest.mark.parametrize("case", ["float16", "foreign_state", "step_not_tensor"])
def test_other_ineligible_setups(case):
    net = _net()
    opt = th.optim.RMSprop(net.parameters(), lr=1e-2)
    _loss(net, 0).backward()
    opt.step()
    _loss(net, 1).backward()
    assert flat_rmsprop_eligible(opt)
    if case == "float16":
        net.half()
        for p in net.parameters():
            p.grad = th.zeros_like(p)
    elif case == "foreign_state":
        opt.state[net.scalar]["momentum_buffer"] = th.zeros(1)
    else:
        opt.state[net.scalar]["step"] = 1.0
    assert not flat_rmsprop_eligible(opt)


def test_clear_grads_is_zero_grad():
    net = _net()
    opt = th.optim.RMSprop(net.parameters(), lr=1e-2)
    _loss(net, 0, use_log_std=False).backward()
    assert net.log_std.grad is None and net[0].weight.grad is not None
    clear_grads(opt)
    assert all(p.grad is None for p in net.parameters())
    # an optimizer whose zero_grad is its own keeps it
    calls = []

    class Counting(th.optim.RMSprop):
        def zero_grad(self, set_to_none: bool = True) -> None:
            calls.append(set_to_none)
            super().zero_grad(set_to_none)

    clear_grads(Counting(net.parameters(), lr=1e-2))
    assert calls == [True]


def test_cherry_a2c_updates_use_flat_steps(monkeypatch):
    """CherryA2C's update takes the flat path (so the SB3 parity tests of test_ppo_rollback.py and
    test_space_matrix.py cover it), and an A2C with Adam takes Adam's own step."""
    counts = _count_flat_steps(monkeypatch)
    model = CherryA2C("MlpPolicy", "CartPole-v1", n_steps=8, seed=0, device="cpu")
    model.learn(64)
    assert counts["flat"] == 64 // 8
    adam = CherryA2C("MlpPolicy", "CartPole-v1", n_steps=8, seed=0, device="cpu", use_rms_prop=False).learn(64)
    assert counts["flat"] == 64 // 8
    assert np.isfinite(th.nn.utils.parameters_to_vector(adam.policy.parameters()).detach().numpy()).all()


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's warning about a parameter listed twice
@pytest.mark.parametrize("case", ["duplicate_parameter", "shared_square_avg", "integer_step"])
def test_setups_a_flat_step_would_merge_or_cast_take_torchs_step(monkeypatch, case):
    """From an independent review: a parameter listed twice (torch steps it twice in a row), two parameters sharing
    one square_avg tensor, and an integer step tensor are stepped by torch itself, with torch's results."""
    counts = _count_flat_steps(monkeypatch)
    results = []
    for flat in (False, True):
        th.manual_seed(0)
        a, b = th.nn.Parameter(th.randn(5)), th.nn.Parameter(th.randn(5))
        params = [a, b, a] if case == "duplicate_parameter" else [a, b]
        opt = th.optim.RMSprop(params, lr=1e-2, alpha=0.9, eps=1e-5)
        if case == "shared_square_avg":
            shared = th.zeros(5)
            for p in (a, b):
                opt.state[p].update(step=th.tensor(0.0), square_avg=shared)
        elif case == "integer_step":
            for p in (a, b):
                opt.state[p].update(step=th.tensor(0, dtype=th.int64), square_avg=th.zeros(5))
        for k in range(3):
            opt.zero_grad()
            ((a * (k + 1)).pow(2).sum() + (b * (k + 2)).pow(2).sum()).backward()
            if flat:
                assert not flat_rmsprop_eligible(opt)
                rmsprop_step(opt)
            else:
                opt.step()
        results.append([p.detach().clone() for p in (a, b)])
    assert all(th.equal(x, y) for x, y in zip(*results, strict=True))
    assert counts["flat"] == 0
