"""Per-group schedule keys of a spec: when a group starts, its own warm-up and its schedule shape.

Parsed here, at the boundary, into `ScheduleAmount` values and plain strings. A spec that uses them is
accepted by `parse_spec` but refused by `resolve_groups` until the scheduler applies them: a group whose
``start`` were silently ignored would train from step 0, which is wrong training rather than an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..errors import SpecError, describe_value, whole_number_problem

SCHEDULE_KEYS = ("start", "warmup", "schedule", "min_lr_ratio")
SCHEDULE_SHAPES = ("constant", "linear", "cosine")
START_UNITS = ("steps", "epochs", "fraction")
WARMUP_UNITS = ("steps", "ratio")
# Far above any run's optimizer steps; keeps a hostile spec from naming a 301-digit step.
MAX_SCHEDULE_STEPS = 10**12
# Likewise for epochs, so that epochs x steps per epoch stays a number a float and an int can hold.
MAX_SCHEDULE_EPOCHS = 10**6


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
    number = _fraction(amount, key, upper_open=unit in ("fraction", "ratio"))
    if unit == "epochs" and number > MAX_SCHEDULE_EPOCHS:
        raise SpecError(f"expected at most {MAX_SCHEDULE_EPOCHS:,} epochs, got {describe_value(amount)}", path=(key,))
    return ScheduleAmount(unit, number)


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


def parse_unfreeze_every(value: Any, key: str = "gradual_unfreeze") -> ScheduleAmount:
    """``gradual_unfreeze: {every: K}``: how far apart the layer sub-groups start, as a `ScheduleAmount`.

    Args:
        value: The spec's value: ``{every: 100}`` (steps), ``{every: {epochs: 1}}`` or ``{every: {fraction: 0.1}}``.
        key: Where it was given, for errors.

    Raises:
        SpecError: Not a mapping with exactly ``every``, or an interval of 0.
    """
    if not isinstance(value, Mapping) or set(value) != {"every"}:
        raise SpecError(
            "expected {every: N} (steps), {every: {epochs: N}} or {every: {fraction: F}}, got " + describe_value(value),
            path=(key,),
        )
    every = parse_amount(value["every"], key, START_UNITS)
    if every.amount == 0:
        raise SpecError("the interval between layer starts must be above 0", path=(key, "every"))
    return every


@dataclass(frozen=True)
class TrainingLength:
    """What a run's length is, so that epochs and fractions can become optimizer steps.

    Args:
        total_steps: The run's optimizer steps (``max_steps``).
        steps_per_epoch: Optimizer steps in one epoch; None when the training set has no length.
    """

    total_steps: int
    steps_per_epoch: int | None = None

    def steps(self, amount: ScheduleAmount, *, of_steps: int | None = None) -> int:
        """``amount`` in optimizer steps: epochs and fractions to the nearest step (a tie rounds up), ratios up.

        The product is taken of the number as the spec wrote it, exactly: a ratio of 0.28 over 25 steps is 7
        steps, where the float product (7.000000000000001) would round up to 8.

        Args:
            amount: The amount.
            of_steps: What a ``ratio`` is a ratio of (a group's own training); the run's length by default.

        Raises:
            ValueError: Epochs without a known epoch length (the caller words the error).
        """
        if amount.unit == "steps":
            return int(amount.amount)
        if amount.unit == "epochs":
            if self.steps_per_epoch is None:
                raise ValueError("epochs need a training set with a length")
            return math.floor(_as_written(amount.amount) * self.steps_per_epoch + Fraction(1, 2))
        if amount.unit == "fraction":
            return math.floor(_as_written(amount.amount) * self.total_steps + Fraction(1, 2))
        return math.ceil(_as_written(amount.amount) * (self.total_steps if of_steps is None else of_steps))


def _as_written(number: float) -> Fraction:
    """The decimal a spec wrote, exactly: the shortest text that reads back as the float (0.28 is 7/25)."""
    return Fraction(repr(number))


@dataclass(frozen=True)
class GroupTiming:
    """When one optimizer param group starts and how its rate moves, as the spec gave it.

    Args:
        start: The spec group's ``start``; step 0 when None.
        unfreeze_every: Under gradual unfreezing, the interval between layer sub-groups.
        unfreeze_rank: This sub-group's place from the top (0 starts first).
        warmup: The group's own warm-up; the Trainer's warm-up steps when None.
        shape: ``constant``, ``linear`` or ``cosine``; the Trainer's ``lr_scheduler_type`` when None.
        min_lr_ratio: The floor of ``cosine``.
    """

    start: ScheduleAmount | None = None
    unfreeze_every: ScheduleAmount | None = None
    unfreeze_rank: int = 0
    warmup: ScheduleAmount | None = None
    shape: str | None = None
    min_lr_ratio: float | None = None

    def start_step(self, length: TrainingLength) -> int:
        """The first optimizer step (0-based) whose update this group takes part in."""
        step = 0 if self.start is None else length.steps(self.start)
        if self.unfreeze_every is not None:
            step += self.unfreeze_rank * length.steps(self.unfreeze_every)
        return step

    def describe_start(self) -> str:
        """The start as the spec wrote it: ``0``, ``2 epochs``, ``100 steps + 3 x 1 epoch``."""
        start = "0" if self.start is None else _describe(self.start)
        if self.unfreeze_every is None or self.unfreeze_rank == 0:
            return start
        later = f"{self.unfreeze_rank} x {_describe(self.unfreeze_every)}"
        return later if self.start is None else f"{start} + {later}"

    def describe_schedule(self) -> str:
        """The shape and warm-up: ``cosine (floor 0.1), warm-up 50 steps``; ``trainer`` for the Trainer's shape."""
        shape = self.shape or "trainer"
        if self.min_lr_ratio:
            shape += f" (floor {self.min_lr_ratio:g})"
        warmup = "trainer's" if self.warmup is None else _describe(self.warmup)
        return f"{shape}, warm-up {warmup}"

    def to_data(self) -> dict[str, Any]:
        """The timing as plain data, for the plan and the checkpoint layout."""
        data: dict[str, Any] = {}
        if self.start is not None:
            data["start"] = self.start.to_spec()
        if self.unfreeze_every is not None:
            data["unfreeze_every"] = self.unfreeze_every.to_spec()
            data["unfreeze_rank"] = self.unfreeze_rank
        if self.warmup is not None:
            data["warmup"] = self.warmup.to_spec()
        if self.shape is not None:
            data["schedule"] = self.shape
        if self.min_lr_ratio is not None:
            data["min_lr_ratio"] = self.min_lr_ratio
        return data


def _describe(amount: ScheduleAmount) -> str:
    number = f"{amount.amount:g}"
    if amount.unit in ("fraction", "ratio"):
        return f"{amount.unit} {number}"
    unit = amount.unit if amount.amount != 1 else amount.unit[:-1]
    return f"{number} {unit}"
