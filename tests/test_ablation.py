"""The ablation runner on a tiny grid over the synthetic cohort, including resume after SIGKILL."""

from __future__ import annotations

import csv
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mocomri.ablation import load_ablation
from mocomri.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _write_grid(tmp_path: Path, manifest: Path, momenta=(0.0, 0.9), steps: int = 4) -> Path:
    base = {
        "data": {"manifest": str(manifest), "kind": "slices2d", "image_size": 32, "num_workers": 0, "min_foreground": 0.1, "cache_dir": str(tmp_path / "cache")},
        "model": {"name": "resnet18", "width": 8},
        "moco": {"queue_size": 32, "proj_hidden_dim": 32, "proj_dim": 16, "bn_splits": 2},
        "train": {"batch_size": 8, "max_steps": steps, "checkpoint_every_steps": 2, "precision": "fp32", "deterministic": True},
        "log": {"every_steps": 2, "knn_monitor": False, "progress": False, "tensorboard": False},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    grid = {
        "base": "base.yaml",
        "out_dir": str(tmp_path / "ablation"),
        "grid": {"moco.momentum": list(momenta)},
        "seeds": [0],
        "overrides": ["optim.lr=0.03"],
        "probe": {"label_fractions": [1.0], "seeds": 1, "unit": "item"},
    }
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def _env():
    import os

    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def test_load_ablation__cells_and_names(tmp_path, labelled_manifest):
    spec = load_ablation(_write_grid(tmp_path, labelled_manifest, momenta=(0.9, 0.99)))
    assert [c.values for c in spec.cells] == [{"moco.momentum": 0.9}, {"moco.momentum": 0.99}]
    assert [c.name for c in spec.cells] == ["momentum=0.9__seed=0", "momentum=0.99__seed=0"]
    assert "moco.momentum=0.99" in spec.cells[1].overrides(spec.overrides)


def test_load_ablation__explicit_cells_may_name_their_own_seeds(tmp_path, labelled_manifest):
    path = _write_grid(tmp_path, labelled_manifest)
    tree = yaml.safe_load(path.read_text())
    del tree["grid"]
    tree["seeds"] = [0, 1]
    tree["cells"] = [{"moco.momentum": 0.9}, {"moco.momentum": 0.99, "seeds": [0, 1, 2]}]
    path.write_text(yaml.safe_dump(tree))
    spec = load_ablation(path)
    assert [(c.values, c.seed) for c in spec.cells] == [
        ({"moco.momentum": 0.9}, 0), ({"moco.momentum": 0.9}, 1),
        ({"moco.momentum": 0.99}, 0), ({"moco.momentum": 0.99}, 1), ({"moco.momentum": 0.99}, 2),
    ]
    assert spec.keys == ["moco.momentum"]
    assert "train.seed=2" in spec.cells[-1].overrides(spec.overrides)


def test_load_ablation__bad_cell_key_is_named_before_running(tmp_path, labelled_manifest):
    path = _write_grid(tmp_path, labelled_manifest)
    tree = yaml.safe_load(path.read_text())
    tree["grid"] = {"moco.momentun": [0.9]}
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match="moco.momentun"):
        load_ablation(path)


def test_load_ablation__unknown_top_level_key(tmp_path, labelled_manifest):
    path = _write_grid(tmp_path, labelled_manifest)
    tree = yaml.safe_load(path.read_text()) | {"gird": {}}
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match="gird"):
        load_ablation(path)


def test_ablate__runs_grid_resumes_after_kill_and_tabulates(tmp_path, labelled_manifest):
    path = _write_grid(tmp_path, labelled_manifest, momenta=(0.0, 0.9), steps=8)
    out = tmp_path / "ablation"
    cmd = [sys.executable, "-m", "mocomri", "ablate", "--config", str(path)]

    # Interrupt for real while the second cell is training (after its first checkpoint).
    proc = subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    second = out / "cells" / "momentum=0.9__seed=0" / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not second.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the grid finished before it could be interrupted"
    first_done = out / "cells" / "momentum=0.0__seed=0" / "cell.json"
    assert first_done.is_file()
    assert not (out / "cells" / "momentum=0.9__seed=0" / "cell.json").exists()
    stamp = first_done.stat().st_mtime_ns

    again = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "1 already done" in again.stdout
    assert "resuming from" in again.stdout
    assert first_done.stat().st_mtime_ns == stamp  # the finished cell was not run again

    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["moco.momentum"] for r in rows] == ["0.0", "0.9"]
    for r in rows:
        assert r["status"] == "ok"
        assert 0.0 <= float(r["probe_acc"]) <= 1.0
        assert float(r["probe_acc_ci_low"]) <= float(r["probe_acc"]) <= float(r["probe_acc_ci_high"])
        assert int(r["steps"]) == 8
        assert float(r["step_s"]) == pytest.approx(float(r["pretrain_s"]) / 8)
        assert float(r["loss_over_chance"]) == pytest.approx(float(r["final_loss"]) / math.log(32 + 1))
    text = (out / "results.md").read_text()
    assert "Random-init baseline" in text and "| 0.9 |" in text
    assert (out / "acc_vs_momentum.png").stat().st_size > 1000
    assert list((out / "hparams").rglob("events.out.tfevents.*"))


def test_run_cell__failure_is_recorded_not_raised(tmp_path, labelled_manifest, monkeypatch):
    from mocomri import ablation
    from mocomri.train import pretrain as pretrain_mod

    def diverge(cfg, resume=True, monitor=None):
        raise pretrain_mod.NonFiniteLossError("the loss became NaN/Inf at step 3")

    monkeypatch.setattr(ablation, "pretrain", diverge)
    spec = load_ablation(_write_grid(tmp_path, labelled_manifest, momenta=(0.0,)))
    spec.cells[0].run_dir.mkdir(parents=True)
    record = ablation.run_cell(spec, spec.cells[0])
    assert record["status"] == "failed" and "step 3" in record["error"]
    assert (spec.cells[0].run_dir / "cell.json").is_file()


def test_summarise__mean_and_sample_sd_over_seeds(tmp_path, labelled_manifest):
    from mocomri.ablation import summarise

    spec = load_ablation(_write_grid(tmp_path, labelled_manifest, momenta=(0.9, 0.99)))
    rows = [
        {"moco.momentum": 0.9, "seed": 0, "probe_acc": 0.60, "probe_acc_ci_low": 0.5, "probe_acc_ci_high": 0.7, "step_s": 0.2,
         "gap_acc": 0.05, "gap_acc_ci_low": 0.01, "gap_acc_ci_high": 0.09},
        {"moco.momentum": 0.9, "seed": 1, "probe_acc": 0.70, "probe_acc_ci_low": 0.6, "probe_acc_ci_high": 0.8, "step_s": 0.4,
         "gap_acc": 0.15, "gap_acc_ci_low": 0.10, "gap_acc_ci_high": 0.20},
        {"moco.momentum": 0.99, "seed": 0, "status": "pending"},
    ]
    first, second = summarise(spec, rows)
    assert first["seeds"] == [0, 1]
    assert first["probe_acc"] == pytest.approx(0.65)
    assert first["probe_acc_sd"] == pytest.approx(0.0707107, rel=1e-5)  # sqrt(((0.05)^2 * 2) / 1)
    assert first["step_s"] == pytest.approx(0.3)
    assert first["cis"] == [(0.5, 0.7), (0.6, 0.8)]
    assert first["gap_acc"] == pytest.approx(0.10) and first["gap_cis"] == [(0.01, 0.09), (0.10, 0.20)]
    assert second["seeds"] == [] and second["probe_acc"] is None
