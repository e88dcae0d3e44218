"""Checkpoints: the param-group layout saved with each one, the check before resuming, and the transfer of
optimizer state by parameter name when the groups changed.

**The layout.** Torch restores optimizer state by position: the n-th tensor of the saved state goes to the n-th
parameter of the new optimizer, and the saved hyperparameters replace the new ones. A spec that changed
between the run and its resume would silently put one parameter's Adam moments on another of the same
shape, or bring back the old learning rates. Each checkpoint therefore carries the layout: every group's
name, hyperparameters and ordered parameter names and shapes, and the optimizer's class and the keyword
arguments it was built with (another optimizer keeps other state: SGD's ``momentum_buffer`` is not Adam's
``exp_avg``), with a hash; a resume whose layout differs stops before the first step and says what differs.

A checkpoint without a layout (saved by the stock Trainer) or with a version-1 layout (no optimizer) is
checked against the optimizer state it holds: the number of param groups, their sizes and their
hyperparameter keys, read without loading the tensors.

**The transfer.** Resuming from a checkpoint whose param groups differ is opt-in
(``LayerwiseTrainingArguments.resume_with_changed_groups``); by default such a resume is refused by the
layout check. With it, the saved state is read against the layout it was saved with (the layout
file, or for a checkpoint of the stock Trainer the two decay/no-decay groups that Trainer builds, checked
against the saved group sizes and every state tensor's shape) and each parameter's state goes to wherever
that parameter sits now (`core.optimizer_state_transfer`). The hyperparameters are the new spec's; the
schedule continues from the saved step with the new rates; the global step and the data order come from
``trainer_state.json`` as in any resume. What happened to each group is logged and written next to the
run's outputs (``resume_transfer.md`` and ``.json``).

Under DDP every rank reads the same files and maps them the same way; the ranks' transfers are compared
(as the layout hashes are when the optimizer is built). FSDP and DeepSpeed save sharded or flattened
optimizer state that names no parameter: a transfer there is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from .binding import check_same_on_every_rank
from .core.grouping import GroupPlan
from .core.hybrid_optimizer import HybridOptimizer
from .core.muon import OPTIMIZER_KEY, TRAINER
from .core.optimizer_state_transfer import NOT_PER_PARAMETER, StateTransfer, StateTransferError, transfer_state
from .core.parameter_names import whole_shape
from .core.spec import json_ready
from .errors import SpecError, some_names
from .optimizer_choice import PlanInputs, plan_inputs_for_arguments
from .schedulers import ScheduleNotCarried, continue_schedule

logger = logging.getLogger(__name__)
HYBRID_CLASS = f"{HybridOptimizer.__module__}.{HybridOptimizer.__qualname__}"

LAYOUT_FILE = "param_groups_layout.json"
LAYOUT_VERSION = 2
# The layout versions this library reads: 1 recorded no optimizer, 2 does.
LAYOUT_VERSIONS = (1, 2)
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
_SHOWN = 3
# The one key set. Param-group keys that are not the optimizer's hyperparameters:
NOT_HYPERPARAMETERS = frozenset({"params", "name", "initial_lr"})
# and keys that choose a kernel, not the state or the update: they may change between a run and its resume
# (a GPU run resumed on another machine), so they are never compared.
KERNEL_CHOICES = frozenset({"foreach", "fused", "capturable", "differentiable"})
_NOT_COMPARED = NOT_HYPERPARAMETERS | KERNEL_CHOICES


class CheckpointLayoutError(SpecError):
    """The spec now gives other param groups than the checkpoint being resumed was saved with."""


def optimizer_layout(optimizer_cls: type, optimizer_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer's part of a layout: its class and the keyword arguments that shape its state.

    Args:
        optimizer_cls: The optimizer class.
        optimizer_kwargs: The keyword arguments it is built with.

    Returns:
        ``{"class": "module.Class", "kwargs": {...}}``, with the kernel choices (``foreach``, ``fused``,
        ``capturable``, ``differentiable``) and ``lr`` left out, and values that are not plain JSON as text; for
        a `HybridOptimizer`, ``kwargs`` holds ``algorithms``: each algorithm's part, by name.
    """
    algorithms = optimizer_kwargs.get("algorithms")
    if isinstance(algorithms, Mapping):  # a HybridOptimizer: each algorithm's own part
        kwargs: dict[str, Any] = {
            "algorithms": {
                name: optimizer_layout(cls, cls_kwargs) for name, (cls, cls_kwargs) in sorted(algorithms.items())
            }
        }
    else:
        kwargs = {
            key: json_ready(value) if isinstance(value, (bool, int, float, str, tuple, type(None))) else repr(value)
            for key, value in sorted(optimizer_kwargs.items())
            if key not in KERNEL_CHOICES and key != "lr"  # `lr` is in every group's rate already
        }
    return {"class": f"{optimizer_cls.__module__}.{optimizer_cls.__qualname__}", "kwargs": kwargs}


