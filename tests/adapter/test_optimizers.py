"""Which optimizers take a spec: every `optim` that accepts param groups, and clear errors for the rest."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_bert
from transformers.optimization import Adafactor

from layerwise_trainer import LayerwiseTrainer, SpecError

SPEC = [
    {"name": "body", "match": "bert.*", "lr_scale": 0.1},
    {"name": "head", "match": "classifier.*", "lr": 1e-3},
]

WITH_GROUPS = {
    "adamw_torch": torch.optim.AdamW,
    "adamw_torch_fused": torch.optim.AdamW,
    "adafactor": Adafactor,
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
}


@pytest.mark.parametrize("optim", sorted(WITH_GROUPS))
def test_optimizers_that_take_groups_get_the_spec_groups(optim, make_args, data):
    trainer = LayerwiseTrainer(
        model=tiny_bert(),
        args=make_args(optim=optim, learning_rate=1e-4, weight_decay=0.01),
        train_dataset=data,
        param_groups=SPEC,
    )
    optimizer = trainer.create_optimizer()
    assert type(optimizer) is WITH_GROUPS[optim]
    assert [(group["name"], group["lr"], group["weight_decay"]) for group in optimizer.param_groups] == [
        ("body", 1e-4 * 0.1, 0.01),
        ("body", 1e-4 * 0.1, 0.0),
        ("head", 1e-3, 0.01),
        ("head", 1e-3, 0.0),
    ]
    if optim == "adamw_torch_fused":
        assert optimizer.defaults["fused"] is True
    trainer.train()
    assert trainer.state.global_step == 4


@pytest.mark.parametrize("optim", ["galore_adamw", "galore_adamw_8bit_layerwise", "apollo_adamw", "lomo", "adalomo"])
def test_optimizers_with_their_own_layout_refuse_a_spec(optim, make_args):
    with pytest.raises(SpecError) as caught:
        LayerwiseTrainer(model=tiny_bert(), args=make_args(optim=optim), param_groups=SPEC)
    assert str(caught.value) == (
        f"optim {optim!r} builds its own parameter layout and cannot take param groups; "
        "use a spec with an optimizer such as 'adamw_torch', or drop the spec"
    )


def test_an_optimizer_factory_refuses_a_spec(make_args):
    def dion_like_factory():
        return lambda model, **kwargs: torch.optim.SGD(model.parameters(), lr=0.1)

    with pytest.raises(SpecError) as caught:
        LayerwiseTrainer(
            model=tiny_bert(), args=make_args(), param_groups=SPEC, optimizer_cls_and_kwargs=(dion_like_factory, {})
        )
    assert str(caught.value) == (
        "optimizer 'dion_like_factory' is a factory that builds the optimizer from the model itself (as Dion does), "
        "so it cannot take the spec's param groups; to train with it, drop the spec and its own groups apply; for "
        "per-group rates, use the spec with an optimizer class such as 'adamw_torch' (for Muon, the spec's own muon "
        "setting or a group's optimizer: muon)"
    )


def test_optimizer_cls_and_kwargs_is_used(make_args, data):
    trainer = LayerwiseTrainer(
        model=tiny_bert(),
        args=make_args(),
        train_dataset=data,
        param_groups=SPEC,
        optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 0.5, "momentum": 0.9}),
    )
    optimizer = trainer.create_optimizer()
    assert type(optimizer) is torch.optim.SGD
    assert [group["momentum"] for group in optimizer.param_groups] == [0.9] * 4
    # The lr of optimizer_cls_and_kwargs is the base rate that lr_scale multiplies (not args.learning_rate).
    assert [group["lr"] for group in optimizer.param_groups] == [0.5 * 0.1] * 2 + [1e-3] * 2
