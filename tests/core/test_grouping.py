"""Resolving specs against models: exact membership, learning rates, weight decay and every error."""

from __future__ import annotations

import logging
import operator

import pytest
import torch
from helpers import BODY_HEAD_SPEC, tiny_bert, tiny_model, training_args
from torch import nn

from layerwise_trainer import SpecError, build_param_groups, parse_spec, resolve_groups
from layerwise_trainer.core.parameter_names import ParameterTable
from layerwise_trainer.core.weight_decay import decay_parameter_names

BASE_LR = 1e-4
BASE_WD = 0.01


def names_of(model: nn.Module, prefix: str = "") -> tuple[str, ...]:
    return tuple(name for name, _ in model.named_parameters() if name.startswith(prefix))


def resolve(model, spec, **kwargs):
    return resolve_groups(model, spec, learning_rate=BASE_LR, weight_decay=BASE_WD, **kwargs)


def summary(plan):
    return [(group.name, group.lr, group.weight_decay, group.frozen, group.parameter_names) for group in plan.groups]


def test_body_head_membership_and_hyperparameters(bert):
    plan = resolve(bert, BODY_HEAD_SPEC)
    assert summary(plan) == [
        ("body", 0.0, BASE_WD, True, names_of(bert, "bert.")),
        ("head", 2e-5, BASE_WD, False, ("classifier.weight",)),
        ("head", 2e-5, 0.0, False, ("classifier.bias",)),
    ]
    assert plan.group_names == ("body", "head")
    assert plan.frozen_group_names == ("body",)
    assert plan.frozen_before_training == ()
    assert plan.groups[1].num_elements == bert.classifier.weight.numel()


def test_build_param_groups_leaves_out_frozen_groups_and_changes_nothing(bert):
    spec = parse_spec(BODY_HEAD_SPEC)
    before = spec.to_dict()
    groups = build_param_groups(bert, spec, learning_rate=BASE_LR, weight_decay=BASE_WD)
    assert [(group["name"], group["lr"], group["weight_decay"]) for group in groups] == [
        ("head", 2e-5, BASE_WD),
        ("head", 2e-5, 0.0),
    ]
    assert groups[0]["params"][0] is bert.classifier.weight
    assert groups[1]["params"][0] is bert.classifier.bias
    assert all(parameter.requires_grad for parameter in bert.parameters())
    assert spec.to_dict() == before


def test_freeze_frozen_groups_freezes_exactly_the_frozen_group(bert):
    plan = resolve(bert, BODY_HEAD_SPEC)
    assert plan.freeze_frozen_groups() == len(names_of(bert, "bert."))
    frozen = {name for name, parameter in bert.named_parameters() if not parameter.requires_grad}
    assert frozen == set(names_of(bert, "bert."))
    assert plan.freeze_frozen_groups() == 0


def test_first_match_wins(bert):
    plan = resolve(
        bert,
        [
            {"name": "top", "match": "bert.encoder.layer.1.*", "lr": 1e-3},
            {"name": "rest", "match": "*", "lr": 1e-5},
        ],
    )
    top = {name for group in plan.groups if group.name == "top" for name in group.parameter_names}
    rest = {name for group in plan.groups if group.name == "rest" for name in group.parameter_names}
    assert top == set(names_of(bert, "bert.encoder.layer.1."))
    assert rest == set(names_of(bert)) - top


def test_unmatched_parameters_form_the_default_group(bert):
    plan = resolve(bert, [{"name": "head", "match": "classifier.*", "lr": 1e-3}])
    default = [group for group in plan.groups if group.name == "default"]
    assert [(group.lr, group.weight_decay) for group in default] == [(BASE_LR, BASE_WD), (BASE_LR, 0.0)]
    assert {name for group in default for name in group.parameter_names} == set(names_of(bert, "bert."))
    assert all(group.source == "default" for group in default)


