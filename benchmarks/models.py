"""Models and data the benchmarks train or inspect."""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

# Five tensors-holding modules per block: 10 tensors (weights and biases) per block.
TENSORS_PER_BLOCK = 10


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.attention = nn.Linear(width, width)
        self.output = nn.Linear(width, width)
        self.LayerNorm = nn.LayerNorm(width)
        self.intermediate = nn.Linear(width, width)
        self.output_norm = nn.LayerNorm(width)


class WideModel(nn.Module):
    """A transformer-shaped model of about ``num_tensors`` parameter tensors (embeddings, blocks, head)."""

    def __init__(self, num_tensors: int, width: int = 4) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(16, width)
        self.layers = nn.ModuleList(_Block(width) for _ in range(max(num_tensors // TENSORS_PER_BLOCK, 1)))
        self.classifier = nn.Linear(width, 2)


class _Experts(nn.Module):
    def __init__(self, count: int, width: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(_Block(width) for _ in range(count))


class DeepWideModel(nn.Module):
    """A model of about ``num_tensors`` parameter tensors in ``num_blocks`` transformer blocks.

    Each block holds many sub-blocks (as a mixture of experts does), so that layer-wise decay gives a realistic
    number of groups: ``layers.<block>.experts.<expert>.<module>.<weight or bias>``.
    """

    def __init__(self, num_tensors: int, num_blocks: int = 24, width: int = 4) -> None:
        super().__init__()
        per_block = max(num_tensors // (TENSORS_PER_BLOCK * num_blocks), 1)
        self.embeddings = nn.Embedding(16, width)
        self.layers = nn.ModuleList(_Experts(per_block, width) for _ in range(num_blocks))
        self.classifier = nn.Linear(width, 2)


BERT_SIZES = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def bert(size: str, seed: int = 0, dropout: float = 0.1) -> BertForSequenceClassification:
    """A BERT classifier of ``size`` (``tiny``, ``small``: hidden 256 x 4 layers, ``base``: 109.5M parameters).

    ``dropout`` sets BERT's hidden and attention dropout (0.1 is BERT's default).
    """
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522, max_position_embeddings=512, num_labels=3, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, **BERT_SIZES[size],
    )  # fmt: skip
    return BertForSequenceClassification(config)


class TokenData(torch.utils.data.Dataset):
    """Deterministic random token sequences with labels, all of one length."""

    def __init__(self, size: int, length: int, vocab_size: int = 30522) -> None:
        self.size, self.length, self.vocab_size = size, length, vocab_size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        input_ids = torch.randint(1, self.vocab_size, (self.length,), generator=generator)
        return {"input_ids": input_ids, "labels": torch.tensor(index % 3)}


def llrd_spec(prefix: str = "bert") -> dict:
    """LLRD over the whole body with a fast head: 13 layer ids on BERT-base, 26 groups with decay halves."""
    return {
        "layer_decay": 0.9,
        "groups": [{"name": "head", "match": ["classifier.*", f"{prefix}.pooler.*"], "lr_scale": 10, "layer_decay": 1}],
    }
