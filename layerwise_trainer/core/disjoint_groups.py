"""Building a torch optimizer over param groups known to be disjoint, without torch re-checking that.

``torch.optim.Optimizer.add_param_group`` refuses a parameter that an earlier group holds: each time it
adds a group it hashes every parameter of every group added before (through ``Tensor.__hash__``, a Python
call per tensor). An optimizer of G groups over N tensors hashes up to G x N tensors, where one group of
all of them hashes N twice. At 50,000 tensors in 4 groups that check was a third of building the
``AdamW`` (2 cores, meta device); with layer-wise decay (50 groups) it cost more than the rest of the
optimizer's construction.

A resolved plan puts every tensor in exactly one group (first match wins; a tied weight is one tensor), so
`build_optimizer` lets torch's ``add_param_group`` see no earlier group while the constructor adds the
groups it was given. Of the checks against earlier groups, the one that they all give parameter names or
none is kept; everything else ``add_param_group`` and the constructor do (normalising ``params``, filling
the defaults, refusing non-leaf tensors, warning on a duplicate inside a group, the constructor's own checks
such as LBFGS's one group) runs unchanged. A group the optimizer adds by itself is checked as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch


def _keeps_torch_add_param_group(optimizer_cls: Callable[..., torch.optim.Optimizer]) -> bool:
    """Whether ``optimizer_cls`` is an optimizer class built by ``object.__new__`` that keeps torch's
    ``add_param_group`` (an override may keep its own bookkeeping in ``param_groups``)."""
    return (
        isinstance(optimizer_cls, type)
        and issubclass(optimizer_cls, torch.optim.Optimizer)
        and optimizer_cls.add_param_group is torch.optim.Optimizer.add_param_group
        and optimizer_cls.__new__ is object.__new__
    )


def build_optimizer(
    optimizer_cls: Callable[..., torch.optim.Optimizer],
    param_groups: Sequence[dict[str, Any]],
    kwargs: Mapping[str, Any],
) -> torch.optim.Optimizer:
    """``optimizer_cls(param_groups, **kwargs)``, with the check that no two groups share a tensor skipped.

    The caller guarantees that the groups are disjoint; a group the optimizer's constructor adds by itself is
    checked as usual. Any other optimizer (a factory, a class that overrides ``add_param_group`` or
    ``__new__``) is built the usual way.

    Args:
        optimizer_cls: The optimizer class (or any callable that builds an optimizer).
        param_groups: The param-group dicts, no tensor in two of them.
        kwargs: The optimizer's keyword arguments.

    Returns:
        The optimizer, the same as ``optimizer_cls(param_groups, **kwargs)`` builds.
    """
    if len(param_groups) < 2 or not _keeps_torch_add_param_group(optimizer_cls):
        return optimizer_cls(param_groups, **kwargs)
    optimizer = optimizer_cls.__new__(optimizer_cls)  # type: ignore[call-overload]  # a class: checked above
    unchecked = {id(group) for group in param_groups}  # torch's constructor adds these same dicts

    def add_param_group(param_group: dict[str, Any]) -> None:
        if id(param_group) not in unchecked:  # one the optimizer adds by itself: torch's method, every check
            torch.optim.Optimizer.add_param_group(optimizer, param_group)
            return
        unchecked.discard(id(param_group))
        earlier, optimizer.param_groups = optimizer.param_groups, []  # torch hashes every tensor it finds here
        torch.optim.Optimizer.add_param_group(optimizer, param_group)
        added, optimizer.param_groups = optimizer.param_groups, earlier
        if earlier and ("param_names" in earlier[0]) != ("param_names" in param_group):
            raise ValueError("all optimizer param groups should be with/without names")
        earlier += added

    # The constructor adds each group through ``self.add_param_group``; the instance attribute is found first.
    optimizer.add_param_group = add_param_group  # type: ignore[method-assign]
    optimizer.__init__(param_groups, **kwargs)  # type: ignore[misc]
    del optimizer.add_param_group
    return optimizer
