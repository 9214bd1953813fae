"""Tests for ``mocomri views``: the PNG grid of augmented view pairs."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mocomri.cli import main as cli_main
from mocomri.data.manifest import Manifest, assign_splits, scan_bids, write_manifest
from mocomri.data.synthetic import make_cohort


def test_views_command__writes_a_grid_of_view_pairs(tmp_path, capsys):
    root = make_cohort(tmp_path / "bids", subjects=2, modalities=["T1w"], shape=(24, 24, 16), seed=0)
    write_manifest(Manifest(root, assign_splits(scan_bids(root), test_fraction=0, val_fraction=0)), tmp_path / "m.csv")
    out = tmp_path / "grid.png"
    code = cli_main(["views", "--manifest", str(tmp_path / "m.csv"), "--out", str(out), "--items", "3",
                     "--pairs", "1", f"data.cache_dir={tmp_path / 'cache'}", "data.image_size=32"])
    assert code == 0
    assert "3 items x 1 view pairs" in capsys.readouterr().out
    pixels = np.asarray(Image.open(out).convert("L"))
    assert pixels.shape[0] > 200 and pixels.std() > 10  # a picture, not a blank page


def test_views_command__unknown_override_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("path,subject\nx.png,s\n")
    code = cli_main(["views", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "g.png"),
                     "augment.base.sparkle=1"])
    assert code == 2
    assert "augment.base.sparkle" in capsys.readouterr().err
