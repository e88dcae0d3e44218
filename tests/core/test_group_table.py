"""The group table and the plan as data: unchanged without per-group schedules, with start and schedule columns."""

from __future__ import annotations

import json

from layerwise_trainer import plan_to_data, render_table, resolve_groups

PLAIN_SPEC = [
    {"name": "embeddings", "match": "bert.embeddings.*", "freeze": True},
    {"name": "head", "match": "classifier.*", "lr": 1e-3},
]
STAGED_SPEC = {
    "groups": [
        {"name": "head", "match": "classifier.*", "lr": 1e-3, "warmup": 2, "schedule": "cosine", "min_lr_ratio": 0.1},
        {"name": "embeddings", "match": "bert.embeddings.*", "freeze": True},
        {
            "name": "encoder",
            "match": "bert.encoder.*",
            "layer_decay": 0.5,
            "start": {"epochs": 1},
            "gradual_unfreeze": {"every": 10},
            "warmup": {"ratio": 0.1},
        },
    ]
}


def plan_of(model, spec):
    return resolve_groups(model, spec, learning_rate=1e-4, weight_decay=0.01)


def test_a_plan_without_schedules_prints_the_eight_columns(bert):
    # default: 2 blocks of 2,224 and the pooler's 272 (16 x 16 + 16); 10 biases and norms per block, 1 in the pooler
    lines = render_table(plan_of(bert, PLAIN_SPEC)).splitlines()
    assert lines[:6] == [
        "group       tensors  parameters      lr  weight decay  no-decay tensors  frozen  layer",
        "----------  -------  ----------  ------  ------------  ----------------  ------  -----",
        "embeddings        5       1,600       0             -                 -     yes      -",
        "head              2          51   0.001          0.01                 1      no      -",
        "default          34       4,720  0.0001          0.01                21      no      -",
        "",
    ]
    assert lines[6].startswith("in 'default' (no group matched them): 34 tensors: ") and len(lines) == 7


def test_a_plan_without_schedules_has_no_timing_in_its_data(bert):
    data = plan_to_data(plan_of(bert, PLAIN_SPEC))
    assert list(data["rows"][0]) == [
        "name", "tensors", "parameters", "lr", "weight_decay", "no_decay_tensors", "frozen", "layer_id",
    ]  # fmt: skip
    assert list(data["groups"][0]) == [
        "name", "source", "lr", "weight_decay", "frozen", "layer_id", "no_decay", "options", "num_elements",
        "parameter_names",
    ]  # fmt: skip


def test_a_staged_plan_shows_each_groups_start_and_schedule(bert):
    table = render_table(plan_of(bert, STAGED_SPEC))
    assert table.splitlines() == [
        "group            tensors  parameters       lr  weight decay  no-decay tensors  frozen  layer  "
        "start                   schedule",
        "---------------  -------  ----------  -------  ------------  ----------------  ------  -----  "
        "----------------------  -----------------------------------",
        "head                   2          51    0.001          0.01                 1      no      -  "
        "0                       cosine (floor 0.1), warm-up 2 steps",
        "embeddings             5       1,600        0             -                 -     yes      -  "
        "-                       -",
        "encoder/layer_1       16       2,224  2.5e-05          0.01                10      no      1  "
        "1 epoch + 1 x 10 steps  trainer, warm-up ratio 0.1",
        "encoder/layer_2       16       2,224    5e-05          0.01                10      no      2  "
        "1 epoch                 trainer, warm-up ratio 0.1",
        "default                2         272   0.0001          0.01                 1      no      -  "
        "0                       trainer",
        "",
        "in 'default' (no group matched them): 2 tensors: bert.pooler.dense.weight, bert.pooler.dense.bias",
    ]


def test_a_staged_plan_gives_every_row_and_group_its_timing(bert):
    data = json.loads(json.dumps(plan_to_data(plan_of(bert, STAGED_SPEC))))
    rows = {row["name"]: (row["start"], row["schedule"], row["timing"]) for row in data["rows"]}
    encoder_timing = {"start": {"epochs": 1.0}, "unfreeze_every": 10, "warmup": {"ratio": 0.1}}
    encoder_schedule = "trainer, warm-up ratio 0.1"
    assert rows == {
        "head": ("0", "cosine (floor 0.1), warm-up 2 steps", {"warmup": 2, "schedule": "cosine", "min_lr_ratio": 0.1}),
        "embeddings": (None, None, None),
        "encoder/layer_1": ("1 epoch + 1 x 10 steps", encoder_schedule, {**encoder_timing, "unfreeze_rank": 1}),
        "encoder/layer_2": ("1 epoch", encoder_schedule, {**encoder_timing, "unfreeze_rank": 0}),
        "default": ("0", "trainer", None),
    }
    groups = [(group["name"], group["no_decay"], group["timing"]) for group in data["groups"]]
    assert groups[3:5] == [
        ("encoder/layer_1", False, {**encoder_timing, "unfreeze_rank": 1}),
        ("encoder/layer_1", True, {**encoder_timing, "unfreeze_rank": 1}),
    ]
    assert [timing for name, _, timing in groups if name in ("embeddings", "default")] == [None, None, None]


PLATEAU_SPEC = [
    {"name": "head", "match": "classifier.*", "lr": 1e-3},
    {
        "name": "encoder",
        "match": "bert.encoder.*",
        "layer_decay": 0.5,
        "start": {"plateau": {"metric": "eval_loss", "patience": 2, "min_delta": 0.01, "latest": 2000}},
        "gradual_unfreeze": {"every": {"plateau": {"patience": 1}}},
    },
]


def test_a_plan_shows_a_start_on_a_plateau_and_the_triggers_its_layers_wait_for(bert):
    plan = plan_of(bert, PLATEAU_SPEC)
    data = plan_to_data(plan)
    top = "eval_loss plateau (patience 2, min_delta 0.01, latest 2000 steps)"
    starts = {row["name"]: row["start"] for row in data["rows"]}
    assert starts == {
        "head": "0",
        "encoder/layer_1": f"{top} + 1 x eval_loss plateau (patience 1)",
        "encoder/layer_2": top,
        "default": "0",
    }
    lines = render_table(plan).splitlines()
    assert lines[0].split()[-2:] == ["start", "schedule"]
    for name in ("encoder/layer_1", "encoder/layer_2"):
        row = next(line for line in lines if line.startswith(name))
        assert f"  {starts[name]}  " in row, row
    timing = {row["name"]: row["timing"] for row in data["rows"]}["encoder/layer_1"]
    assert timing == {
        "start": {"plateau": {"metric": "eval_loss", "patience": 2, "min_delta": 0.01, "latest": 2000}},
        "unfreeze_every": {"plateau": {"metric": "eval_loss", "patience": 1, "min_delta": 0.0}},
        "unfreeze_rank": 1,
    }
