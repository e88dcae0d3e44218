"""GroupRateFactor and GroupScheduler: transformers' rates step for step, starts (at a step, or decided at an
evaluation), and a state that round-trips."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from torch import nn
from transformers import get_scheduler

from layerwise_trainer import SpecError
from layerwise_trainer.core.group_schedule import PlateauRule
from layerwise_trainer.core.group_scheduler import (
    ChainLink,
    GroupRateFactor,
    GroupScheduler,
    StartChain,
    never_started,
)

WARMUP = 3
LENGTH = 12
# Past the end too: transformers' linear clamps at 0 there, cosine turns back up.
STEPS = range(LENGTH + 3)


def transformers_lambda(name, warmup=WARMUP, length=LENGTH, **kwargs):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = get_scheduler(
        name, optimizer, num_warmup_steps=warmup, num_training_steps=length, scheduler_specific_kwargs=kwargs
    )
    return scheduler.lr_lambdas[0]


# transformers' lr_scheduler_type -> the same shape as a GroupRateFactor (shape, min_lr_ratio).
SAME_SHAPES = [
    ("constant_with_warmup", {}, "constant", 0.0),
    ("linear", {}, "linear", 0.0),
    ("cosine", {}, "cosine", 0.0),
    ("cosine_with_min_lr", {"min_lr_rate": 0.1}, "cosine", 0.1),
]


@pytest.mark.parametrize(("name", "kwargs", "shape", "min_lr_ratio"), SAME_SHAPES)
def test_a_factor_from_step_0_is_transformers_lambda_exactly(name, kwargs, shape, min_lr_ratio):
    expected = transformers_lambda(name, **kwargs)
    factor = GroupRateFactor(start=0, warmup=WARMUP, length=LENGTH, shape=shape, min_lr_ratio=min_lr_ratio)
    assert [factor(step) for step in STEPS] == [expected(step) for step in STEPS]


@pytest.mark.parametrize(("name", "kwargs", "shape", "min_lr_ratio"), SAME_SHAPES)
def test_a_later_factor_is_transformers_lambda_shifted_to_its_start(name, kwargs, shape, min_lr_ratio):
    expected = transformers_lambda(name, **kwargs)
    factor = GroupRateFactor(start=5, warmup=WARMUP, length=LENGTH, shape=shape, min_lr_ratio=min_lr_ratio)
    assert [factor(5 + step) for step in STEPS] == [expected(step) for step in STEPS]


@pytest.mark.parametrize("warmup", [0, 1, 2])
def test_a_factor_without_a_warmup_is_transformers_lambda_exactly(warmup):
    expected = transformers_lambda("linear", warmup=warmup, length=4)
    factor = GroupRateFactor(start=0, warmup=warmup, length=4, shape="linear")
    assert [factor(step) for step in range(6)] == [expected(step) for step in range(6)]


@pytest.mark.parametrize("shape", ["constant", "linear", "cosine", "trainer"])
def test_the_factor_is_0_before_the_start(shape):
    trainer_shape = transformers_lambda("linear", warmup=0, length=5) if shape == "trainer" else None
    factor = GroupRateFactor(start=5, warmup=0, length=5, shape=shape, trainer_shape=trainer_shape)
    assert [factor(step) for step in range(6)] == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_at_the_start_a_warmup_begins_at_0():
    factor = GroupRateFactor(start=4, warmup=2, length=6, shape="constant")
    assert [factor(step) for step in range(8)] == [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0]


def test_the_trainer_shape_is_the_trainers_lambda_shifted_to_the_start():
    lambda_ = transformers_lambda("polynomial", warmup=2, length=6, power=2.0)
    factor = GroupRateFactor(start=4, warmup=2, length=6, shape="trainer", trainer_shape=lambda_)
    assert [factor(step) for step in range(12)] == [0.0] * 4 + [lambda_(step) for step in range(8)]


def test_a_factor_pickles_and_compares_by_its_numbers():
    factor = GroupRateFactor(start=4, warmup=2, length=6, shape="cosine", min_lr_ratio=0.1)
    assert pickle.loads(pickle.dumps(factor)) == factor
    assert factor != GroupRateFactor(start=5, warmup=2, length=6, shape="cosine", min_lr_ratio=0.1)


# Two groups: "head" trains from step 0 at 1e-2 (linear, 10 steps), "body" starts at step 3 at 1e-3
# with a warm-up of 2 (constant).
HEAD = GroupRateFactor(start=0, warmup=0, length=10, shape="linear")
BODY = GroupRateFactor(start=3, warmup=2, length=7, shape="constant")


def two_groups():
    head, body = nn.Linear(2, 2), nn.Linear(2, 2)
    optimizer = torch.optim.SGD(
        [
            {"name": "head", "params": list(head.parameters()), "lr": 1e-2},
            {"name": "body", "params": list(body.parameters()), "lr": 1e-3},
        ]
    )
    return optimizer, head, body


def group_scheduler(optimizer):
    return GroupScheduler(optimizer, [HEAD, BODY], starts=[0, 3], base_factor=HEAD)


def advance(optimizer, scheduler, steps):
    for _ in range(steps):
        optimizer.step()
        scheduler.step()


def trains(module):
    return [parameter.requires_grad for parameter in module.parameters()]


def test_the_rates_follow_each_groups_factor():
    optimizer, _, _ = two_groups()
    scheduler = group_scheduler(optimizer)
    rates = []
    for _ in range(7):
        rates.append([group["lr"] for group in optimizer.param_groups])
        advance(optimizer, scheduler, 1)
    assert rates == [
        [1e-2 * (10 / 10), 0.0],
        [1e-2 * (9 / 10), 0.0],
        [1e-2 * (8 / 10), 0.0],
        [1e-2 * (7 / 10), 1e-3 * (0 / 2)],
        [1e-2 * (6 / 10), 1e-3 * (1 / 2)],
        [1e-2 * (5 / 10), 1e-3],
        [1e-2 * (4 / 10), 1e-3],
    ]


def test_requires_grad_follows_the_step():
    optimizer, head, body = two_groups()
    scheduler = group_scheduler(optimizer)
    seen = []
    for _ in range(5):
        seen.append((scheduler.last_epoch, trains(head), trains(body)))
        advance(optimizer, scheduler, 1)
    assert seen == [
        (0, [True, True], [False, False]),
        (1, [True, True], [False, False]),
        (2, [True, True], [False, False]),
        (3, [True, True], [True, True]),  # step 3 is the body's first training step
        (4, [True, True], [True, True]),
    ]


def test_the_base_factor_is_read_at_the_current_step():
    optimizer, _, _ = two_groups()
    scheduler = group_scheduler(optimizer)
    advance(optimizer, scheduler, 4)
    assert scheduler.base_factor() == 6 / 10


def saved_and_loaded(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("saved_at", [2, 3, 5])
def test_the_state_round_trips_into_a_fresh_scheduler(saved_at):
    optimizer, head, body = two_groups()
    scheduler = group_scheduler(optimizer)
    advance(optimizer, scheduler, saved_at)
    state = saved_and_loaded(scheduler.state_dict())

    fresh_optimizer, fresh_head, fresh_body = two_groups()
    fresh = group_scheduler(fresh_optimizer)
    fresh.load_state_dict(state)

    assert fresh.last_epoch == scheduler.last_epoch == saved_at
    assert [group["lr"] for group in fresh_optimizer.param_groups] == [group["lr"] for group in optimizer.param_groups]
    assert fresh.get_last_lr() == scheduler.get_last_lr()
    assert (trains(fresh_head), trains(fresh_body)) == (trains(head), trains(body))
    assert trains(fresh_body) == [saved_at >= 3] * 2
    # And it goes on as the original does.
    advance(optimizer, scheduler, 3)
    advance(fresh_optimizer, fresh, 3)
    assert [group["lr"] for group in fresh_optimizer.param_groups] == [group["lr"] for group in optimizer.param_groups]
    assert trains(fresh_body) == trains(body) == [True, True]


def test_loading_a_state_from_before_the_start_holds_the_group_out_again():
    optimizer, _, _ = two_groups()
    early = group_scheduler(optimizer)
    advance(optimizer, early, 1)
    state = early.state_dict()

    later_optimizer, _, later_body = two_groups()
    later = group_scheduler(later_optimizer)
    advance(later_optimizer, later, 4)
    assert trains(later_body) == [True, True]
    later.load_state_dict(state)
    assert (later.last_epoch, trains(later_body)) == (1, [False, False])
    assert [group["lr"] for group in later_optimizer.param_groups] == [1e-2 * (9 / 10), 0.0]


def plain(value):
    if isinstance(value, dict):
        return all(isinstance(key, str) and plain(item) for key, item in value.items())
    if isinstance(value, list):
        return all(plain(item) for item in value)
    return value is None or type(value) in (int, float, bool, str)


def test_the_state_holds_plain_data_only():
    optimizer, _, _ = two_groups()
    scheduler = group_scheduler(optimizer)
    advance(optimizer, scheduler, 4)
    state = scheduler.state_dict()
    assert plain(state), state
    assert state["last_epoch"] == 4
    assert state["base_lrs"] == [1e-2, 1e-3]
    assert state["group_starts"] == [0, 3]
    assert not {"optimizer", "lr_lambdas", "base_factor_of_step"} & set(state)


def test_one_factor_and_one_start_per_param_group():
    optimizer, _, _ = two_groups()
    with pytest.raises(ValueError, match="^one factor and one start per param group$"):
        GroupScheduler(optimizer, [HEAD], starts=[0], base_factor=HEAD)


# Starts decided at an evaluation: "body" waits for a plateau of eval_loss (patience 1), then trains at a
# constant rate; as the layer below it under gradual unfreezing, "lower" follows 2 steps later.


def body_from(start):
    return GroupRateFactor(start=start, warmup=0, length=10 - start, shape="constant")


PLATEAU = PlateauRule("eval_loss", greater_is_better=False, patience=1)


def chained_scheduler(optimizer, rule=PLATEAU, links=1):
    chain = StartChain(
        "body",
        (
            ChainLink((1,), ("body",), body_from, rule=rule, last_start=9, where=("groups[1]", "start", "plateau")),
            *([ChainLink((2,), ("lower",), body_from, offset=2, last_start=9)] if links == 2 else []),
        ),
    )
    # With one link, "lower" is a group of its own that trains from step 0.
    factors, starts = (
        ([HEAD, never_started, HEAD], [0, None, 0]) if links == 1 else ([HEAD, *[never_started] * 2], [0, None, None])
    )
    return GroupScheduler(optimizer, factors, starts=starts, base_factor=HEAD, chains=[chain])


def three_groups():
    head, body, lower = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)
    optimizer = torch.optim.SGD(
        [
            {"name": "head", "params": list(head.parameters()), "lr": 1e-2},
            {"name": "body", "params": list(body.parameters()), "lr": 1e-3},
            {"name": "lower", "params": list(lower.parameters()), "lr": 1e-4},
        ]
    )
    return optimizer, body, lower


def evaluate(scheduler, value):
    scheduler.load_trigger_records(scheduler.records_after_evaluation({"eval_loss": value}, scheduler.last_epoch))


def test_a_plateau_starts_the_group_at_the_evaluations_step_and_its_rate_follows_the_step_from_there():
    optimizer, body, lower = three_groups()
    scheduler = chained_scheduler(optimizer, links=2)
    seen = []
    for value in (1.0, 0.9, 0.95, 0.5, 0.4):  # evaluations at steps 1 .. 5: the plateau is at step 3
        advance(optimizer, scheduler, 1)
        evaluate(scheduler, value)
        seen.append((scheduler.last_epoch, [group["lr"] for group in optimizer.param_groups], trains(body)))
    assert seen == [
        (1, [1e-2 * (9 / 10), 0.0, 0.0], [False, False]),
        (2, [1e-2 * (8 / 10), 0.0, 0.0], [False, False]),
        (3, [1e-2 * (7 / 10), 1e-3, 0.0], [True, True]),  # decided at step 3: it takes part from step 3 on
        (4, [1e-2 * (6 / 10), 1e-3, 0.0], [True, True]),  # later evaluations change nothing
        (5, [1e-2 * (5 / 10), 1e-3, 1e-4], [True, True]),  # the layer below, 2 steps later
    ]
    assert scheduler.group_starts == [0, 3, 5]
    assert trains(lower) == [True, True]
    assert scheduler.started_groups() == [
        ("body", 3, "plateau: eval_loss did not improve on its best (0.9) by more than 0 for 1 evaluation"),
        ("lower", 5, "2 steps after body"),
    ]


def test_deciding_does_not_change_the_scheduler_until_the_records_are_loaded():
    optimizer, _, _ = three_groups()
    scheduler = chained_scheduler(optimizer)
    advance(optimizer, scheduler, 2)
    before = scheduler.state_dict()
    records = scheduler.records_after_evaluation({"eval_loss": 1.0}, 2)
    assert scheduler.state_dict() == before
    assert records == {"body": [{"start": None, "reason": None, "best": 1.0, "stale": 0, "evaluated_at": 2}]}
    # The same evaluation counts once, whatever calls it again (one eval set after another).
    scheduler.load_trigger_records(records)
    assert scheduler.records_after_evaluation({"eval_loss": 2.0}, 2) == records


@pytest.mark.parametrize("saved_at", [1, 2, 3, 4], ids=["first-best", "mid-watch", "decided", "after"])
def test_a_resume_before_or_after_the_decision_continues_exactly(saved_at):
    values = {1: 1.0, 2: 1.2, 3: 1.1, 4: 0.5, 5: 0.6}  # patience 2: the plateau is complete at step 3
    rule = PlateauRule("eval_loss", greater_is_better=False, patience=2)

    def run(scheduler, optimizer, steps):
        rates = []
        for _ in steps:
            advance(optimizer, scheduler, 1)
            evaluate(scheduler, values[scheduler.last_epoch])
            rates.append([group["lr"] for group in optimizer.param_groups])
        return rates

    optimizer, _, _ = three_groups()
    uninterrupted = chained_scheduler(optimizer, rule)
    expected = run(uninterrupted, optimizer, range(1, 6))
    assert uninterrupted.group_starts == [0, 3, 0]

    optimizer, _, _ = three_groups()
    first = chained_scheduler(optimizer, rule)
    run(first, optimizer, range(1, saved_at + 1))
    state = saved_and_loaded(first.state_dict())
    resumed_optimizer, resumed_body, _ = three_groups()
    resumed = chained_scheduler(resumed_optimizer, rule)
    resumed.load_state_dict(state)
    assert trains(resumed_body) == [saved_at >= 3] * 2
    assert run(resumed, resumed_optimizer, range(saved_at + 1, 6)) == expected[saved_at:]
    assert resumed.state_dict() == uninterrupted.state_dict()


def test_latest_starts_the_group_and_is_recorded_when_the_step_reaches_it():
    optimizer, body, _ = three_groups()
    rule = PlateauRule("eval_loss", greater_is_better=False, patience=1, latest=4)
    scheduler = chained_scheduler(optimizer, rule)
    assert scheduler.group_starts == [0, 4, 0]  # known from the start: the group waits at most until step 4
    for value in (1.0, 0.9, 0.8):
        advance(optimizer, scheduler, 1)
        evaluate(scheduler, value)
    assert (scheduler.last_epoch, trains(body), scheduler.trigger_records["body"][0]["start"]) == (3, [False] * 2, None)
    advance(optimizer, scheduler, 1)
    assert (trains(body), optimizer.param_groups[1]["lr"]) == ([True, True], 1e-3)
    assert scheduler.trigger_records["body"][0] == {
        "start": 4,
        "reason": "latest: no plateau of eval_loss by step 4",
        "best": 0.8,
        "stale": 0,
        "evaluated_at": 3,
    }
    assert not scheduler.watching(4)


def test_a_plateau_too_late_for_the_warmup_starts_nothing():
    optimizer, body, _ = three_groups()
    scheduler = chained_scheduler(optimizer)  # last_start 9
    advance(optimizer, scheduler, 8)
    evaluate(scheduler, 1.0)
    advance(optimizer, scheduler, 2)
    evaluate(scheduler, 1.0)  # a plateau at step 10, past its last start
    assert (scheduler.group_starts, trains(body)) == ([0, None, 0], [False, False])


def test_a_metric_the_evaluation_did_not_log_is_refused_naming_the_trigger():
    optimizer, _, _ = three_groups()
    scheduler = chained_scheduler(optimizer)
    advance(optimizer, scheduler, 2)
    scheduler.load_trigger_records(scheduler.records_after_evaluation({"eval_los": 1.0}, 2))
    with pytest.raises(SpecError) as caught:
        scheduler.check_metrics_found(2, ["eval_los", "eval_runtime"])
    assert str(caught.value) == (
        "groups[1].start.plateau.metric (group 'body'): the evaluation at step 2 logged no 'eval_loss'; it logged "
        "'eval_los', 'eval_runtime'; name one of those (as the Trainer logs it)"
    )


def test_the_trigger_records_are_plain_data_in_the_state():
    optimizer, _, _ = three_groups()
    scheduler = chained_scheduler(optimizer)
    advance(optimizer, scheduler, 2)
    evaluate(scheduler, 1.0)
    state = scheduler.state_dict()
    assert plain(state), state
    assert saved_and_loaded(state)["trigger_records"] == {
        "body": [{"start": None, "reason": None, "best": 1.0, "stale": 0, "evaluated_at": 2}]
    }
    assert "chains" not in state and state["group_starts"] == [0, None, 0]
