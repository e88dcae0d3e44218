"""Part f of the GPU suite: Muon and AdamW in one optimizer against AdamW alone, on the Llama of `gpu_llama`.

Both sides are `LayerwiseTrainer` with layer decay over every layer; the hybrid adds the top-level ``muon``
setting (Muon for the blocks' 2-D matrices, AdamW for the rest, Moonlight's ``match_rms_adamw`` scaling). At
batch 4, as the other per-step costs of part c: what Muon adds is a cost per optimizer step (five bf16
Newton-Schulz iterations per matrix) that does not grow with the batch, so a small batch shows it whole.
Reported, not a target: it is Muon's own price.
"""

from __future__ import annotations

from dataclasses import asdict

from transformers import Trainer, TrainingArguments

from layerwise_trainer import LayerwiseTrainer, LayerwiseTrainingArguments

from .common import BenchmarkResult
from .gpu_llama import (
    SHAPES,
    SMALL_BATCH,
    columns,
    data_for,
    llama,
    llm_arguments,
    ratio_text,
    rounds_note,
    side_row,
    trainer_facts,
)
from .gpu_llm import LLRD_SPEC
from .gpu_runs import PartContext, Windows, alternate, train_windows

ADAMW = "LayerwiseTrainer, AdamW, layer decay"
HYBRID = "LayerwiseTrainer, Muon + AdamW, layer decay"
MUON_SPEC = {**LLRD_SPEC, "muon": {"adjust_lr_fn": "match_rms_adamw"}}


def muon_step(context: PartContext) -> BenchmarkResult:
    shape, batch = SHAPES[context.scale], SMALL_BATCH[context.scale]
    windows = Windows.after_warmup(2, 1, context.pick(smoke=2, full=3))
    data = data_for(shape, batch, windows)

    def side(spec: dict):
        def build(args: TrainingArguments) -> Trainer:
            return LayerwiseTrainer(
                model=llama(shape, context.device), args=args, train_dataset=data, param_groups=spec
            )

        arguments = llm_arguments(context, batch)
        options = dict(arguments_class=LayerwiseTrainingArguments, inspect=trainer_facts)
        return lambda: train_windows(build, windows, context.device, arguments, **options)

    alternation = alternate({ADAMW: side(LLRD_SPEC), HYBRID: side(MUON_SPEC)}, context.pick(smoke=1, full=3),
                            context.clock, context.report, "f muon")  # fmt: skip
    ratio = alternation.per_round_ratios(HYBRID, ADAMW)
    rows = [
        side_row(f"{name} ({alternation.runs[name][-1].facts['optimizer_groups']} param groups)", alternation, name,
                 batch, shape.sequence, ("vs AdamW", "1" if name == ADAMW else ratio_text(ratio)))
        for name in (ADAMW, HYBRID)
    ]  # fmt: skip
    return BenchmarkResult(
        name="f_muon",
        title=f"f. Muon + AdamW in one optimizer against AdamW (seq {shape.sequence}, batch {batch})",
        columns=columns("vs AdamW"),
        rows=rows,
        notes=[
            f"Throughput of the hybrid over AdamW's: {ratio_text(ratio)} (median of the rounds' ratios, min-max); "
            "Muon's optimizer state is one momentum buffer per matrix, AdamW's two moments.",
            rounds_note(alternation, windows),
        ],
        data={"shape": asdict(shape), "batch": batch, "alternation": alternation.to_data()},
    )
