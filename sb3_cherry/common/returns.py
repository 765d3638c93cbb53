"""
Returns and advantage estimators, as pure functions.

Every function works on numpy arrays and on torch tensors alike: if any input is a ``th.Tensor`` the
computation runs in torch (on that tensor's device) and tensors are returned, otherwise numpy arrays are
returned. The floating dtype is kept (float32 in, float32 out); mixed float dtypes are promoted as numpy /
torch would promote them, and integer or boolean rewards / values give the default float dtype.

Conventions (identical to SB3's ``RolloutBuffer``):

- ``rewards``, ``values``, ``dones`` (and ``log_ratios``) have shape ``(n_steps, n_envs)``;
  ``last_values`` has shape ``(n_envs,)``.
- ``values[t]`` is V(s_t), the value of the observation *before* step ``t``.
- ``dones[t]`` is True (1.0) when the episode ended after step ``t``, whether it terminated or was
  truncated. No value is bootstrapped across it.
- ``last_values`` is V(s_{n_steps}), the value of the observation after the last step. It is bootstrapped
  unless ``dones[-1]``.
- Time-limit truncation is handled by the caller, by folding the bootstrap into the reward,
  r_t <- r_t + gamma * V(terminal_obs), exactly as SB3's ``OnPolicyAlgorithm.collect_rollouts`` does.
  :func:`bootstrap_truncated` does that fold.

Each estimator returns ``(returns, advantages)``, both of shape ``(n_steps, n_envs)``: ``returns`` are the
value-function targets, ``advantages`` the policy-gradient weights.
"""

import functools
from typing import Any

import numpy as np
import torch as th

Array = np.ndarray | th.Tensor


def _to_one_backend(floats: dict[str, Any], masks: dict[str, Any]) -> dict[str, Any]:
    """
    Convert the inputs to one backend (torch if any input is a tensor, numpy otherwise) and one floating dtype.

    :param floats: real-valued inputs, by name; their promoted dtype is the dtype of the computation
    :param masks: boolean / 0-1 inputs, by name; cast to that dtype
    :return: all inputs, by name, converted
    """
    everything = {**floats, **masks}
    tensors = [x for x in everything.values() if isinstance(x, th.Tensor)]
    if tensors:
        device = tensors[0].device
        converted = {name: th.as_tensor(x, device=device) for name, x in everything.items()}
        dtype = functools.reduce(th.promote_types, (converted[name].dtype for name in floats))
        if not dtype.is_floating_point:
            dtype = th.get_default_dtype()
        return {name: x.to(dtype) for name, x in converted.items()}
    arrays = {name: np.asarray(x) for name, x in everything.items()}
    np_dtype = np.result_type(*(arrays[name] for name in floats))
    if not np.issubdtype(np_dtype, np.floating):
        np_dtype = np.dtype(np.float64)
    return {name: x.astype(np_dtype, copy=False) for name, x in arrays.items()}


def _check_shapes(arrays: dict[str, Any], last_values_name: str | None = "last_values") -> None:
    """
    Check that every array has the shape ``(n_steps, n_envs)`` of ``rewards``, and ``last_values`` ``(n_envs,)``.

    :param arrays: the converted inputs, by name; must contain ``rewards``
    :param last_values_name: name of the ``(n_envs,)`` input, if any
    :raises ValueError: if a shape does not match
    """
    rewards_shape = tuple(arrays["rewards"].shape)
    if len(rewards_shape) != 2:
        raise ValueError(
            f"rewards must have shape (n_steps, n_envs), got shape {rewards_shape}: "
            "for a single environment, add the env axis, e.g. rewards[:, None]."
        )
    n_envs = rewards_shape[1]
    for name, array in arrays.items():
        shape = tuple(array.shape)
        if name == last_values_name:
            if shape != (n_envs,):
                raise ValueError(
                    f"{name} must have shape (n_envs,) = ({n_envs},), got shape {shape}: "
                    f"pass one value per env, e.g. {name}.flatten()."
                )
        elif shape != rewards_shape:
            raise ValueError(f"{name} must have shape (n_steps, n_envs) = {rewards_shape} like rewards, got shape {shape}.")


