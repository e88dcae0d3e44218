"""Benchmark 6: a group that starts later costs a frozen group's price until it starts, then a trained one's.

A group with ``start: N`` is in the optimizer from step 0 at rate 0 with ``requires_grad=False``, so its
steps before N should cost what a frozen body costs today, and starting it should add nothing but its new
gradients (and the Adam moments it then gets). Four runs of the same model, data and arguments, alternated
within every round:

- the baseline for the steps before the start: the stock Trainer with the body frozen by hand
  (``requires_grad=False`` before the Trainer is built, so its optimizer holds the head only);
- `LayerwiseTrainer` with the body ``freeze: true``;
- `LayerwiseTrainer` with the body ``start: N``: its steps before N are timed against the baseline above,
  its steps from N on against the next run;
- the baseline for the steps after the start: the stock Trainer with everything trainable.

Ratios are taken within each round (so drift in the machine's speed hits both sides alike) and reported as
the median with the min-max range over the rounds. Optimizer state and gradients are counted in bytes, for
the staged run just before its start and at its end.
"""

from __future__ import annotations

import inspect
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from layerwise_trainer import LayerwiseTrainer

from .common import BenchmarkResult, Settings, Spread, Target, interleaved, timed
from .models import TokenData, bert
from .training_runs import RunMeasurement, measure_run, optimizer_state_bytes

BODY, HEAD = "bert.", "classifier."
FROZEN_BY_HAND = "stock Trainer, body frozen by hand"
FREEZE = "LayerwiseTrainer, body freeze: true"
STAGED = "LayerwiseTrainer, body start: N"
EVERYTHING = "stock Trainer, everything trains"


@dataclass(frozen=True)
class Sizes:
    """One scale's model and step counts.

    ``warmup`` untimed steps, then ``before`` timed steps; the staged body starts after them (``start``
    optimizer steps have passed) and trains ``after`` steps; the run with everything trainable times ``full``.
    """

    model: str
    length: int
    batch: int
    warmup: int
    before: int
    after: int
    full: int
    repeats: int

    @property
    def start(self) -> int:
        return self.warmup + self.before + 1


def _sizes(settings: Settings) -> Sizes:
    model = settings.pick("tiny", "small", "base" if settings.device == "cuda" else "small")
    length, batch = settings.pick(smoke=(16, 4), quick=(128, 16), full=(128, 16))
    if settings.device == "cuda":
        batch = settings.pick(smoke=4, quick=32, full=32)
    warmup, before, after, full, repeats = settings.pick(
        smoke=(1, 2, 2, 2, 1), quick=(2, 6, 4, 4, 2), full=(2, 16, 10, 10, 5)
    )
    return Sizes(model, length, batch, warmup, before, after, full, repeats)


