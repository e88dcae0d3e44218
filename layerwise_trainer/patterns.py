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

import regex
from torch import nn

REGEX_PREFIX = "re:"
# Segments that wrappers insert anywhere in a parameter name.
_WRAPPER_SEGMENTS = frozenset({"_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"})
_WRAPPER_SEGMENT = re.compile("|".join(_WRAPPER_SEGMENTS))


# A user's regular expression gets this long to match one name; nested repetition such as `(a+)+`
# can otherwise backtrack for hours.
MATCH_TIMEOUT_SECONDS = 1.0


class NamePattern:
    r"""One spec pattern, compiled.

    A glob (``fnmatch``, case-sensitive, ``*`` also crosses dots) or, after the prefix ``re:``, a
    regular expression matched against the whole name. Regular expressions run under a time limit
    (``MATCH_TIMEOUT_SECONDS`` per name) through the ``regex`` module, so a hostile pattern cannot hang
    a run.

    Args:
        text: The pattern as written in the spec.

    Raises:
        regex.error: The ``re:`` pattern is not a valid regular expression.

    Example:
        ```python
        assert NamePattern("bert.encoder.layer.*").matches("bert.encoder.layer.0.output.dense.weight")
        assert NamePattern(r"re:.*\.layer\.(10|11)\..*").matches("bert.encoder.layer.11.output.dense.bias")
        ```
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.is_regex = text.startswith(REGEX_PREFIX)
        if self.is_regex:
            self.source = text[len(REGEX_PREFIX) :]
            self._compiled = regex.compile(self.source)
        else:
            self.source = fnmatch.translate(text)
            self._compiled = re.compile(self.source)

    def matches(self, name: str) -> bool:
        """Whether ``name`` matches as a whole.

        Raises:
            TimeoutError: A regular expression took longer than ``MATCH_TIMEOUT_SECONDS``.
        """
        if self.is_regex:
            return self._compiled.fullmatch(name, timeout=MATCH_TIMEOUT_SECONDS) is not None
        return self._compiled.fullmatch(name) is not None


class PatternTimeout(Exception):
    """A regular expression ran past its time limit; ``index`` is its position in the list."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class FirstMatch:
    """Which of several patterns, in order, is the first to match a name.

    When every pattern is a glob, they are joined into one regular expression with a named
    alternative each: one call in C per name instead of one per pattern.

    Args:
        patterns: The patterns, in matching order.
    """

    def __init__(self, patterns: list[NamePattern]) -> None:
        self.patterns = patterns
        self._joined = None
        if patterns and not any(pattern.is_regex for pattern in patterns):
            self._joined = re.compile(
                "|".join(f"(?P<p{index}>{pattern.source})" for index, pattern in enumerate(patterns))
            )

    def index(self, names: list[str]) -> int | None:
        """The position of the first pattern that matches any of ``names``, or None.

        Raises:
            PatternTimeout: A regular expression took too long.
        """
        best: int | None = None
        for name in names:
            found = self._first(name)
            if found is not None and (best is None or found < best):
                best = found
        return best

    def _first(self, name: str) -> int | None:
        if self._joined is not None:
            match = self._joined.fullmatch(name)
            return None if match is None else int(match.lastgroup[1:])
        for index, pattern in enumerate(self.patterns):
            try:
                if pattern.matches(name):
                    return index
            except TimeoutError:
                raise PatternTimeout(index) from None
        return None


@functools.lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> NamePattern:
    """The compiled :class:`NamePattern` of a spec pattern (cached)."""
    return NamePattern(pattern)


def user_facing_name(name: str) -> str:
    """The parameter name as the user's unwrapped model has it.

    Example:
        ```python
        assert user_facing_name("_orig_mod.bert._fsdp_wrapped_module.pooler.dense.weight") == "bert.pooler.dense.weight"
        ```
    """
    if _WRAPPER_SEGMENT.search(name) is None:
        return name
    *modules, leaf = name.split(".")
    return ".".join([*(segment for segment in modules if segment not in _WRAPPER_SEGMENTS), leaf])


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
