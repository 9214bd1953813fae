"""Paired comparisons of classifiers on one test set: a contrast of accuracies with a 95% CI by subject.

"The merged module beats the mean of the two single modules by 2 points, CI above zero" is a
statement about ``Σ wₘ accₘ`` with weights ``(1, −½, −½)``. Its interval comes from one
bootstrap that resamples subjects once per resample for **all** classifiers (the items of a
resample are the same for each), so what they share cancels and the interval is the contrast's
own, much narrower than a difference of separate intervals. The resamples are those of
:func:`mocomri.eval.bootstrap.resample_weights` (whole subjects) and the interval its percentile one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mocomri.eval.bootstrap import percentile_interval, resample_weights


def accuracy_contrast(y_true: np.ndarray, probas: Sequence[np.ndarray], weights: Sequence[float], *,
                      groups: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
                      confidence: float = 0.95) -> dict:
    """``Σ wₘ accₘ`` over the classifiers' accuracies, with its paired bootstrap interval.

    Args:
        y_true: the true class of each item.
        probas: each classifier's class probabilities (argmax is its prediction).
        weights: one per classifier, e.g. ``(1, -1)`` for a difference.
        groups: the subject of each item; resampled whole.
        n_boot: resamples.
        seed: seeds the resampling.
        confidence: the interval's coverage.

    Returns:
        ``{"value": float, "ci95": [low, high]}``.

    Raises:
        ValueError: a weight count that differs from the classifier count, or probabilities for
            another number of items.

    Shape:
        y_true, groups: (N,)  probas: M of (N, K)
    """
    if len(probas) != len(weights) or not probas:
        raise ValueError(f"{len(probas)} classifiers and {len(weights)} weights: give one weight per classifier")
    y_true = np.asarray(y_true)
    if any(len(p) != len(y_true) for p in probas):
        raise ValueError(f"probabilities for {[len(p) for p in probas]} items, labels for {len(y_true)}")
    correct = np.stack([np.argmax(p, axis=1) == y_true for p in probas]).astype(float)  # (M, N)
    w = np.asarray(weights, dtype=float)
    per_item = w @ correct  # (N,): the contrast's contribution of each item
    resamples = resample_weights(len(y_true), n_boot, np.random.default_rng(seed), groups)  # (B, N)
    samples = resamples @ per_item / resamples.sum(axis=1)  # (B,)
    low, high = percentile_interval(samples, confidence)
    return {"value": float(per_item.mean()), "ci95": [low, high]}
