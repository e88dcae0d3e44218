"""What is wrong with a `TrainingArguments` value from a config file or the command line, before anything runs.

`TrainingArguments` takes `learning_rate="fast"`, `-1` or `nan` without a word; the mistake surfaced as a
traceback after 6 to 20 s of data preparation, or, for `weight_decay="fast"`, in a log line. The types come
from the dataclass field annotations (one source of truth as transformers changes); the ranges of the
numeric hyperparameters from the table below. The functions return the problem as text, so the run config
and the command line can each raise their own error with it.
"""

from __future__ import annotations

import enum
import functools
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import describe_value, did_you_mean, some_names

_NUMPY_SEED_LIMIT = 2**32 - 1  # `set_seed` hands the seed to numpy, which takes 0 to 2**32 - 1


@dataclass(frozen=True)
class Bounds:
    """The numbers a hyperparameter may take: `minimum` to `maximum`, each end open or closed.

    Args:
        minimum: The smallest allowed value.
        maximum: The largest allowed value.
        minimum_excluded: True when the value must be strictly greater than `minimum`.
        maximum_excluded: True when the value must be strictly less than `maximum`.
        also: Values allowed outside the range (`max_steps: -1`, "not set").
    """

    minimum: float
    maximum: float = math.inf
    minimum_excluded: bool = False
    maximum_excluded: bool = False
    also: tuple[int, ...] = ()

    def admits(self, number: float) -> bool:
        """Whether `number` is in the range or one of the extra values."""
        if number in self.also:
            return True
        above = number > self.minimum if self.minimum_excluded else number >= self.minimum
        below = number < self.maximum if self.maximum_excluded else number <= self.maximum
        return above and below

    def describe(self) -> str:
        """The range in words: `>= 0`, `> 0 and < 1`, `>= 1, or -1`."""
        text = f"{'>' if self.minimum_excluded else '>='} {self.minimum}"
        if self.maximum != math.inf:
            text += f" and {'<' if self.maximum_excluded else '<='} {self.maximum}"
        return text + "".join(f", or {value}" for value in self.also)


_AT_LEAST_ZERO = Bounds(0)
_ABOVE_ZERO = Bounds(0, minimum_excluded=True)
_AT_LEAST_ONE = Bounds(1)
_FRACTION = Bounds(0, 1)
_BETA = Bounds(0, 1, maximum_excluded=True)
_SEED = Bounds(0, _NUMPY_SEED_LIMIT)

# The numeric hyperparameters a typo or a sign error breaks. Every float field must also be finite.
BOUNDS: dict[str, Bounds] = {
    "learning_rate": _AT_LEAST_ZERO,
    "weight_decay": _AT_LEAST_ZERO,
    "adam_epsilon": _AT_LEAST_ZERO,
    "max_grad_norm": _AT_LEAST_ZERO,
    "warmup_steps": _AT_LEAST_ZERO,
    "eval_delay": _AT_LEAST_ZERO,
    "neftune_noise_alpha": _AT_LEAST_ZERO,
    "dataloader_num_workers": _AT_LEAST_ZERO,
    "adam_beta1": _BETA,
    "adam_beta2": _BETA,
    "label_smoothing_factor": _FRACTION,
    "num_train_epochs": _ABOVE_ZERO,
    "logging_steps": _ABOVE_ZERO,
    "eval_steps": _ABOVE_ZERO,
    "save_steps": _ABOVE_ZERO,
    "per_device_train_batch_size": _AT_LEAST_ONE,
    "per_device_eval_batch_size": _AT_LEAST_ONE,
    "gradient_accumulation_steps": _AT_LEAST_ONE,
    "eval_accumulation_steps": _AT_LEAST_ONE,
    "torch_empty_cache_steps": _AT_LEAST_ONE,
    "dataloader_prefetch_factor": _AT_LEAST_ONE,
    "save_total_limit": _AT_LEAST_ZERO,
    "max_steps": Bounds(1, also=(-1,)),
    "seed": _SEED,
    "data_seed": _SEED,
}


