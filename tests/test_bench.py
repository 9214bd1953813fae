"""``mocomri bench``: the speed of a config's training step and loop on a tiny synthetic cohort."""

from __future__ import annotations

import json
import math

import pytest
import test_pretrain
import torch

from mocomri.cli import main as cli_main
from mocomri.config import load_config
from mocomri.train.pretrain import build_model, make_runtime
from mocomri.train.speed import PretrainStep, measure_speed

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


def test_pretrain_step__is_the_model_and_step_pretraining_builds(tmp_path, cohort_manifest):
    cfg = load_config(tiny_config(tmp_path, cohort_manifest, train__channels_last="true"))
    torch.manual_seed(0)
    step = PretrainStep(cfg, make_runtime(cfg))
    torch.manual_seed(0)
    built = build_model(cfg).state_dict()
    for name, value in step.model.state_dict().items():
        torch.testing.assert_close(value, built[name], rtol=0, atol=0, msg=name)
    assert step.model.base_encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert step.net is step.model  # train.compile is off
    assert step.lr == pytest.approx(0.05 * 8 / 256)  # optim.lr per 256 images, at batch 8
    view_q, view_k = (torch.randn(8, 1, 32, 32).contiguous(memory_format=torch.channels_last) for _ in range(2))
    before = step.model.base_encoder.conv1.weight.detach().clone()
    out = step(view_q, view_k, torch.arange(8))
    assert torch.isfinite(out.loss)
    assert not torch.equal(before, step.model.base_encoder.conv1.weight)


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
