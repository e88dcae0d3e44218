"""Resume across a change of groups: optimizer state carried by parameter name (issue 13)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import RandomClassificationData, tiny_bert, training_args
from transformers import Trainer, TrainerCallback

from layerwise_trainer import LayerwiseTrainer
from layerwise_trainer import checkpoints as transfer_module
from layerwise_trainer.checkpoints import (
    LAYOUT_FILE,
    CheckpointLayoutError,
    check_transfer_supported,
    optimizer_layout,
    plan_layout,
    plan_transfer,
)
from layerwise_trainer.core.group_scheduler import GroupRateFactor, GroupScheduler
from layerwise_trainer.schedulers import ProportionalReduceLROnPlateau, ScheduleNotCarried, continue_schedule
from layerwise_trainer.training_args import LayerwiseTrainingArguments

SPEC = {
    "groups": [
        {"name": "embeddings", "match": "bert.embeddings.*", "freeze": True},
        {"name": "low", "match": "bert.encoder.layer.0.*", "lr": 1e-3},
        {"name": "high", "match": "bert.encoder.layer.1.*", "lr": 1e-3},
        {"name": "head", "match": ["classifier.*", "bert.pooler.*"], "lr": 3e-3},
    ]
}
# The embeddings unfrozen, `low` renamed, `high`'s rate changed, `head` split in two.
CHANGED = {
    "groups": [
        {"name": "embeddings", "match": "bert.embeddings.*", "lr": 1e-4},
        {"name": "lower", "match": "bert.encoder.layer.0.*", "lr": 1e-3},
        {"name": "high", "match": "bert.encoder.layer.1.*", "lr": 2e-3},
        {"name": "pooler", "match": "bert.pooler.*", "lr": 3e-3},
        {"name": "classifier", "match": "classifier.*", "lr": 3e-3},
    ]
}
SCHEDULE = dict(lr_scheduler_type="linear", warmup_steps=2, weight_decay=0.01)


def linear_factor(step):
    """transformers' linear schedule for 6 steps with 2 warm-up steps."""
    return step / 2 if step < 2 else (6 - step) / 4


class LoadedState(TrainerCallback):
    """The optimizer state by parameter name and the group rates at on_train_begin, just after the resume's load."""

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        names = {id(parameter): name for name, parameter in model.named_parameters()}
        self.requires_grad = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
        self.state = {
            names[id(parameter)]: {key: value.clone() for key, value in entry.items()}
            for parameter, entry in optimizer.state.items()
        }
        self.groups = [
            (group["name"], group["lr"], [names[id(parameter)] for parameter in group["params"]])
            for group in optimizer.param_groups
        ]


def saved_state_by_name(checkpoint, layout_groups):
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    names = {}
    for param_group, group in zip(saved["param_groups"], layout_groups, strict=True):
        names.update(zip(param_group["params"], [name for name, _ in group["parameters"]], strict=True))
    return {names[index]: entry for index, entry in saved["state"].items()}


def group_rates(trainer):
    return [
        (entry["step"], {key: value for key, value in entry.items() if key.startswith("learning_rate/")})
        for entry in trainer.state.log_history
        if "loss" in entry
    ]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """Six steps with spec A, a checkpoint after step 3."""
    root = tmp_path_factory.mktemp("saved")
    args = training_args(root, save_strategy="steps", save_steps=3, max_steps=6, **SCHEDULE)
    trainer = LayerwiseTrainer(
        model=tiny_bert(), args=args, train_dataset=RandomClassificationData(), param_groups=SPEC
    )
    trainer.train()
    return trainer, root / "checkpoint-3"


@pytest.fixture(scope="module")
def stock_checkpoint(tmp_path_factory):
    """Three steps of the stock Trainer: two param groups, no layout file."""
    root = tmp_path_factory.mktemp("stock")
    args = training_args(root, save_strategy="steps", save_steps=3, max_steps=3, **SCHEDULE)
    Trainer(model=tiny_bert(), args=args, train_dataset=RandomClassificationData()).train()
    return root / "checkpoint-3"


def resume(tmp_path, checkpoint, spec, max_steps=6, switch=True, **overrides):
    args = training_args(
        tmp_path / "resumed", LayerwiseTrainingArguments, max_steps=max_steps, resume_with_changed_groups=switch,
        **{**SCHEDULE, **overrides},
    )  # fmt: skip
    loaded = LoadedState()
    trainer = LayerwiseTrainer(
        model=tiny_bert(), args=args, train_dataset=RandomClassificationData(), param_groups=spec, callbacks=[loaded]
    )
    trainer.train(resume_from_checkpoint=str(checkpoint))
    return trainer, loaded


