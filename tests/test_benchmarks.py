"""Smoke test of the benchmarks: each runs on tiny sizes and writes its results (timings are not checked)."""

from __future__ import annotations

import json

from benchmarks import diagnostics_cost, staged_start
from benchmarks.__main__ import BENCHMARKS, main
from benchmarks.common import Settings


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
    # At 64 MiB each group is one slice; the largest, layer 0's decaying half: word, position and type embeddings.
    assert copies["LLRD, slices of at most 64 MiB (the default)"]["value"] == "3,972,608 bytes (3.8 MiB)"
    # An optimizer outside torch.optim is stepped whole, after a copy of every weight it holds.
    assert copies["LLRD, an optimizer outside torch.optim"]["value"] == "4,045,836 bytes (3.9 MiB)"
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
