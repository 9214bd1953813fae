"""Folder-per-subject (BraTS-style) trees: subjects from folders, contrasts from names, label maps aside."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from mocomri.data.manifest import build_manifest, detect_layout, scan_subject_folders
from mocomri.data.manifest.scan import LABEL_MAP


def _nifti(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), path)


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.normal(100, 20, (16, 16, 10)).astype(np.float32)
    data[4:12, 4:12, 2:8] += 200  # a head-like bright block, so the foreground is not empty
    return data


def _segmentation(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice([0, 0, 0, 1, 2, 4], size=(16, 16, 10)).astype(np.uint8)


def brats2021_tree(root: Path) -> Path:
    for split, ids in (("train", (0, 1, 2)), ("validation", (3,)), ("Testing", (4,))):
        for i in ids:
            subject = f"BraTS2021_{i:05d}"
            for k, contrast in enumerate(("t1", "t1ce", "t2", "flair")):
                _nifti(root / split / subject / f"{subject}_{contrast}.nii.gz", _image(10 * i + k))
            _nifti(root / split / subject / f"{subject}_seg.nii.gz", _segmentation(i))
    return root


def brats2013_tree(root: Path) -> Path:
    for i in range(1, 4):
        subject = root / f"brats_2013_pat{i:04d}_1"
        _nifti(subject / "Flair_subtrMeanDivStd.nii.gz", _image(100 + i))
        _nifti(subject / "T1c_subtrMeanDivStd.nii.gz", _image(200 + i))
        _nifti(subject / "brainmask.nii.gz", (_image(i) > 150).astype(np.uint8))
        _nifti(subject / "OTMultiClass.nii.gz", _segmentation(300 + i).astype(np.float32))  # label map stored as float
    return root


def test_scan_subject_folders__brats2021_names_splits_contrasts_and_segmentations(tmp_path):
    root = brats2021_tree(tmp_path / "brats21")
    assert detect_layout(root) == "subjects"
    rows = scan_subject_folders(root)
    images = [r for r in rows if r.modality != LABEL_MAP]
    assert {r.subject for r in images} == {f"BraTS2021_{i:05d}" for i in range(5)}
    assert sorted({r.modality for r in images}) == ["FLAIR", "T1c", "T1w", "T2w"]
    assert all(r.path.endswith("_seg.nii.gz") for r in rows if r.modality == LABEL_MAP)
    split_of = {r.subject: r.split for r in images}
    assert split_of["BraTS2021_00000"] == "train" and split_of["BraTS2021_00003"] == "val"
    assert split_of["BraTS2021_00004"] == "test"


def test_build_manifest__brats2013_one_subject_per_folder_label_maps_left_out(tmp_path):
    root = brats2013_tree(tmp_path / "brats13")
    result = build_manifest(root, decode=True)
    assert result.layout == "subjects"
    rows = result.manifest.rows
    assert len(rows) == 6 and {r.subject for r in rows} == {f"brats_2013_pat{i:04d}_1" for i in range(1, 4)}
    assert {r.modality for r in rows} == {"FLAIR", "T1c"}
    assert sorted(Path(r.path).name for r in result.label_maps) == ["OTMultiClass.nii.gz"] * 3 + ["brainmask.nii.gz"] * 3
    assert not result.near.pseudo_subjects  # the folders are patient ids
    assert "label maps and masks left out" in str(result)
    for subject in {r.subject for r in rows}:  # a subject's contrasts share one split
        assert len({r.split for r in rows if r.subject == subject}) == 1
