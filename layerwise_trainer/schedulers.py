"""Which learning-rate scheduler the Trainer gets for a plan, and how it continues on resume.

Three cases, decided by `scheduler_for_plan`:

- **The stock scheduler.** The step-based schedulers of ``lr_scheduler_type`` multiply every group's initial
  rate by one shared factor, so the ratios between groups hold by themselves.
- **Per-group schedules** (a group with ``start``, ``warmup``, ``schedule`` or gradual unfreezing): a
  `GroupScheduler` (in the core) holds one factor per param group, a pure function of the optimizer step.
  Here the plan's timing becomes those factors for one run: epochs and fractions become optimizer steps, a
  group without its own shape takes the Trainer's ``lr_scheduler_type`` built for the group's own length and
  warm-up, and a group without timing takes the Trainer's schedule itself, so its rates are the stock ones.
- **Metric-driven schedulers** (``reduce_lr_on_plateau``, ``greedy``) move each group's rate on their own,
  clamp it to absolute bounds (``min_lr``, ``max_lr``) and skip a change smaller than an absolute ``eps``.
  Scaling the bounds per group is not enough: torch takes one ``eps`` for every group, so once the base rate
  nears ``eps`` the groups take their last steps at different times and the ratios drift apart. So the stock
  algorithm runs unchanged on a one-group stand-in optimizer at the base rate, and after every step each
  real group is set to its planned rate times the base schedule's factor: every decision is taken once, on
  the base rate, and every group follows it exactly.

Starts decided at an evaluation (``start: {plateau: {...}}``, ``gradual_unfreeze: {every: {plateau: ...}}``)
become `StartChain` s of the `GroupScheduler`: each trigger resolved for the run (`plateau_rule`: its
direction by the Trainer's convention, its bounds in optimizer steps), each link able to build its groups'
factor once its start is known. The decision is taken at evaluations by `start_triggers`.

Before any data is prepared, `check_group_schedules_supported` refuses what the design cannot keep correct:
metric-driven schedulers with per-group schedules (a rate must be a function of the step), groups that
start later under FSDP (which fixes the parameters that get gradients when it wraps the model), under
DeepSpeed (which steps each group as one flat tensor that always has a gradient, zeros while the group waits,
so the optimizer counts the waiting steps) or under DDP without ``find_unused_parameters`` (its reducer would
wait forever for a not-started group's gradients), and a start on a plateau in a run that does not evaluate.

On a resume across a change of groups, `continue_schedule` takes only the step position from the saved
scheduler, so that every group gets its new rate at the saved step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau
from transformers import PreTrainedModel, TrainingArguments, get_scheduler
from transformers.optimization import GreedyLR
from transformers.training_args import ParallelMode

from .binding import sharding_engine
from .core.group_schedule import (
    METRIC_PREFIX,
    GroupTiming,
    PlateauRule,
    PlateauTrigger,
    ScheduleAmount,
    TrainingLength,
)
from .core.group_scheduler import (
    TRAINER_SHAPE,
    ChainLink,
    GroupRateFactor,
    GroupScheduler,
    StartChain,
    StepFactor,
    never_started,
)
from .core.grouping import GroupPlan, PlannedGroup
from .errors import SpecError

METRIC_DRIVEN = ("reduce_lr_on_plateau", "greedy")
# Why a later start cannot be kept correct under each. DeepSpeed (0.19.8, ZeRO 1 to 3, the refusal lifted by
# hand): the run trained, but the waiting group's flat tensor had Adam state counting all 6 steps, not the 3
# after its start, and its weights ended 2.5e-3 away from DDP's, for updates of about 2e-3.
_LATER_START_REASONS = {
    "FSDP": "FSDP fixes which parameters get gradients when it wraps the model, and a group's start turns them "
    "on during the run",
    "DeepSpeed": "DeepSpeed hands the optimizer each group as one flattened tensor with a gradient at every "
    "step, zeros before the group starts, so the optimizer counts steps the group did not train (Adam's bias "
    "correction) and the group's updates after its start are not the ones DDP would make",
}

DecidedT = TypeVar("DecidedT")
_BOUND_KEYS = ("min_lr", "max_lr")
# The plateau schedulers' attributes built from the plan when the scheduler is built, never carried over.
_PLATEAU_BUILT_FROM_PLAN = ("group_rates", "base_learning_rate", "_last_lr")


def scheduler_name(args: TrainingArguments) -> str:
    """``args.lr_scheduler_type`` as a plain string."""
    return str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))


def _stand_in_optimizer(base_learning_rate: float) -> Optimizer:
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_learning_rate or 1.0)


def set_rate(group: dict[str, Any], rate: float) -> None:
    """Set a param group's rate, in place where the optimizer keeps it as a tensor (capturable, torchao)."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(rate)
    else:
        group["lr"] = rate