def test_unmatched_error_lists_the_parameters(bert):
    with pytest.raises(SpecError) as caught:
        resolve(bert, {"groups": [{"name": "head", "match": "classifier.*"}], "unmatched": "error"})
    message = str(caught.value)
    total = len(names_of(bert, "bert."))
    assert message.startswith(
        f"unmatched: {total} trainable parameters match no group: 'bert.embeddings.word_embeddings.weight'"
    )
    assert f"and {total - 10} more; add a group for them, or set unmatched: default" in message


def test_a_pattern_that_matches_nothing_is_a_typo_with_a_suggestion(bert):
    with pytest.raises(SpecError) as caught:
        resolve(bert, [{"name": "body", "match": ["classifier.*", "bert.encoder.layers.*"], "lr": 1e-5}])
    assert str(caught.value).startswith(
        "groups[0].match[1] (group 'body'): pattern 'bert.encoder.layers.*' matches no parameter of "
        "BertForSequenceClassification; did you mean 'bert.encoder.layer.*' or "
    )


def test_a_group_emptied_by_earlier_groups_is_an_error(bert):
    with pytest.raises(SpecError) as caught:
        resolve(
            bert,
            [
                {"name": "encoder", "match": "bert.encoder.*", "lr": 1e-5},
                {"name": "top", "match": "bert.encoder.layer.1.*", "lr": 1e-3},
            ],
        )
    assert str(caught.value).startswith(
        "groups[1] (group 'top'): every parameter it matches was taken by an earlier group ('encoder')"
    )


def test_layer_decay_splits_the_group_by_layer_with_exact_rates(bert):
    plan = resolve(
        bert,
        [
            {"name": "head", "match": "classifier.*", "lr": 1e-3},
            {"name": "body", "match": "bert.*", "lr": 1e-4, "layer_decay": 0.5},
        ],
    )
    body = [group for group in plan.groups if group.source == "body"]
    by_layer = {}
    for group in body:
        by_layer.setdefault((group.name, group.layer_id, group.lr), set()).update(group.parameter_names)
    # L = 2 blocks: embeddings 0, blocks 1 and 2, pooler 3 = L + 1.
    assert by_layer == {
        ("body/layer_0", 0, 1e-4 * 0.5**3): set(names_of(bert, "bert.embeddings.")),
        ("body/layer_1", 1, 1e-4 * 0.5**2): set(names_of(bert, "bert.encoder.layer.0.")),
        ("body/layer_2", 2, 1e-4 * 0.5**1): set(names_of(bert, "bert.encoder.layer.1.")),
        ("body/layer_3", 3, 1e-4 * 0.5**0): set(names_of(bert, "bert.pooler.")),
    }
    assert plan.group_names == ("head", "body/layer_0", "body/layer_1", "body/layer_2", "body/layer_3")
    assert plan.num_layers == 2


def test_top_level_layer_decay_reaches_default_and_one_turns_it_off(bert):
    plan = resolve(
        bert,
        {
            "layer_decay": 0.5,
            "groups": [{"name": "head", "match": "classifier.*", "lr": 1e-3, "layer_decay": 1}],
        },
    )
    assert plan.group_names == ("head", "default/layer_0", "default/layer_1", "default/layer_2", "default/layer_3")
    lrs = {group.name: group.lr for group in plan.groups}
    assert lrs["head"] == 1e-3
    assert lrs["default/layer_0"] == BASE_LR * 0.5**3
    assert lrs["default/layer_3"] == BASE_LR


def test_num_layers_override_changes_the_exponent(bert):
    plan = resolve(bert, [{"name": "body", "match": "*", "layer_decay": 0.5, "num_layers": 4}])
    lrs = {group.name: group.lr for group in plan.groups}
    assert lrs == {
        "body/layer_0": BASE_LR * 0.5**5,
        "body/layer_1": BASE_LR * 0.5**4,
        "body/layer_2": BASE_LR * 0.5**3,
        "body/layer_5": BASE_LR,
    }


