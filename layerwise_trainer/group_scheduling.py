"""The scheduler for a spec whose groups start later or have their own warm-up and shape.

`GroupScheduler` (in the core) holds one factor per param group. Here the adapter turns the spec's
timing into those factors for one run: epochs and fractions become optimizer steps, a group without its
own shape takes the Trainer's ``lr_scheduler_type`` built for the group's own length and warm-up, and a
group without timing keys takes the Trainer's schedule itself, so its rates are the stock ones.

Before any data is prepared, `check_group_schedules_supported` refuses what the design cannot keep
correct: metric-driven schedulers (a rate must be a function of the step), and groups that start later
under FSDP or DeepSpeed (which fix the parameters that get gradients when they wrap the model) or under
DDP without ``find_unused_parameters`` (its reducer would wait forever for a not-started group's gradients).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from transformers import PreTrainedModel, TrainingArguments, get_scheduler
from transformers.training_args import ParallelMode

from .core.group_schedule import GroupTiming, TrainingLength
from .core.group_scheduler import TRAINER_SHAPE, GroupRateFactor, GroupScheduler, StepFactor
from .core.grouping import GroupPlan, PlannedGroup
from .core.spec import DEFAULT_GROUP_NAME, LayerwiseSpec
from .errors import SpecError

_METRIC_DRIVEN = ("reduce_lr_on_plateau", "greedy")


def _scheduler_name(args: TrainingArguments) -> str:
    return str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))


def _first_schedule_key(spec: LayerwiseSpec, *, starts_only: bool = False) -> SpecError:
    """An empty error located at the first group key (or the top-level key) that makes groups scheduled."""
    for index, group in enumerate(spec.groups):
        keys = [key for key in group.schedule_keys if not starts_only or key in ("start", "gradual_unfreeze")]
        if keys:
            return SpecError("", path=(f"groups[{index}]", keys[0]), group=group.name)
    return SpecError("", path=("gradual_unfreeze",))


def _located(message: str, where: SpecError) -> SpecError:
    return SpecError(message, path=where.path, group=where.group)


def starts_later(spec: LayerwiseSpec) -> bool:
    """Whether some group may start after step 0 (a ``start`` above 0, or gradual unfreezing)."""
    if spec.gradual_unfreeze is not None:
        return True
    for group in spec.groups:
        if "gradual_unfreeze" in group.schedule_keys or getattr(group.start, "amount", 0) > 0:
            return True
    return False


def _is_sharded(model: nn.Module | None) -> bool:
    """Whether the model was wrapped in FSDP (``fully_shard`` or ``FullyShardedDataParallel``) before the Trainer."""
    if model is None or not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return any(isinstance(module, (FSDPModule, FullyShardedDataParallel)) for module in model.modules())


def _ddp_finds_unused_parameters(args: TrainingArguments, model: nn.Module | None) -> bool:
    """What the Trainer passes DDP as ``find_unused_parameters`` (its ``_build_accelerator_args`` rule)."""
    if args.ddp_find_unused_parameters is not None:
        return bool(args.ddp_find_unused_parameters)
    if isinstance(model, PreTrainedModel):
        checkpointing = getattr(model, "is_activation_checkpointing", model.is_gradient_checkpointing)
        return not (checkpointing or getattr(args, "activation_checkpointing", False) or args.gradient_checkpointing)
    return True


def check_group_schedules_supported(spec: LayerwiseSpec, trainer: Any) -> None:
    """Refuse per-group schedules where they cannot be kept correct, before any data is prepared.

    Args:
        spec: The parsed spec.
        trainer: The ``transformers.Trainer`` it is for.

    Raises:
        SpecError: A metric-driven ``lr_scheduler_type``; a group that starts later under FSDP, DeepSpeed,
            or DDP without ``find_unused_parameters``.
    """
    if not spec.has_group_schedules:
        return
    args = trainer.args
    where = _first_schedule_key(spec)
    if _scheduler_name(args) in _METRIC_DRIVEN:
        raise _located(
            f"lr_scheduler_type={_scheduler_name(args)!r} changes rates from an evaluation metric, so a group's "
            "rate cannot follow its own start and schedule; use a step-based lr_scheduler_type (linear, cosine, "
            "constant, ...) or remove the per-group schedule keys",
            where,
        )
    if not starts_later(spec):
        return
    where = _first_schedule_key(spec, starts_only=True)
    sharded_by_hand = _is_sharded(trainer.model)
    for enabled, name in (("is_fsdp_enabled", "FSDP"), ("is_deepspeed_enabled", "DeepSpeed")):
        if getattr(trainer, enabled, False) or (name == "FSDP" and sharded_by_hand):
            raise _located(
                f"a group that starts later is not supported under {name}: {name} fixes which parameters get "
                "gradients when it wraps the model, and a group's start turns them on during the run; train with "
                "DDP (or one device), or freeze the group and train it in a second run",
                where,
            )
    distributed = args.parallel_mode == ParallelMode.DISTRIBUTED and args.world_size > 1
    if distributed and not _ddp_finds_unused_parameters(args, trainer.model):
        raise _located(
            "under DDP a group that starts later needs ddp_find_unused_parameters=True: its parameters are "
            "in DDP's gradient reducer from the start and have no gradient until the group starts (with "
            "activation checkpointing, use a non-reentrant one)",
            where,
        )


def _stand_in(base_learning_rate: float) -> Optimizer:
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_learning_rate or 1.0)


def trainer_shape(args: TrainingArguments, base_learning_rate: float, warmup: int, length: int) -> StepFactor:
    """The Trainer's ``lr_scheduler_type`` (with its kwargs) as a factor of the step, for ``length`` steps.

    Raises:
        SpecError: The scheduler is not a ``LambdaLR`` (its rate is not a function of the step).
    """
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer=_stand_in(base_learning_rate),
        num_warmup_steps=warmup,
        num_training_steps=length,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    if not isinstance(scheduler, LambdaLR):
        raise SpecError(
            f"lr_scheduler_type={_scheduler_name(args)!r} is not a function of the step; per-group schedules "
            "need a step-based scheduler"
        )
    return scheduler.lr_lambdas[0]


class _Locator:
    """Where a planned group's keys sit in the spec, for errors."""

    def __init__(self, spec: LayerwiseSpec) -> None:
        self.spec = spec
        self.index = {group.name: index for index, group in enumerate(spec.groups)}

    def error(self, group: PlannedGroup, key: str, message: str) -> SpecError:
        index = self.index.get(group.source)
        if index is None:  # the default group: its timing comes from the top-level gradual_unfreeze
            return SpecError(message, path=("gradual_unfreeze",), group=DEFAULT_GROUP_NAME)
        own = self.spec.groups[index].gradual_unfreeze is not None
        path = ("gradual_unfreeze",) if key == "gradual_unfreeze" and not own else (f"groups[{index}]", key)
        return SpecError(message, path=path, group=group.source)


