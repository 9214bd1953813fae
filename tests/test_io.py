"""Tests for mocomri.data.io: orientation, channels, and a clear DataError for every bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mocomri.data.io import load_image2d, load_scan, load_volume
from mocomri.errors import DataError

DATA = Path(__file__).parents[2] / "shared" / "data"
IXI = DATA / "ixi-t1-10"
TUMOR = DATA / "brain-tumor-mri"


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def _ramp(shape=(6, 5, 4)) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


# --- orientation and shapes -------------------------------------------------------------


def test_load_volume__las_file_comes_out_ras(tmp_path):
    data = _ramp()
    affine = np.diag([-2.0, 3.0, 4.0, 1.0])  # first axis runs right to left
    scan = load_volume(_save(tmp_path / "las.nii.gz", data, affine))
    assert scan.array.shape == (1, 6, 5, 4)
    assert np.array_equal(scan.array[0], data[::-1])  # independent truth: flip the L axis
    assert nib.aff2axcodes(scan.affine) == ("R", "A", "S")
    assert scan.spacing == (2.0, 3.0, 4.0)


def test_load_volume__permuted_axes_are_transposed_to_ras(tmp_path):
    data = _ramp()
    # P-S-R storage, like the IXI files: voxel axes (i, j, k) run to P, S and R.
    affine = np.array([[0, 0, 2, 0], [-2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1]], dtype=float)
    scan = load_volume(_save(tmp_path / "psr.nii", data, affine))
    expected = np.transpose(data, (2, 0, 1))[:, ::-1, :]  # (R, P->A flipped, S)
    assert np.array_equal(scan.array[0], expected)


def test_load_volume__4d_picks_one_volume_or_keeps_all_as_channels(tmp_path):
    data = np.stack([_ramp() + 100 * t for t in range(3)], axis=-1)  # (X, Y, Z, T)
    path = _save(tmp_path / "4d.nii.gz", data)
    assert np.array_equal(load_volume(path, volume_index=1).array[0], data[..., 1])
    assert np.array_equal(load_volume(path, volume_index=-1).array[0], data[..., 2])
    channels = load_volume(path, volume_index=None).array
    assert channels.shape == (3, 6, 5, 4)
    assert np.array_equal(channels[2], data[..., 2])
    with pytest.raises(DataError, match=r"4d\.nii\.gz: volume_index=5 is out of range for 3 volumes"):
        load_volume(path, volume_index=5)


def test_load_image2d__rgb_and_gray_exports_give_the_same_single_channel(tmp_path):
    gray = (np.arange(48 * 40).reshape(48, 40) % 251).astype(np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    Image.fromarray(np.stack([gray] * 3, axis=-1), mode="RGB").save(tmp_path / "rgb.png")
    a, b = load_image2d(tmp_path / "gray.png"), load_image2d(tmp_path / "rgb.png")
    assert a.array.shape == b.array.shape == (1, 48, 40)
    assert np.array_equal(a.array, b.array)
    assert np.array_equal(a.array[0], gray.astype(np.float32))


def test_load_image2d__16bit_png_keeps_its_values(tmp_path):
    values = (np.arange(32 * 32).reshape(32, 32) * 50).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert load_image2d(tmp_path / "deep.png").array.max() == values.max()


# --- bad input: one DataError naming the file, per case -----------------------------------


@pytest.fixture
def good_volume(tmp_path) -> Path:
    return _save(tmp_path / "good.nii.gz", _ramp((16, 16, 16)))


def test_load_volume__truncated_gzip_is_a_data_error(tmp_path, good_volume):
    data = good_volume.read_bytes()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"truncated\.nii\.gz: (truncated or corrupt|not a readable NIfTI)"):
        load_volume(bad)


def test_load_volume__corrupt_gzip_is_a_data_error(tmp_path, good_volume):
    data = bytearray(good_volume.read_bytes())
    data[30:60] = b"\x00" * 30  # damage the deflate stream
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"corrupt\.nii\.gz: "):
        load_volume(bad)


def test_load_volume__zero_byte_file_is_a_data_error(tmp_path):
    (tmp_path / "empty.nii.gz").touch()
    with pytest.raises(DataError, match=r"empty\.nii\.gz: file is empty \(0 bytes\)"):
        load_volume(tmp_path / "empty.nii.gz")


@pytest.mark.parametrize("bad_value, name", [(np.nan, "nan"), (np.inf, "inf")])
def test_load_volume__nan_or_inf_voxels_are_a_data_error(tmp_path, bad_value, name):
    data = _ramp()
    data[1, 2, 3] = bad_value
    with pytest.raises(DataError, match=rf"{name}\.nii\.gz: 1 voxels are NaN or Inf"):
        load_volume(_save(tmp_path / f"{name}.nii.gz", data))


def test_load_volume__constant_volume_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"flat\.nii\.gz: constant image \(every voxel is 7\)"):
        load_volume(_save(tmp_path / "flat.nii.gz", np.full((8, 8, 8), 7, dtype=np.int16)))


@pytest.mark.parametrize("shape", [(8, 8), (4, 4, 4, 2, 2)])
def test_load_volume__2d_or_5d_nifti_is_a_data_error(tmp_path, shape):
    path = _save(tmp_path / f"{len(shape)}d.nii.gz", np.ones(shape, dtype=np.float32))
    with pytest.raises(DataError, match=rf"{len(shape)}d\.nii\.gz: expected a 3D or 4D volume, got {len(shape)}D"):
        load_volume(path)


def test_load_volume__text_file_named_nii_gz_is_a_data_error(tmp_path):
    bad = tmp_path / "notes.nii.gz"
    bad.write_text("this is not a NIfTI file\n")
    with pytest.raises(DataError, match=r"notes\.nii\.gz: not a readable NIfTI file"):
        load_volume(bad)


def test_load_volume__gzipped_garbage_is_a_data_error(tmp_path):
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(gzip.compress(b"\x01" * 500))
    with pytest.raises(DataError, match=r"garbage\.nii\.gz: not a readable NIfTI file"):
        load_volume(bad)


def test_load_image2d__non_image_with_image_extension_is_a_data_error(tmp_path):
    bad = tmp_path / "scan.png"
    bad.write_text("<html>not a png</html>")
    with pytest.raises(DataError, match=r"scan\.png: not a readable image"):
        load_image2d(bad)


def test_load_image2d__truncated_jpeg_is_a_data_error(tmp_path):
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 255).astype(np.uint8)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.jpg: truncated or corrupt image"):
        load_image2d(tmp_path / "cut.jpg")


def test_load_scan__missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.nii\.gz: file does not exist"):
        load_scan(tmp_path / "nowhere.nii.gz")


def test_load_scan__dicom_is_out_of_scope_with_a_hint(tmp_path):
    (tmp_path / "IM0001.dcm").write_bytes(b"\x00" * 200)
    with pytest.raises(DataError, match=r"IM0001\.dcm: DICOM .* dcm2niix"):
        load_scan(tmp_path / "IM0001.dcm")


def test_load_scan__unknown_extension_is_a_data_error(tmp_path):
    (tmp_path / "scan.mha").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match=r"scan\.mha: unsupported file type"):
        load_scan(tmp_path / "scan.mha")


# --- real data ------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.skipif(not IXI.is_dir(), reason="../shared/data/ixi-t1-10 is absent")
def test_load_volume__ixi_psr_file_comes_out_ras_matching_the_header():
    path = sorted(IXI.glob("*.nii.gz"))[0]
    raw = nib.load(path)
    assert nib.aff2axcodes(raw.affine) == ("P", "S", "R")
    scan = load_volume(path)
    assert nib.aff2axcodes(scan.affine) == ("R", "A", "S")
    assert scan.array.shape == (1, 90, 120, 120)  # raw (120 P, 120 S, 90 R) -> (R, A, S)
    raw_data = np.asarray(raw.dataobj, dtype=np.float32)
    # Independent truth: the same world point read through each file's own affine.
    for voxel in [(10, 20, 30), (60, 70, 45), (100, 5, 80)]:
        world = raw.affine @ np.array([*voxel, 1.0])
        ras_voxel = np.rint(np.linalg.inv(scan.affine) @ world).astype(int)[:3]
        assert scan.array[0][tuple(ras_voxel)] == raw_data[voxel]
    # Axis 0 of the output runs left -> right: its affine column points to +x (R).
    assert scan.affine[0, 0] > 0 and scan.spacing == (2.0, 2.0, 2.0)


@pytest.mark.realdata
@pytest.mark.skipif(not TUMOR.is_dir(), reason="../shared/data/brain-tumor-mri is absent")
def test_load_image2d__brain_tumor_rgb_and_gray_files_both_give_one_channel():
    modes = {}
    for path in sorted((TUMOR / "Training" / "notumor").glob("*.jpg"))[:40]:
        with Image.open(path) as image:
            modes.setdefault(image.mode, path)
    assert "RGB" in modes  # the trap: notumor files are mostly RGB
    for mode, path in modes.items():
        scan = load_image2d(path)
        assert scan.array.shape[0] == 1 and scan.array.ndim == 3
        if mode == "RGB":
            with Image.open(path) as image:
                rgb = np.asarray(image, dtype=np.float32)
            # These RGB files are gray pictures: luminance equals any channel, up to rounding.
            assert np.abs(scan.array[0] - rgb[..., 0]).max() <= 2
