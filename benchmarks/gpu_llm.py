"""Parts a, b and c of the GPU suite, on the Llama of about 1B parameters of `gpu_llama`, at sequence 2048.

a. Throughput and memory: the stock Trainer against `LayerwiseTrainer` with layer decay over every layer,
   at the largest batch that fits.
b. The lower half (the embeddings and the lower half of the layers) at rate 0: in a hand-built AdamW passed
   as ``Trainer(optimizers=...)`` (the seed recipe's shape) against the same spec in `LayerwiseTrainer`,
   which freezes it; same batch.
c. The lower half as a group that starts later, timed before and after its start (same batch); the
   per-group diagnostics at ``logging_steps=10``; LoRA+ through the spec against peft's
   ``create_loraplus_optimizer``. The last two run at batch 4: what they add is a cost per logging step or
   per optimizer step that does not grow with the batch, so a small batch is the stricter test, and it fits
   the suite's time (ten steps of about a second at the largest batch would not, five rounds of them).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from layerwise_trainer import LayerwiseTrainer, LayerwiseTrainingArguments

from .common import BenchmarkResult, Spread, Target
from .gpu_llama import (
    LEARNING_RATE,
    SHAPES,
    SMALL_BATCH,
    LlamaShape,
    columns,
    data_for,
    llama,
    llm_arguments,
    ratio_text,
    rounds_note,
    side_row,
    trainer_facts,
    with_smaller_batch_on_oom,
)
from .gpu_runs import PartContext, RunRecord, Windows, alternate, bytes_text, train_windows, windows_text

LAYER_DECAY = 0.9
LORA_PLUS_RATIO = 16
LLRD_SPEC = {"layer_decay": LAYER_DECAY}  # every parameter in the default group, split by layer id


def lower_half_patterns(shape: LlamaShape) -> list[str]:
    """The embeddings and the lower half of the layers."""
    return ["model.embed_tokens.*", *(f"model.layers.{index}.*" for index in range(shape.layers // 2))]


def lower_half_spec(shape: LlamaShape, **lower: Any) -> list[dict[str, Any]]:
    return [{"name": "lower", "match": lower_half_patterns(shape), **lower}, {"name": "upper", "match": "*"}]


def _trained(build, windows: Windows, context: PartContext, arguments: dict[str, Any], **options: Any):
    """One side of an alternation: a function that trains a fresh run through the windows."""
    return lambda: train_windows(build, windows, context.device, arguments, **options)


# --- a. LLRD against the stock Trainer -------------------------------------------------------------------

STOCK = "stock Trainer"
LLRD = "LayerwiseTrainer, layer decay over every layer"


def llm_throughput(context: PartContext) -> BenchmarkResult:
    return with_smaller_batch_on_oom(context, lambda batch: _llm_throughput(context, batch))


def _llm_throughput(context: PartContext, batch: int) -> BenchmarkResult:
    shape = SHAPES[context.scale]
    windows = Windows.after_warmup(2, 1, context.pick(smoke=2, full=3))
    data, arguments = data_for(shape, batch, windows), llm_arguments(context, batch)

    def stock(args: TrainingArguments) -> Trainer:
        return Trainer(model=llama(shape, context.device), args=args, train_dataset=data)

    def layerwise(args: TrainingArguments) -> Trainer:
        model = llama(shape, context.device)
        return LayerwiseTrainer(model=model, args=args, train_dataset=data, param_groups=LLRD_SPEC)

    sides = {
        STOCK: _trained(stock, windows, context, arguments, inspect=trainer_facts),
        LLRD: _trained(layerwise, windows, context, arguments, inspect=trainer_facts),
    }
    alternation = alternate(sides, context.pick(smoke=2, full=5), context.clock, context.report, "a")
    context.shared["a"] = (batch, alternation)
    ratio = alternation.per_round_ratios(STOCK, LLRD)
    rows = [
        side_row(
            f"{name} ({alternation.runs[name][-1].facts['optimizer_groups']} param groups)", alternation, name, batch,
            shape.sequence, ("vs stock", "1" if name == STOCK else ratio_text(ratio)),
        )
        for name in (STOCK, LLRD)
    ]  # fmt: skip
    facts = alternation.runs[STOCK][-1].facts
    return BenchmarkResult(
        name="a_llm_llrd",
        title=f"a. LLM fine-tune: LLRD over every layer against the stock Trainer (seq {shape.sequence}, "
        f"batch {batch})",
        columns=columns("vs stock"),
        rows=rows,
        targets=[Target("throughput, LLRD / stock, median of the rounds' ratios", ratio.median, ">=", 0.99)],
        notes=[
            f"{shape.describe()}: {facts['parameters']:,} parameters. bf16 autocast over float32 weights, "
            f"adamw_torch_fused, weight decay 0.01, layer decay {LAYER_DECAY}, no gradient checkpointing. Batch "
            f"{batch}: {context.shared['batch'].how}.",
            rounds_note(alternation, windows),
        ],
        data={"shape": asdict(shape), "batch": asdict(context.shared["batch"]), "alternation": alternation.to_data()},
    )  # fmt: skip


# --- b. The lower half frozen by the spec against lr 0 in a hand-built AdamW -------------------------------

HAND_BUILT = "hand-built AdamW, lower half at lr 0 (the seed recipe)"
FROZEN = "LayerwiseTrainer, lower half lr: 0 (frozen)"


def frozen_lower_half(context: PartContext) -> BenchmarkResult:
    return with_smaller_batch_on_oom(context, lambda batch: _frozen_lower_half(context, batch))


def _frozen_lower_half(context: PartContext, batch: int) -> BenchmarkResult:
    shape = SHAPES[context.scale]
    windows = Windows.after_warmup(2, 1, context.pick(smoke=2, full=3))
    data, arguments = data_for(shape, batch, windows), llm_arguments(context, batch)
    lower = tuple(pattern.rstrip("*") for pattern in lower_half_patterns(shape))

    def hand_built(args: TrainingArguments) -> Trainer:
        model = llama(shape, context.device)
        named = list(model.named_parameters())
        groups = [
            {"params": [parameter for name, parameter in named if name.startswith(lower)], "lr": 0.0},
            {"params": [parameter for name, parameter in named if not name.startswith(lower)], "lr": LEARNING_RATE},
        ]
        optimizer = torch.optim.AdamW(groups, lr=LEARNING_RATE, weight_decay=0.01, fused=True)
        return Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, None))

    def layerwise(args: TrainingArguments) -> Trainer:
        model = llama(shape, context.device)
        return LayerwiseTrainer(model=model, args=args, train_dataset=data, param_groups=lower_half_spec(shape, lr=0))

    sides = {
        HAND_BUILT: _trained(hand_built, windows, context, arguments, inspect=trainer_facts),
        FROZEN: _trained(layerwise, windows, context, arguments, inspect=trainer_facts),
    }
    alternation = alternate(sides, context.pick(smoke=1, full=5), context.clock, context.report, "b")
    context.shared["b"] = (batch, alternation)
    speed_up = alternation.per_round_ratios(HAND_BUILT, FROZEN)
    rows = [
        side_row(name, alternation, name, batch, shape.sequence,
                 ("speed-up", "1" if name == HAND_BUILT else ratio_text(speed_up)))
        for name in (HAND_BUILT, FROZEN)
    ]  # fmt: skip
    hand, ours = alternation.runs[HAND_BUILT][-1].windows[-1], alternation.runs[FROZEN][-1].windows[-1]
    peak_saved = None if hand.peak_bytes is None else hand.peak_bytes - ours.peak_bytes
    return BenchmarkResult(
        name="b_frozen_lower_half",
        title=(
            f"b. The embeddings and layers 0-{shape.layers // 2 - 1} at rate 0: frozen by the spec against a "
            f"hand-built AdamW (seq {shape.sequence}, batch {batch})"
        ),
        columns=columns("speed-up"),
        rows=rows,
        targets=holds_trainable_only(alternation.runs[FROZEN][-1], "LayerwiseTrainer"),
        notes=[
            f"Speed-up {ratio_text(speed_up, '')} (median of the rounds' ratios, min-max); saved: peak memory "
            f"{bytes_text(peak_saved)}, optimizer state "
            f"{bytes_text(hand.optimizer_state_bytes - ours.optimizer_state_bytes)}, gradients "
            f"{bytes_text(hand.gradient_bytes - ours.gradient_bytes)}.",
            "Both fused AdamW at the same rates; the Trainer's defaults otherwise (gradient clipping at 1.0, whose "
            "norm in the hand-built recipe includes the lower half's gradients).",
            rounds_note(alternation, windows),
        ],
        data={"shape": asdict(shape), "batch": batch, "alternation": alternation.to_data()},
    )  # fmt: skip


def holds_trainable_only(run: RunRecord, who: str) -> list[Target]:
    """Exact checks: gradients and optimizer state exist for the trainable parameters alone."""
    facts, last = run.facts, run.windows[-1]
    return [
        Target(f"{who}: gradient bytes = the trainable parameters' bytes (1 = yes)",
               float(last.gradient_bytes == facts["trainable_bytes"]), ">=", 1),
        Target(f"{who}: optimizer state entries = trainable tensors (1 = yes)",
               float(facts["optimizer_state_entries"] == facts["trainable_tensors"]), ">=", 1),
    ]  # fmt: skip


# --- c. A group that starts later ------------------------------------------------------------------------

STAGED = "LayerwiseTrainer, lower half start: {start}"
# Steps 1-2 warm up; 3-6 are timed before the start (two windows); the lower half starts once 6 steps have
# passed, so step 7 is its first with gradients (and creates its optimizer state) and step 8 its second;
# 9-12 are timed after it (two windows).
START = 6
STAGED_WINDOWS = Windows(((3, 4), (5, 6), (7, 7), (8, 8), (9, 10), (11, 12)))
PHASES = {"before": (0, 1), "first step after": (2,), "second step after": (3,), "after": (4, 5)}


def staged_start(context: PartContext) -> BenchmarkResult:
    return with_smaller_batch_on_oom(context, lambda batch: _staged_start(context, batch))


def _staged_start(context: PartContext, batch: int) -> BenchmarkResult:
    shape = SHAPES[context.scale]
    data, arguments = data_for(shape, batch, STAGED_WINDOWS), llm_arguments(context, batch)
    label = STAGED.format(start=START)

    def staged(args: TrainingArguments) -> Trainer:
        spec = lower_half_spec(shape, start=START)
        return LayerwiseTrainer(model=llama(shape, context.device), args=args, train_dataset=data, param_groups=spec)

    sides = {label: _trained(staged, STAGED_WINDOWS, context, arguments, inspect=trainer_facts)}
    alternation = alternate(sides, context.pick(smoke=1, full=3), context.clock, context.report, "c staged")
    # Before the start it should cost what part b's frozen lower half costs; after it, what the stock Trainer does.
    baselines = {"before": ("b", FROZEN, "b's frozen lower half"), "after": ("a", STOCK, "a's stock Trainer")}
    rows, targets = [], []
    for phase, indexes in PHASES.items():
        windows = [run.windows[index] for run in alternation.runs[label] for index in indexes]
        spread, last = Spread.of([window.step_seconds for window in windows]), windows[-1]
        compared = "-"
        part, side, name = baselines.get(phase, (None, None, None))
        base_batch, baseline = context.shared.get(part, (None, None))
        if baseline is not None and base_batch != batch:
            compared = f"- ({name} ran at batch {base_batch})"
        elif baseline is not None:
            ratio = spread.median / baseline.step_seconds(side).median
            base = baseline.runs[side][-1].windows[-1]
            held = (last.optimizer_state_bytes, last.gradient_bytes)
            same = held == (base.optimizer_state_bytes, base.gradient_bytes)
            compared = f"x{ratio:.3f} of {name}"
            targets += [
                Target(f"{phase} the start: step time / {name}", ratio, "<=", 1.05),
                Target(f"{phase} the start: optimizer state and gradients = {name}'s (1 = yes)", float(same), ">=", 1),
            ]
        rows.append(
            {
                "run": f"{label}, {phase} the start",
                "batch": batch,
                "windows": windows_text(windows),
                "step time": spread.text(unit="ms", scale=1e3),
                "tokens/s": f"{batch * shape.sequence / spread.median:,.0f}",
                "compared with": compared,
                "peak allocated": bytes_text(last.peak_bytes),
                "optimizer state": bytes_text(last.optimizer_state_bytes),
                "gradients": bytes_text(last.gradient_bytes),
            }
        )
    return BenchmarkResult(
        name="c_staged_start",
        title=f"c. A group that starts later: the lower half before and after its start (seq {shape.sequence}, "
        f"batch {batch})",
        columns=columns("compared with"),
        rows=rows,
        targets=targets,
        notes=[
            f"The lower half (embeddings and layers 0-{shape.layers // 2 - 1}) starts once {START} optimizer steps "
            f"have passed: step {START + 1} is its first with gradients and creates its optimizer state. Each "
            "phase's memory is from its last window. The comparisons are with parts a and b's runs in this process "
            "(same model, batch and arguments; none when those parts did not run), not alternated with them.",
            rounds_note(alternation, STAGED_WINDOWS),
        ],
        data={"shape": asdict(shape), "batch": batch, "start": START, "alternation": alternation.to_data()},
    )  # fmt: skip


# --- c. Per-group diagnostics at logging_steps=10 ---------------------------------------------------------

DIAGNOSTIC_PREFIXES = ("grad_norm", "update_ratio", "param_norm")
LOGGING_STEPS = {"smoke": 2, "full": 10}  # the smoke run takes the same path in fewer steps
DIAGNOSTICS_OFF = "LayerwiseTrainer, LLRD, diagnostics off"
DIAGNOSTICS_ON = "LayerwiseTrainer, LLRD, group_diagnostics=True"


def diagnostic_facts(trainer: Trainer) -> dict[str, Any]:
    entries = [entry for entry in trainer.state.log_history if "loss" in entry]
    keys = [key for key in entries[-1] if "/" in key and key.split("/", 1)[0] in DIAGNOSTIC_PREFIXES]
    return {**trainer_facts(trainer), "logged_entries": len(entries), "diagnostic_keys_per_entry": len(keys)}


def diagnostics_cost(context: PartContext) -> BenchmarkResult:
    shape, batch, every = SHAPES[context.scale], SMALL_BATCH[context.scale], LOGGING_STEPS[context.scale]
    # The first logging step is in the warm-up; each window of `every` steps then holds one logging step.
    windows = Windows.after_warmup(every, context.pick(smoke=1, full=3), every)
    data = data_for(shape, batch, windows)

    def layerwise(args: TrainingArguments) -> Trainer:
        model = llama(shape, context.device)
        return LayerwiseTrainer(model=model, args=args, train_dataset=data, param_groups=LLRD_SPEC)

    def side(diagnostics: bool):
        arguments = llm_arguments(context, batch, logging_steps=every, group_diagnostics=diagnostics)
        options = dict(arguments_class=LayerwiseTrainingArguments, inspect=diagnostic_facts)
        return _trained(layerwise, windows, context, arguments, **options)

    sides = {DIAGNOSTICS_OFF: side(False), DIAGNOSTICS_ON: side(True)}
    alternation = alternate(sides, context.pick(smoke=1, full=2), context.clock, context.report, "c diagnostics")
    cost = alternation.per_round_ratios(DIAGNOSTICS_ON, DIAGNOSTICS_OFF)
    extra = (alternation.step_seconds(DIAGNOSTICS_ON).median - alternation.step_seconds(DIAGNOSTICS_OFF).median) * every
    rows = []
    for name in (DIAGNOSTICS_OFF, DIAGNOSTICS_ON):
        facts = alternation.runs[name][-1].facts
        label = f"{name} ({facts['optimizer_groups']} param groups, {facts['diagnostic_keys_per_entry']} keys)"
        rows.append(side_row(label, alternation, name, batch, shape.sequence,
                             ("vs off", "1" if name == DIAGNOSTICS_OFF else ratio_text(cost))))  # fmt: skip
    notes = [
        f"Mean step time with diagnostics over without: {ratio_text(cost)} at logging_steps={every} (median of "
        f"the rounds' ratios, min-max): {extra * 1e3:,.1f} ms more per logging step (the difference of the median "
        "windows, each of which holds one logging step). Keys: the diagnostic keys in a log entry "
        f"({', '.join(DIAGNOSTIC_PREFIXES)} per group)."
    ]
    if "a" in context.shared:
        a_batch, a = context.shared["a"]
        share = extra / (every * a.step_seconds(LLRD).median)
        notes.append(
            f"At part a's batch ({a_batch}) the same time per logging step would be "
            f"{share:.2%} of {every} steps (arithmetic from part a's step time, not measured)."
        )
    notes.append(rounds_note(alternation, windows))
    return BenchmarkResult(
        name="c_diagnostics",
        title=f"c. Per-group diagnostics at logging_steps={every} (seq {shape.sequence}, batch {batch})",
        columns=columns("vs off"),
        rows=rows,
        targets=[Target("mean step time, diagnostics on / off, minus 1", cost.median - 1, "<=", 0.01)],
        notes=notes,
        data={"shape": asdict(shape), "batch": batch, "alternation": alternation.to_data()},
    )


# --- c. LoRA+ through the spec against peft's create_loraplus_optimizer -----------------------------------

LORA_PLUS_PEFT = "peft create_loraplus_optimizer, Trainer(optimizers=...)"
LORA_PLUS_SPEC_SIDE = "LayerwiseTrainer, LoRA+ through the spec"
LORA_PLUS_SPEC = {
    "unmatched": "error",
    "groups": [
        {"name": "lora_A", "match": "*.lora_A.*"},
        {"name": "lora_B", "match": "*.lora_B.*", "lr_scale": LORA_PLUS_RATIO},
    ],
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_model(shape: LlamaShape, device: str) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    return get_peft_model(llama(shape, device), config)


def rate_facts(trainer: Trainer) -> dict[str, Any]:
    """Every trainable parameter's rate: a digest of the (name, rate) pairs and a count per rate."""
    names = {id(parameter): name for name, parameter in trainer.model.named_parameters()}
    pairs = sorted(
        (names[id(parameter)], group.get("initial_lr", group["lr"]))
        for group in trainer.optimizer.param_groups
        for parameter in group["params"]
    )
    counts: dict[str, int] = {}
    for _, rate in pairs:
        counts[f"{rate:g}"] = counts.get(f"{rate:g}", 0) + 1
    digest = hashlib.sha256(repr(pairs).encode()).hexdigest()[:16]
    return {**trainer_facts(trainer), "parameters_per_rate": counts, "rates_digest": digest}


