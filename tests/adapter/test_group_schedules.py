"""Per-group schedules in training: exact rates per optimizer step, parameters held out until their start,
a fixed optimizer layout, exact resumes, and refusals that name the group and the key.

The expected rates are written out from transformers' documented formulas (``transformers.optimization``):
a linear warm-up ``step / warmup``, then ``constant`` 1, ``linear`` ``(length - step) / (length - warmup)``,
``cosine`` ``0.5 * (1 + cos(pi * progress))`` with ``progress = (step - warmup) / (length - warmup)``, and
a floor ``f`` as ``factor * (1 - f) + f``. A group's steps count from its own start. The Trainer logs at
step ``s`` (1-based) the rate that optimizer step ``s - 1`` used.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from helpers import RandomClassificationData, tiny_bert, training_args
from torch.optim.lr_scheduler import LambdaLR
from transformers import TrainerCallback, get_scheduler

from layerwise_trainer import LayerwiseTrainer, SpecError
from layerwise_trainer.checkpoints import CheckpointLayoutError
from layerwise_trainer.core.group_scheduler import GroupScheduler

STEPS = 10
LEARNING_RATE = 1e-3
HEAD = {"name": "head", "match": "classifier.*", "lr": 1e-3}


def body(**keys):
    return {"name": "body", "match": "bert.*", "lr": 1e-4, **keys}


def cosine(progress, floor=0.0):
    """transformers' cosine factor (``num_cycles=0.5``), term for term."""
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)) * (1 - floor) + floor)


def train(make_args, spec, data=None, callbacks=(), **overrides):
    settings = {"max_steps": STEPS, "learning_rate": LEARNING_RATE, **overrides}
    trainer = LayerwiseTrainer(
        model=tiny_bert(),
        args=make_args(**settings),
        train_dataset=RandomClassificationData(32) if data is None else data,
        param_groups=spec,
    )
    for callback in callbacks:
        trainer.add_callback(callback)
    trainer.train()
    return trainer


def logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if "loss" in entry]


def rates(rate, factors):
    return [rate * factor for factor in factors]


# The head under the Trainer's schedule over 10 steps, without warm-up.
HEAD_FACTORS = {
    "constant": [1.0] * 10,
    "linear": [10 / 10, 9 / 10, 8 / 10, 7 / 10, 6 / 10, 5 / 10, 4 / 10, 3 / 10, 2 / 10, 1 / 10],
    "cosine": [cosine(step / 10) for step in range(10)],
}
# The body from step 4: 6 steps of its own, a warm-up of 2 from its start, then the Trainer's shape.
BODY_FACTORS = {
    "constant": [0.0] * 4 + [0 / 2, 1 / 2] + [1.0] * 4,
    "linear": [0.0] * 4 + [0 / 2, 1 / 2] + [4 / 4, 3 / 4, 2 / 4, 1 / 4],
    "cosine": [0.0] * 4 + [0 / 2, 1 / 2] + [cosine(step / 4) for step in range(4)],
}


@pytest.mark.parametrize("accumulation", [1, 2])
@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_the_head_trains_alone_then_the_body_starts_with_its_own_warmup(schedule, accumulation, make_args):
    trainer = train(
        make_args,
        [HEAD, body(start=4, warmup=2)],
        lr_scheduler_type=schedule,
        gradient_accumulation_steps=accumulation,
    )
    assert logged(trainer, "step") == list(range(1, 11))  # optimizer steps, whatever the accumulation
    assert trainer.state.log_history[3]["epoch"] == 4 * accumulation * 8 / 32
    assert logged(trainer, "learning_rate/head") == rates(1e-3, HEAD_FACTORS[schedule])
    assert logged(trainer, "learning_rate/body") == rates(1e-4, BODY_FACTORS[schedule])


