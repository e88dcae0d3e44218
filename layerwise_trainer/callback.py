"""Logging every param group's learning rate at every logging step."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

LEARNING_RATE_KEY = "learning_rate"
_MISSING = object()
GROUP_KEY_PREFIX = "learning_rate/"


def _as_float(value: Any) -> float:
    """A rate as a float: torchao and capturable optimizers keep rates as tensors."""
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def group_learning_rates(param_groups: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Each param group's current learning rate, by name.

    A group is named by its ``"name"`` key, else ``group_<index>``. Groups that share a name and a
    rate (the decay and no-decay halves of one group) give one entry; a group whose rate differs from
    an earlier one of the same name is told apart as ``<name>/group_<index>``.

    Args:
        param_groups: ``optimizer.param_groups``.

    Returns:
        Group name -> learning rate, in the optimizer's order.
    """
    rates: dict[str, float] = {}
    for index, group in enumerate(param_groups):
        name = str(group.get("name", f"group_{index}"))
        rate = _as_float(group["lr"])
        if name in rates and rates[name] != rate:
            name = f"{name}/group_{index}"
        rates.setdefault(name, rate)
    return rates


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
    return tuple(_as_float(group.get("initial_lr", group["lr"])) for group in param_groups)


def _schedule_factor(param_groups: Sequence[Mapping[str, Any]], initial_rates: Sequence[float]) -> float | None:
    """The LR schedule's current factor, read from the first group whose initial rate is above 0."""
    if len(param_groups) != len(initial_rates):
        return None
    for group, initial in zip(param_groups, initial_rates, strict=True):
        if initial > 0:
            return _as_float(group["lr"]) / initial
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
            entry[GROUP_KEY_PREFIX + name] = rate
        for name in self.frozen_group_names:
            entry.setdefault(GROUP_KEY_PREFIX + name, 0.0)
        return entry
