"""Tiny models built from configs, tiny data sets and training arguments shared by the tests."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

VOCAB_SIZE = 64
NUM_LABELS = 3


def tiny_bert_config(**overrides: object) -> BertConfig:
    settings: dict[str, object] = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=NUM_LABELS,
    )
    settings.update(overrides)
    return BertConfig(**settings)


def tiny_bert(seed: int = 0, **overrides: object) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_bert_config(**overrides))


class RandomClassificationData(torch.utils.data.Dataset):
    """Deterministic token sequences whose label is a function of the first token, so it is learnable."""

    def __init__(self, size: int = 32, length: int = 8) -> None:
        self.size = size
        self.length = length

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        input_ids = torch.randint(1, VOCAB_SIZE, (self.length,), generator=generator)
        return {"input_ids": input_ids, "labels": torch.tensor(int(input_ids[0]) % NUM_LABELS)}


def training_args(output_dir: os.PathLike[str] | str, **overrides: object) -> TrainingArguments:
    settings: dict[str, object] = dict(
        output_dir=str(output_dir),
        learning_rate=5e-5,
        per_device_train_batch_size=8,
        max_steps=4,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


@pytest.fixture
def bert() -> BertForSequenceClassification:
    return tiny_bert()


@pytest.fixture
def data() -> RandomClassificationData:
    return RandomClassificationData()


@pytest.fixture
def make_args(tmp_path: os.PathLike[str]) -> Callable[..., TrainingArguments]:
    def make(**overrides: object) -> TrainingArguments:
        return training_args(overrides.pop("output_dir", tmp_path), **overrides)

    return make


BODY_HEAD_SPEC = [
    {"name": "body", "match": "bert.*", "lr": 0},
    {"name": "head", "match": "classifier.*", "lr": 2e-5},
]


@pytest.fixture
def repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent
