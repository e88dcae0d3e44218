"""Timed windows of real Trainer runs on one device, the memory each run holds, and the time they may take.

The GPU suite compares two (or more) ways of training the same model in one process. A large model leaves
room for one set of weights, gradients and optimizer state at a time, so the sides alternate run by run
(A B, B A, A B, ...): every run builds its model afresh on the device, trains a few untimed warm-up steps
(the first allocates the optimizer state and the allocator's blocks), then one or more timed windows of
whole optimizer steps. Each window opens and closes with ``torch.cuda.synchronize()``; the allocator's peak
is reset when a window opens, so a window's peak is that configuration's steady state. Between runs all a
run made is released and the allocator's cache emptied; the bytes still allocated afterwards are recorded,
because a run that leaked would inflate the next run's peak or run it out of memory.

A window from step ``first`` to step ``last`` is timed from the end of step ``first - 1`` to the end of step
``last``, both taken in ``on_step_end`` (this callback runs first): the Trainer logs after ``on_step_end``,
so a window of ten steps at ``logging_steps=10`` holds exactly one logging step's hooks and one log entry.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from .common import Spread

KIB, MIB, GIB = 2**10, 2**20, 2**30


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Windows:
    """The timed windows of one run: ``(first, last)`` optimizer steps, counted from 1, in order.

    Steps before the first window are untimed warm-up; the run trains up to the last window's last step.
    """

    spans: tuple[tuple[int, int], ...]

    @classmethod
    def after_warmup(cls, warmup: int, count: int, steps: int) -> Windows:
        """``count`` back-to-back windows of ``steps`` steps after ``warmup`` untimed ones."""
        first = warmup + 1
        return cls(tuple((first + index * steps, first + (index + 1) * steps - 1) for index in range(count)))

    @property
    def max_steps(self) -> int:
        return self.spans[-1][1]

    @property
    def warmup(self) -> int:
        return self.spans[0][0] - 1


@dataclass
class Window:
    """One timed window: its steps and seconds, the allocator's peak in it, and the state and gradients held."""

    first: int
    last: int
    seconds: float
    peak_bytes: int | None
    optimizer_state_bytes: int
    gradient_bytes: int

    @property
    def steps(self) -> int:
        return self.last - self.first + 1

    @property
    def step_seconds(self) -> float:
        return self.seconds / self.steps


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes this process holds for ``tensor``: its local shard when it is an FSDP2 ``DTensor``."""
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def optimizer_state_bytes(optimizer: torch.optim.Optimizer | None) -> int:
    """Bytes of every tensor in the optimizer's state (Adam's moments and step counters)."""
    if optimizer is None:
        return 0
    return sum(
        tensor_bytes(value)
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    )


def gradient_bytes(model: torch.nn.Module) -> int:
    return sum(tensor_bytes(parameter.grad) for parameter in model.parameters() if parameter.grad is not None)


class WindowClock(TrainerCallback):
    """Times the windows (see the module docstring) and records the warm-up steps' ends, all synchronized."""

    def __init__(self, windows: Windows, device: str) -> None:
        self.windows, self.device = windows, device
        self.starts = {first - 1: (first, last) for first, last in windows.spans}
        self.ends = {last: (first, last) for first, last in windows.spans}
        self.recorded: list[Window] = []
        self.warmup_ends: list[float] = []
        self._opened: dict[int, float] = {}
        self._gradient_bytes = 0

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        synchronize(self.device)
        self.warmup_ends.append(time.perf_counter())

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs) -> None:
        if state.global_step + 1 in self.ends:  # the gradients of a window's last step, before they are freed
            self._gradient_bytes = gradient_bytes(model)

    def on_step_end(self, args, state, control, optimizer=None, **kwargs) -> None:
        step = state.global_step
        if step <= self.windows.warmup:
            synchronize(self.device)
            self.warmup_ends.append(time.perf_counter())
        if step in self.ends:
            synchronize(self.device)
            now = time.perf_counter()
            first, last = self.ends[step]
            peak = torch.cuda.max_memory_allocated() if self.device == "cuda" else None
            seconds, held = now - self._opened[first], optimizer_state_bytes(optimizer)
            self.recorded.append(Window(first, last, seconds, peak, held, self._gradient_bytes))
        if step in self.starts:
            synchronize(self.device)
            if self.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            self._opened[self.starts[step][0]] = time.perf_counter()

    def warmup_step_seconds(self) -> list[float]:
        return [after - before for before, after in zip(self.warmup_ends, self.warmup_ends[1:], strict=False)]


