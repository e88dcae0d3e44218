"""Two processes on CPU (gloo) through torchrun: same groups on every rank, parameters in sync, FSDP."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

WORKER = Path(__file__).resolve().parent / "distributed_worker.py"


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("distributed")
    env = {**os.environ, "TENSORBOARD_LOGGING_DIR": str(output_dir / "tensorboard"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(WORKER), str(output_dir)]  # fmt: skip
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-6000:]
    results = [json.loads((output_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    return output_dir, results


def test_both_ranks_train_under_ddp(ranks):
    _, (first, second) = ranks
    assert (first["rank"], second["rank"], first["world_size"]) == (0, 1, 2)
    assert first["wrapped"] == second["wrapped"] == "DistributedDataParallel"


def test_every_rank_builds_the_same_groups(ranks):
    _, (first, second) = ranks
    assert first["layout_hash"] == second["layout_hash"]
    assert first["optimizer_groups"] == second["optimizer_groups"] == [
        ["encoder/layer_1", 1e-3 * 0.25, 6], ["encoder/layer_1", 1e-3 * 0.25, 10],
        ["encoder/layer_2", 1e-3 * 0.5, 6], ["encoder/layer_2", 1e-3 * 0.5, 10],
        ["head", 3e-3, 2], ["head", 3e-3, 2],
    ]  # fmt: skip


def test_parameters_stay_in_sync_and_frozen_ones_frozen(ranks):
    _, (first, second) = ranks
    assert first["checksums"] == second["checksums"]
    assert first["frozen_unchanged"] and second["frozen_unchanged"]


def test_group_rates_are_logged_once(ranks):
    output_dir, (first, _) = ranks
    entries = [entry for entry in first["log_history"] if "loss" in entry]
    assert [entry["learning_rate/head"] for entry in entries] == pytest.approx([3e-3, 2.25e-3, 1.5e-3, 0.75e-3])
    (event_file,) = glob.glob(str(output_dir / "tensorboard" / "events.out.tfevents.*"))  # rank 0 alone writes
    events = EventAccumulator(event_file)
    events.Reload()
    assert [event.step for event in events.Scalars("train/learning_rate/encoder/layer_1")] == [1, 2, 3, 4]


def test_a_rank_with_another_spec_is_refused_on_every_rank(ranks):
    _, (first, second) = ranks
    for result in (first, second):
        assert result["diverging_spec_error"].startswith("the param groups differ between processes (ranks [0]: ")
        assert "every rank must see the same model and spec" in result["diverging_spec_error"]


@pytest.mark.parametrize("version", ["fsdp2", "fsdp1"])
def test_fsdp_wrapped_models_get_the_same_groups(ranks, version):
    _, (first, second) = ranks
    for result in (first[version], second[version]):
        assert result["same_groups_as_unwrapped"]
        assert result["embeddings_unchanged"] and result["encoder_moved"]
    assert first[version]["checksums"] == second[version]["checksums"]
    if version == "fsdp1":
        assert first[version]["names_seen"][0] == "_fsdp_wrapped_module.bert.embeddings.word_embeddings.weight"
