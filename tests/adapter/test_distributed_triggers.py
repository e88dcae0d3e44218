"""A start on a plateau under DDP (2 processes on CPU, gloo, through torchrun): decided once on rank 0, the same
optimizer step on every rank, and ranks that stay identical, even when their metrics differ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from layerwise_trainer.core.group_schedule import PlateauRule, plateau_start

WORKER = Path(__file__).resolve().parent / "distributed_trigger_worker.py"


RULE = PlateauRule("eval_scripted_loss", greater_is_better=False, patience=1)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("distributed_triggers")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(WORKER), str(output_dir)]  # fmt: skip
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-6000:]
    return output_dir, [json.loads((output_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def body_rates(start):
    """The body's logged rates over 8 steps when it starts at ``start`` with a warm-up of 1: 0 through step
    ``start + 1`` (the warm-up's first step has rate 0), then 1e-3."""
    return [0.0] * (start + 1) + [1e-3] * (8 - start - 1)


@pytest.mark.parametrize(("run", "start"), [("same", 4), ("different", 6)])
def test_every_rank_starts_the_body_at_the_same_step(ranks, run, start):
    _, results = ranks
    for result in results:
        assert result[run]["wrapped"] == "DistributedDataParallel"
        assert result[run]["group_starts"] == [0, 0, start, start]
        assert result[run]["body_rates"] == body_rates(start)
        assert [(event["group_started"], event["step"]) for event in result[run]["events"]] == [("body", start)]
    assert results[0][run]["records"] == results[1][run]["records"]


def test_rank_0_decides_when_the_ranks_see_different_metrics(ranks):
    _, (first, second) = ranks
    # What each rank saw: rank 1 alone would have started the body at step 4.
    seen = [dict(zip((2, 4, 6, 8), result["different"]["evaluated"], strict=True)) for result in (first, second)]
    assert seen[0] != seen[1]
    assert [plateau_start(RULE, sorted(values.items())) for values in seen] == [6, 4]
    assert first["different"]["records"]["body"][0]["start"] == second["different"]["records"]["body"][0]["start"] == 6
    assert second["different"]["records"]["body"][0]["best"] == 0.9  # rank 0's values, on rank 1


@pytest.mark.parametrize(("run", "start"), [("same", 4), ("different", 6)])
def test_the_body_has_no_gradient_before_its_start_then_the_same_on_every_rank(ranks, run, start):
    _, (first, second) = ranks
    for result in (first, second):
        counts = [step["with_gradient"] for step in result[run]["steps"]]
        assert counts[:start] == [0] * start and 0 not in counts[start:]
    digests = [[step["digest"] for step in result[run]["steps"]] for result in (first, second)]
    assert digests[0] == digests[1]  # all-reduced: bit for bit the same


@pytest.mark.parametrize("run", ["same", "different"])
def test_the_ranks_end_with_identical_weights(ranks, run):
    output_dir, _ = ranks
    weights = [torch.load(output_dir / f"{run}_rank{rank}.pt") for rank in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    assert [name for name in weights[0] if not torch.equal(weights[0][name], weights[1][name])] == []
