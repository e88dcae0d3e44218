"""What a plan does, for people and scripts: one row per logged group, and the plan as JSON data."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import some_names
from .grouping import GroupPlan
from .spec import DEFAULT_GROUP_NAME, json_ready

_SHOWN_NAMES = 8


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
    """

    name: str
    tensors: int
    parameters: int
    lr: float
    weight_decay: float
    no_decay_tensors: int
    frozen: bool
    layer_id: int | None


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
            )
    return list(rows.values())


def render_table(plan: GroupPlan) -> str:
    """The plan as an aligned text table, followed by the default group's and frozen parameters."""
    header = ("group", "tensors", "parameters", "lr", "weight decay", "no-decay tensors", "frozen", "layer")
    lines = [header]
    for row in group_rows(plan):
        lines.append((
            row.name,
            str(row.tensors),
            f"{row.parameters:,}",
            f"{row.lr:.4g}",
            "-" if row.frozen else f"{row.weight_decay:g}",
            "-" if row.frozen else str(row.no_decay_tensors),
            "yes" if row.frozen else "no",
            "-" if row.layer_id is None else str(row.layer_id),
        ))  # fmt: skip
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    text = []
    for index, line in enumerate(lines):
        cells = [
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
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


def plan_to_data(plan: GroupPlan) -> dict[str, Any]:
    """The plan as JSON-ready data: rows, every optimizer group with its parameter names, and leftovers."""
    return {
        "num_layers": plan.num_layers,
        "rows": [asdict(row) for row in group_rows(plan)],
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
            }
            for group in plan.groups
        ],
        "default_parameters": default_parameter_names(plan),
        "frozen_before_training": list(plan.frozen_before_training),
    }
