"""Tests for mocomri.data.synthetic: layout, determinism, contrasts, and labels that need anatomy."""

from __future__ import annotations

import csv
import time

import nibabel as nib
import numpy as np
import pytest

from mocomri.data.synthetic import CSF, GM, LESION, WM, make_anatomy, make_cohort, render

SHAPE = (32, 32, 24)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("synth") / "bids", subjects=4, shape=SHAPE, seed=3)


def _participants(root):
    with open(root / "participants.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_make_cohort__writes_bids_layout_with_labels(cohort):
    rows = _participants(cohort)
    assert [r["participant_id"] for r in rows] == ["sub-001", "sub-002", "sub-003", "sub-004"]
    assert sorted(r["label"] for r in rows) == ["healthy", "healthy", "lesion", "lesion"]
    for r in rows:
        assert (int(r["n_lesions"]) > 0) == (r["label"] == "lesion")
        for modality in ("T1w", "T2w", "FLAIR"):
            path = cohort / r["participant_id"] / "anat" / f"{r['participant_id']}_{modality}.nii.gz"
            image = nib.load(path)
            assert image.shape == SHAPE
            assert nib.aff2axcodes(image.affine) == ("L", "A", "S")  # stored LAS, readers must reorient
    assert (cohort / "dataset_description.json").is_file()


def test_make_cohort__same_seed_same_images_other_seed_differs(tmp_path):
    a = make_cohort(tmp_path / "a", subjects=2, modalities=["T1w"], shape=SHAPE, seed=7)
    b = make_cohort(tmp_path / "b", subjects=2, modalities=["T1w"], shape=SHAPE, seed=7)
    c = make_cohort(tmp_path / "c", subjects=2, modalities=["T1w"], shape=SHAPE, seed=8)
    load = lambda root: np.asarray(nib.load(root / "sub-001/anat/sub-001_T1w.nii.gz").dataobj)  # noqa: E731
    assert np.array_equal(load(a), load(b))
    assert not np.array_equal(load(a), load(c))


def test_make_anatomy__subjects_differ_in_head_and_ventricles():
    first = make_anatomy(np.random.default_rng([0, 0]), SHAPE, 0)
    second = make_anatomy(np.random.default_rng([0, 1]), SHAPE, 0)
    assert (first > 0).sum() != (second > 0).sum()  # head volume
    assert (first == CSF).sum() != (second == CSF).sum()
    for tissue in (CSF, GM, WM):
        assert (first == tissue).sum() > 100


def _tissue_means(contrast: str) -> dict[int, float]:
    rng = np.random.default_rng(11)
    labels = make_anatomy(rng, (64, 64, 48), n_lesions=6)
    image = render(labels, contrast, rng).astype(np.float64)
    return {t: image[labels == t].mean() for t in (CSF, GM, WM, LESION)}


def test_render__tissue_order_follows_each_contrast():
    t1, t2, flair = _tissue_means("T1w"), _tissue_means("T2w"), _tissue_means("FLAIR")
    assert t1[WM] > t1[GM] > t1[CSF]  # T1w: white brightest, CSF dark
    assert t2[CSF] > t2[GM] > t2[WM]  # T2w: CSF brightest
    assert flair[GM] > flair[WM] > flair[CSF]  # FLAIR: CSF suppressed
    assert t1[LESION] < t1[WM] and t2[LESION] > t2[WM] and flair[LESION] > flair[GM]


def test_make_cohort__label_not_readable_from_global_intensity(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.preprocessing import StandardScaler
    from sklearn.pipeline import make_pipeline

    root = make_cohort(tmp_path / "bids", subjects=48, shape=SHAPE, seed=1)
    features, labels = [], []
    for row in _participants(root):
        pid = row["participant_id"]
        stats = []
        for modality in ("T1w", "T2w", "FLAIR"):
            v = np.asarray(nib.load(root / pid / "anat" / f"{pid}_{modality}.nii.gz").dataobj, dtype=np.float64)
            stats += [v.mean(), v.std(), *np.percentile(v, [50, 90, 99, 99.9])]
        features.append(stats)
        labels.append(row["label"] == "lesion")
    baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    accuracy = cross_val_score(baseline, np.array(features), np.array(labels), cv=4).mean()
    assert accuracy < 0.7, f"global intensity statistics predict the label (accuracy {accuracy:.2f})"


def test_render__lesions_stand_out_from_white_matter_by_several_noise_sd():
    rng = np.random.default_rng(5)
    labels = make_anatomy(rng, (64, 64, 48), n_lesions=4)
    image = render(labels, "FLAIR", rng).astype(np.float64)
    noise_sd = image[labels == 0].std() / np.sqrt(2 - np.pi / 2)  # Rayleigh background -> sigma
    contrast = image[labels == LESION].mean() - image[labels == WM].mean()
    assert contrast > 3 * noise_sd


def test_make_cohort__rejects_unknown_modality(tmp_path):
    with pytest.raises(ValueError, match="DWI"):
        make_cohort(tmp_path, subjects=2, modalities=["DWI"], shape=SHAPE)


@pytest.mark.slow
def test_make_cohort__default_size_200_subjects_under_a_minute(tmp_path):
    start = time.perf_counter()
    make_cohort(tmp_path / "bids", subjects=200, seed=0)
    assert time.perf_counter() - start < 60
    assert len(list((tmp_path / "bids").glob("sub-*/anat/*.nii.gz"))) == 600


def test_synth_command__writes_the_requested_cohort(tmp_path, capsys):
    from mocomri.cli import main as cli_main

    code = cli_main(["synth", "--out", str(tmp_path / "c"), "--subjects", "2", "--modalities", "T2w,PD",
                     "--shape", "20,20,16", "--seed", "4"])
    assert code == 0
    files = sorted(p.name for p in (tmp_path / "c").glob("sub-*/anat/*.nii.gz"))
    assert files == ["sub-001_PD.nii.gz", "sub-001_T2w.nii.gz", "sub-002_PD.nii.gz", "sub-002_T2w.nii.gz"]
    assert nib.load(tmp_path / "c" / "sub-001" / "anat" / "sub-001_PD.nii.gz").shape == (20, 20, 16)
    assert cli_main(["synth", "--out", str(tmp_path / "d"), "--modalities", "CT"]) == 2
    assert "CT" in capsys.readouterr().err
