"""One process of the per-group diagnostics test under two processes, run by torchrun on CPU (gloo).

1. DDP: a LayerwiseTrainer with ``group_diagnostics=True``.
2. FSDP2 (``fully_shard``), FSDP1 (``use_orig_params=True``; full sharding, the same with clipping on, and
   ``NO_SHARD``): the Trainer keeps FSDP for accelerators only (on CPU accelerate drops the plugin and trains
   with DDP), so these models are wrapped by hand and trained by `train_like_the_trainer`, which calls the
   callbacks and computes ``grad_norm`` as the Trainer's optimizer step does under FSDP.
3. FSDP1 with an ignored module, whose parameters are trained whole beside sharded ones: refused by the
   callback's ``on_train_begin``.

A probe beside the diagnostics records, on every rank, each group's WHOLE gradients and weights before the
step and weights after it (DDP: as they are; FSDP2: ``full_tensor()``; FSDP1: inside ``summon_full_params``)
and computes the norms by hand in float64. Each rank writes the logged entries and its hand values to
<output_dir>/diagnostics_rank<N>.json for tests/adapter/test_distributed_diagnostics.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

# helpers.py sits in tests/, one level up; torchrun puts only this file's own directory on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import RandomClassificationData, tiny_bert, training_args
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from layerwise_trainer import LayerwiseTrainer, LayerwiseTrainingArguments, resolve_groups
from layerwise_trainer.callbacks import GroupDiagnosticsCallback
from layerwise_trainer.core.group_statistics import grouped_norms

SPEC = {
    "groups": [
        {"name": "embeddings", "match": "bert.embeddings.*", "freeze": True},
        {"name": "encoder", "match": "bert.encoder.*", "layer_decay": 0.5, "lr": 1e-3},
        {"name": "head", "match": ["classifier.*", "bert.pooler.*"], "lr": 3e-3},
    ]
}
STEPS = 2
CLIPPED_AT = 0.1  # below the sharded runs' first gradient norm (about 0.31)
PREFIXES = ("grad_norm/", "update_ratio/", "param_norm/")


def norm(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(tensor.double().square().sum()) for tensor in tensors))


def as_is(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def nothing_to_gather(with_grads: bool) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


def local_numel(tensor: torch.Tensor) -> int:
    """The elements this rank holds (a DTensor's ``numel()`` is the whole tensor's)."""
    return tensor.to_local().numel() if hasattr(tensor, "to_local") else tensor.numel()


def by_group(optimizer: Any) -> dict[str, list[torch.Tensor]]:
    """The optimizer's parameters by group name, the decay and no-decay halves together."""
    groups: dict[str, list[torch.Tensor]] = {}
    for group in optimizer.param_groups:
        groups.setdefault(group["name"], []).extend(group["params"])
    return groups


class WholeTensorProbe(TrainerCallback):
    """Each group's whole gradients and weights around every optimizer step, and their norms by hand.

    Args:
        gathered: A context in which the parameters (and, when asked, their gradients) are whole.
        whole: A parameter or gradient made whole inside that context.
    """

    def __init__(
        self,
        gathered: Callable[[bool], contextlib.AbstractContextManager[Any]] = nothing_to_gather,
        whole: Callable[[torch.Tensor], torch.Tensor] = as_is,
    ) -> None:
        self.gathered = gathered
        self.whole = whole
        self.grads: dict[str, list[torch.Tensor]] = {}
        self.before: dict[str, list[torch.Tensor]] = {}
        self.hand: list[dict[str, float]] = []
        self.local_elements: dict[str, int] = {}

    def _read(self, optimizer: Any, gradients: bool) -> dict[str, list[torch.Tensor]]:
        read = (lambda p: p.grad) if gradients else (lambda p: p.detach())
        return {
            name: [self.whole(read(p)).clone() for p in params if read(p) is not None]
            for name, params in by_group(optimizer).items()
        }

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.local_elements = {name: sum(map(local_numel, params)) for name, params in by_group(optimizer).items()}
        with torch.no_grad(), self.gathered(True):
            self.grads, self.before = self._read(optimizer, gradients=True), self._read(optimizer, gradients=False)

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        with torch.no_grad(), self.gathered(False):
            after = self._read(optimizer, gradients=False)
        values = {}
        for name, weights in after.items():
            update = [new - old for new, old in zip(weights, self.before[name], strict=True)]
            values[f"grad_norm/{name}"] = norm(self.grads[name])
            values[f"update_ratio/{name}"] = norm(update) / norm(self.before[name])
            values[f"param_norm/{name}"] = norm(weights)
        self.hand.append(values)


