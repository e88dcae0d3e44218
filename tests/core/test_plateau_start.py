"""A start on a plateau: the spec's trigger parsed at the boundary, and the decision as a pure fold of evaluations.

Each scripted sequence gives ``(step, value)`` per evaluation; the expected start is worked out by hand from the
rule: an evaluation improves when it is better than the best so far by more than ``min_delta``; ``patience``
evaluations in a row without one make a plateau, which starts the group at that evaluation's step (not before
``earliest``); ``latest`` starts it anyway. Values are chosen away from ``best - min_delta``, where float rounding
would decide.
"""

from __future__ import annotations

import math
import pickle

import pytest

from layerwise_trainer import SpecError, parse_spec
from layerwise_trainer.core.group_schedule import (
    PlateauRule,
    PlateauTrigger,
    PlateauWatch,
    ScheduleAmount,
    plateau_start,
)


def rule(patience=1, min_delta=0.0, greater_is_better=False, earliest=0, latest=None):
    return PlateauRule("eval_loss", greater_is_better, patience, min_delta, earliest, latest)


def evaluations(*values, every=2):
    """Evaluations every ``every`` steps from step ``every``."""
    return [(every * (index + 1), value) for index, value in enumerate(values)]


@pytest.mark.parametrize(
    ("the_rule", "values", "start"),
    [
        # The first value is the best so far; the next that is no better is one evaluation without improvement.
        (rule(patience=1), (1.0, 0.9, 0.95), 6),
        (rule(patience=1), (1.0, 0.9, 0.9), 6),  # equal is no improvement
        (rule(patience=2), (1.0, 0.9, 0.95, 0.92), 8),
        # An improvement resets the count.
        (rule(patience=2), (1.0, 1.1, 0.8, 0.85, 0.9), 10),
        # min_delta: 0.9 -> 0.87 -> 0.86 improve by 0.03 and 0.04 (no more than 0.05), so both count as stale.
        (rule(patience=2, min_delta=0.05), (1.0, 0.9, 0.87, 0.86), 8),
        (rule(patience=2, min_delta=0.0), (1.0, 0.9, 0.87, 0.86, 0.86, 0.86), 12),
        (rule(patience=2, min_delta=0.05), (1.0, 0.9, 0.87, 0.8, 0.78, 0.77), 12),  # 0.9 -> 0.8 improves by 0.1
        # Higher is better (an accuracy).
        (rule(patience=2, greater_is_better=True), (0.5, 0.6, 0.6, 0.59), 8),
        (rule(patience=1, greater_is_better=True, min_delta=0.05), (0.5, 0.6, 0.63), 6),
        # A NaN never improves.
        (rule(patience=2), (1.0, math.nan, math.nan), 6),
        # No plateau within the evaluations.
        (rule(patience=2), (1.0, 0.9, 0.8, 0.85, 0.7), None),
    ],
    ids=[
        "patience-1",
        "equal-is-stale",
        "patience-2",
        "improvement-resets",
        "min-delta",
        "no-min-delta",
        "min-delta-resets",
        "greater-is-better",
        "greater-is-better-min-delta",
        "nan",
        "none",
    ],
)
def test_a_scripted_metric_gives_the_exact_start(the_rule, values, start):
    assert plateau_start(the_rule, evaluations(*values)) == start


def test_no_start_before_earliest_and_the_plateau_must_still_hold_there():
    values = (1.0, 1.0, 1.0, 0.5, 0.6, 0.6)  # stale at 4 and 6, improved at 8, stale again from 10
    assert plateau_start(rule(patience=1), evaluations(*values)) == 4
    assert plateau_start(rule(patience=1, earliest=5), evaluations(*values)) == 6
    assert plateau_start(rule(patience=1, earliest=7), evaluations(*values)) == 10
    assert plateau_start(rule(patience=2, earliest=7), evaluations(*values)) == 12


def test_latest_starts_the_group_at_that_step_without_a_plateau():
    improving = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
    assert plateau_start(rule(patience=1, latest=7), evaluations(*improving)) == 7  # between two evaluations
    assert plateau_start(rule(patience=1, latest=8), evaluations(*improving)) == 8  # an evaluation's step
    assert plateau_start(rule(patience=1, latest=7), evaluations(1.0, 1.0)) == 4  # a plateau first


def test_watching_begins_after_since_and_the_bounds_count_from_there():
    values = (1.0, 1.5, 0.5, 0.6, 0.4, 0.3)  # steps 2 .. 12
    assert plateau_start(rule(patience=1), evaluations(*values)) == 4
    # From step 4 on: the evaluation at 4 is not counted, 6 is the first best, 8 the first stale one.
    assert plateau_start(rule(patience=1), evaluations(*values), since=4) == 8
    # earliest 5 from step 4: the plateau at 8 is 4 steps in, too early, and 10 and 12 improve.
    assert plateau_start(rule(patience=1, earliest=5), evaluations(*values), since=4) is None
    assert plateau_start(rule(patience=1, latest=3), evaluations(*values), since=4) == 7


def test_improvement_must_exceed_min_delta():
    the_rule = rule(min_delta=0.5)
    assert not the_rule.improves(0.5, 1.0)  # better by exactly 0.5
    assert the_rule.improves(0.25, 1.0)
    assert the_rule.improves(7.0, None) and not the_rule.improves(math.nan, None)
    assert PlateauWatch(best=1.0).after(0.5, the_rule) == PlateauWatch(best=1.0, stale=1)
    assert PlateauWatch(best=1.0, stale=3).after(0.25, the_rule) == PlateauWatch(best=0.25, stale=0)


