"""The declarative param-group spec: typed, frozen dataclasses and the parser that builds them.

A spec arrives as Python objects, a list of group dicts, a dict with top-level keys, a YAML/JSON file
or a JSON string. `parse_spec` turns any of them into a `LayerwiseSpec` or raises a
`SpecError` that names where the problem is. Code after this boundary does
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

from ..errors import SpecError, describe_value, did_you_mean, whole_number_problem
from .group_schedule import (
    SCHEDULE_KEYS,
    START_TYPES,
    WARMUP_UNITS,
    PlateauTrigger,
    ScheduleAmount,
    parse_amount,
    parse_min_lr_ratio,
    parse_shape,
    parse_start,
    parse_unfreeze_every,
)
from .muon import MUON, MUON_OPTIONS, OPTIMIZER_KINDS, MuonSettings, parse_adamw_rate, parse_muon_option
from .name_patterns import compile_pattern, is_exact_name
from .row_groups import MAX_ROW_ITEMS, RowSelection
from .yaml_json import (
    JSON_SUFFIXES,
    YAML_SUFFIXES,
    DocumentError,
    DocumentTooLargeError,
    load_document,
    parse_json,
)

GROUP_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
DEFAULT_GROUP_NAME = "default"
GROUP_KEYS = (
    "name",
    "match",
    "rows",
    "lr",
    "lr_scale",
    "weight_decay",
    "freeze",
    "layer_decay",
    "num_layers",
    *SCHEDULE_KEYS,
    "gradual_unfreeze",
    "layer_stacks",
    "optimizer",
    "adamw_lr",
    "adamw_lr_scale",
)
TOP_LEVEL_KEYS = ("groups", "layer_decay", "unmatched", "gradual_unfreeze", "no_weight_decay", "layer_stacks", "muon")
UNMATCHED_POLICIES = ("default", "error")
# How layer decay numbers a group's blocks when they sit in several stacks (an encoder and a decoder).
LAYER_STACKS = ("joined", "separate")
# Keys that torch or the LR scheduler set on a param group themselves.
RESERVED_OPTION_KEYS = ("params", "initial_lr")

# Limits that keep a hostile spec from taking minutes or gigabytes; each is far above a real spec. Every
# parameter name of a 50,000-tensor model, listed explicitly in YAML, is about 2.5 MB and 50,000 patterns.
# Size of a spec's text (a file or a JSON string), checked before it is read or parsed. libyaml reads
# 4 MiB of YAML in about 0.6 s (the pure-Python loader, used without libyaml, in about 5 s).
MAX_SPEC_BYTES = 4 * 1024 * 1024
MAX_GROUPS = 10_000
# Patterns of all groups together; an exact parameter name costs one dict entry.
MAX_PATTERNS = 100_000
# Globs and regular expressions of all groups together: each is compiled and tried on every name.
MAX_WILDCARD_PATTERNS = 2_000
# Far above any model's block count, and low enough that num_layers cannot name a 301-digit sub-group.
MAX_NUM_LAYERS = 10_000

_NUMBER_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _number(value: Any, key: str, *, expected: str = "a finite number >= 0") -> float:
    """``value`` as a float: numbers as they are, numeric text such as YAML's ``"2e-5"`` parsed."""
    if isinstance(value, bool):
        raise SpecError(f"expected {expected}, got {describe_value(value)}", path=(key,))
    try:
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
            number = float(value.strip())
        else:
            raise SpecError(f"expected {expected}, got {describe_value(value)}", path=(key,))
    except OverflowError:
        raise SpecError(f"expected {expected}, got {describe_value(value)}", path=(key,)) from None
    if not math.isfinite(number):
        raise SpecError(f"expected {expected}, got {describe_value(value)}", path=(key,))
    return number


def json_ready(value: Any) -> Any:
    """An option value as JSON and YAML write it: a flat tuple (such as ``betas``) becomes a list."""
    return list(value) if isinstance(value, tuple) else value


def _non_negative(value: Any, key: str) -> float:
    number = _number(value, key)
    if number < 0:
        raise SpecError(f"expected a finite number >= 0, got {describe_value(value)}", path=(key,))
    return number


def _layer_decay(value: Any, key: str = "layer_decay") -> float:
    expected = "a number in (0, 1]"
    number = _number(value, key, expected=expected)
    if not 0 < number <= 1:
        raise SpecError(f"expected {expected}, got {describe_value(value)}", path=(key,))
    return number


