"""``LayerwiseTrainer``: the Trainer whose ``create_optimizer`` builds param groups from a spec."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint, has_length
from transformers.utils import is_sagemaker_mp_enabled

from .binding import (
    check_same_on_every_rank,
    freeze_for_training,
    give_back_frozen,
    is_distributed,
    map_plan,
    remember_library_frozen,
)
from .callbacks import GroupDiagnosticsCallback, GroupLearningRateCallback
from .checkpoints import (
    LAYOUT_FILE,
    check_resume_layout,
    check_saved_files_readable,
    check_saved_optimizer,
    check_transfer_supported,
    layout_matches,
    optimizer_layout,
    plan_layout,
    resume_with_transfer,
    save_layout,
)
from .core.disjoint_groups import build_optimizer
from .core.gc_pause import gc_paused
from .core.group_schedule import TrainingLength
from .core.group_scheduler import GroupScheduler
from .core.grouping import GroupPlan
from .core.optimizer_state_transfer import StateTransfer
from .core.parameter_names import whole_numel
from .core.spec import LayerwiseSpec, SpecSource, parse_spec
from .core.weight_decay import matches_stock_rule
from .errors import SpecError, some_names
from .optimizer_choice import PlanInputs, check_optimizers_supported, plan_inputs_for_arguments
from .row_views import RowViews, check_row_groups_supported
from .schedulers import check_group_schedules_supported, scheduler_for_plan, staged_parameters
from .start_triggers import StartTriggerCallback

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _training_rng_untouched(device: torch.device, n_gpu: int) -> Iterator[None]:
    """Give Python's, NumPy's, torch's CPU and the training device's generators back as they were on entry.

    Only the device the Trainer runs on is forked (every GPU under DataParallel): under DDP each process
    forks its own, instead of creating a context on every visible GPU from every rank.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices: list[int] = []
    device_type = None  # with devices=[] only the CPU generator is forked
    if device.type not in ("cpu", "meta", "mps"):
        device_type = device.type
        if n_gpu > 1:
            devices = list(range(n_gpu))
        else:
            index = device.index
            devices = [index if index is not None else torch.get_device_module(device.type).current_device()]
    try:
        with torch.random.fork_rng(devices=devices, device_type=device_type):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _stock_decay_rule(model: nn.Module) -> list[str]:
    # The stock method never reads `self`.
    return Trainer.get_decay_parameter_names(None, model)  # type: ignore[arg-type]


# The private `transformers.Trainer` methods the mixin overrides, with the parameters it expects them to have.
PRIVATE_TRAINER_OVERRIDES = {
    "_wrap_model": ("self", "model", "training", "dataloader"),
    "_save_optimizer_and_scheduler": ("self", "output_dir"),
    "_load_optimizer_and_scheduler": ("self", "checkpoint"),
}


