"""The param-group layout saved with every checkpoint, and the check made before resuming.

Torch restores optimizer state by position: the n-th tensor of the saved state goes to the n-th
parameter of the new optimizer, and the saved hyperparameters replace the new ones. A spec that changed
between the run and its resume would silently put one parameter's Adam moments on another of the same
shape, or bring back the old learning rates. Each checkpoint therefore carries the layout: every group's
name, hyperparameters and ordered parameter names and shapes, with a hash; a resume whose layout differs
stops before the first step and says which groups differ.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import SpecError
from .grouping import GroupPlan

LAYOUT_FILE = "param_groups_layout.json"
LAYOUT_VERSION = 1
_SHOWN = 3


class CheckpointLayoutError(SpecError):
    """The spec now gives other param groups than the checkpoint being resumed was saved with."""


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def plan_layout(plan: GroupPlan) -> dict[str, Any]:
    """The layout of a plan: what must not change between a run and its resume.

    Returns:
        ``{"version", "hash", "groups", "frozen"}``: ``groups`` lists the optimizer param groups in
        order (name, lr, weight_decay, options, parameters as ``[name, shape]``), ``frozen`` the
        frozen groups' names; ``hash`` is the SHA-256 of ``groups``.
    """
    groups = [
        {
            "name": group.name,
            "lr": group.lr,
            "weight_decay": group.weight_decay,
            "options": {key: _json_value(value) for key, value in sorted(group.options.items())},
            "parameters": [[name, list(plan.parameters[name].shape)] for name in group.parameter_names],
        }
        for group in plan.trainable_groups
    ]
    digest = hashlib.sha256(json.dumps(groups, sort_keys=True).encode("utf-8")).hexdigest()
    return {"version": LAYOUT_VERSION, "hash": digest, "groups": groups, "frozen": list(plan.frozen_group_names)}


def save_layout(layout: dict[str, Any], directory: str | os.PathLike[str]) -> Path:
    """Write ``param_groups_layout.json`` into a checkpoint directory."""
    path = Path(directory) / LAYOUT_FILE
    path.write_text(json.dumps(layout, indent=1) + "\n", encoding="utf-8")
    return path


def load_layout(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The layout saved in a checkpoint directory, or None when it has none."""
    path = Path(directory) / LAYOUT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _names(parameters: list[list[Any]]) -> list[str]:
    return [name for name, _ in parameters]


def _some(names: list[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _group_differences(label: str, saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    found = []
    for key in ("lr", "weight_decay", "options"):
        if saved[key] != current[key]:
            found.append(f"{label}: {key} {saved[key]!r} in the checkpoint, {current[key]!r} now")
    saved_names, current_names = _names(saved["parameters"]), _names(current["parameters"])
    if saved_names != current_names:
        added = [name for name in current_names if name not in set(saved_names)]
        removed = [name for name in saved_names if name not in set(current_names)]
        parts = []
        if added:
            parts.append(f"now also has {_some(added)}")
        if removed:
            parts.append(f"no longer has {_some(removed)}")
        if not parts:
            parts.append("has the same parameters in another order")
        found.append(f"{label}: {'; '.join(parts)}")
    elif saved["parameters"] != current["parameters"]:
        found.append(f"{label}: parameter shapes differ")
    return found


def layout_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two layouts, one line per difference, naming the groups."""

    def labelled(layout: dict[str, Any]) -> dict[str, dict[str, Any]]:
        result = {}
        for group in layout["groups"]:
            label = repr(group["name"])
            if label in result:
                label = f"{label} (no-decay half)"
            result[label] = group
        return result

    saved_groups, current_groups = labelled(saved), labelled(current)
    found = [f"group {label} is in the checkpoint but not in the spec now" for label in saved_groups
             if label not in current_groups]  # fmt: skip
    found += [f"group {label} is new: the checkpoint has no such group" for label in current_groups
              if label not in saved_groups]  # fmt: skip
    for label, group in current_groups.items():
        if label in saved_groups:
            found += _group_differences(f"group {label}", saved_groups[label], group)
    common = [label for label in current_groups if label in saved_groups]
    if not found and common != [label for label in saved_groups if label in current_groups]:
        found.append("the groups are the same but in another order")
    if not found and saved["hash"] != current["hash"]:
        found.append("the layouts differ")
    return found


def check_resume_layout(checkpoint: str | os.PathLike[str], current: dict[str, Any]) -> bool:
    """Compare the layout saved in ``checkpoint`` with the current one.

    Returns:
        True when they match, False when the checkpoint carries no layout (it was saved by another
        trainer) and so cannot be checked.

    Raises:
        CheckpointLayoutError: The layouts differ; the message lists each difference by group.
    """
    saved = load_layout(checkpoint)
    if saved is None:
        return False
    if saved.get("hash") == current["hash"]:
        return True
    differences = layout_differences(saved, current)
    raise CheckpointLayoutError(
        f"cannot resume from {checkpoint}: its param groups differ from the ones the spec gives now, and "
        "torch would load optimizer state by position into the wrong parameters (and restore the old "
        "hyperparameters):\n  - " + "\n  - ".join(differences) + "\nResume with the spec the checkpoint was "
        "saved with, or start a new run from its weights (without resume_from_checkpoint)."
    )
