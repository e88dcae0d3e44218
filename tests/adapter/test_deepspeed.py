"""DeepSpeed ZeRO 1, 2 and 3 through the Trainer: two processes on CPU (gloo, ``DS_ACCELERATOR=cpu``), torchrun.

deepspeed_worker.py runs every case in one launch, with a DeepSpeed config without an ``optimizer`` section, so
the Trainer hands the spec's optimizer to DeepSpeed. Each stage is compared with plain DDP on the same spec,
data and global batch (2 ranks of 4 examples), and with the rates and updates the spec gives by hand.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_bert

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="DeepSpeed is not installed: pip install -e '.[deepspeed]' to run the DeepSpeed tests",
)

WORKER = Path(__file__).resolve().parent / "deepspeed_worker.py"
STAGES = ["zero1", "zero2", "zero3"]
STEPS = 6
# The spec's rates (deepspeed_worker.SPEC): layer decay 0.5 over the 2 encoder layers, a fast head, frozen embeddings.
RATES = {"encoder/layer_1": 1e-3 * 0.5**2, "encoder/layer_2": 1e-3 * 0.5, "head": 3e-3}
PLAN_GROUPS = [
    ["encoder/layer_1", 6], ["encoder/layer_1", 10], ["encoder/layer_2", 6], ["encoder/layer_2", 10],
    ["head", 2], ["head", 2],
]  # fmt: skip
# Each group's elements, decay and no-decay halves: 2 layers of 2,048 weights and 176 biases and norms; the head
# has the pooler's 16x16 and the classifier's 3x16 weights and 19 biases.
GROUP_ELEMENTS = [2048, 176, 2048, 176, 304, 19]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("deepspeed")
    # No GPU for the workers: on a machine with one, rank 1 would look for a second (CUDA "invalid device ordinal").
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(WORKER), str(output_dir)]  # fmt: skip
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-6000:]
    results = [json.loads((output_dir / f"deepspeed_rank{rank}.json").read_text()) for rank in (0, 1)]
    return output_dir, results


def weights(output_dir: Path, case: str) -> dict[str, torch.Tensor]:
    return torch.load(output_dir / f"{case}.pt")


def expected_rate(lr: float, step: int, steps: int = STEPS) -> float:
    """The linear schedule without warm-up: the rate logged at ``step`` (from 1) was used for that step."""
    return lr * (steps - step + 1) / steps


def test_every_stage_trains_through_the_trainer_on_a_deepspeed_engine(ranks):
    _, results = ranks
    for result in results:
        assert result["world_size"] == 2
        assert result["ddp"]["wrapped"] == "DistributedDataParallel"
        for number, stage in enumerate(STAGES, start=1):
            groups = result[stage]["deepspeed_groups"]
            assert (result[stage]["wrapped"], groups["engine"], groups["stage"]) == (
                "DeepSpeedEngine", "DeepSpeedEngine", number,
            )  # fmt: skip
            zero_optimizer = "DeepSpeedZeroOptimizer_Stage3" if number == 3 else "DeepSpeedZeroOptimizer"
            assert groups["zero_optimizer"] == zero_optimizer


@pytest.mark.parametrize("stage", STAGES)
def test_final_weights_equal_the_ddp_run_of_the_same_spec(ranks, stage):
    output_dir, _ = ranks
    reference, trained = weights(output_dir, "ddp"), weights(output_dir, stage)
    assert trained.keys() == reference.keys()
    for name, tensor in trained.items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=1e-5, msg=name)
    # The comparison means something: training moved every trained tensor by far more than the tolerance, but
    # the attention's key biases, which get no gradient (the softmax over the keys does not change when one
    # vector is added to all of them).
    initial = tiny_bert().state_dict()
    trained_names = [name for name in reference if not name.startswith("bert.embeddings.")]
    moved = [name for name in trained_names if float((reference[name] - initial[name]).abs().max()) > 1e-4]
    assert [name for name in trained_names if name not in moved] == [
        "bert.encoder.layer.0.attention.self.key.bias", "bert.encoder.layer.1.attention.self.key.bias",
    ]  # fmt: skip


@pytest.mark.parametrize("stage", ["ddp", *STAGES])
def test_the_frozen_group_stays_bit_identical(ranks, stage):
    _, results = ranks
    for result in results:
        assert result[stage]["frozen_tensors"] == 5  # the embeddings: 3 tables, the LayerNorm's weight and bias
        assert result[stage]["frozen_unchanged"]


@pytest.mark.parametrize("stage", ["ddp", *STAGES])
def test_every_groups_rate_is_logged_at_every_step(ranks, stage):
    _, (first, _) = ranks
    logs = first[stage]["logs"]
    assert [entry["step"] for entry in logs] == list(range(1, STEPS + 1))
    for entry in logs:
        assert entry["learning_rate/embeddings"] == 0.0
        for group, lr in RATES.items():
            assert entry[f"learning_rate/{group}"] == pytest.approx(expected_rate(lr, entry["step"]), rel=1e-12)
    assert logs == [
        {**entry, "loss": pytest.approx(entry["loss"], rel=1e-6)} for entry in first["ddp"]["logs"]
    ]  # the same rates bit for bit, and the same losses


@pytest.mark.parametrize("stage", ["ddp", *STAGES])
def test_each_group_moves_by_its_own_rate_on_the_first_step(ranks, stage):
    """Adam's first step moves every weight by lr x g/(|g| + eps), so by its group's rate (no weight decay here).

    Per-group rates have had no effect under ZeRO-3 elsewhere (DeepSpeed #6873, ms-swift #2723): here the largest
    change in each group is that group's own rate, 2.5e-4, 5e-4 and 3e-3, and 0 for the frozen group.
    """
    _, results = ranks
    for result in results:
        updates = result[stage]["first_step_updates"]
        assert updates["embeddings"] == 0.0
        for group, lr in RATES.items():
            assert updates[group] == pytest.approx(lr, rel=1e-4), group


@pytest.mark.parametrize("stage", STAGES)
def test_deepspeeds_optimizer_holds_exactly_the_plans_groups_each_split_over_the_ranks(ranks, stage):
    _, results = ranks
    names = [name for name, _ in PLAN_GROUPS]
    for result in results:
        assert result[stage]["plan_groups"] == PLAN_GROUPS
        groups = result[stage]["deepspeed_groups"]
        assert groups["names"] == groups["wrapper_names"] == names
        assert groups["tensors"] == [count for _, count in PLAN_GROUPS]
        assert groups["scheduler_groups"] == len(PLAN_GROUPS)
    # Each rank holds half of every group, padded to an even number of elements.
    partitions = [result[stage]["deepspeed_groups"]["partition_elements"] for result in results]
    assert partitions[0] == partitions[1] == [(elements + 1) // 2 for elements in GROUP_ELEMENTS]


# Empty groups (DeepSpeedExamples PR #756: DeepSpeed drops empty param groups, and the scheduler's count breaks).
# The user froze the embeddings before the trainer was built and encoder layer 0 after it; the classifier's weight
# is a group of one decayed tensor, so it has no no-decay half.
PLAN_WHEN_BUILT = [
    ["encoder/layer_1", 6], ["encoder/layer_1", 10], ["encoder/layer_2", 6], ["encoder/layer_2", 10],
    ["classifier_weight", 1], ["rest", 1], ["rest", 2],
]  # fmt: skip
PLAN_WHEN_TRAINED = PLAN_WHEN_BUILT[2:]


@pytest.mark.parametrize("stage", STAGES)
def test_groups_emptied_by_the_users_freezing_never_reach_deepspeed(ranks, stage):
    _, results = ranks
    for result in results:
        empty = result[stage]["empty_groups"]
        assert empty["plan_groups_when_built"] == PLAN_WHEN_BUILT
        assert empty["plan_groups"] == PLAN_WHEN_TRAINED  # resolved again: layer 0 was frozen since
        assert empty["frozen_group_names"] == ["embeddings"]  # every parameter frozen by the user
        groups = empty["deepspeed_groups"]
        assert groups["names"] == groups["wrapper_names"] == [name for name, _ in PLAN_WHEN_TRAINED]
        assert groups["tensors"] == [count for _, count in PLAN_WHEN_TRAINED]
        assert groups["scheduler_groups"] == len(PLAN_WHEN_TRAINED)
        assert all(elements > 0 for elements in groups["partition_elements"])


@pytest.mark.parametrize("stage", STAGES)
def test_every_remaining_group_logs_its_rate_and_the_users_frozen_parameters_stay_put(ranks, stage):
    _, results = ranks
    for result in results:
        empty = result[stage]["empty_groups"]
        rates = [
            {key: value for key, value in entry.items() if key.startswith("learning_rate/")} for entry in empty["logs"]
        ]
        assert rates == [
            {"learning_rate/encoder/layer_2": 5e-4, "learning_rate/classifier_weight": 3e-3,
             "learning_rate/rest": 2e-3, "learning_rate/embeddings": 0.0},
            {"learning_rate/encoder/layer_2": 2.5e-4, "learning_rate/classifier_weight": 1.5e-3,
             "learning_rate/rest": 1e-3, "learning_rate/embeddings": 0.0},
        ]  # fmt: skip
        assert empty["user_frozen_tensors"] == 21  # 5 of the embeddings, 16 of layer 0
        assert empty["user_frozen_unchanged"] and empty["user_frozen_still_frozen"]


def test_a_group_of_parameters_without_elements_is_refused_before_deepspeed_gets_it(ranks):
    _, results = ranks
    for result in results:
        assert result["elementless"]["error"] == {
            "type": "SpecError",
            "message": "groups[0] (group 'prompt'): the parameters of 'prompt' ('prompt') have no elements, and "
            "DeepSpeed leaves such parameters out of its optimizer, so the group would reach it empty and be "
            "dropped, and the scheduler's and the logs' groups would no longer be the optimizer's; freeze the "
            "group (freeze: true) or leave those parameters out of it",
        }
        assert result["elementless"]["wrapped"] == "BertForSequenceClassification"  # no engine was built


# Saving and resuming: every run saved a checkpoint at step 3 of 6.


@pytest.mark.parametrize("stage", STAGES)
def test_the_deepspeed_checkpoint_carries_the_layout_of_the_ddp_run(ranks, stage):
    output_dir, _ = ranks
    checkpoint = output_dir / stage / "checkpoint-3"
    assert sorted(path.name for path in checkpoint.glob("global_step*")) == ["global_step3"]
    saved = json.loads((checkpoint / "param_groups_layout.json").read_text())
    reference = json.loads((output_dir / "ddp" / "checkpoint-3" / "param_groups_layout.json").read_text())
    assert saved == reference
    assert [group["name"] for group in saved["groups"]] == [name for name, _ in PLAN_GROUPS]


@pytest.mark.parametrize("stage", STAGES)
def test_a_resume_with_the_same_spec_continues_exactly(ranks, stage):
    output_dir, results = ranks
    for result in results:
        resumed = result[stage]["resumes"]["same_spec"]
        assert (resumed["error"], resumed["wrapped"]) == (None, "DeepSpeedEngine")
        assert resumed["logs"] == result[stage]["logs"]  # steps 4-6 logged the same rates and losses, exactly
    uninterrupted, resumed = weights(output_dir, stage), weights(output_dir, f"{stage}_resumed")
    assert [name for name in uninterrupted if not torch.equal(uninterrupted[name], resumed[name])] == []


@pytest.mark.parametrize("stage", STAGES)
def test_a_resume_with_another_rate_is_refused_naming_it(ranks, stage):
    _, results = ranks
    for result in results:
        refused = result[stage]["resumes"]["another_rate"]
        assert refused["error"]["type"] == "CheckpointLayoutError"
        assert "\n  - group 'head': lr 0.003 in the checkpoint, 0.002 now\n" in refused["error"]["message"]
        assert refused["wrapped"] == "BertForSequenceClassification"  # before DeepSpeed loaded anything


@pytest.mark.parametrize("stage", STAGES)
def test_a_resume_with_other_groups_is_refused_before_deepspeed_loads_the_checkpoint(ranks, stage):
    """DeepSpeed alone stops on this resume with errors naming no group (seen: ZeRO-1 and 2 a parameter-alignment
    mismatch, ZeRO-3 "loaded state dict has a different number of parameter groups")."""
    output_dir, results = ranks
    for result in results:
        refused = result[stage]["resumes"]["other_groups"]
        assert refused["error"]["type"] == "CheckpointLayoutError"
        assert refused["error"]["message"].splitlines()[:8] == [
            f"cannot resume from {output_dir / stage / 'checkpoint-3'}: its param groups differ from the ones the "
            "spec gives now, and torch would load optimizer state by position into the wrong parameters (and "
            "restore the old hyperparameters):",
            "  - group 'encoder/layer_1' is in the checkpoint but not in the spec now",
            "  - group 'encoder/layer_1' (no-decay half) is in the checkpoint but not in the spec now",
            "  - group 'encoder/layer_2' is in the checkpoint but not in the spec now",
            "  - group 'encoder/layer_2' (no-decay half) is in the checkpoint but not in the spec now",
            "  - group 'encoder' is new: the checkpoint has no such group",
            "  - group 'encoder' (no-decay half) is new: the checkpoint has no such group",
            "Resume with the spec the checkpoint was saved with, or start a new run from its weights (without "
            "resume_from_checkpoint), or set resume_with_changed_groups=True to carry the optimizer state over by "
            "parameter name.",
        ]
        assert refused["wrapped"] == "BertForSequenceClassification"


@pytest.mark.parametrize("stage", STAGES)
def test_resume_with_changed_groups_is_refused_under_deepspeed(ranks, stage):
    output_dir, results = ranks
    for result in results:
        refused = result[stage]["resumes"]["other_groups_switch"]
        assert refused["error"] == {
            "type": "CheckpointLayoutError",
            "message": f"cannot resume from {output_dir / stage / 'checkpoint-3'} with resume_with_changed_groups: "
            "DeepSpeed saves sharded or flattened optimizer state that names no parameter, so it cannot be carried "
            "by name; resume with the spec the checkpoint was saved with, or start a new run from its weights",
        }
        assert refused["wrapped"] == "BertForSequenceClassification"


# Per-group schedules: a head with its own warm-up (2 steps) and constant shape, from step 0, beside a body on the
# Trainer's linear schedule, over 4 steps.


@pytest.mark.parametrize("stage", STAGES)
def test_a_group_with_its_own_warmup_from_step_0_trains_as_under_ddp(ranks, stage):
    output_dir, (first, second) = ranks
    for result in (first, second):
        logs = result["schedule"][stage]["logs"]
        assert [entry["learning_rate/head"] for entry in logs] == [0.0, 1.5e-3, 3e-3, 3e-3]
        body = [entry["learning_rate/body"] for entry in logs]
        assert body == pytest.approx([expected_rate(1e-3, step, 4) for step in (1, 2, 3, 4)], rel=1e-12)
        assert logs == [
            {**entry, "loss": pytest.approx(entry["loss"], rel=1e-6)} for entry in result["schedule"]["ddp"]["logs"]
        ]
    reference, trained = weights(output_dir, "schedule_ddp"), weights(output_dir, f"schedule_{stage}")
    for name, tensor in trained.items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=1e-5, msg=name)


def test_a_later_start_is_refused_under_deepspeed_with_the_reason(ranks):
    _, results = ranks
    for result in results:
        assert result["refusals"]["later_start"] == {
            "type": "SpecError",
            "message": "groups[1].start (group 'body'): a group that starts later is not supported under DeepSpeed: "
            "DeepSpeed hands the optimizer each group as one flattened tensor with a gradient at every step, zeros "
            "before the group starts, so the optimizer counts steps the group did not train (Adam's bias "
            "correction) and the group's updates after its start are not the ones DDP would make; train with DDP "
            "(or one device), or freeze the group and train it in a second run",
        }


DIAGNOSTICS_REFUSAL = (
    "group diagnostics are not supported under DeepSpeed: it steps the optimizer inside its backward pass, before "
    "the Trainer's on_pre_optimizer_step, and its optimizer holds each group as this rank's slice of one flattened "
    "tensor, not the model's parameters, so no group's gradient, update or weight norm can be read there; turn "
    "group_diagnostics off (the Trainer still logs grad_norm and every group's learning rate)"
)


def test_group_diagnostics_are_refused_when_the_trainer_is_built(ranks):
    _, results = ranks
    for result in results:
        assert result["refusals"]["diagnostics_when_built"] == {"type": "ValueError", "message": DIAGNOSTICS_REFUSAL}


def test_the_diagnostics_callback_given_to_a_stock_trainer_refuses_when_training_begins(ranks):
    _, results = ranks
    for result in results:
        refusals = result["refusals"]
        assert refusals["diagnostics_at_train_begin"] == {"type": "ValueError", "message": DIAGNOSTICS_REFUSAL}
        assert refusals["stock_wrapped"] == "DeepSpeedEngine"


def test_a_model_partitioned_when_built_has_the_layout_of_the_whole_model(ranks):
    """``from_pretrained``/``from_config`` under a ZeRO-3 config build with ``zero.Init``: every parameter is a
    placeholder of shape (0,); the layout and the plan still record the whole shapes (``ds_shape``)."""
    _, results = ranks
    for result in results:
        partitioned = result["zero_init"]
        assert partitioned["placeholder_shape"] == [0]
        assert partitioned["layout"] == partitioned["whole_layout"]
        assert partitioned["layout"]["groups"][0]["parameters"][0] == [
            "bert.encoder.layer.0.attention.self.query.weight", [16, 16],
        ]  # fmt: skip
        assert partitioned["elements"] == partitioned["whole_elements"] == [1600, *GROUP_ELEMENTS]
