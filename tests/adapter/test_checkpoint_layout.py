"""Safe resume: the layout saved with every checkpoint, exact continuation, and refused mismatches."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
import torch
from helpers import tiny_bert, training_args
from safetensors.torch import load_file
from transformers import Trainer

from layerwise_trainer import LayerwiseTrainer, LayerwiseTrainingArguments, SpecError
from layerwise_trainer.checkpoints import (
    LAYOUT_FILE,
    CheckpointLayoutError,
    layout_differences,
    plan_layout,
)

SPEC = {
    "groups": [
        {"name": "embeddings", "match": "bert.embeddings.*", "freeze": True},
        {"name": "low", "match": "bert.encoder.layer.0.*", "lr": 1e-3},
        {"name": "high", "match": "bert.encoder.layer.1.*", "lr": 1e-3},
        {"name": "head", "match": ["classifier.*", "bert.pooler.*"], "lr": 3e-3},
    ]
}
# The same groups with the two encoder layers swapped: equal names, rates, sizes and shapes, so torch
# would load the checkpoint's Adam moments into the other layer's parameters without a word.
SWAPPED = {
    "groups": [
        SPEC["groups"][0],
        {"name": "low", "match": "bert.encoder.layer.1.*", "lr": 1e-3},
        {"name": "high", "match": "bert.encoder.layer.0.*", "lr": 1e-3},
        SPEC["groups"][3],
    ]
}


def group_rates(trainer):
    return [
        (entry["step"], {key: value for key, value in entry.items() if key.startswith("learning_rate")})
        for entry in trainer.state.log_history
        if "loss" in entry
    ]


@pytest.fixture
def first_run(make_args, data, tmp_path):
    """Six uninterrupted steps, with a checkpoint after step 3."""
    args = make_args(
        output_dir=str(tmp_path / "first"), save_strategy="steps", save_steps=3, max_steps=6,
        lr_scheduler_type="linear", warmup_steps=2, weight_decay=0.01,
    )  # fmt: skip
    trainer = LayerwiseTrainer(model=tiny_bert(), args=args, train_dataset=data, param_groups=SPEC)
    trainer.train()
    return trainer, tmp_path / "first" / "checkpoint-3"


def resumed_trainer(make_args, data, tmp_path, spec, **overrides):
    args = training_args(
        tmp_path / "resumed", LayerwiseTrainingArguments, save_strategy="no", max_steps=6,
        lr_scheduler_type="linear", warmup_steps=2, weight_decay=0.01, **overrides,
    )  # fmt: skip
    return LayerwiseTrainer(model=tiny_bert(), args=args, train_dataset=data, param_groups=spec)


def test_every_checkpoint_carries_the_layout(first_run):
    trainer, checkpoint = first_run
    layout = json.loads((checkpoint / LAYOUT_FILE).read_text())
    assert layout["version"] == 2
    assert layout["optimizer"] == {"class": "torch.optim.adamw.AdamW", "kwargs": {"betas": [0.9, 0.999], "eps": 1e-08}}
    assert layout == plan_layout(trainer.group_plan, layout["optimizer"])
    assert [(group["name"], group["lr"], group["weight_decay"]) for group in layout["groups"]] == [
        ("low", 1e-3, 0.01), ("low", 1e-3, 0.0), ("high", 1e-3, 0.01), ("high", 1e-3, 0.0),
        ("head", 3e-3, 0.01), ("head", 3e-3, 0.0),
    ]  # fmt: skip
    assert layout["groups"][4]["parameters"] == [["bert.pooler.dense.weight", [16, 16]], ["classifier.weight", [3, 16]]]
    assert layout["frozen"] == ["embeddings"]
    assert len(layout["hash"]) == 64


def test_resume_continues_exactly(first_run, make_args, data, tmp_path):
    uninterrupted, checkpoint = first_run
    resumed = resumed_trainer(make_args, data, tmp_path, SPEC)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    after_resume = [(step, rates) for step, rates in group_rates(resumed) if step > 3]
    assert [step for step, _ in after_resume] == [4, 5, 6]
    assert after_resume == [(step, rates) for step, rates in group_rates(uninterrupted) if step > 3]
    for name, value in uninterrupted.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, msg=name)


def test_torch_alone_would_load_swapped_groups_silently(first_run):
    trainer, checkpoint = first_run
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    model = tiny_bert()
    named = dict(model.named_parameters())
    swapped_groups = []
    for group in trainer.optimizer.param_groups:
        names = [
            name for name, parameter in trainer.model.named_parameters() for p in group["params"] if p is parameter
        ]
        names = [name.replace("layer.0.", "layer.X.").replace("layer.1.", "layer.0.").replace("layer.X.", "layer.1.")
                 for name in names]  # fmt: skip
        swapped_groups.append({**group, "params": [named[name] for name in names]})
    optimizer = torch.optim.AdamW(swapped_groups)
    optimizer.load_state_dict(state)  # no error: layer 0's moments now sit on layer 1
    moments = optimizer.state[named["bert.encoder.layer.1.attention.self.query.weight"]]["exp_avg"]
    original = trainer.optimizer.state[trainer.model.get_parameter("bert.encoder.layer.0.attention.self.query.weight")]
    assert moments.shape == original["exp_avg"].shape


def test_resume_with_swapped_groups_is_refused_before_the_first_step(first_run, make_args, data, tmp_path):
    _, checkpoint = first_run
    resumed = resumed_trainer(make_args, data, tmp_path, SWAPPED)
    with pytest.raises(CheckpointLayoutError) as caught:
        resumed.train(resume_from_checkpoint=str(checkpoint))
    message = str(caught.value)
    assert message.startswith(
        f"cannot resume from {checkpoint}: its param groups differ from the ones the spec gives now"
    )
    lines = message.splitlines()
    assert lines[1] == (
        "  - group 'low': now also has 'bert.encoder.layer.1.attention.self.query.weight', "
        "'bert.encoder.layer.1.attention.self.key.weight', 'bert.encoder.layer.1.attention.self.value.weight' and "
        "3 more; no longer has 'bert.encoder.layer.0.attention.self.query.weight', "
        "'bert.encoder.layer.0.attention.self.key.weight', 'bert.encoder.layer.0.attention.self.value.weight' "
        "and 3 more"
    )
    assert lines[2].startswith("  - group 'low' (no-decay half): now also has 'bert.encoder.layer.1.")
    assert lines[3].startswith("  - group 'high': now also has 'bert.encoder.layer.0.")
    assert lines[-1].startswith("Resume with the spec the checkpoint was saved with")
    assert isinstance(caught.value, SpecError)
    assert resumed.state.global_step == 3  # restored, not advanced
    saved = load_file(checkpoint / "model.safetensors")
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, saved[name]), name  # the checkpoint's weights, untouched by any step


def test_resume_with_a_changed_rate_is_refused(first_run, make_args, data, tmp_path):
    _, checkpoint = first_run
    changed = {"groups": [*SPEC["groups"][:3], {**SPEC["groups"][3], "lr": 1e-2}]}
    with pytest.raises(CheckpointLayoutError) as caught:
        resumed_trainer(make_args, data, tmp_path, changed).train(resume_from_checkpoint=str(checkpoint))
    assert str(caught.value).splitlines()[1:3] == [
        "  - group 'head': lr 0.003 in the checkpoint, 0.01 now",
        "  - group 'head' (no-decay half): lr 0.003 in the checkpoint, 0.01 now",
    ]


def test_resume_with_a_frozen_group_unfrozen_is_refused(first_run, make_args, data, tmp_path):
    _, checkpoint = first_run
    unfrozen = {"groups": [{**SPEC["groups"][0], "freeze": False, "lr": 1e-4}, *SPEC["groups"][1:]]}
    with pytest.raises(CheckpointLayoutError) as caught:
        resumed_trainer(make_args, data, tmp_path, unfrozen).train(resume_from_checkpoint=str(checkpoint))
    assert "  - group 'embeddings' is new: the checkpoint has no such group" in str(caught.value).splitlines()


def test_a_checkpoint_without_layout_is_loaded_with_a_warning(first_run, make_args, data, tmp_path, caplog):
    _, checkpoint = first_run
    (checkpoint / LAYOUT_FILE).unlink()
    resumed = resumed_trainer(make_args, data, tmp_path, SPEC)
    with caplog.at_level(logging.WARNING, logger="layerwise_trainer.trainer"):
        resumed.train(resume_from_checkpoint=str(checkpoint))
    assert f"has no {LAYOUT_FILE} (it was not saved by a LayerwiseTrainer)" in caplog.text
    assert resumed.state.global_step == 6


def layout(*groups):
    return {"hash": str(groups), "groups": [
        {"name": name, "lr": lr, "weight_decay": 0.0, "options": {}, "parameters": [[p, [1]] for p in params]}
        for name, lr, params in groups
    ]}  # fmt: skip


def test_layout_differences():
    saved = layout(("a", 1.0, ["x", "y"]), ("b", 1.0, ["z"]))
    assert layout_differences(saved, layout(("a", 1.0, ["x", "y"]))) == [
        "group 'b' is in the checkpoint but not in the spec now"
    ]
    assert layout_differences(saved, layout(("a", 1.0, ["y", "x"]), ("b", 1.0, ["z"]))) == [
        "group 'a': has the same parameters in another order"
    ]
    assert layout_differences(saved, layout(("b", 1.0, ["z"]), ("a", 1.0, ["x", "y"]))) == [
        "the groups are the same but in another order"
    ]


@pytest.fixture
def stock_checkpoint(make_args, data, tmp_path):
    """A checkpoint of the stock Trainer after step 3: two param groups, no layout."""
    args = make_args(output_dir=str(tmp_path / "stock"), save_strategy="steps", save_steps=3, max_steps=3,
                     lr_scheduler_type="linear", warmup_steps=2, weight_decay=0.01)  # fmt: skip
    Trainer(model=tiny_bert(), args=args, train_dataset=data).train()
    return tmp_path / "stock" / "checkpoint-3"


def test_a_stock_checkpoint_with_another_group_count_is_refused(stock_checkpoint, make_args, data, tmp_path):
    resumed = resumed_trainer(make_args, data, tmp_path, SPEC)
    with pytest.raises(CheckpointLayoutError) as caught:
        resumed.train(resume_from_checkpoint=str(stock_checkpoint))
    message = str(caught.value)
    assert message.startswith(
        f"cannot resume from {stock_checkpoint}: the checkpoint's optimizer has 2 param groups holding 41 "
        "tensors, the spec gives 6 holding 36."
    )
    assert "Torch restores optimizer state by position" in message
    assert "for a checkpoint of the stock Trainer: no spec" in message
    assert resumed.state.global_step == 3


def test_a_stock_checkpoint_resumed_with_one_group_keeps_the_names(stock_checkpoint, make_args, data, tmp_path):
    resumed = resumed_trainer(make_args, data, tmp_path, [{"name": "everything", "match": "*"}])
    resumed.train(resume_from_checkpoint=str(stock_checkpoint))
    assert [group["name"] for group in resumed.optimizer.param_groups] == ["everything", "everything"]
    assert {key for _, rates in group_rates(resumed) for key in rates} == {"learning_rate", "learning_rate/everything"}


def test_resume_with_another_optimizer_is_refused(first_run, make_args, data, tmp_path):
    _, checkpoint = first_run
    with pytest.raises(CheckpointLayoutError) as caught:
        resumed_trainer(make_args, data, tmp_path, SPEC, optim="sgd").train(resume_from_checkpoint=str(checkpoint))
    assert str(caught.value).splitlines()[1] == (
        "  - optimizer: torch.optim.adamw.AdamW in the checkpoint, torch.optim.sgd.SGD now (its state holds "
        "other tensors and hyperparameters, which the current optimizer cannot use)"
    )


def test_resume_with_another_adam_epsilon_is_refused(first_run, make_args, data, tmp_path):
    _, checkpoint = first_run
    with pytest.raises(CheckpointLayoutError) as caught:
        resumed_trainer(make_args, data, tmp_path, SPEC, adam_epsilon=1e-6).train(
            resume_from_checkpoint=str(checkpoint)
        )
    assert str(caught.value).splitlines()[1] == "  - optimizer argument 'eps': 1e-08 in the checkpoint, 1e-06 now"


def as_version_1(checkpoint):
    """Rewrite a checkpoint's layout as the first version wrote it: no optimizer, a hash of the groups."""
    layout = json.loads((checkpoint / LAYOUT_FILE).read_text())
    groups = layout["groups"]
    digest = hashlib.sha256(json.dumps(groups, sort_keys=True).encode("utf-8")).hexdigest()
    legacy = {"version": 1, "hash": digest, "groups": groups, "frozen": layout["frozen"]}
    (checkpoint / LAYOUT_FILE).write_text(json.dumps(legacy))


