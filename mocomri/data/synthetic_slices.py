"""The synthetic cohort exported the way public 2D slice sets are published: ground truth for pseudo-subjects.

Public slice sets (Kaggle-style exports of OASIS, BraTS, figshare) are folders of JPEG/PNG slices
in class folders, often already cut into ``train/`` and ``test/`` by image, with no patient ids:
a patient contributes a run of adjacent slices, some of them saved twice (re-encoded, resized).
Such a set cannot tell who is who, and :func:`mocomri.data.manifest.build_manifest` has to
recover pseudo-subjects from the images alone. This module writes the synthetic cohort
(:mod:`mocomri.data.synthetic`) in that shape, and keeps what the export hides, each file's
subject, slice and original, in a truth table beside it, so the recovery can be scored
(:func:`score_grouping`).

Layout::

    out/train/<label>/<name>.jpg     # names carry no subject id
    out/test/<label>/<name>.jpg      # the set's own split, made by image (it leaks patients)
    out/truth.csv                    # path, subject, slice, copy_of  (not read by the scanners)
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from mocomri.data.synthetic import make_subject

TRUTH_FILE = "truth.csv"


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Windowed to 0-255 as exporters do: the 0.5th-99.5th percentiles of the slice."""
    lo, hi = np.percentile(image, (0.5, 99.5))
    return np.uint8(np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1) * 255)


