"""Benchmark 1b: what stripped implementations of benchmark 1's design cost, against the same floor.

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
- **one pass and the check**: the same, then what ``create_optimizer`` checks before it freezes anything: that
  the optimizer and its arguments are the ones the spec was resolved with, a second walk for the parameter
  objects, compared by identity, and the trained parameters' ``requires_grad`` flags read again.

Both must build the same param groups as ``LayerwiseTrainer`` (checked before anything is timed), and they use
the library's own walk, pattern matching and optimizer construction, so that they differ from it only in what
they leave out.

A third candidate is the whole library with the first promise given up: `LateResolvingTrainer` resolves its
spec in ``create_optimizer`` alone, so that there is nothing to check, and a bad spec fails only when the
optimizer is built.
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
from layerwise_trainer.core.spec import DEFAULT_GROUP_NAME
from layerwise_trainer.core.weight_decay import STOCK_DECAY_RULE

from .common import BenchmarkResult, Settings, Spread, Target, interleaved
from .group_building import FLOOR_LABEL, FLOOR_RATIO_TARGET, SPEC, UnplacedArguments, floor, settled
from .models import WideModel

_requires_grad = operator.attrgetter("requires_grad")
ONE_PASS, WITH_CHECK, LAYERWISE = "one pass", "one pass and the check", "LayerwiseTrainer() + create_optimizer"
LATE = "LayerwiseTrainer resolving in create_optimizer alone"


class LateResolvingTrainer(LayerwiseTrainer):
    """``LayerwiseTrainer`` with its spec resolved only in ``create_optimizer``: one resolution and no check.

    For comparison only. A bad spec, such as a pattern that matches no parameter, is refused when the optimizer
    is built (at ``train()``) instead of when the trainer is built.
    """

    _building_optimizer = False

    def _resolve(self, target: nn.Module, inputs: Any = None) -> Any:
        if not self._building_optimizer:
            return None  # construction: leave the plan to create_optimizer, which resolves when it has none
        return super()._resolve(target, inputs)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        self._building_optimizer = True
        return super().create_optimizer(model)


@dataclass(frozen=True)
class Sketch:
    """What `stripped_resolve` gives.

    Args:
        parameters: Every parameter the walk found, in its order (for the check).
        groups: The optimizer's param groups.
        frozen: The frozen group's trainable parameters, frozen when the optimizer is built.
        optimizer: The optimizer class and keyword arguments the spec was resolved with.
    """

    parameters: list[nn.Parameter]
    groups: list[dict[str, Any]]
    frozen: list[nn.Parameter]
    optimizer: tuple[Any, dict[str, Any]]


def stripped_resolve(model: nn.Module, args: TrainingArguments) -> Sketch:
    """``Trainer()`` and the recipe resolved against ``model`` from one walk: what building the trainer does.

    Args:
        model: A model with no tied weights.
        args: The training arguments (their optimizer, rate and weight decay).

    Returns:
        The `Sketch`.

    Raises:
        ValueError: The model has tied weights, which this sketch does not handle.
    """
    Trainer(model=model, args=args)
    optimizer = Trainer.get_optimizer_cls_and_kwargs(args, model)
    with gc_paused():
        walk = walk_model(model, STOCK_DECAY_RULE)
        parameters, decays = walk.parameters, walk.kept
        assert decays is not None  # walked with a rule
        if len(set(map(id, parameters))) != len(parameters):
            raise ValueError("tied weights: this stripped implementation does not handle them")
        trains = list(map(_requires_grad, parameters))
        groups: list[dict[str, Any]] = []
        frozen: list[nn.Parameter] = []
        for settings, indexes in zip([*SPEC, {"name": DEFAULT_GROUP_NAME}], _members(walk.names), strict=True):
            trained = list(compress(indexes, map(trains.__getitem__, indexes)))
            if settings.get("freeze"):
                frozen += map(parameters.__getitem__, trained)
            else:
                groups += _halves(settings, trained, parameters, decays, args)
    return Sketch(parameters, groups, frozen, optimizer)


def _members(names: list[str]) -> list[list[int]]:
    """The positions of the names each spec group takes (first match wins); the last list: matched by none."""
    positions = FirstMatch([compile_pattern(group["match"]) for group in SPEC]).first_of_each(names)
    members: list[list[int]] = [[] for _ in range(len(SPEC) + 1)]
    for index, position in enumerate(positions):
        members[len(SPEC) if position is None else position].append(index)
    return members


def _halves(
    settings: dict[str, Any], trained: list[int], parameters: list[nn.Parameter], decays: list[bool], args: Any
) -> list[dict[str, Any]]:
    """A group's param groups: the parameters weight decay applies to, then the others (each when not empty)."""
    lr = args.learning_rate * settings.get("lr_scale", 1.0)
    decayed = list(map(decays.__getitem__, trained))
    halves = []
    for weight_decay, chosen in ((args.weight_decay, decayed), (0.0, list(map(operator.not_, decayed)))):
        params = list(map(parameters.__getitem__, compress(trained, chosen)))
        if params:
            halves.append({"params": params, "name": settings["name"], "lr": lr, "weight_decay": weight_decay})
    return halves


def stripped_create_optimizer(
    sketch: Sketch, model: nn.Module, args: TrainingArguments, *, check: bool
) -> torch.optim.Optimizer:
    """The optimizer over the sketch's groups, after freezing its frozen group: what ``create_optimizer`` does.

    Args:
        sketch: What `stripped_resolve` gave for ``model``.
        model: The model.
        args: The training arguments (their optimizer and its keyword arguments).
        check: Whether to check first, as ``create_optimizer`` does, that the optimizer and its arguments are
            the sketch's, that the model still holds the sketch's parameter objects, and that its trained
            parameters still require gradients.

    Returns:
        The optimizer.

    Raises:
        ValueError: With ``check``, the arguments or the model changed since `stripped_resolve`.
    """
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    if check:
        _check_unchanged(sketch, model, (optimizer_cls, optimizer_kwargs))
    with gc_paused():
        for parameter in sketch.frozen:
            parameter.requires_grad_(False)
        return build_optimizer(optimizer_cls, sketch.groups, optimizer_kwargs)


