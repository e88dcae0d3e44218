"""Hostile sizes and shapes of spec: alias bombs, huge texts, too many groups, rates that overflow.

Each is refused with a `SpecError` that names the limit or the key, in well under a second; realistic
specs (every parameter name of a 50k-tensor model listed explicitly) stay possible.
"""

from __future__ import annotations

import copy
import json
import pickle
import time

import pytest
import torch
import yaml
from torch import nn

from layerwise_trainer import LayerwiseSpec, SpecError, parse_spec, resolve_groups
from layerwise_trainer.core import yaml_json
from layerwise_trainer.core.spec import MAX_GROUPS, MAX_NUM_LAYERS, MAX_PATTERNS, MAX_SPEC_BYTES, MAX_WILDCARD_PATTERNS
from layerwise_trainer.core.yaml_json import MAX_YAML_NODES

# Refusing takes milliseconds; the bound is generous for a shared, loaded machine.
REFUSED_WITHIN_SECONDS = 1.0

# 9 anchors, each a list of 9 of the previous: 9**8 (43 million) leaves behind one alias, in under 450 bytes.
ALIAS_BOMB = "[&a0 [x], " + ", ".join(f"&a{level} [{', '.join([f'*a{level - 1}'] * 9)}]" for level in range(1, 9)) + "]"
BOMB_PLACEMENTS = {
    "lr": f"- name: head\n  match: '*'\n  lr: {ALIAS_BOMB}\n",
    "name": f"- name: {ALIAS_BOMB}\n  match: '*'\n",
    "option": f"- name: head\n  match: '*'\n  betas: {ALIAS_BOMB}\n",
    "match": f"- name: head\n  match: {ALIAS_BOMB}\n",
    "group": f"- {ALIAS_BOMB}\n",
    "top-level layer_decay": f"layer_decay: {ALIAS_BOMB}\ngroups: []\n",
}


def refusal(source: object) -> tuple[str, float]:
    """The message of the `SpecError` that `parse_spec(source)` raises, and how long it took."""
    start = time.perf_counter()
    with pytest.raises(SpecError) as caught:
        parse_spec(source)
    return str(caught.value), time.perf_counter() - start


def meta_model(names: list[str]) -> nn.Module:
    root = nn.Module()
    for name in names:
        *path, leaf = name.split(".")
        module = root
        for segment in path:
            if segment not in module._modules:
                module.add_module(segment, nn.Module())
            module = module._modules[segment]
        module.register_parameter(leaf, nn.Parameter(torch.empty(1, device="meta")))
    return root


@pytest.mark.parametrize("placement", sorted(BOMB_PLACEMENTS))
def test_yaml_alias_bomb_is_refused_fast_wherever_it_sits(tmp_path, placement):
    assert len(ALIAS_BOMB) < 450
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB_PLACEMENTS[placement], encoding="utf-8")
    message, seconds = refusal(path)
    assert seconds < REFUSED_WITHIN_SECONDS
    assert message.startswith(f"{path}: line ")
    assert message.endswith(
        f"the document holds more than {MAX_YAML_NODES:,} nodes (MAX_YAML_NODES), counting each alias as a copy of "
        "what it names (nested aliases: a YAML alias bomb?); write out fewer aliases"
    )


@pytest.mark.parametrize("placement", sorted(BOMB_PLACEMENTS))
def test_an_alias_graph_given_as_python_data_is_never_walked(placement):
    # PyYAML's own loader shares one object per anchor: the graph exists in memory without expanding.
    data = yaml.load(BOMB_PLACEMENTS[placement], Loader=yaml.SafeLoader)
    message, seconds = refusal(data)
    assert seconds < REFUSED_WITHIN_SECONDS
    assert "expected" in message and len(message) < 400


def test_a_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("- name: head\n  match: &loop ['*', *loop]\n", encoding="utf-8")
    message, _ = refusal(path)
    assert message == f"{path}: line 2, column 10: a recursive alias: the node contains itself"


