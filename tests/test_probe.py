"""Probes on fixed features: the CV logistic regression and the cosine kNN."""

from __future__ import annotations

import numpy as np
import pytest

from mocomri.eval.probe import DEFAULT_CS, fit_knn_probe, fit_linear_probe, predict_proba


def _separable(n: int, k: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes on well separated random directions; 4 items per subject."""
    rng = np.random.default_rng(seed)
    centres = 6.0 * rng.normal(size=(k, dim))
    y = np.arange(n) % k
    x = centres[y] + rng.normal(size=(n, dim))
    return x, y, np.arange(n) // 4


def test_fit_linear_probe__separable_features_reach_full_accuracy() -> None:
    x, y, groups = _separable(480, 3, 16, seed=0)
    model = fit_linear_probe(x[:360], y[:360], groups[:360])
    assert (model.predict(x[360:]) == y[360:]).mean() >= 0.99
    assert model[-1].C in DEFAULT_CS


def test_fit_linear_probe__random_labels_stay_at_chance() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1200, 16))
    y = rng.integers(0, 3, 1200)
    groups = np.arange(1200) // 4
    model = fit_linear_probe(x[:600], y[:600], groups[:600])
    accuracy = (model.predict(x[600:]) == y[600:]).mean()
    assert abs(accuracy - 1 / 3) < 0.07  # chance = 1/3; 600 test items -> std ~ 0.02


def test_fit_linear_probe__one_subject_per_class_skips_cv() -> None:
    x, y, _ = _separable(8, 2, 4, seed=2)
    groups = y.copy()  # one subject per class: nothing to cross-validate over
    model = fit_linear_probe(x, y, groups)
    assert model[-1].C == 1.0
    assert (model.predict(x) == y).all()


def test_fit_linear_probe__parallel_cv_fits_the_same_model() -> None:
    # Noisy classes, so that the CV has a real choice of C to make.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 12))
    y = (x[:, 0] + 0.8 * rng.normal(size=400) > 0).astype(int)
    groups = np.arange(400) // 4
    serial = fit_linear_probe(x, y, groups)
    parallel = fit_linear_probe(x, y, groups, n_jobs=2)
    assert parallel[-1].C == serial[-1].C
    np.testing.assert_array_equal(parallel[-1].coef_, serial[-1].coef_)


def test_fit_linear_probe__pca_reduces_the_input() -> None:
    x, y, groups = _separable(120, 2, 50, seed=3)
    model = fit_linear_probe(x, y, groups, pca_components=10)
    assert model.named_steps["pca"].n_components_ == 10
    assert (model.predict(x) == y).mean() >= 0.99


def test_fit_knn_probe__separable_clusters_are_recovered() -> None:
    x, y, _ = _separable(300, 4, 8, seed=4)
    model = fit_knn_probe(x[:200], y[:200], k=5)
    assert (model.predict(x[200:]) == y[200:]).mean() >= 0.99


def test_predict_proba__unseen_classes_get_zero_columns() -> None:
    x, y, groups = _separable(60, 2, 4, seed=5)
    model = fit_linear_probe(x, y + 1, groups)  # classes 1 and 2 of 0..3
    proba = predict_proba(model, x, n_classes=4)
    assert proba.shape == (60, 4)
    np.testing.assert_allclose(proba[:, [0, 3]], 0.0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_fit_knn_probe__rejects_non_positive_k() -> None:
    with pytest.raises(ValueError, match="knn k=0"):
        fit_knn_probe(np.zeros((4, 2)), np.array([0, 1, 0, 1]), k=0)