def _layer_stacks(value: Any) -> str:
    if value not in LAYER_STACKS:
        expected = " or ".join(map(repr, LAYER_STACKS))
        raise SpecError(f"expected {expected}, got {describe_value(value)}", path=("layer_stacks",))
    return value


def _positive_int(value: Any, key: str, maximum: int) -> int:
    expected = f"a whole number from 1 to {maximum:,}"
    number = _number(value, key, expected=expected)
    problem = whole_number_problem(number, maximum=maximum)
    if problem is not None:
        raise SpecError(f"expected {problem}, got {describe_value(value)}", path=(key,))
    return int(number)


def _patterns(value: Any, key: str = "match") -> tuple[str, ...]:
    expected = "a glob or 're:' regex string, or a non-empty list of them"
    if isinstance(value, str):
        items: Sequence[Any] = [value]
        paths = [(key,)]
    elif isinstance(value, (list, tuple)) and value:
        items = value
        paths = [(key, f"[{index}]") for index in range(len(value))]
    else:
        raise SpecError(f"expected {expected}, got {describe_value(value)}", path=(key,))
    _check_pattern_counts(len(items), _count_wildcards(items))
    for item, path in zip(items, paths, strict=True):
        if not isinstance(item, str) or not item.strip():
            raise SpecError(f"expected {expected}, got {describe_value(item)}", path=path)
        if is_exact_name(item):
            continue  # an exact name is a dict key when matching: nothing to compile
        try:
            compile_pattern(item)
        except (re.error, regex.error) as error:
            raise SpecError(f"invalid regular expression {item!r}: {error}", path=path) from None
    return tuple(items)


def _count_wildcards(patterns: Sequence[Any]) -> int:
    return sum(1 for pattern in patterns if not (isinstance(pattern, str) and is_exact_name(pattern)))


def _check_pattern_counts(patterns: int, wildcards: int) -> None:
    """Refuse more patterns, or more globs and regular expressions, than the limits allow (in `match`)."""
    if patterns > MAX_PATTERNS:
        raise SpecError(
            f"{patterns:,} patterns in all, more than the {MAX_PATTERNS:,} allowed (MAX_PATTERNS)", path=("match",)
        )
    if wildcards > MAX_WILDCARD_PATTERNS:
        raise SpecError(
            f"{wildcards:,} globs and regular expressions in all, more than the {MAX_WILDCARD_PATTERNS:,} allowed "
            "(MAX_WILDCARD_PATTERNS); list exact parameter names instead",
            path=("match",),
        )


def _option_value(value: Any, key: str) -> Any:
    """An optimizer hyperparameter: a scalar, or a flat list of scalars (kept as a tuple)."""
    if isinstance(value, (list, tuple)):
        items = []
        for index, item in enumerate(value):
            if isinstance(item, (list, tuple, dict)):
                raise SpecError(
                    f"expected a number, string, boolean or a flat list of them, got {describe_value(value)}",
                    path=(key, f"[{index}]"),
                )
            items.append(_option_value(item, key))
        return tuple(items)
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        return float(value.strip())
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"expected a finite value, got {describe_value(value)}", path=(key,))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise SpecError(
        f"expected a number, string, boolean or a flat list of them, got {describe_value(value)}", path=(key,)
    )


