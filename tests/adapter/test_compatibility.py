"""Compatibility matrix: every `optim` the installed transformers knows, peft LoRA, gradient checkpointing,
torch.compile. (Layer detection per architecture is in test_layers.py.)"""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_bert
from transformers import Trainer
from transformers.training_args import OptimizerNames

from layerwise_trainer import LayerwiseTrainer, SpecError

SPEC = [
    {"name": "body", "match": "bert.*", "lr_scale": 0.1},
    {"name": "head", "match": "classifier.*", "lr": 1e-3},
]
GROUPLESS = {
    "galore_adamw", "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise", "galore_adamw_8bit_layerwise",
    "galore_adafactor_layerwise", "apollo_adamw", "apollo_adamw_layerwise", "lomo", "adalomo",
}  # fmt: skip


def lr_of(group):
    lr = group["lr"]
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)


@pytest.mark.parametrize("optim", [name.value for name in OptimizerNames])
def test_every_optim_works_with_a_spec_or_says_why(optim, make_args):
    """Works with the spec's groups wherever the stock Trainer can build the optimizer here; a SpecError
    naming the optimizer for those that build their own layout; the stock error, unchanged, for those
    whose package or device this machine lacks."""
    args = make_args(optim=optim, learning_rate=5e-5, weight_decay=0.01)
    if optim in GROUPLESS:
        with pytest.raises(SpecError, match=f"optim '{optim}' builds its own parameter layout"):
            LayerwiseTrainer(model=tiny_bert(), args=args, param_groups=SPEC).create_optimizer()
        return
    try:
        stock = Trainer(model=tiny_bert(), args=args).create_optimizer()
    except Exception as stock_error:  # the optimizer's package or device is missing here
        with pytest.raises(type(stock_error)) as caught:
            LayerwiseTrainer(model=tiny_bert(), args=args, param_groups=SPEC).create_optimizer()
        assert str(caught.value) == str(stock_error)
        pytest.skip(f"{optim} is not available here: {stock_error}")
    optimizer = LayerwiseTrainer(model=tiny_bert(), args=args, param_groups=SPEC).create_optimizer()
    assert type(optimizer) is type(stock)
    # torchao keeps rates as float32 tensors: compare at float32 precision.
    assert [(group["name"], pytest.approx(lr_of(group), rel=1e-6), group["weight_decay"])
            for group in optimizer.param_groups] == [
        ("body", 5e-5 * 0.1, 0.01), ("body", 5e-5 * 0.1, 0.0), ("head", 1e-3, 0.01), ("head", 1e-3, 0.0),
    ]  # fmt: skip
    extra_stock_keys = set(stock.param_groups[0]) - {"params", "lr", "weight_decay", "initial_lr"}
    assert extra_stock_keys <= set(optimizer.param_groups[0])  # same defaults (betas, eps, ...) in every group


def test_peft_lora_names_under_base_model(make_args, data):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(
        tiny_bert(), peft.LoraConfig(task_type=peft.TaskType.SEQ_CLS, r=4, target_modules=["query", "value"])
    )
    base_before = model.base_model.model.bert.encoder.layer[0].attention.self.query.base_layer.weight.detach().clone()
    spec = {
        "layer_decay": 0.5,
        "unmatched": "error",
        "groups": [
            {"name": "lora_B", "match": "*.lora_B.*", "lr_scale": 16},
            {"name": "lora_A", "match": "*.lora_A.*"},
            {"name": "head", "match": "*classifier.modules_to_save.*", "lr_scale": 10, "layer_decay": 1},
        ],
    }
    trainer = LayerwiseTrainer(model=model, args=make_args(learning_rate=1e-4, max_steps=2), train_dataset=data,
                               param_groups=spec)  # fmt: skip
    trainer.train()
    rates = {group["name"]: group["initial_lr"] for group in trainer.optimizer.param_groups}
    assert rates == {
        "lora_B/layer_1": 1e-4 * 16 * 0.25, "lora_B/layer_2": 1e-4 * 16 * 0.5,
        "lora_A/layer_1": 1e-4 * 0.25, "lora_A/layer_2": 1e-4 * 0.5,
        "head": 1e-3,
    }  # fmt: skip
    names = [
        name for group in trainer.group_plan.groups if group.name == "lora_B/layer_1" for name in group.parameter_names
    ]
    assert names == [
        "base_model.model.bert.encoder.layer.0.attention.self.query.lora_B.default.weight",
        "base_model.model.bert.encoder.layer.0.attention.self.value.lora_B.default.weight",
    ]
    after = model.base_model.model.bert.encoder.layer[0].attention.self.query.base_layer.weight
    assert torch.equal(after, base_before)


def test_gradient_checkpointing_changes_nothing(make_args, data):
    def train(checkpointing):
        model = tiny_bert()
        args = make_args(gradient_checkpointing=checkpointing, max_steps=3, weight_decay=0.01)
        spec = {"layer_decay": 0.5, "groups": [{"name": "head", "match": "classifier.*", "lr": 1e-3}]}
        trainer = LayerwiseTrainer(model=model, args=args, train_dataset=data, param_groups=spec)
        trainer.train()
        return trainer.group_plan, model.state_dict()

    plain_plan, plain = train(False)
    checkpointed_plan, checkpointed = train(True)
    assert checkpointed_plan == plain_plan
    for name, value in plain.items():
        torch.testing.assert_close(checkpointed[name], value, msg=name)


def test_torch_compile_through_the_trainer(make_args, data):
    def train(compile_model):
        model = tiny_bert()
        args = make_args(torch_compile=compile_model, torch_compile_backend="eager", max_steps=2)
        trainer = LayerwiseTrainer(model=model, args=args, train_dataset=data, param_groups=SPEC)
        trainer.train()
        return trainer

    compiled, plain = train(True), train(False)
    assert type(compiled.model_wrapped).__name__ == "OptimizedModule"
    assert compiled.group_plan == plain.group_plan


def test_a_compiled_model_given_to_the_trainer(make_args, data):
    compiled = torch.compile(tiny_bert(), backend="eager")
    assert next(name for name, _ in compiled.named_parameters()).startswith("_orig_mod.")
    # A compiled module's forward takes (*args, **kwargs): the Trainer cannot tell which columns to keep.
    args = make_args(max_steps=1, remove_unused_columns=False)
    trainer = LayerwiseTrainer(model=compiled, args=args, train_dataset=data, param_groups=SPEC)
    trainer.train()
    assert trainer.group_plan.groups[2].parameter_names == ("classifier.weight",)
