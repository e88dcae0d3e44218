"""Muon in a spec: the top-level ``muon`` setting, a group's ``optimizer``, and which parameters Muon takes.

The rule, the same for the top-level split and for a group with ``optimizer: muon``: Muon takes the 2-D weight
matrices inside the transformer blocks. Everything else the group holds (norms and biases, which are 1-D;
embeddings, the head and anything else outside the blocks, which Muon's orthogonalised update does not suit,
as Moonlight and Keller Jordan's Muon leave them to AdamW; tensors of more than two dimensions) goes to AdamW,
as a sub-group ``<group>/adamw`` at the rate the spec states: ``adamw_lr`` (absolute) or ``adamw_lr_scale``
(times the group's rate), and the group's own rate when neither is given. The group's own rate is an
AdamW rate only under Moonlight's ``adjust_lr_fn: match_rms_adamw``, so with torch's ``original`` scaling a
group that has such parameters must state their rate.

Parsed here, at the boundary, into `MuonSettings`; code after it does not check these keys again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import SpecError, describe_value, did_you_mean, whole_number_problem

# The key of a param group that names the algorithm stepping it (`hybrid_optimizer`), and the algorithms a
# spec group can choose; `trainer` is TrainingArguments.optim's optimizer.
OPTIMIZER_KEY = "optimizer"
MUON = "muon"
ADAMW = "adamw"
TRAINER = "trainer"
OPTIMIZER_KINDS = (MUON, ADAMW, TRAINER)
# torch.optim.Muon's hyperparameters a spec may set, at the top level or in a group that Muon trains.
MUON_OPTIONS = ("momentum", "nesterov", "ns_steps", "ns_coefficients", "eps", "adjust_lr_fn")
ADJUST_LR_FNS = ("original", "match_rms_adamw")
# A group's keys that apply only where Muon trains it.
MUON_GROUP_KEYS = ("adamw_lr", "adamw_lr_scale")
# Keys of the top-level mapping besides Muon's hyperparameters.
MUON_SETTING_KEYS = (*MUON_OPTIONS, "weight_decay", "adamw_lr_scale")
MAX_NS_STEPS = 99  # torch refuses 100 and more


def _number(value: Any, key: str, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"expected {expected}, got {describe_value(value)}", path=(key,))
    return float(value)


def parse_muon_option(key: str, value: Any) -> Any:
    """One of Muon's hyperparameters, checked as torch would check it, but here, with the key named.

    Raises:
        SpecError: A value Muon refuses (``momentum`` outside [0, 1), ``ns_steps`` not a whole number from
            1 to 99, an ``adjust_lr_fn`` torch does not have, ...).
    """
    if key == "momentum":
        number = _number(value, key, "a number in [0, 1)")
        if not 0 <= number < 1:
            raise SpecError(f"expected a number in [0, 1), got {describe_value(value)}", path=(key,))
        return number
    if key == "nesterov":
        if not isinstance(value, bool):
            raise SpecError(f"expected true or false, got {describe_value(value)}", path=(key,))
        return value
    if key == "ns_steps":
        problem = whole_number_problem(value, minimum=1, maximum=MAX_NS_STEPS)
        if problem is not None:
            raise SpecError(f"expected {problem}, got {describe_value(value)}", path=(key,))
        return int(value)
    if key == "ns_coefficients":
        items = list(value) if isinstance(value, (list, tuple)) else None
        if items is None or len(items) != 3:
            raise SpecError(f"expected a list of 3 numbers, got {describe_value(value)}", path=(key,))
        return tuple(_number(item, key, "a list of 3 numbers") for item in items)
    if key == "eps":
        number = _number(value, key, "a number > 0")
        if number <= 0:
            raise SpecError(f"expected a number > 0, got {describe_value(value)}", path=(key,))
        return number
    if key == "adjust_lr_fn":
        if value not in ADJUST_LR_FNS:
            expected = " or ".join(map(repr, ADJUST_LR_FNS))
            raise SpecError(f"expected {expected}, got {describe_value(value)}", path=(key,))
        return value
    raise KeyError(key)


def _non_negative(value: Any, key: str) -> float:
    number = _number(value, key, "a finite number >= 0")
    if number < 0:
        raise SpecError(f"expected a finite number >= 0, got {describe_value(value)}", path=(key,))
    return number


@dataclass(frozen=True)
class MuonSettings:
    """The top-level ``muon`` setting: Muon for the blocks' 2-D weight matrices of every group, AdamW for the rest.

    Args:
        options: Muon's hyperparameters for every group Muon trains (a group's own keys override them).
        weight_decay: The Muon part's weight decay where a group sets none; the Trainer's when None.
        adamw_lr_scale: The rate of what Muon does not take, times the group's rate, where a group states none.

    Example:
        ```python
        MuonSettings.parse({"adjust_lr_fn": "match_rms_adamw", "momentum": 0.95})
        ```
    """

    options: Mapping[str, Any] = field(default_factory=dict)
    weight_decay: float | None = None
    adamw_lr_scale: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @classmethod
    def parse(cls, value: Any) -> MuonSettings | None:
        """``muon: true``, ``false`` or a mapping of `MUON_SETTING_KEYS`; None when off.

        Raises:
            SpecError: Another value, an unknown key (with a did-you-mean), or a value Muon refuses; located
                under ``muon``.
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, MuonSettings):
            return value
        if not isinstance(value, Mapping):
            raise SpecError(
                f"expected true or a mapping of Muon's settings, got {describe_value(value)}", path=("muon",)
            )
        options: dict[str, Any] = {}
        weight_decay = adamw_lr_scale = None
        for key, item in value.items():
            try:
                if key == "weight_decay":
                    weight_decay = _non_negative(item, key)
                elif key == "adamw_lr_scale":
                    adamw_lr_scale = _positive(item, key)
                elif key in MUON_OPTIONS:
                    options[key] = parse_muon_option(key, item)
                else:
                    hint = did_you_mean(str(key), MUON_SETTING_KEYS) or "."
                    raise SpecError(f"unknown key {key!r}{hint} Expected one of: {', '.join(MUON_SETTING_KEYS)}")
            except SpecError as error:
                raise error.within("muon") from None
        return cls(options, weight_decay, adamw_lr_scale)

    def to_data(self) -> dict[str, Any]:
        """The setting as a spec writes it."""
        data: dict[str, Any] = {key: list(value) if isinstance(value, tuple) else value
                                for key, value in self.options.items()}  # fmt: skip
        if self.weight_decay is not None:
            data["weight_decay"] = self.weight_decay
        if self.adamw_lr_scale is not None:
            data["adamw_lr_scale"] = self.adamw_lr_scale
        return data


def _positive(value: Any, key: str) -> float:
    number = _number(value, key, "a number > 0")
    if number <= 0:
        raise SpecError(f"expected a number > 0, got {describe_value(value)}", path=(key,))
    return number


def parse_adamw_rate(lr: Any, lr_scale: Any) -> tuple[float | None, float | None]:
    """A group's ``adamw_lr`` and ``adamw_lr_scale``: at most one of them, each a number > 0.

    Raises:
        SpecError: Both given, or a value that is not a number > 0.
    """
    if lr is not None and lr_scale is not None:
        raise SpecError("give either 'adamw_lr' or 'adamw_lr_scale', not both", path=("adamw_lr",))
    return (
        None if lr is None else _positive(lr, "adamw_lr"),
        None if lr_scale is None else _positive(lr_scale, "adamw_lr_scale"),
    )


def muon_takes(shape: tuple[int, ...], in_block: bool) -> bool:
    """Whether Muon takes a parameter of this shape: a 2-D weight matrix inside a transformer block."""
    return in_block and len(shape) == 2
