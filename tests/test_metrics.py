"""Metrics: the scikit-learn point estimates and the weighted forms the bootstrap uses."""

from __future__ import annotations

import numpy as np
import pytest

from mocomri.eval.metrics import METRICS, classification_metrics, weighted_metrics, weighted_ovr_auroc


def _random_predictions(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


def test_classification_metrics__match_hand_computed_values() -> None:
    # truth 0,0,1,1 ; predictions 0,1,1,1 (argmax) ; class-1 scores 0.1,0.6,0.7,0.9
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.6, 0.7, 0.9])
    proba = np.stack([1 - p1, p1], axis=1)
    m = classification_metrics(y, proba)
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    # F1 class 0: P=1, R=1/2 -> 2/3 ; class 1: P=2/3, R=1 -> 4/5
    assert m["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    # every positive outscores every negative, in both one-vs-rest directions
    assert m["auroc"] == pytest.approx(1.0)


def test_classification_metrics__auroc_skips_a_class_absent_from_the_test_set() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3]])
    # class 2 has no positive; classes 0 and 1 are perfectly ranked
    assert classification_metrics(y, proba)["auroc"] == pytest.approx(1.0)


def test_weighted_metrics__unit_weights_equal_sklearn() -> None:
    y, proba = _random_predictions(200, 4, seed=0)
    expected = classification_metrics(y, proba)
    got = weighted_metrics(y, proba, np.ones((1, len(y))))
    for name in METRICS:
        assert got[name][0] == pytest.approx(expected[name], abs=1e-12), name


def test_weighted_metrics__integer_weights_equal_repeated_items() -> None:
    y, proba = _random_predictions(60, 3, seed=1)
    weights = np.random.default_rng(2).integers(0, 4, size=(5, len(y)))
    got = weighted_metrics(y, proba, weights)
    for b in range(len(weights)):
        # independent truth: scikit-learn on the resample written out item by item
        idx = np.repeat(np.arange(len(y)), weights[b])
        expected = classification_metrics(y[idx], proba[idx])
        for name in METRICS:
            assert got[name][b] == pytest.approx(expected[name], abs=1e-12), (name, b)


def test_weighted_ovr_auroc__ties_count_one_half() -> None:
    y = np.array([0, 1, 0, 1])
    proba = np.full((4, 2), 0.5)
    assert weighted_ovr_auroc(y, proba, np.ones((1, 4)))[0] == pytest.approx(0.5)
