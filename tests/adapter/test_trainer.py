"""LayerwiseTrainer end to end: the usual recipe, schedules, arguments, subclassing, stock behaviour."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from helpers import BODY_HEAD_SPEC, RandomClassificationData, tiny_bert
from transformers import HfArgumentParser, Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, get_scheduler

from layerwise_trainer import (
    GroupLearningRateCallback,
    LayerwiseTrainer,
    LayerwiseTrainerMixin,
    LayerwiseTrainingArguments,
    SpecError,
)
from layerwise_trainer.core.parameter_names import ParameterTable
from layerwise_trainer.core.weight_decay import matches_stock_rule

TIMING_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second"}


def training_entries(trainer):
    return [entry for entry in trainer.state.log_history if "loss" in entry]


def snapshot(model):
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def without_timing(history):
    return [{key: value for key, value in entry.items() if key not in TIMING_KEYS} for entry in history]


def test_the_usual_recipe(make_args, data):
    model = tiny_bert()
    before = snapshot(model)
    args = make_args(learning_rate=5e-5, weight_decay=0.01, lr_scheduler_type="constant", max_steps=6)
    trainer = LayerwiseTrainer(model=model, args=args, train_dataset=data, param_groups=BODY_HEAD_SPEC)
    trainer.train()

    entries = training_entries(trainer)
    assert len(entries) == 6
    for entry in entries:
        assert entry["learning_rate/body"] == 0.0
        assert entry["learning_rate/head"] == 2e-05
        assert entry["learning_rate"] == 5e-05  # the base schedule, not group 0
    after = snapshot(model)
    for name in before:
        if name.startswith("bert."):
            assert torch.equal(before[name], after[name]), name
            assert not model.get_parameter(name).requires_grad
        else:
            assert not torch.equal(before[name], after[name]), name
    weight_decay = {
        id(parameter): group["weight_decay"]
        for group in trainer.optimizer.param_groups
        for parameter in group["params"]
    }
    assert weight_decay[id(model.classifier.weight)] == 0.01
    assert weight_decay[id(model.classifier.bias)] == 0.0
    assert len(trainer.optimizer.state) == 2  # Adam state for the head alone


def test_weight_decay_is_applied_to_the_head_weight(make_args, data):
    def one_step(weight_decay):
        model = tiny_bert()
        args = make_args(learning_rate=5e-5, weight_decay=weight_decay, lr_scheduler_type="constant", max_steps=1)
        LayerwiseTrainer(model=model, args=args, train_dataset=data, param_groups=BODY_HEAD_SPEC).train()
        return model

    initial = tiny_bert().classifier.weight.detach().clone()
    decayed, plain = one_step(0.01), one_step(0.0)
    # AdamW decays decoupled from the gradient: w <- w - lr * wd * w - lr * update; the update is the same.
    torch.testing.assert_close(decayed.classifier.weight, plain.classifier.weight - 2e-5 * 0.01 * initial)
    assert torch.equal(decayed.classifier.bias, plain.classifier.bias)


STEP_SCHEDULES = {
    "linear": {},
    "cosine": {},
    "cosine_with_restarts": {"num_cycles": 2},
    "polynomial": {"lr_end": 1e-7, "power": 2.0},
    "constant": {},
    "constant_with_warmup": {},
    "inverse_sqrt": {},
    "cosine_with_min_lr": {"min_lr": 1e-6},
    "cosine_warmup_with_min_lr": {"min_lr_rate": 0.1},
    "warmup_stable_decay": {"num_decay_steps": 2},
}


def reference_rates(schedule, kwargs, base_lr, warmup, total):
    """The stock schedule on a one-group optimizer at the base rate, before each of `total` steps."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    scheduler = get_scheduler(
        schedule, optimizer, num_warmup_steps=warmup, num_training_steps=total, scheduler_specific_kwargs=kwargs
    )
    rates = []
    for _ in range(total):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("schedule", sorted(STEP_SCHEDULES))
