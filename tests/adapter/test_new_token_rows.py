"""New vocabulary rows through the real Trainer: exact AdamW updates per row group, rates, resume, state, refusals.

A tiny Llama is saved as the "pretrained" checkpoint (vocabulary 32), loaded back and given 4 new tokens with
``resize_token_embeddings``, so ``rows: new`` finds rows 32 to 35 of the embedding and of the (untied) LM head.
Each run records, before every optimizer step, every param group's rate and its tensors' gradients as the
optimizer gets them (after accumulation and clipping); replaying those into a torch AdamW over separate copies of
each group's tensors must give the trained rows bit for bit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import RandomTokenData, training_args
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback

from layerwise_trainer import CheckpointLayoutError, LayerwiseTrainer, LayerwiseTrainingArguments, SpecError
from layerwise_trainer.checkpoints import LAYOUT_FILE
from layerwise_trainer.core.row_groups import OriginalVocabulary
from layerwise_trainer.row_views import RowViews, check_row_groups_supported, original_vocabulary

EMBEDDING, HEAD = "model.embed_tokens.weight", "lm_head.weight"
MATRICES = [EMBEDDING, HEAD]
OLD, ADDED = 32, 4
STEPS = 6
# The new rows start at step 2 with a warm-up of 2 and a cosine of their own; the old rows stay frozen.
FROZEN_OLD_ROWS = {
    "groups": [
        {"name": "new_tokens", "match": MATRICES, "rows": "new", "lr": 1e-2, "weight_decay": 0.1, "start": 2,
         "warmup": 2, "schedule": "cosine"},
        {"name": "old_tokens", "match": MATRICES, "freeze": True},
    ]
}  # fmt: skip
# The old rows train slowly, with weight decay; the new rows fast, without; the Trainer's linear schedule for all.
SLOW_OLD_ROWS = {
    "groups": [
        {"name": "new_tokens", "match": MATRICES, "rows": "new", "lr": 1e-2, "weight_decay": 0.0},
        {"name": "old_tokens", "match": MATRICES, "lr": 1e-5},
    ]
}


def llama_config(vocab_size: int = OLD) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)  # fmt: skip


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The "pretrained" checkpoint: a tiny Llama with a vocabulary of 32."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("base")
    LlamaForCausalLM(llama_config()).save_pretrained(directory)
    return directory


def with_new_tokens(base: Path) -> LlamaForCausalLM:
    model = LlamaForCausalLM.from_pretrained(base)
    torch.manual_seed(1)
    model.resize_token_embeddings(OLD + ADDED, mean_resizing=False)
    return model


class Recorder(TrainerCallback):
    """Every param group's rate and gradients as the optimizer is about to step (after accumulation and clipping),
    and the gradient of the matrices' old rows."""

    def __init__(self) -> None:
        self.steps: list[list[tuple[float, list[torch.Tensor | None]]]] = []
        self.old_row_gradients: list[float] = []
        self.new_row_states: list[list[int]] = []  # state entries of the first group's views
        self.new_rows: list[list[torch.Tensor]] = []  # the matrices' new rows before each step

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, model=None, **kwargs):
        groups = optimizer.param_groups
        self.steps.append([
            (group["lr"], [None if p.grad is None else p.grad.clone() for p in group["params"]]) for group in groups
        ])  # fmt: skip
        for name in MATRICES:
            gradient = model.get_parameter(name).grad
            self.old_row_gradients.append(float(gradient[:OLD].abs().max()))
        inner = optimizer.optimizer
        self.new_row_states.append([len(inner.state[view]) for view in inner.param_groups[0]["params"]])
        self.new_rows.append([model.get_parameter(name)[OLD:].detach().clone() for name in MATRICES])


def train(base: Path, output_dir: Path, spec, **overrides):
    model = with_new_tokens(base)
    arguments = dict(max_steps=STEPS, learning_rate=1e-3, weight_decay=0.1, lr_scheduler_type="linear",
                     per_device_train_batch_size=4, gradient_accumulation_steps=2, max_grad_norm=0.05)  # fmt: skip
    args = training_args(output_dir, LayerwiseTrainingArguments, **{**arguments, **overrides})
    recorder = Recorder()
    trainer = LayerwiseTrainer(model=model, args=args, train_dataset=RandomTokenData(64, vocab_size=OLD + ADDED),
                               param_groups=spec, callbacks=[recorder])  # fmt: skip
    initial = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    views_before = [[p.detach().clone() for p in group["params"]] for group in trainer.create_optimizer().param_groups]
    trainer.train()
    return SimpleNamespace(trainer=trainer, model=model, initial=initial, views_before=views_before, recorder=recorder)