@dataclass(frozen=True)
class GroupSpec:
    """One group of the spec: which parameters it takes and how they are optimised.

    Args:
        name: Unique name (``[A-Za-z0-9_.-]+``), used in logs as ``learning_rate/<name>``.
        match: A glob (``fnmatch``) or a sequence of globs over parameter names; a pattern that
            starts with ``re:`` is a regular expression matched with ``re.fullmatch``.
        rows: Rows of the 2-D matrices ``match`` names (an embedding, an LM head) instead of whole parameters:
            ``"new"`` (the rows added since the model's original vocabulary), ``{"from": N}``, or a list of
            row indices and half-open ``[start, stop]`` ranges; see `layerwise_trainer.core.row_groups`. The rest of
            each matrix belongs to the group that matches it, as without this group.
        lr: Absolute learning rate. Exclusive with ``lr_scale``.
        lr_scale: Multiple of ``TrainingArguments.learning_rate``; 1 when neither is given.
        weight_decay: Weight decay; ``TrainingArguments.weight_decay`` when not given. Biases and
            norms get 0 whatever this says.
        freeze: Give the parameters ``requires_grad=False`` and keep them out of the optimizer.
            A learning rate of exactly 0 freezes the same way.
        layer_decay: Layer-wise LR decay ratio in (0, 1]; the spec's top-level value when not given.
            1 turns decay off for this group.
        num_layers: The number of transformer blocks ``L`` to decay over, instead of the number
            detected in the model (in the group's stack, when it decays within one); at most
            `MAX_NUM_LAYERS` (10,000).
        layer_stacks: How layer decay numbers blocks of several stacks (an encoder and a decoder, a vision
            tower and a language model): ``"separate"``, each stack from its own top; ``"joined"``, one
            sequence through the stacks. When not given, the spec's top-level value; without that, a group
            whose blocks sit in one stack decays within it and a group over several stacks is joined.
        start: When the group starts (``100`` optimizer steps, ``{epochs: 1}``, ``{fraction: 0.25}``, or
            ``{plateau: {metric: eval_loss, patience: 2, ...}}``, decided at an evaluation); before it the
            group's rate is 0 and its parameters get no gradients.
        warmup: The group's own linear warm-up from its start (``50`` steps or ``{ratio: 0.1}`` of the
            group's own steps); the Trainer's warm-up steps when not given.
        schedule: The group's schedule shape (``constant``, ``linear``, ``cosine``); the Trainer's
            ``lr_scheduler_type``, counted from the group's start, when not given.
        min_lr_ratio: The floor of ``schedule: cosine``, as a ratio of the group's rate.
        gradual_unfreeze: ``{every: K}`` (steps, or ``{epochs: K}``, ``{fraction: F}``, or ``{plateau: {...}}``
            for the next plateau): the group's layer sub-groups start one after another from the top layer
            down, K apart; ``false`` turns the
            spec's top-level setting off for this group. Needs layer decay.
        optimizer: Which optimizer steps the group: ``"muon"`` (Muon for the 2-D weight matrices of its
            transformer blocks, AdamW for the rest, see `layerwise_trainer.core.muon`), ``"adamw"`` or
            ``"trainer"`` (``TrainingArguments.optim``'s); the top-level ``muon`` setting's split when not given.
        adamw_lr: In a group Muon trains: the absolute rate of the parameters Muon does not take.
        adamw_lr_scale: In a group Muon trains: their rate, times the group's.
        options: Further optimizer hyperparameters (``betas``, ``eps``, ``momentum``...), passed to
            the param group (to its Muon part, in a group Muon trains).

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
    layer_stacks: str | None = None
    start: ScheduleAmount | PlateauTrigger | int | Mapping[str, Any] | None = None
    warmup: ScheduleAmount | int | Mapping[str, float] | None = None
    schedule: str | None = None
    min_lr_ratio: float | None = None
    gradual_unfreeze: ScheduleAmount | PlateauTrigger | Mapping[str, Any] | bool | None = None
    optimizer: str | None = None
    adamw_lr: float | None = None
    adamw_lr_scale: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    rows: RowSelection | str | Mapping[str, Any] | Sequence[Any] | None = None

    def __post_init__(self) -> None:
        group = self.name if isinstance(self.name, str) else None
        try:
            self._normalise()
        except SpecError as error:
            raise error.within(group=group) from None

    def _normalise(self) -> None:
        set_field = object.__setattr__
        if not isinstance(self.name, str) or not GROUP_NAME_PATTERN.fullmatch(self.name):
            raise SpecError(f"expected a name made of [A-Za-z0-9_.-], got {describe_value(self.name)}", path=("name",))
        if self.name == DEFAULT_GROUP_NAME:
            raise SpecError(
                f"the name {DEFAULT_GROUP_NAME!r} is reserved for the parameters no group matches; "
                "choose another name, or add a last group with match '*' to set their hyperparameters",
                path=("name",),
            )
        set_field(self, "match", _patterns(self.match))
        if self.rows is not None:
            set_field(self, "rows", RowSelection.parse(self.rows))
        if self.lr is not None and self.lr_scale is not None:
            raise SpecError("give either 'lr' or 'lr_scale', not both", path=("lr",))
        for key in ("lr", "lr_scale", "weight_decay"):
            if getattr(self, key) is not None:
                set_field(self, key, _non_negative(getattr(self, key), key))
        if not isinstance(self.freeze, bool):
            raise SpecError(f"expected true or false, got {describe_value(self.freeze)}", path=("freeze",))
        if self.layer_decay is not None:
            set_field(self, "layer_decay", _layer_decay(self.layer_decay))
        if self.num_layers is not None:
            set_field(self, "num_layers", _positive_int(self.num_layers, "num_layers", MAX_NUM_LAYERS))
        if self.layer_stacks is not None:
            set_field(self, "layer_stacks", _layer_stacks(self.layer_stacks))
        self._normalise_schedule_keys()
        self._normalise_optimizer_keys()
        if not isinstance(self.options, Mapping):
            raise SpecError(f"expected a mapping, got {describe_value(self.options)}", path=("options",))
        options = {}
        for key, value in self.options.items():
            if not isinstance(key, str):
                raise SpecError(f"keys must be strings, got {describe_value(key)}")
            if key in GROUP_KEYS:
                raise SpecError(f"{key!r} is a spec key; set it as a field, not as an optimizer option", path=(key,))
            if key in RESERVED_OPTION_KEYS:
                raise SpecError(f"{key!r} is set by the optimizer and scheduler and cannot be given", path=(key,))
            options[key] = (
                parse_muon_option(key, value)
                if self.optimizer == MUON and key in MUON_OPTIONS
                else (_option_value(value, key))
            )
        set_field(self, "options", MappingProxyType(options))

    def _normalise_optimizer_keys(self) -> None:
        if self.optimizer is not None:
            if self.optimizer not in OPTIMIZER_KINDS:
                expected = ", ".join(OPTIMIZER_KINDS)
                raise SpecError(
                    f"expected one of {expected}, got {describe_value(self.optimizer)}", path=("optimizer",)
                )
            if self.is_frozen:
                reason = "freeze: true" if self.freeze else "a learning rate of 0"
                raise SpecError(
                    f"a group with {reason} is in no optimizer, so it cannot choose one", path=("optimizer",)
                )
            if self.optimizer == MUON and self.rows is not None:
                raise SpecError(
                    "Muon orthogonalises whole matrices, and a group with rows holds some rows of a matrix; "
                    "choose optimizer: adamw for it",
                    path=("optimizer",),
                )
        adamw_lr, adamw_lr_scale = parse_adamw_rate(self.adamw_lr, self.adamw_lr_scale)
        object.__setattr__(self, "adamw_lr", adamw_lr)
        object.__setattr__(self, "adamw_lr_scale", adamw_lr_scale)

    def _normalise_schedule_keys(self) -> None:
        set_field = object.__setattr__
        if self.start is not None:
            set_field(self, "start", parse_start(self.start))
        if self.warmup is not None:
            set_field(self, "warmup", parse_amount(self.warmup, "warmup", WARMUP_UNITS))
        if self.schedule is not None:
            set_field(self, "schedule", parse_shape(self.schedule))
        if self.min_lr_ratio is not None:
            set_field(self, "min_lr_ratio", parse_min_lr_ratio(self.min_lr_ratio, self.schedule))
        if self.gradual_unfreeze is not None and self.gradual_unfreeze is not False:
            every = self.gradual_unfreeze
            if isinstance(every, START_TYPES):
                every = {"every": every}
            set_field(self, "gradual_unfreeze", parse_unfreeze_every(every))
        used = self.schedule_keys
        if used and self.is_frozen:
            reason = "freeze: true" if self.freeze else "a learning rate of 0"
            raise SpecError(f"a group with {reason} never trains, so it cannot have a schedule", path=(used[0],))

    @property
    def schedule_keys(self) -> tuple[str, ...]:
        """The per-group schedule keys this group sets (``start``, ``warmup``, ``schedule``, ``min_lr_ratio``,
        ``gradual_unfreeze``)."""
        keys = tuple(key for key in SCHEDULE_KEYS if getattr(self, key) is not None)
        return keys + (("gradual_unfreeze",) if isinstance(self.gradual_unfreeze, START_TYPES) else ())

    def __getstate__(self) -> dict[str, Any]:
        # A mappingproxy neither pickles nor deep-copies; the options travel as a plain dict.
        return {**self.__dict__, "options": dict(self.options)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, options=MappingProxyType(dict(state["options"])))

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
        if isinstance(self.rows, RowSelection):
            result["rows"] = self.rows.to_spec()
        for key in ("lr", "lr_scale", "weight_decay", "layer_decay", "num_layers", "layer_stacks", "optimizer",
                    "adamw_lr", "adamw_lr_scale"):  # fmt: skip
            if getattr(self, key) is not None:
                result[key] = getattr(self, key)
        if self.freeze:
            result["freeze"] = True
        for key in self.schedule_keys:
            value = getattr(self, key)
            if key == "gradual_unfreeze":
                result[key] = {"every": value.to_spec()}
            else:
                result[key] = value.to_spec() if isinstance(value, START_TYPES) else value
        if self.gradual_unfreeze is False:
            result["gradual_unfreeze"] = False
        for key, value in self.options.items():
            result[key] = json_ready(value)
        return result


@dataclass(frozen=True)
class LayerwiseSpec:
    """A whole spec: the groups in matching order and the top-level settings.

    Args:
        groups: The groups; a parameter belongs to the first group whose patterns match its name.
        layer_decay: Layer-wise LR decay ratio for every group that sets none (the ``default``
            group included).
        layer_stacks: ``"separate"`` or ``"joined"`` for every group that sets none (the ``default`` group
            included); see `GroupSpec`.
        unmatched: ``"default"``: trainable parameters no group matches form a group named
            ``default`` with the base hyperparameters; ``"error"``: they are an error.
        gradual_unfreeze: ``{every: K}``: every group with layer decay (the ``default`` group included)
            starts its layer sub-groups one after another from the top down, K apart; a group's own
            ``gradual_unfreeze`` overrides it.
        no_weight_decay: Patterns (as in ``match``) of parameters that never get weight decay, added to
            the Trainer's rule (biases and norms): embeddings, position embeddings, ``cls_token``.
        muon: ``true`` or a mapping of Muon's settings (`MuonSettings`): every group that chooses no
            ``optimizer`` is trained by Muon for the 2-D weight matrices of its transformer blocks and by AdamW
            for the rest.

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
    layer_stacks: str | None = None
    unmatched: Literal["default", "error"] = "default"
    gradual_unfreeze: ScheduleAmount | PlateauTrigger | Mapping[str, Any] | None = None
    no_weight_decay: str | Sequence[str] = ()
    muon: MuonSettings | Mapping[str, Any] | bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.groups, (str, bytes, Mapping)) or not isinstance(self.groups, Sequence):
            raise SpecError(f"expected a list of groups, got {describe_value(self.groups)}", path=("groups",))
        if len(self.groups) > MAX_GROUPS:
            raise SpecError(
                f"{len(self.groups):,} groups, more than the {MAX_GROUPS:,} allowed (MAX_GROUPS)", path=("groups",)
            )
        groups: list[GroupSpec] = []
        patterns = wildcards = row_items = 0
        for index, raw in enumerate(self.groups):
            try:
                patterns += _pattern_count(raw)  # before building the group, so its patterns are not compiled
                _check_pattern_counts(patterns, wildcards)
                own_row_items = _row_item_count(raw)
                row_items += own_row_items  # all groups' together: a limit per group would multiply by the groups
                _check_row_item_count(row_items, own_row_items)
                group = _group_from(raw, index)
                wildcards += _count_wildcards(group.patterns)
                _check_pattern_counts(patterns, wildcards)
            except SpecError as error:
                name = raw.get("name") if isinstance(raw, Mapping) else getattr(raw, "name", None)
                raise error.within(f"groups[{index}]", group=name if isinstance(name, str) else None) from None
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
        self._check_layer_stacks()
        if self.unmatched not in UNMATCHED_POLICIES:
            raise SpecError(
                f"expected one of {', '.join(map(repr, UNMATCHED_POLICIES))}, got {describe_value(self.unmatched)}",
                path=("unmatched",),
            )
        self._normalise_gradual_unfreeze()
        if self.no_weight_decay is None or (
            isinstance(self.no_weight_decay, (list, tuple)) and not self.no_weight_decay
        ):
            object.__setattr__(self, "no_weight_decay", ())
        else:
            object.__setattr__(self, "no_weight_decay", _patterns(self.no_weight_decay, "no_weight_decay"))
        object.__setattr__(self, "muon", MuonSettings.parse(self.muon))
        self._check_muon_groups()

    def _check_muon_groups(self) -> None:
        """A group's AdamW rate only where Muon trains it; Muon's options checked in a group the top-level ``muon``
        sends to Muon (a group that names Muon checked its own)."""
        for index, group in enumerate(self.groups):
            if group.optimizer is None and self.optimizer_of(group) == MUON and not group.is_frozen:
                for key in MUON_OPTIONS:
                    if key in group.options:
                        try:
                            parse_muon_option(key, group.options[key])
                        except SpecError as error:
                            raise error.within(f"groups[{index}]", group=group.name) from None
            stated = "adamw_lr" if group.adamw_lr is not None else "adamw_lr_scale" if group.adamw_lr_scale else None
            if stated is not None and self.optimizer_of(group) != MUON:
                raise SpecError(
                    f"{stated} is the rate of the parameters Muon does not take in a group Muon trains, and Muon "
                    "trains no parameter of this group; set optimizer: muon (or the top-level muon setting) or "
                    f"remove {stated}",
                    path=(f"groups[{index}]", stated),
                    group=group.name,
                )

    def optimizer_of(self, group: GroupSpec | None) -> str | None:
        """The optimizer a group (None: the ``default`` group) chooses: its own, else ``muon`` under the top-level
        ``muon`` setting; None when the spec chooses none (the Trainer's ``optim`` trains every group)."""
        if group is not None and group.optimizer is not None:
            return group.optimizer
        return MUON if self.muon is not None else None

    @property
    def chooses_optimizers(self) -> bool:
        """Whether some group is trained by another optimizer than ``TrainingArguments.optim``'s alone."""
        return self.muon is not None or any(group.optimizer is not None for group in self.groups)

    def _check_layer_stacks(self) -> None:
        if self.layer_stacks is not None:
            object.__setattr__(self, "layer_stacks", _layer_stacks(self.layer_stacks))
        for index, group in enumerate(self.groups):
            if group.layer_stacks is not None and self.layer_decay_of(group) is None:
                raise SpecError(
                    "layer_stacks says how layer decay numbers the blocks, and this group has no layer decay; "
                    "set layer_decay or remove layer_stacks",
                    path=(f"groups[{index}]", "layer_stacks"),
                    group=group.name,
                )
        decayed = self.layer_decay is not None or any(group.layer_decay is not None for group in self.groups)
        if self.layer_stacks is not None and not decayed:
            raise SpecError(
                "layer_stacks says how layer decay numbers the blocks, and no group has layer decay; set "
                "layer_decay (at the top level or in a group) or remove layer_stacks",
                path=("layer_stacks",),
            )

    def layer_stacks_of(self, group: GroupSpec | None) -> str | None:
        """How a group (None: the ``default`` group) numbers several stacks: its own, else the spec's; None
        when neither says (one stack: within it; several: joined)."""
        if group is not None and group.layer_stacks is not None:
            return group.layer_stacks
        return self.layer_stacks

    def _normalise_gradual_unfreeze(self) -> None:
        every = self.gradual_unfreeze
        if isinstance(every, START_TYPES):
            every = {"every": every}
        if every is not None:
            object.__setattr__(self, "gradual_unfreeze", parse_unfreeze_every(every))
        for index, group in enumerate(self.groups):
            if isinstance(group.gradual_unfreeze, START_TYPES) and self.layer_decay_of(group) is None:
                raise SpecError(
                    "gradual unfreezing starts a group's layer sub-groups one by one, and this group has no "
                    "layer decay; set layer_decay (1 keeps one rate for every layer) or remove gradual_unfreeze",
                    path=(f"groups[{index}]", "gradual_unfreeze"),
                    group=group.name,
                )
        applies_nowhere = not any(self.unfreeze_every_of(group) is not None for group in self.groups)
        if self.gradual_unfreeze is not None and self.layer_decay is None and applies_nowhere:
            raise SpecError(
                "gradual unfreezing applies to groups with layer decay, and no group has any; set "
                "layer_decay (at the top level or in a group) or remove gradual_unfreeze",
                path=("gradual_unfreeze",),
            )

    def layer_decay_of(self, group: GroupSpec | None) -> float | None:
        """The layer decay a group (None: the ``default`` group) gets: its own, else the spec's."""
        if group is None or group.layer_decay is None:
            return self.layer_decay
        return group.layer_decay

    def unfreeze_every_of(self, group: GroupSpec | None) -> ScheduleAmount | PlateauTrigger | None:
        """The gradual-unfreezing interval of a group (None: the ``default`` group), or None when it has none."""
        if group is not None and group.gradual_unfreeze is not None:
            return group.gradual_unfreeze if isinstance(group.gradual_unfreeze, START_TYPES) else None
        if group is not None and group.is_frozen:
            return None
        if self.layer_decay_of(group) is None or not isinstance(self.gradual_unfreeze, START_TYPES):
            return None
        return self.gradual_unfreeze

    @property
    def has_group_schedules(self) -> bool:
        """Whether any group starts later or has its own warm-up or shape (so the scheduler is per group)."""
        return self.gradual_unfreeze is not None or any(group.schedule_keys for group in self.groups)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain dict that `parse_spec` reads back to an equal spec."""
        result: dict[str, Any] = {"groups": [group.to_dict() for group in self.groups]}
        if self.layer_decay is not None:
            result["layer_decay"] = self.layer_decay
        if self.layer_stacks is not None:
            result["layer_stacks"] = self.layer_stacks
        if self.unmatched != "default":
            result["unmatched"] = self.unmatched
        if isinstance(self.gradual_unfreeze, START_TYPES):
            result["gradual_unfreeze"] = {"every": self.gradual_unfreeze.to_spec()}
        if self.no_weight_decay:
            result["no_weight_decay"] = list(self.no_weight_decay)
        if isinstance(self.muon, MuonSettings):
            result["muon"] = self.muon.to_data() or True
        return result


def _pattern_count(raw: Any) -> int:
    """How many patterns a group (a mapping or a `GroupSpec`) gives, without validating them."""
    match = raw.get("match") if isinstance(raw, Mapping) else getattr(raw, "match", None)
    return len(match) if isinstance(match, (list, tuple)) else 1


def _row_item_count(raw: Any) -> int:
    """How many items a group's explicit ``rows`` list gives, without reading them."""
    rows = raw.get("rows") if isinstance(raw, Mapping) else None
    return len(rows) if isinstance(rows, (list, tuple)) else 0


