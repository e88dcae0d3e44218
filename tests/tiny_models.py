"""Tiny models of every architecture family the library promises to handle, built from configs."""

from __future__ import annotations

from collections.abc import Callable

import torch
import transformers as hf
from torch import nn

_ATTENTION = dict(hidden_size=16, num_attention_heads=2, intermediate_size=32)

CONFIGS: dict[str, Callable[[], tuple[type[nn.Module], object]]] = {
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
}


def build(family: str, device: str = "meta", seed: int = 0) -> nn.Module:
    """A tiny model of ``family``, on the meta device unless told otherwise."""
    model_cls, config = CONFIGS[family]()
    torch.manual_seed(seed)
    with torch.device(device):
        return model_cls(config)
