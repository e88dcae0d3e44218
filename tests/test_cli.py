"""The command line: `train` end to end on tiny settings, `plan` for an encoder and a decoder, errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import tiny_models
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertJapaneseTokenizer

from layerwise_trainer import __version__
from layerwise_trainer.cli import main
from layerwise_trainer.run_config import dump_config, load_run_config
from layerwise_trainer.sentiment_data import generate_reviews, split_rows

TINY_RUN = [
    "data.builtin.num_examples=120",
    "model.from_config={model_type: bert, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, "
    "intermediate_size: 64, max_position_embeddings: 64}",
    "tokenizer.train.vocab_size=500",
    "tokenizer.max_length=32",
    "training.num_train_epochs=1",
    "training.per_device_train_batch_size=16",
    "training.logging_steps=1",
    "training.disable_tqdm=true",
]


def run(argv, capsys):
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def overrides(items):
    return [part for item in items for part in ("--set", item)]


def test_version(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out == f"layerwise-trainer {__version__}\n"


def test_no_command_prints_help(capsys):
    status, out, _ = run([], capsys)
    assert status == 0
    assert "train" in out and "plan" in out


def test_print_config(capsys):
    status, out, _ = run(["train", "--print-config", "--set", "training.num_train_epochs=1"], capsys)
    assert status == 0
    assert out == dump_config(load_run_config(None, ["training.num_train_epochs=1"]))


def test_train_end_to_end(tmp_path, capsys):
    output_dir = tmp_path / "run"
    status, out, err = run(["train", *overrides([*TINY_RUN, f"training.output_dir={output_dir}"])], capsys)
    assert status == 0, err

    # The summary names the metrics, the groups and every file.
    assert "test: accuracy " in out and "(majority class " in out
    assert "encoder/layer_1" in out and "head" in out
    assert f"written to {output_dir}:" in out

    expected_files = {
        "config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt", "training_args.bin",
        "metrics.json", "config.yaml", "groups.txt", "groups.json", "trainer_state.json", "learning_rates.png",
    }  # fmt: skip
    assert expected_files <= {path.name for path in output_dir.iterdir()}

    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert set(metrics) == {"train", "validation", "test", "test_majority_baseline"}
    assert 0.0 <= metrics["test"]["test_accuracy"] <= 1.0
    assert {"test_accuracy", "test_f1_weighted", "test_loss"} <= set(metrics["test"])
    splits = split_rows(generate_reviews(120))
    majority = Counter(row["label"] for row in splits["train"]).most_common(1)[0][0]
    test_labels = [row["label"] for row in splits["test"]]
    assert metrics["test_majority_baseline"] == test_labels.count(majority) / len(test_labels)

    resolved = yaml.safe_load((output_dir / "config.yaml").read_text())
    assert resolved["data"]["builtin"] == {"num_examples": 120, "seed": 0}
    assert resolved["param_groups"]["groups"][1] == {"name": "encoder", "match": "bert.encoder.*", "layer_decay": 0.8}

    table = (output_dir / "groups.txt").read_text()
    assert table.splitlines()[0].split() == ["group", "tensors", "parameters", "lr", "weight", "decay", "no-decay",
                                             "tensors", "frozen", "layer"]  # fmt: skip
    assert [line.split()[0] for line in table.splitlines()[2:]] == [
        "embeddings", "encoder/layer_1", "encoder/layer_2", "head",
    ]  # fmt: skip
    groups = json.loads((output_dir / "groups.json").read_text())
    assert [row["name"] for row in groups["rows"]] == ["embeddings", "encoder/layer_1", "encoder/layer_2", "head"]
    assert groups["rows"][1]["lr"] == pytest.approx(5e-4 * 0.8**2)

    state = json.loads((output_dir / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert len(logged) == 6  # 96 training examples, batch 16
    assert {key for key in logged[0] if key.startswith("learning_rate/")} == {
        "learning_rate/embeddings", "learning_rate/encoder/layer_1", "learning_rate/encoder/layer_2",
        "learning_rate/head",
    }  # fmt: skip

    png = (output_dir / "learning_rates.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    model = AutoModelForSequenceClassification.from_pretrained(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert isinstance(tokenizer, BertJapaneseTokenizer)
    assert model.config.id2label == {0: "positive", 1: "neutral", 2: "negative"}
    with torch.no_grad():
        logits = model(**tokenizer(["映画は最高でした。"], return_tensors="pt")).logits
    assert logits.shape == (1, 3)


def test_train_with_a_bad_config_key(tmp_path, capsys):
    status, _, err = run(["train", "--set", "training.num_train_epoch=1"], capsys)
    assert status == 2
    assert err == (
        "layerwise-trainer train: error: training.num_train_epoch: not a TrainingArguments field; "
        "did you mean 'num_train_epochs'?\n"
    )


def test_train_with_a_missing_config_file(tmp_path, capsys):
    status, _, err = run(["train", "--config", str(tmp_path / "nope.yaml")], capsys)
    assert status == 2
    assert err == f"layerwise-trainer train: error: {tmp_path / 'nope.yaml'}: no such file\n"


def test_train_with_a_bad_spec(tmp_path, capsys):
    status, _, err = run(
        [
            "train",
            *overrides(
                [*TINY_RUN, f"training.output_dir={tmp_path}", "param_groups=[{name: head, match: 'clasifier.*'}]"]
            ),
        ],
        capsys,
    )
    assert status == 2
    assert (
        "groups[0].match[0] (group 'head'): pattern 'clasifier.*' matches no parameter of BertForSequenceClassification"
        in err
    )


def save_config(family, directory):
    model_cls, config = tiny_models.CONFIGS[family]()
    config.architectures = [model_cls.__name__]
    config.save_pretrained(directory)
    return directory


def test_plan_for_bert_prints_the_table_without_weights(tmp_path, capsys):
    model_dir = save_config("bert", tmp_path / "bert")
    assert [path.name for path in model_dir.iterdir()] == ["config.json"]
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump([
        {"name": "body", "match": "bert.embeddings.*", "lr": 0},
        {"name": "encoder", "match": "bert.encoder.*", "layer_decay": 0.5},
        {"name": "head", "match": "classifier.*", "lr": 1e-3},
    ]))  # fmt: skip
    status, out, _ = run(
        ["plan", "--model", str(model_dir), "--spec", str(spec), "--learning-rate", "1e-4", "--weight-decay", "0.01"],
        capsys,
    )
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["group", "tensors", "parameters", "lr", "weight", "decay", "no-decay", "tensors",
                                "frozen", "layer"]  # fmt: skip
    # hidden 16, intermediate 32: a block has 4 * (16 * 16 + 16) + 2 * 32 + (16 * 32 + 32) + (32 * 16 + 16) = 2,224
    rows = [line.split() for line in lines[2:7]]
    assert rows == [
        ["body", "5", "800", "0", "-", "-", "yes", "-"],
        ["encoder/layer_1", "16", "2,224", "2.5e-05", "0.01", "10", "no", "1"],
        ["encoder/layer_2", "16", "2,224", "5e-05", "0.01", "10", "no", "2"],
        ["head", "2", "51", "0.001", "0.01", "1", "no", "-"],
        ["default", "2", "272", "0.0001", "0.01", "1", "no", "-"],
    ]
    assert (
        lines[8] == "in 'default' (no group matched them): 2 tensors: bert.pooler.dense.weight, bert.pooler.dense.bias"
    )


def test_plan_for_a_decoder_as_json(tmp_path, capsys):
    model_dir = save_config("llama", tmp_path / "llama")
    spec = json.dumps({
        "layer_decay": 0.5,
        "groups": [
            {"name": "embeddings", "match": "model.embed_tokens.*", "freeze": True},
            {"name": "lm_head", "match": "lm_head.*", "lr_scale": 2, "layer_decay": 1},
        ],
    })  # fmt: skip
    status, out, _ = run(["plan", "--model", str(model_dir), "--spec", spec, "--format", "json"], capsys)
    assert status == 0
    plan = json.loads(out)
    assert plan["num_layers"] == 2
    assert [(row["name"], row["frozen"], row["layer_id"]) for row in plan["rows"]] == [
        ("embeddings", True, None),
        ("lm_head", False, None),
        ("default/layer_1", False, 1),
        ("default/layer_2", False, 2),
        ("default/layer_3", False, 3),
    ]
    lrs = {row["name"]: row["lr"] for row in plan["rows"]}
    assert lrs == {"embeddings": 0.0, "lm_head": 1e-4, "default/layer_1": 5e-5 * 0.25, "default/layer_2": 5e-5 * 0.5,
                   "default/layer_3": 5e-5}  # fmt: skip
    default = set(plan["default_parameters"])
    assert "model.norm.weight" in default and "model.layers.1.mlp.up_proj.weight" in default
    assert plan["groups"][0]["parameter_names"] == ["model.embed_tokens.weight"]


def test_plan_with_a_bad_spec_exits_2_with_the_message(tmp_path, capsys):
    model_dir = save_config("bert", tmp_path / "bert")
    status, out, err = run(
        ["plan", "--model", str(model_dir), "--spec", '[{"name": "head", "match": "head.*"}]'], capsys
    )
    assert status == 2
    assert out == ""
    assert err.startswith(
        "layerwise-trainer plan: error: groups[0].match[0] (group 'head'): pattern 'head.*' matches no parameter of "
        "BertForSequenceClassification"
    )


def test_plan_checks_the_optimizer(tmp_path, capsys):
    model_dir = save_config("bert", tmp_path / "bert")
    spec = '[{"name": "head", "match": "classifier.*", "momentum": 0.9}]'
    status, _, err = run(["plan", "--model", str(model_dir), "--spec", spec], capsys)
    assert status == 2
    assert "unknown key 'momentum': neither a spec key nor a hyperparameter of adamw_torch" in err
    status, _, _ = run(["plan", "--model", str(model_dir), "--spec", spec, "--optim", "sgd"], capsys)
    assert status == 0


def test_plan_builds_the_head_the_task_names(tmp_path, capsys):
    model_dir = tmp_path / "bert-pretrained"
    config = tiny_models.CONFIGS["bert"]()[1]
    config.architectures = ["BertForMaskedLM"]  # as a pretrained checkpoint's config says
    config.save_pretrained(model_dir)
    spec = '[{"name": "head", "match": "classifier.*"}]'
    status, _, err = run(["plan", "--model", str(model_dir), "--spec", spec], capsys)
    assert status == 2 and "matches no parameter of BertForMaskedLM" in err
    status, out, _ = run(
        ["plan", "--model", str(model_dir), "--spec", spec, "--task", "sequence-classification", "--num-labels", "5"],
        capsys,
    )
    assert status == 0
    assert out.splitlines()[2].split()[:3] == ["head", "2", "85"]  # 16 x 5 + 5


def test_the_command_line_knows_every_task():
    from layerwise_trainer.cli import TASKS
    from layerwise_trainer.planning import TASKS as PLANNING_TASKS

    assert tuple(PLANNING_TASKS) == TASKS