@dataclass
class RunRecord:
    """One run: its windows, the warm-up steps' seconds, what the run's ``inspect`` took from the trainer, and
    whether everything it made was released afterwards."""

    windows: list[Window]
    warmup_seconds: list[float]
    run_peak_bytes: int | None
    seconds: float
    released: bool
    left_allocated_bytes: int | None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def median_step(self) -> float:
        return statistics.median(window.step_seconds for window in self.windows)

    def to_data(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "warmup_step_seconds": self.warmup_seconds,
            "windows": [vars(window) for window in self.windows],
            "run_peak_bytes": self.run_peak_bytes,
            "released": self.released,
            "left_allocated_bytes": self.left_allocated_bytes,
            "facts": self.facts,
        }


def release(device: str) -> int | None:
    """Collect what is unreachable and empty the allocator's cache; the bytes still allocated (CUDA)."""
    gc.collect()
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated()


def train_windows(
    build: Callable[[TrainingArguments], Trainer],
    windows: Windows,
    device: str,
    arguments: dict[str, Any],
    arguments_class: type[TrainingArguments] = TrainingArguments,
    inspect: Callable[[Trainer], dict[str, Any]] | None = None,
) -> RunRecord:
    """Build a trainer with ``build`` and train it through ``windows``, timing each; then release it all.

    ``arguments`` go to ``arguments_class`` over the run's defaults (no saving, reporting or progress bar, no
    logging unless ``logging_steps`` says so). ``inspect`` reads facts off the trained trainer before it goes.
    """
    if device == "cuda":  # the run before this one released its memory (as does a part that failed)
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as output_dir:
        defaults: dict[str, Any] = dict(
            report_to=[], save_strategy="no", disable_tqdm=True, use_cpu=device == "cpu",
            dataloader_num_workers=0, logging_steps=100_000, seed=0,
        )  # fmt: skip
        args = arguments_class(output_dir=output_dir, max_steps=windows.max_steps, **{**defaults, **arguments})
        trainer = build(args)
        trainer.remove_callback(PrinterCallback)  # the suite prints its own lines
        clock = WindowClock(windows, device)
        trainer.callback_handler.callbacks.insert(0, clock)
        model = weakref.ref(trainer.model)
        trainer.train()
        synchronize(device)
        facts = inspect(trainer) if inspect is not None else {}
        run_peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
        del trainer, args
    left = release(device)
    return RunRecord(
        windows=clock.recorded,
        warmup_seconds=clock.warmup_step_seconds(),
        run_peak_bytes=run_peak,
        seconds=time.perf_counter() - started,
        released=model() is None,
        left_allocated_bytes=left,
        facts=facts,
    )


@dataclass
class PartContext:
    """What a part of the suite runs with: its size and device, its time, where it reports, and what earlier
    parts left for later ones (the batch, part a's and b's runs)."""

    scale: str
    device: str
    clock: PartClock
    report: Callable[[str], None]
    shared: dict[str, Any]

    def pick(self, smoke: Any, full: Any) -> Any:
        """The value for this scale."""
        return smoke if self.scale == "smoke" else full


class PartClock:
    """The time one part of the suite may take: until its own budget or the suite's deadline, whichever is first."""

    def __init__(self, seconds: float, deadline: float) -> None:
        self.started = time.monotonic()
        self.deadline = min(self.started + seconds, deadline)
        self.budget = seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def allows(self, seconds: float) -> bool:
        """Whether ``seconds`` more fit before the deadline."""
        return time.monotonic() + seconds <= self.deadline


