"""The declarative param-group spec: typed, frozen dataclasses and the parser that builds them.

A spec arrives as Python objects, a list of group dicts, a dict with top-level keys, a YAML/JSON file
or a JSON string. :func:`parse_spec` turns any of them into a :class:`LayerwiseSpec` or raises a
:class:`~layerwise_trainer.SpecError` that names where the problem is. Code after this boundary does
not check the spec again.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import regex

from .documents import DocumentError, load_document, parse_json
from .errors import SpecError, did_you_mean
from .patterns import compile_pattern

GROUP_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
DEFAULT_GROUP_NAME = "default"
GROUP_KEYS = ("name", "match", "lr", "lr_scale", "weight_decay", "freeze", "layer_decay", "num_layers")
TOP_LEVEL_KEYS = ("groups", "layer_decay", "unmatched")
UNMATCHED_POLICIES = ("default", "error")
# Keys that torch or the LR scheduler set on a param group themselves.
RESERVED_OPTION_KEYS = ("params", "initial_lr")

_NUMBER_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _number(value: Any, key: str, *, expected: str = "a finite number >= 0") -> float:
    """``value`` as a float: numbers as they are, numeric text such as YAML's ``"2e-5"`` parsed."""
    if isinstance(value, bool):
        raise SpecError(f"expected {expected}, got {_describe(value)}", path=(key,))
    try:
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
            number = float(value.strip())
        else:
            raise SpecError(f"expected {expected}, got {_describe(value)}", path=(key,))
    except OverflowError:
        raise SpecError(f"expected {expected}, got {_describe(value)}", path=(key,)) from None
    if not math.isfinite(number):
        raise SpecError(f"expected {expected}, got {_describe(value)}", path=(key,))
    return number


def _non_negative(value: Any, key: str) -> float:
    number = _number(value, key)
    if number < 0:
        raise SpecError(f"expected a finite number >= 0, got {_describe(value)}", path=(key,))
    return number


def _layer_decay(value: Any, key: str = "layer_decay") -> float:
    expected = "a number in (0, 1]"
    number = _number(value, key, expected=expected)
    if not 0 < number <= 1:
        raise SpecError(f"expected {expected}, got {_describe(value)}", path=(key,))
    return number


def _positive_int(value: Any, key: str) -> int:
    expected = "a whole number >= 1"
    number = _number(value, key, expected=expected)
    if number < 1 or number != int(number):
        raise SpecError(f"expected {expected}, got {_describe(value)}", path=(key,))
    return int(number)


def _patterns(value: Any) -> tuple[str, ...]:
    expected = "a glob or 're:' regex string, or a non-empty list of them"
    if isinstance(value, str):
        items: Sequence[Any] = [value]
        paths = [("match",)]
    elif isinstance(value, (list, tuple)) and value:
        items = value
        paths = [("match", f"[{index}]") for index in range(len(value))]
    else:
        raise SpecError(f"expected {expected}, got {_describe(value)}", path=("match",))
    for item, path in zip(items, paths, strict=True):
        if not isinstance(item, str) or not item.strip():
            raise SpecError(f"expected {expected}, got {_describe(item)}", path=path)
        try:
            compile_pattern(item)
        except (re.error, regex.error) as error:
            raise SpecError(f"invalid regular expression {item!r}: {error}", path=path) from None
    return tuple(items)


def _option_value(value: Any, key: str) -> Any:
    """An optimizer hyperparameter: a scalar, or a flat list of scalars (kept as a tuple)."""
    if isinstance(value, (list, tuple)):
        items = []
        for index, item in enumerate(value):
            if isinstance(item, (list, tuple, dict)):
                raise SpecError(
                    f"expected a number, string, boolean or a flat list of them, got {_describe(value)}",
                    path=(key, f"[{index}]"),
                )
            items.append(_option_value(item, key))
        return tuple(items)
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        return float(value.strip())
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"expected a finite value, got {_describe(value)}", path=(key,))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise SpecError(f"expected a number, string, boolean or a flat list of them, got {_describe(value)}", path=(key,))