class BodyProbe(TrainerCallback):
    """Per optimizer step: whether the body had gradients, had optimizer state and had moved."""

    def __init__(self, model):
        self.body = {name: p for name, p in model.named_parameters() if name.startswith("bert.")}
        self.initial = {name: p.detach().clone() for name, p in self.body.items()}
        self.layouts = []
        self.steps = []

    def layout(self, optimizer):
        return [(group["name"], [id(p) for p in group["params"]]) for group in optimizer.param_groups]

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.layouts.append(self.layout(optimizer))

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.grads = [p.grad is not None for p in self.body.values()]

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        has_state = [p in optimizer.state for p in self.body.values()]
        same = [torch.equal(p, self.initial[name]) for name, p in self.body.items()]
        self.steps.append((all(self.grads), any(self.grads), all(has_state), any(has_state), all(same)))

    def on_train_end(self, args, state, control, optimizer=None, **kwargs):
        self.layouts.append(self.layout(optimizer))


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """A run whose body starts at 4 with a warm-up of 2, watched by a `BodyProbe` (weight decay on: it too
    must leave a not-started group alone)."""
    model = tiny_bert()
    probe = BodyProbe(model)
    trainer = LayerwiseTrainer(
        model=model,
        args=training_args(
            tmp_path_factory.mktemp("probed"), max_steps=STEPS, learning_rate=LEARNING_RATE, weight_decay=0.01
        ),
        train_dataset=RandomClassificationData(32),
        param_groups=[HEAD, body(start=4, warmup=2)],
        callbacks=[probe],
    )
    trainer.train()
    return model, probe


def test_before_its_start_the_body_has_no_gradients_no_state_and_does_not_move(probed):
    _, probe = probed
    # (all grads, any grad, all state, any state, unchanged) after each optimizer step
    before = (False, False, False, False, True)
    at_start = (True, True, True, True, True)  # its warm-up starts at rate 0
    after = (True, True, True, True, False)
    assert probe.steps == [before] * 4 + [at_start] + [after] * 5
    assert all(parameter.requires_grad for parameter in probe.body.values())


def test_the_optimizer_layout_is_the_same_from_the_first_step_to_the_last(probed):
    model, probe = probed
    first, last = probe.layouts
    assert first == last
    assert [name for name, _ in first] == ["head", "head", "body", "body"]
    by_id = {id(p): name for name, p in model.named_parameters()}
    members = {name: [] for name, _ in first}
    for name, ids in first:
        members[name] += [by_id[i] for i in ids]
    assert sorted(members["head"]) == ["classifier.bias", "classifier.weight"]
    assert sorted(members["body"]) == sorted(probe.body)


def test_the_logged_learning_rate_is_the_trainers_schedule_not_group_0s(make_args):
    trainer = train(make_args, [body(start=4, warmup=2), HEAD], lr_scheduler_type="linear")
    assert trainer.optimizer.param_groups[0]["name"] == "body"
    assert logged(trainer, "learning_rate") == rates(LEARNING_RATE, HEAD_FACTORS["linear"])
    assert logged(trainer, "learning_rate/body") == rates(1e-4, BODY_FACTORS["linear"])


# The body from step 2: 8 steps of its own, warm-up {ratio: 0.25} of them = 2, in its own shape while the
# Trainer's is cosine.
OWN_SHAPE_FACTORS = {
    "constant": [0.0] * 2 + [0 / 2, 1 / 2] + [1.0] * 6,
    "linear": [0.0] * 2 + [0 / 2, 1 / 2] + [6 / 6, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6],
    "cosine": [0.0] * 2 + [0 / 2, 1 / 2] + [cosine(step / 6, floor=0.1) for step in range(6)],
}


@pytest.mark.parametrize("shape", ["constant", "linear", "cosine"])
def test_a_group_follows_its_own_shape_and_warmup_ratio(shape, make_args):
    floor = {"min_lr_ratio": 0.1} if shape == "cosine" else {}
    spec = [HEAD, body(start=2, warmup={"ratio": 0.25}, schedule=shape, **floor)]
    trainer = train(make_args, spec, lr_scheduler_type="cosine")
    assert logged(trainer, "learning_rate/head") == rates(1e-3, HEAD_FACTORS["cosine"])
    assert logged(trainer, "learning_rate/body") == rates(1e-4, OWN_SHAPE_FACTORS[shape])