def test_every_step_schedule_keeps_the_ratios_between_groups(schedule, make_args, data):
    base_lr, total, warmup = 1e-4, 6, 2
    args = make_args(
        learning_rate=base_lr,
        lr_scheduler_type=schedule,
        lr_scheduler_kwargs=STEP_SCHEDULES[schedule],
        warmup_steps=warmup,
        max_steps=total,
    )
    spec = {
        "layer_decay": 0.5,
        "groups": [
            {"name": "embeddings", "match": "bert.embeddings.*", "lr": 0},
            {"name": "head", "match": "classifier.*", "lr": 1e-3, "layer_decay": 1},
        ],
    }
    trainer = LayerwiseTrainer(model=tiny_bert(), args=args, train_dataset=data, param_groups=spec)
    trainer.train()
    reference = reference_rates(schedule, STEP_SCHEDULES[schedule], base_lr, warmup, total)
    initial = {"head": 1e-3, **{f"default/layer_{i}": base_lr * 0.5 ** (3 - i) for i in (1, 2, 3)}}
    entries = training_entries(trainer)
    assert len(entries) == total
    for entry, base_rate in zip(entries, reference, strict=True):
        factor = base_rate / base_lr
        assert entry["learning_rate"] == pytest.approx(base_rate, rel=1e-12, abs=1e-18)
        assert entry["learning_rate/embeddings"] == 0.0
        for name, rate in initial.items():
            assert entry[f"learning_rate/{name}"] == pytest.approx(rate * factor, rel=1e-12, abs=1e-18), (name, entry)
    assert set(initial) | {"embeddings"} == {
        key.split("/", 1)[1] for key in entries[0] if key.startswith("learning_rate/")
    }


@pytest.mark.parametrize(
    ("schedule", "kwargs", "metrics"),
    [
        ("reduce_lr_on_plateau", {"patience": 0, "factor": 0.5, "min_lr": 2e-5}, [1.0, 2.0, 3.0, 4.0, 5.0, 0.5]),
        ("greedy", {"patience": 0, "factor": 0.5, "min_lr": 2e-5, "max_lr": 2e-4}, [5, 4, 3, 2, 1, 2, 3, 4, 5, 6]),
    ],
)
def test_plateau_schedules_keep_the_ratios_between_groups(schedule, kwargs, metrics, make_args, data):
    base_lr = 1e-4
    args = make_args(
        learning_rate=base_lr, lr_scheduler_type=schedule, lr_scheduler_kwargs=kwargs, eval_strategy="steps"
    )
    spec = [{"name": "head", "match": "classifier.*", "lr": 1e-3}, {"name": "body", "match": "bert.*", "lr": 1e-6}]
    trainer = LayerwiseTrainer(model=tiny_bert(), args=args, train_dataset=data, eval_dataset=data, param_groups=spec)
    trainer.create_optimizer()
    scheduler = trainer.create_scheduler(num_training_steps=10)
    assert trainer.args.lr_scheduler_kwargs == kwargs  # the arguments are left as they were
    reference_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    reference = get_scheduler(schedule, reference_optimizer, scheduler_specific_kwargs=kwargs)
    moved = False
    for metric in metrics:
        scheduler.step(metric)
        reference.step(metric)
        base_rate = reference_optimizer.param_groups[0]["lr"]
        moved |= base_rate != base_lr
        for group in trainer.optimizer.param_groups:
            ratio = {"head": 10.0, "body": 0.01}[group["name"]]
            assert group["lr"] == pytest.approx(base_rate * ratio, rel=1e-9), (metric, group["name"])
    assert moved


PLATEAU_KWARGS = {
    "reduce_lr_on_plateau": {"patience": 0, "factor": 0.5},
    "greedy": {"patience": 0, "factor": 0.5, "min_lr": 0.0, "max_lr": 1.0},
}


