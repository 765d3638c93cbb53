"""Flat Adam steps (sb3_cherry.common.flat_adam) against torch's own Adam: the same floats, bit for bit."""

import copy

import pytest
import torch as th
from torch import nn

from sb3_cherry import PPORollback
from sb3_cherry.common import flat_adam
from sb3_cherry.common.flat_adam import flat_adam_eligible, flat_adam_steps


def _net(seed: int = 0) -> nn.Module:
    th.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
    net.register_parameter("log_std", nn.Parameter(th.zeros(3)))
    return net


def _loss(net: nn.Module, step: int, use_log_std: bool = True) -> th.Tensor:
    gen = th.Generator().manual_seed(100 + step)
    x, y = th.randn(32, 5, generator=gen), th.randn(32, 3, generator=gen)
    out = net[2](net[1](net[0](x)))
    loss = ((out - y) ** 2).mean()
    return loss + (net.log_std.exp().sum() if use_log_std else 0.0)


def _pair(make_optimizer, warm_steps: int = 0):
    """Two copies of a net and their optimizers, after ``warm_steps`` plain steps (equal)."""
    ref, flat = _net(), _net()
    ref_opt, flat_opt = make_optimizer(ref), make_optimizer(flat)
    for step in range(warm_steps):
        for net, opt in ((ref, ref_opt), (flat, flat_opt)):
            opt.zero_grad()
            _loss(net, step).backward()
            opt.step()
    return ref, ref_opt, flat, flat_opt


def _step_both(ref, ref_opt, flat, flat_opt, step, ks, use_log_std=lambda k: True, after_flat_step=None):
    """Steps ``ks`` on both sides: torch's ``ref_opt.step`` on ``ref``, the block's ``step`` on ``flat``."""
    for k in ks:
        for net, opt, do_step in ((ref, ref_opt, ref_opt.step), (flat, flat_opt, step)):
            opt.zero_grad()
            _loss(net, k, use_log_std=use_log_std(k)).backward()
            do_step()
        if after_flat_step is not None:
            after_flat_step()


@pytest.mark.parametrize("warm_steps", [0, 2])
@pytest.mark.parametrize(
    "kwargs",
    [dict(lr=1e-2), dict(lr=3e-3, eps=1e-5, weight_decay=0.01), dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)],
)
def test_flat_steps_equal_torch_adam(warm_steps, kwargs, assert_same_optimizer_run):
    """Torch's per-parameter Adam vs flat steps, two groups with their own learning rate, changed between steps."""

    def make(net):
        head = [net[2].weight, net[2].bias]
        rest = [p for p in net.parameters() if all(p is not h for h in head)]
        return th.optim.Adam([{"params": rest}, {"params": head, "lr": 5e-3}], **kwargs)

    ref, ref_opt, flat, flat_opt = _pair(make, warm_steps)
    addresses = [p.data_ptr() for p in flat.parameters()]
    states = [dict(s) for s in flat_opt.state.values()]
    with flat_adam_steps(flat_opt) as step:
        for k in range(warm_steps, warm_steps + 5):
            for net, opt, do_step in ((ref, ref_opt, ref_opt.step), (flat, flat_opt, step)):
                for group in opt.param_groups:
                    group["lr"] *= 0.9  # SB3 sets the scheduled learning rate before each update
                opt.zero_grad()
                _loss(net, k).backward()
                do_step()
            # inside the block the parameters (views of the flat tensor) hold the new values already
            for a, b in zip(ref.parameters(), flat.parameters(), strict=True):
                assert th.equal(a, b)
        assert [p.data_ptr() for p in flat.parameters()] != addresses  # the flat path ran
    assert_same_optimizer_run(ref, ref_opt, flat, flat_opt)
    # after the block: the same tensor objects as before, at the same addresses
    assert [p.data_ptr() for p in flat.parameters()] == addresses
    for before, after in zip(states, flat_opt.state.values(), strict=False):
        assert all(before[key] is after[key] for key in before)


def test_a_parameter_without_gradient_takes_torchs_step(assert_same_optimizer_run):
    """Torch's Adam skips a parameter without gradient (no state created, its step count stays): so does the block."""
    ref, ref_opt, flat, flat_opt = _pair(lambda net: th.optim.Adam(net.parameters(), lr=1e-2))
    with flat_adam_steps(flat_opt) as step:
        # log_std has no gradient in the first two steps
        _step_both(ref, ref_opt, flat, flat_opt, step, range(4), use_log_std=lambda k: k >= 2)
    assert_same_optimizer_run(ref, ref_opt, flat, flat_opt)
    # the same after flat steps, with a gradient missing later on
    ref, ref_opt, flat, flat_opt = _pair(lambda net: th.optim.Adam(net.parameters(), lr=1e-2))
    with flat_adam_steps(flat_opt) as step:
        _step_both(ref, ref_opt, flat, flat_opt, step, range(4), use_log_std=lambda k: k < 2)
    assert_same_optimizer_run(ref, ref_opt, flat, flat_opt)


