"""The one-pass weight-decay rule gives exactly the stock Trainer's names."""

from __future__ import annotations

import pytest
import torch
from helpers import FAMILIES, tiny_model
from torch import nn
from transformers import Trainer

from layerwise_trainer.core.weight_decay import decay_parameter_names, matches_stock_rule


def stock_rule(model):
    return Trainer.get_decay_parameter_names(None, model)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_same_names_as_the_stock_trainer(family):
    model = tiny_model(family)
    assert decay_parameter_names(model) == set(stock_rule(model))


def test_the_rule_decided_segment_by_segment_gives_the_stock_names_for_every_kind_of_segment():
    """Segments that are, contain, end in or only resemble what the stock expression looks for, nested."""
    model = nn.Module()
    for path in ("pre_norm.dense", "Final_Norm.proj", "normalizer.dense", "norm_out.dense", "MyRMSNorm.proj",
                 "BiasAdder.proj", "stack.0.LayerNormish.proj", "stack.0.norm.inner", "a_.norm_.dense",
                 "ln_f", "post.attention_norm", "nested.block"):  # fmt: skip
        parent = model
        *parents, leaf = path.split(".")
        for segment in parents:
            if not hasattr(parent, segment):
                parent.add_module(segment, nn.Module())
            parent = getattr(parent, segment)
        parent.add_module(leaf, nn.LayerNorm(2) if leaf == "ln_f" else nn.Linear(2, 2))
    model.nested.block.register_parameter("norm", nn.Parameter(torch.zeros(2)))
    model.nested.block.register_parameter("scale_norm", nn.Parameter(torch.zeros(2)))
    model.nested.block.register_parameter("Bias_term", nn.Parameter(torch.zeros(2)))
    assert decay_parameter_names(model) == set(stock_rule(model))
    assert decay_parameter_names(model) >= {"normalizer.dense.weight", "norm_out.dense.weight", "a_.norm_.dense.weight"}


def test_bert_decays_weights_not_biases_or_norms():
    names = decay_parameter_names(tiny_model("bert"))
    assert "bert.encoder.layer.0.attention.self.query.weight" in names
    assert "classifier.weight" in names
    assert "classifier.bias" not in names
    assert "bert.encoder.layer.0.output.LayerNorm.weight" not in names
    assert "bert.embeddings.word_embeddings.weight" in names


def test_llama_rmsnorm_is_not_decayed():
    names = decay_parameter_names(tiny_model("llama"))
    assert "model.norm.weight" not in names
    assert "model.layers.0.input_layernorm.weight" not in names
    assert "model.layers.0.mlp.up_proj.weight" in names


def test_the_installed_transformers_uses_the_rule_this_library_knows():
    assert matches_stock_rule(stock_rule)


def test_a_different_rule_is_detected():
    assert not matches_stock_rule(lambda model: [name for name, _ in model.named_parameters() if "bias" not in name])