# The metric-driven schedulers.


class _FollowsBaseRate:
    """Runs a metric-driven scheduler on a stand-in at the base rate; every group follows its factor."""

    optimizer: Optimizer
    _last_lr: list[float]

    def __init__(
        self, optimizer: Optimizer, group_rates: Sequence[float], base_learning_rate: float, **kwargs: Any
    ) -> None:
        self.grouped_optimizer = optimizer
        self.group_rates = [float(rate) for rate in group_rates]
        self.base_learning_rate = float(base_learning_rate)
        super().__init__(_stand_in_optimizer(base_learning_rate), **kwargs)  # type: ignore[call-arg]
        self._follow()

    @property
    def base_rate(self) -> float:
        """The base schedule's current rate."""
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, metrics: Any, epoch: int | None = None) -> None:
        super().step(metrics, epoch)  # type: ignore[misc]
        self._follow()

    def _follow(self) -> None:
        factor = self.base_rate / self.base_learning_rate
        for group, rate in zip(self.grouped_optimizer.param_groups, self.group_rates, strict=True):
            set_rate(group, rate * factor)
        self._last_lr = [rate * factor for rate in self.group_rates]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()  # type: ignore[misc]
        state.pop("grouped_optimizer", None)
        state["base_rate"] = self.base_rate
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        base_rate = state.pop("base_rate")
        super().load_state_dict(state)  # type: ignore[misc]
        self.optimizer.param_groups[0]["lr"] = base_rate
        self._follow()


class ProportionalReduceLROnPlateau(_FollowsBaseRate, ReduceLROnPlateau):
    """``ReduceLROnPlateau`` decided on the base rate, every group keeping its ratio to it.

    Args:
        optimizer: The optimizer whose groups follow.
        group_rates: Each param group's planned rate (at factor 1), in the optimizer's order.
        base_learning_rate: The rate the schedule starts from (``TrainingArguments.learning_rate``).
        **kwargs: ``ReduceLROnPlateau``'s arguments; ``min_lr`` and ``eps`` apply to the base rate.
    """


class ProportionalGreedyLR(_FollowsBaseRate, GreedyLR):
    """``GreedyLR`` decided on the base rate, every group keeping its ratio to it.

    Args:
        optimizer: The optimizer whose groups follow.
        group_rates: Each param group's planned rate (at factor 1), in the optimizer's order.
        base_learning_rate: The rate the schedule starts from (``TrainingArguments.learning_rate``).
        **kwargs: ``GreedyLR``'s arguments; ``min_lr``, ``max_lr`` and ``eps`` apply to the base rate.
    """


_PROPORTIONAL_SCHEDULERS: dict[str, type[_FollowsBaseRate]] = {
    "reduce_lr_on_plateau": ProportionalReduceLROnPlateau,
    "greedy": ProportionalGreedyLR,
}