def test_num_layers_below_the_blocks_is_an_error(bert):
    with pytest.raises(SpecError, match=r"groups\[0\].num_layers \(group 'body'\): parameter 'bert.encoder.layer.1"):
        resolve(bert, [{"name": "body", "match": "*", "layer_decay": 0.5, "num_layers": 1}])


def test_layer_decay_without_blocks_is_an_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    with pytest.raises(SpecError) as caught:
        resolve(model, {"layer_decay": 0.8})
    assert str(caught.value).startswith("layer_decay (group 'default'): layer_decay needs transformer blocks")
    with pytest.raises(SpecError, match=r"^groups\[0\].layer_decay \(group 'all'\): layer_decay needs"):
        resolve(model, [{"name": "all", "match": "*", "layer_decay": 0.8}])


def test_weight_decay_per_parameter_follows_the_stock_rule(bert):
    plan = resolve(
        bert,
        [
            {"name": "body", "match": "bert.*", "weight_decay": 0.05, "layer_decay": 0.9},
            {"name": "head", "match": "classifier.*"},
        ],
    )
    decayed = decay_parameter_names(bert)
    weight_decay_of = {name: group.weight_decay for group in plan.groups for name in group.parameter_names}
    assert set(weight_decay_of) == set(names_of(bert))
    for name, weight_decay in weight_decay_of.items():
        if name not in decayed:
            assert weight_decay == 0.0, name
        elif name.startswith("bert."):
            assert weight_decay == 0.05, name
        else:
            assert weight_decay == BASE_WD, name
    assert weight_decay_of["classifier.weight"] == BASE_WD
    assert weight_decay_of["bert.encoder.layer.0.output.LayerNorm.weight"] == 0.0


def test_decay_parameter_names_from_the_caller_are_used(bert):
    plan = resolve(bert, [{"name": "head", "match": "classifier.*"}], decay_parameter_names=["classifier.bias"])
    head = [(group.parameter_names, group.weight_decay) for group in plan.groups if group.name == "head"]
    assert head == [(("classifier.bias",), BASE_WD), (("classifier.weight",), 0.0)]


def test_parameters_frozen_by_the_user_stay_out(bert, caplog):
    for parameter in bert.bert.embeddings.parameters():
        parameter.requires_grad_(False)
    bert.classifier.bias.requires_grad_(False)
    with caplog.at_level(logging.WARNING):
        plan = resolve(
            bert,
            [
                {"name": "embeddings", "match": "bert.embeddings.*", "lr": 1e-3},
                {"name": "head", "match": "classifier.*", "lr": 1e-3},
            ],
        )
    trainable = {name for group in plan.trainable_groups for name in group.parameter_names}
    assert "classifier.bias" not in trainable
    assert not trainable & set(names_of(bert, "bert.embeddings."))
    assert plan.frozen_before_training == ("classifier.bias",)
    assert plan.frozen_group_names == ("embeddings",)
    assert "group 'embeddings': every parameter it matches was frozen before training" in caplog.text


def test_tied_weights_match_by_either_name():
    model = tiny_model("gpt2", device="cpu")
    assert model.lm_head.weight is model.transformer.wte.weight
    plan = resolve(model, [{"name": "output", "match": "lm_head.*", "lr": 1e-3}])
    output = [group.parameter_names for group in plan.groups if group.name == "output"]
    assert output == [("transformer.wte.weight",)]
    assert "transformer.wte.weight" not in {n for g in plan.groups if g.name == "default" for n in g.parameter_names}


def test_the_plan_keeps_every_tensor_under_its_first_name_in_model_order():
    model = tiny_model("gpt2", device="cpu")
    plan = resolve(model, [{"name": "output", "match": "lm_head.*", "lr": 1e-3}])
    distinct = dict(model.named_parameters())  # a tied weight once, under its first name
    assert list(plan.parameters) == list(distinct)
    assert all(plan.parameters[name] is tensor for name, tensor in distinct.items())
    assert "lm_head.weight" not in plan.parameters


