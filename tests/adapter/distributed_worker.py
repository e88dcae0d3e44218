"""One process of the multi-process test, run by `torchrun --nproc_per_node 2` on CPU (gloo).

1. A LayerwiseTrainer under DDP with a spec that has a frozen group, a layer-decayed group and a head.
2. A second trainer whose spec differs on rank 1: create_optimizer must refuse on every rank.
3. The same spec on models wrapped by FSDP2 (fully_shard) and FSDP1 (use_orig_params=True) by hand:
   the Trainer enables FSDP only on accelerators, but the names and parameters it hands to
   create_optimizer are these.
4. Groups that start later, under DDP, and the refusals of later starts where they cannot work
   (distributed_staged_worker.py).
5. Muon and AdamW in one optimizer under DDP, and Muon refused on a model sharded by FSDP2.

Each rank writes what it saw to <output_dir>/rank<N>.json for tests/adapter/test_distributed.py to compare.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

# helpers.py sits in tests/, one level up; torchrun puts only this file's own directory on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distributed_staged_worker import run_staged_scenarios
from helpers import RandomClassificationData, tiny_bert, training_args

from layerwise_trainer import LayerwiseTrainer, SpecError, resolve_groups
from layerwise_trainer.checkpoints import plan_layout

SPEC = {
    "groups": [
        {"name": "embeddings", "match": "bert.embeddings.*", "freeze": True},
        {"name": "encoder", "match": "bert.encoder.*", "layer_decay": 0.5, "lr": 1e-3},
        {"name": "head", "match": ["classifier.*", "bert.pooler.*"], "lr": 3e-3},
    ]
}


def checksums(model: torch.nn.Module) -> dict[str, float]:
    result = {}
    for name, parameter in model.named_parameters():
        full = parameter.full_tensor() if hasattr(parameter, "full_tensor") else parameter
        result[name] = float(full.detach().double().sum())
    return result


def train_with_ddp(output_dir: Path) -> dict:
    args = training_args(output_dir / "ddp", max_steps=4, report_to=["tensorboard"], lr_scheduler_type="linear")
    trainer = LayerwiseTrainer(
        model=tiny_bert(), args=args, train_dataset=RandomClassificationData(64), param_groups=SPEC
    )
    initial_embeddings = trainer.model.bert.embeddings.word_embeddings.weight.detach().clone()
    trainer.train()
    return {
        "rank": trainer.args.process_index,
        "world_size": trainer.args.world_size,
        "wrapped": type(trainer.model_wrapped).__name__,
        "layout_hash": plan_layout(trainer.group_plan)["hash"],
        "optimizer_groups": [
            (group["name"], group["initial_lr"], len(group["params"])) for group in trainer.optimizer.param_groups
        ],
        "checksums": checksums(trainer.model),
        "frozen_unchanged": torch.equal(initial_embeddings, trainer.model.bert.embeddings.word_embeddings.weight),
        "log_history": trainer.state.log_history,
    }


def diverging_spec_error(output_dir: Path, rank: int) -> str | None:
    spec = {"groups": [*SPEC["groups"][:2], {**SPEC["groups"][2], "lr": 3e-3 * (1 + rank)}]}
    args = training_args(output_dir / "diverging", max_steps=1)
    trainer = LayerwiseTrainer(model=tiny_bert(), args=args, param_groups=spec)
    try:
        trainer.create_optimizer()
    except SpecError as error:
        return str(error)
    return None


def full_checksums(wrapped: torch.nn.Module, version: int) -> dict[str, float]:
    """Checksums of the whole parameters: FSDP1 keeps only this rank's shard outside forward."""
    if version == 2:
        return checksums(wrapped)
    from torch.distributed.fsdp import FullyShardedDataParallel

    with FullyShardedDataParallel.summon_full_params(wrapped):
        return checksums(wrapped)


