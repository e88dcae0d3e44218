"""Muon in a spec: which parameters Muon takes, the AdamW part's name and rate, and every refusal."""

from __future__ import annotations

import pytest
from helpers import tiny_model, training_args

from layerwise_trainer import SpecError, build_param_groups, parse_spec, plan_to_data, render_table, resolve_groups

MATRICES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
            "mlp.up_proj", "mlp.down_proj")  # fmt: skip
NORMS = ("input_layernorm", "post_attention_layernorm")


def block_matrices(layer: int) -> tuple[str, ...]:
    return tuple(f"model.layers.{layer}.{name}.weight" for name in MATRICES)


def block_norms(layer: int) -> tuple[str, ...]:
    return tuple(f"model.layers.{layer}.{name}.weight" for name in NORMS)


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


def resolve(model, spec, learning_rate=2e-4, weight_decay=0.1):
    return resolve_groups(model, spec, learning_rate=learning_rate, weight_decay=weight_decay)


def groups_of(plan):
    return [(group.name, group.optimizer, group.lr, group.weight_decay, group.parameter_names) for group in plan.groups]


def test_the_top_level_setting_gives_muon_the_blocks_matrices_and_adamw_the_rest(llama):
    plan = resolve(llama, {"muon": {"adjust_lr_fn": "match_rms_adamw"}})
    assert groups_of(plan) == [
        ("default", "muon", 2e-4, 0.1, block_matrices(0) + block_matrices(1)),
        ("default/adamw", "adamw", 2e-4, 0.1, ("model.embed_tokens.weight", "lm_head.weight")),
        ("default/adamw", "adamw", 2e-4, 0.0, block_norms(0) + block_norms(1) + ("model.norm.weight",)),
    ]
    assert plan.groups[0].options == {"adjust_lr_fn": "match_rms_adamw"}
    assert plan.groups[1].options == {}


def test_a_group_without_a_block_matrix_is_adamw_under_the_top_level_setting(llama):
    spec = {"muon": {"adjust_lr_fn": "match_rms_adamw"}, "groups": [{"name": "head", "match": "lm_head.*", "lr": 1e-3}]}
    plan = resolve(llama, spec)
    assert groups_of(plan)[0] == ("head", "adamw", 1e-3, 0.1, ("lm_head.weight",))


def test_a_muon_group_with_layer_decay_splits_each_layer_and_decays_both_parts(llama):
    spec = {
        "layer_decay": 0.5,
        "groups": [{"name": "body", "match": "model.layers.*", "optimizer": "muon", "lr": 0.02, "adamw_lr": 1e-3}],
    }
    plan = resolve(llama, spec)
    assert groups_of(plan)[:4] == [
        ("body/layer_1", "muon", 0.02 * 0.5**2, 0.1, block_matrices(0)),
        ("body/layer_1/adamw", "adamw", 1e-3 * 0.5**2, 0.0, block_norms(0)),
        ("body/layer_2", "muon", 0.02 * 0.5, 0.1, block_matrices(1)),
        ("body/layer_2/adamw", "adamw", 1e-3 * 0.5, 0.0, block_norms(1)),
    ]
    # The rest is the Trainer's optim's, named so in a plan that chooses optimizers.
    assert {group.optimizer for group in plan.groups[4:]} == {"trainer"}


def test_adamw_lr_scale_and_the_top_level_scale_set_the_adamw_rate(llama):
    own = resolve(llama, {"groups": [{"name": "body", "match": "model.layers.*", "optimizer": "muon", "lr": 0.02,
                                      "adamw_lr_scale": 0.05}]})  # fmt: skip
    assert [(group.name, group.lr) for group in own.groups[:2]] == [("body", 0.02), ("body/adamw", 0.02 * 0.05)]
    top = resolve(llama, {"muon": {"adamw_lr_scale": 0.5, "momentum": 0.9}}, learning_rate=0.02)
    assert [(group.name, group.lr) for group in top.groups] == [
        ("default", 0.02), ("default/adamw", 0.01), ("default/adamw", 0.01),
    ]  # fmt: skip
    assert top.groups[0].options == {"momentum": 0.9}


def test_muon_options_and_weight_decay_the_group_sets_win_over_the_top_level_ones(llama):
    spec = {
        "muon": {"adjust_lr_fn": "match_rms_adamw", "momentum": 0.9, "weight_decay": 0.2},
        "groups": [{"name": "body", "match": "model.layers.1.*", "momentum": 0.8, "weight_decay": 0.05}],
    }
    plan = resolve(llama, spec)
    body, body_adamw = plan.groups[0], plan.groups[1]
    assert (body.name, dict(body.options), body.weight_decay) == (
        "body", {"adjust_lr_fn": "match_rms_adamw", "momentum": 0.8}, 0.05,
    )  # fmt: skip
    assert (body_adamw.name, body_adamw.weight_decay, dict(body_adamw.options)) == ("body/adamw", 0.0, {})
    default = plan.groups[2]
    assert (default.name, default.weight_decay, default.options["momentum"]) == ("default", 0.2, 0.9)


