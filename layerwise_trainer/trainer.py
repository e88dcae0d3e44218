"""``LayerwiseTrainer``: the Trainer whose ``create_optimizer`` builds param groups from a spec."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers import Trainer
from transformers.utils import is_sagemaker_mp_enabled

from .callback import GroupLearningRateCallback
from .checkpoint_layout import LAYOUT_FILE, check_resume_layout, plan_layout, save_layout
from .decay import matches_stock_rule
from .distributed import check_same_on_every_rank, is_distributed
from .errors import SpecError
from .gc_pause import gc_paused
from .grouping import GroupPlan, resolve_groups
from .optimizers import check_optimizer_takes_groups, optimizer_for_args
from .scheduling import proportional_scheduler_kwargs
from .spec import LayerwiseSpec, SpecSource, parse_spec

logger = logging.getLogger(__name__)


def _stock_decay_rule(model: nn.Module) -> list[str]:
    # The stock method never reads `self`.
    return Trainer.get_decay_parameter_names(None, model)  # type: ignore[arg-type]


class LayerwiseTrainerMixin:
    """Adds a ``param_groups`` spec to any ``transformers.Trainer`` subclass.

    Put it first in the bases: ``class MyTrainer(LayerwiseTrainerMixin, SFTTrainer)``. With no spec
    the Trainer behaves exactly as without the mixin.

    Args:
        param_groups: The spec (see :func:`~layerwise_trainer.parse_spec`); when None,
            ``args.param_groups`` is used if the arguments have that field.
        *args: The Trainer's positional arguments.
        **kwargs: The Trainer's keyword arguments.

    Attributes:
        param_groups_spec: The parsed spec, or None.
        group_plan: The groups the spec gives for the model (:class:`~layerwise_trainer.GroupPlan`),
            resolved when the trainer is built and again, for the wrapped model, in ``create_optimizer``.
        group_lr_callback: The installed :class:`~layerwise_trainer.GroupLearningRateCallback`.

    Raises:
        SpecError: A problem with the spec, found as early as the model allows, or a spec given
            together with ``optimizers=`` or with a DeepSpeed config that builds its own optimizer.
    """

    # Class-level defaults: Trainer.__init__ calls overridden hooks (call_model_init) before ours runs.
    param_groups_spec: LayerwiseSpec | None = None
    group_plan: GroupPlan | None = None
    group_lr_callback: GroupLearningRateCallback | None = None

    def __init__(self, *args: Any, param_groups: SpecSource | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        trainer: Trainer = self  # type: ignore[assignment]
        source = param_groups if param_groups is not None else getattr(trainer.args, "param_groups", None)
        self.param_groups_spec = None if source is None else parse_spec(source)
        self.group_plan = None
        self.group_lr_callback = None
        if self.param_groups_spec is None:
            return
        if trainer.optimizer is not None:
            raise SpecError(
                "param_groups cannot be combined with optimizers=(optimizer, ...): the spec builds the "
                "optimizer; pass one or the other"
            )
        self._check_deepspeed_config()
        self.group_lr_callback = GroupLearningRateCallback.attach(
            trainer, base_learning_rate=trainer.args.learning_rate
        )
        if trainer.model is not None:
            self.group_plan = self._plan_groups(trainer.model, *self._optimizer_cls_and_kwargs(trainer.model))
            self.group_plan.freeze_frozen_groups()

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

    def _optimizer_cls_and_kwargs(self, model: nn.Module) -> tuple[type[torch.optim.Optimizer], dict[str, Any], str]:
        trainer: Trainer = self  # type: ignore[assignment]
        if trainer.optimizer_cls_and_kwargs is None:
            return optimizer_for_args(trainer.args, model, trainer.get_optimizer_cls_and_kwargs)
        optimizer_cls, optimizer_kwargs = trainer.optimizer_cls_and_kwargs
        label = getattr(optimizer_cls, "__name__", repr(optimizer_cls))
        check_optimizer_takes_groups(optimizer_cls, optimizer_kwargs, label)
        return optimizer_cls, dict(optimizer_kwargs), label

    def _decay_parameter_names(self, model: nn.Module) -> list[str] | None:
        """The Trainer's decay names when a subclass changed the rule; None for the stock rule."""
        trainer: Trainer = self  # type: ignore[assignment]
        overridden = type(trainer).get_decay_parameter_names is not Trainer.get_decay_parameter_names
        if overridden or not matches_stock_rule(_stock_decay_rule):
            return trainer.get_decay_parameter_names(model)
        return None

    def _plan_groups(
        self,
        model: nn.Module,
        optimizer_cls: type[torch.optim.Optimizer],
        optimizer_kwargs: dict[str, Any],
        label: str,
    ) -> GroupPlan:
        """Resolve the spec against ``model`` for the given optimizer."""
        assert self.param_groups_spec is not None
        trainer: Trainer = self  # type: ignore[assignment]
        return resolve_groups(
            model,
            self.param_groups_spec,
            learning_rate=trainer.args.learning_rate,
            weight_decay=trainer.args.weight_decay,
            decay_parameter_names=self._decay_parameter_names(model),
            optimizer_cls=optimizer_cls,
            optimizer_kwargs=optimizer_kwargs,
            optimizer_label=label,
        )

    def call_model_init(self, trial: Any = None) -> nn.Module:
        """The stock ``call_model_init``, with the spec's frozen groups frozen on the new model."""
        model = super().call_model_init(trial)  # type: ignore[misc]
        if self.param_groups_spec is not None:
            self.group_plan = self._plan_groups(model, *self._optimizer_cls_and_kwargs(model))
            self.group_plan.freeze_frozen_groups()
        return model

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
            opt_model = trainer.model if model is None else model
            optimizer_cls, optimizer_kwargs, label = self._optimizer_cls_and_kwargs(opt_model)
            plan = self._plan_groups(opt_model, optimizer_cls, optimizer_kwargs, label)
            plan.freeze_frozen_groups()
            if is_distributed():
                check_same_on_every_rank(plan_layout(plan)["hash"], "the param groups")
            with gc_paused():
                trainer.optimizer = optimizer_cls(plan.optimizer_param_groups(), **optimizer_kwargs)
            self.group_plan = plan
            if self.group_lr_callback is not None:
                self.group_lr_callback.frozen_group_names = plan.frozen_group_names
            _keep_embeddings_in_32_bit(optimizer_cls, optimizer_kwargs, opt_model)
            logger.info(
                "param groups: %s",
                ", ".join(f"{group.name} (lr {group.lr:g}, wd {group.weight_decay:g})" for group in plan.groups),
            )
            if is_sagemaker_mp_enabled():
                import smdistributed.modelparallel.torch as smp

                trainer.optimizer = smp.DistributedOptimizer(trainer.optimizer)
        return trainer.optimizer

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """The stock save, plus the param-group layout the resume check compares against."""
        super()._save_optimizer_and_scheduler(output_dir)  # type: ignore[misc]
        trainer: Trainer = self  # type: ignore[assignment]
        if self.group_plan is not None and trainer.args.should_save:
            save_layout(plan_layout(self.group_plan), output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """Refuse a checkpoint saved with other param groups before its state is loaded, then load it."""
        checked = checkpoint is not None and self.group_plan is not None
        if checked and not check_resume_layout(checkpoint, plan_layout(self.group_plan)):
            logger.warning(
                "%s has no %s (it was not saved by a LayerwiseTrainer): its optimizer state is loaded "
                "by position, unchecked against the spec's param groups",
                checkpoint,
                LAYOUT_FILE,
            )
        super()._load_optimizer_and_scheduler(checkpoint)  # type: ignore[misc]

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """The stock scheduler; for plateau-style schedulers, with bounds scaled per group.

        ``reduce_lr_on_plateau`` and ``greedy`` clamp rates to absolute bounds; their ``min_lr``,
        ``max_lr`` and ``eps`` are scaled by each group's ratio to the base rate so that every group
        keeps its ratio (see :mod:`layerwise_trainer.scheduling`).
        """
        trainer: Trainer = self  # type: ignore[assignment]
        target = optimizer if optimizer is not None else trainer.optimizer
        scaled = None
        if self.param_groups_spec is not None and trainer.lr_scheduler is None and target is not None:
            scaled = proportional_scheduler_kwargs(
                trainer.args.lr_scheduler_type,
                trainer.args.lr_scheduler_kwargs,
                [group["lr"] for group in target.param_groups],
                trainer.args.learning_rate,
            )
        if scaled is None:
            return super().create_scheduler(num_training_steps, optimizer)  # type: ignore[misc]
        original = trainer.args.lr_scheduler_kwargs
        trainer.args.lr_scheduler_kwargs = scaled
        try:
            return super().create_scheduler(num_training_steps, optimizer)  # type: ignore[misc]
        finally:
            trainer.args.lr_scheduler_kwargs = original


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
            file, a JSON string, or a :class:`~layerwise_trainer.LayerwiseSpec`.
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