def check_unit_interval(name: str, x: float) -> float:
    """
    :param name: the parameter's name, for the error message
    :param x: the parameter
    :return: ``x`` as a python float (so that numpy / torch scalars do not change the dtype of the results)
    :raises ValueError: unless ``0 <= x <= 1``
    """
    x = float(x)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {x}.")
    return x


def _check_positive(name: str, x: float) -> float:
    """
    :param name: the parameter's name, for the error message
    :param x: the parameter
    :return: ``x`` as a python float
    :raises ValueError: unless ``x > 0``
    """
    x = float(x)
    if not x > 0.0:
        raise ValueError(f"{name} must be > 0, got {x}.")
    return x


def bootstrap_truncated(rewards: Array, truncated: Array, terminal_values: Array, gamma: float) -> Array:
    """
    Fold the value of the terminal observation into the reward of time-limit truncated steps:
    r_t <- r_t + gamma * V(terminal_obs_t) wherever ``truncated[t]``, as SB3's ``collect_rollouts`` does.

    Mark these steps as done too (``dones[t] = True``) when calling the estimators: the bootstrap is then
    in the reward, and nothing is bootstrapped from the first observation of the next episode.
    A step that is both terminated and truncated is terminated: pass ``truncated & ~terminated``.

    :param rewards: rewards, shape ``(n_steps, n_envs)``
    :param truncated: True where the episode was truncated (and not terminated) after step ``t``,
        shape ``(n_steps, n_envs)``
    :param terminal_values: V(terminal observation of step ``t``), shape ``(n_steps, n_envs)``; only read where
        ``truncated`` (other entries may hold anything, NaN included)
    :param gamma: discount factor
    :return: the new rewards (the input is not modified)
    """
    gamma = check_unit_interval("gamma", gamma)
    arrays = _to_one_backend({"rewards": rewards, "terminal_values": terminal_values}, {"truncated": truncated})
    _check_shapes(arrays, last_values_name=None)
    rewards, truncated, terminal_values = arrays["rewards"], arrays["truncated"], arrays["terminal_values"]
    where: Any = th.where if isinstance(rewards, th.Tensor) else np.where
    return where(truncated != 0, rewards + gamma * terminal_values, rewards)


def _prepare(
    rewards: Array,
    values: Array,
    last_values: Array,
    dones: Array,
    log_ratios: Array | None = None,
) -> dict[str, Any]:
    """
    Convert the inputs of an estimator to one backend and dtype and check their shapes.

    :return: the converted inputs, by name
    """
    floats = {"rewards": rewards, "values": values, "last_values": last_values}
    if log_ratios is not None:
        floats["log_ratios"] = log_ratios
    arrays = _to_one_backend(floats, {"dones": dones})
    _check_shapes(arrays)
    return arrays


def _zeros_like(x: Any) -> Any:
    return th.zeros_like(x) if isinstance(x, th.Tensor) else np.zeros_like(x)


def _ones_like(x: Any) -> Any:
    return th.ones_like(x) if isinstance(x, th.Tensor) else np.ones_like(x)


def _cat(*xs: Any) -> Any:
    """Concatenate along the first (time) axis."""
    return th.cat(xs) if isinstance(xs[0], th.Tensor) else np.concatenate(xs)


def _column(numbers: list[float], like: Any) -> Any:
    """The numbers as a ``(len, 1)`` column of ``like``'s backend, dtype and device."""
    if isinstance(like, th.Tensor):
        return th.tensor(numbers, dtype=like.dtype, device=like.device)[:, None]
    return np.asarray(numbers, dtype=like.dtype)[:, None]