def train_with_fsdp(version: int) -> dict:
    model = tiny_bert()
    reference = resolve_groups(model, SPEC, learning_rate=1e-4, weight_decay=0.01)
    reference.freeze_frozen_groups()  # before wrapping, as the Trainer does
    if version == 2:
        from torch.distributed.fsdp import fully_shard

        for layer in model.bert.encoder.layer:
            fully_shard(layer)
        wrapped = fully_shard(model)
    else:
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy
        from transformers.models.bert.modeling_bert import BertLayer

        wrapped = FullyShardedDataParallel(
            model, use_orig_params=True, auto_wrap_policy=ModuleWrapPolicy({BertLayer}), device_id=torch.device("cpu")
        )
    plan = resolve_groups(wrapped, SPEC, learning_rate=1e-4, weight_decay=0.01)
    optimizer = torch.optim.AdamW(plan.optimizer_param_groups())
    before = full_checksums(wrapped, version)
    generator = torch.Generator().manual_seed(dist.get_rank())
    for _ in range(3):
        input_ids = torch.randint(1, 60, (4, 8), generator=generator)
        wrapped(input_ids=input_ids, labels=input_ids[:, 0] % 3).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = full_checksums(wrapped, version)
    summary = [(group.name, group.lr, group.parameter_names) for group in plan.groups]
    return {
        "names_seen": [name for name, _ in wrapped.named_parameters()][:3],
        "same_groups_as_unwrapped": summary
        == [(group.name, group.lr, group.parameter_names) for group in reference.groups],
        "checksums": after,
        "embeddings_unchanged": all(before[name] == after[name] for name in before if ".embeddings." in name),
        "encoder_moved": any(before[name] != after[name] for name in before if ".encoder." in name),
    }


MUON_SPEC = {
    "muon": {"adjust_lr_fn": "match_rms_adamw"},
    "groups": [SPEC["groups"][0], {"name": "head", "match": ["classifier.*", "bert.pooler.*"], "lr": 3e-3}],
}


def train_muon_with_ddp(output_dir: Path) -> dict:
    args = training_args(output_dir / "muon", max_steps=4, lr_scheduler_type="linear", learning_rate=1e-3)
    trainer = LayerwiseTrainer(
        model=tiny_bert(), args=args, train_dataset=RandomClassificationData(64), param_groups=MUON_SPEC
    )
    before = {name: parameter.detach().clone() for name, parameter in trainer.model.named_parameters()}
    trainer.train()
    optimizer = trainer.optimizer.optimizer
    weights = b"".join(parameter.detach().contiguous().numpy().tobytes() for parameter in trainer.model.parameters())
    muon_parameters = [p for group in optimizer.param_groups if group["optimizer"] == "muon" for p in group["params"]]
    after = dict(trainer.model.named_parameters())
    try:
        model = tiny_bert()
        from torch.distributed.fsdp import fully_shard

        fully_shard(model)
        LayerwiseTrainer(model=model, args=training_args(output_dir / "muon_fsdp"), param_groups=MUON_SPEC)
        fsdp_refusal = None
    except SpecError as error:
        fsdp_refusal = str(error)
    return {
        "optimizer": type(optimizer).__name__,
        "groups": [(group["name"], group["optimizer"], len(group["params"])) for group in optimizer.param_groups],
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "muon_state_keys": sorted({key for parameter in muon_parameters for key in optimizer.state[parameter]}),
        "moved": sorted(name for name in before if not torch.equal(before[name], after[name])),
        "fsdp_refusal": fsdp_refusal,
    }


def main(output_dir: Path) -> None:
    result = train_with_ddp(output_dir)
    rank = result["rank"]
    result["diverging_spec_error"] = diverging_spec_error(output_dir, rank)
    result["fsdp2"] = train_with_fsdp(2)
    result["fsdp1"] = train_with_fsdp(1)
    result["staged"] = run_staged_scenarios(output_dir, rank, result["world_size"])
    result["muon"] = train_muon_with_ddp(output_dir)
    (output_dir / f"rank{rank}.json").write_text(json.dumps(result, indent=1))
    # Leave together and tear the process group down: left to interpreter exit, gloo's threads can abort a
    # rank ("terminate called without an active exception", exit -6) after all its work is done.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
