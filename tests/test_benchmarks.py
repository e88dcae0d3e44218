"""Smoke test of the benchmarks: each runs on tiny sizes and writes its results (timings are not checked)."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

from benchmarks import diagnostics_cost, gpu_llama, gpu_runs, gpu_suite, group_building_bound, staged_start
from benchmarks.__main__ import BENCHMARKS, main
from benchmarks.common import BenchmarkResult, Settings
from benchmarks.group_building import UnplacedArguments
from benchmarks.models import WideModel
from layerwise_trainer import LayerwiseTrainer, SpecError

GIB = 2**30


def test_every_benchmark_runs_on_tiny_sizes(tmp_path, capsys):
    assert main(["--smoke", "--output-dir", str(tmp_path)]) == 0
    (json_file,) = tmp_path.glob("cpu-smoke-*.json")
    payload = json.loads(json_file.read_text())
    assert payload["command"] == f"python -m benchmarks --smoke --output-dir {tmp_path}"
    assert {"date", "scale", "device", "hardware", "torch", "transformers"} <= set(payload["environment"])
    assert [result["name"] for result in payload["results"]] == list(BENCHMARKS)
    for result in payload["results"]:
        assert result["rows"], result["name"]
        assert all(set(row) <= set(result["columns"]) for row in result["rows"])
        assert result["targets"], result["name"]
    frozen = next(result for result in payload["results"] if result["name"] == "frozen_body")
    assert [row["head after training"] for row in frozen["rows"]] == ["bit-identical"] * 4
    markdown = next(tmp_path.glob("cpu-smoke-*.md")).read_text()
    assert markdown.startswith("# Benchmark results")
    assert "## 3. Frozen body" in markdown
    assert "## 6. A group that starts later" in markdown
    assert "## 7. Per-group diagnostics at logging_steps=10" in markdown
    assert "## 1. Building the groups" in capsys.readouterr().out


def test_staged_start_holds_a_frozen_bodys_memory_until_it_starts():
    result = staged_start.run(Settings(scale="smoke"))
    rows = {row["run"]: row for row in result.rows}
    hand, freeze = rows["stock Trainer, body frozen by hand"], rows["LayerwiseTrainer, body freeze: true"]
    staged = "LayerwiseTrainer, body start: 4"
    before, first, after = (rows[f"{staged}, {w}"] for w in ("before the start", "first step after it", "after it"))
    everything = rows["stock Trainer, everything trains"]
    # The tiny BERT's classifier alone: 32 x 3 weights and 3 biases, float32.
    assert before["gradients"] == freeze["gradients"] == hand["gradients"] == "396 bytes (0.0 MiB)"
    assert before["optimizer state"] == freeze["optimizer state"] == hand["optimizer state"]
    for column in ("gradients", "optimizer state"):
        assert first[column] == after[column] == everything[column] != before[column]
    # Steps 1-2 are warm-up; the body starts once 4 steps have passed, so step 5 is its first with gradients.
    assert [row["timed steps"] for row in result.rows] == ["3-4", "3-4", "3-4", "5", "6", "3-4"]
    assert [target.met for target in result.targets if "1 = yes" in target.name] == [True, True]


def test_diagnostics_cost_copies_one_slice_of_weights_at_a_time():
    result = diagnostics_cost.run(Settings(scale="smoke"))
    rows = {row["measure"]: row for row in result.rows}
    copies = {measure.split(": ", 1)[1]: row for measure, row in rows.items() if measure.startswith("copies")}
    # The tiny BERT's largest tensor, its word embeddings (30522 x 32 float32), is a slice of its own.
    assert copies["LLRD, slices of at most 4 KiB"]["value"] == "3,906,816 bytes (3.7 MiB)"
    # Slices run across groups: at 64 MiB every weight is in one slice (4,045,836 bytes), each copy starting on a
    # multiple of 16 bytes: one tensor of 12 bytes (the classifier's 3 biases) before others adds 4.
    assert copies["LLRD, slices of at most 64 MiB (the default)"]["value"] == "4,045,840 bytes (3.9 MiB)"
    # An optimizer outside torch.optim is stepped whole, after a copy of every weight it holds (aligned alike).
    assert copies["LLRD, an optimizer outside torch.optim"]["value"] == "4,045,840 bytes (3.9 MiB)"
    # Embeddings frozen: the largest tensor is a 64 x 32 feed-forward weight; 16 KiB slices fill up exactly.
    assert copies["LLRD, embeddings frozen, slices of at most 4 KiB"]["value"] == "8,192 bytes (0.0 MiB)"
    assert copies["LLRD, embeddings frozen, slices of at most 16 KiB"]["value"] == "16,384 bytes (0.0 MiB)"
    assert all("weights bit-identical to a plain step's" in row["against"] for row in copies.values())
    # LLRD on the tiny BERT logs 4 groups (embeddings, 2 layers, head), 3 keys each.
    assert f"{diagnostics_cost.ON} (12 keys on a logging step): the same 10 steps" in rows
    llama = rows["Llama-2-7B in bf16 (shapes on the meta device): the bound"]
    assert llama["value"] == "262,144,000 bytes (250.0 MiB)"
    assert "a copy of the weights 13,476,831,232 bytes" in llama["against"]
    assert [target.met for target in result.targets if "1 = yes" in target.name] == [True, True]


# The GPU suite (benchmarks/gpu_suite.py): its --smoke run on a CPU takes every part's code path at tiny sizes.
GPU_PARTS = ["a_llm_llrd", "b_frozen_lower_half", "c_staged_start", "c_diagnostics", "c_lora_plus", "d_seed_shape",
             "e_fsdp2", "f_muon"]  # fmt: skip


def test_the_gpu_suite_runs_every_part_on_tiny_sizes(tmp_path, capsys):
    assert main(["--suite", "gpu", "--smoke", "--output-dir", str(tmp_path)]) == 0
    (json_file,) = tmp_path.glob("gpu-suite-cpu-smoke-*.json")
    assert sorted(path.suffix for path in tmp_path.iterdir()) == [".json", ".md"]
    payload = json.loads(json_file.read_text())
    assert payload["command"] == f"python -m benchmarks --suite gpu --smoke --output-dir {tmp_path}"
    assert [(part["name"], part["status"]) for part in payload["parts"]] == [(name, "done") for name in GPU_PARTS]
    results = {result["name"]: result for result in payload["results"]}
    for name in (name for name in GPU_PARTS if name != "e_fsdp2"):  # every timed row: the memory beside the speed
        assert results[name]["rows"], name
        for row in results[name]["rows"]:
            assert {"step time", "peak allocated", "optimizer state", "gradients"} <= set(row), name
    # The checks that are exact hold at any size: gradients and state of the trainable parameters alone,
    # a staged group's bytes equal to the frozen and the full run's, LoRA+ rates equal, FSDP's checks.
    exact = [target for result in payload["results"] for target in result["targets"] if "(1 = yes)" in target["name"]]
    assert len(exact) == 11 and all(target["met"] for target in exact), exact
    fsdp = results["e_fsdp2"]
    assert fsdp["notes"][0].startswith("FSDP was NOT enabled: accelerate ran DistributedType.MULTI_CPU")
    checkpoint = next(row["result"] for row in fsdp["rows"] if row["check"].startswith("checkpoint"))
    assert "param_groups_layout.json" in checkpoint
    markdown = next(tmp_path.glob("gpu-suite-cpu-smoke-*.md")).read_text()
    assert markdown.startswith("# GPU benchmark suite")
    assert markdown.count("| done |") == len(GPU_PARTS)
    output = capsys.readouterr().out
    assert "e_fsdp2: done in" in output and "## a. LLM fine-tune" in output


def test_a_failing_part_keeps_the_earlier_results_and_the_next_part_still_runs(tmp_path):
    def measured(name):
        return lambda context: BenchmarkResult(name=name, title=name, columns=["value"], rows=[{"value": 1}])

    def failing(context):
        # The first part's results are on disk before the second starts.
        (written,) = tmp_path.glob("gpu-suite-*.json")
        assert [result["name"] for result in json.loads(written.read_text())["results"]] == ["first"]
        raise RuntimeError("out of luck")

    parts = [
        gpu_suite.Part("first", "a", 10, 0, measured("first")),
        gpu_suite.Part("second", "b", 10, 0, failing),
        gpu_suite.Part("third", "c", 10, 0, measured("third")),
        gpu_suite.Part("fourth", "d", 10, 1e9, measured("fourth")),  # needs more time than the suite has
    ]
    env = {"budget_seconds": 100.0, "device": "cpu", "scale": "smoke", "date": "2026-12-04", "hardware": "cpu",
           "cpu_cores": 2, "python": "3", "torch": "2", "transformers": "5", "accelerate": "1",
           "peft": None}  # fmt: skip
    suite = gpu_suite.SuiteRun("smoke", "cpu", tmp_path, env, "python -m benchmarks --suite gpu", time.monotonic())
    assert suite.run(parts) == 1
    payload = json.loads((tmp_path / "gpu-suite-cpu-smoke-2026-12-04.json").read_text())
    assert [(part["name"], part["status"]) for part in payload["parts"]] == [
        ("first", "done"), ("second", "failed"), ("third", "done"), ("fourth", "skipped"),
    ]  # fmt: skip
    assert payload["parts"][1]["note"] == "RuntimeError: out of luck"
    assert payload["parts"][3]["note"].endswith("left, the part needs at least 1000000000 s")
    assert [result["name"] for result in payload["results"]] == ["first", "second", "third"]
    assert "RuntimeError: out of luck" in payload["results"][1]["notes"][0]
    assert "## second: FAILED" in (tmp_path / "gpu-suite-cpu-smoke-2026-12-04.md").read_text()


def test_the_sides_alternate_and_stop_when_the_parts_time_is_spent():
    calls = []

    def side(name):
        def run():
            calls.append(name)
            window = gpu_runs.Window(first=3, last=4, seconds=1.0, peak_bytes=None, optimizer_state_bytes=0,
                                     gradient_bytes=0)  # fmt: skip
            return gpu_runs.RunRecord([window], [], None, 0.0, True, None)

        return run

    ample = gpu_runs.PartClock(seconds=60, deadline=time.monotonic() + 60)
    gpu_runs.alternate({"A": side("A"), "B": side("B")}, 3, ample, lambda line: None, "test")
    assert calls == ["A", "B", "B", "A", "A", "B"]
    calls.clear()
    spent = gpu_runs.PartClock(seconds=-1, deadline=time.monotonic() + 60)
    alternation = gpu_runs.alternate({"A": side("A"), "B": side("B")}, 5, spent, lambda line: None, "test")
    assert calls == ["A", "B"]  # the first round always runs
    assert alternation.stopped_early.startswith("1 of 5 rounds: another round")


def test_the_largest_batch_keeps_the_extrapolated_peak_within_the_fill():
    # Batch 1 peaks at 20 GiB, batch 2 at 25 GiB: 5 GiB a sequence; 90 % of 100 GiB.
    assert gpu_llama.largest_batch(20 * GIB, 25 * GIB, 100 * GIB, fill=0.9) == 15  # 20 + 14 x 5 = 90
    assert gpu_llama.largest_batch(20 * GIB, 25 * GIB, 20 * GIB, fill=0.9) == 1  # never below 1


@pytest.fixture
def wide_model_and_args(tmp_path):
    """Benchmark 1's model of 200 tensors on the CPU, and arguments with weight decay (its halves differ)."""
    return WideModel(200), UnplacedArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, weight_decay=0.01)


