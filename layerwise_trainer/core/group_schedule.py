"""Per-group schedule keys of a spec: when a group starts, its own warm-up and its schedule shape.

Parsed here, at the boundary, into `ScheduleAmount` values, `PlateauTrigger` values and plain strings.

A start is a point in training (steps, epochs, a fraction), or a trigger: ``{plateau: {...}}`` starts the
group at the first evaluation after which a metric has not improved for ``patience`` evaluations. The
decision itself is pure and lives here too: `PlateauRule` (the trigger for one run, in optimizer steps, its
direction settled) and `PlateauWatch` (what it has seen so far) fold a sequence of evaluations into a start
step; `plateau_start` is that fold. The per-group scheduler keeps the watch in its state, so a resume
continues it, and records the decided step, after which the group's rate is again a function of the step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..errors import SpecError, describe_value, did_you_mean, whole_number_problem

SCHEDULE_KEYS = ("start", "warmup", "schedule", "min_lr_ratio")
# A start decided at an evaluation: `start: {plateau: {...}}`, `gradual_unfreeze: {every: {plateau: {...}}}`.
PLATEAU_KEY = "plateau"
PLATEAU_KEYS = ("metric", "patience", "min_delta", "greater_is_better", "earliest", "latest")
# The metric every evaluation of a labelled eval set logs; the Trainer's metric_for_best_model default too.
DEFAULT_PLATEAU_METRIC = "eval_loss"
# The Trainer prefixes every evaluation metric with this (metric_key_prefix), and so does metric_for_best_model.
METRIC_PREFIX = "eval_"
MAX_PATIENCE = 10**6
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


def parse_amount(value: Any, key: str, units: tuple[str, ...], other_forms: str = "") -> ScheduleAmount:
    """``start`` or ``warmup`` as a `ScheduleAmount`: a whole number of steps or ``{unit: number}``.

    Args:
        value: The spec's value, or a `ScheduleAmount` (checked the same way).
        key: The key, for errors.
        units: The units a one-key mapping may name.
        other_forms: Further forms the key takes, named in the error (``", {plateau: {...}}"``).

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
        forms = ", ".join(f"{{{unit}: ...}}" for unit in units) + other_forms
        raise SpecError(f"expected a whole number of steps or one of {forms}, got {describe_value(value)}", path=(key,))
    unit, amount = next(iter(value.items()))
    if unit == "steps":
        return ScheduleAmount(unit, _steps(amount, key))
    number = _fraction(amount, key, upper_open=unit in ("fraction", "ratio"))
    if unit == "epochs" and number > MAX_SCHEDULE_EPOCHS:
        raise SpecError(f"expected at most {MAX_SCHEDULE_EPOCHS:,} epochs, got {describe_value(amount)}", path=(key,))
    return ScheduleAmount(unit, number)


# Starts decided at an evaluation.

_TRIGGER_FORM = ", {plateau: {...}}"


