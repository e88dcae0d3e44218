"""Part d of the GPU suite: the seed recipe's own shape, BERT-base with a 32k vocabulary classifying sequences of 128.

The recipe this library replaces keeps a pretrained body in a hand-built AdamW at learning rate 0 and
trains the head; `LayerwiseTrainer` freezes a group at rate 0, so the body's gradients and optimizer state
never exist. On an H200 these steps take tens of milliseconds and are bound by the host as much as by the
device, so the samples per second read here are that mix, not the device's limit (part b measures the same
question on a model that keeps the device busy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from layerwise_trainer import LayerwiseTrainer

from .common import BenchmarkResult, Spread, Target
from .gpu_llama import ratio_text
from .gpu_runs import PartContext, Windows, alternate, bytes_text, memory_columns, train_windows, windows_text
from .models import BERT_SIZES, TokenData

VOCABULARY = 32000  # cl-tohoku/bert-base-japanese(-whole-word-masking)'s
HEAD_LR = 2e-5
HAND_BUILT = "hand-built AdamW, body at lr 0 (the seed recipe)"
FROZEN = "LayerwiseTrainer, body lr: 0 (frozen)"
SPEC = [{"name": "body", "match": "bert.*", "lr": 0}, {"name": "head", "match": "classifier.*", "lr": HEAD_LR}]


@dataclass(frozen=True)
class Sizes:
    model: str
    length: int
    batch: int
    warmup: int
    steps: int
    rounds: int


def _sizes(context: PartContext) -> Sizes:
    return context.pick(smoke=Sizes("tiny", 16, 4, 1, 2, 1), full=Sizes("base", 128, 32, 3, 30, 5))


def bert(size: str, device: str) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCABULARY, max_position_embeddings=512, num_labels=3, **BERT_SIZES[size])
    with torch.device(device):
        return BertForSequenceClassification(config)


def _facts(trainer: Trainer) -> dict[str, int]:
    trainable = [parameter for parameter in trainer.model.parameters() if parameter.requires_grad]
    return {
        "parameters": sum(parameter.numel() for parameter in trainer.model.parameters()),
        "trainable_bytes": sum(parameter.numel() * parameter.element_size() for parameter in trainable),
    }


def seed_shape(context: PartContext) -> BenchmarkResult:
    sizes = _sizes(context)
    windows = Windows.after_warmup(sizes.warmup, 1, sizes.steps)
    data = TokenData(sizes.batch * windows.max_steps, sizes.length, vocab_size=VOCABULARY)
    arguments = dict(
        per_device_train_batch_size=sizes.batch, lr_scheduler_type="constant", weight_decay=0.0,
        optim="adamw_torch_fused", bf16=context.device == "cuda",
    )  # fmt: skip

    def hand_built(args: TrainingArguments) -> Trainer:
        model = bert(sizes.model, context.device)
        body = [parameter for name, parameter in model.named_parameters() if name.startswith("bert.")]
        head = [parameter for name, parameter in model.named_parameters() if name.startswith("classifier.")]
        groups = [{"params": body, "lr": 0.0}, {"params": head, "lr": HEAD_LR}]
        optimizer = torch.optim.AdamW(groups, weight_decay=0.0, fused=True)
        return Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, None))

    def layerwise(args: TrainingArguments) -> Trainer:
        model = bert(sizes.model, context.device)
        return LayerwiseTrainer(model=model, args=args, train_dataset=data, param_groups=SPEC)

    def side(build):
        return lambda: train_windows(build, windows, context.device, arguments, inspect=_facts)

    alternation = alternate(
        {HAND_BUILT: side(hand_built), FROZEN: side(layerwise)}, sizes.rounds, context.clock, context.report, "d"
    )
    speed_up = alternation.per_round_ratios(HAND_BUILT, FROZEN)
    rows = []
    for name in (HAND_BUILT, FROZEN):
        spread: Spread = alternation.step_seconds(name)
        rows.append(
            {
                "run": name,
                "batch": sizes.batch,
                "windows": windows_text(alternation.windows(name)),
                "step time": spread.text(unit="ms", scale=1e3),
                "samples/s": f"{sizes.batch / spread.median:,.0f}",
                "speed-up": "1" if name == HAND_BUILT else ratio_text(speed_up),
                **memory_columns(alternation.runs[name][-1]),
            }
        )
    ours = alternation.runs[FROZEN][-1]
    hand = alternation.runs[HAND_BUILT][-1]
    saved = None
    if hand.windows[-1].peak_bytes is not None:
        saved = hand.windows[-1].peak_bytes - ours.windows[-1].peak_bytes
    note = (
        f"BERT-{sizes.model} ({ours.facts['parameters']:,} parameters, vocabulary {VOCABULARY:,}), 3 labels, "
        f"sequence {sizes.length}. Both fused AdamW, constant rate, the Trainer's gradient clipping; bf16 on a GPU. "
        f"Peak memory saved {bytes_text(saved)}. {alternation.rounds_done()} rounds alternated, each run "
        f"{sizes.warmup} warm-up steps then one window of {sizes.steps} steps."
    )
    if alternation.stopped_early:
        note += f" Stopped early: {alternation.stopped_early}."
    return BenchmarkResult(
        name="d_seed_shape",
        title=f"d. The seed's shape: BERT-{sizes.model}, 32k vocabulary, seq {sizes.length}, body at rate 0",
        columns=["run", "batch", "windows", "step time", "samples/s", "speed-up", "peak allocated", "optimizer state",
                 "gradients"],
        rows=rows,
        targets=[
            Target("LayerwiseTrainer: gradient bytes = the head's bytes (1 = yes)",
                   float(ours.windows[-1].gradient_bytes == ours.facts["trainable_bytes"]), ">=", 1),
        ],
        notes=[note],
        data={"sizes": vars(sizes), "alternation": alternation.to_data()},
    )  # fmt: skip