def test_the_stripped_check_refuses_a_parameter_replaced_after_the_spec_was_resolved(wide_model_and_args):
    model, args = wide_model_and_args
    sketch = group_building_bound.stripped_resolve(model, args)
    model.classifier.weight = nn.Parameter(torch.zeros_like(model.classifier.weight))
    with pytest.raises(ValueError, match="other parameters than when the spec was resolved"):
        group_building_bound.stripped_create_optimizer(sketch, model, args, check=True)


def test_without_the_check_a_replaced_parameter_is_never_trained(wide_model_and_args):
    model, args = wide_model_and_args
    sketch = group_building_bound.stripped_resolve(model, args)
    stale = model.classifier.weight
    model.classifier.weight = nn.Parameter(torch.zeros_like(stale))
    optimizer = group_building_bound.stripped_create_optimizer(sketch, model, args, check=False)
    held = {id(parameter) for group in optimizer.param_groups for parameter in group["params"]}
    assert id(stale) in held and id(model.classifier.weight) not in held


def test_the_stripped_check_refuses_a_trained_parameter_frozen_after_the_spec_was_resolved(wide_model_and_args):
    model, args = wide_model_and_args
    sketch = group_building_bound.stripped_resolve(model, args)
    model.layers[0].attention.weight.requires_grad_(False)
    with pytest.raises(ValueError, match="no longer requires gradients"):
        group_building_bound.stripped_create_optimizer(sketch, model, args, check=True)