def plateau_trainer(schedule, make_args, data):
    spec = [{"name": "head", "match": "classifier.*", "lr": 1e-3}, {"name": "body", "match": "bert.*", "lr": 1e-6}]
    args = make_args(
        learning_rate=1e-4, lr_scheduler_type=schedule, lr_scheduler_kwargs=PLATEAU_KWARGS[schedule],
        eval_strategy="steps", eval_steps=1,
    )  # fmt: skip
    return LayerwiseTrainer(model=tiny_bert(), args=args, train_dataset=data, eval_dataset=data, param_groups=spec)


@pytest.mark.parametrize("schedule", sorted(PLATEAU_KWARGS))
def test_plateau_schedules_keep_every_ratio_down_to_eps(schedule, make_args, data):
    """Forty worsening metrics: the base rate halves until a step would be below eps, and stops there."""
    trainer = plateau_trainer(schedule, make_args, data)
    trainer.create_optimizer()
    scheduler = trainer.create_scheduler(num_training_steps=10)
    reference_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-4)
    reference = get_scheduler(schedule, reference_optimizer, scheduler_specific_kwargs=PLATEAU_KWARGS[schedule])
    base_rates = []
    for metric in range(40):
        scheduler.step(metric)
        reference.step(metric)
        base_rates.append(reference_optimizer.param_groups[0]["lr"])
        head, body = trainer.optimizer.param_groups[0::2]
        assert (head["name"], body["name"]) == ("head", "body")
        assert head["lr"] == pytest.approx(base_rates[-1] * 10, rel=1e-12, abs=0), metric
        assert body["lr"] == pytest.approx(base_rates[-1] * 0.01, rel=1e-12, abs=0), metric
    assert base_rates[-1] == base_rates[-2] < 2e-8  # it stopped where a halving would move less than eps (1e-8)


@pytest.mark.parametrize("schedule", sorted(PLATEAU_KWARGS))
def test_plateau_schedules_log_the_base_schedule(schedule, make_args, data):
    trainer = plateau_trainer(schedule, make_args, data)
    trainer.train()
    entries = training_entries(trainer)
    assert entries[0]["learning_rate"] == 1e-4  # not group 0's (head's) 1e-3
    for entry in entries:
        assert entry["learning_rate"] == pytest.approx(entry["learning_rate/head"] / 10, rel=1e-12)


@pytest.mark.parametrize("schedule", sorted(PLATEAU_KWARGS))
def test_plateau_scheduler_state_is_restored(schedule, make_args, data, tmp_path):
    trainer = plateau_trainer(schedule, make_args, data)
    trainer.create_optimizer()
    scheduler = trainer.create_scheduler(num_training_steps=10)
    for metric in range(3):
        scheduler.step(metric)
    torch.save(scheduler.state_dict(), tmp_path / "scheduler.pt")
    resumed = plateau_trainer(schedule, make_args, data)
    resumed.create_optimizer()
    resumed.create_scheduler(num_training_steps=10).load_state_dict(
        torch.load(tmp_path / "scheduler.pt", weights_only=True)
    )
    rates = [group["lr"] for group in trainer.optimizer.param_groups]
    assert [group["lr"] for group in resumed.optimizer.param_groups] == rates
    assert rates[0] != 1e-3 and rates[0] == pytest.approx(rates[2] * 1000, rel=1e-12)


def test_no_spec_is_the_stock_trainer_to_the_letter(make_args, data):
    def run(trainer_cls):
        model = tiny_bert()
        trainer = trainer_cls(model=model, args=make_args(weight_decay=0.01), train_dataset=data)
        callbacks = [type(callback) for callback in trainer.callback_handler.callbacks]
        optimizer = trainer.create_optimizer()
        layout = [
            (group["weight_decay"], group["lr"], [id(parameter) for parameter in group["params"]], sorted(group))
            for group in optimizer.param_groups
        ]
        names = {id(parameter): name for name, parameter in model.named_parameters()}
        layout = [(wd, lr, [names[i] for i in ids], keys) for wd, lr, ids, keys in layout]
        result = trainer.train()
        return callbacks, layout, without_timing(trainer.state.log_history), result.training_loss, snapshot(model)

    stock, ours = run(Trainer), run(LayerwiseTrainer)
    assert ours[0] == stock[0]
    assert GroupLearningRateCallback not in ours[0]
    assert ours[1] == stock[1]
    assert ours[2] == stock[2]
    assert ours[3] == stock[3]
    for name, value in stock[4].items():
        assert torch.equal(ours[4][name], value), name