def test_optimizer_adamw_takes_a_group_out_of_the_top_level_split(llama):
    layer0 = {"name": "layer0", "match": "model.layers.0.*", "optimizer": "adamw", "betas": [0.9, 0.95]}
    spec = {"muon": {"adjust_lr_fn": "match_rms_adamw"}, "groups": [layer0]}
    plan = resolve(llama, spec)
    assert [(group.name, group.optimizer) for group in plan.groups[:2]] == [("layer0", "adamw"), ("layer0", "adamw")]
    assert plan.groups[0].options == {"betas": (0.9, 0.95)}


def test_the_plan_shows_each_group_s_optimizer(llama):
    plan = resolve(llama, {"muon": {"adjust_lr_fn": "match_rms_adamw"}})
    assert render_table(plan).splitlines()[:5] == [
        "group          tensors  parameters      lr  weight decay  no-decay tensors  frozen  optimizer  layer",
        "-------------  -------  ----------  ------  ------------  ----------------  ------  ---------  -----",
        "default             14       4,608  0.0002           0.1                 0      no  muon           -",
        "default/adamw        7       1,040  0.0002           0.1                 5      no  adamw          -",
        "",
    ]
    data = plan_to_data(plan)
    assert [(row["name"], row["optimizer"]) for row in data["rows"]] == [
        ("default", "muon"),
        ("default/adamw", "adamw"),
    ]
    assert [group["optimizer"] for group in data["groups"]] == ["muon", "adamw", "adamw"]


