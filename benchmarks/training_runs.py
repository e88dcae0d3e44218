"""Timing Trainer runs: step times from a callback, and the memory a run's tensors hold."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments


class StepClock(TrainerCallback):
    """Records the wall time between consecutive optimizer steps, and the gradient bytes at the step."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.gradient_bytes = 0

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs) -> None:
        self.gradient_bytes = sum(
            parameter.grad.numel() * parameter.grad.element_size()
            for parameter in model.parameters()
            if parameter.grad is not None
        )

    def step_seconds(self, warmup: int) -> list[float]:
        return [after - before for before, after in zip(self.ends[warmup:], self.ends[warmup + 1 :], strict=False)]


@dataclass
class RunMeasurement:
    """One training run: per-step seconds (after warm-up), memory held, and the trained model."""

    step_seconds: list[float]
    optimizer_state_bytes: int
    gradient_bytes: int
    peak_device_bytes: int | None
    model: torch.nn.Module

    @property
    def median_step(self) -> float:
        return statistics.median(self.step_seconds)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in the optimizer's state (Adam moments, step counters)."""
    return sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    )


def measure_run(
    build: Callable[[TrainingArguments], Trainer], steps: int, warmup: int, device: str, **arguments: Any
) -> RunMeasurement:
    """Train ``warmup + steps + 1`` steps with the trainer ``build`` makes, timing each step after warm-up."""
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            max_steps=warmup + steps + 1,
            report_to=[],
            save_strategy="no",
            disable_tqdm=True,
            use_cpu=device == "cpu",
            dataloader_num_workers=0,
            logging_steps=10_000,
            **arguments,
        )
        trainer = build(args)
        clock = StepClock()
        trainer.add_callback(clock)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
        return RunMeasurement(
            step_seconds=clock.step_seconds(warmup),
            optimizer_state_bytes=optimizer_state_bytes(trainer.optimizer),
            gradient_bytes=clock.gradient_bytes,
            peak_device_bytes=peak,
            model=trainer.model,
        )


def mebibytes(count: int | None) -> str:
    return "-" if count is None else f"{count / 2**20:,.1f} MiB"
