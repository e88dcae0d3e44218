"""The command line: `train` end to end on tiny settings, `plan` for an encoder and a decoder, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from helpers import FAMILIES
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertJapaneseTokenizer

from layerwise_trainer import __version__
from layerwise_trainer.app.cli import main
from layerwise_trainer.app.ja.sentiment_data import generate_reviews, split_rows
from layerwise_trainer.app.run_config import dump_config, load_run_config

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


def test_no_command_prints_the_usage_and_exits_2(capsys):
    status, out, err = run([], capsys)
    assert (status, out) == (2, "")
    assert err == (
        "layerwise-trainer: error: a command is required, train or plan "
        "(usage: layerwise-trainer [-h] [--version] COMMAND ...)\n"
    )


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
    model_cls, config = FAMILIES[family]()
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
    config = FAMILIES["bert"]()[1]
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


def test_the_command_line_offers_every_task_of_the_one_table():
    from layerwise_trainer.app.cli import build_parser
    from layerwise_trainer.app.tasks import TASKS

    plan = build_parser()._subparsers._group_actions[0].choices["plan"]
    (task,) = [action for action in plan._actions if action.dest == "task"]
    assert task.choices == ("auto", *TASKS)


# ---- Mistakes on the command line: exit 2, one line on stderr, nothing prepared ---------------------

COMMAND = shutil.which("layerwise-trainer") or str(Path(sys.executable).parent / "layerwise-trainer")


def run_installed(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed console command, as a user does."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}  # never wait on the network
    return subprocess.run([COMMAND, *argv], capture_output=True, text=True, timeout=120, cwd=cwd, env=environment)


def assert_one_line_error(result: subprocess.CompletedProcess, command: str, fragment: str) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert result.stderr.startswith(f"layerwise-trainer {command}: error: "), result.stderr
    assert fragment in result.stderr, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save_config("bert", tmp_path_factory.mktemp("models") / "bert")


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--learning-rate", "nan"], "argument --learning-rate: expected a finite number >= 0, got nan (float)"),
        (["--learning-rate", "inf"], "argument --learning-rate: expected a finite number >= 0, got inf (float)"),
        (["--learning-rate", "-1"], "argument --learning-rate: expected a finite number >= 0, got -1.0 (float)"),
        (["--learning-rate", "fast"], "argument --learning-rate: expected a finite number >= 0, got 'fast' (str)"),
        (["--weight-decay", "nan"], "argument --weight-decay: expected a finite number >= 0, got nan (float)"),
        (["--weight-decay", "-0.5"], "argument --weight-decay: expected a finite number >= 0, got -0.5 (float)"),
        (["--num-labels", "0"], "argument --num-labels: expected a whole number >= 1, got 0 (int)"),
        (["--num-labels", "-5"], "argument --num-labels: expected a whole number >= 1, got -5 (int)"),
        (["--num-labels", "two"], "argument --num-labels: expected a whole number >= 1, got 'two' (str)"),
        (["--task", "regression"], "argument --task: invalid choice: 'regression'"),
    ],
)
def test_plan_refuses_bad_numbers_in_one_line(flags, fragment):
    result = run_installed("plan", "--model", "unused", "--spec", "[]", *flags)
    assert_one_line_error(result, "plan", fragment)


def test_plan_refuses_a_missing_checkpoint_in_one_line_before_importing_torch():
    started = time.monotonic()
    result = run_installed("plan", "--model", "unused", "--spec", "[]", "--resume-from", "no/such/checkpoint-3")
    assert_one_line_error(
        result,
        "plan",
        "argument --resume-from: expected a checkpoint directory, got 'no/such/checkpoint-3' (str), "
        "which is not a directory",
    )
    assert time.monotonic() - started < 60


def test_the_bare_command_prints_the_usage_and_exits_2():
    result = run_installed()
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "layerwise-trainer: error: a command is required, train or plan "
        "(usage: layerwise-trainer [-h] [--version] COMMAND ...)\n"
    )


@pytest.mark.parametrize(
    ("argv", "command", "fragment"),
    [
        (
            ["train", "--set", "training.learning_rate=fast"],
            "train",
            "training.learning_rate: expected a finite number >= 0, got 'fast' (str)",
        ),
        (
            ["train", "--set", "training.resume_from_checkpoint=outputs/run/checkpoint-9"],
            "train",
            "checkpoint-9' (str), which is not a directory",  # resolved against the (built-in) config's directory
        ),
        (
            ["train", "--print-config", "--set", "model.from_config.hidden_size=fast"],
            "train",
            "model.from_config.hidden_size: expected int, got 'fast' (str)",
        ),
        (
            ["plan", "--model", "unused", "--spec", "[]", "--optim", "adamw_tourch"],
            "plan",
            "argument --optim: expected one of 'adamw_torch', 'adamw_torch_fused', 'adamw_torch_xla', "
            "'adamw_torch_npu_fused' and 37 more, got 'adamw_tourch' (str); did you mean 'adamw_torch'",
        ),
    ],
)
def test_mistakes_needing_transformers_exit_2_in_one_line_before_any_data(argv, command, fragment, tmp_path):
    started = time.monotonic()
    result = run_installed(*argv, cwd=tmp_path)
    assert_one_line_error(result, command, fragment)
    assert list(tmp_path.iterdir()) == []  # nothing prepared, nothing written
    assert time.monotonic() - started < 60  # 6-20 s of data preparation came before the error


def test_print_config_prints_nothing_on_stderr_and_sets_a_list_element():
    result = run_installed("train", "--print-config", "--set", "param_groups.groups[0].lr_scale=0.25")
    assert (result.returncode, result.stderr) == (0, "")  # no third-party import noise
    printed = yaml.safe_load(result.stdout)
    assert printed["param_groups"]["groups"][0] == {"name": "embeddings", "match": "bert.embeddings.*",
                                                    "lr_scale": 0.25}  # fmt: skip


def test_plan_takes_a_run_config(repo_root, bert_dir):
    result = run_installed("plan", "--spec", str(repo_root / "examples" / "llrd_bert.yaml"), "--model", str(bert_dir))
    assert (result.returncode, result.stderr) == (0, "")
    rows = [line.split() for line in result.stdout.splitlines()[2:6]]
    # The run config's learning rate (3e-5) and weight decay (0.01); its param_groups: head x10, LLRD 0.85.
    assert [row[:5] for row in rows] == [
        ["head", "4", "323", "0.0003", "0.01"],
        ["body/layer_0", "5", "800", "1.842e-05", "0.01"],
        ["body/layer_1", "16", "2,224", "2.167e-05", "0.01"],
        ["body/layer_2", "16", "2,224", "2.55e-05", "0.01"],
    ]


# ---- The same promises, in process (no subprocess needed) ----------------------------------------


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("training.learning_rate=-1", "training.learning_rate: expected a finite number >= 0, got -1 (int)"),
        ("training.learning_rate=.nan", "training.learning_rate: expected a finite number >= 0, got nan (float)"),
        ("training.weight_decay=fast", "training.weight_decay: expected a finite number >= 0, got 'fast' (str)"),
        ("training.max_steps=fast", "training.max_steps: expected a whole number >= 1, or -1, got 'fast' (str)"),
        ("training.num_train_epochs=one", "training.num_train_epochs: expected a finite number > 0, got 'one' (str)"),
        (
            "training.per_device_train_batch_size=-1",
            "training.per_device_train_batch_size: expected a whole number >= 1, got -1 (int)",
        ),
        ("param_groups.groups[5].lr=1", "index 5 is out of range: param_groups.groups has 3 items (indexes 0 to 2)"),
        ("param_groups.groups.x.lr=1", "param_groups.groups is a list: reach an element by its index, e.g. "),
    ],
)
@pytest.mark.parametrize("print_config", [True, False])
def test_train_refuses_bad_values_before_any_data(override, fragment, print_config, capsys, monkeypatch):
    import layerwise_trainer.app.pipeline

    monkeypatch.setattr(layerwise_trainer.app.pipeline, "load_data", lambda *args: pytest.fail("data was prepared"))
    status, out, err = run(["train", *(["--print-config"] if print_config else []), "--set", override], capsys)
    assert (status, out) == (2, "")
    assert err.startswith("layerwise-trainer train: error: ") and err.count("\n") == 1
    assert fragment in err


def test_plan_reads_an_unknown_model_dir_as_no_such_directory(tmp_path, capsys):
    status, _, err = run(["plan", "--model", str(tmp_path / "nope"), "--spec", "[]"], capsys)
    assert status == 2
    assert err == f"layerwise-trainer plan: error: --model: no such directory: {tmp_path / 'nope'}\n"


def test_plan_reads_a_dir_without_config_json(tmp_path, capsys):
    status, _, err = run(["plan", "--model", str(tmp_path), "--spec", "[]"], capsys)
    assert status == 2
    assert err == f"layerwise-trainer plan: error: --model: no config.json in the directory {tmp_path}\n"


def test_plan_reads_a_broken_config_json_in_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{not json")
    status, _, err = run(["plan", "--model", str(tmp_path), "--spec", "[]"], capsys)
    assert status == 2
    assert err.startswith(f"layerwise-trainer plan: error: --model: cannot read the model config of {tmp_path}: ")
    assert err.count("\n") == 1


def test_plan_shows_a_spec_error_in_one_line(bert_dir, capsys):
    status, out, err = run(["plan", "--model", str(bert_dir), "--spec", "not json"], capsys)
    assert (status, out) == (2, "")
    assert err.startswith("layerwise-trainer plan: error: ") and err.count("\n") == 1


def test_plan_flags_win_over_the_run_config(repo_root, bert_dir, capsys):
    spec = str(repo_root / "examples" / "llrd_bert.yaml")
    status, out, _ = run(["plan", "--spec", spec, "--model", str(bert_dir), "--learning-rate", "1e-4",
                          "--weight-decay", "0", "--format", "json"], capsys)  # fmt: skip
    assert status == 0
    rows = {row["name"]: row for row in json.loads(out)["rows"]}
    assert rows["head"]["lr"] == pytest.approx(1e-3)
    assert rows["body/layer_2"]["weight_decay"] == 0


def test_plan_takes_the_model_of_a_run_config_built_from_scratch(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({
        "model": {"from_config": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                                  "intermediate_size": 32, "vocab_size": 100}},
        "data": {"builtin": {}},
        "training": {"learning_rate": 1e-3},
        "param_groups": [{"name": "head", "match": "classifier.*", "lr_scale": 2}],
    }))  # fmt: skip
    status, out, err = run(["plan", "--spec", str(tmp_path / "run.yaml"), "--format", "json"], capsys)
    assert status == 0, err
    rows = {row["name"]: row for row in json.loads(out)["rows"]}
    assert (rows["head"]["lr"], rows["head"]["parameters"]) == (2e-3, 16 * 3 + 3)  # 3 built-in classes


def test_plan_of_a_run_config_without_a_model_or_spec(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text(
        yaml.safe_dump({"model": {"name_or_path": "org/model"}, "data": {"builtin": {}}})
    )
    status, _, err = run(["plan", "--spec", str(tmp_path / "run.yaml")], capsys)
    assert status == 2
    assert (
        err
        == f"layerwise-trainer plan: error: {tmp_path / 'run.yaml'}: param_groups: the run config has no spec to plan\n"
    )


def test_plan_of_a_lora_run_config(repo_root, bert_dir, capsys):
    pytest.importorskip("peft", reason="the optional extra [peft] is not installed")
    spec = str(repo_root / "examples" / "lora_plus.yaml")
    status, out, err = run(["plan", "--spec", spec, "--model", str(bert_dir), "--format", "json"], capsys)
    assert status == 0, err
    rows = {row["name"]: row for row in json.loads(out)["rows"]}
    assert rows["lora_B"]["lr"] == pytest.approx(16e-4)
    assert (rows["lora_A"]["tensors"], rows["lora_B"]["tensors"]) == (4, 4)  # query and value in 2 layers


def test_python_dash_m_runs_the_same_command_line():
    result = subprocess.run([sys.executable, "-m", "layerwise_trainer"], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("layerwise-trainer: error: a command is required, train or plan")


# ---- The spec is parsed once, at the boundary (issue 19, E) ----------------------------------------


@pytest.fixture
def spec_constructions(monkeypatch):
    """How many `LayerwiseSpec`s are built (each one parses and validates a spec)."""
    from layerwise_trainer.core.spec import LayerwiseSpec

    built = []
    validate = LayerwiseSpec.__post_init__
    monkeypatch.setattr(LayerwiseSpec, "__post_init__", lambda spec: (built.append(spec), validate(spec))[1])
    return built


def test_plan_of_a_run_config_parses_its_spec_once(repo_root, bert_dir, spec_constructions, capsys):
    status, _, err = run(["plan", "--spec", str(repo_root / "examples" / "llrd_bert.yaml"), "--model", str(bert_dir)],
                         capsys)  # fmt: skip
    assert status == 0, err
    assert len(spec_constructions) == 1  # was 2: the run config's check, then the plan's parse


def test_train_parses_its_spec_once_and_hands_the_trainer_that_spec(tmp_path, spec_constructions, monkeypatch, capsys):
    from layerwise_trainer.trainer import LayerwiseTrainer

    class Stop(Exception):
        pass

    handed = []

    def stop_before_training(trainer, *args, **kwargs):
        handed.append(trainer.param_groups_spec)
        raise Stop

    monkeypatch.setattr(LayerwiseTrainer, "train", stop_before_training)
    with pytest.raises(Stop):
        main(["train", *overrides([*TINY_RUN, f"training.output_dir={tmp_path / 'run'}"])])
    assert len(spec_constructions) == 1
    assert handed == spec_constructions  # the very object parsed when the config was read


# ---- Special files wherever a file is read: refused at once (issue 19, B6) ---------------------------


@pytest.fixture
def deadline():
    """Fail a test that blocks for more than 10 s (opening a FIFO waits for a writer) instead of hanging."""
    import signal

    def expire(signum, frame):
        raise TimeoutError("still blocked after 10 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("where", ["--config", "param_groups in the config", "--set param_groups", "plan --spec"])
def test_a_fifo_is_refused_wherever_a_file_is_read(where, tmp_path, bert_dir, deadline, capsys):
    fifo = tmp_path / "named-pipe.yaml"
    os.mkfifo(fifo)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"from_config": {"hidden_size": 16}}, "data": {"builtin": {}},
                                      "param_groups": "named-pipe.yaml"}))  # fmt: skip
    argv = {
        "--config": ["train", "--config", str(fifo)],
        "param_groups in the config": ["train", "--config", str(config)],
        "--set param_groups": ["train", "--print-config", "--set", f"param_groups={fifo}"],
        "plan --spec": ["plan", "--model", str(bert_dir), "--spec", str(fifo)],
    }[where]
    status, out, err = run(argv, capsys)
    assert (status, out) == (2, "")
    assert err.count("\n") == 1 and f"{fifo}: is a FIFO (named pipe), expected a regular file" in err, err


# ---- A hub id when the hub cannot be reached: the cache, in seconds (issue 19, C12) ---------------------


@pytest.fixture
def unreachable_hub(tmp_path, monkeypatch):
    """A hub endpoint that refuses connections (as a machine offline does), an empty cache, offline mode unset."""
    import huggingface_hub.constants

    from layerwise_trainer.app import hub_access

    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(variable, "0")  # restored after the test, whatever the switch sets
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(hub_access, "_unreachable_because", None)
    return tmp_path / "hub-cache"


def test_a_hub_id_when_the_hub_cannot_be_reached_is_one_line_in_seconds(unreachable_hub, capsys):
    started = time.monotonic()
    status, out, err = run(["plan", "--model", "org/not-cached", "--spec", "[]"], capsys)
    assert time.monotonic() - started < 5  # 30 to 54 s of retries before, with a warning line for each
    assert (status, out) == (2, "")
    assert err == (
        "layerwise-trainer plan: error: --model: cannot read the model config of org/not-cached: it is not in the "
        "local cache, and the hub cannot be reached (127.0.0.1:9: Connection refused)\n"
    )


def test_a_cached_hub_id_still_plans_when_the_hub_cannot_be_reached(unreachable_hub, capsys):
    snapshot = unreachable_hub / "models--org--tiny-bert" / "snapshots" / "0123456789abcdef"
    save_config("bert", snapshot)
    (unreachable_hub / "models--org--tiny-bert" / "refs").mkdir()
    (unreachable_hub / "models--org--tiny-bert" / "refs" / "main").write_text("0123456789abcdef")
    spec = '[{"name": "head", "match": "classifier.*"}]'
    status, out, err = run(["plan", "--model", "org/tiny-bert", "--spec", spec], capsys)
    assert (status, err) == (0, "")
    assert out.splitlines()[2].split()[:2] == ["head", "2"]
