"""Tiny models, data and training arguments shared by the tests; the fixtures built on them are in conftest.py.

Test modules import these by name (`from helpers import tiny_bert`): pytest puts tests/, the directory of
conftest.py, on `sys.path`, and tests/adapter/distributed_worker.py puts it there itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
import transformers as hf
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

VOCAB_SIZE = 64
NUM_LABELS = 3

BODY_HEAD_SPEC = [
    {"name": "body", "match": "bert.*", "lr": 0},
    {"name": "head", "match": "classifier.*", "lr": 2e-5},
]


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


class RandomTokenData(torch.utils.data.Dataset):
    """Deterministic token sequences for a causal language model (the labels are the inputs)."""

    def __init__(self, size: int = 32, length: int = 8, vocab_size: int = 30) -> None:
        self.size, self.length, self.vocab_size = size, length, vocab_size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        input_ids = torch.randint(0, self.vocab_size, (self.length,), generator=generator)
        return {"input_ids": input_ids, "labels": input_ids.clone()}


class ScriptedMetric:
    """A ``compute_metrics`` that logs, at each evaluation, the value a script gives for the trainer's step.

    Logged as ``eval_<name>``; set ``trainer`` once the trainer is built. A script keyed by the step makes a
    resumed run see the values the uninterrupted one saw.
    """

    def __init__(self, script: dict[int, float], name: str = "scripted_loss") -> None:
        self.script = dict(script)
        self.name = name
        self.trainer: hf.Trainer | None = None

    def __call__(self, prediction: object) -> dict[str, float]:
        assert self.trainer is not None, "set the trainer first"
        return {self.name: self.script[self.trainer.state.global_step]}


def training_args(
    output_dir: os.PathLike[str] | str,
    arguments_class: type[TrainingArguments] = TrainingArguments,
    **overrides: object,
) -> TrainingArguments:
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
    return arguments_class(**settings)


# Tiny models of every architecture family the library promises to handle, built from configs.

_ATTENTION = dict(hidden_size=16, num_attention_heads=2, intermediate_size=32)

# A family's name -> its model class and a tiny config of it.
FAMILIES: dict[str, Callable[[], tuple[type[nn.Module], object]]] = {
    "bert": lambda: (
        hf.BertForSequenceClassification,
        hf.BertConfig(vocab_size=30, num_hidden_layers=2, max_position_embeddings=16, num_labels=3, **_ATTENTION),
    ),
    "roberta": lambda: (
        hf.RobertaForSequenceClassification,
        hf.RobertaConfig(vocab_size=30, num_hidden_layers=2, max_position_embeddings=16, **_ATTENTION),
    ),
    "deberta-v2": lambda: (
        hf.DebertaV2ForSequenceClassification,
        hf.DebertaV2Config(
            vocab_size=30,
            num_hidden_layers=2,
            max_position_embeddings=16,
            relative_attention=True,
            position_buckets=8,
            norm_rel_ebd="layer_norm",
            **_ATTENTION,
        ),
    ),
    "electra": lambda: (
        hf.ElectraForSequenceClassification,
        hf.ElectraConfig(
            vocab_size=30, num_hidden_layers=2, embedding_size=8, max_position_embeddings=16, **_ATTENTION
        ),
    ),
    "distilbert": lambda: (
        hf.DistilBertForSequenceClassification,
        hf.DistilBertConfig(vocab_size=30, n_layers=2, dim=16, n_heads=2, hidden_dim=32, max_position_embeddings=16),
    ),
    "albert": lambda: (
        hf.AlbertForSequenceClassification,
        hf.AlbertConfig(vocab_size=30, num_hidden_layers=3, embedding_size=8, max_position_embeddings=16, **_ATTENTION),
    ),
    "gpt2": lambda: (
        hf.GPT2LMHeadModel,
        hf.GPT2Config(vocab_size=30, n_layer=2, n_embd=16, n_head=2, n_positions=16, bos_token_id=0, eos_token_id=0),
    ),
    "llama": lambda: (
        hf.LlamaForCausalLM,
        hf.LlamaConfig(
            vocab_size=30, num_hidden_layers=2, num_key_value_heads=1, tie_word_embeddings=False, **_ATTENTION
        ),
    ),
    "qwen2": lambda: (
        hf.Qwen2ForCausalLM,
        hf.Qwen2Config(vocab_size=30, num_hidden_layers=2, num_key_value_heads=1, **_ATTENTION),
    ),
    "t5": lambda: (
        hf.T5ForConditionalGeneration,
        hf.T5Config(vocab_size=30, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2, num_heads=2),
    ),
    "bart": lambda: (
        hf.BartForConditionalGeneration,
        hf.BartConfig(
            vocab_size=30,
            d_model=16,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            max_position_embeddings=16,
        ),
    ),
    "vit": lambda: (
        hf.ViTForImageClassification,
        hf.ViTConfig(image_size=8, patch_size=4, num_channels=3, num_hidden_layers=2, num_labels=3, **_ATTENTION),
    ),
    # Staged: blocks inside stages (Swin's layers.<stage>.blocks.<block>, ConvNeXt's stages.<stage>.layers.<block>).
    "swin": lambda: (
        hf.SwinForImageClassification,
        hf.SwinConfig(
            image_size=8, patch_size=2, embed_dim=8, depths=[2, 1], num_heads=[2, 2], window_size=2, num_labels=3
        ),
    ),
    "convnext": lambda: (
        hf.ConvNextForImageClassification,
        hf.ConvNextConfig(num_channels=3, num_stages=2, hidden_sizes=[8, 16], depths=[2, 1], num_labels=3),
    ),
    # Vision-language: a vision tower and a language model, two stacks of different depths.
    "llava": lambda: (
        hf.LlavaForConditionalGeneration,
        hf.LlavaConfig(
            vision_config=hf.SiglipVisionConfig(
                num_hidden_layers=2, image_size=8, patch_size=4, vision_use_head=False, **_ATTENTION
            ),
            text_config=hf.LlamaConfig(
                vocab_size=40, num_hidden_layers=3, num_key_value_heads=1, bos_token_id=0, eos_token_id=0, **_ATTENTION
            ),
            image_token_id=39,
            vision_feature_layer=-1,
        ),
    ),
    "qwen2-vl": lambda: (
        hf.Qwen2VLForConditionalGeneration,
        hf.Qwen2VLConfig(
            vision_config=dict(
                depth=2,
                embed_dim=16,
                hidden_size=16,
                num_heads=2,
                mlp_ratio=2,
                patch_size=2,
                temporal_patch_size=1,
                spatial_merge_size=1,
                in_chans=3,
            ),
            text_config=dict(
                vocab_size=40,
                num_hidden_layers=3,
                num_key_value_heads=1,
                bos_token_id=0,
                eos_token_id=0,
                rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
                **_ATTENTION,
            ),
        ),
    ),
}


def tiny_model(family: str, device: str = "meta", seed: int = 0) -> nn.Module:
    """A tiny model of ``family``, on the meta device unless told otherwise."""
    model_cls, config = FAMILIES[family]()
    torch.manual_seed(seed)
    with torch.device(device):
        return model_cls(config)


def write_hub_schema_jsonl(directory: Path, num_examples: int = 90) -> dict[str, str]:
    """The hub set's schema (text, source, label) as train/validation/test JSONL files."""
    # Imported here, not at the top: only the application's tests write hub files, and the core's tests
    # should not load the application.
    from layerwise_trainer.app.ja.sentiment_data import generate_reviews, split_rows

    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in split_rows(generate_reviews(num_examples)).items():
        path = directory / f"{split}.jsonl"
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        paths[split] = str(path)
    return paths
