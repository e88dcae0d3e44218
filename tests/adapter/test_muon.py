"""Muon and AdamW in one optimizer through the real Trainer: rates, starts, diagnostics, checkpoints, refusals."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import RandomTokenData, tiny_bert, tiny_model, training_args
from transformers import TrainerCallback

from layerwise_trainer import (
    CheckpointLayoutError,
    HybridOptimizer,
    LayerwiseTrainer,
    LayerwiseTrainingArguments,
    SpecError,
    resolve_groups,
)
from layerwise_trainer.checkpoints import LAYOUT_FILE, layout_differences, plan_layout
from layerwise_trainer.optimizer_choice import check_optimizers_supported

SPEC = {
    "muon": {"adjust_lr_fn": "match_rms_adamw"},
    "layer_decay": 0.5,
    "groups": [
        {"name": "embeddings", "match": "model.embed_tokens.*", "freeze": True},
        {"name": "head", "match": "lm_head.*", "lr": 1e-3, "layer_decay": 1},
    ],
}
SCHEDULE = dict(learning_rate=2e-3, lr_scheduler_type="linear", warmup_steps=2, weight_decay=0.1)
# (name, optimizer, planned rate, tensors) of the optimizer's param groups, in order.
GROUPS = [
    ("head", "adamw", 1e-3, 1),
    ("default/layer_1", "muon", 5e-4, 7),
    ("default/layer_1/adamw", "adamw", 5e-4, 2),
    ("default/layer_2", "muon", 1e-3, 7),
    ("default/layer_2/adamw", "adamw", 1e-3, 2),
    ("default/layer_3", "adamw", 2e-3, 1),
]


def linear_factor(step: int, steps: int = 6, warmup: int = 2) -> float:
    """transformers' linear schedule with warm-up, at an optimizer step (0-based)."""
    return step / warmup if step < warmup else (steps - step) / (steps - warmup)


def trainer_for(output_dir, spec=SPEC, max_steps=6, model=None, **overrides):
    arguments = dict(SCHEDULE, max_steps=max_steps, **overrides)
    args = training_args(output_dir, LayerwiseTrainingArguments, **arguments)
    model = tiny_model("llama", "cpu") if model is None else model
    return LayerwiseTrainer(model=model, args=args, train_dataset=RandomTokenData(), param_groups=spec)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    trainer = trainer_for(tmp_path_factory.mktemp("muon"), save_strategy="steps", save_steps=3)
    before = {name: parameter.detach().clone() for name, parameter in trainer.model.named_parameters()}
    trainer.train()
    return trainer, before


def test_one_hybrid_optimizer_holds_every_group_with_its_algorithm(trained):
    trainer, _ = trained
    assert type(trainer.optimizer.optimizer) is HybridOptimizer  # inside accelerate's wrapper
    groups = trainer.optimizer.param_groups
    assert [
        (group["name"], group["optimizer"], group["initial_lr"], len(group["params"])) for group in groups
    ] == GROUPS
    assert [group["weight_decay"] for group in groups] == [0.1, 0.1, 0.0, 0.1, 0.0, 0.0]
    assert all(group["adjust_lr_fn"] == "match_rms_adamw" for group in groups if group["optimizer"] == "muon")


def test_every_group_s_rate_is_logged_at_every_step_for_both_kinds(trained):
    trainer, _ = trained
    entries = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in entries] == [1, 2, 3, 4, 5, 6]
    for entry in entries:
        factor = linear_factor(entry["step"] - 1)
        logged = {key.removeprefix("learning_rate/"): value for key, value in entry.items()
                  if key.startswith("learning_rate/")}  # fmt: skip
        assert logged == {**{name: rate * factor for name, _, rate, _ in GROUPS}, "embeddings": 0.0}