@pytest.fixture(scope="module")
def frozen_run(base, tmp_path_factory):
    # With the per-group diagnostics on: they must not change what is trained (the replay below checks it).
    return train(base, tmp_path_factory.mktemp("frozen"), FROZEN_OLD_ROWS, group_diagnostics=True)


@pytest.fixture(scope="module")
def slow_run(base, tmp_path_factory):
    return train(base, tmp_path_factory.mktemp("slow"), SLOW_OLD_ROWS, save_strategy="steps", save_steps=3)


def replayed(run) -> list[list[torch.Tensor]]:
    """Each param group's tensors after a torch AdamW over copies of them took the recorded rates and gradients."""
    groups = run.trainer.optimizer.param_groups
    results = []
    for index, group in enumerate(groups):
        copies = [tensor.clone() for tensor in run.views_before[index]]
        settings = {key: group[key] for key in ("betas", "eps", "weight_decay", "amsgrad", "foreach", "fused")}
        optimizer = torch.optim.AdamW(copies, lr=group["initial_lr"], **settings)  # the Trainer's: fused on CPU
        for step in run.recorder.steps:
            rate, gradients = step[index]
            optimizer.param_groups[0]["lr"] = rate
            for copy, gradient in zip(copies, gradients, strict=True):
                copy.grad = gradient
            optimizer.step()
        results.append(copies)
    return results


@pytest.mark.parametrize("run_name", ["frozen_run", "slow_run"])
def test_every_group_s_rows_get_exactly_the_adamw_update_of_their_own_group(run_name, request):
    run = request.getfixturevalue(run_name)
    for group, expected in zip(run.trainer.optimizer.param_groups, replayed(run), strict=True):
        for tensor, reference in zip(group["params"], expected, strict=True):
            assert torch.equal(tensor, reference), group["name"]


def zeroed_gradient_trick(initial: torch.Tensor, gradients: list[torch.Tensor], weight_decay: float) -> torch.Tensor:
    """The usual trick: the whole matrix in AdamW, the old rows' gradient zeroed after the first step."""
    weight = torch.nn.Parameter(initial.clone())
    optimizer = torch.optim.AdamW([weight], lr=1e-2, weight_decay=weight_decay)
    for step, gradient in enumerate(gradients):
        weight.grad = gradient.clone()
        if step > 0:
            weight.grad[:OLD] = 0
        optimizer.step()
    return weight.detach()


def test_rows_outside_every_trained_group_stay_bit_identical_under_adamw_with_weight_decay(frozen_run):
    run = frozen_run
    for name in MATRICES:
        after = run.model.get_parameter(name)
        assert torch.equal(after[:OLD], run.initial[name][:OLD]), name
        assert not torch.equal(after[OLD:], run.initial[name][OLD:]), name
    assert run.trainer.optimizer.param_groups[0]["weight_decay"] == 0.1
    assert {group["weight_decay"] for group in run.trainer.optimizer.param_groups[1:]} == {0.1, 0.0}  # the body
    # Where the usual trick moves the old rows: by weight decay alone, and by the momentum of a first step.
    initial = run.initial[EMBEDDING]
    gradients = [torch.full_like(initial, 0.1)] * 3
    decayed = zeroed_gradient_trick(initial, [torch.zeros_like(initial), *gradients[1:]], weight_decay=0.1)
    assert not torch.equal(decayed[:OLD], initial[:OLD])
    carried = zeroed_gradient_trick(initial, gradients, weight_decay=0.0)
    assert float((carried[:OLD] - initial[:OLD]).abs().min()) > 1e-2  # 3 steps of about lr each, 2 of them momentum


def test_the_rows_no_trained_group_holds_count_nowhere(frozen_run):
    # Frozen old rows and not-yet-started new rows have a zero gradient when the Trainer clips and logs grad_norm.
    assert frozen_run.recorder.old_row_gradients == [0.0] * (2 * STEPS)
    for step in frozen_run.recorder.steps[:2]:  # before the new rows start
        rate, gradients = step[0]
        assert (rate, gradients) == (0.0, [None, None])


def cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def test_the_new_rows_rates_follow_their_start_warm_up_and_schedule_exactly(frozen_run):
    # Step 1 and 2 wait, 3 and 4 warm up (0 then half), then the cosine over the 2 steps left after the warm-up.
    expected = [0.0, 0.0, 0.0, 1e-2 * 0.5, 1e-2 * cosine(0.0), 1e-2 * cosine(0.5)]
    assert [step[0][0] for step in frozen_run.recorder.steps] == expected
    entries = [entry for entry in frozen_run.trainer.state.log_history if "loss" in entry]
    assert [entry["learning_rate/new_tokens"] for entry in entries] == expected
    assert [entry["learning_rate/old_tokens"] for entry in entries] == [0.0] * STEPS
    assert [entry["learning_rate/default"] for entry in entries] == [1e-3 * (STEPS - s) / STEPS for s in range(STEPS)]


def test_the_diagnostics_are_per_row_group(frozen_run):
    entries = [entry for entry in frozen_run.trainer.state.log_history if "loss" in entry]
    grad_norms = [entry["grad_norm/new_tokens"] for entry in entries]
    assert grad_norms[:2] == [0.0, 0.0] and all(norm > 0 for norm in grad_norms[2:])  # no gradient before the start
    assert [entry["update_ratio/new_tokens"] for entry in entries][:3] == [0.0, 0.0, 0.0]  # rate 0 until step 4
    rows = [frozen_run.model.get_parameter(name).detach()[OLD:] for name in MATRICES]
    assert entries[-1]["param_norm/new_tokens"] == pytest.approx(float(torch.cat(rows).norm()), rel=1e-6)
    # The Trainer's grad_norm (before clipping) is the groups' norms together: the frozen rows add nothing.
    for entry in entries:
        groups = [value for key, value in entry.items() if key.startswith("grad_norm/")]
        assert entry["grad_norm"] == pytest.approx(math.sqrt(sum(value * value for value in groups)), rel=1e-5)


def test_a_row_group_that_has_not_started_has_no_gradient_no_state_and_no_update(frozen_run):
    recorder = frozen_run.recorder
    # Before steps 1 to 3: no state yet (steps 1 and 2 wait; Adam makes its state in the step that follows).
    assert recorder.new_row_states == [[0, 0], [0, 0], [0, 0], [3, 3], [3, 3], [3, 3]]
    for step in range(4):  # steps 1 and 2 wait, step 3 has rate 0: the rows have not moved before step 4
        for rows, name in zip(recorder.new_rows[step], MATRICES, strict=True):
            assert torch.equal(rows, frozen_run.initial[name][OLD:]), (step, name)
    assert not torch.equal(recorder.new_rows[5][0], frozen_run.initial[EMBEDDING][OLD:])


def test_the_optimizer_state_holds_the_new_rows_only(frozen_run):
    """Measured: Adam's state of the matrices in bytes, rows only against the whole matrices."""
    optimizer = frozen_run.trainer.optimizer.optimizer
    views = optimizer.param_groups[0]["params"]
    rows_only = sum(tensor.nbytes for view in views for tensor in optimizer.state[view].values())
    whole = [frozen_run.model.get_parameter(name) for name in MATRICES]
    stock = torch.optim.AdamW(whole)
    for matrix in whole:
        matrix.grad = torch.zeros_like(matrix)
    stock.step()
    whole_matrix = sum(tensor.nbytes for matrix in whole for tensor in stock.state[matrix].values())
    # exp_avg and exp_avg_sq of 4 rows of 16 float32 in each of the 2 matrices, and a float32 step each
    assert rows_only == 2 * (2 * ADDED * 16 * 4 + 4) == 1032
    assert whole_matrix == 2 * (2 * (OLD + ADDED) * 16 * 4 + 4) == 9224


def test_the_checkpoint_layout_records_each_range_of_rows(slow_run):
    layout = json.loads((Path(slow_run.trainer.args.output_dir) / "checkpoint-3" / LAYOUT_FILE).read_text())
    assert [(group["name"], group["parameters"][:2]) for group in layout["groups"][:2]] == [
        ("new_tokens", [[f"{EMBEDDING}[32:36]", [4, 16]], [f"{HEAD}[32:36]", [4, 16]]]),
        ("old_tokens", [[f"{EMBEDDING}[0:32]", [32, 16]], [f"{HEAD}[0:32]", [32, 16]]]),
    ]


