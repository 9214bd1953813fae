"""Subject-level splits: every row of a subject lands in the same split, never image by image.

A split is carved per label, by subject, to a share of the *files*: scikit-learn's group
splitters (``GroupShuffleSplit``, ``StratifiedGroupKFold``) take a share of the groups or balance
folds, and on a set whose subjects hold very different numbers of files (pseudo-subjects of
exported slices) a share of the subjects can be a share of the files far from the one asked.
The split made is then checked: each carved split within :data:`SHARE_TOLERANCE` of its share
(plus half a typical subject per label, the rounding whole subjects force on a small set), and
holding every label that has enough subjects for it, or :class:`SplitError` says why.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import replace

import numpy as np

from mocomri.data.manifest.schema import ManifestRow
from mocomri.errors import DataError

SHARE_TOLERANCE = 0.05  # a carved split may miss its requested share of the files by this much


class SplitError(DataError):
    """A split cannot hold what was asked: its share of the files, or a label."""


def _subjects(rows: list[ManifestRow]) -> dict[str, list[int]]:
    members: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        members[row.subject].append(i)
    return members


def _label_of(rows: list[ManifestRow], index: list[int]) -> str:
    """A subject's label: the most common among its rows (pseudo-subjects may mix)."""
    return Counter(rows[i].label for i in index).most_common(1)[0][0]


def carve_by_subject(rows: list[ManifestRow], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Splits row indices into (kept, carved), about ``fraction`` of the files of each label carved.

    Labels with at least ``1 / fraction`` subjects are carved each on its own (stratified); the
    subjects of rarer labels are pooled and carved together. In each stratum the subjects, in a
    seeded random order, are carved one by one while that brings the carved files no further from
    ``fraction`` of the stratum's files; a label with enough subjects always gets one carved, and
    every stratum keeps one.

    Args:
        rows: the rows to split.
        fraction: the share of files to carve out, in (0, 1).
        seed: the shuffling seed.

    Returns:
        Two lists of indices into ``rows``; no subject appears in both.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction={fraction} must be in (0, 1)")
    subjects = _subjects(rows)
    strata: dict[str, list[str]] = defaultdict(list)
    for subject, index in subjects.items():
        strata[_label_of(rows, index)].append(subject)
    rare = [label for label, names in strata.items() if len(names) < 1.0 / fraction]
    if len(rare) > 1:  # pooled, so that together they still give the split a share of their files
        strata[None] = [name for label in rare for name in strata.pop(label)]  # type: ignore[index]
    rng = np.random.default_rng(seed)
    carved: list[int] = []
    for key in sorted(strata, key=str):
        names = sorted(strata[key])
        if len(names) < 2:
            continue
        order = [names[i] for i in rng.permutation(len(names))]
        target = fraction * sum(len(subjects[s]) for s in names)
        taken, files = [], 0
        for name in order[:-1]:  # the last subject always stays: a stratum is never carved whole
            size = len(subjects[name])
            if abs(files + size - target) <= abs(files - target):
                taken.append(name)
                files += size
        if not taken and len(names) >= 1.0 / fraction:
            taken.append(min(order[:-1], key=lambda s: len(subjects[s])))
        carved += [i for name in taken for i in subjects[name]]
    carved_set = set(carved)
    return [i for i in range(len(rows)) if i not in carved_set], sorted(carved)


def check_split(rows: list[ManifestRow], carved: list[int], fraction: float, name: str, of: str = "the files") -> None:
    """Raises :class:`SplitError` when ``carved`` misses ``fraction`` of ``rows`` or a label it could hold.

    Args:
        rows: the rows split.
        carved: the indices carved into split ``name``.
        fraction: the share of files asked for.
        name: the split's name, for the message.
        of: what ``rows`` are, for the message.
    """
    share = len(carved) / max(len(rows), 1)
    subjects = _subjects(rows)
    # Whole subjects cannot hit a share exactly: each label may round by half a typical subject.
    n_labels = len({r.label for r in rows})
    rounding = n_labels * float(np.median([len(index) for index in subjects.values()])) / (2 * max(len(rows), 1))
    if abs(share - fraction) > SHARE_TOLERANCE + rounding:
        largest = max(subjects.values(), key=len)
        raise SplitError(
            f"the {name} split holds {share:.1%} of {of} ({len(carved)} of {len(rows)}), asked {fraction:.0%}: "
            f"the subjects are too few or too uneven to carve it (the largest, {rows[largest[0]].subject!r}, "
            f"holds {len(largest)} files); give patient ids, lower the near-duplicate threshold, or change the share"
        )
    per_label = Counter(_label_of(rows, index) for index in subjects.values())
    present = {rows[i].label for i in carved}
    missing = sorted(label for label, n in per_label.items()
                     if label and label not in present and n >= math.ceil(1.0 / fraction))
    if missing:
        raise SplitError(
            f"the {name} split holds no {', '.join(repr(m) for m in missing)} although "
            f"{', '.join(str(per_label[m]) for m in missing)} subjects have it: check that label's subjects "
            "(one subject holding most of its files?) or give patient ids"
        )


def assign_splits(
    rows: list[ManifestRow],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    carve_val_from_train: bool = False,
) -> list[ManifestRow]:
    """Fills the ``split`` column by subject.

    Rows that already have a split (from ``Training/``/``Testing/`` folders) keep it; with
    ``carve_val_from_train`` a ``val`` share of the train subjects moves to val. Rows without a
    split become train/val/test when any row has a label, ``unlabeled`` otherwise.

    Args:
        rows: scanned rows (``split`` may be empty).
        val_fraction: share of subjects for val (of the train subjects when carving).
        test_fraction: share of subjects for test (new splits only).
        seed: the shuffling seed.
        carve_val_from_train: carve val out of existing train rows.

    Returns:
        New rows (the input is not modified), in the input order.

    Raises:
        SplitError: a carved split misses its share of the files by more than
            :data:`SHARE_TOLERANCE`, or a label with enough subjects for it.
    """
    out = list(rows)
    pending = [i for i, r in enumerate(rows) if not r.split]
    if pending:
        sub = [rows[i] for i in pending]
        if not any(r.label for r in sub):
            for i in pending:
                out[i] = replace(rows[i], split="unlabeled")
        else:
            split_of = {i: "train" for i in pending}
            rest = list(range(len(sub)))
            if test_fraction > 0:
                rest, test = carve_by_subject(sub, test_fraction, seed)
                check_split(sub, test, test_fraction, "test")
                split_of.update({pending[j]: "test" for j in test})
            if val_fraction > 0 and rest:
                share = min(val_fraction / (1.0 - test_fraction), 0.5)
                _, val = carve_by_subject([sub[j] for j in rest], share, seed + 1)
                check_split([sub[j] for j in rest], val, share, "val", of="the files left after test")
                split_of.update({pending[rest[j]]: "val" for j in val})
            for i, split in split_of.items():
                out[i] = replace(rows[i], split=split)
    if carve_val_from_train and val_fraction > 0:
        train = [i for i, r in enumerate(out) if r.split == "train"]
        _, val = carve_by_subject([out[i] for i in train], val_fraction, seed + 2)
        check_split([out[i] for i in train], val, val_fraction, "val", of="the train files")
        for j in val:
            out[train[j]] = replace(out[train[j]], split="val")
    return out
