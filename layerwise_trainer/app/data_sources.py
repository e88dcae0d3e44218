"""Loading the data of a run: the built-in set, a hub data set, or local CSV/JSON/JSONL files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .run_config import ConfigError, DataSection

SPLITS = ("train", "validation", "test")
_FILE_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json"}


@dataclass(frozen=True)
class LoadedData:
    """The splits of a run, with integer labels in ``label`` and the text in ``text``.

    Args:
        splits: ``datasets.Dataset`` per split name (``train`` always; ``validation``/``test`` when given).
        label_names: The class names in id order.
    """

    splits: dict  # str -> datasets.Dataset
    label_names: tuple[str, ...]


def _load_raw(section: DataSection):  # -> datasets.DatasetDict
    import datasets

    if section.builtin is not None:
        from .ja.sentiment_data import japanese_sentiment_dataset

        return japanese_sentiment_dataset(**section.builtin)
    if section.hub is not None:
        try:
            return datasets.load_dataset(
                section.hub["path"], section.hub.get("name"), revision=section.hub.get("revision")
            )
        except Exception as error:  # not found, no network, a bad name: one line, not a traceback
            raise ConfigError(f"data.hub.path: cannot load {section.hub['path']}: {_reason(error)}") from None
    data_files: dict[str, str] = {}
    formats = set()
    for split, path in (section.files or {}).items():
        suffix = Path(path).suffix.lower()
        if suffix not in _FILE_FORMATS:
            raise ConfigError(f"data.files.{split}: expected a .csv, .json or .jsonl file, got {path}")
        if not Path(path).is_file():
            raise ConfigError(f"data.files.{split}: no such file: {path}")
        formats.add(_FILE_FORMATS[suffix])
        data_files[split] = path
    if len(formats) != 1:
        raise ConfigError(f"data.files: all files must be of one format (CSV, or JSON/JSONL), got {sorted(formats)}")
    return datasets.load_dataset(formats.pop(), data_files=data_files)


def _reason(error: Exception) -> str:
    from .hub_access import offline_reason

    if offline_reason() is not None:
        return f"it is not in the local cache, and the hub cannot be reached ({offline_reason()})"
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)[:300]


def load_data(section: DataSection) -> LoadedData:
    """Load and normalise the data of a run.

    Labels become integer ids (named by the data's ``ClassLabel``, by ``data.label_names``, or by
    their own values), the text and label columns are renamed ``text`` and ``label``, and the
    ``max_*_examples`` limits are applied.

    Raises:
        ConfigError: A missing ``train`` split, a missing column (naming the split and the columns it
            has), or labels outside ``label_names``.
    """
    raw = _load_raw(section)
    if "train" not in raw:
        raise ConfigError(f"data: the data set has no 'train' split (it has {', '.join(raw)})")
    label_names = _label_names(raw["train"], section)
    splits = {}
    for split in SPLITS:
        if split not in raw:
            continue
        dataset = raw[split]
        for column, key in ((section.text_column, "text_column"), (section.label_column, "label_column")):
            if column not in dataset.column_names:
                raise ConfigError(
                    f"data.{key}: the {split} split has no column {column!r}; it has {', '.join(dataset.column_names)}"
                )
        dataset = _with_label_ids(dataset, section, label_names, split)
        limit = section.max_train_examples if split == "train" else section.max_eval_examples
        if limit is not None and len(dataset) > limit:
            dataset = dataset.select(range(limit))
        keep = {section.text_column: "text", section.label_column: "label"}
        dataset = dataset.select_columns(list(keep)).rename_columns({k: v for k, v in keep.items() if k != v})
        splits[split] = dataset
    return LoadedData(splits=splits, label_names=label_names)


def _label_names(train, section: DataSection) -> tuple[str, ...]:
    feature = train.features.get(section.label_column)
    if section.label_names is not None:
        return section.label_names
    names = getattr(feature, "names", None)
    if names:
        return tuple(names)
    values = sorted(set(train[section.label_column]))
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        raise ConfigError(
            f"data.label_names: the labels are not integer ids ({values[:5]}...); list the class names in id order"
        )
    return tuple(str(value) for value in range(max(values) + 1))


def _with_label_ids(dataset, section: DataSection, label_names: tuple[str, ...], split: str):
    column = section.label_column
    values = set(dataset[column])
    if all(isinstance(value, str) for value in values):
        unknown = sorted(values - set(label_names))
        if unknown:
            raise ConfigError(f"data.label_names: the {split} split has labels {unknown} not in {list(label_names)}")
        import datasets

        return dataset.cast_column(column, datasets.ClassLabel(names=list(label_names)))
    outside = sorted(value for value in values if not isinstance(value, int) or not 0 <= value < len(label_names))
    if outside:
        raise ConfigError(
            f"data.{'label_names' if section.label_names else 'label_column'}: the {split} split has labels "
            f"{outside[:5]} outside 0..{len(label_names) - 1}"
        )
    return dataset
