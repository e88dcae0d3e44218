"""examples/ulmfit.yaml: its plan shows the staged starts, and it trains end to end with the head alone first."""

from __future__ import annotations

import json
import re

import pytest

from layerwise_trainer.app.cli import main

# The example on a tiny budget: 96 training examples in batches of 16, 2 epochs = 12 optimizer steps, 2 blocks.
TINY = [
    "data.builtin.num_examples=120",
    "model.from_config={model_type: bert, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, "
    "intermediate_size: 64, max_position_embeddings: 64}",
    "tokenizer.train.vocab_size=500",
    "tokenizer.max_length=32",
    "training.num_train_epochs=2",
    "training.per_device_train_batch_size=16",
    "training.logging_steps=1",
    "training.eval_strategy=no",
    "training.disable_tqdm=true",
]
BODY_START = "fraction 0.2"


def run(argv, capsys):
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def example(repo_root):
    return str(repo_root / "examples" / "ulmfit.yaml")


def test_the_plan_starts_the_head_first_and_the_body_top_down(example, capsys):
    status, out, err = run(["plan", "--spec", example, "--format", "json"], capsys)
    assert status == 0, err
    rows = [(row["name"], row["start"], row["schedule"]) for row in json.loads(out)["rows"]]
    assert rows == [
        ("head", "0", "trainer, warm-up ratio 0.1"),
        ("body/layer_0", f"{BODY_START} + 4 x fraction 0.1", "trainer, warm-up ratio 0.1"),
        ("body/layer_1", f"{BODY_START} + 3 x fraction 0.1", "trainer, warm-up ratio 0.1"),
        ("body/layer_2", f"{BODY_START} + 2 x fraction 0.1", "trainer, warm-up ratio 0.1"),
        ("body/layer_3", f"{BODY_START} + 1 x fraction 0.1", "trainer, warm-up ratio 0.1"),
        ("body/layer_4", BODY_START, "trainer, warm-up ratio 0.1"),
    ]


def test_the_cli_page_shows_the_plan_the_command_prints(example, repo_root, capsys):
    status, out, _ = run(["plan", "--spec", example], capsys)
    page = (repo_root / "docs" / "cli.md").read_text(encoding="utf-8")
    shown = re.search(r"layerwise-trainer plan --spec examples/ulmfit.yaml\n```\n\n```text\n(.*?)\n```", page, re.S)
    assert status == 0 and shown is not None
    assert shown.group(1) == out.rstrip("\n")


def test_the_example_trains_the_head_alone_then_the_body_from_the_top(example, tmp_path, capsys):
    output_dir = tmp_path / "run"
    overrides = [part for item in [*TINY, f"training.output_dir={output_dir}"] for part in ("--set", item)]
    status, out, err = run(["train", "--config", example, *overrides], capsys)
    assert status == 0, err
    assert "start" in out.split("param groups:")[1].splitlines()[1]  # the summary's table has the start column

    logged = [entry for entry in json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
              if "loss" in entry]  # fmt: skip
    rates = {key.removeprefix("learning_rate/"): [entry[key] for entry in logged]
             for key in logged[0] if key.startswith("learning_rate/")}  # fmt: skip
    # 12 steps: the body starts at round(0.2 x 12) = 2, a layer more every round(0.1 x 12) = 1 step, top down;
    # every part's first step is the first of its warm-up, at rate 0 (a step logs the rate its update used).
    assert {name: [step for step, rate in enumerate(values, 1) if rate == 0] for name, values in rates.items()} == {
        "head": [1],
        "body/layer_2": [1, 2, 3],
        "body/layer_1": [1, 2, 3, 4],
        "body/layer_0": [1, 2, 3, 4, 5],
    }
    # The head: warm-up of ceil(0.1 x 12) = 2 steps to 2 x 5e-4, then linear to 0 over the other 10.
    assert rates["head"][:4] == [0.0, 1e-3 * 0.5, 1e-3, 1e-3 * 0.9]
    # The top block: 5e-4 x 0.8, reached after a warm-up of ceil(0.1 x 10) = 1 step from its start at step 2.
    assert rates["body/layer_2"][3] == 5e-4 * 0.8
    assert (output_dir / "learning_rates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_picture_gets_each_later_groups_exact_start_from_the_scheduler():
    from types import SimpleNamespace

    from layerwise_trainer.app.pipeline import _group_starts

    names = ["head", "head", "body/layer_2", "body/layer_2", "body/layer_1"]
    trainer = SimpleNamespace(
        lr_scheduler=SimpleNamespace(group_starts=(0, 0, 2, 2, 3)),
        optimizer=SimpleNamespace(param_groups=[{"name": name} for name in names]),
    )
    assert _group_starts(trainer) == {"body/layer_2": 2, "body/layer_1": 3}
    assert _group_starts(SimpleNamespace(lr_scheduler=object(), optimizer=trainer.optimizer)) is None


def test_the_cli_page_names_the_json_keys_the_plan_has(example, repo_root, capsys):
    status, out, _ = run(["plan", "--spec", example, "--format", "json"], capsys)
    plan = json.loads(out)
    page = " ".join((repo_root / "docs" / "cli.md").read_text(encoding="utf-8").split())
    said = re.search(r"In the JSON, every row then has (.*?), and every group \(an optimizer group\) has (.*?)\.", page)
    assert status == 0 and said is not None
    row_keys, group_keys = (set(re.findall(r"`(\w+)`", clause)) for clause in said.groups())
    assert (row_keys, group_keys) == ({"start", "schedule", "timing"}, {"timing"})
    assert all(row_keys <= set(row) for row in plan["rows"])
    assert all(group_keys <= set(group) for group in plan["groups"])
    assert not any((row_keys - group_keys) & set(group) for group in plan["groups"])  # no start, no schedule
