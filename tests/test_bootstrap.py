"""Bootstrap intervals: coverage and width against the binomial normal approximation."""

from __future__ import annotations

import numpy as np
import pytest

from mocomri.eval.bootstrap import bootstrap_difference, bootstrap_metrics, percentile_interval, resample_weights

Z95 = 1.959964


def _proportion_predictions(n_correct: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-class predictions of which exactly ``n_correct`` are right."""
    y = np.zeros(n, dtype=int)
    proba = np.tile([0.9, 0.1], (n, 1))
    proba[n_correct:] = [0.1, 0.9]  # the rest predicted as class 1
    return y, proba


def test_bootstrap_metrics__accuracy_ci_covers_known_proportion_with_binomial_width() -> None:
    n, p = 400, 0.8
    y, proba = _proportion_predictions(int(p * n), n)
    low, high = bootstrap_metrics(y, proba, n_boot=4000, seed=0)["accuracy"]
    assert low < p < high
    expected_width = 2 * Z95 * np.sqrt(p * (1 - p) / n)  # normal approximation, ~0.078
    assert high - low == pytest.approx(expected_width, rel=0.12)


def test_bootstrap_metrics__grouped_width_follows_number_of_groups() -> None:
    # 40 subjects x 10 items, an outcome shared by all items of a subject: the effective sample
    # size is 40, not 400, and the cluster bootstrap must be as wide as a binomial with n=40.
    groups = np.repeat(np.arange(40), 10)
    y = np.zeros(400, dtype=int)
    proba = np.where((groups < 20)[:, None], [0.9, 0.1], [0.1, 0.9])
    low, high = bootstrap_metrics(y, proba, groups=groups, n_boot=4000, seed=1)["accuracy"]
    expected_width = 2 * Z95 * np.sqrt(0.25 / 40)  # ~0.31
    assert high - low == pytest.approx(expected_width, rel=0.15)
    naive_low, naive_high = bootstrap_metrics(y, proba, n_boot=4000, seed=1)["accuracy"]
    assert naive_high - naive_low < 0.5 * (high - low)


def test_resample_weights__rows_sum_to_n_and_groups_move_together() -> None:
    rng = np.random.default_rng(0)
    w = resample_weights(50, 30, rng)
    assert w.shape == (30, 50)
    assert np.all(w.sum(axis=1) == 50)
    groups = np.repeat(["a", "b", "c", "d", "e"], 4)
    wg = resample_weights(20, 30, rng, groups=groups)
    for g in np.unique(groups):
        block = wg[:, groups == g]
        assert np.all(block == block[:, :1])  # one multiplicity per subject


def test_bootstrap_metrics__same_seed_same_interval() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 100)
    proba = rng.dirichlet(np.ones(3), size=100)
    a = bootstrap_metrics(y, proba, n_boot=300, seed=3)
    b = bootstrap_metrics(y, proba, n_boot=300, seed=3)
    c = bootstrap_metrics(y, proba, n_boot=300, seed=4)
    assert a == b
    assert a != c


def test_percentile_interval__rejects_bad_confidence() -> None:
    with pytest.raises(ValueError, match="confidence=1.5"):
        percentile_interval(np.arange(10.0), confidence=1.5)


def test_bootstrap_metrics__rejects_zero_resamples() -> None:
    y, proba = _proportion_predictions(5, 10)
    with pytest.raises(ValueError, match="n_boot=0"):
        bootstrap_metrics(y, proba, n_boot=0)


def test_bootstrap_metrics__stack_gives_the_interval_of_the_mean_over_classifiers() -> None:
    # One classifier right on every item, one wrong on every item: whatever items a resample
    # draws, their mean accuracy is exactly 0.5, so the interval of the mean is [0.5, 0.5].
    y = np.zeros(60, dtype=int)
    right = np.tile([0.9, 0.1], (60, 1))
    wrong = right[:, ::-1]
    low, high = bootstrap_metrics(y, np.stack([right, wrong]), n_boot=500, seed=0)["accuracy"]
    assert (low, high) == pytest.approx((0.5, 0.5))


def test_bootstrap_metrics__stack_of_one_equals_the_single_classifier() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 80)
    proba = rng.dirichlet(np.ones(3), size=80)
    assert bootstrap_metrics(y, proba[None], n_boot=200, seed=4) == bootstrap_metrics(y, proba, n_boot=200, seed=4)


def test_bootstrap_metrics__interval_of_the_mean_matches_a_resampling_loop() -> None:
    # An independent loop: draw subjects with replacement, average the two classifiers' accuracies.
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(30), 3)
    y = rng.integers(0, 2, 90)
    probas = rng.dirichlet(np.ones(2), size=(2, 90))
    low, high = bootstrap_metrics(y, probas, groups=groups, n_boot=4000, seed=5)["accuracy"]
    loop_rng = np.random.default_rng(6)
    means = []
    for _ in range(4000):
        idx = np.concatenate([np.flatnonzero(groups == g) for g in loop_rng.integers(0, 30, 30)])
        means.append(np.mean([(p[idx].argmax(1) == y[idx]).mean() for p in probas]))
    ref_low, ref_high = np.percentile(means, [2.5, 97.5])
    assert low == pytest.approx(ref_low, abs=0.02) and high == pytest.approx(ref_high, abs=0.02)


def test_bootstrap_difference__identical_classifiers_differ_by_exactly_zero() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 60)
    proba = rng.dirichlet(np.ones(3), size=60)
    assert bootstrap_difference(y, proba, proba, n_boot=200)["accuracy"] == (0.0, 0.0)


def test_bootstrap_difference__matches_a_paired_resampling_loop_and_is_narrower_than_unpaired() -> None:
    # Two classifiers that err on mostly the same subjects; an independent loop draws subjects
    # with replacement and takes the difference of the two accuracies on the same draw.
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(40), 2)
    y = rng.integers(0, 2, 80)
    right = rng.random(80) < 0.7
    a = np.where(right[:, None], np.eye(2)[y], np.eye(2)[1 - y]) * 0.8 + 0.1
    flip = rng.random(80) < 0.1  # b differs from a on about 10 % of the items
    b = np.where(flip[:, None], a[:, ::-1], a)
    low, high = bootstrap_difference(y, a, b, groups=groups, n_boot=4000, seed=7)["accuracy"]
    loop_rng = np.random.default_rng(8)
    diffs = []
    for _ in range(4000):
        idx = np.concatenate([np.flatnonzero(groups == g) for g in loop_rng.integers(0, 40, 40)])
        diffs.append((a[idx].argmax(1) == y[idx]).mean() - (b[idx].argmax(1) == y[idx]).mean())
    ref_low, ref_high = np.percentile(diffs, [2.5, 97.5])
    assert low == pytest.approx(ref_low, abs=0.02) and high == pytest.approx(ref_high, abs=0.02)
    a_low, a_high = bootstrap_metrics(y, a, groups=groups, n_boot=4000, seed=7)["accuracy"]
    assert high - low < 0.8 * (a_high - a_low)  # pairing removes the shared subject-to-subject variation
