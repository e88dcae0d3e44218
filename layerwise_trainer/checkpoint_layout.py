"""The param-group layout saved with every checkpoint, and the check made before resuming.

Torch restores optimizer state by position: the n-th tensor of the saved state goes to the n-th
parameter of the new optimizer, and the saved hyperparameters replace the new ones. A spec that changed
between the run and its resume would silently put one parameter's Adam moments on another of the same
shape, or bring back the old learning rates. Each checkpoint therefore carries the layout: every group's
name, hyperparameters and ordered parameter names and shapes, and the optimizer's class and the keyword
arguments it was built with (another optimizer keeps other state: SGD's ``momentum_buffer`` is not Adam's
``exp_avg``), with a hash; a resume whose layout differs stops before the first step and says what differs.

A checkpoint without a layout (saved by the stock Trainer) or with a version-1 layout (no optimizer) is
checked against the optimizer state it holds: the number of param groups, their sizes and their
hyperparameter keys, read without loading the tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .core.grouping import GroupPlan
from .core.spec import json_ready
from .errors import SpecError, some_names

LAYOUT_FILE = "param_groups_layout.json"
LAYOUT_VERSION = 2
OPTIMIZER_FILE = "optimizer.pt"
_SHOWN = 3
# Optimizer keyword arguments that choose a kernel, not the state or the update: they may change between a
# run and its resume (a GPU run resumed on another machine). `lr` is in every group's rate already.
_STATELESS_KWARGS = frozenset({"lr", "foreach", "fused", "capturable", "differentiable"})
# Param-group keys that are not the optimizer's hyperparameters.
_NON_HYPERPARAMETER_KEYS = frozenset({"params", "name", "initial_lr"})


class CheckpointLayoutError(SpecError):
    """The spec now gives other param groups than the checkpoint being resumed was saved with."""


def optimizer_layout(optimizer_cls: type, optimizer_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer's part of a layout: its class and the keyword arguments that shape its state.

    Args:
        optimizer_cls: The optimizer class.
        optimizer_kwargs: The keyword arguments it is built with.

    Returns:
        ``{"class": "module.Class", "kwargs": {...}}``, with the kernel choices (``foreach``, ``fused``,
        ``capturable``, ``differentiable``) and ``lr`` left out, and values that are not plain JSON as text.
    """
    kwargs = {
        key: json_ready(value) if isinstance(value, (bool, int, float, str, tuple, type(None))) else repr(value)
        for key, value in sorted(optimizer_kwargs.items())
        if key not in _STATELESS_KWARGS
    }
    return {"class": f"{optimizer_cls.__module__}.{optimizer_cls.__qualname__}", "kwargs": kwargs}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()


