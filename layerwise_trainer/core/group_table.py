"""What a plan does, for people and scripts: one row per logged group, and the plan as JSON data.

A plan whose groups start later or follow their own schedules gets two more columns, ``start`` and
``schedule``, as the spec wrote them (the plan knows no run length, so epochs and fractions stay as given);
a plan without them prints exactly as before, so tables and JSON that scripts read do not change.
Likewise a ``stack`` column appears only when a group's layer ids count within one stack of a model with
several (``vision_tower``, ``language_model``; ``encoder``, ``decoder``): for a model with one stack the
table is unchanged; and an ``optimizer`` column only when the spec chooses optimizers (Muon and AdamW).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from ..errors import some_names
from .group_schedule import GroupTiming
from .grouping import GroupPlan
from .layer_ids import detect_layers
from .spec import DEFAULT_GROUP_NAME, json_ready

_SHOWN_NAMES = 8
# How a trainable group without schedule keys shows: it starts with the run and follows the Trainer.
_TRAINER_START = "0"
_TRAINER_SCHEDULE = "trainer"


@dataclass(frozen=True)
class GroupRow:
    """One logged group: the decay and no-decay halves of a (sub-)group together.

    Args:
        name: The group's name, as logged (``learning_rate/<name>``).
        tensors: Parameter tensors in it.
        parameters: Scalars in them.
        lr: Its learning rate.
        weight_decay: Its weight decay (of the decayed tensors).
        no_decay_tensors: Tensors without weight decay (biases, norms).
        frozen: Whether it is frozen.
        layer_id: Its layer id, for a sub-group of a layer-decayed group.
        timing: Its start, warm-up and shape; None when it follows the Trainer's schedule.
        stack: The stack its layer id counts within, in a model with several; else None.
        optimizer: The algorithm that steps it, when the spec chooses optimizers; else None.
    """

    name: str
    tensors: int
    parameters: int
    lr: float
    weight_decay: float
    no_decay_tensors: int
    frozen: bool
    layer_id: int | None
    timing: GroupTiming | None = None
    stack: str | None = None
    optimizer: str | None = None

    @property
    def start(self) -> str | None:
        """When it starts, as the spec wrote it (``0``, ``{epochs: 1}`` as ``1 epoch``); None when frozen."""
        if self.frozen:
            return None
        return _TRAINER_START if self.timing is None else self.timing.describe_start()

    @property
    def schedule(self) -> str | None:
        """Its shape and warm-up (``cosine (floor 0.1), warm-up 50 steps``); ``trainer`` for the Trainer's own
        schedule; None when frozen."""
        if self.frozen:
            return None
        return _TRAINER_SCHEDULE if self.timing is None else self.timing.describe_schedule()


def group_rows(plan: GroupPlan) -> list[GroupRow]:
    """The plan's groups, one row per logged name, in plan order."""
    rows: dict[str, GroupRow] = {}
    for group in plan.groups:
        row = rows.get(group.name)
        tensors = len(group.parameter_names)
        if row is None:
            rows[group.name] = GroupRow(
                name=group.name,
                tensors=tensors,
                parameters=group.num_elements,
                lr=group.lr,
                weight_decay=group.weight_decay,
                no_decay_tensors=tensors if group.no_decay else 0,
                frozen=group.frozen,
                layer_id=group.layer_id,
                timing=group.timing,
                stack=group.stack,
                optimizer=group.optimizer,
            )
        else:
            rows[group.name] = GroupRow(
                name=row.name,
                tensors=row.tensors + tensors,
                parameters=row.parameters + group.num_elements,
                lr=row.lr,
                weight_decay=row.weight_decay if group.no_decay else group.weight_decay,
                no_decay_tensors=row.no_decay_tensors + (tensors if group.no_decay else 0),
                frozen=row.frozen,
                layer_id=row.layer_id,
                timing=row.timing,
                stack=row.stack,
                optimizer=row.optimizer,
            )
    return list(rows.values())


@dataclass(frozen=True)
class _Column:
    header: str
    left_aligned: bool
    cell: Callable[[GroupRow], str]


_COLUMNS = (
    _Column("group", True, lambda row: row.name),
    _Column("tensors", False, lambda row: str(row.tensors)),
    _Column("parameters", False, lambda row: f"{row.parameters:,}"),
    _Column("lr", False, lambda row: f"{row.lr:.4g}"),
    _Column("weight decay", False, lambda row: "-" if row.frozen else f"{row.weight_decay:g}"),
    _Column("no-decay tensors", False, lambda row: "-" if row.frozen else str(row.no_decay_tensors)),
    _Column("frozen", False, lambda row: "yes" if row.frozen else "no"),
)
_OPTIMIZER = _Column("optimizer", True, lambda row: row.optimizer or "-")
_STACK = _Column("stack", True, lambda row: row.stack or "-")
_LAYER = _Column("layer", False, lambda row: "-" if row.layer_id is None else str(row.layer_id))
_TIMING = (
    _Column("start", True, lambda row: row.start or "-"),
    _Column("schedule", True, lambda row: row.schedule or "-"),
)


def _has_stacks(plan: GroupPlan) -> bool:
    return any(group.stack is not None for group in plan.groups)


