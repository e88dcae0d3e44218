"""Run configurations: the default, files, overrides, and errors that name the key."""

from __future__ import annotations

import dataclasses
import itertools
import time

import pytest
import yaml

from layerwise_trainer.app.run_config import (
    ConfigError,
    apply_overrides,
    default_config_text,
    dump_config,
    load_run_config,
    parse_run_config,
)
from layerwise_trainer.core.spec import parse_spec

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
    assert [group.name for group in config.param_groups.groups] == ["embeddings", "encoder", "head"]
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
        (
            {**MINIMAL, "tokenizer": {"max_length": "long"}},
            "tokenizer.max_length: expected a whole number >= 1, got 'long' (str)",
        ),
        (
            {**MINIMAL, "tokenizer": {"train": {"vocab_size": 0}}},
            "tokenizer.train.vocab_size: expected a whole number from 1 to 1,000,000",
        ),
        ({**MINIMAL, "tokenizer": {"train": {}, "name_or_path": "x"}}, "tokenizer: give at most one of"),
        ({**MINIMAL, "metrics": ["acuracy"]}, "metrics: unknown metric 'acuracy' (str); did you mean 'accuracy'?"),
        ({**MINIMAL, "metrics": []}, "metrics: expected a non-empty list"),
        ({**MINIMAL, "peft": ["r"]}, "peft: expected a mapping"),
        (["model"], "config: expected a mapping, got list"),
    ],
)
def test_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError) as caught:
        parse_run_config(raw)
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_checkpoint_to_resume_from_is_relative_to_the_config_file(tmp_path, monkeypatch):
    checkpoint = tmp_path / "configs" / "out" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    (checkpoint / "model.safetensors").write_bytes(b"")
    config_file = tmp_path / "configs" / "run.yaml"
    config_file.write_text(yaml.safe_dump({**MINIMAL, "training": {"resume_from_checkpoint": "out/checkpoint-2"}}))
    monkeypatch.chdir(tmp_path)  # not the config's directory: the checkpoint was looked for here before
    assert load_run_config(config_file).training["resume_from_checkpoint"] == str(checkpoint)


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
    assert config.param_groups == parse_spec(tmp_path / "spec.yaml")  # read from the config's directory
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


# ---- Values checked when the config is read --------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.learning_rate=fast", "training.learning_rate: expected a finite number >= 0, got 'fast' (str)"),
        ("training.learning_rate=-1", "training.learning_rate: expected a finite number >= 0, got -1 (int)"),
        ("training.learning_rate=.nan", "training.learning_rate: expected a finite number >= 0, got nan (float)"),
        ("training.learning_rate=.inf", "training.learning_rate: expected a finite number >= 0, got inf (float)"),
        ("training.weight_decay=fast", "training.weight_decay: expected a finite number >= 0, got 'fast' (str)"),
        ("training.max_steps=fast", "training.max_steps: expected a whole number >= 1, or -1, got 'fast' (str)"),
        ("training.max_steps=0", "training.max_steps: expected a whole number >= 1, or -1, got 0 (int)"),
        ("training.num_train_epochs=one", "training.num_train_epochs: expected a finite number > 0, got 'one' (str)"),
        (
            "training.per_device_train_batch_size=-1",
            "training.per_device_train_batch_size: expected a whole number >= 1, got -1 (int)",
        ),
        (
            "training.per_device_train_batch_size=2.5",
            "training.per_device_train_batch_size: expected a whole number >= 1, got 2.5 (float)",
        ),
        ("training.adam_beta2=1", "training.adam_beta2: expected a finite number >= 0 and < 1, got 1 (int)"),
        ("training.seed=-1", "training.seed: expected a whole number >= 0 and <= 4294967295, got -1 (int)"),
        ("training.bf16=yes", "training.bf16: expected true or false, got 'yes' (str)"),
        ("training.eval_steps=-5", "training.eval_steps: expected a finite number > 0 or null, got -5 (int)"),
        (
            "training.optim=adamw_tourch",
            "training.optim: expected one of 'adamw_torch', 'adamw_torch_fused', 'adamw_torch_xla', "
            "'adamw_torch_npu_fused' and ",
        ),
        (
            "training.lr_scheduler_type=cosin",
            "training.lr_scheduler_type: expected one of 'linear', 'cosine', 'cosine_with_restarts', 'polynomial' "
            "and 8 more, got 'cosin' (str); did you mean 'cosine'",
        ),
        ("model.from_config.hidden_size=fast", "model.from_config.hidden_size: expected int, got 'fast' (str)"),
        ("model.from_config.num_hidden_layers=2.5", "model.from_config.num_hidden_layers: expected int, got 2.5"),
        ("model.from_config.model_type=bertt", "model.from_config.model_type: unknown model type 'bertt' (str); "),
    ],
)
def test_values_are_checked_when_the_config_is_read(override, message):
    with pytest.raises(ConfigError) as caught:
        load_run_config(None, [override])
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_misspelt_optimizer_gets_a_suggestion():
    with pytest.raises(ConfigError, match=r"got 'adamw_tourch' \(str\); did you mean 'adamw_torch'"):
        load_run_config(None, ["training.optim=adamw_tourch"])


