"""The model the GPU suite's parts a, b and c train: a Llama of about 1B parameters, its data and its batch.

A GPU as large as an H200 is kept busy only by a model of this size: BERT-base steps there take 12-25 ms
and are bound by the host. The model is built from a ``LlamaConfig`` on the device (nothing is downloaded),
with TinyLlama's widths and 20 layers: 1,011,959,808 parameters. It trains as the Trainer trains it with
``bf16=True``: float32 weights under bf16 autocast, ``adamw_torch_fused``, sequence length 2048, no gradient
checkpointing.

The batch is the largest that fits, found by a quick probe and arithmetic rather than by trying batches
until one runs out of memory (each failed try at this size costs seconds and fragments the allocator): the
allocator's peak over two steps of the stock Trainer (the second holds Adam's state, as every later step
does) at batch 1 and at batch 2. Their difference is what one more sequence costs: activations, logits and
their gradients grow linearly with the batch, weights, gradients and optimizer state do not. The largest
batch whose peak, so extrapolated, stays within 90 % of the device is `largest_batch`; the 10 % left free is
for the allocator's block rounding and fragmentation. Should a run still run out of memory, the part starts
again once with the batch cut by a quarter, and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from .common import BenchmarkResult, Spread
from .gpu_runs import (
    Alternation,
    PartContext,
    Windows,
    bytes_text,
    memory_columns,
    release,
    train_windows,
    windows_text,
)

LEARNING_RATE = 1e-5
FILL = 0.9  # of the device's memory the chosen batch may use
SMALL_BATCH = {"smoke": 2, "full": 4}  # parts whose cost does not grow with the batch (diagnostics, LoRA+)


@dataclass(frozen=True)
class LlamaShape:
    """A Llama's widths; ``sequence`` is the training length."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    sequence: int

    def config(self) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=self.vocab, hidden_size=self.hidden, intermediate_size=self.intermediate,
            num_hidden_layers=self.layers, num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
            max_position_embeddings=self.sequence, tie_word_embeddings=False,
        )  # fmt: skip

    def describe(self) -> str:
        return (
            f"Llama, hidden {self.hidden}, {self.layers} layers, {self.heads} heads ({self.kv_heads} key-value), "
            f"MLP {self.intermediate}, vocabulary {self.vocab:,}, untied head"
        )


SHAPES = {
    "smoke": LlamaShape(hidden=32, intermediate=64, layers=4, heads=4, kv_heads=2, vocab=128, sequence=32),
    "full": LlamaShape(hidden=2048, intermediate=5632, layers=20, heads=32, kv_heads=4, vocab=32000, sequence=2048),
}


