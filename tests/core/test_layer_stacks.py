"""Layer-wise decay per stack: staged models, vision-language and encoder-decoder models, exact ids and rates."""

from __future__ import annotations

import re

import pytest
from helpers import tiny_model

from layerwise_trainer import SpecError, detect_layers, parse_spec, plan_to_data, render_table, resolve_groups

LR = 1.0  # rates are then exact powers of the ratio
RATIO = 0.5


def names_of(family: str) -> list[str]:
    return [name for name, _ in tiny_model(family).named_parameters()]


def resolve(family: str, spec):
    return resolve_groups(tiny_model(family), spec, learning_rate=LR, weight_decay=0.0)


def rates(plan) -> dict[str, float]:
    """Parameter name -> its learning rate."""
    return {name: group.lr for group in plan.groups for name in group.parameter_names}


def sub_groups(plan) -> dict[str, tuple[str | None, int | None, float, set[str]]]:
    """Sub-group name -> (stack, layer id, rate, its parameters), the decay and no-decay halves together."""
    found: dict[str, tuple[str | None, int | None, float, set[str]]] = {}
    for group in plan.groups:
        stack, layer_id, lr, names = found.get(group.name, (group.stack, group.layer_id, group.lr, set()))
        found[group.name] = (stack, layer_id, lr, names | set(group.parameter_names))
    return found


def block_of(name: str, container: str) -> int | None:
    found = re.search(rf"(?:^|\.){container}\.(\d+)\.", name)
    return None if found is None else int(found.group(1))


# Staged models: one id per block, counted through the stages.


def test_swin_gives_each_block_its_own_id_through_the_stages():
    names = names_of("swin")  # depths [2, 1]: stage 0 holds blocks 0 and 1, stage 1 block 0
    layers = detect_layers(names)
    assert dict(layers.stacks) == {"swin.encoder.layers.*.blocks": 3}
    assert layers.num_layers == 3
    for name in names:
        if name.startswith("swin.embeddings."):
            expected = 0
        elif name.startswith("swin.encoder.layers.0.blocks."):
            expected = block_of(name, "blocks") + 1
        elif name.startswith("swin.encoder.layers.0.downsample."):
            expected = 2  # a stage's own parameter, after its blocks: with the block before it
        elif name.startswith("swin.encoder.layers.1.blocks."):
            expected = 3
        else:
            assert name.startswith(("swin.layernorm.", "classifier.")), name
            expected = 4
        assert layers.layer_id_of(name) == expected, name
        assert layers.layer_id_in("swin.encoder.layers.*.blocks", name) == expected, name


def test_convnext_stages_form_one_stack():
    names = names_of("convnext")  # depths [2, 1]
    layers = detect_layers(names)
    assert dict(layers.stacks) == {"convnext.encoder.stages.*.layers": 3}
    assert layers.layer_id_of("convnext.encoder.stages.0.layers.1.dwconv.weight") == 2
    assert layers.layer_id_of("convnext.encoder.stages.1.downsampling_layer.0.weight") == 2
    assert layers.layer_id_of("convnext.encoder.stages.1.layers.0.dwconv.weight") == 3
    assert layers.layer_id_of("classifier.weight") == 4


def test_swin_rates_decay_per_block():
    plan = resolve("swin", {"layer_decay": RATIO})
    assert {name: (stack, layer_id, lr) for name, (stack, layer_id, lr, _) in sub_groups(plan).items()} == {
        f"default/layer_{i}": (None, i, RATIO ** (4 - i)) for i in range(5)
    }
    assert render_table(plan).splitlines()[0].split() == [
        "group", "tensors", "parameters", "lr", "weight", "decay", "no-decay", "tensors", "frozen", "layer",
    ]  # fmt: skip


# Vision-language models: a vision tower and a language model.

LLAVA_VISION = "model.vision_tower.encoder.layers"
LLAVA_LANGUAGE = "model.language_model.layers"


def llava_stack_ids(name: str) -> tuple[str, int]:
    """(stack label, id within it) of every LLaVA parameter, by the documented rules, written out."""
    if name.startswith("model.vision_tower.embeddings."):
        return "vision_tower", 0
    if name.startswith(LLAVA_VISION + "."):
        return "vision_tower", block_of(name, "layers") + 1
    if name.startswith(("model.vision_tower.post_layernorm.", "model.multi_modal_projector.")):
        return "vision_tower", 3  # after the vision tower's 2 blocks
    if name == "model.language_model.embed_tokens.weight":
        return "language_model", 0
    if name.startswith(LLAVA_LANGUAGE + "."):
        return "language_model", block_of(name, "layers") + 1
    assert name in ("model.language_model.norm.weight", "lm_head.weight"), name
    return "language_model", 4  # after the language model's 3 blocks


