"""Tiny models, tokenizers and data for the downstream Trainers' runs, built from configs, offline.

Test modules import these by name (`from tiny_downstream import tiny_llama`): pytest puts this folder on
`sys.path` for the test modules in it.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

WORDS = [f"w{index}" for index in range(40)]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sentences(count: int, seed: int = 0, length: int = 5) -> list[str]:
    generator = random.Random(seed)
    return [" ".join(generator.choices(WORDS, k=length)) for _ in range(count)]


def tiny_sentence_transformer(directory: Path):
    """A SentenceTransformer: a 2-layer BERT (hidden size 16) saved to ``directory`` and loaded, mean pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    (directory / "vocab.txt").write_text("\n".join([*SPECIAL, *WORDS]) + "\n")
    tokenizer = BertTokenizer(str(directory / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    transformer = Transformer(str(directory))
    return SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension())], device="cpu")


def pair_classification_data(count: int = 8):
    """``sentence1``, ``sentence2`` and a 3-way ``label``, for ``SoftmaxLoss``."""
    from datasets import Dataset

    return Dataset.from_dict(
        {"sentence1": sentences(count, 1), "sentence2": sentences(count, 2), "label": [i % 3 for i in range(count)]}
    )


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over `WORDS`, with pad, unk, bos and eos."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {token: index for index, token in enumerate(["<pad>", "<unk>", "<s>", "</s>", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer Llama (hidden size 16, untied LM head) over `word_tokenizer`'s vocabulary."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(WORDS) + 4,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    return LlamaForCausalLM(config)


def text_data(count: int = 8):
    from datasets import Dataset

    return Dataset.from_dict({"text": sentences(count, 3, length=6)})


def preference_data(count: int = 8):
    """``prompt``, ``chosen`` and ``rejected`` (the completions start with a space: word boundaries)."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "prompt": sentences(count, 4, length=3),
            "chosen": [" " + text for text in sentences(count, 5, length=2)],
            "rejected": [" " + text for text in sentences(count, 6, length=2)],
        }
    )


def snapshot(named_parameters) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in named_parameters}


def moved(before: dict[str, torch.Tensor], named_parameters) -> dict[str, bool]:
    """Parameter name -> whether it changed since ``before``."""
    return {name: not torch.equal(before[name], parameter.detach()) for name, parameter in named_parameters}


def logged_rates(log_history: list[dict]) -> list[dict[str, float]]:
    """Per logged training step, the ``learning_rate`` keys."""
    return [
        {key: value for key, value in entry.items() if key.startswith("learning_rate")}
        for entry in log_history
        if "loss" in entry
    ]
