"""Per-group diagnostics under two processes (gloo on CPU, through torchrun): DDP, FSDP2 and FSDP1.

distributed_diagnostics_worker.py trains each case on both ranks beside a probe that reads the whole
gradients and weights (gathered from the shards under FSDP) and computes every norm by hand.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parent / "distributed_diagnostics_worker.py"
GROUPS = ["encoder/layer_1", "encoder/layer_2", "head"]  # the embeddings are frozen: left out
KEYS = {f"{prefix}/{group}" for prefix in ("grad_norm", "update_ratio", "param_norm") for group in GROUPS}
CASES = ["ddp", "fsdp2", "fsdp1", "fsdp1_clipped", "fsdp1_no_shard"]
UNCLIPPED_CASES = ["ddp", "fsdp2", "fsdp1", "fsdp1_no_shard"]
CLIPPED_AT = 0.1  # the worker's max_grad_norm in fsdp1_clipped
# float32 norms of shards combined in float64, against float64 norms of the whole tensors.
TOLERANCE = {"grad_norm": 1e-6, "param_norm": 1e-6, "update_ratio": 1e-5}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("distributed_diagnostics")
    # No GPU for the workers: on a machine with one, rank 1 would look for a second (CUDA "invalid device ordinal").
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(WORKER), str(output_dir)]  # fmt: skip
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-6000:]
    return [json.loads((output_dir / f"diagnostics_rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.parametrize("case", CASES)
def test_every_rank_logs_the_same_numbers_for_every_group(ranks, case):
    first, second = (result[case]["entries"] for result in ranks)
    assert [entry["step"] for entry in first] == [1, 2]
    assert first == second  # exactly
    for entry in first:
        assert {key for key in entry if "/" in key} == KEYS
        assert all(entry[key] > 0 for key in KEYS)


def test_ddp_runs_through_the_trainer(ranks):
    assert [result["ddp"]["wrapped"] for result in ranks] == ["DistributedDataParallel"] * 2


@pytest.mark.parametrize("case", UNCLIPPED_CASES)
def test_logged_norms_equal_the_norms_of_the_whole_tensors_computed_by_hand(ranks, case):
    for result in ranks:
        entries, hand = result[case]["entries"], result[case]["hand"]
        assert len(entries) == len(hand) == 2
        for entry, expected in zip(entries, hand, strict=True):
            assert set(expected) == KEYS
            for key, value in expected.items():
                assert entry[key] == pytest.approx(value, rel=TOLERANCE[key.split("/")[0]]), key


@pytest.mark.parametrize("case", CASES)
def test_squares_of_group_gradient_norms_add_up_to_the_trainers_grad_norm(ranks, case):
    for entry in ranks[0][case]["entries"]:
        total = math.sqrt(sum(entry[f"grad_norm/{group}"] ** 2 for group in GROUPS))
        assert total == pytest.approx(entry["grad_norm"], rel=1e-5)


def test_fsdp_ranks_hold_parts_of_each_group_and_fsdp1_gives_one_rank_none_of_the_head(ranks):
    """The whole-tensor values above come from shards: each rank holds part of a group, FSDP1 rank 0 none of it."""
    whole = {"encoder/layer_1": 2224, "encoder/layer_2": 2224, "head": 323}
    assert [result["fsdp1"]["local_elements"] for result in ranks] == [
        {"encoder/layer_1": 1112, "encoder/layer_2": 1112, "head": 0},
        {"encoder/layer_1": 1112, "encoder/layer_2": 1112, "head": 323},
    ]
    assert [result["fsdp2"]["local_elements"] for result in ranks] == [
        {"encoder/layer_1": 1112, "encoder/layer_2": 1112, "head": 170},
        {"encoder/layer_1": 1112, "encoder/layer_2": 1112, "head": 153},
    ]
    assert [result[case]["local_elements"] for result in ranks for case in ("ddp", "fsdp1_no_shard")] == [whole] * 4


def test_fsdp1_gradient_norms_are_taken_before_clipping(ranks):
    unclipped, clipped = (ranks[0][case]["entries"][0] for case in ("fsdp1", "fsdp1_clipped"))
    assert clipped["grad_norm"] == unclipped["grad_norm"] > CLIPPED_AT
    for group in GROUPS:
        assert clipped[f"grad_norm/{group}"] == pytest.approx(unclipped[f"grad_norm/{group}"], rel=1e-6)
    # On every step, the whole gradients the probe saw were clipped to CLIPPED_AT; the logged ones are scaled back.
    for entry, seen in zip(ranks[0]["fsdp1_clipped"]["entries"], ranks[0]["fsdp1_clipped"]["hand"], strict=True):
        seen_total = math.sqrt(sum(seen[f"grad_norm/{group}"] ** 2 for group in GROUPS))
        assert seen_total == pytest.approx(CLIPPED_AT, rel=1e-5)
        for group in GROUPS:
            before_clipping = seen[f"grad_norm/{group}"] * entry["grad_norm"] / seen_total
            assert entry[f"grad_norm/{group}"] == pytest.approx(before_clipping, rel=1e-6)


def test_fsdp2_norms_of_every_parameter_take_one_collective(ranks):
    assert [result["fsdp2"]["collectives_of_one_norm_call"] for result in ranks] == [1, 1]


def test_fsdp1_with_whole_parameters_beside_shards_is_refused_when_training_begins(ranks):
    for result in ranks:
        error = result["fsdp1_ignored_module"]
        assert error.startswith("group diagnostics under FSDP1 need the optimizer's parameters sharded alike")
        assert "34 are sharded over 1 process group(s) and 2 are whole on every rank" in error
