"""Benchmark 3: the frozen-body recipe through LayerwiseTrainer against the hand-built ``lr: 0`` recipe.

The hand-built recipe keeps the body in the optimizer at learning rate 0: every step still computes the
body's gradients and updates its Adam moments. LayerwiseTrainer freezes a group whose rate is 0, so
those gradients and that state never exist. The head must come out bit-identical.

Both recipes pay for the body's forward pass, dropout included; on a CPU, drawing BERT's dropout masks
takes about half of a frozen-body step. The benchmark runs the small BERT without dropout (the setup of
the measurement the target comes from) and with BERT's default dropout of 0.1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import Trainer, TrainingArguments

from layerwise_trainer import LayerwiseTrainer

from .common import BenchmarkResult, Settings, Spread, Target, interleaved
from .models import TokenData, bert
from .training_runs import RunMeasurement, measure_run, mebibytes

HEAD_LR = 2e-5
SPEC = [{"name": "body", "match": "bert.*", "lr": 0}, {"name": "head", "match": "classifier.*", "lr": HEAD_LR}]


def _recipes(size: str, dropout: float, data: TokenData) -> dict[str, Callable[[TrainingArguments], Trainer]]:
    def hand_built(args: TrainingArguments) -> Trainer:
        model = bert(size, dropout=dropout)
        body = [parameter for name, parameter in model.named_parameters() if name.startswith("bert.")]
        head = [parameter for name, parameter in model.named_parameters() if name.startswith("classifier.")]
        optimizer = torch.optim.AdamW([{"params": body, "lr": 0.0}, {"params": head, "lr": HEAD_LR}], weight_decay=0.0)
        return Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, None))

    def layerwise(args: TrainingArguments) -> Trainer:
        return LayerwiseTrainer(model=bert(size, dropout=dropout), args=args, train_dataset=data, param_groups=SPEC)

    return {"hand-built AdamW, body lr 0": hand_built, "LayerwiseTrainer, body lr 0 (frozen)": layerwise}


def run(settings: Settings) -> BenchmarkResult:
    size = settings.pick(smoke="tiny", quick="small", full="small")
    length, batch = settings.pick(smoke=(16, 4), quick=(128, 16), full=(128, 16))
    steps, warmup, repeats = settings.pick(smoke=(2, 1, 1), quick=(6, 2, 2), full=(30, 2, 3))
    data = TokenData(batch * (steps + warmup + 2), length)
    # No gradient clipping: with it, the hand-built recipe clips the head by a norm that includes the
    # body's gradients, so its head would differ for that reason alone. And the same AdamW kernels as
    # the hand-built torch.optim.AdamW (the Trainer's default is the fused one, whose last bits differ).
    arguments = dict(
        per_device_train_batch_size=batch,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        seed=0,
        max_grad_norm=0.0,
        optim="adamw_torch",
    )
    rows, targets = [], []
    for dropout in (0.0, 0.1):
        recipes = _recipes(size, dropout, data)
        last: dict[str, RunMeasurement] = {}

        def candidate(name: str, recipes=recipes, last=last) -> Callable[[], float]:
            def once() -> float:
                last[name] = measure_run(recipes[name], steps, warmup, settings.device, **arguments)
                return last[name].median_step

            return once

        samples = interleaved({name: candidate(name) for name in recipes}, repeats)
        hand_name, our_name = list(recipes)
        identical = all(
            torch.equal(a, b)
            for a, b in zip(
                last[hand_name].model.classifier.parameters(), last[our_name].model.classifier.parameters(), strict=True
            )
        )
        for name in recipes:
            rows.append(
                {
                    "dropout": dropout,
                    "recipe": name,
                    "step time": Spread.of(samples[name]).text(unit="ms", scale=1e3),
                    "optimizer state": mebibytes(last[name].optimizer_state_bytes),
                    "gradients": mebibytes(last[name].gradient_bytes),
                    "head after training": "bit-identical" if identical else "DIFFERS",
                }
            )
        speed_up = Spread.of(samples[hand_name]).median / Spread.of(samples[our_name]).median
        if dropout == 0.0:
            targets.append(Target("speed-up per step (no dropout)", speed_up, ">=", 2.5))
        else:
            rows[-1]["recipe"] += f" — speed-up {speed_up:.2f}x"
        targets.append(Target(f"head bit-identical, dropout {dropout} (1 = yes)", float(identical), ">=", 1.0))
    rows[1]["recipe"] += f" — speed-up {targets[0].value:.2f}x"
    return BenchmarkResult(
        name="frozen_body",
        title=(
            "3. Frozen body: LayerwiseTrainer against the hand-built lr: 0 recipe "
            f"(BERT {size}, seq {length}, batch {batch})"
        ),
        columns=["dropout", "recipe", "step time", "optimizer state", "gradients", "head after training"],
        rows=rows,
        targets=targets,
        notes=[
            f"{steps} timed steps after {warmup} warm-up steps per run, {repeats} runs each, interleaved; heads "
            f"compared after {steps + warmup + 1} steps. No gradient clipping: with it (the Trainer's default "
            "max_grad_norm=1), the hand-built recipe also scales the head's update by a norm that includes the "
            "body's gradients."
        ],
    )
