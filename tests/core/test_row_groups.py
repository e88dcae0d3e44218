"""Groups that take rows of a matrix: the `rows` key, how rows resolve against a model, the plan, every refusal."""

from __future__ import annotations

import time

import pytest
import torch
from helpers import tiny_model
from transformers import Qwen2Config, Qwen2ForCausalLM

from layerwise_trainer import (
    MAX_ROW_RANGES,
    GroupSpec,
    SpecError,
    build_param_groups,
    parse_spec,
    plan_to_data,
    render_table,
    resolve_groups,
)
from layerwise_trainer.core.row_groups import MAX_ROW_ITEMS, OriginalVocabulary, RowSelection

EMBEDDING, HEAD = "model.embed_tokens.weight", "lm_head.weight"
# The tiny Llama of helpers.py has 30 rows of 16; take its last 4 rows for tokens added to a vocabulary of 26.
ORIGINAL = OriginalVocabulary(26, "base")
NEW_ROWS = {"name": "new_tokens", "match": [EMBEDDING, HEAD], "rows": "new", "lr": 1e-2, "weight_decay": 0.1}
OLD_ROWS = {"name": "old_tokens", "match": [EMBEDDING, HEAD], "freeze": True}


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


def resolve(model, spec, original=ORIGINAL, **kwargs):
    return resolve_groups(model, spec, learning_rate=1e-3, weight_decay=0.01, original_vocabulary=original, **kwargs)


def refusal(model, spec, original=ORIGINAL) -> str:
    with pytest.raises(SpecError) as caught:
        resolve(model, spec, original)
    return str(caught.value)


# The key.


@pytest.mark.parametrize(
    ("written", "selection", "back"),
    [
        ("new", RowSelection(new=True), "new"),
        ({"from": 32000}, RowSelection(new=True, start=32000), {"from": 32000}),
        ([[32000, 32004], 32010], RowSelection(ranges=((32000, 32004), (32010, 32011))), [[32000, 32004], 32010]),
        ([5, 3, 4, [0, 2], [1, 3]], RowSelection(ranges=((0, 6),)), [[0, 6]]),  # merged: overlapping and adjacent
        ([7.0], RowSelection(ranges=((7, 8),)), [7]),
    ],
)
def test_rows_are_new_from_a_row_or_listed_and_read_back_as_written(written, selection, back):
    spec = parse_spec([{"name": "new_tokens", "match": EMBEDDING, "rows": written}])
    assert spec.groups[0].rows == selection
    assert spec.to_dict()["groups"][0]["rows"] == back
    assert parse_spec(spec.to_dict()) == spec
    assert GroupSpec(name="new_tokens", match=EMBEDDING, rows=written).rows == selection


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("old", "groups[0].rows (group 'x'): expected 'new', {from: N}, or a list of row indices and half-open "
                "[start, stop] ranges such as [[32000, 32004], 32010], got 'old' (str)"),
        ({"from": -1}, "groups[0].rows.from (group 'x'): expected a row index, a whole number from 0 to "
                       "1,000,000,000,000, got -1 (int)"),
        ({"start": 3}, "groups[0].rows (group 'x'): expected 'new', {from: N}"),
        ([3, [4, 4]], "groups[0].rows[1] (group 'x'): expected a range [start, stop] with start < stop (half-open, "
                      "as Python's range: [4, 5] is row 4 alone), got [4, 4] (list)"),
        ([[1, 2, 3]], "groups[0].rows[0] (group 'x'): expected a range [start, stop] (half-open, as Python's range)"),
        ([1.5], "groups[0].rows[0] (group 'x'): expected a row index, a whole number from 0"),
        ([], "groups[0].rows (group 'x'): expected 'new'"),
        ([10**400], "groups[0].rows[0] (group 'x'): expected a row index, a whole number from 0 to "
                    "1,000,000,000,000, got 100000000000000000...0000000000000000000 (int)"),
    ],
)  # fmt: skip
def test_a_bad_rows_value_names_the_group_and_the_key(written, message):
    with pytest.raises(SpecError) as caught:
        parse_spec([{"name": "x", "match": EMBEDDING, "rows": written}])
    assert str(caught.value).startswith(message)


def test_a_group_with_rows_cannot_choose_muon():
    with pytest.raises(SpecError) as caught:
        parse_spec([{"name": "x", "match": EMBEDDING, "rows": "new", "optimizer": "muon"}])
    assert str(caught.value) == (
        "groups[0].optimizer (group 'x'): Muon orthogonalises whole matrices, and a group with rows holds some rows "
        "of a matrix; choose optimizer: adamw for it"
    )


