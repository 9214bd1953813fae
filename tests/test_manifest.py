"""Tests for mocomri.data.manifest: schema and root, discovery, subject splits, the audit."""

from __future__ import annotations

import csv
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mocomri.cli import main as cli_main
from mocomri.data.manifest import (
    Manifest,
    ManifestRow,
    assign_splits,
    audit,
    carve_by_subject,
    read_label_table,
    read_manifest,
    scan_bids,
    scan_class_folders,
    scan_flat,
    scan_root,
    write_manifest,
)
from mocomri.data.manifest.splits import SplitError, check_split
from mocomri.data.synthetic import make_cohort
from mocomri.errors import DataError

REPO = Path(__file__).parents[1]
DATA = Path(__file__).parents[2] / "shared" / "data"
TUMOR = DATA / "brain-tumor-mri"
IXI = DATA / "ixi-t1-10"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("m") / "bids", subjects=6, modalities=["T1w", "FLAIR"],
                       shape=(24, 24, 16), seed=0)


def _png(path: Path, value: int, size=(16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full(size, value, dtype=np.uint8)
    pixels[: size[0] // 2] = 255 - value  # not constant
    Image.fromarray(pixels).save(path)
    return path


# --- schema and the root line ----------------------------------------------------------------


def test_write_then_read__round_trips_rows_from_any_cwd_and_any_csv_reader_reads_it(tmp_path, monkeypatch):
    import csv

    root = tmp_path / "data"
    rows = [ManifestRow("a/x.nii.gz", "s1", "01", "T1w", "lesion", "train", "abc"),
            ManifestRow("b/y.png", "s2", "", "unknown", "", "unlabeled", "")]
    write_manifest(Manifest(root, rows), tmp_path / "manifests" / "m.csv")
    with open(tmp_path / "manifests" / "m.csv", newline="") as f:
        plain = list(csv.DictReader(f))  # a reader with no options: the first line is the header
    assert [r["path"] for r in plain] == ["../data/a/x.nii.gz", "../data/b/y.png"]  # relative to the manifest's folder
    assert plain[0]["subject"] == "s1" and plain[0]["split"] == "train"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # relative to the manifest, not the working directory
    manifest = read_manifest(tmp_path / "manifests" / "m.csv")
    assert [manifest.abspath(r).resolve() for r in manifest.rows] == [root / "a" / "x.nii.gz", root / "b" / "y.png"]
    assert [(r.subject, r.session, r.modality, r.label, r.split, r.sha1) for r in manifest.rows] == \
        [(r.subject, r.session, r.modality, r.label, r.split, r.sha1) for r in rows]


def test_read_manifest__old_root_line_still_reads(tmp_path, monkeypatch):
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "old.csv").write_text("# root: ../data\npath,subject,split\na/x.png,s1,train\n")
    monkeypatch.chdir(tmp_path)
    manifest = read_manifest(tmp_path / "manifests" / "old.csv")
    assert manifest.root == tmp_path / "data"
    assert manifest.abspath(manifest.rows[0]) == tmp_path / "data" / "a" / "x.png"


def test_read_manifest__root_argument_overrides_and_default_is_the_folder(tmp_path):
    (tmp_path / "m.csv").write_text("path,subject\nx.png,s1\n")
    assert read_manifest(tmp_path / "m.csv").root == tmp_path
    assert read_manifest(tmp_path / "m.csv", root="/elsewhere").root == Path("/elsewhere")
    row = read_manifest(tmp_path / "m.csv").rows[0]
    assert (row.modality, row.split, row.label) == ("unknown", "unlabeled", "")


def test_manifest_helpers__select_labels_subjects():
    rows = [ManifestRow("1", "b", label="y", split="train"), ManifestRow("2", "a", label="x", split="test"),
            ManifestRow("3", "a", label="", split="unlabeled")]
    manifest = Manifest(Path("/r"), rows)
    assert [r.path for r in manifest.select(["train", "unlabeled"]).rows] == ["1", "3"]
    assert [r.path for r in manifest.select("test").rows] == ["2"]
    assert manifest.labels() == ["x", "y"]
    assert manifest.subjects() == ["a", "b"]


@pytest.mark.parametrize("text, message", [
    ("file,subject\nx,y\n", r"m\.csv: missing column\(s\) path"),
    ("path,subject,split\nx.png,s1,training\n", r"m\.csv row 2: split 'training' is not one of"),
    ("path,subject\nx.png,s1\n,s2\n", r"m\.csv row 3: empty path or subject"),
])
def test_read_manifest__bad_file_names_the_file_and_row(tmp_path, text, message):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        read_manifest(tmp_path / "m.csv")


def test_read_manifest__missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: manifest not found"):
        read_manifest(tmp_path / "nope.csv")


# --- discovery --------------------------------------------------------------------------------


def test_scan_bids__subject_session_modality_and_labels(cohort):
    rows = scan_bids(cohort)
    assert len(rows) == 12
    assert Counter(r.modality for r in rows) == {"T1w": 6, "FLAIR": 6}
    with open(cohort / "participants.tsv") as f:
        truth = {r["participant_id"].removeprefix("sub-"): r["label"] for r in csv.DictReader(f, delimiter="\t")}
    assert {r.subject: r.label for r in rows} == truth
    assert rows[0].path.startswith("sub-001/anat/sub-001_")


def test_scan_bids__session_entity_is_read(tmp_path, cohort):
    target = tmp_path / "sub-07" / "ses-2" / "anat"
    target.mkdir(parents=True)
    source = next(cohort.glob("sub-001/anat/*_T1w.nii.gz"))
    (target / "sub-07_ses-2_acq-fast_T1w.nii.gz").write_bytes(source.read_bytes())
    (row,) = scan_bids(tmp_path)
    assert (row.subject, row.session, row.modality, row.label) == ("07", "2", "T1w", "")


def test_scan_class_folders__split_folders_become_splits_and_images_subjects(tmp_path):
    _png(tmp_path / "Training" / "glioma" / "a.jpg", 10)
    _png(tmp_path / "Training" / "notumor" / "b.jpg", 20)
    _png(tmp_path / "Testing" / "glioma" / "c.jpg", 30)
    rows = scan_class_folders(tmp_path, modality="T1c")
    assert {(r.path, r.label, r.split, r.subject) for r in rows} == {
        ("Training/glioma/a.jpg", "glioma", "train", "Training/glioma/a"),
        ("Training/notumor/b.jpg", "notumor", "train", "Training/notumor/b"),
        ("Testing/glioma/c.jpg", "glioma", "test", "Testing/glioma/c"),
    }
    assert scan_root(tmp_path)[0] == "folders"


def test_scan_flat__subject_from_name_and_labels_by_id_prefix(tmp_path, cohort):
    source = next(cohort.glob("sub-001/anat/*_T1w.nii.gz")).read_bytes()
    for name in ("IXI002-Guys-0828-T1.nii.gz", "IXI012-HH-1211-T1_ds.nii.gz", "scan7.nii.gz"):
        (tmp_path / name).write_bytes(source)
    (tmp_path / "table.csv").write_text("MRID,Sex\nIXI012-HH-1211,F\n")
    unlabeled = scan_flat(tmp_path)
    assert [(r.subject, r.modality) for r in unlabeled] == [
        ("IXI002-Guys-0828", "T1w"), ("IXI012-HH-1211", "T1w"), ("scan7", "unknown")]
    labels = read_label_table(tmp_path / "table.csv", "MRID", "Sex")
    assert {r.subject: r.label for r in scan_flat(tmp_path, labels)}["IXI012-HH-1211"] == "F"
    assert scan_root(tmp_path)[0] == "flat"


def test_scan_root__empty_and_dicom_only_folders_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="no scans found"):
        scan_root(tmp_path)
    (tmp_path / "IM1.dcm").write_bytes(b"\x00")
    with pytest.raises(DataError, match="dcm2niix"):
        scan_root(tmp_path)


# --- splits -----------------------------------------------------------------------------------


def _rows(n_subjects: int, per_subject: int, labels=("a", "b")) -> list[ManifestRow]:
    return [ManifestRow(f"s{s}_{i}.nii.gz", f"s{s}", label=labels[s % len(labels)] if labels else "", split="")
            for s in range(n_subjects) for i in range(per_subject)]


def test_assign_splits__by_subject_and_stratified_by_label():
    rows = assign_splits(_rows(60, 3), val_fraction=0.1, test_fraction=0.2, seed=0)
    splits_of = defaultdict(set)
    for r in rows:
        splits_of[r.subject].add(r.split)
    assert all(len(s) == 1 for s in splits_of.values())  # no subject in two splits
    for split, share in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        subjects = {r.subject for r in rows if r.split == split}
        assert abs(len(subjects) / 60 - share) < 0.06
        labels = Counter(r.label for r in rows if r.split == split)
        assert labels["a"] == labels["b"]  # stratified: both labels equally represented


def test_assign_splits__unlabelled_rows_become_unlabeled():
    assert {r.split for r in assign_splits(_rows(10, 2, labels=()))} == {"unlabeled"}


def test_assign_splits__carves_val_from_train_by_subject_keeping_test():
    rows = [ManifestRow(f"t{i}.png", f"t{i}", label="ab"[i % 2], split="train") for i in range(40)]
    rows += [ManifestRow(f"e{i}.png", f"e{i}", label="ab"[i % 2], split="test") for i in range(10)]
    out = assign_splits(rows, val_fraction=0.25, carve_val_from_train=True)
    counts = Counter(r.split for r in out)
    assert counts == {"train": 30, "val": 10, "test": 10}
    assert all(r.split == "test" for r in out[40:])


# --- audit ------------------------------------------------------------------------------------


@pytest.fixture
def leaky_tree(tmp_path):
    root = tmp_path / "tree"
    _png(root / "Training" / "glioma" / "a.png", 10)
    _png(root / "Training" / "glioma" / "a_copy.png", 10)  # duplicate within train
    _png(root / "Training" / "notumor" / "b.png", 20)
    _png(root / "Training" / "notumor" / "d.png", 40)
    _png(root / "Testing" / "glioma" / "a_again.png", 10)  # test copy of a training image
    _png(root / "Testing" / "notumor" / "c.png", 30)
    _png(root / "Testing" / "glioma" / "b_relabelled.png", 20)  # same pixels, other label
    (root / "Testing" / "notumor" / "broken.png").write_text("not an image")
    return root


def test_audit__reports_and_drops_test_duplicates_of_training_images(leaky_tree):
    manifest = Manifest(leaky_tree, scan_class_folders(leaky_tree))
    report = audit(manifest)
    test_paths = {r.path for r in report.manifest.select("test").rows}
    assert "Testing/glioma/a_again.png" not in test_paths and "Testing/glioma/b_relabelled.png" not in test_paths
    assert "Testing/notumor/c.png" in test_paths
    train_hashes = {r.sha1 for r in report.manifest.select("train").rows}
    assert not train_hashes & {r.sha1 for r in report.manifest.select("test").rows}
    assert len(report.within_split()["train"]) == 1
    assert len(report.across_splits()[("train", "test")]) == 2
    assert len(report.conflicting_labels()) == 1
    assert report.unreadable == [("Testing/notumor/broken.png", "not a readable image (the content does not match the extension)")]
    assert report.subjects_are_images
    text = str(report)
    assert "dropped 2 val/test rows identical to a row of an earlier split" in text
    assert "Testing/glioma/a_again.png = Training/glioma/a.png" in text
    assert "within train: 1 groups, 2 files" in text
    assert "each image is its own subject" in text
    assert "unreadable files: 1" in text


def test_audit__keep_duplicates_and_drop_unreadable_options(leaky_tree):
    manifest = Manifest(leaky_tree, scan_class_folders(leaky_tree))
    report = audit(manifest, drop_duplicates=False, drop_unreadable=True)
    paths = {r.path for r in report.manifest.rows}
    assert "Testing/glioma/a_again.png" in paths
    assert "Testing/notumor/broken.png" not in paths
    assert report.dropped == []


def test_audit__missing_file_and_subject_leak_are_reported(tmp_path):
    _png(tmp_path / "x.png", 5)
    rows = [ManifestRow("x.png", "s1", split="train"), ManifestRow("gone.png", "s1", split="test")]
    report = audit(Manifest(tmp_path, rows))
    assert report.unreadable == [("gone.png", "file does not exist")]
    assert report.subject_leaks == ["s1"]
    assert "1 subjects are in more than one split" in str(report)


def test_manifest_command__writes_an_audited_manifest(tmp_path, cohort, capsys):
    out = tmp_path / "m.csv"
    assert cli_main(["manifest", "--root", str(cohort), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "layout: bids" in printed and "unreadable files: 0" in printed
    manifest = read_manifest(out)
    assert all(manifest.abspath(r).resolve().is_relative_to(cohort) for r in manifest.rows)
    assert len(manifest) == 12 and all(len(r.sha1) == 40 for r in manifest.rows)
    assert {r.split for r in manifest.rows} <= {"train", "val", "test"}


# --- real data and the shipped manifests --------------------------------------------------


@pytest.mark.realdata
@pytest.mark.skipif(not TUMOR.is_dir(), reason="../shared/data/brain-tumor-mri is absent")
def test_audit__brain_tumor_duplicates_inside_training_and_across_to_testing():
    manifest = Manifest(TUMOR, scan_class_folders(TUMOR, modality="T1c"))
    report = audit(manifest, decode=False)
    assert report.within_split().get("train")  # duplicates inside Training
    assert report.across_splits().get(("train", "test"))  # and between Training and Testing
    assert report.dropped and all(row.split == "test" for row, _ in report.dropped)
    assert "each image is its own subject" in str(report)


@pytest.mark.realdata
@pytest.mark.skipif(not TUMOR.is_dir(), reason="../shared/data/brain-tumor-mri is absent")
def test_shipped_brain_tumor_manifest__no_test_image_identical_to_a_training_image():
    manifest = read_manifest(REPO / "data_manifests" / "brain_tumor_mri.csv")
    assert all(manifest.abspath(r).resolve().is_relative_to(TUMOR.resolve()) for r in manifest.rows)
    train = {r.sha1 for r in manifest.rows if r.split == "train"}
    test_rows = [r for r in manifest.rows if r.split == "test"]
    assert test_rows and not any(r.sha1 in train for r in test_rows)
    # The hashes are the files' real hashes, not stale ones (checked on a sample).
    from mocomri.files import file_digest

    for row in test_rows[:: max(1, len(test_rows) // 20)]:
        assert file_digest(manifest.abspath(row)) == row.sha1


@pytest.mark.realdata
@pytest.mark.skipif(not IXI.is_dir(), reason="../shared/data/ixi-t1-10 is absent")
def test_shipped_ixi_manifest__resolves_from_the_repo_root():
    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        manifest = read_manifest("data_manifests/ixi_t1_10.csv")
    finally:
        os.chdir(cwd)
    assert len(manifest) == 10
    assert all(manifest.abspath(r).is_file() for r in manifest.rows)
    assert {r.modality for r in manifest.rows} == {"T1w"}


# --- splits that hold what was asked ---------------------------------------------------------


def _uneven_rows(big: int, small: int, labels=("a", "b")) -> list[ManifestRow]:
    """One subject of ``big`` rows, then ``small`` subjects of one row each, labels alternating."""
    rows = [ManifestRow(path=f"big_{i}.png", subject="big", modality="T1w", label=labels[0], split="")
            for i in range(big)]
    rows += [ManifestRow(path=f"s{i}.png", subject=f"s{i}", modality="T1w", label=labels[i % len(labels)], split="")
             for i in range(small)]
    return rows


def test_carve_by_subject__shares_of_files_not_of_subjects():
    # 10 subjects of 10 files and 40 of 1: a fifth of the subjects can be anywhere from 10 to 100
    # files; a fifth of the files is 28 of 140.
    rows = [ManifestRow(path=f"{s}_{i}.png", subject=f"L{s}", modality="T1w", label="x", split="")
            for s in range(10) for i in range(10)]
    rows += [ManifestRow(path=f"s{s}.png", subject=f"s{s}", modality="T1w", label="x", split="") for s in range(40)]
    for seed in range(5):
        kept, carved = carve_by_subject(rows, 0.2, seed)
        assert abs(len(carved) - 28) <= 5, (seed, len(carved))
        assert not {rows[i].subject for i in kept} & {rows[i].subject for i in carved}


def test_assign_splits__a_subject_holding_most_files_is_a_split_error():
    with pytest.raises(SplitError, match=r"the test split holds \d+\.\d% of the files .* asked 20%.*'big', holds 90 files"):
        assign_splits(_uneven_rows(90, 10), val_fraction=0.1, test_fraction=0.2)


def test_check_split__a_missing_label_with_enough_subjects_is_named():
    rows = _uneven_rows(1, 20)  # labels a and b, 10 subjects each
    carved = [i for i, r in enumerate(rows) if r.label == "a"][:4]
    with pytest.raises(SplitError, match=r"the test split holds no 'b' although 10 subjects have it"):
        check_split(rows, carved, 4 / 21, "test")


def test_manifest_command__a_split_that_misses_its_share_exits_2_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "flat"
    root.mkdir()
    pixels = np.zeros((8, 8), dtype=np.uint8)
    names = [f"big_{i:02d}" for i in range(40)] + [f"s{i:02d}" for i in range(10)]
    for name in names:
        Image.fromarray(pixels + len(name)).save(root / f"{name}.png")
    table = tmp_path / "labels.csv"
    table.write_text("subject,label\nbig,a\n" + "".join(f"s{i:02d},{'ab'[i % 2]}\n" for i in range(10)))
    out = tmp_path / "m.csv"
    code = cli_main(["manifest", "--root", str(root), "--out", str(out), "--layout", "flat", "--labels", str(table),
                     "--near-threshold", "-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith("mocomri manifest: error: the test split holds") and "'big', holds 40 files" in err[0]
    assert not out.exists()


def test_manifest_command__a_3d_threshold_of_minus_one_is_a_usage_error(tmp_path, capsys):
    # -1 skips the whole near-duplicate pass, and only through --near-threshold
    with pytest.raises(SystemExit) as caught:
        cli_main(["manifest", "--root", str(tmp_path), "--out", str(tmp_path / "m.csv"), "--near-threshold-3d", "-1"])
    assert caught.value.code == 2
    assert "-1 must be 'auto', a number of bits in 0-63" in capsys.readouterr().err