def test_a_resume_mid_run_continues_exactly(base, slow_run, tmp_path):
    checkpoint = Path(slow_run.trainer.args.output_dir) / "checkpoint-3"
    model = with_new_tokens(base)
    args = training_args(tmp_path, LayerwiseTrainingArguments, max_steps=STEPS, learning_rate=1e-3, weight_decay=0.1,
                         lr_scheduler_type="linear", per_device_train_batch_size=4, gradient_accumulation_steps=2,
                         max_grad_norm=0.05)  # fmt: skip
    resumed = LayerwiseTrainer(model=model, args=args, train_dataset=RandomTokenData(64, vocab_size=OLD + ADDED),
                               param_groups=SLOW_OLD_ROWS)  # fmt: skip
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for name, parameter in slow_run.model.named_parameters():
        assert torch.equal(model.get_parameter(name), parameter), name

    def after_the_checkpoint(trainer):
        return [(entry["loss"], entry["learning_rate/new_tokens"]) for entry in trainer.state.log_history
                if "loss" in entry and entry["step"] > 3]  # fmt: skip

    assert len(after_the_checkpoint(resumed)) == 3
    assert after_the_checkpoint(resumed) == after_the_checkpoint(slow_run.trainer)


def resume_with(base, slow_run, tmp_path, spec, **overrides):
    checkpoint = Path(slow_run.trainer.args.output_dir) / "checkpoint-3"
    args = training_args(tmp_path, LayerwiseTrainingArguments, max_steps=STEPS, weight_decay=0.1, **overrides)
    trainer = LayerwiseTrainer(model=with_new_tokens(base), args=args, param_groups=spec,
                               train_dataset=RandomTokenData(64, vocab_size=OLD + ADDED))  # fmt: skip
    trainer.train(resume_from_checkpoint=str(checkpoint))
    return trainer


def other_rows(rows):
    return {"groups": [{**SLOW_OLD_ROWS["groups"][0], "rows": rows}, SLOW_OLD_ROWS["groups"][1]]}


def test_a_resume_with_other_rows_is_refused_naming_them(base, slow_run, tmp_path):
    with pytest.raises(CheckpointLayoutError) as caught:
        resume_with(base, slow_run, tmp_path, other_rows([[32, 34]]))
    message = str(caught.value)
    assert (
        f"  - group 'new_tokens': now also has '{EMBEDDING}[32:34]', '{HEAD}[32:34]'; no longer has "
        f"'{EMBEDDING}[32:36]', '{HEAD}[32:36]'\n"
    ) in message
    assert f"  - group 'old_tokens': now also has '{EMBEDDING}[34:36]', '{HEAD}[34:36]'\n" in message


def test_with_resume_with_changed_groups_the_state_of_the_same_rows_is_carried(base, slow_run, tmp_path):
    trainer = resume_with(base, slow_run, tmp_path, other_rows([[32, 34]]), resume_with_changed_groups=True)
    rows = {group.label: group for group in trainer.resume_transfer.groups}
    assert rows["new_tokens"].fresh == (f"{EMBEDDING}[32:34]", f"{HEAD}[32:34]")
    assert rows["new_tokens"].dropped == (f"{EMBEDDING}[32:36]", f"{HEAD}[32:36]")
    assert rows["old_tokens"].carried == (f"{EMBEDDING}[0:32]", f"{HEAD}[0:32]")
    assert rows["old_tokens"].fresh == (f"{EMBEDDING}[34:36]", f"{HEAD}[34:36]")


def test_rows_new_is_read_from_the_config_of_the_checkpoint_the_model_was_loaded_from(base):
    assert original_vocabulary(with_new_tokens(base)) == OriginalVocabulary(OLD, str(base))
    assert original_vocabulary(LlamaForCausalLM(llama_config(OLD + ADDED))) is None  # built from a config


