"""End to end: ``run_probe`` and ``mocomri probe`` on a tiny labelled cohort.

Most tests replace ``mocomri.data.datasets.build_eval_dataset`` with a small fake that returns
three 16x16 "slices" per manifest row, whose class shows as a bright square in a class-specific
corner: the encoder, features, probes, aggregation, CIs and report are all real. The last test
runs the real data layer on a synthetic NIfTI cohort.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from mocomri.cli import main
from mocomri.config import Config, ModelConfig, save_config
from mocomri.data.manifest import Manifest, ManifestRow, write_manifest
from mocomri.data.settings import DataConfig
from mocomri.errors import LeakageError
from mocomri.eval import ProbeOptions, format_table, run_probe
from mocomri.eval import runner
from mocomri.eval.baselines import SupervisedBudget
from mocomri.models.encoders import create_encoder

CLASSES = ["glioma", "meningioma", "none"]
SLICES_PER_SCAN = 3
CORNERS = [(0, 0), (0, 8), (8, 0)]
TINY = Config(model=ModelConfig(name="resnet18", width=4), data=DataConfig(image_size=16, num_workers=0))


class FakeSliceDataset(Dataset):
    """Three slices per row of the given splits; the label decides where the bright square is."""

    def __init__(self, manifest: Manifest, data_cfg: DataConfig, splits: list[str]) -> None:
        self.rows = manifest.rows
        self.item_rows = [i for i, r in enumerate(self.rows) if r.split in splits for _ in range(SLICES_PER_SCAN)]
        # What EvalDataset decides when it is built: axial slices of T1w volumes, left-right on axis 0.
        self.spatial_dims, self.input_size = 2, 16
        self.item_kinds = ["slices2d"] * len(self.item_rows)
        self.item_modalities = [self.rows[i].modality for i in self.item_rows]
        self.flip_axes = np.zeros(len(self.item_rows), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.item_rows)

    def __getitem__(self, i: int) -> dict:
        row = self.item_rows[i]
        image = np.random.default_rng(i).normal(0.0, 1.0, size=(1, 16, 16))  # (C, H, W)
        y0, x0 = CORNERS[CLASSES.index(self.rows[row].label)]
        image[:, y0 : y0 + 8, x0 : x0 + 8] += 3.0
        return {"image": torch.from_numpy(image).float(), "row": row}


@pytest.fixture
def fake_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_build_eval_dataset", FakeSliceDataset)


def _write_manifest(path: Path, leak: bool = False) -> Path:
    rows = []
    for split, n_per_class in (("train", 6), ("test", 2)):
        for c, label in enumerate(CLASSES):
            for s in range(n_per_class):
                subject = f"sub-{split}{c}{s}"
                for scan in range(2):
                    rows.append(ManifestRow(f"{subject}/scan{scan}.nii.gz", subject, "", "T1w", label, split,
                                            hashlib.sha1(f"{subject}{scan}".encode()).hexdigest()))
    rows.append(ManifestRow("sub-unlab/scan.nii.gz", "sub-unlab", "", "T1w", "", "unlabeled", "f" * 40))
    if leak:
        rows.append(ManifestRow("sub-train00/again.nii.gz", "sub-train00", "", "T1w", "glioma", "test", "e" * 40))
    write_manifest(Manifest(path.parent, rows), path)
    return path


def _write_run(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True)
    save_config(TINY, run_dir / "config.yaml")
    torch.manual_seed(123)  # not the random-init baseline's seed
    backbone, _ = create_encoder("resnet18", in_channels=1, width=4)
    torch.save(backbone.state_dict(), run_dir / "encoder.pt")
    (run_dir / "checkpoints").mkdir()
    torch.save({"step": 7}, run_dir / "checkpoints" / "last.pt")
    return run_dir


FAST = dict(n_boot=200, knn_k=5)


def test_run_probe__writes_report_metrics_and_both_plots(tmp_path: Path, fake_dataset: None) -> None:
    run_dir = _write_run(tmp_path / "run")
    manifest = _write_manifest(tmp_path / "manifest.csv")
    out = tmp_path / "probe"
    metrics = run_probe(run_dir, manifest, out_dir=out, label_fractions=(0.34, 1.0), seeds=2,
                        options=ProbeOptions(**FAST), verbose=False)

    for name in ("report.md", "metrics.json", "label_fraction_curve.png", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    for png in ("label_fraction_curve.png", "confusion_matrix.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads((out / "metrics.json").read_text())
    assert set(stored["methods"]) == {"moco", "moco_knn", "random_init", "random_init_knn", "raw_pixels"}
    assert set(stored["methods"]["moco"]) == {"0.34", "1.0"}
    assert stored["classes"] == CLASSES
    sha = hashlib.sha1((run_dir / "encoder.pt").read_bytes()).hexdigest()
    assert stored["provenance"]["encoder_sha1"] == sha
    assert stored["provenance"]["checkpoint_step"] == 7

    for method, per_fraction in metrics["methods"].items():
        for fraction, entry in per_fraction.items():
            assert entry["n_test_units"] == 12  # 6 test subjects x 2 scans, slices averaged
            acc = entry["accuracy"]
            assert len(acc["per_seed"]) == 2
            assert acc["ci"][0] <= acc["per_seed"][0] <= acc["ci"][1], (method, fraction)
    # 0.34 of 6 subjects per class is 2 subjects per class, 2 scans x 3 slices each
    assert metrics["methods"]["moco"]["0.34"]["n_train_subjects"] == 6
    assert metrics["methods"]["moco"]["0.34"]["n_train_items"] == 36
    # The corner is plain to see in the pixels: labels are aligned with the right items.
    assert metrics["methods"]["raw_pixels"]["1.0"]["accuracy"]["mean"] == 1.0
    assert metrics["methods"]["raw_pixels"]["0.34"]["accuracy"]["mean"] >= 0.9

    # Paired differences: the gap of the means, its CI from the same resamples of test subjects.
    assert set(stored["differences"]) == {"moco - random_init", "moco - raw_pixels", "moco_knn - random_init_knn"}
    for pair, per_fraction in metrics["differences"].items():
        a, b = pair.split(" - ")
        for fraction, entry in per_fraction.items():
            gap = metrics["methods"][a][fraction]["accuracy"]["mean"] - metrics["methods"][b][fraction]["accuracy"]["mean"]
            assert entry["accuracy"]["mean"] == pytest.approx(gap)
            assert entry["accuracy"]["ci"][0] <= entry["accuracy"]["ci"][1]

    report = (out / "report.md").read_text()
    assert "MoCo − random init, paired" in report
    assert sha in report
    assert "| checkpoint step | 7 |" in report
    assert "Random init (linear)" in report and "Raw pixels (PCA + linear)" in report
    assert "Passed: no evaluation item" in report
    assert "](label_fraction_curve.png)" in report and "](confusion_matrix.png)" in report


def test_run_probe__reuses_cached_features(
    tmp_path: Path, fake_dataset: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _write_manifest(tmp_path / "manifest.csv")
    kwargs = dict(out_dir=tmp_path / "p", label_fractions=(1.0,), seeds=1, options=ProbeOptions(**FAST), verbose=False)
    first = run_probe("random", manifest, TINY, **kwargs)
    assert len(list((tmp_path / "p" / "features").glob("*.npz"))) == 2  # random init, raw pixels

    def no_extraction(*args, **kw):
        raise AssertionError("features were extracted again")

    monkeypatch.setattr(runner, "extract_features", no_extraction)
    second = run_probe("random", manifest, TINY, **kwargs)
    assert second["methods"] == first["methods"]


@pytest.mark.parametrize(("unit", "n_units"), [("slice", 36), ("scan", 12), ("subject", 6)])
def test_run_probe__unit_sets_the_number_of_test_predictions(
    tmp_path: Path, fake_dataset: None, unit: str, n_units: int
) -> None:
    metrics = run_probe("random", _write_manifest(tmp_path / "m.csv"), TINY, out_dir=tmp_path / "p",
                        label_fractions=(1.0,), seeds=1, baselines=(), unit=unit, options=ProbeOptions(**FAST),
                        verbose=False)
    assert metrics["methods"]["random_init"]["1.0"]["n_test_units"] == n_units
    assert metrics["settings"]["unit"] == {"slice": "item"}.get(unit, unit)  # "slice" names the item unit
    assert sum(map(sum, metrics["confusion"]["random_init"]["matrix"])) == n_units


def test_run_probe__leakage_is_refused_unless_allowed(tmp_path: Path, fake_dataset: None) -> None:
    manifest = _write_manifest(tmp_path / "m.csv", leak=True)
    kwargs = dict(out_dir=tmp_path / "p", label_fractions=(1.0,), seeds=1, baselines=(), verbose=False)
    with pytest.raises(LeakageError, match="'sub-train00/again.nii.gz' shares subject 'sub-train00'"):
        run_probe("random", manifest, TINY, **kwargs, options=ProbeOptions(**FAST))
    metrics = run_probe("random", manifest, TINY, **kwargs, options=ProbeOptions(**FAST, allow_leakage=True))
    assert metrics["leakage"]["allowed"] and len(metrics["leakage"]["findings"]) == 1
    assert "Leakage allowed (`--allow-leakage`)" in (tmp_path / "p" / "report.md").read_text()


def test_run_probe__supervised_baseline_is_reported_beside_the_probes(tmp_path: Path, fake_dataset: None) -> None:
    options = ProbeOptions(**FAST, supervised=SupervisedBudget(steps=3, batch_size=8, warmup_steps=1))
    metrics = run_probe("random", _write_manifest(tmp_path / "m.csv"), TINY, out_dir=tmp_path / "p",
                        label_fractions=(0.5,), seeds=1, baselines=("supervised",), options=options, verbose=False)
    entry = metrics["methods"]["supervised"]["0.5"]
    assert entry["n_train_subjects"] == metrics["methods"]["random_init"]["0.5"]["n_train_subjects"]
    assert 0.0 <= entry["accuracy"]["mean"] <= 1.0
    assert "Supervised from scratch" in (tmp_path / "p" / "report.md").read_text()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(unit="volume"), "unit='volume' must be one of item, scan, subject"),
        (dict(seeds=0), "seeds=0 must be at least 1"),
        (dict(label_fractions=(0.0,)), "label fraction 0.0 must be in"),
        (dict(baselines=("imagenet",)), "unknown baseline"),
    ],
)
def test_run_probe__rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_probe("random", tmp_path / "m.csv", out_dir=tmp_path / "p", **kwargs)


def test_format_table__lists_every_method_and_fraction() -> None:
    entry = {m: {"mean": 0.5, "std": 0.1, "per_seed": [0.5], "ci": [0.4, 0.6]}
             for m in ("accuracy", "balanced_accuracy", "macro_f1", "auroc")}
    metrics = {"settings": {"knn_k": 20}, "methods": {"moco": {"0.1": entry, "1.0": entry},
                                                      "random_init": {"0.1": entry, "1.0": entry}}}
    table = format_table(metrics)
    lines = table.splitlines()
    assert lines[1].split() == ["method", "10%", "100%"]
    assert lines[2].startswith("MoCo encoder (linear)") and lines[2].count("50.0 [40.0, 60.0]") == 2
    assert lines[3].startswith("Random init (linear)")


def test_probe_cli__prints_table_and_writes_report(tmp_path: Path, fake_dataset: None, capsys) -> None:
    run_dir = _write_run(tmp_path / "run")
    manifest = _write_manifest(tmp_path / "m.csv")
    code = main(["probe", "--encoder", str(run_dir), "--manifest", str(manifest), "--label-fractions", "1.0",
                 "--seeds", "1", "--n-boot", "100", "--knn-k", "5", "--no-raw-pixels"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "MoCo encoder (linear)" in printed and "Random init (linear)" in printed
    assert (run_dir / "probe" / "report.md").is_file()


def test_probe_cli__group_norm_run_is_probed_with_its_group_norm(tmp_path: Path, fake_dataset: None) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    group = Config(model=ModelConfig(name="resnet18", width=4, norm="group", norm_groups=2), data=TINY.data)
    save_config(group, run_dir / "config.yaml")
    torch.manual_seed(123)
    backbone, _ = create_encoder("resnet18", in_channels=1, width=4, norm="group", norm_groups=2)
    torch.save(backbone.state_dict(), run_dir / "encoder.pt")  # strict loading fails unless rebuilt with GroupNorm
    manifest = _write_manifest(tmp_path / "m.csv")
    code = main(["probe", "--encoder", str(run_dir), "--manifest", str(manifest), "--label-fractions", "1.0",
                 "--seeds", "1", "--n-boot", "100", "--knn-k", "5", "--no-raw-pixels"])
    assert code == 0
    metrics = json.loads((run_dir / "probe" / "metrics.json").read_text())
    assert metrics["provenance"]["architecture"]["norm"] == "group"
    assert "GroupNorm (2 groups)" in (run_dir / "probe" / "report.md").read_text()


def test_probe_cli__leakage_is_one_line_error(tmp_path: Path, fake_dataset: None, capsys) -> None:
    manifest = _write_manifest(tmp_path / "m.csv", leak=True)
    code = main(["probe", "--encoder", "random", "--manifest", str(manifest), "--out", str(tmp_path / "p"),
                 "--seeds", "1", "model.width=4", "data.image_size=16"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mocomri probe: error: leakage between training and test")
    assert "\n" not in err.split("error:")[-1]


def test_run_probe__real_data_layer_on_a_synthetic_cohort(tmp_path: Path) -> None:
    """No fakes: synthetic NIfTI volumes, the manifest scanner, the cache and the slice dataset."""
    from mocomri.data.manifest import read_manifest
    from mocomri.data.synthetic import make_cohort

    make_cohort(tmp_path / "cohort", subjects=12, modalities=("T1w",), shape=(32, 32, 24), seed=0)
    manifest = tmp_path / "manifest.csv"
    assert main(["manifest", "--root", str(tmp_path / "cohort"), "--out", str(manifest),
                 "--test-fraction", "0.34", "--val-fraction", "0"]) == 0
    rows = read_manifest(manifest).rows
    cfg = Config(model=ModelConfig(name="resnet18", width=4),
                 data=DataConfig(image_size=16, num_workers=0, cache_dir=str(tmp_path / "cache")))
    metrics = run_probe("random", manifest, cfg, out_dir=tmp_path / "probe", label_fractions=(1.0,), seeds=1,
                        baselines=("raw_pixels",), unit="scan", options=ProbeOptions(n_boot=100, knn_k=3),
                        verbose=False)
    settings = metrics["settings"]
    assert metrics["methods"]["raw_pixels"]["1.0"]["n_test_units"] == sum(r.split == "test" for r in rows)
    assert settings["n_eval_items"] > settings["n_eval_subjects"]  # several slices per volume
    assert sorted(metrics["classes"]) == sorted({r.label for r in rows if r.label})
    assert (tmp_path / "probe" / "report.md").is_file()
