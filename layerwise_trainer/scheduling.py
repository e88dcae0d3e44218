"""Keeping the ratios between param groups under schedulers that move each group on its own.

The step-based schedulers of ``lr_scheduler_type`` multiply every group's initial rate by one shared
factor, so the ratios between groups hold by themselves. ``reduce_lr_on_plateau`` and ``greedy`` move
each group's rate on its own, clamp it to absolute bounds (``min_lr``, ``max_lr``) and skip a change
smaller than an absolute ``eps``. Scaling the bounds per group is not enough: torch takes one ``eps`` for
every group, so once the base rate nears ``eps`` the groups take their last steps at different times and
the ratios drift apart.

So the stock algorithm runs unchanged on a one-group stand-in optimizer at the base rate, with the user's
bounds and ``eps``, and after every step each real group is set to its planned rate times the base
schedule's factor. Every decision (reduce, increase, reset, stop at ``eps``) is taken once, on the base
rate, and every group follows it exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau
from transformers.optimization import GreedyLR

_BOUND_KEYS = ("min_lr", "max_lr")


def _stand_in_optimizer(base_learning_rate: float) -> Optimizer:
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_learning_rate)


def _set_rate(group: dict[str, Any], rate: float) -> None:
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(rate)  # capturable and torchao optimizers keep rates as tensors
    else:
        group["lr"] = rate


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
            _set_rate(group, rate * factor)
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
