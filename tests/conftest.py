"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def labelled_manifest(tmp_path_factory) -> Path:
    """A small labelled synthetic cohort (16 subjects, T1w, 32x32x24) and its manifest, split by
    subject with 30 % test: for the commands that pretrain and probe (ablate, crossfit)."""
    from mocomri.cli import main as cli_main
    from mocomri.data.synthetic import make_cohort

    root = tmp_path_factory.mktemp("cohort")
    make_cohort(root, subjects=16, modalities=["T1w"], shape=(32, 32, 24), seed=1)
    manifest = root / "manifest.csv"
    assert cli_main(["manifest", "--root", str(root), "--out", str(manifest), "--test-fraction", "0.3"]) == 0
    return manifest
