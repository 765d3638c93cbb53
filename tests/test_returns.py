"""
Tests of ``sb3_cherry.common.returns`` against naive references.

The references below are written independently of the module: plain python loops over envs and steps, on
python floats, using the *sum* forms of the papers' equations (not the backward recursions the module uses),
and handling time-limit truncation explicitly (bootstrap on V(terminal observation)) instead of folding it
into the rewards.
"""

import copy
import math
import warnings
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer

from sb3_cherry.common.buffers import CherryRolloutBuffer
from sb3_cherry.common.returns import bootstrap_truncated, gae, n_step, one_step, vtrace

N_STEPS, N_ENVS = 12, 5


@dataclass
class Rollout:
    """Random rollout data, float64, shapes ``(n_steps, n_envs)`` except ``last_values`` ``(n_envs,)``."""

    rewards: np.ndarray
    values: np.ndarray
    last_values: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    terminal_values: np.ndarray  # V(terminal observation) where truncated, NaN elsewhere
    log_ratios: np.ndarray

    @property
    def dones(self) -> np.ndarray:
        return self.terminated | self.truncated

    def folded_rewards(self, gamma: float) -> np.ndarray:
        return bootstrap_truncated(self.rewards, self.truncated, self.terminal_values, gamma)


def make_rollout(seed: int, with_truncation: bool = True, n_steps: int = N_STEPS, n_envs: int = N_ENVS) -> Rollout:
    rng = np.random.default_rng(seed)
    shape = (n_steps, n_envs)
    ends = rng.random(shape) < 0.25
    truncated = ends & (rng.random(shape) < 0.5)
    # env 0: an episode ends in the middle, the last one is cut by the end of the rollout (bootstrap on last_values)
    ends[:, 0] = False
    ends[n_steps // 2, 0] = True
    # env 1: terminated in the middle and after the last step
    ends[3, 1] = ends[-1, 1] = True
    truncated[3, 1] = truncated[-1, 1] = False
    # env 2: truncated in the middle and after the last step
    ends[4, 2] = ends[-1, 2] = True
    truncated[4, 2] = truncated[-1, 2] = True
    # env 3: a single episode, no end at all
    ends[:, 3] = False
    truncated &= ends
    if not with_truncation:
        truncated[:] = False
    return Rollout(
        rewards=rng.normal(size=shape),
        values=rng.normal(size=shape),
        last_values=rng.normal(size=n_envs),
        terminated=ends & ~truncated,
        truncated=truncated,
        terminal_values=np.where(truncated, rng.normal(size=shape), np.nan),
        log_ratios=rng.normal(scale=0.8, size=shape),
    )


# ----------------------------------------------------------------------------------------------------------------------
# Naive references: one env, one step at a time, python floats, explicit truncation bootstrap.
# ----------------------------------------------------------------------------------------------------------------------


def naive_next(data: Rollout, t: int, e: int, bootstrap_after: list[float] | None = None) -> tuple[float, bool]:
    """
    What the target of step ``t`` bootstraps on after it, and whether the episode ended after step ``t``.

    :param bootstrap_after: value of the state after each step when the episode goes on (default: V(s_{t+1}))
    """
    if data.terminated[t, e]:
        return 0.0, True
    if data.truncated[t, e]:
        return float(data.terminal_values[t, e]), True
    if bootstrap_after is not None:
        return bootstrap_after[t], False
    if t == len(data.rewards) - 1:
        return float(data.last_values[e]), False
    return float(data.values[t + 1, e]), False


def naive_one_step(data: Rollout, gamma: float) -> np.ndarray:
    returns = np.zeros(data.rewards.shape)
    for e in range(data.rewards.shape[1]):
        for t in range(data.rewards.shape[0]):
            next_value, _ = naive_next(data, t, e)
            returns[t, e] = float(data.rewards[t, e]) + gamma * next_value
    return returns


def naive_n_step(data: Rollout, gamma: float, n: int) -> np.ndarray:
    """G_t = sum_{k<m} gamma^k r_{t+k} + gamma^m V(s_{t+m}), cut at the end of the episode."""
    n_steps, n_envs = data.rewards.shape
    returns = np.zeros((n_steps, n_envs))
    for e in range(n_envs):
        for t in range(n_steps):
            total = 0.0
            m = min(n, n_steps - t)
            for k in range(m):
                total += gamma**k * float(data.rewards[t + k, e])
                next_value, ended = naive_next(data, t + k, e)
                if ended or k == m - 1:
                    total += gamma ** (k + 1) * next_value
                    break
            returns[t, e] = total
    return returns


def naive_gae_advantages(data: Rollout, gamma: float, gae_lambda: float) -> np.ndarray:
    """A_t = sum_l (gamma lambda)^l delta_{t+l} (Schulman et al. 2016, eq. 16), up to the end of the episode."""
    n_steps, n_envs = data.rewards.shape
    advantages = np.zeros((n_steps, n_envs))
    for e in range(n_envs):
        for t in range(n_steps):
            total = 0.0
            for l in range(n_steps - t):  # noqa: E741
                next_value, ended = naive_next(data, t + l, e)
                delta = float(data.rewards[t + l, e]) + gamma * next_value - float(data.values[t + l, e])
                total += (gamma * gae_lambda) ** l * delta
                if ended:
                    break
            advantages[t, e] = total
    return advantages


def naive_vtrace(
    data: Rollout,
    gamma: float,
    gae_lambda: float = 1.0,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
    truncate=min,
    log_ratios: np.ndarray | None = None,
    rho_in_advantages: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """
    IMPALA eq. 1 in its sum form:
    v_s = V(x_s) + sum_{t>=s} gamma^{t-s} (prod_{i=s}^{t-1} c_i) rho_t (r_t + gamma V(x_{t+1}) - V(x_t)),
    up to the end of the episode or of the rollout; advantage rho_s (r_s + gamma v_{s+1} - V(x_s))
    (without rho_s if not ``rho_in_advantages``).

    :param truncate: ``min`` as in the paper; ``max`` reproduces the clamp-from-below bug
    """
    log_ratios = data.log_ratios if log_ratios is None else log_ratios
    n_steps, n_envs = data.rewards.shape
    vs = np.zeros((n_steps, n_envs))
    advantages = np.zeros((n_steps, n_envs))
    for e in range(n_envs):
        ratios = [math.exp(float(x)) for x in log_ratios[:, e]]
        rhos = [truncate(rho_bar, ratio) for ratio in ratios]
        cs = [gae_lambda * truncate(c_bar, ratio) for ratio in ratios]
        for s in range(n_steps):
            total = float(data.values[s, e])
            trace = 1.0  # prod_{i=s}^{t-1} c_i
            for t in range(s, n_steps):
                next_value, ended = naive_next(data, t, e)
                delta = rhos[t] * (float(data.rewards[t, e]) + gamma * next_value - float(data.values[t, e]))
                total += gamma ** (t - s) * trace * delta
                if ended:
                    break
                trace *= cs[t]
            vs[s, e] = total
        v_after = [float(vs[t + 1, e]) for t in range(n_steps - 1)] + [float(data.last_values[e])]
        for s in range(n_steps):
            next_v, _ = naive_next(data, s, e, bootstrap_after=v_after)
            rho = rhos[s] if rho_in_advantages else 1.0
            advantages[s, e] = rho * (float(data.rewards[s, e]) + gamma * next_v - float(data.values[s, e]))
    return vs, advantages


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------

GAMMA = 0.97


def run_estimator(name: str, data: Rollout, gamma: float, convert=lambda x: x, **kwargs):
    """Run the module's estimator ``name`` on the rollout, truncation folded into the rewards."""
    args = [convert(x) for x in (data.folded_rewards(gamma), data.values, data.last_values, data.dones)]
    if name == "gae":
        return gae(*args, gamma=gamma, **kwargs)
    if name == "one_step":
        return one_step(*args, gamma=gamma)
    if name == "n_step":
        return n_step(*args, gamma=gamma, **kwargs)
    assert name == "vtrace"
    return vtrace(*args, convert(data.log_ratios), gamma=gamma, **kwargs)


def naive_estimator(name: str, data: Rollout, gamma: float, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    if name == "gae":
        advantages = naive_gae_advantages(data, gamma, kwargs["gae_lambda"])
        return advantages + data.values, advantages
    if name == "one_step":
        returns = naive_one_step(data, gamma)
        return returns, returns - data.values
    if name == "n_step":
        returns = naive_n_step(data, gamma, kwargs["n"])
        return returns, returns - data.values
    return naive_vtrace(data, gamma, **kwargs)


CASES = [
    ("gae", {"gae_lambda": 0.95}),
    ("gae", {"gae_lambda": 0.0}),
    ("gae", {"gae_lambda": 1.0}),
    ("one_step", {}),
    ("n_step", {"n": 1}),
    ("n_step", {"n": 3}),
    ("n_step", {"n": 5}),
    ("n_step", {"n": 100}),
    ("vtrace", {}),
    ("vtrace", {"gae_lambda": 0.9, "rho_bar": 1.5, "c_bar": 0.8}),
    ("vtrace", {"gae_lambda": 0.7, "rho_bar": 0.6, "c_bar": 1.3}),
]
CASE_IDS = [name + "-" + "-".join(f"{k}={v}" for k, v in kwargs.items()) for name, kwargs in CASES]


# ----------------------------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------------------------


def _sb3_and_cherry_buffers(n_steps: int, n_envs: int, gamma: float, gae_lambda: float) -> list[RolloutBuffer]:
    """SB3's ``RolloutBuffer`` and sb3_cherry's ``CherryRolloutBuffer`` with the same settings (2-d observations)."""
    return [
        cls(
            n_steps,
            spaces.Box(-1, 1, (2,)),
            spaces.Box(-1, 1, (1,)),
            device="cpu",
            gae_lambda=gae_lambda,
            gamma=gamma,
            n_envs=n_envs,
        )
        for cls in (RolloutBuffer, CherryRolloutBuffer)
    ]


@pytest.mark.parametrize("gamma, gae_lambda", [(0.99, 0.95), (0.937, 0.81), (0.5, 1.0), (0.99, 0.0), (1.0, 1.0)])
@pytest.mark.parametrize("n_envs", [1, 4])
def test_gae_bit_identical_to_sb3_rollout_buffer(gamma, gae_lambda, n_envs):
    rng = np.random.default_rng(0)
    n_steps = 16
    # SB3's buffer, and sb3_cherry's (its GAE on its own float32 arrays skips the conversions: gae_prepared)
    buffer, cherry = _sb3_and_cherry_buffers(n_steps, n_envs, gamma, gae_lambda)
    # as SB3's collect_rollouts: episode_starts[t] = dones[t - 1], rewards from the VecEnv are float32
    dones = rng.random((n_steps, n_envs)) < 0.2
    dones[-1, 0] = True
    episode_start = np.ones(n_envs, dtype=bool)
    for t in range(n_steps):
        step = (
            np.zeros((n_envs, 2), dtype=np.float32),
            np.zeros((n_envs, 1), dtype=np.float32),
            (rng.normal(size=n_envs) * 10).astype(np.float32),
            episode_start,
            th.as_tensor(rng.normal(size=(n_envs, 1)) * 10, dtype=th.float32),
            th.zeros(n_envs),
        )
        buffer.add(*step)
        cherry.add(*step)
        episode_start = dones[t]
    last_values = th.as_tensor(rng.normal(size=(n_envs, 1)), dtype=th.float32)
    rewards, values = buffer.rewards.copy(), buffer.values.copy()
    buffer.compute_returns_and_advantage(last_values=last_values, dones=dones[-1])
    cherry.compute_returns_and_advantage(last_values=last_values, dones=dones[-1])

    returns, advantages = gae(rewards, values, last_values.numpy().flatten(), dones, gamma, gae_lambda)
    assert returns.dtype == advantages.dtype == np.float32
    assert np.array_equal(advantages, buffer.advantages)
    assert np.array_equal(returns, buffer.returns)
    assert cherry.advantages.dtype == cherry.returns.dtype == np.float32
    assert np.array_equal(cherry.advantages, buffer.advantages) and np.array_equal(cherry.returns, buffer.returns)


@pytest.mark.parametrize("gamma, gae_lambda", [(np.float64(0.99), np.float64(0.95)), (np.float32(0.9), 0.8)])
def test_cherry_buffer_gae_equals_sb3_buffer_with_numpy_scalar_coefficients(gamma, gae_lambda):
    """NumPy scalar gamma / lambda (a float64 one makes SB3's buffer compute in float64): sb3_cherry's buffer stores
    SB3's advantages and returns bit for bit (from an independent review: it used to cast them to Python floats)."""
    rng = np.random.default_rng(1)
    n_steps, n_envs = 12, 3
    buffers = _sb3_and_cherry_buffers(n_steps, n_envs, gamma, gae_lambda)
    for _ in range(n_steps):
        step = (
            np.zeros((n_envs, 2), np.float32),
            np.zeros((n_envs, 1), np.float32),
            (rng.normal(size=n_envs) * 10).astype(np.float32),
            rng.random(n_envs) < 0.2,
            th.as_tensor(rng.normal(size=(n_envs, 1)) * 10, dtype=th.float32),
            th.zeros(n_envs),
        )
        for buffer in buffers:
            buffer.add(*step)
    last_values, dones = th.as_tensor(rng.normal(size=(n_envs, 1)), dtype=th.float32), rng.random(n_envs) < 0.3
    for buffer in buffers:
        buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)
    assert np.array_equal(buffers[0].advantages, buffers[1].advantages)
    assert np.array_equal(buffers[0].returns, buffers[1].returns)


@pytest.mark.parametrize("with_truncation", [False, True])
@pytest.mark.parametrize("name, kwargs", CASES, ids=CASE_IDS)
def test_matches_naive_reference(name, kwargs, with_truncation):
    for seed in range(3):
        data = make_rollout(seed, with_truncation=with_truncation)
        returns, advantages = run_estimator(name, data, GAMMA, **kwargs)
        expected_returns, expected_advantages = naive_estimator(name, data, GAMMA, **kwargs)
        assert isinstance(returns, np.ndarray) and returns.dtype == np.float64
        np.testing.assert_allclose(returns, expected_returns, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(advantages, expected_advantages, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, kwargs", CASES, ids=CASE_IDS)
def test_numpy_and_torch_agree_and_keep_dtype(name, kwargs, dtype):
    data = make_rollout(1)
    torch_dtype = {np.float32: th.float32, np.float64: th.float64}[dtype]

    def as_numpy(x):
        return x.astype(dtype) if x.dtype.kind == "f" else x

    def as_torch(x):
        return th.as_tensor(as_numpy(x))

    np_returns, np_advantages = run_estimator(name, data, GAMMA, convert=as_numpy, **kwargs)
    th_returns, th_advantages = run_estimator(name, data, GAMMA, convert=as_torch, **kwargs)
    assert isinstance(np_returns, np.ndarray) and isinstance(np_advantages, np.ndarray)
    assert np_returns.dtype == np_advantages.dtype == dtype
    assert isinstance(th_returns, th.Tensor) and isinstance(th_advantages, th.Tensor)
    assert th_returns.dtype == th_advantages.dtype == torch_dtype
    assert np_returns.shape == tuple(th_returns.shape) == (N_STEPS, N_ENVS)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(th_returns.numpy(), np_returns, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(th_advantages.numpy(), np_advantages, rtol=tolerance, atol=tolerance)
    # float32 results are float32 roundings of the exact ones
    expected_returns, expected_advantages = naive_estimator(name, data, GAMMA, **kwargs)
    np.testing.assert_allclose(np_returns, expected_returns, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np_advantages, expected_advantages, rtol=1e-4, atol=1e-4)


def test_mixed_inputs_and_boolean_dones():
    data = make_rollout(2)
    rewards = data.folded_rewards(GAMMA).astype(np.float32)
    values, last_values = data.values.astype(np.float32), data.last_values.astype(np.float32)
    reference = gae(rewards, values, last_values, data.dones.astype(np.float32), GAMMA, 0.9)
    # boolean dones give the same float32 result
    for result, expected in zip(gae(rewards, values, last_values, data.dones, GAMMA, 0.9), reference, strict=True):
        assert result.dtype == np.float32
        assert np.array_equal(result, expected)
    # a tensor among numpy inputs (e.g. the critic's values) makes the computation run in torch
    returns, advantages = gae(rewards, th.as_tensor(values), th.as_tensor(last_values), data.dones, GAMMA, 0.9)
    assert isinstance(returns, th.Tensor) and returns.dtype == th.float32
    np.testing.assert_allclose(returns.numpy(), reference[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(advantages.numpy(), reference[1], rtol=1e-6, atol=1e-6)


def test_bootstrap_truncated():
    data = make_rollout(0)
    assert data.truncated.any() and np.isnan(data.terminal_values).any()
    rewards_before = data.rewards.copy()
    folded = bootstrap_truncated(data.rewards, data.truncated, data.terminal_values, 0.9)
    assert np.array_equal(data.rewards, rewards_before)  # the input is not modified
    assert folded is not data.rewards and folded.dtype == np.float64
    for t in range(N_STEPS):
        for e in range(N_ENVS):
            expected = data.rewards[t, e] + (0.9 * data.terminal_values[t, e] if data.truncated[t, e] else 0.0)
            assert folded[t, e] == pytest.approx(expected, rel=1e-12)  # NaN terminal values are not read
    rewards32 = th.as_tensor(data.rewards, dtype=th.float32)
    folded32 = bootstrap_truncated(rewards32, th.as_tensor(data.truncated), th.as_tensor(data.terminal_values).float(), 0.9)
    assert isinstance(folded32, th.Tensor) and folded32.dtype == th.float32
    np.testing.assert_allclose(folded32.numpy(), folded, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("with_truncation", [False, True])
def test_special_cases(with_truncation):
    data = make_rollout(3, with_truncation=with_truncation)
    args = (data.folded_rewards(GAMMA), data.values, data.last_values, data.dones)
    # lambda = 1: GAE returns are the Monte-Carlo returns, bootstrapped at the end of the rollout
    mc_returns = naive_n_step(data, GAMMA, n=10**6)
    gae_returns, gae_advantages = gae(*args, GAMMA, 1.0)
    np.testing.assert_allclose(gae_returns, mc_returns, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(n_step(*args, GAMMA, N_STEPS)[0], mc_returns, rtol=1e-10, atol=1e-10)
    # lambda = 0: GAE is TD(0)
    td0_returns, td0_advantages = one_step(*args, GAMMA)
    np.testing.assert_allclose(td0_returns, naive_one_step(data, GAMMA), rtol=1e-10, atol=1e-10)
    for result, expected in zip(gae(*args, GAMMA, 0.0), (td0_returns, td0_advantages), strict=True):
        np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)
    # n = 1 is TD(0), to the bit
    for result, expected in zip(n_step(*args, GAMMA, 1), (td0_returns, td0_advantages), strict=True):
        assert np.array_equal(result, expected)
    # V-trace on-policy (ratios 1, rho_bar = c_bar = 1): GAE(lambda) returns; GAE advantages when lambda = 1
    zeros = np.zeros_like(data.log_ratios)
    for gae_lambda in (0.0, 0.5, 0.95, 1.0):
        vs, vtrace_advantages = vtrace(*args, zeros, GAMMA, gae_lambda=gae_lambda)
        np.testing.assert_allclose(vs, gae(*args, GAMMA, gae_lambda)[0], rtol=1e-12, atol=1e-12)
        if gae_lambda == 1.0:
            np.testing.assert_allclose(vtrace_advantages, gae_advantages, rtol=1e-10, atol=1e-10)
        if gae_lambda == 0.0:  # then the advantage bootstraps on v_{s+1} = r_{s+1} + gamma V(x_{s+2}) instead
            assert not np.allclose(vtrace_advantages, td0_advantages)


def test_vtrace_truncates_ratios_from_above_only():
    data = make_rollout(4)
    args = (data.folded_rewards(GAMMA), data.values, data.last_values, data.dones)
    on_policy = vtrace(*args, np.zeros_like(data.log_ratios), GAMMA, gae_lambda=0.9)

    # ratios of 3 > rho_bar = c_bar = 1 are truncated to 1: on-policy result
    above = np.full_like(data.log_ratios, math.log(3.0))
    for result, expected in zip(vtrace(*args, above, GAMMA, gae_lambda=0.9), on_policy, strict=True):
        np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)

    # ratios of 0.5 < 1 are used as they are; a clamp from below (max) would give the on-policy result
    below = np.full_like(data.log_ratios, math.log(0.5))
    vs, advantages = vtrace(*args, below, GAMMA, gae_lambda=0.9)
    expected_vs, expected_advantages = naive_vtrace(data, GAMMA, gae_lambda=0.9, log_ratios=below)
    np.testing.assert_allclose(vs, expected_vs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(advantages, expected_advantages, rtol=1e-10, atol=1e-10)
    max_vs, max_advantages = naive_vtrace(data, GAMMA, gae_lambda=0.9, log_ratios=below, truncate=max)
    np.testing.assert_allclose(max_vs, on_policy[0], rtol=1e-10, atol=1e-10)
    assert not np.allclose(vs, max_vs) and not np.allclose(advantages, max_advantages)

    # rho_bar and c_bar act separately: ratio 1 is below rho_bar = 2 (kept) and above c_bar = 0.5 (truncated)
    ones = np.zeros_like(data.log_ratios)
    vs, advantages = vtrace(*args, ones, GAMMA, gae_lambda=0.9, rho_bar=2.0, c_bar=0.5)
    # rho = 1 and c = lambda * 0.5: the TD(lambda * 0.5) returns, not the on-policy TD(lambda) ones
    np.testing.assert_allclose(vs, gae(*args, GAMMA, 0.9 * 0.5)[0], rtol=1e-10, atol=1e-10)
    assert not np.allclose(vs, on_policy[0])
    expected_vs, expected_advantages = naive_vtrace(data, GAMMA, 0.9, rho_bar=2.0, c_bar=0.5, log_ratios=ones)
    np.testing.assert_allclose(vs, expected_vs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(advantages, expected_advantages, rtol=1e-10, atol=1e-10)

    # random ratios on both sides of the bars, against the paper's (min) and the buggy (max) truncation
    vs, advantages = vtrace(*args, data.log_ratios, GAMMA, gae_lambda=0.9, rho_bar=1.2, c_bar=0.9)
    expected_vs, _ = naive_vtrace(data, GAMMA, 0.9, rho_bar=1.2, c_bar=0.9)
    max_vs, _ = naive_vtrace(data, GAMMA, 0.9, rho_bar=1.2, c_bar=0.9, truncate=max)
    np.testing.assert_allclose(vs, expected_vs, rtol=1e-10, atol=1e-10)
    assert not np.allclose(vs, max_vs)


def test_vtrace_huge_ratio_is_truncated_without_warning():
    data = make_rollout(5)
    args = (data.folded_rewards(GAMMA), data.values, data.last_values, data.dones)
    huge = np.full_like(data.log_ratios, 1000.0)  # exp overflows to inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vs, advantages = vtrace(*args, huge, GAMMA, rho_bar=1.0, c_bar=1.0)
        th_vs, _ = vtrace(*(th.as_tensor(x) for x in args), th.as_tensor(huge, dtype=th.float32), GAMMA)
    on_policy = vtrace(*args, np.zeros_like(huge), GAMMA)
    np.testing.assert_allclose(vs, on_policy[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(advantages, on_policy[1], rtol=1e-12, atol=1e-12)
    assert th.isfinite(th_vs).all()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_vtrace_worked_example(backend):
    # 1 env, 3 steps, no episode end, gamma = 0.5, lambda = 1, rho_bar = c_bar = 1.
    #   r = [1, 2, 3], V(x_0..2) = [1, 2, 1], V(x_3) = last_values = 2, pi/mu = [2, 0.5, 1]
    #   rho = c = [min(1, 2), min(1, 0.5), min(1, 1)] = [1, 0.5, 1]   (2 is truncated, 0.5 is not)
    #   delta_0 = 1   * (1 + 0.5 * 2 - 1) = 1
    #   delta_1 = 0.5 * (2 + 0.5 * 1 - 2) = 0.25
    #   delta_2 = 1   * (3 + 0.5 * 2 - 1) = 3
    #   v_3 = 2
    #   v_2 = V_2 + delta_2 + gamma c_2 (v_3 - V_3) = 1 + 3 + 0.5 * 1 * 0         = 4
    #   v_1 = V_1 + delta_1 + gamma c_1 (v_2 - V_2) = 2 + 0.25 + 0.5 * 0.5 * 3    = 3
    #   v_0 = V_0 + delta_0 + gamma c_0 (v_1 - V_1) = 1 + 1 + 0.5 * 1 * 1         = 2.5
    #   A_0 = rho_0 (r_0 + gamma v_1 - V_0) = 1   * (1 + 1.5 - 1) = 1.5
    #   A_1 = rho_1 (r_1 + gamma v_2 - V_1) = 0.5 * (2 + 2 - 2)   = 1
    #   A_2 = rho_2 (r_2 + gamma v_3 - V_2) = 1   * (3 + 1 - 1)   = 3
    # Clamping from below (max) would give rho = c = [2, 1, 1] and v = [5, 4, 4];
    # no truncation at all would give v = [4, 3, 4].
    convert = th.as_tensor if backend == "torch" else np.asarray
    rewards = convert(np.array([[1.0], [2.0], [3.0]], dtype=np.float32))
    values = convert(np.array([[1.0], [2.0], [1.0]], dtype=np.float32))
    last_values = convert(np.array([2.0], dtype=np.float32))
    dones = convert(np.zeros((3, 1), dtype=bool))
    log_ratios = convert(np.log(np.array([[2.0], [0.5], [1.0]], dtype=np.float32)))
    vs, advantages = vtrace(rewards, values, last_values, dones, log_ratios, gamma=0.5)
    assert vs.dtype == advantages.dtype == (th.float32 if backend == "torch" else np.float32)
    np.testing.assert_allclose(np.asarray(vs).ravel(), [2.5, 3.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(advantages).ravel(), [1.5, 1.0, 3.0], rtol=1e-6)
    # the independent reference agrees, and the max clamp does not
    data = Rollout(
        rewards=np.array([[1.0], [2.0], [3.0]]),
        values=np.array([[1.0], [2.0], [1.0]]),
        last_values=np.array([2.0]),
        terminated=np.zeros((3, 1), dtype=bool),
        truncated=np.zeros((3, 1), dtype=bool),
        terminal_values=np.full((3, 1), np.nan),
        log_ratios=np.log(np.array([[2.0], [0.5], [1.0]])),
    )
    np.testing.assert_allclose(naive_vtrace(data, 0.5)[0].ravel(), [2.5, 3.0, 4.0], rtol=1e-12)
    np.testing.assert_allclose(naive_vtrace(data, 0.5, truncate=max)[0].ravel(), [5.0, 4.0, 4.0], rtol=1e-12)


def _shape_error_cases():
    t, e = 4, 3
    good = {
        "rewards": np.zeros((t, e)),
        "values": np.zeros((t, e)),
        "last_values": np.zeros(e),
        "dones": np.zeros((t, e), dtype=bool),
        "log_ratios": np.zeros((t, e)),
    }
    bad = {
        "rewards": [np.zeros(t), np.zeros((t, e, 1))],
        "values": [np.zeros((t, e + 1)), np.zeros((t + 1, e)), np.zeros(t * e)],
        "last_values": [np.zeros((e, 1)), np.zeros(e + 1), np.zeros((t, e))],
        "dones": [np.zeros((t - 1, e), dtype=bool), np.zeros(e, dtype=bool)],
        "log_ratios": [np.zeros((t, 1)), np.zeros(t)],
    }
    cases = []
    for name, arrays in bad.items():
        for array in arrays:
            cases.append(pytest.param({**good, name: array}, name, id=f"{name}-{array.shape}"))
    return cases


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("inputs, bad_name", _shape_error_cases())
def test_bad_shapes_raise(inputs, bad_name, backend):
    if backend == "torch":
        inputs = {name: th.as_tensor(x) for name, x in inputs.items()}
    common = (inputs["rewards"], inputs["values"], inputs["last_values"], inputs["dones"])
    calls = [
        lambda: vtrace(*common, inputs["log_ratios"], 0.99),
    ]
    if bad_name != "log_ratios":
        calls += [
            lambda: gae(*common, 0.99, 0.95),
            lambda: one_step(*common, 0.99),
            lambda: n_step(*common, 0.99, 2),
        ]
    for call in calls:
        with pytest.raises(ValueError, match=rf"^{bad_name} must have shape"):
            call()


def test_bad_bootstrap_truncated_shapes_raise():
    rewards = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"^truncated must have shape"):
        bootstrap_truncated(rewards, np.zeros((4, 3), dtype=bool), np.zeros((4, 2)), 0.99)
    with pytest.raises(ValueError, match=r"^terminal_values must have shape"):
        bootstrap_truncated(rewards, np.zeros((4, 2), dtype=bool), np.zeros(2), 0.99)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda a: gae(*a, 1.5, 0.95), "gamma must be in"),
        (lambda a: gae(*a, -0.1, 0.95), "gamma must be in"),
        (lambda a: gae(*a, 0.99, 1.01), "gae_lambda must be in"),
        (lambda a: one_step(*a, 2.0), "gamma must be in"),
        (lambda a: n_step(*a, 0.99, 0), "n must be an integer >= 1"),
        (lambda a: n_step(*a, 0.99, 1.5), "n must be an integer >= 1"),
        (lambda a: n_step(*a, 0.99, True), "n must be an integer >= 1"),
        (lambda a: n_step(*a, 1.1, 2), "gamma must be in"),
        (lambda a: vtrace(*a, np.zeros((4, 2)), 0.99, rho_bar=0.0), "rho_bar must be > 0"),
        (lambda a: vtrace(*a, np.zeros((4, 2)), 0.99, c_bar=-1.0), "c_bar must be > 0"),
        (lambda a: vtrace(*a, np.zeros((4, 2)), 0.99, gae_lambda=-0.5), "gae_lambda must be in"),
        (lambda a: vtrace(*a, np.zeros((4, 2)), -1.0), "gamma must be in"),
        (lambda a: bootstrap_truncated(a[0], a[3], a[1], 1.5), "gamma must be in"),
    ],
)
def test_bad_parameters_raise(call, match):
    args = (np.zeros((4, 2)), np.zeros((4, 2)), np.zeros(2), np.zeros((4, 2), dtype=bool))
    with pytest.raises(ValueError, match=match):
        call(args)


def test_rho_bar_below_c_bar_is_allowed():
    data = make_rollout(6)
    args = (data.folded_rewards(GAMMA), data.values, data.last_values, data.dones, data.log_ratios)
    vs, _ = vtrace(*args, GAMMA, rho_bar=0.5, c_bar=2.0)
    np.testing.assert_allclose(vs, naive_vtrace(data, GAMMA, rho_bar=0.5, c_bar=2.0)[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_vtrace_advantages_without_rho(backend):
    # for a surrogate that carries the importance weight itself (PPO's ratio): same targets, advantages without rho_s
    data = make_rollout(11)
    convert = (lambda x: th.as_tensor(x)) if backend == "torch" else (lambda x: x)
    kwargs = dict(gae_lambda=0.9, rho_bar=1.2, c_bar=0.9)
    vs, advantages = run_estimator("vtrace", data, GAMMA, convert, rho_in_advantages=False, **kwargs)
    expected_vs, expected_advantages = naive_vtrace(data, GAMMA, rho_in_advantages=False, **kwargs)
    np.testing.assert_allclose(np.asarray(vs), expected_vs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(advantages), expected_advantages, rtol=1e-10, atol=1e-10)
    _, with_rho = naive_vtrace(data, GAMMA, **kwargs)
    assert not np.allclose(expected_advantages, with_rho)  # the ratios of this rollout are not all 1


@pytest.mark.parametrize("name", ["vtrace", "n_step", "gae", "one_step"])
def test_gradients_through_the_estimators_match_finite_differences(name):
    # a differentiable use of the pure functions (e.g. log_ratios of a policy with gradients): vtrace wrote an advantage
    # and read it back in place (backward raised); gradcheck compares autograd with central finite differences
    data = make_rollout(12)
    rewards, values, last_values = (th.tensor(x, requires_grad=True) for x in (data.rewards, data.values, data.last_values))
    # ratios inside (0.5, 1.1): away from rho_bar = 1.2 and c_bar = 1.3, where min() has no derivative
    log_ratios = th.tensor(np.log(np.random.default_rng(0).uniform(0.5, 1.1, data.rewards.shape)), requires_grad=True)
    dones = th.as_tensor(data.dones)

    def estimate(*inputs):
        if name == "vtrace":
            returns, advantages = vtrace(*inputs[:3], dones, inputs[3], GAMMA, gae_lambda=0.9, rho_bar=1.2, c_bar=1.3)
        elif name == "n_step":
            returns, advantages = n_step(*inputs[:3], dones, GAMMA, n=3)
        elif name == "gae":
            returns, advantages = gae(*inputs[:3], dones, GAMMA, gae_lambda=0.9)
        else:
            returns, advantages = one_step(*inputs[:3], dones, GAMMA)
        return returns, advantages

    inputs = (rewards, values, last_values, log_ratios) if name == "vtrace" else (rewards, values, last_values)
    assert th.autograd.gradcheck(estimate, inputs)


def test_n_step_with_a_horizon_beyond_the_rollout_equals_gae_1():
    # n >= n_steps (Monte-Carlo returns, the README's GAE(1) use) at a zoo rollout size (n_steps * n Python iterations
    # took 13 s per call here, and again every epoch with recompute_returns; now one vectorised pass per k)
    data = make_rollout(13, n_steps=2048, n_envs=8)
    returns, _ = n_step(data.rewards, data.values, data.last_values, data.dones, GAMMA, n=2048)
    expected, _ = gae(data.rewards, data.values, data.last_values, data.dones, GAMMA, gae_lambda=1.0)
    np.testing.assert_allclose(returns, expected, rtol=1e-9, atol=1e-9)


def test_recomputed_vtrace_targets_equal_the_naive_sum_form():
    """
    ``recompute_returns=True`` with V-trace: the targets and advantages recomputed with the current networks equal
    IMPALA's sum form written out here on the current policy's values and log-probabilities (3 envs, episode ends
    inside the rollout, ratios pi / mu away from 1 after a parameter change, rho_bar 1.3, c_bar 0.7, lambda 0.8).
    """
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_cherry import PPORollback

    env = make_vec_env("CartPole-v1", n_envs=3, seed=0)
    model = PPORollback(
        "MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=2, gamma=0.9, gae_lambda=0.8, seed=0,
        returns_estimator="vtrace", recompute_returns=True, rho_bar=1.3, c_bar=0.7, device="cpu",
    )  # fmt: skip
    _, callback = model._setup_learn(64 * 3, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, 64)
    buf = model.rollout_buffer
    obs, acts = buf.observations.copy(), buf.actions.copy()
    rewards, mu = buf.rewards.astype(np.float64), buf.log_probs.astype(np.float64)
    dones = np.concatenate([buf.episode_starts[1:], model._last_episode_starts[None]]).astype(bool)
    with th.no_grad():
        for p in model.policy.parameters():
            p.add_(0.1 * th.randn_like(p))
    next(buf.get(32))  # the buffer as the trainer leaves it after the first epoch (flattened)
    model._recompute_returns()
    T, E = rewards.shape
    returns, advantages = buf.returns.reshape(E, T).T, buf.advantages.reshape(E, T).T
    model.policy.set_training_mode(False)
    with th.no_grad():
        flat_obs, flat_acts = th.as_tensor(obs.reshape(T * E, -1)), th.as_tensor(acts.reshape(T * E)).long()
        values, log_prob, _ = model.policy.evaluate_actions(flat_obs, flat_acts)
        last = model.policy.predict_values(th.as_tensor(model._last_obs)).numpy().ravel().astype(np.float64)
    v, log_pi = values.numpy().reshape(T, E).astype(np.float64), log_prob.numpy().reshape(T, E).astype(np.float64)
    ratio = np.exp(log_pi - mu)
    rho, c, g = np.minimum(1.3, ratio), 0.8 * np.minimum(0.7, ratio), 0.9
    assert dones.sum() > 0 and np.abs(ratio - 1).max() > 0.05
    vs, adv = np.zeros((T, E)), np.zeros((T, E))
    for e in range(E):
        for s in range(T):  # v_s = V(x_s) + sum_t gamma^(t-s) (prod_{i<t} c_i) rho_t delta_t, within the episode
            total, trace = v[s, e], 1.0
            for t in range(s, T):
                next_v = 0.0 if dones[t, e] else (last[e] if t == T - 1 else v[t + 1, e])
                total += g ** (t - s) * trace * rho[t, e] * (rewards[t, e] + g * next_v - v[t, e])
                if dones[t, e]:
                    break
                trace *= c[t, e]
            vs[s, e] = total
        for s in range(T):  # the policy-gradient advantage r_s + gamma v_{s+1} - V(x_s) (without rho: PPO's ratio)
            next_vs = 0.0 if dones[s, e] else (last[e] if s == T - 1 else vs[s + 1, e])
            adv[s, e] = rewards[s, e] + g * next_vs - v[s, e]
    np.testing.assert_allclose(returns, vs, atol=2e-5)
    np.testing.assert_allclose(advantages, adv, atol=2e-5)


def test_recompute_rebootstraps_time_limit_truncations_with_the_current_critic(raw_step_recorder, gae_by_hand):
    """
    SB3 adds ``gamma * V(terminal observation)`` to the reward of a time-limit truncation with the collecting critic;
    ``recompute_returns=True`` recomputes every other value with the current critic, so it must replace that one too.
    Reference: GAE written out here on the raw rewards (copied by a callback before SB3's in-place bootstrap), the
    terminal observations from the infos and the current critic (Pendulum cut at 10 steps: only truncations).
    Checked at two recomputes of a rollout (the correction is not added twice), on a second rollout (the first one's
    truncations are forgotten) and on the rollout as the async learner receives it (``buffer_payload``).
    """
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_cherry import PPORollback
    from sb3_cherry.common.async_learner import buffer_payload

    steps = raw_step_recorder.steps
    T, E, g, lam = 32, 2, 0.9, 0.8

    def make_model(max_episode_steps):
        env = make_vec_env("Pendulum-v1", n_envs=E, seed=0, env_kwargs={"max_episode_steps": max_episode_steps})
        return PPORollback(
            "MlpPolicy", env, n_steps=T, batch_size=32, n_epochs=2, gamma=g, gae_lambda=lam, seed=0,
            recompute_returns=True, device="cpu",
        )  # fmt: skip

    def value(x, policy):
        with th.no_grad():
            return policy.predict_values(th.as_tensor(np.asarray(x, np.float32)).reshape(-1, 3)).numpy().ravel()

    def reference(model, obs, collecting):
        """GAE on raw rewards + gamma * V_current(terminal obs); the truncations seen, and how far the critics differ."""
        policy = model.policy
        v = value(obs.reshape(T * E, -1), policy).reshape(T, E).astype(np.float64)
        last = value(model._last_obs, policy).astype(np.float64)
        rewards, dones, truncations, shift = np.zeros((T, E)), np.zeros((T, E), dtype=bool), [], 0.0
        for t, (raw, done, infos) in enumerate(steps):
            rewards[t], dones[t] = raw, done
            for e in np.flatnonzero(done):
                assert infos[e]["TimeLimit.truncated"]
                terminal_value = value(infos[e]["terminal_observation"], policy)[0]
                rewards[t, e] += g * terminal_value
                truncations.append((t, e))
                shift = max(shift, abs(terminal_value - value(infos[e]["terminal_observation"], collecting)[0]))
        adv = gae_by_hand(rewards, v, last, dones, g, lam)
        return adv, adv + v, truncations, shift

    def check(buf, model, obs, collecting, flat=True):
        returns, advantages = buf.returns, buf.advantages
        if flat:
            returns, advantages = returns.reshape(E, T).T, advantages.reshape(E, T).T
        adv, ret, truncations, shift = reference(model, obs, collecting)
        np.testing.assert_allclose(advantages, adv, atol=2e-5)
        np.testing.assert_allclose(returns, ret, atol=2e-5)
        return truncations, shift

    model = make_model(10)
    seen = []
    for rollout in range(2):  # the second rollout continues the episodes: truncated at other steps
        steps.clear()
        _, callback = model._setup_learn(2 * T * E, raw_step_recorder, reset_num_timesteps=rollout == 0)
        model.collect_rollouts(model.env, callback, model.rollout_buffer, T)
        buf = model.rollout_buffer
        obs, payload, last_obs = buf.observations.copy(), copy.deepcopy(buffer_payload(buf)), model._last_obs.copy()
        collecting = copy.deepcopy(model.policy)
        with th.no_grad():
            for p in model.policy.parameters():
                p.add_(0.1 * th.randn_like(p))
        model.policy.set_training_mode(False)
        next(buf.get(32))  # the buffer as the trainer leaves it after the first epoch (flattened)
        for _ in range(2):  # before epochs 2 and 3: the same targets (the correction replaces, it does not accumulate)
            model._recompute_returns()
            truncations, shift = check(buf, model, obs, collecting)
        assert [tuple(ts) for ts in buf.truncation_steps] == truncations and len(truncations) == 6  # this rollout's
        assert shift > 0.01  # the collecting critic's values differ: the test can tell them apart
        seen.append(truncations)
        # the async learner: the rollout arrives through buffer_payload into another model's buffer
        learner = make_model(10)
        learner.policy.load_state_dict(model.policy.state_dict())
        for key, item in payload.items():
            setattr(learner.rollout_buffer, key, item)
        learner._last_obs = last_obs
        learner._recompute_returns()
        check(learner.rollout_buffer, model, obs, collecting, flat=False)
    assert seen[0] != seen[1]


class _RandomEnv(gym.Env):
    """Random observations and rewards; terminates with probability ``p_end`` per step (``np_random``, seeded)."""

    observation_space = spaces.Box(-5.0, 5.0, (3,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, p_end: float):
        self.p_end = p_end

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.normal(size=3).astype(np.float32), {}

    def step(self, action):
        obs = self.np_random.normal(size=3).astype(np.float32)
        return obs, float(self.np_random.normal()), bool(self.np_random.random() < self.p_end), False, {}


@pytest.mark.parametrize("algo", ["PPORollback", "CherryA2C"])
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("gae", {"gae_lambda": 0.8}),
        ("one_step", {}),
        ("n_step", {"n": 3}),
        ("n_step", {"n": 1}),
        ("vtrace", {"gae_lambda": 0.8}),
    ],
)
def test_collected_rollouts_targets_equal_the_naive_references(raw_step_recorder, algo, name, kwargs):
    """
    The targets and advantages the buffer holds after ``collect_rollouts`` (the algorithms' own wiring: episode starts
    turned into dones, time-limit bootstraps, the estimator chosen, its arguments) equal the naive references on the
    raw rewards, the terminal observations of the infos and the collecting critic: env 0 is truncated every 4 steps
    (the rollout's last step too), env 1 terminates at random, env 2 both (on-policy V-trace: ratios 1).
    """
    from gymnasium.wrappers import TimeLimit
    from stable_baselines3.common.vec_env import DummyVecEnv

    import sb3_cherry

    T, E, gamma = 16, 3, 0.9
    makers = [(0.0, 4), (0.3, None), (0.15, 5)]
    venv = DummyVecEnv(
        [lambda p=p, limit=limit: TimeLimit(_RandomEnv(p), limit) if limit else _RandomEnv(p) for p, limit in makers]
    )
    venv.seed(3)
    estimator = {"returns_estimator": name, "n_step": kwargs.get("n", 5), "gae_lambda": kwargs.get("gae_lambda", 1.0)}
    extra = dict(batch_size=T * E, n_epochs=1) if algo == "PPORollback" else {}
    model = getattr(sb3_cherry, algo)(
        "MlpPolicy", venv, n_steps=T, gamma=gamma, seed=0, device="cpu", policy_kwargs=dict(net_arch=[8]), **estimator, **extra
    )
    _, callback = model._setup_learn(10 * T * E, raw_step_recorder)

    def value(obs):
        with th.no_grad():
            return model.policy.predict_values(th.as_tensor(np.asarray(obs, np.float32)).reshape(-1, 3)).numpy().ravel()

    for _ in range(2):  # the second rollout continues the first one's episodes
        raw_step_recorder.steps.clear()
        model.collect_rollouts(model.env, callback, model.rollout_buffer, T)
        buf = model.rollout_buffer
        data = Rollout(
            rewards=np.zeros((T, E)),
            values=buf.values.astype(np.float64),
            last_values=value(model._last_obs).astype(np.float64),
            terminated=np.zeros((T, E), bool),
            truncated=np.zeros((T, E), bool),
            terminal_values=np.full((T, E), np.nan),
            log_ratios=np.zeros((T, E)),
        )
        for t, (raw, done, infos) in enumerate(raw_step_recorder.steps):
            data.rewards[t] = raw
            for e in np.flatnonzero(done):
                if infos[e].get("TimeLimit.truncated", False):
                    data.truncated[t, e], data.terminal_values[t, e] = True, value(infos[e]["terminal_observation"])[0]
                else:
                    data.terminated[t, e] = True
        assert data.truncated[3::4, 0].all() and data.terminated[:, 1].any() and data.dones[:, 2].any()
        returns, advantages = naive_estimator(name, data, gamma, **kwargs)
        np.testing.assert_allclose(buf.returns, returns, atol=2e-5)
        np.testing.assert_allclose(buf.advantages, advantages, atol=2e-5)


@pytest.mark.parametrize("algo", ["PPORollback", "CherryA2C", "RecurrentPPORollback"])
@pytest.mark.parametrize("bad", [dict(gamma=1.2), dict(gae_lambda=1.5), dict(gamma=-0.1)])
def test_gamma_and_lambda_outside_the_unit_interval_are_refused_at_construction(algo, bad):
    # they were refused only by the estimator, at the end of the first rollout
    import sb3_cherry

    policy = "MlpLstmPolicy" if algo.startswith("Recurrent") else "MlpPolicy"
    name = next(iter(bad))
    with pytest.raises(ValueError, match=rf"{name} must be in \[0, 1\], got {bad[name]}"):
        getattr(sb3_cherry, algo)(policy, "CartPole-v1", n_steps=8, **bad)
