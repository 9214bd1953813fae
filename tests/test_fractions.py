"""Label-fraction sampling: stratified, subjects whole, deterministic, every class present."""

from __future__ import annotations

import numpy as np
import pytest

from mocomri.eval.fractions import sample_label_fraction, sample_target_fraction, target_bins


def _cohort(subjects_per_class: dict[int, int], items_per_subject: int = 3) -> tuple[np.ndarray, np.ndarray]:
    labels, groups = [], []
    for c, n in subjects_per_class.items():
        for s in range(n):
            labels += [c] * items_per_subject
            groups += [f"c{c}-s{s}"] * items_per_subject
    return np.array(labels), np.array(groups)


def test_sample_label_fraction__keeps_each_class_share_of_subjects() -> None:
    labels, groups = _cohort({0: 60, 1: 140, 2: 20})
    chosen = sample_label_fraction(labels, groups, 0.1, seed=0)
    subjects_per_class = {c: len(np.unique(groups[chosen][labels[chosen] == c])) for c in range(3)}
    assert subjects_per_class == {0: 6, 1: 14, 2: 2}


def test_sample_label_fraction__subjects_are_whole() -> None:
    labels, groups = _cohort({0: 30, 1: 30}, items_per_subject=5)
    chosen = sample_label_fraction(labels, groups, 0.3, seed=1)
    in_subset = np.zeros(len(labels), dtype=bool)
    in_subset[chosen] = True
    for g in np.unique(groups):
        assert in_subset[groups == g].all() or not in_subset[groups == g].any(), g


def test_sample_label_fraction__same_seed_same_subset_other_seed_other_subset() -> None:
    labels, groups = _cohort({0: 50, 1: 50})
    a = sample_label_fraction(labels, groups, 0.2, seed=7)
    b = sample_label_fraction(labels, groups, 0.2, seed=7)
    c = sample_label_fraction(labels, groups, 0.2, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sample_label_fraction__tiny_fraction_keeps_one_subject_per_class() -> None:
    labels, groups = _cohort({0: 100, 1: 100, 2: 100, 3: 5})
    chosen = sample_label_fraction(labels, groups, 0.001, seed=0)
    assert set(labels[chosen]) == {0, 1, 2, 3}
    assert len(np.unique(groups[chosen])) == 4


def test_sample_label_fraction__covers_a_class_that_is_no_subjects_majority() -> None:
    # class 2 appears only as one item inside subjects whose majority is class 0
    labels = np.array([0, 0, 2, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    groups = np.array(["a", "a", "a", "b", "b", "b", "c", "c", "c", "d", "d", "d"])
    for seed in range(5):
        chosen = sample_label_fraction(labels, groups, 0.5, seed=seed)
        assert set(labels[chosen]) == {0, 1, 2}


def test_sample_label_fraction__full_fraction_keeps_everything() -> None:
    labels, groups = _cohort({0: 7, 1: 3})
    np.testing.assert_array_equal(sample_label_fraction(labels, groups, 1.0, seed=0), np.arange(len(labels)))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_sample_label_fraction__rejects_fraction_outside_unit_interval(fraction: float) -> None:
    labels, groups = _cohort({0: 2, 1: 2})
    with pytest.raises(ValueError, match=f"label fraction {fraction} must be in"):
        sample_label_fraction(labels, groups, fraction, seed=0)


def test_target_bins__quintiles_of_the_subjects_mean_targets() -> None:
    targets = np.repeat(np.arange(10.0), 3)  # 10 subjects, 3 items each, targets 0..9
    groups = np.repeat(np.arange(10), 3)
    bins = target_bins(targets, groups)
    np.testing.assert_array_equal(bins, np.repeat([0, 0, 1, 1, 2, 2, 3, 3, 4, 4], 3))


def test_sample_target_fraction__spans_the_target_range_with_whole_subjects() -> None:
    rng = np.random.default_rng(0)
    subject_target = rng.uniform(20, 80, size=50)
    groups = np.repeat(np.arange(50), 4)
    targets = subject_target[groups]
    for seed in range(5):
        chosen = sample_target_fraction(targets, groups, 0.1, seed)
        picked = np.unique(groups[chosen])
        assert len(picked) == 5  # one subject per quintile
        np.testing.assert_array_equal(np.sort(chosen), np.flatnonzero(np.isin(groups, picked)))
        quintile = np.searchsorted(np.quantile(subject_target, [0.2, 0.4, 0.6, 0.8]), subject_target[picked])
        assert sorted(quintile) == [0, 1, 2, 3, 4]
