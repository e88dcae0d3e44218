"""Run configurations: the default, files, overrides, and errors that name the key."""

from __future__ import annotations

import pytest
import yaml

from layerwise_trainer.run_config import (
    ConfigError,
    apply_overrides,
    default_config_text,
    dump_config,
    load_run_config,
    parse_run_config,
)

MINIMAL = {"model": {"from_config": {"hidden_size": 16}}, "data": {"builtin": {}}}


def test_the_default_config():
    config = load_run_config()
    assert config.source == "built-in default"
    assert config.model.from_config["model_type"] == "bert"
    assert config.model.name_or_path is None
    assert config.tokenizer.train == {"vocab_size": 8000}
    assert config.tokenizer.max_length == 64
    assert config.data.builtin == {"num_examples": 6000, "seed": 0}
    assert config.training["learning_rate"] == 5e-4
    assert config.training["save_strategy"] == "no"  # YAML 1.2: `no` stays a string
    assert [group["name"] for group in config.param_groups["groups"]] == ["embeddings", "encoder", "head"]
    assert config.metrics == ("accuracy", "f1_weighted")


def test_overrides_are_typed_and_nest():
    raw = apply_overrides(
        {"training": {"num_train_epochs": 3}},
        ["training.num_train_epochs=1", "training.learning_rate=2e-5", "data.builtin.seed=7", "metrics=[accuracy]",
         "training.report_to=none", "training.bf16=false"],
    )  # fmt: skip
    assert raw == {
        "training": {"num_train_epochs": 1, "learning_rate": 2e-5, "report_to": "none", "bf16": False},
        "data": {"builtin": {"seed": 7}},
        "metrics": ["accuracy"],
    }


def test_overrides_do_not_change_the_input():
    raw = {"training": {"num_train_epochs": 3}}
    apply_overrides(raw, ["training.num_train_epochs=1"])
    assert raw == {"training": {"num_train_epochs": 3}}


def test_override_on_the_default():
    config = load_run_config(None, ["training.num_train_epochs=1", "param_groups=null"])
    assert config.training["num_train_epochs"] == 1
    assert config.param_groups is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.num_train_epochs", "--set 'training.num_train_epochs': expected key.path=value"),
        ("=3", "--set '=3': expected key.path=value"),
        ("training..epochs=3", "--set 'training..epochs=3': expected key.path=value"),
        (
            "training.num_train_epochs.x=1",
            "--set 'training.num_train_epochs.x=1': training.num_train_epochs is not a section",
        ),
        ("training.x=[1, 2", "--set training.x: line 1, column 6: not valid YAML"),
    ],
)
def test_override_errors(override, message):
    with pytest.raises(ConfigError) as caught:
        apply_overrides({"training": {"num_train_epochs": 3}}, [override])
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**MINIMAL, "trainig": {}}, "config.trainig: unknown key; did you mean 'training'?"),
        ({"data": {"builtin": {}}}, "model: missing required section"),
        ({"model": MINIMAL["model"]}, "data: missing required section"),
        (
            {**MINIMAL, "training": {"num_train_epoch": 1}},
            "training.num_train_epoch: not a TrainingArguments field; did you mean 'num_train_epochs'?",
        ),
        ({**MINIMAL, "training": {"param_groups": "x.yaml"}}, "training.param_groups: give the spec in the top-level"),
        ({"model": {"name_or_path": "x", "from_config": {}}, "data": {"builtin": {}}}, "model: give exactly one of"),
        (
            {"model": {"nmae_or_path": "x"}, "data": {"builtin": {}}},
            "model.nmae_or_path: unknown key; did you mean 'name_or_path'?",
        ),
        (
            {**MINIMAL, "model": {"from_config": {}, "num_labels": 0}},
            "model.num_labels: expected a whole number >= 1, got 0",
        ),
        (
            {**MINIMAL, "data": {"builtin": {}, "hub": {"path": "x"}}},
            "data: give exactly one of 'builtin', 'hub' and 'files', got ['builtin', 'hub']",
        ),
        ({**MINIMAL, "data": {"hub": {"name": "japanese"}}}, "data.hub.path: expected the data set's hub id"),
        ({**MINIMAL, "data": {"files": {"validation": "v.jsonl"}}}, "data.files.train: missing"),
        ({**MINIMAL, "data": {"builtin": {"size": 3}}}, "data.builtin.size: unknown key"),
        (
            {**MINIMAL, "data": {"builtin": {}, "label_names": "pos"}},
            "data.label_names: expected a list of class names",
        ),
        ({**MINIMAL, "tokenizer": {"max_length": "long"}}, "tokenizer.max_length: expected a whole number, got 'long'"),
        (
            {**MINIMAL, "tokenizer": {"train": {"vocab_size": 0}}},
            "tokenizer.train.vocab_size: expected a whole number >= 1",
        ),
        ({**MINIMAL, "tokenizer": {"train": {}, "name_or_path": "x"}}, "tokenizer: give at most one of"),
        ({**MINIMAL, "metrics": ["acuracy"]}, "metrics: unknown metric 'acuracy'; did you mean 'accuracy'?"),
        ({**MINIMAL, "metrics": []}, "metrics: expected a non-empty list"),
        ({**MINIMAL, "peft": ["r"]}, "peft: expected a mapping"),
        (["model"], "config: expected a mapping, got list"),
    ],
)
def test_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError) as caught:
        parse_run_config(raw)
    assert str(caught.value).startswith(message), str(caught.value)


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "spec.yaml").write_text("- {name: head, match: 'classifier.*'}\n")
    (tmp_path / "train.jsonl").write_text("")
    (tmp_path / "local-model").mkdir()
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump({
        "model": {"name_or_path": "local-model"},
        "data": {"files": {"train": "train.jsonl"}},
        "param_groups": "spec.yaml",
    }))  # fmt: skip
    config = load_run_config(config_file)
    assert config.model.name_or_path == str(tmp_path / "local-model")
    assert config.data.files == {"train": str(tmp_path / "train.jsonl")}
    assert config.param_groups == str(tmp_path / "spec.yaml")
    assert config.source == str(config_file)


def test_a_hub_id_stays_a_hub_id(tmp_path):
    config = parse_run_config({"model": {"name_or_path": "org/model"}, "data": {"builtin": {}}}, tmp_path)
    assert config.model.name_or_path == "org/model"


def test_missing_config_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'nope.yaml'}: no such file$"):
        load_run_config(tmp_path / "nope.yaml")


def test_a_config_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("- model\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_run_config(path)


def test_dump_round_trips():
    config = load_run_config()
    again = parse_run_config(yaml.safe_load(dump_config(config)))
    assert again.to_dict() == config.to_dict()


def test_default_config_ships_as_the_offline_example(repo_root):
    assert (repo_root / "examples" / "offline_default.yaml").read_text(encoding="utf-8") == default_config_text()