def test_the_stripped_check_refuses_arguments_changed_after_the_spec_was_resolved(wide_model_and_args):
    model, args = wide_model_and_args
    sketch = group_building_bound.stripped_resolve(model, args)
    args.adam_beta2 = 0.95
    with pytest.raises(ValueError, match="the optimizer or its arguments changed"):
        group_building_bound.stripped_create_optimizer(sketch, model, args, check=True)


def test_the_stripped_implementations_build_layerwise_trainers_groups(wide_model_and_args):
    model, args = wide_model_and_args
    expected = LayerwiseTrainer(model=model, args=args, param_groups=group_building_bound.SPEC).create_optimizer()
    group_building_bound.unfreeze_embeddings(model)
    built = group_building_bound.one_pass(model, args, check=True)
    assert group_building_bound.layout(built) == group_building_bound.layout(expected)


def test_the_recipes_groups_are_the_body_and_the_head_each_in_two_halves(wide_model_and_args):
    model, args = wide_model_and_args
    body, head = args.learning_rate * 0.1, args.learning_rate * 10
    layout = group_building_bound.layout(group_building_bound.one_pass(model, args))
    assert [group[:3] for group in layout] == [
        ("body", body, 0.01),
        ("body", body, 0.0),
        ("head", head, 0.01),
        ("head", head, 0.0),
    ]
    # 20 blocks of 3 linear layers and 2 LayerNorms: 3 weights decay, 3 biases and 4 LayerNorm tensors do not
    assert [len(group[3]) for group in layout] == [60, 140, 1, 1]


