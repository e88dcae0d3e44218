"""Two processes on CPU (gloo) through torchrun: same groups on every rank, parameters in sync, FSDP, later starts."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

WORKER = Path(__file__).resolve().parent / "distributed_worker.py"


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("distributed")
    # No GPU for the workers: on a machine with one, rank 1 would look for a second (CUDA "invalid device ordinal").
    env = {**os.environ, "TENSORBOARD_LOGGING_DIR": str(output_dir / "tensorboard"), "OMP_NUM_THREADS": "1"}
    env["CUDA_VISIBLE_DEVICES"] = ""
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


# Groups that start later (distributed_staged_worker.py): the body starts at step 3 with a warm-up of 1, so
# it has no gradient in steps 1-3, trains at rate 0 in step 4 (its warm-up's first step) and moves from step 5.
# The body is all 39 tensors under bert.*: 5 of the embeddings, 16 in each of the 2 layers, 2 of the pooler.
BODY_STEPS = [
    {"step": 1, "body_with_gradient": 0, "body_unchanged": True, "body_with_optimizer_state": 0},
    {"step": 2, "body_with_gradient": 0, "body_unchanged": True, "body_with_optimizer_state": 0},
    {"step": 3, "body_with_gradient": 0, "body_unchanged": True, "body_with_optimizer_state": 0},
    {"step": 4, "body_with_gradient": 39, "body_unchanged": True, "body_with_optimizer_state": 39},
    {"step": 5, "body_with_gradient": 39, "body_unchanged": False, "body_with_optimizer_state": 39},
    {"step": 6, "body_with_gradient": 39, "body_unchanged": False, "body_with_optimizer_state": 39},
]


@pytest.fixture(scope="module")
def one_process_reference(tmp_path_factory):
    """The staged run in this process, on one device with the global batch of both ranks."""
    from distributed_staged_worker import GLOBAL_BATCH, STAGED_SPEC, staged_arguments, staged_model
    from helpers import RandomClassificationData

    from layerwise_trainer import LayerwiseTrainer

    model = staged_model()
    args = staged_arguments(tmp_path_factory.mktemp("staged_reference"), processes=1)
    trainer = LayerwiseTrainer(
        model=model, args=args, train_dataset=RandomClassificationData(GLOBAL_BATCH), param_groups=STAGED_SPEC
    )
    trainer.train()
    return trainer.state.log_history, model.state_dict()


def _losses(log_history):
    return [entry["loss"] for entry in log_history if "loss" in entry]


def test_a_group_that_starts_later_has_no_gradient_state_or_update_before_its_start(ranks):
    _, results = ranks
    for result in results:
        staged = result["staged"]
        assert (staged["wrapped"], staged["find_unused_parameters"]) == ("DistributedDataParallel", True)
        steps = staged["steps"]
        assert [{key: step[key] for key in BODY_STEPS[0]} for step in steps] == BODY_STEPS


def test_each_rank_trains_on_other_examples(ranks):
    _, (first, second) = ranks
    assert len(first["staged"]["batches"]) == len(second["staged"]["batches"]) == 6
    for mine, theirs in zip(first["staged"]["batches"], second["staged"]["batches"], strict=True):
        assert len(mine) == len(theirs) == 4
        assert len({tuple(row) for row in mine + theirs}) == 8  # the global batch, split with no overlap


def test_a_later_group_gets_the_same_gradient_on_every_rank_once_it_starts(ranks):
    _, (first, second) = ranks
    digests = [[step["body_gradient_digest"] for step in result["staged"]["steps"]] for result in (first, second)]
    assert digests[0][:3] == [None, None, None]  # no gradient before the start
    assert None not in digests[0][3:] and digests[0] == digests[1]  # all-reduced: bit for bit the same


def test_a_later_group_moves_and_stays_identical_on_every_rank(ranks):
    output_dir, (first, second) = ranks
    assert first["staged"]["body_moved"] and second["staged"]["body_moved"]
    weights = [torch.load(output_dir / f"staged_rank{rank}.pt") for rank in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    assert [name for name in weights[0] if not torch.equal(weights[0][name], weights[1][name])] == []


def test_the_staged_ddp_run_matches_one_process_with_the_global_batch(ranks, one_process_reference):
    output_dir, (first, _) = ranks
    reference_log, reference_weights = one_process_reference
    # DDP averages two half-batch gradients where one process takes the mean of the whole batch: the sums
    # differ in their last bits (seen: losses equal to 1e-7, weights to 6e-8, for updates of about 1e-3).
    assert _losses(first["staged"]["log_history"]) == pytest.approx(_losses(reference_log), rel=1e-6, abs=0)
    weights = torch.load(output_dir / "staged_rank0.pt")
    assert weights.keys() == reference_weights.keys()
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, reference_weights[name], rtol=0, atol=1e-6, msg=name)


def test_a_later_group_logs_rate_zero_until_it_starts(ranks):
    _, (first, _) = ranks
    entries = [entry for entry in first["staged"]["log_history"] if "loss" in entry]
    assert [entry["learning_rate/body"] for entry in entries] == [0.0, 0.0, 0.0, 0.0, 1e-3, 1e-3]
    assert [entry["learning_rate/head"] for entry in entries] == pytest.approx(
        [3e-3, 2.5e-3, 2e-3, 1.5e-3, 1e-3, 0.5e-3], rel=1e-12
    )


def test_a_later_start_is_refused_under_ddp_without_find_unused_parameters(ranks):
    _, results = ranks
    for result in results:
        assert result["staged"]["refusals"]["ddp_without_find_unused_parameters"].startswith(
            "groups[0].start (group 'body'): under DDP a group that starts later needs ddp_find_unused_parameters=True"
        )


FSDP_PLUGINS = {
    "fsdp2": {"fsdp_version": 2, "use_orig_params": None},
    "fsdp1": {"fsdp_version": 1, "use_orig_params": True},
}


@pytest.mark.parametrize("version", FSDP_PLUGINS)
def test_a_later_start_is_refused_under_fsdp(ranks, version):
    _, results = ranks
    for result in results:
        refusals = result["staged"]["refusals"][version]
        assert refusals["plugin"] == FSDP_PLUGINS[version]
        assert refusals["later_start"].startswith(
            "groups[0].start (group 'body'): a group that starts later is not supported under FSDP"
        )


@pytest.mark.parametrize("version", FSDP_PLUGINS)
def test_a_schedule_without_a_later_start_is_accepted_under_fsdp(ranks, version):
    _, results = ranks
    assert [result["staged"]["refusals"][version]["schedule_only"] for result in results] == [None, None]


def test_muon_and_adamw_in_one_optimizer_stay_in_sync_under_ddp(ranks):
    _, (first, second) = ranks
    assert first["muon"]["optimizer"] == second["muon"]["optimizer"] == "HybridOptimizer"
    assert first["muon"]["groups"] == second["muon"]["groups"] == [
        ["head", "adamw", 2], ["head", "adamw", 2], ["default", "muon", 12], ["default/adamw", "adamw", 20],
    ]  # fmt: skip
    assert first["muon"]["weights_sha256"] == second["muon"]["weights_sha256"]  # bit-identical replicas
    assert first["muon"]["muon_state_keys"] == ["momentum_buffer"]
    moved = first["muon"]["moved"]
    assert "bert.encoder.layer.0.attention.self.query.weight" in moved and "classifier.weight" in moved
    assert not any(".embeddings." in name for name in moved)


def test_muon_is_refused_on_a_model_sharded_by_fsdp2(ranks):
    _, (first, second) = ranks
    for result in (first, second):
        assert result["muon"]["fsdp_refusal"].startswith(
            "muon (group 'default'): Muon is not supported under FSDP: it orthogonalises each weight matrix whole, "
            "and FSDP gives the optimizer row shards of each matrix"
        )