def plan_layout(plan: GroupPlan, optimizer: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The layout of a plan: what must not change between a run and its resume.

    Args:
        plan: The resolved groups.
        optimizer: The optimizer's part (`optimizer_layout`), when known.

    Returns:
        ``{"version", "hash", "groups", "frozen", "optimizer"}``: ``groups`` lists the optimizer param
        groups in order (name, lr, weight_decay, options, parameters as ``[name, shape]``, and ``timing``
        for a group with its own start or schedule), ``frozen``
        the frozen groups' names, ``optimizer`` the optimizer's class and state-shaping keyword
        arguments; ``hash`` is the SHA-256 of ``groups`` and ``optimizer``.
    """
    groups = [
        {
            "name": group.name,
            "lr": group.lr,
            "weight_decay": group.weight_decay,
            "options": {key: json_ready(value) for key, value in sorted(group.options.items())},
            "parameters": [[name, list(plan.parameters[name].shape)] for name in group.parameter_names],
            # Only scheduled groups carry it, so that a spec without schedule keys keeps its earlier hash.
            **({"timing": group.timing.to_data()} if group.timing is not None else {}),
        }
        for group in plan.trainable_groups
    ]
    optimizer_part = None if optimizer is None else dict(optimizer)
    return {
        "version": LAYOUT_VERSION,
        "hash": _digest({"groups": groups, "optimizer": optimizer_part}),
        "groups": groups,
        "frozen": list(plan.frozen_group_names),
        "optimizer": optimizer_part,
    }


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


def _group_differences(label: str, saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    found = []
    for key in ("lr", "weight_decay", "options"):
        if saved[key] != current[key]:
            found.append(f"{label}: {key} {saved[key]!r} in the checkpoint, {current[key]!r} now")
    if saved.get("timing") != current.get("timing"):
        trainers = "the Trainer's schedule"
        found.append(
            f"{label}: start and schedule {saved.get('timing') or trainers} in the checkpoint, "
            f"{current.get('timing') or trainers} now"
        )
    saved_names, current_names = _names(saved["parameters"]), _names(current["parameters"])
    if saved_names != current_names:
        added = [name for name in current_names if name not in set(saved_names)]
        removed = [name for name in saved_names if name not in set(current_names)]
        parts = []
        if added:
            parts.append(f"now also has {some_names(added, _SHOWN)}")
        if removed:
            parts.append(f"no longer has {some_names(removed, _SHOWN)}")
        if not parts:
            parts.append("has the same parameters in another order")
        found.append(f"{label}: {'; '.join(parts)}")
    elif saved["parameters"] != current["parameters"]:
        found.append(f"{label}: parameter shapes differ")
    return found


def _optimizer_differences(saved: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> list[str]:
    if saved is None or current is None:
        return []
    if saved["class"] != current["class"]:
        return [
            f"optimizer: {saved['class']} in the checkpoint, {current['class']} now (its state holds other "
            "tensors and hyperparameters, which the current optimizer cannot use)"
        ]
    keys = sorted(set(saved["kwargs"]) | set(current["kwargs"]))
    return [
        f"optimizer argument {key!r}: {saved['kwargs'].get(key, 'unset')!r} in the checkpoint, "
        f"{current['kwargs'].get(key, 'unset')!r} now"
        for key in keys
        if saved["kwargs"].get(key) != current["kwargs"].get(key)
    ]


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
    found = _optimizer_differences(saved.get("optimizer"), current.get("optimizer"))
    found += [f"group {label} is in the checkpoint but not in the spec now" for label in saved_groups
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


def _comparable(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    if saved.get("version", 1) == 1:  # the hash covered the groups alone, and no optimizer was recorded
        return {**current, "hash": _digest(current["groups"]), "optimizer": None}
    return current


def layout_matches(checkpoint: str | os.PathLike[str], current: dict[str, Any]) -> bool:
    """Whether ``checkpoint`` carries a layout equal to ``current`` (False when it carries none)."""
    saved = load_layout(checkpoint)
    return saved is not None and saved.get("hash") == _comparable(saved, current)["hash"]


def check_resume_layout(checkpoint: str | os.PathLike[str], current: dict[str, Any]) -> bool:
    """Compare the layout saved in ``checkpoint`` with the current one.

    A version-1 layout (written before the optimizer was recorded) is compared on its groups alone.

    Returns:
        True when they match, False when the checkpoint carries no layout (it was saved by another
        trainer) and so cannot be checked.

    Raises:
        CheckpointLayoutError: The layouts differ; the message lists each difference by group.
    """
    saved = load_layout(checkpoint)
    if saved is None:
        return False
    current = _comparable(saved, current)
    if saved.get("hash") == current["hash"]:
        return True
    differences = layout_differences(saved, current)
    if differences and all(": start and schedule " in difference for difference in differences):
        reason = (
            "the groups' starts or schedules differ from the ones the spec gives now, so the rates after "
            "resuming would not continue the run that was saved"
        )
    else:
        reason = (
            "its param groups differ from the ones the spec gives now, and torch would load optimizer state "
            "by position into the wrong parameters (and restore the old hyperparameters)"
        )
    raise CheckpointLayoutError(
        f"cannot resume from {checkpoint}: {reason}:\n  - " + "\n  - ".join(differences) + "\nResume with the "
        "spec the checkpoint was saved with, or start a new run from its weights (without resume_from_checkpoint), "
        "or set resume_with_changed_groups=True to carry the optimizer state over by parameter name."
    )


def _saved_optimizer_groups(checkpoint: str | os.PathLike[str]) -> list[dict[str, Any]] | None:
    """The param groups of the optimizer state in ``checkpoint``, read without loading its tensors.

    None when there is no such file or it cannot be read this way (another serialisation, objects that
    `weights_only` refuses): the check is then skipped and the Trainer's own loading decides.
    """
    path = Path(checkpoint) / OPTIMIZER_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # whatever torch raises for a file it cannot read this way
        return None
    groups = state.get("param_groups") if isinstance(state, dict) else None
    return groups if isinstance(groups, list) else None


def _hyperparameter_keys(group: Mapping[str, Any]) -> set[str]:
    return set(group) - _NON_HYPERPARAMETER_KEYS


def _group_count_difference(saved: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]]) -> str | None:
    saved_sizes = [len(group["params"]) for group in saved]
    current_sizes = [len(group["params"]) for group in current]
    if len(saved_sizes) != len(current_sizes):
        return (
            f"the checkpoint's optimizer has {len(saved_sizes)} param groups holding {sum(saved_sizes)} tensors, "
            f"the spec gives {len(current_sizes)} holding {sum(current_sizes)}"
        )
    for index, (saved_size, current_size) in enumerate(zip(saved_sizes, current_sizes, strict=True)):
        if saved_size != current_size:
            return (
                f"param group {index} holds {saved_size} tensors in the checkpoint and {current_size} now "
                f"(both have {len(saved_sizes)} groups)"
            )
    return None


def saved_hyperparameter_difference(
    saved: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]], optimizer_label: str
) -> str | None:
    """Why saved param groups belong to another optimizer (their hyperparameter keys differ), or None."""
    saved_keys, current_keys = _hyperparameter_keys(saved[0]), _hyperparameter_keys(current[0])
    if saved_keys == current_keys:
        return None
    missing = sorted(current_keys - saved_keys)
    extra = sorted(saved_keys - current_keys)
    parts = [f"{optimizer_label} needs {some_names(missing, _SHOWN)}, which the saved groups lack"] if missing else []
    if extra:
        parts.append(f"the saved groups have {some_names(extra, _SHOWN)}, which {optimizer_label} does not take")
    return "it was saved by another optimizer: " + "; ".join(parts)


def check_saved_optimizer(
    checkpoint: str | os.PathLike[str], current_groups: Sequence[Mapping[str, Any]], optimizer_label: str
) -> None:
    """Check the optimizer state in ``checkpoint`` against the current optimizer's param groups.

    For checkpoints whose layout cannot say it (none, or version 1): torch would stop on another number
    of groups with a bare ``ValueError``, or load another optimizer's hyperparameters and fail at the first
    step with a ``KeyError``.

    Args:
        checkpoint: The checkpoint directory.
        current_groups: ``optimizer.param_groups`` of the optimizer about to load the state.
        optimizer_label: The optimizer's name for the message.

    Raises:
        CheckpointLayoutError: Another number of groups, other group sizes, or another optimizer's
            hyperparameters.
    """
    saved = _saved_optimizer_groups(checkpoint)
    if not saved or not current_groups:
        return
    problem = _group_count_difference(saved, current_groups) or saved_hyperparameter_difference(
        saved, current_groups, optimizer_label
    )
    if problem is None:
        return
    raise CheckpointLayoutError(
        f"cannot resume from {checkpoint}: {problem}. Torch restores optimizer state by position, so it "
        "cannot go into these groups. Resume with the spec and optim the checkpoint was saved with (for a "
        "checkpoint of the stock Trainer: no spec), or start a new run from its weights (without "
        "resume_from_checkpoint), or set resume_with_changed_groups=True to carry the optimizer state over by "
        "parameter name."
    )