def test_resolving_builds_no_name_to_tensor_dict(bert):
    # At 50,000 tensors the dict took 8 ms; resolving and create_optimizer's check read the columns alone.
    plan = resolve(bert, BODY_HEAD_SPEC)
    assert isinstance(plan.parameters, ParameterTable)
    assert ParameterTable._by_name.attrname not in vars(plan.parameters)
    assert plan.parameters.names == names_of(bert)
    assert all(map(operator.is_, plan.parameters.tensors, bert.parameters()))


def test_a_parameter_table_refuses_a_name_twice_when_looked_up(bert):
    table = ParameterTable(["a", "a"], [bert.classifier.weight, bert.classifier.bias])
    with pytest.raises(ValueError, match="holds a name twice"):
        table["a"]


def test_a_parameter_table_refuses_columns_of_different_lengths(bert):
    with pytest.raises(ValueError, match="2 names for 1 tensors"):
        ParameterTable(["a", "b"], [bert.classifier.weight])


def test_optimizer_options_pass_through(bert):
    groups = build_param_groups(
        bert,
        [{"name": "head", "match": "classifier.*", "betas": [0.8, 0.9], "eps": "1e-6"}],
        optimizer_cls=torch.optim.AdamW,
    )
    head = [group for group in groups if group["name"] == "head"]
    assert [(group["betas"], group["eps"]) for group in head] == [((0.8, 0.9), 1e-6)] * 2
    assert all("betas" not in group for group in groups if group["name"] == "default")


def test_unknown_option_names_the_optimizer_and_suggests(bert):
    with pytest.raises(SpecError) as caught:
        build_param_groups(
            bert, [{"name": "head", "match": "classifier.*", "lr_sclae": 2}], optimizer_cls=torch.optim.AdamW
        )
    message = str(caught.value)
    assert message.startswith(
        "groups[0].lr_sclae (group 'head'): unknown key 'lr_sclae': neither a spec key nor a hyperparameter "
        "of AdamW; did you mean 'lr_scale'?"
    )
    assert "AdamW takes: amsgrad, betas, capturable" in message


def test_option_of_the_wrong_kind_is_refused(bert):
    with pytest.raises(
        SpecError, match=r"groups\[0\].betas \(group 'head'\): AdamW expects a list of 2 numbers, got 0.9"
    ):
        build_param_groups(
            bert, [{"name": "head", "match": "classifier.*", "betas": 0.9}], optimizer_cls=torch.optim.AdamW
        )


def test_option_value_the_optimizer_refuses_is_a_spec_error(bert):
    with pytest.raises(SpecError) as caught:
        build_param_groups(
            bert, [{"name": "head", "match": "classifier.*", "betas": [1.5, 0.9]}], optimizer_cls=torch.optim.AdamW
        )
    assert str(caught.value) == (
        "groups[0] (group 'head'): AdamW refuses the group's hyperparameters (betas): "
        "Invalid beta parameter at index 0: 1.5"
    )


def test_build_param_groups_from_training_arguments(bert, tmp_path):
    args = training_args(tmp_path, learning_rate=1e-4, weight_decay=0.1, optim="sgd")
    groups = build_param_groups(
        bert, [{"name": "head", "match": "classifier.*", "lr_scale": 10, "momentum": 0.9}], args
    )
    assert [(group["name"], group["lr"], group["weight_decay"], group.get("momentum")) for group in groups] == [
        ("head", 1e-3, 0.1, 0.9),
        ("head", 1e-3, 0.0, 0.9),
        ("default", 1e-4, 0.1, None),
        ("default", 1e-4, 0.0, None),
    ]
    with pytest.raises(SpecError, match="unknown key 'betas': neither a spec key nor a hyperparameter of sgd"):
        build_param_groups(bert, [{"name": "head", "match": "classifier.*", "betas": [0.9, 0.9]}], args)


def test_defaults_without_arguments_are_the_training_arguments_defaults(bert):
    groups = build_param_groups(bert, [{"name": "head", "match": "classifier.*", "lr_scale": 2}])
    assert [(group["name"], group["lr"], group["weight_decay"]) for group in groups] == [
        ("head", 1e-4, 0.0),
        ("head", 1e-4, 0.0),
        ("default", 5e-5, 0.0),
        ("default", 5e-5, 0.0),
    ]


