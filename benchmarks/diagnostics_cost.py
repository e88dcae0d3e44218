"""Benchmark 7: what the per-group diagnostics cost: the time of logging every 10 steps, a logging step's memory.

Time, end to end as a user pays it: the stock Trainer, `LayerwiseTrainer` with LLRD and a 10x head, and the
same with ``group_diagnostics=True``, all at ``logging_steps=10``, alternated within every round. Each run
times ten steps that hold exactly one logging step (its log entry included), so the ratio of the two
`LayerwiseTrainer` runs is what the diagnostics add at that interval. To explain it, one logging step's
diagnostics are also timed alone: the callback's hooks and the optimizer step they run in slices, on the
same model, optimizer and groups with random gradients, against a plain optimizer step, and the ATen operations
that logging step dispatches are counted against a plain step's (a GPU launches a kernel or a few for each
operation that computes, and pays host time for every one: where a step is short, the count matters as much as
the bytes moved).

Memory: the peak above a logging step's start (from just before the gradient norms to the end of the step)
with diagnostics on and off: peak RSS on a CPU (``/proc/self/status``, its peak reset through
``/proc/self/clear_refs``), the CUDA allocator's peak on a GPU. The bound is the largest slice
`UpdateMeasurement` copies: max(64 MiB, the largest tensor with a gradient). It is checked by counting the
bytes of the copy buffers ``torch.empty`` makes during a measured step (``tracemalloc`` does not see torch's
CPU tensors), for several slice limits and for an optimizer outside ``torch.optim`` (which copies every
weight), and each measured step's weights are compared with a plain step's. The bound for a 7B model is
computed from Llama-2-7B's shapes on the meta device.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from layerwise_trainer import LayerwiseTrainer, LayerwiseTrainingArguments, build_param_groups
from layerwise_trainer.core.group_statistics import COPY_ALIGNMENT, MAX_SLICE_BYTES, UpdateMeasurement

from .common import BenchmarkResult, Settings, Spread, Target, interleaved
from .models import TokenData, bert, llrd_spec

LOGGING_STEPS = 10
LEARNING_RATE = 3e-5
STOCK = "stock Trainer"
OFF = "LayerwiseTrainer, LLRD, diagnostics off"
ON = "LayerwiseTrainer, LLRD, diagnostics on"
KIB, MIB = 2**10, 2**20
# The copies of the runs' own case: their groups, sliced as by default.
DEFAULT_SLICES = f"LLRD, slices of at most {MAX_SLICE_BYTES // MIB} MiB (the default)"


@dataclass(frozen=True)
class Sizes:
    """One scale's model, batch and repetitions.

    Each training run takes ``warmup`` untimed steps, then the ten timed ones; ``repeats`` rounds of the
    three runs, ``alone_repeats`` of the diagnostics timed alone. ``slice_limits`` are the small limits the
    copies are counted under, beside the default 64 MiB.
    """

    model: str
    length: int
    batch: int
    warmup: int
    repeats: int
    alone_repeats: int
    slice_limits: tuple[int, int]


def _sizes(settings: Settings) -> Sizes:
    model = settings.pick("tiny", "small", "base")
    length, batch = settings.pick(smoke=(16, 2), quick=(128, 8), full=(128, 8))
    repeats = settings.pick(smoke=1, quick=2, full=2)
    if settings.device == "cuda":
        batch, repeats = settings.pick(smoke=2, quick=32, full=32), settings.pick(smoke=1, quick=3, full=5)
    alone = settings.pick(smoke=2, quick=5, full=10)
    limits = settings.pick(smoke=(4 * KIB, 16 * KIB), quick=(1 * MIB, 16 * MIB), full=(1 * MIB, 16 * MIB))
    return Sizes(model, length, batch, 1, repeats, alone, limits)


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _status_bytes(key: str) -> int | None:
    """A ``kB`` line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes; None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * KIB
    except OSError:
        pass
    return None