def test_transformers_own_checks_run_when_the_config_is_read():
    with pytest.raises(ConfigError) as caught:
        load_run_config(None, ["training.load_best_model_at_end=true"])  # eval per epoch, save "no"
    message = str(caught.value)
    assert message.startswith("training.load_best_model_at_end: --load_best_model_at_end requires the save and eval")
    assert "\n" not in message


def test_a_model_type_typo_gets_a_suggestion():
    with pytest.raises(ConfigError, match=r"^model\.from_config\.model_type: unknown model type 'bertt' \(str\); did "
                                          r"you mean 'bert'"):  # fmt: skip
        load_run_config(None, ["model.from_config.model_type=bertt"])


def test_good_values_pass():
    config = load_run_config(None, ["training.learning_rate=0", "training.max_steps=-1", "training.eval_steps=null",
                                    "training.optim=sgd", "model.from_config.hidden_size=64"])  # fmt: skip
    assert (config.training["learning_rate"], config.training["optim"]) == (0, "sgd")
    assert config.model.from_config["hidden_size"] == 64


# ---- Hostile input: nothing walks or prints an alias graph ------------------------------------------


def alias_bomb(levels: int) -> str:
    """A YAML flow mapping of nested aliases: level k names the level below 9 times, 9**(levels + 1) nodes."""
    names = [chr(97 + level) for level in range(levels + 1)]
    parts = [f"a: &a [{', '.join(['x'] * 9)}]"]
    parts += [f"{name}: &{name} [{', '.join([f'*{below}'] * 9)}]" for below, name in itertools.pairwise(names)]
    return "{" + ", ".join(parts) + "}"


# 9**9 nodes (the YAML loader refuses it) and 9**6 = 531,441 (under the loader's limit: the run config must
# refuse it without walking it).
BOMBS = {"huge": alias_bomb(8), "medium": alias_bomb(5)}


def shared_graph(depth: int) -> list:
    """A list of 9 references to a list of 9 ... : 9**depth leaves from a few hundred bytes of objects."""
    node: list = ["x"] * 9
    for _ in range(depth):
        node = [node] * 9
    return node


@pytest.mark.parametrize("bomb", BOMBS)
@pytest.mark.parametrize(
    ("place", "key"),
    [
        ("training.learning_rate", "training.learning_rate"),
        ("training.report_to", "training.report_to"),
        ("training.lr_scheduler_kwargs", "training.lr_scheduler_kwargs"),
        ("model.from_config.hidden_size", "model.from_config.hidden_size"),
        ("model.from_config.extra", "model.from_config.extra"),
        ("model.from_config", "model.from_config"),
        ("tokenizer.max_length", "tokenizer.max_length"),
        ("data.label_names", "data.label_names"),
        ("metrics", "metrics"),
    ],
)
def test_an_alias_bomb_in_a_run_config_is_refused_fast(place, key, bomb, tmp_path):
    raw = yaml.safe_load(default_config_text())
    node = raw
    *parents, last = place.split(".")
    for part in parents:
        node = node[part]
    node[last] = "BOMB"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw).replace("BOMB", BOMBS[bomb]), encoding="utf-8")
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        load_run_config(path)
    assert time.perf_counter() - started < 1.0
    assert key in str(caught.value) or "alias" in str(caught.value), str(caught.value)
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize("bomb", BOMBS)
@pytest.mark.parametrize("place", ["training.learning_rate", "training.report_to", "model.from_config.extra", "peft"])
def test_an_alias_bomb_in_a_set_value_is_refused_fast(place, bomb):
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        load_run_config(None, [f"{place}={BOMBS[bomb]}"])
    assert time.perf_counter() - started < 1.0
    assert place in str(caught.value), str(caught.value)


