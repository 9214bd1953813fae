"""Cross-fitting: folds of whole subjects, fold manifests that keep held-out scans out of
pretraining, pooled scoring, and the command end to end on the synthetic cohort."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from mocomri.config import Config
from mocomri.data.manifest import Manifest, ManifestRow, read_manifest, write_manifest
from mocomri.errors import ConfigError, DataError
from mocomri.crossfit import assign_folds, fold_manifest, pool_scores, run_crossfit


def _manifest(n_subjects: int = 20, scans: int = 2) -> Manifest:
    rows = []
    for s in range(n_subjects):
        label = "" if s >= n_subjects - 2 else ("A" if s % 3 else "B")  # the last two: no label
        rows += [ManifestRow(path=f"s{s}_{k}.nii.gz", subject=f"s{s}", label=label, split="train") for k in range(scans)]
    return Manifest(root=Path("/data"), rows=rows)


def test_assign_folds__every_labelled_subject_once_stratified():
    m = _manifest()
    fold_of = assign_folds(m, folds=3, seed=0)
    labelled = {r.subject for r in m.rows if r.label}
    assert set(fold_of) == labelled  # unlabelled subjects are in no fold
    assert sorted(Counter(fold_of.values()).values()) == [6, 6, 6]
    for k in range(3):
        labels = Counter(next(r.label for r in m.rows if r.subject == s) for s, f in fold_of.items() if f == k)
        assert labels == {"A": 4, "B": 2}  # 12 A and 6 B over 3 folds
    assert assign_folds(m, folds=3, seed=0) == fold_of
    assert assign_folds(m, folds=3, seed=1) != fold_of


def test_assign_folds__errors():
    m = _manifest()
    with pytest.raises(DataError, match="s0"):
        bad = m.replace_rows([*m.rows, ManifestRow(path="x.nii.gz", subject="s0", label="A", split="train")])
        assign_folds(bad, folds=3)
    with pytest.raises(DataError, match="needs two classes of at least 7"):
        assign_folds(m, folds=7)


def test_fold_manifest__held_out_rows_are_test_unlabelled_ones_too():
    m = _manifest()
    m = m.replace_rows([*m.rows, ManifestRow(path="extra.nii.gz", subject="s1", label="", split="unlabeled")])
    fm = fold_manifest(m, {"s1", "s2"})
    assert len(fm.rows) == len(m.rows)
    for row in fm.rows:
        assert row.split == ("test" if row.subject in {"s1", "s2"} else "train")
    assert [r.label for r in fm.rows] == [r.label for r in m.rows]


def _score(subjects, labels, proba):
    proba = np.asarray(proba, dtype=float)
    pred = proba.argmax(1)
    conf = np.zeros((2, 2), int)
    np.add.at(conf, (np.asarray(labels), pred), 1)
    return {"subject": np.array(subjects), "label": np.array(labels), "proba": proba, "confusion": conf.tolist(),
            "n_train_items": 10, "n_train_subjects": 5, "n_test_units": len(subjects), "n_boot": 100,
            "metrics": {}}


def test_pool_scores__metrics_of_the_concatenation():
    a = _score(["a", "b", "c"], [0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])  # 2 of 3 right
    b = _score(["d", "e"], [0, 1], [[0.3, 0.7], [0.1, 0.9]])                      # 1 of 2 right
    pooled = pool_scores([a, b])
    assert pooled["metrics"]["accuracy"] == pytest.approx(3 / 5)
    assert pooled["n_test_units"] == 5
    assert pooled["confusion"] == [[1, 1], [1, 2]]
    assert list(pooled["subject"]) == ["a", "b", "c", "d", "e"]
    with pytest.raises(ValueError, match="'c' is scored in folds 0 and 1"):
        pool_scores([a, _score(["c"], [1], [[0.1, 0.9]])])


def test_crossfit_command__pools_every_subject_and_resumes(tmp_path, labelled_manifest, capsys):
    cohort = labelled_manifest
    from mocomri.cli import main as cli_main

    config = {
        "data": {"manifest": str(cohort), "kind": "slices2d", "image_size": 32, "num_workers": 0,
                 "min_foreground": 0.1, "cache_dir": str(tmp_path / "cache")},
        "model": {"name": "resnet18", "width": 8},
        "moco": {"queue_size": 32, "proj_hidden_dim": 32, "proj_dim": 16, "bn_splits": 2},
        "train": {"batch_size": 8, "max_steps": 3, "checkpoint_every_steps": 2, "precision": "fp32"},
        "log": {"every_steps": 1, "knn_monitor": False, "progress": False, "tensorboard": False},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "cv"
    argv = ["crossfit", "--config", str(tmp_path / "config.yaml"), "--out", str(out), "--folds", "2",
            "--seeds", "1", "--n-boot", "50"]
    assert cli_main(argv) == 0
    labelled = {r.subject for r in read_manifest(cohort).rows if r.label}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["n_eval_subjects"] == len(labelled)
    assert metrics["settings"]["manifest"] == str(cohort)
    assert metrics["methods"]["moco"]["1.0"]["n_test_units"] == len(labelled)
    assert "moco - random_init" in metrics["differences"]
    assert "Random init (linear)" in (out / "report.md").read_text()
    assert (out / "fold0" / "probe" / "report.md").is_file()  # each fold keeps its own probe report
    for k in range(2):
        run_cfg = yaml.safe_load((out / f"fold{k}" / "pretrain" / "config.yaml").read_text())
        fold = read_manifest(run_cfg["data"]["manifest"])
        held_out = {r.subject for r in fold.rows if r.split == "test"}
        trained = {r.subject for r in fold.rows if r.split == "train"}
        assert held_out and not held_out & trained
        assert run_cfg["data"]["pretrain_splits"] == ["train"]
    # Both folds' held-out subjects together are every labelled subject, each once.
    folds = [line.split(",") for line in (out / "folds.csv").read_text().splitlines()[1:]]
    assert sorted(s for s, _ in folds) == sorted(labelled)

    summary = out / "fold0" / "pretrain" / "summary.json"
    before = summary.stat().st_mtime_ns
    capsys.readouterr()
    assert cli_main(argv) == 0  # finished folds are not pretrained again
    assert summary.stat().st_mtime_ns == before
    assert "pretraining on the other folds" not in capsys.readouterr().out

    # Probing the same folds on stage features reuses the pretraining and writes beside the first reports.
    first_report = (out / "report.md").read_text()
    assert cli_main([*argv, "--features", "stages"]) == 0
    assert summary.stat().st_mtime_ns == before
    stages = json.loads((out / "metrics_stages.json").read_text())
    assert stages["settings"]["features"] == "stages"
    assert stages["settings"]["n_eval_subjects"] == len(labelled)
    assert "each of the frozen backbone's four stages" in (out / "report_stages.md").read_text()
    assert (out / "fold1" / "probe_stages" / "report.md").is_file()
    assert (out / "report.md").read_text() == first_report

    # The patch read-out is for 3D encoders pretrained on patches: on 2D slices it is refused, naming the key.
    capsys.readouterr()
    assert cli_main([*argv, "--features", "patches"]) == 2
    assert "data.pretrain_patch_size" in capsys.readouterr().err

    # Another config into the same --out is refused, naming the key, not silently reused.
    assert cli_main([*argv, "moco.temperature=0.5"]) == 2
    assert "moco.temperature: 0.2 -> 0.5" in capsys.readouterr().err


def test_crossfit__a_numeric_target_is_refused_before_any_fold_runs(tmp_path) -> None:
    rows = [ManifestRow(f"s{i}.nii.gz", f"sub-{i:02d}", "", "T1w", str(20 + i), "train", f"{i:040x}") for i in range(12)]
    manifest = tmp_path / "ages.csv"
    write_manifest(Manifest(tmp_path, rows), manifest)
    with pytest.raises(ConfigError, match=r"crossfit pools classification probes, and these labels are a regression"):
        run_crossfit(Config(), manifest, folds=3, out_dir=tmp_path / "cv")
    assert not (tmp_path / "cv" / "fold0").exists()
