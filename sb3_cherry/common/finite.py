"""
Never train on non-finite data (NaN / inf): checks of what the environment returns and of each update.

- :func:`check_finite_step` raises a ``ValueError`` naming what was non-finite (observation, terminal observation,
  reward), the env index and the step (``num_timesteps``), like SB3's ``VecCheckNan`` but located for the user; the
  common case (everything finite) costs one sum per array.
- :class:`FiniteCheckCallback` runs it on every step of ``collect_rollouts`` (and on the observation the rollout
  starts from), before the policy sees the new observation.
- :class:`UpdateSnapshot` copies parameters, buffers and optimizer state before an update and restores them when the
  update produced a non-finite loss or non-finite parameters, so the model keeps its values from before the update.
"""

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback


def _first_non_finite(values: np.ndarray) -> tuple[int, Any] | None:
    """``(env index, value)`` of the first env whose entry is not finite (None if all are finite)."""
    values = np.asarray(values)
    if values.dtype.kind not in "fc":  # integer / boolean observations cannot hold NaN or inf
        return None
    # Fast path: a sum is finite iff every entry is (unless finite values overflow, then the slow path finds nothing)
    if math.isfinite(float(values.sum())):
        return None
    bad = ~np.isfinite(values.reshape(len(values), -1))
    rows = np.flatnonzero(bad.any(axis=1))
    if len(rows) == 0:
        return None
    row = int(rows[0])
    return row, values.reshape(len(values), -1)[row][bad[row]][0]


def _raise(what: str, env_index: int, value: Any, step: str) -> None:
    raise ValueError(
        f"Non-finite {what} ({value}) from env {env_index} at {step}: sb3_cherry does not train on NaN or inf, and the "
        "model keeps its parameters from before this rollout. Fix the environment (or its wrappers: VecNormalize "
        "statistics, reward scaling) so that it returns finite values; SB3's VecCheckNan(env, raise_exception=True) "
        "can locate the action that produced it."
    )


def check_finite_observation(obs: np.ndarray | Mapping[str, np.ndarray], what: str, step: str) -> None:
    """
    Raise a ValueError if a batch of observations (one row per env; Dict observations key by key) is not finite.

    :param obs: the observations, batch first
    :param what: how to name them in the message (``"observation"``, ``"terminal observation"``)
    :param step: where it happened, e.g. ``"num_timesteps=1234"``
    :raises ValueError: naming ``what``, the env index and ``step``
    """
    if isinstance(obs, Mapping):
        for key, value in obs.items():
            check_finite_observation(value, f"{what} (key {key!r})", step)
        return
    found = _first_non_finite(obs)
    if found is not None:
        _raise(what, found[0], found[1], step)


def check_finite_step(
    new_obs: np.ndarray | Mapping[str, np.ndarray],
    rewards: np.ndarray | None,
    dones: np.ndarray,
    infos: Iterable[dict[str, Any]],
    num_timesteps: int,
) -> None:
    """
    Check what one ``VecEnv.step`` returned: observations, rewards (None: not checked) and, for the envs whose episode
    ended, the ``terminal_observation`` SB3 bootstraps from.

    :param new_obs: observations returned by the step (batch first)
    :param rewards: rewards, shape ``(n_envs,)``
    :param dones: episode ends, shape ``(n_envs,)``
    :param infos: one info dict per env
    :param num_timesteps: the model's ``num_timesteps`` after this step (reported in the message)
    :raises ValueError: naming what was non-finite, the env index and the step
    """
    step = f"num_timesteps={num_timesteps}"
    check_finite_observation(new_obs, "observation", step)
    if rewards is not None:
        found = _first_non_finite(rewards)
        if found is not None:
            _raise("reward", found[0], found[1], step)
    ended = np.flatnonzero(dones)
    if len(ended) > 0:
        infos = list(infos)
        for index in ended:
            terminal = infos[index].get("terminal_observation")
            if terminal is None:
                continue
            if isinstance(terminal, Mapping):
                terminal = {key: np.asarray(value)[None] for key, value in terminal.items()}
            else:
                terminal = np.asarray(terminal)[None]
            try:
                check_finite_observation(terminal, "terminal observation", step)
            except ValueError as error:  # report the env's own index, not 0 of the one-row batch
                raise ValueError(str(error).replace("from env 0 ", f"from env {index} ", 1)) from None


