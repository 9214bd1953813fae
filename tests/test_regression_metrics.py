"""Regression metrics: scikit-learn point estimates, and the weighted forms the subject bootstrap uses."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, r2_score

from mocomri.eval.bootstrap import bootstrap_difference, bootstrap_metrics
from mocomri.eval.regression_metrics import REGRESSION_METRICS, regression_metrics, weighted_regression_metrics
from mocomri.eval.tasks import METRIC_SETS

REGRESSION = METRIC_SETS["regression"]


def _predictions(n: int, seed: int, offset: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = offset + 10 * rng.normal(size=n)
    return y, y + 4 * rng.normal(size=n)


def test_regression_metrics__match_hand_computed_values() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    prediction = np.array([1.5, 2.0, 2.0, 5.0])  # errors 0.5, 0, -1, 1
    m = regression_metrics(y, prediction)
    assert m["mae"] == pytest.approx(2.5 / 4)
    assert m["rmse"] == pytest.approx(np.sqrt(2.25 / 4))
    assert m["r2"] == pytest.approx(1 - 2.25 / 5.0)  # SS_tot about the mean 2.5: 2.25 + 0.25 + 0.25 + 2.25


def test_regression_metrics__constant_targets_have_no_r2() -> None:
    assert np.isnan(regression_metrics(np.full(4, 3.0), np.arange(4.0))["r2"])


def test_weighted_regression_metrics__unit_weights_equal_sklearn() -> None:
    y, prediction = _predictions(200, seed=0)
    out = weighted_regression_metrics(y, prediction, np.ones((1, 200)))
    expected = regression_metrics(y, prediction)
    assert set(out) == set(REGRESSION_METRICS)
    for name in REGRESSION_METRICS:
        assert out[name][0] == pytest.approx(expected[name], rel=1e-9), name


def test_weighted_regression_metrics__multiplicities_equal_repeated_items() -> None:
    # Far from zero, so that a sum of squares that cancels would show.
    y, prediction = _predictions(50, seed=1, offset=1e4)
    rng = np.random.default_rng(2)
    weights = rng.integers(0, 4, size=(5, 50))
    out = weighted_regression_metrics(y, prediction, weights)
    for b, w in enumerate(weights):
        idx = np.repeat(np.arange(50), w)
        assert out["mae"][b] == pytest.approx(mean_absolute_error(y[idx], prediction[idx]), rel=1e-9)
        assert out["r2"][b] == pytest.approx(r2_score(y[idx], prediction[idx]), rel=1e-6)


def test_weighted_regression_metrics__a_resample_of_equal_targets_has_no_r2() -> None:
    y = np.array([5.0, 5.0, 7.0])
    weights = np.array([[2, 1, 0], [1, 1, 1]])
    r2 = weighted_regression_metrics(y, y + 1.0, weights)["r2"]
    assert np.isnan(r2[0]) and r2[1] == pytest.approx(r2_score(y, y + 1.0))


def test_bootstrap_metrics__regression_interval_matches_a_subject_resampling_loop() -> None:
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(30), 2)
    y, prediction = _predictions(60, seed=4)
    stack = np.stack([prediction, prediction + rng.normal(size=60)])  # two seeds' predictions: (S, N)
    low, high = bootstrap_metrics(y, stack, groups=groups, n_boot=4000, seed=5, metric_set=REGRESSION)["mae"]
    loop_rng = np.random.default_rng(6)
    means = []
    for _ in range(4000):
        idx = np.concatenate([np.flatnonzero(groups == g) for g in loop_rng.integers(0, 30, 30)])
        means.append(np.mean([np.abs(p[idx] - y[idx]).mean() for p in stack]))
    ref_low, ref_high = np.percentile(means, [2.5, 97.5])
    assert low == pytest.approx(ref_low, rel=0.05) and high == pytest.approx(ref_high, rel=0.05)
    single = bootstrap_metrics(y, prediction, groups=groups, n_boot=200, metric_set=REGRESSION)
    assert single == bootstrap_metrics(y, prediction[None], groups=groups, n_boot=200, metric_set=REGRESSION)


def test_bootstrap_difference__regression_of_identical_predictions_differs_by_zero() -> None:
    y, prediction = _predictions(40, seed=7)
    out = bootstrap_difference(y, prediction, prediction, n_boot=100, metric_set=REGRESSION)
    assert out == {name: (0.0, 0.0) for name in REGRESSION_METRICS}