def test_a_plan_without_muon_has_no_optimizer_column(llama):
    plan = resolve(llama, {"groups": [{"name": "head", "match": "lm_head.*"}]})
    assert "optimizer" not in render_table(plan).splitlines()[0]
    assert "optimizer" not in plan_to_data(plan)["rows"][0]
    assert plan.optimizer_param_groups()[0].keys() == {"params", "name", "lr", "weight_decay"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"groups": [{"name": "norms", "match": "*norm*", "optimizer": "muon"}]},
            "groups[0].optimizer (group 'norms'): Muon takes the 2-D weight matrices inside transformer blocks, and "
            "this group has none (its 5 trainable parameters are 1-D or outside the blocks, such as "
            "'model.layers.0.input_layernorm.weight', 'model.layers.0.post_attention_layernorm.weight' and 3 more); "
            "choose optimizer: adamw for it",
        ),
        (
            {"groups": [{"name": "body", "match": "model.layers.*", "optimizer": "muon", "lr": 0.02}]},
            "groups[0].adamw_lr (group 'body'): AdamW trains what Muon does not take in this group "
            "('model.layers.0.input_layernorm.weight', 'model.layers.0.post_attention_layernorm.weight' and 2 more), "
            "and its rate is not stated: under Muon's 'original' lr scaling the group's rate is no AdamW rate. Set "
            "adamw_lr or adamw_lr_scale, or adjust_lr_fn: match_rms_adamw (Moonlight's scaling, AdamW's rate "
            "carried over)",
        ),
        (
            {"muon": True},
            "muon (group 'default'): AdamW trains what Muon does not take in this group ('model.embed_tokens.weight', "
            "'model.layers.0.input_layernorm.weight' and 5 more), and its rate is not stated: under Muon's "
            "'original' lr scaling the group's rate is no AdamW rate. Set the top-level muon's adamw_lr_scale, or "
            "adjust_lr_fn: match_rms_adamw (Moonlight's scaling, AdamW's rate carried over)",
        ),
        (
            {
                "groups": [
                    {
                        "name": "body",
                        "match": "model.layers.*",
                        "optimizer": "muon",
                        "lr": 1e-30,
                        "adamw_lr_scale": 1e-300,
                    }
                ]
            },
            "groups[0].adamw_lr_scale (group 'body'): the learning rate 1e-300 x 1e-30 underflows to 0; to freeze "
            "parameters, say so: freeze: true (a trainable group at rate 0 keeps optimizer state for parameters that "
            "never change)",
        ),
        (
            {"muon": {"adamw_lr_scale": 1e308}, "groups": [{"name": "body", "match": "model.layers.*", "lr": 10}]},
            "muon.adamw_lr_scale (group 'body'): the learning rate 1e+308 x 10 is not a finite number; expected a "
            "rate a float can hold",
        ),
    ],
    ids=["1-D only", "AdamW rate unstated", "top-level rate unstated", "AdamW rate underflows", "AdamW rate overflows"],
)
def test_muon_groups_that_cannot_be_right_are_refused_naming_the_group_and_key(llama, spec, message):
    with pytest.raises(SpecError) as caught:
        resolve(llama, spec)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"name": "b", "match": "x", "optimizer": "sgd"}],
         "groups[0].optimizer (group 'b'): expected one of muon, adamw, trainer, got 'sgd' (str)"),
        ([{"name": "b", "match": "x", "optimizer": "muon", "freeze": True}],
         "groups[0].optimizer (group 'b'): a group with freeze: true is in no optimizer, so it cannot choose one"),
        ([{"name": "b", "match": "x", "adamw_lr": 1e-3}],
         "groups[0].adamw_lr (group 'b'): adamw_lr is the rate of the parameters Muon does not take in a group Muon "
         "trains, and Muon trains no parameter of this group; set optimizer: muon (or the top-level muon setting) or "
         "remove adamw_lr"),
        ({"muon": True, "groups": [{"name": "b", "match": "x", "optimizer": "adamw", "adamw_lr_scale": 2}]},
         "groups[0].adamw_lr_scale (group 'b'): adamw_lr_scale is the rate of the parameters Muon does not take in "
         "a group Muon trains, and Muon trains no parameter of this group; set optimizer: muon (or the top-level muon "
         "setting) or remove adamw_lr_scale"),
        ([{"name": "b", "match": "x", "optimizer": "muon", "adamw_lr": 1e-3, "adamw_lr_scale": 2}],
         "groups[0].adamw_lr (group 'b'): give either 'adamw_lr' or 'adamw_lr_scale', not both"),
        ([{"name": "b", "match": "x", "optimizer": "muon", "ns_steps": 300}],
         "groups[0].ns_steps (group 'b'): expected a whole number from 1 to 99, got 300 (int)"),
        ([{"name": "b", "match": "x", "optimizer": "muon", "adjust_lr_fn": "rms"}],
         "groups[0].adjust_lr_fn (group 'b'): expected 'original' or 'match_rms_adamw', got 'rms' (str)"),
        ({"muon": {"momentun": 0.9}},
         "muon: unknown key 'momentun'; did you mean 'momentum'? Expected one of: momentum, nesterov, ns_steps, "
         "ns_coefficients, eps, adjust_lr_fn, weight_decay, adamw_lr_scale"),
        ({"muon": {"momentum": 1.5}}, "muon.momentum: expected a number in [0, 1), got 1.5 (float)"),
        ({"muon": {"ns_coefficients": [1, 2]}},
         "muon.ns_coefficients: expected a list of 3 numbers, got [1, 2] (list)"),
        ({"muon": "yes"}, "muon: expected true or a mapping of Muon's settings, got 'yes' (str)"),
        ({"muon": True, "groups": [{"name": "b", "match": "x", "momentum": 1.5}]},
         "groups[0].momentum (group 'b'): expected a number in [0, 1), got 1.5 (float)"),
        ({"muon": {"adjust_lr_fn": "match_rms_adamw"}, "groups": [{"name": "b", "match": "x", "ns_steps": 0}]},
         "groups[0].ns_steps (group 'b'): expected a whole number from 1 to 99, got 0 (int)"),
        ({"muon": True, "groups": [{"name": "b", "match": "x", "nesterov": "no"}]},
         "groups[0].nesterov (group 'b'): expected true or false, got 'no' (str)"),
    ],
)  # fmt: skip
def test_bad_muon_keys_are_spec_errors_naming_the_key(spec, message):
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    assert str(caught.value) == message


def test_an_unknown_option_of_a_muon_group_names_muon(llama, tmp_path):
    group = {"name": "b", "match": "model.*", "betas": [0.9, 0.9]}
    spec = {"muon": {"adjust_lr_fn": "match_rms_adamw"}, "groups": [group]}
    with pytest.raises(SpecError) as caught:
        build_param_groups(llama, spec, training_args(tmp_path))
    assert str(caught.value).startswith(
        "groups[0].betas (group 'b'): unknown key 'betas': neither a spec key nor a hyperparameter of Muon; "
    )


def test_the_spec_round_trips_with_its_muon_keys():
    spec = parse_spec({"muon": {"adjust_lr_fn": "match_rms_adamw", "ns_coefficients": [3.4, -4.7, 2.0]},
                       "groups": [{"name": "b", "match": "x", "optimizer": "muon", "adamw_lr": 1e-3}]})  # fmt: skip
    assert parse_spec(spec.to_dict()) == spec
    assert spec.to_dict()["muon"] == {"adjust_lr_fn": "match_rms_adamw", "ns_coefficients": [3.4, -4.7, 2.0]}