def _columns(plan: GroupPlan) -> list[_Column]:
    """The table's columns: the fixed ones, then those only some plans need."""
    columns = list(_COLUMNS)
    if plan.chooses_optimizers:
        columns.append(_OPTIMIZER)
    if _has_stacks(plan):
        columns.append(_STACK)
    columns.append(_LAYER)
    if plan.has_group_schedules:
        columns += _TIMING
    return columns


def render_table(plan: GroupPlan) -> str:
    """The plan as an aligned text table, followed by the default group's and frozen parameters.

    When a group starts later or has its own warm-up or shape, two more columns say when each group starts
    and how its rate moves: ``0`` and ``trainer`` for a group that follows the Trainer's schedule, ``-`` for
    a frozen one. When a group's layer ids count within one stack of a model with several, a ``stack``
    column before ``layer`` names the stack (``-`` for the other rows).

    Args:
        plan: The resolved plan.

    Returns:
        The table, lines joined by newlines, without a final newline.

    Example:
        ```python
        print(render_table(resolve_groups(model, spec, learning_rate=2e-5, weight_decay=0.01)))
        ```
    """
    columns = _columns(plan)
    lines = [tuple(column.header for column in columns)]
    lines += [tuple(column.cell(row) for column in columns) for row in group_rows(plan)]
    widths = [max(len(line[index]) for line in lines) for index in range(len(columns))]
    text = []
    for index, line in enumerate(lines):
        cells = [
            cell.ljust(width) if column.left_aligned else cell.rjust(width)
            for column, cell, width in zip(columns, line, widths, strict=True)
        ]
        text.append("  ".join(cells).rstrip())
        if index == 0:
            text.append("  ".join("-" * width for width in widths))
    default_names = default_parameter_names(plan)
    if default_names:
        text.append("")
        text.append(f"in '{DEFAULT_GROUP_NAME}' (no group matched them): {_listing(default_names)}")
    if plan.frozen_before_training:
        text.append("")
        text.append(f"frozen before training, left out: {_listing(plan.frozen_before_training)}")
    return "\n".join(text)


def _listing(names: tuple[str, ...] | list[str]) -> str:
    return f"{len(names)} tensors: {some_names(names, _SHOWN_NAMES, quoted=False)}"


def default_parameter_names(plan: GroupPlan) -> list[str]:
    """The parameters no spec group matched, which form the ``default`` group."""
    return [name for group in plan.groups if group.source == DEFAULT_GROUP_NAME for name in group.parameter_names]


def _row_data(row: GroupRow, timed: bool, stacked: bool, chooses: bool) -> dict[str, Any]:
    left_out = {"timing"} | (set() if stacked else {"stack"}) | (set() if chooses else {"optimizer"})
    data = {field.name: getattr(row, field.name) for field in fields(row) if field.name not in left_out}
    if timed:
        data.update(start=row.start, schedule=row.schedule, timing=_timing_data(row.timing))
    return data


def _timing_data(timing: GroupTiming | None) -> dict[str, Any] | None:
    return None if timing is None else timing.to_data()


def _stack_depths(plan: GroupPlan) -> dict[str, int]:
    """Each stack's short name -> its number of blocks, in the model's order."""
    layers = plan.layers or detect_layers(plan.parameters)
    labels = layers.stack_labels()
    return {labels[stack]: depth for stack, depth in layers.stacks.items()}


def plan_to_data(plan: GroupPlan) -> dict[str, Any]:
    """The plan as JSON-ready data: rows, every optimizer group with its parameter names, and leftovers.

    When a group starts later or has its own warm-up or shape, every row also has ``start`` and
    ``schedule`` (as `render_table` shows them) and ``timing``, and every group ``timing``: the keys as the
    spec gave them (``start``, ``warmup``, ``schedule``, ``min_lr_ratio``, and ``unfreeze_every`` with
    ``unfreeze_rank`` under gradual unfreezing), or None for a group that follows the Trainer's schedule.
    When a group's layer ids count within one stack of a model with several, every row and group also has
    ``stack`` (None outside a stack), and the data ``stacks``: each stack's short name and number of blocks.
    When the spec chooses optimizers, every row and group also has ``optimizer`` (``muon``, ``adamw``,
    ``trainer``; None for a frozen group).

    Args:
        plan: The resolved plan.

    Returns:
        ``num_layers``, ``rows``, ``groups``, ``default_parameters`` and ``frozen_before_training`` (and
        ``stacks`` as above).
    """
    timed = plan.has_group_schedules
    stacked = _has_stacks(plan)
    chooses = plan.chooses_optimizers
    return {
        "num_layers": plan.num_layers,
        **({"stacks": _stack_depths(plan)} if stacked else {}),
        "rows": [_row_data(row, timed, stacked, chooses) for row in group_rows(plan)],
        "groups": [
            {
                "name": group.name,
                "source": group.source,
                "lr": group.lr,
                "weight_decay": group.weight_decay,
                "frozen": group.frozen,
                "layer_id": group.layer_id,
                "no_decay": group.no_decay,
                "options": {key: json_ready(value) for key, value in group.options.items()},
                "num_elements": group.num_elements,
                "parameter_names": list(group.parameter_names),
                **({"timing": _timing_data(group.timing)} if timed else {}),
                **({"stack": group.stack} if stacked else {}),
                **({"optimizer": group.optimizer} if chooses else {}),
            }
            for group in plan.groups
        ],
        "default_parameters": default_parameter_names(plan),
        "frozen_before_training": list(plan.frozen_before_training),
    }
