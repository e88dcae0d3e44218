"""Optimizer state carried by parameter name from one param-group layout to another.

Torch keys an optimizer's state by position: the n-th parameter over the param groups in order. A layout
(each group's name, hyperparameters and ordered ``[parameter name, shape]`` list, as the checkpoint layout
file records it) says which parameter every position held. So the state saved with one spec can be put
on the positions another spec gives the same parameters: a parameter keeps its moments (Adam's
``exp_avg``, ``exp_avg_sq`` and ``step``) whatever group it moved to; one that is new to the optimizer, or
whose shape changed, starts with no state (the optimizer builds it at its first step, as for any new
parameter); one no longer trained drops its state. The param groups, and with them every hyperparameter,
are the new optimizer's own.

State that is not one entry of tensors and numbers per parameter (L-BFGS keeps its history under the
first parameter, as lists) cannot be moved this way and is refused, naming the optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import SpecError

# Optimizers whose state is kept for the whole parameter set, not per parameter.
NOT_PER_PARAMETER = frozenset({"torch.optim.lbfgs.LBFGS"})


class StateTransferError(SpecError):
    """Optimizer state that cannot be carried by parameter name."""


@dataclass(frozen=True)
class GroupTransfer:
    """What happened to one param group's parameters in a transfer.

    Args:
        label: The group's name, with `` (no-decay half)`` for the second group of that name.
        carried: Parameters whose saved state moved here.
        fresh: Parameters with no saved state (new to the optimizer, or without state yet).
        reshaped: Parameters whose shape changed since: their state was left behind, they start fresh.
        dropped: Parameters of this saved group that the optimizer no longer holds.
        changes: Hyperparameters that differ from the saved ones, as ``"lr 0.001 -> 0.002"``.
        switched: Parameters another algorithm steps now (Muon instead of AdamW): their state holds other
            tensors, they start fresh.
    """

    label: str
    carried: tuple[str, ...] = ()
    fresh: tuple[str, ...] = ()
    reshaped: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()
    switched: tuple[str, ...] = ()

    def to_data(self) -> dict[str, Any]:
        """The row as plain data (lists of names)."""
        return {
            "group": self.label,
            "carried": list(self.carried),
            "fresh": list(self.fresh),
            "reshaped": list(self.reshaped),
            "dropped": list(self.dropped),
            "changes": list(self.changes),
            **({"switched": list(self.switched)} if self.switched else {}),
        }


@dataclass(frozen=True)
class StateTransfer:
    """The optimizer state dict a transfer built, and what it did per group.

    Args:
        state_dict: ``{"state", "param_groups"}`` for the new optimizer's ``load_state_dict``: the saved
            per-parameter state at the new positions, and the new optimizer's own param groups.
        groups: One `GroupTransfer` per new param group, in order; a saved group's dropped parameters (no
            longer trained) are listed on the new group of the same label. Then one row for each saved group
            that has no new group of its label and lost parameters, listing only those: its parameters that
            are still trained are counted on the groups that hold them now.
    """

    state_dict: dict[str, Any]
    groups: tuple[GroupTransfer, ...]

    def to_data(self) -> list[dict[str, Any]]:
        """The per-group rows as plain data."""
        return [group.to_data() for group in self.groups]

    def table(self) -> str:
        """The per-group counts and changed hyperparameters as a Markdown table."""
        lines = [
            "| group | carried | fresh | dropped | changed hyperparameters |",
            "| --- | ---: | ---: | ---: | --- |",
        ]
        for group in self.groups:
            fresh = f"{len(group.fresh) + len(group.reshaped) + len(group.switched)}"
            reasons = ((group.reshaped, "reshaped"), (group.switched, "switched optimizer"))
            notes = [f"{len(names)} {why}" for names, why in reasons if names]
            if notes:
                fresh += f" ({', '.join(notes)})"
            changes = "; ".join(group.changes) or "-"
            lines.append(f"| {group.label} | {len(group.carried)} | {fresh} | {len(group.dropped)} | {changes} |")
        return "\n".join(lines)


def group_labels(groups: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each layout group's label: its name, and `` (no-decay half)`` for the second group of that name."""
    labels: list[str] = []
    for group in groups:
        label = str(group["name"])
        labels.append(f"{label} (no-decay half)" if label in labels else label)
    return labels


