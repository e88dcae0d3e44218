"""Benchmark 1b: the least benchmark 1's design costs, in stripped implementations, against the same floor.

``LayerwiseTrainer`` makes two promises that each cost a pass over the model. It resolves its spec when it is
built, so that a bad spec fails before any data is prepared; and ``create_optimizer`` checks that the model
still holds the plan's parameter objects, with the same ``requires_grad`` flags, so that a model changed in
between (new embeddings, an adapter, parameters frozen by hand) is resolved again instead of trained wrong.

Two stripped implementations of benchmark 1's recipe (frozen embeddings, a body at 0.1x, a head at 10x) show
what that design costs with nothing else: none of the work a full implementation does for other specs (tied
weights, rows, layer decay, Muon, per-group schedules) and no plan to report, save or map onto a wrapped
model.

- **one pass**: ``Trainer()``; one walk of the modules that names every parameter and decides the stock
  weight-decay rule; the ``requires_grad`` flags; a check for tied weights; the first pattern that matches
  each name; the split by group and by decay; the frozen group frozen; one ``AdamW`` over the groups.
- **one pass and the check**: the same, then what ``create_optimizer`` checks: a second walk for the
  parameter objects, compared by identity, and the trained parameters' ``requires_grad`` flags read again.

Both must build the same param groups as ``LayerwiseTrainer`` (checked before anything is timed), and they use
the library's own walk, pattern matching and optimizer construction, so that they differ from it only in what
they leave out.
"""

from __future__ import annotations

import operator
import statistics
import tempfile
from dataclasses import dataclass
from itertools import chain, compress
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from layerwise_trainer import LayerwiseTrainer
from layerwise_trainer.core.disjoint_groups import build_optimizer
from layerwise_trainer.core.gc_pause import gc_paused
from layerwise_trainer.core.name_patterns import FirstMatch, compile_pattern
from layerwise_trainer.core.parameter_names import parameter_objects, walk_model
from layerwise_trainer.core.weight_decay import STOCK_DECAY_RULE

from .common import BenchmarkResult, Settings, Spread, Target, interleaved
from .group_building import FLOOR_RATIO_TARGET, SPEC, UnplacedArguments, floor, settled
from .models import WideModel

_requires_grad = operator.attrgetter("requires_grad")
FLOOR = "floor: Trainer() + named_parameters() + AdamW"


@dataclass(frozen=True)
class Sketch:
    """What `resolve` gives: the optimizer's param groups, the frozen group's parameters (frozen when the
    optimizer is built) and every parameter the walk found (for the check).

    Args:
        parameters: Every parameter the walk found, in its order.
        groups: The optimizer's param groups.
        frozen: The frozen group's trainable parameters.
    """

    parameters: list[nn.Parameter]
    groups: list[dict[str, Any]]
    frozen: list[nn.Parameter]


def resolve(model: nn.Module, args: TrainingArguments) -> Sketch:
    """``Trainer()`` and the recipe resolved against ``model`` from one walk: what building the trainer does.

    Raises:
        ValueError: The model has tied weights, which this sketch does not handle.
    """
    Trainer(model=model, args=args)
    with gc_paused():
        walk = walk_model(model, STOCK_DECAY_RULE)
        names, parameters, decays = walk.names, walk.parameters, walk.kept
        assert decays is not None  # walked with a rule
        if len(set(map(id, parameters))) != len(parameters):
            raise ValueError("tied weights: this stripped implementation does not handle them")
        trains = list(map(_requires_grad, parameters))
        positions = FirstMatch([compile_pattern(group["match"]) for group in SPEC]).first_of_each(names)
        members: list[list[int]] = [[] for _ in range(len(SPEC) + 1)]  # the last: matched by no group
        for index, position in enumerate(positions):
            members[len(SPEC) if position is None else position].append(index)
        groups: list[dict[str, Any]] = []
        frozen: list[nn.Parameter] = []
        for settings, indexes in zip([*SPEC, {"name": "default"}], members, strict=True):
            trained = list(compress(indexes, map(trains.__getitem__, indexes)))
            if settings.get("freeze"):
                frozen += map(parameters.__getitem__, trained)
                continue
            lr = args.learning_rate * settings.get("lr_scale", 1.0)
            decayed = list(map(decays.__getitem__, trained))
            for weight_decay, half in ((args.weight_decay, decayed), (0.0, list(map(operator.not_, decayed)))):
                chosen = list(map(parameters.__getitem__, compress(trained, half)))
                if chosen:
                    groups.append({"params": chosen, "name": settings["name"], "lr": lr, "weight_decay": weight_decay})
    return Sketch(parameters, groups, frozen)


