"""A manifest with the same rows and splits as another, labelled from another column of a subject table.

    .venv/bin/python tools/relabel_manifest.py data_manifests/ixi_t1_185.csv \\
        --labels ../shared/data/ixi-t1-185/participants.csv --id-column MRID --column Age \\
        --bins 40,60 --out data_manifests/ixi_t1_185_age.csv

Keeps every row, path and split (so an encoder pretrained on one manifest's training subjects
is probed on the same subjects for the new label). A numeric column is cut into bins at the
given edges (``--bins 40,60`` -> ``<40``, ``40-59``, ``>=60``; a value equal to an edge goes to the
bin above). A subject missing from the table, or with an empty value, gets an empty label (the
probe leaves it out), and the count is printed.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def bin_label(value: float, edges: list[float]) -> str:
    """The bin of ``value``: ``<e0``, ``e0-(e1-1)``, ..., ``>=eN`` (edges ascending, integers in the names)."""
    if value < edges[0]:
        return f"<{edges[0]:g}"
    for low, high in zip(edges, edges[1:]):
        if value < high:
            return f"{low:g}-{high - 1:g}"
    return f">={edges[-1]:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--labels", type=Path, required=True, help="CSV/TSV with one row per subject")
    parser.add_argument("--id-column", required=True, help="the subject id column of --labels")
    parser.add_argument("--column", required=True, help="the column that becomes the label")
    parser.add_argument("--bins", help="comma-separated ascending edges for a numeric column")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    delimiter = "\t" if args.labels.suffix == ".tsv" else ","
    with args.labels.open(newline="") as f:
        table = list(csv.DictReader(f, delimiter=delimiter))
    for key in (args.id_column, args.column):
        if table and key not in table[0]:
            sys.exit(f"{args.labels}: no column {key!r} (columns: {', '.join(table[0])})")
    value_of = {row[args.id_column]: row[args.column].strip() for row in table}
    edges = sorted(float(e) for e in args.bins.split(",")) if args.bins else None

    with args.manifest.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    if not fields or "subject" not in fields or "label" not in fields:
        sys.exit(f"{args.manifest}: expected 'subject' and 'label' columns")
    missing = 0
    for i, row in enumerate(rows, start=2):
        value = value_of.get(row["subject"], "")
        if not value:
            missing += 1
            row["label"] = ""
            continue
        if edges is None:
            row["label"] = value
            continue
        try:
            row["label"] = bin_label(float(value), edges)
        except ValueError:
            sys.exit(f"{args.labels}: subject {row['subject']} (manifest row {i}): {args.column}={value!r} is not a number")
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        counts[row["split"], row["label"]] = counts.get((row["split"], row["label"]), 0) + 1
    print(f"wrote {args.out}: {len(rows)} rows, {missing} without a label")
    for (split, label), n in sorted(counts.items()):
        print(f"  {split:<6} {label or '(none)':<8} {n}")


if __name__ == "__main__":
    main()