def _check_unchanged(sketch: Sketch, model: nn.Module, optimizer: tuple[Any, dict[str, Any]]) -> None:
    if optimizer != sketch.optimizer:
        raise ValueError("the optimizer or its arguments changed since the spec was resolved")
    held, resolved = parameter_objects(model), sketch.parameters
    if held is None or len(held) != len(resolved) or not all(map(operator.is_, held, resolved)):
        raise ValueError("the model holds other parameters than when the spec was resolved")
    if not all(map(_requires_grad, chain.from_iterable(group["params"] for group in sketch.groups))):
        raise ValueError("a trained parameter no longer requires gradients")


def one_pass(model: nn.Module, args: TrainingArguments, *, check: bool = False) -> torch.optim.Optimizer:
    """`stripped_resolve`, then `stripped_create_optimizer`: from nothing to the recipe's optimizer."""
    return stripped_create_optimizer(stripped_resolve(model, args), model, args, check=check)


def layout(optimizer: torch.optim.Optimizer) -> list[tuple[str, float, float, list[int]]]:
    """Each param group's name, rate, weight decay and parameters (by identity), for comparing optimizers."""
    return [
        (group["name"], group["lr"], group["weight_decay"], list(map(id, group["params"])))
        for group in optimizer.param_groups
    ]


def check_same_groups(model: nn.Module, args: TrainingArguments) -> None:
    """Refuse to time candidates that build other param groups than ``LayerwiseTrainer``.

    Raises:
        RuntimeError: One of them builds other groups.
    """
    expected = layout(LayerwiseTrainer(model=model, args=args, param_groups=SPEC).create_optimizer())
    for check in (False, True):
        unfreeze_embeddings(model)
        if layout(one_pass(model, args, check=check)) != expected:
            raise RuntimeError(f"the stripped implementation (check={check}) builds other param groups")
    unfreeze_embeddings(model)
    if layout(LateResolvingTrainer(model=model, args=args, param_groups=SPEC).create_optimizer()) != expected:
        raise RuntimeError("the trainer resolving in create_optimizer alone builds other param groups")


def unfreeze_embeddings(model: nn.Module) -> None:
    """Give back what a stripped implementation froze, untimed (one tensor).

    ``LayerwiseTrainer`` gives back what it froze itself when it is built, and takes the embeddings this leaves
    trainable for its own: the candidates can run in any order.
    """
    for parameter in model.embeddings.parameters():
        parameter.requires_grad_(True)


def run(settings: Settings) -> BenchmarkResult:
    size = settings.pick(smoke=1000, quick=50000, full=50000)
    repeats = settings.pick(smoke=2, quick=11, full=21)
    with tempfile.TemporaryDirectory() as output_dir:
        args = UnplacedArguments(output_dir=output_dir, report_to=[], use_cpu=True)
        with torch.device("meta"):
            model = WideModel(size)
        check_same_groups(model, args)
        candidates = {
            FLOOR_LABEL: settled(lambda _: floor(model, args)),
            ONE_PASS: settled(lambda _: one_pass(model, args), prepare=lambda: unfreeze_embeddings(model)),
            WITH_CHECK: settled(
                lambda _: one_pass(model, args, check=True), prepare=lambda: unfreeze_embeddings(model)
            ),
            LAYERWISE: settled(
                lambda _: LayerwiseTrainer(model=model, args=args, param_groups=SPEC).create_optimizer()
            ),
            LATE: settled(lambda _: LateResolvingTrainer(model=model, args=args, param_groups=SPEC).create_optimizer()),
        }
        for candidate in candidates.values():
            candidate()  # untimed: first-use caches
        samples = interleaved(candidates, repeats)
    ratios = {name: _per_round(values, samples[FLOOR_LABEL]) for name, values in samples.items()}
    medians = {name: statistics.median(values) for name, values in ratios.items()}
    tensors = sum(1 for _ in model.parameters())
    return BenchmarkResult(
        name="group_building_bound",
        title="1b. What stripped implementations of this design cost, against the floor",
        columns=["candidate", "time", "against the floor"],
        rows=[
            {
                "candidate": name,
                "time": Spread.of(values).text(unit="ms", scale=1e3),
                "against the floor": f"x{medians[name]:.2f} ({min(ratios[name]):.2f}-{max(ratios[name]):.2f})",
            }
            for name, values in samples.items()
        ],
        targets=[
            Target(f"{name}, times the floor at {tensors:,} tensors", medians[name], "<=", FLOOR_RATIO_TARGET)
            for name in (ONE_PASS, WITH_CHECK, LATE)
        ],
        notes=[
            f"The recipe of benchmark 1 on its model of {tensors:,} tensors (meta device, not placed), "
            f"{repeats} alternated rounds, each candidate after a garbage collection; each ratio is the median of "
            "the rounds' ratios, with their range. The stripped implementations do only what the recipe needs "
            "(see the module docstring); they and the trainer that resolves in create_optimizer alone build the "
            "same param groups as LayerwiseTrainer, checked before timing. Their targets are benchmark 1's, to "
            "show how far each design is from it."
        ],
    )


def _per_round(values: list[float], floor_values: list[float]) -> list[float]:
    return [value / base for value, base in zip(values, floor_values, strict=True)]
