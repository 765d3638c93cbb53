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

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

#: The largest float32: float64 values beyond it are finite for numpy but inf once the float32 policy and rollout
#: buffers take them (e.g. 1e39 from a float64 Box, or a reward through SubprocVecEnv, which stacks python floats)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _sum_fits(values: np.ndarray, limit: float = FLOAT32_MAX) -> bool:
    """
    Fast test: every entry of ``values`` is finite, and at most ``limit`` in magnitude, when this is True; False also
    when such values add up beyond ``limit`` (the exact test then decides). Float32 (and smaller) arrays: their sum, in
    float64 (it cannot overflow there; NaN and inf carry through a sum). Wider arrays: their largest magnitude (entries
    beyond float32's range can cancel in a sum: 5e38 - 3e38).

    :param values: a float array
    :param limit: the largest magnitude allowed (``inf``: any finite value)
    """
    if values.dtype.itemsize > 4:
        if values.size == 0:
            return True
        total = float(np.abs(values).max())
    else:
        total = abs(float(values.sum(dtype=np.float64)))
    return math.isfinite(total) and total <= limit


#: float32's native dtype (the object NumPy gives its float32 arrays; an equal one, e.g. with metadata, also passes;
#: another byte order does not, and takes the exact checks)
_FLOAT32 = np.dtype(np.float32)

#: Step arrays up to this many entries are summed as Python floats by :func:`_float32_finite` (beyond ~100 entries a
#: NumPy reduction is the cheaper test)
SMALL_ARRAY = 64


def _float32_finite(values: Any) -> bool:
    """
    Fast test of a step's array: True only for a float32 NumPy array whose entries are all finite (NaN and inf carry
    through a sum); False otherwise (other types and dtypes, non-finite entries, or finite values whose float32 sum
    overflows: the exact check decides). Arrays of at most :data:`SMALL_ARRAY` entries (a step's rewards, the
    observations of a few vector envs) are summed as Python floats: float32 values convert exactly and cannot add up
    beyond float64's range, and at these sizes that costs less than a NumPy reduction, whose fixed setup dominates
    (8 entries: ~0.3 against ~0.9 us in a tight loop, more inside a collection loop). Larger arrays: their float32
    sum.

    :param values: an observation or reward batch
    """
    if type(values) is not np.ndarray:
        return False
    dtype = values.dtype
    if dtype is not _FLOAT32 and dtype != _FLOAT32:
        return False
    if values.size <= SMALL_ARRAY:
        return math.isfinite(sum(values.ravel().tolist()))
    return math.isfinite(np.add.reduce(values, None))


def _any_done(dones: np.ndarray) -> bool:
    """Whether any env's episode ended (``np.any``), through a list of Python bools for a vector of up to
    :data:`SMALL_ARRAY` flags (cheaper there)."""
    if type(dones) is np.ndarray and dones.ndim == 1 and dones.size <= SMALL_ARRAY:
        return any(dones.tolist())
    return bool(np.any(dones))


def _first_non_finite(values: np.ndarray, float32_range: bool = True) -> tuple[int, Any] | None:
    """
    ``(env index, value)`` of the first env whose entry is not finite in float32 (None if all are).

    :param values: one row per env
    :param float32_range: float64 values beyond float32's range count as non-finite (inf in the float32 policy);
        False: NaN and inf only (values a VecNormalize normalises in float64 before the policy sees them)
    """
    values = np.asarray(values)
    if values.dtype.kind not in "fc":  # integer / boolean observations cannot hold NaN or inf
        return None
    if _sum_fits(values, FLOAT32_MAX if float32_range else math.inf):
        return None
    rows_view = values.reshape(len(values), -1)
    bad = ~np.isfinite(rows_view)
    if float32_range and values.dtype.itemsize > 4:  # float64 (or wider): beyond float32's range is inf in the policy
        bad |= np.abs(rows_view) > FLOAT32_MAX
    rows = np.flatnonzero(bad.any(axis=1))
    if len(rows) == 0:
        return None
    row = int(rows[0])
    return row, rows_view[row][bad[row]][0]