@functools.cache
def training_fields() -> dict[str, Any]:
    """The `LayerwiseTrainingArguments` fields a config may set, each with its resolved annotation."""
    from ..training_args import LayerwiseTrainingArguments

    hints = typing.get_type_hints(LayerwiseTrainingArguments)
    return {name: hints[name] for name, item in LayerwiseTrainingArguments.__dataclass_fields__.items() if item.init}


def training_value_problem(key: str, value: Any) -> str | None:
    """What is wrong with `value` for the `TrainingArguments` field `key`, or None when nothing is.

    Args:
        key: A field of `LayerwiseTrainingArguments`.
        value: The value read from YAML or the command line.

    Returns:
        `"expected a finite number >= 0, got 'fast' (str)"` and the like, or None.

    Example:
        ```python
        assert training_value_problem("learning_rate", -1) == "expected a finite number >= 0, got -1 (int)"
        ```
    """
    arms = _arms(training_fields()[key])
    choices = _choices(arms)
    if choices is not None and not isinstance(value, enum.Enum) and value not in choices:
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        return f"expected one of {some_names(choices, shown=4)}, got {describe_value(value)}{hint}"
    if not any(_fits(arm, value) for arm in arms) or not _in_range(value, BOUNDS.get(key)):
        return f"expected {_expected(key, arms)}, got {describe_value(value)}"
    if key == "resume_from_checkpoint" and isinstance(value, str):
        return checkpoint_directory_problem(value)
    if key == "output_dir" and value == "":
        return "expected a directory to write the run to, got '' (an empty path)"
    return None


# Files of a Trainer checkpoint: the state every checkpoint has, the JSON files, the torch archives, the weights.
TRAINER_STATE_FILE = "trainer_state.json"
_JSON_FILES = (TRAINER_STATE_FILE, "param_groups_layout.json")
_TORCH_FILES = ("optimizer.pt", "scheduler.pt")
_WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
    "adapter_model.safetensors", "adapter_model.bin",
)  # fmt: skip
# A JSON file this size or smaller is parsed whole; a larger one (a long run's trainer_state.json) is only
# checked to start as a JSON object.
_JSON_PARSED_BYTES = 16 * 1024 * 1024


def checkpoint_directory_problem(path: str, needs_weights: bool = True) -> str | None:
    """What is wrong with ``path`` as a checkpoint to resume from, or None when it looks like one.

    A Trainer checkpoint always has ``trainer_state.json``; its JSON files must hold JSON objects, its
    ``optimizer.pt`` and ``scheduler.pt`` be archives ``torch.save`` wrote, and, to resume training, it must
    hold weights (a weights file, or a folder: sharded, adapter and DeepSpeed layouts). A directory of junk
    files ended in a `JSONDecodeError`, an unpickling error or the Trainer's "Can't find a valid checkpoint",
    after the data were prepared. Only the start of each file is read (and a JSON file up to 16 MiB whole).

    Args:
        path: The directory.
        needs_weights: Whether the weights are needed (`train`; `plan --resume-from` reads the optimizer only).

    Returns:
        What was expected and found, or None.
    """
    if not os.path.isdir(path):
        return f"expected a checkpoint directory, got {describe_value(path)}, which is not a directory"
    folder = Path(path)
    if not (folder / TRAINER_STATE_FILE).is_file():
        return (f"expected a checkpoint directory (with the {TRAINER_STATE_FILE} every Trainer checkpoint has), got "
                f"{describe_value(path)}, which has no {TRAINER_STATE_FILE}")  # fmt: skip
    for name in _JSON_FILES:
        problem = _json_object_problem(folder / name)
        if problem is not None:
            return f"{folder / name}: {problem}, expected the JSON object a checkpoint holds"
    for name in _TORCH_FILES:
        if (folder / name).exists() and not _is_torch_archive(folder / name):
            return f"{folder / name}: not a file torch.save wrote (damaged, or not a checkpoint file)"
    has_weights = any((folder / name).is_file() for name in _WEIGHT_FILES)
    if needs_weights and not has_weights and not any(entry.is_dir() for entry in folder.iterdir()):
        return (f"expected a checkpoint with model weights, got {describe_value(path)}, which has none "
                f"({', '.join(_WEIGHT_FILES[:3])}, ...)")  # fmt: skip
    return None