def gae(
    rewards: Array,
    values: Array,
    last_values: Array,
    dones: Array,
    gamma: float,
    gae_lambda: float,
) -> tuple[Array, Array]:
    """
    Generalized Advantage Estimation and the matching TD(lambda) returns.

    Paper: https://arxiv.org/abs/1506.02438 (Schulman et al., 2016)

    Bit-identical (float32 numpy) to SB3's ``RolloutBuffer.compute_returns_and_advantage``:
    same operations, same order. ``gae_lambda=1`` gives Monte-Carlo returns (bootstrapped with
    ``last_values`` at the end of the rollout), ``gae_lambda=0`` gives :func:`one_step`.

    :param rewards: rewards, shape ``(n_steps, n_envs)``
    :param values: V(s_t), shape ``(n_steps, n_envs)``
    :param last_values: V(s_{n_steps}), shape ``(n_envs,)``
    :param dones: True (1.0) where the episode ended after step ``t``, shape ``(n_steps, n_envs)``
    :param gamma: discount factor, in [0, 1]
    :param gae_lambda: bias / variance trade-off, in [0, 1]
    :return: ``(returns, advantages)``, with ``returns = advantages + values``
    """
    gamma = check_unit_interval("gamma", gamma)
    gae_lambda = check_unit_interval("gae_lambda", gae_lambda)
    arrays = _prepare(rewards, values, last_values, dones)
    return gae_prepared(arrays["rewards"], arrays["values"], arrays["last_values"], arrays["dones"], gamma, gae_lambda)


def gae_prepared(
    rewards: Array, values: Array, last_values: Array, dones: Array, gamma: float, gae_lambda: float
) -> tuple[Array, Array]:
    """
    :func:`gae` on inputs that are already checked: one backend and one floating dtype (``dones`` as 0.0 / 1.0 of
    that dtype), the shapes of :func:`gae`, ``gamma`` and ``gae_lambda`` numbers in [0, 1] used as given (the rollout
    buffer calls it once per rollout with its own float32 arrays and its coefficients: a NumPy float64 then computes
    in float64, as in SB3's buffer; :func:`gae` passes Python floats).

    :param rewards: rewards, shape ``(n_steps, n_envs)``
    :param values: V(s_t), shape ``(n_steps, n_envs)``
    :param last_values: V(s_{n_steps}), shape ``(n_envs,)``
    :param dones: 1.0 where the episode ended after step ``t``, shape ``(n_steps, n_envs)``
    :param gamma: discount factor
    :param gae_lambda: bias / variance trade-off
    :return: ``(returns, advantages)``
    """
    n_steps = rewards.shape[0]

    advantages = _zeros_like(values)
    last_gae_lam = _zeros_like(last_values)
    for step in reversed(range(n_steps)):
        next_values = last_values if step == n_steps - 1 else values[step + 1]
        next_non_terminal = 1.0 - dones[step]
        # TD residual: delta_t = r_t + gamma V(s_{t+1}) - V(s_t)
        delta = rewards[step] + gamma * next_values * next_non_terminal - values[step]
        # GAE, Schulman et al. 2016, eq. 16: A_t = sum_l (gamma lambda)^l delta_{t+l} = delta_t + gamma lambda A_{t+1}
        last_gae_lam = delta + gamma * gae_lambda * next_non_terminal * last_gae_lam
        advantages[step] = last_gae_lam
    # TD(lambda) returns: G^lambda_t = A_t + V(s_t)
    returns = advantages + values
    return returns, advantages


def one_step(
    rewards: Array,
    values: Array,
    last_values: Array,
    dones: Array,
    gamma: float,
) -> tuple[Array, Array]:
    """
    One-step TD targets, TD(0).

    :param rewards: rewards, shape ``(n_steps, n_envs)``
    :param values: V(s_t), shape ``(n_steps, n_envs)``
    :param last_values: V(s_{n_steps}), shape ``(n_envs,)``
    :param dones: True (1.0) where the episode ended after step ``t``, shape ``(n_steps, n_envs)``
    :param gamma: discount factor, in [0, 1]
    :return: ``(returns, advantages)``, with ``advantages = returns - values``
    """
    gamma = check_unit_interval("gamma", gamma)
    arrays = _prepare(rewards, values, last_values, dones)
    rewards, values, last_values, dones = arrays["rewards"], arrays["values"], arrays["last_values"], arrays["dones"]
    n_steps = rewards.shape[0]

    returns = _zeros_like(values)
    for step in range(n_steps):
        next_values = last_values if step == n_steps - 1 else values[step + 1]
        next_non_terminal = 1.0 - dones[step]
        # TD(0) target, Sutton & Barto 2018, eq. 6.2: r_t + gamma V(s_{t+1}), no bootstrap after the episode's end
        returns[step] = rewards[step] + gamma * next_values * next_non_terminal
    advantages = returns - values
    return returns, advantages