def proportional_scheduler(
    scheduler_type: Any,
    optimizer: Optimizer,
    scheduler_kwargs: Mapping[str, Any] | None,
    group_rates: Sequence[float],
    base_learning_rate: float,
) -> _FollowsBaseRate | None:
    """The metric-driven scheduler that keeps every group at its ratio to the base rate, or None.

    Args:
        scheduler_type: ``TrainingArguments.lr_scheduler_type``.
        optimizer: The optimizer to schedule.
        scheduler_kwargs: ``TrainingArguments.lr_scheduler_kwargs``.
        group_rates: Each optimizer param group's planned rate, in order.
        base_learning_rate: The base rate the planned rates are ratios of.

    Returns:
        A `ProportionalReduceLROnPlateau` or `ProportionalGreedyLR`; None for the step-based schedulers
        (which keep the ratios by themselves), for a base rate of 0, for groups that do not match the
        optimizer's, and when the user gave ``min_lr`` or ``max_lr`` per group (their own choice).
    """
    scheduler_cls = _PROPORTIONAL_SCHEDULERS.get(str(getattr(scheduler_type, "value", scheduler_type)))
    kwargs = dict(scheduler_kwargs or {})
    per_group_bounds = any(isinstance(kwargs.get(key), (list, tuple)) for key in _BOUND_KEYS)
    if scheduler_cls is None or base_learning_rate <= 0 or per_group_bounds:
        return None
    if len(group_rates) != len(optimizer.param_groups):
        return None
    return scheduler_cls(optimizer, group_rates, base_learning_rate, **kwargs)


# Refusals, before any data is prepared.


def _first_scheduled(plan: GroupPlan, *, starts_only: bool = False) -> tuple[PlannedGroup, str]:
    """The first trainable group with timing (that starts later, with ``starts_only``), and its first key."""
    for group in plan.trainable_groups:
        timing = group.timing
        if timing is None:
            continue
        if timing.start is not None and (not starts_only or timing.starts_later):
            return group, "start"
        if timing.unfreeze_every is not None:
            return group, "gradual_unfreeze"
        if not starts_only:
            return group, "warmup" if timing.warmup is not None else "schedule"
    raise ValueError("the plan has no group with that timing")


def _located(message: str, group: PlannedGroup, key: str) -> SpecError:
    return SpecError(message, path=group.spec_path(key), group=group.source)


def starts_later(plan: GroupPlan) -> bool:
    """Whether some trainable group may start after step 0 (a ``start`` above 0, or gradual unfreezing)."""
    for group in plan.trainable_groups:
        timing = group.timing
        if timing is not None and (timing.unfreeze_every is not None or timing.starts_later):
            return True
    return False


def _first_trigger(plan: GroupPlan) -> tuple[PlannedGroup, str, PlateauTrigger] | None:
    """The first trainable group whose start, or a layer's, an evaluation decides: the group, key and trigger."""
    for group in plan.trainable_groups:
        timing = group.timing
        if timing is None or not timing.has_trigger:
            continue
        if isinstance(timing.start, PlateauTrigger):
            return group, "start", timing.start
        assert isinstance(timing.unfreeze_every, PlateauTrigger)
        return group, "gradual_unfreeze", timing.unfreeze_every
    return None


def _check_evaluates(plan: GroupPlan, trainer: Any) -> None:
    """Refuse a start on a plateau when the Trainer does not evaluate during training."""
    found = _first_trigger(plan)
    if found is None:
        return
    group, key, trigger = found
    strategy = str(getattr(trainer.args.eval_strategy, "value", trainer.args.eval_strategy))
    if strategy == "no" or getattr(trainer, "eval_dataset", None) is None:
        missing = "eval_strategy='no'" if strategy == "no" else "no eval_dataset"
        raise _located(
            f"a start on a plateau of {trigger.metric} is decided at evaluations during training, and this Trainer "
            f"has {missing}; set eval_strategy ('steps' with eval_steps, or 'epoch') and pass an eval_dataset",
            group,
            key,
        )