@dataclass(frozen=True)
class PlateauTrigger:
    """A start decided at an evaluation: once ``metric`` has not improved for ``patience`` evaluations in a row.

    An evaluation improves on the best value seen so far when it is better by more than ``min_delta`` (the
    rule of transformers' ``EarlyStoppingCallback``). The trigger watches the evaluations after it begins
    watching: from the start of training for ``start``, from the start of the layer above for
    ``gradual_unfreeze: {every: {plateau: ...}}``. ``earliest`` and ``latest`` count from there too.

    Args:
        metric: The metric as the Trainer logs it (``eval_loss``, ``eval_accuracy``); a name without the
            ``eval_`` prefix gets it, as ``metric_for_best_model`` does.
        patience: Evaluations in a row without an improvement that make a plateau (1 or more).
        min_delta: How much better than the best so far a value must be to count as an improvement.
        greater_is_better: Whether a higher value is better; when None, the Trainer's convention decides:
            ``TrainingArguments.greater_is_better`` for the ``metric_for_best_model``, else higher is better
            unless the name ends with ``loss``.
        earliest: The group does not start before this (steps, ``{epochs: E}`` or ``{fraction: F}``).
        latest: The group starts here at the latest, plateau or not, so that a run never waits forever.

    Example:
        ```python
        trigger = PlateauTrigger(metric="eval_loss", patience=2, min_delta=0.001, latest=ScheduleAmount("steps", 2000))
        assert trigger.to_spec()["plateau"]["latest"] == 2000
        ```
    """

    metric: str = DEFAULT_PLATEAU_METRIC
    patience: int = 1
    min_delta: float = 0.0
    greater_is_better: bool | None = None
    earliest: ScheduleAmount | None = None
    latest: ScheduleAmount | None = None

    def to_spec(self) -> dict[str, dict[str, Any]]:
        """The trigger as a spec writes it: ``{plateau: {metric: eval_loss, patience: 2, ...}}``."""
        keys: dict[str, Any] = {"metric": self.metric, "patience": self.patience, "min_delta": self.min_delta}
        if self.greater_is_better is not None:
            keys["greater_is_better"] = self.greater_is_better
        for key in ("earliest", "latest"):
            amount = getattr(self, key)
            if amount is not None:
                keys[key] = amount.to_spec()
        return {PLATEAU_KEY: keys}

    def describe(self) -> str:
        """``eval_loss plateau (patience 2, min_delta 0.001, latest 2000 steps)``, for tables."""
        details = [f"patience {self.patience}"]
        if self.min_delta:
            details.append(f"min_delta {self.min_delta:g}")
        if self.greater_is_better is not None:
            details.append("higher is better" if self.greater_is_better else "lower is better")
        details += [f"{key} {_describe(getattr(self, key))}" for key in ("earliest", "latest") if getattr(self, key)]
        return f"{self.metric} plateau ({', '.join(details)})"


# What a parsed `start` or `gradual_unfreeze` interval is: a point in training, or a trigger.
START_TYPES = (ScheduleAmount, PlateauTrigger)


def _is_trigger(value: Any) -> bool:
    return isinstance(value, PlateauTrigger) or (isinstance(value, Mapping) and PLATEAU_KEY in value)


def parse_start(value: Any, key: str = "start") -> ScheduleAmount | PlateauTrigger:
    """``start``: a point in training (`parse_amount`) or a trigger ``{plateau: {...}}`` (`parse_trigger`).

    Args:
        value: The spec's value.
        key: The key, for errors.

    Returns:
        A `ScheduleAmount` or a `PlateauTrigger`.

    Raises:
        SpecError: Neither form, located at the key (inside the trigger for its keys).
    """
    if _is_trigger(value):
        return parse_trigger(value, (key,))
    return parse_amount(value, key, START_UNITS, _TRIGGER_FORM)


def parse_trigger(value: Any, path: tuple[str, ...]) -> PlateauTrigger:
    """``{plateau: {metric: ..., patience: ..., ...}}`` as a `PlateauTrigger`, every key checked.

    Args:
        value: The mapping with the one key ``plateau``, or a `PlateauTrigger` (checked the same way).
        path: Where it was given (``("start",)``, ``("gradual_unfreeze", "every")``), for errors.

    Raises:
        SpecError: Another key beside ``plateau``, an unknown key inside it (with a did-you-mean), or a value
            out of range; the path names the key (``start.plateau.patience``).
    """
    if isinstance(value, PlateauTrigger):
        value = value.to_spec()
    if len(value) != 1:
        raise SpecError(f"expected {{plateau: {{...}}}} alone, got {describe_value(value)}", path=path)
    keys = value[PLATEAU_KEY]
    where = (*path, PLATEAU_KEY)
    if not isinstance(keys, Mapping):
        expected = "a mapping of " + ", ".join(PLATEAU_KEYS)
        raise SpecError(f"expected {expected}, got {describe_value(keys)}", path=where)
    for key in keys:
        if key not in PLATEAU_KEYS:
            hint = did_you_mean(str(key), PLATEAU_KEYS) or "."
            raise SpecError(f"unknown key {key!r}{hint} Expected: {', '.join(PLATEAU_KEYS)}", path=(*where, str(key)))
    try:
        trigger = PlateauTrigger(
            metric=_metric_name(keys.get("metric", DEFAULT_PLATEAU_METRIC)),
            patience=_patience(keys.get("patience", 1)),
            min_delta=_fraction(keys.get("min_delta", 0.0), "min_delta", upper_open=False),
            greater_is_better=_optional_bool(keys.get("greater_is_better")),
            earliest=_optional_amount(keys.get("earliest"), "earliest"),
            latest=_optional_amount(keys.get("latest"), "latest"),
        )
    except SpecError as error:
        raise error.within(*where) from None
    earliest, latest = trigger.earliest, trigger.latest
    # Bounds in one unit compare here; in different units they compare at train start, in steps.
    if earliest is not None and latest is not None and earliest.unit == latest.unit and earliest.amount > latest.amount:
        raise SpecError(
            f"the latest start ({_describe(latest)}) comes before the earliest ({_describe(earliest)})",
            path=(*where, "latest"),
        )
    return trigger


