"""Loading run data: the built-in set, hub-schema files (JSONL, CSV, a local hub-style directory)."""

from __future__ import annotations

import pytest
from helpers import write_hub_schema_jsonl

from layerwise_trainer.app.data_sources import load_data
from layerwise_trainer.app.ja.sentiment_data import generate_reviews, split_rows
from layerwise_trainer.app.run_config import ConfigError, DataSection


def test_builtin():
    data = load_data(DataSection(builtin={"num_examples": 90, "seed": 3}))
    assert data.label_names == ("positive", "neutral", "negative")
    assert {split: len(rows) for split, rows in data.splits.items()} == {"train": 72, "validation": 9, "test": 9}
    assert data.splits["train"].column_names == ["text", "label"]


def test_jsonl_files_of_the_hub_schema(tmp_path):
    paths = write_hub_schema_jsonl(tmp_path)
    data = load_data(DataSection(files=paths, label_names=("positive", "neutral", "negative")))
    assert {split: len(rows) for split, rows in data.splits.items()} == {"train": 72, "validation": 9, "test": 9}
    expected = split_rows(generate_reviews(90))["test"]
    assert data.splits["test"]["text"] == [row["text"] for row in expected]
    assert data.splits["test"]["label"] == [row["label"] for row in expected]


def test_a_local_hub_style_directory(tmp_path):
    write_hub_schema_jsonl(tmp_path / "multilingual-sentiments")
    data = load_data(DataSection(hub={"path": str(tmp_path / "multilingual-sentiments")}))
    assert sorted(data.splits) == ["test", "train", "validation"]
    assert data.label_names == ("0", "1", "2")  # no ClassLabel in plain files and no label_names given


def test_csv_with_string_labels_and_other_columns(tmp_path):
    (tmp_path / "train.csv").write_text("review,sentiment\n良い,pos\n悪い,neg\n普通,neu\n", encoding="utf-8")
    section = DataSection(
        files={"train": str(tmp_path / "train.csv")}, text_column="review", label_column="sentiment",
        label_names=("pos", "neu", "neg"),
    )  # fmt: skip
    data = load_data(section)
    assert data.splits["train"]["text"] == ["良い", "悪い", "普通"]
    assert data.splits["train"]["label"] == [0, 2, 1]


def test_limits(tmp_path):
    data = load_data(DataSection(builtin={"num_examples": 90}, max_train_examples=10, max_eval_examples=3))
    assert {split: len(rows) for split, rows in data.splits.items()} == {"train": 10, "validation": 3, "test": 3}


def test_missing_column_names_the_split_and_what_it_has(tmp_path):
    paths = write_hub_schema_jsonl(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_data(DataSection(files=paths, text_column="sentence"))
    assert str(caught.value) == "data.text_column: the train split has no column 'sentence'; it has text, source, label"


def test_labels_outside_the_names(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\na,pos\nb,meh\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"data.label_names: the train split has labels \['meh'\] not in"):
        load_data(DataSection(files={"train": str(tmp_path / "train.csv")}, label_names=("pos", "neg")))


def test_string_labels_need_names(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\na,pos\nb,neg\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="data.label_names: the labels are not integer ids"):
        load_data(DataSection(files={"train": str(tmp_path / "train.csv")}))


def test_missing_file_and_mixed_formats(tmp_path):
    with pytest.raises(ConfigError, match="data.files.train: no such file"):
        load_data(DataSection(files={"train": str(tmp_path / "nope.jsonl")}))
    (tmp_path / "a.csv").write_text("text,label\na,0\n")
    (tmp_path / "b.jsonl").write_text('{"text": "a", "label": 0}\n')
    with pytest.raises(ConfigError, match="all files must be of one format"):
        load_data(DataSection(files={"train": str(tmp_path / "a.csv"), "test": str(tmp_path / "b.jsonl")}))
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(ConfigError, match="data.files.train: expected a .csv, .json or .jsonl file"):
        load_data(DataSection(files={"train": str(tmp_path / "c.txt")}))
