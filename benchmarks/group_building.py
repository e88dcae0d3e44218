"""Benchmark 1: what a user pays to get an optimizer, against the number of parameter tensors.

End to end: building the trainer (``Trainer(...)`` or ``LayerwiseTrainer(..., param_groups=spec)``) plus
``create_optimizer()``, on the same CPU model, in the same process. The stock ``create_optimizer`` tests
``name in decay_parameters`` against a list, so its cost grows as the square of the number of tensors;
``LayerwiseTrainer`` resolves the spec once, when it is built, and maps that plan onto the model in
``create_optimizer``, so its cost should grow linearly. Both pay the Trainer's own construction (which
moves the model to the device) and the torch optimizer's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from layerwise_trainer import LayerwiseTrainer

from .common import BenchmarkResult, Settings, Spread, Target, fitted_exponent, interleaved, timed
from .models import WideModel

# The usual recipe: frozen embeddings, a slow body, a fast head.
SPEC = [
    {"name": "embeddings", "match": "embeddings.*", "freeze": True},
    {"name": "body", "match": "layers.*", "lr_scale": 0.1},
    {"name": "head", "match": "classifier.*", "lr_scale": 10},
]


def _until_optimizer(build: Callable[[], Trainer]) -> Callable[[], float]:
    """Seconds from nothing to an optimizer: build the trainer, then ``create_optimizer``."""
    return lambda: timed(lambda: build().create_optimizer())


def _floor(model: nn.Module, args: TrainingArguments) -> float:
    """Seconds of what any trainer pays: ``Trainer(...)`` and a torch AdamW over the model's parameters.

    The plain ``AdamW(model.parameters())`` stands for the optimizer build itself, without any grouping.
    """
    return timed(lambda: Trainer(model=model, args=args)) + timed(lambda: torch.optim.AdamW(model.parameters()))


def _candidates(model: nn.Module, args: TrainingArguments) -> dict[str, Callable[[], float]]:
    # One model for every repetition, as in a notebook: a LayerwiseTrainer gives back what the previous
    # one froze before it resolves its spec, and the stock Trainer changes nothing.
    return {
        "stock": _until_optimizer(lambda: Trainer(model=model, args=args)),
        "layerwise": _until_optimizer(lambda: LayerwiseTrainer(model=model, args=args, param_groups=SPEC)),
        "floor": lambda: _floor(model, args),
    }


def run(settings: Settings) -> BenchmarkResult:
    sizes = settings.pick(smoke=[200, 1000], quick=[1000, 5000, 20000, 50000], full=[1000, 5000, 20000, 50000])
    repeats_for = settings.pick(
        smoke=lambda size: 1,
        quick=lambda size: 1 if size >= 50000 else 3,
        full=lambda size: 5,
    )
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(output_dir=output_dir, report_to=[], use_cpu=True)
        rows, stock_medians, our_medians, floor_medians = [], [], [], []
        for size in sizes:
            model = WideModel(size)  # on the CPU: the Trainer moves its model to the device when it is built
            samples = interleaved(_candidates(model, args), repeats_for(size))
            stock_time, our_time = Spread.of(samples["stock"]), Spread.of(samples["layerwise"])
            floor_time = Spread.of(samples["floor"])
            stock_medians.append(stock_time.median)
            our_medians.append(our_time.median)
            floor_medians.append(floor_time.median)
            rows.append(
                {
                    "tensors": f"{sum(1 for _ in model.parameters()):,}",
                    "stock Trainer() + create_optimizer": stock_time.text(),
                    "LayerwiseTrainer() + create_optimizer": our_time.text(),
                    "speed-up": f"{stock_time.median / our_time.median:.1f}x",
                    "Trainer() + plain AdamW (floor)": floor_time.text(),
                    "speed-up ceiling": f"{stock_time.median / floor_time.median:.1f}x",
                    "repeats": len(samples["stock"]),
                }
            )
    our_exponent = fitted_exponent(sizes, our_medians)
    stock_exponent = fitted_exponent(sizes, stock_medians)
    return BenchmarkResult(
        name="group_building",
        title="1. Building the groups: trainer construction plus create_optimizer against the number of tensors",
        columns=[
            "tensors",
            "stock Trainer() + create_optimizer",
            "LayerwiseTrainer() + create_optimizer",
            "speed-up",
            "Trainer() + plain AdamW (floor)",
            "speed-up ceiling",
            "repeats",
        ],
        rows=rows,
        targets=[
            Target("LayerwiseTrainer growth exponent", our_exponent, "<=", 1.2),
            Target(f"speed-up at {sizes[-1]:,} tensors, end to end", stock_medians[-1] / our_medians[-1], ">=", 30.0),
        ],
        notes=[
            f"Fitted growth exponents (log time against log tensors): stock {stock_exponent:.2f}, "
            f"LayerwiseTrainer {our_exponent:.2f}. Spec: frozen embeddings, body at 0.1x, head at 10x. Both "
            "timings run from nothing to an optimizer: the trainer's construction (which moves the model to "
            "the device and, for LayerwiseTrainer, resolves the spec) plus create_optimizer (which builds the "
            "torch optimizer). The floor is what any trainer pays before grouping anything: the stock "
            "Trainer's construction plus a plain AdamW over the same parameters; the stock time divided by it "
            f"is the most any end-to-end speed-up can be ({stock_medians[-1] / floor_medians[-1]:.1f}x at "
            f"{sizes[-1]:,} tensors).",
        ],
    )
