"""The README's "Your own data" recipes, run as written on the synthetic cohort exported in each shape.

The commands are read from README.md itself, so a recipe that stops working fails here. The only
change to them: pretraining stops after a few steps (``train.max_steps``), and runs from a
directory without ``configs/``, so the shipped configs are found installed with the package.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mocomri.cli import main
from mocomri.data.manifest import read_manifest
from mocomri.data.synthetic import make_cohort

README = Path(__file__).resolve().parents[1] / "README.md"
SHAPE = (32, 32, 24)


def _recipes() -> dict[str, list[list[str]]]:
    """The section's bash blocks, keyed by the folder their first command reads."""
    text = README.read_text()
    section = text[text.index("### Your own data"):]
    section = re.split(r"\n##+ ", section[4:], maxsplit=1)[0]  # up to the next heading
    recipes = {}
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        commands = [shlex.split(line) for line in block.strip().splitlines() if line.strip()]
        assert all(c[0] == "mocomri" for c in commands), block
        folder = next(a for a in commands[0] if a.startswith("my_")).split("/")[0]
        recipes[folder] = [c[1:] for c in commands]
    return recipes


def _run(commands: list[list[str]]) -> None:
    for args in commands:
        if args[0] == "pretrain":
            args = [*args, "train.max_steps=2", "log.knn_max_items=50"]
        assert main(args) == 0, args


def _bids(root: Path) -> None:
    """The synthetic cohort as BIDS with T1w and T2w, its participants.tsv with a diagnosis column."""
    make_cohort(root, subjects=24, modalities=("T1w", "T2w"), shape=SHAPE, seed=2)
    with open(root / "participants.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    with open(root / "participants.tsv", "w") as f:
        f.write("participant_id\tdiagnosis\tnodule_ml\n")
        f.writelines(f"{r['participant_id']}\t{r['label']}\t{r['nodule_ml']}\n" for r in rows)


def _png_slices(root: Path, source: Path) -> dict[str, str]:
    """Ten axial slices of each synthetic T1w as 8-bit PNGs, and labels.csv (file, patient, diagnosis)."""
    with open(source / "participants.tsv") as f:
        labels = {r["participant_id"]: r["diagnosis"] for r in csv.DictReader(f, delimiter="\t")}
    rows = []
    for patient, diagnosis in labels.items():
        volume = np.asarray(nib.load(source / patient / "anat" / f"{patient}_T1w.nii.gz").dataobj, dtype=np.float64)
        (root / patient).mkdir(parents=True)
        for k in range(7, 17):
            image = volume[:, :, k]
            image = (255 * (image - image.min()) / max(np.ptp(image), 1e-6)).astype(np.uint8)
            Image.fromarray(image).save(root / patient / f"slice{k}.png")
            rows.append((f"{patient}/slice{k}.png", patient, diagnosis))
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("file", "patient", "diagnosis"), *rows])
    return labels


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("readme")
    _bids(work / "my_bids")
    _png_slices(work / "my_slices", work / "my_bids")
    return work


def test_readme__has_both_recipes() -> None:
    assert set(_recipes()) == {"my_bids", "my_slices"}


@pytest.mark.parametrize("folder", ["my_bids", "my_slices"])
def test_readme__recipe_runs_as_written(folder: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    _run(_recipes()[folder])
    manifest = read_manifest(workdir / folder / "manifest.csv")
    subjects_by_split = {s: {r.subject for r in manifest.rows if r.split == s} for s in ("train", "val", "test")}
    assert not subjects_by_split["train"] & subjects_by_split["test"]  # split by patient
    assert {r.label for r in manifest.rows if r.label} == {"heterotopia", "healthy"}
    if folder == "my_bids":
        assert {r.modality for r in manifest.rows} == {"T1w"}  # --suffix T1w left the T2w files out
        assert len(manifest.rows) == 24
    else:
        assert len(manifest.rows) == 24 * 10 and len({r.subject for r in manifest.rows}) == 24
    run = workdir / "runs" / folder
    assert (run / "encoder.pt").is_file()
    metrics = json.loads((run / "probe" / "metrics.json").read_text())
    assert {"moco", "random_init", "raw_pixels"} <= set(metrics["methods"])
    for fraction in ("0.01", "0.1", "1.0"):  # the probe's default label fractions, each scored
        assert 0.0 <= metrics["methods"]["moco"][fraction]["accuracy"]["mean"] <= 1.0
