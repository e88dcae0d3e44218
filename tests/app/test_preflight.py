"""What `train` and `plan` refuse before any data is prepared, in one line, with exit status 2 (issue 19).

An output directory that cannot be written (A4), absurd sizes (B7), and the mistakes that ended in a
traceback after the data were prepared (B8): a model that does not exist, a checkpoint of junk files, LoRA
settings peft refuses, a reporting integration that is not installed, Ctrl-C, a negative `--set` index.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import FAMILIES

from layerwise_trainer.app import plan_command, preflight
from layerwise_trainer.app.cli import main

# A run of a few seconds: 60 generated reviews, a one-block BERT, a 200-entry vocabulary.
TINY = [
    "data.builtin.num_examples=60",
    "model.from_config={model_type: bert, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, "
    "intermediate_size: 32, max_position_embeddings: 32}",
    "tokenizer.train.vocab_size=200",
    "tokenizer.max_length=16",
    "training.num_train_epochs=1",
    "training.per_device_train_batch_size=16",
    "training.disable_tqdm=true",
    "training.report_to=none",
]


def overrides(items):
    return [part for item in items for part in ("--set", item)]


@pytest.fixture
def no_data(monkeypatch):
    """Fail the test if any data is prepared."""
    import layerwise_trainer.app.pipeline

    monkeypatch.setattr(layerwise_trainer.app.pipeline, "load_data", lambda *args: pytest.fail("data was prepared"))


def refused(argv, capsys, fragment):
    """Run the command; it must exit 2 with one line on stderr that holds ``fragment``, printing nothing else."""
    started = time.perf_counter()
    try:
        status = main(argv)
    except SystemExit as exit:  # a usage error, found by argparse (plan --resume-from)
        status = exit.code
    seconds = time.perf_counter() - started
    out, err = capsys.readouterr()
    assert (status, out) == (2, ""), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment in err, err
    return err, seconds


def train(*settings, output_dir):
    return ["train", *overrides([*TINY, f"training.output_dir={output_dir}", *settings])]


# ---- A4: an output directory that cannot be written ---------------------------------------------------


@pytest.fixture
def read_only_directory(tmp_path):
    """A directory no one may create a file in, root included (root ignores the permission bits)."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    if os.geteuid() != 0:
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(directory)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i: no directory is read-only for root here")
    try:
        yield directory
    finally:
        subprocess.run([chattr, "-i", str(directory)], check=True)


def test_a_read_only_output_dir_is_refused_before_any_data(read_only_directory, no_data, capsys):
    refused(train(output_dir=read_only_directory), capsys,
            f"training.output_dir: cannot write to the directory '{read_only_directory}': ")  # fmt: skip


def test_an_output_dir_to_create_in_a_read_only_directory_is_refused(read_only_directory, no_data, capsys):
    refused(train(output_dir=read_only_directory / "run"), capsys,
            f"training.output_dir: cannot write to the directory '{read_only_directory}' (to create "
            f"'{read_only_directory / 'run'}' in): ")  # fmt: skip


@pytest.mark.parametrize(
    ("output_dir", "message"),
    [
        ("''", "training.output_dir: expected a directory to write the run to, got '' (an empty path)"),
        (
            "a-file",
            "training.output_dir: expected a directory to write the run to, got 'a-file' (str), which is a file",
        ),
        (
            "a-file/run",
            "training.output_dir: expected a directory to write the run to, got 'a-file/run' (str), under 'a-file', "
            "which is a file",
        ),
    ],
)
def test_an_output_dir_that_is_no_directory_is_one_line(output_dir, message, tmp_path, monkeypatch, no_data, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a directory")
    err, _ = refused(train(output_dir=output_dir), capsys, message)
    assert err == f"layerwise-trainer train: error: {message}\n"


def test_the_write_probe_leaves_nothing_behind(tmp_path):
    preflight.check_output_dir(tmp_path / "new" / "run")
    preflight.check_output_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing created, the probe file deleted


# ---- B7: absurd sizes ------------------------------------------------------------------------------


def saved_config(directory, **values):
    model_cls, config = FAMILIES["bert"]()
    config.architectures = [model_cls.__name__]
    for key, value in values.items():
        setattr(config, key, value)
    config.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("layers", [100_000, -1])
def test_plan_refuses_an_absurd_layer_count_at_once(layers, tmp_path, capsys):
    model_dir = saved_config(tmp_path / "model", num_hidden_layers=layers)
    _, seconds = refused(["plan", "--model", str(model_dir), "--spec", '{"layer_decay": 0.8, "groups": []}'], capsys,
                         f"--model: {model_dir}/config.json: num_hidden_layers: expected a whole number from 0 to "
                         f"1,024 (MAX_MODEL_LAYERS), got {layers} (int)")  # fmt: skip
    assert seconds < 1.0  # 100,000 blocks ran past 4.6 GB; -1 was blamed on the spec's layer_decay


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "model.from_config.num_hidden_layers=-1",
            "model.from_config.num_hidden_layers: expected a whole number from 0 to 1,024 (MAX_MODEL_LAYERS), got -1",
        ),
        (
            "model.from_config={model_type: bart, num_hidden_layers: 5000}",  # BART's encoder_layers, by its alias
            "model.from_config.num_hidden_layers: expected a whole number from 0 to 1,024 (MAX_MODEL_LAYERS), got 5000",
        ),
        (
            "data.builtin.num_examples=10000000000",
            "data.builtin.num_examples: expected a whole number from 1 to 1,000,000, got 10000000000 (int)",
        ),
        (
            "tokenizer.train.vocab_size=10000000000",
            "tokenizer.train.vocab_size: expected a whole number from 1 to 1,000,000, got 10000000000 (int)",
        ),
    ],
)
def test_absurd_sizes_in_a_run_config_are_refused_when_it_is_read(setting, message, tmp_path, no_data, capsys):
    _, seconds = refused(["train", "--print-config", "--set", setting], capsys, message)
    assert seconds < 1.0


