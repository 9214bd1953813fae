"""``mocomri demo`` end to end on a tiny cohort, with the pretraining replaced by a random encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mocomri.cli import main
from mocomri.config import Config, save_config
from mocomri.models.encoders import create_encoder


@pytest.fixture
def untrained_pretrain(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """``pretrain`` writes a run directory with a random encoder and records the config it got
    (and checks that the demo's run is handed the kNN monitor)."""
    import mocomri.train.pretrain
    from mocomri.eval.knn_monitor import KnnMonitor

    seen: list[Config] = []

    def pretrain(cfg: Config, resume: bool = True, monitor=None) -> Path:
        assert monitor is KnnMonitor
        seen.append(cfg)
        run_dir = Path(cfg.train.out_dir)
        run_dir.mkdir(parents=True)
        save_config(cfg, run_dir / "config.yaml")
        torch.manual_seed(1)
        backbone, _ = create_encoder(cfg.model.name, in_channels=cfg.model.in_channels, width=cfg.model.width)
        torch.save(backbone.state_dict(), run_dir / "encoder.pt")
        return run_dir

    monkeypatch.setattr(mocomri.train.pretrain, "pretrain", pretrain)
    return seen


@pytest.mark.slow  # about 25 s: a cohort, its cache and the probe's four feature sets
def test_demo__probes_each_slice_beside_every_baseline(tmp_path: Path, untrained_pretrain, capsys) -> None:
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--subjects", "10", "--modalities", "T1w", "--seeds", "1",
                 f"data.cache_dir={tmp_path / 'cache'}", "data.num_workers=0"])
    assert code == 0
    printed = capsys.readouterr().out
    for title in ("MoCo encoder (linear)", "Random init (linear)", "Raw pixels (PCA + linear)",
                  "Intensity statistics (linear)"):
        assert title in printed
    assert "one prediction per axial slice" in printed
    metrics = json.loads((out / "probe" / "metrics.json").read_text())
    assert metrics["settings"]["unit"] == "item"
    assert metrics["settings"]["n_eval_items"] == metrics["methods"]["moco"]["1.0"]["n_test_units"]
    labels = {line.split("\t")[1] for line in (out / "cohort" / "participants.tsv").read_text().splitlines()[1:]}
    assert set(metrics["classes"]) == labels == {"healthy", "heterotopia"}
    # The shipped config as the demo resolved it: a step budget (the result depends on the seed,
    # not on the machine's speed) and same-subject masking.
    (cfg,) = untrained_pretrain
    assert cfg.data.manifest == str(out / "manifest.csv")
    assert cfg.train.max_steps > 0 and cfg.train.time_budget_min == 0
    assert cfg.moco.mask_same_subject

