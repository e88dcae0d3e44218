"""Benchmark 2: training throughput and memory, LayerwiseTrainer with LLRD against the stock Trainer.

Same model, data and arguments; the only difference is the spec (LLRD over the body, a fast head: 28
param groups on BERT-base against the stock Trainer's 2). On a GPU: bf16 and ``adamw_torch_fused``.
"""

from __future__ import annotations

from transformers import Trainer

from layerwise_trainer import LayerwiseTrainer

from .common import BenchmarkResult, Settings, Spread, Target, interleaved
from .models import TokenData, bert, llrd_spec
from .training_runs import RunMeasurement, measure_run, mebibytes


def run(settings: Settings) -> BenchmarkResult:
    size = settings.pick(smoke="tiny", quick="small", full="base")
    length = settings.pick(smoke=16, quick=128, full=128)
    batch = 32 if settings.device == "cuda" else settings.pick(smoke=4, quick=16, full=8)
    steps, warmup, repeats = settings.pick(smoke=(2, 1, 1), quick=(6, 2, 3), full=(10, 2, 3))
    data = TokenData(batch * (steps + warmup + 2), length)
    arguments = dict(per_device_train_batch_size=batch, learning_rate=3e-5, weight_decay=0.01, seed=0)
    if settings.device == "cuda":
        arguments.update(bf16=True, optim="adamw_torch_fused")
    measured: dict[str, list[RunMeasurement]] = {"stock": [], "layerwise": []}

    def build_stock(args):
        return Trainer(model=bert(size).to(settings.device), args=args, train_dataset=data)

    def build_layerwise(args):
        return LayerwiseTrainer(
            model=bert(size).to(settings.device), args=args, train_dataset=data, param_groups=llrd_spec()
        )

    def candidate(name, build):
        def once():
            measurement = measure_run(build, steps, warmup, settings.device, **arguments)
            measured[name].append(measurement)
            return measurement.median_step

        return once

    samples = interleaved(
        {"stock": candidate("stock", build_stock), "layerwise": candidate("layerwise", build_layerwise)}, repeats
    )
    stock_time, our_time = Spread.of(samples["stock"]), Spread.of(samples["layerwise"])
    stock_run, our_run = measured["stock"][-1], measured["layerwise"][-1]
    rows = []
    for label, spread, last in (
        ("stock Trainer (2 groups)", stock_time, stock_run),
        ("LayerwiseTrainer, LLRD (28 groups)", our_time, our_run),
    ):
        rows.append(
            {
                "trainer": label,
                "step time": spread.text(unit="ms", scale=1e3),
                "samples/s": f"{batch / spread.median:,.1f}",
                "optimizer state": mebibytes(last.optimizer_state_bytes),
                "peak GPU memory": mebibytes(last.peak_device_bytes),
            }
        )
    ratio = stock_time.median / our_time.median
    threshold = 0.99 if settings.device == "cuda" else 0.97
    return BenchmarkResult(
        name="throughput",
        title=(
            "2. Training throughput: LLRD through LayerwiseTrainer against the stock Trainer "
            f"(BERT {size}, seq {length}, batch {batch}, {settings.device})"
        ),
        columns=["trainer", "step time", "samples/s", "optimizer state", "peak GPU memory"],
        rows=rows,
        targets=[Target("throughput ratio LayerwiseTrainer / stock", ratio, ">=", threshold)],
        notes=[
            f"{steps} timed steps after {warmup} warm-up steps per run, {repeats} runs each, interleaved; "
            "the ratio is of the medians of the runs' median step times."
        ],
    )