def test_every_parameter_frozen_is_an_error(bert):
    with pytest.raises(SpecError, match="no parameter is left to train"):
        resolve(bert, [{"name": "all", "match": "*", "freeze": True}])


def test_compiled_and_data_parallel_models_match_the_same_names():
    model = tiny_bert()
    expected = summary(resolve(model, BODY_HEAD_SPEC))
    compiled = torch.compile(model)
    assert next(iter(compiled.state_dict())).startswith("_orig_mod.")
    assert summary(resolve(compiled, BODY_HEAD_SPEC)) == expected
    assert summary(resolve(nn.DataParallel(model), BODY_HEAD_SPEC)) == expected


def test_fsdp_wrapper_segments_are_removed():
    inner = nn.Module()
    inner.classifier = nn.Linear(2, 2)
    outer = nn.Module()
    outer._fsdp_wrapped_module = inner
    plan = resolve(outer, [{"name": "head", "match": "classifier.*"}])
    assert [group.parameter_names for group in plan.groups] == [("classifier.weight",), ("classifier.bias",)]


def test_flattened_fsdp_parameters_are_refused():
    wrapped = nn.Module()
    wrapped.register_parameter("flat_param", nn.Parameter(torch.zeros(4)))
    outer = nn.Module()
    outer._fsdp_wrapped_module = wrapped
    with pytest.raises(SpecError, match="flattened FSDP parameter; a spec needs the original parameters"):
        resolve(outer, [{"name": "head", "match": "*"}])


def test_no_weight_decay_patterns_join_the_no_decay_half_of_every_group():
    spec = {
        "no_weight_decay": ["*.embeddings.*_embeddings.weight", "re:classifier\\.weight"],
        "groups": [{"name": "head", "match": "classifier.*"}],
    }
    plan = resolve_groups(tiny_bert(), spec, learning_rate=1e-3, weight_decay=0.01)
    halves = {(group.name, group.no_decay): (group.weight_decay, group.parameter_names) for group in plan.groups}
    assert halves[("head", True)] == (0.0, ("classifier.weight", "classifier.bias"))
    assert ("head", False) not in halves
    default_no_decay = halves[("default", True)][1]
    assert default_no_decay[:3] == (
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.position_embeddings.weight",
        "bert.embeddings.token_type_embeddings.weight",
    )
    assert not any("_embeddings." in name for name in halves[("default", False)][1])
    assert parse_spec(spec).to_dict()["no_weight_decay"] == spec["no_weight_decay"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("cls_tokn", "no_weight_decay[0]: pattern 'cls_tokn' matches no parameter of BertForSequenceClassification"),
        ([1], "no_weight_decay[0]: expected a glob or 're:' regex string, or a non-empty list of them, got 1 (int)"),
    ],
)
def test_bad_no_weight_decay_patterns_are_named(value, message):
    with pytest.raises(SpecError) as caught:
        resolve_groups(tiny_bert(), {"no_weight_decay": value}, learning_rate=1e-3, weight_decay=0.01)
    assert str(caught.value).startswith(message)


def test_element_counts_read_the_whole_shape_of_a_zero3_placeholder():
    # DeepSpeed ZeRO-3 leaves a parameter of shape (0,) and records the whole shape in ds_shape.
    # A tensor of no elements without ds_shape counts none.
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    placeholder = nn.Parameter(torch.empty(0))
    placeholder.ds_shape = (3, 4)
    model[0].weight = placeholder
    model[1].bias = nn.Parameter(torch.empty(0))
    plan = resolve(model, [{"name": "first", "match": "0.*"}, {"name": "second", "match": "1.*"}])
    assert [(group.name, group.num_elements) for group in plan.groups] == [
        ("first", 12), ("first", 3), ("second", 6), ("second", 0)
    ]  # fmt: skip
