"""One process of the DeepSpeed test, run by `torchrun --nproc_per_node 2` on CPU (gloo, ``DS_ACCELERATOR=cpu``).

Every scenario runs in this one launch: starting two processes that import torch, transformers and DeepSpeed
is most of the cost, and a DeepSpeed run of the tiny BERT takes about a second.

1. ``ddp``: the reference, `SPEC` under plain DDP through the Trainer, 6 steps, a checkpoint at step 3.
2. ``zero1``, ``zero2``, ``zero3``: the same spec, data and arguments with a DeepSpeed config without an
   ``optimizer`` or ``scheduler`` section, so the Trainer hands the spec's optimizer to DeepSpeed. Each records
   the weights before, after the first step and at the end (gathered from the ZeRO-3 partitions), the logged
   rates, and what DeepSpeed's optimizer holds per group.
3. For each stage: a resume from its step-3 checkpoint with the same spec, and resumes that must be refused (a
   changed rate, other groups, the same with ``resume_with_changed_groups``).
4. ``empty_groups`` for each stage: groups emptied by the user's own freezing, before the trainer is built and
   after it; and a group whose only parameter has no elements.
5. ``schedule`` for DDP and each stage: a group with its own warm-up and shape from step 0.
6. ``refusals``: a later start, and group diagnostics through `LayerwiseTrainer` and through a stock Trainer.
7. ``zero_init``: the layout of a model that ZeRO-3 partitioned when it was built (``zero.Init``).

Each rank writes what it saw to <output_dir>/deepspeed_rank<N>.json; rank 0 saves whole weights to
<output_dir>/<case>.pt for tests/adapter/test_deepspeed.py to compare.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

# helpers.py sits in tests/, one level up; torchrun puts only this file's own directory on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import deepspeed
import deepspeed.ops
from accelerate.state import AcceleratorState
from helpers import RandomClassificationData, tiny_bert, tiny_bert_config, training_args
from transformers import AutoModelForSequenceClassification, Trainer, TrainerCallback
from transformers.integrations.deepspeed import unset_hf_deepspeed_config

from layerwise_trainer import GroupDiagnosticsCallback, LayerwiseTrainer, LayerwiseTrainingArguments
from layerwise_trainer.checkpoints import plan_layout

# DeepSpeed's CPU backend compiles a shared-memory all-reduce kernel when it starts (about 60 s on 2 cores, then
# cached in ~/.cache/torch_extensions). Only its inference all-reduce uses that kernel; training goes through
# torch.distributed (gloo) either way, so the tests run without it.
deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False

STAGES = (1, 2, 3)
STEPS = 6
SAVED_AT = 3
PER_RANK_BATCH = 4
SPEC = {
    "groups": [
        {"name": "embeddings", "match": "bert.embeddings.*", "freeze": True},
        {"name": "encoder", "match": "bert.encoder.*", "layer_decay": 0.5, "lr": 1e-3},
        {"name": "head", "match": ["classifier.*", "bert.pooler.*"], "lr": 3e-3},
    ]
}
SPEC_WITH_ANOTHER_RATE = {"groups": [*SPEC["groups"][:2], {**SPEC["groups"][2], "lr": 2e-3}]}
SPEC_WITH_OTHER_GROUPS = {
    "groups": [SPEC["groups"][0], {"name": "encoder", "match": "bert.encoder.*", "lr": 1e-3}, SPEC["groups"][2]]
}
# The user freezes the embeddings before the trainer is built and the first encoder layer after it.
EMPTYABLE_SPEC = [
    {"name": "embeddings", "match": "bert.embeddings.*", "lr": 1e-4},
    {"name": "encoder", "match": "bert.encoder.*", "layer_decay": 0.5, "lr": 1e-3},
    {"name": "classifier_weight", "match": "classifier.weight", "lr": 3e-3},
    {"name": "rest", "match": ["classifier.bias", "bert.pooler.*"], "lr": 2e-3},
]
ELEMENTLESS_SPEC = [
    {"name": "prompt", "match": "prompt", "lr": 1e-2},
    {"name": "body", "match": "bert.*", "lr": 1e-3},
    {"name": "head", "match": "classifier.*", "lr": 3e-3},
]
SCHEDULED_SPEC = [
    {"name": "body", "match": "bert.*", "lr": 1e-3},
    {"name": "head", "match": "classifier.*", "lr": 3e-3, "warmup": 2, "schedule": "constant"},
]
STAGED_SPEC = [
    {"name": "head", "match": "classifier.*", "lr": 3e-3},
    {"name": "body", "match": "bert.*", "lr": 1e-3, "start": 2},
]


def deepspeed_config(stage: int) -> dict[str, Any]:
    """ZeRO at ``stage`` in fp32, the batch and clipping from the Trainer's arguments, no optimizer section."""
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": {"stage": stage},
    }