def non_finite_rows(values: np.ndarray) -> np.ndarray:
    """
    One flag per row (first axis) of ``values``: an entry is NaN or inf, or (floats wider than float32) beyond
    float32's range, inf once the float32 policy takes it. Integer and boolean arrays have none.

    :param values: an array, one row per step / sample
    :return: boolean flags, shape ``(len(values),)``
    """
    values = np.asarray(values)
    rows = values.reshape(len(values), -1)
    if values.dtype.kind not in "fc":
        return np.zeros(len(values), dtype=bool)
    bad = ~np.isfinite(rows)
    if values.dtype.itemsize > 4:
        bad |= np.abs(rows) > FLOAT32_MAX
    return cast(np.ndarray, bad.any(axis=1))


def _raise(what: str, env_index: int, value: Any, step: str) -> None:
    if np.isfinite(value):  # a float64 value beyond float32's range
        value = f"{value}, beyond float32's range: inf in the float32 policy and rollout buffer"
    raise ValueError(
        f"Non-finite {what} ({value}) from env {env_index} at {step}: sb3_cherry does not train on NaN or inf, and the "
        "model keeps its parameters from before this rollout (a VecNormalize in the env has already taken the value "
        "into its running statistics: reload them before going on). Fix the environment (or its wrappers: "
        "VecNormalize statistics, reward scaling) so that it returns finite values; SB3's VecCheckNan(env, "
        "raise_exception=True) can locate the action that produced it."
    )


