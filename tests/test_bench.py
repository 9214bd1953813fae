"""``mocomri bench``: the speed of a config's training step and loop on a tiny synthetic cohort."""

from __future__ import annotations

import json
import math

import pytest
import test_pretrain

from mocomri.cli import main as cli_main
from mocomri.config import load_config
from mocomri.train.speed import measure_speed

cohort_manifest = test_pretrain.cohort_manifest  # a fixture: the tiny synthetic cohort of the pretraining tests
tiny_config = test_pretrain.tiny_config


def test_measure_speed__times_step_and_loop_and_writes_no_run(tmp_path, cohort_manifest):
    cfg = load_config(tiny_config(tmp_path, cohort_manifest))
    speed = measure_speed(cfg, steps=2, warmup=1, progress=False)
    assert speed.batch_size == 8 and speed.steps == 2 and speed.items > 8
    assert speed.device == "cpu" and speed.precision == "fp32"
    for rate in (speed.step_images_per_s, speed.loop_images_per_s):
        assert math.isfinite(rate) and rate > 0
    assert 0 <= speed.data_wait_frac < 1
    assert speed.peak_memory_mb > 0
    assert not (tmp_path / "run").exists()


def test_measure_speed__rejects_zero_steps(tmp_path, cohort_manifest):
    cfg = load_config(tiny_config(tmp_path, cohort_manifest))
    with pytest.raises(ValueError, match="steps=0"):
        measure_speed(cfg, steps=0)


def test_bench_cli__prints_rates_and_writes_json(tmp_path, cohort_manifest, capsys):
    out = tmp_path / "speed.json"
    cfg = tiny_config(tmp_path, cohort_manifest)
    assert cli_main(["bench", "--config", str(cfg), "--steps", "2", "--warmup", "1", "--json", str(out),
                     "train.batch_size=4"]) == 0
    printed = capsys.readouterr().out
    assert "training step alone" in printed and "training loop" in printed and "peak memory" in printed
    result = json.loads(out.read_text())
    assert result["batch_size"] == 4 and result["step_images_per_s"] > 0 and result["loop_images_per_s"] > 0


def test_bench_cli__bad_value_is_one_line_error(tmp_path, cohort_manifest, capsys):
    cfg = tiny_config(tmp_path, cohort_manifest)
    assert cli_main(["bench", "--config", str(cfg), "train.batch_size=0"]) == 2
    assert "train.batch_size" in capsys.readouterr().err
    assert cli_main(["bench", "--config", str(cfg), "--steps", "0"]) == 2
