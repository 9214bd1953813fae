"""Rows from a table that lists the files: ``mocomri manifest --table FILE.csv``.

A researcher's own data often comes as a spreadsheet rather than a tree a scanner can read: one
row per file with its path, the patient, a label, perhaps a session, a modality and a split. The
table is checked before anything is hashed, and every problem is one error that names the rows:
a file that does not exist, a file type mocomri does not read, a file listed twice, a row without
a subject, a split it does not know, a subject in two splits.

Columns (names of the first three chosen by the caller):

- path (``path``): relative to the data root, or absolute;
- subject (default: the first of :data:`ID_COLUMNS` the table has): without one, each file is
  its own subject, as for a class-per-folder tree (near-duplicate groups then become the subjects);
- label (default: ``label`` when the table has it): kept as written (a string, even a number);
- ``session``, ``modality`` (a BIDS suffix; ``T1``, ``t2`` ... become ``T1w``, ``T2w``),
  ``split`` (``train``/``val``/``test``/``unlabeled``, or ``training``/``validation``/``testing``):
  optional, by these names.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from mocomri.data.io import DICOM_SUFFIXES
from mocomri.data.manifest.scan import MODALITY_TOKENS, SCAN_SUFFIXES, SPLIT_FOLDERS, _strip_suffix, guess_modality
from mocomri.data.manifest.schema import SPLITS, ManifestRow
from mocomri.data.manifest.tables import SHOWN, Table, read_table
from mocomri.errors import DataError

ID_COLUMNS = ("subject", "participant_id", "patient_id", "patient")
SPLIT_NAMES = {**SPLIT_FOLDERS, "unlabeled": "unlabeled", "unlabelled": "unlabeled"}


def _listed(items: list[tuple[int, str]]) -> str:
    """``row 4 'a.png', row 9 'b.png', ...``: the first few of ``(row, value)``."""
    shown = ", ".join(f"row {row} {value!r}" for row, value in items[:SHOWN])
    return shown + (", ..." if len(items) > SHOWN else "")


def _columns(table: Table, path_column: str, id_column: str | None,
             label_column: str | None) -> tuple[str, str | None, str | None]:
    """The path, subject and label columns: those named (which must exist), else the defaults found."""
    path = table.require(path_column, "--path-column")
    subject = table.require(id_column, "--id-column") if id_column else table.first_of(ID_COLUMNS)
    label = table.require(label_column, "--label-column") if label_column else table.first_of(("label",))
    return path, subject, label


def _files(table: Table, root: Path, column: str) -> list[str]:
    """Each record's file, relative to ``root`` where it lies under it, after checking them all.

    Raises:
        DataError: an empty path, a missing file, a type mocomri does not read, a file listed twice.
    """
    given = [(row, record.get(column, "")) for row, record in table.records]
    empty = [row for row, value in given if not value]
    if empty:
        raise DataError(f"{table.path}: rows without a path in column {column!r} ({len(empty)}): "
                        f"rows {', '.join(map(str, empty[:SHOWN]))}{', ...' if len(empty) > SHOWN else ''}")
    missing = [(row, value) for row, value in given if not (root / value).is_file()]
    if missing:
        raise DataError(f"{table.path}: {len(missing)} of {len(given)} listed files not found (paths relative to "
                        f"{root}): {_listed(missing)}")
    unread = [(row, value) for row, value in given if not value.lower().endswith(SCAN_SUFFIXES)]
    if unread:
        dicom = "; convert DICOM to NIfTI with dcm2niix first" if any(
            v.lower().endswith(DICOM_SUFFIXES) for _, v in unread) else ""
        raise DataError(f"{table.path}: {len(unread)} of {len(given)} listed files neither NIfTI nor 2D images "
                        f"({', '.join(SCAN_SUFFIXES)}): {_listed(unread)}{dicom}")
    files = []
    for _, value in given:
        target = Path(os.path.normpath(root / value))  # root / an absolute path is that path
        files.append(target.relative_to(root).as_posix() if target.is_relative_to(root) else target.as_posix())
    rows_of: dict[str, list[int]] = defaultdict(list)
    for (row, _), file in zip(given, files):
        rows_of[file].append(row)
    twice = [(rows, file) for file, rows in rows_of.items() if len(rows) > 1]
    if twice:
        shown = ", ".join(f"{file!r} (rows {', '.join(map(str, rows))})" for rows, file in twice[:SHOWN])
        raise DataError(f"{table.path}: files listed more than once ({len(twice)}): {shown}"
                        f"{', ...' if len(twice) > SHOWN else ''}")
    return files


def _splits(table: Table, subjects: list[str]) -> list[str]:
    """The ``split`` column, checked: a known split on every row, one split per subject.

    Raises:
        DataError: an empty or unknown split, or a subject whose files are in two splits.
    """
    given = [(row, record.get("split", "")) for row, record in table.records]
    unknown = [(row, value) for row, value in given if value.lower() not in SPLIT_NAMES]
    if unknown:
        raise DataError(f"{table.path}: rows without a known split ({len(unknown)}; splits are {', '.join(SPLITS)}, "
                        f"or training, validation, testing): {_listed(unknown)}; give every row one, or "
                        "remove the split column to split by subject")
    splits = [SPLIT_NAMES[value.lower()] for _, value in given]
    splits_of: dict[str, set[str]] = defaultdict(set)
    for subject, split in zip(subjects, splits):
        splits_of[subject].add(split)
    across = sorted(s for s, found in splits_of.items() if len(found) > 1)
    if across:
        shown = ", ".join(f"{s!r} ({', '.join(sorted(splits_of[s]))})" for s in across[:SHOWN])
        raise DataError(f"{table.path}: subjects with files in more than one split ({len(across)}): {shown}"
                        f"{', ...' if len(across) > SHOWN else ''}; a subject's files must share a split")
    return splits


def _modality(given: str, path: str, default: str | None) -> str:
    if given:
        return MODALITY_TOKENS.get(given.lower(), given)
    return default or guess_modality(Path(path).name)


def scan_table(
    table: str | Path,
    root: str | Path,
    path_column: str = "path",
    id_column: str | None = None,
    label_column: str | None = None,
    modality: str | None = None,
) -> list[ManifestRow]:
    """Rows for the files a table lists (see the module docstring for its columns).

    Args:
        table: the CSV or TSV file (TSV by a ``.tsv``/``.tab`` extension or a tab-separated header).
        root: the folder relative paths are read from.
        path_column: the column of paths.
        id_column: the column of subject ids; None: the first of :data:`ID_COLUMNS` present, or
            none (each file its own subject).
        label_column: the column of labels; None: ``label`` when present, or none (unlabelled).
        modality: the modality of rows without a ``modality`` cell; None guesses it from the file name.

    Returns:
        Rows in the table's order, ``split`` empty unless the table has a ``split`` column.

    Raises:
        DataError: a column named is not in the table (the message lists its columns); a file is
            missing, not a scan, or listed twice; a row has no subject; the splits are wrong
            (the message names how many rows, and the first few with their row numbers); ``root``
            is not a directory.
    """
    root = Path(os.path.normpath(Path(root).absolute()))
    listing = read_table(table, "table")
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (the folder the paths of {listing.path} are relative to)")
    path_col, id_col, label_col = _columns(listing, path_column, id_column, label_column)
    files = _files(listing, root, path_col)
    if id_col is None:
        subjects = [_strip_suffix(file) for file in files]  # no patient ids: each file its own subject
    else:
        subjects = [record.get(id_col, "") for _, record in listing.records]
        empty = [(row, file) for (row, _), file, s in zip(listing.records, files, subjects) if not s]
        if empty:
            raise DataError(f"{listing.path}: rows without a subject in column {id_col!r} ({len(empty)}): "
                            f"{_listed(empty)}")
    splits = _splits(listing, subjects) if "split" in listing.columns else [""] * len(files)
    return [ManifestRow(
        path=file,
        subject=subject,
        session=record.get("session", "").removeprefix("ses-"),
        modality=_modality(record.get("modality", ""), file, modality),
        label=record.get(label_col, "") if label_col else "",
        split=split,
    ) for (_, record), file, subject, split in zip(listing.records, files, subjects, splits)]
