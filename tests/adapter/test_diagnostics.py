"""Per-group diagnostics: gradient norm, update ratio and weight norm per group, checked against p.grad by hand."""

from __future__ import annotations

import glob
import math
import os

import pytest
import torch
from helpers import RandomClassificationData, tiny_bert, training_args
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainerControl, TrainerState

from layerwise_trainer import LayerwiseTrainer, LayerwiseTrainingArguments
from layerwise_trainer.callbacks import GroupDiagnosticsCallback
from layerwise_trainer.core.group_statistics import (
    MAX_SLICE_BYTES,
    UPDATE,
    WEIGHT_BEFORE,
    UpdateMeasurement,
    grouped_norms,
    steps_each_parameter_alone,
)

SPEC = [
    {"name": "head", "match": "classifier.*", "lr": 1e-2},
    {"name": "embeddings", "match": "bert.embeddings.*", "freeze": True},
    {"name": "body", "match": "bert.*", "lr": 1e-3},
]


class Probe(TrainerCallback):
    """Records, on every step, each named group's gradients and weights before the step and weights after it."""

    def __init__(self):
        self.steps = {}

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.steps[state.global_step + 1] = {
            "grads": _by_name(optimizer, lambda p: None if p.grad is None else p.grad.detach().clone()),
            "before": _by_name(optimizer, lambda p: p.detach().clone()),
        }

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.steps[state.global_step + 1]["after"] = _by_name(optimizer, lambda p: p.detach().clone())


def _by_name(optimizer, read):
    tensors = {}
    for group in optimizer.param_groups:
        tensors.setdefault(group["name"], []).extend(read(p) for p in group["params"])
    return tensors


def norm(tensors):
    return math.sqrt(sum(float(t.double().square().sum()) for t in tensors if t is not None))


def train(tmp_path, spec=SPEC, probe=None, **overrides):
    settings = dict(max_steps=4, logging_steps=2, group_diagnostics=True, max_grad_norm=0.0, weight_decay=0.01)
    settings.update(overrides)
    args = training_args(tmp_path, arguments_class=LayerwiseTrainingArguments, **settings)
    trainer = LayerwiseTrainer(
        model=tiny_bert(), args=args, train_dataset=RandomClassificationData(), param_groups=spec,
        callbacks=[probe] if probe else None,
    )  # fmt: skip
    trainer.train()
    return trainer, [entry for entry in trainer.state.log_history if "loss" in entry]


def test_gradient_norms_and_update_ratios_equal_the_ones_computed_by_hand(tmp_path):
    probe = Probe()
    _, entries = train(tmp_path, probe=probe, gradient_accumulation_steps=2)
    assert [entry["step"] for entry in entries] == [2, 4]
    for entry in entries:
        seen = probe.steps[entry["step"]]
        for name in ("head", "body"):
            update = [after - before for after, before in zip(seen["after"][name], seen["before"][name], strict=True)]
            assert entry[f"grad_norm/{name}"] == pytest.approx(norm(seen["grads"][name]), rel=1e-6)
            assert entry[f"update_ratio/{name}"] == pytest.approx(norm(update) / norm(seen["before"][name]), rel=1e-5)
            assert entry[f"param_norm/{name}"] == pytest.approx(norm(seen["after"][name]), rel=1e-6)
        assert entry["update_ratio/head"] > 0 and entry["update_ratio/body"] > 0


def test_squares_of_group_gradient_norms_add_up_to_the_trainers_grad_norm(tmp_path):
    _, entries = train(tmp_path)
    for entry in entries:
        squares = entry["grad_norm/head"] ** 2 + entry["grad_norm/body"] ** 2
        assert math.sqrt(squares) == pytest.approx(entry["grad_norm"], rel=1e-6)


def test_gradient_norms_are_taken_before_clipping(tmp_path):
    unclipped = train(tmp_path / "off", logging_first_step=True, max_steps=1)[1][0]
    clipped = train(tmp_path / "on", logging_first_step=True, max_steps=1, max_grad_norm=1e-3)[1][0]
    assert clipped["grad_norm"] == unclipped["grad_norm"] > 1e-3
    for name in ("head", "body"):
        assert clipped[f"grad_norm/{name}"] == pytest.approx(unclipped[f"grad_norm/{name}"], rel=1e-6)


def test_diagnostics_change_no_weight(tmp_path):
    on, _ = train(tmp_path / "on")
    off, entries = train(tmp_path / "off", group_diagnostics=False)
    for (name, left), right in zip(on.model.named_parameters(), off.model.parameters(), strict=True):
        assert torch.equal(left, right), name
    assert not any(key.startswith(("grad_norm/", "update_ratio/", "param_norm/")) for key in entries[0])


def test_frozen_groups_are_left_out_and_groups_not_started_log_zero(tmp_path):
    spec = [SPEC[0], SPEC[1], {**SPEC[2], "start": 3}]
    _, entries = train(tmp_path, spec=spec)
    first, second = entries
    assert (first["grad_norm/body"], first["update_ratio/body"]) == (0.0, 0.0)
    assert first["param_norm/body"] > 0
    assert second["grad_norm/body"] > 0 and second["update_ratio/body"] > 0
    assert not any("embeddings" in key for key in first if key.split("/")[0] != "learning_rate")


