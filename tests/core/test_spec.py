"""Parsing and validating specs: every accepted form and every error."""

from __future__ import annotations

import json
import math

import pytest

from layerwise_trainer import GroupSpec, LayerwiseSpec, SpecError, parse_spec

BODY_HEAD = [
    {"name": "body", "match": "bert.*", "lr": 0},
    {"name": "head", "match": ["classifier.*", "re:bert\\.pooler\\..*"], "lr": 2e-5, "betas": [0.9, 0.98]},
]


def expected_spec() -> LayerwiseSpec:
    return LayerwiseSpec(
        groups=(
            GroupSpec(name="body", match="bert.*", lr=0.0),
            GroupSpec(
                name="head",
                match=("classifier.*", "re:bert\\.pooler\\..*"),
                lr=2e-5,
                options={"betas": (0.9, 0.98)},
            ),
        )
    )


def test_list_of_group_dicts():
    spec = parse_spec(BODY_HEAD)
    assert spec == expected_spec()
    assert spec.groups[1].patterns == ("classifier.*", "re:bert\\.pooler\\..*")
    assert dict(spec.groups[1].options) == {"betas": (0.9, 0.98)}
    assert spec.unmatched == "default"
    assert spec.layer_decay is None


def test_dict_with_top_level_keys():
    spec = parse_spec({"groups": BODY_HEAD, "layer_decay": "0.8", "unmatched": "error"})
    assert spec.groups == expected_spec().groups
    assert spec.layer_decay == 0.8
    assert spec.unmatched == "error"


def test_dict_without_groups_is_plain_layer_decay():
    spec = parse_spec({"layer_decay": 0.75})
    assert spec.groups == ()
    assert spec.layer_decay == 0.75


def test_yaml_file_reads_exponent_numbers_as_numbers(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(
        "groups:\n"
        "  - name: body\n"
        "    match: 'bert.*'\n"
        "    lr: 0\n"
        "  - name: head\n"
        "    match: ['classifier.*', 're:bert\\.pooler\\..*']\n"
        "    lr: 2e-5\n"
        "    betas: [0.9, 0.98]\n"
    )
    spec = parse_spec(path)
    assert spec == expected_spec()
    assert isinstance(spec.groups[1].lr, float) and spec.groups[1].lr == 2e-5


def test_yml_path_as_string(tmp_path):
    path = tmp_path / "spec.yml"
    path.write_text("- {name: head, match: 'classifier.*', lr_scale: 10, eps: 1e-6}\n")
    spec = parse_spec(str(path))
    assert spec.groups == (GroupSpec(name="head", match="classifier.*", lr_scale=10.0, options={"eps": 1e-6}),)


def test_json_file_and_json_string(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(BODY_HEAD))
    assert parse_spec(path) == expected_spec()
    assert parse_spec(json.dumps({"groups": BODY_HEAD})) == expected_spec()


def test_spec_objects_pass_through_and_groups_list():
    spec = expected_spec()
    assert parse_spec(spec) is spec
    assert parse_spec(list(spec.groups)) == spec


def test_to_dict_round_trips():
    spec = parse_spec({"groups": BODY_HEAD, "layer_decay": 0.9, "unmatched": "error"})
    assert parse_spec(spec.to_dict()) == spec
    assert parse_spec(json.loads(json.dumps(spec.to_dict()))) == spec


def test_learning_rate_and_frozen():
    base = 1e-4
    assert GroupSpec(name="a", match="*").learning_rate(base) == base
    assert GroupSpec(name="a", match="*", lr_scale=0.5).learning_rate(base) == base * 0.5
    assert GroupSpec(name="a", match="*", lr=3e-3).learning_rate(base) == 3e-3
    assert GroupSpec(name="a", match="*", lr=0).is_frozen
    assert GroupSpec(name="a", match="*", lr_scale=0).is_frozen
    assert GroupSpec(name="a", match="*", freeze=True, lr=1e-3).learning_rate(base) == 0.0
    assert not GroupSpec(name="a", match="*", lr=1e-9).is_frozen


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {"grups": []},
            "unknown top-level key 'grups'; did you mean 'groups'? Expected one of: groups, layer_decay, unmatched",
        ),
        ({"lr": 1e-3}, "unknown top-level key 'lr'; 'lr' belongs inside a group of 'groups'. Expected one of: groups"),
        ({"foo": 1}, "unknown top-level key 'foo'. Expected one of: groups, layer_decay, unmatched"),
        ([{"match": "a.*"}], "groups[0]: missing required key 'name'"),
        ([{"nmae": "head", "match": "a.*"}], "groups[0]: missing required key 'name'; is 'nmae' a misspelling of it?"),
        ([{"name": "head"}], "groups[0] (group 'head'): missing required key 'match'"),
        (
            [{"name": "a", "match": "x.*"}, {"name": "a", "match": "y.*"}],
            "groups[1].name: duplicate group name 'a' (first used by groups[0])",
        ),
        (
            [{"name": "head", "match": "c.*", "lr": 1e-3, "lr_scale": 2}],
            "groups[0].lr (group 'head'): give either 'lr' or 'lr_scale', not both",
        ),
        (
            [{"name": "head", "match": "c.*", "lr": -1e-3}],
            "groups[0].lr (group 'head'): expected a finite number >= 0, got -0.001 (float)",
        ),
        (
            [{"name": "head", "match": "c.*", "lr": float("nan")}],
            "groups[0].lr (group 'head'): expected a finite number >= 0, got nan (float)",
        ),
        (
            [{"name": "head", "match": "c.*", "lr_scale": "inf"}],
            "groups[0].lr_scale (group 'head'): expected a finite number >= 0, got 'inf' (str)",
        ),
        (
            [{"name": "head", "match": "c.*", "lr": "fast"}],
            "groups[0].lr (group 'head'): expected a finite number >= 0, got 'fast' (str)",
        ),
        (
            [{"name": "head", "match": "c.*", "weight_decay": True}],
            "groups[0].weight_decay (group 'head'): expected a finite number >= 0, got True (bool)",
        ),
        (
            [{"name": "head", "match": "re:classifier.(", "lr": 1}],
            "groups[0].match (group 'head'): invalid regular expression 're:classifier.(': missing ) at position 12",
        ),
        (
            [{"name": "head", "match": ["a.*", 3]}],
            "groups[0].match[1] (group 'head'): expected a glob or 're:' regex string, "
            "or a non-empty list of them, got 3 (int)",
        ),
        ([{"name": "head", "match": []}], "groups[0].match (group 'head'): expected a glob"),
        (
            [{"name": "head", "match": "c.*", "layer_decay": 0}],
            "groups[0].layer_decay (group 'head'): expected a number in (0, 1], got 0 (int)",
        ),
        ({"layer_decay": 1.5}, "layer_decay: expected a number in (0, 1], got 1.5 (float)"),
        (
            [{"name": "head", "match": "c.*", "num_layers": 2.5}],
            "groups[0].num_layers (group 'head'): expected a whole number from 1 to 10,000, got 2.5 (float)",
        ),
        (
            [{"name": "head", "match": "c.*", "freeze": "yes"}],
            "groups[0].freeze (group 'head'): expected true or false, got 'yes' (str)",
        ),
        (
            [{"name": "my head", "match": "c.*"}],
            "groups[0].name (group 'my head'): expected a name made of [A-Za-z0-9_.-], got 'my head'",
        ),
        ([{"name": "default", "match": "c.*"}], "groups[0].name (group 'default'): the name 'default' is reserved"),
        (
            [{"name": "head", "match": "c.*", "params": []}],
            "groups[0].params (group 'head'): 'params' is set by the optimizer and scheduler",
        ),
        (
            [{"name": "head", "match": "c.*", "betas": [[0.9], 0.9]}],
            "groups[0].betas[0] (group 'head'): expected a number, string, boolean or a flat list of them",
        ),
        ({"unmatched": "ignore"}, "unmatched: expected one of 'default', 'error', got 'ignore' (str)"),
        ({"groups": {"name": "a"}}, "groups: expected a list of groups"),
        ([["name", "a"]], "groups[0]: expected a group mapping, got ['name', 'a'] (list)"),
        (42, "expected a spec: a list of groups, a mapping with 'groups'"),
    ],
)
def test_errors_name_the_key_the_group_and_what_was_expected(source, message):
    with pytest.raises(SpecError) as caught:
        parse_spec(source)
    assert str(caught.value).startswith(message), str(caught.value)


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match=f"^{path}: no such file$"):
        parse_spec(path)