def test_llava_has_two_stacks_with_short_names():
    layers = detect_layers(names_of("llava"))
    assert dict(layers.stacks) == {LLAVA_VISION: 2, LLAVA_LANGUAGE: 3}
    assert layers.stack_labels() == {LLAVA_VISION: "vision_tower", LLAVA_LANGUAGE: "language_model"}
    assert layers.num_layers == 5


def test_llava_whole_model_is_joined_by_default():
    # One sequence: vision blocks 1-2, language blocks 3-5, lm_head and the final norm 6 (as before).
    plan = resolve("llava", {"layer_decay": RATIO})
    layers = detect_layers(names_of("llava"))
    assert rates(plan) == {name: RATIO ** (6 - layers.layer_id_of(name)) for name in names_of("llava")}
    assert {group.stack for group in plan.groups} == {None}
    assert "stack" not in render_table(plan).splitlines()[0]


def test_llava_separate_decays_each_stack_from_its_own_top():
    plan = resolve("llava", {"layer_decay": RATIO, "layer_stacks": "separate"})
    expected: dict[str, tuple[str, int, float, set[str]]] = {}
    depth = {"vision_tower": 2, "language_model": 3}
    for name in names_of("llava"):
        stack, layer_id = llava_stack_ids(name)
        key = f"default/{stack}/layer_{layer_id}"
        members = expected.setdefault(key, (stack, layer_id, RATIO ** (depth[stack] + 1 - layer_id), set()))[3]
        members.add(name)
    assert sub_groups(plan) == expected
    assert list(sub_groups(plan)) == [f"default/vision_tower/layer_{i}" for i in range(4)] + [
        f"default/language_model/layer_{i}" for i in range(5)
    ]


LLAVA_PARTS = {
    "groups": [
        {"name": "vision", "match": "model.vision_tower.*", "layer_decay": RATIO},
        {"name": "projector", "match": "model.multi_modal_projector.*", "lr": 2.0},
        {"name": "language", "match": ["model.language_model.*", "lm_head.*"], "layer_decay": RATIO},
    ]
}


def test_llava_groups_over_one_stack_decay_within_it():
    plan = resolve("llava", LLAVA_PARTS)
    got = {name: (stack, layer_id, lr) for name, (stack, layer_id, lr, _) in sub_groups(plan).items()}
    assert got == {
        **{f"vision/layer_{i}": ("vision_tower", i, RATIO ** (3 - i)) for i in range(4)},
        "projector": (None, None, 2.0),
        **{f"language/layer_{i}": ("language_model", i, RATIO ** (4 - i)) for i in range(5)},
    }
    assert sub_groups(plan)["vision/layer_3"][3] == {
        "model.vision_tower.post_layernorm.weight",
        "model.vision_tower.post_layernorm.bias",
    }
    assert sub_groups(plan)["language/layer_4"][3] == {"model.language_model.norm.weight", "lm_head.weight"}


def test_joined_keeps_the_model_wide_numbering_for_a_group_over_one_stack():
    spec = {"groups": [{"name": "language", "match": ["model.language_model.*", "lm_head.*"], "layer_decay": RATIO}]}
    spec["groups"][0]["layer_stacks"] = "joined"
    plan = resolve("llava", spec)
    got = {name: (stack, lr) for name, (stack, _, lr, _) in sub_groups(plan).items() if name.startswith("language")}
    # Language blocks are 3-5 of 5, lm_head 6: the top block gets RATIO ** 2 as before this change.
    assert got == {
        "language/layer_0": (None, RATIO**6),
        "language/layer_3": (None, RATIO**3),
        "language/layer_4": (None, RATIO**2),
        "language/layer_5": (None, RATIO**1),
        "language/layer_6": (None, RATIO**0),
    }


def test_qwen2_vl_merger_goes_with_the_vision_tower():
    plan = resolve("qwen2-vl", {"layer_decay": RATIO, "layer_stacks": "separate"})
    groups = sub_groups(plan)
    assert list(groups) == [f"default/visual/layer_{i}" for i in range(4)] + [
        f"default/language_model/layer_{i}" for i in range(5)
    ]
    assert groups["default/visual/layer_0"][3] == {"model.visual.patch_embed.proj.weight"}
    assert groups["default/visual/layer_3"][2:] == (
        1.0,
        {"model.visual.merger.ln_q.weight", "model.visual.merger.ln_q.bias", "model.visual.merger.mlp.0.weight",
         "model.visual.merger.mlp.0.bias", "model.visual.merger.mlp.2.weight", "model.visual.merger.mlp.2.bias"},
    )  # fmt: skip
    assert groups["default/visual/layer_1"][2] == RATIO**2
    assert groups["default/language_model/layer_1"][2] == RATIO**3
    assert groups["default/language_model/layer_0"][3] == {"model.language_model.embed_tokens.weight"}


