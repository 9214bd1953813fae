"""What a run computes, pinned: a short deterministic pretraining run and a probe on the synthetic cohort.

Moving code between modules must not change a number a user sees. The pins in
``tests/pinned_results.json`` were recorded from this test on the code before a restructuring
(``MOCOMRI_RECORD_PINS=1`` rewrites them; only do that on purpose, with the reason in the
commit). Losses are compared with a relative tolerance that allows another CPU's fp32 kernels
(summation order) but not a changed computation; probe accuracies, where one item can flip
under such rounding, within two test items.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from mocomri.cli import main as cli_main
from mocomri.data.synthetic import make_cohort

PINS = Path(__file__).with_name("pinned_results.json")


@pytest.fixture(scope="module")
def computed(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pinned")
    cohort = make_cohort(root / "bids", subjects=12, modalities=["T1w"], shape=(32, 32, 24), seed=0)
    manifest = root / "manifest.csv"
    assert cli_main(["manifest", "--root", str(cohort), "--out", str(manifest), "--no-decode"]) == 0
    config = {
        "data": {"manifest": str(manifest), "kind": "slices2d", "image_size": 32, "num_workers": 0,
                 "min_foreground": 0.1, "cache_dir": str(root / "cache")},
        "model": {"name": "resnet18", "width": 8},
        "moco": {"queue_size": 64, "proj_dim": 16, "proj_hidden_dim": 32},
        "optim": {"lr": 0.06, "warmup_epochs": 0},
        "train": {"batch_size": 8, "max_steps": 8, "precision": "fp32", "channels_last": "false",
                  "deterministic": True, "out_dir": str(root / "run"), "checkpoint_every_steps": 4, "seed": 0},
        "log": {"every_steps": 2, "tensorboard": False, "knn_monitor": False, "progress": False},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    assert cli_main(["pretrain", "--config", str(root / "config.yaml")]) == 0
    records = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = {str(r["step"]): r["loss"] for r in records if "loss" in r}
    assert cli_main(["probe", "--encoder", str(root / "run"), "--manifest", str(manifest), "--out", str(root / "probe"),
                     "--label-fractions", "1.0", "--seeds", "1", "--n-boot", "100", "--unit", "slice"]) == 0
    metrics = json.loads((root / "probe" / "metrics.json").read_text())
    accuracy = {method: by_fraction["1.0"]["accuracy"]["mean"] for method, by_fraction in metrics["methods"].items()}
    n_test = metrics["methods"]["moco"]["1.0"]["n_test_units"]
    return {"losses": losses, "accuracy": accuracy, "n_test": n_test}


def test_pinned__pretraining_losses_and_probe_accuracies_are_unchanged(computed):
    if os.environ.get("MOCOMRI_RECORD_PINS") == "1":
        PINS.write_text(json.dumps(computed, indent=2, sort_keys=True) + "\n")
        pytest.skip(f"recorded {PINS.name}")
    pins = json.loads(PINS.read_text())
    assert computed["losses"].keys() == pins["losses"].keys()
    for step, loss in pins["losses"].items():
        assert computed["losses"][step] == pytest.approx(loss, rel=1e-3), step
    assert computed["accuracy"].keys() == pins["accuracy"].keys()
    one_item = 1.0 / pins["n_test"]
    for method, accuracy in pins["accuracy"].items():
        assert computed["accuracy"][method] == pytest.approx(accuracy, abs=2 * one_item + 1e-9), method