def _check_per_parameter(entry: Any, name: str, optimizer_label: str) -> None:
    values = entry.values() if isinstance(entry, Mapping) else [entry]
    for value in values:
        if not isinstance(value, (torch.Tensor, int, float, bool)):
            raise StateTransferError(
                f"{optimizer_label} keeps state that is not per parameter (a {type(value).__name__} under "
                f"{name!r}), which cannot be carried by parameter name"
            )


def saved_state_by_name(
    saved_state: Mapping[str, Any], saved_groups: Sequence[Mapping[str, Any]], optimizer_label: str
) -> dict[str, Any]:
    """The saved per-parameter state, keyed by parameter name.

    Args:
        saved_state: The saved optimizer state dict (``state`` and ``param_groups``).
        saved_groups: The layout it was saved with: one dict per param group with ``parameters``, a list of
            ``[name, shape]`` in the group's order.
        optimizer_label: The optimizer's name for messages.

    Returns:
        Parameter name -> its state entry, for the parameters that have one.

    Raises:
        StateTransferError: The state does not fit the layout (other group sizes, an entry for no
            parameter, a tensor the size of its parameter but of another shape) or is not per parameter.
    """
    saved_param_groups = saved_state["param_groups"]
    sizes = [len(group["params"]) for group in saved_param_groups]
    layout_sizes = [len(group["parameters"]) for group in saved_groups]
    if sizes != layout_sizes:
        raise StateTransferError(
            f"the saved optimizer's param groups hold {sizes} tensors, its layout {layout_sizes}: the state "
            "cannot be matched to parameter names"
        )
    shapes: dict[Any, tuple[str, list[int]]] = {}
    for param_group, group in zip(saved_param_groups, saved_groups, strict=True):
        for index, (name, shape) in zip(param_group["params"], group["parameters"], strict=True):
            shapes[index] = (name, list(shape))
    by_name = {}
    for index, entry in saved_state["state"].items():
        if index not in shapes:
            raise StateTransferError(
                f"the saved {optimizer_label} state has an entry ({index!r}) for no parameter of its param "
                "groups: it is not per parameter and cannot be carried by parameter name"
            )
        name, shape = shapes[index]
        _check_per_parameter(entry, name, optimizer_label)
        for key, value in entry.items():
            if _misshapen(value, shape):
                raise StateTransferError(
                    f"the saved state {key!r} of {name!r} has shape {list(value.shape)}, its layout says the "
                    f"parameter has shape {shape}"
                )
        by_name[name] = entry
    return by_name


def _misshapen(value: Any, shape: list[int]) -> bool:
    """A tensor with its parameter's number of elements but another shape (a scalar ``step`` is not one)."""
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return False
    return value.numel() == _numel(shape) and list(value.shape) != shape


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for size in shape:
        count *= int(size)
    return count


def _plain(value: Any) -> Any:
    """A hyperparameter as compared and shown: floats to 12 significant digits (a rate computed as 0.002 x
    0.4 ** 2 is 0.00032, not 0.0003200000000000001), tuples as lists."""
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.12g}")
    return value