class LayerwiseTrainerMixin:
    """Adds a ``param_groups`` spec to a ``transformers.Trainer`` subclass.

    The subclass's optimizer must be the stock ``create_optimizer``'s, built from the class and keyword
    arguments of ``get_optimizer_cls_and_kwargs``: ``Seq2SeqTrainer`` and TRL's ``SFTTrainer`` and
    ``DPOTrainer`` are run in CI. A Trainer that returns param groups of its own there is refused
    (sentence-transformers' Trainers: use ``layerwise_trainer.downstream.LayerwiseSentenceTransformerTrainer``).
    With a spec, a parent's own ``create_optimizer`` is not called.

    Put it first in the bases: ``class MyTrainer(LayerwiseTrainerMixin, SFTTrainer)``. With no spec
    the Trainer behaves exactly as without the mixin.

    The spec is resolved once, when the trainer is built (or ``model_init`` builds a model), so that a
    bad spec fails before any data is prepared; ``create_optimizer`` maps that plan by name onto the
    model it gets (wrapped or not) and resolves again only when the model or the arguments changed since.
    The frozen groups are frozen when training starts, before the model is wrapped; parameters an earlier
    trainer froze on the same model are given back first, so only the user's own freezing carries over.

    The base rate is the ``lr`` of the optimizer's keyword arguments: ``TrainingArguments.learning_rate``
    for ``optim``, or the ``lr`` of ``optimizer_cls_and_kwargs`` when it has one. The spec's ``lr_scale``
    multiplies it, the scheduler starts from it (``cosine_with_min_lr``'s floor too) and the logged
    ``learning_rate`` follows it.

    Args:
        param_groups: The spec (see `parse_spec`); when None, ``args.param_groups`` is used if the
            arguments have that field.
        *args: The Trainer's positional arguments.
        **kwargs: The Trainer's keyword arguments.

    Attributes:
        param_groups_spec: The parsed spec, or None.
        group_plan: The groups the spec gives for the model (a `GroupPlan`), resolved when the trainer
            is built; after ``create_optimizer``, over the parameters the optimizer holds.
        group_lr_callback: The installed `GroupLearningRateCallback`.
        group_diagnostics_callback: The installed `GroupDiagnosticsCallback`, when the arguments'
            ``group_diagnostics`` is true.
        resume_transfer: After a resume with ``resume_with_changed_groups`` from a checkpoint saved with
            other groups: the `StateTransfer` that carried the optimizer state by name; else None.

    Raises:
        SpecError: A problem with the spec, found as early as the model allows, or a spec given
            together with ``optimizers=`` or with a DeepSpeed config that builds its own optimizer.
    """

    # Class-level defaults: Trainer.__init__ calls overridden hooks (call_model_init) before ours runs.
    param_groups_spec: LayerwiseSpec | None = None
    group_plan: GroupPlan | None = None
    group_lr_callback: GroupLearningRateCallback | None = None
    group_diagnostics_callback: GroupDiagnosticsCallback | None = None
    _plan_inputs: PlanInputs | None = None
    _optimizer_layout: dict[str, Any] | None = None
    _steps_per_epoch: int | None = None
    _resuming_from: str | None = None
    _row_views: RowViews | None = None
    resume_transfer: StateTransfer | None = None

    def __init__(self, *args: Any, param_groups: SpecSource | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        trainer: Trainer = self  # type: ignore[assignment]
        source = param_groups if param_groups is not None else getattr(trainer.args, "param_groups", None)
        self.param_groups_spec = None if source is None else parse_spec(source)
        self.group_plan = None
        self.group_lr_callback = None
        self.group_diagnostics_callback = None
        if getattr(trainer.args, "group_diagnostics", False):
            self.group_diagnostics_callback = GroupDiagnosticsCallback.attach(trainer)
        if self.param_groups_spec is None:
            return
        self._check_no_prebuilt_optimizer_or_scheduler()
        self._check_deepspeed_config()
        self.group_lr_callback = GroupLearningRateCallback.attach(trainer)
        if trainer.model is not None:
            self._resolve(self.spec_model(trainer.model))

    def _check_no_prebuilt_optimizer_or_scheduler(self) -> None:
        trainer: Trainer = self  # type: ignore[assignment]
        if trainer.optimizer is not None:
            raise SpecError(
                "param_groups cannot be combined with optimizers=(optimizer, ...): the spec builds the "
                "optimizer; pass one or the other"
            )
        if trainer.lr_scheduler is not None:
            raise SpecError(
                "param_groups cannot be combined with optimizers=(None, scheduler): a scheduler built before "
                "the spec's optimizer exists cannot drive its groups. Choose the schedule with "
                "TrainingArguments.lr_scheduler_type and lr_scheduler_kwargs, or subclass the trainer and "
                "override create_scheduler(num_training_steps, optimizer) to build yours on that optimizer"
            )

    def _check_deepspeed_config(self) -> None:
        trainer: Trainer = self  # type: ignore[assignment]
        if not getattr(trainer, "is_deepspeed_enabled", False):
            return
        config = trainer.args.hf_deepspeed_config.config
        for section in ("optimizer", "scheduler"):
            if section in config:
                raise SpecError(
                    f"the DeepSpeed config has an {section!r} section, which would replace the optimizer the "
                    f"spec builds (or set every group to one rate); remove it and let the Trainer build "
                    "the optimizer and scheduler"
                )

    def _decay_parameter_names(self, model: nn.Module) -> list[str] | None:
        """The Trainer's decay names when a subclass changed the rule; None for the stock rule."""
        trainer: Trainer = self  # type: ignore[assignment]
        overridden = type(trainer).get_decay_parameter_names is not Trainer.get_decay_parameter_names
        if overridden or not matches_stock_rule(_stock_decay_rule):
            return trainer.get_decay_parameter_names(model)
        return None

    def _plan_inputs_for(self, model: nn.Module) -> PlanInputs:
        """The inputs a plan for ``model`` is resolved with now (the arguments may have changed since)."""
        trainer: Trainer = self  # type: ignore[assignment]
        return plan_inputs_for_arguments(
            trainer.args,
            model,
            spec=self.param_groups_spec,
            get_optimizer_cls_and_kwargs=trainer.get_optimizer_cls_and_kwargs,
            optimizer_cls_and_kwargs=trainer.optimizer_cls_and_kwargs,
            decay_parameter_names=self._decay_parameter_names(model),
        )

    def spec_model(self, model: nn.Module) -> nn.Module:
        """The module whose parameters the spec is matched against and the optimizer is built over.

        The model itself. Override it to show the spec more than the model: sentence-transformers' Trainers
        add their loss's own parameters under ``loss.`` (`layerwise_trainer.downstream`). It gets the model
        the Trainer trains, possibly wrapped (DDP, FSDP, ``torch.compile``), and should return a module
        holding that model's parameters under their user-facing names.

        Args:
            model: The model, when the trainer is built (or ``model_init`` builds one) and when the
                optimizer is built.

        Returns:
            The module the spec sees.
        """
        return model

    def _resolve(self, target: nn.Module, inputs: PlanInputs | None = None) -> GroupPlan:
        """Resolve the spec against ``target`` (what `spec_model` shows), after giving back what an earlier
        trainer froze in it; refuse per-group schedules this Trainer cannot keep, before any data."""
        assert self.param_groups_spec is not None
        if inputs is None:
            inputs = self._plan_inputs_for(target)
        give_back_frozen(target)
        self.group_plan = inputs.resolve(target, self.param_groups_spec)
        self._plan_inputs = inputs
        check_group_schedules_supported(self.group_plan, self)
        check_optimizers_supported(self.group_plan, self)
        check_row_groups_supported(self.param_groups_spec, self)
        return self.group_plan

    def _plan_for(self, target: nn.Module, inputs: PlanInputs) -> GroupPlan:
        """The resolved plan mapped onto ``target`` by name, or a new resolution when it does not fit."""
        if self.group_plan is not None and self._plan_inputs is not None and self._plan_inputs.same_as(inputs):
            mapped = map_plan(self.group_plan, target)
            if mapped is not None:
                return mapped
        return self._resolve(target, inputs)

    def call_model_init(self, trial: Any = None) -> nn.Module:
        """The stock ``call_model_init``, with the spec resolved against the new model."""
        model = super().call_model_init(trial)  # type: ignore[misc]
        if self.param_groups_spec is not None:
            self._resolve(self.spec_model(model))
        return model

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """The stock ``train``; the checkpoint to resume from is kept for the check `create_optimizer` makes.

        Under DeepSpeed the Trainer has DeepSpeed load the checkpoint's weights and optimizer state as soon as
        the engine is built, before ``_load_optimizer_and_scheduler``, so the layout is compared there.
        """
        trainer: Trainer = self  # type: ignore[assignment]
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(trainer.args.output_dir)  # None: the stock train says none was found
        self._resuming_from = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else None
        try:
            return super().train(resume_from_checkpoint, *args, **kwargs)  # type: ignore[misc]
        finally:
            self._resuming_from = None

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """The stock evaluation; with a spec, it leaves the training random number generators as it found them.

        Iterating the evaluation DataLoader draws a seed from torch's global generator (a collator or
        ``compute_metrics`` may draw more). A checkpoint at the last step of an epoch is saved before that
        epoch's evaluation (``eval_strategy="epoch"``), so a run resumed from it started the next epoch from
        another RNG state than the uninterrupted run: other dropout masks (the stock Trainer of transformers 5.25
        does so). Evaluating under a fork of the generators makes that resume exact, and evaluation no longer
        changes the trained weights. Without a spec this is the stock Trainer's evaluation, draws included.
        """
        trainer: Trainer = self  # type: ignore[assignment]
        if self.param_groups_spec is None:
            return super().evaluate(*args, **kwargs)  # type: ignore[misc]
        with _training_rng_untouched(trainer.args.device, trainer.args.n_gpu):
            return super().evaluate(*args, **kwargs)  # type: ignore[misc]

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Build the optimizer from the spec's param groups (the stock optimizer when there is no spec).

        The optimizer class and its keyword arguments come from ``TrainingArguments.optim`` (or
        ``optimizer_cls_and_kwargs``), so every optimizer that takes param groups works. The frozen
        groups' parameters get ``requires_grad=False`` and stay out of the optimizer.
        """
        if self.param_groups_spec is None:
            return super().create_optimizer(model)  # type: ignore[misc]
        trainer: Trainer = self  # type: ignore[assignment]
        if trainer.optimizer is None:
            target = self.spec_model(trainer.model if model is None else model)
            inputs = self._plan_inputs_for(target)
            plan = self._plan_for(target, inputs)
            freeze_for_training(plan, target)
            self._optimizer_layout = optimizer_layout(inputs.optimizer_cls, inputs.optimizer_kwargs)
            if is_distributed():
                check_same_on_every_rank(plan_layout(plan, self._optimizer_layout)["hash"], "the param groups")
            if getattr(trainer, "is_deepspeed_enabled", False):
                _check_deepspeed_keeps_every_group(plan)
                self._check_resume_before_deepspeed_loads(plan)
            views = plan.row_views()
            with gc_paused():
                groups = plan.optimizer_param_groups(views)
                trainer.optimizer = build_optimizer(inputs.optimizer_cls, groups, inputs.optimizer_kwargs)
            self._row_views = RowViews(plan, views).attach(trainer.optimizer) if views else None
            self.group_plan = plan
            self._follow_in_logs(plan, inputs.learning_rate)
            _keep_embeddings_in_32_bit(inputs.optimizer_cls, inputs.optimizer_kwargs, target)
            logger.info(
                "param groups: %s",
                ", ".join(f"{group.name} (lr {group.lr:g}, wd {group.weight_decay:g})" for group in plan.groups),
            )
            if is_sagemaker_mp_enabled():
                import smdistributed.modelparallel.torch as smp

                trainer.optimizer = smp.DistributedOptimizer(trainer.optimizer)
        return trainer.optimizer

    def _check_resume_before_deepspeed_loads(self, plan: GroupPlan) -> None:
        """Refuse a checkpoint saved with other groups before DeepSpeed loads it into these.

        DeepSpeed restores its flattened optimizer state by group position: with other groups it stopped with
        errors that name no group (0.19.8, ZeRO-1 and 2: a parameter-alignment mismatch; ZeRO-3: another
        number of groups), and groups of the same sizes would take each other's state. Its state names no
        parameter, so ``resume_with_changed_groups`` cannot carry it either.
        """
        checkpoint = self._resuming_from
        if checkpoint is None:
            return
        trainer: Trainer = self  # type: ignore[assignment]
        current = plan_layout(plan, self._optimizer_layout)
        if getattr(trainer.args, "resume_with_changed_groups", False) and not layout_matches(checkpoint, current):
            check_transfer_supported(trainer, checkpoint)
        check_resume_layout(checkpoint, current)

    def _follow_in_logs(self, plan: GroupPlan, base_learning_rate: float) -> None:
        """Tell the callback the base rate and each group's planned rate, which the schedule scales."""
        if self.group_lr_callback is None:
            return
        self.group_lr_callback.base_learning_rate = base_learning_rate
        self.group_lr_callback.initial_rates = tuple(group.lr for group in plan.trainable_groups)
        self.group_lr_callback.frozen_group_names = plan.frozen_group_names

    def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The stock training step; with groups that take rows of a matrix, their views' gradients are set after it.

        Before it too: after ``model.zero_grad()`` the views drop the old gradient (see the `row_views` module).
        """
        if self._row_views is not None:
            self._row_views.sync()
        loss = super().training_step(*args, **kwargs)  # type: ignore[misc]
        if self._row_views is not None:
            self._row_views.sync()
        return loss

    def set_initial_training_values(self, args: Any, dataloader: Any) -> tuple[Any, ...]:
        """The stock values; the optimizer steps per epoch are kept for starts given in epochs."""
        values = super().set_initial_training_values(args, dataloader)  # type: ignore[misc]
        self._steps_per_epoch = values[1] if has_length(dataloader) else None
        return values

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """The stock scheduler, or one that keeps every group's own rate (see the `schedulers` module).

        With per-group schedules, a `GroupScheduler`: every group's rate is a function of the optimizer step,
        and the parameters of a group that has not started get ``requires_grad=False`` here, after the model
        was wrapped, so DDP's reducer holds them from the start. When a group starts on a plateau, a
        `StartTriggerCallback` is installed to decide it at the evaluations. With ``reduce_lr_on_plateau`` or
        ``greedy``, the decisions are taken on the base rate and every group follows at its ratio.
        """
        trainer: Trainer = self  # type: ignore[assignment]
        target = optimizer if optimizer is not None else trainer.optimizer
        plan, inputs = self.group_plan, self._plan_inputs
        if plan is None or inputs is None or trainer.lr_scheduler is not None or target is None:
            return super().create_scheduler(num_training_steps, optimizer)  # type: ignore[misc]
        check_group_schedules_supported(plan, trainer)
        if plan.has_group_schedules:
            remember_library_frozen(trainer.model, staged_parameters(plan))
        length = TrainingLength(num_training_steps, self._steps_per_epoch)
        scheduler = scheduler_for_plan(plan, target, trainer.args, length, inputs.learning_rate)
        if scheduler is None:
            return super().create_scheduler(num_training_steps, optimizer)  # type: ignore[misc]
        trainer.lr_scheduler = scheduler  # type: ignore[assignment]
        trainer._created_lr_scheduler = True  # a later train() builds it again, as the stock one
        if isinstance(scheduler, GroupScheduler) and scheduler.chains:
            StartTriggerCallback.attach(trainer)  # decides the starts on a plateau at each evaluation
        return trainer.lr_scheduler

    # The overrides of private Trainer methods: the only ones, all here (PRIVATE_TRAINER_OVERRIDES), each
    # with the stock signature. tests/adapter/test_private_overrides.py fails when the installed
    # transformers changes one of them.

    def _wrap_model(self, model: nn.Module, training: bool = True, dataloader: Any = None) -> nn.Module:
        """The stock wrapping, after freezing the frozen groups when training (DDP and FSDP need it first).

        Under FSDP1 the Trainer wraps the model before it calls ``create_optimizer``.
        """
        trainer: Trainer = self  # type: ignore[assignment]
        if training and self.group_plan is not None and trainer.model is not None:
            freeze_for_training(self.group_plan, trainer.model)
        return super()._wrap_model(model, training, dataloader)  # type: ignore[misc]

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """The stock save, plus the param-group layout the resume check compares against."""
        super()._save_optimizer_and_scheduler(output_dir)  # type: ignore[misc]
        trainer: Trainer = self  # type: ignore[assignment]
        if self.group_plan is not None and trainer.args.should_save:
            save_layout(plan_layout(self.group_plan, self._optimizer_layout), output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """Refuse a checkpoint saved with other param groups before its state is loaded, then load it.

        Torch's ``load_state_dict`` replaces every group's keys with the saved group's: the names and the
        spec's other hyperparameters are put back after it.

        With ``args.resume_with_changed_groups`` and a checkpoint saved with other groups (or by the stock
        Trainer), the state is carried by parameter name instead (see the `checkpoints` module);
        `resume_transfer` then says what was carried, started fresh and dropped.
        """
        if checkpoint is None or self.group_plan is None:
            super()._load_optimizer_and_scheduler(checkpoint)  # type: ignore[misc]
            return
        trainer: Trainer = self  # type: ignore[assignment]
        current = plan_layout(self.group_plan, self._optimizer_layout)
        if getattr(trainer.args, "resume_with_changed_groups", False) and not layout_matches(checkpoint, current):
            self.resume_transfer = resume_with_transfer(trainer, checkpoint, self.group_plan, current, trainer.model)
            return
        has_layout = check_resume_layout(checkpoint, current)
        check_saved_files_readable(checkpoint)
        if not has_layout:
            logger.warning(
                "%s has no %s (it was not saved by a LayerwiseTrainer): its optimizer state is loaded "
                "by position, unchecked against the spec's param groups",
                checkpoint,
                LAYOUT_FILE,
            )
        if trainer.optimizer is not None:
            label = (self._optimizer_layout or {}).get("class", type(trainer.optimizer).__name__)
            check_saved_optimizer(checkpoint, trainer.optimizer.param_groups, label.rsplit(".", 1)[-1])
        super()._load_optimizer_and_scheduler(checkpoint)  # type: ignore[misc]
        if trainer.optimizer is not None:
            _restore_group_keys(trainer.optimizer.param_groups, self.group_plan)


def _check_deepspeed_keeps_every_group(plan: GroupPlan) -> None:
    """Refuse a group that would reach DeepSpeed empty: it optimizes only parameters with elements.

    The plan holds no empty group and no frozen parameter in a trained one; a group of parameters without
    elements is the one left. DeepSpeed drops empty groups (DeepSpeedExamples PR #756: the scheduler's group
    count breaks); ZeRO-1 and 2 stop with an ``IndexError`` on one, ZeRO-3 fails on the parameter.
    """
    for group in plan.trainable_groups:
        parameters = [plan.parameters[name] for name in group.parameter_names]
        if any(p.requires_grad and whole_numel(p) > 0 for p in parameters):
            continue
        raise SpecError(
            f"the parameters of {group.name!r} ({some_names(group.parameter_names)}) have no elements, and "
            "DeepSpeed leaves such parameters out of its optimizer, so the group would reach it empty and be "
            "dropped, and the scheduler's and the logs' groups would no longer be the optimizer's; freeze the "
            "group (freeze: true) or leave those parameters out of it",
            path=() if group.spec_index is None else (f"groups[{group.spec_index}]",),
            group=group.source,
        )


def _restore_group_keys(param_groups: list[dict[str, Any]], plan: GroupPlan) -> None:
    """Put each group's name and spec hyperparameters back after torch's ``load_state_dict`` replaced them."""
    trainable = plan.trainable_groups
    if len(param_groups) != len(trainable):
        return
    for group, planned in zip(param_groups, trainable, strict=True):
        group["name"] = planned.name
        group.update(planned.options)


def _keep_embeddings_in_32_bit(optimizer_cls: Any, optimizer_kwargs: dict[str, Any], model: nn.Module) -> None:
    """As the stock Trainer does for 8-bit bitsandbytes optimizers: embeddings keep 32-bit state."""
    if "bitsandbytes" not in str(optimizer_cls) or optimizer_kwargs.get("optim_bits") != 8:
        return
    import bitsandbytes

    manager = bitsandbytes.optim.GlobalOptimManager.get_instance()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            manager.register_module_override(module, "weight", {"optim_bits": 32})


class LayerwiseTrainer(LayerwiseTrainerMixin, Trainer):
    """A drop-in ``transformers.Trainer`` that builds its optimizer from a param-group spec.

    It takes everything ``Trainer`` takes, plus ``param_groups``. With no spec (and no
    ``args.param_groups``) it is the stock Trainer. With one, ``create_optimizer`` builds one param
    group per spec group (split by layer for layer-wise LR decay, and into decay and no-decay halves)
    for whatever ``TrainingArguments.optim`` selects, freezes the frozen groups, and every training
    log entry carries ``learning_rate/<group>`` for every group.

    Args:
        param_groups: The spec: a list of group dicts, a dict with ``groups``, a path to a YAML/JSON
            file, a JSON string, or a `LayerwiseSpec`.
        *args: ``Trainer``'s positional arguments.
        **kwargs: ``Trainer``'s keyword arguments.

    Example:
        ```python
        trainer = LayerwiseTrainer(
            model=model,
            args=TrainingArguments("out", learning_rate=2e-5, weight_decay=0.01),
            train_dataset=train,
            param_groups=[
                {"name": "body", "match": "bert.*", "lr": 0},
                {"name": "head", "match": "classifier.*", "lr": 2e-5},
            ],
        )
        trainer.train()  # logs learning_rate/body: 0.0 and learning_rate/head: 2e-05
        ```
    """