def test_a_model_too_large_for_the_memory_is_refused_before_it_is_allocated(tmp_path, no_data, capsys):
    huge = "model.from_config={hidden_size: 65536, num_attention_heads: 64, intermediate_size: 262144}"
    _, seconds = refused(train(huge, output_dir=tmp_path / "run"), capsys,
                           "model.from_config: the model has 622,827,667,459 parameters, 2,320.2 GiB in float32, "
                           "more than the ")  # fmt: skip
    assert seconds < 5.0  # it ended in torch's allocation traceback (or the OOM killer)


def test_the_memory_check_counts_the_weights_against_the_memory_available(tmp_path, monkeypatch, no_data, capsys):
    monkeypatch.setattr(preflight, "memory_available", lambda: 2**10)
    refused(train(output_dir=tmp_path / "run"), capsys,
            # embeddings 3,776 (a 200-entry vocabulary) + one block 2,224 + pooler 272 + head 51, 4 bytes each
            "model.from_config: the model has 6,323 parameters, 24.7 KiB in float32, more than the 1.0 KiB of "
            "memory available; expected a model whose weights fit")  # fmt: skip


def test_a_model_of_too_many_modules_is_refused_while_it_is_built(tmp_path, monkeypatch, capsys):
    model_dir = saved_config(tmp_path / "model")
    monkeypatch.setattr(plan_command, "MAX_MODEL_MODULES", 20)
    refused(["plan", "--model", str(model_dir), "--spec", "[]"], capsys,
            f"{model_dir}: the model has more than 20 modules (MAX_MODEL_MODULES)")  # fmt: skip
    import torch.nn.modules.module as torch_module

    assert not torch_module._global_module_registration_hooks  # the counting hook is gone


# ---- B8: one line instead of a traceback -----------------------------------------------------------


def test_train_refuses_a_model_dir_that_does_not_exist_before_any_data(tmp_path, no_data, capsys):
    missing = tmp_path / "no-such-model"
    refused(train("model.from_config=null", f"model.name_or_path={missing}", output_dir=tmp_path / "run"), capsys,
            f"model.name_or_path: no such directory: {missing}")  # fmt: skip


def junk_checkpoint(directory: Path, state: str = "zz") -> Path:
    directory.mkdir()
    (directory / "trainer_state.json").write_text(state)
    (directory / "optimizer.pt").write_bytes(os.urandom(1000).replace(b"\x80", b"\x00"))
    return directory


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda path: junk_checkpoint(path), "trainer_state.json: not valid JSON, expected the JSON object"),
        (lambda path: junk_checkpoint(path, state="{}"), "optimizer.pt: not a file torch.save wrote"),
        (lambda path: path.mkdir() or path, "which has no trainer_state.json"),
    ],
)
@pytest.mark.parametrize("command", ["train", "plan"])
def test_a_checkpoint_of_junk_files_is_one_line(command, make, fragment, tmp_path, bert_config_dir, no_data, capsys):
    checkpoint = make(tmp_path / "checkpoint-7")
    argv = (
        train(f"training.resume_from_checkpoint={checkpoint}", output_dir=tmp_path / "run")
        if command == "train"
        else ["plan", "--model", str(bert_config_dir), "--spec", "[]", "--resume-from", str(checkpoint)]
    )
    refused(argv, capsys, fragment)


