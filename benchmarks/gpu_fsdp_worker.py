"""Part e's worker: one process under torchrun, training through the Trainer's own FSDP2 path with a spec.

``benchmarks/gpu_fsdp.py`` starts it as ``python -m torch.distributed.run --standalone --nproc_per_node 1
--module benchmarks.gpu_fsdp_worker RESULT SCALE DEVICE END`` with the repository root on ``PYTHONPATH``;
it ends itself at END (seconds since the epoch). The Trainer enables FSDP only in a distributed run, hence
torchrun even for one process. On a GPU accelerate wraps the model with FSDP2 (``fully_shard``) and
`LayerwiseTrainer` builds the groups; on a CPU accelerate has no FSDP and runs the same arguments as plain
data parallelism: the result says which.

Two stages, each written to RESULT as soon as it ends (a later stage that fails keeps the earlier one):

1. train: 6 steps with a frozen embedding, layer decay over the layers and a fast head, saving checkpoints
   at steps 3 and 6: the optimizer's groups, every group's logged rates, the frozen weights bit for bit,
   memory;
2. resume: the step-3 checkpoint's files; a fresh model and trainer resume from it and train to step 6: the
   losses of steps 4-6 and the final weights against the uninterrupted run, the frozen weights again.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PrinterCallback, TrainerCallback

from layerwise_trainer import LayerwiseTrainer, LayerwiseTrainingArguments

from .gpu_llama import CausalTokens
from .gpu_runs import gradient_bytes, optimizer_state_bytes, tensor_bytes

SHAPES = {
    "smoke": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=128),
    "full": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=12,
                 num_key_value_heads=4, vocab_size=32000),
}  # fmt: skip
SEQUENCE = {"smoke": 32, "full": 512}
BATCH = {"smoke": 2, "full": 4}
STEPS, SAVE_AT = 6, 3
PROGRESS = "worker: "  # the lines the parent shows as they come
SPEC = {
    "groups": [
        {"name": "embeddings", "match": "model.embed_tokens.*", "freeze": True},
        {"name": "layers", "match": "model.layers.*", "layer_decay": 0.8},
        {"name": "head", "match": ["lm_head.*", "model.norm.*"], "lr_scale": 10, "layer_decay": 1},
    ]
}
FSDP_CONFIG = {"version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"], "reshard_after_forward": True}


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on the host: an FSDP2 parameter is a ``DTensor`` sharded over the ranks."""
    whole = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
    return whole.detach().float().cpu()


def build_model(scale: str, device: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[scale], max_position_embeddings=SEQUENCE[scale], tie_word_embeddings=False)
    with torch.device(device):
        return LlamaForCausalLM(config)


def arguments(output_dir: Path, scale: str, device: str) -> LayerwiseTrainingArguments:
    return LayerwiseTrainingArguments(
        output_dir=str(output_dir), max_steps=STEPS, save_strategy="steps", save_steps=SAVE_AT, logging_steps=1,
        per_device_train_batch_size=BATCH[scale], learning_rate=1e-4, weight_decay=0.01, lr_scheduler_type="linear",
        optim="adamw_torch_fused", bf16=device == "cuda", use_cpu=device == "cpu", report_to=[], disable_tqdm=True,
        seed=0, dataloader_num_workers=0, fsdp=True, fsdp_config=dict(FSDP_CONFIG),
    )  # fmt: skip


def trainer_for(model: LlamaForCausalLM, output_dir: Path, scale: str, device: str) -> LayerwiseTrainer:
    data = CausalTokens(BATCH[scale] * STEPS, SEQUENCE[scale], SHAPES[scale]["vocab_size"])
    trainer = LayerwiseTrainer(
        model=model, args=arguments(output_dir, scale, device), train_dataset=data, param_groups=SPEC
    )
    trainer.remove_callback(PrinterCallback)  # the parent shows the output's end when a stage fails
    return trainer


class MemoryProbe(TrainerCallback):
    """Gradient bytes at the last optimizer step, read before the Trainer frees them."""

    def __init__(self) -> None:
        self.gradient_bytes = 0

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs) -> None:
        self.gradient_bytes = gradient_bytes(model)


def embeddings_of(model: torch.nn.Module) -> torch.nn.Parameter:
    return next(parameter for name, parameter in model.named_parameters() if "embed_tokens" in name)


def losses(trainer: LayerwiseTrainer) -> dict[int, float]:
    return {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}