def _metric_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"expected a metric name such as 'eval_loss', got {describe_value(value)}", path=("metric",))
    return value if value.startswith(METRIC_PREFIX) else METRIC_PREFIX + value


def _patience(value: Any) -> int:
    problem = whole_number_problem(value, minimum=1, maximum=MAX_PATIENCE)
    if problem is not None:
        raise SpecError(f"expected {problem} (evaluations), got {describe_value(value)}", path=("patience",))
    return int(value)


def _optional_bool(value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise SpecError(f"expected true or false, got {describe_value(value)}", path=("greater_is_better",))
    return value


def _optional_amount(value: Any, key: str) -> ScheduleAmount | None:
    return None if value is None else parse_amount(value, key, START_UNITS)


@dataclass(frozen=True)
class PlateauRule:
    """A `PlateauTrigger` for one run: its direction settled and its bounds in optimizer steps.

    ``earliest`` and ``latest`` count from the step the trigger begins watching at.

    Args:
        metric: The metric's key in the evaluation's metrics.
        greater_is_better: Whether a higher value is better.
        patience: Evaluations in a row without an improvement that make a plateau.
        min_delta: The least improvement that counts.
        earliest: Steps after which a plateau may start the group.
        latest: Steps after which the group starts anyway; None: it waits for a plateau.

    Example:
        ```python
        rule = PlateauRule(metric="eval_loss", greater_is_better=False, patience=2, min_delta=0.01)
        assert plateau_start(rule, [(10, 1.0), (20, 0.995), (30, 0.99)]) == 30
        ```
    """

    metric: str
    greater_is_better: bool
    patience: int
    min_delta: float = 0.0
    earliest: int = 0
    latest: int | None = None

    def improves(self, value: float, best: float | None) -> bool:
        """Whether ``value`` is better than ``best`` by more than ``min_delta`` (any number beats None; NaN nothing)."""
        if math.isnan(value):
            return False
        if best is None:
            return True
        better = value > best if self.greater_is_better else value < best
        return better and abs(value - best) > self.min_delta


@dataclass(frozen=True)
class PlateauWatch:
    """What a trigger has seen since it began watching: the best value, and the evaluations since it improved.

    Args:
        best: The best value so far; None before the first evaluation.
        stale: Evaluations in a row without an improvement.
    """

    best: float | None = None
    stale: int = 0

    def after(self, value: float, rule: PlateauRule) -> PlateauWatch:
        """The watch after one more evaluation of ``rule``'s metric."""
        if rule.improves(value, self.best):
            return PlateauWatch(best=float(value), stale=0)
        return PlateauWatch(best=self.best, stale=self.stale + 1)

    def fires(self, rule: PlateauRule, steps_watched: int) -> bool:
        """Whether this is a plateau that may start the group, ``steps_watched`` steps after watching began."""
        return self.stale >= rule.patience and steps_watched >= rule.earliest


def plateau_start(rule: PlateauRule, evaluations: Iterable[tuple[int, float]], since: int = 0) -> int | None:
    """The step at which ``rule`` starts its group, given the evaluations ``(step, value)`` in order.

    Evaluations at or before ``since`` (where watching begins) are not counted. The group starts at the step of
    the evaluation that completes a plateau at or after ``since + earliest``, or at ``since + latest`` when no
    plateau came before it.

    Args:
        rule: The trigger.
        evaluations: Each evaluation's optimizer step and the metric's value, in order.
        since: The step the trigger begins watching at.

    Returns:
        The start step; None when neither a plateau nor ``latest`` came within the evaluations given.

    Example:
        ```python
        rule = PlateauRule(metric="eval_loss", greater_is_better=False, patience=1, latest=50)
        assert plateau_start(rule, [(10, 0.9), (20, 0.8)]) is None
        assert plateau_start(rule, [(10, 0.9), (20, 0.8), (30, 0.85)]) == 30
        assert plateau_start(rule, [(10, 0.9), (60, 0.8)]) == 50
        ```
    """
    watch = PlateauWatch()
    for step, value in evaluations:
        if rule.latest is not None and step >= since + rule.latest:
            return since + rule.latest
        if step <= since:
            continue
        watch = watch.after(value, rule)
        if watch.fires(rule, step - since):
            return step
    return None


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


def parse_unfreeze_every(value: Any, key: str = "gradual_unfreeze") -> ScheduleAmount | PlateauTrigger:
    """``gradual_unfreeze: {every: K}``: how far apart the layer sub-groups start.

    Args:
        value: The spec's value: ``{every: 100}`` (steps), ``{every: {epochs: 1}}``, ``{every: {fraction: 0.1}}``,
            or ``{every: {plateau: {...}}}`` (each layer on the next plateau after the one above started).
        key: Where it was given, for errors.

    Returns:
        A `ScheduleAmount`, or a `PlateauTrigger`.

    Raises:
        SpecError: Not a mapping with exactly ``every``, an interval of 0, or a trigger that `parse_plateau`
            refuses.
    """
    if not isinstance(value, Mapping) or set(value) != {"every"}:
        raise SpecError(
            "expected {every: N} (steps), {every: {epochs: N}}, {every: {fraction: F}} or {every: {plateau: {...}}}, "
            "got " + describe_value(value),
            path=(key,),
        )
    if _is_trigger(value["every"]):
        return parse_trigger(value["every"], (key, "every"))
    every = parse_amount(value["every"], key, START_UNITS, _TRIGGER_FORM)
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
        start: The spec group's ``start``, a point or a `PlateauTrigger`; step 0 when None.
        unfreeze_every: Under gradual unfreezing, the interval between layer sub-groups, or a `PlateauTrigger`
            (each layer starts on the next plateau after the layer above started).
        unfreeze_rank: This sub-group's place from the top (0 starts first).
        warmup: The group's own warm-up; the Trainer's warm-up steps when None.
        shape: ``constant``, ``linear`` or ``cosine``; the Trainer's ``lr_scheduler_type`` when None.
        min_lr_ratio: The floor of ``cosine``.
    """

    start: ScheduleAmount | PlateauTrigger | None = None
    unfreeze_every: ScheduleAmount | PlateauTrigger | None = None
    unfreeze_rank: int = 0
    warmup: ScheduleAmount | None = None
    shape: str | None = None
    min_lr_ratio: float | None = None

    @property
    def has_trigger(self) -> bool:
        """Whether an evaluation decides the group's start or, under gradual unfreezing, a layer's in its group."""
        return isinstance(self.start, PlateauTrigger) or isinstance(self.unfreeze_every, PlateauTrigger)

    @property
    def starts_later(self) -> bool:
        """Whether the group's own start may come after step 0: a trigger, or a point above 0."""
        return isinstance(self.start, PlateauTrigger) or (self.start is not None and self.start.amount > 0)

    def start_step(self, length: TrainingLength) -> int:
        """The first optimizer step (0-based) whose update this group takes part in.

        Raises:
            ValueError: The group has a trigger (`has_trigger`): evaluations decide its starts.
        """
        if self.has_trigger:
            raise ValueError("an evaluation decides this start")
        step = 0 if self.start is None else length.steps(self.start)  # type: ignore[arg-type]
        if self.unfreeze_every is not None:
            step += self.unfreeze_rank * length.steps(self.unfreeze_every)  # type: ignore[arg-type]
        return step

    def describe_start(self) -> str:
        """The start as the spec wrote it: ``0``, ``2 epochs``, ``100 steps + 3 x 1 epoch``,
        ``eval_loss plateau (patience 2) + 1 x 20 steps``."""
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


def _describe(amount: ScheduleAmount | PlateauTrigger) -> str:
    if isinstance(amount, PlateauTrigger):
        return amount.describe()
    number = f"{amount.amount:g}"
    if amount.unit in ("fraction", "ratio"):
        return f"{amount.unit} {number}"
    unit = amount.unit if amount.amount != 1 else amount.unit[:-1]
    return f"{number} {unit}"
