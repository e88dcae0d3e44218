"""The one path from ``TrainingArguments`` to a plan: which optimizer, which base rates, which groups.

`LayerwiseTrainer`, `build_param_groups(args=...)` and `layerwise-trainer plan` all go through
`plan_inputs_for_arguments`: the optimizer ``args.optim`` (or ``optimizer_cls_and_kwargs``) selects, with the
ones that cannot take param groups refused, and the base learning rate taken from that optimizer's ``lr``.
`PlanInputs.resolve` then hands them to the core's `resolve_groups`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .binding import sharding_engine
from .core.grouping import GroupPlan, resolve_groups
from .core.hybrid_optimizer import Algorithm, HybridOptimizer
from .core.muon import ADAMW, MUON, MUON_OPTIONS, TRAINER, MuonSettings
from .core.optimizer_options import optimizer_hyperparameters
from .core.row_groups import OriginalVocabulary
from .core.spec import LayerwiseSpec, SpecSource, parse_spec
from .errors import SpecError
from .row_views import needs_original_vocabulary, original_vocabulary

if TYPE_CHECKING:
    from transformers import TrainingArguments

# `TrainingArguments.optim` values whose optimizers build their own parameter layout (GaLore and
# APOLLO project chosen modules, LOMO fuses the update into backward, the layer-wise variants keep one
# optimizer per parameter), so a spec's groups could not reach them.
_GROUPLESS_OPTIM_PREFIXES = ("galore_", "apollo_", "lomo", "adalomo")
# Keys of optimizer kwargs that mean "this optimizer takes something other than param groups".
_GROUPLESS_KWARGS = ("params", "model", "optimizer_dict")


def optim_name(optim: Any) -> str:
    """The plain string of a ``TrainingArguments.optim`` value (an enum or a string)."""
    return str(getattr(optim, "value", optim))


def check_optim_takes_groups(optim: Any) -> None:
    """Refuse the ``TrainingArguments.optim`` values that cannot take param groups, before any import.

    Raises:
        SpecError: ``optim`` is GaLore, APOLLO, LOMO, AdaLOMO or a layer-wise variant.
    """
    name = optim_name(optim)
    if name.startswith(_GROUPLESS_OPTIM_PREFIXES) or name.endswith("_layerwise"):
        raise SpecError(
            f"optim {name!r} builds its own parameter layout and cannot take param groups; "
            "use a spec with an optimizer such as 'adamw_torch', or drop the spec"
        )


def check_optimizer_takes_groups(optimizer_cls: Any, optimizer_kwargs: Mapping[str, Any], label: str) -> None:
    """Refuse optimizer classes and factories that the Trainer would not hand param groups.

    Args:
        optimizer_cls: What ``get_optimizer_cls_and_kwargs`` returned.
        optimizer_kwargs: Its keyword arguments.
        label: The optimizer's name for the message (the ``optim`` value or the class name).

    Raises:
        SpecError: ``optimizer_cls`` is a factory (Dion; a Muon factory builds the hybrid instead, see
            `plan_inputs_for_arguments`) or the kwargs carry their own params (for
            ``optimizer_dict``, the param groups sentence-transformers' Trainers return, the message names
            the ready Trainer for them).
    """
    is_class = isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)
    carried = [key for key in _GROUPLESS_KWARGS if key in optimizer_kwargs]
    if is_class and carried == ["optimizer_dict"]:
        raise SpecError(
            f"the Trainer's get_optimizer_cls_and_kwargs gave {label!r} param groups of its own "
            "(optimizer_dict), which the spec's groups would replace: sentence-transformers' Trainers do this to "
            "train their loss's parameters. Use layerwise_trainer.downstream.LayerwiseSentenceTransformerTrainer "
            "(the spec then sees the loss's parameters under loss.*), or override get_optimizer_cls_and_kwargs "
            "to return transformers.Trainer.get_optimizer_cls_and_kwargs(args, model) when there is a spec"
        )
    if not is_class and not carried:
        raise SpecError(
            f"optimizer {label!r} is a factory that builds the optimizer from the model itself (as Dion does), so "
            "it cannot take the spec's param groups; to train with it, drop the spec and its own groups apply; for "
            "per-group rates, use the spec with an optimizer class such as 'adamw_torch' (for Muon, the spec's own "
            "muon setting or a group's optimizer: muon)"
        )
    if not is_class or carried:
        raise SpecError(
            f"optimizer {label!r} builds its own parameter layout and cannot take param groups; "
            "use a spec with an optimizer such as 'adamw_torch', or drop the spec"
        )


OptimizerFactory = Callable[[Any, Any], tuple[Any, Any]]


@dataclass(frozen=True)
class PlanInputs:
    """What a spec is resolved with, besides the model: base rates, the optimizer and the decay rule.

    Args:
        learning_rate: The base learning rate: the optimizer's ``lr`` keyword when it has one.
        weight_decay: The base weight decay.
        optimizer_cls: The optimizer class the groups are checked against, or None for no check.
        optimizer_kwargs: The keyword arguments it is built with.
        optimizer_label: The optimizer's name in messages (the ``optim`` value or the class name).
        decay_parameter_names: Parameters that may get weight decay; None for the stock rule.
        implied_muon: The top-level ``muon`` setting ``optim`` implies (one of transformers' Muon optimizers),
            for a spec that has none.
        original_vocabulary: The model's vocabulary before tokens were added, for ``rows: new``.
    """

    learning_rate: float
    weight_decay: float
    optimizer_cls: type[torch.optim.Optimizer] | None
    optimizer_kwargs: dict[str, Any]
    optimizer_label: str | None = None
    decay_parameter_names: list[str] | None = None
    implied_muon: MuonSettings | None = None
    original_vocabulary: OriginalVocabulary | None = None

    def same_as(self, other: PlanInputs) -> bool:
        """Whether a plan resolved with ``other`` holds for these inputs too."""
        try:
            return bool(self == other)
        except Exception:  # kwargs holding tensors compare elementwise: take them for changed
            return False

    def resolve(self, model: nn.Module, spec: SpecSource) -> GroupPlan:
        """`resolve_groups` of ``spec`` against ``model`` with these inputs."""
        spec = parse_spec(spec)
        if self.implied_muon is not None and spec.muon is None:
            spec = dataclasses.replace(spec, muon=self.implied_muon)
        return resolve_groups(
            model,
            spec,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            decay_parameter_names=self.decay_parameter_names,
            optimizer_cls=self.optimizer_cls,
            optimizer_kwargs=self.optimizer_kwargs,
            optimizer_label=self.optimizer_label,
            original_vocabulary=self.original_vocabulary,
        )


def plan_inputs_for_arguments(
    args: TrainingArguments,
    model: nn.Module,
    *,
    spec: LayerwiseSpec | None = None,
    get_optimizer_cls_and_kwargs: OptimizerFactory | None = None,
    optimizer_cls_and_kwargs: tuple[Any, dict[str, Any]] | None = None,
    decay_parameter_names: Iterable[str] | None = None,
) -> PlanInputs:
    """The inputs a spec is resolved with under ``args``.

    Args:
        args: The training arguments (``optim``, ``learning_rate``, ``weight_decay``).
        model: The model (some optimizer factories read it).
        spec: The spec; one that chooses optimizers (Muon and AdamW) gets a `HybridOptimizer`, and so does any
            spec under one of transformers' Muon optimizers, as if it had the top-level ``muon`` setting.
        get_optimizer_cls_and_kwargs: The Trainer's ``get_optimizer_cls_and_kwargs``; the stock one by default.
        optimizer_cls_and_kwargs: The Trainer's ``optimizer_cls_and_kwargs``, which wins over ``args.optim``.
        decay_parameter_names: Parameters that may get weight decay; None for the stock rule.

    Returns:
        The `PlanInputs`; the base learning rate is the optimizer's ``lr`` keyword, else ``args.learning_rate``.

    Raises:
        SpecError: The optimizer builds its own parameter layout, or the spec needs Muon and torch has none.
    """
    if optimizer_cls_and_kwargs is None:
        check_optim_takes_groups(args.optim)
        if get_optimizer_cls_and_kwargs is None:
            from transformers import Trainer

            get_optimizer_cls_and_kwargs = Trainer.get_optimizer_cls_and_kwargs
        label = optim_name(args.optim)
        optimizer_cls, kwargs = get_optimizer_cls_and_kwargs(args, model)
    else:
        optimizer_cls, kwargs = optimizer_cls_and_kwargs
        label = getattr(optimizer_cls, "__name__", repr(optimizer_cls))
    optimizer_kwargs = dict(kwargs)
    muon_named = spec is not None and names_muon(optimizer_cls, label)
    if not muon_named:
        check_optimizer_takes_groups(optimizer_cls, optimizer_kwargs, label)
    inputs = PlanInputs(
        learning_rate=float(optimizer_kwargs.get("lr", args.learning_rate)),
        weight_decay=args.weight_decay,
        optimizer_cls=optimizer_cls,
        optimizer_kwargs=optimizer_kwargs,
        optimizer_label=label,
        decay_parameter_names=None if decay_parameter_names is None else list(decay_parameter_names),
        original_vocabulary=None if spec is None or not needs_original_vocabulary(spec) else original_vocabulary(model),
    )
    if spec is None or not (spec.chooses_optimizers or muon_named):
        return inputs
    return _hybrid(inputs, args, spec, optimizer_kwargs if muon_named else None)


def names_muon(optimizer_cls: Any, label: str) -> bool:
    """Whether ``optim`` (or ``optimizer_cls_and_kwargs``) is one of transformers' Muon optimizers."""
    return "muon" in label.lower() or "muon" in getattr(optimizer_cls, "__name__", "").lower()


def _adamw_of(args: Any, inputs: PlanInputs) -> Algorithm:
    """The AdamW that trains what Muon does not take: the Trainer's own when ``optim`` is torch's AdamW, else
    ``torch.optim.AdamW`` with the Trainer's Adam settings."""
    if inputs.optimizer_cls is torch.optim.AdamW:
        return inputs.optimizer_cls, inputs.optimizer_kwargs
    betas = (args.adam_beta1, args.adam_beta2)
    return torch.optim.AdamW, {"lr": inputs.learning_rate, "betas": betas, "eps": args.adam_epsilon}


def _hybrid(
    inputs: PlanInputs, args: Any, spec: LayerwiseSpec, muon_optimizer_kwargs: Mapping[str, Any] | None
) -> PlanInputs:
    """The inputs of a `HybridOptimizer`: Muon, AdamW and the Trainer's optimizer, each for the groups naming it.

    ``muon_optimizer_kwargs``: the keyword arguments of transformers' Muon optimizer when ``optim`` is one; its
    Muon settings become the implied top-level ``muon`` setting, and AdamW takes the groups it left to ``optim``.
    """
    adamw = _adamw_of(args, inputs)
    trainer: Algorithm = adamw if muon_optimizer_kwargs is not None else (inputs.optimizer_cls, inputs.optimizer_kwargs)
    algorithms: dict[str, Algorithm] = {ADAMW: adamw, TRAINER: trainer}
    muon_cls = getattr(torch.optim, "Muon", None)
    if muon_cls is not None:
        algorithms[MUON] = (muon_cls, {"lr": inputs.learning_rate})
    elif (
        muon_optimizer_kwargs is not None
        or spec.muon is not None
        or any(group.optimizer == MUON for group in spec.groups)
    ):
        raise SpecError(f"Muon needs torch.optim.Muon (torch 2.9 or later); this is torch {torch.__version__}")
    implied = None
    if muon_optimizer_kwargs is not None:
        implied = MuonSettings.parse(
            {key: value for key, value in muon_optimizer_kwargs.items() if key in MUON_OPTIONS}
        )
    return dataclasses.replace(
        inputs, optimizer_cls=HybridOptimizer, optimizer_kwargs={"algorithms": algorithms}, implied_muon=implied
    )


def check_optimizers_supported(plan: GroupPlan, trainer: Any) -> None:
    """Refuse Muon where it cannot be right, before any data is prepared: under FSDP and DeepSpeed.

    Muon orthogonalises each weight matrix as a whole (a Newton-Schulz iteration on the full matrix); FSDP
    hands the optimizer row shards of it, and DeepSpeed's ZeRO flattened partitions, on which the iteration
    would orthogonalise pieces and train wrong without an error.

    Raises:
        SpecError: Naming the first group Muon trains and where the choice was made.
    """
    muon_group = next((group for group in plan.trainable_groups if group.optimizer == MUON), None)
    if muon_group is None:
        return
    engine = sharding_engine(trainer)
    if engine is not None:
        detail = "row shards of each matrix" if engine == "FSDP" else "flattened partitions of the parameters"
        raise SpecError(
            f"Muon is not supported under {engine}: it orthogonalises each weight matrix whole, and {engine} "
            f"gives the optimizer {detail}; train Muon groups with DDP (or one device), or choose "
            "optimizer: adamw for them",
            path=muon_group.spec_path("optimizer"),
            group=muon_group.source,
        )


def _refuse_row_groups(spec: LayerwiseSpec) -> None:
    """Refuse groups with ``rows`` in `build_param_groups`: plain param groups leave their gradients unset."""
    for index, group in enumerate(spec.groups):
        if group.rows is not None:
            raise SpecError(
                "build_param_groups returns plain param groups, and a group with rows holds views of a matrix's rows "
                "whose gradients must be set from the matrix's after every backward; train with LayerwiseTrainer, or "
                "use resolve_groups and GroupPlan.row_views and set each view's .grad yourself",
                path=(f"groups[{index}]", "rows"),
                group=group.name,
            )


def _training_arguments_default(field_name: str) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments.__dataclass_fields__[field_name].default


def build_param_groups(
    model: nn.Module,
    spec: SpecSource,
    args: TrainingArguments | None = None,
    optimizer_cls: type[torch.optim.Optimizer] | None = None,
    *,
    learning_rate: float | None = None,
    weight_decay: float | None = None,
    decay_parameter_names: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """The torch param groups a spec gives for a model, for any training loop.

    Frozen groups are left out; nothing is frozen, and neither the model nor the spec changes: call
    `GroupPlan.freeze_frozen_groups` on `resolve_groups`'s plan to freeze them.

    Args:
        model: The model.
        spec: The spec, in any form `parse_spec` accepts.
        args: Training arguments giving the base learning rate, weight decay and ``optim``.
        optimizer_cls: The optimizer class, to check the groups' hyperparameters against; by
            default the one ``args.optim`` selects.
        learning_rate: The base learning rate, overriding ``args.learning_rate`` (default 5e-5,
            as ``TrainingArguments``).
        weight_decay: The base weight decay, overriding ``args.weight_decay`` (default 0).
        decay_parameter_names: Parameters that may get weight decay; the stock Trainer's rule by default.

    Returns:
        One dict per param group with ``params``, ``name``, ``lr``, ``weight_decay`` and the group's
            further hyperparameters.

    Raises:
        SpecError: Any problem with the spec (see `resolve_groups`).

    Example:
        ```python
        groups = build_param_groups(model, "spec.yaml", learning_rate=2e-5, weight_decay=0.01)
        optimizer = torch.optim.AdamW(groups, lr=2e-5)
        ```
    """
    spec = parse_spec(spec)
    _refuse_row_groups(spec)
    if optimizer_cls is None and args is not None:
        inputs = plan_inputs_for_arguments(args, model, spec=spec, decay_parameter_names=decay_parameter_names)
    else:
        base_rate = args.learning_rate if args is not None else _training_arguments_default("learning_rate")
        base_rate = base_rate if learning_rate is None else learning_rate
        takes_lr = optimizer_cls is not None and "lr" in (optimizer_hyperparameters(optimizer_cls) or {})
        inputs = PlanInputs(
            learning_rate=base_rate,
            weight_decay=args.weight_decay if args is not None else _training_arguments_default("weight_decay"),
            optimizer_cls=optimizer_cls,
            optimizer_kwargs={"lr": base_rate} if takes_lr else {},
            decay_parameter_names=None if decay_parameter_names is None else list(decay_parameter_names),
        )
    overrides = {"learning_rate": learning_rate, "weight_decay": weight_decay}
    inputs = dataclasses.replace(inputs, **{key: value for key, value in overrides.items() if value is not None})
    return inputs.resolve(model, spec).optimizer_param_groups()
