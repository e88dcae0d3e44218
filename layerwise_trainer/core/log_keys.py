"""The keys the library adds to a training log, and how a param group is named in them.

Written by the callbacks, read back by the plots of a saved ``trainer_state.json``: this module imports
nothing (not torch, not transformers), so that drawing a saved log costs no more than reading it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

LEARNING_RATE_KEY = "learning_rate"
LEARNING_RATE_PREFIX = "learning_rate/"
GRAD_NORM_PREFIX = "grad_norm/"
UPDATE_RATIO_PREFIX = "update_ratio/"
PARAM_NORM_PREFIX = "param_norm/"
DIAGNOSTIC_PREFIXES = (GRAD_NORM_PREFIX, UPDATE_RATIO_PREFIX, PARAM_NORM_PREFIX)
# The event logged when a group whose start an evaluation decides (or that follows such a group) starts:
# {"group_started": <group>, "reason": <why>, "step": <its start>}.
GROUP_STARTED_KEY = "group_started"
START_REASON_KEY = "reason"
# Hyperparameters the diagnostics log per group once they differ between groups or change.
LOGGED_HYPERPARAMETERS = ("weight_decay", "momentum", "beta1", "beta2")


def group_name(group: Mapping[str, Any], index: int) -> str:
    """A param group's name in the logs: its ``name`` key, else ``group_<index>``."""
    return str(group.get("name", f"group_{index}"))


def as_float(value: Any) -> float:
    """A rate as a float: torchao and capturable optimizers keep rates as one-element tensors."""
    return float(value.item() if hasattr(value, "item") else value)


def group_learning_rates(param_groups: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Each param group's current learning rate, by name.

    A group is named by its ``"name"`` key, else ``group_<index>``. Groups that share a name and a
    rate (the decay and no-decay halves of one group) give one entry; a group whose rate differs from
    an earlier one of the same name is told apart as ``<name>/group_<index>``.

    Args:
        param_groups: ``optimizer.param_groups``.

    Returns:
        Group name -> learning rate, in the optimizer's order.

    Example:
        ```python
        group_learning_rates([{"name": "body", "lr": 0.0}, {"name": "head", "lr": 1e-3}])
        # {'body': 0.0, 'head': 0.001}
        ```
    """
    rates: dict[str, float] = {}
    for index, group in enumerate(param_groups):
        name = group_name(group, index)
        rate = as_float(group["lr"])
        if name in rates and rates[name] != rate:
            name = f"{name}/group_{index}"
        rates.setdefault(name, rate)
    return rates