def test_a_resize_after_the_trainer_was_built_resolves_the_rows_again(base, tmp_path):
    model = with_new_tokens(base)
    args = training_args(tmp_path, LayerwiseTrainingArguments, max_steps=1)
    trainer = LayerwiseTrainer(model=model, args=args, param_groups=FROZEN_OLD_ROWS)
    assert dict(trainer.group_plan.groups[0].rows) == {EMBEDDING: ((32, 36),), HEAD: ((32, 36),)}
    model.resize_token_embeddings(OLD + ADDED + 2, mean_resizing=False)
    optimizer = trainer.create_optimizer()
    assert dict(trainer.group_plan.groups[0].rows) == {EMBEDDING: ((32, 38),), HEAD: ((32, 38),)}
    assert [tuple(view.shape) for view in optimizer.param_groups[0]["params"]] == [(6, 16), (6, 16)]


def test_the_views_follow_a_matrix_moved_to_new_memory_after_the_optimizer_was_built(base, tmp_path):
    """accelerate's prepare moves the model to ``cpu:0`` under DDP on CPU, which copies every parameter."""
    runs = []
    for move in (False, True):
        model = with_new_tokens(base)
        args = training_args(tmp_path / str(move), LayerwiseTrainingArguments, max_steps=3, learning_rate=1e-3)
        trainer = LayerwiseTrainer(model=model, args=args, param_groups=SLOW_OLD_ROWS,
                                   train_dataset=RandomTokenData(64, vocab_size=OLD + ADDED))  # fmt: skip
        views = trainer.create_optimizer().param_groups[0]["params"]
        if move:
            memory = model.lm_head.weight.data_ptr()
            model.to(torch.device("cpu", 0))
            assert model.lm_head.weight.data_ptr() != memory  # new memory, the same parameter object
        trainer.train()
        assert views[1].data_ptr() == model.lm_head.weight[OLD:].data_ptr()
        runs.append({name: parameter.detach().clone() for name, parameter in model.named_parameters()})
    assert all(torch.equal(runs[0][name], runs[1][name]) for name in runs[0])


def test_loss_scaling_unscales_each_row_once():
    """fp16 loss scaling on CPU (torch.amp.GradScaler): the views' gradients are the matrix's, unscaled in place."""
    torch.manual_seed(0)
    results = []
    for scaled in (False, True):
        embedding = torch.nn.Embedding(OLD + ADDED, 4)
        embedding.weight.data.copy_(torch.arange((OLD + ADDED) * 4, dtype=torch.float32).view(-1, 4) / 100)
        from layerwise_trainer import resolve_groups

        plan = resolve_groups(embedding, [{"name": "new", "match": "weight", "rows": {"from": OLD}, "lr": 0.1},
                                          {"name": "old", "match": "weight", "lr": 1e-3}],
                              learning_rate=1e-3, weight_decay=0.0)  # fmt: skip
        views = plan.row_views()
        optimizer = torch.optim.AdamW(plan.optimizer_param_groups(views), weight_decay=0.0)
        row_views = RowViews(plan, views).attach(optimizer)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, enabled=scaled)
        for step in range(3):
            tokens = torch.tensor([[step, OLD + step, OLD + 3, 5]])
            scaler.scale(embedding(tokens).pow(2).sum()).backward()
            row_views.sync()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(embedding.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            embedding.zero_grad()
        results.append(embedding.weight.detach().clone())
    assert torch.equal(results[0], results[1])  # a power-of-two scale, unscaled exactly once


@pytest.mark.parametrize("engine", ["is_fsdp_enabled", "is_deepspeed_enabled"])
def test_rows_are_refused_under_fsdp_and_deepspeed_naming_why(base, engine):
    from layerwise_trainer import parse_spec

    stand_in = SimpleNamespace(model=None, **{engine: True})
    with pytest.raises(SpecError) as caught:
        check_row_groups_supported(parse_spec(FROZEN_OLD_ROWS), stand_in)
    reasons = {
        "is_fsdp_enabled": "FSDP: FSDP shards each matrix by rows over the ranks, and a slice of a sharded parameter "
        "is a new, replicated tensor, not a view of it",
        "is_deepspeed_enabled": "DeepSpeed: DeepSpeed's ZeRO optimizers take only the model's own parameters",
    }
    assert str(caught.value).startswith(
        f"groups[0].rows (group 'new_tokens'): rows of a matrix are not supported under {reasons[engine]}"
    )
