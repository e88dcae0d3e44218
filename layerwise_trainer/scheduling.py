"""Keeping the ratios between param groups under schedulers that clamp to absolute rates.

The step-based schedulers of ``lr_scheduler_type`` multiply every group's initial rate by one shared
factor, so the ratios between groups hold by themselves. ``reduce_lr_on_plateau`` and ``greedy`` move
each group's rate on its own and clamp it to absolute bounds (``min_lr``, ``max_lr``) and an absolute
step threshold (``eps``): a group far below the base rate would hit them at other times than the base
group does. Scaling the bounds per group by the group's ratio to the base rate makes every group
follow the base schedule, times its ratio.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

_PER_GROUP_BOUNDS = {
    "reduce_lr_on_plateau": ("min_lr",),
    "greedy": ("min_lr", "max_lr"),
}


def _scheduler_defaults(scheduler_type: str) -> dict[str, Any]:
    """The keyword defaults of the scheduler class behind ``scheduler_type``."""
    if scheduler_type == "greedy":
        from transformers.optimization import GreedyLR as scheduler_cls
    else:
        from torch.optim.lr_scheduler import ReduceLROnPlateau as scheduler_cls
    return {
        name: parameter.default
        for name, parameter in inspect.signature(scheduler_cls.__init__).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def proportional_scheduler_kwargs(
    scheduler_type: str,
    scheduler_kwargs: Mapping[str, Any] | None,
    initial_rates: Sequence[float],
    base_learning_rate: float,
) -> dict[str, Any] | None:
    """Scheduler kwargs that keep every group at its ratio to the base rate, or None if not needed.

    Args:
        scheduler_type: ``TrainingArguments.lr_scheduler_type``.
        scheduler_kwargs: ``TrainingArguments.lr_scheduler_kwargs``.
        initial_rates: Each optimizer param group's initial learning rate.
        base_learning_rate: ``TrainingArguments.learning_rate``.

    Returns:
        The kwargs with ``min_lr`` (and ``max_lr``) as one value per group, scaled by the group's
        ratio to the base rate, and ``eps`` scaled by the smallest ratio; None for the schedulers
        that need no change.
    """
    scheduler_type = str(getattr(scheduler_type, "value", scheduler_type))
    bounds = _PER_GROUP_BOUNDS.get(scheduler_type)
    if bounds is None or base_learning_rate <= 0:
        return None
    kwargs = dict(scheduler_kwargs or {})
    defaults = _scheduler_defaults(scheduler_type)
    ratios = [rate / base_learning_rate for rate in initial_rates]
    for key in bounds:
        value = kwargs.get(key, defaults.get(key, 0.0))
        if isinstance(value, (list, tuple)):
            continue  # already given per group: the user's choice
        kwargs[key] = [float(value) * ratio for ratio in ratios]
    if "eps" in defaults and ratios:
        kwargs["eps"] = float(kwargs.get("eps", defaults["eps"])) * min(min(ratios), 1.0)
    return kwargs