def test_hostile_row_lists_are_refused_in_bounded_time():
    started = time.perf_counter()
    with pytest.raises(SpecError) as too_many_items:
        parse_spec([{"name": "x", "match": EMBEDDING, "rows": [0] * (MAX_ROW_ITEMS + 1)}])
    with pytest.raises(SpecError) as too_many_ranges:
        parse_spec([{"name": "x", "match": EMBEDDING, "rows": list(range(0, 2 * MAX_ROW_ITEMS, 2))}])
    every_row_listed = parse_spec([{"name": "x", "match": EMBEDDING, "rows": list(range(MAX_ROW_ITEMS))}])
    assert time.perf_counter() - started < 2.0  # measured: about 0.15 s on a loaded 2-core machine
    assert str(too_many_items.value) == (
        "groups[0].rows (group 'x'): 100,001 items, more than the 100,000 allowed (MAX_ROW_ITEMS); write contiguous "
        "rows as one [start, stop] range"
    )
    assert str(too_many_ranges.value) == (
        f"groups[0].rows (group 'x'): 100,000 ranges of rows, more than the {MAX_ROW_RANGES:,} allowed "
        "(MAX_ROW_RANGES): each range is one tensor in the optimizer; take contiguous rows"
    )
    assert every_row_listed.groups[0].rows.ranges == ((0, MAX_ROW_ITEMS),)


def test_the_row_items_limit_counts_all_groups_together():
    # Per group alone, 10,000 groups of 100,000 items each would be read: a billion items.
    items = MAX_ROW_ITEMS * 2 // 5
    groups = [{"name": name, "match": EMBEDDING, "rows": list(range(items))} for name in ("a", "b", "c", "d")]
    started = time.perf_counter()
    with pytest.raises(SpecError) as caught:
        parse_spec(groups)
    assert time.perf_counter() - started < 2.0  # the third group is refused before its items are read
    assert str(caught.value) == (
        "groups[2].rows (group 'c'): 120,000 items with the groups before it, more than the 100,000 allowed "
        "(MAX_ROW_ITEMS); write contiguous rows as one [start, stop] range"
    )


def test_a_huge_range_is_never_expanded(llama):
    started = time.perf_counter()
    message = refusal(llama, [{"name": "x", "match": EMBEDDING, "rows": [[0, 10**12]]}])
    assert time.perf_counter() - started < 1.0
    assert message == (
        "groups[0].rows (group 'x'): rows 0:1000000000000 are out of range: 'model.embed_tokens.weight' has 30 rows "
        "(0 to 29)"
    )


# Resolving against a model.


def test_a_row_group_takes_its_rows_and_the_rest_of_the_matrix_goes_to_the_group_that_matches_it(llama):
    plan = resolve(llama, [NEW_ROWS, OLD_ROWS])
    new, old = plan.groups[0], plan.groups[1]
    assert (new.name, new.frozen, new.parameter_names, dict(new.rows)) == (
        "new_tokens", False, (EMBEDDING, HEAD), {EMBEDDING: ((26, 30),), HEAD: ((26, 30),)}
    )  # fmt: skip
    assert (new.lr, new.weight_decay, new.num_elements, new.num_rows) == (1e-2, 0.1, 2 * 4 * 16, 8)
    assert (old.name, old.frozen, dict(old.rows), old.num_elements) == (
        "old_tokens", True, {EMBEDDING: ((0, 26),), HEAD: ((0, 26),)}, 2 * 26 * 16
    )  # fmt: skip
    assert new.entries() == (
        (f"{EMBEDDING}[26:30]", EMBEDDING, (26, 30)),
        (f"{HEAD}[26:30]", HEAD, (26, 30)),
    )
    assert [group.name for group in plan.groups[2:]] == ["default", "default"]  # the body
    assert all(EMBEDDING not in group.parameter_names for group in plan.groups[2:])
    assert plan.row_parameter_names == (EMBEDDING, HEAD)


def test_without_a_group_for_the_rest_it_goes_to_default_at_the_base_rate(llama):
    plan = resolve(llama, [{"name": "new_tokens", "match": EMBEDDING, "rows": [[26, 28], 29]}])
    default = plan.groups[1]
    assert (default.name, default.lr, default.weight_decay) == ("default", 1e-3, 0.01)
    assert dict(default.rows) == {EMBEDDING: ((0, 26), (28, 29))}
    assert default.parameter_names[:2] == (EMBEDDING, "model.layers.0.self_attn.q_proj.weight")
    assert HEAD in default.parameter_names and HEAD not in default.rows  # the head whole: no group took its rows


