"""Benchmark 8: Muon and AdamW in one optimizer, against torch's two optimizers and against AdamW alone.

A Llama-shaped decoder built from a config, random gradients on every parameter; only ``optimizer.step()`` is
timed, interleaved:

- **hybrid**: the `HybridOptimizer` a spec with the top-level ``muon`` setting builds (Muon for the blocks' 2-D
  matrices, AdamW for embeddings, head and norms), through `build_param_groups` and the same algorithms;
- **two optimizers**: torch's ``Muon`` and ``AdamW`` built by hand over the same groups and stepped one after
  the other, the hand-made hybrid this library replaces: one object costs nothing over two (target <= 1.03);
- **AdamW**: every parameter in ``AdamW``, what the same spec without ``muon`` trains with. The hybrid costs
  more by Muon's Newton-Schulz iterations (five bf16 matrix products per matrix per step), reported, not a
  target: that is Muon's price, whoever builds it.
"""

from __future__ import annotations

import statistics

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise_trainer import HybridOptimizer, build_param_groups

from .common import BenchmarkResult, Settings, Spread, Target, interleaved, timed

SIZES = {
    "smoke": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=128),
    "quick": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4, vocab_size=8192),
    "full": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                 vocab_size=32000),
}  # fmt: skip
SPEC = {"muon": {"adjust_lr_fn": "match_rms_adamw"}}
LEARNING_RATE = 3e-4


def _decoder(settings: Settings) -> LlamaForCausalLM:
    torch.manual_seed(0)
    size = SIZES[settings.scale]
    config = LlamaConfig(num_key_value_heads=size["num_attention_heads"], tie_word_embeddings=False, **size)
    model = LlamaForCausalLM(config).to(settings.device)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    return model


def _optimizers(model: LlamaForCausalLM) -> dict[str, list[torch.optim.Optimizer]]:
    """Each candidate as the optimizers its step runs, over the same parameters."""
    algorithms = {
        "muon": (torch.optim.Muon, {"lr": LEARNING_RATE}),
        "adamw": (torch.optim.AdamW, {"lr": LEARNING_RATE}),
        "trainer": (torch.optim.AdamW, {"lr": LEARNING_RATE}),
    }
    groups = build_param_groups(model, SPEC, learning_rate=LEARNING_RATE, weight_decay=0.1)
    hybrid = HybridOptimizer([dict(group) for group in groups], algorithms)
    by_hand = {name: [] for name in ("muon", "adamw")}
    for group in groups:
        kind = "muon" if group["optimizer"] == "muon" else "adamw"
        by_hand[kind].append({key: value for key, value in group.items() if key != "optimizer"})
    plain = build_param_groups(model, {}, learning_rate=LEARNING_RATE, weight_decay=0.1)
    return {
        "hybrid": [hybrid],
        "two optimizers": [torch.optim.Muon(by_hand["muon"], lr=LEARNING_RATE), torch.optim.AdamW(by_hand["adamw"])],
        "AdamW": [torch.optim.AdamW(plain, lr=LEARNING_RATE)],
    }


def run(settings: Settings) -> BenchmarkResult:
    steps, repeats = settings.pick(smoke=(2, 1), quick=(5, 5), full=(10, 5))
    model = _decoder(settings)
    candidates = _optimizers(model)

    def candidate(optimizers: list[torch.optim.Optimizer]):
        def step() -> None:
            for optimizer in optimizers:
                optimizer.step()
            if settings.device == "cuda":
                torch.cuda.synchronize()

        def once() -> float:
            step()  # warm-up: allocates the state
            return statistics.median(timed(step) for _ in range(steps))

        return once

    samples = interleaved({name: candidate(optimizers) for name, optimizers in candidates.items()}, repeats)
    spreads = {name: Spread.of(values) for name, values in samples.items()}
    ratios = {name: [a / b for a, b in zip(samples[name], samples["AdamW"], strict=True)] for name in samples}
    against_two = [a / b for a, b in zip(samples["hybrid"], samples["two optimizers"], strict=True)]
    rows = [
        {
            "optimizer": name,
            "step": spreads[name].text(unit="ms", scale=1e3),
            "against AdamW": f"x{statistics.median(ratios[name]):.3f}",
        }
        for name in candidates
    ]
    matrices = sum(1 for group in candidates["hybrid"][0].param_groups if group["optimizer"] == "muon"
                   for _ in group["params"])  # fmt: skip
    millions = sum(parameter.numel() for parameter in model.parameters()) / 1e6
    return BenchmarkResult(
        name="muon_step",
        title=f"8. Muon + AdamW in one optimizer (Llama-shaped, {millions:.3g}M params, {settings.device})",
        columns=["optimizer", "step", "against AdamW"],
        rows=rows,
        targets=[
            Target(
                "one hybrid optimizer against torch's Muon and AdamW stepped apart",
                statistics.median(against_two),
                "<=",
                1.03,
            )
        ],
        notes=[
            f"Median of {steps} steps per run, {repeats} runs per optimizer, interleaved; {matrices} matrices "
            "in Muon, the rest in AdamW. Against AdamW the hybrid pays Muon's Newton-Schulz iterations.",
        ],
        data={"seconds": samples},
    )