def test_a_modest_alias_is_still_read(tmp_path):
    path = tmp_path / "shared.yaml"
    path.write_text(
        "- {name: a, match: 'a.*', betas: &betas [0.9, 0.98]}\n- {name: b, match: 'b.*', betas: *betas}\n",
        encoding="utf-8",
    )
    spec = parse_spec(path)
    assert [group.options["betas"] for group in spec.groups] == [(0.9, 0.98), (0.9, 0.98)]


def test_a_json_string_over_the_size_limit_is_refused_before_parsing():
    text = json.dumps([{"name": f"g{index}", "match": f"x{index}.*"} for index in range(400_000)])
    assert len(text) > MAX_SPEC_BYTES
    message, seconds = refusal(text)
    assert seconds < REFUSED_WITHIN_SECONDS
    assert message == (
        f"param_groups JSON string: the spec is {len(text):,} bytes, more than the {MAX_SPEC_BYTES:,} allowed "
        "(MAX_SPEC_BYTES)"
    )


def test_a_file_over_the_size_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("- {name: g, match: 'x.*'}\n" + "#" * MAX_SPEC_BYTES, encoding="utf-8")
    message, seconds = refusal(path)
    assert seconds < REFUSED_WITHIN_SECONDS
    assert message == (
        f"{path}: the spec is {path.stat().st_size:,} bytes, more than the {MAX_SPEC_BYTES:,} allowed (MAX_SPEC_BYTES)"
    )


def _never_composed(*_args: object) -> None:
    raise AssertionError("the document was composed")


def test_a_yaml_document_of_too_many_nodes_is_refused_before_it_is_composed(tmp_path, monkeypatch):
    # Composing builds a Python node per YAML node: 4 MB of `[0, 1]` pairs (1.5 million nodes) took 11 s.
    for loader in (yaml_json._LibyamlLoader, yaml_json._PythonLoader):
        if loader is not None:
            monkeypatch.setattr(loader, "get_single_node", _never_composed)
    path = tmp_path / "rows.yaml"
    path.write_text("- {name: g, match: lm_head.weight, rows: [" + ", ".join(["[0, 1]"] * 500_000) + "]}\n")
    assert path.stat().st_size < MAX_SPEC_BYTES
    message, seconds = refusal(path)
    assert seconds < REFUSED_WITHIN_SECONDS
    assert message.startswith(f"{path}: line 1, column ")
    assert message.endswith(
        f"the document holds more than {MAX_YAML_NODES:,} nodes (MAX_YAML_NODES), counting each alias as a copy of "
        "what it names; write a shorter document"
    )


@pytest.mark.skipif(yaml_json._LibyamlLoader is None, reason="PyYAML without libyaml reads with one loader only")
def test_a_long_invalid_yaml_document_is_not_read_again_by_the_slow_loader(tmp_path, monkeypatch):
    monkeypatch.setattr(yaml_json._PythonLoader, "__init__", _never_composed)
    path = tmp_path / "long.yaml"
    path.write_text("".join(f"- {{name: g{index}, match: x{index}}}\n" for index in range(30_000)) + "- {name: bad\n")
    message, seconds = refusal(path)
    assert seconds < REFUSED_WITHIN_SECONDS
    assert message.startswith(f"{path}: line 30002, column 1: not valid YAML: ")


def test_too_many_groups_are_refused_before_building_them():
    groups = [{"name": f"g{index}", "match": f"x{index}.*"} for index in range(100_000)]
    message, seconds = refusal(groups)
    assert seconds < REFUSED_WITHIN_SECONDS
    assert message == f"groups: 100,000 groups, more than the {MAX_GROUPS:,} allowed (MAX_GROUPS)"


def test_too_many_groups_in_a_yaml_file_are_refused(tmp_path):
    path = tmp_path / "groups.yaml"
    path.write_text("".join(f"- {{name: g{index}, match: x}}\n" for index in range(MAX_GROUPS + 1)), encoding="utf-8")
    message, _ = refusal(path)
    assert message == f"{path}: groups: {MAX_GROUPS + 1:,} groups, more than the {MAX_GROUPS:,} allowed (MAX_GROUPS)"