def test_an_error_in_the_block_leaves_the_stepped_values(assert_same_optimizer_run):
    ref, ref_opt, flat, flat_opt = _pair(lambda net: th.optim.Adam(net.parameters(), lr=1e-2), warm_steps=1)
    addresses = [p.data_ptr() for p in flat.parameters()]
    with pytest.raises(RuntimeError, match="in the middle"):
        with flat_adam_steps(flat_opt) as step:
            _step_both(ref, ref_opt, flat, flat_opt, step, range(3))
            raise RuntimeError("an error in the middle of an update")
    assert_same_optimizer_run(ref, ref_opt, flat, flat_opt)
    assert [p.data_ptr() for p in flat.parameters()] == addresses


@pytest.mark.parametrize(
    "case",
    ["amsgrad", "maximize", "adamw_class", "step_hook", "tensor_lr", "rmsprop"],
)
def test_ineligible_optimizers_take_their_own_step(case, assert_same_optimizer_run):
    def make(net):
        if case == "adamw_class":
            return th.optim.AdamW(net.parameters(), lr=1e-2)
        if case == "rmsprop":
            return th.optim.RMSprop(net.parameters(), lr=1e-2)
        kwargs = {"amsgrad": case == "amsgrad", "maximize": case == "maximize"}
        lr = th.tensor(1e-2) if case == "tensor_lr" else 1e-2
        return th.optim.Adam(net.parameters(), lr=lr, **kwargs)

    ref, ref_opt, flat, flat_opt = _pair(make, warm_steps=1)
    if case == "step_hook":
        calls = []
        for opt in (ref_opt, flat_opt):
            opt.register_step_post_hook(lambda *args, calls=calls: calls.append(1))
    assert not flat_adam_eligible(flat_opt)
    addresses = [p.data_ptr() for p in flat.parameters()]
    with flat_adam_steps(flat_opt) as step:

        def never_flattened():
            assert [p.data_ptr() for p in flat.parameters()] == addresses

        _step_both(ref, ref_opt, flat, flat_opt, step, range(3), after_flat_step=never_flattened)
    assert_same_optimizer_run(ref, ref_opt, flat, flat_opt)
    if case == "step_hook":
        assert len(calls) == 2 * 3  # the hooks (registered after the warm-up step) ran at every step, on both sides


def test_state_from_a_loaded_checkpoint_is_used(assert_same_optimizer_run):
    """Optimizer state loaded from a state dict (as SB3's load does) is stepped like torch's."""
    ref, ref_opt, flat, flat_opt = _pair(lambda net: th.optim.Adam(net.parameters(), lr=1e-2), warm_steps=3)
    flat_opt.load_state_dict(copy.deepcopy(ref_opt.state_dict()))
    with flat_adam_steps(flat_opt) as step:
        _step_both(ref, ref_opt, flat, flat_opt, step, range(3, 6))
    assert_same_optimizer_run(ref, ref_opt, flat, flat_opt)


def test_ppo_rollback_updates_use_flat_steps(monkeypatch):
    """PPORollback's update takes the flat path (so the SB3 parity tests of test_ppo_rollback.py cover it)."""
    counts = {"flat": 0}
    original = flat_adam._FlatGroup.step

    def counting(self):
        counts["flat"] += 1
        original(self)

    monkeypatch.setattr(flat_adam._FlatGroup, "step", counting)
    model = PPORollback("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu")
    model.learn(128)
    assert counts["flat"] == 2 * 2 * 2  # 2 updates of 2 epochs of 2 minibatches


def test_parameters_keep_their_alignment_and_version_counter_inside_the_block():
    net = _net()
    opt = th.optim.Adam(net.parameters(), lr=1e-2)
    saved = {}
    with flat_adam_steps(opt) as step:
        for k in range(2):
            opt.zero_grad()
            _loss(net, k).backward()
            step()
            for p in net.parameters():
                assert p.data_ptr() % 64 == 0  # as the allocator's own tensors (CPU kernels may depend on it)
            if k == 0:
                saved["versions"] = [p._version for p in net.parameters()]
                saved["out"] = net[0](th.ones(1, 5, requires_grad=True)).sum()  # saves weight 0 for the input's gradient
        assert [p._version for p in net.parameters()] > saved["versions"]  # bumped by the step, as torch's in-place step
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            saved["out"].backward()  # its saved weight was updated since: autograd refuses, as with torch's Adam


@pytest.mark.parametrize("case", ["tied_parameters", "patched_step", "tensor_betas", "float16", "bfloat16"])
def test_other_ineligible_setups(case):
    net = _net()
    if case in ("float16", "bfloat16"):  # half precision: torch rounds a tensor's tail differently in a longer tensor
        net = net.to(getattr(th, case))
    params = list(net.parameters())
    if case == "tied_parameters":
        shared = nn.Parameter(net[2].weight.data[:1].view(1, 16))  # a view of another parameter's storage
        opt = th.optim.Adam([*params, shared], lr=1e-2)
    elif case == "patched_step":
        opt = th.optim.Adam(params, lr=1e-2)
        step = opt.step
        opt.step = lambda *args, **kwargs: step(*args, **kwargs)  # e.g. an LR scheduler's wrapper
    elif case == "tensor_betas":
        opt = th.optim.Adam(params, lr=1e-2, betas=(th.tensor(0.9), th.tensor(0.999)))
    else:
        opt = th.optim.Adam(params, lr=1e-2)
    assert not flat_adam_eligible(opt)
