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


# --- multi-contrast items (data.channels) -----------------------------------------------------

CHANNELS = ["T1w", "T1c", "T2w", "FLAIR"]


def _contrast_manifest(tmp_path: Path):
    from mocomri.data.manifest import write_manifest

    result = build_manifest(brats2021_tree(tmp_path / "brats21"), decode=False)
    write_manifest(result.manifest, tmp_path / "m.csv")
    return result.manifest


def test_channels__stack_one_sessions_contrasts_in_2d_and_3d(tmp_path):
    import torch

    from mocomri.data.datasets import build_pretrain_dataset
    from mocomri.augment.settings import AugmentConfig
    from mocomri.data.settings import DataConfig

    manifest = _contrast_manifest(tmp_path)
    for kind, shape in (("slices2d", (4, 24, 24)), ("patches3d", (4, 24, 24, 24))):
        cfg = DataConfig(cache_dir=str(tmp_path / "cache"), kind=kind, channels=CHANNELS, image_size=16, patch_size=16,
                         min_foreground=0.0, pretrain_splits=["train", "val", "test"])
        dataset = build_pretrain_dataset(manifest, cfg, AugmentConfig(), progress=False)
        assert len(dataset.scans) == 5  # one item per subject, not per file
        item = dataset[0]
        assert tuple(item["image"].shape) == shape
        # the channels are the contrasts in the order asked: each equals that file alone, preprocessed alike
        assert len(dataset.scans[0].rows) == 4
        assert [manifest.rows[r].modality for r in dataset.scans[0].rows] == CHANNELS
        view1, _ = dataset.make_views(dataset.__getitems__([(0, 1), (1, 2)]))
        assert view1.shape[1] == 4 and torch.isfinite(view1).all()


def test_channels__pretraining_runs_end_to_end_on_four_channels(tmp_path):
    from mocomri.config import load_config
    from mocomri.train.pretrain import pretrain

    _contrast_manifest(tmp_path)
    for kind, model in (("slices2d", "resnet18"), ("patches3d", "resnet18_3d")):
        cfg = load_config(None, [
            f"data.manifest={tmp_path / 'm.csv'}", f"data.cache_dir={tmp_path / 'cache'}", f"data.kind={kind}",
            f"data.channels={CHANNELS}", "data.image_size=16", "data.patch_size=16", "data.min_foreground=0.0",
            "data.num_workers=0", "data.pretrain_splits=[train,val,test]", f"model.name={model}", "model.in_channels=4",
            "model.width=8", "moco.queue_size=16", "moco.proj_dim=8", "moco.proj_hidden_dim=16", "moco.bn_splits=1",
            "train.batch_size=2" if kind == "patches3d" else "train.batch_size=8", "train.max_steps=2",
            f"train.out_dir={tmp_path / kind}", "log.knn_monitor=false", "log.tensorboard=false", "log.progress=false",
        ])
        result = pretrain(cfg)
        assert result.steps == 2 and (tmp_path / kind / "encoder.pt").is_file()


def test_channels__mismatched_shape_missing_contrast_and_label_map_name_the_subject_and_file(tmp_path):
    import pytest

    from mocomri.data.datasets import build_pretrain_dataset
    from mocomri.data.manifest import Manifest
    from mocomri.augment.settings import AugmentConfig
    from mocomri.data.settings import DataConfig
    from mocomri.errors import DataError

    manifest = _contrast_manifest(tmp_path)
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"), channels=CHANNELS, image_size=16, min_foreground=0.0,
                     pretrain_splits=["train", "val", "test"])
    bad = tmp_path / "brats21" / "train" / "BraTS2021_00001" / "BraTS2021_00001_t2.nii.gz"
    _nifti(bad, _image(7)[:, :, :8])  # another shape
    with pytest.raises(DataError, match=r"subject BraTS2021_00001: .*BraTS2021_00001_t2\.nii\.gz has shape"):
        build_pretrain_dataset(manifest, cfg, AugmentConfig(), progress=False)

    without_flair = Manifest(manifest.root, [r for r in manifest.rows
                                             if not (r.subject == "BraTS2021_00002" and r.modality == "FLAIR")])
    fresh = DataConfig(**{**cfg.__dict__, "cache_dir": str(tmp_path / "cache2")})
    rows_ok = [r for r in without_flair.rows if r.subject != "BraTS2021_00001"]
    with pytest.raises(DataError, match=r"subject BraTS2021_00002: no FLAIR file"):
        build_pretrain_dataset(Manifest(manifest.root, rows_ok), fresh, AugmentConfig(), progress=False)
    skipping = DataConfig(**{**fresh.__dict__, "missing_contrast": "skip"})
    dataset = build_pretrain_dataset(Manifest(manifest.root, rows_ok), skipping, AugmentConfig(), progress=False)
    assert len(dataset.scans) == 3 and "BraTS2021_00002" in dataset.skipped[0][1]

    seg = next(p for p in (tmp_path / "brats21").rglob("BraTS2021_00003_seg.nii.gz"))
    as_image = [r if not (r.subject == "BraTS2021_00003" and r.modality == "T2w") else
                type(r)(**{**r.__dict__, "path": str(seg)}) for r in rows_ok]
    with pytest.raises(DataError, match=r"subject BraTS2021_00003: .*BraTS2021_00003_seg\.nii\.gz looks like a label map"):
        build_pretrain_dataset(Manifest(manifest.root, as_image), skipping, AugmentConfig(), progress=False)


def test_config__in_channels_must_match_data_channels():
    import pytest

    from mocomri.config import load_config
    from mocomri.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.in_channels=1 but data.channels"):
        load_config(None, [f"data.channels={CHANNELS}"])
    assert load_config(None, [f"data.channels={CHANNELS}", "model.in_channels=4"]).model.in_channels == 4
