"""Groups that start later, under DDP: the scenarios distributed_worker.py runs in its torchrun launch.

1. A LayerwiseTrainer under DDP whose body starts at step 3 (warm-up 1) while the head trains from step 0.
   Each step is recorded on each rank: which of the body's parameters have a gradient (and a digest of
   it, after DDP's all-reduce), whether the body moved, whether the optimizer holds state for it, and
   the examples the rank trained on. Each rank saves its final weights to staged_rank<N>.pt.
2. Refusals at trainer construction: DDP with ``ddp_find_unused_parameters=False``, FSDP2 and FSDP1
   (use_orig_params) with a later start; a spec with a per-group schedule and no later start is accepted.

tests/adapter/test_distributed.py also builds the single-process reference from `staged_model`,
`staged_arguments` and `STAGED_SPEC`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from helpers import RandomClassificationData, tiny_bert, training_args
from transformers import (
    BertForSequenceClassification,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from layerwise_trainer import LayerwiseTrainer, SpecError

BODY_START = 3
STAGED_STEPS = 6
STAGED_SPEC = [
    {"name": "body", "match": "bert.*", "lr": 1e-3, "start": BODY_START, "warmup": 1, "schedule": "constant"},
    {"name": "head", "match": "classifier.*", "lr": 3e-3},
]
# The whole data set is one global batch: every step trains on all of it, split over the ranks or on one
# process, so the single-process reference sees the same examples at every step whatever the order.
GLOBAL_BATCH = 8


def staged_model() -> BertForSequenceClassification:
    """The tiny BERT without dropout, so that two ranks of 4 examples and one process of 8 agree."""
    return tiny_bert(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def staged_arguments(output_dir: os.PathLike[str] | str, processes: int, **overrides: object) -> TrainingArguments:
    """Arguments for ``processes`` ranks sharing the global batch.

    ``average_tokens_across_devices`` is off: with it, transformers multiplies the loss by the number of
    processes for any model whose forward takes ``**kwargs``, though BERT's classification loss is the
    mean over the rank's own batch, so DDP's gradient would be ``processes`` times the global batch's.
    """
    return training_args(
        output_dir,
        max_steps=STAGED_STEPS,
        per_device_train_batch_size=GLOBAL_BATCH // processes,
        lr_scheduler_type="linear",
        average_tokens_across_devices=False,
        **overrides,
    )


def _body(model: torch.nn.Module) -> list[torch.Tensor]:
    return [parameter for name, parameter in model.named_parameters() if name.startswith("bert.")]


def digest(tensors: Iterable[torch.Tensor]) -> str:
    """A SHA-256 of the tensors' bytes: equal on two ranks only when every element is."""
    hashed = hashlib.sha256()
    for tensor in tensors:
        hashed.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hashed.hexdigest()


class StepRecorder(TrainerCallback):
    """Records, for each optimizer step, the body's gradients before the step and its state after."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.initial_body = [parameter.detach().clone() for parameter in _body(model)]
        self.steps: list[dict[str, Any]] = []

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = kwargs["model"]
        gradients = [parameter.grad for parameter in _body(model)]
        with_gradient = [gradient is not None for gradient in gradients]
        self.steps.append(
            {
                "step": state.global_step + 1,
                "body_with_gradient": sum(with_gradient),
                "body_gradient_digest": digest(gradients) if all(with_gradient) else None,
            }
        )

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        body, optimizer = _body(kwargs["model"]), kwargs["optimizer"]
        self.steps[-1]["body_unchanged"] = all(map(torch.equal, body, self.initial_body))
        self.steps[-1]["body_with_optimizer_state"] = sum(bool(optimizer.state.get(p)) for p in body)


class BatchRecordingTrainer(LayerwiseTrainer):
    """Remembers the examples (their token rows) each training step of this rank computed the loss on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[list[int]]] = []

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        self.batches.append(inputs["input_ids"].tolist())
        return super().compute_loss(model, inputs, *args, **kwargs)


def train_staged_with_ddp(output_dir: Path, rank: int, world_size: int) -> dict[str, Any]:
    model = staged_model()
    recorder = StepRecorder(model)
    trainer = BatchRecordingTrainer(
        model=model,
        args=staged_arguments(output_dir / "staged", world_size),
        train_dataset=RandomClassificationData(GLOBAL_BATCH),
        param_groups=STAGED_SPEC,
        callbacks=[recorder],
    )
    trainer.train()
    torch.save(model.state_dict(), output_dir / f"staged_rank{rank}.pt")
    return {
        "wrapped": type(trainer.model_wrapped).__name__,
        "find_unused_parameters": getattr(trainer.model_wrapped, "find_unused_parameters", None),
        "steps": recorder.steps,
        "batches": trainer.batches,
        "body_moved": not all(map(torch.equal, _body(model), recorder.initial_body)),
        "log_history": trainer.state.log_history,
    }


class FsdpTrainer(LayerwiseTrainer):
    """The trainer as accelerate builds it for FSDP on accelerators, built on CPU.

    Accelerate keeps the FSDP plugin only for multi-accelerator runs (``AcceleratorState`` sets
    ``distributed_type`` FSDP in its multi-GPU branch); on CPU it drops the plugin and the Trainer reports
    ``is_fsdp_enabled`` False and trains with DDP. Here the flag is set as it is on GPUs, from the
    arguments' FSDP plugin, before the spec is checked.
    """

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        self.is_fsdp_enabled = self.args.fsdp_plugin_args is not None


# sync_module_states off: accelerate's FSDP1 plugin asks an accelerator for its device when it is on.
FSDP_CONFIGS = {"fsdp2": {"version": 2}, "fsdp1": {"version": 1, "use_orig_params": True, "sync_module_states": False}}
SCHEDULE_ONLY_SPEC = [
    {"name": "body", "match": "bert.*", "lr": 1e-3},
    {"name": "head", "match": "classifier.*", "lr": 3e-3, "schedule": "constant", "warmup": 1},
]


def construction_error(trainer_cls: type[LayerwiseTrainer], args: TrainingArguments, spec: list) -> str | None:
    try:
        trainer_cls(model=staged_model(), args=args, param_groups=spec)
    except SpecError as error:
        return str(error)
    return None


def refusals(output_dir: Path, world_size: int) -> dict[str, Any]:
    no_unused = staged_arguments(output_dir / "no_unused", world_size, ddp_find_unused_parameters=False)
    result = {"ddp_without_find_unused_parameters": construction_error(LayerwiseTrainer, no_unused, STAGED_SPEC)}
    for version, config in FSDP_CONFIGS.items():
        args = staged_arguments(output_dir / version, world_size, fsdp=True, fsdp_config=config)
        result[version] = {
            "plugin": {key: args.fsdp_plugin_args.get(key) for key in ("fsdp_version", "use_orig_params")},
            "later_start": construction_error(FsdpTrainer, args, STAGED_SPEC),
            "schedule_only": construction_error(FsdpTrainer, args, SCHEDULE_ONLY_SPEC),
        }
    return result


def run_staged_scenarios(output_dir: Path, rank: int, world_size: int) -> dict[str, Any]:
    """Both scenarios on this rank; what it saw, for rank<N>.json."""
    return {**train_staged_with_ddp(output_dir, rank, world_size), "refusals": refusals(output_dir, world_size)}
