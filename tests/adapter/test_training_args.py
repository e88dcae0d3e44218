"""`LayerwiseTrainingArguments` holding spec objects survives everything the Trainer does with arguments.

The Trainer saves `training_args.bin` with `torch.save` at every checkpoint, and TensorBoard logs
`args.to_json_string()` and `args.to_sanitized_dict()`: a spec given as `GroupSpec` or `LayerwiseSpec`
objects must pickle and render as plain data.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from helpers import training_args

from layerwise_trainer import GroupSpec, LayerwiseSpec, LayerwiseTrainer, LayerwiseTrainingArguments

GROUPS = [
    GroupSpec(name="body", match="bert.*", lr_scale=0.1, options={"betas": [0.9, 0.98]}),
    GroupSpec(name="head", match=["classifier.*"], lr=1e-3),
]
PLAIN_GROUPS = [
    {"name": "body", "match": "bert.*", "lr_scale": 0.1, "betas": [0.9, 0.98]},
    {"name": "head", "match": "classifier.*", "lr": 1e-3},
]
FORMS = {
    "GroupSpec list": (GROUPS, PLAIN_GROUPS),
    "LayerwiseSpec": (LayerwiseSpec(groups=GROUPS, layer_decay=0.8), {"groups": PLAIN_GROUPS, "layer_decay": 0.8}),
    "dict of GroupSpec": ({"groups": GROUPS, "unmatched": "error"}, {"groups": PLAIN_GROUPS, "unmatched": "error"}),
    "dict": ({"layer_decay": 0.5}, {"layer_decay": 0.5}),
    "path": (Path("spec.yaml"), "spec.yaml"),
    "JSON string": ('[{"name": "head", "match": "classifier.*"}]', '[{"name": "head", "match": "classifier.*"}]'),
}


def layerwise_args(output_dir: Path, param_groups: object, **overrides: object) -> LayerwiseTrainingArguments:
    settings: dict[str, object] = {"param_groups": param_groups, "max_steps": 2, "logging_steps": 500, **overrides}
    return training_args(output_dir, LayerwiseTrainingArguments, **settings)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_param_groups_render_as_plain_data(tmp_path, form):
    given, plain = FORMS[form]
    args = layerwise_args(tmp_path, given)
    assert args.to_dict()["param_groups"] == plain
    assert json.loads(args.to_json_string())["param_groups"] == plain
    sanitized = args.to_sanitized_dict()["param_groups"]
    assert sanitized == (plain if isinstance(plain, str) else str(plain))


@pytest.mark.parametrize("form", sorted(FORMS))
def test_arguments_with_any_spec_form_survive_torch_save(tmp_path, form):
    args = layerwise_args(tmp_path, FORMS[form][0])
    buffer = io.BytesIO()
    torch.save(args, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded.param_groups == args.param_groups


def test_a_run_with_group_specs_saves_checkpoints_and_logs_to_tensorboard(tmp_path, bert, data):
    args = layerwise_args(tmp_path, GROUPS, save_strategy="steps", save_steps=1, report_to=["tensorboard"])
    trainer = LayerwiseTrainer(model=bert, args=args, train_dataset=data)
    trainer.train()
    checkpoint = tmp_path / "checkpoint-1"
    assert {"optimizer.pt", "training_args.bin", "model.safetensors"} <= {path.name for path in checkpoint.iterdir()}
    saved = torch.load(checkpoint / "training_args.bin", weights_only=False)
    assert saved.param_groups == GROUPS
    assert list((tmp_path / "runs").glob("*/events.out.tfevents.*"))
