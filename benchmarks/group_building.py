"""Benchmark 1: what a user pays to get an optimizer, against the number of parameter tensors.

End to end: building the trainer (``Trainer(...)`` or ``LayerwiseTrainer(..., param_groups=spec)``) plus
``create_optimizer()``, in the same process, alternating within every round, against the floor any
name-based grouping pays: ``Trainer(...)``, one pass over ``named_parameters()`` and one ``AdamW``.

The models are transformer-shaped and live on the meta device, and the Trainer does not place them
(``place_model_on_device`` is False): moving 50,000 tensors to a device would add the same cost to every
candidate and hide what grouping costs. The stock ``create_optimizer`` tests ``name in decay_parameters``
against a list, so its cost grows as the square of the number of tensors; ``LayerwiseTrainer`` resolves
the spec once, when it is built, and maps that plan onto the model in ``create_optimizer``, so its cost
should grow linearly, and stay close to the floor.

torch's ``add_param_group`` hashes every parameter of the groups already added each time it adds one, so
an optimizer of several groups built the usual way costs more than one of a single group. A second floor
builds the ``AdamW`` that way over the plan's own groups (made beforehand, untimed). ``LayerwiseTrainer``
skips that re-hashing (its groups are disjoint by construction, see ``layerwise_trainer.core.disjoint_groups``),
so with many groups it can cost less than the second floor.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from layerwise_trainer import LayerwiseTrainer

from .common import BenchmarkResult, Settings, Spread, Target, fitted_exponent, interleaved, timed
from .models import DeepWideModel, WideModel

# The usual recipe: frozen embeddings, a slow body, a fast head.
SPEC = [
    {"name": "embeddings", "match": "embeddings.*", "freeze": True},
    {"name": "body", "match": "layers.*", "lr_scale": 0.1},
    {"name": "head", "match": "classifier.*", "lr_scale": 10},
]
# Layer-wise decay over 24 blocks (detect_layers counts): 24 layers and the head, each in two halves.
LLRD_SPEC = {
    "layer_decay": 0.9,
    "groups": [
        {"name": "embeddings", "match": "embeddings.*", "freeze": True},
        {"name": "head", "match": "classifier.*", "lr_scale": 10, "layer_decay": 1},
    ],
}
# At most this many times the floor at the largest size (issue 19, part F).
FLOOR_RATIO_TARGET = 1.3
FLOOR_LABEL = "floor: Trainer() + named_parameters() + AdamW"


@dataclass(frozen=True)
class Case:
    """A spec on a model: ``recipe`` (frozen embeddings, slow body, fast head) or ``LLRD``."""

    label: str
    spec: Any
    model: Callable[[int], nn.Module]
    with_stock: bool


CASES = (
    Case("recipe", SPEC, WideModel, with_stock=True),
    Case("LLRD, 24 blocks", LLRD_SPEC, DeepWideModel, with_stock=False),
)


class UnplacedArguments(TrainingArguments):
    """``TrainingArguments`` under which the Trainer leaves the model where it is (here: the meta device)."""

    @property
    def place_model_on_device(self) -> bool:
        return False


def settled(function: Callable[[], object], prepare: Callable[[], Any] = lambda: None) -> Callable[[], float]:
    """Seconds one call of ``function(prepare())`` takes (``prepare`` untimed), after collecting garbage.

    A full collection walks every module of the model (about 0.5 s at 50,000 tensors); left to chance, one
    falls into whichever candidate allocates when the previous rounds' trainers have piled up.
    """

    def run() -> float:
        prepared = prepare()
        gc.collect()
        return timed(lambda: function(prepared))

    return run


def floor(
    model: nn.Module, args: TrainingArguments, groups: list[dict[str, Any]] | None = None
) -> torch.optim.Optimizer:
    """What any name-based grouping pays: ``Trainer(...)``, one pass over the names, one ``AdamW``.

    Args:
        model: The model.
        args: The training arguments.
        groups: The param groups to build the ``AdamW`` over, made beforehand; by default one group of every
            parameter.
    """
    Trainer(model=model, args=args)
    parameters = [parameter for _, parameter in model.named_parameters()]
    return torch.optim.AdamW(parameters if groups is None else groups)


def _plan_groups(model: nn.Module, args: TrainingArguments, spec: Any) -> Callable[[], list[dict[str, Any]]]:
    """A fresh copy of the plan's param groups at every call (torch's constructor changes the dicts it gets)."""
    trainer = LayerwiseTrainer(model=model, args=args, param_groups=spec)
    groups = trainer.group_plan.optimizer_param_groups()
    return lambda: [{**group, "params": list(group["params"])} for group in groups]


def _candidates(model: nn.Module, args: TrainingArguments, case: Case) -> dict[str, Callable[[], float]]:
    # One model for every repetition, as in a notebook: a LayerwiseTrainer gives back what the previous
    # one froze before it resolves its spec, and the stock Trainer changes nothing.
    candidates = {
        "floor": settled(lambda _: floor(model, args)),
        "floor with the plan's groups": settled(
            lambda groups: floor(model, args, groups), prepare=_plan_groups(model, args, case.spec)
        ),
        "layerwise": settled(
            lambda _: LayerwiseTrainer(model=model, args=args, param_groups=case.spec).create_optimizer()
        ),
    }
    if case.with_stock:
        candidates["stock"] = settled(lambda _: Trainer(model=model, args=args).create_optimizer())
    return candidates


def _measure(candidates: dict[str, Callable[[], float]], repeats: int, stock_repeats: int) -> dict[str, list[float]]:
    """``repeats`` rounds of every candidate but the stock Trainer, which runs in the first ``stock_repeats``.

    The stock Trainer takes seconds at 50,000 tensors, and its time only enters the speed-up.
    """
    for name in candidates:
        if name != "stock":
            candidates[name]()  # untimed: first-use caches (compiled patterns, the decay-rule check)
    first = interleaved(candidates, stock_repeats)
    rest = interleaved({name: run for name, run in candidates.items() if name != "stock"}, repeats - stock_repeats)
    return {name: first[name] + rest.get(name, []) for name in candidates}


def _ratios(samples: dict[str, list[float]], over: str) -> list[float]:
    """Each round's ratio of LayerwiseTrainer to ``over``, so that drift in the machine's speed hits both alike."""
    return [mine / base for mine, base in zip(samples["layerwise"], samples[over], strict=True)]


def _ratio_text(ratios: list[float]) -> str:
    return f"x{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def _milliseconds(samples: list[float]) -> str:
    return Spread.of(samples).text(unit="ms", scale=1e3) if samples else "-"


def _row(case: Case, model: nn.Module, samples: dict[str, list[float]]) -> dict[str, Any]:
    stock = samples.get("stock", [])
    ours = statistics.median(samples["layerwise"])
    return {
        "spec": case.label,
        "tensors": f"{sum(1 for _ in model.parameters()):,}",
        FLOOR_LABEL: _milliseconds(samples["floor"]),
        "LayerwiseTrainer() + create_optimizer": _milliseconds(samples["layerwise"]),
        "against the floor": _ratio_text(_ratios(samples, "floor")),
        "floor with the plan's groups": _milliseconds(samples["floor with the plan's groups"]),
        "against it": _ratio_text(_ratios(samples, "floor with the plan's groups")),
        "stock Trainer() + create_optimizer": _milliseconds(stock),
        "speed-up over stock": f"{statistics.median(stock) / ours:.1f}x" if stock else "-",
        "rounds (stock)": f"{len(samples['layerwise'])} ({len(stock)})",
    }


def run(settings: Settings) -> BenchmarkResult:
    sizes = settings.pick(smoke=[200, 1000], quick=[1000, 5000, 20000, 50000], full=[1000, 5000, 20000, 50000])
    repeats = settings.pick(smoke=2, quick=7, full=21)
    stock_repeats_for = settings.pick(
        smoke=lambda size: 1, quick=lambda size: 1 if size >= 50000 else 3, full=lambda size: 5
    )
    rows: list[dict[str, Any]] = []
    medians: dict[str, list[float]] = {"stock": [], "layerwise": []}
    floor_ratios: dict[str, list[float]] = {case.label: [] for case in CASES}
    with tempfile.TemporaryDirectory() as output_dir:
        args = UnplacedArguments(output_dir=output_dir, report_to=[], use_cpu=True)
        for case in CASES:
            for size in sizes:
                with torch.device("meta"):
                    model = case.model(size)
                samples = _measure(_candidates(model, args, case), repeats, stock_repeats_for(size))
                rows.append(_row(case, model, samples))
                floor_ratios[case.label].append(statistics.median(_ratios(samples, "floor")))
                if case.with_stock:
                    medians["stock"].append(statistics.median(samples["stock"]))
                    medians["layerwise"].append(statistics.median(samples["layerwise"]))
    recipe, llrd = (case.label for case in CASES)
    our_exponent = fitted_exponent(sizes, medians["layerwise"])
    stock_exponent = fitted_exponent(sizes, medians["stock"])
    return BenchmarkResult(
        name="group_building",
        title="1. Building the groups: trainer construction plus create_optimizer against the number of tensors",
        columns=list(rows[0]),
        rows=rows,
        targets=[
            Target("LayerwiseTrainer growth exponent (recipe)", our_exponent, "<=", 1.2),
            Target(
                f"speed-up at {sizes[-1]:,} tensors, end to end (recipe)",
                medians["stock"][-1] / medians["layerwise"][-1],
                ">=",
                30.0,
            ),
            Target(
                f"times the floor at {sizes[-1]:,} tensors (recipe; median of the rounds' ratios)",
                floor_ratios[recipe][-1],
                "<=",
                FLOOR_RATIO_TARGET,
            ),
        ],
        notes=[
            f"Fitted growth exponents (log time against log tensors, recipe): stock {stock_exponent:.2f}, "
            f"LayerwiseTrainer {our_exponent:.2f}. recipe: frozen embeddings, body at 0.1x, head at 10x, on a "
            "model of blocks of 10 tensors (4 optimizer groups). LLRD: layer_decay 0.9 with frozen embeddings "
            "and a 10x head, on a model of 24 blocks of many sub-blocks (50 optimizer groups; resolving it runs "
            "detect_layers); the stock Trainer has no layer decay. Models on the meta device, which the "
            "Trainer does not place. Every timing runs from nothing to an optimizer: the trainer's "
            "construction (for LayerwiseTrainer, resolving the spec) plus create_optimizer (mapping the plan "
            "onto the model, building the torch optimizer). The floor is what any name-based grouping pays: "
            "Trainer(...), one pass over named_parameters() and one torch AdamW over those parameters; the "
            "floor with the plan's groups builds that AdamW the usual way over the plan's param groups, made "
            "beforehand, which is what torch charges for those groups (LayerwiseTrainer skips torch's re-hashing "
            "of the earlier groups). The candidates alternate within every round, each "
            "after a garbage collection; each ratio is the median of the rounds' ratios, with their range. "
            f"LLRD at {sizes[-1]:,} tensors: x{floor_ratios[llrd][-1]:.2f} the floor.",
        ],
    )