def test_hyperparameters_are_logged_when_they_differ_between_groups(tmp_path):
    spec = [{**SPEC[0], "betas": [0.8, 0.99], "weight_decay": 0.0}, SPEC[2]]
    _, entries = train(tmp_path, spec=spec)
    assert {key: entries[0][key] for key in entries[0] if key.split("/")[0] in ("beta1", "beta2", "weight_decay")} == {
        "beta1/head": 0.8, "beta1/body": 0.9, "beta2/head": 0.99, "beta2/body": 0.999,
        "weight_decay/head": 0.0, "weight_decay/body": 0.01,
    }  # fmt: skip
    _, same = train(tmp_path / "same")
    assert not any(key.split("/")[0] in ("beta1", "beta2", "weight_decay", "momentum") for key in same[0])


def test_a_stock_trainer_gets_the_metrics_through_attach(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tensorboard"))
    trainer = Trainer(
        model=tiny_bert(),
        args=training_args(tmp_path, max_steps=2, logging_steps=1, report_to=["tensorboard"], weight_decay=0.01),
        train_dataset=RandomClassificationData(),
    )
    GroupDiagnosticsCallback.attach(trainer)
    trainer.train()
    entry = trainer.state.log_history[0]
    assert math.hypot(entry["grad_norm/group_0"], entry["grad_norm/group_1"]) == pytest.approx(entry["grad_norm"])
    (event_file,) = glob.glob(os.path.join(tmp_path / "tensorboard", "events.out.tfevents.*"))
    events = EventAccumulator(event_file)
    events.Reload()
    assert {"train/grad_norm/group_0", "train/update_ratio/group_1", "train/param_norm/group_0"} <= set(
        events.Tags()["scalars"]
    )
    assert [event.step for event in events.Scalars("train/update_ratio/group_0")] == [1, 2]


def test_the_argument_parser_takes_group_diagnostics():
    (args,) = HfArgumentParser(LayerwiseTrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", "out", "--group_diagnostics", "true"]
    )
    assert args.group_diagnostics is True
    assert LayerwiseTrainingArguments("out").group_diagnostics is False


def test_fp16_gradients_are_unscaled_once_before_they_are_read():
    from types import SimpleNamespace

    from layerwise_trainer.callbacks import _unscale

    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale(parameter.sum()).backward()
    assert parameter.grad.tolist() == [4.0, 4.0, 4.0]
    wrapped = SimpleNamespace(scaler=scaler, optimizer=optimizer)
    _unscale(wrapped, optimizer)
    _unscale(wrapped, optimizer)  # the Trainer's grad-norm step may have unscaled already: no second division
    assert parameter.grad.tolist() == [1.0, 1.0, 1.0]
    scaler.step(optimizer)
    assert parameter.detach().tolist() == pytest.approx([0.9, 0.9, 0.9])


# --- The update measured in slices: which optimizers, the numbers, the memory and the read-backs ---------------


class AdamWElsewhere(torch.optim.AdamW):
    """AdamW under a module outside torch.optim, declaring nothing: it is stepped whole, after a copy."""


class AdamWDeclaredPerParameter(torch.optim.AdamW):
    """An optimizer outside torch.optim that declares its step updates each parameter on its own."""

    steps_each_parameter_alone = True


class SGDDeclaredNotPerParameter(torch.optim.SGD):
    """Under torch.optim by its module, but declaring otherwise: the declaration wins."""

    steps_each_parameter_alone = False


SGDDeclaredNotPerParameter.__module__ = "torch.optim.sgd"


def _grouped_tiny_bert(seed=0):
    """A tiny BERT with random gradients, and its parameters in four groups (two hold the embeddings)."""
    model = tiny_bert(seed)
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        parameter.grad = torch.randn(parameter.shape, generator=generator)
    named = dict(model.named_parameters())
    embeddings = [p for name, p in named.items() if name.startswith("bert.embeddings.")]
    layer_0 = [p for name, p in named.items() if name.startswith("bert.encoder.layer.0.")]
    rest = [p for name, p in named.items() if not name.startswith(("bert.embeddings.", "bert.encoder.layer.0."))]
    groups = [
        {"params": embeddings[:1], "lr": 1e-3},
        {"params": embeddings[1:], "lr": 2e-3, "weight_decay": 0.0},
        {"params": layer_0, "lr": 3e-3},
        {"params": rest, "lr": 4e-3},
    ]
    return model, groups


@pytest.mark.parametrize(
    ("kind", "in_slices"),
    [
        (torch.optim.AdamW, True),
        (torch.optim.SGD, True),
        (AdamWElsewhere, False),
        (AdamWDeclaredPerParameter, True),
        (SGDDeclaredNotPerParameter, False),
        (torch.optim.LBFGS, False),
    ],
)
def test_an_optimizer_is_stepped_in_slices_when_torch_optim_or_its_class_declares_it(kind, in_slices):
    optimizer = kind([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    assert steps_each_parameter_alone(optimizer) is in_slices
    assert UpdateMeasurement(optimizer).steps_in_slices is in_slices


@pytest.mark.parametrize("max_slice_bytes", [1, 3000, 8192, MAX_SLICE_BYTES])
@pytest.mark.parametrize(
    "build",
    [
        lambda groups: torch.optim.AdamW(groups, fused=True),
        lambda groups: torch.optim.AdamW(groups, foreach=False, amsgrad=True),
        lambda groups: torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda groups: AdamWDeclaredPerParameter(groups, foreach=True),
        lambda groups: AdamWElsewhere(groups),
    ],
    ids=["adamw-fused", "adamw-amsgrad", "sgd-nesterov", "declared", "copied-whole"],
)
def test_measured_steps_give_a_plain_steps_weights_and_the_update_norms_computed_by_hand(build, max_slice_bytes):
    (plain_model, plain_groups), (model, groups) = _grouped_tiny_bert(), _grouped_tiny_bert()
    plain, measured = build(plain_groups), build(groups)
    plain.step(), measured.step()  # the state: the measured step is the second
    measurement = UpdateMeasurement(measured, max_slice_bytes=max_slice_bytes)
    before = [[p.detach().clone() for p in group["params"]] for group in measured.param_groups]
    measurement.arm()
    plain.step(), measured.step()
    for (name, left), right in zip(plain_model.named_parameters(), model.parameters(), strict=True):
        assert torch.equal(left, right), name
    keys = [(metric, index) for metric in (UPDATE, WEIGHT_BEFORE) for index in range(len(groups))]
    squares = measurement.take().sums(keys)
    for index, group in enumerate(measured.param_groups):
        update = [p.detach() - old for p, old in zip(group["params"], before[index], strict=True)]
        assert math.sqrt(squares[index]) == pytest.approx(norm(update), rel=1e-6)
        assert math.sqrt(squares[len(groups) + index]) == pytest.approx(norm(before[index]), rel=1e-6)
    assert measurement.take() is None  # measured once: the next step is not


def test_a_measured_step_copies_into_one_buffer_no_larger_than_the_slice_limit_or_the_largest_tensor(monkeypatch):
    made = []
    empty = torch.empty

    def counted(*args, **kwargs):
        tensor = empty(*args, **kwargs)
        made.append(tensor.numel() * tensor.element_size())
        return tensor

    monkeypatch.setattr(torch, "empty", counted)
    largest, every_weight = 64 * 16 * 4, 6371 * 4  # the word embeddings (64 x 16); all weights, float32
    for limit, (low, high) in {1: (largest, largest), 3000: (largest, largest), 6000: (largest + 1, 6000),
                               2**20: (every_weight, every_weight)}.items():  # fmt: skip
        _, groups = _grouped_tiny_bert()
        optimizer = torch.optim.AdamW(groups)
        measurement = UpdateMeasurement(optimizer, max_slice_bytes=limit)
        made.clear()
        measurement.arm()
        optimizer.step()
        # Below the largest tensor, that tensor is the limit; at 1 MiB every weight is in one slice (every tensor's
        # bytes a multiple of 16 but the last, so no padding).
        assert len(made) == 1 and low <= made[0] <= high, (limit, made)


def test_norms_of_half_precision_tensors_are_taken_in_float32():
    generator = torch.Generator().manual_seed(0)
    tensors = [(torch.randn(1000, generator=generator) * scale).bfloat16() for scale in (1.0, 1e-3, 30.0)]
    (value,) = grouped_norms([tensors])
    assert value == pytest.approx(norm(tensors), rel=1e-6)  # a bf16 norm keeps 3 significant digits


def test_a_logging_step_reads_its_numbers_back_from_the_device_once(tmp_path, monkeypatch):
    model, groups = _grouped_tiny_bert()
    optimizer = torch.optim.AdamW(groups, fused=True)
    args, callback = training_args(tmp_path, logging_steps=2), GroupDiagnosticsCallback()
    state, control = TrainerState(logging_steps=2, global_step=1), TrainerControl()
    callback.on_train_begin(args, state, control, optimizer=optimizer, model=model)
    reads = []
    for method in ("tolist", "item"):
        original = getattr(torch.Tensor, method)
        monkeypatch.setattr(torch.Tensor, method, lambda self, _o=original, _m=method: (reads.append(_m), _o(self))[1])
    callback.on_pre_optimizer_step(args, state, control, optimizer=optimizer)
    optimizer.step()
    callback.on_optimizer_step(args, state, control, optimizer=optimizer)
    state.global_step = 2
    logs = {"loss": 1.0, "grad_norm": 1.0, "learning_rate": 1e-3}
    callback.on_log(args, state, control, logs=logs)
    assert reads == ["tolist"]
    assert {
        f"{metric}/group_{index}" for metric in ("grad_norm", "update_ratio", "param_norm") for index in range(4)
    } <= set(logs)
