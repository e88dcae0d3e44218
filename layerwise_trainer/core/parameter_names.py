"""Walking a model's module tree once, fast, for models with tens of thousands of tensors.

``nn.Module.named_parameters(remove_duplicate=False)`` yields through one generator per level of
nesting and takes about 0.5 s at 50,000 tensors; an explicit stack gives the same names in the same
order in about a tenth of that.
"""

from __future__ import annotations

from torch import nn


def walk_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ``(name, module)`` of ``model``, as ``named_modules(remove_duplicate=False)`` gives them.

    A module registered under several names appears once per name, in pre-order and registration
    order, the root first with the name ``""``.
    """
    found: list[tuple[str, nn.Module]] = []
    stack: list[tuple[str, nn.Module]] = [("", model)]
    while stack:
        prefix, module = stack.pop()
        found.append((prefix, module))
        children = [
            (f"{prefix}.{name}" if prefix else name, child)
            for name, child in module._modules.items()
            if child is not None
        ]
        stack.extend(reversed(children))
    return found


def all_named_parameters(modules: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Parameter]]:
    """Every ``(name, parameter)`` under ``modules``, as ``named_parameters(remove_duplicate=False)``."""
    return [
        (f"{prefix}.{name}" if prefix else name, parameter)
        for prefix, module in modules
        for name, parameter in module._parameters.items()
        if parameter is not None
    ]


def named_parameters_of(model: nn.Module, modules: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Parameter]]:
    """``model.named_parameters(remove_duplicate=False)``, from the walk when no module overrides it.

    Wrappers that override ``named_parameters`` (FSDP1 hides its flattened parameters there) are
    asked themselves.
    """
    if any(type(module).named_parameters is not nn.Module.named_parameters for _, module in modules):
        return list(model.named_parameters(remove_duplicate=False))
    return all_named_parameters(modules)
