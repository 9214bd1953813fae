"""Experiment reports: cells, means over seeds, tables, and the files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.peft_lab.report import Results, format_entry, markdown, mean_sd, table


def test_format_entry__percent_with_interval_raw_without() -> None:
    assert format_entry({"value": 0.8412, "ci95": [0.8204, 0.8611]}) == "84.1 [82.0, 86.1]"
    assert format_entry({"value": -0.021, "ci95": [-0.05, 0.01]}) == "-2.1 [-5.0, 1.0]"
    assert format_entry({"value": 0.5}, scale=1) == "0.50"
    assert format_entry(None) == "—" and format_entry({"value": float("nan")}) == "—"


def test_mean_sd__sample_standard_deviation_over_seeds() -> None:
    assert mean_sd([0.8, 0.9]) == "85.0 ± 7.1"  # sd of (80, 90) with n - 1: 7.07
    assert mean_sd([0.3]) == "30.0"
    assert mean_sd([0.2, 0.4], scale=1) == "0.30 ± 0.14"
    assert mean_sd([]) == "—" and mean_sd([float("nan")]) == "—"
    assert mean_sd([0.8, float("nan"), 0.9]) == "85.0 ± 7.1"  # a seed without a figure is left out


def _results() -> Results:
    results = Results("demo", "What it measures.", seeds=[0, 1], settings={"encoder": "run"})
    for seed, (merged, single) in enumerate([(0.80, 0.75), (0.84, 0.78)]):
        results.add("test accuracy", "merged", "lora", seed, {"value": merged, "ci95": [merged - 0.02, merged + 0.02]})
        results.add("test accuracy", "single", "lora", seed, {"value": single, "ci95": [single - 0.03, single + 0.03]})
        results.add("λ", "λ", "lora", seed, {"value": (0.4, 0.6)[seed]}, scale=1)
        results.curve("lora", "same init", seed, [{"lambda": 0.0, "score": 0.7}, {"lambda": 1.0, "score": 0.8}])
    results.bar("lora", "merged beats single", True, "+5.5 points")
    return results


def test_table__a_row_per_method_and_kind_a_column_per_seed_and_the_mean() -> None:
    results = _results()
    lines = table(results.sections["test accuracy"], [0, 1, 2]).splitlines()
    assert lines[0] == "|  | module | seed 0 | seed 1 | seed 2 | mean ± sd |"
    assert lines[2] == "| merged | lora | 80.0 [78.0, 82.0] | 84.0 [82.0, 86.0] | — | 82.0 ± 2.8 |"
    assert results.values("test accuracy", "single", "lora") == [0.75, 0.78]
    assert results.lows("test accuracy", "merged", "lora") == pytest.approx([0.78, 0.82])


def test_results_write__json_markdown_and_plot(tmp_path: Path) -> None:
    paths = _results().write(tmp_path)
    record = json.loads(paths["json"].read_text())
    assert record["sections"]["λ"]["λ | lora"]["seeds"] == {"0": {"value": 0.4}, "1": {"value": 0.6}}
    assert record["bars"] == [{"kind": "lora", "bar": "merged beats single", "met": True, "reading": "+5.5 points"}]
    text = paths["markdown"].read_text()
    assert text == markdown(_results(), paths["plot"].name)
    assert "| λ | lora | 0.40 | 0.60 | 0.50 ± 0.14 |" in text and "| lora | merged beats single | yes | +5.5 points |" in text
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