# Encoder-decoder models.


def test_t5_an_encoder_group_decays_from_the_encoders_top():
    plan = resolve("t5", [{"name": "encoder", "match": ["shared.*", "encoder.*"], "layer_decay": RATIO}])
    encoder = {name: (stack, layer_id, lr) for name, (stack, layer_id, lr, _) in sub_groups(plan).items()}
    assert encoder.pop("default") == (None, None, LR)
    # Before this change the encoder's top block had RATIO ** 3 (L counted the decoder's 2 blocks too).
    assert encoder == {f"encoder/layer_{i}": ("encoder", i, RATIO ** (3 - i)) for i in range(4)}
    assert sub_groups(plan)["encoder/layer_3"][3] == {"encoder.final_layer_norm.weight"}
    assert sub_groups(plan)["encoder/layer_0"][3] == {"shared.weight"}


def test_t5_separate_numbers_encoder_and_decoder_within_themselves():
    plan = resolve("t5", {"layer_decay": RATIO, "layer_stacks": "separate"})
    names = names_of("t5")
    expected: dict[str, tuple[str, int, float, set[str]]] = {}
    for name in names:
        if name == "shared.weight":
            stack, layer_id = "encoder", 0  # before every block: with the first stack
        elif name.startswith(("encoder.block.", "decoder.block.")):
            stack, layer_id = name.split(".")[0], block_of(name, "block") + 1
        else:
            stack, layer_id = name.split(".")[0], 3  # each stack's final_layer_norm, after its 2 blocks
        entry = expected.setdefault(
            f"default/{stack}/layer_{layer_id}", (stack, layer_id, RATIO ** (3 - layer_id), set())
        )
        entry[3].add(name)
    assert sub_groups(plan) == expected


def test_t5_default_stays_joined():
    plan = resolve("t5", {"layer_decay": RATIO})
    layers = detect_layers(names_of("t5"))
    assert rates(plan) == {name: RATIO ** (5 - layers.layer_id_of(name)) for name in names_of("t5")}
    assert [group.stack for group in plan.groups] == [None] * len(plan.groups)


def test_bart_separate_puts_each_stacks_embeddings_at_its_bottom():
    plan = resolve("bart", {"layer_decay": RATIO, "layer_stacks": "separate"})
    groups = sub_groups(plan)
    assert groups["default/encoder/layer_0"][3] == {
        "model.shared.weight",
        "model.encoder.embed_positions.weight",
        "model.encoder.layernorm_embedding.weight",
        "model.encoder.layernorm_embedding.bias",
    }
    assert groups["default/decoder/layer_0"][3] == {
        "model.decoder.embed_positions.weight",
        "model.decoder.layernorm_embedding.weight",
        "model.decoder.layernorm_embedding.bias",
    }
    assert {name: lr for name, (_, _, lr, _) in groups.items()} == {
        **{f"default/encoder/layer_{i}": RATIO ** (3 - i) for i in range(3)},
        **{f"default/decoder/layer_{i}": RATIO ** (3 - i) for i in range(3)},
    }


def test_num_layers_re_anchors_one_stack():
    spec = [{"name": "decoder", "match": "decoder.*", "layer_decay": RATIO, "num_layers": 4}]
    plan = resolve("t5", spec)
    got = {name: (layer_id, lr) for name, (_, layer_id, lr, _) in sub_groups(plan).items() if name != "default"}
    # decoder/layer_0 is the shared embedding, matched by its tied name decoder.embed_tokens.weight.
    assert got == {
        "decoder/layer_0": (0, RATIO**5),
        "decoder/layer_1": (1, RATIO**4),
        "decoder/layer_2": (2, RATIO**3),
        "decoder/layer_5": (5, 1.0),
    }


def test_num_layers_below_a_stacks_blocks_is_an_error():
    spec = [{"name": "decoder", "match": "decoder.*", "layer_decay": RATIO, "num_layers": 1}]
    with pytest.raises(SpecError) as caught:
        resolve("t5", spec)
    assert str(caught.value) == (
        "groups[0].num_layers (group 'decoder'): parameter 'decoder.block.1.layer.0.SelfAttention.q.weight' is in "
        "block 1 of the stack 'decoder.block', beyond num_layers=1 (the stack has 2 blocks)"
    )


