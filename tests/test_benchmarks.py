"""Smoke test of the benchmarks: each runs on tiny sizes and writes its results (timings are not checked)."""

from __future__ import annotations

import json

from benchmarks.__main__ import BENCHMARKS, main


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
    assert "## 1. Building the groups" in capsys.readouterr().out
