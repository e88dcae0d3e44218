"""TRL's SFTTrainer and DPOTrainer with a spec: real CPU runs of a tiny Llama, with and without a LoRA adapter."""

from __future__ import annotations

import pytest

pytest.importorskip("trl", reason="the [downstream] extra is not installed")

from peft import LoraConfig
from tiny_downstream import logged_rates, moved, preference_data, snapshot, text_data, tiny_llama, word_tokenizer
from trl import DPOConfig, SFTConfig

from layerwise_trainer.downstream import LayerwiseDPOTrainer, LayerwiseSFTTrainer

RUN = dict(
    max_steps=2,
    per_device_train_batch_size=4,
    logging_steps=1,
    learning_rate=1e-3,
    lr_scheduler_type="constant",
    report_to=[],
    use_cpu=True,
    save_strategy="no",
    disable_tqdm=True,
    seed=0,
)
# LLRD over the decoder, the embeddings and the LM head in one group of their own at a tenth of the rate.
LLRD = {
    "layer_decay": 0.5,
    "groups": [
        {"name": "embeddings", "match": ["model.embed_tokens.*", "lm_head.*"], "lr_scale": 0.1, "layer_decay": 1},
        {"name": "final_norm", "match": "model.norm.*", "freeze": True},
        {"name": "decoder", "match": "model.layers.*"},
    ],
}
# The final norm (layer id 3) is the top: the blocks get 0.5^2 and 0.5 of the rate.
LLRD_RATES = {"embeddings": 1e-4, "decoder/layer_1": 2.5e-4, "decoder/layer_2": 5e-4}
# LoRA+ with layer decay: B at 16x A, each split by layer; the LM head trained in full (modules_to_save).
LORA_PLUS = {
    "layer_decay": 0.5,
    "unmatched": "error",
    "groups": [
        {"name": "lm_head", "match": "*.lm_head.modules_to_save.*", "lr_scale": 0.1, "layer_decay": 1},
        {"name": "lora_A", "match": "*.lora_A.*"},
        {"name": "lora_B", "match": "*.lora_B.*", "lr_scale": 16},
    ],
}
LORA_PLUS_RATES = {
    "lm_head": 1e-4,
    "lora_A/layer_1": 2.5e-4,
    "lora_A/layer_2": 5e-4,
    "lora_B/layer_1": 4e-3,
    "lora_B/layer_2": 8e-3,
}
LORA = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"])


def optimizer_rates(trainer) -> dict[str, float]:
    return {group["name"]: group["lr"] for group in trainer.optimizer.param_groups}


def check_llrd_run(trainer, model, before) -> None:
    assert optimizer_rates(trainer) == pytest.approx(LLRD_RATES, rel=1e-12)
    optimized = {id(parameter) for group in trainer.optimizer.param_groups for parameter in group["params"]}
    assert optimized == {id(parameter) for name, parameter in model.named_parameters() if name != "model.norm.weight"}
    expected = {"learning_rate": 1e-3, **{f"learning_rate/{name}": rate for name, rate in LLRD_RATES.items()}}
    expected["learning_rate/final_norm"] = 0.0
    assert logged_rates(trainer.state.log_history) == [pytest.approx(expected, rel=1e-12)] * 2
    changed = moved(before, model.named_parameters())
    assert [name for name, did in changed.items() if not did] == ["model.norm.weight"]


def check_lora_plus_run(trainer, before) -> None:
    assert optimizer_rates(trainer) == pytest.approx(LORA_PLUS_RATES, rel=1e-12)
    trainable = {name for name, parameter in trainer.model.named_parameters() if parameter.requires_grad}
    assert len(trainable) == 9  # 2 layers x (q, v) x (A, B), and the LM head's trained copy
    expected = {"learning_rate": 1e-3, **{f"learning_rate/{name}": rate for name, rate in LORA_PLUS_RATES.items()}}
    assert logged_rates(trainer.state.log_history) == [pytest.approx(expected, rel=1e-12)] * 2
    changed = moved(before, trainer.model.named_parameters())
    assert {name for name, did in changed.items() if did} == trainable


def test_sft_with_layer_decay_and_an_embeddings_group(tmp_path):
    model = tiny_llama()
    trainer = LayerwiseSFTTrainer(
        model=model,
        args=SFTConfig(str(tmp_path), **RUN),
        train_dataset=text_data(),
        processing_class=word_tokenizer(),
        param_groups=LLRD,
    )
    before = snapshot(model.named_parameters())
    trainer.train()
    check_llrd_run(trainer, model, before)


def test_sft_with_a_lora_adapter_and_lora_plus(tmp_path):
    trainer = LayerwiseSFTTrainer(
        model=tiny_llama(),
        args=SFTConfig(str(tmp_path), **RUN),
        train_dataset=text_data(),
        processing_class=word_tokenizer(),
        peft_config=LORA,
        param_groups=LORA_PLUS,
    )
    before = snapshot(trainer.model.named_parameters())
    trainer.train()
    check_lora_plus_run(trainer, before)


def test_dpo_with_layer_decay_and_an_embeddings_group(tmp_path):
    model = tiny_llama()
    trainer = LayerwiseDPOTrainer(
        model=model,
        ref_model=tiny_llama(),  # a model built from a config has no hub id to load the reference from
        args=DPOConfig(str(tmp_path), **RUN),
        train_dataset=preference_data(),
        processing_class=word_tokenizer(),
        param_groups=LLRD,
    )
    before = snapshot(model.named_parameters())
    trainer.train()
    check_llrd_run(trainer, model, before)


def test_dpo_with_a_lora_adapter_and_lora_plus(tmp_path):
    trainer = LayerwiseDPOTrainer(
        model=tiny_llama(),
        args=DPOConfig(str(tmp_path), **RUN),
        train_dataset=preference_data(),
        processing_class=word_tokenizer(),
        peft_config=LORA,
        param_groups=LORA_PLUS,
    )
    before = snapshot(trainer.model.named_parameters())
    trainer.train()
    check_lora_plus_run(trainer, before)
