"""The callbacks: every param group's learning rate on every logging step, and per-group diagnostics.

Both add keys to the entry the Trainer logs (`core.log_keys` names them). The Trainer copies an entry into
``state.log_history`` and then calls the callbacks in order; installed first (`install_first`), a callback
adds its keys before any reporting integration (TensorBoard, W&B, the console) runs.

`GroupLearningRateCallback` logs ``learning_rate/<group>`` for every group.

`GroupDiagnosticsCallback` adds, for every optimizer param group (by its ``name``; the decay and no-decay
halves of a group together), on logging steps:

- ``grad_norm/<group>``: the L2 norm of the group's gradients as the optimizer sees them: after
  accumulation, unscaled, and before clipping, so that the squares over the groups add up to the square
  of the Trainer's ``grad_norm``;
- ``update_ratio/<group>``: ||weights after the step - weights before|| / ||weights before||;
- ``param_norm/<group>``: the L2 norm of the group's weights after the step;
- ``<hyperparameter>/<group>`` for ``weight_decay``, ``momentum``, ``beta1`` and ``beta2`` when they
  differ between groups or change during the run (``weight_decay`` is the group's decaying half's).

A group whose parameters have no gradient (one that has not started) logs 0 for its gradient norm and
update ratio; frozen groups are not in the optimizer and are left out.

Under DDP every rank holds the same gradients and weights and computes the same numbers. Under FSDP the
norms are of the whole tensors on every rank: FSDP2's DTensor norms are reduced over their mesh, FSDP1's
flat-shard views summed over their process group. FSDP1 with some trained parameters sharded and others
whole (a ``NO_SHARD`` unit or an ignored module beside sharded ones) is refused when training begins.

Under DeepSpeed they are refused when the callback is attached (or, passed to the Trainer directly, when training
begins): DeepSpeed steps its optimizer inside the backward pass, before ``on_pre_optimizer_step``, and that
optimizer holds each group as this rank's slice of one flattened tensor, so a group's gradients, update and
weights cannot be read there. (Unrefused, with DeepSpeed 0.19.8 the callback stopped at ``on_train_begin`` with
an ``AttributeError`` from accelerate's optimizer wrapper, which lacks torch's step hooks.)

The Trainer computes its ``grad_norm`` (unscaling the gradients under loss scaling) and clips before
``on_pre_optimizer_step``. The callback reads the gradients there; with clipping on, every gradient was
multiplied by one factor, which the Trainer's pre-clip ``grad_norm`` gives back at ``on_log``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import IntervalStrategy

from .core.group_statistics import (
    GRADIENT,
    UPDATE,
    WEIGHT,
    WEIGHT_BEFORE,
    SquaredNorms,
    UpdateMeasurement,
    parameters_with_gradients,
    summed_over_ranks,
)
from .core.log_keys import (
    GRAD_NORM_PREFIX,
    LEARNING_RATE_KEY,
    LEARNING_RATE_PREFIX,
    LOGGED_HYPERPARAMETERS,
    PARAM_NORM_PREFIX,
    UPDATE_RATIO_PREFIX,
    as_float,
    group_learning_rates,
    group_name,
)

logger = logging.getLogger(__name__)
_MISSING = object()
_DEEPSPEED_REFUSAL = (
    "group diagnostics are not supported under DeepSpeed: it steps the optimizer inside its backward pass, before "
    "the Trainer's on_pre_optimizer_step, and its optimizer holds each group as this rank's slice of one flattened "
    "tensor, not the model's parameters, so no group's gradient, update or weight norm can be read there; turn "
    "group_diagnostics off (the Trainer still logs grad_norm and every group's learning rate)"
)


def _same(left: Any, right: Any) -> bool:
    return left is right or left == right


CallbackT = TypeVar("CallbackT", bound=TrainerCallback)


def install_first(trainer: Any, callback: CallbackT) -> CallbackT:
    """Put ``callback`` first in ``trainer``'s callbacks (moving it if it is there already).

    The Trainer copies a log entry into ``state.log_history`` and then calls the callbacks in order; a
    callback placed first adds its keys before any reporting integration runs.
    """
    callbacks = trainer.callback_handler.callbacks
    if callback in callbacks:
        callbacks.remove(callback)
    callbacks.insert(0, callback)
    return callback


def add_to_log_entry(state: TrainerState, logs: dict[str, Any], entry: Mapping[str, Any]) -> None:
    """Add ``entry`` to a log entry a callback's ``on_log`` got, and to its copy in ``state.log_history``.

    ``Trainer.log()`` appends a copy of ``logs`` to the history before it calls the callbacks.
    """
    history = state.log_history
    if history and all(_same(history[-1].get(key, _MISSING), value) for key, value in logs.items()):
        history[-1].update(entry)
    logs.update(entry)


def _initial_rates(param_groups: Iterable[Mapping[str, Any]]) -> tuple[float, ...]:
    """Each group's rate at factor 1: ``initial_lr`` where a step scheduler set it, else the rate now."""
    return tuple(as_float(group.get("initial_lr", group["lr"])) for group in param_groups)


