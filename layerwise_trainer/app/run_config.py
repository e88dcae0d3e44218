"""The configuration of a ``layerwise-trainer train`` run: one YAML file, checked once, with overrides.

Sections: ``model``, ``tokenizer``, ``data``, ``training`` (any ``TrainingArguments`` field),
``param_groups`` (a spec, inline or a path), ``metrics`` and, optionally, ``peft``. Unknown keys are
errors that name the key; relative paths are read relative to the config file.

Everything that can be checked without data is checked when the config is read: `training` values
(types from the `TrainingArguments` annotations, ranges, then transformers' own checks), the
`model.from_config` config, and the spec. A mistake then costs a second, not the 6 to 20 s of data
preparation that came before it. Nothing here walks a whole value: a YAML alias graph of billions of
nodes in a few hundred bytes costs no more than its few distinct objects.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..core.yaml_json import DocumentError, load_document, parse_yaml
from ..errors import describe_value, did_you_mean, whole_number_problem
from .training_values import training_fields, training_value_problem

if TYPE_CHECKING:
    from ..core.spec import LayerwiseSpec

METRIC_NAMES = ("accuracy", "f1_weighted", "f1_macro", "precision_weighted", "recall_weighted")
SECTIONS = ("model", "tokenizer", "data", "training", "param_groups", "metrics", "peft")
DEFAULT_CONFIG_RESOURCE = "default.yaml"
# A value handed to transformers (a `training` value, `model.from_config`, `peft`) is a few items; one with
# more is a mistake or a YAML alias graph that would expand to billions of nodes if anything walked it.
MAX_VALUE_ITEMS = 10_000
# A model is built block by block, even on the meta device: 100,000 BERT blocks ran past 4.6 GB in `plan`. The
# largest released models have about 130 blocks in a stack (Llama-3.1-405B 126); DeepNet trained 1,000.
MAX_MODEL_LAYERS = 1_024
# The built-in data are generated in memory: 100,000 reviews take about 1.3 s and 41 MiB, so the limit costs
# about 15 s and half a GiB; the hub set the built-in one imitates has 120,000 Japanese reviews.
MAX_BUILTIN_EXAMPLES = 1_000_000
# A trained tokenizer's vocabulary sizes the model's embeddings; the largest released vocabularies hold 262,144.
MAX_VOCAB_SIZE = 1_000_000
# Config keys that count a model's layers: num_hidden_layers, encoder_layers, num_decoder_layers, n_layer, ...
_LAYER_COUNT_KEY = re.compile(r"(?:^|_)layers$|^n_layer$")


class ConfigError(ValueError):
    """A run configuration that cannot be used; the message names the key and what was expected."""


def _keys_of(section: str, raw: Any, allowed: Sequence[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{section}: expected a mapping, got {type(raw).__name__}")
    for key in raw:
        if key not in allowed:
            hint = did_you_mean(str(key), allowed)
            raise ConfigError(f"{section}.{key}: unknown key{hint}; expected one of {', '.join(allowed)}")
    return dict(raw)


def _typed(where: str, value: Any, kind: type | tuple[type, ...], expected: str) -> Any:
    if value is None or (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{where}: expected {expected}, got {describe_value(value)}")


def _positive_int(where: str, value: Any, maximum: int | None = None) -> int | None:
    problem = None if value is None else whole_number_problem(value, maximum=maximum)
    if problem is not None:
        raise ConfigError(f"{where}: expected {problem}, got {describe_value(value)}")
    return None if value is None else int(value)


def _check_small(where: str, value: Any) -> None:
    """Refuse a value of more than `MAX_VALUE_ITEMS` items, counting shared ones each time, in bounded time."""
    pending, seen = [value], 0
    while pending:
        item = pending.pop()
        seen += 1
        if seen > MAX_VALUE_ITEMS:
            raise ConfigError(
                f"{where}: expected a small value, got one of more than {MAX_VALUE_ITEMS} items (nested YAML aliases?)"
            )
        if isinstance(item, Mapping):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)


def _one_line(error: BaseException) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


@dataclass(frozen=True)
class ModelSection:
    """``model``: a hub id or local directory, or a model built from a config.

    Args:
        name_or_path: A hub id or a local directory with a pretrained model.
        from_config: Config keyword arguments for a model built from scratch, with ``model_type``
            (``bert`` by default); exclusive with ``name_or_path``.
        num_labels: The number of classes; by default the data's.
    """

    name_or_path: str | None = None
    from_config: Mapping[str, Any] | None = None
    num_labels: int | None = None

    @classmethod
    def parse(cls, raw: Any, base_dir: Path) -> ModelSection:
        values = _keys_of("model", raw, ("name_or_path", "from_config", "num_labels"))
        name_or_path = _typed("model.name_or_path", values.get("name_or_path"), str, "a hub id or a directory")
        from_config = _typed("model.from_config", values.get("from_config"), Mapping, "a mapping of config values")
        if (name_or_path is None) == (from_config is None):
            raise ConfigError("model: give exactly one of 'name_or_path' (pretrained) and 'from_config' (from scratch)")
        if from_config is not None:
            model_config_from(from_config)
        return cls(
            name_or_path=_local_or_hub(name_or_path, base_dir),
            from_config=dict(from_config) if from_config is not None else None,
            num_labels=_positive_int("model.num_labels", values.get("num_labels")),
        )


@dataclass(frozen=True)
class TokenizerSection:
    """``tokenizer``: load one, or train a MeCab + WordPiece one on the training split.

    Args:
        name_or_path: A hub id or directory; by default the model's.
        train: ``{vocab_size, min_frequency}`` to build a Japanese tokenizer from the training texts.
        max_length: Inputs are truncated to this many tokens.
    """

    name_or_path: str | None = None
    train: Mapping[str, Any] | None = None
    max_length: int = 128

    @classmethod
    def parse(cls, raw: Any, base_dir: Path) -> TokenizerSection:
        values = _keys_of("tokenizer", raw, ("name_or_path", "train", "max_length"))
        name_or_path = _typed("tokenizer.name_or_path", values.get("name_or_path"), str, "a hub id or a directory")
        train = values.get("train")
        if train is not None:
            train = _keys_of("tokenizer.train", train, ("vocab_size", "min_frequency"))
            for key in train:
                _positive_int(f"tokenizer.train.{key}", train[key], MAX_VOCAB_SIZE if key == "vocab_size" else None)
            if name_or_path is not None:
                raise ConfigError("tokenizer: give at most one of 'name_or_path' and 'train'")
        return cls(
            name_or_path=_local_or_hub(name_or_path, base_dir),
            train=train,
            max_length=_positive_int("tokenizer.max_length", values.get("max_length", 128)) or 128,
        )


@dataclass(frozen=True)
class DataSection:
    """``data``: exactly one of ``builtin``, ``hub`` and ``files``, and the columns to read.

    Args:
        builtin: ``{num_examples, seed}`` for the built-in Japanese sentiment set.
        hub: ``{path, name, revision}`` of a hub data set (``datasets.load_dataset``).
        files: ``{train, validation, test}`` paths to CSV, JSON or JSONL files.
        text_column: The column with the text.
        label_column: The column with the label (ids, or names listed in ``label_names``).
        label_names: The class names in id order, when the data does not carry them.
        max_train_examples: Use at most this many training examples.
        max_eval_examples: Use at most this many validation and test examples each.
    """

    builtin: Mapping[str, Any] | None = None
    hub: Mapping[str, Any] | None = None
    files: Mapping[str, str] | None = None
    text_column: str = "text"
    label_column: str = "label"
    label_names: tuple[str, ...] | None = None
    max_train_examples: int | None = None
    max_eval_examples: int | None = None

    @classmethod
    def parse(cls, raw: Any, base_dir: Path) -> DataSection:
        allowed = (
            "builtin", "hub", "files", "text_column", "label_column", "label_names", "max_train_examples",
            "max_eval_examples",
        )  # fmt: skip
        values = _keys_of("data", raw, allowed)
        sources = [key for key in ("builtin", "hub", "files") if key in values]
        if len(sources) != 1:
            raise ConfigError(f"data: give exactly one of 'builtin', 'hub' and 'files', got {sources or 'none'}")
        builtin = hub = files = None
        if "builtin" in values:
            builtin = _keys_of("data.builtin", values["builtin"] or {}, ("num_examples", "seed"))
            _positive_int("data.builtin.num_examples", builtin.get("num_examples"), MAX_BUILTIN_EXAMPLES)
            _typed("data.builtin.seed", builtin.get("seed"), int, "a whole number")
        if "hub" in values:
            hub = _keys_of("data.hub", values["hub"], ("path", "name", "revision"))
            if not isinstance(hub.get("path"), str):
                raise ConfigError(
                    "data.hub.path: expected the data set's hub id, e.g. tyqiangz/multilingual-sentiments"
                )
        if "files" in values:
            files = _keys_of("data.files", values["files"], ("train", "validation", "test"))
            if "train" not in files:
                raise ConfigError("data.files.train: missing; the training file is required")
            for split, path in files.items():
                _typed(f"data.files.{split}", path, str, "a path to a .csv, .json or .jsonl file")
            files = {split: str(_resolve(path, base_dir)) for split, path in files.items()}
        label_names = values.get("label_names")
        if label_names is not None:
            if not isinstance(label_names, list) or not all(isinstance(name, str) for name in label_names):
                got = describe_value(label_names)
                raise ConfigError(f"data.label_names: expected a list of class names, got {got}")
            label_names = tuple(label_names)
        return cls(
            builtin=builtin,
            hub=hub,
            files=files,
            text_column=_typed("data.text_column", values.get("text_column", "text"), str, "a column name"),
            label_column=_typed("data.label_column", values.get("label_column", "label"), str, "a column name"),
            label_names=label_names,
            max_train_examples=_positive_int("data.max_train_examples", values.get("max_train_examples")),
            max_eval_examples=_positive_int("data.max_eval_examples", values.get("max_eval_examples")),
        )


@dataclass(frozen=True)
class RunConfig:
    """A whole run configuration, checked.

    Args:
        model: The ``model`` section.
        tokenizer: The ``tokenizer`` section.
        data: The ``data`` section.
        training: ``TrainingArguments`` fields, checked (types, ranges, transformers' own checks).
        param_groups: The spec, parsed once when the config is read, or None.
        metrics: Metric names, from ``accuracy``, ``f1_weighted``, ``f1_macro``,
            ``precision_weighted``, ``recall_weighted``.
        peft: LoRA settings (``peft.LoraConfig`` fields), or None.
        source: Where the config came from.
    """

    model: ModelSection
    tokenizer: TokenizerSection
    data: DataSection
    training: Mapping[str, Any] = field(default_factory=dict)
    param_groups: LayerwiseSpec | None = None
    metrics: tuple[str, ...] = ("accuracy", "f1_weighted")
    peft: Mapping[str, Any] | None = None
    source: str = "built-in default"

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain data, for writing next to the results."""
        result: dict[str, Any] = {}
        for section in SECTIONS:
            value = getattr(self, section)
            if hasattr(value, "to_dict"):  # the spec, written out in full
                value = value.to_dict()
            elif dataclasses.is_dataclass(value):
                value = {key: item for key, item in dataclasses.asdict(value).items() if item is not None}
            elif isinstance(value, tuple):
                value = list(value)
            if value is not None:
                result[section] = _plain(value)
        return result


def _plain(value: Any, done: dict[int, Any] | None = None) -> Any:
    """``value`` as YAML-ready data. A value shared (a YAML alias) stays one shared object, so this and
    ``yaml.safe_dump`` (which writes it as an alias) take time linear in the distinct objects."""
    done = {} if done is None else done
    if id(value) in done:
        return done[id(value)]
    if isinstance(value, Mapping):
        mapping: dict[Any, Any] = {}
        done[id(value)] = mapping
        mapping.update((key, _plain(item, done)) for key, item in value.items())
        return mapping
    if isinstance(value, (list, tuple)):
        items: list[Any] = []
        done[id(value)] = items
        items.extend(_plain(item, done) for item in value)
        return items
    return value.to_dict() if hasattr(value, "to_dict") else value


def _resolve(path: str, base_dir: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (base_dir / candidate)


def _local_or_hub(name_or_path: str | None, base_dir: Path) -> str | None:
    """A relative directory that exists next to the config is that directory; anything else a hub id."""
    if name_or_path is None:
        return None
    local = _resolve(name_or_path, base_dir)
    return str(local) if local.exists() else name_or_path


def parse_run_config(raw: Any, base_dir: str | os.PathLike[str] = ".", source: str = "<config>") -> RunConfig:
    """Check a configuration given as plain data.

    Args:
        raw: The mapping read from YAML.
        base_dir: The directory relative paths are relative to (the config file's).
        source: The config's name in messages.

    Returns:
        The checked `RunConfig`.

    Raises:
        ConfigError: An unknown section or key (with a suggestion), a missing section, or a value of the
            wrong kind, named by its dotted key.
    """
    base = Path(base_dir)
    values = _keys_of("config", raw, SECTIONS)
    for required in ("model", "data"):
        if required not in values:
            raise ConfigError(f"{required}: missing required section")
    training = values.get("training") or {}
    if not isinstance(training, Mapping):
        raise ConfigError(f"training: expected a mapping of TrainingArguments fields, got {type(training).__name__}")
    training = _with_checkpoint_resolved(training, base)
    check_training(training)
    metrics = values.get("metrics", ["accuracy", "f1_weighted"])
    if not isinstance(metrics, list) or not metrics:
        raise ConfigError(f"metrics: expected a non-empty list of metric names, got {describe_value(metrics)}")
    for name in metrics:
        if not isinstance(name, str) or name not in METRIC_NAMES:
            hint = did_you_mean(name, METRIC_NAMES) if isinstance(name, str) else ""
            raise ConfigError(f"metrics: unknown metric {describe_value(name)}{hint}; "
                              f"expected some of {', '.join(METRIC_NAMES)}")  # fmt: skip
    param_groups = values.get("param_groups")
    if isinstance(param_groups, str) and param_groups.lstrip()[:1] not in ("[", "{"):
        param_groups = str(_resolve(param_groups, base))
    peft = values.get("peft")
    if peft is not None and not isinstance(peft, Mapping):
        raise ConfigError(f"peft: expected a mapping of peft.LoraConfig fields, got {type(peft).__name__}")
    if peft is not None:
        _check_small("peft", peft)
    spec = _parsed_spec(param_groups)
    return RunConfig(
        model=ModelSection.parse(values["model"], base),
        tokenizer=TokenizerSection.parse(values.get("tokenizer"), base),
        data=DataSection.parse(values["data"], base),
        training=dict(training),
        param_groups=spec,
        metrics=tuple(metrics),
        peft=dict(peft) if peft is not None else None,
        source=source,
    )


def _with_checkpoint_resolved(training: Mapping[str, Any], base_dir: Path) -> Mapping[str, Any]:
    """``resume_from_checkpoint`` relative to the config file, as every other path the config names."""
    checkpoint = training.get("resume_from_checkpoint")
    if not isinstance(checkpoint, str) or not checkpoint:
        return training  # unset, or `true`: the Trainer takes the latest checkpoint in output_dir
    return {**training, "resume_from_checkpoint": str(_resolve(checkpoint, base_dir))}


def check_training(training: Mapping[str, Any]) -> None:
    """Check a ``training`` section: known fields, values of the right type and range, then transformers' checks.

    ``LayerwiseTrainingArguments(**training)`` is built here, so that its own checks (a strategy that does
    not exist, ``load_best_model_at_end`` without matching strategies) fail when the config is read,
    before any data is prepared.

    Args:
        training: ``TrainingArguments`` fields and values.

    Raises:
        ConfigError: An unknown field, a value of the wrong type or out of range, or one transformers
            refuses, named ``training.<key>``.

    Example:
        ```python
        check_training({"learning_rate": "fast"})  # ConfigError: training.learning_rate: expected a finite ...
        ```
    """
    fields = training_fields()
    for key, value in training.items():
        if key == "param_groups":
            raise ConfigError("training.param_groups: give the spec in the top-level 'param_groups' section")
        if key not in fields:
            raise ConfigError(f"training.{key}: not a TrainingArguments field{did_you_mean(str(key), fields)}")
        _check_small(f"training.{key}", value)
        problem = training_value_problem(key, value)
        if problem is not None:
            raise ConfigError(f"training.{key}: {problem}")
    _build_training_arguments(training)


def _build_training_arguments(training: Mapping[str, Any]) -> None:
    from ..training_args import LayerwiseTrainingArguments

    try:
        LayerwiseTrainingArguments(**training)
    except (TypeError, ValueError) as error:
        message = _one_line(error)[:500]
        mentions = {key: re.search(rf"\b{re.escape(key)}\b", message) for key in training}
        named = sorted((found.start(), key) for key, found in mentions.items() if found)
        where = f"training.{named[0][1]}" if named else "training"
        raise ConfigError(f"{where}: {message}") from None


def model_config_from(settings: Mapping[str, Any]) -> Any:
    """The transformers config that ``model.from_config`` describes (``model_type`` defaults to ``bert``).

    Args:
        settings: ``model_type`` and config keyword arguments.

    Returns:
        The `PretrainedConfig`.

    Raises:
        ConfigError: An unknown ``model_type`` (with a suggestion) or a value the config class refuses,
            named ``model.from_config.<key>``.
    """
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    for key, value in settings.items():
        _check_small(f"model.from_config.{key}", value)
    values = dict(settings)
    model_type = values.pop("model_type", "bert")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        hint = did_you_mean(model_type, CONFIG_MAPPING.keys()) if isinstance(model_type, str) else ""
        raise ConfigError(f"model.from_config.model_type: unknown model type {describe_value(model_type)}{hint}")
    try:
        config = AutoConfig.for_model(model_type, **values)
    except (TypeError, ValueError, StrictDataclassError) as error:
        raise ConfigError(_from_config_problem(error, values)) from None
    check_layer_counts(config, "model.from_config.", written=values)
    return config


def check_layer_counts(config: Any, prefix: str, written: Mapping[str, Any] | None = None) -> None:
    """Refuse a model config whose layer counts are negative or over `MAX_MODEL_LAYERS`, before it is built.

    Every key that counts layers is checked (``num_hidden_layers``, ``encoder_layers``, ``n_layer``, in
    sub-configs too): a model with ``num_hidden_layers: -1`` builds no block at all, and the mistake surfaced
    as a spec error ("layer_decay needs transformer blocks"); one with 100,000 blocks is built module by
    module, for minutes and gigabytes, even on the meta device.

    Args:
        config: A transformers `PretrainedConfig`.
        prefix: What the keys are named after in messages (``"model.from_config."``).
        written: The values as the user wrote them, to name a key by the user's name for it
            (``num_hidden_layers`` for BART's ``encoder_layers``).

    Raises:
        ConfigError: A layer count below 0 or over `MAX_MODEL_LAYERS`, named by its key.
    """
    aliases = {target: key for key, target in getattr(config, "attribute_map", {}).items() if key in (written or {})}
    for key, value in _layer_counts(config.to_dict()):
        if whole_number_problem(value, minimum=0, maximum=MAX_MODEL_LAYERS) is not None:
            name = aliases.get(key, key)
            raise ConfigError(f"{prefix}{name}: expected a whole number from 0 to {MAX_MODEL_LAYERS:,} "
                              f"(MAX_MODEL_LAYERS), got {describe_value(value)}")  # fmt: skip


def _layer_counts(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, int]]:
    counts = []
    for key, value in values.items():
        if isinstance(value, Mapping):  # a sub-config: text_config, vision_config, ...
            counts.extend(_layer_counts(value, f"{prefix}{key}."))
        elif isinstance(value, int) and not isinstance(value, bool) and _LAYER_COUNT_KEY.search(str(key)):
            counts.append((f"{prefix}{key}", value))
    return counts


def _from_config_problem(error: Exception, values: Mapping[str, Any]) -> str:
    """``model.from_config.<key>: expected int, got 'fast' (str)`` from huggingface_hub's field error."""
    field_name = re.search(r"field '(\w+)'", str(error))
    expected = re.search(r"expected (.+?), got", str(error.__cause__ or ""))
    if field_name and field_name.group(1) in values and expected:
        key = field_name.group(1)
        return f"model.from_config.{key}: expected {expected.group(1)}, got {describe_value(values[key])}"
    return f"model.from_config: {_one_line(error)[:300]}"


def _parsed_spec(param_groups: Any) -> LayerwiseSpec | None:
    """The spec, parsed here once: the run, `plan` and the trainer take this object and never parse it again."""
    from ..core.spec import parse_spec
    from ..errors import SpecError

    if param_groups is None:
        return None
    try:
        return parse_spec(param_groups)
    except SpecError as error:
        raise ConfigError(f"param_groups: {_one_line(error)}") from None


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set key.path=value`` overrides to a raw configuration.

    Values are read as YAML scalars or flow collections (``1``, ``2e-5``, ``true``, ``[a, b]``). A list
    element is reached by its index, ``param_groups.groups[0].match`` or ``param_groups.groups.0.match``;
    a missing mapping key is created, a missing list element is an error.

    Args:
        raw: The configuration as read; it is not changed.
        overrides: ``"section.key=value"`` strings, applied in order.

    Returns:
        A new mapping with the overrides applied. Only the mappings and lists on an override's path are
        copied; everything else is shared with ``raw``.

    Raises:
        ConfigError: An override without ``=`` or with an empty key, going through a value that is not a
            mapping or list, an index out of range, or a negative index.

    Example:
        ```python
        apply_overrides({"metrics": ["accuracy"]}, ["metrics[0]=f1_macro"])  # {"metrics": ["f1_macro"]}
        ```
    """
    result = dict(raw)
    for override in overrides:
        key, sep, text = override.partition("=")
        if sep and _NEGATIVE_INDEX.search(key):
            raise ConfigError(f"--set {_quoted(override)}: negative indexes are not supported; "
                              "count from the start, from 0")  # fmt: skip
        path = _override_path(key.strip()) if sep else None
        if not path:
            raise ConfigError(
                f"--set {_quoted(override)}: expected key.path=value, e.g. training.num_train_epochs=1 "
                "or param_groups.groups[0].lr=1e-3"
            )
        try:
            value = parse_yaml(text, f"--set {key}")
        except DocumentError as error:
            raise ConfigError(str(error)) from None
        _set_at(result, path, value, _quoted(override))
    return result


# One step of a --set path: a key, then any number of `[index]`.
_PATH_STEP = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")
# `[-1]`, or `.-1` as a step: an index from the end, which --set does not take.
_NEGATIVE_INDEX = re.compile(r"\[\s*-\d+\s*\]|(?:^|\.)-\d+(?=\.|\[|$)")


def _override_path(key: str) -> list[str | int] | None:
    """``param_groups.groups[0].match`` -> ``["param_groups", "groups", 0, "match"]``; None if malformed."""
    path: list[str | int] = []
    for step in key.split("."):
        match = _PATH_STEP.fullmatch(step)
        if match is None:
            return None
        path.append(match.group(1))
        path.extend(int(index) for index in re.findall(r"\d+", match.group(2)))
    return path


def _set_at(root: dict[str, Any], path: list[str | int], value: Any, override: str) -> None:
    """Set ``value`` at ``path`` in ``root``, copying each mapping and list on the way (never the rest)."""
    node: Any = root
    for depth, step in enumerate(path):
        where = _path_text(path[:depth])
        if isinstance(node, list):
            index = _list_index(node, step, where, override)
            if depth == len(path) - 1:
                node[index] = value
                return
            node[index] = _copied(node[index], path, depth + 1, override)
            node = node[index]
        elif isinstance(step, int):
            raise ConfigError(f"--set {override}: {where} is not a list, it is {_kind(node)}; [{step}] indexes a list")
        elif depth == len(path) - 1:
            node[step] = value
        else:
            child = node.get(step)
            node[step] = {} if child is None else _copied(child, path, depth + 1, override)
            node = node[step]


def _list_index(node: list[Any], step: str | int, where: str, override: str) -> int:
    if isinstance(step, str) and not step.isdigit():
        raise ConfigError(
            f"--set {override}: {where} is a list: reach an element by its index, e.g. {where}[0] or {where}.0"
        )
    index = int(step)
    if index >= len(node):
        raise ConfigError(
            f"--set {override}: index {index} is out of range: {where} has {len(node)} items"
            + (f" (indexes 0 to {len(node) - 1})" if node else "")
        )
    return index


def _copied(child: Any, path: list[str | int], depth: int, override: str) -> Any:
    if isinstance(child, Mapping):
        return dict(child)
    if isinstance(child, list):
        return list(child)
    where = _path_text(path[:depth])
    raise ConfigError(f"--set {override}: {where} is not a section, it is {describe_value(child)}")


def _path_text(path: Sequence[str | int]) -> str:
    return "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path).lstrip(".")


def _quoted(text: str) -> str:
    return describe_value(text).removesuffix(" (str)")


def _kind(value: Any) -> str:
    return "a mapping" if isinstance(value, Mapping) else describe_value(value)


def default_config_text() -> str:
    """The YAML text of the built-in default run (offline Japanese sentiment)."""
    return resources.files(__package__).joinpath("configs", DEFAULT_CONFIG_RESOURCE).read_text(encoding="utf-8")


def load_run_config(path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a run configuration file (the built-in default when ``path`` is None) and apply overrides.

    Raises:
        ConfigError: The file is missing or not valid YAML/JSON, or the configuration is wrong.
    """
    if path is None:
        raw, base_dir, source = parse_yaml(default_config_text(), "built-in default"), Path.cwd(), "built-in default"
    else:
        try:
            raw = load_document(path)
        except DocumentError as error:
            raise ConfigError(str(error)) from None
        base_dir, source = Path(path).resolve().parent, str(path)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)})")
    return parse_run_config(apply_overrides(raw, overrides), base_dir, source)


def dump_config(config: RunConfig) -> str:
    """The resolved configuration as YAML."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