def test_a_head_decays_while_the_body_warms_up(make_args):
    spec = [{**HEAD, "schedule": "linear"}, body(start=4, warmup=2, schedule="constant")]
    trainer = train(make_args, spec, lr_scheduler_type="constant")
    assert logged(trainer, "learning_rate") == [LEARNING_RATE] * 10
    assert logged(trainer, "learning_rate/head") == rates(1e-3, HEAD_FACTORS["linear"])
    assert logged(trainer, "learning_rate/body") == rates(1e-4, BODY_FACTORS["constant"])


def test_under_the_trainers_constant_its_ignored_warmup_does_not_hold_a_group_back(make_args):
    # transformers' `constant` ignores warmup_steps: the head keeps 1e-3 from step 0, and the body, which
    # trains for 2 steps only, is neither refused for a warm-up of 3 nor warmed up.
    trainer = train(make_args, [HEAD, body(start=8)], lr_scheduler_type="constant", warmup_steps=3)
    assert logged(trainer, "learning_rate/head") == [1e-3] * 10
    assert logged(trainer, "learning_rate/body") == [0.0] * 8 + [1e-4] * 2


@pytest.mark.parametrize(("accumulation", "start"), [(1, 4), (2, 2)])
def test_a_start_in_epochs_counts_the_epochs_optimizer_steps(accumulation, start, make_args):
    # 32 examples in batches of 8: 4 batches an epoch, 4 / accumulation optimizer steps.
    spec = [HEAD, body(start={"epochs": 1}, warmup=2)]
    trainer = train(make_args, spec, lr_scheduler_type="constant", gradient_accumulation_steps=accumulation)
    expected = [0.0] * start + [0 / 2, 1 / 2] + [1.0] * (STEPS - start - 2)
    assert logged(trainer, "learning_rate/body") == rates(1e-4, expected)


def test_a_start_as_a_fraction_of_training(make_args):
    trainer = train(make_args, [HEAD, body(start={"fraction": 0.5})], lr_scheduler_type="constant")
    assert logged(trainer, "learning_rate/body") == [0.0] * 5 + [1e-4] * 5


def final_weights(trainer):
    return {name: parameter.detach().clone() for name, parameter in trainer.model.named_parameters()}


def test_a_spec_without_schedule_keys_keeps_the_stock_scheduler(make_args):
    trainer = train(make_args, [HEAD, body()], max_steps=2)
    assert type(trainer.lr_scheduler) is LambdaLR


def test_a_group_shape_equal_to_the_trainers_trains_bit_identically(make_args):
    stock = train(make_args, [HEAD, body()], lr_scheduler_type="linear", warmup_steps=2)
    shaped = train(make_args, [{**HEAD, "schedule": "linear"}, body()], lr_scheduler_type="linear", warmup_steps=2)
    assert type(shaped.lr_scheduler) is GroupScheduler
    assert logged(shaped, "learning_rate/head") == logged(stock, "learning_rate/head")
    assert logged(shaped, "loss") == logged(stock, "loss")
    stock_weights, shaped_weights = final_weights(stock), final_weights(shaped)
    assert all(torch.equal(shaped_weights[name], weight) for name, weight in stock_weights.items())