def digest(value: Any) -> str:
    """The SHA-256 of ``value`` as canonical JSON: a layout's hash, and what ranks compare of a transfer."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()


def plan_layout(plan: GroupPlan, optimizer: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The layout of a plan: what must not change between a run and its resume.

    Args:
        plan: The resolved groups.
        optimizer: The optimizer's part (`optimizer_layout`), when known.

    Returns:
        ``{"version", "hash", "groups", "frozen", "optimizer"}``: ``groups`` lists the optimizer param
        groups in order (name, lr, weight_decay, options, parameters as ``[name, shape]`` with the whole
        shape of a ZeRO-3 partition, and ``timing`` for a group with its own start or schedule), ``frozen``
        the frozen groups' names, ``optimizer`` the optimizer's class and state-shaping keyword
        arguments; ``hash`` is the SHA-256 of ``groups`` and ``optimizer``.
    """
    groups = [
        {
            "name": group.name,
            "lr": group.lr,
            "weight_decay": group.weight_decay,
            "options": {key: json_ready(value) for key, value in sorted(group.options.items())},
            "parameters": [[name, list(whole_shape(plan.parameters[name]))] for name in group.parameter_names],
            # Only scheduled groups carry it, so that a spec without schedule keys keeps its earlier hash.
            **({"timing": group.timing.to_data()} if group.timing is not None else {}),
            **({"optimizer": group.optimizer} if group.optimizer is not None else {}),
        }
        for group in plan.trainable_groups
    ]
    optimizer_part = None if optimizer is None else dict(optimizer)
    return {
        "version": LAYOUT_VERSION,
        "hash": _hash_of({"version": LAYOUT_VERSION, "groups": groups, "optimizer": optimizer_part}),
        "groups": groups,
        "frozen": list(plan.frozen_group_names),
        "optimizer": optimizer_part,
    }


def save_layout(layout: dict[str, Any], directory: str | os.PathLike[str]) -> Path:
    """Write ``param_groups_layout.json`` into a checkpoint directory."""
    path = Path(directory) / LAYOUT_FILE
    path.write_text(json.dumps(layout, indent=1) + "\n", encoding="utf-8")
    return path


def _hash_of(layout: Mapping[str, Any]) -> str:
    """What a layout's ``hash`` must be: version 1 hashed the groups alone, version 2 the optimizer too."""
    if layout.get("version", 1) == 1:
        return digest(layout["groups"])
    return digest({"groups": layout["groups"], "optimizer": layout.get("optimizer")})


def _layout_problem(layout: Any) -> str | None:
    """What is wrong with a layout read from a file, or None; the hash is checked against the content."""
    if not isinstance(layout, dict) or not isinstance(layout.get("groups"), list) or "hash" not in layout:
        return "is not a param-group layout (expected a JSON object with 'version', 'hash' and 'groups')"
    version = layout.get("version", 1)
    if version not in LAYOUT_VERSIONS:
        known = " and ".join(map(str, LAYOUT_VERSIONS))
        return f"has version {version!r}, and this layerwise_trainer reads versions {known}"
    for group in layout["groups"]:
        parameters = group.get("parameters") if isinstance(group, dict) else None
        if not isinstance(parameters, list) or not all(
            isinstance(item, list) and len(item) == 2 for item in parameters
        ):
            return "is not a param-group layout (a group without its list of [name, shape] parameters)"
    if layout["hash"] != _hash_of(layout):
        return (
            "does not match its own SHA-256: it was changed after it was saved, so it can no longer say which "
            "saved state belongs to which parameter. Restore the file as the run wrote it, or start a new run "
            "from the checkpoint's weights (without resume_from_checkpoint)"
        )
    return None


