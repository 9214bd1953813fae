"""The scanner shift against a NumPy computation of its formula at the fixed strengths, and on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre
from PIL import Image

from mocomri.data.io import load_image2d
from mocomri.data.manifest import Manifest, ManifestRow
from mocomri.errors import DataError
from tools.peft_lab.shift import ScannerShift, noise_seed, shift_image, shift_manifest, shift_noise


def _numpy_shift(image: np.ndarray, shift: ScannerShift, noise: np.ndarray) -> np.ndarray:
    """The shift written out in float64: min-max, exp(Legendre field), gamma on the range, Rician noise, min-max.

    The field's coefficient matrix is lower triangular, filled row by row as MONAI's
    ``RandBiasField`` fills it (``np.tril_indices``); entry (i, j) multiplies P_i along the first
    axis times P_j along the second.
    """
    x = image.astype(np.float64)[0]  # (H, W)
    x = (x - x.min()) / (x.max() - x.min())
    h, w = x.shape
    coeffs = np.zeros((shift.bias_degree + 1,) * 2)
    coeffs[np.tril_indices(shift.bias_degree + 1)] = shift.bias
    field = legendre.legval2d(*np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij"), coeffs)
    x = x * np.exp(field)
    lo, span = x.min(), x.max() - x.min()
    x = np.clip((x - lo) / (span + 1e-7), 0, None) ** shift.gamma * span + lo
    x = np.sqrt((x + shift.noise_std * noise[0]) ** 2 + (shift.noise_std * noise[1]) ** 2)
    return ((x - x.min()) / (x.max() - x.min()))[None]


def test_shift_image__equals_the_numpy_formula_at_the_fixed_strengths() -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(10, 200, size=(1, 24, 20)).astype(np.float32)  # (C, H, W), not square
    shift = ScannerShift()
    noise = shift_noise(image.shape, seed=5)  # (2, 1, C, H, W)
    got = shift_image(torch.from_numpy(image), shift, seed=5).numpy()
    expected = _numpy_shift(image, shift, noise[:, 0, 0].double().numpy())
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert got.min() == 0 and got.max() == pytest.approx(1)


def test_shift_image__same_seed_same_image_and_another_seed_other_noise() -> None:
    image = torch.rand(1, 16, 16)
    shift = ScannerShift()
    assert torch.equal(shift_image(image, shift, 1), shift_image(image, shift, 1))
    assert not torch.equal(shift_image(image, shift, 1), shift_image(image, shift, 2))
    assert noise_seed(shift, "ab") == noise_seed(ScannerShift(), "ab") != noise_seed(ScannerShift(seed=1), "ab")
    noiseless = shift_image(image, ScannerShift(noise_std=0.0), 1)
    assert torch.equal(noiseless, shift_image(image, ScannerShift(noise_std=0.0), 2))  # the seed only draws noise


def test_scanner_shift__bad_strengths_are_named() -> None:
    with pytest.raises(ValueError, match="bias has 3 coefficients; a 2D field of degree 3 has 10"):
        ScannerShift(bias=(0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="gamma=0 must be positive"):
        ScannerShift(gamma=0)


def test_shift_manifest__writes_16_bit_images_that_read_back_as_the_shift(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = []
    for i, (label, split) in enumerate([("a", "train"), ("b", "val"), ("a", "test")]):
        Image.fromarray(rng.integers(0, 255, size=(20, 18), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
        rows.append(ManifestRow(f"img{i}.png", f"sub{i}", modality="T1c", label=label, split=split, sha1=f"{i}" * 40))
    manifest = Manifest(tmp_path, rows)
    shift = ScannerShift()
    out = shift_manifest(manifest, tmp_path / "target", shift, progress=False)
    assert out.root == tmp_path / "target"
    for old, new in zip(rows, out.rows):
        assert (new.subject, new.label, new.split, new.modality) == (old.subject, old.label, old.split, old.modality)
        written = out.abspath(new)
        assert Image.open(written).mode == "I;16"
        expected = shift_image(torch.from_numpy(load_image2d(tmp_path / old.path).array), shift,
                               noise_seed(shift, old.sha1)).numpy()
        np.testing.assert_allclose(load_image2d(written).array / 65535, expected, atol=1 / 65535)
    again = shift_manifest(manifest, tmp_path / "target", shift, progress=False)  # deterministic: same files
    assert [r.sha1 for r in again.rows] == [r.sha1 for r in out.rows]


def test_shift_manifest__a_volume_is_an_error_naming_it(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path, [ManifestRow("sub.nii.gz", "sub")])
    with pytest.raises(DataError, match=r"sub\.nii\.gz: the scanner shift is written for 2D images only"):
        shift_manifest(manifest, tmp_path / "out", ScannerShift(), progress=False)