@pytest.fixture(scope="module")
def changed_resume(saved_run, tmp_path_factory):
    """The resume with spec CHANGED, and what its ranks compared (recorded in place of the comparison)."""
    _, checkpoint = saved_run
    compared = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transfer_module, "check_same_on_every_rank", lambda value, what: compared.append((value, what)))
        trainer, loaded = resume(tmp_path_factory.mktemp("changed"), checkpoint, CHANGED)
    loaded.compared = compared
    return trainer, loaded


def test_every_carried_state_is_the_saved_state_of_that_parameter_name(saved_run, changed_resume):
    _, checkpoint = saved_run
    _, loaded = changed_resume
    layout = json.loads((checkpoint / LAYOUT_FILE).read_text())
    saved = saved_state_by_name(checkpoint, layout["groups"])
    assert len(saved) == 36 and set(loaded.state) == set(saved)  # the embeddings start with no state
    for name, entry in saved.items():
        assert set(loaded.state[name]) == {"step", "exp_avg", "exp_avg_sq"}
        for key, value in entry.items():
            assert torch.equal(loaded.state[name][key], value), (name, key)


def test_the_groups_and_rates_are_the_new_specs_at_the_saved_step(changed_resume):
    _, loaded = changed_resume
    factor = linear_factor(3)
    assert [(name, lr) for name, lr, _ in loaded.groups] == [
        ("embeddings", 1e-4 * factor), ("embeddings", 1e-4 * factor), ("lower", 1e-3 * factor),
        ("lower", 1e-3 * factor), ("high", 2e-3 * factor), ("high", 2e-3 * factor), ("pooler", 3e-3 * factor),
        ("pooler", 3e-3 * factor), ("classifier", 3e-3 * factor), ("classifier", 3e-3 * factor),
    ]  # fmt: skip
    assert loaded.groups[6][2] == ["bert.pooler.dense.weight"]
    assert loaded.groups[9][2] == ["classifier.bias"]


def test_training_continues_at_the_saved_step_with_the_new_rates(changed_resume):
    trainer, _ = changed_resume
    rates = {"embeddings": 1e-4, "lower": 1e-3, "high": 2e-3, "pooler": 3e-3, "classifier": 3e-3}
    assert [(step, rates) for step, rates in group_rates(trainer) if step > 3] == [
        (step, {f"learning_rate/{name}": rate * linear_factor(step - 1) for name, rate in rates.items()})
        for step in (4, 5, 6)
    ]
    assert trainer.state.global_step == 6


def test_the_report_says_what_was_carried_started_fresh_and_changed(changed_resume):
    trainer, _ = changed_resume
    rows = [(row.label, len(row.carried), len(row.fresh), len(row.dropped), row.changes)
            for row in trainer.resume_transfer.groups]  # fmt: skip
    assert rows == [
        ("embeddings", 0, 3, 0, ()), ("embeddings (no-decay half)", 0, 2, 0, ()), ("lower", 6, 0, 0, ()),
        ("lower (no-decay half)", 10, 0, 0, ()), ("high", 6, 0, 0, ("lr 0.001 -> 0.002",)),
        ("high (no-decay half)", 10, 0, 0, ("lr 0.001 -> 0.002",)), ("pooler", 1, 0, 0, ()),
        ("pooler (no-decay half)", 1, 0, 0, ()), ("classifier", 1, 0, 0, ()),
        ("classifier (no-decay half)", 1, 0, 0, ()),
    ]  # fmt: skip
    output = Path(trainer.args.output_dir)
    written = json.loads((output / "resume_transfer.json").read_text())
    assert written["groups"] == trainer.resume_transfer.to_data()
    markdown = (output / "resume_transfer.md").read_text().splitlines()
    assert markdown[0].startswith("Optimizer state carried by parameter name from ")
    assert markdown[2:5] == [
        "| group | carried | fresh | dropped | changed hyperparameters |",
        "| --- | ---: | ---: | ---: | --- |",
        "| embeddings | 0 | 3 | 0 | - |",
    ]
    assert "| high | 6 | 0 | 0 | lr 0.001 -> 0.002 |" in markdown


def test_with_the_same_spec_the_switch_changes_nothing(saved_run, tmp_path):
    uninterrupted, checkpoint = saved_run
    resumed, _ = resume(tmp_path, checkpoint, SPEC)
    assert resumed.resume_transfer is None  # the layouts match: today's exact resume
    after_resume = [(step, rates) for step, rates in group_rates(resumed) if step > 3]
    assert after_resume == [(step, rates) for step, rates in group_rates(uninterrupted) if step > 3]
    for name, value in uninterrupted.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, msg=name)


