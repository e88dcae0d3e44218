"""Resuming from a checkpoint whose param groups differ: optimizer state carried by parameter name.

Opt-in (``LayerwiseTrainingArguments.resume_with_changed_groups``): by default such a resume is refused
(`checkpoint_layout`). With it, the saved state is read against the layout it was saved with (the layout
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer

from .checkpoint_layout import (
    OPTIMIZER_FILE,
    CheckpointLayoutError,
    layout_matches,
    load_layout,
    optimizer_layout,
    plan_layout,
    saved_hyperparameter_difference,
)
from .core.group_scheduler import GroupScheduler
from .core.grouping import GroupPlan
from .core.optimizer_state_transfer import NOT_PER_PARAMETER, StateTransfer, StateTransferError, transfer_state
from .distributed import check_same_on_every_rank
from .scheduling import ProportionalGreedyLR, ProportionalReduceLROnPlateau

logger = logging.getLogger(__name__)

SCHEDULER_FILE = "scheduler.pt"
REPORT_STEM = "resume_transfer"
SWITCH = "resume_with_changed_groups"
STOCK_GROUP = "stock"
# Param-group keys that are not hyperparameters, or only choose a kernel.
_NOT_COMPARED = frozenset({"params", "name", "initial_lr", "foreach", "fused", "capturable", "differentiable"})
# The plateau schedulers' attributes built from the spec when the scheduler is built.
_PLATEAU_BUILT_FROM_SPEC = ("group_rates", "base_learning_rate", "_last_lr")


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


def layout_groups(layout: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A layout's groups with their ``hyperparameters``: lr, weight decay, options and optimizer arguments."""
    kwargs = (layout.get("optimizer") or {}).get("kwargs", {})
    return [{**group, "hyperparameters": _hyperparameters(group, kwargs)} for group in layout["groups"]]


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
    if saved_class is not None and current_class is not None and saved_class != current_class:
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


def load_saved_state(checkpoint: str | os.PathLike[str], name: str, map_location: Any = "cpu") -> Any:
    """A ``.pt`` file of the checkpoint, loaded with ``weights_only=True``."""
    return torch.load(Path(checkpoint) / name, map_location=map_location, weights_only=True)


def continue_schedule(scheduler: Any, saved: Mapping[str, Any], checkpoint: Any = "the checkpoint") -> None:
    """Put the scheduler at the saved step, with its own (the new spec's) rates and per-group schedules.

    Stock ``LambdaLR.load_state_dict`` would bring back the saved base rates; only the step position is taken.

    Raises:
        CheckpointLayoutError: A scheduler whose position cannot be taken from the saved state.
    """
    if isinstance(scheduler, (ProportionalReduceLROnPlateau, ProportionalGreedyLR)):
        if "base_rate" not in saved:
            raise _refused(checkpoint, "its scheduler state has no base rate to continue the plateau schedule from")
        scheduler.load_state_dict({key: value for key, value in saved.items() if key not in _PLATEAU_BUILT_FROM_SPEC})
        return
    if not isinstance(scheduler, LambdaLR) or "last_epoch" not in saved:
        raise _refused(checkpoint, f"the position of a {type(scheduler).__name__} cannot be carried to other groups")
    position = {"last_epoch": saved["last_epoch"], "_step_count": saved.get("_step_count", saved["last_epoch"] + 1)}
    if isinstance(scheduler, GroupScheduler):
        scheduler.load_state_dict(position)  # sets every rate and requires_grad for the step
        return
    scheduler.__dict__.update(position)
    rates = [base * factor(scheduler.last_epoch) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas,
                                                                        strict=True)]  # fmt: skip
    for group, rate in zip(scheduler.optimizer.param_groups, rates, strict=True):
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(rate)
        else:
            group["lr"] = rate
    scheduler._last_lr = rates