def _ddp_finds_unused_parameters(args: TrainingArguments, model: nn.Module | None) -> bool:
    """What the Trainer passes DDP as ``find_unused_parameters`` (its ``_build_accelerator_args`` rule)."""
    if args.ddp_find_unused_parameters is not None:
        return bool(args.ddp_find_unused_parameters)
    if isinstance(model, PreTrainedModel):
        checkpointing = getattr(model, "is_activation_checkpointing", model.is_gradient_checkpointing)
        return not (checkpointing or getattr(args, "activation_checkpointing", False) or args.gradient_checkpointing)
    return True


def check_group_schedules_supported(plan: GroupPlan, trainer: Any) -> None:
    """Refuse per-group schedules where they cannot be kept correct, before any data is prepared.

    Args:
        plan: The resolved groups.
        trainer: The ``transformers.Trainer`` they are for.

    Raises:
        SpecError: A metric-driven ``lr_scheduler_type``; a group that starts later under FSDP, DeepSpeed,
            or DDP without ``find_unused_parameters``; a start on a plateau without evaluations during training
            (``eval_strategy='no'``, or no ``eval_dataset``). Each names the first group and key concerned.
    """
    if not plan.has_group_schedules:
        return
    args = trainer.args
    if scheduler_name(args) in METRIC_DRIVEN:
        raise _located(
            f"lr_scheduler_type={scheduler_name(args)!r} changes rates from an evaluation metric, so a group's "
            "rate cannot follow its own start and schedule; use a step-based lr_scheduler_type (linear, cosine, "
            "constant, ...) or remove the per-group schedule keys",
            *_first_scheduled(plan),
        )
    _check_evaluates(plan, trainer)
    if not starts_later(plan):
        return
    where = _first_scheduled(plan, starts_only=True)
    engine = sharding_engine(trainer)
    if engine is not None:
        raise _located(
            f"a group that starts later is not supported under {engine}: {_LATER_START_REASONS[engine]}; train "
            "with DDP (or one device), or freeze the group and train it in a second run",
            *where,
        )
    distributed = args.parallel_mode == ParallelMode.DISTRIBUTED and args.world_size > 1
    if distributed and not _ddp_finds_unused_parameters(args, trainer.model):
        raise _located(
            "under DDP a group that starts later needs ddp_find_unused_parameters=True: its parameters are "
            "in DDP's gradient reducer from the start and have no gradient until the group starts (with "
            "activation checkpointing, use a non-reentrant one)",
            *where,
        )


# Per-group schedules.


def trainer_shape(args: TrainingArguments, base_learning_rate: float, warmup: int, length: int) -> StepFactor:
    """The Trainer's ``lr_scheduler_type`` (with its kwargs) as a factor of the step, for ``length`` steps.

    Raises:
        SpecError: The scheduler is not a ``LambdaLR`` (its rate is not a function of the step).
    """
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer=_stand_in_optimizer(base_learning_rate),
        num_warmup_steps=warmup,
        num_training_steps=length,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    if not isinstance(scheduler, LambdaLR):
        raise SpecError(
            f"lr_scheduler_type={scheduler_name(args)!r} is not a function of the step; per-group schedules "
            "need a step-based scheduler"
        )
    return scheduler.lr_lambdas[0]


def _start_step(group: PlannedGroup, timing: GroupTiming, length: TrainingLength) -> int:
    try:
        start = timing.start_step(length)
        own_start = 0 if timing.start is None else length.steps(timing.start)
    except ValueError:
        key = "start" if timing.start is not None and timing.start.unit == "epochs" else "gradual_unfreeze"
        raise _located(
            "epochs need a training set with a length (this one has none); give steps or a fraction", group, key
        ) from None
    if start >= length.total_steps:
        key = "start" if own_start >= length.total_steps else "gradual_unfreeze"
        raise _located(
            f"{group.name} would start at step {start} ({timing.describe_start()}), but training has only "
            f"{length.total_steps} optimizer steps; start it earlier or train longer",
            group,
            key,
        )
    return start