def _check_row_item_count(items: int, own_items: int) -> None:
    if items > MAX_ROW_ITEMS:
        counted = f"{items:,} items" if items == own_items else f"{items:,} items with the groups before it"
        raise SpecError(
            f"{counted}, more than the {MAX_ROW_ITEMS:,} allowed (MAX_ROW_ITEMS); write contiguous rows as one "
            "[start, stop] range",
            path=("rows",),
        )


def _group_from(raw: Any, index: int) -> GroupSpec:
    """A `GroupSpec` from one item of `groups`; errors are located inside the group."""
    if isinstance(raw, GroupSpec):
        return raw
    if not isinstance(raw, Mapping):
        raise SpecError(f"expected a group mapping, got {describe_value(raw)}")
    return _group_from_mapping(raw)


def _group_from_mapping(raw: Mapping[Any, Any]) -> GroupSpec:
    name = raw.get("name")
    group = name if isinstance(name, str) else None
    for key in raw:
        if not isinstance(key, str):
            raise SpecError(f"keys must be strings, got {describe_value(key)}", group=group)
    for required in ("name", "match"):
        if required not in raw:
            close = difflib.get_close_matches(required, [key for key in raw if key not in GROUP_KEYS], n=1)
            hint = f"; is {close[0]!r} a misspelling of it?" if close else ""
            raise SpecError(f"missing required key {required!r}{hint}", group=group)
    known = {key: raw[key] for key in GROUP_KEYS if key in raw}
    options = {key: value for key, value in raw.items() if key not in GROUP_KEYS}
    return GroupSpec(**known, options=options)