class StartSnapshot(TrainerCallback):
    """At the last optimizer step before the staged group starts: gradient and optimizer-state bytes, and
    the optimizer's class and settings (to time what creating the group's optimizer state costs)."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.gradient_bytes = self.optimizer_state_bytes = -1
        self.optimizer_class: type[torch.optim.Optimizer] = torch.optim.AdamW
        self.optimizer_defaults: dict[str, Any] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs) -> None:
        if state.global_step == self.start - 1:
            self.gradient_bytes = _gradient_bytes(model)

    def on_step_end(self, args, state, control, optimizer=None, **kwargs) -> None:
        if state.global_step == self.start:
            self.optimizer_state_bytes = optimizer_state_bytes(optimizer)
            inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch optimizer
            self.optimizer_class, self.optimizer_defaults = type(inner), dict(inner.defaults)


def _gradient_bytes(model: torch.nn.Module) -> int:
    return sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)


def _builders(sizes: Sizes, device: str, data: TokenData, snapshots: list[StartSnapshot]):
    def model() -> torch.nn.Module:
        return bert(sizes.model).to(device)

    def frozen_by_hand(args: TrainingArguments) -> Trainer:
        built = model()
        for name, parameter in built.named_parameters():
            parameter.requires_grad_(not name.startswith(BODY))
        return Trainer(model=built, args=args, train_dataset=data)

    def layerwise(body: dict[str, Any]) -> Callable[[TrainingArguments], Trainer]:
        spec = [{"name": "body", "match": BODY + "*", **body}, {"name": "head", "match": HEAD + "*"}]
        return lambda args: LayerwiseTrainer(model=model(), args=args, train_dataset=data, param_groups=spec)

    def staged(args: TrainingArguments) -> Trainer:
        trainer = layerwise({"start": sizes.start})(args)
        snapshots.append(StartSnapshot(sizes.start))
        trainer.add_callback(snapshots[-1])
        return trainer

    def everything(args: TrainingArguments) -> Trainer:
        return Trainer(model=model(), args=args, train_dataset=data)

    return frozen_by_hand, layerwise({"freeze": True}), staged, everything


@dataclass
class Measured:
    """Every run of one candidate, in round order."""

    runs: list[RunMeasurement]

    def seconds(self, steps: slice) -> list[float]:
        """Per round: the median of these timed steps (indexes into each run's ``step_seconds``)."""
        return [statistics.median(run.step_seconds[steps]) for run in self.runs]

    @property
    def memory(self) -> tuple[int, int]:
        """Optimizer-state and gradient bytes at the end of the last run."""
        return self.runs[-1].optimizer_state_bytes, self.runs[-1].gradient_bytes


def _measure(settings: Settings, sizes: Sizes) -> tuple[dict[str, Measured], list[StartSnapshot]]:
    data = TokenData(sizes.batch * (sizes.start + sizes.after + 2), sizes.length)
    arguments: dict[str, Any] = dict(per_device_train_batch_size=sizes.batch, seed=0)
    if settings.device == "cuda":
        arguments.update(bf16=True)
    snapshots: list[StartSnapshot] = []
    frozen_by_hand, freeze, staged, everything = _builders(sizes, settings.device, data, snapshots)
    # (build, timed steps, untimed warm-up steps): measure_run trains warm-up + timed + 1 steps. The staged
    # run is timed from its second step, so that each step can be told to be before or after the start.
    plans = {
        FROZEN_BY_HAND: (frozen_by_hand, sizes.before, sizes.warmup),
        FREEZE: (freeze, sizes.before, sizes.warmup),
        STAGED: (staged, sizes.start + sizes.after - 1, 0),
        EVERYTHING: (everything, sizes.full, sizes.warmup),
    }
    measured = {name: Measured([]) for name in plans}

    def candidate(name: str) -> Callable[[], float]:
        build, steps, warmup = plans[name]

        def once() -> float:
            measured[name].runs.append(measure_run(build, steps, warmup, settings.device, **arguments))
            return measured[name].runs[-1].median_step

        return once

    interleaved({name: candidate(name) for name in plans}, sizes.repeats)
    return measured, snapshots


def _ratios(numerators: Sequence[float], denominators: Sequence[float]) -> Spread:
    """Ratios taken within each round, then their median and range."""
    return Spread.of([top / bottom for top, bottom in zip(numerators, denominators, strict=True)])


@dataclass(frozen=True)
class Phase:
    """One line of the table: some steps of one run, timed per round, and the memory they held."""

    run: str
    steps: tuple[int, int]
    seconds: list[float]
    memory: tuple[int, int]
    baseline: Phase | None = None

    @property
    def ratio(self) -> Spread:
        return _ratios(self.seconds, self.baseline.seconds) if self.baseline else Spread(1.0, 1.0, 1.0)

    def row(self) -> dict[str, str]:
        first, last = self.steps
        ratio = "baseline"
        if self.baseline is not None:
            spread, name = self.ratio, self.baseline.run.split(", ", 1)[1]
            ratio = f"x{spread.median:.3f} ({spread.low:.3f}-{spread.high:.3f}) of {name}"
        return {
            "run": self.run,
            "timed steps": str(first) if first == last else f"{first}-{last}",
            "step time": Spread.of(self.seconds).text(unit="ms", scale=1e3),
            "ratio": ratio,
            "optimizer state": _bytes_text(self.memory[0]),
            "gradients": _bytes_text(self.memory[1]),
        }


def _phases(sizes: Sizes, measured: dict[str, Measured], snapshot: StartSnapshot) -> list[Phase]:
    """The six lines: two baselines, freeze: true, and the staged run before, at and after its start."""
    # measure_run's step_seconds[i] is the time of optimizer step i + warmup + 2 (steps counted from 1);
    # the staged run has no untimed warm-up, so its step s is at index s - 2.
    start, every, staged = sizes.start, slice(None), measured[STAGED]
    label = STAGED.replace("N", str(start))
    frozen_steps = (sizes.warmup + 2, start)
    full_steps = (sizes.warmup + 2, sizes.warmup + sizes.full + 1)
    hand = Phase(FROZEN_BY_HAND, frozen_steps, measured[FROZEN_BY_HAND].seconds(every), measured[FROZEN_BY_HAND].memory)
    everything = Phase(EVERYTHING, full_steps, measured[EVERYTHING].seconds(every), measured[EVERYTHING].memory)
    before = (snapshot.optimizer_state_bytes, snapshot.gradient_bytes)
    return [
        hand,
        Phase(FREEZE, frozen_steps, measured[FREEZE].seconds(every), measured[FREEZE].memory, hand),
        Phase(
            f"{label}, before the start", frozen_steps, staged.seconds(slice(sizes.warmup, start - 1)), before, hand
        ),
        Phase(
            f"{label}, first step after it", (start + 1, start + 1), staged.seconds(slice(start - 1, start)),
            staged.memory, everything,
        ),
        Phase(
            f"{label}, after it", (start + 2, start + sizes.after), staged.seconds(slice(start, None)),
            staged.memory, everything,
        ),
        everything,
    ]  # fmt: skip


def _targets(phases: list[Phase], state_creation: float) -> list[Target]:
    """Before the start as fast as a frozen body; from it on, a trained body's cost and nothing more."""
    _, freeze, before, first, after, everything = phases
    beyond = [(seconds - state_creation) for seconds in first.seconds]
    return [
        Target("steps before the start / body frozen by hand, median ratio", before.ratio.median, "<=", 1.05),
        Target(
            "first step after the start, less creating the body's optimizer state, / everything trains",
            _ratios(beyond, everything.seconds).median, "<=", 1.10,
        ),
        Target("steps after the start / everything trains, median ratio", after.ratio.median, "<=", 1.05),
        Target(
            "optimizer state and gradients before the start = freeze: true (1 = yes)",
            float(before.memory == freeze.memory), ">=", 1,
        ),
        Target(
            "optimizer state and gradients after the start = everything trains (1 = yes)",
            float(after.memory == everything.memory), ">=", 1,
        ),
    ]  # fmt: skip


def _state_creation_seconds(model: torch.nn.Module, snapshot: StartSnapshot, repeats: int) -> Spread:
    """The one-off part of the first step after the start: creating the body's optimizer state.

    A fresh optimizer of the run's class and settings (at rate 0) over the body, with zero gradients: its
    first step creates the state, its second only updates it; the difference is what creating it costs.
    """
    body = [parameter for name, parameter in model.named_parameters() if name.startswith(BODY)]
    for parameter in body:
        parameter.grad = torch.zeros_like(parameter)
    accepted = inspect.signature(snapshot.optimizer_class).parameters
    settings = {key: value for key, value in snapshot.optimizer_defaults.items() if key in accepted}

    def step(optimizer: torch.optim.Optimizer) -> float:
        def once() -> None:
            optimizer.step()
            if body[0].is_cuda:
                torch.cuda.synchronize()

        return timed(once)

    def first_minus_second() -> float:
        optimizer = snapshot.optimizer_class(body, **{**settings, "lr": 0.0})
        return step(optimizer) - step(optimizer)

    return Spread.of([first_minus_second() for _ in range(max(repeats, 3))])


def _bytes_text(count: int) -> str:
    return f"{count:,} bytes ({count / 2**20:,.1f} MiB)"


def run(settings: Settings) -> BenchmarkResult:
    sizes = _sizes(settings)
    measured, snapshots = _measure(settings, sizes)
    phases = _phases(sizes, measured, snapshots[-1])
    first, everything = phases[3], phases[-1]
    extra = statistics.median(a - b for a, b in zip(first.seconds, everything.seconds, strict=True))
    creation = _state_creation_seconds(measured[STAGED].runs[-1].model, snapshots[-1], sizes.repeats)
    return BenchmarkResult(
        name="staged_start",
        title=(
            "6. A group that starts later: before its start against a frozen body, after it against full training "
            f"(BERT {sizes.model}, seq {sizes.length}, batch {sizes.batch}, {settings.device})"
        ),
        columns=["run", "timed steps", "step time", "ratio", "optimizer state", "gradients"],
        rows=[phase.row() for phase in phases],
        targets=_targets(phases, creation.median),
        notes=[
            f"The staged body starts once {sizes.start} optimizer steps have passed: step {sizes.start + 1} is "
            f"its first with gradients. Untimed warm-up: steps 1-{sizes.warmup + 1}. {sizes.repeats} rounds, the "
            "four runs alternated within each; step time is the median over the rounds of each run's median "
            "step (min-max in brackets), and each ratio is taken within a round. Memory of the staged run: "
            f"before the start at step {sizes.start}, after it at step {sizes.start + sizes.after}.",
            f"The first step after the start took {extra * 1e3:+.1f} ms against a step with everything trainable "
            "(median of the rounds' differences). It also creates the body's optimizer state, as the stock "
            f"Trainer does at its first step: {snapshots[-1].optimizer_class.__name__} "
            f"({_bytes_text(first.memory[0] - phases[2].memory[0])} more) takes {creation.text('ms', 1e3)} to "
            "create it here (a fresh optimizer's first step over the body less its second).",
        ],
    )