def llama(shape: LlamaShape, device: str, seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised Llama, built on ``device`` (initialising 1B weights on the host takes seconds)."""
    torch.manual_seed(seed)
    with torch.device(device):
        return LlamaForCausalLM(shape.config())


class CausalTokens(torch.utils.data.Dataset):
    """Deterministic random token sequences, the labels the inputs (the model shifts them)."""

    def __init__(self, size: int, length: int, vocab: int) -> None:
        self.size, self.length, self.vocab = size, length, vocab

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        input_ids = torch.randint(0, self.vocab, (self.length,), generator=generator)
        return {"input_ids": input_ids, "labels": input_ids}


def data_for(shape: LlamaShape, batch: int, windows: Windows) -> CausalTokens:
    return CausalTokens(batch * windows.max_steps, shape.sequence, shape.vocab)


def llm_arguments(context: PartContext, batch: int, **extra: Any) -> dict[str, Any]:
    """The Trainer's arguments of every Llama run; ``extra`` adds or replaces some."""
    arguments = dict(
        per_device_train_batch_size=batch, learning_rate=LEARNING_RATE, weight_decay=0.01,
        optim="adamw_torch_fused", bf16=context.device == "cuda",
    )  # fmt: skip
    return {**arguments, **extra}


# --- The batch --------------------------------------------------------------------------------------------


def largest_batch(peak_at_1: int, peak_at_2: int, capacity: int, fill: float = FILL) -> int:
    """The largest batch whose peak, extrapolated from batches 1 and 2 (``peak(1) + (batch - 1) x (peak(2) -
    peak(1))``), stays within ``fill`` of ``capacity`` bytes; at least 1."""
    return max(1, 1 + math.floor((fill * capacity - peak_at_1) / (peak_at_2 - peak_at_1)))


@dataclass(frozen=True)
class BatchChoice:
    """The batch the large-batch parts train with, and how it was found."""

    batch: int
    how: str
    numbers: dict[str, Any]


def _probe_peak(context: PartContext, batch: int) -> int:
    """The allocator's peak over two steps of the stock Trainer at ``batch`` (the second holds Adam's state)."""
    shape = SHAPES[context.scale]
    windows = Windows(((2, 2),))
    data = data_for(shape, batch, windows)

    def stock(args: TrainingArguments) -> Trainer:
        return Trainer(model=llama(shape, context.device), args=args, train_dataset=data)

    return train_windows(stock, windows, context.device, llm_arguments(context, batch)).run_peak_bytes


def choose_batch(context: PartContext) -> BatchChoice:
    """The largest batch that fits (see the module docstring); on a CPU, a fixed small one."""
    peaks = [_probe_peak(context, batch) for batch in (1, 2)]
    if context.device != "cuda":
        return BatchChoice(2, "fixed at 2 (the probe ran, but a CPU has no allocator whose peak it could read)", {})
    capacity = torch.cuda.get_device_properties(0).total_memory
    batch = largest_batch(peaks[0], peaks[1], capacity)
    predicted = peaks[0] + (batch - 1) * (peaks[1] - peaks[0])
    how = (
        f"probe: two steps of the stock Trainer peaked at {bytes_text(peaks[0])} at batch 1 and "
        f"{bytes_text(peaks[1])} at batch 2 ({bytes_text(peaks[1] - peaks[0])} a sequence); batch {batch} is "
        f"predicted to peak at {bytes_text(predicted)}, the largest within {FILL:.0%} of {bytes_text(capacity)}"
    )
    numbers = {
        "peak_batch_1": peaks[0], "peak_batch_2": peaks[1], "device_memory": capacity, "fill": FILL,
        "predicted_peak": predicted,
    }  # fmt: skip
    return BatchChoice(batch, how, numbers)


def large_batch(context: PartContext) -> BatchChoice:
    """The batch of parts a, b and c's staged start, chosen once per suite."""
    if "batch" not in context.shared:
        context.shared["batch"] = choose_batch(context)
        context.report(f"  batch {context.shared['batch'].batch}: {context.shared['batch'].how}")
    return context.shared["batch"]


def with_smaller_batch_on_oom(context: PartContext, measure: Callable[[int], BenchmarkResult]) -> BenchmarkResult:
    """``measure(batch)`` at the large batch; if the device runs out of memory, once more a quarter smaller."""
    choice = large_batch(context)
    try:
        return measure(choice.batch)
    except torch.cuda.OutOfMemoryError:
        pass  # leave the except block first, so that the failed run's frames (and its tensors) can be freed
    release(context.device)
    smaller = max(1, choice.batch * 3 // 4)
    note = f"batch {choice.batch} ran out of memory, so the parts from here on use {smaller}"
    context.shared["batch"] = BatchChoice(smaller, f"{choice.how}; {note}", {**choice.numbers, "out_of_memory": True})
    context.report(f"  {note}")
    return measure(smaller)


# --- Facts and rows ---------------------------------------------------------------------------------------


def trainer_facts(trainer: Trainer) -> dict[str, Any]:
    """What a run's table needs besides time: the size, the optimizer's groups, and what trains."""
    trainable = [parameter for parameter in trainer.model.parameters() if parameter.requires_grad]
    return {
        "parameters": sum(parameter.numel() for parameter in trainer.model.parameters()),
        "optimizer_groups": len(trainer.optimizer.param_groups),
        "optimizer_state_entries": len(trainer.optimizer.state),
        "trainable_tensors": len(trainable),
        "trainable_bytes": sum(parameter.numel() * parameter.element_size() for parameter in trainable),
    }


def ratio_text(spread: Spread, prefix: str = "x") -> str:
    return f"{prefix}{spread.median:.3f} ({spread.low:.3f}-{spread.high:.3f})"


def side_row(
    label: str, alternation: Alternation, side: str, batch: int, sequence: int, compared: tuple[str, str]
) -> dict[str, Any]:
    """A table row: step time and tokens/s over the side's windows, a comparison, the last run's memory."""
    spread = alternation.step_seconds(side)
    column, value = compared
    return {
        "run": label,
        "batch": batch,
        "windows": windows_text(alternation.windows(side)),
        "step time": spread.text(unit="ms", scale=1e3),
        "tokens/s": f"{batch * sequence / spread.median:,.0f}",
        column: value,
        **memory_columns(alternation.runs[side][-1]),
    }


def columns(compared: str) -> list[str]:
    return ["run", "batch", "windows", "step time", "tokens/s", compared, "peak allocated", "optimizer state",
            "gradients"]  # fmt: skip


def rounds_note(alternation: Alternation, windows: Windows) -> str:
    """How the part was measured: rounds, warm-up, windows, where the memory figures come from."""
    spans = ", ".join(f"{first}-{last}" if first != last else str(first) for first, last in windows.spans)
    rounds = alternation.rounds_done()
    plural = "" if rounds == 1 else "s"
    how = f"{rounds} run{plural}" if len(alternation.runs) == 1 else f"{rounds} round{plural}, the sides alternated"
    note = (
        f"{how}; each run builds its model, trains {windows.warmup} untimed warm-up steps, then the timed "
        f"window(s) of steps {spans}, each opened and closed by torch.cuda.synchronize() on a GPU. Memory: the "
        "allocator's peak within the last run's last window, and the optimizer state and gradients held at its "
        "last step."
    )
    if alternation.stopped_early:
        note += f" Stopped early: {alternation.stopped_early}."
    return note