def test_spec_with_optimizers_argument_is_an_error(make_args):
    model = tiny_bert()
    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(SpecError, match=r"param_groups cannot be combined with optimizers=\(optimizer, \.\.\.\)"):
        LayerwiseTrainer(model=model, args=make_args(), optimizers=(optimizer, None), param_groups=BODY_HEAD_SPEC)


def test_a_bad_spec_fails_when_the_trainer_is_built(make_args):
    with pytest.raises(SpecError, match=r"pattern 'clasifier\.\*' matches no parameter"):
        LayerwiseTrainer(model=tiny_bert(), args=make_args(), param_groups=[{"name": "head", "match": "clasifier.*"}])


def trainable_names(model):
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def test_frozen_groups_are_frozen_when_the_optimizer_is_built(make_args):
    model = tiny_bert()
    trainer = LayerwiseTrainer(model=model, args=make_args(), param_groups=BODY_HEAD_SPEC)
    assert trainable_names(model) == {name for name, _ in model.named_parameters()}  # building changes nothing
    trainer.create_optimizer()
    assert trainable_names(model) == {"classifier.weight", "classifier.bias"}


def test_an_evaluate_only_trainer_freezes_nothing(make_args, data):
    model = tiny_bert()
    trainer = LayerwiseTrainer(model=model, args=make_args(), eval_dataset=data, param_groups=BODY_HEAD_SPEC)
    trainer.evaluate()
    assert trainable_names(model) == {name for name, _ in model.named_parameters()}


def test_a_second_trainer_trains_what_the_first_froze(make_args, data):
    """A notebook re-run: the body the first spec froze learns at the second spec's rate."""
    model = tiny_bert()
    LayerwiseTrainer(model=model, args=make_args(max_steps=1), train_dataset=data, param_groups=BODY_HEAD_SPEC).train()
    assert not model.bert.pooler.dense.weight.requires_grad
    body_before = model.bert.pooler.dense.weight.detach().clone()
    spec = [{"name": "body", "match": "bert.*", "lr": 1e-4}, {"name": "head", "match": "classifier.*", "lr": 2e-5}]
    args = make_args(max_steps=2, lr_scheduler_type="constant")
    second = LayerwiseTrainer(model=model, args=args, train_dataset=data, param_groups=spec)
    second.train()
    assert [entry["learning_rate/body"] for entry in training_entries(second)] == [1e-4, 1e-4]
    assert trainable_names(model) == {name for name, _ in model.named_parameters()}
    assert not torch.equal(model.bert.pooler.dense.weight, body_before)


def test_parameters_the_user_froze_stay_frozen(make_args, data):
    model = tiny_bert()
    for parameter in model.bert.embeddings.parameters():
        parameter.requires_grad_(False)
    LayerwiseTrainer(model=model, args=make_args(max_steps=1), train_dataset=data, param_groups=BODY_HEAD_SPEC).train()
    spec = [{"name": "body", "match": "bert.*", "lr": 1e-4}, {"name": "head", "match": "classifier.*"}]
    LayerwiseTrainer(model=model, args=make_args(max_steps=1), train_dataset=data, param_groups=spec).train()
    frozen = {name for name, _ in model.named_parameters()} - trainable_names(model)
    assert frozen == {name for name, _ in model.named_parameters() if name.startswith("bert.embeddings.")}


def counting_resolutions(monkeypatch):
    # The trainer resolves through optimizer_choice, the one path from TrainingArguments to a plan.
    import layerwise_trainer.optimizer_choice as choice_module

    calls = []
    original = choice_module.resolve_groups

    def counted(model, *args, **kwargs):
        calls.append(model)
        return original(model, *args, **kwargs)

    monkeypatch.setattr(choice_module, "resolve_groups", counted)
    return calls