def test_the_rest_of_a_matrix_the_user_froze_stays_out_and_the_row_group_still_trains_its_rows():
    model = tiny_model("llama")
    model.model.embed_tokens.weight.requires_grad_(False)  # as peft leaves the base model
    plan = resolve(model, [{"name": "new_tokens", "match": EMBEDDING, "rows": "new"}])
    assert dict(plan.groups[0].rows) == {EMBEDDING: ((26, 30),)}
    assert all(EMBEDDING not in group.parameter_names for group in plan.groups[1:])
    assert plan.frozen_before_training == ()  # trained through its rows, so not left out
    plan.freeze_frozen_groups()
    assert not model.model.embed_tokens.weight.requires_grad  # freezing does not touch it either


def test_a_frozen_group_never_freezes_a_matrix_whose_other_rows_train():
    model = tiny_model("llama")
    plan = resolve(model, [NEW_ROWS, OLD_ROWS])
    assert plan.freeze_frozen_groups() == 0
    assert model.model.embed_tokens.weight.requires_grad and model.lm_head.weight.requires_grad


def test_tied_embeddings_are_one_matrix_under_one_rule():
    config = Qwen2Config(vocab_size=30, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)  # fmt: skip
    with torch.device("meta"):
        qwen = Qwen2ForCausalLM(config)
    assert qwen.lm_head.weight is qwen.model.embed_tokens.weight
    plan = resolve(qwen, [{"name": "new_tokens", "match": HEAD, "rows": "new"}, {**OLD_ROWS, "match": EMBEDDING}])
    assert plan.groups[0].parameter_names == (EMBEDDING,) and dict(plan.groups[0].rows) == {EMBEDDING: ((26, 30),)}
    assert dict(plan.groups[1].rows) == {EMBEDDING: ((0, 26),)}
    message = refusal(qwen, [{"name": "output", "match": HEAD, "rows": "new"},
                             {"name": "input", "match": EMBEDDING, "rows": [29]}])  # fmt: skip
    assert message == (
        "groups[1].rows (group 'input'): rows 29 of 'model.embed_tokens.weight' (tied to 'lm_head.weight') are "
        "taken by group 'output' too; a row belongs to one row group"
    )


def test_under_the_top_level_muon_setting_rows_are_trained_by_adamw(llama):
    plan = resolve(llama, {"muon": {"adjust_lr_fn": "match_rms_adamw"}, "groups": [NEW_ROWS]})
    assert [(group.name, group.optimizer, group.parameter_names[:1]) for group in plan.groups[:2]] == [
        ("new_tokens", "adamw", (EMBEDDING,)),
        ("default", "muon", ("model.layers.0.self_attn.q_proj.weight",)),
    ]
    rest = next(group for group in plan.groups if EMBEDDING in group.parameter_names and group.name != "new_tokens")
    assert (rest.name, rest.optimizer) == ("default/adamw", "adamw")


@pytest.mark.parametrize(
    ("spec", "original", "message"),
    [
        ([{"name": "x", "match": EMBEDDING, "rows": [[20, 31]]}], ORIGINAL,
         "groups[0].rows (group 'x'): rows 20:31 are out of range: 'model.embed_tokens.weight' has 30 rows (0 to 29)"),
        ([{"name": "x", "match": "model.norm.weight", "rows": [1]}], ORIGINAL,
         "groups[0].rows (group 'x'): rows take rows of 2-D matrices (an embedding, an LM head), and "
         "'model.norm.weight' has shape [16]; narrow the group's patterns to the matrices"),
        ([NEW_ROWS, {"name": "y", "match": HEAD, "rows": [[20, 27]]}], ORIGINAL,
         "groups[1].rows (group 'y'): rows 26 of 'lm_head.weight' are taken by group 'new_tokens' too; a row belongs "
         "to one row group"),
        ([NEW_ROWS], None,
         "groups[0].rows (group 'new_tokens'): rows: new takes the rows added since the model's original vocabulary, "
         "and that vocabulary's size is not known: the model was not loaded from a checkpoint whose config "
         "(config.name_or_path, read from this machine) gives its vocab_size; give the first new row instead: "
         "rows: {from: N}"),
        ([NEW_ROWS], OriginalVocabulary(30, "base"),
         "groups[0].rows (group 'new_tokens'): 'model.embed_tokens.weight' has 30 rows, so there are no rows added "
         "to the vocabulary of base (30 rows); add the tokens and resize the embeddings first "
         "(model.resize_token_embeddings(len(tokenizer))), or give the rows"),
        ([{"name": "x", "match": EMBEDDING, "rows": {"from": 30}}], None,
         "groups[0].rows (group 'x'): 'model.embed_tokens.weight' has 30 rows, so there are no rows from 30"),
        ([{"name": "x", "match": EMBEDDING, "rows": {"from": 0}}, {"name": "y", "match": EMBEDDING, "freeze": True}],
         ORIGINAL,
         "groups[1] (group 'y'): row groups take every row of the matrices it matches ('model.embed_tokens.weight'), "
         "so nothing is left to it; narrow the row groups' rows or remove this group"),
        ([{"name": "x", "match": "embed*", "rows": "new"}], ORIGINAL,
         "groups[0].match[0] (group 'x'): pattern 'embed*' matches no parameter of LlamaForCausalLM"),
    ],
)  # fmt: skip
def test_rows_that_cannot_be_taken_are_refused_naming_the_group_and_the_key(llama, spec, original, message):
    assert refusal(llama, spec, original).startswith(message)