def _schedule_factor(param_groups: Sequence[Mapping[str, Any]], initial_rates: Sequence[float]) -> float | None:
    """The LR schedule's current factor, read from the first group whose initial rate is above 0."""
    if len(param_groups) != len(initial_rates):
        return None
    for group, initial in zip(param_groups, initial_rates, strict=True):
        if initial > 0:
            return as_float(group["lr"]) / initial
    return None


class GroupLearningRateCallback(TrainerCallback):
    """Adds ``learning_rate/<group>`` for every param group to every training log entry.

    The rates are read right after the optimizer step, before the scheduler steps, so each logged
    rate is the one that step's update used, as for the Trainer's own ``learning_rate``.

    Given in ``callbacks=[...]`` or through ``trainer.add_callback``, the keys reach
    ``trainer.state.log_history``; installed with `attach`, which puts the callback before the
    reporting integrations, they reach TensorBoard, W&B and the console too.

    The schedule's current factor is a group's rate divided by its initial rate, read from the first
    group whose initial rate is above 0. Initial rates are ``initial_rates`` when given, else read from
    the optimizer when training begins (a group's ``initial_lr``, which the step schedulers set, else
    its rate then), so the factor holds for every scheduler, the metric-driven ones included.

    Args:
        base_learning_rate: When given, the stock ``learning_rate`` key is replaced by this rate
            times the schedule's current factor (the base schedule), instead of param group 0's rate.
        frozen_group_names: Groups kept out of the optimizer, logged at 0.0.
        initial_rates: Each optimizer param group's rate at factor 1, in order.

    Example:
        ```python
        trainer = Trainer(model=model, args=args, optimizers=(grouped_adamw, None), train_dataset=data)
        GroupLearningRateCallback.attach(trainer)
        trainer.train()  # logs learning_rate/body, learning_rate/head, ...
        ```
    """

    def __init__(
        self,
        base_learning_rate: float | None = None,
        frozen_group_names: Sequence[str] = (),
        initial_rates: Sequence[float] | None = None,
    ) -> None:
        self.base_learning_rate = base_learning_rate
        self.frozen_group_names = tuple(frozen_group_names)
        self.initial_rates = None if initial_rates is None else tuple(initial_rates)
        self._initial_rates_in_use: tuple[float, ...] = ()
        self._rates: dict[str, float] | None = None
        self._factor: float | None = None

    @classmethod
    def attach(
        cls, trainer: Any, callback: GroupLearningRateCallback | None = None, **kwargs: Any
    ) -> GroupLearningRateCallback:
        """Install the callback first in ``trainer``'s callbacks, so every integration sees its keys.

        The Trainer copies a log entry into ``state.log_history`` and then calls the callbacks in
        order; a callback placed first adds its keys before any reporting integration runs.

        Args:
            trainer: Any ``transformers.Trainer``.
            callback: The callback to install; a new one built from ``kwargs`` when None.
            **kwargs: Arguments for a new callback.

        Returns:
            The installed callback.
        """
        return install_first(trainer, cls(**kwargs) if callback is None else callback)

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        self._rates = None
        self._factor = None
        if self.initial_rates is not None:
            self._initial_rates_in_use = self.initial_rates
        elif optimizer is not None:
            self._initial_rates_in_use = _initial_rates(optimizer.param_groups)

    def on_optimizer_step(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        optimizer: Any = None,
        lr_scheduler: Any = None,
        **kwargs: Any,
    ) -> None:
        if optimizer is None:
            return
        self._rates = group_learning_rates(optimizer.param_groups)
        if callable(getattr(lr_scheduler, "base_factor", None)):  # per-group schedules: groups do not share one
            self._factor = lr_scheduler.base_factor()
            return
        if not self._initial_rates_in_use:  # installed after training began
            self._initial_rates_in_use = self.initial_rates or _initial_rates(optimizer.param_groups)
        self._factor = _schedule_factor(optimizer.param_groups, self._initial_rates_in_use)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs is None or LEARNING_RATE_KEY not in logs or self._rates is None:
            return
        add_to_log_entry(state, logs, self.log_entries())

    def log_entries(self) -> dict[str, float]:
        """The keys this callback adds to a log entry, from the rates of the last optimizer step."""
        entry: dict[str, float] = {}
        if self.base_learning_rate is not None and self._factor is not None:
            entry[LEARNING_RATE_KEY] = self.base_learning_rate * self._factor
        for name, rate in (self._rates or {}).items():
            entry[LEARNING_RATE_PREFIX + name] = rate
        for name in self.frozen_group_names:
            entry.setdefault(LEARNING_RATE_PREFIX + name, 0.0)
        return entry


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer`` (itself an ``Optimizer``), or the optimizer."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