def _spec_from_mapping(raw: Mapping[Any, Any]) -> LayerwiseSpec:
    for key in raw:
        if not isinstance(key, str):
            raise SpecError(f"top-level keys must be strings, got {describe_value(key)}")
        if key not in TOP_LEVEL_KEYS:
            hint = did_you_mean(key, TOP_LEVEL_KEYS) or "."
            if hint == "." and key in GROUP_KEYS:
                hint = f"; {key!r} belongs inside a group of 'groups'."
            raise SpecError(f"unknown top-level key {key!r}{hint} Expected one of: {', '.join(TOP_LEVEL_KEYS)}")
    groups = raw.get("groups", ())
    if groups is None:
        groups = ()
    if not isinstance(groups, (list, tuple)):
        raise SpecError(f"expected a list of groups, got {describe_value(groups)}", path=("groups",))
    return LayerwiseSpec(
        groups=groups,
        layer_decay=raw.get("layer_decay"),
        layer_stacks=raw.get("layer_stacks"),
        unmatched=raw.get("unmatched", "default"),
        gradual_unfreeze=raw.get("gradual_unfreeze"),
        no_weight_decay=raw.get("no_weight_decay", ()),
        muon=raw.get("muon"),
    )


SpecSource = LayerwiseSpec | Sequence[Any] | Mapping[str, Any] | str | os.PathLike[str]