def make_slice_set(
    out: str | Path,
    subjects: int = 120,
    slices_per_subject: tuple[int, int] = (12, 30),
    copy_share: float = 0.15,
    test_share: float = 0.2,
    shape: tuple[int, int, int] = (64, 64, 96),
    size: int = 128,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Writes the synthetic cohort as a published 2D slice set, and its truth table.

    Each subject gives a run of adjacent axial T1w slices from the middle of the head (1.5 mm apart
    at the default shape, as thin as published sets cut them), upsampled to ``size`` pixels and saved as JPEG under its class folder.
    A ``copy_share`` of the slices is saved a second time, re-encoded at a lower JPEG quality or
    resized, as exports often hold. Each file goes to ``train/`` or ``test/`` at random (by image,
    as published sets do), and gets a random name.

    Args:
        out: the folder to write.
        subjects: number of subjects (half with heterotopia).
        slices_per_subject: the fewest and most adjacent slices a subject gives.
        copy_share: the share of slices saved twice.
        test_share: the share of files put in ``test/``.
        shape: the phantom's voxels (see :func:`mocomri.data.synthetic.make_cohort`).
        size: the side of the exported images, in pixels.
        seed: the set's seed.
        progress: show a tqdm bar.

    Returns:
        ``out``.

    Raises:
        ValueError: fewer than 2 subjects, or a slice range outside the head.
    """
    low, high = slices_per_subject
    if subjects < 2:
        raise ValueError(f"subjects={subjects} must be at least 2")
    if not 1 <= low <= high <= shape[2] // 2:
        raise ValueError(f"slices_per_subject={slices_per_subject} must be 1 <= low <= high <= {shape[2] // 2}")
    out = Path(out)
    rng = np.random.default_rng([seed, 7])
    drawn = np.random.default_rng(seed).permutation(np.arange(subjects) % 2)
    files: list[tuple[Image.Image, str, str, int, int]] = []  # image, label, subject, slice, copy_of (-1: none)
    for index in tqdm(range(subjects), desc="synth slices", unit="subject", disable=not progress):
        images, _, _ = make_subject(seed, index, bool(drawn[index]), ("T1w",), shape)
        volume = images["T1w"]  # (X, Y, Z), RAS
        label = "heterotopia" if drawn[index] else "healthy"
        n = int(rng.integers(low, high + 1))
        first = int(rng.integers(shape[2] // 4, shape[2] * 3 // 4 - n + 1))
        for z in range(first, first + n):
            # Displayed as radiologists do: anterior up, the patient's left on the image's right.
            pixels = _to_uint8(np.rot90(volume[:, :, z]).astype(np.float32))
            image = Image.fromarray(pixels).resize((size, size), Image.BILINEAR)
            files.append((image, label, f"subject-{index + 1:04d}", z, -1))
            if rng.random() < copy_share:
                if rng.random() < 0.5:  # re-encoded at a lower quality
                    buffer = io.BytesIO()
                    image.save(buffer, format="JPEG", quality=60)
                    copy = Image.open(io.BytesIO(buffer.getvalue())).convert("L")
                else:  # resized, as a second export at another resolution
                    side = int(size * rng.choice([0.75, 1.25]))
                    copy = image.resize((side, side), Image.BILINEAR)
                files.append((copy, label, f"subject-{index + 1:04d}", z, len(files) - 1))
    order = rng.permutation(len(files))  # names in a random order: a name says nothing of its subject
    name_of = {int(i): f"img_{rank:06d}.jpg" for rank, i in enumerate(order)}
    truth = []
    for i, (image, label, subject, z, copy_of) in enumerate(files):
        split = "test" if rng.random() < test_share else "train"
        path = Path(split) / label / name_of[i]
        (out / path.parent).mkdir(parents=True, exist_ok=True)
        image.save(out / path, format="JPEG", quality=92)
        truth.append((path.as_posix(), subject, z, copy_of))
    with open(out / TRUTH_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "subject", "slice", "copy_of"])
        for path, subject, z, copy_of in truth:
            writer.writerow([path, subject, z, truth[copy_of][0] if copy_of >= 0 else ""])
    return out


@dataclass
class GroupingScores:
    """How well groups recover the subjects of a slice set.

    Attributes:
        adjacent_recall: share of same-subject pairs of adjacent slices that share a group.
        copy_recall: share of (original, copy) pairs that share a group.
        precision: share of the pairs of files grouped together that are one subject.
        largest_share: the largest group's share of the files.
        groups: the number of groups (singletons included).
        subjects: the number of true subjects.
    """

    adjacent_recall: float
    copy_recall: float
    precision: float
    largest_share: float
    groups: int
    subjects: int

    def __str__(self) -> str:
        return (f"adjacent-slice recall {self.adjacent_recall:.1%}, copy recall {self.copy_recall:.1%}, "
                f"precision {self.precision:.1%}, largest group {self.largest_share:.1%} of the files, "
                f"{self.groups} groups for {self.subjects} subjects")


def read_truth(root: str | Path) -> list[dict[str, str]]:
    """The truth table of a set written by :func:`make_slice_set`, one dict per file."""
    with open(Path(root) / TRUTH_FILE, newline="") as f:
        return list(csv.DictReader(f))


def score_grouping(group_of: dict[str, object], truth: list[dict[str, str]]) -> GroupingScores:
    """Scores pseudo-subject groups against the truth table.

    Args:
        group_of: each file's group (path relative to the set's root -> any hashable group id);
            files missing from it (dropped by the audit) are left out of every count.
        truth: :func:`read_truth`'s rows.
    """
    rows = [r for r in truth if r["path"] in group_of]
    group = {r["path"]: group_of[r["path"]] for r in rows}
    originals = {(r["subject"], int(r["slice"])): r["path"] for r in rows if not r["copy_of"]}
    adjacent = [(path, originals[(s, z + 1)]) for (s, z), path in originals.items() if (s, z + 1) in originals]
    copies = [(r["path"], r["copy_of"]) for r in rows if r["copy_of"] and r["copy_of"] in group]
    pairs_in_groups = sum(n * (n - 1) // 2 for n in Counter(group.values()).values())
    same = Counter((group[r["path"]], r["subject"]) for r in rows)
    same_subject_pairs = sum(n * (n - 1) // 2 for n in same.values())
    sizes = Counter(group.values())
    return GroupingScores(
        adjacent_recall=float(np.mean([group[a] == group[b] for a, b in adjacent])) if adjacent else float("nan"),
        copy_recall=float(np.mean([group[a] == group[b] for a, b in copies])) if copies else float("nan"),
        precision=same_subject_pairs / pairs_in_groups if pairs_in_groups else 1.0,
        largest_share=max(sizes.values()) / len(rows) if rows else 0.0,
        groups=len(sizes),
        subjects=len({r["subject"] for r in rows}),
    )
