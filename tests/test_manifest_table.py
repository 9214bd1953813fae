"""Manifests from a user's own tables: ``--table``, label tables that must match, BIDS selection.

Truths are hand counts on tiny trees written here: which files exist, which subject and label
each was given, which BIDS names carry which suffix and entities.
"""

from __future__ import annotations

import csv
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mocomri.cli import main as cli_main
from mocomri.data.manifest import bids_entities, read_manifest, scan_bids, scan_flat, scan_table
from mocomri.data.synthetic import make_cohort
from mocomri.errors import DataError


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Six subjects, each with a T1w and a T2w volume, labels in participants.tsv."""
    return make_cohort(tmp_path_factory.mktemp("t") / "bids", subjects=6, modalities=["T1w", "T2w"],
                       shape=(24, 24, 16), seed=0)


def _noise_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16), dtype=np.uint8)  # no two alike
    Image.fromarray(pixels).save(path)


def _write(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _run(argv: list[str], capsys) -> tuple[int, list[str]]:
    code = cli_main(["manifest", *argv])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture
def png_table(tmp_path):
    """20 patients (labels '0' and '1' alternating), two slices each, listed in a CSV beside the images."""
    root = tmp_path / "slices"
    rows = []
    for p in range(20):
        for s in range(2):
            name = f"p{p:02d}/slice{s}.png"
            _noise_png(root / name, seed=100 * p + s)
            rows.append([name, f"P{p:02d}", str(p % 2)])
    return root, _write(tmp_path / "labels.csv", ["path", "patient_id", "label"], rows), rows


def test_manifest_table__pngs_and_csv_give_rows_subjects_labels_and_a_split_by_subject(tmp_path, png_table, capsys):
    root, table, rows = png_table
    out = tmp_path / "m.csv"
    code, err = _run(["--table", str(table), "--root", str(root), "--out", str(out)], capsys)
    assert code == 0, err
    manifest = read_manifest(out)
    assert len(manifest) == 40
    got = {(manifest.abspath(r).resolve().relative_to(root).as_posix(), r.subject, r.label) for r in manifest.rows}
    assert got == {tuple(r) for r in rows}
    assert manifest.subjects() == [f"P{p:02d}" for p in range(20)]
    splits_of = defaultdict(set)
    for r in manifest.rows:
        splits_of[r.subject].add(r.split)
    assert all(len(s) == 1 for s in splits_of.values())  # by subject: a patient's two slices together
    assert {r.split for r in manifest.rows} == {"train", "val", "test"}
    with open(out, newline="") as f:
        assert {r["label"] for r in csv.DictReader(f)} == {"0", "1"}  # labels stay as written


def test_manifest_table__tsv_with_its_own_split_keeps_it_and_defaults_the_root(tmp_path, png_table):
    root, _, rows = png_table
    listed = [[f"slices/{path}", subject, label, "test" if subject in ("P00", "P01") else "Training"]
              for path, subject, label in rows]
    table = _write(tmp_path / "listing.tsv", ["file", "subject", "dx", "split"], listed, delimiter="\t")
    found = scan_table(table, tmp_path, path_column="file", label_column="dx")
    assert [r.split for r in found] == ["test"] * 4 + ["train"] * 36
    assert [(r.subject, r.label) for r in found] == [(s, label) for _, s, label in rows]
    code = cli_main(["manifest", "--table", str(table), "--path-column", "file", "--label-column", "dx",
                     "--out", str(tmp_path / "m.csv"), "--near-threshold", "-1"])  # --root: the table's folder
    assert code == 0
    assert {r.subject for r in read_manifest(tmp_path / "m.csv").select("test").rows} == {"P00", "P01"}


def test_manifest_table__an_existing_manifest_is_audited_again_with_its_splits(tmp_path, png_table, capsys):
    root, table, _ = png_table
    first, second = tmp_path / "first.csv", tmp_path / "again" / "second.csv"
    assert _run(["--table", str(table), "--root", str(root), "--out", str(first)], capsys)[0] == 0
    code, err = _run(["--table", str(first), "--out", str(second)], capsys)  # paths relative to the table's folder
    assert code == 0, err
    before, after = read_manifest(first), read_manifest(second)
    assert [(before.abspath(r).resolve(), r.subject, r.label, r.split, r.sha1) for r in before.rows] == \
        [(after.abspath(r).resolve(), r.subject, r.label, r.split, r.sha1) for r in after.rows]


def test_manifest_table__without_subject_column_each_file_is_its_own_subject(tmp_path, png_table):
    root, _, rows = png_table
    table = _write(tmp_path / "t.csv", ["path", "label"], [[path, label] for path, _, label in rows])
    found = scan_table(table, root)
    assert [r.subject for r in found] == [path.removesuffix(".png") for path, _, _ in rows]


def test_manifest_table__a_missing_file_is_one_line_naming_the_row_and_nothing_is_written(tmp_path, png_table, capsys):
    root, _, rows = png_table
    listed = [list(r) for r in rows]
    listed[3][0] = "p01/gone.png"  # row 5 of the file: the header is row 1
    table = _write(tmp_path / "t.csv", ["path", "subject", "label"], listed)
    out = tmp_path / "m.csv"
    code, err = _run(["--table", str(table), "--root", str(root), "--out", str(out)], capsys)
    assert code == 2 and len(err) == 1 and not out.exists()
    assert err[0] == (f"mocomri manifest: error: {table}: 1 of 40 listed files not found (paths relative to {root}): "
                      "row 5 'p01/gone.png'")


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows + [rows[0]], r"files listed more than once \(1\): 'p00/slice0.png' \(rows 2, 42\)"),
    (lambda rows: [[p, "", label] if i == 2 else [p, s, label] for i, (p, s, label) in enumerate(rows)],
     r"rows without a subject in column 'subject' \(1\): row 4 'p01/slice0.png'"),
])
def test_manifest_table__duplicate_paths_and_empty_subjects_name_the_rows(tmp_path, png_table, change, message):
    root, _, rows = png_table
    table = _write(tmp_path / "t.csv", ["path", "subject", "label"], change([list(r) for r in rows]))
    with pytest.raises(DataError, match=message):
        scan_table(table, root)


def test_manifest_table__unknown_column_lists_the_tables_columns(tmp_path, png_table, capsys):
    root, table, _ = png_table
    code, err = _run(["--table", str(table), "--root", str(root), "--out", str(tmp_path / "m.csv"),
                      "--label-column", "diagnosis"], capsys)
    assert code == 2 and len(err) == 1
    assert err[0] == (f"mocomri manifest: error: {table}: no column 'diagnosis' (--label-column); "
                      "its columns are path, patient_id, label")


def test_manifest_table__a_subject_in_two_splits_or_an_unknown_split_is_an_error(tmp_path, png_table):
    root, _, rows = png_table
    listed = [[p, s, label, "train"] for p, s, label in rows]
    listed[1][3] = "test"  # P00's second slice
    with pytest.raises(DataError, match=r"subjects with files in more than one split \(1\): 'P00' \(test, train\)"):
        scan_table(_write(tmp_path / "a.csv", ["path", "subject", "label", "split"], listed), root)
    listed[1][3] = "holdout"
    with pytest.raises(DataError, match=r"rows without a known split \(1; .*\): row 3 'holdout'"):
        scan_table(_write(tmp_path / "b.csv", ["path", "subject", "label", "split"], listed), root)


def test_manifest_table__with_scan_options_is_an_error(tmp_path, png_table, capsys):
    root, table, _ = png_table
    code, err = _run(["--table", str(table), "--root", str(root), "--out", str(tmp_path / "m.csv"),
                      "--suffix", "T1w"], capsys)
    assert code == 2 and err == ["mocomri manifest: error: --table lists the files and their labels itself: "
                                 "leave out --suffix"]


# --- label tables that must match ------------------------------------------------------------


def test_label_table__ids_that_match_no_file_are_one_line_with_examples(tmp_path, capsys):
    root = tmp_path / "flat"
    for i in range(3):
        _noise_png(root / f"x{i}.png", seed=i)
    table = _write(tmp_path / "labels.csv", ["file", "label"], [["x0.png", "a"], ["x9.png", "b"], ["y.png", "a"]])
    out = tmp_path / "m.csv"
    code, err = _run(["--root", str(root), "--layout", "flat", "--labels", str(table), "--out", str(out)], capsys)
    assert code == 2 and len(err) == 1 and not out.exists()
    assert err[0].startswith(f"mocomri manifest: error: {table}: 2 of 3 ids match no file under {root} "
                             "(e.g. 'x9.png', 'y.png'); an id matches a file by its path")


def test_label_table__file_names_as_ids_label_the_flat_files(tmp_path):
    root = tmp_path / "flat"
    for i in range(3):
        _noise_png(root / f"x{i}.png", seed=i)
    labels = {"x0.png": "a", "x1.png": "b", "x2.png": "a"}
    rows = scan_flat(root, labels)
    assert [(r.path, r.subject, r.label) for r in rows] == [("x0.png", "x0", "a"), ("x1.png", "x1", "b"),
                                                            ("x2.png", "x2", "a")]


def test_label_table__bids_ids_not_in_the_tree_are_an_error(tmp_path, cohort, capsys):
    table = _write(tmp_path / "p.csv", ["participant_id", "label"], [["sub-001", "a"], ["sub-077", "b"]])
    code, err = _run(["--root", str(cohort), "--labels", str(table), "--out", str(tmp_path / "m.csv")], capsys)
    assert code == 2 and not (tmp_path / "m.csv").exists()
    assert err == [f"mocomri manifest: error: {table}: 1 of 2 ids match no subject folder of {cohort} (e.g. '077'); "
                   "an id is a BIDS subject label, with or without 'sub-'"]


def test_label_column__without_labels_is_an_error_except_on_bids(tmp_path, cohort, capsys):
    root = tmp_path / "flat"
    for i in range(3):
        _noise_png(root / f"x{i}.png", seed=i)
    code, err = _run(["--root", str(root), "--layout", "flat", "--label-column", "dx", "--out",
                      str(tmp_path / "m.csv")], capsys)
    assert code == 2 and err == [
        "mocomri manifest: error: --label-column names a column of a table: give the table with --labels FILE "
        "(one row per subject) or --table FILE (one row per file); only a BIDS tree has one of its own "
        "(participants.tsv)"]
    # A BIDS tree has its own table: the column is read from participants.tsv.
    with open(cohort / "participants.tsv", newline="") as f:
        truth = {r["participant_id"].removeprefix("sub-"): r["nodule_ml"] for r in csv.DictReader(f, delimiter="\t")}
    out = tmp_path / "bids.csv"
    code, err = _run(["--root", str(cohort), "--label-column", "nodule_ml", "--suffix", "T1w", "--test-fraction",
                      "0", "--val-fraction", "0", "--out", str(out)], capsys)
    assert code == 0, err
    assert {r.subject: r.label for r in read_manifest(out).rows} == truth


# --- BIDS selection ---------------------------------------------------------------------------


def test_bids_suffix__keeps_only_t1w_rows(tmp_path, cohort, capsys):
    out = tmp_path / "m.csv"
    code, err = _run(["--root", str(cohort), "--suffix", "T1w", "--out", str(out)], capsys)
    assert code == 0, err
    manifest = read_manifest(out)
    assert len(manifest) == 6 and {r.modality for r in manifest.rows} == {"T1w"}
    assert all(Path(r.path).name.endswith("_T1w.nii.gz") for r in manifest.rows)
    assert len(scan_bids(cohort)) == 12  # without it, both contrasts


def test_bids_suffix__one_that_matches_nothing_names_the_suffixes_found(tmp_path, cohort, capsys):
    code, err = _run(["--root", str(cohort), "--suffix", "T1w,t2w", "--out", str(tmp_path / "m.csv")], capsys)
    assert code == 2 and err == [f"mocomri manifest: error: {cohort}: --suffix t2w matches no file of the BIDS tree "
                                 "(suffixes found: T1w (6 files), T2w (6 files))"]


@pytest.fixture
def entity_tree(tmp_path, cohort):
    """Two subjects, files named with acq and run entities (contents copied from the cohort)."""
    source = next(cohort.glob("sub-001/anat/*_T1w.nii.gz"))
    names = ["sub-01/anat/sub-01_acq-mprage_run-01_T1w.nii.gz", "sub-01/anat/sub-01_acq-mprage_run-02_T1w.nii.gz",
             "sub-01/anat/sub-01_acq-fast_T1w.nii.gz", "sub-02/ses-a/anat/sub-02_ses-a_acq-mprage_T1w.nii.gz",
             "sub-02/ses-a/anat/sub-02_ses-a_run-1_T2w.nii.gz"]
    root = tmp_path / "bids"
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / name)
    return root


def test_bids_entities__parsed_from_the_name():
    assert bids_entities("sub-01_ses-2_acq-mprage_run-1_T1w") == (
        {"sub": "01", "ses": "2", "acq": "mprage", "run": "1"}, "T1w")
    assert bids_entities("sub-01_run-1") == ({"sub": "01", "run": "1"}, "")


@pytest.mark.parametrize("suffixes, entities, kept", [
    (None, {"acq": {"mprage"}}, ["sub-01_acq-mprage_run-01_T1w", "sub-01_acq-mprage_run-02_T1w",
                                 "sub-02_ses-a_acq-mprage_T1w"]),
    (None, {"run": {"1"}}, ["sub-01_acq-mprage_run-01_T1w", "sub-02_ses-a_run-1_T2w"]),  # run-01 is run 1
    ({"T1w"}, {"run": {"1"}}, ["sub-01_acq-mprage_run-01_T1w"]),
    (None, {"acq": {"mprage"}, "ses": {"a"}}, ["sub-02_ses-a_acq-mprage_T1w"]),
    (None, {"acq": {"fast", "mprage"}}, ["sub-01_acq-fast_T1w", "sub-01_acq-mprage_run-01_T1w",
                                         "sub-01_acq-mprage_run-02_T1w", "sub-02_ses-a_acq-mprage_T1w"]),
])
def test_bids_filter__keeps_the_files_with_the_entities(entity_tree, suffixes, entities, kept):
    rows = scan_bids(entity_tree, suffixes=suffixes, entities=entities)
    assert sorted(Path(r.path).name.removesuffix(".nii.gz") for r in rows) == kept


def test_bids_filter__a_value_that_matches_nothing_names_the_values_found(tmp_path, entity_tree, capsys):
    code, err = _run(["--root", str(entity_tree), "--filter", "acq=mprgae", "--out", str(tmp_path / "m.csv")], capsys)
    assert code == 2 and err == [f"mocomri manifest: error: {entity_tree}: --filter acq=mprgae matches no file of "
                                 "the BIDS tree (acq values found: fast (1 file), mprage (3 files))"]


def test_bids_filter__on_another_layout_is_an_error(tmp_path, capsys):
    _noise_png(tmp_path / "flat" / "x.png", seed=0)
    code, err = _run(["--root", str(tmp_path / "flat"), "--filter", "run=1", "--out", str(tmp_path / "m.csv")], capsys)
    assert code == 2 and len(err) == 1 and "--suffix and --filter select files of a BIDS tree" in err[0]