def test_the_spec_is_resolved_once(make_args, data, monkeypatch):
    calls = counting_resolutions(monkeypatch)
    trainer = LayerwiseTrainer(model=tiny_bert(), args=make_args(max_steps=1), train_dataset=data,
                               param_groups=BODY_HEAD_SPEC)  # fmt: skip
    trainer.train()
    assert len(calls) == 1
    assert trainer.group_plan.parameters["classifier.weight"] is trainer.model.classifier.weight


def test_create_optimizer_hashes_each_tensor_twice_whatever_the_number_of_groups(make_args, monkeypatch):
    # torch's add_param_group hashes every tensor of the groups added before: with layer decay's dozen groups
    # that was most of building the optimizer. The plan's groups are disjoint, so torch's own two hashes of
    # each group's tensors (its duplicate and disjointness checks) are all that is left.
    trainer = LayerwiseTrainer(model=tiny_bert(), args=make_args(), param_groups={"layer_decay": 0.8})
    hashed = []
    original_hash = torch.Tensor.__hash__
    monkeypatch.setattr(torch.Tensor, "__hash__", lambda tensor: hashed.append(tensor) or original_hash(tensor))
    optimizer = trainer.create_optimizer()
    trained = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    assert len(optimizer.param_groups) >= 8
    assert len(hashed) == 2 * len(trained)


def test_create_optimizer_on_the_same_model_builds_no_name_to_tensor_dict(make_args):
    trainer = LayerwiseTrainer(model=tiny_bert(), args=make_args(), param_groups=BODY_HEAD_SPEC)
    trainer.create_optimizer()
    assert ParameterTable._by_name.attrname not in vars(trainer.group_plan.parameters)


def test_the_plan_is_mapped_onto_a_wrapped_model_by_name(make_args, monkeypatch):
    calls = counting_resolutions(monkeypatch)
    model = tiny_bert()
    trainer = LayerwiseTrainer(model=model, args=make_args(), param_groups=BODY_HEAD_SPEC)
    compiled = torch.compile(model, backend="eager")
    optimizer = trainer.create_optimizer(compiled)
    assert len(calls) == 1
    assert [(group["name"], group["params"]) for group in optimizer.param_groups] == [
        ("head", [model.classifier.weight]), ("head", [model.classifier.bias])
    ]  # fmt: skip


def test_a_module_replaced_since_construction_is_mapped_by_name(make_args, monkeypatch):
    calls = counting_resolutions(monkeypatch)
    model = tiny_bert()
    trainer = LayerwiseTrainer(model=model, args=make_args(), param_groups=BODY_HEAD_SPEC)
    model.classifier = torch.nn.Linear(16, 5)  # a new head, under the same names
    optimizer = trainer.create_optimizer()
    assert len(calls) == 1
    assert [group["params"] for group in optimizer.param_groups] == [[model.classifier.weight], [model.classifier.bias]]


def test_a_parameter_replaced_in_its_module_since_construction_is_mapped_by_name(make_args, monkeypatch):
    calls = counting_resolutions(monkeypatch)
    model = tiny_bert()
    trainer = LayerwiseTrainer(model=model, args=make_args(), param_groups=BODY_HEAD_SPEC)
    model.classifier.weight = torch.nn.Parameter(torch.zeros_like(model.classifier.weight))  # same modules
    optimizer = trainer.create_optimizer()
    assert len(calls) == 1
    assert [group["params"] for group in optimizer.param_groups] == [[model.classifier.weight], [model.classifier.bias]]


def test_a_model_frozen_differently_since_construction_is_resolved_again(make_args, monkeypatch):
    calls = counting_resolutions(monkeypatch)
    model = tiny_bert()
    spec = [{"name": "body", "match": "bert.*", "lr_scale": 0.1}, {"name": "head", "match": "classifier.*"}]
    trainer = LayerwiseTrainer(model=model, args=make_args(), param_groups=spec)
    model.bert.pooler.dense.bias.requires_grad_(False)  # the user froze one more tensor
    optimizer = trainer.create_optimizer()
    assert len(calls) == 2
    assert trainer.group_plan.frozen_before_training == ("bert.pooler.dense.bias",)
    assert all(parameter is not model.bert.pooler.dense.bias for group in optimizer.param_groups
               for parameter in group["params"])  # fmt: skip


