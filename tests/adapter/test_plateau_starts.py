"""A group that starts on a plateau of an evaluation metric, through the real Trainer: the exact start step and
exact rates per step, the event in the log, chains under gradual unfreezing, exact resumes across the decision,
and the refusals.

The metric is scripted (`helpers.ScriptedMetric`: a ``compute_metrics`` whose value depends on the step), and the
Trainer evaluates every 2 steps. A plateau completed by the evaluation at step S starts the group at S: it takes
part from the Trainer's step S + 1, and with a warm-up of 2 the rates logged are 0 up to step S + 1 (a warm-up's
first step has rate 0), then half the rate at S + 2 and the full rate from S + 3.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from helpers import RandomClassificationData, ScriptedMetric, tiny_bert, training_args
from transformers import TrainerCallback, TrainingArguments
from transformers.training_args import ParallelMode

from layerwise_trainer import LayerwiseTrainer, SpecError, resolve_groups
from layerwise_trainer.core.group_schedule import PlateauRule, PlateauTrigger
from layerwise_trainer.core.group_scheduler import ChainLink, GroupScheduler, StartChain, never_started
from layerwise_trainer.schedulers import check_group_schedules_supported, continue_schedule, greater_is_better
from layerwise_trainer.start_triggers import StartTriggerCallback

HEAD = {"name": "head", "match": "classifier.*", "lr": 1e-3}
# Lower is better (the name ends with "loss"). With min_delta 0.05: 0.88 and 0.86 are no improvement on 0.9,
# 0.84 is (by 0.06).
SCRIPT = {2: 1.0, 4: 0.9, 6: 0.88, 8: 0.86, 10: 0.84, 12: 0.84, 14: 0.5}


def plateau(**keys):
    return {"plateau": {"metric": "scripted_loss", **keys}}


def body(**keys):
    return {"name": "body", "match": "bert.*", "lr": 1e-4, **keys}


def trainer_for(output_dir, spec, script=SCRIPT, steps=14, callbacks=(), eval_dataset=None, **overrides):
    metric = ScriptedMetric(script)
    settings = {"max_steps": steps, "learning_rate": 1e-3, "lr_scheduler_type": "constant", "eval_strategy": "steps",
                "eval_steps": 2, **overrides}  # fmt: skip
    trainer = LayerwiseTrainer(
        model=tiny_bert(),
        args=training_args(output_dir, **settings),
        train_dataset=RandomClassificationData(32),
        eval_dataset=RandomClassificationData(8) if eval_dataset is None else eval_dataset,
        compute_metrics=metric,
        param_groups=spec,
        callbacks=list(callbacks),
    )
    metric.trainer = trainer
    return trainer


def logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if "loss" in entry]


def events(trainer):
    return [
        (entry["group_started"], entry["step"], entry["reason"])
        for entry in trainer.state.log_history
        if "group_started" in entry
    ]


def warmed_up_from(start, steps=14, rate=1e-4):
    """The rates logged at steps 1 .. ``steps`` of a group that starts at ``start`` with a warm-up of 2."""
    return [0.0] * (start + 1) + [rate / 2] + [rate] * (steps - start - 2)


class BodyGradients(TrainerCallback):
    """The Trainer's steps (1-based) at which the body's parameters had gradients."""

    def __init__(self):
        self.steps = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if any(p.grad is not None for name, p in model.named_parameters() if name.startswith("bert.")):
            self.steps.append(state.global_step + 1)


@pytest.mark.parametrize(
    ("patience", "min_delta", "start"),
    [(1, 0.05, 6), (2, 0.05, 8), (1, 0.0, 12)],
    ids=["patience-1", "patience-2", "no-min-delta"],
)
def test_the_body_starts_at_the_evaluation_that_completes_the_plateau(patience, min_delta, start, tmp_path):
    gradients = BodyGradients()
    spec = [HEAD, body(start=plateau(patience=patience, min_delta=min_delta), warmup=2)]
    trainer = trainer_for(tmp_path, spec, callbacks=[gradients])
    trainer.train()
    assert trainer.lr_scheduler.group_starts == [0, 0, start, start]
    assert logged(trainer, "learning_rate/body") == warmed_up_from(start)
    assert logged(trainer, "learning_rate/head") == [1e-3] * 14
    assert gradients.steps == list(range(start + 1, 15))  # no gradient before its start
    stale = "1 evaluation" if patience == 1 else "2 evaluations"
    best = {6: 0.9, 8: 0.9, 12: 0.84}[start]
    assert events(trainer) == [
        ("body", start, f"plateau: eval_scripted_loss did not improve on its best ({best:g}) by more than "
                        f"{min_delta:g} for {stale}"),
    ]  # fmt: skip
    event = next(entry for entry in trainer.state.log_history if "group_started" in entry)
    assert event["epoch"] == start * 8 / 32


def test_without_a_plateau_the_body_never_starts(tmp_path):
    # patience 3: stale at 6 and 8, 0.84 improves at 10, stale at 12, 0.5 improves at 14.
    trainer = trainer_for(tmp_path, [HEAD, body(start=plateau(patience=3, min_delta=0.05), warmup=2)])
    trainer.train()
    assert logged(trainer, "learning_rate/body") == [0.0] * 14
    assert events(trainer) == []
    assert all(not p.requires_grad for n, p in trainer.model.named_parameters() if n.startswith("bert."))


def test_latest_starts_the_body_without_a_plateau(tmp_path):
    improving = {step: 1.0 - step / 100 for step in range(2, 15, 2)}
    spec = [HEAD, body(start=plateau(latest=5), warmup=2)]
    trainer = trainer_for(tmp_path, spec, script=improving)
    trainer.train()
    assert logged(trainer, "learning_rate/body") == warmed_up_from(5)
    assert events(trainer) == [("body", 5, "latest: no plateau of eval_scripted_loss by step 5")]


def test_with_several_eval_sets_the_trigger_reads_its_metric_from_the_one_that_logs_it(tmp_path):
    # The Trainer evaluates a dict of eval sets one at a time, each metric prefixed with its set's name.
    eval_sets = {"first": RandomClassificationData(8), "second": RandomClassificationData(4)}
    spec = [HEAD, body(start=plateau(metric="eval_second_scripted_loss", min_delta=0.05), warmup=2)]
    trainer = trainer_for(tmp_path, spec, steps=8, eval_dataset=eval_sets)
    trainer.train()
    assert logged(trainer, "learning_rate/body") == warmed_up_from(6, steps=8)
    assert events(trainer) == [
        ("body", 6, "plateau: eval_second_scripted_loss did not improve on its best (0.9) by more than 0.05 "
                    "for 1 evaluation"),
    ]  # fmt: skip


# Gradual unfreezing: layer 3 (the pooler) starts on the first plateau, each layer below on the next one
# (patience 1, latest 5 steps after the layer above), or a fixed 3 steps after the layer above.
CHAIN_SCRIPT = {2: 1.0, 4: 1.1, 6: 0.9, 8: 0.95, 10: 0.8, 12: 0.7, 14: 0.75, 16: 0.8, 18: 0.6}


@pytest.mark.parametrize(
    ("every", "starts", "reasons"),
    [
        (
            plateau(latest=5),
            [4, 8, 13, 16],
            [
                "plateau: eval_scripted_loss did not improve on its best (1) by more than 0 for 1 evaluation",
                "plateau: eval_scripted_loss did not improve on its best (0.9) by more than 0 for 1 evaluation",
                "latest: no plateau of eval_scripted_loss by step 13",  # 10 and 12 improve
                "plateau: eval_scripted_loss did not improve on its best (0.75) by more than 0 for 1 evaluation",
            ],
        ),
        (
            3,
            [4, 7, 10, 13],
            [
                "plateau: eval_scripted_loss did not improve on its best (1) by more than 0 for 1 evaluation",
                "3 steps after body/layer_3",
                "3 steps after body/layer_2",
                "3 steps after body/layer_1",
            ],
        ),
    ],
    ids=["every-plateau", "every-3-steps"],
)
def test_gradual_unfreezing_chains_the_starts_top_down(every, starts, reasons, tmp_path):
    spec = [HEAD, body(layer_decay=0.5, start=plateau(), gradual_unfreeze={"every": every})]
    trainer = trainer_for(tmp_path, spec, script=CHAIN_SCRIPT, steps=18)
    trainer.train()
    names = ["body/layer_3", "body/layer_2", "body/layer_1", "body/layer_0"]
    assert events(trainer) == list(zip(names, starts, reasons, strict=True))
    for name, start, layer in zip(names, starts, (3, 2, 1, 0), strict=True):
        rate = 1e-4 * 0.5 ** (3 - layer)
        assert logged(trainer, f"learning_rate/{name}") == [0.0] * start + [rate] * (18 - start), name


# Resuming: the body starts at 8 (patience 2, min_delta 0.05); a checkpoint every 2 steps. At step 6 the
# trigger has seen one evaluation without improvement; at 8 the decision is in the checkpoint.
RESUME_SPEC = [HEAD, body(start=plateau(patience=2, min_delta=0.05), warmup=2)]
RESUME_STEPS = 12


def logged_run(trainer):
    keys = ("step", "loss", "grad_norm", "learning_rate", "learning_rate/head", "learning_rate/body")
    return [tuple(entry[key] for key in keys) for entry in trainer.state.log_history if "loss" in entry]


def final_weights(trainer):
    return {name: parameter.detach().clone() for name, parameter in trainer.model.named_parameters()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    trainer = trainer_for(output_dir, RESUME_SPEC, steps=RESUME_STEPS, save_strategy="steps", save_steps=2)
    trainer.train()
    return output_dir, logged_run(trainer), events(trainer), final_weights(trainer)


@pytest.mark.parametrize("checkpoint", [6, 8, 10], ids=["before-the-decision", "at-the-decision", "after-it"])
def test_a_resume_across_the_decision_continues_exactly(checkpoint, uninterrupted, tmp_path):
    output_dir, expected_log, expected_events, expected_weights = uninterrupted
    assert expected_events == [("body", 8, "plateau: eval_scripted_loss did not improve on its best (0.9) by more "
                                           "than 0.05 for 2 evaluations")]  # fmt: skip
    trainer = trainer_for(tmp_path, RESUME_SPEC, steps=RESUME_STEPS, save_strategy="steps", save_steps=2)
    trainer.train(resume_from_checkpoint=str(output_dir / f"checkpoint-{checkpoint}"))
    assert logged_run(trainer) == expected_log
    assert events(trainer) == expected_events  # the history up to the checkpoint, and no event twice
    weights = final_weights(trainer)
    assert all(torch.equal(weights[name], weight) for name, weight in expected_weights.items())


def test_the_checkpoint_records_the_watch_and_the_decision(uninterrupted):
    output_dir, _, _, _ = uninterrupted
    records = [
        torch.load(output_dir / f"checkpoint-{step}" / "scheduler.pt", weights_only=True)["trigger_records"]["body"]
        for step in (6, 8)
    ]
    assert records == [
        [{"start": None, "reason": None, "best": 0.9, "stale": 1, "evaluated_at": 6}],
        [{"start": 8, "reason": "plateau: eval_scripted_loss did not improve on its best (0.9) by more than 0.05 "
                                "for 2 evaluations", "best": 0.9, "stale": 2, "evaluated_at": 8}],
    ]  # fmt: skip


# Refusals.


NO_EVALUATION = (
    "groups[1].start (group 'body'): a start on a plateau of eval_loss is decided at evaluations during training, "
    "and this Trainer has {}; set eval_strategy ('steps' with eval_steps, or 'epoch') and pass an eval_dataset"
)


@pytest.mark.parametrize("eval_dataset", [RandomClassificationData(8), None], ids=["with-eval-set", "without"])
def test_a_trigger_without_evaluations_is_refused_when_the_trainer_is_built(eval_dataset, tmp_path):
    with pytest.raises(SpecError) as caught:
        LayerwiseTrainer(model=tiny_bert(), args=training_args(tmp_path), eval_dataset=eval_dataset,
                         param_groups=[HEAD, body(start={"plateau": {}})])  # fmt: skip
    assert str(caught.value) == NO_EVALUATION.format("eval_strategy='no'")


def test_a_trigger_whose_eval_set_was_taken_away_is_refused_before_the_first_step(tmp_path):
    # The stock Trainer refuses eval_strategy without an eval_dataset when it is built; not when it is dropped later.
    trainer = trainer_for(tmp_path, [HEAD, body(start={"plateau": {}})])
    trainer.eval_dataset = None
    with pytest.raises(SpecError) as caught:
        trainer.train()
    assert str(caught.value) == NO_EVALUATION.format("no eval_dataset")
    assert trainer.state.global_step == 0


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"start": plateau(latest=14)},
            "groups[1].start.plateau.latest (group 'body'): body would start at step 14 at the latest, but training "
            "has only 14 optimizer steps (with its warm-up after it); make latest earlier or train longer",
        ),
        (
            {"start": plateau(latest=13), "warmup": 2},
            "groups[1].start.plateau.latest (group 'body'): body would start at step 13 at the latest",
        ),
        (
            {"start": plateau(earliest={"fraction": 0.5}, latest=4)},
            "groups[1].start.plateau.latest (group 'body'): the latest start (4 steps) comes before the earliest "
            "(7 steps)",
        ),
        (
            {"start": plateau(earliest=13), "warmup": 2},
            "groups[1].start.plateau.earliest (group 'body'): body would start at step 13 at the earliest, but "
            "training has only 14 optimizer steps (with its warm-up after it); make earliest earlier or train longer",
        ),
        (
            {"start": plateau(patience=6)},
            "groups[1].start.plateau (group 'body'): a plateau of eval_scripted_loss needs 7 evaluations (patience "
            "6), and this run evaluates every 2 steps from step 2, so the first evaluation that could start body is "
            "at step 14, but it can start at step 13 at the latest (training has 14 optimizer steps, with its "
            "warm-up after the start); evaluate more often, lower patience, or give latest",
        ),
        (
            {"start": plateau(metric="scripted_los")},
            "groups[1].start.plateau.metric (group 'body'): the evaluation at step 2 logged no 'eval_scripted_los'; "
            "it logged 'epoch', 'eval_loss', 'eval_runtime', 'eval_samples_per_second', 'eval_scripted_loss', "
            "'eval_steps_per_second'; name one of those (as the Trainer logs it)",
        ),
    ],
    ids=[
        "latest-at-the-end",
        "latest-without-room-for-the-warmup",
        "earliest-after-latest-in-other-units",
        "earliest-at-the-end",
        "too-few-evaluations",
        "unknown-metric",
    ],
)
def test_a_trigger_that_does_not_fit_the_run_is_refused_naming_the_key(keys, message, tmp_path):
    trainer = trainer_for(tmp_path, [HEAD, body(**keys)])
    with pytest.raises(SpecError) as caught:
        trainer.train()
    assert str(caught.value).startswith(message)
    assert trainer.state.global_step <= 2


@pytest.mark.parametrize(
    ("overrides", "patience", "every", "first", "deciding"),
    [({"eval_delay": 10}, 2, 2, 10, 14), ({"eval_strategy": "epoch"}, 3, 4, 4, 16)],
    ids=["eval-delay", "epochs"],
)
def test_a_plateau_that_no_evaluation_of_the_run_can_decide_is_refused_before_the_first_step(
    overrides, patience, every, first, deciding, tmp_path
):
    trainer = trainer_for(tmp_path, [HEAD, body(start=plateau(patience=patience))], **overrides)
    with pytest.raises(SpecError) as caught:
        trainer.train()
    assert str(caught.value) == (
        f"groups[1].start.plateau (group 'body'): a plateau of eval_scripted_loss needs {patience + 1} evaluations "
        f"(patience {patience}), and this run evaluates every {every} steps from step {first}, so the first evaluation "
        f"that could start body is at step {deciding}, but it can start at step 13 at the latest "
        "(training has 14 optimizer steps, with its warm-up after the start); evaluate more often, lower patience, "
        "or give latest"
    )
    assert trainer.state.global_step == 0


def test_a_plateau_the_last_evaluation_in_time_can_decide_is_accepted(tmp_path):
    # Evaluations at 10 and 12 (eval_delay 10): patience 1 decides at 12 at the earliest, within the last start (13).
    trainer = trainer_for(
        tmp_path, [HEAD, body(start=plateau(patience=1))], script={10: 1.0, 12: 1.0, 14: 1.0}, eval_delay=10
    )
    trainer.train()
    assert trainer.lr_scheduler.group_starts == [0, 0, 12, 12]


SINGLE = SimpleNamespace(lr_scheduler_type="linear", parallel_mode=ParallelMode.NOT_DISTRIBUTED, world_size=1,
                         eval_strategy="steps")  # fmt: skip
DDP = SimpleNamespace(lr_scheduler_type="linear", parallel_mode=ParallelMode.DISTRIBUTED, world_size=2,
                      eval_strategy="steps", ddp_find_unused_parameters=False)  # fmt: skip


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        ({"is_fsdp_enabled": True}, "a group that starts later is not supported under FSDP"),
        ({"is_deepspeed_enabled": True}, "a group that starts later is not supported under DeepSpeed"),
        ({"args": DDP}, "under DDP a group that starts later needs ddp_find_unused_parameters=True"),
        (
            {"args": SimpleNamespace(**{**vars(SINGLE), "lr_scheduler_type": "reduce_lr_on_plateau"})},
            "lr_scheduler_type='reduce_lr_on_plateau' changes rates from an evaluation metric",
        ),
    ],
    ids=["fsdp", "deepspeed", "ddp-without-find-unused-parameters", "metric-driven-scheduler"],
)
@pytest.mark.parametrize("key", ["start", "gradual_unfreeze"])
def test_the_refusals_of_later_starts_apply_to_triggers(trainer, message, key):
    keys = (
        {"start": {"plateau": {}}}
        if key == "start"
        else {"layer_decay": 0.5, "gradual_unfreeze": {"every": {"plateau": {}}}}
    )
    plan = resolve_groups(tiny_bert(), [HEAD, body(**keys)], learning_rate=1e-3, weight_decay=0.0)
    stand_in = SimpleNamespace(**{"args": SINGLE, "model": None, "eval_dataset": [], **trainer})
    with pytest.raises(SpecError) as caught:
        check_group_schedules_supported(plan, stand_in)
    assert str(caught.value).startswith(f"groups[1].{key} (group 'body'): {message}")


def test_greater_is_better_follows_the_trainers_convention(tmp_path):
    def args(**keys):
        return TrainingArguments(str(tmp_path), report_to=[], **keys)

    accuracy, f1, wer = PlateauTrigger("eval_accuracy"), PlateauTrigger("eval_f1"), PlateauTrigger("eval_wer_loss")
    assert [greater_is_better(trigger, args()) for trigger in (accuracy, f1, wer)] == [True, True, False]
    # The metric_for_best_model ("accuracy" is "eval_accuracy" to the Trainer) takes greater_is_better.
    chosen = args(metric_for_best_model="accuracy", greater_is_better=False)
    assert [greater_is_better(trigger, chosen) for trigger in (accuracy, f1)] == [False, True]
    assert greater_is_better(PlateauTrigger("eval_accuracy", greater_is_better=True), chosen) is True


def test_the_callback_is_installed_once_and_only_for_triggers(tmp_path):
    trainer = trainer_for(tmp_path, [HEAD, body(start=plateau(latest=3))], steps=4)
    trainer.train()
    trainer.train()  # a second run builds the scheduler again
    installed = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, StartTriggerCallback)]
    assert len(installed) == 1
    staged = trainer_for(tmp_path, [HEAD, body(start=2)], steps=4)
    staged.train()
    assert not any(isinstance(cb, StartTriggerCallback) for cb in staged.callback_handler.callbacks)


def chained_scheduler(name, links):
    """A scheduler whose spec group ``name`` has ``links`` layers, each starting on a plateau of eval_loss."""
    parameters = [torch.nn.Parameter(torch.zeros(1)) for _ in range(links)]
    optimizer = torch.optim.SGD([{"params": [parameter], "lr": 1e-3} for parameter in parameters])
    rule = PlateauRule("eval_loss", greater_is_better=False, patience=1)
    chain = StartChain(name, tuple(ChainLink((index,), (f"{name}/layer_{index}",), constant_from, rule=rule)
                                   for index in range(links)))  # fmt: skip
    return GroupScheduler(
        optimizer, [never_started] * links, [None] * links, base_factor=constant_from(0), chains=[chain]
    )


def constant_from(start):
    return lambda step: float(step >= start)


def test_a_resume_with_changed_groups_keeps_the_starts_decided_for_a_spec_group_of_that_name():
    saved = chained_scheduler("body", links=2)
    for step, value in ((1, 1.0), (2, 1.5)):  # a plateau at step 2 starts the top layer
        saved.optimizer.step()
        saved.step()
        saved.load_trigger_records(saved.records_after_evaluation({"eval_loss": value}, step))
    state = saved.state_dict()
    assert saved.group_starts == [2, None]
    same = chained_scheduler("body", links=2)
    continue_schedule(same, state)
    assert (same.last_epoch, same.group_starts, same.trigger_records) == (2, [2, None], saved.trigger_records)
    for other in (chained_scheduler("encoder", links=2), chained_scheduler("body", links=3)):
        continue_schedule(other, state)  # another group, or other layers: its triggers watch from here
        assert other.last_epoch == 2 and set(other.group_starts) == {None}