def _shape_of(timing: GroupTiming, args: TrainingArguments) -> str:
    """The group's own shape, else the Trainer's.

    The Trainer's ``constant`` has no warm-up (transformers ignores ``num_warmup_steps`` for it), so a group
    with its own warm-up under it runs as ``constant`` with that warm-up, as ``constant_with_warmup`` would.
    """
    if timing.shape is not None:
        return timing.shape
    if timing.warmup is not None and scheduler_name(args) == "constant":
        return "constant"
    return TRAINER_SHAPE


def _group_factor(
    group: PlannedGroup,
    timing: GroupTiming,
    start: int,
    length: TrainingLength,
    args: TrainingArguments,
    trainer_warmup: int,
    shape_for: Any,
) -> GroupRateFactor:
    """The factor of a group that starts at ``start``: its warm-up and shape counted from there.

    Raises:
        SpecError: The warm-up is longer than the group's training from ``start``.
    """
    steps = length.total_steps - start
    warmup = trainer_warmup if timing.warmup is None else length.steps(timing.warmup, of_steps=steps)
    if warmup > steps:
        source = "the Trainer's warm-up" if timing.warmup is None else "its warm-up"
        trains = f"{steps} optimizer step" + ("s" if steps != 1 else "")
        raise _located(
            f"{group.name} trains for {trains} from its start (step {start}), shorter than "
            f"{source} of {warmup} steps; shorten the warm-up or start the group earlier",
            group,
            "warmup",
        )
    shape = _shape_of(timing, args)
    return GroupRateFactor(
        start=start,
        warmup=warmup,
        length=steps,
        shape=shape,
        min_lr_ratio=timing.min_lr_ratio or 0.0,
        trainer_shape=shape_for(warmup, steps) if shape == TRAINER_SHAPE else None,
    )


def build_group_scheduler(
    optimizer: Optimizer,
    plan: GroupPlan,
    args: TrainingArguments,
    length: TrainingLength,
    base_learning_rate: float,
) -> GroupScheduler:
    """The per-group scheduler for ``plan``'s trainable groups (the optimizer's param groups, in order).

    Args:
        optimizer: The optimizer built from ``plan``.
        plan: The resolved groups; a group with ``timing`` None follows the Trainer's schedule exactly.
        args: The training arguments (``lr_scheduler_type``, its kwargs, the warm-up, and for triggers
            ``metric_for_best_model`` and ``greater_is_better``).
        length: The run's optimizer steps and epoch length.
        base_learning_rate: The base rate, which ``cosine_with_min_lr``'s ``min_lr`` is relative to.

    Raises:
        SpecError: A group that would start at or after the end of training, a warm-up longer than the
            group's training, a start in epochs without an epoch length, or a trigger whose bounds do not fit
            the run; each names the group and key.
    """
    total = length.total_steps
    # transformers' `constant` ignores the warm-up, so under it the Trainer's warm-up is none.
    trainer_warmup = 0 if scheduler_name(args) == "constant" else args.get_warmup_steps(total)
    shapes: dict[tuple[int, int], StepFactor] = {}

    def shape_for(warmup: int, steps: int) -> StepFactor:
        if (warmup, steps) not in shapes:
            shapes[warmup, steps] = trainer_shape(args, base_learning_rate, warmup, steps)
        return shapes[warmup, steps]

    factors: list[StepFactor] = []
    starts: list[int | None] = []
    chained: dict[str, dict[int, list[int]]] = {}  # spec group -> unfreeze rank -> param-group indices
    for index, group in enumerate(plan.trainable_groups):
        timing = group.timing
        if timing is None:
            factors.append(shape_for(trainer_warmup, total))
            starts.append(0)
        elif timing.has_trigger:
            chained.setdefault(group.source, {}).setdefault(timing.unfreeze_rank, []).append(index)
            factors.append(never_started)
            starts.append(None)
        else:
            start = _start_step(group, timing, length)
            factors.append(_group_factor(group, timing, start, length, args, trainer_warmup, shape_for))
            starts.append(start)
    chains = [
        _start_chain(plan, source, ranks, args, length, trainer_warmup, shape_for) for source, ranks in chained.items()
    ]
    return GroupScheduler(optimizer, factors, starts, base_factor=shape_for(trainer_warmup, total), chains=chains)