def parse_spec(source: SpecSource) -> LayerwiseSpec:
    """Turn any accepted form of a spec into a `LayerwiseSpec`.

    Args:
        source: A `LayerwiseSpec`; a list of group dicts or `GroupSpec` objects; a
            dict ``{"groups": [...], "layer_decay": ..., "unmatched": ...}``; a path (``str`` or
            ``os.PathLike``) to a ``.yaml``/``.yml``/``.json`` file holding either; or a JSON string
            (text starting with ``[`` or ``{``).

    Returns:
        The validated, frozen spec.

    Raises:
        SpecError: Anything wrong with the spec, located (``groups[1].lr``) and explained; a spec over
            one of the limits (`MAX_SPEC_BYTES`, `MAX_GROUPS`, `MAX_PATTERNS`, `MAX_WILDCARD_PATTERNS`,
            and `MAX_YAML_NODES` for YAML), checked before the text is parsed where possible.

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
    if isinstance(source, str) and not _is_json_text(source) and not _has_document_suffix(source):
        raise SpecError(
            "expected a path to a .yaml, .yml or .json file, or a JSON string starting with '[' or '{', "
            f"got {describe_value(source)}"
        )
    if isinstance(source, (str, os.PathLike)):
        label = "param_groups JSON string" if _is_json_text(source) else os.fspath(source)
        try:
            return _spec_from_data(_read_spec_text_or_file(source))
        except SpecError as error:
            raise error.within(source=label) from None
    return _spec_from_data(source)


def read_spec_file(path: str | os.PathLike[str]) -> Any:
    """The data a ``.yaml``/``.yml``/``.json`` spec file holds, read once, for a caller that decides what it is.

    `layerwise-trainer plan --spec` takes a spec or a run config: it reads the file with this function, then
    parses the spec (`parse_spec` on the data) or the run config, so the file is read and the spec parsed
    once.

    Args:
        path: The file.

    Returns:
        The plain data (a list or a mapping, usually).

    Raises:
        SpecError: The file is missing, unreadable, over `MAX_SPEC_BYTES`, or not valid YAML/JSON; the
            message starts with the path.
    """
    try:
        return _read_spec_text_or_file(path)
    except SpecError as error:
        raise error.within(source=os.fspath(path)) from None


def _is_json_text(source: str | os.PathLike[str]) -> bool:
    return isinstance(source, str) and source.lstrip()[:1] in ("[", "{")


def _has_document_suffix(path: str) -> bool:
    return path.lower().endswith(YAML_SUFFIXES + JSON_SUFFIXES)


def _spec_from_data(source: Any) -> LayerwiseSpec:
    if isinstance(source, Mapping):
        return _spec_from_mapping(source)
    if isinstance(source, (list, tuple)):
        return LayerwiseSpec(groups=source)
    raise SpecError(
        "expected a spec: a list of groups, a mapping with 'groups', a path to a YAML/JSON file, "
        f"a JSON string or a LayerwiseSpec, got {describe_value(source)}"
    )


def _read_spec_text_or_file(source: str | os.PathLike[str]) -> Any:
    try:
        if _is_json_text(source):
            size = len(source.encode("utf-8"))
            if size > MAX_SPEC_BYTES:
                raise SpecError(_too_large(size))
            return parse_json(source, "param_groups JSON string")
        return load_document(source, MAX_SPEC_BYTES)  # a regular file; at most MAX_SPEC_BYTES + 1 bytes are read
    except DocumentTooLargeError as error:
        raise SpecError(_too_large(error.size)) from None
    except DocumentError as error:
        raise SpecError(error.detail) from None


def _too_large(size: int | None) -> str:
    if size is None:  # a file whose stat size is 0 (/proc) that holds more
        return f"the spec holds more than the {MAX_SPEC_BYTES:,} bytes allowed (MAX_SPEC_BYTES)"
    return f"the spec is {size:,} bytes, more than the {MAX_SPEC_BYTES:,} allowed (MAX_SPEC_BYTES)"
