"""The example configs: each is a valid run configuration with a valid spec."""

from __future__ import annotations

import pytest

from layerwise_trainer import parse_spec
from layerwise_trainer.run_config import load_run_config

EXAMPLES = ["offline_default.yaml", "ja_sentiment_hub.yaml", "llrd_bert.yaml", "lora_plus.yaml"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_config_is_valid(name, repo_root):
    config = load_run_config(repo_root / "examples" / name)
    assert parse_spec(config.param_groups).groups


def test_examples_are_all_listed(repo_root):
    assert sorted(path.name for path in (repo_root / "examples").glob("*.yaml")) == sorted(EXAMPLES)


def test_the_reference_workload_is_the_usual_recipe(repo_root):
    config = load_run_config(repo_root / "examples" / "ja_sentiment_hub.yaml")
    assert config.model.name_or_path == "cl-tohoku/bert-base-japanese-whole-word-masking"
    assert config.data.hub == {"path": "tyqiangz/multilingual-sentiments", "name": "japanese"}
    assert (config.training["num_train_epochs"], config.training["per_device_train_batch_size"]) == (10, 16)
    spec = parse_spec(config.param_groups)
    assert [(group.name, group.lr) for group in spec.groups] == [("body", 0.0), ("head", 2e-5)]


def test_lora_plus_gives_b_sixteen_times_the_rate_of_a(repo_root):
    spec = parse_spec(load_run_config(repo_root / "examples" / "lora_plus.yaml").param_groups)
    scales = {group.name: group.lr_scale for group in spec.groups}
    assert scales["lora_B"] == 16 * (scales["lora_A"] or 1.0)