def current_side(spec, model=None, optimizer_cls=torch.optim.AdamW, **kwargs):
    """The plan, layout and optimizer param groups a trainer with ``spec`` would resume into."""
    args = training_args("unused", weight_decay=0.01)
    trainer = LayerwiseTrainer(model=model or tiny_bert(), args=args, param_groups=spec)
    plan = trainer.group_plan
    kwargs = kwargs or {"betas": (0.9, 0.999), "eps": 1e-8}
    layout = plan_layout(plan, optimizer_layout(optimizer_cls, kwargs))
    param_groups = optimizer_cls(plan.optimizer_param_groups(), **kwargs).state_dict()["param_groups"]
    return plan, layout, param_groups


def test_the_same_layout_carries_every_state_to_its_own_position(saved_run):
    _, checkpoint = saved_run
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    plan, layout, param_groups = current_side(SPEC)
    transfer = plan_transfer(checkpoint, saved, layout, param_groups, plan, [])
    assert transfer.state_dict["state"].keys() == saved["state"].keys()
    for index, entry in saved["state"].items():
        assert transfer.state_dict["state"][index] is entry
    assert all(not row.fresh and not row.dropped and not row.changes for row in transfer.groups)


def test_a_stock_checkpoint_resumed_with_a_spec_carries_its_adam_state(stock_checkpoint, tmp_path):
    resumed, loaded = resume(tmp_path, stock_checkpoint, SPEC, max_steps=4)
    model = tiny_bert()
    decay = set(Trainer.get_decay_parameter_names(None, model))
    names = [name for name, _ in model.named_parameters()]
    order = [name for name in names if name in decay] + [name for name in names if name not in decay]
    saved = torch.load(stock_checkpoint / "optimizer.pt", weights_only=True)
    assert [len(group["params"]) for group in saved["param_groups"]] == [17, 24]
    by_name = dict(zip(order, [saved["state"][index] for index in range(len(order))], strict=True))
    trained = [name for name in names if not name.startswith("bert.embeddings.")]
    assert set(loaded.state) == set(trained)
    for name in trained:
        for key, value in by_name[name].items():
            assert torch.equal(loaded.state[name][key], value), (name, key)
    rows = {row.label: (len(row.carried), len(row.fresh), len(row.dropped)) for row in resumed.resume_transfer.groups}
    assert rows == {
        "low": (6, 0, 0), "low (no-decay half)": (10, 0, 0), "high": (6, 0, 0), "high (no-decay half)": (10, 0, 0),
        "head": (2, 0, 0), "head (no-decay half)": (2, 0, 0), "stock": (0, 0, 3), "stock (no-decay half)": (0, 0, 2),
    }  # fmt: skip
    assert resumed.state.global_step == 4
    assert [(step, rates) for step, rates in group_rates(resumed) if step > 3] == [
        (
            4,
            {
                "learning_rate/low": 1e-3 * 0.5,
                "learning_rate/high": 1e-3 * 0.5,
                "learning_rate/head": 3e-3 * 0.5,
                "learning_rate/embeddings": 0.0,
            },
        )
    ]  # linear over 4 steps: (4 - 3) / 2


def test_a_changed_layout_without_the_switch_is_refused_naming_it(saved_run, tmp_path):
    _, checkpoint = saved_run
    with pytest.raises(CheckpointLayoutError) as caught:
        resume(tmp_path, checkpoint, CHANGED, switch=False)
    assert str(caught.value).splitlines()[-1] == (
        "Resume with the spec the checkpoint was saved with, or start a new run from its weights (without "
        "resume_from_checkpoint), or set resume_with_changed_groups=True to carry the optimizer state over by "
        "parameter name."
    )


def test_a_stock_checkpoint_of_another_trainable_set_is_refused(stock_checkpoint):
    saved = torch.load(stock_checkpoint / "optimizer.pt", weights_only=True)
    model = tiny_bert()
    model.bert.pooler.dense.weight.requires_grad_(False)  # the user froze it: the stock groups would be smaller
    plan, layout, param_groups = current_side(SPEC, model)
    with pytest.raises(CheckpointLayoutError) as caught:
        plan_transfer(
            stock_checkpoint, saved, layout, param_groups, plan, Trainer.get_decay_parameter_names(None, model)
        )
    assert str(caught.value) == (
        f"cannot resume from {stock_checkpoint} with resume_with_changed_groups: it has no layout file, and its "
        "optimizer's param groups hold [17, 24] tensors where the stock Trainer would build decay and no-decay "
        "groups of [16, 24] for this model: it was saved with another model, other frozen parameters or another "
        "decay rule, and the names of its state cannot be checked"
    )