# The spec.


def body(**keys):
    return {"name": "body", "match": "bert.*", **keys}


def test_the_trigger_is_parsed_with_its_defaults():
    spec = parse_spec([body(start={"plateau": {}})])
    assert spec.groups[0].start == PlateauTrigger(metric="eval_loss", patience=1, min_delta=0.0)


def test_every_key_of_the_trigger():
    keys = {"metric": "accuracy", "patience": 3, "min_delta": 0.01, "greater_is_better": True,
            "earliest": {"epochs": 1}, "latest": 2000}  # fmt: skip
    trigger = parse_spec([body(start={"plateau": keys})]).groups[0].start
    assert trigger == PlateauTrigger(
        metric="eval_accuracy",  # prefixed as the Trainer logs it, as metric_for_best_model is
        patience=3,
        min_delta=0.01,
        greater_is_better=True,
        earliest=ScheduleAmount("epochs", 1.0),
        latest=ScheduleAmount("steps", 2000.0),
    )
    assert trigger.describe() == (
        "eval_accuracy plateau (patience 3, min_delta 0.01, higher is better, earliest 1 epoch, latest 2000 steps)"
    )


def test_a_spec_with_triggers_round_trips_and_pickles():
    plateau = {"plateau": {"metric": "eval_loss", "patience": 2, "min_delta": 0.001, "latest": {"fraction": 0.5}}}
    spec = parse_spec([body(layer_decay=0.8, start=plateau, gradual_unfreeze={"every": plateau})])
    assert spec.groups[0].to_dict()["start"] == plateau
    assert spec.groups[0].to_dict()["gradual_unfreeze"] == {"every": plateau}
    assert parse_spec(spec.to_dict()) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec
    top_level = parse_spec({"layer_decay": 0.8, "gradual_unfreeze": {"every": plateau}, "groups": [body()]})
    assert isinstance(top_level.unfreeze_every_of(top_level.groups[0]), PlateauTrigger)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"start": {"plateau": {"patiense": 2}}},
            "groups[0].start.plateau.patiense (group 'body'): unknown key 'patiense'; did you mean 'patience'? "
            "Expected: metric, patience, min_delta, greater_is_better, earliest, latest",
        ),
        (
            {"start": {"plateau": {"patience": 0}}},
            "groups[0].start.plateau.patience (group 'body'): expected a whole number from 1 to 1,000,000 "
            "(evaluations), got 0 (int)",
        ),
        (
            {"start": {"plateau": {"min_delta": -0.1}}},
            "groups[0].start.plateau.min_delta (group 'body'): expected a number >= 0, got -0.1 (float)",
        ),
        (
            {"start": {"plateau": {"metric": ""}}},
            "groups[0].start.plateau.metric (group 'body'): expected a metric name such as 'eval_loss', got '' (str)",
        ),
        (
            {"start": {"plateau": {"greater_is_better": "yes"}}},
            "groups[0].start.plateau.greater_is_better (group 'body'): expected true or false, got 'yes' (str)",
        ),
        (
            {"start": {"plateau": {"latest": {"epoch": 1}}}},
            "groups[0].start.plateau.latest (group 'body'): expected a whole number of steps or one of {steps: ...}, "
            "{epochs: ...}, {fraction: ...}, got {'epoch': 1} (dict)",
        ),
        (
            {"start": {"plateau": 2}},
            "groups[0].start.plateau (group 'body'): expected a mapping of metric, patience, min_delta, "
            "greater_is_better, earliest, latest, got 2 (int)",
        ),
        (
            {"start": {"plateau": {}, "steps": 2}},
            "groups[0].start (group 'body'): expected {plateau: {...}} alone, got {'plateau': {}, 'steps': 2} (dict)",
        ),
        (
            {"start": {"plateu": {}}},
            "groups[0].start (group 'body'): expected a whole number of steps or one of {steps: ...}, {epochs: ...}, "
            "{fraction: ...}, {plateau: {...}}, got {'plateu': {}} (dict)",
        ),
        (
            {"layer_decay": 0.5, "gradual_unfreeze": {"every": {"plateau": {"patience": 1.5}}}},
            "groups[0].gradual_unfreeze.every.plateau.patience (group 'body'): expected a whole number from 1 to "
            "1,000,000 (evaluations), got 1.5 (float)",
        ),
        (
            {"start": {"plateau": {"earliest": 6, "latest": 4}}},
            "groups[0].start.plateau.latest (group 'body'): the latest start (4 steps) comes before the earliest "
            "(6 steps)",
        ),
        (
            {
                "layer_decay": 0.5,
                "gradual_unfreeze": {"every": {"plateau": {"earliest": {"epochs": 2}, "latest": {"epochs": 1}}}},
            },
            "groups[0].gradual_unfreeze.every.plateau.latest (group 'body'): the latest start (1 epoch) comes before "
            "the earliest (2 epochs)",
        ),
        (
            {"start": {"plateau": {}}, "freeze": True},
            "groups[0].start (group 'body'): a group with freeze: true never trains, so it cannot have a schedule",
        ),
    ],
    ids=[
        "unknown-key",
        "patience-0",
        "negative-min-delta",
        "empty-metric",
        "greater-is-better",
        "latest-unit",
        "not-a-mapping",
        "other-key",
        "misspelt-plateau",
        "unfreeze-every",
        "earliest-after-latest",
        "earliest-after-latest-in-epochs",
        "frozen",
    ],
)
def test_bad_input_names_the_group_and_the_key(keys, message):
    with pytest.raises(SpecError) as caught:
        parse_spec([body(**keys)])
    assert str(caught.value) == message
