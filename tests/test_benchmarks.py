"""Smoke test of the benchmarks: each runs on tiny sizes and writes its results (timings are not checked)."""

from __future__ import annotations

import json

from benchmarks import staged_start
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