def test_a_stock_checkpoint_of_another_model_is_refused(stock_checkpoint):
    saved = torch.load(stock_checkpoint / "optimizer.pt", weights_only=True)
    model = tiny_bert(intermediate_size=24)
    plan, layout, param_groups = current_side(SPEC, model)
    with pytest.raises(CheckpointLayoutError) as caught:
        plan_transfer(
            stock_checkpoint, saved, layout, param_groups, plan, Trainer.get_decay_parameter_names(None, model)
        )
    assert str(caught.value) == (
        f"cannot resume from {stock_checkpoint} with resume_with_changed_groups: it has no layout file, and its "
        "state 'exp_avg' at position 7 has shape [32, 16] where the stock Trainer's layout puts "
        "'bert.encoder.layer.0.intermediate.dense.weight' of shape [24, 16]: it was saved with another model, "
        "and the names of its state cannot be checked"
    )


def test_another_optimizer_is_refused(saved_run, stock_checkpoint):
    _, checkpoint = saved_run
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    plan, layout, param_groups = current_side(CHANGED, optimizer_cls=torch.optim.SGD, momentum=0.9)
    with pytest.raises(CheckpointLayoutError) as caught:
        plan_transfer(checkpoint, saved, layout, param_groups, plan, [])
    assert str(caught.value) == (
        f"cannot resume from {checkpoint} with resume_with_changed_groups: it was saved with "
        "torch.optim.adamw.AdamW and the optimizer now is torch.optim.sgd.SGD: their states hold other tensors"
    )
    stock = torch.load(stock_checkpoint / "optimizer.pt", weights_only=True)
    with pytest.raises(CheckpointLayoutError, match="it was saved by another optimizer: SGD needs 'dampening'"):
        plan_transfer(stock_checkpoint, stock, layout, param_groups, plan, [])


def test_an_optimizer_whose_state_is_not_per_parameter_is_refused(saved_run):
    _, checkpoint = saved_run
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    plan, layout, param_groups = current_side(CHANGED)
    lbfgs = {**layout, "optimizer": {"class": "torch.optim.lbfgs.LBFGS", "kwargs": {}}}
    with pytest.raises(CheckpointLayoutError) as caught:
        plan_transfer(checkpoint, saved, lbfgs, param_groups, plan, [])
    assert str(caught.value).endswith(
        "with resume_with_changed_groups: torch.optim.lbfgs.LBFGS keeps its state for all parameters together, "
        "not per parameter"
    )
    saved["state"][0]["history"] = [torch.zeros(1)]
    with pytest.raises(CheckpointLayoutError) as caught:
        plan_transfer(checkpoint, saved, layout, param_groups, plan, [])
    assert str(caught.value).endswith(
        "AdamW keeps state that is not per parameter (a list under 'bert.encoder.layer.0.attention.self.query."
        "weight'), which cannot be carried by parameter name"
    )


@pytest.mark.parametrize("backend", ["is_fsdp_enabled", "is_deepspeed_enabled"])
def test_fsdp_and_deepspeed_are_refused(backend):
    with pytest.raises(CheckpointLayoutError) as caught:
        check_transfer_supported(SimpleNamespace(**{backend: True}), "ckpt")
    name = "FSDP" if backend == "is_fsdp_enabled" else "DeepSpeed"
    assert str(caught.value) == (
        f"cannot resume from ckpt with resume_with_changed_groups: {name} saves sharded or flattened optimizer "
        "state that names no parameter, so it cannot be carried by name; resume with the spec the checkpoint "
        "was saved with, or start a new run from its weights"
    )


def test_only_the_step_position_of_a_saved_schedule_continues():
    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([{"params": [parameter], "lr": 0.5}])
    factor = GroupRateFactor(start=0, warmup=0, length=10, shape="linear")
    scheduler = GroupScheduler(optimizer, [factor], [0], factor)
    continue_schedule(scheduler, {"last_epoch": 4, "_step_count": 5, "base_lrs": [9.0], "group_starts": [0, 0]})
    assert (scheduler.last_epoch, scheduler.base_lrs, optimizer.param_groups[0]["lr"]) == (4, [0.5], 0.5 * 0.6)
    stock = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    continue_schedule(stock, {"last_epoch": 3, "_step_count": 4, "base_lrs": [9.0, 9.0], "lr_lambdas": [None]})
    assert (stock.last_epoch, optimizer.param_groups[0]["lr"], stock.get_last_lr()) == (3, 0.5 / 4, [0.5 / 4])
    with pytest.raises(ScheduleNotCarried, match="the position of a StepLR cannot be carried to other groups"):
        continue_schedule(torch.optim.lr_scheduler.StepLR(optimizer, 2), {"last_epoch": 3})