def hyperparameter_changes(saved: Sequence[Mapping[str, Any]], current: Mapping[str, Any]) -> list[str]:
    """The hyperparameters of ``current`` that differ from those of the saved groups it took parameters from.

    Only the keys both sides have are compared (a stock checkpoint's param groups hold every default). Floats
    are compared and shown to 12 significant digits, so that the rounding of a computed rate is no change.

    Example:
        ```python
        assert hyperparameter_changes([{"lr": 1e-3}], {"lr": 2e-3}) == ["lr 0.001 -> 0.002"]
        assert hyperparameter_changes([{"lr": 0.00032}], {"lr": 0.002 * 0.4**2}) == []
        ```
    """
    changes = []
    for key in sorted(current):
        before = []
        for group in saved:
            if key in group and _plain(group[key]) not in before:
                before.append(_plain(group[key]))
        if before and before != [_plain(current[key])]:
            changes.append(f"{key} {', '.join(map(repr, before))} -> {_plain(current[key])!r}")
    return changes


def transfer_state(
    saved_state: Mapping[str, Any],
    saved_groups: Sequence[Mapping[str, Any]],
    current_groups: Sequence[Mapping[str, Any]],
    current_param_groups: Sequence[Mapping[str, Any]],
    optimizer_label: str,
) -> StateTransfer:
    """Carry the saved per-parameter state to the positions the current layout gives each parameter.

    Args:
        saved_state: The saved optimizer state dict.
        saved_groups: The saved layout's groups: ``name``, ``parameters`` (``[name, shape]`` lists),
            ``hyperparameters`` (a mapping compared with the current one) and optionally ``algorithm`` (what
            steps the group; a parameter whose algorithm changed starts fresh).
        current_groups: The current layout's groups, the same way, in the optimizer's order.
        current_param_groups: The current optimizer's ``state_dict()["param_groups"]``; they become the
            new state dict's param groups unchanged.
        optimizer_label: The optimizer's name for messages.

    Returns:
        The `StateTransfer`: the state dict to load and the per-group report.

    Raises:
        StateTransferError: See `saved_state_by_name`.

    Example:
        ```python
        transfer = transfer_state(saved, saved_layout, current_layout, optimizer.state_dict()["param_groups"], "AdamW")
        optimizer.load_state_dict(transfer.state_dict)
        ```
    """
    by_name = saved_state_by_name(saved_state, saved_groups, optimizer_label)
    saved_labels = group_labels(saved_groups)
    saved_shape, saved_group_of, saved_algorithm = {}, {}, {}
    for label, group in zip(saved_labels, saved_groups, strict=True):
        for name, shape in group["parameters"]:
            saved_shape[name], saved_group_of[name] = list(shape), label
            saved_algorithm[name] = group.get("algorithm")
    current_names = {name for group in current_groups for name, _ in group["parameters"]}
    dropped: dict[str, list[str]] = {}
    for name, label in saved_group_of.items():
        if name not in current_names:
            dropped.setdefault(label, []).append(name)
    state, rows, index = {}, [], 0
    saved_by_label = dict(zip(saved_labels, saved_groups, strict=True))
    for label, group in zip(group_labels(current_groups), current_groups, strict=True):
        carried, fresh, reshaped, switched, sources = [], [], [], [], []
        for name, shape in group["parameters"]:
            if name in saved_shape and saved_shape[name] != list(shape):
                reshaped.append(name)
            elif name in by_name and saved_algorithm[name] != group.get("algorithm"):
                switched.append(name)
            elif name in by_name:
                state[index] = by_name[name]
                carried.append(name)
            else:
                fresh.append(name)
            source = saved_group_of.get(name)
            if source is not None and source not in sources:
                sources.append(source)
            index += 1
        saved_hyperparameters = [saved_by_label[source]["hyperparameters"] for source in sources]
        changes = hyperparameter_changes(saved_hyperparameters, group["hyperparameters"])
        rows.append(GroupTransfer(label, tuple(carried), tuple(fresh), tuple(reshaped), tuple(dropped.pop(label, ())),
                                  tuple(changes), tuple(switched)))  # fmt: skip
    rows += [GroupTransfer(label, dropped=tuple(names)) for label, names in dropped.items()]
    param_groups = [dict(group) for group in current_param_groups]
    return StateTransfer({"state": state, "param_groups": param_groups}, tuple(rows))
