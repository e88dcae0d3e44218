"""Freezing the spec's frozen groups for training, and giving the parameters back afterwards.

A spec's frozen group becomes ``requires_grad=False`` on the user's own model, in place: DDP builds its
gradient reducer from the parameters that require gradients when it wraps the model, and FSDP needs them
frozen when it flattens or shards, so freezing has to come before wrapping. Done when a trainer is built, it
outlived the trainer: a second trainer on the same model (a notebook re-run) whose spec trains those
parameters found them frozen, took them for parameters the user had frozen, and left them at lr 0.

So the library remembers, per model, which parameters it froze. A new trainer gives them back
(``requires_grad=True``) before it reads the model, and freezes what its own spec freezes only when it
trains. Parameters the user froze are never touched.
"""

from __future__ import annotations

import weakref

from torch import nn

from .core.grouping import GroupPlan
from .core.parameter_names import user_model

# Model -> the parameters the library froze in it (and has not given back).
_FROZEN_BY_LIBRARY: weakref.WeakKeyDictionary[nn.Module, list[nn.Parameter]] = weakref.WeakKeyDictionary()


def freeze_for_training(plan: GroupPlan, model: nn.Module) -> int:
    """Set ``requires_grad=False`` on the frozen groups' parameters, remembering them under ``model``.

    Args:
        plan: The resolved groups.
        model: The model the plan was resolved against (wrappers are looked through).

    Returns:
        How many tensors this call froze.
    """
    newly_frozen = plan.freeze_and_list_frozen()
    _FROZEN_BY_LIBRARY.setdefault(user_model(model), []).extend(newly_frozen)
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
    """Set ``requires_grad=True`` again on every parameter the library froze in ``model``.

    Args:
        model: The model (wrappers are looked through).

    Returns:
        How many tensors were given back.
    """
    frozen = _FROZEN_BY_LIBRARY.pop(user_model(model), [])
    for parameter in frozen:
        parameter.requires_grad_(True)
    return len(frozen)