@dataclass
class Alternation:
    """The runs of each side, in round order, and why the rounds stopped where they did."""

    runs: dict[str, list[RunRecord]]
    planned_rounds: int
    stopped_early: str | None = None

    def windows(self, side: str) -> list[Window]:
        return [window for run in self.runs[side] for window in run.windows]

    def step_seconds(self, side: str) -> Spread:
        return Spread.of([window.step_seconds for window in self.windows(side)])

    def per_round_ratios(self, numerator: str, denominator: str) -> Spread:
        """Within each round: ``numerator``'s median step over ``denominator``'s; their median and range."""
        pairs = zip(self.runs[numerator], self.runs[denominator], strict=False)
        return Spread.of([top.median_step / bottom.median_step for top, bottom in pairs])

    def rounds_done(self) -> int:
        return min(len(runs) for runs in self.runs.values())

    def to_data(self) -> dict[str, Any]:
        return {
            "planned_rounds": self.planned_rounds,
            "stopped_early": self.stopped_early,
            "runs": {side: [run.to_data() for run in runs] for side, runs in self.runs.items()},
        }


def alternate(
    sides: dict[str, Callable[[], RunRecord]],
    rounds: int,
    clock: PartClock,
    report: Callable[[str], None],
    label: str,
) -> Alternation:
    """Run the sides in turn, ``rounds`` times, flipping the order every round (A B, B A, ...).

    A round starts only when the last round's time still fits in the part's time; every run is reported as
    it ends.
    """
    names = list(sides)
    alternation = Alternation({name: [] for name in names}, rounds)
    last_round = 0.0
    for index in range(rounds):
        if index and not clock.allows(last_round):
            alternation.stopped_early = (
                f"{index} of {rounds} rounds: another round ({last_round:.0f} s) would pass the part's "
                f"time ({clock.budget:.0f} s) or the suite's deadline"
            )
            report(f"  {label}: stopped after {alternation.stopped_early}")
            break
        started = time.monotonic()
        for name in names if index % 2 == 0 else reversed(names):
            run = sides[name]()
            alternation.runs[name].append(run)
            report(f"  {label} round {index + 1}/{rounds}, {name}: {describe_run(run)}")
        last_round = time.monotonic() - started
    return alternation


def describe_run(run: RunRecord) -> str:
    """One line: the windows' step times, the warm-up, the memory, the run's seconds."""
    steps = ", ".join(f"{window.step_seconds * 1e3:,.1f}" for window in run.windows)
    warmup = ", ".join(f"{seconds * 1e3:,.0f}" for seconds in run.warmup_seconds)
    last = run.windows[-1]
    memory = f"state {bytes_text(last.optimizer_state_bytes)}, gradients {bytes_text(last.gradient_bytes)}"
    if last.peak_bytes is not None:
        memory = f"peak {bytes_text(last.peak_bytes)}, " + memory
    leak = "" if run.released else ", MODEL NOT RELEASED"
    if run.left_allocated_bytes:
        leak += f", {bytes_text(run.left_allocated_bytes)} left allocated"
    return f"ms/step {steps} (warm-up {warmup}); {memory}; {run.seconds:.1f} s{leak}"


def bytes_text(count: int | None) -> str:
    """Bytes in the unit that reads best: 16.70 GiB, 85.3 MiB, 4.0 KiB, 396 B."""
    if count is None:
        return "-"
    for unit, size, digits in (("GiB", GIB, 2), ("MiB", MIB, 1), ("KiB", KIB, 1)):
        if count >= size:
            return f"{count / size:,.{digits}f} {unit}"
    return f"{count} B"


def memory_columns(run: RunRecord) -> dict[str, str]:
    """The memory of a run's last window, as the table's three memory columns."""
    last = run.windows[-1]
    return {
        "peak allocated": bytes_text(last.peak_bytes),
        "optimizer state": bytes_text(last.optimizer_state_bytes),
        "gradients": bytes_text(last.gradient_bytes),
    }


def windows_text(windows: Sequence[Window]) -> str:
    return f"{len(windows)} x {windows[0].steps}" if windows else "0"
