"""docs/spec.md shows the refusals under distributed training (which need several processes) as the code words them."""

from __future__ import annotations

import re
from types import SimpleNamespace

from helpers import tiny_bert
from transformers.training_args import ParallelMode

from layerwise_trainer import SpecError, resolve_groups
from layerwise_trainer.schedulers import check_group_schedules_supported

SPEC = [{"name": "head", "match": "classifier.*"}, {"name": "body", "match": "bert.*", "start": 100}]


def refusal(**trainer) -> str:
    single = SimpleNamespace(lr_scheduler_type="linear", parallel_mode=ParallelMode.NOT_DISTRIBUTED, world_size=1)
    stand_in = SimpleNamespace(**{"args": single, "model": None, **trainer})
    try:
        plan = resolve_groups(tiny_bert(), SPEC, learning_rate=1e-3, weight_decay=0.0)
        check_group_schedules_supported(plan, stand_in)
    except SpecError as error:
        return str(error)
    raise AssertionError(f"not refused: {trainer}")


def test_the_page_quotes_the_fsdp_deepspeed_and_ddp_refusals(repo_root):
    page = (repo_root / "docs" / "spec.md").read_text(encoding="utf-8")
    shown = re.search(r"tests/test_spec_page\.py.*?```text\n(.*?)\n```", page, re.S)
    ddp = SimpleNamespace(lr_scheduler_type="linear", parallel_mode=ParallelMode.DISTRIBUTED, world_size=2,
                          ddp_find_unused_parameters=False)  # fmt: skip
    assert shown is not None
    assert shown.group(1).splitlines() == [
        refusal(is_fsdp_enabled=True),
        refusal(is_deepspeed_enabled=True),
        refusal(args=ddp),
    ]