# Starts decided at an evaluation.


def _metric_key(name: str) -> str:
    """A metric's key in the evaluation's metrics, as the Trainer reads ``metric_for_best_model``."""
    return name if name.startswith(METRIC_PREFIX) else METRIC_PREFIX + name


def greater_is_better(trigger: PlateauTrigger, args: TrainingArguments) -> bool:
    """Whether a higher value of the trigger's metric is better: its own ``greater_is_better``, else the Trainer's.

    The Trainer's convention: ``TrainingArguments.greater_is_better`` when the metric is the
    ``metric_for_best_model``; otherwise higher is better unless the name ends with ``loss`` (the rule
    ``TrainingArguments`` applies to ``metric_for_best_model``).
    """
    if trigger.greater_is_better is not None:
        return trigger.greater_is_better
    best = getattr(args, "metric_for_best_model", None)
    if best is not None and args.greater_is_better is not None and _metric_key(best) == trigger.metric:
        return bool(args.greater_is_better)
    return not trigger.metric.endswith("loss")


def plateau_rule(trigger: PlateauTrigger, args: TrainingArguments, length: TrainingLength) -> PlateauRule:
    """The trigger for one run: its direction settled and ``earliest`` and ``latest`` in optimizer steps.

    Raises:
        ValueError: ``earliest`` or ``latest`` in epochs without an epoch length (the caller words the error).
    """
    return PlateauRule(
        metric=trigger.metric,
        greater_is_better=greater_is_better(trigger, args),
        patience=trigger.patience,
        min_delta=trigger.min_delta,
        earliest=0 if trigger.earliest is None else length.steps(trigger.earliest),
        latest=None if trigger.latest is None else length.steps(trigger.latest),
    )


def _start_chain(
    plan: GroupPlan,
    source: str,
    ranks: dict[int, list[int]],
    args: TrainingArguments,
    length: TrainingLength,
    trainer_warmup: int,
    shape_for: Any,
) -> StartChain:
    """The `StartChain` of one spec group: a link per unfreeze rank, from the top layer down."""
    links = []
    for rank in sorted(ranks):
        indices = ranks[rank]
        group = plan.trainable_groups[indices[0]]
        timing = group.timing
        assert timing is not None
        names = tuple(dict.fromkeys(plan.trainable_groups[index].name for index in indices))

        def factor_for(start: int, group: PlannedGroup = group, timing: GroupTiming = timing) -> StepFactor:
            return _group_factor(group, timing, start, length, args, trainer_warmup, shape_for)

        key, point = ("start", timing.start) if rank == 0 else ("gradual_unfreeze", timing.unfreeze_every)
        where = (*group.spec_path(key), *(("every",) if key == "gradual_unfreeze" else ()), "plateau")
        last_start = _last_start(timing, length, trainer_warmup)
        link = ChainLink(tuple(indices), names, factor_for, last_start=last_start, where=where)
        links.append(_with_start_rule(link, group, key, point, rank, args, length))
    return StartChain(source, tuple(links))


def _last_start(timing: GroupTiming, length: TrainingLength, trainer_warmup: int) -> int:
    """The last step a group can start at and finish its warm-up before training ends (a ratio always does)."""
    if timing.warmup is None:
        warmup = trainer_warmup
    else:
        warmup = int(timing.warmup.amount) if timing.warmup.unit == "steps" else 0
    return length.total_steps - max(1, warmup)


def _in_steps(group: PlannedGroup, key: str, compute: Callable[[], DecidedT]) -> DecidedT:
    """``compute()``, with a start in epochs on a training set without a length refused naming the key."""
    try:
        return compute()
    except ValueError:
        raise _located(
            "epochs need a training set with a length (this one has none); give steps or a fraction", group, key
        ) from None