def test_a_learning_rate_changed_after_construction_is_trained_and_logged(make_args, data):
    """As hyperparameter_search does: it sets args.learning_rate on the trainer it built."""
    spec = [{"name": "body", "match": "bert.*", "lr": 0}, {"name": "head", "match": "classifier.*", "lr_scale": 10}]
    trainer = LayerwiseTrainer(
        model=tiny_bert(), args=make_args(learning_rate=1e-4, lr_scheduler_type="constant", max_steps=2),
        train_dataset=data, param_groups=spec,
    )  # fmt: skip
    trainer.args.learning_rate = 3e-4
    trainer.train()
    assert [(entry["learning_rate"], entry["learning_rate/head"]) for entry in training_entries(trainer)] == [
        (3e-4, 3e-4 * 10)
    ] * 2


def test_a_prebuilt_scheduler_with_a_spec_is_refused(make_args):
    model = tiny_bert()
    scheduler = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(model.parameters(), lr=1e-3), lambda step: 1.0)
    with pytest.raises(SpecError) as caught:
        LayerwiseTrainer(model=model, args=make_args(), optimizers=(None, scheduler), param_groups=BODY_HEAD_SPEC)
    message = str(caught.value)
    assert message.startswith("param_groups cannot be combined with optimizers=(None, scheduler)")
    assert "TrainingArguments.lr_scheduler_type and lr_scheduler_kwargs" in message
    assert "override create_scheduler(num_training_steps, optimizer)" in message


def test_the_lr_of_optimizer_cls_and_kwargs_is_the_base_rate(make_args, data):
    base_lr, total = 1e-3, 4
    args = make_args(
        learning_rate=1e-4, lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr": 1e-4},
        max_steps=total,
    )  # fmt: skip
    spec = [{"name": "head", "match": "classifier.*", "lr_scale": 10}]
    trainer = LayerwiseTrainer(
        model=tiny_bert(), args=args, train_dataset=data, param_groups=spec,
        optimizer_cls_and_kwargs=(torch.optim.AdamW, {"lr": base_lr}),
    )  # fmt: skip
    trainer.train()
    reference = reference_rates("cosine_with_min_lr", {"min_lr": 1e-4}, base_lr, 0, total)
    entries = training_entries(trainer)
    assert [entry["learning_rate"] for entry in entries] == pytest.approx(reference, rel=1e-12)
    assert [entry["learning_rate/head"] for entry in entries] == pytest.approx([10 * r for r in reference], rel=1e-12)
    assert [entry["learning_rate/default"] for entry in entries] == pytest.approx(reference, rel=1e-12)
    assert reference[0] == base_lr and reference[-1] > 1e-4


def test_model_init_models_are_frozen_too(make_args, data):
    trainer = LayerwiseTrainer(
        model_init=lambda: tiny_bert(), args=make_args(max_steps=1), train_dataset=data, param_groups=BODY_HEAD_SPEC
    )
    trainer.train()
    assert {name for name, parameter in trainer.model.named_parameters() if parameter.requires_grad} == {
        "classifier.weight",
        "classifier.bias",
    }
    assert trainer.group_plan.frozen_group_names == ("body",)


