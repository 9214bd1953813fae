"""The intensity-statistics baseline: its features against NumPy, and what it can and cannot read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mocomri.eval import ProbeOptions, run_probe, runner
from mocomri.eval.baselines import INTENSITY_PERCENTILES, IntensityStatistics
from mocomri.eval.report import format_table
from tests.test_run_probe import FakeSliceDataset, _write_manifest, _write_run


@pytest.fixture
def fake_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices whose class is where a bright square is (see tests/test_run_probe.py)."""
    monkeypatch.setattr(runner, "_build_eval_dataset", FakeSliceDataset)


def _numpy_statistics(images: np.ndarray) -> np.ndarray:
    """Per image and channel: mean, std (ddof 0), np.percentile at INTENSITY_PERCENTILES."""
    rows = []
    for image in images:  # (C, *S)
        row = []
        for channel in image:
            values = channel.astype(np.float64).ravel()
            row += [values.mean(), values.std(), *np.percentile(values, INTENSITY_PERCENTILES)]
        rows.append(row)
    return np.array(rows)


@pytest.mark.parametrize("shape", [(3, 2, 17, 23), (2, 1, 6, 7, 9)])
def test_intensity_statistics__equal_numpy_per_image_and_channel(shape) -> None:
    rng = np.random.default_rng(0)
    images = rng.gamma(2.0, 1.5, size=shape).astype(np.float32)  # skewed, like MR magnitudes
    features = IntensityStatistics()(torch.from_numpy(images))
    assert features.shape == (shape[0], shape[1] * (2 + len(INTENSITY_PERCENTILES)))
    np.testing.assert_allclose(features.numpy(), _numpy_statistics(images), rtol=1e-5, atol=1e-5)


def test_intensity_statistics__blind_to_where_pixels_are() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 1, 32, 32)).astype(np.float32)
    shuffled = rng.permutation(image.ravel()).reshape(image.shape)
    stats = IntensityStatistics()
    assert not np.array_equal(image, shuffled)
    torch.testing.assert_close(stats(torch.from_numpy(image)), stats(torch.from_numpy(shuffled)))


def test_intensity_statistics__rejects_a_percentile_outside_0_100() -> None:
    with pytest.raises(ValueError, match="must lie in"):
        IntensityStatistics(percentiles=(50, 101))


def test_run_probe__intensity_statistics_cannot_tell_where_the_square_is(tmp_path: Path, fake_slices: None) -> None:
    # The fake slices differ between classes only in which corner holds the bright square: the
    # same pixels, elsewhere. Raw pixels read it perfectly; a histogram cannot.
    run_dir = _write_run(tmp_path / "run")
    manifest = _write_manifest(tmp_path / "manifest.csv")
    metrics = run_probe(run_dir, manifest, out_dir=tmp_path / "probe", label_fractions=(1.0,), seeds=1,
                        baselines=("raw_pixels", "intensity_stats"), unit="item",
                        options=ProbeOptions(n_boot=100, knn_k=5), verbose=False)
    accuracy = {m: metrics["methods"][m]["1.0"]["accuracy"]["mean"] for m in ("raw_pixels", "intensity_stats")}
    assert accuracy["raw_pixels"] == 1.0
    assert accuracy["intensity_stats"] < 0.6  # three classes: chance is 1/3
    assert "Intensity statistics (linear)" in format_table(metrics)
    assert "Intensity statistics (linear)" in (tmp_path / "probe" / "report.md").read_text()


def test_probe_command__intensity_stats_flag_adds_the_baseline(tmp_path: Path, fake_slices: None, capsys) -> None:
    from mocomri.cli import main

    run_dir = _write_run(tmp_path / "run")
    manifest = _write_manifest(tmp_path / "manifest.csv")
    args = ["probe", "--encoder", str(run_dir), "--manifest", str(manifest), "--out", str(tmp_path / "p"),
            "--label-fractions", "1.0", "--seeds", "1", "--n-boot", "50", "--knn-k", "3", "--no-raw-pixels"]
    assert main(args) == 0
    assert "Intensity statistics" not in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "q"), "--intensity-stats"]) == 0
    assert "Intensity statistics (linear)" in capsys.readouterr().out