@dataclass(frozen=True)
class GroupSpec:
    """One group of the spec: which parameters it takes and how they are optimised.

    Args:
        name: Unique name (``[A-Za-z0-9_.-]+``), used in logs as ``learning_rate/<name>``.
        match: A glob (``fnmatch``) or a sequence of globs over parameter names; a pattern that
            starts with ``re:`` is a regular expression matched with ``re.fullmatch``.
        lr: Absolute learning rate. Exclusive with ``lr_scale``.
        lr_scale: Multiple of ``TrainingArguments.learning_rate``; 1 when neither is given.
        weight_decay: Weight decay; ``TrainingArguments.weight_decay`` when not given. Biases and
            norms get 0 whatever this says.
        freeze: Give the parameters ``requires_grad=False`` and keep them out of the optimizer.
            A learning rate of exactly 0 freezes the same way.
        layer_decay: Layer-wise LR decay ratio in (0, 1]; the spec's top-level value when not given.
            1 turns decay off for this group.
        num_layers: The number of transformer blocks ``L`` to decay over, instead of the number
            detected in the model.
        options: Further optimizer hyperparameters (``betas``, ``eps``, ``momentum``...), passed to
            the param group.

    Example:
        ```python
        head = GroupSpec(name="head", match=["classifier.*", "pooler.*"], lr=1e-3)
        body = GroupSpec(name="body", match="bert.*", lr_scale=0.1, layer_decay=0.9)
        ```
    """

    name: str
    match: str | Sequence[str]
    lr: float | None = None
    lr_scale: float | None = None
    weight_decay: float | None = None
    freeze: bool = False
    layer_decay: float | None = None
    num_layers: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        group = self.name if isinstance(self.name, str) else None
        try:
            self._normalise()
        except SpecError as error:
            raise error.within(group=group) from None

    def _normalise(self) -> None:
        set_field = object.__setattr__
        if not isinstance(self.name, str) or not GROUP_NAME_PATTERN.fullmatch(self.name):
            raise SpecError(f"expected a name made of [A-Za-z0-9_.-], got {_describe(self.name)}", path=("name",))
        if self.name == DEFAULT_GROUP_NAME:
            raise SpecError(
                f"the name {DEFAULT_GROUP_NAME!r} is reserved for the parameters no group matches; "
                "choose another name, or add a last group with match '*' to set their hyperparameters",
                path=("name",),
            )
        set_field(self, "match", _patterns(self.match))
        if self.lr is not None and self.lr_scale is not None:
            raise SpecError("give either 'lr' or 'lr_scale', not both", path=("lr",))
        for key in ("lr", "lr_scale", "weight_decay"):
            if getattr(self, key) is not None:
                set_field(self, key, _non_negative(getattr(self, key), key))
        if not isinstance(self.freeze, bool):
            raise SpecError(f"expected true or false, got {_describe(self.freeze)}", path=("freeze",))
        if self.layer_decay is not None:
            set_field(self, "layer_decay", _layer_decay(self.layer_decay))
        if self.num_layers is not None:
            set_field(self, "num_layers", _positive_int(self.num_layers, "num_layers"))
        if not isinstance(self.options, Mapping):
            raise SpecError(f"expected a mapping, got {_describe(self.options)}", path=("options",))
        options = {}
        for key, value in self.options.items():
            if not isinstance(key, str):
                raise SpecError(f"keys must be strings, got {_describe(key)}")
            if key in GROUP_KEYS:
                raise SpecError(f"{key!r} is a spec key; set it as a field, not as an optimizer option", path=(key,))
            if key in RESERVED_OPTION_KEYS:
                raise SpecError(f"{key!r} is set by the optimizer and scheduler and cannot be given", path=(key,))
            options[key] = _option_value(value, key)
        set_field(self, "options", MappingProxyType(options))

    @property
    def patterns(self) -> tuple[str, ...]:
        """The match patterns, always as a tuple."""
        return tuple(self.match)

    @property
    def is_frozen(self) -> bool:
        """Whether the group is frozen: ``freeze: true``, or a learning rate of exactly 0."""
        return self.freeze or self.lr == 0 or self.lr_scale == 0

    def learning_rate(self, base_learning_rate: float) -> float:
        """The group's learning rate, given ``TrainingArguments.learning_rate``."""
        if self.is_frozen:
            return 0.0
        if self.lr is not None:
            return self.lr
        return base_learning_rate * (1.0 if self.lr_scale is None else self.lr_scale)

    def to_dict(self) -> dict[str, Any]:
        """The group as a plain dict, in the form a YAML or JSON spec writes it."""
        result: dict[str, Any] = {
            "name": self.name,
            "match": self.match[0] if len(self.match) == 1 else list(self.match),
        }
        for key in ("lr", "lr_scale", "weight_decay", "layer_decay", "num_layers"):
            if getattr(self, key) is not None:
                result[key] = getattr(self, key)
        if self.freeze:
            result["freeze"] = True
        for key, value in self.options.items():
            result[key] = list(value) if isinstance(value, tuple) else value
        return result