def check_finite_observation(
    obs: np.ndarray | Mapping[str, np.ndarray], what: str, step: str, float32_range: bool = True
) -> None:
    """
    Raise a ValueError if a batch of observations (one row per env; Dict observations key by key) is not finite.

    :param obs: the observations, batch first
    :param what: how to name them in the message (``"observation"``, ``"terminal observation"``)
    :param step: where it happened, e.g. ``"num_timesteps=1234"``
    :param float32_range: float64 values beyond float32's range count as non-finite (False: NaN and inf only)
    :raises ValueError: naming ``what``, the env index and ``step``
    """
    if isinstance(obs, Mapping):
        for key, value in obs.items():
            check_finite_observation(value, f"{what} (key {key!r})", step, float32_range)
        return
    found = _first_non_finite(obs, float32_range)
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
    ended, their ``terminal_observation`` (every one: SB3 bootstraps from those of time-limit truncations, BCO, GAIL
    and the demonstrations store them all as next observations). A ``VecNormalize`` in the env reports its
    normalised values (a raw ``inf`` reward can show as ``nan``), and has already taken the value into its running
    statistics.

    :param new_obs: observations returned by the step (batch first)
    :param rewards: rewards, shape ``(n_envs,)``
    :param dones: episode ends, shape ``(n_envs,)``
    :param infos: one info dict per env
    :param num_timesteps: the model's ``num_timesteps`` after this step (reported in the message)
    :raises ValueError: naming what was non-finite, the env index and the step
    """
    # Fast path (every step): float32 arrays with finite entries (_float32_finite); other arrays go to the exact
    # checks, which start with their own one-sum test (_first_non_finite). Terminal observations are checked before
    # the rewards: AIRL's rewards are computed from them.
    if not _float32_finite(new_obs):
        check_finite_observation(new_obs, "observation", f"num_timesteps={num_timesteps}")
    if _any_done(dones):
        infos = list(infos)
        for index in np.flatnonzero(dones):
            terminal = infos[index].get("terminal_observation")
            if terminal is None or _float32_finite(terminal):
                continue
            if isinstance(terminal, Mapping):
                terminal = {key: np.asarray(value)[None] for key, value in terminal.items()}
            else:
                terminal = np.asarray(terminal)[None]
            try:
                check_finite_observation(terminal, "terminal observation", f"num_timesteps={num_timesteps}")
            except ValueError as error:  # report the env's own index, not 0 of the one-row batch
                raise ValueError(str(error).replace("from env 0 ", f"from env {index} ", 1)) from None
    if rewards is not None and not _float32_finite(rewards):
        found = _first_non_finite(rewards)
        if found is not None:
            _raise("reward", found[0], found[1], f"num_timesteps={num_timesteps}")


def check_finite_raw_step(vec_normalize: Any, num_timesteps: int) -> None:
    """
    Check the unnormalised observations and rewards of a ``VecNormalize``'s last step for NaN and inf: with frozen
    statistics (``training=False``) it clips a raw ``inf`` to ``clip_obs`` / ``clip_reward``, a finite value that would
    train silently. (A float64 value beyond float32's range is fine here: it is normalised in float64. The terminal
    observations are normalised in place: a raw ``inf`` there reaches the policy clipped.)

    :param vec_normalize: the ``VecNormalize`` (its ``old_obs`` / ``old_reward``, the raw values of the last step)
    :param num_timesteps: the model's ``num_timesteps`` after this step (reported in the message)
    :raises ValueError: naming what was non-finite, the env index and the step
    """
    step = f"num_timesteps={num_timesteps}"
    raw_obs = getattr(vec_normalize, "old_obs", None)
    if raw_obs is not None:
        check_finite_observation(raw_obs, "observation (before VecNormalize)", step, float32_range=False)
    raw_rewards = getattr(vec_normalize, "old_reward", None)
    if raw_rewards is not None:
        found = _first_non_finite(raw_rewards, float32_range=False)
        if found is not None:
            _raise("reward (before VecNormalize)", found[0], found[1], step)


def non_finite_statistics(vec_normalize: Any) -> str | None:
    """
    :param vec_normalize: a ``VecNormalize`` (or any object with its ``obs_rms`` / ``ret_rms``; read from the object
        itself: one not yet given its venv, with ``norm_obs=False``, has no ``obs_rms``, and ``VecEnvWrapper``'s
        attribute lookup would recurse without a venv)
    :return: the first non-finite field of its running statistics (``"obs_rms.var"``, ``"obs_rms['image'].mean"``,
        ``"ret_rms.count"``, ...), None if all are finite
    """
    attributes = vars(vec_normalize)
    rms_by_name: dict[str, Any] = {"ret_rms": attributes.get("ret_rms")}
    obs_rms = attributes.get("obs_rms")
    rms_by_name.update(
        {f"obs_rms[{k!r}]": v for k, v in obs_rms.items()} if isinstance(obs_rms, dict) else {"obs_rms": obs_rms}
    )
    for name, rms in rms_by_name.items():
        if rms is None:
            continue
        for field in ("mean", "var", "count"):
            if not np.all(np.isfinite(np.asarray(getattr(rms, field, 0.0), dtype=np.float64))):
                return f"{name}.{field}"
    return None


def check_finite_normalization(vec_normalize: Any, step: str) -> None:
    """
    Raise a ValueError if a ``VecNormalize``'s running statistics are not finite: values too large for the running
    variance (an observation of 1e200) make it inf, after which every normalised value reads 0 or NaN, finite to the
    per-step checks.

    :param vec_normalize: the training env's ``VecNormalize`` (None: nothing to check)
    :param step: where it happened, for the message
    :raises ValueError: naming the statistic
    """
    field = non_finite_statistics(vec_normalize) if vec_normalize is not None else None
    if field is not None:
        raise ValueError(
            f"The VecNormalize statistics {field} are not finite (NaN or inf) at {step}: the env returned values too "
            "large for their running variance (e.g. 1e200), and every normalised value would read 0 or NaN. Fix the "
            "environment (or clip its values before VecNormalize). The model keeps its parameters from before this "
            "rollout."
        )


class FiniteCheckCallback(BaseCallback):
    """
    Raises a ValueError at the first non-finite observation or reward of ``collect_rollouts`` (SB3's and
    sb3-contrib's), before the policy sees it; added first by the sb3_cherry on-policy algorithms while
    ``check_finite`` is True. Reads ``new_obs``, ``rewards``, ``dones`` and ``infos`` from the collection loop's locals.
    """

    #: the env's VecNormalize (None: none), whose raw values of each step are checked too
    _vec_normalize: Any = None

    def update_locals(self, locals_: dict[str, Any]) -> None:
        """
        Keep the collection loop's locals (read by :meth:`_on_step` right after): a reference to the dict, not a copy
        of its entries as ``BaseCallback.update_locals`` makes at every step (this callback is the only reader).

        :param locals_: the loop's ``locals()``
        """
        self.locals = locals_

    def _on_rollout_start(self) -> None:
        self._vec_normalize = self.model.get_vec_normalize_env()
        last_obs = self.model._last_obs
        if last_obs is not None and not _float32_finite(last_obs):
            check_finite_observation(last_obs, "observation", f"reset / rollout start, num_timesteps={self.num_timesteps}")

    def _on_step(self) -> bool:
        local = self.locals
        # (a training VecNormalize turns a raw inf into NaN, found below, and into its statistics, checked at the end)
        if self._vec_normalize is not None and not self._vec_normalize.training:
            check_finite_raw_step(self._vec_normalize, self.num_timesteps)
        check_finite_step(local["new_obs"], local["rewards"], local["dones"], local["infos"], self.num_timesteps)
        return True

    def _on_rollout_end(self) -> None:
        """
        What finite steps can still make non-finite, before any update: a training ``VecNormalize``'s running
        statistics (an observation of 1e200 overflows the variance, and every normalised value then reads 0), and the
        returns / advantages (finite rewards whose discounted sums overflow float32).
        """
        step = f"the end of the rollout, num_timesteps={self.num_timesteps}"
        keeps = "The model keeps its parameters from before this rollout."
        check_finite_normalization(self.model.get_vec_normalize_env(), step)
        buffer = getattr(self.model, "rollout_buffer", None)
        for name in ("returns", "advantages"):
            values = getattr(buffer, name, None)
            if not isinstance(values, np.ndarray) or _float32_finite(values) or _sum_fits(values):
                continue
            if not np.isfinite(values).all():
                raise ValueError(
                    f"Non-finite {name} at {step}: the rewards were finite, but their discounted sums overflowed "
                    "float32. Scale the rewards (VecNormalize(norm_reward=True), or a reward-scaling wrapper). "
                    f"{keeps}"
                )


class UpdateSnapshot:
    """
    Copies of modules' parameters and buffers and of their optimizers' state, from before an update, restored if the
    update turns out non-finite.

    Two copies alternate, each one flat buffer (float32 tensors; others are copied one by one): :meth:`check`
    copies the values after an update into the spare buffer and tests that one buffer with one ``isfinite`` (so the
    parameters, buffers and optimizer state are all checked); if they are finite, that copy is the snapshot of the
    next update (parameters only change in updates), so a steady-state update costs one fused copy and one
    reduction. :meth:`invalidate` (at each ``learn``) forces a fresh copy before the next update, in case the
    parameters were changed in between (``set_parameters``, loading).

    :param modules: the modules whose parameters and buffers are saved
    :param optimizers: their optimizers
    """

    def __init__(self, modules: list[th.nn.Module], optimizers: list[th.optim.Optimizer]):
        self.modules = modules
        self.optimizers = optimizers
        self._key: tuple | None = None
        self._floating: list[th.Tensor] = []
        self._live: list[th.Tensor] = []
        self._state_keys: list[list[tuple[th.Tensor, str]]] = []
        # two snapshots: (flat float32 storage, per-tensor views / copies); _current is the valid one
        self._copies: list[tuple[th.Tensor, list[th.Tensor]]] = []
        self._other_floating: list[list[th.Tensor]] = [[], []]
        self._flat_sources: list[th.Tensor] | None = None
        self._current = 0
        self._valid = False

    def _layout_key(self) -> tuple:
        # Parameters are updated in place and optimizer state tensors too (their dicts are replaced only when the
        # state is created or loaded); a device move replaces a parameter's storage (its data_ptr changes)
        return (
            tuple(id(m) for m in self.modules),
            tuple([p.data_ptr() for p in self._floating]),
            tuple([(id(o), tuple(map(id, o.state.values()))) for o in self.optimizers]),
        )

    def _new_copy(self) -> tuple[th.Tensor, list[th.Tensor]]:
        n_float = sum(t.numel() for t in self._live if t.dtype == th.float32)
        device = self._live[0].device if self._live else th.device("cpu")
        flat = th.empty(n_float, dtype=th.float32, device=device)
        views, offset = [], 0
        for t in self._live:
            if t.dtype == th.float32:
                views.append(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()
            else:
                views.append(t.clone())
        return flat, views

    def _rebuild(self) -> None:
        self._floating = [t for m in self.modules for t in m.parameters() if t.is_floating_point()]
        self._live = [t.detach() for m in self.modules for t in (*m.parameters(), *m.buffers())]
        self._state_keys = []
        for optimizer in self.optimizers:
            entries = [(p, k) for p, st in optimizer.state.items() for k, v in st.items() if isinstance(v, th.Tensor)]
            self._state_keys.append(entries)
            self._live += [optimizer.state[p][k].detach() for p, k in entries]
        self._copies = [self._new_copy(), self._new_copy()]
        self._other_floating = [[v for v in c[1] if v.is_floating_point() and v.dtype != th.float32] for c in self._copies]
        # all float32 and contiguous (the usual case): the copy in check() is one concatenation of flat views of the
        # live tensors into the spare buffer (the same layout as its views), instead of one copy per tensor
        plain = all(t.dtype == th.float32 and t.is_contiguous() for t in self._live)
        self._flat_sources = [t.view(-1) for t in self._live] if plain and self._live else None
        self._key = self._layout_key()

    def invalidate(self) -> None:
        """The parameters may have changed outside updates: copy them again before the next update."""
        self._valid = False

    def take(self) -> None:
        """Save the current values (before an update); a no-op when the last :meth:`check` already holds them (the
        layout can only change in an update, which :meth:`check` detects, or between ``learn`` calls, which
        :meth:`invalidate` covers)."""
        if self._valid:
            return
        self._rebuild()
        with th.no_grad():
            th._foreach_copy_(self._copies[self._current][1], self._live)
        self._valid = True

    def check(self) -> bool:
        """
        After an update: copy the values into the spare snapshot and test them.

        :return: whether every parameter, buffer and optimizer state value is finite (then the copy becomes the
            snapshot of the next update; otherwise the snapshot from before the update is kept for :meth:`restore`)
        """
        if self._key != self._layout_key():
            # the optimizer created its state during the update (first update): test tensor by tensor, and only if
            # finite switch to the new layout (restore still needs the old one)
            finite = self.live_finite()
            if finite:
                self._rebuild()
                with th.no_grad():
                    th._foreach_copy_(self._copies[self._current][1], self._live)
                self._valid = True
            return finite
        spare = 1 - self._current
        flat, views = self._copies[spare]
        with th.no_grad():
            if self._flat_sources is not None:
                th.cat(self._flat_sources, out=flat)
            else:
                th._foreach_copy_(views, self._live)
            # a sum is finite iff every entry is, unless finite values overflow (then the exact test decides); one sum
            # is ~10x cheaper than isfinite().all() on CPU
            finite = math.isfinite(flat.sum().item()) or bool(th.isfinite(flat).all())
            finite = finite and all(bool(th.isfinite(v).all()) for v in self._other_floating[spare])
        if finite:
            self._current = spare
            self._valid = True
        return finite

    def live_finite(self) -> bool:
        """
        Whether the current values (parameters, buffers, optimizer state) are all finite, tested tensor by tensor
        without taking them as the snapshot (an update that raised: :meth:`restore` then puts the old values back).

        :return: whether every floating-point value is finite
        """
        with th.no_grad():
            tensors = [t for m in self.modules for t in (*m.parameters(), *m.buffers())]
            tensors += [v for o in self.optimizers for st in o.state.values() for v in st.values() if isinstance(v, th.Tensor)]
            return all(bool(th.isfinite(t).all()) for t in tensors if t.is_floating_point())

    def restore(self) -> None:
        """Put the values from before the update back; optimizer state created during the update is dropped."""
        with th.no_grad():
            th._foreach_copy_(self._live, self._copies[self._current][1])
        for optimizer, entries in zip(self.optimizers, self._state_keys, strict=True):
            kept = {p for p, _ in entries}
            for p in [p for p in optimizer.state if p not in kept]:
                del optimizer.state[p]
        self._key = None
        self._valid = False


#: What to change when an update diverged on finite data (the policy updates of the on-policy algorithms and BCO)
DIVERGED_REMEDY = (
    "lower the learning rate, scale the rewards (e.g. VecNormalize), or check ent_coef / vf_coef and max_grad_norm."
)


def check_update(
    snapshot: UpdateSnapshot,
    losses: Mapping[str, Any],
    algorithm: str,
    num_timesteps: int,
    n_updates: int,
    finite: bool | None = None,
    remedy: str = DIVERGED_REMEDY,
) -> None:
    """
    After an update: if a logged loss or a parameter is not finite, restore the snapshot and raise.

    :param snapshot: taken before the update
    :param losses: the update's logged losses (``name -> value``; missing or None values are skipped)
    :param algorithm: the algorithm's name, for the message
    :param num_timesteps: the model's ``num_timesteps`` (reported)
    :param n_updates: the model's update counter (reported)
    :param finite: the result of ``snapshot.check()`` if the caller already ran it
    :param remedy: what to change, for the message
    :raises ValueError: naming the non-finite loss (or the parameters) and the step
    """
    bad = _non_finite(losses)
    if not bad and (snapshot.check() if finite is None else finite):
        return
    snapshot.restore()
    raise_non_finite_update(bad, algorithm, num_timesteps, n_updates, remedy)


@contextlib.contextmanager
def undone_if_raised(
    snapshot: UpdateSnapshot, algorithm: str, counters: Callable[[], tuple[int, int]], remedy: str = DIVERGED_REMEDY
) -> Iterator[None]:
    """
    An update that raises inside the block did not finish (e.g. a torch distribution rejecting NaN parameters in a
    later minibatch, or Ctrl-C): restore ``snapshot``, so that the model keeps its parameters and optimizer state from
    before it. If the error left non-finite values, or was torch's float overflow of an optimizer step (a learning rate
    near float32's maximum), raise the non-finite-update error naming the fix; otherwise the original exception
    propagates.

    :param snapshot: taken before the update
    :param algorithm: the algorithm's name, for the message
    :param counters: ``num_timesteps`` and the update counter at the time of the error (reported)
    :param remedy: what to change, for the message
    """
    try:
        yield
    except BaseException as error:
        finite = snapshot.live_finite()
        snapshot.restore()
        overflow = isinstance(error, RuntimeError) and "without overflow" in str(error)  # torch's message
        if isinstance(error, Exception) and (overflow or not finite):
            raise_non_finite_update({}, algorithm, *counters(), remedy)
        raise


def check_finite_weights(module: th.nn.Module, what: str, fix: str = "Load an earlier model or checkpoint.") -> None:
    """
    Refuse, before ``learn``, a module whose parameters or buffers are not finite (a model loaded from a file holding
    them, or set so): the first non-finite step would otherwise blame the env, which only received NaN actions.

    :param module: the module
    :param what: how to name it in the message (``"The policy's parameters"``)
    :param fix: what to do, for the message
    :raises ValueError: naming the first non-finite tensors
    """
    bad = [name for name, value in module.state_dict().items() if value.is_floating_point() and not th.isfinite(value).all()]
    if bad:
        raise ValueError(
            f"{what} {bad[:3]}{' ...' if len(bad) > 3 else ''} are not finite (NaN or inf) before learn: the model was "
            f"loaded from a file holding them, or set so. {fix}"
        )


def _non_finite(losses: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in losses.items() if value is not None and not math.isfinite(float(value))}


def raise_non_finite_update(
    losses: Mapping[str, Any], algorithm: str, num_timesteps: int, n_updates: int, remedy: str = DIVERGED_REMEDY
) -> None:
    """
    Raise the ValueError of an update that was not applied (or was undone) because it was non-finite.

    :param losses: the update's losses (``name -> value``); the non-finite ones are named in the message (none:
        the parameters or optimizer state were non-finite)
    :param algorithm: the algorithm's name, for the message
    :param num_timesteps: the model's ``num_timesteps`` (reported)
    :param n_updates: the model's update counter (reported)
    :param remedy: what to change, for the message
    :raises ValueError: always
    """
    bad = _non_finite(losses)
    what = (
        "loss " + ", ".join(f"{name}={value}" for name, value in bad.items())
        if bad
        else "parameters or optimizer state after the update"
    )
    raise ValueError(
        f"Non-finite {what} in the {algorithm} update at num_timesteps={num_timesteps} (n_updates={n_updates}): the "
        f"update was undone, the parameters and optimizer state are those from before it. The data were finite, so "
        f"the update itself diverged: {remedy}"
    )
