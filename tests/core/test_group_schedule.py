"""Per-group schedule keys: parsed at the boundary into ScheduleAmount and GroupTiming, and turned into steps."""

from __future__ import annotations

import pickle

import pytest
from helpers import tiny_bert

from layerwise_trainer import GroupSpec, SpecError, parse_spec, resolve_groups
from layerwise_trainer.core.group_schedule import GroupTiming, ScheduleAmount, TrainingLength


def group(**keys):
    return parse_spec([{"name": "body", "match": "bert.*", **keys}]).groups[0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (100, ScheduleAmount("steps", 100.0)),
        (0, ScheduleAmount("steps", 0.0)),
        ({"steps": 7}, ScheduleAmount("steps", 7.0)),
        ({"epochs": 1}, ScheduleAmount("epochs", 1.0)),
        ({"epochs": 0.5}, ScheduleAmount("epochs", 0.5)),
        ({"fraction": 0.25}, ScheduleAmount("fraction", 0.25)),
    ],
)
def test_start_units(value, expected):
    assert group(start=value).start == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(50, ScheduleAmount("steps", 50.0)), ({"ratio": 0.1}, ScheduleAmount("ratio", 0.1))],
)
def test_warmup_units(value, expected):
    assert group(warmup=value).warmup == expected


def test_schedule_and_floor():
    body = group(schedule="cosine", min_lr_ratio=0.1)
    assert (body.schedule, body.min_lr_ratio, body.schedule_keys) == ("cosine", 0.1, ("schedule", "min_lr_ratio"))


def test_group_without_keys_has_none():
    assert group(lr_scale=0.5).schedule_keys == ()


def test_to_dict_round_trips_and_pickles():
    body = group(start={"epochs": 1}, warmup=10, schedule="linear")
    assert body.to_dict() == {
        "name": "body",
        "match": "bert.*",
        "start": {"epochs": 1.0},
        "warmup": 10,
        "schedule": "linear",
    }
    assert parse_spec([body.to_dict()]).groups[0] == body
    assert pickle.loads(pickle.dumps(body)) == body
    assert GroupSpec(name="body", match="bert.*", start=body.start) == group(start={"epochs": 1})


def test_a_schedule_amount_given_directly_is_checked():
    with pytest.raises(SpecError, match=r"^start \(group 'body'\): expected a whole number from 0"):
        GroupSpec(name="body", match="bert.*", start=ScheduleAmount("steps", 2.5))


def test_schedule_keys_are_not_optimizer_options():
    assert dict(group(start=3, warmup=2).options) == {}


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"start": -1}, "groups[0].start (group 'body'): expected a whole number from 0 to 1,000,000,000,000, got -1"),
        (
            {"start": 2.5},
            "groups[0].start (group 'body'): expected a whole number from 0 to 1,000,000,000,000, got 2.5",
        ),
        ({"start": True}, "groups[0].start (group 'body'): expected a whole number"),
        ({"start": {"fraction": 1}}, "groups[0].start (group 'body'): expected a number in [0, 1), got 1 (int)"),
        ({"start": {"epochs": -1}}, "groups[0].start (group 'body'): expected a number >= 0, got -1 (int)"),
        (
            {"start": {"epochs": 1e308}},
            "groups[0].start (group 'body'): expected at most 1,000,000 epochs, got 1e+308 (float)",
        ),
        (
            {"start": {"ratio": 0.1}},
            "groups[0].start (group 'body'): expected a whole number of steps or one of {steps: ...}, "
            "{epochs: ...}, {fraction: ...}",
        ),
        ({"start": {"epochs": 1, "steps": 2}}, "groups[0].start (group 'body'): expected a whole number of steps"),
        ({"warmup": {"epochs": 1}}, "groups[0].warmup (group 'body'): expected a whole number of steps or one of"),
        ({"warmup": {"ratio": 1.0}}, "groups[0].warmup (group 'body'): expected a number in [0, 1), got 1.0"),
        (
            {"schedule": "poly"},
            "groups[0].schedule (group 'body'): expected one of constant, linear, cosine, got 'poly'",
        ),
        ({"min_lr_ratio": 0.1}, "groups[0].min_lr_ratio (group 'body'): 'min_lr_ratio' is the floor of 'schedule"),
        ({"schedule": "cosine", "min_lr_ratio": 1.5}, "groups[0].min_lr_ratio (group 'body'): expected a number in"),
        ({"freeze": True, "start": 3}, "groups[0].start (group 'body'): a group with freeze: true never trains"),
        ({"lr": 0, "warmup": 3}, "groups[0].warmup (group 'body'): a group with a learning rate of 0 never trains"),
        ({"lr_scale": 0, "schedule": "linear"}, "groups[0].schedule (group 'body'): a group with a learning rate"),
    ],
)
def test_bad_schedule_keys_name_the_group_and_key(keys, message):
    with pytest.raises(SpecError) as caught:
        group(**keys)
    assert str(caught.value).startswith(message)