def test_too_many_ranges_over_all_row_groups_are_refused():
    with torch.device("meta"):
        model = torch.nn.Embedding(4000, 2)
    half = MAX_ROW_RANGES // 2 + 1
    spec = [
        {"name": "even", "match": "weight", "rows": list(range(0, 2 * half, 2))},
        {"name": "odd", "match": "weight", "rows": list(range(2 * half + 1, 4 * half, 2))},
    ]
    assert len(parse_spec(spec).groups[0].rows.ranges) == half  # each group alone is within the bound
    message = refusal(model, spec)
    assert message == (
        f"groups[1].rows (group 'odd'): {2 * half:,} ranges of rows, more than the {MAX_ROW_RANGES:,} allowed "
        "(MAX_ROW_RANGES): each range is one tensor in the optimizer; take contiguous rows"
    )


def test_the_plan_table_and_its_data_show_the_rows(llama):
    plan = resolve(llama, [NEW_ROWS, OLD_ROWS, {"name": "body", "match": "model.*", "lr": 1e-4}])
    assert render_table(plan).splitlines()[:5] == [
        "group       tensors  parameters  rows      lr  weight decay  no-decay tensors  frozen  layer",
        "----------  -------  ----------  ----  ------  ------------  ----------------  ------  -----",
        "new_tokens        2         128     8    0.01           0.1                 0      no      -",
        "old_tokens        2         832    52       0             -                 -     yes      -",
        "body             19       4,688     -  0.0001          0.01                 5      no      -",
    ]
    data = plan_to_data(plan)
    assert [row["rows"] for row in data["rows"]] == [8, 52, None]
    assert data["groups"][0]["rows"] == {EMBEDDING: [[26, 30]], HEAD: [[26, 30]]}
    assert data["groups"][2]["rows"] == {}
    assert "rows" not in plan_to_data(resolve(llama, [OLD_ROWS]))["rows"][0]  # a plan without rows is unchanged


def test_the_optimizer_holds_views_that_share_the_matrix_and_step_only_their_rows():
    model = tiny_model("llama", "cpu")
    plan = resolve(model, [NEW_ROWS, OLD_ROWS])
    views = plan.row_views()
    groups = plan.optimizer_param_groups(views)
    new_rows = groups[0]["params"]
    assert [tuple(view.shape) for view in new_rows] == [(4, 16), (4, 16)]
    weight = model.model.embed_tokens.weight
    assert new_rows[0].is_leaf and new_rows[0].untyped_storage().data_ptr() == weight.untyped_storage().data_ptr()
    before = weight.detach().clone()
    new_rows[0].grad = torch.ones(4, 16)
    optimizer = torch.optim.AdamW(groups)
    optimizer.step()
    assert torch.equal(weight[:26], before[:26])  # weight decay 0.1 and Adam's step touch the new rows only
    assert torch.equal(weight[26:], (before[26:] * (1 - 1e-2 * 0.1)) - 1e-2 * (1 / (1 + 1e-8)))
    state = optimizer.state[new_rows[0]]
    assert state["exp_avg"].shape == (4, 16) and state["exp_avg_sq"].shape == (4, 16)


def test_build_param_groups_refuses_rows_whose_gradients_it_cannot_set(llama):
    with pytest.raises(SpecError) as caught:
        build_param_groups(llama, [NEW_ROWS], learning_rate=1e-3)
    assert str(caught.value).startswith(
        "groups[0].rows (group 'new_tokens'): build_param_groups returns plain param groups, and a group with rows "
        "holds views of a matrix's rows whose gradients must be set from the matrix's after every backward"
    )
