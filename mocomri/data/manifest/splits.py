"""Subject-level splits: every row of a subject lands in the same split, never image by image.

Where each label has enough subjects the split is stratified by label (scikit-learn's
``StratifiedGroupKFold``, taking one fold); otherwise it falls back to ``GroupShuffleSplit``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mocomri.data.manifest.schema import ManifestRow


def carve_by_subject(rows: list[ManifestRow], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Splits row indices into (kept, carved) with about ``fraction`` of the subjects carved.

    Args:
        rows: the rows to split.
        fraction: the share of subjects to carve out, in (0, 1).
        seed: the shuffling seed.

    Returns:
        Two lists of indices into ``rows``; no subject appears in both.
    """
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction={fraction} must be in (0, 1)")
    index = np.arange(len(rows))
    groups = np.array([r.subject for r in rows])
    labels = np.array([r.label for r in rows])
    n_subjects = len(set(groups))
    if n_subjects < 2:
        return list(index), []
    n_splits = min(max(2, round(1.0 / fraction)), n_subjects)
    subject_label = {}
    for subject, label in zip(groups, labels):
        subject_label.setdefault(subject, label)
    per_label = np.unique(list(subject_label.values()), return_counts=True)[1]
    if all(labels) and len(per_label) > 1 and per_label.min() >= n_splits:
        # 1. stratified: one of n_splits folds, with the label mix of the whole
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        kept, carved = next(folds.split(index, labels, groups))
    else:
        # 2. too few subjects per label (or no labels): random subjects
        shuffle = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        kept, carved = next(shuffle.split(index, groups=groups))
    return sorted(int(i) for i in kept), sorted(int(i) for i in carved)


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
                split_of.update({pending[j]: "test" for j in test})
            if val_fraction > 0 and rest:
                share = val_fraction / (1.0 - test_fraction)
                _, val = carve_by_subject([sub[j] for j in rest], min(share, 0.5), seed + 1)
                split_of.update({pending[rest[j]]: "val" for j in val})
            for i, split in split_of.items():
                out[i] = replace(rows[i], split=split)
    if carve_val_from_train and val_fraction > 0:
        train = [i for i, r in enumerate(out) if r.split == "train"]
        _, val = carve_by_subject([out[i] for i in train], val_fraction, seed + 2)
        for j in val:
            out[train[j]] = replace(out[train[j]], split="val")
    return out