def test_train_refuses_a_checkpoint_without_weights(tmp_path, no_data, capsys):
    checkpoint = tmp_path / "checkpoint-7"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 7}))
    refused(train(f"training.resume_from_checkpoint={checkpoint}", output_dir=tmp_path / "run"), capsys,
            "expected a checkpoint with model weights")  # fmt: skip


@pytest.fixture
def bert_config_dir(tmp_path):
    return saved_config(tmp_path / "bert")


@pytest.mark.parametrize(
    ("peft", "fragment"),
    [
        ("{r: 0, target_modules: [query]}", "peft: `r` should be a positive integer value but the value passed is 0"),
        ("{r: 4, target_modules: [nothing_like_it]}", "peft: No modules were targeted for adaptation"),
    ],
)
def test_lora_settings_peft_refuses_are_one_line_before_any_data(peft, fragment, tmp_path, no_data, capsys):
    pytest.importorskip("peft", reason="the optional extra [peft] is not installed")
    refused(train(f"peft={peft}", output_dir=tmp_path / "run"), capsys, fragment)


def test_a_reporting_integration_that_is_not_installed_is_one_line(tmp_path, no_data, capsys):
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    refused(train("training.report_to=wandb", output_dir=tmp_path / "run"), capsys,
            "training.report_to: 'wandb' is not installed (pip install wandb); expected one of the installed "
            "integrations (")  # fmt: skip


def test_set_refuses_a_negative_index_by_name(capsys):
    refused(["train", "--print-config", "--set", "param_groups[-1].lr=1"], capsys,
            "--set 'param_groups[-1].lr=1': negative indexes are not supported")  # fmt: skip


# ---- B8: Ctrl-C during train -----------------------------------------------------------------------


def test_ctrl_c_names_the_latest_checkpoint_and_exits_130(tmp_path, monkeypatch, capsys):
    import layerwise_trainer.app.pipeline

    output_dir = tmp_path / "run"

    def interrupted_after_two_checkpoints(config, **kwargs):
        for step in (5, 10, 15):
            (output_dir / f"checkpoint-{step}").mkdir(parents=True)
        for step in (5, 10):  # checkpoint-15 is still being written: no trainer_state.json yet
            (output_dir / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(layerwise_trainer.app.pipeline, "run_training", interrupted_after_two_checkpoints)
    status = main(train(output_dir=output_dir))
    out, err = capsys.readouterr()
    assert (status, out) == (130, "")
    assert err == (
        "layerwise-trainer train: interrupted; resume from the latest checkpoint with "
        f"--set training.resume_from_checkpoint={output_dir / 'checkpoint-10'}\n"
    )


def test_ctrl_c_without_a_checkpoint_says_there_is_none(tmp_path, monkeypatch, capsys):
    import layerwise_trainer.app.pipeline

    def interrupted(config, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(layerwise_trainer.app.pipeline, "run_training", interrupted)
    status = main(train(output_dir=tmp_path / "run"))
    out, err = capsys.readouterr()
    assert (status, out) == (130, "")
    assert err == (
        f"layerwise-trainer train: interrupted; no checkpoint was saved in {tmp_path / 'run'} to resume from "
        "(training.save_strategy and save_steps set when checkpoints are saved)\n"
    )


COMMAND = shutil.which("layerwise-trainer") or str(Path(sys.executable).parent / "layerwise-trainer")


def test_ctrl_c_during_a_real_run_is_one_line(tmp_path):
    """SIGINT while the Trainer trains: no 35-line KeyboardInterrupt, the checkpoint to resume from."""
    output_dir = tmp_path / "run"
    settings = [*TINY, f"training.output_dir={output_dir}", "training.num_train_epochs=200", "training.save_steps=1",
                "training.save_strategy=steps", "training.eval_strategy=no"]  # fmt: skip
    # No progress bars from datasets or transformers' saving (see the C12 test for bars): stderr is ours alone.
    quiet = {"HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **quiet}
    process = subprocess.Popen([COMMAND, "train", *overrides(settings)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=environment)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (output_dir / "checkpoint-2").is_dir():
            assert process.poll() is None and time.monotonic() < deadline, "no checkpoint was saved"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(
        f"layerwise-trainer train: interrupted; resume from the latest checkpoint with "
        f"--set training.resume_from_checkpoint={output_dir}/checkpoint-"
    )