def logged(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The training entries' step, grad_norm and per-group diagnostics."""
    return [
        {key: value for key, value in entry.items() if key in ("step", "grad_norm") or key.startswith(PREFIXES)}
        for entry in log_history
        if "loss" in entry
    ]


def train_with_ddp(output_dir: Path) -> dict[str, Any]:
    args = training_args(
        output_dir / "ddp", arguments_class=LayerwiseTrainingArguments, max_steps=STEPS, group_diagnostics=True,
        max_grad_norm=0.0, weight_decay=0.01, per_device_train_batch_size=4,
    )  # fmt: skip
    probe = WholeTensorProbe()
    trainer = LayerwiseTrainer(
        model=tiny_bert(), args=args, train_dataset=RandomClassificationData(16), param_groups=SPEC, callbacks=[probe]
    )
    trainer.train()
    return {
        "wrapped": type(trainer.model_wrapped).__name__,
        "entries": logged(trainer.state.log_history),
        "hand": probe.hand,
        "local_elements": probe.local_elements,
    }


def call(callbacks: list[TrainerCallback], event: str, args: TrainingArguments, state, control, **kwargs) -> None:
    for callback in callbacks:
        getattr(callback, event)(args, state, control, **kwargs)


# A sharded model: (the wrapped model, a probe that sees its whole tensors, clip_grad_norm_(max_norm) as accelerate
# calls it under this kind of FSDP, returning the total norm before clipping).
Sharded = tuple[nn.Module, WholeTensorProbe, Callable[[float], torch.Tensor]]


def train_like_the_trainer(sharded: Sharded, callbacks: list[TrainerCallback], args: TrainingArguments) -> list:
    """Transformers' optimizer step with its callback events, on a model the Trainer cannot wrap on CPU.

    The order is the Trainer's: backward, the gradient norm (clipped to ``max_grad_norm`` when it is above 0,
    the total before clipping logged as ``grad_norm``), ``on_pre_optimizer_step``, the step,
    ``on_optimizer_step``, the step count, the log entry and ``on_log``. Every rank trains on its own batches.

    Returns:
        The log history.
    """
    wrapped, _, clip_grad_norm = sharded
    plan = resolve_groups(wrapped, SPEC, learning_rate=args.learning_rate, weight_decay=args.weight_decay)
    optimizer = torch.optim.AdamW(plan.optimizer_param_groups())
    state, control = TrainerState(logging_steps=1, max_steps=STEPS), TrainerControl()
    events = {"model": wrapped, "optimizer": optimizer}
    call(callbacks, "on_train_begin", args, state, control, **events)
    generator = torch.Generator().manual_seed(dist.get_rank())
    for _ in range(STEPS):
        input_ids = torch.randint(1, 60, (4, 8), generator=generator)
        loss = wrapped(input_ids=input_ids, labels=input_ids[:, 0] % 3).loss
        loss.backward()
        total = clip_grad_norm(args.max_grad_norm if args.max_grad_norm > 0 else math.inf)
        call(callbacks, "on_pre_optimizer_step", args, state, control, **events)
        optimizer.step()
        call(callbacks, "on_optimizer_step", args, state, control, **events)
        optimizer.zero_grad()
        state.global_step += 1
        logs = {"loss": loss.detach().item(), "grad_norm": total.item(), "learning_rate": args.learning_rate}
        state.log_history.append({**logs, "step": state.global_step})
        call(callbacks, "on_log", args, state, control, logs=logs, **events)
    call(callbacks, "on_train_end", args, state, control, **events)
    return state.log_history


def frozen_tiny_bert() -> nn.Module:
    """The tiny BERT with the spec's frozen group frozen, as the Trainer does before wrapping."""
    model = tiny_bert()
    resolve_groups(model, SPEC, learning_rate=1e-4, weight_decay=0.01).freeze_frozen_groups()
    return model


def fsdp2() -> Sharded:
    from torch.distributed.fsdp import fully_shard

    model = frozen_tiny_bert()
    for layer in model.bert.encoder.layer:
        fully_shard(layer)
    wrapped = fully_shard(model)

    def clip_grad_norm(max_norm: float) -> torch.Tensor:  # accelerate's for one mesh; the Trainer's .item()
        return torch.nn.utils.clip_grad_norm_(list(wrapped.parameters()), max_norm).full_tensor()

    return wrapped, WholeTensorProbe(whole=lambda tensor: tensor.full_tensor()), clip_grad_norm


def fsdp1(sharding: str = "FULL_SHARD", ignored: bool = False) -> Sharded:
    from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from transformers.models.bert.modeling_bert import BertLayer

    model = frozen_tiny_bert()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The `NO_SHARD` sharding strategy is deprecated", FutureWarning)
        wrapped = FullyShardedDataParallel(
            model, use_orig_params=True, auto_wrap_policy=ModuleWrapPolicy({BertLayer}),
            device_id=torch.device("cpu"), sharding_strategy=ShardingStrategy[sharding],
            ignored_modules=[model.classifier] if ignored else None,
        )  # fmt: skip

    def gathered(with_grads: bool) -> contextlib.AbstractContextManager[Any]:
        return FullyShardedDataParallel.summon_full_params(wrapped, writeback=False, with_grads=with_grads)

    return wrapped, WholeTensorProbe(gathered), wrapped.clip_grad_norm_


def collectives_of_one_norm_call(wrapped: nn.Module) -> int:
    """How many collectives `grouped_norms` runs for the norms of every parameter, one group each."""
    from torch.distributed.tensor.debug import CommDebugMode

    with CommDebugMode() as collectives:
        grouped_norms([[parameter] for parameter in wrapped.parameters()])
    return collectives.get_total_counts()


def train_sharded(output_dir: Path, sharded: Sharded, max_grad_norm: float = 0.0) -> dict[str, Any]:
    wrapped, probe, _ = sharded
    args = training_args(output_dir / "sharded", learning_rate=1e-4, weight_decay=0.01, max_grad_norm=max_grad_norm)
    log_history = train_like_the_trainer(sharded, [GroupDiagnosticsCallback(), probe], args)
    return {
        "entries": logged(log_history),
        "hand": probe.hand,
        "local_elements": probe.local_elements,
        "collectives_of_one_norm_call": collectives_of_one_norm_call(wrapped),
    }


def refusal(output_dir: Path) -> str | None:
    """What the callback's ``on_train_begin`` says to FSDP1 training an ignored (whole) module beside shards."""
    wrapped, _, _ = fsdp1(ignored=True)
    plan = resolve_groups(wrapped, SPEC, learning_rate=1e-4, weight_decay=0.01)
    optimizer = torch.optim.AdamW(plan.optimizer_param_groups())
    args = training_args(output_dir / "refused")
    try:
        GroupDiagnosticsCallback().on_train_begin(
            args, TrainerState(), TrainerControl(), model=wrapped, optimizer=optimizer
        )
    except ValueError as error:
        return str(error)
    return None


def main(output_dir: Path) -> None:
    result = {"ddp": train_with_ddp(output_dir)}
    rank = dist.get_rank()
    result["fsdp2"] = train_sharded(output_dir, fsdp2())
    result["fsdp1"] = train_sharded(output_dir, fsdp1())
    result["fsdp1_clipped"] = train_sharded(output_dir, fsdp1(), max_grad_norm=CLIPPED_AT)
    result["fsdp1_no_shard"] = train_sharded(output_dir, fsdp1("NO_SHARD"))
    result["fsdp1_ignored_module"] = refusal(output_dir)
    (output_dir / f"diagnostics_rank{rank}.json").write_text(json.dumps(result, indent=1))
    # Leave together and tear the process group down: left to interpreter exit, gloo's threads can abort a
    # rank ("terminate called without an active exception", exit -6) after all its work is done.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