def _with_start_rule(
    link: ChainLink,
    group: PlannedGroup,
    key: str,
    point: ScheduleAmount | PlateauTrigger | None,
    rank: int,
    args: TrainingArguments,
    length: TrainingLength,
) -> ChainLink:
    """``link`` with its offset or its trigger's rule, checked against the run.

    Raises:
        SpecError: Epochs without an epoch length; a first start past the end of training, or without room for
            its warm-up; a trigger whose ``earliest`` comes after its ``latest``, or whose ``latest`` leaves the
            first link no room for its warm-up.
    """
    if not isinstance(point, PlateauTrigger):
        offset = 0 if point is None else _in_steps(group, key, lambda: length.steps(point))
        if rank == 0 and offset >= length.total_steps:
            raise _located(
                f"{group.name} would start at step {offset}, but training has only {length.total_steps} "
                "optimizer steps; start it earlier or train longer",
                group,
                key,
            )
        if rank == 0:
            link.factor_for(offset)  # refuses a warm-up longer than the group's training from there
        return replace(link, offset=offset)
    rule = _in_steps(group, key, lambda: plateau_rule(point, args, length))
    if rule.latest is not None and rule.earliest > rule.latest:
        raise SpecError(
            f"the latest start ({rule.latest} steps) comes before the earliest ({rule.earliest} steps)",
            path=(*link.where, "latest"),
            group=group.source,
        )
    if rank == 0 and rule.latest is not None and link.fits(rule.latest) is None:
        raise SpecError(
            f"{group.name} would start at step {rule.latest} at the latest, but training has only "
            f"{length.total_steps} optimizer steps (with its warm-up after it); make latest earlier or train longer",
            path=(*link.where, "latest"),
            group=group.source,
        )
    if rank == 0 and link.fits(rule.earliest) is None:
        raise SpecError(
            f"{group.name} would start at step {rule.earliest} at the earliest, but training has only "
            f"{length.total_steps} optimizer steps (with its warm-up after it); make earliest earlier or train longer",
            path=(*link.where, "earliest"),
            group=group.source,
        )
    if rank == 0 and rule.latest is None:
        _check_a_plateau_can_start(link, rule, group, args, length)
    return replace(link, rule=rule)


def _evaluation_interval(args: TrainingArguments, length: TrainingLength) -> tuple[int, int] | None:
    """The Trainer's evaluations during training as ``(first, every)``: at ``k * every`` for ``k >= first``.

    The rule of transformers' ``DefaultFlowCallback``: every ``eval_steps`` steps (a value below 1 a ratio of the
    run, rounded up) or at each epoch's end, not before ``eval_delay``. None where the steps are not known here:
    no evaluation, or epochs of a training set without a length.
    """
    strategy = str(getattr(args.eval_strategy, "value", args.eval_strategy))
    delay = args.eval_delay or 0
    if strategy == "steps" and args.eval_steps:
        every = math.ceil(length.total_steps * args.eval_steps) if args.eval_steps < 1 else int(args.eval_steps)
        return max(1, math.ceil(delay / every)), every
    if strategy == "epoch" and length.steps_per_epoch:
        return max(1, math.ceil(delay)), length.steps_per_epoch
    return None


def _check_a_plateau_can_start(
    link: ChainLink, rule: PlateauRule, group: PlannedGroup, args: TrainingArguments, length: TrainingLength
) -> None:
    """Refuse a first start on a plateau, without a ``latest``, that no evaluation of this run can decide.

    A plateau needs ``patience + 1`` evaluations (the first sets the best), the last of them at or after
    ``earliest`` and early enough for the group's warm-up to fit before training ends.
    """
    interval = _evaluation_interval(args, length)
    if interval is None:
        return
    first, every = interval
    deciding = max(first + rule.patience, math.ceil(rule.earliest / every)) * every
    if link.fits(deciding) is None:
        raise SpecError(
            f"a plateau of {rule.metric} needs {rule.patience + 1} evaluations (patience {rule.patience})"
            f"{f' and one at step {rule.earliest} or later' if rule.earliest else ''}, and this run evaluates every "
            f"{every} steps from step {first * every}, so the first evaluation that could start {group.name} is at "
            f"step {deciding}, but it can start at step {link.last_start} at the latest (training has "
            f"{length.total_steps} optimizer steps, with its warm-up after the start); evaluate more often, lower "
            "patience, or give latest",
            path=link.where,
            group=group.source,
        )