def test_resolve_groups_puts_the_timing_on_the_groups_that_have_it():
    spec = [
        {"name": "head", "match": "classifier.*"},
        {
            "name": "body",
            "match": "bert.*",
            "start": {"epochs": 1},
            "warmup": 5,
            "schedule": "cosine",
            "min_lr_ratio": 0.1,
        },
    ]
    plan = resolve_groups(tiny_bert(), spec, learning_rate=1e-3, weight_decay=0.01)
    timing = GroupTiming(
        start=ScheduleAmount("epochs", 1.0), warmup=ScheduleAmount("steps", 5.0), shape="cosine", min_lr_ratio=0.1
    )
    assert {group.name: group.timing for group in plan.trainable_groups} == {"head": None, "body": timing}
    assert plan.has_group_schedules


@pytest.mark.parametrize(
    ("amount", "of_steps", "steps"),
    [
        (ScheduleAmount("steps", 7.0), None, 7),
        (ScheduleAmount("epochs", 1.0), None, 4),
        (ScheduleAmount("epochs", 1.5), None, 6),
        (ScheduleAmount("epochs", 0.5), None, 2),
        (ScheduleAmount("fraction", 0.5), None, 5),
        (ScheduleAmount("fraction", 0.25), None, 3),  # 2.5 steps: halves round up
        (ScheduleAmount("fraction", 0.05), None, 1),
        (ScheduleAmount("ratio", 0.25), None, 3),  # ratios round up, as the Trainer's warm-up ratio
        (ScheduleAmount("ratio", 0.25), 6, 2),  # a ratio of the group's own 6 steps
        (ScheduleAmount("ratio", 0.28), 25, 7),  # 7 exactly: the float product is 7.000000000000001
        (ScheduleAmount("ratio", 0.07), 100, 7),  # the float product is 7.000000000000001 here too
        (ScheduleAmount("epochs", 0.7), 1, 3),  # 0.7 x 4 = 2.8: nearest
    ],
)
def test_amounts_in_optimizer_steps(amount, of_steps, steps):
    assert TrainingLength(total_steps=10, steps_per_epoch=4).steps(amount, of_steps=of_steps) == steps


def test_a_tie_in_the_written_numbers_rounds_up_where_the_float_product_falls_short():
    assert 0.29 * 50 < 14.5  # 14.499999999999998
    assert TrainingLength(total_steps=50).steps(ScheduleAmount("fraction", 0.29)) == 15


def test_epochs_without_an_epoch_length_have_no_steps():
    with pytest.raises(ValueError, match="^epochs need a training set with a length$"):
        TrainingLength(total_steps=10).steps(ScheduleAmount("epochs", 1.0))


@pytest.mark.parametrize(
    ("timing", "step", "described"),
    [
        (GroupTiming(), 0, "0"),
        (GroupTiming(start=ScheduleAmount("epochs", 1.0)), 4, "1 epoch"),
        (GroupTiming(unfreeze_every=ScheduleAmount("steps", 2.0), unfreeze_rank=0), 0, "0"),
        (GroupTiming(unfreeze_every=ScheduleAmount("steps", 2.0), unfreeze_rank=3), 6, "3 x 2 steps"),
        (
            GroupTiming(
                start=ScheduleAmount("steps", 2.0), unfreeze_every=ScheduleAmount("epochs", 1.0), unfreeze_rank=3
            ),
            14,
            "2 steps + 3 x 1 epoch",
        ),
        (GroupTiming(unfreeze_every=ScheduleAmount("fraction", 0.1), unfreeze_rank=2), 2, "2 x fraction 0.1"),
    ],
)
def test_a_sub_group_starts_its_rank_times_the_interval_after_the_groups_start(timing, step, described):
    assert timing.start_step(TrainingLength(total_steps=10, steps_per_epoch=4)) == step
    assert timing.describe_start() == described


def test_timing_as_plain_data_and_words():
    timing = GroupTiming(
        start=ScheduleAmount("steps", 2.0),
        unfreeze_every=ScheduleAmount("epochs", 1.0),
        unfreeze_rank=3,
        warmup=ScheduleAmount("ratio", 0.1),
        shape="cosine",
        min_lr_ratio=0.1,
    )
    assert timing.to_data() == {
        "start": 2,
        "unfreeze_every": {"epochs": 1.0},
        "unfreeze_rank": 3,
        "warmup": {"ratio": 0.1},
        "schedule": "cosine",
        "min_lr_ratio": 0.1,
    }
    assert timing.describe_schedule() == "cosine (floor 0.1), warm-up ratio 0.1"
    assert GroupTiming().describe_schedule() == "trainer, warm-up trainer's"
    assert GroupTiming().to_data() == {}
