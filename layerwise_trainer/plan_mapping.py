"""Carrying the plan resolved when the trainer was built over to the model the optimizer is built for.

``LayerwiseTrainer`` resolves its spec once, when it is built, so that a bad spec fails before any data is
prepared. ``create_optimizer`` then gets that model again, or the same model wrapped (DDP, FSDP with original
parameters, ``torch.compile``), whose parameters may be other objects under the same user-facing names.
Resolving again would match every pattern against every name a second time; mapping the plan is one walk
of the model: by identity when it holds the plan's parameter objects in order, else by name. The plan is
re-resolved only when the mapping fails: another model (``model_init``), or one whose parameters or
``requires_grad`` flags changed since.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

from torch import nn

from .core.grouping import GroupPlan
from .core.parameter_names import named_parameters_of, unwrap_data_parallel, user_facing_name, walk_modules


def _same_parameter_objects(plan: GroupPlan, model: nn.Module) -> bool:
    """Whether ``model`` holds exactly the plan's parameter objects, in the same order.

    The common case (``create_optimizer`` on the model the trainer was built with, or on that model wrapped
    by DDP or ``torch.compile``) is told without building a single name: at 50,000 tensors the names cost
    more than the rest of the mapping.
    """
    planned = list(plan.parameters.values())
    seen: set[int] = set()
    position = 0
    stack = [model]
    while stack:
        module = stack.pop()
        if type(module).named_parameters is not nn.Module.named_parameters:
            return False  # a wrapper (FSDP1) that shows other parameters than its modules hold
        for parameter in module._parameters.values():
            if parameter is None or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            if position >= len(planned) or planned[position] is not parameter:
                return False
            position += 1
        stack.extend(reversed([child for child in module._modules.values() if child is not None]))
    return position == len(planned)


def _parameters_by_name(model: nn.Module) -> dict[str, nn.Parameter] | None:
    """Each tensor of ``model`` under its first user-facing name; None when two tensors share a name."""
    unwrapped = unwrap_data_parallel(model)
    by_name: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for raw_name, parameter in named_parameters_of(unwrapped, walk_modules(unwrapped)):
        if id(parameter) in seen:
            continue  # a tied weight's second name
        seen.add(id(parameter))
        name = user_facing_name(raw_name)
        if name in by_name:
            return None
        by_name[name] = parameter
    return by_name


def _same_freezing(plan: GroupPlan, parameters: Mapping[str, nn.Parameter]) -> bool:
    """Whether the parameters the plan trains still train, and the ones the user froze are still frozen."""
    if any(parameters[name].requires_grad for name in plan.frozen_before_training):
        return False
    return all(parameters[name].requires_grad for group in plan.trainable_groups for name in group.parameter_names)


def map_plan(plan: GroupPlan, model: nn.Module) -> GroupPlan | None:
    """``plan`` with its parameters taken from ``model`` by name, or None when it does not fit ``model``.

    Args:
        plan: A plan resolved against the user's model.
        model: That model, possibly wrapped, or another one.

    Returns:
        The same groups over ``model``'s parameter objects; None when ``model`` has other parameter names,
        a trainable parameter of the plan is frozen now, or a parameter the user had frozen trains now.
    """
    if _same_parameter_objects(plan, model):
        return plan if _same_freezing(plan, plan.parameters) else None
    parameters = _parameters_by_name(model)
    if parameters is None or parameters.keys() != plan.parameters.keys():
        return None
    if not _same_freezing(plan, parameters):
        return None
    return dataclasses.replace(plan, parameters=MappingProxyType(parameters))
