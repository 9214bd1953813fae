"""A user's own tables (CSV or TSV): reading them, naming their columns, and label tables.

Two kinds of table come from outside: a label table (``--labels``: one row per subject, an id
and a label, matched to the files a scanner found) and a listing (``--table``: one row per file,
see :mod:`.listing`). Both are read here so that they accept the same files: the delimiter from
the extension (``.tsv``/``.tab``) or the header line, an Excel byte-order mark, and a missing
column is an error that lists the columns the table has.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from mocomri.errors import DataError

SHOWN = 3  # examples named in a one-line error


@dataclass
class Table:
    """A CSV/TSV table: its file, its header, and its records with their row numbers.

    Attributes:
        path: the file.
        columns: the header, in order.
        records: ``(row, record)``: the record's row in the file (the header is row 1, as a
            spreadsheet numbers it), and its cells by column, stripped (missing cells are absent).
    """

    path: Path
    columns: list[str]
    records: list[tuple[int, dict[str, str]]]

    def require(self, column: str, flag: str) -> str:
        """``column``, or a DataError listing the table's columns (``flag`` says which option named it)."""
        if column not in self.columns:
            raise DataError(f"{self.path}: no column {column!r} ({flag}); its columns are {', '.join(self.columns)}")
        return column

    def first_of(self, names: tuple[str, ...]) -> str | None:
        """The first of ``names`` that is a column of the table, or None."""
        return next((n for n in names if n in self.columns), None)


class LabelTable(dict):
    """Subject id -> label, remembering the file it came from (for error messages)."""

    def __init__(self, labels: dict[str, str], source: str) -> None:
        super().__init__(labels)
        self.source = source


def _delimiter(path: Path, header: str) -> str:
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    return "\t" if "\t" in header and "," not in header else ","  # a TSV saved as .csv


def read_table(path: str | Path, what: str = "table") -> Table:
    """Reads a CSV or TSV table with a header line.

    Args:
        path: the file.
        what: what the table is, for the not-found message.

    Raises:
        DataError: the file is missing or has no header.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel writes a byte-order mark
        header = f.readline()
        if not header.strip():
            raise DataError(f"{path}: empty {what} (expected a header line naming its columns)")
        f.seek(0)
        reader = csv.reader(f, delimiter=_delimiter(path, header))
        columns = [c.strip() for c in next(reader)]
        records = [(reader.line_num, {c: v.strip() for c, v in zip(columns, cells)}) for cells in reader if cells]
    return Table(path, columns, records)


def read_label_table(path: str | Path, id_column: str | None, label_column: str) -> LabelTable:
    """Reads ``id -> label`` from a CSV or TSV.

    Ids lose a leading ``sub-`` (BIDS ``participant_id``), so they match the subjects scanners give.

    Args:
        path: the table.
        id_column: the subject id column; None tries ``participant_id``, ``subject``, then the
            first column.
        label_column: the column holding the label.

    Raises:
        DataError: the file or a column is missing, or an id has two different labels.
    """
    table = read_table(path, "label table")
    if id_column is None:
        id_column = table.first_of(("participant_id", "subject")) or table.columns[0]
    table.require(id_column, "--id-column")
    table.require(label_column, "--label-column")
    labels: dict[str, str] = {}
    row_of: dict[str, int] = {}
    for row, record in table.records:
        key = record.get(id_column, "").removeprefix("sub-")
        if not key:
            continue
        label = record.get(label_column, "")
        if key in labels and labels[key] != label:
            raise DataError(f"{table.path}: id {key!r} has two labels, {labels[key]!r} (row {row_of[key]}) "
                            f"and {label!r} (row {row})")
        labels[key], row_of[key] = label, row
    return LabelTable(labels, str(table.path))


def check_ids_matched(labels: dict[str, str], matched: set[str], where: str, how: str) -> None:
    """Raises DataError when ids of a label table match nothing in the data.

    A table that matches nothing would otherwise leave every row unlabelled without a word.

    Args:
        labels: the table (a :class:`LabelTable` names its file in the message).
        matched: the ids that matched.
        where: what they were matched against, e.g. ``"file under /data"``.
        how: how an id matches, for the message.
    """
    unmatched = sorted(set(labels) - matched)
    if unmatched:
        source = labels.source if isinstance(labels, LabelTable) else "the label table"
        examples = ", ".join(repr(i) for i in unmatched[:SHOWN])
        raise DataError(f"{source}: {len(unmatched)} of {len(labels)} ids match no {where} (e.g. {examples}); {how}")
