"""A tiny LLaVA trained with the vision tower, the projector and the language model in groups of their own."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_model, training_args
from tiny_downstream import logged_rates, moved, snapshot

from layerwise_trainer import LayerwiseTrainer

# The vision tower decays within its own stack (it covers one): embeddings 0, blocks 1-2, post_layernorm 3.
# The language model's input embeddings are frozen; everything else of it, the LM head included, at 1e-4.
SPEC = {
    "groups": [
        {"name": "vision", "match": "model.vision_tower.*", "lr": 1e-3, "layer_decay": 0.5},
        {"name": "projector", "match": "model.multi_modal_projector.*", "lr": 2e-3},
        {"name": "embeddings", "match": "model.language_model.embed_tokens.*", "freeze": True},
        {"name": "language", "match": ["model.language_model.*", "lm_head.*"], "lr": 1e-4},
    ],
}
RATES = {
    "vision/layer_0": 1.25e-4,
    "vision/layer_1": 2.5e-4,
    "vision/layer_2": 5e-4,
    "vision/layer_3": 1e-3,
    "projector": 2e-3,
    "language": 1e-4,
}
# The Trainer's linear schedule over 4 steps, the factor of the rate each logged step trained with.
FACTORS = [1.0, 0.75, 0.5, 0.25]


class ImageCaptionData(torch.utils.data.Dataset):
    """Image-token placeholders, then text, with random 8x8 images; the loss is on the text tokens."""

    def __init__(self, config, size: int = 8, text_length: int = 5) -> None:
        patches = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
        # "default" drops the first feature (a CLS token in CLIP; SigLIP has none, so a patch goes).
        self.image_tokens = patches - (config.vision_feature_select_strategy == "default")
        self.image_token_id = config.image_token_id
        self.image_size = config.vision_config.image_size
        self.size = size
        self.text_length = text_length

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        text = torch.randint(1, self.image_token_id, (self.text_length,), generator=generator)
        input_ids = torch.cat([torch.full((self.image_tokens,), self.image_token_id), text])
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": torch.randn(3, self.image_size, self.image_size, generator=generator),
            "labels": torch.cat([torch.full((self.image_tokens,), -100), text]),
        }


def test_llava_trains_vision_projector_and_language_at_their_own_rates(tmp_path):
    model = tiny_model("llava", device="cpu")
    data = ImageCaptionData(model.config)
    assert data.image_tokens == 3  # (8 / 4)^2 patches, less the one "default" drops
    before = snapshot(model.named_parameters())
    args = training_args(
        tmp_path, learning_rate=1e-3, lr_scheduler_type="linear", per_device_train_batch_size=4, weight_decay=0.1
    )
    trainer = LayerwiseTrainer(model=model, args=args, train_dataset=data, param_groups=SPEC)
    trainer.train()

    # Each group is one or two torch groups: weight decay 0.1, then the Trainer's no-decay rule (biases, norms).
    param_groups = trainer.optimizer.param_groups
    assert [(group["name"], group["weight_decay"]) for group in param_groups] == [
        ("vision/layer_0", 0.1),
        ("vision/layer_0", 0.0),
        ("vision/layer_1", 0.1),
        ("vision/layer_1", 0.0),
        ("vision/layer_2", 0.1),
        ("vision/layer_2", 0.0),
        ("vision/layer_3", 0.0),  # post_layernorm: no-decay only
        ("projector", 0.1),
        ("projector", 0.0),
        ("language", 0.1),
        ("language", 0.0),
    ]
    assert [group["initial_lr"] for group in param_groups] == pytest.approx(
        [RATES[group["name"]] for group in param_groups], rel=1e-12
    )
    # The schedule sets "lr"; "initial_lr" keeps each group's own rate. The linear schedule ends at 0.
    assert {group["lr"] for group in param_groups} == {0.0}
    by_id = {id(parameter): name for name, parameter in model.named_parameters()}
    members = {name: set() for name in RATES}
    for group in param_groups:
        members[group["name"]] |= {by_id[id(parameter)] for parameter in group["params"]}
    assert members["vision/layer_0"] == {
        "model.vision_tower.embeddings.patch_embedding.weight",
        "model.vision_tower.embeddings.patch_embedding.bias",
        "model.vision_tower.embeddings.position_embedding.weight",
    }
    assert members["vision/layer_3"] == {
        "model.vision_tower.post_layernorm.weight",
        "model.vision_tower.post_layernorm.bias",
    }
    assert all(name.startswith("model.vision_tower.encoder.layers.0.") for name in members["vision/layer_1"])
    assert all(name.startswith("model.vision_tower.encoder.layers.1.") for name in members["vision/layer_2"])
    assert len(members["vision/layer_1"]) == len(members["vision/layer_2"]) == 16
    assert members["projector"] == {name for name in before if name.startswith("model.multi_modal_projector.")}
    language = {name for name in before if name.startswith("model.language_model.") or name == "lm_head.weight"}
    assert members["language"] == language - {"model.language_model.embed_tokens.weight"}

    expected = [
        {
            "learning_rate": 1e-3 * factor,
            "learning_rate/embeddings": 0.0,
            **{f"learning_rate/{name}": rate * factor for name, rate in RATES.items()},
        }
        for factor in FACTORS
    ]
    assert logged_rates(trainer.state.log_history) == [pytest.approx(entry, rel=1e-12) for entry in expected]

    # Everything moved but the frozen embeddings and the vision tower's post_layernorm: LLaVA takes the
    # image features from the encoder's hidden states (vision_feature_layer), before that norm, so it gets
    # no gradient although it is in the optimizer.
    changed = moved(before, model.named_parameters())
    assert [name for name, did in changed.items() if not did] == [
        "model.vision_tower.post_layernorm.weight",
        "model.vision_tower.post_layernorm.bias",
        "model.language_model.embed_tokens.weight",
    ]
    post_layernorm = model.model.vision_tower.post_layernorm
    assert [len(trainer.optimizer.state[parameter]) for parameter in post_layernorm.parameters()] == [0, 0]
