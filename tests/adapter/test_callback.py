"""Per-group learning-rate logging, on the stock Trainer and into the reporting integrations."""

from __future__ import annotations

import glob
import os

import pytest
import torch
from helpers import tiny_bert
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import Trainer, get_scheduler

from layerwise_trainer import GroupLearningRateCallback, group_learning_rates


def hand_built_optimizer(model, named: bool = True):
    body = [parameter for name, parameter in model.named_parameters() if name.startswith("bert.")]
    head = [parameter for name, parameter in model.named_parameters() if name.startswith("classifier.")]
    groups = [{"params": body, "lr": 1e-5}, {"params": head, "lr": 1e-3}]
    if named:
        groups[0]["name"], groups[1]["name"] = "body", "head"
    return torch.optim.AdamW(groups)


def training_entries(trainer):
    return [entry for entry in trainer.state.log_history if "loss" in entry]


def test_stock_trainer_with_callbacks_argument_gets_keys_in_log_history(make_args, data):
    model = tiny_bert()
    trainer = Trainer(
        model=model,
        args=make_args(lr_scheduler_type="constant"),
        train_dataset=data,
        optimizers=(hand_built_optimizer(model), None),
        callbacks=[GroupLearningRateCallback()],
    )
    trainer.train()
    entries = training_entries(trainer)
    assert len(entries) == 4
    for entry in entries:
        assert entry["learning_rate/body"] == 1e-5
        assert entry["learning_rate/head"] == 1e-3
        assert entry["learning_rate"] == 1e-5  # the stock key is left as the Trainer reports it: group 0
    assert "learning_rate/body" not in trainer.state.log_history[-1]  # the run summary


def test_unnamed_groups_are_named_by_index(make_args, data):
    model = tiny_bert()
    trainer = Trainer(
        model=model,
        args=make_args(lr_scheduler_type="constant"),
        train_dataset=data,
        optimizers=(hand_built_optimizer(model, named=False), None),
    )
    trainer.add_callback(GroupLearningRateCallback)
    trainer.train()
    assert [
        (entry["learning_rate/group_0"], entry["learning_rate/group_1"]) for entry in training_entries(trainer)
    ] == [(1e-5, 1e-3)] * 4


def test_logged_rates_are_the_rates_each_update_used(make_args, data):
    model = tiny_bert()
    args = make_args(lr_scheduler_type="linear", warmup_steps=2, max_steps=6)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        optimizers=(hand_built_optimizer(model), None),
        callbacks=[GroupLearningRateCallback()],
    )
    trainer.train()
    reference = get_scheduler(
        "linear", torch.optim.SGD([torch.zeros(1)], lr=1.0), num_warmup_steps=2, num_training_steps=6
    )
    factors = []
    for _ in range(6):
        factors.append(reference.get_last_lr()[0])
        reference.optimizer.step()
        reference.step()
    entries = training_entries(trainer)
    assert [entry["step"] for entry in entries] == [1, 2, 3, 4, 5, 6]
    assert [entry["learning_rate/head"] for entry in entries] == pytest.approx([1e-3 * f for f in factors], rel=1e-12)
    assert [entry["learning_rate/body"] for entry in entries] == pytest.approx([1e-5 * f for f in factors], rel=1e-12)
    # The Trainer's own key (group 0) agrees with the callback's group 0 at every step.
    assert [entry["learning_rate"] for entry in entries] == [entry["learning_rate/body"] for entry in entries]
    assert factors[0] == 0.0 and factors[2] == 1.0


def test_attach_reaches_tensorboard(make_args, data, tmp_path, monkeypatch):
    log_dir = tmp_path / "tensorboard"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(log_dir))
    model = tiny_bert()
    trainer = Trainer(
        model=model,
        args=make_args(lr_scheduler_type="constant", report_to=["tensorboard"]),
        train_dataset=data,
        optimizers=(hand_built_optimizer(model), None),
    )
    callback = GroupLearningRateCallback.attach(trainer)
    assert trainer.callback_handler.callbacks[0] is callback
    trainer.train()
    (event_file,) = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    events = EventAccumulator(event_file)
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/learning_rate/body", "train/learning_rate/head", "train/learning_rate"} <= set(tags)
    assert [(event.step, event.value) for event in events.Scalars("train/learning_rate/head")] == [
        (step, pytest.approx(1e-3)) for step in (1, 2, 3, 4)
    ]
    assert [event.value for event in events.Scalars("train/learning_rate/body")] == [pytest.approx(1e-5)] * 4


