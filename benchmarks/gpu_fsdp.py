"""Part e of the GPU suite: the Trainer's own FSDP2 path end to end, with a spec, on one GPU.

The Trainer turns FSDP on only in a distributed run, so the part starts a child process through torchrun
(``--nproc_per_node 1``) running `benchmarks.gpu_fsdp_worker`, with the repository root on ``PYTHONPATH`` (the
package need not be installed), and reads the JSON the child writes after each of its stages. The child
has its own time limit; what it wrote before a failure or a timeout is still reported.

On a CPU accelerate has no FSDP: the same arguments run as plain data parallelism on one process (gloo),
and the part says so instead of claiming FSDP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .common import BenchmarkResult, Target
from .gpu_fsdp_worker import PROGRESS, SAVE_AT, SPEC, STEPS
from .gpu_runs import PartContext, bytes_text

REPOSITORY = Path(__file__).resolve().parents[1]
LAUNCH_SECONDS = 20  # torchrun's start and the child's imports, before it trains
GRACE_SECONDS = 10  # past the worker's own time limit, before torchrun is stopped


def _launch(result_path: Path, context: PartContext, timeout: float) -> tuple[int | None, str]:
    """Run the worker under torchrun; its exit status (None past ``timeout``) and its output.

    The worker's own progress lines are reported as they come; the rest of its output (warnings, a
    traceback) is returned for the report.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))}
    if context.device != "cuda":
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("OMP_NUM_THREADS", "1")
    # The worker ends itself at the time given (seconds since the epoch); torchrun gets a little longer.
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
        "--module", "benchmarks.gpu_fsdp_worker", str(result_path), context.scale, context.device,
        f"{time.time() + timeout:.0f}",
    ]  # fmt: skip
    context.report(f"  e: {' '.join(command[1:])}")
    process = subprocess.Popen(
        command, cwd=REPOSITORY, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []

    def follow() -> None:
        for line in process.stdout:
            lines.append(line)
            if line.startswith(PROGRESS):
                context.report(f"  e: {line[len(PROGRESS) :].strip()}")

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        code: int | None = process.wait(timeout=timeout + GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        # torchrun stops its workers on SIGTERM (they run in sessions of their own, out of reach of a group kill).
        process.terminate()
        try:
            process.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        code = None
    reader.join(timeout=GRACE_SECONDS)
    return code, "".join(lines)


def fsdp2(context: PartContext) -> BenchmarkResult:
    timeout = max(LAUNCH_SECONDS, context.clock.deadline - time.monotonic() - GRACE_SECONDS)
    with tempfile.TemporaryDirectory() as directory:
        result_path = Path(directory) / "worker.json"
        code, output = _launch(result_path, context, timeout)
        worker: dict[str, Any] = json.loads(result_path.read_text()) if result_path.exists() else {}
    notes = [_path_note(worker, context.device)]
    if code != 0:
        ended = "ran past its time limit" if code is None else f"exited {code}"
        notes.append(f"The worker {ended}. Its last output:\n\n```text\n{output[-3000:].strip()}\n```")
    for stage, error in worker.get("errors", {}).items():
        notes.append(f"Stage {stage} failed:\n\n```text\n{error[-3000:].strip()}\n```")
    return BenchmarkResult(
        name="e_fsdp2",
        title="e. The Trainer's FSDP2 path end to end, one process, with a spec (frozen embeddings, layer decay, "
        "fast head)",
        columns=["check", "result"],
        rows=_rows(worker),
        targets=_targets(worker, context.device),
        notes=notes,
        data={"spec": SPEC, "returncode": code, "worker": worker},
    )


def _path_note(worker: dict[str, Any], device: str) -> str:
    train = worker.get("train")
    if not train:
        return "The worker did not finish training; see below."
    how = (
        f"accelerate ran {train['distributed_type']} with world size {train['world_size']}, the model wrapped as "
        f"{train['wrapped']}, its parameters DTensors: {train['parameters_are_dtensors']}"
    )
    if train["fsdp_enabled"]:
        return f"FSDP version {train['fsdp_version']} was enabled: {how}."
    if device == "cuda":
        return f"FSDP was NOT enabled on the GPU: {how}."
    return (
        f"FSDP was NOT enabled: {how}. On a CPU accelerate has no FSDP and falls back to data parallelism, so this "
        "run checks the same arguments, spec, checkpoint and resume through that path, not FSDP."
    )


def _every_rate_logged(train: dict[str, Any]) -> bool:
    """Whether every logging step logged ``learning_rate/<name>`` for every optimizer group's name."""
    expected = {f"learning_rate/{name}" for name, _, _ in train["optimizer_groups"]}
    return all(expected <= set(rates) for rates in train["logged_rates_per_step"].values())


def _rows(worker: dict[str, Any]) -> list[dict[str, str]]:
    train, resume = worker.get("train"), worker.get("resume")
    if not train:
        return []
    groups = ", ".join(f"{name} {rate:g} ({count} tensors)" for name, rate, count in train["optimizer_groups"])
    memory = (
        f"peak allocated {bytes_text(train['peak_allocated_bytes'])}, optimizer state "
        f"{bytes_text(train['optimizer_state_bytes'])}, gradients {bytes_text(train['gradient_bytes'])}, "
        f"parameters {bytes_text(train['parameter_bytes'])} (this process's shards)"
    )
    rows = [
        {"check": "FSDP", "result": f"enabled: {train['fsdp_enabled']}, version {train['fsdp_version']}, "
                                    f"{train['distributed_type']}, model wrapped as {train['wrapped']}"},
        {"check": "optimizer groups (name, rate, tensors)", "result": groups},
        {"check": f"rates logged at each of {len(train['logged_rates_per_step'])} logging steps",
         "result": f"{', '.join(train['logged_rate_keys'])}; every group's at every step: {_every_rate_logged(train)}"},
        {"check": "frozen embeddings", "result": f"requires_grad {train['frozen_requires_grad']}, bit-identical "
                                                 f"after training: {train['frozen_unchanged']}"},
        {"check": "memory", "result": memory},
    ]  # fmt: skip
    if "checkpoint_files" in worker:
        rows.append({"check": f"checkpoint at step {SAVE_AT}", "result": ", ".join(worker["checkpoint_files"])})
    if resume:
        rows.append(
            {
                "check": f"resumed from step {resume['resumed_from_step']} to step {resume['final_step']}",
                "result": f"losses of steps {SAVE_AT + 1}-{STEPS} differ from the uninterrupted run's by at most "
                f"{resume['max_loss_difference']:.3g}, final weights by at most "
                f"{resume['max_weight_difference']:.3g}; frozen embeddings still bit-identical: "
                f"{resume['frozen_unchanged_after_resume']}",
            }
        )
    return rows


def _targets(worker: dict[str, Any], device: str) -> list[Target]:
    train, resume = worker.get("train", {}), worker.get("resume", {})
    checks = {
        "training finished": bool(train),
        "frozen embeddings bit-identical after training": train.get("frozen_unchanged", False),
        "every group's rate logged at every logging step": bool(train) and _every_rate_logged(train),
        f"resumed from the step-{SAVE_AT} checkpoint to step {STEPS}": resume.get("final_step") == STEPS,
        "frozen embeddings bit-identical after the resume": resume.get("frozen_unchanged_after_resume", False),
    }
    if device == "cuda":
        checks["FSDP2 enabled by the Trainer"] = train.get("fsdp_enabled") and train.get("fsdp_version") == 2
    return [Target(f"{name} (1 = yes)", float(bool(value)), ">=", 1) for name, value in checks.items()]