def load_layout(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The layout saved in a checkpoint directory, checked against its own hash; None when it has none.

    Raises:
        CheckpointLayoutError: The file is not JSON, not a layout, of an unknown version, or does not match
            the SHA-256 saved in it; the message names the file. Nothing is loaded from such a checkpoint,
            with or without ``resume_with_changed_groups``.
    """
    path = Path(directory) / LAYOUT_FILE
    if not path.is_file():
        return None
    try:
        layout = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointLayoutError(f"cannot resume from {directory}: {path} is not JSON ({error})") from None
    problem = _layout_problem(layout)
    if problem is not None:
        raise CheckpointLayoutError(f"cannot resume from {directory}: {path} {problem}")
    return layout


def _names(parameters: list[list[Any]]) -> list[str]:
    return [name for name, _ in parameters]


def _group_differences(label: str, saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    found = []
    for key in ("optimizer", "lr", "weight_decay", "options"):
        # Only `optimizer` may be absent: a group the Trainer's optim alone steps.
        before, now = saved.get(key, "optim"), current.get(key, "optim")
        if before != now:
            found.append(f"{label}: {key} {before!r} in the checkpoint, {now!r} now")
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
        return {**current, "version": 1, "hash": _hash_of({**current, "version": 1}), "optimizer": None}
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


def load_saved_state(
    checkpoint: str | os.PathLike[str], name: str, map_location: Any = "cpu", *, mmap: bool = False
) -> Any:
    """A ``.pt`` file of the checkpoint, loaded as the Trainer loads it (``weights_only=True``).

    Raises:
        CheckpointLayoutError: The file cannot be read that way (damaged, not a torch file, or holding objects
            ``weights_only`` refuses), naming the file: the Trainer's own load would stop there too, with an
            unpickling error that names none.
    """
    path = Path(checkpoint) / name
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # torch raises many kinds for a file it cannot read
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointLayoutError(f"cannot resume from {checkpoint}: {path} cannot be read ({reason})") from None


def check_saved_files_readable(checkpoint: str | os.PathLike[str]) -> None:
    """Read ``optimizer.pt`` (its tensors mapped, not loaded) and ``scheduler.pt`` before the Trainer does.

    Raises:
        CheckpointLayoutError: One of them cannot be read, naming it.
    """
    for name, mmap in ((OPTIMIZER_FILE, True), (SCHEDULER_FILE, False)):
        if (Path(checkpoint) / name).is_file():
            load_saved_state(checkpoint, name, mmap=mmap)


def _saved_optimizer_groups(checkpoint: str | os.PathLike[str]) -> list[dict[str, Any]] | None:
    """The param groups of the optimizer state in ``checkpoint``, read without loading its tensors.

    None when there is no such file, or it holds no param groups (another serialisation).

    Raises:
        CheckpointLayoutError: The file cannot be read with ``weights_only=True``, as the Trainer reads it.
    """
    if not (Path(checkpoint) / OPTIMIZER_FILE).is_file():
        return None
    state = load_saved_state(checkpoint, OPTIMIZER_FILE, mmap=True)
    groups = state.get("param_groups") if isinstance(state, dict) else None
    return groups if isinstance(groups, list) else None


def _hyperparameter_keys(group: Mapping[str, Any]) -> set[str]:
    return set(group) - _NOT_COMPARED


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


REPORT_STEM = "resume_transfer"
SWITCH = "resume_with_changed_groups"
STOCK_GROUP = "stock"


def _refused(checkpoint: Any, reason: str) -> CheckpointLayoutError:
    return CheckpointLayoutError(f"cannot resume from {checkpoint} with {SWITCH}: {reason}")


def check_transfer_supported(trainer: Any, checkpoint: Any) -> None:
    """Refuse a transfer under FSDP or DeepSpeed, whose optimizer state names no parameter.

    Raises:
        CheckpointLayoutError: Naming the backend.
    """
    for attribute, backend in (("is_fsdp_enabled", "FSDP"), ("is_deepspeed_enabled", "DeepSpeed")):
        if getattr(trainer, attribute, False):
            raise _refused(
                checkpoint,
                f"{backend} saves sharded or flattened optimizer state that names no parameter, so it cannot "
                "be carried by name; resume with the spec the checkpoint was saved with, or start a new run "
                "from its weights",
            )


def _hyperparameters(group: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    return {"lr": group["lr"], "weight_decay": group["weight_decay"], **extra, **group.get("options", {})}


def _algorithm_of(optimizer: Mapping[str, Any] | None, group: Mapping[str, Any]) -> dict[str, Any] | None:
    """The optimizer part (class and arguments) that steps a layout group: its algorithm's, in a hybrid."""
    if optimizer is None:
        return None
    algorithms = optimizer.get("kwargs", {}).get("algorithms")
    if isinstance(algorithms, Mapping) and group.get(OPTIMIZER_KEY) in algorithms:
        return dict(algorithms[group[OPTIMIZER_KEY]])
    return dict(optimizer)


def layout_groups(layout: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A layout's groups with their ``algorithm`` (the class that steps them, for a state's compatibility) and
    ``hyperparameters``: lr, weight decay, options and that optimizer's arguments."""
    groups = []
    for group in layout["groups"]:
        algorithm = _algorithm_of(layout.get("optimizer"), group)
        kwargs = {} if algorithm is None else algorithm.get("kwargs", {})
        groups.append({
            **group,
            "algorithm": None if algorithm is None else algorithm["class"],
            "hyperparameters": _hyperparameters(group, kwargs),
        })  # fmt: skip
    return groups


def stock_layout_groups(
    plan: GroupPlan, decay_names: Sequence[str], saved_param_groups: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The groups the stock Trainer built for the plan's model: decay, then no-decay, in model order.

    The parameters are those the user had not frozen (the stock Trainer keeps ``requires_grad=False``
    parameters out); the hyperparameters are the saved groups' own.
    """
    decay = set(decay_names)
    trainable = [name for name in plan.parameters if name not in set(plan.frozen_before_training)]
    halves = [[name for name in trainable if name in decay], [name for name in trainable if name not in decay]]
    groups = []
    for names, saved in zip(halves, saved_param_groups, strict=False):
        hyperparameters = {key: value for key, value in saved.items() if key not in _NOT_COMPARED}
        hyperparameters["lr"] = saved.get("initial_lr", saved["lr"])
        groups.append({
            "name": STOCK_GROUP,
            "parameters": [[name, list(plan.parameters[name].shape)] for name in names],
            "hyperparameters": hyperparameters,
        })  # fmt: skip
    return groups


def _check_stock_reconstruction(
    checkpoint: Any, saved: Mapping[str, Any], groups: Sequence[Mapping[str, Any]], model_label: str
) -> None:
    sizes = [len(group["params"]) for group in saved["param_groups"]]
    expected = [len(group["parameters"]) for group in groups]
    if len(sizes) != 2 or sizes != expected:
        raise _refused(
            checkpoint,
            f"it has no layout file, and its optimizer's param groups hold {sizes} tensors where the stock "
            f"Trainer would build decay and no-decay groups of {expected} for {model_label}: it was saved "
            "with another model, other frozen parameters or another decay rule, and the names of its state "
            "cannot be checked",
        )
    shapes = {}
    for param_group, group in zip(saved["param_groups"], groups, strict=True):
        shapes.update({index: item for index, item in zip(param_group["params"], group["parameters"], strict=True)})
    for index, entry in saved["state"].items():
        name, shape = shapes.get(index, (None, None))
        for key, value in entry.items() if isinstance(entry, Mapping) else ():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and list(value.shape) != shape:
                raise _refused(
                    checkpoint,
                    f"it has no layout file, and its state {key!r} at position {index} has shape "
                    f"{list(value.shape)} where the stock Trainer's layout puts {name!r} of shape {shape}: it "
                    "was saved with another model, and the names of its state cannot be checked",
                )


def _current_groups(
    current_layout: Mapping[str, Any], current_param_groups: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    groups = layout_groups(current_layout)
    for group, param_group in zip(groups, current_param_groups, strict=True):
        extra = {key: value for key, value in param_group.items() if key not in _NOT_COMPARED | {"lr"}}
        group["hyperparameters"] = {**extra, **group["hyperparameters"]}
    return groups


def _check_same_optimizer(checkpoint: Any, saved_layout: Mapping[str, Any] | None, current: Mapping[str, Any]) -> None:
    saved_class = ((saved_layout or {}).get("optimizer") or {}).get("class")
    current_class = (current.get("optimizer") or {}).get("class")
    if current_class in NOT_PER_PARAMETER:
        raise _refused(checkpoint, f"{current_class} keeps its state for all parameters together, not per parameter")
    hybrid = HYBRID_CLASS in (saved_class, current_class)  # a hybrid's states are compared per parameter
    if saved_class is not None and current_class is not None and saved_class != current_class and not hybrid:
        raise _refused(
            checkpoint,
            f"it was saved with {saved_class} and the optimizer now is {current_class}: their states hold "
            "other tensors",
        )


def plan_transfer(
    checkpoint: str | os.PathLike[str],
    saved_state: Mapping[str, Any],
    current_layout: Mapping[str, Any],
    current_param_groups: Sequence[Mapping[str, Any]],
    plan: GroupPlan,
    decay_names: Sequence[str],
) -> StateTransfer:
    """The state dict a resume from ``checkpoint`` would load, and what it carries, starts fresh and drops.

    Args:
        checkpoint: The checkpoint directory (for its layout file and messages).
        saved_state: Its optimizer state dict.
        current_layout: The current `plan_layout`.
        current_param_groups: The current optimizer's ``state_dict()["param_groups"]`` (or the plan's groups
            with integer ``params``, for a preview).
        plan: The current plan (its model's parameters rebuild a stock Trainer's layout).
        decay_names: The parameters the stock Trainer decays (for a checkpoint without a layout).

    Raises:
        CheckpointLayoutError: The state cannot be carried by name; the message says why.
    """
    saved_layout = load_layout(checkpoint)
    _check_same_optimizer(checkpoint, saved_layout, current_layout)
    label = str((current_layout.get("optimizer") or {}).get("class", "the optimizer")).rsplit(".", 1)[-1]
    if not (saved_layout or {}).get("optimizer"):  # no layout, or one of version 1: no optimizer recorded
        problem = saved_hyperparameter_difference(saved_state["param_groups"], current_param_groups, label)
        if problem is not None:
            raise _refused(checkpoint, problem)
    if saved_layout is None:
        saved_groups = stock_layout_groups(plan, decay_names, saved_state["param_groups"])
        _check_stock_reconstruction(checkpoint, saved_state, saved_groups, "this model")
    else:
        saved_groups = layout_groups(saved_layout)
    # A checkpoint that recorded no optimizer passed the hyperparameter check: the Trainer's optim saved it.
    assumed = _algorithm_of(current_layout.get("optimizer"), {OPTIMIZER_KEY: TRAINER})
    for group in saved_groups:
        if group.get("algorithm") is None:
            group["algorithm"] = None if assumed is None else assumed["class"]
    try:
        return transfer_state(
            saved_state,
            saved_groups,
            _current_groups(current_layout, current_param_groups),
            current_param_groups,
            label,
        )
    except StateTransferError as error:
        raise _refused(checkpoint, str(error)) from error


def report_text(transfer: StateTransfer, checkpoint: Any) -> str:
    """The report: a heading line, the per-group table, and the reshaped and dropped parameters by name."""
    lines = [f"Optimizer state carried by parameter name from {checkpoint}:", "", transfer.table()]
    for group in transfer.groups:
        lists = (
            ("reshaped (started fresh)", group.reshaped),
            ("switched optimizer (started fresh)", group.switched),
            ("dropped", group.dropped),
        )
        for kind, names in lists:
            if names:
                lines.append(f"- {group.label}: {kind}: {', '.join(names)}")
    return "\n".join(lines) + "\n"


def write_report(transfer: StateTransfer, checkpoint: Any, directory: str | os.PathLike[str]) -> list[Path]:
    """Write ``resume_transfer.md`` and ``resume_transfer.json`` into ``directory``."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    markdown, data = target / f"{REPORT_STEM}.md", target / f"{REPORT_STEM}.json"
    markdown.write_text(report_text(transfer, checkpoint), encoding="utf-8")
    data.write_text(json.dumps({"checkpoint": str(checkpoint), "groups": transfer.to_data()}, indent=1) + "\n",
                    encoding="utf-8")  # fmt: skip
    return [markdown, data]


def _continue_saved_schedule(trainer: Any, checkpoint: str | os.PathLike[str]) -> None:
    """Put the trainer's scheduler at the step ``scheduler.pt`` saved, when the checkpoint has one."""
    if not (Path(checkpoint) / SCHEDULER_FILE).is_file():
        return
    try:
        continue_schedule(trainer.lr_scheduler, load_saved_state(checkpoint, SCHEDULER_FILE))
    except ScheduleNotCarried as error:
        raise _refused(checkpoint, str(error)) from None


def resume_with_transfer(
    trainer: Any, checkpoint: str, plan: GroupPlan, current_layout: Mapping[str, Any], model: nn.Module
) -> StateTransfer | None:
    """Load a checkpoint's optimizer and scheduler state into the trainer's, by parameter name.

    Args:
        trainer: The Trainer, whose optimizer and scheduler are built.
        checkpoint: The checkpoint directory.
        plan: The current plan.
        current_layout: The current `plan_layout`.
        model: The model (for the stock Trainer's decay rule).

    Returns:
        The transfer that was loaded; None when the checkpoint has no optimizer state, which the stock Trainer
        does not load either. The schedule continues from the saved step whenever ``scheduler.pt`` is there.

    Raises:
        CheckpointLayoutError: Under FSDP or DeepSpeed, or for state that cannot be carried by name.
    """
    check_transfer_supported(trainer, checkpoint)
    if not (Path(checkpoint) / OPTIMIZER_FILE).is_file():
        logger.warning("%s has no %s: there is no optimizer state to carry", checkpoint, OPTIMIZER_FILE)
        _continue_saved_schedule(trainer, checkpoint)
        return None
    args = trainer.args
    on_device = args.world_size > 1 and args.device.type != "cpu"
    saved_state = load_saved_state(checkpoint, OPTIMIZER_FILE, args.device if on_device else "cpu")
    param_groups = trainer.optimizer.state_dict()["param_groups"]
    transfer = plan_transfer(checkpoint, saved_state, current_layout, param_groups, plan,
                             trainer.get_decay_parameter_names(model))  # fmt: skip
    # Every rank reads the same files and maps them the same way; a rank that did not (another checkpoint
    # or model on its disk) would train diverging replicas, so the transfer is compared across ranks.
    check_same_on_every_rank(digest(transfer.to_data()), "the optimizer state transfers")
    trainer.optimizer.load_state_dict(transfer.state_dict)
    _continue_saved_schedule(trainer, checkpoint)
    logger.warning("%s", report_text(transfer, checkpoint).rstrip())
    if args.should_save:
        write_report(transfer, checkpoint, args.output_dir)
    return transfer


def _group_defaults(inputs: PlanInputs) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """What the optimizer fills into a param group it is given (per algorithm, for a `HybridOptimizer`)."""
    algorithms = inputs.optimizer_kwargs.get("algorithms")
    stand_in = [torch.zeros(1, 1, requires_grad=True)]  # 2-D: Muon takes nothing else
    if isinstance(algorithms, Mapping):
        by_name = {name: dict(cls(stand_in, **kwargs).defaults) for name, (cls, kwargs) in algorithms.items()}
        return lambda group: {**by_name[group[OPTIMIZER_KEY]], OPTIMIZER_KEY: group[OPTIMIZER_KEY]}
    defaults = (
        {} if inputs.optimizer_cls is None else dict(inputs.optimizer_cls(stand_in, **inputs.optimizer_kwargs).defaults)
    )
    return lambda group: defaults


def preview_transfer(
    checkpoint: str | os.PathLike[str], plan: GroupPlan, model: nn.Module, args: Any, spec: Any = None
) -> StateTransfer | None:
    """What resuming from ``checkpoint`` with ``plan`` would carry, start fresh and drop, without training.

    Args:
        checkpoint: The checkpoint directory.
        plan: The plan the spec gives (its model may be on the meta device).
        model: The model (for the optimizer choice and the stock Trainer's decay rule).
        args: The training arguments the optimizer is chosen from (``optim``, ``learning_rate``, ...).
        spec: The spec the plan was resolved from (one that chooses optimizers is built as a `HybridOptimizer`).

    Returns:
        The transfer (its state dict is not loaded anywhere), or None when the checkpoint was saved with
        these very groups and the resume is exact.

    Raises:
        CheckpointLayoutError: The checkpoint has no optimizer state, or it cannot be carried by name.
    """
    inputs = plan_inputs_for_arguments(args, model, spec=spec)
    optimizer_part = None
    if inputs.optimizer_cls is not None:
        optimizer_part = optimizer_layout(inputs.optimizer_cls, inputs.optimizer_kwargs)
    defaults_of = _group_defaults(inputs)
    layout = plan_layout(plan, optimizer_part)
    if layout_matches(checkpoint, layout):
        return None
    if not (Path(checkpoint) / OPTIMIZER_FILE).is_file():
        raise CheckpointLayoutError(f"cannot resume from {checkpoint}: it has no {OPTIMIZER_FILE}")
    param_groups, index = [], 0
    for group in plan.optimizer_param_groups():
        count = len(group["params"])
        param_groups.append({**defaults_of(group), **group, "params": list(range(index, index + count))})
        index += count
    saved_state = load_saved_state(checkpoint, OPTIMIZER_FILE)
    decay_names = stock_decay_names(model)
    return plan_transfer(checkpoint, saved_state, layout, param_groups, plan, decay_names)


def stock_decay_names(model: nn.Module) -> list[str]:
    """The parameters the stock Trainer decays: ``Trainer.get_decay_parameter_names``."""
    return Trainer.get_decay_parameter_names(None, model)  # type: ignore[arg-type]  # it never reads self
