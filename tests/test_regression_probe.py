"""Regression targets: the ridge and kNN regressors, the task rule, the training-mean baseline and
``run_probe``/``mocomri probe`` on numeric labels, end to end."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mocomri.cli import main
from mocomri.config import Config, ModelConfig, save_config
from mocomri.data.manifest import Manifest, ManifestRow, read_manifest, write_manifest
from mocomri.data.settings import DataConfig
from mocomri.errors import ConfigError, DataError
from mocomri.eval import ProbeOptions, format_table, format_task, run_probe
from mocomri.eval import runner
from mocomri.eval.regression_metrics import regression_metrics
from mocomri.eval.regression_probe import DEFAULT_ALPHAS, fit_knn_regressor, fit_ridge_probe
from mocomri.eval.tasks import MAX_NUMERIC_CLASSES, choose_task
from mocomri.models.encoders import create_encoder

TINY = Config(model=ModelConfig(name="resnet18", width=4), data=DataConfig(image_size=16, num_workers=0))
SLICES_PER_SCAN = 3


def _linear_data(n: int, dim: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``y = x @ w + 3 + noise`` with standard normal ``x``; 4 items per subject."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=dim)
    x = rng.normal(size=(n, dim))
    y = x @ w + 3.0 + noise * rng.normal(size=n)
    return x, y, np.arange(n) // 4, w


# -- the regressors ---------------------------------------------------------------------------


def test_fit_ridge_probe__recovers_a_linear_relation_to_the_noise_level() -> None:
    noise = 0.5
    x, y, groups, w = _linear_data(4400, 8, noise, seed=0)
    model = fit_ridge_probe(x[:400], y[:400], groups[:400])
    prediction = model.predict(x[400:])
    got = regression_metrics(y[400:], prediction)

    # An exact fit leaves the noise: E|e| = sigma sqrt(2/pi); R² = var(x w) / (var(x w) + sigma²).
    assert got["mae"] == pytest.approx(noise * np.sqrt(2 / np.pi), rel=0.06)
    signal = float(w @ w)  # var(x @ w) for standard normal x
    assert got["r2"] == pytest.approx(signal / (signal + noise**2), abs=0.01)
    # the reported R² is the textbook one, computed here with NumPy alone
    residual = np.sum((y[400:] - prediction) ** 2)
    total = np.sum((y[400:] - y[400:].mean()) ** 2)
    assert got["r2"] == pytest.approx(1 - residual / total, rel=1e-12)
    # the coefficients, back on the scale of the unstandardised features
    coef = model[-1].coef_ / model[0].scale_
    np.testing.assert_allclose(coef, w, atol=0.08)
    assert model[-1].alpha in DEFAULT_ALPHAS


def test_fit_ridge_probe__pure_noise_predicts_near_the_mean_with_a_strong_penalty() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 40))
    y = rng.normal(size=400)
    model = fit_ridge_probe(x, y, np.arange(400) // 4)
    assert model[-1].alpha >= 1e3  # the CV finds nothing to fit
    assert regression_metrics(y, model.predict(x))["r2"] < 0.1


def test_fit_ridge_probe__one_subject_skips_cv_and_rejects_bad_alphas() -> None:
    x, y, _, _ = _linear_data(8, 3, 0.1, seed=2)
    assert fit_ridge_probe(x, y, np.zeros(8))[-1].alpha == 1.0
    with pytest.raises(ValueError, match="ridge alphas .* must be positive"):
        fit_ridge_probe(x, y, np.arange(8), alphas=(0.0, 1.0))


def test_fit_knn_regressor__averages_the_neighbours_targets() -> None:
    rng = np.random.default_rng(3)
    centres = 6.0 * rng.normal(size=(4, 8))
    cluster = np.arange(200) % 4
    x = centres[cluster] + rng.normal(size=(200, 8))
    target = np.array([10.0, 20.0, 30.0, 40.0])[cluster]
    prediction = fit_knn_regressor(x[:150], target[:150], k=5).predict(x[150:])
    np.testing.assert_allclose(prediction, target[150:], atol=1e-6)


# -- which task --------------------------------------------------------------------------------


def test_choose_task__ages_are_a_regression() -> None:
    ages = [str(a) for a in (23, 35.5, 41, 52, 60, 18, 77, 29, 33, 45, 64, 71)]
    choice = choose_task(ages)
    assert choice.name == "regression"
    assert "12 distinct values" in choice.reason


@pytest.mark.parametrize("labels", [["0", "1", "1", "0"], ["1", "2", "3", "4", "5"], ["0", "1.0", "1"]])
def test_choose_task__few_numeric_values_are_classes(labels: list[str]) -> None:
    choice = choose_task(labels)
    assert choice.name == "classification"
    assert "--task regression" in choice.reason  # the report says how to regress them instead


def test_choose_task__the_threshold_is_more_than_ten_distinct_numbers() -> None:
    assert choose_task([str(v) for v in range(MAX_NUMERIC_CLASSES)]).name == "classification"
    assert choose_task([str(v) for v in range(MAX_NUMERIC_CLASSES + 1)]).name == "regression"
    assert choose_task([f"{v}.0" for v in range(MAX_NUMERIC_CLASSES)] + ["0"]).name == "classification"


def test_choose_task__text_or_non_finite_labels_are_classes() -> None:
    assert choose_task(["glioma", "none"]).name == "classification"
    numbers = [str(v) for v in range(20)]
    assert choose_task(numbers + ["nan"]).reason == "auto: label 'nan' is not a number"
    assert choose_task(numbers + ["inf"]).name == "classification"


def test_choose_task__an_explicit_task_overrides_the_rule() -> None:
    assert choose_task(["0", "1"], "regression").name == "regression"
    assert choose_task([str(v) for v in range(20)], "classification").name == "classification"


def test_choose_task__regression_of_text_names_the_bad_label() -> None:
    with pytest.raises(DataError, match=r"^m\.csv: --task regression needs a finite number in every label; "
                                        r"'glioma' is not one$"):
        choose_task(["31", "glioma", "40"], "regression", source="m.csv")
    with pytest.raises(ValueError, match="task='ordinal' must be one of auto, classification, regression"):
        choose_task(["1"], "ordinal")


# -- end to end on a fake dataset ---------------------------------------------------------------


class AgeSliceDataset(torch.utils.data.Dataset):
    """Three noisy 16x16 "slices" per manifest row; a central square as bright as the age / 20."""

    def __init__(self, manifest: Manifest, data_cfg: DataConfig, splits: list[str]) -> None:
        self.rows = manifest.rows
        self.item_rows = [i for i, r in enumerate(self.rows) if r.split in splits for _ in range(SLICES_PER_SCAN)]
        self.spatial_dims, self.input_size = 2, 16
        self.item_kinds = ["slices2d"] * len(self.item_rows)
        self.item_modalities = [self.rows[i].modality for i in self.item_rows]
        self.flip_axes = np.zeros(len(self.item_rows), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.item_rows)

    def __getitem__(self, i: int) -> dict:
        row = self.item_rows[i]
        image = np.random.default_rng(i).normal(0.0, 1.0, size=(1, 16, 16))  # (C, H, W)
        image[:, 4:12, 4:12] += float(self.rows[row].label) / 20
        return {"image": torch.from_numpy(image).float(), "row": row}


@pytest.fixture
def age_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_build_eval_dataset", AgeSliceDataset)


def _age_manifest(path: Path, labels: dict[str, list[str]] | None = None) -> Path:
    """20 training and 8 test subjects, two scans each, an age per subject."""
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", 20), ("test", 8)):
        for s in range(n):
            subject = f"sub-{split}{s:02d}"
            age = str(int(rng.integers(20, 80))) if labels is None else labels[split][s]
            for scan in range(2):
                rows.append(ManifestRow(f"{subject}/scan{scan}.nii.gz", subject, "", "T1w", age, split,
                                        hashlib.sha1(f"{subject}{scan}".encode()).hexdigest()))
    write_manifest(Manifest(path.parent, rows), path)
    return path


def _write_run(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True)
    save_config(TINY, run_dir / "config.yaml")
    torch.manual_seed(123)  # not the random-init baseline's seed
    backbone, _ = create_encoder("resnet18", in_channels=1, width=4)
    torch.save(backbone.state_dict(), run_dir / "encoder.pt")
    return run_dir


FAST = dict(n_boot=200, knn_k=5, cv_jobs=1)  # serial CV: no worker processes on a shared CPU


def test_run_probe__numeric_labels_are_regressed_with_the_training_mean_beside(tmp_path: Path,
                                                                                age_dataset: None) -> None:
    manifest = _age_manifest(tmp_path / "m.csv")
    out = tmp_path / "p"
    metrics = run_probe(_write_run(tmp_path / "run"), manifest, out_dir=out, label_fractions=(0.3, 1.0), seeds=2,
                        baselines=("random_init", "raw_pixels"), options=ProbeOptions(**FAST), verbose=False)

    assert metrics["task"]["name"] == "regression" and metrics["task"]["requested"] == "auto"
    assert set(metrics["methods"]) == {"moco", "moco_knn", "random_init", "random_init_knn", "raw_pixels",
                                       "train_mean"}
    for per_fraction in metrics["methods"].values():
        for entry in per_fraction.values():
            assert set(entry) >= {"mae", "rmse", "r2"} and "accuracy" not in entry
            assert entry["n_test_units"] == 16  # 8 subjects x 2 scans, slices averaged
            assert entry["mae"]["ci"][0] <= entry["mae"]["mean"] <= entry["mae"]["ci"][1]
    # The square's brightness is the age: raw pixels read it, far below the chance level.
    assert metrics["methods"]["raw_pixels"]["1.0"]["r2"]["mean"] > 0.8
    chance = metrics["methods"]["train_mean"]["1.0"]["mae"]["mean"]
    assert metrics["methods"]["raw_pixels"]["1.0"]["mae"]["mean"] < chance / 3

    # Paired rows: a - b of the means, for MAE and R², the training mean among the baselines.
    assert set(metrics["differences"]) == {"moco - random_init", "moco - raw_pixels", "moco - train_mean",
                                           "moco_knn - random_init_knn"}
    for pair, per_fraction in metrics["differences"].items():
        a, b = pair.split(" - ")
        for fraction, entry in per_fraction.items():
            for name in ("mae", "r2"):
                gap = metrics["methods"][a][fraction][name]["mean"] - metrics["methods"][b][fraction][name]["mean"]
                assert entry[name]["mean"] == pytest.approx(gap)
                assert entry[name]["ci"][0] <= entry[name]["ci"][1]

    stored = json.loads((out / "metrics.json").read_text())
    assert stored["task"] == metrics["task"] and stored["settings"]["task"] == "regression"
    assert "classes" not in stored and stored["target"]["n_distinct"] > 10
    assert (out / "predictions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "confusion_matrix.png").exists()
    report = (out / "report.md").read_text()
    assert "Task: **regression** (auto: every label is a number" in report
    for text in ("### Mean absolute error (MAE", "### R² (coefficient", "Training mean (chance level)",
                 "MoCo − random init, paired", "MoCo − training mean, paired", "MoCo encoder (ridge)",
                 "a negative difference favours the encoder", "| ridge alpha grid |", "](predictions.png)"):
        assert text in report, text
    table = format_table(metrics)
    assert table.startswith("Mean absolute error (MAE") and "\n\nR² (coefficient" in table
    assert "MoCo − training mean, paired" in table


def test_run_probe__the_training_mean_baseline_is_the_mean_absolute_deviation_from_it(
    tmp_path: Path, age_dataset: None
) -> None:
    manifest = _age_manifest(tmp_path / "m.csv")
    metrics = run_probe("random", manifest, TINY, out_dir=tmp_path / "p", label_fractions=(1.0,), seeds=1,
                        baselines=(), unit="scan", options=ProbeOptions(**FAST), verbose=False)
    rows = read_manifest(manifest).rows
    train = np.array([float(r.label) for r in rows if r.split == "train"])  # every row has the same 3 slices
    test = np.array([float(r.label) for r in rows if r.split == "test"])  # one unit per scan
    entry = metrics["methods"]["train_mean"]["1.0"]
    assert entry["mae"]["mean"] == pytest.approx(np.mean(np.abs(test - train.mean())), rel=1e-12)
    assert entry["rmse"]["mean"] == pytest.approx(np.sqrt(np.mean((test - train.mean()) ** 2)), rel=1e-12)
    assert entry["r2"]["mean"] <= 0.0  # the test mean is the better constant


def test_run_probe__few_numeric_values_stay_classes_and_regression_can_be_asked_for(
    tmp_path: Path, age_dataset: None
) -> None:
    grades = {"train": [str(1 + s % 4) for s in range(20)], "test": [str(1 + s % 4) for s in range(8)]}
    manifest = _age_manifest(tmp_path / "m.csv", grades)
    kwargs = dict(out_dir=tmp_path / "p", label_fractions=(1.0,), seeds=1, baselines=(), verbose=False)
    classes = run_probe("random", manifest, TINY, **kwargs, options=ProbeOptions(**FAST))
    assert classes["task"]["name"] == "classification" and classes["classes"] == ["1", "2", "3", "4"]
    assert "accuracy" in classes["methods"]["random_init"]["1.0"]
    regression = run_probe("random", manifest, TINY, **kwargs, options=ProbeOptions(**FAST, task="regression"))
    assert regression["task"] == {"name": "regression", "reason": "requested (--task regression)",
                                  "requested": "regression"}
    assert "mae" in regression["methods"]["random_init"]["1.0"]


def test_run_probe__supervised_baseline_is_refused_for_a_regression(tmp_path: Path, age_dataset: None) -> None:
    message = r"the 'supervised' baseline has no regression form: drop it \(--supervised\)"
    with pytest.raises(ConfigError, match=message):
        run_probe("random", _age_manifest(tmp_path / "m.csv"), TINY, out_dir=tmp_path / "p", label_fractions=(1.0,),
                  seeds=1, baselines=("supervised",), options=ProbeOptions(**FAST), verbose=False)


def test_probe_cli__regression_prints_task_mae_and_r2(tmp_path: Path, age_dataset: None, capsys) -> None:
    code = main(["probe", "--encoder", "random", "--manifest", str(_age_manifest(tmp_path / "m.csv")),
                 "--out", str(tmp_path / "p"), "--label-fractions", "1.0", "--seeds", "1", "--n-boot", "100",
                 "--knn-k", "5", "--no-raw-pixels", "model.width=4", "data.image_size=16"])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Task: regression (auto: every label is a number")
    assert "Mean absolute error (MAE" in printed and "R² (coefficient" in printed
    assert "Training mean (chance level)" in printed


def test_probe_cli__task_regression_on_text_labels_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    text = {"train": ["glioma", "none"] * 10, "test": ["glioma", "none"] * 4}
    manifest = _age_manifest(tmp_path / "m.csv", text)
    code = main(["probe", "--encoder", "random", "--manifest", str(manifest), "--out", str(tmp_path / "p"),
                 "--task", "regression", "model.width=4"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"mocomri probe: error: {manifest}: --task regression needs a finite number in every label; "
                   "'glioma' is not one")


# -- end to end on the real data layer ----------------------------------------------------------


def test_run_probe__regression_on_a_synthetic_cohort(tmp_path: Path, labelled_manifest: Path) -> None:
    """No fakes: the synthetic NIfTI cohort's manifest, its labels rewritten to one age per subject."""
    cohort = read_manifest(labelled_manifest)
    subjects = sorted({r.subject for r in cohort.rows})
    aged = [dataclasses.replace(r, label=str(20 + 3 * subjects.index(r.subject))) if r.label else r
            for r in cohort.rows]
    manifest = tmp_path / "ages.csv"
    write_manifest(cohort.replace_rows(aged), manifest)
    manifest_rows = read_manifest(manifest).rows
    assert len({r.label for r in manifest_rows if r.label}) > 10

    cfg = Config(model=ModelConfig(name="resnet18", width=4),
                 data=DataConfig(image_size=16, num_workers=0, cache_dir=str(tmp_path / "cache")))
    metrics = run_probe(_write_run(tmp_path / "run"), manifest, cfg, out_dir=tmp_path / "probe",
                        label_fractions=(1.0,), seeds=1, baselines=("random_init", "intensity_stats"), unit="subject",
                        options=ProbeOptions(n_boot=100, knn_k=3), verbose=False)

    assert metrics["task"]["name"] == "regression"
    n_test = len({r.subject for r in manifest_rows if r.split == "test" and r.label})
    entry = metrics["methods"]["moco"]["1.0"]
    assert entry["n_test_units"] == n_test
    assert all(metrics["methods"][m]["1.0"]["mae"]["mean"] >= 0 for m in metrics["methods"])
    assert "moco - intensity_stats" in metrics["differences"]
    assert format_task(metrics).startswith("Task: regression (auto: every label is a number")
    report = (tmp_path / "probe" / "report.md").read_text()
    assert "MoCo − intensity stats, paired" in report and "### R² (coefficient" in report
