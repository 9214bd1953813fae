"""Classification metrics: scikit-learn for point estimates, a weighted vectorised form for the bootstrap.

The point estimates (:func:`classification_metrics`) call scikit-learn. The bootstrap needs the
same four numbers for a thousand resamples at once; a resample is a vector of multiplicities
(how many times each test item was drawn), so every metric here also has a form that takes a
weight matrix ``(B, N)`` and returns ``(B,)``. With all weights 1 those forms equal the
scikit-learn values (tested against them).

Definitions (they follow scikit-learn):
    accuracy: fraction of items predicted correctly.
    balanced_accuracy: mean recall over the classes present in ``y_true``.
    macro_f1: mean F1 over the classes present in ``y_true`` or in the predictions.
    auroc: macro one-vs-rest AUROC, averaged over the classes that have both positives and
        negatives in ``y_true`` (ties count one half, as in the Mann-Whitney U statistic).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")
METRIC_TITLES = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "macro_f1": "Macro F1",
    "auroc": "Macro one-vs-rest AUROC",
}


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 and macro one-vs-rest AUROC.

    Args:
        y_true: integer class indices in ``[0, K)``.
        proba: class probabilities; the prediction is the argmax.

    Returns:
        ``{metric: value}`` for each name in :data:`METRICS`; ``auroc`` is NaN when no class
        has both positives and negatives in ``y_true``.

    Shape:
        y_true: (N,)  proba: (N, K)
    """
    y_true = np.asarray(y_true)
    pred = np.asarray(proba).argmax(axis=1)
    return {
        "accuracy": float(accuracy_score(y_true, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, pred)),
        "macro_f1": float(f1_score(y_true, pred, average="macro", zero_division=0)),
        "auroc": ovr_auroc(y_true, proba),
    }


def ovr_auroc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Macro one-vs-rest AUROC over the classes with both positives and negatives in ``y_true``.

    scikit-learn's multiclass ``roc_auc_score`` refuses a test set that lacks a class; this
    averages the per-class binary AUROCs it would average when every class is present.
    """
    y_true = np.asarray(y_true)
    aucs = [
        roc_auc_score(y_true == c, proba[:, c])
        for c in range(proba.shape[1])
        if 0 < np.sum(y_true == c) < len(y_true)
    ]
    return float(np.mean(aucs)) if aucs else float("nan")


def weighted_confusion(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, weights: np.ndarray
) -> np.ndarray:
    """Confusion matrices (rows: truth, columns: prediction) of ``B`` weighted resamples.

    Shape:
        y_true, y_pred: (N,)  weights: (B, N)  returns: (B, K, K)
    """
    cell = np.asarray(y_true) * n_classes + np.asarray(y_pred)  # (N,) in [0, K*K)
    onehot = np.zeros((len(cell), n_classes * n_classes))
    onehot[np.arange(len(cell)), cell] = 1.0
    return (weights @ onehot).reshape(-1, n_classes, n_classes)


def metrics_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy and macro F1 of each confusion matrix in a stack.

    Shape:
        cm: (B, K, K)  each returned array: (B,)
    """
    tp = np.diagonal(cm, axis1=1, axis2=2)  # (B, K)
    support = cm.sum(axis=2)  # (B, K) true count per class
    predicted = cm.sum(axis=1)  # (B, K) predicted count per class
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = tp.sum(axis=1) / cm.sum(axis=(1, 2))
        recall = np.where(support > 0, tp / support, np.nan)
        balanced = np.nanmean(recall, axis=1)
        in_union = (support > 0) | (predicted > 0)
        f1 = np.where(in_union, 2 * tp / (support + predicted), np.nan)
        macro_f1 = np.nanmean(f1, axis=1)
    return {"accuracy": accuracy, "balanced_accuracy": balanced, "macro_f1": macro_f1}


def weighted_ovr_auroc(y_true: np.ndarray, proba: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro one-vs-rest AUROC of each weighted resample (Mann-Whitney form, ties count 1/2).

    For class ``c`` and resample ``b``, with ``w`` the multiplicities,
    ``AUC = sum_{i pos, j neg} w_i w_j ([s_i > s_j] + [s_i = s_j] / 2) / (W_pos W_neg)``.
    Items are sorted by score once; the negatives' weight below and at each distinct score
    comes from cumulative sums, so the cost is ``O(B N)`` per class.

    Shape:
        y_true: (N,)  proba: (N, K)  weights: (B, N)  returns: (B,)
    """
    y_true = np.asarray(y_true)
    per_class = []
    for c in range(proba.shape[1]):
        pos = y_true == c
        if not 0 < pos.sum() < len(y_true):
            continue
        order = np.argsort(proba[:, c], kind="stable")
        scores = proba[order, c]
        w = weights[:, order]  # (B, N) sorted by score
        is_pos = pos[order]
        starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])  # first item of each tie block
        neg_at = np.add.reduceat(w * ~is_pos, starts, axis=1)  # (B, U) negative weight per distinct score
        pos_at = np.add.reduceat(w * is_pos, starts, axis=1)  # (B, U)
        neg_below = np.cumsum(neg_at, axis=1) - neg_at  # (B, U) negatives strictly below
        wins = (pos_at * (neg_below + 0.5 * neg_at)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class.append(wins / (pos_at.sum(axis=1) * neg_at.sum(axis=1)))
    if not per_class:
        return np.full(weights.shape[0], np.nan)
    stacked = np.stack(per_class, axis=1)  # (B, C'); NaN where a resample lacks pos or neg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
        return np.nanmean(stacked, axis=1)


def weighted_metrics(y_true: np.ndarray, proba: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """All of :data:`METRICS` for each weighted resample.

    Shape:
        y_true: (N,)  proba: (N, K)  weights: (B, N)  each returned array: (B,)
    """
    pred = proba.argmax(axis=1)
    out = metrics_from_confusion(weighted_confusion(y_true, pred, proba.shape[1], weights))
    out["auroc"] = weighted_ovr_auroc(y_true, proba, weights)
    return out