class FiniteCheckCallback(BaseCallback):
    """
    Raises a ValueError at the first non-finite observation or reward of ``collect_rollouts`` (SB3's and
    sb3-contrib's), before the policy sees it; added first by the sb3_cherry on-policy algorithms while
    ``check_finite`` is True. Reads ``new_obs``, ``rewards``, ``dones`` and ``infos`` from the collection loop's locals.
    """

    def _on_rollout_start(self) -> None:
        last_obs = self.model._last_obs
        if last_obs is not None:
            check_finite_observation(last_obs, "observation", f"reset / rollout start, num_timesteps={self.num_timesteps}")

    def _on_step(self) -> bool:
        local = self.locals
        check_finite_step(local["new_obs"], local["rewards"], local["dones"], local["infos"], self.num_timesteps)
        return True


class UpdateSnapshot:
    """
    Copies of modules' parameters and buffers and of their optimizers' state, taken before an update and restored
    if the update turned out non-finite. The copies are kept between updates and refreshed in place (one fused copy),
    so a snapshot costs a memory copy of the parameters and optimizer state, no allocation.

    :param modules: the modules whose parameters and buffers are saved
    :param optimizers: their optimizers
    """

    def __init__(self, modules: list[th.nn.Module], optimizers: list[th.optim.Optimizer]):
        self.modules = modules
        self.optimizers = optimizers
        self._layout: list[tuple[int, ...]] | None = None
        self._saved: list[th.Tensor] = []
        self._state_keys: list[list[tuple[th.Tensor, str]]] = []

    def _live(self) -> tuple[list[th.Tensor], list[list[tuple[th.Tensor, str]]]]:
        tensors = [t for m in self.modules for t in (*m.parameters(), *m.buffers())]
        keys: list[list[tuple[th.Tensor, str]]] = []
        for optimizer in self.optimizers:
            entries = [(p, k) for p, state in optimizer.state.items() for k, v in state.items() if isinstance(v, th.Tensor)]
            keys.append(entries)
            tensors += [optimizer.state[p][k] for p, k in entries]
        return tensors, keys

    def take(self) -> None:
        """Save the current values (before an update)."""
        tensors, keys = self._live()
        layout = [id(t) for t in tensors] + [t.numel() for t in tensors]
        with th.no_grad():
            if layout != self._layout:  # first snapshot, or the optimizer created its state: new copies
                self._saved = [t.detach().clone() for t in tensors]
                self._layout = layout
            else:
                th._foreach_copy_(self._saved, [t.detach() for t in tensors])
        self._state_keys = keys

    def restore(self) -> None:
        """Put the saved values back; optimizer state created after the snapshot is dropped."""
        n_module = sum(1 for m in self.modules for _ in (*m.parameters(), *m.buffers()))
        with th.no_grad():
            live = [t for m in self.modules for t in (*m.parameters(), *m.buffers())]
            th._foreach_copy_(live, self._saved[:n_module])
            saved = iter(self._saved[n_module:])
            for optimizer, entries in zip(self.optimizers, self._state_keys, strict=True):
                kept = {p for p, _ in entries}
                for p in [p for p in optimizer.state if p not in kept]:
                    del optimizer.state[p]
                for p, k in entries:
                    optimizer.state[p][k].copy_(next(saved))

    def parameters_finite(self) -> bool:
        """
        :return: whether every parameter and buffer of the modules is finite (one reduction per tensor, one sync)
        """
        tensors = [t.detach() for m in self.modules for t in m.parameters() if t.is_floating_point()]
        norms = th._foreach_norm(tensors)
        return bool(th.isfinite(th.stack(norms)).all())


def check_update(
    snapshot: UpdateSnapshot, losses: Mapping[str, Any], algorithm: str, num_timesteps: int, n_updates: int
) -> None:
    """
    After an update: if a logged loss or a parameter is not finite, restore the snapshot and raise.

    :param snapshot: taken before the update
    :param losses: the update's logged losses (``name -> value``; missing or None values are skipped)
    :param algorithm: the algorithm's name, for the message
    :param num_timesteps: the model's ``num_timesteps`` (reported)
    :param n_updates: the model's update counter (reported)
    :raises ValueError: naming the non-finite loss (or the parameters) and the step
    """
    bad = {name: value for name, value in losses.items() if value is not None and not math.isfinite(float(value))}
    if not bad and snapshot.parameters_finite():
        return
    snapshot.restore()
    what = "loss " + ", ".join(f"{name}={value}" for name, value in bad.items()) if bad else "parameters after the update"
    raise ValueError(
        f"Non-finite {what} in the {algorithm} update at num_timesteps={num_timesteps} (n_updates={n_updates}): the "
        "update was undone, the parameters and optimizer state are those from before it. The data were finite, so "
        "the update itself diverged: lower the learning rate, scale the rewards (e.g. VecNormalize), or check "
        "ent_coef / vf_coef and max_grad_norm."
    )
