"""The built-in Japanese sentiment set: schema, determinism, balance, splits and variety."""

from __future__ import annotations

from collections import Counter

import pytest

from layerwise_trainer.app.ja.sentiment_data import (
    LABEL_NAMES,
    generate_reviews,
    japanese_sentiment_dataset,
    split_rows,
)


def test_same_seed_same_rows_other_seed_other_rows():
    assert generate_reviews(300, seed=0) == generate_reviews(300, seed=0)
    assert generate_reviews(300, seed=0) != generate_reviews(300, seed=1)


def test_hub_schema_and_splits():
    data = japanese_sentiment_dataset()
    assert list(data) == ["train", "validation", "test"]
    assert [len(data[split]) for split in data] == [4800, 600, 600]
    assert data["train"].column_names == ["text", "source", "label"]
    assert data["train"].features["label"].names == ["positive", "neutral", "negative"]
    assert LABEL_NAMES == ("positive", "neutral", "negative")


def test_labels_are_balanced_and_texts_distinct():
    rows = generate_reviews(6000)
    assert Counter(row["label"] for row in rows) == {0: 2000, 1: 2000, 2: 2000}
    assert len({row["text"] for row in rows}) == 6000


def test_splits_do_not_share_texts():
    data = japanese_sentiment_dataset(1200)
    train = set(data["train"]["text"])
    assert not train & set(data["test"]["text"])
    assert not train & set(data["validation"]["text"])


def test_varied_sentences_from_every_domain():
    rows = generate_reviews(3000)
    assert {row["source"] for row in rows} == {
        "builtin/product", "builtin/restaurant", "builtin/media", "builtin/hotel", "builtin/service",
    }  # fmt: skip
    # Not one template: many different openings, endings and lengths.
    assert len({row["text"][:6] for row in rows}) > 150
    assert len({row["text"][-8:] for row in rows}) > 100
    lengths = [len(row["text"]) for row in rows]
    assert min(lengths) < 20 and max(lengths) > 80
    # Negation and contrast cross the word lists: some positive reviews contain 悪, some negative 良.
    assert any("悪" in row["text"] for row in rows if row["label"] == 0)
    assert any("良" in row["text"] for row in rows if row["label"] == 2)


def test_split_fractions():
    splits = split_rows(list(range(100)))
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [80, 10, 10]
    assert splits["train"] + splits["validation"] + splits["test"] == list(range(100))


def test_too_few_examples_is_refused():
    with pytest.raises(ValueError, match="at least 30"):
        generate_reviews(10)
