"""Benchmark 5: what logging every group's learning rate at every step costs.

The callback's work per step (reading the rates after the optimizer step, adding them to the log entry
and to ``log_history``) is timed directly on a 28-group optimizer (LLRD on BERT-base), and compared
with a BERT-base training step measured in the same run. The Trainer's own logging at
``logging_steps=1`` is timed alongside, for scale.
"""

from __future__ import annotations

import statistics
import tempfile

import torch
from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments

from layerwise_trainer import GroupLearningRateCallback, build_param_groups

from .common import BenchmarkResult, Settings, Target, timed
from .models import TokenData, bert, llrd_spec
from .training_runs import measure_run


def _callback_seconds_per_step(optimizer: torch.optim.Optimizer, iterations: int) -> float:
    callback = GroupLearningRateCallback(base_learning_rate=3e-5, frozen_group_names=["embeddings"])
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(output_dir=output_dir, report_to=[], use_cpu=True)
    state, control = TrainerState(), TrainerControl()

    def one_step():
        callback.on_optimizer_step(args, state, control, optimizer=optimizer)
        logs = {"loss": 0.5, "grad_norm": 1.0, "learning_rate": 3e-5, "epoch": 0.1}
        state.log_history.append({**logs, "step": 1})
        callback.on_log(args, state, control, logs=logs)

    for _ in range(100):
        one_step()
    batches = [timed(lambda: [one_step() for _ in range(iterations)]) / iterations for _ in range(5)]
    return statistics.median(batches)


def run(settings: Settings) -> BenchmarkResult:
    size = settings.pick(smoke="tiny", quick="base", full="base")
    length, batch = settings.pick(smoke=(16, 2), quick=(128, 8), full=(128, 8))
    iterations = settings.pick(smoke=200, quick=2000, full=20000)
    with torch.device("meta"):
        model = bert(size)
    optimizer = torch.optim.AdamW(build_param_groups(model, llrd_spec(), learning_rate=3e-5), lr=3e-5)
    callback_seconds = _callback_seconds_per_step(optimizer, iterations)

    data = TokenData(batch * 6, length)
    step = measure_run(
        lambda args: Trainer(model=bert(size).to(settings.device), args=args, train_dataset=data),
        steps=settings.pick(smoke=1, quick=2, full=5),
        warmup=1,
        device=settings.device,
        per_device_train_batch_size=batch,
    ).median_step
    share = callback_seconds / step
    return BenchmarkResult(
        name="logging_cost",
        title=(
            f"5. Per-group LR logging at every step ({len(optimizer.param_groups)} groups) against a BERT {size} step"
        ),
        columns=["measure", "value"],
        rows=[
            {"measure": "callback work per logged step", "value": f"{callback_seconds * 1e6:.1f} us"},
            {
                "measure": f"BERT {size} training step (seq {length}, batch {batch}, {settings.device})",
                "value": f"{step * 1e3:,.1f} ms",
            },
            {"measure": "share of the step", "value": f"{share * 100:.4f} %"},
        ],
        targets=[Target("share of a training step, in %", share * 100, "<=", 1.0)],
        notes=[f"Callback timed over {iterations} simulated steps (median of 5 batches), after 100 warm-up steps."],
    )
