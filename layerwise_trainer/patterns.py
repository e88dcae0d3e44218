"""Parameter-name patterns and the names they are matched against.

Specs are written against the names a user sees in ``model.named_parameters()``. The segments that
wrappers put inside names (``torch.compile``'s ``_orig_mod``, FSDP's ``_fsdp_wrapped_module``,
activation checkpointing's ``_checkpoint_wrapped_module``) are removed before a name is matched, and
whole-model wrappers (DDP, DataParallel, DeepSpeed) are unwrapped, so one spec matches the same
parameters however the model is wrapped.
"""

from __future__ import annotations

import fnmatch
import functools
import re

from torch import nn

REGEX_PREFIX = "re:"
# Segments that wrappers insert anywhere in a parameter name.
_WRAPPER_SEGMENTS = frozenset({"_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"})


@functools.lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile one spec pattern.

    Args:
        pattern: A glob (``fnmatch``, case-sensitive, ``*`` also crosses dots), or a regular
            expression after the prefix ``re:``, matched against the whole name.

    Returns:
        A compiled pattern; use ``.fullmatch(name)``.

    Raises:
        re.error: The ``re:`` pattern is not a valid regular expression.

    Example:
        ```python
        assert compile_pattern("bert.encoder.layer.*").fullmatch("bert.encoder.layer.0.output.dense.weight")
        assert compile_pattern(r"re:.*\\.layer\\.(10|11)\\..*").fullmatch("bert.encoder.layer.11.output.dense.bias")
        ```
    """
    if pattern.startswith(REGEX_PREFIX):
        return re.compile(pattern[len(REGEX_PREFIX) :])
    return re.compile(fnmatch.translate(pattern))


def user_facing_name(name: str) -> str:
    """The parameter name as the user's unwrapped model has it.

    Example:
        ```python
        assert user_facing_name("_orig_mod.bert._fsdp_wrapped_module.pooler.dense.weight") == "bert.pooler.dense.weight"
        ```
    """
    if not any(segment in name for segment in _WRAPPER_SEGMENTS):
        return name
    return ".".join(segment for segment in name.split(".") if segment not in _WRAPPER_SEGMENTS)


def unwrap_data_parallel(model: nn.Module) -> nn.Module:
    """The model inside DDP, DataParallel or a DeepSpeed engine (their parameters are the same objects)."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) or (
        type(model).__name__ == "DeepSpeedEngine" and isinstance(getattr(model, "module", None), nn.Module)
    ):
        model = model.module
    return model


def user_model(model: nn.Module) -> nn.Module:
    """The user's own model inside any wrapper (for naming it in messages)."""
    model = unwrap_data_parallel(model)
    while isinstance(getattr(model, "_orig_mod", None), nn.Module):
        model = model._orig_mod
    return model