@dataclass(frozen=True)
class LayerwiseSpec:
    """A whole spec: the groups in matching order and the top-level settings.

    Args:
        groups: The groups; a parameter belongs to the first group whose patterns match its name.
        layer_decay: Layer-wise LR decay ratio for every group that sets none (the ``default``
            group included).
        unmatched: ``"default"``: trainable parameters no group matches form a group named
            ``default`` with the base hyperparameters; ``"error"``: they are an error.

    Example:
        ```python
        spec = LayerwiseSpec(
            groups=[GroupSpec(name="embeddings", match="*.embeddings.*", freeze=True)],
            layer_decay=0.8,
        )
        ```
    """

    groups: Sequence[GroupSpec] = ()
    layer_decay: float | None = None
    unmatched: Literal["default", "error"] = "default"

    def __post_init__(self) -> None:
        if isinstance(self.groups, (str, bytes, Mapping)) or not isinstance(self.groups, Sequence):
            raise SpecError(f"expected a list of groups, got {_describe(self.groups)}", path=("groups",))
        groups = []
        for index, group in enumerate(self.groups):
            if isinstance(group, Mapping):
                group = _group_from_mapping(group, index)
            elif not isinstance(group, GroupSpec):
                raise SpecError(f"expected a group mapping, got {_describe(group)}", path=(f"groups[{index}]",))
            groups.append(group)
        object.__setattr__(self, "groups", tuple(groups))
        seen: dict[str, int] = {}
        for index, group in enumerate(groups):
            if group.name in seen:
                raise SpecError(
                    f"duplicate group name {group.name!r} (first used by groups[{seen[group.name]}])",
                    path=(f"groups[{index}]", "name"),
                )
            seen[group.name] = index
        if self.layer_decay is not None:
            object.__setattr__(self, "layer_decay", _layer_decay(self.layer_decay))
        if self.unmatched not in UNMATCHED_POLICIES:
            raise SpecError(
                f"expected one of {', '.join(map(repr, UNMATCHED_POLICIES))}, got {_describe(self.unmatched)}",
                path=("unmatched",),
            )

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain dict that :func:`parse_spec` reads back to an equal spec."""
        result: dict[str, Any] = {"groups": [group.to_dict() for group in self.groups]}
        if self.layer_decay is not None:
            result["layer_decay"] = self.layer_decay
        if self.unmatched != "default":
            result["unmatched"] = self.unmatched
        return result


def _group_from_mapping(raw: Mapping[Any, Any], index: int) -> GroupSpec:
    where = f"groups[{index}]"
    name = raw.get("name")
    group = name if isinstance(name, str) else None
    for key in raw:
        if not isinstance(key, str):
            raise SpecError(f"keys must be strings, got {_describe(key)}", path=(where,), group=group)
    for required in ("name", "match"):
        if required not in raw:
            close = difflib.get_close_matches(required, [key for key in raw if key not in GROUP_KEYS], n=1)
            hint = f"; is {close[0]!r} a misspelling of it?" if close else ""
            raise SpecError(f"missing required key {required!r}{hint}", path=(where,), group=group)
    known = {key: raw[key] for key in GROUP_KEYS if key in raw}
    options = {key: value for key, value in raw.items() if key not in GROUP_KEYS}
    try:
        return GroupSpec(**known, options=options)
    except SpecError as error:
        raise error.within(where) from None


def _spec_from_mapping(raw: Mapping[Any, Any]) -> LayerwiseSpec:
    for key in raw:
        if not isinstance(key, str):
            raise SpecError(f"top-level keys must be strings, got {_describe(key)}")
        if key not in TOP_LEVEL_KEYS:
            hint = did_you_mean(key, TOP_LEVEL_KEYS) or "."
            if hint == "." and key in GROUP_KEYS:
                hint = f"; {key!r} belongs inside a group of 'groups'."
            raise SpecError(f"unknown top-level key {key!r}{hint} Expected one of: {', '.join(TOP_LEVEL_KEYS)}")
    groups = raw.get("groups", ())
    if groups is None:
        groups = ()
    if not isinstance(groups, (list, tuple)):
        raise SpecError(f"expected a list of groups, got {_describe(groups)}", path=("groups",))
    return LayerwiseSpec(
        groups=groups,
        layer_decay=raw.get("layer_decay"),
        unmatched=raw.get("unmatched", "default"),
    )


SpecSource = LayerwiseSpec | Sequence[Any] | Mapping[str, Any] | str | os.PathLike[str]


def parse_spec(source: SpecSource) -> LayerwiseSpec:
    """Turn any accepted form of a spec into a :class:`LayerwiseSpec`.

    Args:
        source: A :class:`LayerwiseSpec`; a list of group dicts or :class:`GroupSpec` objects; a
            dict ``{"groups": [...], "layer_decay": ..., "unmatched": ...}``; a path (``str`` or
            ``os.PathLike``) to a ``.yaml``/``.yml``/``.json`` file holding either; or a JSON string
            (text starting with ``[`` or ``{``).

    Returns:
        The validated, frozen spec.

    Raises:
        SpecError: Anything wrong with the spec, located (``groups[1].lr``) and explained.

    Example:
        ```python
        spec = parse_spec([
            {"name": "body", "match": "bert.*", "lr": 0},
            {"name": "head", "match": "classifier.*", "lr": "2e-5"},
        ])
        assert spec.groups[1].lr == 2e-5
        ```
    """
    if isinstance(source, LayerwiseSpec):
        return source
    if isinstance(source, (str, os.PathLike)):
        label = _source_label(source)
        try:
            return _spec_from_data(_read_spec_text_or_file(source))
        except SpecError as error:
            raise error.within(source=label) from None
    return _spec_from_data(source)


def _source_label(source: str | os.PathLike[str]) -> str:
    if isinstance(source, str) and source.lstrip()[:1] in ("[", "{"):
        return "param_groups JSON string"
    return os.fspath(source)


def _spec_from_data(source: Any) -> LayerwiseSpec:
    if isinstance(source, Mapping):
        return _spec_from_mapping(source)
    if isinstance(source, (list, tuple)):
        return LayerwiseSpec(groups=source)
    raise SpecError(
        "expected a spec: a list of groups, a mapping with 'groups', a path to a YAML/JSON file, "
        f"a JSON string or a LayerwiseSpec, got {_describe(source)}"
    )


def _read_spec_text_or_file(source: str | os.PathLike[str]) -> Any:
    try:
        if isinstance(source, str) and source.lstrip()[:1] in ("[", "{"):
            return parse_json(source, _source_label(source))
        return load_document(source)
    except DocumentError as error:
        raise SpecError(error.detail) from None
