"""Fixtures shared by the tests, built on the tiny models and data of helpers.py."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import RandomClassificationData, tiny_bert, training_args
from transformers import BertForSequenceClassification, TrainingArguments

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
# With DeepSpeed installed (the [deepspeed] extra), accelerate imports it whenever a Trainer is built, and on a
# machine without a GPU DeepSpeed prints a warning on stdout as it guesses the CPU accelerator; the tests train on
# the CPU, and what they compare (the docs' outputs, commands run in subprocesses, which inherit this) must hold
# only their own lines.
os.environ.setdefault("DS_ACCELERATOR", "cpu")


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


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