def test_too_many_patterns_are_refused():
    groups = [{"name": f"g{index}", "match": [f"n{index}.{item}" for item in range(1_000)]} for index in range(101)]
    message, seconds = refusal(groups)
    assert seconds < REFUSED_WITHIN_SECONDS
    assert message == (
        f"groups[100].match (group 'g100'): 101,000 patterns in all, more than the {MAX_PATTERNS:,} allowed "
        "(MAX_PATTERNS)"
    )


def test_too_many_wildcard_patterns_are_refused():
    groups = [{"name": "g", "match": [f"n{index}.*" for index in range(MAX_WILDCARD_PATTERNS + 1)]}]
    message, _ = refusal(groups)
    assert message == (
        f"groups[0].match (group 'g'): {MAX_WILDCARD_PATTERNS + 1:,} globs and regular expressions in all, "
        f"more than the {MAX_WILDCARD_PATTERNS:,} allowed (MAX_WILDCARD_PATTERNS); list exact parameter names instead"
    )


def test_every_parameter_name_of_a_50k_tensor_model_can_be_listed(tmp_path):
    names = [f"model.layers.{index // 10}.experts.{index % 10}.weight" for index in range(50_000)]
    path = tmp_path / "explicit.yaml"
    path.write_text(yaml.safe_dump([{"name": "all", "match": names, "lr": 1e-4}]), encoding="utf-8")
    assert path.stat().st_size < MAX_SPEC_BYTES
    spec = parse_spec(path)
    assert len(spec.groups[0].patterns) == 50_000


def test_exact_names_never_reach_the_joined_regex():
    from layerwise_trainer.core.name_patterns import FirstMatch, compile_pattern

    exact = [f"block.{index}.weight" for index in range(8_000)]
    first_match = FirstMatch([compile_pattern(text) for text in [*exact, "block.*", "re:.*bias"]])
    assert len(first_match.exact) == 8_000
    assert first_match.wildcard_indexes == (8_000, 8_001)
    assert first_match.joined_glob.pattern.count("(?P<") == 1
    assert first_match.index(["block.7999.weight"]) == 7_999
    assert first_match.index(["block.9.bias"]) == 8_000


@pytest.mark.parametrize(
    ("patterns", "name", "expected"),
    [
        (["a.weight", "a.*", "re:a\\..*"], "a.weight", 0),
        (["a.*", "a.weight", "re:a\\..*"], "a.weight", 0),
        (["re:a\\..*", "a.*", "a.weight"], "a.weight", 0),
        (["b.*", "re:a\\.w.*", "a.weight"], "a.weight", 1),
        (["b.*", "a.weight", "re:a\\..*", "a.*"], "a.weight", 1),
        (["x.weight", "y.*"], "a.weight", None),
    ],
)
def test_first_match_wins_across_exact_names_globs_and_regexes(patterns, name, expected):
    from layerwise_trainer.core.name_patterns import FirstMatch, compile_pattern

    assert FirstMatch([compile_pattern(text) for text in patterns]).index([name]) == expected


def test_a_spec_of_8000_explicit_names_resolves_by_name():
    names = [f"m{index}.weight" for index in range(8_000)]
    spec = [{"name": "a", "match": names[:4_000], "lr": 1e-3}, {"name": "b", "match": ["m0.*", *names[4_000:]]}]
    plan = resolve_groups(meta_model(names), spec, learning_rate=1e-3, weight_decay=0.0)
    assert [(group.name, len(group.parameter_names)) for group in plan.groups] == [("a", 4_000), ("b", 4_000)]


def test_an_unused_exact_name_is_reported_with_its_place():
    spec = [{"name": "a", "match": ["m0.weight", "m9.weight"]}]
    with pytest.raises(SpecError) as caught:
        resolve_groups(meta_model(["m0.weight", "m1.weight"]), spec, learning_rate=1e-3, weight_decay=0.0)
    assert str(caught.value).startswith("groups[0].match[1] (group 'a'): pattern 'm9.weight' matches no parameter")