def test_the_stripped_implementations_freeze_the_embeddings(wide_model_and_args):
    model, args = wide_model_and_args
    group_building_bound.one_pass(model, args)
    assert not model.embeddings.weight.requires_grad


def test_a_stripped_implementation_that_builds_other_groups_is_not_timed(wide_model_and_args, monkeypatch):
    model, args = wide_model_and_args
    one_pass = group_building_bound.one_pass

    def without_the_last_group(*arguments, **keywords):
        optimizer = one_pass(*arguments, **keywords)
        optimizer.param_groups.pop()
        return optimizer

    monkeypatch.setattr(group_building_bound, "one_pass", without_the_last_group)
    with pytest.raises(RuntimeError, match="builds other param groups"):
        group_building_bound.check_same_groups(model, args)


def test_the_trainer_resolving_in_create_optimizer_builds_layerwise_trainers_groups(wide_model_and_args):
    model, args = wide_model_and_args
    expected = LayerwiseTrainer(model=model, args=args, param_groups=group_building_bound.SPEC).create_optimizer()
    late = group_building_bound.LateResolvingTrainer(model=model, args=args, param_groups=group_building_bound.SPEC)
    assert late.group_plan is None  # nothing resolved when it was built
    assert group_building_bound.layout(late.create_optimizer()) == group_building_bound.layout(expected)


def test_the_trainer_resolving_in_create_optimizer_refuses_a_bad_spec_only_then(wide_model_and_args):
    model, args = wide_model_and_args
    spec = [{"name": "head", "match": "no_such_module.*", "lr_scale": 10}]
    late = group_building_bound.LateResolvingTrainer(model=model, args=args, param_groups=spec)
    with pytest.raises(SpecError, match="'no_such_module.\\*' matches no parameter"):
        late.create_optimizer()


def test_a_trainer_resolving_in_create_optimizer_that_builds_other_groups_is_not_timed(
    wide_model_and_args, monkeypatch
):
    model, args = wide_model_and_args
    create_optimizer = group_building_bound.LateResolvingTrainer.create_optimizer

    def without_the_last_group(self, *arguments, **keywords):
        optimizer = create_optimizer(self, *arguments, **keywords)
        optimizer.param_groups.pop()
        return optimizer

    monkeypatch.setattr(group_building_bound.LateResolvingTrainer, "create_optimizer", without_the_last_group)
    with pytest.raises(RuntimeError, match="resolving in create_optimizer alone builds other param groups"):
        group_building_bound.check_same_groups(model, args)
