"""Scoring a probe's predictions: per evaluation unit, with a confusion matrix; summaries over seeds.

A unit is an item, a scan or a subject (:func:`mocomri.eval.runner.run_probe`'s ``unit``); the
probabilities of a unit's items are averaged (soft voting) before any metric is computed, and
so are a regression's predicted values. A scored run names its task (``"task"``; a run
without one is a classification) and :func:`summarise` and :func:`paired_difference` use
that task's metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mocomri.eval.bootstrap import bootstrap_difference, bootstrap_metrics
from mocomri.eval.metrics import classification_metrics
from mocomri.eval.tasks import CLASSIFICATION, METRIC_SETS, REGRESSION, MetricSet


def aggregate_by_unit(
    proba: np.ndarray, unit: np.ndarray, label: np.ndarray, subject: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Averages item probabilities per evaluation unit (soft voting).

    Returns:
        ``(proba, label, subject)`` per unit, units in sorted order.

    Shape:
        proba: (N, K)  unit, label, subject: (N,)  returns: (U, K), (U,), (U,)
    """
    _, first, inverse = np.unique(unit, return_index=True, return_inverse=True)
    summed = np.zeros((len(first), proba.shape[1]))
    np.add.at(summed, inverse, proba)
    counts = np.bincount(inverse, minlength=len(first))[:, None]
    return summed / counts, label[first], subject[first]


def score(
    proba: np.ndarray,
    unit: np.ndarray,
    label: np.ndarray,
    subject: np.ndarray,
    train_subjects: np.ndarray,
    n_classes: int,
    n_boot: int,
) -> dict[str, Any]:
    """Metrics of one (method, fraction, seed) at the unit level, with what a bootstrap CI and a
    confusion matrix need.

    Args:
        proba: class probabilities of the evaluation items.
        unit, label, subject: of the evaluation items.
        train_subjects: the subject of every labelled training item the method saw.
        n_classes: K.
        n_boot: bootstrap resamples for the CI (drawn in :func:`summarise`).

    Shape:
        proba: (N, K)  unit, label, subject: (N,)  train_subjects: (N_train,)
    """
    unit_proba, unit_label, unit_subject = aggregate_by_unit(proba, unit, label, subject)
    pred = unit_proba.argmax(axis=1)
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(confusion, (unit_label, pred), 1)
    return {
        "task": CLASSIFICATION,
        "metrics": classification_metrics(unit_label, unit_proba),
        "proba": unit_proba,
        "label": unit_label,
        "subject": unit_subject,
        "confusion": confusion.tolist(),
        "n_train_items": int(len(train_subjects)),
        "n_train_subjects": int(len(np.unique(train_subjects))),
        "n_test_units": int(len(unit_label)),
        "n_boot": n_boot,
    }


def score_regression(
    prediction: np.ndarray,
    unit: np.ndarray,
    target: np.ndarray,
    subject: np.ndarray,
    train_subjects: np.ndarray,
    n_boot: int,
) -> dict[str, Any]:
    """Metrics of one regression (method, fraction, seed) at the unit level: a unit's prediction
    is the mean of its items' predictions.

    Args:
        prediction: predicted value of each evaluation item.
        unit, target, subject: of the evaluation items.
        train_subjects: the subject of every labelled training item the method saw.
        n_boot: bootstrap resamples for the CI (drawn in :func:`summarise`).

    Shape:
        prediction, unit, target, subject: (N,)  train_subjects: (N_train,)
    """
    unit_prediction, unit_target, unit_subject = aggregate_by_unit(
        np.asarray(prediction, dtype=float)[:, None], unit, target, subject)  # (U, 1), (U,), (U,)
    unit_prediction = unit_prediction[:, 0]
    return {
        "task": REGRESSION,
        "metrics": METRIC_SETS[REGRESSION].point(unit_target, unit_prediction),
        "prediction": unit_prediction,
        "label": unit_target,
        "subject": unit_subject,
        "n_train_items": int(len(train_subjects)),
        "n_train_subjects": int(len(np.unique(train_subjects))),
        "n_test_units": int(len(unit_target)),
        "n_boot": n_boot,
    }


def _metric_set(run: dict[str, Any]) -> MetricSet:
    return METRIC_SETS[run.get("task", CLASSIFICATION)]


def summarise(seed_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std (ddof=1) over seeds of each metric, and the bootstrap CI of that mean.

    The CI resamples test subjects: each resample scores every seed's classifier on the same
    drawn subjects and averages them, so it is the interval of the mean reported beside it (the
    test set's sampling error); the std is the spread over label-fraction draws.

    Args:
        seed_runs: what :func:`score` returned for each seed of one (method, fraction).
    """
    first = seed_runs[0]
    for run in seed_runs[1:]:
        if not (np.array_equal(run["label"], first["label"]) and np.array_equal(run["subject"], first["subject"])):
            raise ValueError("the seeds of one (method, fraction) were scored on different test units")
    metric_set = _metric_set(first)
    ci = bootstrap_metrics(
        first["label"], np.stack([r[metric_set.prediction_key] for r in seed_runs]), groups=first["subject"],
        n_boot=first["n_boot"], seed=0, metric_set=metric_set,
    )
    out: dict[str, Any] = {
        "n_train_items": float(np.mean([r["n_train_items"] for r in seed_runs])),
        "n_train_subjects": float(np.mean([r["n_train_subjects"] for r in seed_runs])),
        "n_test_units": first["n_test_units"],
    }
    for name in metric_set.names:
        values = np.array([r["metrics"][name] for r in seed_runs], dtype=float)
        out[name] = {
            "mean": finite_or_none(np.mean(values)),
            "std": finite_or_none(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "per_seed": [finite_or_none(v) for v in values],
            "ci": [finite_or_none(v) for v in ci[name]],
        }
    return out


def paired_difference(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]]) -> dict[str, Any]:
    """Method a minus method b on the same test units: the difference of their means over seeds,
    and its paired bootstrap CI (each resample of test subjects scores both). The sign is always
    a minus b: for an error (MAE, RMSE) a negative difference favours a, for a score (accuracy,
    R²) a positive one.

    Args:
        runs_a, runs_b: what :func:`score` returned for each seed of two methods at one fraction.
    """
    first = runs_a[0]
    for run in [*runs_a, *runs_b]:
        if not (np.array_equal(run["label"], first["label"]) and np.array_equal(run["subject"], first["subject"])):
            raise ValueError("a paired difference needs both methods scored on the same test units")
    metric_set = _metric_set(first)
    key = metric_set.prediction_key
    ci = bootstrap_difference(
        first["label"], np.stack([r[key] for r in runs_a]), np.stack([r[key] for r in runs_b]),
        groups=first["subject"], n_boot=first["n_boot"], seed=0, metric_set=metric_set,
    )
    out: dict[str, Any] = {}
    for name in metric_set.names:
        a = np.mean([r["metrics"][name] for r in runs_a])
        b = np.mean([r["metrics"][name] for r in runs_b])
        out[name] = {"mean": finite_or_none(a - b), "ci": [finite_or_none(v) for v in ci[name]]}
    return out


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: an undefined metric (e.g. AUROC with one class) becomes null."""
    return float(value) if np.isfinite(value) else None