def _json_object_problem(file: Path) -> str | None:
    import json

    from ..core.yaml_json import DocumentError, read_text_bounded

    if not file.exists():
        return None
    try:
        if file.stat().st_size > _JSON_PARSED_BYTES:
            with open(file, "rb") as opened:
                start = opened.read(64).lstrip()
            return None if start.startswith(b"{") else "not a JSON object"
        data = json.loads(read_text_bounded(file, _JSON_PARSED_BYTES))
    except DocumentError as error:
        return error.detail
    except (OSError, ValueError):
        return "not valid JSON"
    return None if isinstance(data, dict) else "not a JSON object"


def _is_torch_archive(file: Path) -> bool:
    """``torch.save`` writes a zip archive (since torch 1.6), or, in the legacy format, a pickle."""
    import zipfile

    try:
        if zipfile.is_zipfile(file):
            return True
        with open(file, "rb") as opened:
            return opened.read(1) == b"\x80"  # a pickle's PROTO opcode
    except OSError:
        return False


def number_problem(key: str, value: Any, kind: type = float, bounds: Bounds | None = None) -> str | None:
    """What is wrong with `value` as the number `key` takes (finite, in its range), or None.

    Args:
        key: A key of `BOUNDS`, or any name.
        value: The value.
        kind: `float`, or `int` for a whole number.
        bounds: The range; by default `BOUNDS[key]`, else any finite number.

    Returns:
        `"expected a whole number >= 1, got 0 (int)"` and the like, or None.

    Example:
        ```python
        assert number_problem("weight_decay", -0.5) == "expected a finite number >= 0, got -0.5 (float)"
        ```
    """
    bounds = bounds if bounds is not None else BOUNDS.get(key)
    if _fits(kind, value) and _in_range(value, bounds):
        return None
    return f"expected {_number_words(kind, bounds)}, got {describe_value(value)}"


def _arms(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _choices(arms: tuple[Any, ...]) -> tuple[str, ...] | None:
    """The allowed strings of an `SomeEnum | str` field, where the `str` only means "the enum's value"."""
    enums = [arm for arm in arms if isinstance(arm, type) and issubclass(arm, enum.Enum)]
    if len(enums) != 1 or set(arms) - {enums[0], str, type(None)}:
        return None
    return tuple(str(member.value) for member in enums[0])


def _fits(arm: Any, value: Any) -> bool:
    origin = typing.get_origin(arm) or arm
    if arm is typing.Any:
        return True
    if arm is type(None):
        return value is None
    if origin is typing.Literal:
        return any(value is choice or (value == choice and type(value) is type(choice)) for choice in arm.__args__)
    if arm is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if arm is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is dict:
        return isinstance(value, Mapping)
    if origin is list:
        item_types = typing.get_args(arm)
        return isinstance(value, list) and (item_types != (str,) or all(isinstance(item, str) for item in value))
    return isinstance(origin, type) and isinstance(value, origin)


def _in_range(value: Any, bounds: Bounds | None) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    return finite and (bounds is None or bounds.admits(value))


def _expected(key: str, arms: tuple[Any, ...]) -> str:
    bounds = BOUNDS.get(key)
    return " or ".join(_number_words(arm, bounds) if arm in (int, float) else _words(arm) for arm in arms)


def _number_words(kind: Any, bounds: Bounds | None) -> str:
    words = "a whole number" if kind is int else "a finite number"
    return f"{words} {bounds.describe()}" if bounds is not None else words


def _words(arm: Any) -> str:
    origin = typing.get_origin(arm) or arm
    if arm is type(None):
        return "null"
    if arm is bool:
        return "true or false"
    if arm is str:
        return "a string"
    if origin is dict:
        return "a mapping"
    if origin is list:
        return "a list"
    if origin is typing.Literal:
        return " or ".join(str(choice).lower() if isinstance(choice, bool) else repr(choice) for choice in arm.__args__)
    return f"a {getattr(origin, '__name__', str(origin))}"