def staged_parameters(plan: GroupPlan) -> list[nn.Parameter]:
    """The parameters of groups with timing, which a scheduler may hold out of autograd (not a matrix a group holds
    some rows of: the scheduler holds its row views out, and the matrix keeps its gradient for the other rows)."""
    return [
        plan.parameters[name]
        for group in plan.trainable_groups
        if group.timing
        for name in group.parameter_names
        if name not in group.rows
    ]


def scheduler_for_plan(
    plan: GroupPlan,
    optimizer: Optimizer,
    args: TrainingArguments,
    length: TrainingLength,
    base_learning_rate: float,
) -> LRScheduler | _FollowsBaseRate | None:
    """The scheduler the Trainer gets for ``plan``: per-group, proportional, or None for the stock one.

    Args:
        plan: The resolved groups, whose trainable groups are ``optimizer``'s param groups in order.
        optimizer: The optimizer built from the plan.
        args: The training arguments.
        length: The run's optimizer steps and epoch length.
        base_learning_rate: The base rate the groups' rates are multiples of.

    Returns:
        A `GroupScheduler` when a group has timing; a proportional plateau scheduler for a metric-driven
        ``lr_scheduler_type``; None when the stock scheduler keeps the groups' ratios by itself.
    """
    if plan.has_group_schedules:
        return build_group_scheduler(optimizer, plan, args, length, base_learning_rate)
    rates = [group.lr for group in plan.trainable_groups]
    return proportional_scheduler(args.lr_scheduler_type, optimizer, args.lr_scheduler_kwargs, rates,
                                  base_learning_rate)  # fmt: skip


# Resuming.


class ScheduleNotCarried(ValueError):
    """A saved scheduler state whose position cannot be carried to other groups (the message says why)."""


def continue_schedule(scheduler: Any, saved: Mapping[str, Any]) -> None:
    """Put the scheduler at the saved step, with its own (the new plan's) rates and per-group schedules.

    Stock ``LambdaLR.load_state_dict`` would bring back the saved base rates; only the step position is taken.

    Raises:
        ScheduleNotCarried: A scheduler whose position cannot be taken from the saved state.
    """
    if isinstance(scheduler, _FollowsBaseRate):
        if "base_rate" not in saved:
            raise ScheduleNotCarried("its scheduler state has no base rate to continue the plateau schedule from")
        scheduler.load_state_dict({key: value for key, value in saved.items() if key not in _PLATEAU_BUILT_FROM_PLAN})
        return
    if not isinstance(scheduler, LambdaLR) or "last_epoch" not in saved:
        raise ScheduleNotCarried(f"the position of a {type(scheduler).__name__} cannot be carried to other groups")
    position = {"last_epoch": saved["last_epoch"], "_step_count": saved.get("_step_count", saved["last_epoch"] + 1)}
    if isinstance(scheduler, GroupScheduler):
        # Starts decided at evaluations happened: they carry over by spec group, where the links still match.
        records = {"trigger_records": saved["trigger_records"]} if "trigger_records" in saved else {}
        scheduler.load_state_dict({**position, **records})  # sets every rate and requires_grad for the step
        return
    scheduler.__dict__.update(position)
    rates = [base * factor(scheduler.last_epoch) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas,
                                                                        strict=True)]  # fmt: skip
    for group, rate in zip(scheduler.optimizer.param_groups, rates, strict=True):
        set_rate(group, rate)
    scheduler._last_lr = rates
