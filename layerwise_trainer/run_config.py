"""The configuration of a ``layerwise-trainer train`` run: one YAML file, checked once, with overrides.

Sections: ``model``, ``tokenizer``, ``data``, ``training`` (any ``TrainingArguments`` field),
``param_groups`` (a spec, inline or a path), ``metrics`` and, optionally, ``peft``. Unknown keys are
errors that name the key; relative paths are read relative to the config file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .documents import DocumentError, load_document, parse_yaml
from .errors import did_you_mean

METRIC_NAMES = ("accuracy", "f1_weighted", "f1_macro", "precision_weighted", "recall_weighted")
SECTIONS = ("model", "tokenizer", "data", "training", "param_groups", "metrics", "peft")
DEFAULT_CONFIG_RESOURCE = "default.yaml"


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
    raise ConfigError(f"{where}: expected {expected}, got {value!r}")


def _positive_int(where: str, value: Any) -> int | None:
    _typed(where, value, int, "a whole number")
    if value is not None and value < 1:
        raise ConfigError(f"{where}: expected a whole number >= 1, got {value!r}")
    return value


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
                _positive_int(f"tokenizer.train.{key}", train[key])
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
            _positive_int("data.builtin.num_examples", builtin.get("num_examples"))
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
                raise ConfigError(f"data.label_names: expected a list of class names, got {label_names!r}")
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
        training: ``TrainingArguments`` fields (checked when the arguments are built).
        param_groups: The spec (any form :func:`~layerwise_trainer.parse_spec` takes), or None.
        metrics: Metric names, from ``accuracy``, ``f1_weighted``, ``f1_macro``,
            ``precision_weighted``, ``recall_weighted``.
        peft: LoRA settings (``peft.LoraConfig`` fields), or None.
        source: Where the config came from.
    """

    model: ModelSection
    tokenizer: TokenizerSection
    data: DataSection
    training: Mapping[str, Any] = field(default_factory=dict)
    param_groups: Any = None
    metrics: tuple[str, ...] = ("accuracy", "f1_weighted")
    peft: Mapping[str, Any] | None = None
    source: str = "built-in default"

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain data, for writing next to the results."""
        result: dict[str, Any] = {}
        for section in SECTIONS:
            value = getattr(self, section)
            if dataclasses.is_dataclass(value):
                value = {key: item for key, item in dataclasses.asdict(value).items() if item is not None}
            elif isinstance(value, tuple):
                value = list(value)
            if value is not None:
                result[section] = _plain(value)
        return result


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


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
        The checked :class:`RunConfig`.

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
    _check_training_keys(training)
    metrics = values.get("metrics", ["accuracy", "f1_weighted"])
    if not isinstance(metrics, list) or not metrics:
        raise ConfigError(f"metrics: expected a non-empty list of metric names, got {metrics!r}")
    for name in metrics:
        if name not in METRIC_NAMES:
            raise ConfigError(f"metrics: unknown metric {name!r}{did_you_mean(str(name), METRIC_NAMES)}; "
                              f"expected some of {', '.join(METRIC_NAMES)}")  # fmt: skip
    param_groups = values.get("param_groups")
    if isinstance(param_groups, str) and param_groups.lstrip()[:1] not in ("[", "{"):
        param_groups = str(_resolve(param_groups, base))
    peft = values.get("peft")
    if peft is not None and not isinstance(peft, Mapping):
        raise ConfigError(f"peft: expected a mapping of peft.LoraConfig fields, got {type(peft).__name__}")
    return RunConfig(
        model=ModelSection.parse(values["model"], base),
        tokenizer=TokenizerSection.parse(values.get("tokenizer"), base),
        data=DataSection.parse(values["data"], base),
        training=dict(training),
        param_groups=param_groups,
        metrics=tuple(metrics),
        peft=dict(peft) if peft is not None else None,
        source=source,
    )


def _check_training_keys(training: Mapping[str, Any]) -> None:
    from .training_args import LayerwiseTrainingArguments

    fields = [item.name for item in dataclasses.fields(LayerwiseTrainingArguments) if item.init]
    for key in training:
        if key == "param_groups":
            raise ConfigError("training.param_groups: give the spec in the top-level 'param_groups' section")
        if key not in fields:
            raise ConfigError(f"training.{key}: not a TrainingArguments field{did_you_mean(str(key), fields)}")


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set key.path=value`` overrides to a raw configuration.

    Values are read as YAML scalars or flow collections (``1``, ``2e-5``, ``true``, ``[a, b]``).

    Args:
        raw: The configuration as read.
        overrides: ``"section.key=value"`` strings, applied in order.

    Returns:
        A new mapping with the overrides applied.

    Raises:
        ConfigError: An override without ``=``, with an empty key, or going through a non-mapping.
    """
    result = _copy(raw)
    for override in overrides:
        key, sep, text = override.partition("=")
        path = key.strip().split(".")
        if not sep or not all(path):
            raise ConfigError(f"--set {override!r}: expected key.path=value, e.g. training.num_train_epochs=1")
        try:
            value = parse_yaml(text, f"--set {key}")
        except DocumentError as error:
            raise ConfigError(str(error)) from None
        node = result
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"--set {override!r}: {where} is not a section, it is {child!r}")
            node = child
        node[path[-1]] = value
    return result


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def default_config_text() -> str:
    """The YAML text of the built-in default run (offline Japanese sentiment)."""
    return resources.files("layerwise_trainer").joinpath("configs", DEFAULT_CONFIG_RESOURCE).read_text(encoding="utf-8")


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