def test_num_layers_with_several_separate_stacks_is_an_error():
    spec = [{"name": "body", "match": "*", "layer_decay": RATIO, "layer_stacks": "separate", "num_layers": 4}]
    with pytest.raises(SpecError) as caught:
        resolve("t5", spec)
    assert str(caught.value) == (
        "groups[0].num_layers (group 'body'): num_layers sets the depth of one stack, and this group decays 2 "
        "stacks separately ('encoder.block', 'decoder.block'); split the group by stack, or drop num_layers"
    )


# Gradual unfreezing and the plan.


def test_gradual_unfreezing_starts_every_stack_from_its_own_top():
    plan = resolve("t5", {"layer_decay": RATIO, "layer_stacks": "separate", "gradual_unfreeze": {"every": 10}})
    ranks = {group.name: group.timing.unfreeze_rank for group in plan.groups}
    assert ranks == {
        "default/encoder/layer_0": 3,
        "default/encoder/layer_1": 2,
        "default/encoder/layer_2": 1,
        "default/encoder/layer_3": 0,
        "default/decoder/layer_1": 2,
        "default/decoder/layer_2": 1,
        "default/decoder/layer_3": 0,
    }


def test_the_plan_shows_the_stack_and_the_id():
    plan = resolve(
        "t5", [{"name": "decoder", "match": "decoder.*", "layer_decay": RATIO}, {"name": "rest", "match": "*"}]
    )
    # decoder/layer_0 is T5's shared embedding, which decoder.* matches by its tied name decoder.embed_tokens.weight.
    assert render_table(plan).splitlines() == [
        "group            tensors  parameters     lr  weight decay  no-decay tensors  frozen  stack    layer",
        "---------------  -------  ----------  -----  ------------  ----------------  ------  -------  -----",
        "decoder/layer_0        1         480  0.125             0                 0      no  decoder      0",
        "decoder/layer_1       14       3,184   0.25             0                 4      no  decoder      1",
        "decoder/layer_2       13       3,120    0.5             0                 3      no  decoder      2",
        "decoder/layer_3        1          16      1             0                 1      no  decoder      3",
        "rest                  18       4,240      1             0                 6      no  -            -",
    ]
    data = plan_to_data(plan)
    assert data["stacks"] == {"encoder": 2, "decoder": 2}
    assert [(row["name"], row["stack"], row["layer_id"]) for row in data["rows"]] == [
        ("decoder/layer_0", "decoder", 0),
        ("decoder/layer_1", "decoder", 1),
        ("decoder/layer_2", "decoder", 2),
        ("decoder/layer_3", "decoder", 3),
        ("rest", None, None),
    ]
    assert {group["stack"] for group in data["groups"]} == {"decoder", None}


def test_a_model_with_one_stack_has_no_stack_column():
    plan = resolve("bert", [{"name": "body", "match": "bert.*", "layer_decay": RATIO}])
    assert render_table(plan).splitlines()[0].split()[-1] == "layer"
    assert "stacks" not in plan_to_data(plan)
    assert [group.stack for group in plan.groups] == [None] * len(plan.groups)


# The spec key.


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            [{"name": "body", "match": "*", "layer_decay": 0.8, "layer_stacks": "apart"}],
            "groups[0].layer_stacks (group 'body'): expected 'joined' or 'separate', got 'apart' (str)",
        ),
        (
            [{"name": "body", "match": "*", "layer_stacks": "separate"}],
            "groups[0].layer_stacks (group 'body'): layer_stacks says how layer decay numbers the blocks, and this "
            "group has no layer decay; set layer_decay or remove layer_stacks",
        ),
        (
            {"layer_stacks": "separate", "groups": [{"name": "body", "match": "*"}]},
            "layer_stacks: layer_stacks says how layer decay numbers the blocks, and no group has layer decay; set "
            "layer_decay (at the top level or in a group) or remove layer_stacks",
        ),
    ],
)
def test_layer_stacks_errors(source, message):
    with pytest.raises(SpecError) as caught:
        parse_spec(source)
    assert str(caught.value) == message


def test_layer_stacks_round_trips_and_the_top_level_reaches_every_group():
    spec = parse_spec(
        {
            "layer_decay": 0.8,
            "layer_stacks": "separate",
            "groups": [{"name": "a", "match": "x.*", "layer_stacks": "joined"}, {"name": "b", "match": "y.*"}],
        }
    )
    assert spec.to_dict()["layer_stacks"] == "separate"
    assert spec.to_dict()["groups"][0]["layer_stacks"] == "joined"
    assert parse_spec(spec.to_dict()) == spec
    assert [spec.layer_stacks_of(group) for group in (*spec.groups, None)] == ["joined", "separate", "separate"]
