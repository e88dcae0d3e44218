"""Benchmark 4: the optimizer step against the number of param groups (2, 28, ~200), fused and foreach.

The parameters of BERT-base with random gradients, split into 2 groups (the stock Trainer's decay and
no-decay halves), 28 (LLRD over BERT-base with a head group) or 200; only the step is timed.
"""

from __future__ import annotations

import statistics

import torch

from layerwise_trainer import build_param_groups

from .common import BenchmarkResult, Settings, Spread, Target, interleaved, timed
from .models import bert, llrd_spec


def _groups(model: torch.nn.Module, count: int) -> list[dict]:
    if count == 2:
        return build_param_groups(model, [], learning_rate=3e-5, weight_decay=0.01)
    llrd = build_param_groups(model, llrd_spec(), learning_rate=3e-5, weight_decay=0.01)
    if count <= len(llrd):
        return llrd
    # Split the LLRD groups further, tensor by tensor, into `count` groups of their own rates.
    tensors = [(parameter, group) for group in llrd for parameter in group["params"]]
    count = min(count, len(tensors))
    split = [dict(tensors[index][1], params=[]) for index in range(count)]
    for index, (parameter, _) in enumerate(tensors):
        split[index % count]["params"].append(parameter)
    return [group for group in split if group["params"]]


def run(settings: Settings) -> BenchmarkResult:
    size = settings.pick(smoke="tiny", quick="base", full="base")
    steps, repeats = settings.pick(smoke=(2, 1), quick=(5, 3), full=(20, 5))
    model = bert(size).to(settings.device)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    counts = [2, 28, 200]
    implementations = ["fused", "foreach"]
    optimizers = {}
    for implementation in implementations:
        for count in counts:
            groups = _groups(model, count)
            optimizers[(implementation, count)] = (
                torch.optim.AdamW(groups, lr=3e-5, **{implementation: True}),
                len(groups),
            )

    def candidate(key):
        optimizer = optimizers[key][0]

        def once():
            optimizer.step()  # warm-up: allocates the state
            seconds = []
            for _ in range(steps):
                if settings.device == "cuda":
                    torch.cuda.synchronize()
                seconds.append(timed(optimizer.step))
                if settings.device == "cuda":
                    torch.cuda.synchronize()
            return statistics.median(seconds)

        return once

    samples = interleaved({key: candidate(key) for key in optimizers}, repeats)
    rows, targets = [], []
    for implementation in implementations:
        base = Spread.of(samples[(implementation, 2)]).median
        for count in counts:
            spread = Spread.of(samples[(implementation, count)])
            rows.append(
                {
                    "implementation": implementation,
                    "groups": optimizers[(implementation, count)][1],
                    "step": spread.text(unit="ms", scale=1e3),
                    "against 2 groups": f"x{spread.median / base:.3f}",
                }
            )
        targets.append(
            Target(
                f"{implementation}: 28 groups against 2",
                Spread.of(samples[(implementation, 28)]).median / base,
                "<=",
                1.03,
            )
        )
    millions = sum(parameter.numel() for parameter in model.parameters()) / 1e6
    return BenchmarkResult(
        name="optimizer_step",
        title=f"4. AdamW step against the number of groups (BERT {size}, {millions:.1f}M params, {settings.device})",
        columns=["implementation", "groups", "step", "against 2 groups"],
        rows=rows,
        targets=targets,
        notes=[f"Median of {steps} steps per run, {repeats} runs per configuration, interleaved."],
    )