def report_text(transfer: StateTransfer, checkpoint: Any) -> str:
    """The report: a heading line, the per-group table, and the reshaped and dropped parameters by name."""
    lines = [f"Optimizer state carried by parameter name from {checkpoint}:", "", transfer.table()]
    for group in transfer.groups:
        for kind, names in (("reshaped (started fresh)", group.reshaped), ("dropped", group.dropped)):
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
        The transfer that was loaded; None when the checkpoint has no optimizer state (saved with
        ``save_only_model``), which the stock Trainer does not load either.

    Raises:
        CheckpointLayoutError: Under FSDP or DeepSpeed, or for state that cannot be carried by name.
    """
    check_transfer_supported(trainer, checkpoint)
    if not (Path(checkpoint) / OPTIMIZER_FILE).is_file():
        logger.warning("%s has no %s: there is no optimizer state to carry", checkpoint, OPTIMIZER_FILE)
        return None
    args = trainer.args
    on_device = args.world_size > 1 and args.device.type != "cpu"
    saved_state = load_saved_state(checkpoint, OPTIMIZER_FILE, args.device if on_device else "cpu")
    param_groups = trainer.optimizer.state_dict()["param_groups"]
    transfer = plan_transfer(checkpoint, saved_state, current_layout, param_groups, plan,
                             trainer.get_decay_parameter_names(model))  # fmt: skip
    # Every rank reads the same files and maps them the same way; a rank that did not (another checkpoint
    # or model on its disk) would train diverging replicas, so the transfer is compared across ranks.
    digest = hashlib.sha256(json.dumps(transfer.to_data(), sort_keys=True).encode("utf-8")).hexdigest()
    check_same_on_every_rank(digest, "the optimizer state transfers")
    trainer.optimizer.load_state_dict(transfer.state_dict)
    if (Path(checkpoint) / SCHEDULER_FILE).is_file():
        continue_schedule(trainer.lr_scheduler, load_saved_state(checkpoint, SCHEDULER_FILE), checkpoint)
    logger.warning("%s", report_text(transfer, checkpoint).rstrip())
    if args.should_save:
        write_report(transfer, checkpoint, args.output_dir)
    return transfer


def preview_transfer(
    checkpoint: str | os.PathLike[str], plan: GroupPlan, model: nn.Module, args: Any
) -> StateTransfer | None:
    """What resuming from ``checkpoint`` with ``plan`` would carry, start fresh and drop, without training.

    Args:
        checkpoint: The checkpoint directory.
        plan: The plan the spec gives (its model may be on the meta device).
        model: The model (for the optimizer choice and the stock Trainer's decay rule).
        args: The training arguments the optimizer is chosen from (``optim``, ``learning_rate``, ...).

    Returns:
        The transfer (its state dict is not loaded anywhere), or None when the checkpoint was saved with
        these very groups and the resume is exact.

    Raises:
        CheckpointLayoutError: The checkpoint has no optimizer state, or it cannot be carried by name.
    """
    from .optimizer_choice import plan_inputs_for_arguments

    inputs = plan_inputs_for_arguments(args, model)
    optimizer_part = None
    defaults: dict[str, Any] = {}
    if inputs.optimizer_cls is not None:
        optimizer_part = optimizer_layout(inputs.optimizer_cls, inputs.optimizer_kwargs)
        stand_in = torch.zeros(1, requires_grad=True)
        defaults = dict(inputs.optimizer_cls([stand_in], **inputs.optimizer_kwargs).defaults)
    layout = plan_layout(plan, optimizer_part)
    if layout_matches(checkpoint, layout):
        return None
    if not (Path(checkpoint) / OPTIMIZER_FILE).is_file():
        raise CheckpointLayoutError(f"cannot resume from {checkpoint}: it has no {OPTIMIZER_FILE}")
    param_groups, index = [], 0
    for group in plan.optimizer_param_groups():
        count = len(group["params"])
        param_groups.append({**defaults, **group, "params": list(range(index, index + count))})
        index += count
    saved_state = load_saved_state(checkpoint, OPTIMIZER_FILE)
    decay_names = stock_decay_names(model)
    return plan_transfer(checkpoint, saved_state, layout, param_groups, plan, decay_names)


def stock_decay_names(model: nn.Module) -> list[str]:
    """The parameters the stock Trainer decays: ``Trainer.get_decay_parameter_names``."""
    return Trainer.get_decay_parameter_names(None, model)  # type: ignore[arg-type]  # it never reads self
