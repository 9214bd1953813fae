"""Tests for mocomri.data.datasets: items, ids, slices, workers, and skipping bad scans."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mocomri.augment.settings import AugmentConfig, AugmentParams
from mocomri.data.datasets import build_eval_dataset, build_pretrain_dataset, lr_axis
from mocomri.data.manifest import Manifest, ManifestRow, assign_splits, scan_bids
from mocomri.data.settings import DataConfig
from mocomri.data.synthetic import make_cohort
from mocomri.errors import DataError

DATA = Path(__file__).parents[2] / "shared" / "data"
IXI = DATA / "ixi-t1-10"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Manifest:
    root = make_cohort(tmp_path_factory.mktemp("ds") / "bids", subjects=4, modalities=["T1w", "FLAIR"],
                       shape=(32, 32, 24), seed=0)
    return Manifest(root, assign_splits(scan_bids(root), val_fraction=0.25, test_fraction=0.25, seed=0))


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> DataConfig:
    return DataConfig(cache_dir=str(tmp_path_factory.mktemp("cache")), image_size=32, patch_size=16,
                      pretrain_splits=["train", "val", "test"])


def test_build_pretrain_dataset__items_are_working_images_with_ids(manifest, cfg):
    dataset = build_pretrain_dataset(manifest, cfg, AugmentConfig(), progress=False)
    item = dataset[0]
    assert dataset.working_side == 48  # 32 / sqrt(0.5) = 45.3, rounded up to a multiple of 8
    assert item["image"].shape == (1, 48, 48) and item["image"].dtype == torch.float16
    row = manifest.rows[dataset.item_rows[0]]
    assert dataset.subjects[int(item["subject"])] == row.subject
    assert dataset.modalities[int(item["modality"])] == row.modality
    assert dataset.families[int(item["family"])] == AugmentConfig().family_of(row.modality)
    assert int(item["flip_axis"]) == 0  # axial slices of a RAS volume: left-right is axis 0
    assert item["subject"].dtype == torch.int64


def test_build_pretrain_dataset__item_subjects_match_the_ids_items_carry(manifest, cfg):
    dataset = build_pretrain_dataset(manifest, cfg, AugmentConfig(), progress=False)
    assert dataset.item_subjects == [manifest.rows[r].subject for r in dataset.item_rows]
    batch = dataset.__getitems__(list(range(len(dataset))))
    assert [dataset.subjects[i] for i in batch["subject"].tolist()] == dataset.item_subjects
    assert len(set(dataset.item_subjects)) == 4  # every subject's slices are items


def test_build_pretrain_dataset__a_batch_gives_two_different_views(manifest, cfg):
    dataset = build_pretrain_dataset(manifest, cfg, AugmentConfig(), progress=False)
    batch = dataset.__getitems__([(0, 11), (5, 12), (3, 13)])
    assert batch["image"].shape == (3, 1, 48, 48)
    assert torch.equal(batch["image"][1], dataset[5]["image"])  # the batch read keeps the order asked for
    view1, view2 = dataset.make_views(batch)
    assert view1.shape == view2.shape == (3, 1, 32, 32) and view1.dtype == torch.float32
    assert not torch.equal(view1, view2)
    again = dataset.make_views(dataset.__getitems__([(0, 11), (5, 12), (3, 13)]))
    assert torch.equal(again[0], view1) and torch.equal(again[1], view2)  # a pure function of the seeds


def test_build_pretrain_dataset__slices_below_min_foreground_are_skipped(manifest, cfg):
    dataset = build_pretrain_dataset(manifest, cfg, AugmentConfig(), progress=False)
    loose = build_pretrain_dataset(manifest, replace(cfg, min_foreground=0.0), AugmentConfig(), progress=False)
    for scan in dataset.scans:
        entry_slices = next(s for s in loose.scans if s.row == scan.row).slices
        assert set(scan.slices) < set(entry_slices)  # some edge slices dropped
    assert len(loose) == sum(len(s.slices) for s in loose.scans)
    assert len(dataset) < len(loose)


def test_build_pretrain_dataset__patches3d_gives_3d_views(manifest, cfg):
    dataset = build_pretrain_dataset(manifest, replace(cfg, kind="patches3d"), AugmentConfig(), progress=False)
    assert len(dataset) == len(manifest)  # one item per volume
    view1, view2 = dataset.make_views(dataset.__getitems__([(0, 1), (1, 2)]))
    assert view1.shape == (2, 1, 16, 16, 16)
    assert not torch.equal(view1, view2)


def test_build_pretrain_dataset__pretrain_patch_size_sets_the_views_not_the_evaluation_input(manifest, cfg):
    small = replace(cfg, kind="patches3d", patch_size=16, pretrain_patch_size=8)
    dataset = build_pretrain_dataset(manifest, small, AugmentConfig(base=AugmentParams(crop_scale=[0.5, 0.5])), progress=False)
    view1, _ = dataset.make_views(dataset.__getitems__([(0, 1)]))
    assert view1.shape == (1, 1, 8, 8, 8) and dataset.working_side == 16  # 8-voxel patches of 16-voxel volumes
    assert build_eval_dataset(manifest, small, ["train"], progress=False)[0]["image"].shape == (1, 16, 16, 16)


def test_build_pretrain_dataset__splits_select_rows(manifest, cfg):
    dataset = build_pretrain_dataset(manifest, cfg, AugmentConfig(), splits=["test"], progress=False)
    assert {manifest.rows[r].split for r in dataset.item_rows} == {"test"}


def test_build_eval_dataset__deterministic_with_item_rows(manifest, cfg):
    dataset = build_eval_dataset(manifest, cfg, ["train"], progress=False)
    assert len(dataset.item_rows) == len(dataset)
    assert {manifest.rows[r].split for r in dataset.item_rows} == {"train"}
    first, again = dataset[3], dataset[3]
    assert torch.equal(first["image"], again["image"])
    assert first["image"].shape == (1, 32, 32)
    assert int(first["row"]) == dataset.item_rows[3]
    assert abs(float(first["image"].mean())) < 1e-4  # z-scored


def test_build_eval_dataset__patches3d_resizes_whole_volume(manifest, cfg):
    dataset = build_eval_dataset(manifest, replace(cfg, kind="patches3d"), ["train", "val", "test"], progress=False)
    assert len(dataset) == len(manifest)
    assert dataset[0]["image"].shape == (1, 16, 16, 16)
    assert dataset.spatial_dims == 3 and dataset.input_size == 16
    assert set(dataset.item_kinds) == {"patches3d"} and (dataset.flip_axes == 0).all()


def test_build_eval_dataset__exposes_what_it_decided_per_item(manifest, cfg):
    for slice_axis, flip in ((2, 0), (0, -1)):  # axial: left-right on axis 0; sagittal: none
        dataset = build_eval_dataset(manifest, replace(cfg, slice_axis=slice_axis), ["train"], progress=False)
        assert dataset.spatial_dims == 2 and dataset.input_size == 32
        assert dataset[0]["image"].shape[1:] == (dataset.input_size,) * dataset.spatial_dims
        assert dataset.item_kinds == ["slices2d"] * len(dataset)
        assert dataset.item_modalities == [manifest.rows[r].modality for r in dataset.item_rows]
        assert dataset.flip_axes.shape == (len(dataset),) and (dataset.flip_axes == flip).all()


def test_images2d__auto_kind_reads_png_files(tmp_path, cfg):
    for i in range(3):
        pixels = np.zeros((40, 30), dtype=np.uint8)
        pixels[5:35, 5:25] = 100 + 40 * i
        pixels[10:20, 10:15] = 30
        Image.fromarray(pixels).convert("RGB").save(tmp_path / f"img{i}.png")  # RGB on purpose
    rows = [ManifestRow(f"img{i}.png", f"s{i}", split="unlabeled") for i in range(3)]
    dataset = build_pretrain_dataset(Manifest(tmp_path, rows), cfg, AugmentConfig(), ["unlabeled"], progress=False)
    assert len(dataset) == 3
    assert dataset.scans[0].kind == "images2d"
    assert dataset[1]["image"].shape == (1, 48, 48)  # one channel whatever the file's mode
    assert int(dataset[1]["flip_axis"]) == 1  # left-right runs along the image's width


def test_lr_axis__left_right_axis_per_item_kind():
    assert lr_axis("slices2d", 2) == 0 and lr_axis("slices2d", 1) == 0
    assert lr_axis("slices2d", 0) is None  # sagittal slices have no left-right axis
    assert lr_axis("images2d", 2) == 1 and lr_axis("patches3d", 2) == 0


def test_dataloader__workers_read_batches_that_equal_the_main_process_read(manifest, cfg):
    dataset = build_pretrain_dataset(manifest, cfg, AugmentConfig(), progress=False)
    sampler = [(i, 100 + i) for i in range(8)]
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=2, collate_fn=dataset.collate)
    batches = list(loader)
    assert [b["image"].shape for b in batches] == [(4, 1, 48, 48)] * 2
    direct = dataset.__getitems__(sampler[4:])
    assert torch.equal(batches[1]["image"], direct["image"]) and int(batches[1]["seed"]) == int(direct["seed"])
    assert int(batches[0]["seed"]) != int(batches[1]["seed"])  # different batches draw different views


def test_build_pretrain_dataset__working_images_are_built_once(manifest, cfg):
    a = build_pretrain_dataset(manifest, cfg, AugmentConfig(), progress=False)
    b = build_pretrain_dataset(manifest, cfg, AugmentConfig(), progress=False)
    assert a.working.filename == b.working.filename
    assert len(list(Path(cfg.cache_dir, "working").glob("*.npy"))) >= 1


@pytest.fixture
def manifest_with_bad_rows(manifest, tmp_path) -> Manifest:
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00broken")
    rows = [replace(r, path=str(Path(manifest.root, r.path))) for r in manifest.rows]
    rows += [ManifestRow(str(bad), "bad1", split="train"), ManifestRow(str(tmp_path / "gone.nii.gz"), "bad2", split="train")]
    return Manifest(Path("/"), rows)


def test_build_pretrain_dataset__bad_scan_is_a_data_error_naming_it(manifest_with_bad_rows, cfg):
    with pytest.raises(DataError, match=r"corrupt\.nii\.gz"):
        build_pretrain_dataset(manifest_with_bad_rows, cfg, AugmentConfig(), progress=False)


def test_build_pretrain_dataset__skip_bad_skips_and_reports_each(manifest_with_bad_rows, cfg):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = build_pretrain_dataset(manifest_with_bad_rows, replace(cfg, skip_bad=True), AugmentConfig(), progress=False)
        evaluation = build_eval_dataset(manifest_with_bad_rows, replace(cfg, skip_bad=True), ["train"], progress=False)
    skipped = [reason for _, reason in dataset.skipped]
    assert len(skipped) == 2
    assert "corrupt.nii.gz" in skipped[0] and "gone.nii.gz: file does not exist" in skipped[1]
    assert len(evaluation.skipped) == 2
    assert sum("skipped bad scan" in str(w.message) for w in caught) == 4
    assert len(dataset) > 0


@pytest.mark.realdata
@pytest.mark.skipif(not IXI.is_dir(), reason="../shared/data/ixi-t1-10 is absent")
def test_build_pretrain_dataset__ixi_axial_slices(tmp_path):
    from mocomri.data.manifest import read_manifest

    manifest = read_manifest(Path(__file__).parents[1] / "data_manifests" / "ixi_t1_10.csv")
    cfg = DataConfig(cache_dir=str(tmp_path), image_size=48, pretrain_splits=["train"])
    dataset = build_pretrain_dataset(manifest, cfg, AugmentConfig(), progress=False)
    assert len(dataset) > 7 * 30  # many axial foreground slices per volume
    assert dataset[0]["image"].shape == (1, 72, 72)  # working side for 48-px views


def test_build_pretrain_dataset__items_with_different_channel_counts_name_the_file(tmp_path, cfg):
    rows = []
    for i, mode in enumerate(("L", "L", "RGB")):
        pixels = np.zeros((20, 20), dtype=np.uint8)
        pixels[4:16, 4:16] = 120 + 20 * i
        Image.fromarray(pixels).convert(mode).save(tmp_path / f"img{i}.png")
        rows.append(ManifestRow(f"img{i}.png", f"s{i}", split="unlabeled"))
    # Every 2D image becomes one channel, so mix in a 4D NIfTI kept with all its volumes instead.
    import nibabel as nib

    data = np.random.default_rng(0).normal(100, 10, (12, 12, 6, 2)).astype(np.float32)
    data[3:9, 3:9, 1:5] += 100
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "two_volumes.nii.gz")
    rows.append(ManifestRow("two_volumes.nii.gz", "s9", split="unlabeled"))
    mixed = replace(cfg, cache_dir=str(tmp_path / "cache"), volume_index=None, min_foreground=0.0)
    with pytest.raises(DataError, match=r"two_volumes\.nii\.gz: 2 channels, but .*img0\.png has 1"):
        build_pretrain_dataset(Manifest(tmp_path, rows), mixed, AugmentConfig(), ["unlabeled"], progress=False)


def test_read__keeps_few_memmaps_open_and_reads_every_item(tmp_path, cfg, monkeypatch):
    # More images than the cap of open memmaps: each read reopens what fell out, same values.
    import mocomri.data.datasets as datasets

    monkeypatch.setattr(datasets, "MAX_OPEN_ARRAYS", 2)
    for i in range(5):
        pixels = np.zeros((20, 20), dtype=np.uint8)
        pixels[2:18, 2:18] = 120
        pixels[5:8, 4 + 2 * i:6 + 2 * i] = 30  # a dark spot in a different place in each image
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
    rows = [ManifestRow(f"img{i}.png", f"s{i}", split="unlabeled") for i in range(5)]
    dataset = build_eval_dataset(Manifest(tmp_path, rows), replace(cfg, min_foreground=0.0), ["unlabeled"])
    first = [dataset.read(i)[1].clone() for i in range(5)]
    assert len(dataset._arrays) == 2
    assert [sorted(dataset._arrays)] == [[3, 4]]  # the most recently read
    again = [dataset.read(i)[1] for i in (0, 4, 1)]
    assert all(torch.equal(a, first[i]) for a, i in zip(again, (0, 4, 1)))
    assert len({x.numpy().tobytes() for x in first}) == 5  # five different images, not one reopened five times
