"""Which hyperparameters an optimizer class takes per group, and whether it accepts a spec group's values."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import SpecError, did_you_mean
from .muon import MUON, MUON_GROUP_KEYS, TRAINER
from .spec import GROUP_KEYS, GroupSpec, LayerwiseSpec


def optimizer_hyperparameters(optimizer_cls: type[torch.optim.Optimizer]) -> dict[str, Any] | None:
    """The hyperparameters ``optimizer_cls`` takes, with their defaults.

    Returns:
        Keyword -> default (``inspect.Parameter.empty`` when it has none), or None when the
        constructor takes ``**kwargs`` and so names no fixed set.
    """
    try:
        parameters = inspect.signature(optimizer_cls.__init__).parameters
    except (TypeError, ValueError):
        return None
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return None
    return {
        name: parameter.default
        for name, parameter in parameters.items()
        if name not in ("self", "params") and parameter.kind is not inspect.Parameter.VAR_POSITIONAL
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_mismatch(value: Any, default: Any) -> str | None:
    """What ``value`` should have been, judged by the kind of the optimizer's default; None if fine."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if _is_number(default):
        return None if _is_number(value) else "a number"
    if isinstance(default, tuple) and all(_is_number(item) for item in default):
        if isinstance(value, tuple) and len(value) == len(default) and all(_is_number(item) for item in value):
            return None
        return f"a list of {len(default)} numbers"
    return None


def validate_group_options(
    spec: LayerwiseSpec,
    optimizer_cls: type[torch.optim.Optimizer],
    optimizer_kwargs: Mapping[str, Any],
    label: str,
    device: torch.device | None = None,
) -> None:
    """Check every group's optimizer hyperparameters against ``optimizer_cls``.

    Each key must be a keyword of the optimizer, and the optimizer must accept each group's values:
    it is built once per group that sets options, on a one-element tensor on ``device``, and takes one
    step there, so that its own checks (``betas`` in [0, 1), ``eps`` >= 0, device requirements of
    ``capturable`` or ``fused``...) run on the group's values, which torch would otherwise only meet
    deep inside the first training step, or never.

    Args:
        spec: The spec.
        optimizer_cls: The optimizer class.
        optimizer_kwargs: The keyword arguments the optimizer is built with.
        label: The optimizer's name in messages.
        device: Where the model's parameters are; on ``meta`` (or None) the probe only builds the
            optimizer, on the CPU.

    Raises:
        SpecError: A key the optimizer does not have, or a value it refuses, naming the group.
    """
    for index, group in enumerate(spec.groups):
        if not group.options:
            continue
        group_cls, group_kwargs, group_label = _optimizer_of(spec, group, optimizer_cls, optimizer_kwargs, label)
        where = f"groups[{index}]"
        known = optimizer_hyperparameters(group_cls)
        if known is not None:
            spec_keys = [key for key in GROUP_KEYS if key not in MUON_GROUP_KEYS or spec.optimizer_of(group) == MUON]
            for key in group.options:
                if key not in known:
                    hint = did_you_mean(key, [*spec_keys, *known])
                    raise SpecError(
                        f"unknown key {key!r}: neither a spec key nor a hyperparameter of {group_label}{hint}; "
                        f"spec keys: {', '.join(spec_keys)}; {group_label} takes: {', '.join(sorted(known))}",
                        path=(where, key),
                        group=group.name,
                    )
            for key, value in group.options.items():
                problem = _type_mismatch(value, known[key])
                if problem:
                    raise SpecError(
                        f"{group_label} expects {problem}, got {value!r}", path=(where, key), group=group.name
                    )
        try:
            _probe(group_cls, {**group_kwargs, **group.options}, device)
        except Exception as error:  # whatever the optimizer raises, it refuses these values
            keys = ", ".join(group.options)
            raise SpecError(
                f"{group_label} refuses the group's hyperparameters ({keys}): {error}", path=(where,), group=group.name
            ) from None


def _optimizer_of(
    spec: LayerwiseSpec,
    group: GroupSpec,
    optimizer_cls: type[torch.optim.Optimizer],
    optimizer_kwargs: Mapping[str, Any],
    label: str,
) -> tuple[type[torch.optim.Optimizer], Mapping[str, Any], str]:
    """The optimizer that takes a group's options: the one given, or the algorithm the group chooses in a
    `HybridOptimizer` (whose keyword arguments hold ``algorithms``), with the top-level Muon settings."""
    algorithms = optimizer_kwargs.get("algorithms")
    if not isinstance(algorithms, Mapping):
        return optimizer_cls, optimizer_kwargs, label
    kind = spec.optimizer_of(group) or TRAINER
    kind_cls, kind_kwargs = algorithms[kind]
    if kind == MUON and spec.muon is not None:
        kind_kwargs = {**kind_kwargs, **spec.muon.options}
    kind_label = label if kind == TRAINER else kind_cls.__name__
    return kind_cls, kind_kwargs, kind_label


def _probe(optimizer_cls: type[torch.optim.Optimizer], kwargs: Mapping[str, Any], device: torch.device | None) -> None:
    """Build the optimizer on a one-element tensor and, off the meta device, take one step."""
    runs = device is not None and device.type != "meta"
    # 2-D, which every optimizer takes (Muon takes nothing else).
    parameter = torch.zeros(1, 1, requires_grad=True, device=device if runs else "cpu")
    optimizer = optimizer_cls([parameter], **kwargs)
    if runs:
        parameter.grad = torch.ones_like(parameter)
        optimizer.step()
