"""Putting a resolved plan on the live model: mapped by name onto a wrapped model, frozen for training, and
the same on every rank.

**Mapping.** ``LayerwiseTrainer`` resolves its spec once, when it is built, so that a bad spec fails before
any data is prepared. ``create_optimizer`` then gets that model again, or the same model wrapped (DDP, FSDP
with original parameters, ``torch.compile``), whose parameters may be other objects under the same
user-facing names. Resolving again would match every pattern against every name a second time; mapping the
plan is one walk of the model: by identity when it holds the plan's parameter objects in order, else by
name. The plan is re-resolved only when the mapping fails: another model (``model_init``), or one whose
parameters or ``requires_grad`` flags changed since.

**Freezing.** A spec's frozen group becomes ``requires_grad=False`` on the user's own model, in place: DDP
builds its gradient reducer from the parameters that require gradients when it wraps the model, and FSDP
needs them frozen when it flattens or shards, so freezing has to come before wrapping. Done when a trainer
is built, it outlived the trainer: a second trainer on the same model (a notebook re-run) whose spec trains
those parameters found them frozen, took them for parameters the user had frozen, and left them at lr 0.
So the library remembers, per model, which parameters it froze. A new trainer gives them back
(``requires_grad=True``) before it reads the model, and freezes what its own spec freezes only when it
trains. Parameters the user froze are never touched.

**Every rank.** Under ``torch.distributed`` every process must build the same groups (and load the same
optimizer state); a rank that did not would train a diverging replica, so such values are compared. A value
decided during training (a start on a plateau) is decided on rank 0 alone and given to every rank.
"""

from __future__ import annotations

import dataclasses
import operator
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import torch.distributed as dist
from torch import nn

from .core.grouping import GroupPlan
from .core.parameter_names import (
    ParameterTable,
    named_parameters_of,
    parameter_objects,
    unwrap_data_parallel,
    user_facing_names,
    user_model,
    walk_model,
    whole_shape,
)
from .errors import SpecError

_requires_grad = operator.attrgetter("requires_grad")


def _same_parameter_objects(plan: GroupPlan, model: nn.Module) -> bool:
    """Whether ``model`` holds exactly the plan's parameter objects, in the same order.

    The common case (``create_optimizer`` on the model the trainer was built with, or on that model wrapped
    by DDP or ``torch.compile``) is told from the parameter objects alone, compared by identity in C: at
    50,000 tensors, building their names too took as long again.
    """
    walked = parameter_objects(model)
    if walked is None:
        return False  # a wrapper (FSDP1) that shows other parameters than its modules hold
    table = plan.parameters
    planned = table.tensors if isinstance(table, ParameterTable) else tuple(table.values())
    if len(walked) != len(planned):  # tied weights (or another model): each tensor once, at its first name
        walked = list({id(parameter): parameter for parameter in walked}.values())
    return len(walked) == len(planned) and all(map(operator.is_, walked, planned))


def _parameters_by_name(model: nn.Module) -> dict[str, nn.Parameter] | None:
    """Each tensor of ``model`` under its first user-facing name; None when two tensors share a name."""
    unwrapped = unwrap_data_parallel(model)
    raw_names, parameters = named_parameters_of(unwrapped, walk_model(unwrapped))
    by_name: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name, parameter in zip(user_facing_names(raw_names), parameters, strict=True):
        if id(parameter) in seen:
            continue  # a tied weight's second name
        seen.add(id(parameter))
        if name in by_name:
            return None
        by_name[name] = parameter
    return by_name


def _same_freezing(plan: GroupPlan, resolved: GroupPlan | None = None) -> bool:
    """Whether the parameters the plan trains still train, and the ones the user froze are still frozen.

    A matrix the plan trains some rows of trains whatever its flag says (`freeze_for_training` sets it), but keeps
    its shape: rows were resolved against it (``resolved``: the plan ``plan`` was mapped from).
    """
    if any(map(_requires_grad, map(plan.parameters.__getitem__, plan.frozen_before_training))):
        return False
    trained = (
        parameters for group, parameters in zip(plan.groups, plan.group_parameters, strict=True) if not group.frozen
    )
    in_rows = plan.row_parameter_names
    if not in_rows:
        return all(all(map(_requires_grad, parameters)) for parameters in trained)
    if resolved is not None and any(
        whole_shape(plan.parameters[name]) != whole_shape(resolved.parameters[name]) for name in in_rows
    ):
        return False
    row_matrices = {id(plan.parameters[name]) for name in in_rows}
    return all(parameter.requires_grad or id(parameter) in row_matrices for group in trained for parameter in group)


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
        return plan if _same_freezing(plan) else None
    parameters = _parameters_by_name(model)
    if parameters is None or parameters.keys() != plan.parameters.keys():
        return None
    mapped = dataclasses.replace(plan, parameters=ParameterTable(parameters, parameters.values()))
    return mapped if _same_freezing(mapped, plan) else None


# Model -> the parameters the library froze in it (and has not given back).
_FROZEN_BY_LIBRARY: weakref.WeakKeyDictionary[nn.Module, list[nn.Parameter]] = weakref.WeakKeyDictionary()
# Model -> the matrices the user froze whose rows a row group trains, which the library made require gradients.
_UNFROZEN_BY_LIBRARY: weakref.WeakKeyDictionary[nn.Module, list[nn.Parameter]] = weakref.WeakKeyDictionary()


