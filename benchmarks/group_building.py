"""Benchmark 1: building the optimizer's groups against the number of parameter tensors (meta device).

The stock ``Trainer.create_optimizer`` tests ``name in decay_parameters`` against a list, so its cost
grows as the square of the number of tensors; ``LayerwiseTrainer.create_optimizer`` should grow
linearly. Both build the optimizer for the same meta-device model, in the same process.
"""

from __future__ import annotations

import tempfile

from transformers import Trainer, TrainingArguments

from layerwise_trainer import LayerwiseTrainer

from .common import BenchmarkResult, Settings, Spread, Target, fitted_exponent, interleaved, timed
from .models import WideModel, wide_model_on_meta

# The usual recipe: frozen embeddings, a slow body, a fast head.
SPEC = [
    {"name": "embeddings", "match": "embeddings.*", "freeze": True},
    {"name": "body", "match": "layers.*", "lr_scale": 0.1},
    {"name": "head", "match": "classifier.*", "lr_scale": 10},
]


def _create_optimizer_seconds(trainer: Trainer, model: WideModel) -> float:
    # Trainers are built around a small real model (the Trainer moves its model to the device); the
    # meta-device model is swapped in for the measurement.
    trainer.model = model
    trainer.optimizer = None
    return timed(trainer.create_optimizer)


def run(settings: Settings) -> BenchmarkResult:
    sizes = settings.pick(smoke=[200, 1000], quick=[1000, 5000, 20000, 50000], full=[1000, 5000, 20000, 50000])
    repeats_for = settings.pick(
        smoke=lambda size: 1,
        quick=lambda size: 1 if size >= 50000 else 3,
        full=lambda size: 5,
    )
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(output_dir=output_dir, report_to=[], use_cpu=True)
        stock = Trainer(model=WideModel(20), args=args)
        ours = LayerwiseTrainer(model=WideModel(20), args=args, param_groups=SPEC)
        rows, stock_medians, our_medians = [], [], []
        for size in sizes:
            model = wide_model_on_meta(size)
            samples = interleaved(
                {
                    "stock": lambda model=model: _create_optimizer_seconds(stock, model),
                    "layerwise": lambda model=model: _create_optimizer_seconds(ours, model),
                },
                repeats_for(size),
            )
            stock_time, our_time = Spread.of(samples["stock"]), Spread.of(samples["layerwise"])
            stock_medians.append(stock_time.median)
            our_medians.append(our_time.median)
            rows.append(
                {
                    "tensors": f"{sum(1 for _ in model.parameters()):,}",
                    "stock create_optimizer": stock_time.text(),
                    "LayerwiseTrainer": our_time.text(),
                    "speed-up": f"{stock_time.median / our_time.median:.1f}x",
                    "repeats": len(samples["stock"]),
                }
            )
    our_exponent = fitted_exponent(sizes, our_medians)
    stock_exponent = fitted_exponent(sizes, stock_medians)
    return BenchmarkResult(
        name="group_building",
        title="1. Building the groups: create_optimizer against the number of tensors (meta device)",
        columns=["tensors", "stock create_optimizer", "LayerwiseTrainer", "speed-up", "repeats"],
        rows=rows,
        targets=[
            Target("LayerwiseTrainer growth exponent", our_exponent, "<=", 1.2),
            Target(f"speed-up at {sizes[-1]:,} tensors", stock_medians[-1] / our_medians[-1], ">=", 30.0),
        ],
        notes=[
            f"Fitted growth exponents (log time against log tensors): stock {stock_exponent:.2f}, "
            f"LayerwiseTrainer {our_exponent:.2f}. Spec: frozen embeddings, body at 0.1x, head at 10x; "
            "both timings include building the torch optimizer."
        ],
    )