def lora_plus(context: PartContext) -> BenchmarkResult:
    from peft.optimizers import create_loraplus_optimizer

    shape, batch = SHAPES[context.scale], SMALL_BATCH[context.scale]
    windows = Windows.after_warmup(2, 1, context.pick(smoke=2, full=5))
    data, arguments = data_for(shape, batch, windows), llm_arguments(context, batch, weight_decay=0.0)

    def through_peft(args: TrainingArguments) -> Trainer:
        model = lora_model(shape, context.device)
        optimizer = create_loraplus_optimizer(
            model, torch.optim.AdamW, lr=LEARNING_RATE, loraplus_lr_ratio=LORA_PLUS_RATIO, fused=True
        )
        return Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, None))

    def through_the_spec(args: TrainingArguments) -> Trainer:
        model = lora_model(shape, context.device)
        return LayerwiseTrainer(model=model, args=args, train_dataset=data, param_groups=LORA_PLUS_SPEC)

    sides = {
        LORA_PLUS_PEFT: _trained(through_peft, windows, context, arguments, inspect=rate_facts),
        LORA_PLUS_SPEC_SIDE: _trained(through_the_spec, windows, context, arguments, inspect=rate_facts),
    }
    alternation = alternate(sides, context.pick(smoke=1, full=5), context.clock, context.report, "c LoRA+")
    ratio = alternation.per_round_ratios(LORA_PLUS_PEFT, LORA_PLUS_SPEC_SIDE)
    theirs, ours = (alternation.runs[name][-1].facts for name in (LORA_PLUS_PEFT, LORA_PLUS_SPEC_SIDE))
    rows = [
        side_row(f"{name} ({alternation.runs[name][-1].facts['optimizer_groups']} param groups)", alternation, name,
                 batch, shape.sequence, ("vs peft", "1" if name == LORA_PLUS_PEFT else ratio_text(ratio)))
        for name in (LORA_PLUS_PEFT, LORA_PLUS_SPEC_SIDE)
    ]  # fmt: skip
    return BenchmarkResult(
        name="c_lora_plus",
        title=f"c. LoRA+ (B at {LORA_PLUS_RATIO}x A) through the spec against peft's optimizer (seq "
        f"{shape.sequence}, batch {batch})",
        columns=columns("vs peft"),
        rows=rows,
        targets=[
            Target("throughput, through the spec / peft's optimizer, median of the rounds' ratios", ratio.median,
                   ">=", 0.99),
            Target("every adapter parameter at the same rate in both (1 = yes)",
                   float(ours["rates_digest"] == theirs["rates_digest"]), ">=", 1),
        ],
        notes=[
            "LoRA r=16, alpha 32, on every attention and MLP projection; base weights frozen by peft. Parameters "
            f"per rate: through the spec {ours['parameters_per_rate']}, peft {theirs['parameters_per_rate']}. Both "
            "fused AdamW, weight decay 0.",
            rounds_note(alternation, windows),
        ],
        data={"shape": asdict(shape), "batch": batch, "alternation": alternation.to_data()},
    )  # fmt: skip
