"""The example configs: each is a valid run configuration with a valid spec."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from layerwise_trainer import parse_spec, resolve_groups
from layerwise_trainer.app.run_config import load_run_config

EXAMPLES = ["offline_default.yaml", "ja_sentiment_hub.yaml", "llrd_bert.yaml", "lora_plus.yaml", "ulmfit.yaml"]


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


# A layer-decay formula as the pages state it: `layer_decay ** (L + 1 - id)`, or with the ratio written out.
STATED_FORMULA = re.compile(r"(?:layer_decay|\b\d\.\d+) \*\* \(([^()]*\bid\b[^()]*)\)")
PAGES_STATING_THE_FORMULA = ["docs/spec.md", "README.md", "examples/llrd_bert.yaml"]


def stated_exponents(repo_root: Path) -> dict[str, set[str]]:
    return {
        page: set(STATED_FORMULA.findall((repo_root / page).read_text(encoding="utf-8")))
        for page in PAGES_STATING_THE_FORMULA
    }


def exponent(formula: str, num_layers: int, layer_id: int) -> int:
    assert re.fullmatch(r"[L\d +\-id]+", formula), f"not an exponent of L and id: {formula!r}"
    return eval(formula, {"__builtins__": {}}, {"L": num_layers, "id": layer_id})


def test_every_page_states_one_layer_decay_formula(repo_root):
    assert stated_exponents(repo_root) == {page: {"L + 1 - id"} for page in PAGES_STATING_THE_FORMULA}


def test_llrd_example_gives_the_rates_the_formula_states(repo_root, bert):
    config = load_run_config(repo_root / "examples" / "llrd_bert.yaml")
    base = config.training["learning_rate"]
    plan = resolve_groups(bert, config.param_groups, learning_rate=base, weight_decay=0.0)
    rates = {group.name: group.lr for group in plan.trainable_groups}
    num_layers = plan.num_layers  # 2: the tiny BERT's blocks are layer ids 1 and 2, its embeddings id 0
    formulas = set().union(*stated_exponents(repo_root).values())
    for formula in formulas:
        expected = {f"body/layer_{i}": base * 0.85 ** exponent(formula, num_layers, i) for i in range(num_layers + 1)}
        assert rates == {"head": base * 10, **expected}


def test_llrd_example_top_block_learns_at_the_decay_times_the_base_rate(repo_root, bert):
    config = load_run_config(repo_root / "examples" / "llrd_bert.yaml")
    plan = resolve_groups(bert, config.param_groups, learning_rate=3e-5, weight_decay=0.0)
    rates = {group.name: group.lr for group in plan.trainable_groups}
    assert (rates["body/layer_2"], rates["body/layer_0"], rates["head"]) == (3e-5 * 0.85, 3e-5 * 0.85**3, 3e-5 * 10)
