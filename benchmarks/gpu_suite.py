"""``python -m benchmarks --suite gpu``: one prepared run of every GPU measurement, within a time budget.

A GPU machine is lent rarely and briefly, so this suite is one command that fits in 8 minutes on one H200,
warm-up included, and loses nothing it measured when a later part fails or time runs out:

- every part has its own time; a part stops adding rounds when another would pass it, and the suite has a
  deadline (``--budget`` seconds from its start) after which the remaining parts are skipped, each with the
  reason written down;
- a part that raises (out of memory included) is recorded with its traceback, its memory released, and the
  next part runs;
- the JSON and Markdown results are rewritten after every part (two files, replaced whole), so a run cut
  short still leaves every finished part on disk.

``--smoke`` runs the same parts at tiny sizes on a CPU in seconds; the test suite runs it so that the
command cannot rot while no GPU is at hand.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import BenchmarkResult, environment, render_result

# Seconds from the suite's start after which no part starts and running parts stop adding rounds: 8 minutes
# less 40 s for the interpreter's start, the imports and writing the results.
DEFAULT_BUDGET = 440.0


@dataclass(frozen=True)
class Part:
    """One part: its name, the letter of the issue's list it answers, and its time on an H200.

    ``seconds`` is the part's own time; it does not start with less than ``least`` seconds left.
    """

    name: str
    letter: str
    seconds: float
    least: float
    run: Callable[[Any], BenchmarkResult]


def _parts() -> tuple[Part, ...]:
    from . import gpu_fsdp, gpu_llm, gpu_muon, gpu_seed_shape

    return (
        Part("a_llm_llrd", "a", 85, 40, gpu_llm.llm_throughput),  # the batch probe (about 5 s) included
        Part("b_frozen_lower_half", "b", 65, 30, gpu_llm.frozen_lower_half),
        Part("c_staged_start", "c", 45, 25, gpu_llm.staged_start),
        Part("c_diagnostics", "c", 45, 20, gpu_llm.diagnostics_cost),
        Part("c_lora_plus", "c", 35, 15, gpu_llm.lora_plus),
        Part("d_seed_shape", "d", 25, 10, gpu_seed_shape.seed_shape),
        Part("e_fsdp2", "e", 75, 40, gpu_fsdp.fsdp2),
        Part("f_muon", "f", 35, 15, gpu_muon.muon_step),
    )


PART_LETTERS = ("a", "b", "c", "d", "e", "f")


@dataclass
class PartStatus:
    """What became of a part: ``done``, ``failed`` or ``skipped``, when, and why."""

    name: str
    status: str
    seconds: float
    budget: float
    note: str = ""


def _suite_environment(device: str, scale: str, budget: float) -> dict[str, Any]:
    import accelerate
    import torch

    env = environment(device, scale)
    env.update(accelerate=accelerate.__version__, budget_seconds=budget, platform=platform.platform())
    try:
        import peft

        env["peft"] = peft.__version__
    except ImportError:
        env["peft"] = None
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        env.update(cuda=torch.version.cuda, gpu_memory_bytes=properties.total_memory)
        env["allocator"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
    return env


def render(
    results: Sequence[BenchmarkResult], statuses: Sequence[PartStatus], env: dict[str, Any], command: str,
    elapsed: float,
) -> str:  # fmt: skip
    """The suite as Markdown: the run, a table of the parts, then each part's table, targets and notes."""
    versions = (
        f"Python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, accelerate "
        f"{env['accelerate']}, peft {env['peft']}"
    )
    device = f"{env['device']}, {env['cpu_cores']} cores"
    if "gpu_memory_bytes" in env:
        device += f", {env['gpu_memory_bytes'] / 2**30:,.1f} GiB, CUDA {env['cuda']}, allocator '{env['allocator']}'"
    lines = [
        "# GPU benchmark suite",
        "",
        f"`{command}` on {env['hardware']} ({device}), {env['date']}; {versions}. {elapsed:.0f} s so far of a "
        f"budget of {env['budget_seconds']:.0f} s.",
        "",
        "| part | status | seconds | its time | note |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {status.name} | {status.status} | {status.seconds:.0f} | {status.budget:.0f} | {status.note} |"
        for status in statuses
    ]
    for result in results:
        lines += render_result(result)
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    """Replace ``path`` whole: a run killed while writing leaves the previous version, not half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def write_suite(
    output_dir: Path, results: Sequence[BenchmarkResult], statuses: Sequence[PartStatus], env: dict[str, Any],
    command: str, elapsed: float,
) -> tuple[Path, Path]:  # fmt: skip
    """Write ``gpu-suite-<device>-<scale>-<date>.json`` and ``.md``; returns both paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = f"gpu-suite-{env['device']}-{env['scale']}-{env['date']}"
    json_path, markdown_path = output_dir / f"{stem}.json", output_dir / f"{stem}.md"
    payload = {
        "command": command,
        "environment": env,
        "elapsed_seconds": elapsed,
        "parts": [vars(status) for status in statuses],
        "results": [result.to_data() for result in results],
    }
    _write(json_path, json.dumps(payload, indent=1, default=str) + "\n")
    _write(markdown_path, render(results, statuses, env, command, elapsed))
    return json_path, markdown_path