def _start_step(group: PlannedGroup, timing: GroupTiming, length: TrainingLength, locator: _Locator) -> int:
    try:
        start = timing.start_step(length)
        own_start = 0 if timing.start is None else length.steps(timing.start)
    except ValueError:
        key = "start" if timing.start is not None and timing.start.unit == "epochs" else "gradual_unfreeze"
        raise locator.error(
            group, key, "epochs need a training set with a length (this one has none); give steps or a fraction"
        ) from None
    if start >= length.total_steps:
        key = "start" if own_start >= length.total_steps else "gradual_unfreeze"
        raise locator.error(
            group,
            key,
            f"{group.name} would start at step {start} ({timing.describe_start()}), but training has only "
            f"{length.total_steps} optimizer steps; start it earlier or train longer",
        )
    return start


def _shape_of(timing: GroupTiming, args: TrainingArguments) -> str:
    """The group's own shape, else the Trainer's.

    The Trainer's ``constant`` has no warm-up (transformers ignores ``num_warmup_steps`` for it), so a group
    with its own warm-up under it runs as ``constant`` with that warm-up, as ``constant_with_warmup`` would.
    """
    if timing.shape is not None:
        return timing.shape
    if timing.warmup is not None and _scheduler_name(args) == "constant":
        return "constant"
    return TRAINER_SHAPE


def build_group_scheduler(
    optimizer: Optimizer,
    plan: GroupPlan,
    spec: LayerwiseSpec,
    args: TrainingArguments,
    length: TrainingLength,
    base_learning_rate: float,
) -> GroupScheduler:
    """The per-group scheduler for ``plan``'s trainable groups (the optimizer's param groups, in order).

    Args:
        optimizer: The optimizer built from ``plan``.
        plan: The resolved groups; a group with ``timing`` None follows the Trainer's schedule exactly.
        spec: The spec, to name a group's keys in errors.
        args: The training arguments (``lr_scheduler_type``, its kwargs, the warm-up).
        length: The run's optimizer steps and epoch length.
        base_learning_rate: The base rate, which ``cosine_with_min_lr``'s ``min_lr`` is relative to.

    Raises:
        SpecError: A group that would start at or after the end of training, a warm-up longer than the
            group's training, or a start in epochs without an epoch length; each names the group and key.
    """
    total = length.total_steps
    # transformers' `constant` ignores the warm-up, so under it the Trainer's warm-up is none.
    trainer_warmup = 0 if _scheduler_name(args) == "constant" else args.get_warmup_steps(total)
    shapes: dict[tuple[int, int], StepFactor] = {}

    def shape_for(warmup: int, steps: int) -> StepFactor:
        if (warmup, steps) not in shapes:
            shapes[warmup, steps] = trainer_shape(args, base_learning_rate, warmup, steps)
        return shapes[warmup, steps]

    locator = _Locator(spec)
    factors: list[StepFactor] = []
    starts: list[int] = []
    for group in plan.trainable_groups:
        timing = group.timing
        if timing is None:
            factors.append(shape_for(trainer_warmup, total))
            starts.append(0)
            continue
        start = _start_step(group, timing, length, locator)
        steps = total - start
        warmup = trainer_warmup if timing.warmup is None else length.steps(timing.warmup, of_steps=steps)
        if warmup > steps:
            source = "the Trainer's warm-up" if timing.warmup is None else "its warm-up"
            trains = f"{steps} optimizer step" + ("s" if steps != 1 else "")
            raise locator.error(
                group,
                "warmup",
                f"{group.name} trains for {trains} from its start (step {start}), shorter than "
                f"{source} of {warmup} steps; shorten the warm-up or start the group earlier",
            )
        shape = _shape_of(timing, args)
        factors.append(
            GroupRateFactor(
                start=start,
                warmup=warmup,
                length=steps,
                shape=shape,
                min_lr_ratio=timing.min_lr_ratio or 0.0,
                trainer_shape=shape_for(warmup, steps) if shape == TRAINER_SHAPE else None,
            )
        )
        starts.append(start)
    return GroupScheduler(optimizer, factors, starts, base_factor=shape_for(trainer_warmup, total))


def staged_parameters(plan: GroupPlan) -> list[nn.Parameter]:
    """The parameters of groups with timing, which a scheduler may hold out of autograd."""
    return [plan.parameters[name] for group in plan.trainable_groups if group.timing for name in group.parameter_names]
