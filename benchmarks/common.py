"""What every benchmark shares: interleaved timing, medians with min-max, targets, the run's environment.

Each benchmark compares `layerwise_trainer` with the stock Trainer (or the hand-built recipe) in the
same process, alternating the candidates within every repetition so that drift in the machine's speed
hits both alike, and reports ratios.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Scale = Literal["smoke", "quick", "full"]


@dataclass(frozen=True)
class Settings:
    """How a benchmark run is sized and where it runs.

    Args:
        scale: ``smoke`` (seconds, for the test suite), ``quick`` (minutes, CPU) or ``full``.
        device: ``cpu`` or ``cuda``.
    """

    scale: Scale = "quick"
    device: str = "cpu"

    def pick(self, smoke: Any, quick: Any, full: Any) -> Any:
        """The value for this scale."""
        return {"smoke": smoke, "quick": quick, "full": full}[self.scale]


@dataclass(frozen=True)
class Spread:
    """Median and range of repeated measurements."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        return cls(statistics.median(samples), min(samples), max(samples))

    def text(self, unit: str = "s", scale: float = 1.0) -> str:
        median, low, high = (_three_figures(value * scale) for value in (self.median, self.low, self.high))
        return f"{median} {unit} ({low}-{high})"


def _three_figures(value: float) -> str:
    """Three significant figures, without exponents: 2810, 71.5, 0.0049."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


@dataclass(frozen=True)
class Target:
    """A goal a benchmark checks: ``value`` compared with ``threshold``."""

    name: str
    value: float
    comparison: Literal["<=", ">="]
    threshold: float

    @property
    def met(self) -> bool:
        return self.value <= self.threshold if self.comparison == "<=" else self.value >= self.threshold


@dataclass
class BenchmarkResult:
    """The outcome of one benchmark: a table of rows, its targets and notes."""

    name: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The raw measurements behind the rows (seconds per window, bytes), for the JSON only.
    data: dict[str, Any] = field(default_factory=dict)

    def to_data(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = [{**asdict(target), "met": target.met} for target in self.targets]
        return data


def interleaved(candidates: Mapping[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each candidate ``repeats`` times, alternating them (A B A B ...), flipping the order each round.

    Args:
        candidates: Name -> a function that runs once and returns its measured value (seconds).
        repeats: Rounds.

    Returns:
        Name -> the values, one per round.
    """
    names = list(candidates)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        order = names if round_index % 2 == 0 else list(reversed(names))
        for name in order:
            samples[name].append(candidates[name]())
    return samples


def timed(function: Callable[[], Any]) -> float:
    """Seconds one call of ``function`` takes."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def environment(device: str, scale: str) -> dict[str, Any]:
    """The machine and software a run measured, for the report."""
    import torch
    import transformers

    if device == "cuda":
        hardware = torch.cuda.get_device_name(0)
    else:
        hardware = _cpu_name()
    return {
        "date": datetime.date.today().isoformat(),
        "scale": scale,
        "device": device,
        "hardware": hardware,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def render_markdown(results: Sequence[BenchmarkResult], env: Mapping[str, Any], command: str) -> str:
    """The results as Markdown: the environment, then one table and its targets per benchmark."""
    lines = [
        "# Benchmark results",
        "",
        f"`{command}` on {env['hardware']} ({env['device']}, {env['cpu_cores']} cores, "
        f"{env['torch_threads']} torch threads), {env['date']}; Python {env['python']}, torch {env['torch']}, "
        f"transformers {env['transformers']}.",
    ]
    for result in results:
        lines += render_result(result)
    return "\n".join(lines) + "\n"


def render_result(result: BenchmarkResult) -> list[str]:
    """One benchmark as Markdown lines: its title, its table, its targets and its notes."""
    lines = ["", f"## {result.title}"]
    if result.rows:
        lines += ["", "| " + " | ".join(result.columns) + " |"]
        lines.append("|" + "|".join(" --- " for _ in result.columns) + "|")
        for row in result.rows:
            lines.append("| " + " | ".join(str(row.get(column, "")) for column in result.columns) + " |")
    if result.targets:
        lines.append("")
        for target in result.targets:
            mark = "met" if target.met else "MISSED"
            goal = f"target {target.comparison} {target.threshold:g}"
            lines.append(f"- {target.name}: {target.value:.3g} ({goal}) — {mark}")
    for note in result.notes:
        lines += ["", note]
    return lines


def write_results(
    results: Sequence[BenchmarkResult], env: Mapping[str, Any], command: str, output_dir: str | os.PathLike[str]
) -> tuple[Path, Path]:
    """Write ``<device>-<scale>-<date>.json`` and ``.md`` into ``output_dir``; returns both paths."""
    target = Path(output_dir)
    target.mkdir(parents=True, exist_ok=True)
    stem = f"{env['device']}-{env['scale']}-{env['date']}"
    json_path, markdown_path = target / f"{stem}.json", target / f"{stem}.md"
    payload = {"command": command, "environment": dict(env), "results": [result.to_data() for result in results]}
    json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    markdown_path.write_text(render_markdown(results, env, command), encoding="utf-8")
    return json_path, markdown_path


def fitted_exponent(sizes: Sequence[float], seconds: Sequence[float]) -> float:
    """The slope of log(seconds) against log(size): 1 for linear growth, 2 for quadratic."""
    import math

    xs = [math.log(size) for size in sizes]
    ys = [math.log(value) for value in seconds]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return numerator / sum((x - mean_x) ** 2 for x in xs)
