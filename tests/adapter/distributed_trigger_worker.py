"""One process of the plateau-start test under DDP, run by `torchrun --nproc_per_node 2` on CPU (gloo).

Two runs, each a LayerwiseTrainer whose body starts on a plateau of a scripted metric (patience 1), with an
evaluation every 2 steps:

1. ``same``: every rank's evaluation gives the same values; the plateau is complete at step 4.
2. ``different``: each rank's ``compute_metrics`` gives other values. Rank 0's plateau is complete at step 6;
   rank 1's would be at step 4. Rank 0 decides, so both ranks must start the body at step 6.

Each rank records, per optimizer step, whether the body's parameters had gradients and a digest of them (after
DDP's all-reduce), the body's logged rates, the start events, the scheduler's records, and saves its final
weights to <run>_rank<N>.pt; tests/adapter/test_distributed_triggers.py compares the ranks.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

# helpers.py sits in tests/, one level up; torchrun puts only this file's own directory on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distributed_staged_worker import digest
from helpers import RandomClassificationData, ScriptedMetric, tiny_bert, training_args
from transformers import TrainerCallback

from layerwise_trainer import LayerwiseTrainer

STEPS = 8
SPEC = [
    {"name": "head", "match": "classifier.*", "lr": 3e-3},
    {"name": "body", "match": "bert.*", "lr": 1e-3, "warmup": 1, "schedule": "constant",
     "start": {"plateau": {"metric": "scripted_loss", "patience": 1}}},
]  # fmt: skip
# Per run, per rank: the metric at each evaluation step.
SCRIPTS = {
    "same": {0: {2: 1.0, 4: 1.2, 6: 0.5, 8: 0.4}, 1: {2: 1.0, 4: 1.2, 6: 0.5, 8: 0.4}},
    "different": {0: {2: 1.0, 4: 0.9, 6: 0.95, 8: 0.4}, 1: {2: 1.0, 4: 1.2, 6: 1.3, 8: 1.4}},
}


class BodyGradients(TrainerCallback):
    """Per optimizer step: how many of the body's tensors had a gradient, and a digest of them."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        gradients = [p.grad for name, p in model.named_parameters() if ".bert." in f".{name}"]
        present = [gradient for gradient in gradients if gradient is not None]
        self.steps.append({"with_gradient": len(present), "digest": digest(present) if present else None})


def train(output_dir: Path, run: str, rank: int) -> dict[str, Any]:
    metric = ScriptedMetric(SCRIPTS[run][rank])
    recorder = BodyGradients()
    args = training_args(output_dir / run, max_steps=STEPS, learning_rate=1e-3, lr_scheduler_type="constant",
                         eval_strategy="steps", eval_steps=2, per_device_train_batch_size=4,
                         average_tokens_across_devices=False)  # fmt: skip
    trainer = LayerwiseTrainer(
        model=tiny_bert(),
        args=args,
        train_dataset=RandomClassificationData(32),
        eval_dataset=RandomClassificationData(8),
        compute_metrics=metric,
        param_groups=SPEC,
        callbacks=[recorder],
    )
    metric.trainer = trainer
    trainer.train()
    torch.save(trainer.model.state_dict(), output_dir / f"{run}_rank{rank}.pt")
    history = trainer.state.log_history
    return {
        "wrapped": type(trainer.model_wrapped).__name__,
        "group_starts": trainer.lr_scheduler.group_starts,
        "records": trainer.lr_scheduler.state_dict()["trigger_records"],
        "events": [entry for entry in history if "group_started" in entry],
        "body_rates": [entry["learning_rate/body"] for entry in history if "loss" in entry],
        "evaluated": [entry["eval_scripted_loss"] for entry in history if "eval_scripted_loss" in entry],
        "steps": recorder.steps,
    }


def main(output_dir: Path) -> None:
    rank = int(os.environ["RANK"])  # torchrun's; the Trainer's arguments initialise the process group
    result = {run: train(output_dir, run, rank) for run in SCRIPTS}
    (output_dir / f"rank{rank}.json").write_text(json.dumps(result, indent=1))
    # Leave together and tear the process group down (see distributed_worker.py).
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
