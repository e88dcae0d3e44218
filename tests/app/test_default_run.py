"""The built-in default run of `layerwise-trainer train`, on a shrunk budget: what it saves and prints."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from datasets.fingerprint import Hasher

from layerwise_trainer.app.ja.sentiment_data import generate_reviews
from layerwise_trainer.app.ja.tokenizer import build_japanese_tokenizer
from layerwise_trainer.app.pipeline import _TokenizeTexts, _training_arguments, run_training
from layerwise_trainer.app.run_config import ConfigError, load_run_config

# The default config, small: the same code path in a few seconds.
SHRINK = [
    "data.builtin.num_examples=300",
    "tokenizer.train.vocab_size=600",
    "tokenizer.max_length=32",
    "model.from_config.hidden_size=32",
    "model.from_config.intermediate_size=64",
    "model.from_config.num_hidden_layers=2",
    "model.from_config.num_attention_heads=2",
    "training.num_train_epochs=2",
    "training.logging_steps=1",
]
LONG_TEXT = "".join(row["text"] for row in generate_reviews(60))  # far past 128 positions


def shrunk_default(output_dir: Path, *overrides: str):
    return load_run_config(
        None, [*SHRINK, f"training.output_dir={output_dir}", "training.disable_tqdm=true", *overrides]
    )


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return run_training(shrunk_default(tmp_path_factory.mktemp("default") / "out"))


def training_losses(output_dir: Path) -> list[float]:
    state = json.loads((output_dir / "trainer_state.json").read_text(encoding="utf-8"))
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


# ---- The saved model takes any input -----------------------------------------------------------------


def test_the_saved_tokenizer_promises_the_runs_max_length(default_run):
    model = transformers.AutoModelForSequenceClassification.from_pretrained(default_run.output_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(default_run.output_dir)
    assert model.config.max_position_embeddings == 128
    assert tokenizer.model_max_length == 32
    assert len(tokenizer(LONG_TEXT, truncation=True)["input_ids"]) == 32


def test_the_saved_model_classifies_a_text_longer_than_its_positions(default_run):
    classify = transformers.pipeline("text-classification", model=str(default_run.output_dir), device="cpu")
    tokenizer = transformers.AutoTokenizer.from_pretrained(default_run.output_dir)
    assert len(tokenizer(LONG_TEXT)["input_ids"]) > 128
    (prediction,) = classify(LONG_TEXT, truncation=True)
    assert prediction["label"] in ("positive", "neutral", "negative")
    assert 0 < prediction["score"] <= 1


def test_a_max_length_past_the_models_positions_is_a_config_error(tmp_path):
    config = shrunk_default(tmp_path / "out", "tokenizer.max_length=200")
    with pytest.raises(ConfigError) as raised:
        run_training(config)
    assert str(raised.value) == (
        "tokenizer.max_length: 200, but the model takes at most 128 tokens (max_position_embeddings); "
        "expected a max_length of at most 128"
    )


# ---- The same config gives the same run ------------------------------------------------------------


def test_two_runs_of_one_config_are_bit_identical(default_run, tmp_path):
    again = run_training(shrunk_default(tmp_path / "again"))

    first, second = default_run.output_dir, again.output_dir
    assert (first / "vocab.txt").read_text(encoding="utf-8") == (second / "vocab.txt").read_text(encoding="utf-8")
    assert len(training_losses(first)) == 16  # 240 examples, batch 32, 2 epochs
    assert training_losses(first) == training_losses(second)
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert default_run.metrics["test"]["test_loss"] == again.metrics["test"]["test_loss"]


def test_the_tokenising_transform_has_one_fingerprint_for_one_vocabulary(tmp_path):
    texts = [row["text"] for row in generate_reviews(100)]
    first = build_japanese_tokenizer(texts, tmp_path / "first", vocab_size=300)
    second = build_japanese_tokenizer(texts, tmp_path / "second", vocab_size=300)
    assert Hasher.hash(_TokenizeTexts(first, 32)) == Hasher.hash(_TokenizeTexts(second, 32))
    assert Hasher.hash(_TokenizeTexts(first, 32)) != Hasher.hash(_TokenizeTexts(first, 64))


def test_the_tokenising_transform_pickles_with_its_mecab_tokenizer(tmp_path):
    texts = [row["text"] for row in generate_reviews(100)]
    transform = _TokenizeTexts(build_japanese_tokenizer(texts, tmp_path / "tok", vocab_size=300), 8)
    batch = {"text": ["映画は最高でした。", LONG_TEXT]}
    assert pickle.loads(pickle.dumps(transform))(batch)["input_ids"] == transform(batch)["input_ids"]
    assert [len(ids) for ids in transform(batch)["input_ids"]] == [8, 8]


def test_pinned_memory_is_off_without_an_accelerator_unless_the_config_says(tmp_path):
    assert _training_arguments(shrunk_default(tmp_path)).dataloader_pin_memory is torch.accelerator.is_available()
    explicit = shrunk_default(tmp_path, "training.dataloader_pin_memory=true")
    assert _training_arguments(explicit).dataloader_pin_memory is True


# ---- What the command prints -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> subprocess.CompletedProcess:
    """`layerwise-trainer train` on the shrunk default, stdout and stderr captured (neither is a terminal)."""
    workdir = tmp_path_factory.mktemp("console")
    overrides = [argument for setting in SHRINK for argument in ("--set", setting)]
    command = [
        sys.executable,
        "-m",
        "layerwise_trainer.app.cli",
        "train",
        *overrides,
        "--set",
        "training.output_dir=out",
    ]
    environment = {**os.environ, "PYTHONWARNINGS": "default"}
    completed = subprocess.run(command, cwd=workdir, env=environment, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


@pytest.fixture(scope="module")
def console(finished_run) -> str:
    """What a user reads: stdout and stderr together."""
    return finished_run.stdout + finished_run.stderr


def test_the_run_prints_one_line_per_epoch(console):
    lines = [line for line in console.replace("\r", "\n").splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    for line in lines:
        assert ": train loss " in line and ", eval loss " in line and ", eval accuracy " in line
        assert ", eval f1_weighted " in line


def test_the_run_prints_no_log_dicts(console):
    assert "{'loss'" not in console and "'learning_rate/" not in console and "{'eval_loss'" not in console


def test_the_run_prints_no_datasets_hashing_warning(console):
    assert "couldn't be hashed" not in console


def test_the_run_prints_no_pin_memory_warning_on_a_cpu(console):
    assert "pin_memory" not in console


def test_the_run_prints_the_final_table(console):
    assert "param groups:" in console and "test: accuracy " in console


def test_stderr_that_is_not_a_terminal_gets_no_progress_bars(finished_run):
    # A bar redraws itself with carriage returns and cursor-up codes (\x1b[A), kept as they are in a file.
    assert "\x1b[" not in finished_run.stderr and "\r" not in finished_run.stderr
    assert "it/s]" not in finished_run.stderr and "examples/s]" not in finished_run.stderr


def test_a_terminal_keeps_the_progress_bars(tmp_path, monkeypatch):
    from layerwise_trainer.app import cli

    monkeypatch.setattr(cli.sys.stderr, "isatty", lambda: True, raising=False)
    assert cli._progress_bars_on_a_terminal_only() is True
    config = load_run_config(None, [*SHRINK, f"training.output_dir={tmp_path}"])
    assert _training_arguments(config, progress_bars=True).disable_tqdm is False
    assert _training_arguments(config, progress_bars=False).disable_tqdm is True
    assert _training_arguments(shrunk_default(tmp_path), progress_bars=True).disable_tqdm is True  # the config says
