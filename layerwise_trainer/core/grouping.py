"""Resolving a spec against a model: which parameter goes to which optimizer param group.

`resolve_groups` is the pure core: it reads the model's parameter names and ``requires_grad``
flags and returns a `GroupPlan`, changing neither the model nor the spec.
`build_param_groups` turns a plan into the list of dicts a torch optimizer takes, for custom
training loops; `LayerwiseTrainer` wires the same functions into
``create_optimizer``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from ..errors import SpecError, did_you_mean, some_names
from .gc_pause import gc_paused
from .group_schedule import GroupTiming, ScheduleAmount
from .layer_ids import LayerMap, detect_layers
from .muon import ADAMW, MUON, OPTIMIZER_KEY, TRAINER, muon_takes
from .name_patterns import (
    MATCH_TIMEOUT_SECONDS,
    FirstMatch,
    NamePattern,
    PatternTimeout,
    compile_pattern,
)
from .optimizer_options import validate_group_options
from .parameter_names import (
    ModelWalk,
    ParameterTable,
    named_parameters_of,
    unwrap_data_parallel,
    user_facing_names,
    user_model,
    walk_model,
    whole_numel,
    whole_numel_of_all,
    whole_shape,
)
from .row_groups import OriginalVocabulary, RowAssignment, RowMatrix, RowRanges, assign_rows, row_entry_name
from .spec import DEFAULT_GROUP_NAME, GroupSpec, LayerwiseSpec, SpecSource, parse_spec
from .weight_decay import STOCK_DECAY_RULE

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

_EMPTY_OPTIONS: Mapping[str, Any] = MappingProxyType({})
_UNMATCHED_SHOWN = 10


@dataclass(frozen=True)
class PlannedGroup:
    """One optimizer param group of a plan, or one frozen group of the spec.

    Args:
        name: The name it is logged under: the spec group's name, or ``<name>/layer_<id>`` for a
            sub-group of a layer-decayed group (``<name>/<stack>/layer_<id>`` when the group decays several
            stacks separately). The decay and no-decay halves share it.
        source: The spec group it comes from (``default`` for parameters no group matched).
        parameter_names: Its parameters, in the model's order.
        num_elements: The number of scalars in them.
        lr: The learning rate (0 for a frozen group).
        weight_decay: The weight decay (0 for biases and norms).
        frozen: Whether the parameters are frozen and kept out of the optimizer.
        layer_id: The layer id of a layer-decayed sub-group, else None.
        stack: The short name of the stack its layer id counts within (``decoder``, ``vision_tower``), for a
            sub-group decayed within one stack of a model with several; else None.
        no_decay: Whether this is the half of biases and norms, whose weight decay is always 0.
        options: Further optimizer hyperparameters from the spec.
        timing: When the group starts and how its rate moves, for a group with per-group schedule keys;
            None for a group that follows the Trainer's schedule.
        spec_index: Its spec group's place in ``groups``; None for the ``default`` group.
        unfreezes_by_own_key: Whether its gradual unfreezing comes from the group's own ``gradual_unfreeze``
            (else from the spec's top-level key).
        optimizer: The algorithm that steps it (``muon``, ``adamw`` or ``trainer``) when the spec chooses
            optimizers; None when ``TrainingArguments.optim``'s optimizer alone trains every group.
        optimizer_by_own_key: Whether that choice is the group's own ``optimizer`` (else the top-level ``muon``).
        rows: For parameters the group holds only some rows of (a group with ``rows``, or the rest of a matrix a
            row group takes rows of): parameter name -> its rows, sorted, disjoint, half-open ranges. Empty when
            the group holds whole parameters only.
    """

    name: str
    source: str
    parameter_names: tuple[str, ...]
    num_elements: int
    lr: float
    weight_decay: float
    frozen: bool
    layer_id: int | None = None
    no_decay: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    timing: GroupTiming | None = None
    stack: str | None = None
    spec_index: int | None = None
    unfreezes_by_own_key: bool = False
    optimizer: str | None = None
    optimizer_by_own_key: bool = False
    rows: Mapping[str, RowRanges] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "rows", MappingProxyType(dict(self.rows)))

    def entries(self) -> tuple[tuple[str, str, tuple[int, int] | None], ...]:
        """The tensors the optimizer holds for this group, in order: ``(entry name, parameter name, rows)``.

        A whole parameter is one entry named as the parameter, with rows None; a parameter the group holds some
        rows of is one entry per range, named ``name[start:stop]`` (the name checkpoint layouts record).
        """
        entries: list[tuple[str, str, tuple[int, int] | None]] = []
        for name in self.parameter_names:
            ranges = self.rows.get(name)
            if ranges is None:
                entries.append((name, name, None))
            else:
                entries += [(row_entry_name(name, start, stop), name, (start, stop)) for start, stop in ranges]
        return tuple(entries)

    @property
    def num_rows(self) -> int | None:
        """How many rows of matrices the group holds in part (None when it holds whole parameters only)."""
        if not self.rows:
            return None
        return sum(stop - start for ranges in self.rows.values() for start, stop in ranges)

    def spec_path(self, key: str) -> tuple[str, ...]:
        """Where ``key`` of this group sits in the spec, for errors: ``("groups[2]", "start")``.

        The ``default`` group's timing, and gradual unfreezing the group does not set itself, come from the
        spec's top-level ``gradual_unfreeze``; an optimizer the group does not choose itself, from ``muon``.
        """
        if key == "optimizer" and (self.spec_index is None or not self.optimizer_by_own_key):
            return ("muon",)
        top_level = key == "gradual_unfreeze" and not self.unfreezes_by_own_key
        if self.spec_index is None or top_level:
            return ("gradual_unfreeze",)
        return (f"groups[{self.spec_index}]", key)


@dataclass(frozen=True)
class GroupPlan:
    """The outcome of resolving a spec against a model.

    Args:
        groups: Trainable groups (one per optimizer param group) and frozen groups, in spec order.
        frozen_before_training: Parameters the user had already frozen, which stay out of the
            optimizer and belong to no frozen group.
        parameters: Parameter name -> tensor, for every parameter of the model, in model order.
        layers: The model's layer ids, when resolving needed them (detected on demand otherwise).
    """

    groups: tuple[PlannedGroup, ...]
    frozen_before_training: tuple[str, ...]
    parameters: Mapping[str, nn.Parameter] = field(repr=False, compare=False)
    layers: LayerMap | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def num_layers(self) -> int:
        """The number of transformer blocks detected in the model."""
        return (self.layers or detect_layers(self.parameters)).num_layers

    @functools.cached_property
    def group_parameters(self) -> tuple[tuple[nn.Parameter, ...], ...]:
        """Each group's parameter objects, in the order of ``groups`` and of their ``parameter_names``."""
        return tuple(tuple(map(self.parameters.__getitem__, group.parameter_names)) for group in self.groups)

    @property
    def trainable_groups(self) -> tuple[PlannedGroup, ...]:
        """The groups that become optimizer param groups."""
        return tuple(group for group in self.groups if not group.frozen)

    @property
    def frozen_groups(self) -> tuple[PlannedGroup, ...]:
        """The groups whose parameters are frozen."""
        return tuple(group for group in self.groups if group.frozen)

    @property
    def group_names(self) -> tuple[str, ...]:
        """Every group name once (decay and no-decay halves share one), in plan order."""
        return tuple(dict.fromkeys(group.name for group in self.groups))

    @property
    def has_group_schedules(self) -> bool:
        """Whether a trainable group starts later or has its own warm-up or shape."""
        return any(group.timing is not None for group in self.trainable_groups)

    @property
    def frozen_group_names(self) -> tuple[str, ...]:
        """The names of the frozen groups."""
        return tuple(dict.fromkeys(group.name for group in self.frozen_groups))

    @property
    def chooses_optimizers(self) -> bool:
        """Whether its groups name the algorithm that steps them (a `HybridOptimizer` takes them)."""
        return any(group.optimizer is not None for group in self.trainable_groups)

    @property
    def row_parameter_names(self) -> tuple[str, ...]:
        """The parameters the optimizer holds as views of some of their rows (see `row_views`)."""
        return tuple(dict.fromkeys(name for group in self.trainable_groups for name in group.rows))

    def row_views(self) -> dict[str, torch.Tensor]:
        """One tensor per range of rows the trainable groups hold: entry name -> ``weight.detach()[start:stop]``.

        Each is a leaf that shares the weight's memory, so an optimizer's in-place step on it changes those rows
        of the weight and nothing else, and its state has the rows' shape. Its gradient must be set to the same
        rows of the weight's gradient after every backward: `LayerwiseTrainer` does that.
        """
        views: dict[str, torch.Tensor] = {}
        for group in self.trainable_groups:
            if not group.rows:  # whole parameters only: no entry to list
                continue
            for entry, name, rows in group.entries():
                if rows is not None:
                    views[entry] = self.parameters[name].detach()[rows[0] : rows[1]].requires_grad_(True)
        return views

    def optimizer_param_groups(self, views: Mapping[str, torch.Tensor] | None = None) -> list[dict[str, Any]]:
        """The torch param-group dicts, each with ``params``, ``name``, ``lr`` and ``weight_decay`` (and
        ``optimizer`` when the spec chooses optimizers).

        Args:
            views: The row views (`row_views`) to put in the groups for the parameters they hold some rows of;
                new views when None.
        """
        if views is None and self.row_parameter_names:
            views = self.row_views()
        return [
            {
                "params": _optimizer_params(group, parameters, views),
                "name": group.name,
                "lr": group.lr,
                "weight_decay": group.weight_decay,
                **group.options,
                **({OPTIMIZER_KEY: group.optimizer} if group.optimizer is not None else {}),
            }
            for group, parameters in zip(self.groups, self.group_parameters, strict=True)
            if not group.frozen
        ]

    def freeze_frozen_groups(self) -> int:
        """Set ``requires_grad=False`` on the parameters of the frozen groups.

        Returns:
            How many tensors were frozen by this call.
        """
        return len(self.freeze_and_list_frozen())

    def freeze_and_list_frozen(self) -> list[nn.Parameter]:
        """`freeze_frozen_groups`, returning the parameters this call froze (for callers that undo it)."""
        in_frozen_groups: Iterable[nn.Parameter] = chain.from_iterable(
            compress(self.group_parameters, map(_is_frozen, self.groups))
        )
        if any(group.rows for group in self.groups):  # a frozen group may hold some rows of a matrix another trains
            trained = {
                id(parameter)
                for group, parameters in zip(self.groups, self.group_parameters, strict=True)
                if not group.frozen
                for parameter in parameters
            }
            distinct = {id(parameter): parameter for parameter in in_frozen_groups}.values()
            in_frozen_groups = [parameter for parameter in distinct if id(parameter) not in trained]
        # Without rows every tensor is in one group, so none of these trains.
        newly_frozen = list(filter(_requires_grad, in_frozen_groups))
        for parameter in newly_frozen:
            parameter.requires_grad_(False)
        return newly_frozen


def _optimizer_params(
    group: PlannedGroup, parameters: Sequence[nn.Parameter], views: Mapping[str, torch.Tensor] | None
) -> list[torch.Tensor]:
    """The tensors the optimizer holds for ``group``: its parameters, a row view for each range of rows it holds."""
    if not group.rows:
        return list(parameters)
    assert views is not None  # `optimizer_param_groups` builds them when any group holds rows
    by_name = dict(zip(group.parameter_names, parameters, strict=True))
    return [by_name[name] if rows is None else views[entry] for entry, name, rows in group.entries()]


class _Tensor(NamedTuple):
    """One parameter tensor: its name, its other names (a tied weight has several), whether it trains and
    whether weight decay applies to it."""

    name: str
    other_names: tuple[str, ...]
    parameter: nn.Parameter
    trains: bool
    decays: bool

    @property
    def aliases(self) -> tuple[str, ...]:
        """Every name of the tensor, its own first."""
        return (self.name, *self.other_names)


# `_Tensor(*fields)` runs a Python `__new__` per tensor; `tuple.__new__` mapped over zipped columns builds
# the same tuples in C: at 50,000 tensors 21 ms against 30 ms (2 cores).
_new_tensor = functools.partial(tuple.__new__, _Tensor)
_name_of = operator.itemgetter(0)
_other_names_of = operator.itemgetter(1)
_parameter_of = operator.itemgetter(2)
_trains = operator.itemgetter(3)
_decays = operator.itemgetter(4)
_requires_grad = operator.attrgetter("requires_grad")
_is_frozen = operator.attrgetter("frozen")
_stack_of_block = operator.itemgetter(0)  # of a `LayerMap.blocks` value


def _without_data_parallel_prefix(name: str) -> str:
    while name.startswith("module."):
        name = name[len("module.") :]
    return name


def _wrapper_segments_can_go(names: Sequence[str], parameters: Sequence[nn.Parameter]) -> bool:
    """Whether every name stays unique to its tensor once wrapper segments are removed."""
    owner: dict[str, int] = {}
    for name, parameter in zip(names, parameters, strict=True):
        if owner.setdefault(name, id(parameter)) != id(parameter):
            logger.warning("parameter names collide without their wrapper segments; matching the full names")
            return False
    return True


def _matched_names(raw_names: list[str], parameters: list[nn.Parameter]) -> list[str]:
    """The names patterns are matched against: the user-facing ones, unless two tensors would share one.

    ``raw_names`` itself when no name has a wrapper segment.

    Raises:
        SpecError: A flattened FSDP1 parameter, which no spec can split.
    """
    names = user_facing_names(raw_names)
    if names is not raw_names and not _wrapper_segments_can_go(names, parameters):
        names = raw_names
    if "flat_param" in "\n".join(names):  # one search over all the names, a loop only when it is there
        for name, raw_name in zip(names, raw_names, strict=True):
            if name.endswith("flat_param") or "._flat_param" in name or ".flat_param" in name:
                raise SpecError(
                    f"parameter {raw_name!r} is a flattened FSDP parameter; a spec needs the original "
                    "parameters: set fsdp_config 'use_orig_params': true (or use FSDP2)"
                )
    return names


def _collect_tensors(names: list[str], parameters: list[nn.Parameter], decays: Iterable[bool]) -> list[_Tensor]:
    """Every distinct tensor once, in model order, under its first name (``decays``: one flag per name)."""
    trains = map(_requires_grad, parameters)
    if len(set(map(id, parameters))) == len(parameters):  # no tied weights: one name each
        return list(map(_new_tensor, zip(names, repeat(()), parameters, trains, decays, strict=False)))
    by_identity: dict[int, tuple[str, list[str], nn.Parameter, bool, bool]] = {}
    for name, parameter, grad, decay in zip(names, parameters, trains, decays, strict=True):
        known = by_identity.get(id(parameter))
        if known is None:
            by_identity[id(parameter)] = (name, [], parameter, grad, decay)
        else:
            known[1].append(name)
    return [
        _Tensor(name, tuple(others), parameter, grad, decay)
        for name, others, parameter, grad, decay in by_identity.values()
    ]


def _decay_flags(
    names: list[str], walk: ModelWalk, decay_parameter_names: Iterable[str] | None, wrapped: bool
) -> Iterable[bool]:
    """Whether weight decay applies to each of ``names`` (before the spec's ``no_weight_decay``).

    Args:
        names: The matched names, in the walk's order or (under FSDP1) the wrapper's.
        walk: The walk, which decided the stock rule when ``decay_parameter_names`` is None.
        decay_parameter_names: The Trainer's decay names when its rule is not the stock one, else None.
        wrapped: Whether the model came wrapped in DDP (its names start with ``module.``).
    """
    if decay_parameter_names is None:
        assert walk.kept is not None  # walked with the stock rule
        if names is walk.names:  # the walk's own names: its flags, in order
            return walk.kept
        decay_parameter_names = compress(walk.names, walk.kept)
    elif wrapped:
        decay_parameter_names = [_without_data_parallel_prefix(name) for name in decay_parameter_names]
    decayed = set(user_facing_names(list(decay_parameter_names)))
    return [name in decayed for name in names]


def _name_shapes(names: Iterable[str]) -> list[str]:
    """Names with every numeric segment turned into ``*``, and their module prefixes: pattern hints."""
    shapes: dict[str, None] = {}
    for name in names:
        segments = ["*" if segment.isdigit() else segment for segment in name.split(".")]
        shapes[".".join(segments)] = None
        for end in range(1, len(segments)):
            shapes[".".join(segments[:end]) + ".*"] = None
    return list(shapes)


def _timeout_error(spec: LayerwiseSpec, group_index: int, pattern_index: int) -> SpecError:
    text = spec.groups[group_index].patterns[pattern_index]
    return SpecError(
        f"regular expression {text!r} took more than {MATCH_TIMEOUT_SECONDS:g} s to match one name; "
        "simplify it (nested repetition such as (a+)+ backtracks exponentially)",
        path=(f"groups[{group_index}]", "match", f"[{pattern_index}]"),
        group=spec.groups[group_index].name,
    )


def _first_matches(first_match: FirstMatch, tensors: Sequence[_Tensor]) -> list[int | None]:
    """The position of the first pattern that matches each tensor (any of its names), or None."""
    positions = first_match.first_of_each(list(map(_name_of, tensors)))
    if any(map(_other_names_of, tensors)):
        for index, tensor in enumerate(tensors):
            if tensor.other_names:  # a tied weight matches by any of its names
                positions[index] = first_match.index(tensor.aliases)
    return positions


def _assign(spec: LayerwiseSpec, tensors: Sequence[_Tensor], model_label: str) -> list[list[_Tensor]]:
    """Split ``tensors`` among the spec's groups, first match wins; the last list is the unmatched.

    A group with ``rows`` takes nothing from the others: its list holds every tensor its patterns match (the
    matrices it takes rows of), and those tensors still go to the first other group that matches them.
    """
    compiled = [
        (group_index, pattern_index, compile_pattern(pattern))
        for group_index, group in enumerate(spec.groups)
        for pattern_index, pattern in enumerate(group.patterns)
    ]
    claiming = [position for position, (index, _, _) in enumerate(compiled) if spec.groups[index].rows is None]
    first_match = FirstMatch([compiled[position][2] for position in claiming])
    try:
        positions = _first_matches(first_match, tensors)
    except PatternTimeout as timeout:
        group_index, pattern_index, _ = compiled[claiming[timeout.index]]
        raise _timeout_error(spec, group_index, pattern_index) from None
    if len(claiming) < len(compiled):  # row groups' patterns claim nothing: back to positions in `compiled`
        positions = [None if position is None else claiming[position] for position in positions]
    group_at: dict[int | None, int] = {position: group for position, (group, _, _) in enumerate(compiled)}
    group_at[None] = len(spec.groups)  # the unmatched
    members: list[list[_Tensor]] = [[] for _ in range(len(spec.groups) + 1)]
    for tensor, group_index in zip(tensors, map(group_at.__getitem__, positions), strict=True):
        members[group_index].append(tensor)
    used = set(positions)

    by_alias: dict[str, _Tensor] = {}
    for position, (group_index, pattern_index, pattern) in enumerate(compiled):
        if position in used:
            continue
        group = spec.groups[group_index]
        if pattern.is_exact:
            by_alias = by_alias or {alias: tensor for tensor in tensors for alias in tensor.aliases}
            hits = [by_alias[pattern.text]] if pattern.text in by_alias else []
        else:
            hits = _tensors_matching(pattern, tensors, spec, group_index, pattern_index)
        if not hits:
            text = group.patterns[pattern_index]
            hint = did_you_mean(text, _name_shapes(alias for tensor in tensors for alias in tensor.aliases))
            raise SpecError(
                f"pattern {text!r} matches no parameter of {model_label}{hint}",
                path=(f"groups[{group_index}]", "match", f"[{pattern_index}]"),
                group=group.name,
            )
        if group.rows is not None:
            known = {id(tensor) for tensor in members[group_index]}
            members[group_index] += [tensor for tensor in hits if id(tensor) not in known]
            continue
        if not members[group_index]:
            claimed = zip(tensors, positions, strict=True)
            claimed_by = {id(tensor): group_at[position] for tensor, position in claimed if position is not None}
            owners = sorted({spec.groups[claimed_by[id(tensor)]].name for tensor in hits})
            raise SpecError(
                f"every parameter it matches was taken by an earlier group ({', '.join(map(repr, owners))}); "
                "a parameter belongs to the first group that matches it, so put the narrower group first",
                path=(f"groups[{group_index}]",),
                group=group.name,
            )
    row_group_indexes = [index for index, group in enumerate(spec.groups) if group.rows is not None]
    if row_group_indexes:
        order = {id(tensor): index for index, tensor in enumerate(tensors)}
        for group_index in row_group_indexes:
            members[group_index].sort(key=lambda tensor: order[id(tensor)])
    return members


def _tensors_matching(
    pattern: NamePattern, tensors: Sequence[_Tensor], spec: LayerwiseSpec, group_index: int, pattern_index: int
) -> list[_Tensor]:
    alone = FirstMatch([pattern])
    try:
        positions = _first_matches(alone, tensors)
        return [tensor for tensor, position in zip(tensors, positions, strict=True) if position is not None]
    except PatternTimeout:
        raise _timeout_error(spec, group_index, pattern_index) from None


@dataclass(frozen=True)
class _Settings:
    """How one spec group (or the default group) is optimised, with its base values filled in."""

    name: str
    lr: float
    weight_decay: float
    frozen: bool
    layer_decay: float | None
    num_layers: int | None
    options: Mapping[str, Any]
    where: tuple[str, ...]
    timing: GroupTiming | None = None
    unfreeze_every: ScheduleAmount | None = None
    layer_stacks: str | None = None
    spec_index: int | None = None
    unfreezes_by_own_key: bool = False
    optimizer: str | None = None
    optimizer_by_own_key: bool = False
    muon: _MuonPart | None = None

    @classmethod
    def of_group(cls, group: GroupSpec, index: int, base_lr: float, base_wd: float, spec: LayerwiseSpec) -> _Settings:
        lr = group.learning_rate(base_lr)
        if group.lr_scale is not None and not group.is_frozen:
            _check_scaled_rate(lr, group.lr_scale, base_lr, where=(f"groups[{index}]", "lr_scale"), group=group.name)
        weight_decay = base_wd if group.weight_decay is None else group.weight_decay
        optimizer = None if group.is_frozen else spec.optimizer_of(group)
        return cls(
            name=group.name,
            lr=lr,
            weight_decay=weight_decay,
            frozen=group.is_frozen,
            layer_decay=spec.layer_decay_of(group),
            num_layers=group.num_layers,
            options=group.options,
            where=(f"groups[{index}]",),
            timing=_timing_of(group),
            unfreeze_every=spec.unfreeze_every_of(group),
            layer_stacks=spec.layer_stacks_of(group),
            spec_index=index,
            unfreezes_by_own_key=group.gradual_unfreeze is not None,
            optimizer=optimizer,
            optimizer_by_own_key=group.optimizer is not None,
            muon=_MuonPart.of(group, spec, lr, base_wd, (f"groups[{index}]",)) if optimizer == MUON else None,
        )

    def located(self, key: str) -> tuple[str, ...]:
        """Where ``key`` sits for this group: under the group, or under the top-level ``muon`` for Muon's keys."""
        if self.spec_index is None or (key in ("optimizer", "adamw_lr") and not self.optimizer_by_own_key):
            return ("muon",)
        return (*self.where, key)


@dataclass(frozen=True)
class _MuonPart:
    """How a group that Muon trains splits: Muon's hyperparameters, and the rate of what it does not take.

    Args:
        weight_decay: The Muon part's weight decay: the group's, else the top-level ``muon``'s, else the base.
        options: Muon's hyperparameters: the top-level ``muon``'s, overridden by the group's own keys.
        adamw_lr: The rate (before layer decay) of the parameters Muon does not take; None: the group's rate.
        adamw_rate_stated: Whether that rate is stated, or the group's rate is an AdamW rate (Moonlight's
            ``match_rms_adamw`` scaling).
    """

    weight_decay: float
    options: Mapping[str, Any]
    adamw_lr: float | None
    adamw_rate_stated: bool

    @classmethod
    def of(
        cls, group: GroupSpec | None, spec: LayerwiseSpec, lr: float, base_wd: float, where: tuple[str, ...] = ()
    ) -> _MuonPart:
        """The split of ``group`` (None: the ``default`` group) at rate ``lr``; ``where`` locates the group.

        Raises:
            SpecError: ``adamw_lr_scale`` times the group's rate overflows to infinity or underflows to 0.
        """
        top = spec.muon
        options = {**(top.options if top is not None else {}), **(group.options if group is not None else {})}
        own_wd = None if group is None else group.weight_decay
        top_wd = None if top is None else top.weight_decay
        weight_decay = own_wd if own_wd is not None else top_wd if top_wd is not None else base_wd
        own_scale = None if group is None else group.adamw_lr_scale
        scale = own_scale if own_scale is not None else (None if top is None else top.adamw_lr_scale)
        adamw_lr = group.adamw_lr if group is not None and group.adamw_lr is not None else None
        if adamw_lr is None and scale is not None:
            adamw_lr = lr * scale
            _check_scaled_rate(
                adamw_lr,
                scale,
                lr,
                where=(*where, "adamw_lr_scale") if own_scale is not None else ("muon", "adamw_lr_scale"),
                group=DEFAULT_GROUP_NAME if group is None else group.name,
            )
        stated = adamw_lr is not None or options.get("adjust_lr_fn") == "match_rms_adamw"
        return cls(weight_decay, MappingProxyType(options), adamw_lr, stated)


def _timing_of(group: GroupSpec) -> GroupTiming | None:
    """The group's own start, warm-up and shape; None when it follows the Trainer's schedule."""
    if group.start is None and group.warmup is None and group.schedule is None:
        return None
    return GroupTiming(
        start=group.start,  # type: ignore[arg-type]  # parsed to ScheduleAmount by GroupSpec
        warmup=group.warmup,  # type: ignore[arg-type]
        shape=group.schedule,
        min_lr_ratio=group.min_lr_ratio,
    )


_FREEZE_HINT = (
    "to freeze parameters, say so: freeze: true (a trainable group at rate 0 keeps optimizer state for "
    "parameters that never change)"
)


def _check_scaled_rate(lr: float, scale: float, base_lr: float, *, where: tuple[str, ...], group: str) -> None:
    """Refuse `lr_scale` x base rate when the product overflows to infinity or underflows to 0."""
    if not math.isfinite(lr):
        raise SpecError(
            f"the learning rate {scale:g} x {base_lr:g} is not a finite number; expected a rate a float can hold",
            path=where,
            group=group,
        )
    if lr == 0 and scale > 0 and base_lr > 0:
        raise SpecError(
            f"the learning rate {scale:g} x {base_lr:g} underflows to 0; {_FREEZE_HINT}", path=where, group=group
        )


@dataclass(frozen=True)
class _Part:
    """Tensors of one sub-group that one optimizer steps alike: before the split into decay and no-decay."""

    name: str
    tensors: Sequence[_Tensor]
    lr: float
    weight_decay: float
    options: Mapping[str, Any]
    optimizer: str | None


@dataclass(frozen=True)
class _Numbering:
    """Layer ids for some of a group's tensors, counted through the model's stacks or within one.

    Args:
        stack: The stack's short name when the ids count within it in a model of several stacks, else None.
        num_layers: ``L`` for the decay exponent ``L + 1 - id``.
        tensors: The tensors it numbers.
        ids: Their layer ids, in the same order.
        in_name: Whether sub-group names carry the stack (the group decays several stacks separately).
    """

    stack: str | None
    num_layers: int
    tensors: Sequence[_Tensor]
    ids: Sequence[int]
    in_name: bool = False


class _GroupBuilder:
    """Turns one group's matched tensors into planned groups: frozen, or split by layer and decay.

    ``row_groups``: each row group's name -> the rows it takes of each matrix; ``rest_rows``: each such matrix ->
    the rows left to the other groups. A row group trains its rows even of a matrix the user froze (it names them).
    """

    def __init__(
        self,
        never_decayed: set[str],
        tensors: Sequence[_Tensor],
        row_groups: Mapping[str, Mapping[str, RowRanges]] | None = None,
        rest_rows: Mapping[str, RowRanges] | None = None,
    ) -> None:
        self.never_decayed = never_decayed
        self._tensors = tensors
        # id(planned group) -> its parameters, for `GroupPlan.group_parameters`
        self.parameters_of: dict[int, tuple[nn.Parameter, ...]] = {}
        self.detected_layers: LayerMap | None = None
        self._row_groups = row_groups or {}
        self._rest_rows = rest_rows or {}

    def _rows_of(self, settings: _Settings) -> Mapping[str, RowRanges]:
        return self._row_groups.get(settings.name, self._rest_rows)

    @property
    def layers(self) -> LayerMap:
        """The model's layer ids, detected on first use: only layer-decayed groups need them."""
        if self.detected_layers is None:
            self.detected_layers = detect_layers(map(_name_of, self._tensors))
        return self.detected_layers

    def build(self, settings: _Settings, members: Sequence[_Tensor]) -> list[PlannedGroup]:
        if settings.name in self._row_groups:  # it names its rows, even of a matrix the user froze
            trainable = list(members)
        else:
            trainable = list(compress(members, map(_trains, members)))
        if settings.frozen or not trainable:
            if not settings.frozen:
                logger.warning(
                    "group %r: every parameter it matches was frozen before training; it stays frozen", settings.name
                )
            return [self._planned(settings.name, settings, members, 0.0, settings.weight_decay, frozen=True)]

        if settings.muon is not None:
            self._check_muon_split(settings, trainable)
        ratio = settings.layer_decay
        if ratio is None or (ratio == 1.0 and settings.unfreeze_every is None):
            return self._split(settings.name, settings, trainable, 1.0, None, settings.timing)

        planned = []
        for numbering in self._numberings(settings, trainable):
            planned += self._layer_groups(settings, numbering)
        return planned

    def _numberings(self, settings: _Settings, trainable: Sequence[_Tensor]) -> list[_Numbering]:
        """How the group's tensors are numbered: one numbering, or one per stack under separate decay."""
        layers = self.layers
        in_blocks = filter(None, map(layers.blocks.get, map(_name_of, trainable)))  # (stack, block id)
        stacks = list(dict.fromkeys(map(_stack_of_block, in_blocks)))
        mode = settings.layer_stacks or ("separate" if len(stacks) == 1 else "joined")
        if mode == "joined" or not stacks:
            num_layers = self._num_layers(settings, trainable)
            return [_Numbering(None, num_layers, trainable, layers.layer_ids_of(map(_name_of, trainable), num_layers))]
        if len(stacks) > 1 and settings.num_layers is not None:
            raise SpecError(
                f"num_layers sets the depth of one stack, and this group decays {len(stacks)} stacks separately "
                f"({', '.join(map(repr, stacks))}); split the group by stack, or drop num_layers",
                path=(*settings.where, "num_layers"),
                group=settings.name,
            )
        members: dict[str, list[_Tensor]] = {stack: [] for stack in stacks}
        if len(stacks) == 1:  # every tensor's home among one stack is that stack
            members[stacks[0]] = list(trainable)
        else:
            for tensor in trainable:
                members[layers.home_stack(tensor.name, stacks)].append(tensor)
        numberings = [self._numbering_within(settings, stack, members[stack]) for stack in stacks]
        if len(numberings) > 1:
            numberings = [dataclasses.replace(numbering, in_name=True) for numbering in numberings]
        return numberings

    def _numbering_within(self, settings: _Settings, stack: str, tensors: Sequence[_Tensor]) -> _Numbering:
        layers = self.layers
        depth = layers.stacks[stack]
        num_layers = depth if settings.num_layers is None else settings.num_layers
        ids = layers.layer_ids_in(stack, map(_name_of, tensors), num_layers)
        beyond = tensors if num_layers < depth else ()  # no block lies beyond num_layers >= depth
        for tensor in beyond:
            block = layers.blocks.get(tensor.name)
            if block is not None and block[1] > num_layers:
                raise SpecError(
                    f"parameter {tensor.name!r} is in block {block[1] - 1} of the stack {stack!r}, beyond "
                    f"num_layers={num_layers} (the stack has {depth} blocks)",
                    path=(*settings.where, "num_layers"),
                    group=settings.name,
                )
        label = self.labels[stack] if len(layers.stacks) > 1 else None
        return _Numbering(label, num_layers, tensors, ids)

    @functools.cached_property
    def labels(self) -> dict[str, str]:
        """The stacks' short names, for sub-group names and the plan's ``stack`` column."""
        return self.layers.stack_labels()

    def _layer_groups(self, settings: _Settings, numbering: _Numbering) -> list[PlannedGroup]:
        ratio = settings.layer_decay
        assert ratio is not None  # _numberings is only called for a layer-decayed group
        num_layers = numbering.num_layers
        by_layer: dict[int, list[_Tensor]] = {}
        for tensor, layer_id in zip(numbering.tensors, numbering.ids, strict=True):
            by_layer.setdefault(layer_id, []).append(tensor)
        planned = []
        top_down = sorted(by_layer, reverse=True)
        prefix = f"{settings.name}/{numbering.stack}" if numbering.in_name else settings.name
        for layer_id in sorted(by_layer):
            factor = ratio ** (num_layers + 1 - layer_id)
            lr = settings.lr * factor
            if lr == 0 and settings.lr > 0:
                raise SpecError(
                    f"the learning rate {settings.lr:g} x {ratio:g} ** {num_layers + 1 - layer_id} of layer {layer_id} "
                    f"underflows to 0; {_FREEZE_HINT}",
                    path=(*settings.where, "layer_decay"),
                    group=settings.name,
                )
            name = f"{prefix}/layer_{layer_id}"
            timing = settings.timing
            if settings.unfreeze_every is not None:
                rank = top_down.index(layer_id)
                timing = dataclasses.replace(
                    timing or GroupTiming(), unfreeze_every=settings.unfreeze_every, unfreeze_rank=rank
                )
            planned += self._split(name, settings, by_layer[layer_id], factor, layer_id, timing, numbering.stack)
        return planned

    def _num_layers(self, settings: _Settings, trainable: Sequence[_Tensor]) -> int:
        if settings.num_layers is None:
            if self.layers.num_layers == 0:
                raise SpecError(
                    "layer_decay needs transformer blocks, and none were found in the parameter names "
                    "(looked for '...layer.N.', '...layers.N.', '...h.N.', '...blocks.N.', '...block.N.'); "
                    "set 'num_layers', or drop layer_decay",
                    path=(*settings.where, "layer_decay"),
                    group=settings.name,
                )
            return self.layers.num_layers
        for tensor in trainable:
            block_id = self.layers.positions[tensor.name]  # negative for "after the last block"
            if block_id > settings.num_layers:
                raise SpecError(
                    f"parameter {tensor.name!r} is in block {block_id - 1}, beyond num_layers={settings.num_layers} "
                    f"(the model has {self.layers.num_layers} blocks)",
                    path=(*settings.where, "num_layers"),
                    group=settings.name,
                )
        return settings.num_layers

    def _muon_takes(self, tensor: _Tensor) -> bool:
        if tensor.name in self._rest_rows:  # some rows of a matrix: Muon orthogonalises whole matrices
            return False
        return muon_takes(tuple(tensor.parameter.shape), self.layers.stack_of(tensor.name) is not None)

    def _check_muon_split(self, settings: _Settings, trainable: Sequence[_Tensor]) -> None:
        """Refuse a group that names Muon and has nothing Muon takes, and an AdamW part whose rate is unstated."""
        assert settings.muon is not None
        taken = [tensor for tensor in trainable if self._muon_takes(tensor)]
        if not taken and settings.optimizer_by_own_key:
            raise SpecError(
                "Muon takes the 2-D weight matrices inside transformer blocks, and this group has none (its "
                f"{len(trainable)} trainable parameters are 1-D or outside the blocks, such as "
                f"{some_names([tensor.name for tensor in trainable], 2)}); choose optimizer: adamw for it",
                path=settings.located("optimizer"),
                group=settings.name,
            )
        if taken and len(taken) < len(trainable) and not settings.muon.adamw_rate_stated:
            rest = [tensor.name for tensor in trainable if not self._muon_takes(tensor)]
            path = settings.located("adamw_lr")
            keys = "the top-level muon's adamw_lr_scale" if path == ("muon",) else "adamw_lr or adamw_lr_scale"
            raise SpecError(
                f"AdamW trains what Muon does not take in this group ({some_names(rest, 2)}), and its rate is not "
                f"stated: under Muon's 'original' lr scaling the group's rate is no AdamW rate. Set {keys}, or "
                "adjust_lr_fn: match_rms_adamw (Moonlight's scaling, AdamW's rate carried over)",
                path=path,
                group=settings.name,
            )

    def _split(
        self,
        name: str,
        settings: _Settings,
        tensors: Sequence[_Tensor],
        factor: float,
        layer_id: int | None,
        timing: GroupTiming | None,
        stack: str | None = None,
    ) -> list[PlannedGroup]:
        """One (sub-)group's tensors by optimizer (Muon's matrices; the rest as ``<name>/adamw``), then by decay.

        ``factor`` is the layer-decay factor of the sub-group (1 without layer decay).
        """
        muon = settings.muon
        if muon is None:
            part = _Part(
                name, tensors, settings.lr * factor, settings.weight_decay, settings.options, settings.optimizer
            )
            return self._split_by_decay(part, settings, layer_id, timing, stack)
        taken = [tensor for tensor in tensors if self._muon_takes(tensor)]
        rest = [tensor for tensor in tensors if not self._muon_takes(tensor)]
        parts = []
        if taken:
            parts.append(_Part(name, taken, settings.lr * factor, muon.weight_decay, muon.options, MUON))
        if rest:
            rate = settings.lr if muon.adamw_lr is None else muon.adamw_lr
            parts.append(_Part(f"{name}/adamw" if taken else name, rest, rate * factor, settings.weight_decay,
                               _EMPTY_OPTIONS, ADAMW))  # fmt: skip
        return [group for part in parts for group in self._split_by_decay(part, settings, layer_id, timing, stack)]

    def _split_by_decay(
        self,
        part: _Part,
        settings: _Settings,
        layer_id: int | None,
        timing: GroupTiming | None,
        stack: str | None = None,
    ) -> list[PlannedGroup]:
        tensors, never = part.tensors, self.never_decayed
        decays = [tensor.decays and tensor.name not in never for tensor in tensors] if never else map(_decays, tensors)
        decays = list(decays)
        decay = list(compress(tensors, decays))
        no_decay = list(compress(tensors, map(operator.not_, decays)))
        common = dict(layer_id=layer_id, timing=timing, stack=stack, options=part.options, optimizer=part.optimizer)
        planned = []
        if decay:
            planned.append(self._planned(part.name, settings, decay, part.lr, part.weight_decay, **common))
        if no_decay:
            planned.append(self._planned(part.name, settings, no_decay, part.lr, 0.0, no_decay=True, **common))
        return planned

    def _planned(
        self,
        name: str,
        settings: _Settings,
        tensors: Sequence[_Tensor],
        lr: float,
        weight_decay: float,
        *,
        frozen: bool = False,
        layer_id: int | None = None,
        no_decay: bool = False,
        timing: GroupTiming | None = None,
        stack: str | None = None,
        options: Mapping[str, Any] | None = None,
        optimizer: str | None = None,
    ) -> PlannedGroup:
        own = self._rows_of(settings)
        rows = {tensor.name: own[tensor.name] for tensor in tensors if tensor.name in own} if own else {}
        names = tuple(map(_name_of, tensors))
        parameters = tuple(map(_parameter_of, tensors))
        if rows:
            num_elements = sum(map(_num_elements, parameters, map(rows.get, names)))
        else:
            num_elements = whole_numel_of_all(parameters)
        group = PlannedGroup(
            name=name,
            source=settings.name,
            parameter_names=names,
            num_elements=num_elements,
            lr=lr,
            weight_decay=weight_decay,
            frozen=frozen,
            layer_id=layer_id,
            no_decay=no_decay,
            options=settings.options if options is None else options,
            timing=timing,
            stack=stack,
            spec_index=settings.spec_index,
            unfreezes_by_own_key=settings.unfreezes_by_own_key,
            optimizer=optimizer,
            optimizer_by_own_key=settings.optimizer_by_own_key,
            rows=rows,
        )
        self.parameters_of[id(group)] = parameters
        return group


def _num_elements(parameter: nn.Parameter, rows: RowRanges | None) -> int:
    """The scalars of a parameter, or of some of its rows."""
    numel = whole_numel(parameter)
    if rows is None:
        return numel
    row_size = numel // max(1, whole_shape(parameter)[0])
    return sum(stop - start for start, stop in rows) * row_size


def _never_decayed(spec: LayerwiseSpec, tensors: Sequence[_Tensor], model_label: str) -> set[str]:
    """The names the spec's top-level ``no_weight_decay`` patterns match (any alias of a tensor).

    One pass of all patterns over the names, as for ``match``; only a pattern no name took first is tried
    alone, to tell a pattern that matches nothing from one whose names an earlier pattern took.
    """
    if not spec.no_weight_decay:
        return set()
    patterns = [compile_pattern(text) for text in spec.no_weight_decay]
    first_match = FirstMatch(patterns)
    alone_index: int | None = None  # the pattern tried alone, when one is
    try:
        positions = _first_matches(first_match, tensors)
        matched = {tensor.name for tensor, position in zip(tensors, positions, strict=True) if position is not None}
        used = set(positions)
        aliases = {*map(_name_of, tensors), *chain.from_iterable(map(_other_names_of, tensors))}
        for index, pattern in enumerate(patterns):
            if index in used or (pattern.is_exact and pattern.text in aliases):
                continue
            alone, alone_index = FirstMatch([pattern]), index
            if not pattern.is_exact and any(position is not None for position in _first_matches(alone, tensors)):
                continue
            text = spec.no_weight_decay[index]
            hint = did_you_mean(text, _name_shapes(aliases))
            raise SpecError(
                f"pattern {text!r} matches no parameter of {model_label}{hint}", path=("no_weight_decay", f"[{index}]")
            )
    except PatternTimeout as timeout:
        index = timeout.index if alone_index is None else alone_index
        raise SpecError(
            f"regular expression {spec.no_weight_decay[index]!r} took more than {MATCH_TIMEOUT_SECONDS:g} s to "
            "match one name; simplify it (nested repetition such as (a+)+ backtracks exponentially)",
            path=("no_weight_decay", f"[{index}]"),
        ) from None
    return matched


def _assign_rows(
    spec: LayerwiseSpec, members: list[list[_Tensor]], original: OriginalVocabulary | None
) -> RowAssignment:
    """Resolve the row groups' rows; a matrix whose every row they take leaves the other groups' lists.

    Raises:
        SpecError: See `assign_rows`; and a group whose every matrix row groups take whole.
    """
    matched = {
        index: [RowMatrix(tensor.name, tuple(tensor.aliases), tuple(whole_shape(tensor.parameter)))
                for tensor in members[index]]
        for index, group in enumerate(spec.groups)
        if group.rows is not None
    }  # fmt: skip
    if not matched:
        return RowAssignment({}, {})
    rows = assign_rows(spec.groups, matched, original)
    taken_whole = {name for name, rest in rows.rest.items() if not rest}
    for index, tensors in enumerate(members):
        if index < len(spec.groups) and spec.groups[index].rows is not None:
            continue
        kept = [tensor for tensor in tensors if tensor.name not in taken_whole]
        if tensors and not kept and index < len(spec.groups):
            raise SpecError(
                f"row groups take every row of the matrices it matches ({some_names([t.name for t in tensors])}), "
                "so nothing is left to it; narrow the row groups' rows or remove this group",
                path=(f"groups[{index}]",),
                group=spec.groups[index].name,
            )
        members[index] = kept
    return rows


@gc_paused()
def resolve_groups(
    model: nn.Module,
    spec: SpecSource,
    *,
    learning_rate: float,
    weight_decay: float,
    decay_parameter_names: Iterable[str] | None = None,
    optimizer_cls: type[torch.optim.Optimizer] | None = None,
    optimizer_kwargs: Mapping[str, Any] | None = None,
    optimizer_label: str | None = None,
    original_vocabulary: OriginalVocabulary | None = None,
) -> GroupPlan:
    """Resolve ``spec`` against ``model`` without changing either.

    Args:
        model: The model, possibly wrapped (DDP, FSDP with original parameters, ``torch.compile``).
        spec: The spec, in any form `parse_spec` accepts.
        learning_rate: The base learning rate (``TrainingArguments.learning_rate``).
        weight_decay: The base weight decay (``TrainingArguments.weight_decay``).
        decay_parameter_names: Names of the parameters that may get weight decay (the Trainer's
            ``get_decay_parameter_names``); by default the stock Trainer's rule.
        optimizer_cls: The optimizer the groups are for; when given, every group's extra
            hyperparameters are checked against it.
        optimizer_kwargs: The keyword arguments the optimizer will be built with.
        optimizer_label: The optimizer's name in errors; the class name by default.
        original_vocabulary: The model's vocabulary before tokens were added, for groups with ``rows: new``
            (`LayerwiseTrainer` reads it from the config of the checkpoint the model was loaded from).

    Returns:
        The `GroupPlan`.

    Raises:
        SpecError: A pattern that matches no parameter, a group emptied by earlier groups, unmatched
            parameters under ``unmatched: error``, layer decay without blocks, a hyperparameter the
            optimizer does not take, or no trainable parameter left.
    """
    spec = parse_spec(spec)
    model_label = type(user_model(model)).__name__
    unwrapped = unwrap_data_parallel(model)
    walk = walk_model(unwrapped, STOCK_DECAY_RULE if decay_parameter_names is None else None)
    raw_names, parameters = named_parameters_of(unwrapped, walk)
    names = _matched_names(raw_names, parameters)
    decays = _decay_flags(names, walk, decay_parameter_names, wrapped=unwrapped is not model)
    tensors = _collect_tensors(names, parameters, decays)
    if optimizer_cls is not None:
        device = tensors[0].parameter.device if tensors else None
        label = optimizer_label or optimizer_cls.__name__
        validate_group_options(spec, optimizer_cls, optimizer_kwargs or {}, label, device)
    members = _assign(spec, tensors, model_label)
    rows = _assign_rows(spec, members, original_vocabulary)
    row_groups = {spec.groups[index].name: taken for index, taken in rows.taken.items()}
    builder = _GroupBuilder(_never_decayed(spec, tensors, model_label), tensors, row_groups, rows.rest)

    planned: list[PlannedGroup] = []
    for index, group in enumerate(spec.groups):
        settings = _Settings.of_group(group, index, learning_rate, weight_decay, spec)
        planned += builder.build(settings, members[index])

    unmatched_trainable = list(compress(members[-1], map(_trains, members[-1])))
    if unmatched_trainable and spec.unmatched == "error":
        shown = some_names([tensor.name for tensor in unmatched_trainable], _UNMATCHED_SHOWN)
        raise SpecError(
            f"{len(unmatched_trainable)} trainable parameters match no group: {shown}; "
            "add a group for them, or set unmatched: default",
            path=("unmatched",),
        )
    if unmatched_trainable:
        default = _Settings(
            name=DEFAULT_GROUP_NAME,
            lr=learning_rate,
            weight_decay=weight_decay,
            frozen=False,
            layer_decay=spec.layer_decay,
            num_layers=None,
            options=_EMPTY_OPTIONS,
            where=(),
            unfreeze_every=spec.unfreeze_every_of(None),
            layer_stacks=spec.layer_stacks_of(None),
            optimizer=spec.optimizer_of(None),
            muon=_MuonPart.of(None, spec, learning_rate, weight_decay) if spec.optimizer_of(None) == MUON else None,
        )
        planned += builder.build(default, unmatched_trainable)

    if all(group.frozen for group in planned):
        raise SpecError("no parameter is left to train: every group is frozen or matches only frozen parameters")
    group_parameters = tuple(builder.parameters_of[id(group)] for group in planned)  # in the order of planned
    if any(group.optimizer is not None for group in planned):  # every trainable group names its algorithm
        planned = [
            dataclasses.replace(group, optimizer=TRAINER) if group.optimizer is None and not group.frozen else group
            for group in planned
        ]

    plan = GroupPlan(
        groups=tuple(planned),
        frozen_before_training=_frozen_before_training(tensors, planned),
        layers=builder.detected_layers,
        parameters=_parameter_table(names, parameters, tensors),
    )
    # Resolving holds each group's tensors: filling the cache here spares looking every name up again (at
    # 50,000 tensors 3-9 ms, 2 cores) when the optimizer is built.
    plan.__dict__["group_parameters"] = group_parameters
    return plan


def _parameter_table(names: list[str], parameters: list[nn.Parameter], tensors: Sequence[_Tensor]) -> ParameterTable:
    """Each distinct tensor under its first name: the walk's own columns when no tensor has two names."""
    if len(tensors) == len(names):
        return ParameterTable(names, parameters)
    return ParameterTable(map(_name_of, tensors), map(_parameter_of, tensors))


def _frozen_before_training(tensors: Sequence[_Tensor], planned: Sequence[PlannedGroup]) -> tuple[str, ...]:
    """The names of the tensors the user froze that no frozen group or row group holds, in model order."""
    if all(map(_trains, tensors)):
        return ()
    # A matrix a row group trains some rows of is trained, whatever its flag says and wherever its other rows are.
    in_groups = {name for group in planned if group.frozen or group.rows for name in group.parameter_names}
    frozen = compress(map(_name_of, tensors), map(operator.not_, map(_trains, tensors)))
    return tuple(name for name in frozen if name not in in_groups)