def test_muon_and_adamw_keep_their_own_state_and_the_frozen_embeddings_do_not_move(trained):
    trainer, before = trained
    optimizer = trainer.optimizer.optimizer
    for group in optimizer.param_groups:
        keys = {"momentum_buffer"} if group["optimizer"] == "muon" else {"step", "exp_avg", "exp_avg_sq"}
        assert all(set(optimizer.state[parameter]) == keys for parameter in group["params"]), group["name"]
    after = dict(trainer.model.named_parameters())
    assert torch.equal(after["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
    assert not torch.equal(
        after["model.layers.0.self_attn.q_proj.weight"], before["model.layers.0.self_attn.q_proj.weight"]
    )
    assert not torch.equal(
        after["model.layers.1.input_layernorm.weight"], before["model.layers.1.input_layernorm.weight"]
    )


def test_the_checkpoint_layout_records_each_group_s_optimizer(trained):
    trainer, _ = trained
    layout = json.loads((Path(trainer.args.output_dir) / "checkpoint-3" / LAYOUT_FILE).read_text())
    assert [(group["name"], group["optimizer"]) for group in layout["groups"]] == [(n, o) for n, o, _, _ in GROUPS]
    algorithms = layout["optimizer"]["kwargs"]["algorithms"]
    assert layout["optimizer"]["class"] == "layerwise_trainer.core.hybrid_optimizer.HybridOptimizer"
    assert algorithms["muon"]["class"] == "torch.optim.Muon"
    assert algorithms["adamw"]["class"] == "torch.optim.adamw.AdamW"


def test_a_resume_mid_run_continues_exactly(trained, tmp_path):
    uninterrupted, _ = trained
    checkpoint = f"{uninterrupted.args.output_dir}/checkpoint-3"
    resumed = trainer_for(tmp_path)
    resumed.train(resume_from_checkpoint=checkpoint)

    def losses_after_the_checkpoint(trainer):
        return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry and entry["step"] > 3]

    assert len(losses_after_the_checkpoint(resumed)) == 3
    assert losses_after_the_checkpoint(resumed) == losses_after_the_checkpoint(uninterrupted)
    for (name, parameter), (_, expected) in zip(
        resumed.model.named_parameters(), uninterrupted.model.named_parameters(), strict=True
    ):
        assert torch.equal(parameter, expected), name


def test_a_resume_that_changes_a_group_s_optimizer_is_refused(trained, tmp_path):
    uninterrupted, _ = trained
    checkpoint = f"{uninterrupted.args.output_dir}/checkpoint-3"
    switched = {**SPEC, "groups": [*SPEC["groups"], {"name": "layer1", "match": "model.layers.1.*",
                                                      "optimizer": "adamw"}]}  # fmt: skip
    with pytest.raises(CheckpointLayoutError) as caught:
        trainer_for(tmp_path, spec=switched).train(resume_from_checkpoint=checkpoint)
    assert "  - group 'default/layer_2' is in the checkpoint but not in the spec now\n" in str(caught.value)


def test_the_layout_check_names_a_group_whose_optimizer_changed():
    model = tiny_model("llama")
    attention = {"name": "attention", "match": "model.layers.*.self_attn.*"}
    muon = resolve_groups(model, {"muon": {"adjust_lr_fn": "match_rms_adamw"}, "groups": [attention]},
                          learning_rate=1e-3, weight_decay=0.0)  # fmt: skip
    adamw = resolve_groups(model, {"groups": [{**attention, "optimizer": "adamw"}]}, learning_rate=1e-3,
                           weight_decay=0.0)  # fmt: skip
    differences = layout_differences(plan_layout(muon), plan_layout(adamw))
    assert "group 'attention': optimizer 'muon' in the checkpoint, 'adamw' now" in differences


def test_with_the_switch_parameters_that_change_algorithm_start_fresh_and_are_reported(trained, tmp_path):
    uninterrupted, _ = trained
    checkpoint = f"{uninterrupted.args.output_dir}/checkpoint-3"
    layer1 = {"name": "default/layer_2", "match": "model.layers.1.*", "optimizer": "adamw", "lr": 1e-3}
    switched = {**SPEC, "groups": [*SPEC["groups"], {**layer1, "name": "layer1", "layer_decay": 1}]}
    resumed = trainer_for(tmp_path, spec=switched, resume_with_changed_groups=True)
    resumed.train(resume_from_checkpoint=checkpoint)
    rows = {row["group"]: row for row in resumed.resume_transfer.to_data()}
    matrices = [f"model.layers.1.{name}.weight" for name in ("self_attn.q_proj", "self_attn.k_proj",
                                                              "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                                                              "mlp.up_proj", "mlp.down_proj")]  # fmt: skip
    assert rows["layer1"]["switched"] == matrices  # Muon's momentum cannot become Adam's moments
    assert rows["layer1"]["carried"] == []
    assert rows["layer1 (no-decay half)"]["carried"] == [
        "model.layers.1.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight",
    ]  # fmt: skip
    assert "switched optimizer" in (tmp_path / "resume_transfer.md").read_text()


class BeforeEachStep(TrainerCallback):
    """Whether the Muon matrix of layer 0 has a gradient and optimizer state, at each optimizer step."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, bool, bool]] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        matrix = model.model.layers[0].self_attn.q_proj.weight
        self.seen.append((state.global_step + 1, matrix.grad is not None, bool(optimizer.state.get(matrix))))


def test_a_group_that_starts_later_waits_at_rate_0_then_warms_up(tmp_path):
    spec = {
        "muon": {"adjust_lr_fn": "match_rms_adamw"},
        "groups": [
            {"name": "embeddings", "match": "model.embed_tokens.*", "freeze": True},
            {"name": "body", "match": "model.layers.*", "start": 3, "warmup": 2, "schedule": "constant"},
        ],
    }
    trainer = trainer_for(tmp_path, spec=spec, lr_scheduler_type="constant", warmup_steps=0)
    watch = BeforeEachStep()
    trainer.add_callback(watch)
    trainer.train()
    entries = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["learning_rate/body"] for entry in entries] == [0.0, 0.0, 0.0, 0.0, 1e-3, 2e-3]
    assert [entry["learning_rate/body/adamw"] for entry in entries] == [0.0, 0.0, 0.0, 0.0, 1e-3, 2e-3]
    assert [entry["learning_rate/default"] for entry in entries] == [2e-3] * 6
    # No gradient and no Muon state before its start; both from its first step on.
    assert watch.seen == [(1, False, False), (2, False, False), (3, False, False), (4, True, False),
                          (5, True, True), (6, True, True)]  # fmt: skip


def test_the_groups_diagnostics_cover_both_kinds_and_leave_training_bit_identical(tmp_path):
    trainer = trainer_for(tmp_path / "on", group_diagnostics=True, logging_steps=2, max_steps=4)
    trainer.train()
    plain = trainer_for(tmp_path / "off", logging_steps=2, max_steps=4)
    plain.train()
    for (name, parameter), (_, expected) in zip(
        trainer.model.named_parameters(), plain.model.named_parameters(), strict=True
    ):
        assert torch.equal(parameter, expected), name
    entry = next(entry for entry in trainer.state.log_history if "update_ratio/default/layer_1" in entry)
    for name in ("default/layer_1", "default/layer_1/adamw", "head"):
        assert entry[f"grad_norm/{name}"] > 0 and entry[f"update_ratio/{name}"] > 0, name


class MuonFactory:
    """Stands in for a Muon optimizer factory of transformers (optim names such as "muon" in later releases)."""

    def __call__(self, model, **kwargs):
        raise AssertionError("with a spec, the library builds the hybrid itself")


def test_a_muon_optimizer_of_transformers_with_a_spec_builds_the_hybrid(tmp_path):
    args = training_args(tmp_path, LayerwiseTrainingArguments, **SCHEDULE, max_steps=2)
    spec = {"groups": [{"name": "head", "match": "lm_head.*", "lr": 1e-3}]}
    factory_kwargs = {"lr": 2e-3, "momentum": 0.9, "adjust_lr_fn": "match_rms_adamw"}
    trainer = LayerwiseTrainer(
        model=tiny_model("llama", "cpu"), args=args, train_dataset=RandomTokenData(), param_groups=spec,
        optimizer_cls_and_kwargs=(MuonFactory, factory_kwargs),
    )  # fmt: skip
    optimizer = trainer.create_optimizer()
    assert type(optimizer) is HybridOptimizer
    assert [(group["name"], group["optimizer"]) for group in optimizer.param_groups] == [
        ("head", "adamw"), ("default", "muon"), ("default/adamw", "adamw"), ("default/adamw", "adamw"),
    ]  # fmt: skip
    assert optimizer.param_groups[1]["momentum"] == 0.9
    trainer.train()
    assert trainer.state.global_step == 2


@pytest.mark.parametrize(
    ("engine", "detail"),
    [("is_fsdp_enabled", "row shards of each matrix"), ("is_deepspeed_enabled", "flattened partitions")],
)
def test_muon_is_refused_under_fsdp_and_deepspeed(engine, detail):
    plan = resolve_groups(tiny_bert(), {"muon": {"adjust_lr_fn": "match_rms_adamw"}}, learning_rate=1e-3,
                          weight_decay=0.0)  # fmt: skip
    stand_in = SimpleNamespace(model=None, **{engine: True})
    with pytest.raises(SpecError) as caught:
        check_optimizers_supported(plan, stand_in)
    name = "FSDP" if engine == "is_fsdp_enabled" else "DeepSpeed"
    assert str(caught.value).startswith(
        f"muon (group 'default'): Muon is not supported under {name}: it orthogonalises each weight matrix whole, "
        f"and {name} gives the optimizer {detail}"
    )


def test_a_spec_without_muon_keeps_the_trainer_s_optimizer(tmp_path):
    trainer = trainer_for(tmp_path, spec={"groups": [{"name": "head", "match": "lm_head.*"}]}, max_steps=1)
    assert type(trainer.create_optimizer()) is torch.optim.AdamW