def test_a_version_1_layout_still_resumes(first_run, make_args, data, tmp_path):
    uninterrupted, checkpoint = first_run
    as_version_1(checkpoint)
    resumed = resumed_trainer(make_args, data, tmp_path, SPEC)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    after_resume = [(step, rates) for step, rates in group_rates(resumed) if step > 3]
    assert after_resume == [(step, rates) for step, rates in group_rates(uninterrupted) if step > 3]


def test_a_version_1_layout_with_another_optimizer_is_refused(first_run, make_args, data, tmp_path):
    _, checkpoint = first_run
    as_version_1(checkpoint)
    with pytest.raises(CheckpointLayoutError) as caught:
        resumed_trainer(make_args, data, tmp_path, SPEC, optim="sgd").train(resume_from_checkpoint=str(checkpoint))
    assert str(caught.value) == (
        f"cannot resume from {checkpoint}: it was saved by another optimizer: SGD needs 'dampening', 'momentum', "
        "'nesterov', which the saved groups lack; the saved groups have 'amsgrad', 'betas', 'decoupled_weight_decay' "
        "and 1 more, which SGD does not take. Torch restores optimizer state by position, so it cannot go into these "
        "groups. Resume with the spec and optim the checkpoint was saved with (for a checkpoint of the stock "
        "Trainer: no spec), or start a new run from its weights (without resume_from_checkpoint), or set "
        "resume_with_changed_groups=True to carry the optimizer state over by parameter name."
    )


