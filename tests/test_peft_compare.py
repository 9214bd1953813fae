"""Paired accuracy contrasts: the point value by hand, interval widths against the binomial approximation."""

from __future__ import annotations

import numpy as np
import pytest

from mocomri.eval.bootstrap import bootstrap_metrics
from tools.peft_lab.compare import accuracy_contrast

Z95 = 1.959964


def _predictions(correct: np.ndarray) -> np.ndarray:
    """Two-class probabilities whose argmax is class 0 (the truth) exactly where ``correct``."""
    return np.where(correct[:, None], [0.9, 0.1], [0.1, 0.9])


def test_accuracy_contrast__point_value_is_the_weighted_sum_of_accuracies() -> None:
    rng = np.random.default_rng(0)
    y = np.zeros(50, dtype=int)
    hits = [rng.random(50) < p for p in (0.9, 0.6, 0.5)]
    result = accuracy_contrast(y, [_predictions(h) for h in hits], [1, -0.5, -0.5], n_boot=200)
    assert result["value"] == pytest.approx(hits[0].mean() - 0.5 * hits[1].mean() - 0.5 * hits[2].mean())
    low, high = result["ci95"]
    assert low <= result["value"] <= high


def test_accuracy_contrast__paired_difference_has_the_width_of_its_discordant_share() -> None:
    # A and B agree on 360 of 400 items (both right on 280, both wrong on 80); A alone is right on
    # the other 40. Paired, the difference is the proportion p = 0.1 of A-only items, with the
    # binomial width 2·z·sqrt(p(1-p)/n); unpaired, the two accuracies' own spread would add up.
    n = 400
    a = np.arange(n) < 320
    b = np.arange(n) < 280
    y = np.zeros(n, dtype=int)
    low, high = accuracy_contrast(y, [_predictions(a), _predictions(b)], [1, -1], n_boot=4000, seed=1)["ci95"]
    assert high - low == pytest.approx(2 * Z95 * np.sqrt(0.1 * 0.9 / n), rel=0.12)
    separate = [bootstrap_metrics(y, _predictions(h), n_boot=4000, seed=s)["accuracy"] for s, h in ((2, a), (3, b))]
    assert high - low < 0.5 * sum(h - lo for lo, h in separate)


def test_accuracy_contrast__identical_classifiers_differ_by_exactly_zero() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 60)
    proba = rng.dirichlet(np.ones(3), size=60)
    groups = np.repeat(np.arange(20), 3)
    assert accuracy_contrast(y, [proba, proba], [1, -1], groups=groups, n_boot=300) == {"value": 0.0, "ci95": [0.0, 0.0]}


def test_accuracy_contrast__subjects_resampled_whole() -> None:
    # 40 subjects of 10 items; A is right on every item of the first 8 subjects where B is wrong:
    # the effective sample is the 40 subjects, so the width is the binomial's at n = 40.
    groups = np.repeat(np.arange(40), 10)
    y = np.zeros(400, dtype=int)
    a, b = groups < 30, groups < 22
    low, high = accuracy_contrast(y, [_predictions(a), _predictions(b)], [1, -1], groups=groups, n_boot=4000)["ci95"]
    assert high - low == pytest.approx(2 * Z95 * np.sqrt(0.2 * 0.8 / 40), rel=0.15)


def test_accuracy_contrast__mismatched_arguments_are_named() -> None:
    y = np.zeros(4, dtype=int)
    proba = _predictions(np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="2 classifiers and 1 weights"):
        accuracy_contrast(y, [proba, proba], [1])
    with pytest.raises(ValueError, match=r"probabilities for \[3\] items, labels for 4"):
        accuracy_contrast(y, [proba[:3]], [1])
