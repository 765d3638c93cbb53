"""
Schedules for loss coefficients (``ent_coef``) in the forms a user writes them: a number, an SB3 schedule (a function
of ``progress_remaining``, 1 at the start of ``learn`` and 0 at its end), rl_zoo3's ``"lin_<value>"`` string, or a
mapping ``{"start": ..., "end": ..., "end_fraction": ...}`` for SB3's
:class:`~stable_baselines3.common.utils.LinearSchedule` (the YAML form of an entropy bonus that decays to 0 over the
first part of a run).

Strings and mappings are accepted by the constructors themselves so that a zoo YAML entry works unchanged through
rl_zoo3 (whose own schedule parsing only covers ``learning_rate`` and the clip ranges), the benchmarks and a saved
model (both forms are stored as plain JSON).
"""

import math
import numbers
from collections.abc import Callable, Mapping

from stable_baselines3.common.utils import ConstantSchedule, LinearSchedule

#: What ``ent_coef`` accepts: a number, a schedule, ``"lin_<value>"`` or ``{"start", "end", "end_fraction"}``
CoefficientSchedule = float | Callable[[float], float] | str | Mapping[str, float]

_MAPPING_KEYS = ("start", "end", "end_fraction")


def _finite(value: object, name: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: {what} must be a number, got {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"{name}: {what} must be a finite number, got {value!r}.")
    return float(value)


class ZooLinearSchedule:
    """
    rl_zoo3's ``lin_<value>`` schedule, ``progress_remaining * initial_value`` (bit for bit rl_zoo3's
    ``SimpleLinearSchedule`` while ``progress_remaining >= 0``), held at 0 once ``progress_remaining`` is negative:
    SB3 computes the progress after each rollout, so the last rollout of a run that overshoots ``total_timesteps``
    trains with a negative progress, where rl_zoo3's value is negative (a negative learning rate or clip range).

    :param initial_value: the value at the start of the run
    """

    def __init__(self, initial_value: float) -> None:
        self.initial_value = float(initial_value)

    def __call__(self, progress_remaining: float) -> float:
        return max(progress_remaining, 0.0) * self.initial_value

    def __repr__(self) -> str:
        return f"ZooLinearSchedule(initial_value={self.initial_value!r})"


def coefficient_schedule(value: CoefficientSchedule, name: str = "ent_coef") -> Callable[[float], float]:
    """
    The schedule of a loss coefficient given in any of its accepted forms.

    - a number ``c`` -> ``ConstantSchedule(c)`` (``float(c)`` at every update, bit-identical to SB3's float);
    - ``"lin_<c>"`` (rl_zoo3) -> SB3's ``LinearSchedule(c, 0, 1)``: linear from ``c`` to 0 over the whole run
      (``c * progress_remaining``, and 0 once a last rollout runs past ``total_timesteps``);
    - ``{"start": c0, "end": c1, "end_fraction": f}`` -> SB3's ``LinearSchedule(c0, c1, f)``: linear from ``c0`` to
      ``c1`` over the first ``f`` of the run, then ``c1`` (``end`` defaults to 0, ``end_fraction`` to 1);
    - a callable ``progress_remaining -> value`` (an SB3 schedule) -> itself; its values are checked when used. A
      schedule object of SB3 (``LinearSchedule``, ``ConstantSchedule``, ``FloatSchedule``) is saved with the model
      and rebuilt by the safe loader; a plain function is only restored with ``allow_pickle=True`` (otherwise
      ``load`` warns and uses the default, 0).

    :param value: the coefficient or its schedule
    :param name: the hyperparameter's name, for error messages
    :return: a function of ``progress_remaining`` (1 at the start of ``learn``, 0 at the end)
    :raises ValueError: a malformed string or mapping, or a non-finite number
    """
    if isinstance(value, str):
        kind, _, number = value.partition("_")
        try:
            start = float(number)
        except ValueError:
            start = math.nan
        if kind != "lin" or not math.isfinite(start):
            raise ValueError(
                f"{name}: a string must be rl_zoo3's linear schedule 'lin_<value>' (e.g. 'lin_0.01'), got {value!r}."
            )
        return LinearSchedule(start, 0.0, 1.0)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(_MAPPING_KEYS))
        if unknown or "start" not in value:
            raise ValueError(
                f"{name}: a schedule mapping has the keys 'start' (required), 'end' (default 0) and 'end_fraction' "
                f"(default 1, the fraction of the run after which 'end' is kept), got {dict(value)!r}."
            )
        start = _finite(value["start"], name, "'start'")
        end = _finite(value.get("end", 0.0), name, "'end'")
        end_fraction = _finite(value.get("end_fraction", 1.0), name, "'end_fraction'")
        if not 0 < end_fraction <= 1:
            raise ValueError(f"{name}: 'end_fraction' is a fraction of the run in (0, 1], got {end_fraction}.")
        return LinearSchedule(start, end, end_fraction)
    if callable(value):
        return value
    return ConstantSchedule(_finite(value, name, "the coefficient"))


def scheduled_value(schedule: Callable[[float], float], progress_remaining: float, name: str = "ent_coef") -> float:
    """
    The schedule's value at ``progress_remaining``, checked.

    :param schedule: from :func:`coefficient_schedule`
    :param progress_remaining: 1 at the start of ``learn``, 0 at the end (below 0, past the end of a last rollout
        that overshoots ``total_timesteps``: evaluated at 0)
    :param name: the hyperparameter's name, for error messages
    :return: the coefficient
    :raises ValueError: the schedule returned a non-finite value
    """
    # SB3's progress_remaining goes below 0 when the last rollout runs past total_timesteps; an SB3 schedule such as
    # rl_zoo3's linear_schedule would then turn negative: evaluate it at the end of the run instead
    progress_remaining = max(progress_remaining, 0.0)
    value = schedule(progress_remaining)
    where = f"the schedule's value at progress_remaining={progress_remaining:.4g}"
    try:
        number = float(value)  # a numpy scalar or 0-d tensor as well
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {where} must be a number, got {value!r}.") from None
    return _finite(number, name, where)