def create_optimizer(
    sketch: Sketch, model: nn.Module, args: TrainingArguments, *, check: bool
) -> torch.optim.Optimizer:
    """The optimizer over the sketch's groups, after freezing its frozen group: what ``create_optimizer`` does.

    Args:
        sketch: What `resolve` gave for ``model``.
        model: The model.
        args: The training arguments (their optimizer and its keyword arguments).
        check: Whether to walk the model again first and refuse one that no longer holds the sketch's parameter
            objects, or whose trained parameters no longer require gradients.

    Raises:
        ValueError: With ``check``, the model changed since `resolve`.
    """
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    with gc_paused():
        for parameter in sketch.frozen:
            parameter.requires_grad_(False)
        if check:
            held, resolved = parameter_objects(model), sketch.parameters
            if held is None or len(held) != len(resolved) or not all(map(operator.is_, held, resolved)):
                raise ValueError("the model holds other parameters than when the spec was resolved")
            if not all(map(_requires_grad, chain.from_iterable(group["params"] for group in sketch.groups))):
                raise ValueError("a trained parameter no longer requires gradients")
        return build_optimizer(optimizer_cls, sketch.groups, optimizer_kwargs)


def one_pass(model: nn.Module, args: TrainingArguments, *, check: bool = False) -> torch.optim.Optimizer:
    """`resolve` then `create_optimizer`: from nothing to the recipe's optimizer, as a user pays it."""
    return create_optimizer(resolve(model, args), model, args, check=check)


def _layout(optimizer: torch.optim.Optimizer) -> list[tuple[float, float, list[int]]]:
    return [(group["lr"], group["weight_decay"], list(map(id, group["params"]))) for group in optimizer.param_groups]


def _check_same_groups(model: nn.Module, args: TrainingArguments) -> None:
    """Refuse to time stripped implementations that build other groups than ``LayerwiseTrainer``."""
    expected = _layout(LayerwiseTrainer(model=model, args=args, param_groups=SPEC).create_optimizer())
    for check in (False, True):
        _unfreeze(model)
        if _layout(one_pass(model, args, check=check)) != expected:
            raise AssertionError(f"the stripped implementation (check={check}) builds other groups")


def _unfreeze(model: nn.Module) -> None:
    """Give back what a stripped implementation froze (``LayerwiseTrainer`` gives back its own when built)."""
    for parameter in model.embeddings.parameters():
        parameter.requires_grad_(True)


def run(settings: Settings) -> BenchmarkResult:
    size = settings.pick(smoke=1000, quick=50000, full=50000)
    repeats = settings.pick(smoke=2, quick=11, full=21)
    with tempfile.TemporaryDirectory() as output_dir:
        args = UnplacedArguments(output_dir=output_dir, report_to=[], use_cpu=True)
        with torch.device("meta"):
            model = WideModel(size)
        _check_same_groups(model, args)
        candidates = {
            FLOOR: settled(lambda _: floor(model, args)),
            "one pass": settled(lambda _: one_pass(model, args), prepare=lambda: _unfreeze(model)),
            "one pass and the check": settled(
                lambda _: one_pass(model, args, check=True), prepare=lambda: _unfreeze(model)
            ),
            "LayerwiseTrainer() + create_optimizer": settled(
                lambda _: LayerwiseTrainer(model=model, args=args, param_groups=SPEC).create_optimizer()
            ),
        }
        for candidate in candidates.values():
            candidate()  # untimed: first-use caches
        samples = interleaved(candidates, repeats)
    floor_samples = samples[FLOOR]
    rows, ratios = [], {}
    for name, values in samples.items():
        per_round = [value / base for value, base in zip(values, floor_samples, strict=True)]
        ratios[name] = statistics.median(per_round)
        rows.append({
            "candidate": name,
            "time": Spread.of(values).text(unit="ms", scale=1e3),
            "against the floor": f"x{ratios[name]:.2f} ({min(per_round):.2f}-{max(per_round):.2f})",
        })  # fmt: skip
    tensors = sum(1 for _ in model.parameters())
    return BenchmarkResult(
        name="group_building_bound",
        title="1b. The least this design of group building costs: stripped implementations against the floor",
        columns=["candidate", "time", "against the floor"],
        rows=rows,
        targets=[
            Target(f"one pass, times the floor at {tensors:,} tensors", ratios["one pass"], "<=", FLOOR_RATIO_TARGET),
            Target(
                f"one pass and the check, times the floor at {tensors:,} tensors",
                ratios["one pass and the check"],
                "<=",
                FLOOR_RATIO_TARGET,
            ),
        ],
        notes=[
            f"The recipe of benchmark 1 on its model of {tensors:,} tensors (meta device, not placed), "
            f"{repeats} alternated rounds, each candidate after a garbage collection; each ratio is the median of "
            "the rounds' ratios, with their range. The stripped implementations do only what the recipe needs "
            "(see the module docstring) and build the same param groups as LayerwiseTrainer, checked before "
            "timing. Their targets are benchmark 1's: whether a design can reach 1.3x the floor at all."
        ],
    )
