"""Tests for mocomri.data.synthetic: layout, determinism, contrasts, and labels that need anatomy."""

from __future__ import annotations

import csv
import time

import nibabel as nib
import numpy as np
import pytest

from mocomri.data.synthetic import CSF, GM, NODULE, WM, make_anatomy, make_cohort, make_subject, render

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
    assert sorted(r["label"] for r in rows) == ["healthy", "healthy", "heterotopia", "heterotopia"]
    for r in rows:
        assert (float(r["nodule_ml"]) > 0) == (r["label"] == "heterotopia")
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
    first = make_anatomy(np.random.default_rng([0, 0]), SHAPE, heterotopia=False)
    second = make_anatomy(np.random.default_rng([0, 1]), SHAPE, heterotopia=False)
    assert (first > 0).sum() != (second > 0).sum()  # head volume
    assert (first == CSF).sum() != (second == CSF).sum()
    for tissue in (CSF, GM, WM):
        assert (first == tissue).sum() > 100


def _tissue_means(contrast: str) -> dict[int, float]:
    rng = np.random.default_rng(11)
    labels = make_anatomy(rng, (64, 64, 48), heterotopia=True)
    image = render(labels, contrast, rng).astype(np.float64)
    return {t: image[labels == t].mean() for t in (CSF, GM, WM, NODULE)}


def test_render__tissue_order_follows_each_contrast():
    t1, t2, flair = _tissue_means("T1w"), _tissue_means("T2w"), _tissue_means("FLAIR")
    assert t1[WM] > t1[GM] > t1[CSF]  # T1w: white brightest, CSF dark
    assert t2[CSF] > t2[GM] > t2[WM]  # T2w: CSF brightest
    assert flair[GM] > flair[WM] > flair[CSF]  # FLAIR: CSF suppressed


@pytest.mark.parametrize("contrast", ["T1w", "T2w", "FLAIR", "PD"])
def test_render__a_nodule_is_rendered_as_grey_matter(contrast):
    labels = make_anatomy(np.random.default_rng(11), SHAPE, heterotopia=True)
    as_grey = np.where(labels == NODULE, GM, labels).astype(labels.dtype)
    assert (labels == NODULE).any()
    rendered = render(labels, contrast, np.random.default_rng(3))
    assert np.array_equal(rendered, render(as_grey, contrast, np.random.default_rng(3)))


def test_make_anatomy__heterotopia_moves_grey_matter_and_keeps_every_tissue_volume():
    # The same draw with and without heterotopia: the same anatomy but for the nodules, which
    # lie where the white matter was, and a cortex thinner by their volume.
    shape = (64, 64, 48)
    with_nodules = make_anatomy(np.random.default_rng([2, 5]), shape, heterotopia=True)
    without = make_anatomy(np.random.default_rng([2, 5]), shape, heterotopia=False)
    nodules = with_nodules == NODULE
    assert nodules.sum() > 500 and not (without == NODULE).any()
    assert (without[nodules] == WM).all()
    thinned = (without == GM) & (with_nodules == WM)  # cortex given to the white matter
    assert thinned.sum() == nodules.sum()
    assert np.array_equal(with_nodules != without, nodules | thinned)
    grey = lambda labels: ((labels == GM) | (labels == NODULE)).sum()  # noqa: E731
    assert grey(with_nodules) == grey(without) and (with_nodules == WM).sum() == (without == WM).sum()


def test_make_anatomy__nearly_every_axial_slice_through_white_matter_cuts_a_nodule():
    for index in range(4):
        labels = make_anatomy(np.random.default_rng([0, index]), (64, 64, 48), heterotopia=True)
        has_white = ((labels == WM) | (labels == NODULE)).any(axis=(0, 1))  # (Z,)
        has_nodule = (labels == NODULE).any(axis=(0, 1))
        assert has_nodule[has_white].mean() >= 0.95, index
        assert not has_nodule[~has_white].any()


def test_make_cohort__label_is_read_from_the_anatomy_drawn(tmp_path):
    root = make_cohort(tmp_path / "bids", subjects=6, modalities=["T1w"], shape=SHAPE, seed=4)
    for index, row in enumerate(_participants(root)):
        _, anatomy, spacing = make_subject(4, index, row["label"] == "heterotopia", ["T1w"], SHAPE)
        nodule_ml = (anatomy == NODULE).sum() * np.prod(spacing) / 1000
        assert (row["label"] == "heterotopia") == (nodule_ml > 0)
        assert float(row["nodule_ml"]) == pytest.approx(nodule_ml, abs=0.01)


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
        labels.append(row["label"] == "heterotopia")
    baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    accuracy = cross_val_score(baseline, np.array(features), np.array(labels), cv=4).mean()
    assert accuracy < 0.7, f"global intensity statistics predict the label (accuracy {accuracy:.2f})"


@pytest.mark.parametrize("contrast", ["T1w", "T2w", "FLAIR", "PD"])
def test_render__nodules_stand_out_from_white_matter_as_grey_matter_does(contrast):
    # Blurred into the white matter around them, small nodules keep most of the grey/white contrast.
    rng = np.random.default_rng(5)
    labels = make_anatomy(rng, (64, 64, 48), heterotopia=True)
    image = render(labels, contrast, rng).astype(np.float64)
    white = image[labels == WM].mean()
    assert (image[labels == NODULE].mean() - white) / (image[labels == GM].mean() - white) > 0.5


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