def fresh_accelerator_state() -> None:
    """Forget the previous trainer's DeepSpeed setup, so that each trainer of this process gets its own.

    accelerate keeps one state per process, whose DeepSpeed plugin the next Accelerator would reuse, and
    TrainingArguments leave ACCELERATE_USE_DEEPSPEED set; a real run has one trainer per process.
    """
    AcceleratorState._reset_state()
    os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
    unset_hf_deepspeed_config()


def arguments(output_dir: Path, stage: int | None, **overrides: Any) -> Any:
    """`LayerwiseTrainingArguments` for ``stage`` (None: plain DDP): 4 examples per rank, the linear schedule.

    ``average_tokens_across_devices`` is off: with it, transformers multiplies the loss of a model whose forward
    takes ``**kwargs`` by the number of processes.
    """
    settings: dict[str, Any] = dict(
        max_steps=STEPS,
        per_device_train_batch_size=PER_RANK_BATCH,
        lr_scheduler_type="linear",
        average_tokens_across_devices=False,
    )
    if stage is not None:
        settings["deepspeed"] = deepspeed_config(stage)
    settings.update(overrides)
    return training_args(output_dir, LayerwiseTrainingArguments, **settings)


def model() -> torch.nn.Module:
    """The tiny BERT without dropout, so that runs under different engines compute the same forward passes."""
    return tiny_bert(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def data() -> RandomClassificationData:
    """One epoch of 6 global batches of 8, so that the step-3 checkpoint falls inside the epoch."""
    return RandomClassificationData(STEPS * PER_RANK_BATCH * 2)


def whole_weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter, whole: gathered from the ranks' partitions under ZeRO-3 (a collective on every rank)."""
    parameters = list(module.parameters())
    with deepspeed.zero.GatheredParameters(parameters):
        return {name: parameter.detach().clone() for name, parameter in module.named_parameters()}


def save_on_rank_0(weights: dict[str, torch.Tensor], path: Path) -> None:
    if dist.get_rank() == 0:
        torch.save(weights, path)


def rates_and_losses(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("step", "loss")
    return [
        {key: value for key, value in entry.items() if key in keep or key.startswith("learning_rate/")}
        for entry in log_history
        if "loss" in entry
    ]


def deepspeed_groups(trainer: Trainer) -> dict[str, Any]:
    """What DeepSpeed's optimizer holds per param group: names, tensors and this rank's partition elements."""
    engine = trainer.model_wrapped
    zero, basic = engine.optimizer, engine.basic_optimizer
    count = len(basic.param_groups)
    tensors, elements = [0] * count, [0] * count
    if engine.zero_optimization_stage() == 3:
        for sub_group, parameters in enumerate(zero.fp16_groups):
            group = zero.sub_group_to_group_id[sub_group]
            tensors[group] += len(parameters)
            elements[group] += zero.fp32_partitioned_groups_flat[sub_group].numel()
    else:
        tensors = [len(parameters) for parameters in zero.bit16_groups]
        elements = [partition.numel() for partition in zero.single_partition_of_fp32_groups]
    return {
        "engine": type(engine).__name__,
        "stage": engine.zero_optimization_stage(),
        "zero_optimizer": type(zero).__name__,
        "names": [group.get("name") for group in basic.param_groups],
        "tensors": tensors,
        "partition_elements": elements,
        "wrapper_names": [group.get("name") for group in trainer.optimizer.param_groups],
        "scheduler_groups": len(trainer.lr_scheduler.get_last_lr()),
    }


class Recorder(TrainerCallback):
    """Records the whole weights after the first optimizer step, and DeepSpeed's groups when training begins."""

    def __init__(self) -> None:
        self.trainer: Trainer | None = None
        self.after_first_step: dict[str, torch.Tensor] | None = None
        self.groups: dict[str, Any] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer is not None and self.trainer.is_deepspeed_enabled:
            self.groups = deepspeed_groups(self.trainer)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.global_step == 1:
            self.after_first_step = whole_weights(model)


def plan_groups(trainer: LayerwiseTrainer) -> list[tuple[str, int]]:
    return [(group.name, len(group.parameter_names)) for group in trainer.group_plan.trainable_groups]


def largest_updates(
    before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], trainer: LayerwiseTrainer
) -> dict[str, float]:
    """Per group of the plan (frozen ones too): the largest change of one weight between ``before`` and ``after``."""
    result: dict[str, float] = {}
    for group in trainer.group_plan.groups:
        for name in group.parameter_names:
            change = float((after[name] - before[name]).abs().max())
            result[group.name] = max(result.get(group.name, 0.0), change)
    return result


def train(case: str, output_dir: Path, stage: int | None, spec: Any, **overrides: Any) -> dict[str, Any]:
    """Train ``spec`` on a fresh model; rank 0 saves the final whole weights to <case>.pt."""
    fresh_accelerator_state()
    net = model()
    initial = whole_weights(net)
    recorder = Recorder()
    trainer = LayerwiseTrainer(
        model=net,
        args=arguments(output_dir / case, stage, **overrides),
        train_dataset=data(),
        param_groups=spec,
        callbacks=[recorder],
    )
    recorder.trainer = trainer
    trainer.train()
    final = whole_weights(net)
    save_on_rank_0(final, output_dir / f"{case}.pt")
    frozen = [name for group in trainer.group_plan.frozen_groups for name in group.parameter_names]
    return {
        "wrapped": type(trainer.model_wrapped).__name__,
        "plan_groups": plan_groups(trainer),
        "deepspeed_groups": recorder.groups,
        "logs": rates_and_losses(trainer.state.log_history),
        "first_step_updates": largest_updates(initial, recorder.after_first_step, trainer),
        "frozen_tensors": len(frozen),
        "frozen_unchanged": all(torch.equal(initial[name], final[name]) for name in frozen),
    }


def refusal(action: Any) -> dict[str, Any] | None:
    """The exception ``action()`` raised (type and message), or None."""
    try:
        action()
    except Exception as error:  # the type is part of what the tests check
        return {"type": type(error).__name__, "message": str(error)}
    return None


def resume(output_dir: Path, stage: int, case: str, spec: Any, **overrides: Any) -> dict[str, Any]:
    """Resume ``spec`` from the stage's step-3 checkpoint on a fresh model."""
    fresh_accelerator_state()
    net = model()
    trainer = LayerwiseTrainer(
        model=net, args=arguments(output_dir / case, stage, **overrides), train_dataset=data(), param_groups=spec
    )
    checkpoint = output_dir / f"zero{stage}" / f"checkpoint-{SAVED_AT}"
    result: dict[str, Any] = {"error": refusal(lambda: trainer.train(resume_from_checkpoint=str(checkpoint)))}
    result["wrapped"] = type(trainer.model_wrapped).__name__
    if result["error"] is None:
        save_on_rank_0(whole_weights(net), output_dir / f"{case}.pt")
        result["logs"] = rates_and_losses(trainer.state.log_history)
    return result


def resumes(output_dir: Path, stage: int) -> dict[str, Any]:
    return {
        "same_spec": resume(output_dir, stage, f"zero{stage}_resumed", SPEC),
        "another_rate": resume(output_dir, stage, f"zero{stage}_another_rate", SPEC_WITH_ANOTHER_RATE),
        "other_groups": resume(output_dir, stage, f"zero{stage}_other_groups", SPEC_WITH_OTHER_GROUPS),
        "other_groups_switch": resume(
            output_dir, stage, f"zero{stage}_switch", SPEC_WITH_OTHER_GROUPS, resume_with_changed_groups=True
        ),
    }


def empty_groups(output_dir: Path, stage: int) -> dict[str, Any]:
    """Groups the user's freezing empties: the embeddings before the trainer is built, layer 0 after."""
    fresh_accelerator_state()
    net = model()
    for parameter in net.bert.embeddings.parameters():
        parameter.requires_grad_(False)
    user_frozen = [
        name for name, p in net.named_parameters() if name.startswith(("bert.embeddings.", "bert.encoder.layer.0."))
    ]
    initial = whole_weights(net)
    recorder = Recorder()
    trainer = LayerwiseTrainer(
        model=net,
        args=arguments(output_dir / f"empty{stage}", stage, max_steps=2),
        train_dataset=data(),
        param_groups=EMPTYABLE_SPEC,
        callbacks=[recorder],
    )
    recorder.trainer = trainer
    at_construction = plan_groups(trainer)
    for parameter in net.bert.encoder.layer[0].parameters():
        parameter.requires_grad_(False)
    trainer.train()
    final = whole_weights(net)
    requires_grad = dict(net.named_parameters())
    return {
        "plan_groups_when_built": at_construction,
        "plan_groups": plan_groups(trainer),
        "frozen_group_names": list(trainer.group_plan.frozen_group_names),
        "deepspeed_groups": recorder.groups,
        "logs": rates_and_losses(trainer.state.log_history),
        "user_frozen_unchanged": all(torch.equal(initial[name], final[name]) for name in user_frozen),
        "user_frozen_still_frozen": not any(requires_grad[name].requires_grad for name in user_frozen),
        "user_frozen_tensors": len(user_frozen),
    }


def elementless_group(output_dir: Path) -> dict[str, Any]:
    """A group whose only parameter has no elements, which DeepSpeed would leave out of its optimizer."""
    fresh_accelerator_state()
    net = model()
    net.register_parameter("prompt", torch.nn.Parameter(torch.zeros(0, 16)))
    trainer = LayerwiseTrainer(
        model=net, args=arguments(output_dir / "elementless", 1), train_dataset=data(), param_groups=ELEMENTLESS_SPEC
    )
    return {"error": refusal(trainer.train), "wrapped": type(trainer.model_wrapped).__name__}


def refusals(output_dir: Path) -> dict[str, Any]:
    """A later start and group diagnostics under DeepSpeed."""
    fresh_accelerator_state()
    later_start = refusal(
        lambda: LayerwiseTrainer(
            model=model(), args=arguments(output_dir / "staged", 2), train_dataset=data(), param_groups=STAGED_SPEC
        )
    )
    fresh_accelerator_state()
    args = arguments(output_dir / "diagnostics", 2, group_diagnostics=True)
    built = refusal(lambda: LayerwiseTrainer(model=model(), args=args, train_dataset=data(), param_groups=SPEC))
    fresh_accelerator_state()
    stock = Trainer(
        model=model(),
        args=arguments(output_dir / "diagnostics_stock", 3),
        train_dataset=data(),
        callbacks=[GroupDiagnosticsCallback()],
    )
    at_train_begin = refusal(stock.train)
    return {
        "later_start": later_start,
        "diagnostics_when_built": built,
        "diagnostics_at_train_begin": at_train_begin,
        "stock_wrapped": type(stock.model_wrapped).__name__,
    }


def zero_init_layout(output_dir: Path) -> dict[str, Any]:
    """The layout of a model built under ZeRO-3 (partitioned at construction), against the whole model's."""
    fresh_accelerator_state()
    args = arguments(output_dir / "zero_init", 3)  # kept alive: while it is, from_config builds under zero.Init
    partitioned = AutoModelForSequenceClassification.from_config(tiny_bert_config())
    trainer = LayerwiseTrainer(model=partitioned, args=args, train_dataset=data(), param_groups=SPEC)
    fresh_accelerator_state()
    whole_args = arguments(output_dir / "zero_init_whole", 3)
    whole = LayerwiseTrainer(model=model(), args=whole_args, train_dataset=data(), param_groups=SPEC)
    return {
        "placeholder_shape": list(partitioned.bert.encoder.layer[0].attention.self.query.weight.shape),
        "layout": plan_layout(trainer.group_plan),
        "whole_layout": plan_layout(whole.group_plan),
        "elements": [group.num_elements for group in trainer.group_plan.groups],
        "whole_elements": [group.num_elements for group in whole.group_plan.groups],
    }


def main(output_dir: Path) -> None:
    result: dict[str, Any] = {}
    seconds: dict[str, float] = {}

    def timed(name: str, action: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        value = action(*args, **kwargs)
        seconds[name] = round(time.perf_counter() - started, 2)
        return value

    saving = {"save_strategy": "steps", "save_steps": SAVED_AT}
    result["ddp"] = timed("ddp", train, "ddp", output_dir, None, SPEC, **saving)
    result["rank"], result["world_size"] = dist.get_rank(), dist.get_world_size()
    for stage in STAGES:
        case = f"zero{stage}"
        result[case] = timed(case, train, case, output_dir, stage, SPEC, **saving)
        result[case]["resumes"] = timed(f"{case}_resumes", resumes, output_dir, stage)
        result[case]["empty_groups"] = timed(f"{case}_empty_groups", empty_groups, output_dir, stage)
    result["schedule"] = {}
    for case, stage in (("ddp", None), *((f"zero{stage}", stage) for stage in STAGES)):
        name = f"schedule_{case}"
        result["schedule"][case] = timed(name, train, name, output_dir, stage, SCHEDULED_SPEC, max_steps=4)
    result["elementless"] = timed("elementless", elementless_group, output_dir)
    result["refusals"] = timed("refusals", refusals, output_dir)
    result["zero_init"] = timed("zero_init", zero_init_layout, output_dir)
    result["seconds"] = seconds
    (output_dir / f"deepspeed_rank{result['rank']}.json").write_text(json.dumps(result, indent=1))
    # Leave together and tear the process group down: left to interpreter exit, gloo's threads can abort a
    # rank after all its work is done.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
