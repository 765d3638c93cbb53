"""Shared test helpers: references that several test files check the library against."""

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback


class RawStepRecorder(BaseCallback):
    """
    Records each collected step's rewards, dones and infos as ``collect_rollouts`` hands them to the callback, i.e.
    before SB3 / sb3-contrib add ``gamma * V(terminal observation)`` to the rewards of time-limit truncations in place.
    """

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[np.ndarray, np.ndarray, list[dict]]] = []

    def _on_step(self) -> bool:
        infos = self.locals["infos"]
        self.steps.append((self.locals["rewards"].copy(), self.locals["dones"].copy(), [dict(i) for i in infos]))
        return True


def _gae_by_hand(
    rewards: np.ndarray, values: np.ndarray, last_values: np.ndarray, dones: np.ndarray, gamma: float, lam: float
) -> np.ndarray:
    """GAE advantages written out, one env and one step at a time; arrays ``(n_steps, n_envs)``, ``dones[t]``: the
    episode ended after step t."""
    n_steps, n_envs = rewards.shape
    adv = np.zeros((n_steps, n_envs))
    for e in range(n_envs):
        next_adv = 0.0
        for t in reversed(range(n_steps)):
            next_v = 0.0 if dones[t, e] else (last_values[e] if t == n_steps - 1 else values[t + 1, e])
            delta = rewards[t, e] + gamma * next_v - values[t, e]
            next_adv = delta + (0.0 if dones[t, e] else gamma * lam * next_adv)
            adv[t, e] = next_adv
    return adv


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (tiny networks: extra threads only add contention on a shared machine)."""
    import torch as th

    n_threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(n_threads)


@pytest.fixture
def raw_step_recorder() -> RawStepRecorder:
    """A fresh :class:`RawStepRecorder` callback."""
    return RawStepRecorder()


@pytest.fixture
def gae_by_hand() -> Callable[..., np.ndarray]:
    """The hand-written GAE reference (:func:`_gae_by_hand`)."""
    return _gae_by_hand


@pytest.fixture
def umask_read_only(monkeypatch):
    """
    The umask set to 0o027 and ``os.umask`` made to fail for the test's duration: a save must read the umask without
    setting it (``os.umask`` reads it only by setting another, and a file another thread creates meanwhile gets that
    mode). Skipped where ``/proc/self/status`` does not show the umask (outside Linux).
    """
    import os
    import pathlib

    status = pathlib.Path("/proc/self/status")
    if not status.exists() or "Umask:" not in status.read_text():
        pytest.skip("the umask is read without changing it only where /proc/self/status shows it (Linux)")
    real_umask = os.umask
    previous = real_umask(0o027)

    def umask(mask):
        raise AssertionError(f"os.umask({mask:#o}) called during a save")

    monkeypatch.setattr(os, "umask", umask)
    yield
    monkeypatch.undo()
    real_umask(previous)


def _assert_same_optimizer_run(ref: Any, ref_opt: Any, other: Any, other_opt: Any) -> None:
    """Two networks and their optimizers hold equal parameters and optimizer state, bit for bit (same keys, dtypes
    and shapes)."""
    import torch as th

    for a, b in zip(ref.parameters(), other.parameters(), strict=True):
        assert th.equal(a, b)
    ref_state, other_state = ref_opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert ref_state.keys() == other_state.keys()
    for key in ref_state:
        assert ref_state[key].keys() == other_state[key].keys()
        for name, value in ref_state[key].items():
            got = other_state[key][name]
            assert th.equal(value, got), (key, name)
            assert value.dtype == got.dtype and value.shape == got.shape, (key, name)


@pytest.fixture
def assert_same_optimizer_run() -> Callable[[Any, Any, Any, Any], None]:
    """The check that a flat optimizer step (``flat_adam``, ``flat_rmsprop``) left the network and optimizer exactly as
    torch's own step left the reference: ``assert_same_optimizer_run(ref, ref_opt, other, other_opt)``."""
    return _assert_same_optimizer_run