def test_other_suffix_is_refused(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text("x = 1")
    with pytest.raises(SpecError, match=r"spec.toml: expected a .yaml, .yml or .json file, got suffix '.toml'"):
        parse_spec(path)


def test_invalid_yaml_gives_the_line(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("groups:\n  - name: head\n    match: [classifier.*\n    lr: 1e-3\n")
    with pytest.raises(SpecError) as caught:
        parse_spec(path)
    assert str(caught.value).startswith(f"{path}: line 4, column 7: not valid YAML"), str(caught.value)


def test_invalid_json_gives_the_line(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text('[\n  {"name": "head",\n   "match": "c.*",,}\n]')
    with pytest.raises(SpecError, match=r"spec.json: line 3, column 19: not valid JSON: Expecting property name"):
        parse_spec(path)


def test_duplicate_yaml_key_is_an_error_not_last_wins(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("- name: head\n  match: 'c.*'\n  lr: 1e-3\n  lr: 1e-1\n")
    with pytest.raises(SpecError, match=r"line 4, column 3: not valid YAML: found duplicate key 'lr'"):
        parse_spec(path)


def test_duplicate_json_key_is_an_error():
    with pytest.raises(SpecError, match=r"not valid JSON: duplicate key 'lr'"):
        parse_spec('[{"name": "head", "match": "c.*", "lr": 1, "lr": 2}]')


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("- name: head\n  match: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match="not valid YAML: could not determine a constructor"):
        parse_spec(path)


def test_error_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("- name: head\n  match: 'c.*'\n  lr: fast\n")
    with pytest.raises(SpecError) as caught:
        parse_spec(path)
    assert str(caught.value) == f"{path}: groups[0].lr (group 'head'): expected a finite number >= 0, got 'fast' (str)"


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("# nothing\n")
    with pytest.raises(SpecError, match="the file is empty"):
        parse_spec(path)


def test_direct_construction_validates_and_names_the_group():
    with pytest.raises(SpecError) as caught:
        GroupSpec(name="head", match="c.*", lr=math.inf)
    assert str(caught.value) == "lr (group 'head'): expected a finite number >= 0, got inf (float)"


def test_spec_objects_are_frozen():
    group = GroupSpec(name="head", match="c.*", options={"eps": 1e-6})
    with pytest.raises(AttributeError):
        group.lr = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        group.options["eps"] = 1.0  # type: ignore[index]
