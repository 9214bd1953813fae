"""Label-fraction sampling: a stratified subset of the labelled training subjects.

The probe is trained on a fraction of the labelled training data to trace how much each
encoder helps when labels are scarce. The subset is drawn by subject (a subject's slices and
scans are either all in or all out, as they would be if only some subjects had been labelled),
stratified by label (each class keeps its share of subjects), and always holds at least one
item of every class so that every classifier sees every class.

A regression target has no classes: its subjects are stratified by quantile bin of their mean
target instead (:func:`sample_target_fraction`), so that even a small fraction spans the range of
the target rather than, by chance, only its middle.
"""

from __future__ import annotations

import math

import numpy as np

TARGET_BINS = 5  # quantile bins of a regression target: quintiles of the subjects' targets


def sample_label_fraction(
    labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    """Indices of the items of a stratified, subject-grouped ``fraction`` of the subjects.

    Each subject is assigned its most frequent label (ties go to the smallest); within each
    label, ``round(fraction * n_subjects)`` subjects are drawn, at least one. A label that is
    nobody's most frequent one is then covered by adding one subject that has it.

    Args:
        labels: class of each item.
        groups: subject of each item.
        fraction: share of subjects to keep, in (0, 1].
        seed: seeds the draw; the same seed gives the same subset.

    Returns:
        Sorted item indices.

    Raises:
        ValueError: ``fraction`` is outside (0, 1] or the inputs differ in length.

    Shape:
        labels, groups: (N,)  returns: (M,) with M <= N
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction {fraction} must be in (0, 1]")
    if labels.shape != groups.shape:
        raise ValueError(f"labels {labels.shape} and groups {groups.shape} differ in length")
    rng = np.random.default_rng(seed)
    subjects, subject_of_item = np.unique(groups, return_inverse=True)
    classes, class_of_item = np.unique(labels, return_inverse=True)
    counts = np.zeros((len(subjects), len(classes)), dtype=int)  # (S, K) items per subject and class
    np.add.at(counts, (subject_of_item, class_of_item), 1)
    primary = counts.argmax(axis=1)  # (S,) argmax takes the first (smallest) class on ties

    chosen = np.zeros(len(subjects), dtype=bool)
    # 1. Stratified draw: each class keeps its share of subjects, at least one.
    for c in range(len(classes)):
        members = np.flatnonzero(primary == c)
        if members.size == 0:
            continue
        n_take = min(members.size, max(1, math.floor(fraction * members.size + 0.5)))
        chosen[rng.choice(members, size=n_take, replace=False)] = True
    # 2. Coverage: a class that is no subject's majority may still be missing.
    for c in range(len(classes)):
        if not counts[chosen, c].any():
            candidates = np.flatnonzero(~chosen & (counts[:, c] > 0))
            chosen[rng.choice(candidates)] = True
    return np.flatnonzero(chosen[subject_of_item])


def target_bins(targets: np.ndarray, groups: np.ndarray, bins: int = TARGET_BINS) -> np.ndarray:
    """Each item's quantile bin of its subject's mean target, in ``[0, bins)``.

    The edges are the quantiles of the subjects' mean targets (one value per subject, however
    many items a subject has); subjects with equal targets share a bin, so a bin may be empty.

    Shape:
        targets, groups: (N,)  returns: (N,) int
    """
    if bins < 1:
        raise ValueError(f"bins={bins} must be positive")
    targets, groups = np.asarray(targets, dtype=float), np.asarray(groups)
    _, subject_of_item = np.unique(groups, return_inverse=True)
    subject_mean = np.bincount(subject_of_item, weights=targets) / np.bincount(subject_of_item)  # (S,)
    edges = np.quantile(subject_mean, np.linspace(0, 1, bins + 1)[1:-1])  # (bins - 1,) inner edges
    return np.searchsorted(edges, subject_mean, side="right")[subject_of_item]


def sample_target_fraction(
    targets: np.ndarray, groups: np.ndarray, fraction: float, seed: int, bins: int = TARGET_BINS
) -> np.ndarray:
    """Indices of the items of a subject-grouped ``fraction`` of the subjects, stratified by
    quantile bin of the target (:func:`target_bins`): at least one subject per bin.

    Shape:
        targets, groups: (N,)  returns: (M,) with M <= N
    """
    return sample_label_fraction(target_bins(targets, groups, bins), groups, fraction, seed)