def stock_factors(schedule, kwargs, warmup):
    """The Trainer's own schedule, as transformers builds it on an optimizer whose rate is the learning rate."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LEARNING_RATE)
    scheduler = get_scheduler(schedule, optimizer, warmup, STEPS, scheduler_specific_kwargs=kwargs)
    return [scheduler.lr_lambdas[0](step) for step in range(STEPS)]


@pytest.mark.parametrize(
    ("schedule", "kwargs"),
    [("linear", {}), ("cosine_with_min_lr", {"min_lr_rate": 0.1}), ("polynomial", {"lr_end": 1e-5, "power": 2.0})],
)
def test_a_group_without_keys_keeps_the_stock_rates_next_to_a_scheduled_one(schedule, kwargs, make_args):
    settings = {"lr_scheduler_type": schedule, "lr_scheduler_kwargs": kwargs, "warmup_steps": 2}
    trainer = train(make_args, [{**HEAD, "lr": 2e-3}, body(start=4, warmup=2)], **settings)
    stock = stock_factors(schedule, kwargs, warmup=2)
    assert logged(trainer, "learning_rate/head") == rates(2e-3, stock)
    assert logged(trainer, "learning_rate") == rates(LEARNING_RATE, stock)


def sub_group_rates(trainer):
    return {f"layer_{layer}": logged(trainer, f"learning_rate/body/layer_{layer}") for layer in range(4)}


class GradientProbe(TrainerCallback):
    """Per optimizer step, the param groups whose parameters have gradients."""

    def __init__(self):
        self.steps = []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        groups = optimizer.param_groups
        self.steps.append(sorted({g["name"] for g in groups if any(p.grad is not None for p in g["params"])}))


def test_gradual_unfreezing_starts_the_layers_top_down_each_with_its_own_warmup(make_args):
    spec = [HEAD, body(layer_decay=0.5, gradual_unfreeze={"every": 2}, warmup=2)]
    probe = GradientProbe()
    trainer = train(make_args, spec, callbacks=[probe], lr_scheduler_type="constant")
    # Only the started sub-groups get gradients: the top layer from step 0, one more every 2 steps.
    assert probe.steps == (
        [["body/layer_3", "head"]] * 2
        + [["body/layer_2", "body/layer_3", "head"]] * 2
        + [["body/layer_1", "body/layer_2", "body/layer_3", "head"]] * 2
        + [["body/layer_0", "body/layer_1", "body/layer_2", "body/layer_3", "head"]] * 4
    )
    # Layer 3 (the pooler) starts at 0, layer 2 at 2, layer 1 at 4, layer 0 (the embeddings) at 6.
    assert sub_group_rates(trainer) == {
        f"layer_{layer}": rates(1e-4 * 0.5 ** (3 - layer), [0.0] * start + [0 / 2, 1 / 2] + [1.0] * (8 - start))
        for layer, start in ((3, 0), (2, 2), (1, 4), (0, 6))
    }
    assert logged(trainer, "learning_rate/head") == [1e-3] * 10
    groups = {}
    for group in trainer.optimizer.param_groups:
        groups.setdefault(group["name"], set()).update(group["params"])
    prefixes = {
        "body/layer_0": "bert.embeddings.",
        "body/layer_1": "bert.encoder.layer.0.",
        "body/layer_2": "bert.encoder.layer.1.",
        "body/layer_3": "bert.pooler.",
    }
    for name, prefix in prefixes.items():
        expected = {p for n, p in trainer.model.named_parameters() if n.startswith(prefix)}
        assert groups[name] == expected, name


def test_top_level_gradual_unfreezing_gives_each_layer_the_trainers_warmup_over_its_own_length(make_args):
    spec = {"gradual_unfreeze": {"every": 2}, "groups": [HEAD, body(layer_decay=0.5)]}
    trainer = train(make_args, spec, lr_scheduler_type="linear", warmup_steps=2)

    def linear_from(start):
        length = STEPS - start
        return [0.0] * start + [0 / 2, 1 / 2] + [(length - step) / (length - 2) for step in range(2, length)]

    assert sub_group_rates(trainer) == {
        f"layer_{layer}": rates(1e-4 * 0.5 ** (3 - layer), linear_from(start))
        for layer, start in ((3, 0), (2, 2), (1, 4), (0, 6))
    }
    # The head has no layer decay: it is not staged, and keeps the Trainer's schedule.
    assert logged(trainer, "learning_rate/head") == rates(1e-3, [0 / 2, 1 / 2] + [(10 - s) / 8 for s in range(2, 10)])


# Resuming: the body starts at 4; checkpoints every 2 steps.
RESUME_SPEC = [HEAD, body(start=4, warmup=2)]


def resume_args(output_dir):
    return training_args(
        output_dir,
        max_steps=STEPS,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        save_strategy="steps",
        save_steps=2,
    )


def logged_run(trainer):
    keys = ("step", "loss", "grad_norm", "learning_rate", "learning_rate/head", "learning_rate/body")
    return [tuple(entry[key] for key in keys) for entry in trainer.state.log_history if "loss" in entry]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    trainer = LayerwiseTrainer(
        model=tiny_bert(),
        args=resume_args(output_dir),
        train_dataset=RandomClassificationData(32),
        param_groups=RESUME_SPEC,
    )
    trainer.train()
    return output_dir, logged_run(trainer), final_weights(trainer)


@pytest.mark.parametrize("checkpoint", [2, 6], ids=["before-the-start", "after-the-start"])
def test_a_resume_continues_exactly(checkpoint, uninterrupted, tmp_path):
    output_dir, expected_log, expected_weights = uninterrupted
    trainer = LayerwiseTrainer(
        model=tiny_bert(seed=1),
        args=resume_args(tmp_path),
        train_dataset=RandomClassificationData(32),
        param_groups=RESUME_SPEC,
    )
    trainer.train(resume_from_checkpoint=str(output_dir / f"checkpoint-{checkpoint}"))
    assert logged_run(trainer) == expected_log
    weights = final_weights(trainer)
    assert all(torch.equal(weights[name], weight) for name, weight in expected_weights.items())


def test_a_resume_with_another_start_is_refused(uninterrupted, tmp_path):
    output_dir, _, _ = uninterrupted
    trainer = LayerwiseTrainer(
        model=tiny_bert(),
        args=resume_args(tmp_path),
        train_dataset=RandomClassificationData(32),
        param_groups=[HEAD, body(start=5, warmup=2)],
    )
    with pytest.raises(CheckpointLayoutError) as caught:
        trainer.train(resume_from_checkpoint=str(output_dir / "checkpoint-2"))
    assert (
        "\n  - group 'body': start and schedule {'start': 4, 'warmup': 2} in the checkpoint, "
        "{'start': 5, 'warmup': 2} now\n"
    ) in str(caught.value)


class Unsized(torch.utils.data.IterableDataset):
    def __iter__(self):
        data = RandomClassificationData(32)
        for _ in range(4):
            yield from (data[index] for index in range(len(data)))


@pytest.mark.parametrize(
    ("spec", "overrides", "message"),
    [
        (
            [HEAD, body(start=10)],
            {},
            "groups[1].start (group 'body'): body would start at step 10 (10 steps), but training has only 10 "
            "optimizer steps; start it earlier or train longer",
        ),
        (
            [HEAD, body(start={"epochs": 3})],
            {},
            "groups[1].start (group 'body'): body would start at step 12 (3 epochs), but training has only 10 "
            "optimizer steps",
        ),
        (
            [HEAD, body(start=4, warmup=7)],
            {},
            "groups[1].warmup (group 'body'): body trains for 6 optimizer steps from its start (step 4), shorter "
            "than its warm-up of 7 steps; shorten the warm-up or start the group earlier",
        ),
        (
            [HEAD, body(start=8)],
            {"warmup_steps": 3},
            "groups[1].warmup (group 'body'): body trains for 2 optimizer steps from its start (step 8), shorter "
            "than the Trainer's warm-up of 3 steps",
        ),
        (
            [HEAD, body(layer_decay=0.5, gradual_unfreeze={"every": 4})],
            {},
            "groups[1].gradual_unfreeze (group 'body'): body/layer_0 would start at step 12 (3 x 4 steps), but "
            "training has only 10 optimizer steps",
        ),
        (
            {"gradual_unfreeze": {"every": 4}, "groups": [HEAD, body(layer_decay=0.5)]},
            {},
            "gradual_unfreeze (group 'body'): body/layer_0 would start at step 12 (3 x 4 steps), but training has "
            "only 10 optimizer steps",
        ),
        (
            {"gradual_unfreeze": {"every": 4}, "layer_decay": 0.5, "unmatched": "default", "groups": [HEAD]},
            {},
            "gradual_unfreeze (group 'default'): default/layer_0 would start at step 12 (3 x 4 steps), but training "
            "has only 10 optimizer steps",
        ),
        (
            [HEAD, body(start=2, layer_decay=0.5, gradual_unfreeze={"every": 3})],
            {},
            "groups[1].gradual_unfreeze (group 'body'): body/layer_0 would start at step 11 (2 steps + 3 x 3 steps)",
        ),
    ],
    ids=[
        "start-at-the-end",
        "start-in-epochs",
        "own-warmup",
        "trainers-warmup",
        "unfreeze",
        "top-level-unfreeze",
        "default-group-unfreeze",
        "start-and-unfreeze",
    ],
)
def test_a_start_or_warmup_that_does_not_fit_the_run_is_refused_before_any_step(spec, overrides, message, make_args):
    with pytest.raises(SpecError) as caught:
        train(make_args, spec, **overrides)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("start", "groups[1].start (group 'body'): epochs need a training set with a length (this one has none)"),
        (
            "gradual_unfreeze",
            "groups[1].gradual_unfreeze (group 'body'): epochs need a training set with a length (this one has none)",
        ),
    ],
    ids=["start", "gradual_unfreeze"],
)
def test_epochs_without_an_epoch_length_are_refused(key, message, make_args):
    keys = (
        {"start": {"epochs": 1}}
        if key == "start"
        else {"layer_decay": 0.5, "gradual_unfreeze": {"every": {"epochs": 1}}}
    )
    with pytest.raises(SpecError) as caught:
        train(make_args, [HEAD, body(**keys)], data=Unsized())
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            [HEAD, body(gradual_unfreeze={"every": 2})],
            "groups[1].gradual_unfreeze (group 'body'): gradual unfreezing starts a group's layer sub-groups one by "
            "one, and this group has no layer decay",
        ),
        (
            {"gradual_unfreeze": {"every": 2}, "groups": [HEAD, body()]},
            "gradual_unfreeze: gradual unfreezing applies to groups with layer decay, and no group has any",
        ),
        (
            [HEAD, body(freeze=True, warmup=2)],
            "groups[1].warmup (group 'body'): a group with freeze: true never trains, so it cannot have a schedule",
        ),
    ],
    ids=["unfreeze-without-layer-decay", "top-level-unfreeze-without-layer-decay", "freeze"],
)
def test_contradicting_keys_are_refused_when_the_trainer_is_built(spec, message, make_args):
    with pytest.raises(SpecError) as caught:
        LayerwiseTrainer(model=tiny_bert(), args=make_args(), param_groups=spec)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("schedule", "keys", "where"),
    [
        ("reduce_lr_on_plateau", {"start": 2}, "groups[1].start (group 'body')"),
        ("greedy", {"schedule": "linear"}, "groups[1].schedule (group 'body')"),
    ],
)
def test_metric_driven_schedulers_are_refused_when_the_trainer_is_built(schedule, keys, where, make_args):
    args = make_args(lr_scheduler_type=schedule, eval_strategy="steps")
    with pytest.raises(SpecError) as caught:
        LayerwiseTrainer(
            model=tiny_bert(), args=args, eval_dataset=RandomClassificationData(8), param_groups=[HEAD, body(**keys)]
        )
    assert str(caught.value).startswith(
        f"{where}: lr_scheduler_type={schedule!r} changes rates from an evaluation metric, so a group's rate "
        "cannot follow its own start and schedule"
    )


SHARDED_BY_HAND = """
import os, sys
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1")
dist.init_process_group("gloo")
from helpers import RandomClassificationData, tiny_bert, training_args
from layerwise_trainer import LayerwiseTrainer, SpecError
model = tiny_bert()
fully_shard(model)
try:
    LayerwiseTrainer(model=model, args=training_args(sys.argv[2]), train_dataset=RandomClassificationData(),
                     param_groups=[{"name": "body", "match": "bert.*", "start": 2}])
except SpecError as error:
    print(error)
dist.destroy_process_group()
"""


def test_a_later_start_on_a_model_sharded_by_hand_is_refused(tmp_path, repo_root):
    port = str(29500 + os.getpid() % 1000)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo_root / "tests"), str(repo_root)])}
    completed = subprocess.run(
        [sys.executable, "-c", SHARDED_BY_HAND, port, str(tmp_path)], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    # The last line: with DeepSpeed installed, its import prints a warning to stdout first.
    assert completed.stdout.strip().splitlines()[-1] == (
        "groups[0].start (group 'body'): a group that starts later is not supported under FSDP: FSDP fixes which "
        "parameters get gradients when it wraps the model, and a group's start turns them on during the run; train "
        "with DDP (or one device), or freeze the group and train it in a second run"
    ), completed.stderr[-3000:]