def _reset_peak(device: str) -> int | None:
    """Reset the peak memory and return the memory in use now (None where the peak cannot be read)."""
    _synchronize(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # sets the peak RSS (VmHWM) to the RSS now
    except OSError:
        return None
    return _status_bytes("VmRSS")


def _peak(device: str) -> int | None:
    _synchronize(device)
    return torch.cuda.max_memory_allocated() if device == "cuda" else _status_bytes("VmHWM")


class LoggingStepProbe(TrainerCallback):
    """Step end times, and the peak memory above the logging step's start (first in the callback list, so that
    its window opens before the diagnostics' gradient norms; it closes at the step's end)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.ends: list[float] = []
        self.peak_above_start: int | None = None
        self._start: int | None = None

    def on_pre_optimizer_step(self, args, state, control, **kwargs) -> None:
        if (state.global_step + 1) % LOGGING_STEPS == 0:
            self._start = _reset_peak(self.device)

    def on_step_end(self, args, state, control, **kwargs) -> None:
        _synchronize(self.device)
        self.ends.append(time.perf_counter())
        if state.global_step == LOGGING_STEPS and self._start is not None:
            peak = _peak(self.device)
            self.peak_above_start = None if peak is None else peak - self._start


@dataclass
class Run:
    """One training run: the seconds of its ten timed steps, its logging step's memory and log entry."""

    seconds: float
    peak_above_start: int | None
    diagnostic_keys: int


def _diagnostic_keys(trainer: Trainer) -> int:
    entry = next(entry for entry in trainer.state.log_history if entry.get("step") == LOGGING_STEPS)
    return sum("/" in key and not key.startswith("learning_rate/") for key in entry)


def _train(build: Callable[[TrainingArguments], Trainer], sizes: Sizes, device: str, **arguments: Any) -> Run:
    """Train ``warmup`` + 10 steps at ``logging_steps=10``; time the last ten (logging step 10 and its entry)."""
    arguments_class = LayerwiseTrainingArguments if "group_diagnostics" in arguments else TrainingArguments
    with tempfile.TemporaryDirectory() as output_dir:
        args = arguments_class(
            output_dir=output_dir, max_steps=sizes.warmup + LOGGING_STEPS, logging_steps=LOGGING_STEPS,
            learning_rate=LEARNING_RATE, per_device_train_batch_size=sizes.batch, report_to=[], save_strategy="no",
            disable_tqdm=True, use_cpu=device == "cpu", bf16=device == "cuda", dataloader_num_workers=0, seed=0,
            **arguments,
        )  # fmt: skip
        trainer = build(args)
        trainer.remove_callback(PrinterCallback)  # keeps the benchmark's output to its tables
        probe = LoggingStepProbe(device)
        trainer.callback_handler.callbacks.insert(0, probe)
        trainer.train()
    seconds = probe.ends[sizes.warmup + LOGGING_STEPS - 1] - probe.ends[sizes.warmup - 1]
    return Run(seconds, probe.peak_above_start, _diagnostic_keys(trainer))


def _training_runs(sizes: Sizes, device: str) -> dict[str, list[Run]]:
    data = TokenData(sizes.batch * (sizes.warmup + LOGGING_STEPS), sizes.length)

    def stock(args: TrainingArguments) -> Trainer:
        return Trainer(model=bert(sizes.model).to(device), args=args, train_dataset=data)

    def layerwise(args: TrainingArguments) -> Trainer:
        model = bert(sizes.model).to(device)
        return LayerwiseTrainer(model=model, args=args, train_dataset=data, param_groups=llrd_spec())

    plans: dict[str, tuple[Callable[[TrainingArguments], Trainer], dict[str, Any]]] = {
        STOCK: (stock, {}),
        OFF: (layerwise, {"group_diagnostics": False}),
        ON: (layerwise, {"group_diagnostics": True}),
    }
    runs: dict[str, list[Run]] = {name: [] for name in plans}

    def candidate(name: str) -> Callable[[], float]:
        def once() -> float:
            build, arguments = plans[name]
            runs[name].append(_train(build, sizes, device, **arguments))
            return runs[name][-1].seconds

        return once

    interleaved({name: candidate(name) for name in plans}, sizes.repeats)
    return runs


def _random_gradients(model: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        if parameter.requires_grad:
            gradient = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 1e-3
            parameter.grad = gradient.to(parameter.device)


class OperationCount(TorchDispatchMode):
    """While open: the ATen operations dispatched, and those of them that are not views (the ones that compute)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = self.computing = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func.namespace == "aten":
            self.total += 1
            self.computing += not func.is_view
        return func(*args, **(kwargs or {}))


@dataclass(frozen=True)
class Alone:
    """One logging step's diagnostics timed alone, per round: each part and the plain step, in seconds; and the
    ATen operations of one logging step and of one plain step, ``(that compute, in all)``."""

    plain_step: list[float]
    gradient_norms: list[float]
    sliced_step: list[float]
    after_step: list[float]
    logging_operations: tuple[int, int] = (0, 0)
    plain_operations: tuple[int, int] = (0, 0)

    @property
    def extra(self) -> list[float]:
        """Per round: gradient norms + (the step in slices - a plain step) + weight norms, ratios and entry."""
        parts = zip(self.gradient_norms, self.sliced_step, self.plain_step, self.after_step, strict=True)
        return [norms + sliced - plain + after for norms, sliced, plain, after in parts]


def _diagnostics_alone(sizes: Sizes, device: str) -> Alone:
    """The callback's hooks around the optimizer step, as the Trainer calls them on logging step 10."""
    with tempfile.TemporaryDirectory() as output_dir:
        args = LayerwiseTrainingArguments(
            output_dir=output_dir, logging_steps=LOGGING_STEPS, learning_rate=LEARNING_RATE, report_to=[],
            use_cpu=device == "cpu", group_diagnostics=True,
        )  # fmt: skip
    model = bert(sizes.model).to(device)
    trainer = LayerwiseTrainer(model=model, args=args, param_groups=llrd_spec())
    optimizer, callback = trainer.create_optimizer(), trainer.group_diagnostics_callback
    _random_gradients(model)
    state, control, hooks = TrainerState(logging_steps=LOGGING_STEPS), TrainerControl(), {"model": model}
    callback.on_train_begin(args, state, control, optimizer=optimizer, **hooks)
    alone = Alone([], [], [], [])

    def clock() -> float:
        _synchronize(device)
        return time.perf_counter()

    def plain() -> float:
        start = clock()
        optimizer.step()
        alone.plain_step.append(clock() - start)
        return alone.plain_step[-1]

    def logging_step() -> float:
        state.global_step = LOGGING_STEPS - 1
        start = clock()
        callback.on_pre_optimizer_step(args, state, control, optimizer=optimizer, **hooks)
        norms = clock()
        optimizer.step()
        stepped = clock()
        callback.on_optimizer_step(args, state, control, optimizer=optimizer, **hooks)
        state.global_step = LOGGING_STEPS
        logs = {"loss": 1.0, "grad_norm": 1.0, "learning_rate": LEARNING_RATE}
        callback.on_log(args, state, control, logs=logs, **hooks)
        end = clock()
        alone.gradient_norms.append(norms - start)
        alone.sliced_step.append(stepped - norms)
        alone.after_step.append(end - stepped)
        return end - start

    for untimed in (plain, logging_step):  # the first step creates the optimizer state
        untimed()
    with OperationCount() as plain_operations:
        plain()
    with OperationCount() as logging_operations:
        logging_step()
    counts = {
        "logging_operations": (logging_operations.computing, logging_operations.total),
        "plain_operations": (plain_operations.computing, plain_operations.total),
    }
    alone = Alone([], [], [], [], **counts)
    interleaved({"plain": plain, "logging": logging_step}, sizes.alone_repeats)
    callback.on_train_end(args, state, control)
    return alone


class CopyCount:
    """While open: the bytes of the tensors ``torch.empty`` made that are still alive, and their peak.

    `UpdateMeasurement` copies the weights into flat buffers it makes with ``torch.empty``; torch's CPU allocator
    is invisible to ``tracemalloc``, so the buffers are counted as they are made and as their tensors are freed.
    A tensor that torch keeps alive longer is counted longer: the peak can only read high.
    """

    def __init__(self) -> None:
        self.live = self.peak = 0
        self._original = torch.empty

    def __enter__(self) -> CopyCount:
        original = self._original

        def empty(*args: Any, **kwargs: Any) -> torch.Tensor:
            made = original(*args, **kwargs)
            nbytes = made.numel() * made.element_size()
            self._made(nbytes)
            weakref.finalize(made, self._freed, nbytes)
            return made

        torch.empty = empty  # type: ignore[assignment]
        return self

    def __exit__(self, *exception: object) -> None:
        torch.empty = self._original  # type: ignore[assignment]

    def _made(self, nbytes: int) -> None:
        self.live += nbytes
        self.peak = max(self.peak, self.live)

    def _freed(self, nbytes: int) -> None:
        self.live -= nbytes


class OutsideTorchOptim(torch.optim.AdamW):
    """AdamW under a module outside ``torch.optim``: `UpdateMeasurement` copies every weight for it."""


@dataclass(frozen=True)
class Copies:
    """One measured step: the copies at their peak, the bound, the device's extra peak, equal weights."""

    label: str
    peak: int
    bound: int
    weights: int
    device_extra: int | None
    identical: bool


def _weight_bytes(parameters: list[torch.nn.Parameter]) -> int:
    return sum(p.numel() * p.element_size() for p in parameters)


def _stepped_peak(step: Callable[[], Any], device: str) -> int | None:
    start = _reset_peak(device)
    step()
    peak = _peak(device)
    return None if start is None or peak is None else peak - start


def _copies(sizes: Sizes, device: str, spec: Any, cases: list[tuple[str, int, type]]) -> list[Copies]:
    """Two same models and optimizers: one stepped plainly, the other measured, from the same weights and state.

    ``cases``: (label, slice limit, optimizer class) of each measured step.
    """
    models = [bert(sizes.model).to(device) for _ in range(2)]
    for model in models:
        _random_gradients(model)
    plain = torch.optim.AdamW(_groups(models[0], spec), lr=LEARNING_RATE, fused=True)
    return [_measured_case(models, plain, spec, *case, device) for case in cases]


def _measured_case(
    models: list[torch.nn.Module], plain: torch.optim.Optimizer, spec: Any, label: str, limit: int,
    optimizer_class: type[torch.optim.Optimizer], device: str,
) -> Copies:  # fmt: skip
    """The second model takes the first's weights and optimizer state, then each takes one step."""
    with torch.no_grad():
        for source, target in zip(models[0].parameters(), models[1].parameters(), strict=True):
            target.copy_(source)
    measured = optimizer_class(_groups(models[1], spec), lr=LEARNING_RATE, fused=True)
    measured.load_state_dict(copy.deepcopy(plain.state_dict()))  # a copy: loading would share the tensors
    measurement = UpdateMeasurement(measured, max_slice_bytes=limit)
    measurement.arm()
    plain_peak = _stepped_peak(plain.step, device)
    with CopyCount() as count:
        measured_peak = _stepped_peak(measured.step, device)
    measurement.remove()
    identical = all(torch.equal(a, b) for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True))
    trained = [p for group in measured.param_groups for p in group["params"] if p.grad is not None]
    largest = max(p.numel() * p.element_size() for p in trained)
    # Stepped whole: every weight, each copy starting on a multiple of COPY_ALIGNMENT bytes.
    padding = (COPY_ALIGNMENT - 1) * len(trained)
    bound = max(limit, largest) if measurement.steps_in_slices else _weight_bytes(trained) + padding
    extra = None if device != "cuda" or None in (plain_peak, measured_peak) else measured_peak - plain_peak
    return Copies(label, count.peak, bound, _weight_bytes(trained), extra, identical)


def _groups(model: torch.nn.Module, spec: Any) -> list[dict[str, Any]]:
    return build_param_groups(model, spec, learning_rate=LEARNING_RATE, weight_decay=0.01)


def _counted_copies(sizes: Sizes, device: str) -> list[Copies]:
    """The runs' groups under a small and the default slice limit, and outside torch.optim; then, with the
    embeddings frozen (no tensor larger than a layer's), under the two small limits."""
    small, middle = sizes.slice_limits
    embeddings = {"name": "embeddings", "match": "bert.embeddings.*", "freeze": True}
    frozen = {**llrd_spec(), "groups": [embeddings, *llrd_spec()["groups"]]}
    runs_groups = [
        (f"LLRD, slices of at most {_size_text(small)}", small, torch.optim.AdamW),
        (DEFAULT_SLICES, MAX_SLICE_BYTES, torch.optim.AdamW),
        ("LLRD, an optimizer outside torch.optim", MAX_SLICE_BYTES, OutsideTorchOptim),
    ]
    frozen_groups = [
        (f"LLRD, embeddings frozen, slices of at most {_size_text(limit)}", limit, torch.optim.AdamW)
        for limit in (small, middle)
    ]
    return _copies(sizes, device, llrd_spec(), runs_groups) + _copies(sizes, device, frozen, frozen_groups)


def _llama_7b() -> tuple[str, int, int]:
    """Llama-2-7B's shapes in bf16, on the meta device: the largest tensor's name and bytes, and all weights' bytes."""
    config = LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32,
    )  # fmt: skip
    with torch.device("meta"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    named = [(name, p.numel() * p.element_size(), tuple(p.shape)) for name, p in model.named_parameters()]
    name, largest, shape = max(named, key=lambda item: item[1])
    return f"{name} ({' x '.join(map(str, shape))})", largest, sum(nbytes for _, nbytes, _ in named)


def _size_text(count: int) -> str:
    return f"{count // MIB} MiB" if count % MIB == 0 else f"{count // KIB} KiB"


def _bytes_text(count: int | None) -> str:
    return "-" if count is None else f"{count:,} bytes ({count / MIB:,.1f} MiB)"


def _row(measure: str, value: str, against: str = "") -> dict[str, str]:
    return {"measure": measure, "value": value, "against": against}


@dataclass(frozen=True)
class Timing:
    """The seconds of the three runs' ten steps per round, the diagnostics alone, and the keys they logged."""

    seconds: dict[str, list[float]]
    alone: Alone
    keys: int

    def ratio(self, top: str, bottom: str) -> Spread:
        """Ratios taken within each round, then their median and range."""
        return Spread.of([a / b for a, b in zip(self.seconds[top], self.seconds[bottom], strict=True)])

    @property
    def share(self) -> float:
        """One logging step's diagnostics alone over ten steps without them (medians)."""
        return statistics.median(self.alone.extra) / statistics.median(self.seconds[OFF])


def _ratio_text(spread: Spread, of: str) -> str:
    return f"x{spread.median:.3f} ({spread.low:.3f}-{spread.high:.3f}) of {of}"


def _time_rows(timing: Timing) -> list[dict[str, str]]:
    seconds, alone = timing.seconds, timing.alone
    return [
        _row(f"{STOCK}: 10 steps, one of them logged", Spread.of(seconds[STOCK]).text(), "baseline"),
        _row(
            f"{OFF}: the same 10 steps", Spread.of(seconds[OFF]).text(),
            _ratio_text(timing.ratio(OFF, STOCK), "the stock Trainer"),
        ),
        _row(
            f"{ON} ({timing.keys} keys on a logging step): the same 10 steps", Spread.of(seconds[ON]).text(),
            _ratio_text(timing.ratio(ON, OFF), "diagnostics off"),
        ),
        _row("one logging step's diagnostics alone: gradient norms", Spread.of(alone.gradient_norms).text("ms", 1e3)),
        _row(
            "... the optimizer step in slices (weights copied, stepped, compared)",
            Spread.of(alone.sliced_step).text("ms", 1e3),
            f"a plain step: {Spread.of(alone.plain_step).text('ms', 1e3)}",
        ),
        _row(
            "... weight norms, update ratios, hyperparameters and the log entry",
            Spread.of(alone.after_step).text("ms", 1e3),
        ),
        _row(
            "... in all, less a plain step", Spread.of(alone.extra).text("ms", 1e3),
            f"{timing.share * 100:.2f} % of 10 steps without diagnostics",
        ),
        _row(
            "one logging step's ATen operations: that compute, in all (views included)",
            "{:,}, {:,}".format(*alone.logging_operations), "a plain step: {:,}, {:,}".format(*alone.plain_operations),
        ),
    ]  # fmt: skip


def _copies_row(measured: Copies) -> dict[str, str]:
    outcome = "bit-identical to" if measured.identical else "DIFFERENT from"
    against = (
        f"bound {_bytes_text(measured.bound)}; a copy of the weights {_bytes_text(measured.weights)}; "
        f"weights {outcome} a plain step's"
    )
    if measured.device_extra is not None:
        against += f"; device peak {_bytes_text(measured.device_extra)} above a plain step's"
    return _row(f"copies at their peak: {measured.label}", _bytes_text(measured.peak), against)


def _memory_rows(runs: dict[str, list[Run]], copies: list[Copies], device: str) -> list[dict[str, str]]:
    kind = "the CUDA allocator's peak" if device == "cuda" else "peak RSS"
    off, on = runs[OFF][-1].peak_above_start, runs[ON][-1].peak_above_start
    difference = None if off is None or on is None else on - off
    name, largest, weights = _llama_7b()
    return [
        _row(f"logging step, {kind} above its start: diagnostics off", _bytes_text(off)),
        _row("... diagnostics on", _bytes_text(on), f"{_bytes_text(difference)} more"),
        *(_copies_row(measured) for measured in copies),
        _row(
            "Llama-2-7B in bf16 (shapes on the meta device): the bound", _bytes_text(max(MAX_SLICE_BYTES, largest)),
            f"its largest tensor {name}; a copy of the weights {_bytes_text(weights)} ({weights / 1e9:.1f} GB)",
        ),
    ]  # fmt: skip


def _targets(timing: Timing, runs: dict[str, list[Run]], copies: list[Copies]) -> list[Target]:
    """At most 1 % slower at logging_steps=10; copies within the bound; the measured memory within 1 MiB of it."""
    sliced = [measured for measured in copies if "outside" not in measured.label]
    targets = [
        Target("10 steps with diagnostics / without, one logging step, median ratio", timing.ratio(ON, OFF).median,
               "<=", 1.01),
        Target("one logging step's diagnostics alone / 10 steps without, in %", timing.share * 100, "<=", 1.0),
        Target("copies at their peak <= max(slice limit, largest tensor), every sliced step (1 = yes)",
               float(all(measured.peak <= measured.bound for measured in sliced)), ">=", 1),
        Target("weights after a measured step bit-identical to a plain step's, every case (1 = yes)",
               float(all(measured.identical for measured in copies)), ">=", 1),
    ]  # fmt: skip
    off, on = runs[OFF][-1].peak_above_start, runs[ON][-1].peak_above_start
    if off is not None and on is not None:
        # RSS is counted in pages and the kernel's counters lag by some: the copies plus a few KiB read as the
        # bound plus up to a few hundred KiB.
        bound = next(measured.bound for measured in copies if measured.label == DEFAULT_SLICES)
        above = (on - off - bound) / MIB
        targets.append(Target("a logging step's extra memory measured (on - off) less the bound, MiB", above, "<=", 1))
    return targets


def run(settings: Settings) -> BenchmarkResult:
    sizes = _sizes(settings)
    runs = _training_runs(sizes, settings.device)
    seconds = {name: [measured.seconds for measured in runs[name]] for name in runs}
    timing = Timing(seconds, _diagnostics_alone(sizes, settings.device), runs[ON][-1].diagnostic_keys)
    copies = _counted_copies(sizes, settings.device)
    return BenchmarkResult(
        name="diagnostics_cost",
        title=(
            "7. Per-group diagnostics at logging_steps=10: time and a logging step's memory "
            f"(BERT {sizes.model}, seq {sizes.length}, batch {sizes.batch}, {settings.device})"
        ),
        columns=["measure", "value", "against"],
        rows=_time_rows(timing) + _memory_rows(runs, copies, settings.device),
        targets=_targets(timing, runs, copies),
        notes=[
            f"{sizes.repeats} round(s) of the three runs, alternated within each; each run trains {sizes.warmup} "
            f"untimed step(s), then times steps {sizes.warmup + 1}-{sizes.warmup + LOGGING_STEPS}, which hold "
            f"logging step {LOGGING_STEPS} and its log entry. Values are medians over the rounds (min-max in "
            "brackets); ratios are taken within a round. The diagnostics alone: the callback's hooks around the "
            f"optimizer step of logging step {LOGGING_STEPS}, on the same model and groups with random gradients, "
            f"{sizes.alone_repeats} rounds alternated with a plain optimizer step.",
            "Memory of a logging step: the peak from just before the gradient norms to the step's end, above the "
            "memory in use at its start, in the last round. Copies: the bytes of the copy buffers torch.empty makes "
            "during one measured optimizer step (AdamW, fused) that are alive at once, at their peak; the bound is "
            "max(the slice limit, the largest tensor with a gradient), or, for an optimizer outside torch.optim, "
            "every such weight with up to 15 bytes per tensor that align each copy on 16 bytes.",
        ],
    )
