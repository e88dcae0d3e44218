"""Per-group schedule keys of a spec: when a group starts, its own warm-up and its schedule shape.

Parsed here, at the boundary, into `ScheduleAmount` values and plain strings. A spec that uses them is
accepted by `parse_spec` but refused by `resolve_groups` until the scheduler applies them: a group whose
``start`` were silently ignored would train from step 0, which is wrong training rather than an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import SpecError, describe_value, whole_number_problem

SCHEDULE_KEYS = ("start", "warmup", "schedule", "min_lr_ratio")
SCHEDULE_SHAPES = ("constant", "linear", "cosine")
START_UNITS = ("steps", "epochs", "fraction")
WARMUP_UNITS = ("steps", "ratio")
# Far above any run's optimizer steps; keeps a hostile spec from naming a 301-digit step.
MAX_SCHEDULE_STEPS = 10**12


@dataclass(frozen=True)
class ScheduleAmount:
    """A point or a length in training: ``amount`` optimizer steps, epochs, or a fraction or ratio.

    Args:
        unit: ``steps``, ``epochs``, ``fraction`` (of training) or ``ratio`` (of the group's training).
        amount: The number; whole for ``steps``.

    Example:
        ```python
        ScheduleAmount("epochs", 1.0)
        ```
    """

    unit: str
    amount: float

    def to_spec(self) -> int | dict[str, float]:
        """The amount as a spec writes it: a bare whole number for steps, else ``{unit: amount}``."""
        return int(self.amount) if self.unit == "steps" else {self.unit: self.amount}


def _steps(value: Any, key: str) -> float:
    problem = whole_number_problem(value, minimum=0, maximum=MAX_SCHEDULE_STEPS)
    if problem is not None:
        raise SpecError(f"expected {problem}, got {describe_value(value)}", path=(key,))
    return float(value)


def _fraction(value: Any, key: str, *, upper_open: bool) -> float:
    expected = "a number in [0, 1)" if upper_open else "a number >= 0"
    fine = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not fine or (upper_open and value >= 1):
        raise SpecError(f"expected {expected}, got {describe_value(value)}", path=(key,))
    return float(value)


def parse_amount(value: Any, key: str, units: tuple[str, ...]) -> ScheduleAmount:
    """``start`` or ``warmup`` as a `ScheduleAmount`: a whole number of steps or ``{unit: number}``.

    Args:
        value: The spec's value, or a `ScheduleAmount` (checked the same way).
        key: The key, for errors.
        units: The units a one-key mapping may name.

    Returns:
        The `ScheduleAmount`.

    Raises:
        SpecError: Not a whole number of steps nor a one-key mapping with an allowed unit and number.
    """
    if isinstance(value, ScheduleAmount):
        value = {value.unit: value.amount}
    if not isinstance(value, Mapping):
        return ScheduleAmount("steps", _steps(value, key))
    if len(value) != 1 or next(iter(value)) not in units:
        forms = ", ".join(f"{{{unit}: ...}}" for unit in units)
        raise SpecError(f"expected a whole number of steps or one of {forms}, got {describe_value(value)}", path=(key,))
    unit, amount = next(iter(value.items()))
    if unit == "steps":
        return ScheduleAmount(unit, _steps(amount, key))
    return ScheduleAmount(unit, _fraction(amount, key, upper_open=unit in ("fraction", "ratio")))


def parse_shape(value: Any) -> str:
    """``schedule`` checked against `SCHEDULE_SHAPES`."""
    if value not in SCHEDULE_SHAPES:
        raise SpecError(
            f"expected one of {', '.join(SCHEDULE_SHAPES)}, got {describe_value(value)}", path=("schedule",)
        )
    return str(value)


def parse_min_lr_ratio(value: Any, shape: str | None) -> float:
    """``min_lr_ratio``: the cosine floor as a ratio of the group's rate, only with ``schedule: cosine``."""
    if shape != "cosine":
        raise SpecError("'min_lr_ratio' is the floor of 'schedule: cosine'; set that too", path=("min_lr_ratio",))
    number = _fraction(value, "min_lr_ratio", upper_open=False)
    if number > 1:
        raise SpecError(f"expected a number in [0, 1], got {describe_value(value)}", path=("min_lr_ratio",))
    return number
