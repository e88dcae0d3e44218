"""Layer ids detected from parameter names, for every architecture family, with exact expectations."""

from __future__ import annotations

import re

import pytest
from helpers import tiny_model

from layerwise_trainer import detect_layers


def _block(name: str, container: str) -> int | None:
    found = re.search(rf"(?:^|\.){container}\.(\d+)\.", name)
    return None if found is None else int(found.group(1))


def expected_single_stack(name: str, *, container: str, embeddings: tuple[str, ...], num_layers: int) -> int:
    block = _block(name, container)
    if block is not None:
        return block + 1
    if name.startswith(embeddings):
        return 0
    return num_layers + 1


SINGLE_STACK = {
    # family: (block container, prefixes of the embedding parameters, L)
    "bert": ("layer", ("bert.embeddings.",), 2),
    "roberta": ("layer", ("roberta.embeddings.",), 2),
    "deberta-v2": ("layer", ("deberta.embeddings.", "deberta.encoder.rel_embeddings."), 2),
    "electra": ("layer", ("electra.embeddings.", "electra.embeddings_project."), 2),
    "distilbert": ("layer", ("distilbert.embeddings.",), 2),
    "gpt2": ("h", ("transformer.wte.", "transformer.wpe."), 2),
    "llama": ("layers", ("model.embed_tokens.",), 2),
    "qwen2": ("layers", ("model.embed_tokens.",), 2),
    "vit": ("layers", ("vit.embeddings.",), 2),
}


@pytest.mark.parametrize("family", sorted(SINGLE_STACK))
def test_single_stack_models(family):
    container, embeddings, num_layers = SINGLE_STACK[family]
    names = [name for name, _ in tiny_model(family).named_parameters()]
    layers = detect_layers(names)
    assert layers.num_layers == num_layers
    actual = {name: layers.layer_id_of(name) for name in names}
    expected = {
        name: expected_single_stack(name, container=container, embeddings=embeddings, num_layers=num_layers)
        for name in names
    }
    assert actual == expected
    # One stack: the ids within it are the model-wide ids, so a one-stack model decays exactly as before.
    (stack,) = layers.stacks
    assert {name: layers.layer_id_in(stack, name) for name in names} == expected


def test_deberta_places_the_final_encoder_norm_after_the_blocks():
    names = [name for name, _ in tiny_model("deberta-v2").named_parameters()]
    layers = detect_layers(names)
    assert layers.layer_id_of("deberta.encoder.LayerNorm.weight") == 3
    assert layers.layer_id_of("deberta.encoder.rel_embeddings.weight") == 0


def test_albert_shares_one_block():
    # ALBERT applies one set of layer weights num_hidden_layers (3) times: LLRD can give it one rate.
    names = [name for name, _ in tiny_model("albert").named_parameters()]
    layers = detect_layers(names)
    assert layers.num_layers == 1
    for name in names:
        if ".albert_layer_groups.0." in name:
            expected = 1
        elif name.startswith(("albert.embeddings.", "albert.encoder.embedding_hidden_mapping_in.")):
            expected = 0
        else:
            assert name.startswith(("albert.pooler", "classifier."))
            expected = 2
        assert layers.layer_id_of(name) == expected, name


def test_t5_numbers_the_decoder_after_the_encoder():
    names = [name for name, _ in tiny_model("t5").named_parameters()]
    layers = detect_layers(names)
    assert layers.num_layers == 4
    for name in names:
        if name == "shared.weight":
            expected = 0
        elif name.startswith("encoder.block."):
            expected = _block(name, "block") + 1
        elif name == "encoder.final_layer_norm.weight":
            expected = 2  # between the stacks: with the encoder's top block
        elif name.startswith("decoder.block."):
            expected = 2 + _block(name, "block") + 1
        else:
            assert name == "decoder.final_layer_norm.weight"
            expected = 5
        assert layers.layer_id_of(name) == expected, name


def test_t5_nested_layer_index_does_not_count_as_a_block():
    layers = detect_layers(["encoder.block.1.layer.1.DenseReluDense.wi.weight"])
    assert layers.layer_id_of("encoder.block.1.layer.1.DenseReluDense.wi.weight") == 2


def test_bart_embeddings_anywhere_are_layer_zero():
    names = [name for name, _ in tiny_model("bart").named_parameters()]
    layers = detect_layers(names)
    assert layers.num_layers == 4
    for name in names:
        if "embed" in name or name == "model.shared.weight":
            expected = 0
        elif name.startswith("model.encoder.layers."):
            expected = _block(name, "layers") + 1
        else:
            assert name.startswith("model.decoder.layers."), name
            expected = 2 + _block(name, "layers") + 1
        assert layers.layer_id_of(name) == expected, name


def test_num_layers_override_moves_the_head():
    layers = detect_layers(["emb.weight", "encoder.layer.0.w", "encoder.layer.1.w", "head.w"])
    assert layers.layer_id_of("head.w") == 3
    assert layers.layer_id_of("head.w", num_layers=6) == 7
    assert layers.layer_id_of("encoder.layer.1.w", num_layers=6) == 2


def test_no_blocks():
    layers = detect_layers(["fc1.weight", "fc2.weight"])
    assert layers.num_layers == 0


def test_peft_and_compile_prefixes_keep_the_ids():
    names = [
        "base_model.model.bert.embeddings.word_embeddings.weight",
        "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.default.weight",
        "base_model.model.bert.encoder.layer.1.attention.self.query.lora_B.default.weight",
        "base_model.model.classifier.modules_to_save.default.weight",
    ]
    layers = detect_layers(names)
    assert [layers.layer_id_of(name) for name in names] == [0, 1, 2, 3]
