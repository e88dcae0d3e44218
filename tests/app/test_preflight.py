"""What `train` and `plan` refuse before any data is prepared, in one line, with exit status 2 (issue 19).

An output directory that cannot be written (A4).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from layerwise_trainer.app import preflight
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