def n_step(
    rewards: Array,
    values: Array,
    last_values: Array,
    dones: Array,
    gamma: float,
    n: int,
) -> tuple[Array, Array]:
    """
    n-step returns: ``n`` discounted rewards, then the bootstrapped value.

    The sum is cut short by the end of the rollout (then it bootstraps on the value available there,
    ``last_values`` for the last step) and by the end of an episode (then there is no bootstrap).
    ``n=1`` gives :func:`one_step`; ``n >= n_steps`` gives Monte-Carlo returns, i.e. ``gae(..., gae_lambda=1)``.

    :param rewards: rewards, shape ``(n_steps, n_envs)``
    :param values: V(s_t), shape ``(n_steps, n_envs)``
    :param last_values: V(s_{n_steps}), shape ``(n_envs,)``
    :param dones: True (1.0) where the episode ended after step ``t``, shape ``(n_steps, n_envs)``
    :param gamma: discount factor, in [0, 1]
    :param n: number of rewards summed before bootstrapping, >= 1
    :return: ``(returns, advantages)``, with ``advantages = returns - values``
    """
    gamma = check_unit_interval("gamma", gamma)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}.")
    arrays = _prepare(rewards, values, last_values, dones)
    rewards, values, last_values, dones = arrays["rewards"], arrays["values"], arrays["last_values"], arrays["dones"]
    n_steps = rewards.shape[0]

    # All start steps t at once, one pass per k < m_t = min(n, n_steps - t) (O(n_steps * min(n, n_steps)) element
    # operations, not Python iterations): row t of `target` and `alive` changes only while k < m_t
    horizon = min(int(n), n_steps)
    target = _zeros_like(values)
    # 1 while the episode that contains step t goes on, 0 after its end
    alive = _ones_like(values)
    powers = [1.0]  # gamma^k as Python floats (they do not change the dtype), as a loop over t and k computes them
    for k in range(horizon):
        rows = n_steps - k  # the start steps t with t + k < n_steps
        target = _cat(target[:rows] + powers[k] * alive[:rows] * rewards[k:], target[rows:])
        alive = _cat(alive[:rows] * (1.0 - dones[k:]), alive[rows:])
        powers.append(powers[k] * gamma)
    # gamma^m_t, the discount of row t's bootstrap, and V(s_{t+m_t}): values[t + n] inside the rollout, last_values
    # where the sum reaches the rollout's end (t + m_t = n_steps)
    discount = _column([powers[min(horizon, n_steps - t)] for t in range(n_steps)], like=values)
    bootstrap_values = _cat(values[horizon:], *[last_values[None]] * horizon)
    # n-step return, Sutton & Barto 2018, eq. 7.1: G_t = sum_{k<m} gamma^k r_{t+k} + gamma^m V(s_{t+m})
    returns = target + discount * alive * bootstrap_values
    advantages = returns - values
    return returns, advantages