def test_overrides_copy_only_the_path_they_change():
    raw = {"training": {"num_train_epochs": 3}, "shared": shared_graph(10)}  # 9**11 leaves if walked
    started = time.perf_counter()
    result = apply_overrides(raw, ["training.num_train_epochs=1"])
    assert time.perf_counter() - started < 1.0
    assert result["training"] == {"num_train_epochs": 1}
    assert result["shared"] is raw["shared"]


def test_dumping_keeps_shared_values_shared():
    config = parse_run_config({**MINIMAL, "peft": {"target_modules": ["query", "value"]}})
    graph = shared_graph(10)
    config = dataclasses.replace(config, param_groups={"groups": [], "note": graph})
    started = time.perf_counter()
    text = dump_config(config)
    assert time.perf_counter() - started < 1.0
    assert len(text) < 5000


# ---- --set reaches list elements ------------------------------------------------------------------

SPEC = {"groups": [{"name": "body", "match": "bert.*"}, {"name": "head", "match": "classifier.*"}]}


@pytest.mark.parametrize("key", ["param_groups.groups.1.match", "param_groups.groups[1].match"])
def test_set_reaches_a_list_element(key):
    raw = {"param_groups": SPEC}
    result = apply_overrides(raw, [f"{key}=pooler.*"])
    assert result["param_groups"]["groups"] == [
        {"name": "body", "match": "bert.*"},
        {"name": "head", "match": "pooler.*"},
    ]
    assert SPEC["groups"][1]["match"] == "classifier.*"  # the input is not changed


def test_set_replaces_a_whole_list_element():
    result = apply_overrides({"metrics": ["accuracy", "f1_weighted"]}, ["metrics[1]=f1_macro"])
    assert result == {"metrics": ["accuracy", "f1_macro"]}


def test_set_with_a_nested_index():
    result = apply_overrides({"grid": [[1, 2], [3, 4]]}, ["grid[1][0]=9"])
    assert result == {"grid": [[1, 2], [9, 4]]}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "param_groups.groups[2].match=x",
            "--set 'param_groups.groups[2].match=x': index 2 is out of range: param_groups.groups has 2 items "
            "(indexes 0 to 1)",
        ),
        (
            "param_groups.groups.7.match=x",
            "--set 'param_groups.groups.7.match=x': index 7 is out of range: param_groups.groups has 2 items",
        ),
        (
            "param_groups[0].match=x",
            "--set 'param_groups[0].match=x': param_groups is not a list, it is a mapping; [0] indexes a list",
        ),
        (
            "param_groups.groups.first.match=x",
            "--set 'param_groups.groups.first.match=x': param_groups.groups is a list: "
            "reach an element by its index, e.g. param_groups.groups[0] or param_groups.groups.0",
        ),
        ("param_groups.groups[x].match=x", "--set 'param_groups.groups[x].match=x': expected key.path=value"),
        (
            "param_groups.groups[-1].match=x",
            "--set 'param_groups.groups[-1].match=x': negative indexes are not supported; count from the start, from 0",
        ),
    ],
)
def test_set_list_errors(override, message):
    with pytest.raises(ConfigError) as caught:
        apply_overrides({"param_groups": SPEC}, [override])
    assert str(caught.value).startswith(message), str(caught.value)


def test_print_config_of_a_list_override_has_no_bogus_key():
    config = load_run_config(None, ["param_groups.groups[2].lr_scale=3"])
    assert config.param_groups.to_dict()["groups"][2] == {"name": "head", "match": ["bert.pooler.*", "classifier.*"],
                                                          "lr_scale": 3}  # fmt: skip
    assert "groups[2]" not in dump_config(config)
