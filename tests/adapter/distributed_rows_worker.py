"""New vocabulary rows under DDP: the scenarios distributed_worker.py runs in its torchrun launch.

1. A LayerwiseTrainer under DDP whose spec trains the 4 rows added to a tiny Llama's embedding and LM head (with a
   warm-up), keeps the 32 old rows frozen and trains the body, with weight decay, gradient accumulation over 2
   micro-batches and clipping. The data set is one global batch (8 examples: 2 ranks x 2 micro-batches x 2), so the
   single-process reference that tests/adapter/test_distributed.py builds from `rows_model`, `rows_arguments` and
   `ROWS_SPEC` trains on the same examples at every step.
2. The same row views by hand under DDP, their gradients set after every backward (`RowViews`), with
   ``gradient_as_bucket_view`` on and off: the weights must not depend on it.
3. Rows refused on a model sharded by FSDP2.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import torch
from helpers import RandomTokenData, training_args
from torch.nn.parallel import DistributedDataParallel
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

from layerwise_trainer import LayerwiseTrainer, SpecError, resolve_groups
from layerwise_trainer.core.row_groups import OriginalVocabulary
from layerwise_trainer.row_views import RowViews

ROWS_OLD, ROWS_ADDED = 32, 4
GLOBAL_BATCH = 8
MATRICES = ["model.embed_tokens.weight", "lm_head.weight"]
ROWS_SPEC = {
    "groups": [
        {"name": "new_tokens", "match": MATRICES, "rows": "new", "lr": 1e-2, "warmup": 1},
        {"name": "old_tokens", "match": MATRICES, "freeze": True},
    ]
}


def rows_data() -> RandomTokenData:
    return RandomTokenData(GLOBAL_BATCH, vocab_size=ROWS_OLD + ROWS_ADDED)


def save_base(directory: Path) -> Path:
    """The "pretrained" tiny Llama with a vocabulary of 32, saved once (by rank 0 under torch.distributed)."""
    config = LlamaConfig(vocab_size=ROWS_OLD, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    distributed = torch.distributed.is_initialized()
    if not distributed or torch.distributed.get_rank() == 0:
        model.save_pretrained(directory)
    if distributed:
        torch.distributed.barrier()
    return directory


def rows_model(directory: Path) -> LlamaForCausalLM:
    """The saved tiny Llama loaded back with 4 tokens added (the same on every rank)."""
    model = LlamaForCausalLM.from_pretrained(directory)
    torch.manual_seed(1)
    model.resize_token_embeddings(ROWS_OLD + ROWS_ADDED, mean_resizing=False)
    return model


def rows_arguments(output_dir: Path, processes: int) -> TrainingArguments:
    """4 optimizer steps of the global batch of 8 in 2 accumulated micro-batches, clipped, with weight decay.

    ``average_tokens_across_devices`` is off, so that each rank's loss is the mean over its own tokens and DDP's
    average over the ranks is the global batch's mean (every rank has as many tokens).
    """
    return training_args(output_dir, max_steps=4, per_device_train_batch_size=4 // processes, weight_decay=0.1,
                         gradient_accumulation_steps=2, max_grad_norm=0.05, learning_rate=1e-3,
                         lr_scheduler_type="linear", average_tokens_across_devices=False)  # fmt: skip


def weights_sha256(model: torch.nn.Module) -> str:
    return hashlib.sha256(b"".join(p.detach().contiguous().numpy().tobytes() for p in model.parameters())).hexdigest()


def run_rows_scenarios(output_dir: Path, rank: int) -> dict:
    base = save_base(output_dir / "rows_base")
    model = rows_model(base)
    initial = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    trainer = LayerwiseTrainer(model=model, args=rows_arguments(output_dir / "rows", 2), param_groups=ROWS_SPEC,
                               train_dataset=rows_data())  # fmt: skip
    trainer.train()
    after = dict(model.named_parameters())
    if rank == 0:
        torch.save({name: parameter.detach().clone() for name, parameter in after.items()}, output_dir / "rows.pt")
    return {
        "wrapped": type(trainer.model_wrapped).__name__,
        "weights_sha256": weights_sha256(model),
        "old_rows_unchanged": all(torch.equal(after[name][:ROWS_OLD], initial[name][:ROWS_OLD]) for name in MATRICES),
        "new_rows_moved": all(not torch.equal(after[name][ROWS_OLD:], initial[name][ROWS_OLD:]) for name in MATRICES),
        "log_history": trainer.state.log_history,
        "by_hand": {str(flag): rows_by_hand(base, rank, flag) for flag in (True, False)},
        "fsdp_refusal": rows_fsdp_refusal(base, output_dir),
    }


def rows_by_hand(base: Path, rank: int, bucket_view: bool) -> dict:
    """The row views' gradients set after each backward of a hand-built DDP loop, accumulating over 2 micro-batches."""
    model = rows_model(base)
    plan = resolve_groups(model, ROWS_SPEC, learning_rate=1e-3, weight_decay=0.1,
                          original_vocabulary=OriginalVocabulary(ROWS_OLD, "base"))  # fmt: skip
    wrapped = DistributedDataParallel(model, gradient_as_bucket_view=bucket_view)
    views = plan.row_views()
    optimizer = torch.optim.AdamW(plan.optimizer_param_groups(views))
    row_views = RowViews(plan, views).attach(optimizer)
    generator = torch.Generator().manual_seed(rank)
    old_row_gradients = []
    for _ in range(3):
        for micro in range(2):
            with wrapped.no_sync() if micro == 0 else contextlib.nullcontext():
                tokens = torch.randint(0, ROWS_OLD + ROWS_ADDED, (2, 8), generator=generator)
                wrapped(input_ids=tokens, labels=tokens).loss.backward()
            row_views.sync()
        old_row_gradients.append(float(model.lm_head.weight.grad[:ROWS_OLD].abs().max()))
        torch.nn.utils.clip_grad_norm_(wrapped.parameters(), 0.05)
        optimizer.step()
        wrapped.zero_grad(set_to_none=True)
    return {"weights_sha256": weights_sha256(model), "old_row_gradients": old_row_gradients}


def rows_fsdp_refusal(base: Path, output_dir: Path) -> str | None:
    from torch.distributed.fsdp import fully_shard

    model = rows_model(base)
    fully_shard(model)
    try:
        LayerwiseTrainer(model=model, args=training_args(output_dir / "rows_fsdp"), param_groups=ROWS_SPEC)
    except SpecError as error:
        return str(error)
    return None