def train(result: dict[str, Any], work: Path, scale: str, device: str) -> tuple[LayerwiseTrainer, torch.Tensor]:
    model = build_model(scale, device)
    frozen_before = full(embeddings_of(model))
    trainer = trainer_for(model, work / "run", scale, device)
    probe = MemoryProbe()
    trainer.add_callback(probe)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    wrapped = trainer.model_wrapped
    embeddings = embeddings_of(wrapped)
    history = trainer.state.log_history
    rate_keys = sorted({key for entry in history for key in entry if key.startswith("learning_rate/")})
    result["train"] = {
        "fsdp_enabled": bool(getattr(trainer, "is_fsdp_enabled", False)),
        "fsdp_version": getattr(getattr(trainer.accelerator.state, "fsdp_plugin", None), "fsdp_version", None),
        "distributed_type": str(trainer.accelerator.state.distributed_type),
        "world_size": trainer.args.world_size,
        "wrapped": type(wrapped).__name__,
        "parameters_are_dtensors": type(embeddings).__name__ == "DTensor",
        "optimizer_groups": [
            [group.get("name"), group.get("initial_lr", group["lr"]), len(group["params"])]
            for group in trainer.optimizer.param_groups
        ],
        "logged_rate_keys": rate_keys,
        "logged_rates_per_step": {
            entry["step"]: {key: entry[key] for key in rate_keys if key in entry}
            for entry in trainer.state.log_history
            if "loss" in entry
        },
        "losses": losses(trainer),
        "frozen_requires_grad": bool(embeddings.requires_grad),
        "frozen_unchanged": bool(torch.equal(frozen_before, full(embeddings))),
        "peak_allocated_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
        "optimizer_state_bytes": optimizer_state_bytes(trainer.optimizer),
        "gradient_bytes": probe.gradient_bytes,
        "parameter_bytes": sum(tensor_bytes(parameter) for parameter in wrapped.parameters()),
    }
    return trainer, frozen_before


def resume(
    result: dict[str, Any], work: Path, scale: str, device: str, first: LayerwiseTrainer, frozen_before: torch.Tensor
) -> None:
    checkpoint = work / "run" / f"checkpoint-{SAVE_AT}"
    result["checkpoint_files"] = sorted(path.name for path in checkpoint.iterdir())
    trainer = trainer_for(build_model(scale, device), work / "run", scale, device)
    trainer.train(resume_from_checkpoint=str(checkpoint))
    before, after = dict(first.model_wrapped.named_parameters()), dict(trainer.model_wrapped.named_parameters())
    differences = {name: float((full(before[name]) - full(after[name])).abs().max()) for name in before}
    first_losses, resumed_losses = losses(first), losses(trainer)
    result["resume"] = {
        "resumed_from_step": SAVE_AT,
        "final_step": trainer.state.global_step,
        "losses_after_resume": {step: resumed_losses[step] for step in sorted(resumed_losses) if step > SAVE_AT},
        "uninterrupted_losses": {step: first_losses[step] for step in sorted(first_losses) if step > SAVE_AT},
        "max_loss_difference": max(
            (abs(resumed_losses[step] - first_losses[step]) for step in resumed_losses if step > SAVE_AT), default=None
        ),
        "max_weight_difference": max(differences.values()),
        "frozen_unchanged_after_resume": bool(torch.equal(frozen_before, full(embeddings_of(trainer.model_wrapped)))),
    }


def stop_at(end: float) -> None:
    """End this process at ``end`` (seconds since the epoch), whatever it is doing (a hung collective
    included): what the stages finished is already written."""

    def stop() -> None:
        print(f"{PROGRESS}time limit reached, stopping", flush=True)
        os._exit(124)

    timer = threading.Timer(max(0.0, end - time.time()), stop)
    timer.daemon = True
    timer.start()


def main(result_path: Path, scale: str, device: str, end: float) -> int:
    stop_at(end)
    result: dict[str, Any] = {"scale": scale, "device": device, "torch": torch.__version__, "errors": {}}

    def write() -> None:
        result_path.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")

    status = 0
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        first = None
        for stage in ("train", "resume"):
            started = time.monotonic()
            print(f"{PROGRESS}{stage}: starting", flush=True)
            try:
                if stage == "train":
                    first = train(result, work, scale, device)
                elif first is not None:
                    resume(result, work, scale, device, *first)
            except Exception:  # recorded for the report; the next stage still runs where it can
                result["errors"][stage] = traceback.format_exc(limit=-8)
                status = 1
            write()
            outcome = "FAILED" if stage in result["errors"] else "done"
            print(f"{PROGRESS}{stage}: {outcome} in {time.monotonic() - started:.0f} s", flush=True)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return status


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])))