def test_an_optimizer_file_the_check_reads_without_loading_its_tensors(tmp_path):
    from layerwise_trainer.checkpoints import OPTIMIZER_FILE, _saved_optimizer_groups

    assert _saved_optimizer_groups(tmp_path) is None
    torch.save({"param_groups": [{"lr": 0.1, "params": [0]}], "state": {}}, tmp_path / OPTIMIZER_FILE)
    assert _saved_optimizer_groups(tmp_path) == [{"lr": 0.1, "params": [0]}]


def swap_two_parameter_names(checkpoint):
    """Damage the layout as a hand edit would: two parameters of `low` trade names, the hash is kept."""
    layout = json.loads((checkpoint / LAYOUT_FILE).read_text())
    low = next(group for group in layout["groups"] if group["name"] == "low")
    names = [entry[0] for entry in low["parameters"]]
    query, key = (
        names.index("bert.encoder.layer.0.attention.self.query.weight"),
        names.index("bert.encoder.layer.0.attention.self.key.weight"),
    )
    low["parameters"][query][0], low["parameters"][key][0] = names[key], names[query]
    (checkpoint / LAYOUT_FILE).write_text(json.dumps(layout))


@pytest.mark.parametrize("switch", [False, True], ids=["refused", "carried by name"])
def test_a_layout_changed_after_it_was_saved_is_refused_with_or_without_the_switch(
    first_run, make_args, data, tmp_path, switch
):
    _, checkpoint = first_run
    swap_two_parameter_names(checkpoint)
    changed = {"groups": [*SPEC["groups"][:3], {**SPEC["groups"][3], "lr": 1e-2}]}
    resumed = resumed_trainer(make_args, data, tmp_path, changed, resume_with_changed_groups=switch)
    with pytest.raises(CheckpointLayoutError) as caught:
        resumed.train(resume_from_checkpoint=str(checkpoint))
    assert str(caught.value) == (
        f"cannot resume from {checkpoint}: {checkpoint / LAYOUT_FILE} does not match its own SHA-256: it was "
        "changed after it was saved, so it can no longer say which saved state belongs to which parameter. "
        "Restore the file as the run wrote it, or start a new run from the checkpoint's weights (without "
        "resume_from_checkpoint)"
    )
    assert resumed.state.global_step == 3  # refused before any step after the checkpoint


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "is not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
        ("[1, 2]", "is not a param-group layout (expected a JSON object with 'version', 'hash' and 'groups')"),
        (
            '{"version": 3, "hash": "0", "groups": []}',
            "has version 3, and this layerwise_trainer reads versions 1 and 2",
        ),
        (
            '{"version": 2, "hash": "0", "groups": [{"name": "low"}]}',
            "is not a param-group layout (a group without its list of [name, shape] parameters)",
        ),
    ],
    ids=["not JSON", "not an object", "unknown version", "no parameters"],
)
def test_a_layout_file_that_cannot_be_read_is_refused_naming_it(first_run, make_args, data, tmp_path, content, problem):
    _, checkpoint = first_run
    (checkpoint / LAYOUT_FILE).write_text(content)
    with pytest.raises(CheckpointLayoutError) as caught:
        resumed_trainer(make_args, data, tmp_path, SPEC).train(resume_from_checkpoint=str(checkpoint))
    assert str(caught.value) == f"cannot resume from {checkpoint}: {checkpoint / LAYOUT_FILE} {problem}"


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt"])
@pytest.mark.parametrize("switch", [False, True], ids=["same groups", "carried by name"])
def test_a_damaged_optimizer_or_scheduler_file_is_refused_naming_it(first_run, make_args, data, tmp_path, name, switch):
    _, checkpoint = first_run
    (checkpoint / name).write_bytes(b"not a torch file")
    spec = SPEC if not switch else {"groups": [*SPEC["groups"][:3], {**SPEC["groups"][3], "lr": 1e-2}]}
    resumed = resumed_trainer(make_args, data, tmp_path, spec, resume_with_changed_groups=switch)
    with pytest.raises(CheckpointLayoutError) as caught:
        resumed.train(resume_from_checkpoint=str(checkpoint))
    assert str(caught.value).startswith(f"cannot resume from {checkpoint}: {checkpoint / name} cannot be read (")