def test_a_plateau_schedule_continues_from_the_saved_base_rate_with_the_new_ratios():
    parameters = [torch.nn.Parameter(torch.zeros(1)) for _ in range(3)]
    saved_optimizer = torch.optim.AdamW(
        [{"params": [p], "lr": rate} for p, rate in zip(parameters, [1e-3, 1e-3, 3e-3], strict=True)]
    )
    saved = ProportionalReduceLROnPlateau(saved_optimizer, [1e-3, 1e-3, 3e-3], 1e-3, patience=0, factor=0.5)
    saved.step(1.0)
    saved.step(2.0)  # worse: the base rate halves
    optimizer = torch.optim.AdamW([{"params": [parameters[0]], "lr": 1e-4}, {"params": parameters[1:], "lr": 2e-3}])
    scheduler = ProportionalReduceLROnPlateau(optimizer, [1e-4, 2e-3], 1e-3, patience=0, factor=0.5)
    continue_schedule(scheduler, saved.state_dict())
    assert (scheduler.base_rate, scheduler.group_rates) == (5e-4, [1e-4, 2e-3])
    assert [group["lr"] for group in optimizer.param_groups] == [1e-4 * 0.5, 2e-3 * 0.5]
    assert scheduler.best == 1.0


def test_a_group_that_starts_later_keeps_its_carried_state_and_waits(saved_run, tmp_path):
    _, checkpoint = saved_run
    staged = {"groups": [*SPEC["groups"][:2], {**SPEC["groups"][2], "start": 5, "warmup": 0}, SPEC["groups"][3]]}
    resumed, loaded = resume(tmp_path, checkpoint, staged)
    high = [name for name, _, names in loaded.groups if name == "high" for name in names]
    layout = json.loads((checkpoint / LAYOUT_FILE).read_text())
    saved = saved_state_by_name(checkpoint, layout["groups"])
    assert len(high) == 16 and all(torch.equal(loaded.state[name]["exp_avg"], saved[name]["exp_avg"]) for name in high)
    assert [lr for name, lr, _ in loaded.groups if name == "high"] == [0.0, 0.0]
    assert not any(loaded.requires_grad[name] for name in high)
    assert all(resumed.model.get_parameter(name).requires_grad for name in high)  # started at step 5
    assert [rates["learning_rate/high"] for step, rates in group_rates(resumed) if step > 3][:2] == [0.0, 0.0]


def test_a_checkpoint_without_optimizer_state_has_nothing_to_carry(saved_run, tmp_path, caplog):
    _, checkpoint = saved_run
    copy = tmp_path / "checkpoint-3"
    shutil.copytree(checkpoint, copy)
    (copy / "optimizer.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="layerwise_trainer.checkpoints"):
        resumed, loaded = resume(tmp_path, copy, CHANGED, max_steps=4)
    assert f"{copy} has no optimizer.pt: there is no optimizer state to carry" in caplog.text
    assert resumed.resume_transfer is None and loaded.state == {}
    assert resumed.state.global_step == 4


def test_without_optimizer_state_the_schedule_still_continues_from_the_saved_step(saved_run, tmp_path):
    _, checkpoint = saved_run
    copy = tmp_path / "checkpoint-3"
    shutil.copytree(checkpoint, copy)
    (copy / "optimizer.pt").unlink()
    resumed, loaded = resume(tmp_path, copy, CHANGED)
    rates = {"embeddings": 1e-4, "lower": 1e-3, "high": 2e-3, "pooler": 3e-3, "classifier": 3e-3}
    assert [(name, lr) for name, lr, _ in loaded.groups][::2] == [(name, rate * linear_factor(3))
                                                                 for name, rate in rates.items()]  # fmt: skip
    assert [(step, rates) for step, rates in group_rates(resumed) if step > 3] == [
        (step, {f"learning_rate/{name}": rate * linear_factor(step - 1) for name, rate in rates.items()})
        for step in (4, 5, 6)
    ]


def test_every_rank_compares_its_transfer_before_loading_it(changed_resume):
    trainer, loaded = changed_resume
    rows = json.dumps(trainer.resume_transfer.to_data(), sort_keys=True).encode("utf-8")
    assert loaded.compared == [(hashlib.sha256(rows).hexdigest(), "the optimizer state transfers")]
