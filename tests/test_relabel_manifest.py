"""tools/relabel_manifest.py: same rows and splits, labels from another column, numeric bins."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from tools.relabel_manifest import bin_label

REPO = Path(__file__).resolve().parents[1]


def test_bin_label__edges_go_to_the_bin_above():
    edges = [40.0, 60.0]
    assert [bin_label(v, edges) for v in (20.3, 39.99, 40.0, 59.9, 60.0, 82.0)] == [
        "<40", "<40", "40-59", "40-59", ">=60", ">=60"]


def test_relabel__keeps_rows_and_splits_and_blanks_subjects_without_a_value(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,subject,label,split\na.nii.gz,S1,M,train\nb.nii.gz,S2,F,test\nc.nii.gz,S3,F,val\n")
    table = tmp_path / "participants.csv"
    table.write_text("MRID,Age,Sex\nS1,38.5,M\nS2,61,F\n")
    out = tmp_path / "age.csv"
    subprocess.run([sys.executable, str(REPO / "tools" / "relabel_manifest.py"), str(manifest), "--labels", str(table),
                    "--id-column", "MRID", "--column", "Age", "--bins", "40,60", "--out", str(out)], check=True,
                   capture_output=True)
    rows = list(csv.DictReader(out.open()))
    assert [(r["path"], r["subject"], r["label"], r["split"]) for r in rows] == [
        ("a.nii.gz", "S1", "<40", "train"), ("b.nii.gz", "S2", ">=60", "test"), ("c.nii.gz", "S3", "", "val")]