def _failure(part: Part, error: str) -> BenchmarkResult:
    return BenchmarkResult(
        name=part.name, title=f"{part.name}: FAILED", columns=[], rows=[],
        notes=[f"```text\n{error.strip()}\n```"],
    )  # fmt: skip


@dataclass
class SuiteRun:
    """One run of the suite: where it writes, what it has measured so far, and its clock."""

    scale: str
    device: str
    output_dir: Path
    env: dict[str, Any]
    command: str
    started: float
    results: list[BenchmarkResult] = field(default_factory=list)
    statuses: list[PartStatus] = field(default_factory=list)

    def report(self, line: str) -> None:
        print(f"[{time.monotonic() - self.started:5.0f} s] {line}", flush=True)

    def write(self) -> tuple[Path, Path]:
        elapsed = time.monotonic() - self.started
        return write_suite(self.output_dir, self.results, self.statuses, self.env, self.command, elapsed)

    def run(self, parts: Sequence[Part]) -> int:
        """Run ``parts`` in order, writing the results after each; 1 if one failed (or, beyond a smoke run,
        missed a target)."""
        deadline, shared = self.started + self.env["budget_seconds"], {}
        paths = self.write()
        for part in parts:
            left = deadline - time.monotonic()
            if left < part.least:
                note = f"skipped: {left:.0f} s of the suite's budget left, the part needs at least {part.least:.0f} s"
                self.statuses.append(PartStatus(part.name, "skipped", 0.0, part.seconds, note))
                self.report(f"{part.name}: {note}")
            else:
                self.report(f"{part.name}: starting ({part.seconds:.0f} s of time, {left:.0f} s left in the suite)")
                self._run_part(part, deadline, shared)
            paths = self.write()
        self.report(f"finished in {time.monotonic() - self.started:.0f} s; written: {paths[0]}, {paths[1]}")
        failed = any(status.status == "failed" for status in self.statuses)
        missed = any(not target.met for result in self.results for target in result.targets)
        return 1 if failed or (missed and self.scale != "smoke") else 0

    def _run_part(self, part: Part, deadline: float, shared: dict[str, Any]) -> None:
        from .gpu_runs import PartClock, PartContext, release

        context = PartContext(self.scale, self.device, PartClock(part.seconds, deadline), self.report, shared)
        error = None
        try:
            result = part.run(context)
        except Exception:  # recorded and reported; the next part still runs
            error = traceback.format_exc(limit=-12)
        release(self.device)  # after the except block, so that a failed run's frames no longer hold its tensors
        seconds = context.clock.elapsed()
        if error is None:
            missed = [target.name for target in result.targets if not target.met]
            note = f"missed: {'; '.join(missed)}" if missed else ""
            self.results.append(result)
            self.statuses.append(PartStatus(part.name, "done", seconds, part.seconds, note))
            print("\n".join(render_result(result)), flush=True)
        else:
            last_line = error.strip().splitlines()[-1].replace("|", "\\|")
            self.results.append(_failure(part, error))
            self.statuses.append(PartStatus(part.name, "failed", seconds, part.seconds, last_line[:300]))
            self.report(f"{part.name}: FAILED after {seconds:.0f} s:\n{error}")
        self.report(f"{part.name}: {self.statuses[-1].status} in {seconds:.0f} s (its time {part.seconds:.0f} s)")


def run_suite(
    scale: str, device: str, output_dir: str, letters: Sequence[str], budget: float, command: str
) -> int:  # fmt: skip
    """Run the parts whose letters are given, in order, within ``budget`` seconds; the exit status."""
    started = time.monotonic()
    if device == "cuda":  # (the smoke run leaves the environment of the tests that run it alone)
        # Fewer, growable segments: the largest batch then does not fail on a fragmented cache.
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model is built from a config: nothing to look up
    import torch
    from transformers.utils import logging as transformers_logging

    suite = SuiteRun(scale, device, Path(output_dir), _suite_environment(device, scale, budget), command, started)
    suite.report(f"GPU suite ({scale}, {device}, {suite.env['hardware']}); budget {budget:.0f} s; parts "
                 f"{', '.join(letters)}")  # fmt: skip
    # The Trainer's warnings, repeated for every run the parts build, would bury the suite's own lines.
    verbosity, threads = transformers_logging.get_verbosity(), torch.get_num_threads()
    transformers_logging.set_verbosity_error()
    if device == "cpu":
        # The smoke run's tiny models gain nothing from a second thread, and on a busy 2-core machine torch's
        # threads waiting on each other made a step of the tiny Llama take 4.6 s instead of 20 ms.
        torch.set_num_threads(1)
    # Every run ends with a full garbage collection, to free its memory before the next; with what the imports
    # made set aside, one takes milliseconds instead of 0.6 s.
    gc.freeze()
    try:
        return suite.run([part for part in _parts() if part.letter in letters])
    finally:
        gc.unfreeze()
        transformers_logging.set_verbosity(verbosity)
        torch.set_num_threads(threads)