def freeze_for_training(plan: GroupPlan, model: nn.Module) -> int:
    """Set ``requires_grad=False`` on the frozen groups' parameters, remembering them under ``model``.

    A matrix a group trains some rows of needs gradients even when the user froze it (peft freezes the base
    model, embeddings included): it gets ``requires_grad=True``, remembered too, and given back frozen.

    Args:
        plan: The resolved groups.
        model: The model the plan was resolved against (wrappers are looked through).

    Returns:
        How many tensors this call froze.
    """
    newly_frozen = plan.freeze_and_list_frozen()
    _FROZEN_BY_LIBRARY.setdefault(user_model(model), []).extend(newly_frozen)
    unfrozen = [plan.parameters[name] for name in plan.row_parameter_names if not plan.parameters[name].requires_grad]
    for parameter in unfrozen:
        parameter.requires_grad_(True)
    _UNFROZEN_BY_LIBRARY.setdefault(user_model(model), []).extend(unfrozen)
    return len(newly_frozen)


def remember_library_frozen(model: nn.Module, parameters: list[nn.Parameter]) -> None:
    """Note parameters the library may set to ``requires_grad=False`` (groups that start later), to give back.

    Args:
        model: The model (wrappers are looked through).
        parameters: The parameters; those already noted are not added twice.
    """
    noted = _FROZEN_BY_LIBRARY.setdefault(user_model(model), [])
    known = {id(parameter) for parameter in noted}
    noted.extend(parameter for parameter in parameters if id(parameter) not in known)


def give_back_frozen(model: nn.Module) -> int:
    """Set ``requires_grad=True`` again on every parameter the library froze in ``model`` (and ``False`` on every
    matrix it made require gradients for a row group).

    Args:
        model: The model (wrappers are looked through).

    Returns:
        How many tensors were given back.
    """
    frozen = _FROZEN_BY_LIBRARY.pop(user_model(model), [])
    for parameter in frozen:
        parameter.requires_grad_(True)
    for parameter in _UNFROZEN_BY_LIBRARY.pop(user_model(model), []):
        parameter.requires_grad_(False)
    return len(frozen)


def is_sharded(model: nn.Module | None) -> bool:
    """Whether the model was wrapped in FSDP (``fully_shard`` or ``FullyShardedDataParallel``) before the Trainer."""
    if model is None or not dist.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return any(isinstance(module, (FSDPModule, FullyShardedDataParallel)) for module in model.modules())


def sharding_engine(trainer: Any) -> str | None:
    """``"FSDP"`` or ``"DeepSpeed"`` when the Trainer's optimizer sees shards or partitions of parameters, else None.

    FSDP counts whether the Trainer wraps the model (``is_fsdp_enabled``) or the model came wrapped.
    """
    if getattr(trainer, "is_fsdp_enabled", False) or is_sharded(getattr(trainer, "model", None)):
        return "FSDP"
    if getattr(trainer, "is_deepspeed_enabled", False):
        return "DeepSpeed"
    return None


def is_distributed() -> bool:
    """Whether this process is one of two or more in an initialised ``torch.distributed`` group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def check_same_on_every_rank(value: str, what: str) -> None:
    """Raise on every rank when ``value`` is not the same on all of them.

    Does nothing outside an initialised ``torch.distributed`` process group of two or more ranks.

    Args:
        value: This rank's value (a layout hash).
        what: What the value describes, for the message.

    Raises:
        SpecError: Some rank has another value; the message lists the ranks by value.
    """
    if not is_distributed():
        return
    values: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        by_value: dict[str | None, list[int]] = {}
        for rank, rank_value in enumerate(values):
            by_value.setdefault(rank_value, []).append(rank)
        listing = "; ".join(f"ranks {ranks}: {str(key)[:12]}" for key, ranks in by_value.items())
        raise SpecError(f"{what} differ between processes ({listing}); every rank must see the same model and spec")


DecisionT = TypeVar("DecisionT")


def decided_on_rank_0(decide: Callable[[], DecisionT]) -> DecisionT:
    """``decide()``, run on rank 0 alone and its result given to every rank (a collective: every rank calls it).

    Outside an initialised ``torch.distributed`` group of two or more ranks, just ``decide()``. The result must
    pickle (``broadcast_object_list``).

    Raises:
        Exception: What ``decide()`` raised, on rank 0; on the other ranks a ``RuntimeError`` that quotes it, so
            that no rank is left waiting in a collective.
    """
    if not is_distributed():
        return decide()
    payload: list[object] = [None, None]
    failure: Exception | None = None
    if dist.get_rank() == 0:
        try:
            payload[0] = decide()
        except Exception as error:  # every rank must leave the broadcast; rank 0 raises it below
            failure = error
            payload[1] = f"{type(error).__name__}: {error}"
    dist.broadcast_object_list(payload, src=0)
    if failure is not None:
        raise failure
    if payload[1] is not None:
        raise RuntimeError(f"rank 0 failed to decide: {payload[1]}")
    return payload[0]  # type: ignore[return-value]