def a_full_spec() -> LayerwiseSpec:
    return parse_spec(
        {
            "groups": [
                {"name": "body", "match": "bert.*", "lr_scale": 0.1, "layer_decay": 0.9, "num_layers": 2},
                {"name": "head", "match": ["classifier.*", "re:pooler\\..*"], "lr": 1e-3, "betas": [0.9, 0.98]},
            ],
            "layer_decay": 0.8,
            "unmatched": "error",
        }
    )


@pytest.mark.parametrize("copier", ["pickle", "deepcopy", "copy"])
def test_specs_pickle_and_copy_to_equal_specs(copier):
    spec = a_full_spec()
    copied = {
        "pickle": lambda value: pickle.loads(pickle.dumps(value)),
        "deepcopy": copy.deepcopy,
        "copy": copy.copy,
    }[copier]
    assert copied(spec) == spec
    assert copied(spec.groups[1]) == spec.groups[1]
    assert copied(spec).groups[1].options["betas"] == (0.9, 0.98)
    with pytest.raises(TypeError):
        copied(spec).groups[1].options["betas"] = (0.5, 0.5)


def test_lr_scale_that_overflows_is_refused(bert):
    spec = [{"name": "head", "match": "classifier.*", "lr_scale": 1e308}]
    with pytest.raises(SpecError) as caught:
        resolve_groups(bert, spec, learning_rate=10.0, weight_decay=0.0)
    assert str(caught.value) == (
        "groups[0].lr_scale (group 'head'): the learning rate 1e+308 x 10 is not a finite number; "
        "expected a rate a float can hold"
    )


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"layer_decay": 0.5, "groups": [{"name": "body", "match": "bert.*", "num_layers": 5_000}]}, "groups[0]"),
        ({"groups": [{"name": "body", "match": "bert.*", "layer_decay": 1e-300}]}, "groups[0]"),
        ({"layer_decay": 1e-300}, None),
    ],
)
def test_layer_decay_that_underflows_to_zero_is_refused(bert, spec, where):
    with pytest.raises(SpecError) as caught:
        resolve_groups(bert, spec, learning_rate=1e-3, weight_decay=0.0)
    message = str(caught.value)
    prefix = f"{where}.layer_decay (group " if where else "layer_decay (group 'default'"
    assert message.startswith(prefix), message
    assert "underflows to 0" in message
    assert "to freeze parameters, say so: freeze: true" in message


def test_lr_scale_that_underflows_is_refused(bert):
    spec = [{"name": "head", "match": "classifier.*", "lr_scale": 1e-300}]
    with pytest.raises(SpecError) as caught:
        resolve_groups(bert, spec, learning_rate=1e-30, weight_decay=0.0)
    assert str(caught.value).startswith(
        "groups[0].lr_scale (group 'head'): the learning rate 1e-300 x 1e-30 underflows"
    )


@pytest.mark.parametrize("value", [1e300, MAX_NUM_LAYERS + 1, "1e300"])
def test_num_layers_has_a_documented_maximum(value):
    message, _ = refusal([{"name": "body", "match": "bert.*", "num_layers": value}])
    assert message.startswith(
        f"groups[0].num_layers (group 'body'): expected a whole number from 1 to {MAX_NUM_LAYERS:,}"
    )


def test_num_layers_at_the_maximum_is_accepted():
    assert parse_spec([{"name": "body", "match": "bert.*", "num_layers": MAX_NUM_LAYERS}]).groups[0].num_layers == (
        MAX_NUM_LAYERS
    )


def test_text_that_is_neither_a_file_nor_json_says_what_a_spec_text_can_be():
    message, _ = refusal("not json")
    assert message == (
        "expected a path to a .yaml, .yml or .json file, or a JSON string starting with '[' or '{', "
        "got 'not json' (str)"
    )
