"""`plan --resume-from`: what a resume across a change of groups would carry, without training (issue 13)."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import RandomClassificationData, tiny_bert, training_args

from layerwise_trainer import LayerwiseTrainer
from layerwise_trainer.app.cli import main
from layerwise_trainer.app.run_config import ConfigError, check_training

SPEC = [
    {"name": "embeddings", "match": "bert.embeddings.*", "freeze": True},
    {"name": "encoder", "match": "bert.encoder.*", "lr": 1e-3},
    {"name": "head", "match": ["classifier.*", "bert.pooler.*"], "lr": 3e-3},
]
# The embeddings unfrozen, the pooler moved to its own group, the encoder's rate changed.
CHANGED = [
    {"name": "embeddings", "match": "bert.embeddings.*", "lr": 1e-4},
    {"name": "encoder", "match": "bert.encoder.*", "lr": 2e-3},
    {"name": "pooler", "match": "bert.pooler.*", "lr": 3e-3},
    {"name": "classifier", "match": "classifier.*", "lr": 3e-3},
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    args = training_args(root, save_strategy="steps", save_steps=2, max_steps=2, weight_decay=0.01)
    LayerwiseTrainer(model=tiny_bert(), args=args, train_dataset=RandomClassificationData(), param_groups=SPEC).train()
    return root / "checkpoint-2"


def plan(checkpoint, spec, capsys, *extra):
    argv = ["plan", "--model", str(checkpoint), "--spec", json.dumps(spec), "--weight-decay", "0.01"]
    status = main([*argv, "--resume-from", str(checkpoint), *extra])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_plan_shows_what_a_resume_would_carry_start_fresh_and_drop(checkpoint, capsys):
    status, out, _ = plan(checkpoint, CHANGED, capsys)
    assert status == 0
    assert out.splitlines()[-12:] == [
        f"Optimizer state carried by parameter name from {checkpoint}:",
        "",
        "| group | carried | fresh | dropped | changed hyperparameters |",
        "| --- | ---: | ---: | ---: | --- |",
        "| embeddings | 0 | 3 | 0 | - |",
        "| embeddings (no-decay half) | 0 | 2 | 0 | - |",
        "| encoder | 12 | 0 | 0 | lr 0.001 -> 0.002 |",
        "| encoder (no-decay half) | 20 | 0 | 0 | lr 0.001 -> 0.002 |",
        "| pooler | 1 | 0 | 0 | - |",
        "| pooler (no-decay half) | 1 | 0 | 0 | - |",
        "| classifier | 1 | 0 | 0 | - |",
        "| classifier (no-decay half) | 1 | 0 | 0 | - |",
    ]


def test_plan_with_the_saved_spec_says_the_resume_is_exact(checkpoint, capsys):
    status, out, _ = plan(checkpoint, SPEC, capsys)
    assert status == 0
    assert out.splitlines()[-1] == f"resuming from {checkpoint}: its param groups are the spec's, the resume is exact"


def test_plan_as_json_has_the_transfer(checkpoint, capsys):
    status, out, _ = plan(checkpoint, CHANGED, capsys, "--format", "json")
    assert status == 0
    rows = json.loads(out)["resume_transfer"]
    assert rows[2]["group"] == "encoder" and rows[2]["changes"] == ["lr 0.001 -> 0.002"]
    assert rows[6] == {
        "group": "classifier", "carried": ["classifier.weight"], "fresh": [], "reshaped": [], "dropped": [],
        "changes": [],
    }  # fmt: skip


def test_plan_with_a_resume_that_would_be_refused_exits_2_with_the_message(checkpoint, capsys):
    status, out, err = plan(checkpoint, CHANGED, capsys, "--optim", "sgd")
    assert status == 2 and out == ""
    assert err == (
        f"layerwise-trainer plan: error: cannot resume from {checkpoint} with resume_with_changed_groups: it was "
        "saved with torch.optim.adamw.AdamW and the optimizer now is torch.optim.sgd.SGD: their states hold "
        "other tensors\n"
    )


def test_the_run_config_takes_the_switch():
    check_training({"resume_with_changed_groups": True})
    with pytest.raises(ConfigError, match="training.resume_with_changed_groups: expected true or false, got 'yes'"):
        check_training({"resume_with_changed_groups": "yes"})


# ---- A run config whose tokenizer is trained: the plan sizes the embeddings as the checkpoint has them ----


@pytest.fixture(scope="module")
def trained_run_config(tmp_path_factory):
    """A run config that trains its tokenizer (`vocab_size: 300`), and the checkpoint its run saved."""
    root = tmp_path_factory.mktemp("trained-tokenizer")
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"from_config": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                  "intermediate_size": 32, "max_position_embeddings": 32}},
        "tokenizer": {"train": {"vocab_size": 300}, "max_length": 16},
        "data": {"builtin": {"num_examples": 60}},
        "training": {"output_dir": "out", "max_steps": 2, "save_strategy": "steps", "save_steps": 2,
                     "per_device_train_batch_size": 16, "disable_tqdm": True, "report_to": "none",
                     "eval_strategy": "no"},
        "param_groups": [{"name": "embeddings", "match": "bert.embeddings.*", "lr_scale": 0.5}],
    }))  # fmt: skip
    assert main(["train", "--config", str(config), "--set", f"training.output_dir={root / 'out'}"]) == 0
    return config, root / "out" / "checkpoint-2"


def test_plan_of_a_run_config_sizes_the_embeddings_as_the_checkpoint_has_them(trained_run_config, capsys):
    config, checkpoint = trained_run_config
    capsys.readouterr()
    # The trainer keeps every character of the corpus, as a piece and as a continuation: 593 entries, not 300.
    assert json.loads((checkpoint / "config.json").read_text())["vocab_size"] == 593
    status, out, err = main(["plan", "--spec", str(config), "--resume-from", str(checkpoint)]), *capsys.readouterr()
    assert status == 0, err
    # The plan sized the embeddings at 300 entries and reported them reshaped; the resume itself is exact.
    assert out.splitlines()[-1] == f"resuming from {checkpoint}: its param groups are the spec's, the resume is exact"