def _is_deepspeed_optimizer(optimizer: Any) -> bool:
    """Whether ``optimizer`` is accelerate's wrapper of a DeepSpeed engine's optimizer, or holds a DeepSpeed one."""
    for _ in range(8):  # wrappers nest a few deep; bounded in case one holds itself
        if optimizer is None:
            return False
        kind = type(optimizer)
        if kind.__name__ == "DeepSpeedOptimizerWrapper" or kind.__module__.startswith("deepspeed."):
            return True
        optimizer = getattr(optimizer, "optimizer", None)
    return False


def _fsdp1_shards(model: Any) -> dict[int, tuple[Any, torch.device]]:
    """``id(parameter) -> (process group, device)`` for every parameter that FSDP1 shards in ``model``."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    sharded: dict[int, tuple[Any, torch.device]] = {}
    for module in FullyShardedDataParallel.fsdp_modules(model):
        handle = module._handle
        if handle is not None and handle.uses_sharded_strategy:
            flat = handle.flat_param
            for parameter in flat._params if handle._use_orig_params else [flat]:
                sharded[id(parameter)] = (module.process_group, module.compute_device)
    return sharded


def _flat_shard_reduction(model: Any, param_groups: list[dict[str, Any]]) -> tuple[Any, torch.device] | None:
    """Where FSDP1 shards the optimizer's parameters: ``(process group, device)`` to sum the ranks' squares over.

    FSDP1 hands the optimizer views of this rank's part of each flat parameter (a view may be empty), so a
    norm is made whole by summing the squares over the ranks that share the flat parameter: its process
    group, the ranks of one node under ``HYBRID_SHARD``. Parameters it does not shard (``NO_SHARD``, ignored
    modules) are whole on every rank. None where no parameter is FSDP1-sharded (DDP, FSDP2's DTensors).

    Raises:
        ValueError: Some of the optimizer's parameters are sharded and others whole, or they are sharded over
            several process groups: a group's norm would add shards to whole tensors.
    """
    if model is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return None
    sharded = _fsdp1_shards(model)
    trained = [parameter for group in param_groups for parameter in group["params"]]
    reductions = {sharded[id(p)][0]: sharded[id(p)] for p in trained if id(p) in sharded}
    whole = sum(id(p) not in sharded for p in trained)
    if reductions and (whole or len(reductions) > 1):
        raise ValueError(
            "group diagnostics under FSDP1 need the optimizer's parameters sharded alike, over one process "
            f"group: {len(trained) - whole} are sharded over {len(reductions)} process group(s) and {whole} are "
            "whole on every rank (a NO_SHARD unit or an ignored module beside sharded ones), so a group's norm "
            "would add shards to whole tensors; wrap every module alike or turn group_diagnostics off"
        )
    return next(iter(reductions.values()), None)


def _unscale(optimizer: Any, inner: torch.optim.Optimizer) -> None:
    """Unscale fp16 gradients now if the Trainer has not (its grad-norm step does); the scaler then skips it."""
    scaler = getattr(optimizer, "scaler", None)
    if scaler is None or not scaler.is_enabled():
        return
    # RuntimeError: "unscale_() has already been called on this optimizer since the last update()".
    with contextlib.suppress(RuntimeError):
        scaler.unscale_(inner)


def _group_names(param_groups: list[dict[str, Any]]) -> list[str]:
    return [group_name(group, index) for index, group in enumerate(param_groups)]


def _hyperparameters(group: dict[str, Any]) -> dict[str, float]:
    values: dict[str, float] = {}
    for key in ("weight_decay", "momentum"):
        if isinstance(group.get(key), (int, float)):
            values[key] = float(group[key])
    betas = group.get("betas")
    if isinstance(betas, (tuple, list)) and len(betas) == 2:
        values["beta1"], values["beta2"] = float(betas[0]), float(betas[1])
    return values


def _combine(names: list[str], squares: Sequence[float]) -> dict[str, float]:
    """Norms by name from the squared norms of the groups: the square root of the sum over the groups of a name."""
    sums: dict[str, float] = {}
    for name, square in zip(names, squares, strict=True):
        sums[name] = sums.get(name, 0.0) + square
    return {name: math.sqrt(square) for name, square in sums.items()}


class GroupDiagnosticsCallback(TrainerCallback):
    """Adds ``grad_norm/``, ``update_ratio/``, ``param_norm/`` and changing hyperparameters per group to the logs.

    Computed on logging steps only (with ``logging_strategy="epoch"``, on every step, as the last step of an
    epoch is not known in advance). Installed by `LayerwiseTrainer` when
    ``LayerwiseTrainingArguments.group_diagnostics`` is true; with a stock Trainer, install it with `attach`
    so that the reporting integrations see its keys.

    Cost: a logging step's norms are read back from the device once. Measuring an update copies the weights of
    one slice at a time, at most max(64 MiB, the largest tensor with a gradient), for the optimizers of
    ``torch.optim`` and any class that declares ``steps_each_parameter_alone = True`` (see `group_statistics`);
    any other optimizer copies every weight that has a gradient on a logging step.

    Raises:
        ValueError: At ``on_train_begin``, under FSDP1 with some trained parameters sharded and others whole
            on every rank, or sharded over several process groups; under DeepSpeed, at `attach` or at
            ``on_train_begin``.

    Example:
        ```python
        trainer = Trainer(model=model, args=args, train_dataset=data)
        GroupDiagnosticsCallback.attach(trainer)
        trainer.train()  # logs grad_norm/group_0, update_ratio/group_0, param_norm/group_0, ...
        ```
    """

    def __init__(self) -> None:
        self._measurement: UpdateMeasurement | None = None
        self._step: int | None = None
        self._norms: SquaredNorms | None = None
        self._grad_norms: dict[str, float] = {}
        self._names: list[str] = []
        self._entry: dict[str, float] = {}
        self._first_hyperparameters: dict[str, dict[str, float]] = {}
        self._logged_hyperparameters: set[str] = set()
        self._shard_reduction: tuple[Any, torch.device] | None = None

    @classmethod
    def attach(cls, trainer: Any, callback: GroupDiagnosticsCallback | None = None) -> GroupDiagnosticsCallback:
        """Install the callback first in ``trainer``'s callbacks, so every reporting integration sees its keys.

        Raises:
            ValueError: The trainer runs DeepSpeed.
        """
        if getattr(trainer, "is_deepspeed_enabled", False):
            raise ValueError(_DEEPSPEED_REFUSAL)
        return install_first(trainer, callback or cls())

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        optimizer: Any = None,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        if _is_deepspeed_optimizer(optimizer):
            raise ValueError(_DEEPSPEED_REFUSAL)
        if self._measurement is not None:
            self._measurement.remove()
            self._measurement = None
        inner = _torch_optimizer(optimizer)
        self._shard_reduction = _flat_shard_reduction(model, inner.param_groups) if inner is not None else None
        if inner is not None:
            self._measurement = UpdateMeasurement(inner)
            if not self._measurement.steps_in_slices:
                logger.info(
                    "update_ratio: %s is not a torch.optim optimizer and does not declare "
                    "steps_each_parameter_alone = True, so a logging step copies every weight with a gradient "
                    "(not one slice of 64 MiB or the largest tensor at a time)",
                    type(inner).__name__,
                )
        self._first_hyperparameters = {}
        self._logged_hyperparameters = set()
        self._step = None

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._measurement is not None:
            self._measurement.remove()
            self._measurement = None

    @staticmethod
    def _is_logging_step(args: TrainingArguments, state: TrainerState) -> bool:
        step = state.global_step + 1  # the step about to be taken, as DefaultFlowCallback will count it
        if step == 1 and args.logging_first_step:
            return True
        if args.logging_strategy == IntervalStrategy.STEPS:
            return state.logging_steps > 0 and step % state.logging_steps == 0
        return args.logging_strategy == IntervalStrategy.EPOCH

    def on_pre_optimizer_step(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        self._step = None
        inner = _torch_optimizer(optimizer)
        if inner is None or not self._is_logging_step(args, state):
            return
        _unscale(optimizer, inner)
        self._names = _group_names(inner.param_groups)
        self._norms = SquaredNorms()  # read back once, after the step
        self._norms.add_groups(
            GRADIENT, [[p.grad for p in params] for params in parameters_with_gradients(inner.param_groups)]
        )
        if self._measurement is not None:
            self._measurement.arm()
        self._step = state.global_step + 1

    def on_optimizer_step(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        inner = _torch_optimizer(optimizer)
        measured = self._measurement.take() if self._measurement is not None else None
        norms, self._norms = self._norms, None
        if self._step is None or inner is None or norms is None:
            return
        names = self._names
        norms.add_groups(WEIGHT, [list(group["params"]) for group in inner.param_groups])
        if measured is not None:
            norms.extend(measured)
        by_metric = self._read(norms, names)
        self._grad_norms = by_metric[GRADIENT]
        entry = {PARAM_NORM_PREFIX + name: value for name, value in by_metric[WEIGHT].items()}
        if measured is not None:
            updates, before = by_metric[UPDATE], by_metric[WEIGHT_BEFORE]
            for name in updates:
                entry[UPDATE_RATIO_PREFIX + name] = updates[name] / before[name] if before[name] > 0 else 0.0
        entry.update(self._hyperparameter_entries(names, inner.param_groups))
        self._entry = entry

    def _read(self, norms: SquaredNorms, names: list[str]) -> dict[str, dict[str, float]]:
        """Every metric's norms by group name, read back at once (FSDP1: with one sum over the ranks)."""
        metrics, count = (GRADIENT, WEIGHT, UPDATE, WEIGHT_BEFORE), len(names)
        squares = self._across_ranks(norms.sums([(metric, index) for metric in metrics for index in range(count)]))
        return {metric: _combine(names, squares[i * count : (i + 1) * count]) for i, metric in enumerate(metrics)}

    def _across_ranks(self, squares: list[float]) -> list[float]:
        """FSDP1 shards: every rank's squares summed (FSDP2's DTensors are reduced when their norms are read)."""
        if self._shard_reduction is None:
            return squares
        process_group, device = self._shard_reduction
        return summed_over_ranks(squares, device, process_group)

    def _hyperparameter_entries(self, names: list[str], param_groups: list[dict[str, Any]]) -> dict[str, float]:
        """Hyperparameters that differ between groups or changed since the first logging step (kept once logged)."""
        current: dict[str, dict[str, float]] = {}
        for name, group in zip(names, param_groups, strict=True):
            current.setdefault(name, _hyperparameters(group))  # a group's first (decaying) half
        if not self._first_hyperparameters:
            self._first_hyperparameters = current
        for key in LOGGED_HYPERPARAMETERS:
            values = [values[key] for values in current.values() if key in values]
            differ = len(set(values)) > 1
            changed = any(
                current[name].get(key) != self._first_hyperparameters.get(name, {}).get(key) for name in current
            )
            if differ or changed:
                self._logged_hyperparameters.add(key)
        return {
            f"{key}/{name}": values[key]
            for key in LOGGED_HYPERPARAMETERS
            if key in self._logged_hyperparameters
            for name, values in current.items()
            if key in values
        }

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs is None or LEARNING_RATE_KEY not in logs or self._step != state.global_step:
            return
        entry = dict(self._entry)
        entry.update(
            {
                GRAD_NORM_PREFIX + name: value
                for name, value in self._gradient_norms_before_clipping(args, logs, self._grad_norms).items()
            }
        )
        add_to_log_entry(state, logs, entry)
        self._step = None

    @staticmethod
    def _gradient_norms_before_clipping(
        args: TrainingArguments, logs: dict[str, Any], grad_norms: dict[str, float]
    ) -> dict[str, float]:
        """The gradient norms read after clipping, scaled back by the one factor clipping multiplied them by."""
        total = logs.get("grad_norm")
        if args.max_grad_norm <= 0 or not isinstance(total, (int, float)) or not math.isfinite(total):
            return grad_norms
        clipped_total = math.sqrt(sum(value * value for value in grad_norms.values()))
        if clipped_total == 0 or clipped_total >= total:
            return grad_norms
        return {name: value * total / clipped_total for name, value in grad_norms.items()}