def test_training_arguments_field_from_the_command_line(tmp_path, data):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(BODY_HEAD_SPEC))
    parser = HfArgumentParser(LayerwiseTrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(
        [
            "--output_dir",
            str(tmp_path),
            "--param_groups",
            str(spec_file),
            "--max_steps",
            "2",
            "--report_to",
            "none",
            "--use_cpu",
            "true",
            "--logging_steps",
            "1",
        ]
    )
    assert args.param_groups == str(spec_file)
    trainer = LayerwiseTrainer(model=tiny_bert(), args=args, train_dataset=data)
    trainer.train()
    assert [entry["learning_rate/head"] for entry in training_entries(trainer)] == [2e-5, 2e-5 * 0.5]


def test_training_arguments_from_a_yaml_args_file_with_an_inline_spec(tmp_path, data):
    args_file = tmp_path / "args.yaml"
    args_file.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path),
                "max_steps": 1,
                "report_to": "none",
                "use_cpu": True,
                "logging_steps": 1,
                "param_groups": json.dumps(BODY_HEAD_SPEC),
            }
        )
    )
    (args,) = HfArgumentParser(LayerwiseTrainingArguments).parse_yaml_file(str(args_file))
    trainer = LayerwiseTrainer(model=tiny_bert(), args=args, train_dataset=data)
    trainer.train()
    assert training_entries(trainer)[0]["learning_rate/body"] == 0.0


def test_constructor_spec_wins_over_the_arguments_field(tmp_path, data):
    args = LayerwiseTrainingArguments(
        output_dir=str(tmp_path), report_to=[], use_cpu=True, param_groups=json.dumps(BODY_HEAD_SPEC)
    )
    trainer = LayerwiseTrainer(model=tiny_bert(), args=args, param_groups=[{"name": "head", "match": "classifier.*"}])
    assert [group.name for group in trainer.param_groups_spec.groups] == ["head"]


def test_an_overridden_decay_rule_is_respected(make_args):
    class DecayEverything(LayerwiseTrainer):
        def get_decay_parameter_names(self, model):
            return [name for name, _ in model.named_parameters()]

    trainer = DecayEverything(model=tiny_bert(), args=make_args(weight_decay=0.1), param_groups=BODY_HEAD_SPEC)
    optimizer = trainer.create_optimizer()
    assert [(group["name"], group["weight_decay"], len(group["params"])) for group in optimizer.param_groups] == [
        ("head", 0.1, 2)
    ]


def test_mixing_into_another_trainer(tmp_path):
    class LayerwiseSeq2SeqTrainer(LayerwiseTrainerMixin, Seq2SeqTrainer):
        pass

    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, max_steps=2, logging_steps=1)
    trainer = LayerwiseSeq2SeqTrainer(
        model=tiny_bert(), args=args, train_dataset=RandomClassificationData(), param_groups=BODY_HEAD_SPEC
    )
    trainer.train()
    assert [entry["learning_rate/head"] for entry in training_entries(trainer)] == [2e-5, 1e-5]


def test_custom_compute_loss_subclass(make_args, data):
    class ScaledLoss(LayerwiseTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return loss * 0.0 if not return_outputs else loss

    model = tiny_bert()
    head_before = model.classifier.weight.detach().clone()
    trainer = ScaledLoss(model=model, args=make_args(weight_decay=0.0), train_dataset=data, param_groups=BODY_HEAD_SPEC)
    trainer.train()
    assert torch.equal(model.classifier.weight, head_before)  # zero loss, no decay: nothing moves


def test_a_spec_draws_nothing_from_the_random_stream(make_args, data):
    """Freezing by spec trains exactly as freezing by hand: same dropout masks, same losses, same head."""

    def losses_and_head(trainer_cls, **extra):
        model = tiny_bert()
        if trainer_cls is Trainer:
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(not name.startswith("bert."))
        trainer = trainer_cls(model=model, args=make_args(max_steps=3, learning_rate=2e-5), train_dataset=data, **extra)
        trainer.train()
        return [entry["loss"] for entry in training_entries(trainer)], model.classifier.weight.detach().clone()

    stock_losses, stock_head = losses_and_head(Trainer)
    matches_stock_rule.cache_clear()  # its first call builds a probe model: that must not draw either
    spec = [{"name": "body", "match": "bert.*", "lr": 0}, {"name": "head", "match": "classifier.*"}]
    our_losses, our_head = losses_and_head(LayerwiseTrainer, param_groups=spec)
    assert our_losses == stock_losses
    assert torch.equal(our_head, stock_head)