def vtrace(
    rewards: Array,
    values: Array,
    last_values: Array,
    dones: Array,
    log_ratios: Array,
    gamma: float,
    gae_lambda: float = 1.0,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
    rho_in_advantages: bool = True,
) -> tuple[Array, Array]:
    """
    V-trace targets and the matching policy-gradient advantages.

    Paper: https://arxiv.org/abs/1802.01561 (Espeholt et al., IMPALA, 2018)

    Importance ratios pi/mu are truncated from above only: rho_t = min(rho_bar, pi/mu) and
    c_t = lambda * min(c_bar, pi/mu); ratios below the bars are used as they are.
    With ``log_ratios = 0`` and ``rho_bar = c_bar = 1`` the targets are the TD(lambda) returns of :func:`gae`,
    and with ``gae_lambda=1`` too the advantages are the GAE advantages.

    The advantages are IMPALA's ``rho_s (r_s + gamma v_{s+1} - V(x_s))`` for a plain policy gradient
    ``E_mu[rho_s A_s grad log pi]``. A surrogate that already carries the importance weight ``pi / mu`` (PPO's ratio,
    whose gradient is ``(pi / mu) grad log pi``) must take them without ``rho_s`` (``rho_in_advantages=False``):
    ``r_s + gamma v_{s+1} - V(x_s)``, otherwise the weight is counted twice (``(pi / mu) min(rho_bar, pi / mu)``).

    :param rewards: rewards, shape ``(n_steps, n_envs)``
    :param values: V(x_t), shape ``(n_steps, n_envs)``
    :param last_values: V(x_{n_steps}), shape ``(n_envs,)``; the V-trace target after the last step
    :param dones: True (1.0) where the episode ended after step ``t``, shape ``(n_steps, n_envs)``
    :param log_ratios: log(pi(a_t|x_t) / mu(a_t|x_t)), target policy over behaviour policy, shape ``(n_steps, n_envs)``
    :param gamma: discount factor, in [0, 1]
    :param gae_lambda: lambda of the trace coefficients c_t, in [0, 1]
    :param rho_bar: truncation level of the importance weights rho_t (sets the fixed point's policy), > 0
    :param c_bar: truncation level of the trace coefficients c_t (sets the contraction speed), > 0
    :param rho_in_advantages: multiply the advantages by rho_s (IMPALA's policy-gradient advantage, the default);
        False for a loss that applies the importance weight itself (PPO's ratio ``pi / mu``)
    :return: ``(returns, advantages)``: the V-trace targets v_s and rho_s (r_s + gamma v_{s+1} - V(x_s))
        (without rho_s when ``rho_in_advantages`` is False)
    """
    gamma = check_unit_interval("gamma", gamma)
    gae_lambda = check_unit_interval("gae_lambda", gae_lambda)
    rho_bar = _check_positive("rho_bar", rho_bar)
    c_bar = _check_positive("c_bar", c_bar)
    arrays = _prepare(rewards, values, last_values, dones, log_ratios)
    rewards, values, last_values, dones = arrays["rewards"], arrays["values"], arrays["last_values"], arrays["dones"]
    log_ratios = arrays["log_ratios"]
    n_steps = rewards.shape[0]

    # Truncated importance weights, IMPALA section 4.1: rho_t = min(rho_bar, pi/mu), c_t = lambda min(c_bar, pi/mu)
    # (truncation from above only; a large ratio overflowing to inf is truncated to the bar)
    ratios: Any
    rhos: Any
    traces: Any
    if isinstance(log_ratios, th.Tensor):
        ratios = th.exp(log_ratios)
        rhos = th.clamp(ratios, max=rho_bar)
        traces = th.clamp(ratios, max=c_bar)  # c_t / lambda
    else:
        with np.errstate(over="ignore"):
            ratios = np.exp(log_ratios)
        rhos = np.minimum(ratios, rho_bar)
        traces = np.minimum(ratios, c_bar)  # c_t / lambda

    vs = _zeros_like(values)
    advantages = _zeros_like(values)
    # v_{s+1} - V(x_{s+1}), zero after the last step since v_n = V(x_n) = last_values
    next_correction = _zeros_like(last_values)
    next_vs = last_values
    for step in reversed(range(n_steps)):
        next_values = last_values if step == n_steps - 1 else values[step + 1]
        next_non_terminal = 1.0 - dones[step]
        # delta_t V = rho_t (r_t + gamma V(x_{t+1}) - V(x_t))
        delta = rhos[step] * (rewards[step] + gamma * next_values * next_non_terminal - values[step])
        # V-trace target, IMPALA eq. 1 (recursive form, section 4.1):
        # v_s = V(x_s) + delta_s V + gamma c_s (v_{s+1} - V(x_{s+1}))
        correction = delta + gamma * gae_lambda * next_non_terminal * traces[step] * next_correction
        vs[step] = values[step] + correction
        # Policy-gradient advantage, IMPALA section 4.2: rho_s (r_s + gamma v_{s+1} - V(x_s))
        # (without rho_s for a surrogate whose ratio pi / mu already is the importance weight)
        # (written once: reading the slot back would break autograd through log_ratios)
        advantage = rewards[step] + gamma * next_vs * next_non_terminal - values[step]
        advantages[step] = rhos[step] * advantage if rho_in_advantages else advantage
        next_correction = correction
        next_vs = vs[step]
    return vs, advantages
