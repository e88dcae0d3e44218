"""New token rows with a peft LoRA body, against peft's own ``trainable_token_indices`` on the same task.

peft trains the chosen rows as a separate tensor per matrix (``trainable_tokens_delta``, initialised to those rows)
and builds the matrix with them at every forward (``index_copy``); a row group trains the rows of the matrix in
place. Both are AdamW on the same rows with the same gradients, so with the same rates the two runs must agree bit
for bit: the new rows, the LoRA weights and the losses.
"""

from __future__ import annotations

import pytest
import torch
from helpers import RandomTokenData, training_args
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise_trainer import LayerwiseTrainer, LayerwiseTrainingArguments

peft = pytest.importorskip("peft", reason="the [peft] extra is not installed")

OLD, ADDED, STEPS = 32, 4, 5
NEW_IDS = list(range(OLD, OLD + ADDED))
ROWS = {
    "groups": [
        {"name": "new_tokens", "match": ["*.embed_tokens.weight", "*.lm_head.weight"], "rows": "new", "lr": 1e-2},
        {"name": "lora", "match": "*.lora_*", "lr": 2e-3},
    ]
}
PEFT_DELTAS = {
    "groups": [
        {"name": "new_tokens", "match": "*.trainable_tokens_delta.*", "lr": 1e-2},
        {"name": "lora", "match": "*.lora_*", "lr": 2e-3},
    ]
}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("base")
    config = LlamaConfig(vocab_size=OLD, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def lora_model(base, **lora):
    model = LlamaForCausalLM.from_pretrained(base)
    torch.manual_seed(1)
    model.resize_token_embeddings(OLD + ADDED, mean_resizing=False)
    torch.manual_seed(2)  # the same LoRA weights in both runs
    return peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], **lora))


def trained(model, spec, output_dir):
    args = training_args(output_dir, LayerwiseTrainingArguments, max_steps=STEPS, weight_decay=0.1,
                         lr_scheduler_type="constant", per_device_train_batch_size=4, max_grad_norm=0)  # fmt: skip
    trainer = LayerwiseTrainer(model=model, args=args, train_dataset=RandomTokenData(32, vocab_size=OLD + ADDED),
                               param_groups=spec)  # fmt: skip
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def runs(base, tmp_path_factory):
    ours = lora_model(base)
    initial = {name: parameter.detach().clone() for name, parameter in ours.named_parameters()}
    peft_own = lora_model(base, trainable_token_indices={"embed_tokens": NEW_IDS, "lm_head": NEW_IDS})
    return (
        trained(ours, ROWS, tmp_path_factory.mktemp("rows")),
        trained(peft_own, PEFT_DELTAS, tmp_path_factory.mktemp("peft")),
        initial,
    )


def matrices(model):
    base_model = model.get_base_model()
    return base_model.model.embed_tokens, base_model.lm_head


def test_the_row_group_trains_the_new_rows_exactly_as_peft_s_trainable_tokens(runs):
    ours, theirs, _ = runs
    for our_layer, their_layer in zip(matrices(ours.model), matrices(theirs.model), strict=True):
        our_weight = our_layer.weight
        their_rows = their_layer.token_adapter.trainable_tokens_delta["default"]
        assert torch.equal(our_weight[OLD:], their_rows)
    our_lora = {name: p for name, p in ours.model.named_parameters() if "lora_" in name}
    their_lora = {name: p for name, p in theirs.model.named_parameters() if "lora_" in name}
    assert our_lora.keys() == their_lora.keys() and len(our_lora) == 8
    assert all(torch.equal(our_lora[name], their_lora[name]) for name in our_lora)
    losses = [[entry["loss"] for entry in run.state.log_history if "loss" in entry] for run in (ours, theirs)]
    assert losses[0] == losses[1] and len(losses[0]) == STEPS


def test_the_old_rows_and_the_base_weights_stay_bit_identical(runs):
    ours, _, initial = runs
    for name, parameter in ours.model.named_parameters():
        if "lora_" in name:
            assert not torch.equal(parameter, initial[name]), name
        elif name.endswith(("embed_tokens.weight", "lm_head.weight")):
            assert torch.equal(parameter[:OLD], initial[name][:OLD]), name
            assert not torch.equal(parameter[OLD:], initial[name][OLD:]), name
        else:
            assert torch.equal(parameter, initial[name]), name


def test_peft_saves_the_resized_matrices_with_the_adapter(runs, tmp_path):
    ours, _, _ = runs
    ours.model.save_pretrained(tmp_path)  # save_embedding_layers="auto": the vocabulary grew since the base
    saved = load_file(tmp_path / "adapter_model.safetensors")
    embedding, head = matrices(ours.model)
    assert torch.equal(saved["base_model.model.model.embed_tokens.weight"], embedding.weight.detach())
    assert torch.equal(saved["base_model.model.lm_head.weight"], head.weight.detach())


def test_the_matrices_peft_froze_are_given_back_frozen(base, tmp_path):
    model = lora_model(base)
    embedding, head = matrices(model)
    LayerwiseTrainer(model=model, args=training_args(tmp_path), param_groups=ROWS).create_optimizer()
    assert embedding.weight.requires_grad and head.weight.requires_grad  # trained through their new rows
    LayerwiseTrainer(model=model, args=training_args(tmp_path), param_groups=[{"name": "lora", "match": "*.lora_*"}])
    assert not embedding.weight.requires_grad and not head.weight.requires_grad  # as peft left them