def test_attach_reaches_the_console_printer(make_args, data, capsys):
    model = tiny_bert()
    trainer = Trainer(
        model=model,
        args=make_args(lr_scheduler_type="constant", max_steps=1),
        train_dataset=data,
        optimizers=(hand_built_optimizer(model), None),
    )
    GroupLearningRateCallback.attach(trainer)
    trainer.train()
    printed = capsys.readouterr().out
    assert "'learning_rate/head': '0.001'" in printed
    assert "'learning_rate/body': '1e-05'" in printed


def test_added_as_a_plain_callback_it_comes_after_the_reporting_integrations(make_args, data, tmp_path, monkeypatch):
    log_dir = tmp_path / "tensorboard"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(log_dir))
    model = tiny_bert()
    trainer = Trainer(
        model=model,
        args=make_args(lr_scheduler_type="constant", max_steps=1, report_to=["tensorboard"]),
        train_dataset=data,
        optimizers=(hand_built_optimizer(model), None),
        callbacks=[GroupLearningRateCallback()],
    )
    trainer.train()
    (event_file,) = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    events = EventAccumulator(event_file)
    events.Reload()
    # TensorBoard ran before the callback, so it wrote the entry before the keys were added...
    assert "train/learning_rate/head" not in events.Tags()["scalars"]
    assert "train/learning_rate" in events.Tags()["scalars"]
    # ...while log_history has them.
    assert training_entries(trainer)[0]["learning_rate/head"] == 1e-3


def test_attach_twice_keeps_one_instance_first(make_args):
    trainer = Trainer(model=tiny_bert(), args=make_args())
    callback = GroupLearningRateCallback.attach(trainer)
    assert GroupLearningRateCallback.attach(trainer, callback) is callback
    callbacks = trainer.callback_handler.callbacks
    assert callbacks[0] is callback
    assert sum(isinstance(item, GroupLearningRateCallback) for item in callbacks) == 1


def test_base_learning_rate_and_frozen_groups(make_args, data):
    model = tiny_bert()
    optimizer = torch.optim.AdamW([{"params": list(model.classifier.parameters()), "lr": 1e-3, "name": "head"}])
    trainer = Trainer(
        model=model,
        args=make_args(lr_scheduler_type="linear", learning_rate=2e-4, max_steps=2),
        train_dataset=data,
        optimizers=(optimizer, None),
    )
    GroupLearningRateCallback.attach(trainer, base_learning_rate=2e-4, frozen_group_names=["body"])
    trainer.train()
    first, second = training_entries(trainer)
    assert (first["learning_rate"], first["learning_rate/head"], first["learning_rate/body"]) == (2e-4, 1e-3, 0.0)
    assert second["learning_rate"] == pytest.approx(1e-4)
    assert second["learning_rate/head"] == pytest.approx(5e-4)


def test_group_learning_rates_names():
    groups = [
        {"name": "head", "lr": 1e-3},
        {"name": "head", "lr": 1e-3},
        {"name": "body", "lr": torch.tensor(1e-5)},
        {"name": "body", "lr": 2e-5},
        {"lr": 3e-5},
    ]
    assert group_learning_rates(groups) == {
        "head": 1e-3,
        "body": pytest.approx(1e-5),
        "body/group_3": 2e-5,
        "group_4": 3e-5,
    }


def test_base_learning_rate_under_a_plateau_scheduler(make_args, data):
    """ReduceLROnPlateau sets no initial_lr: the initial rates are read when training begins."""
    model = tiny_bert()
    args = make_args(
        lr_scheduler_type="reduce_lr_on_plateau", lr_scheduler_kwargs={"patience": 0, "factor": 0.5},
        eval_strategy="steps", eval_steps=1, learning_rate=2e-4,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data,
                      optimizers=(hand_built_optimizer(model), None))  # fmt: skip
    GroupLearningRateCallback.attach(trainer, base_learning_rate=2e-4)
    trainer.train()
    entries = training_entries(trainer)
    assert entries[0]["learning_rate"] == 2e-4  # not group 0's 1e-5
    assert [entry["learning_rate"] for entry in entries] == pytest.approx(
        [2e-4 * entry["learning_rate/head"] / 1e-3 for entry in entries], rel=1e-12
    )
