"""Regression metrics: scikit-learn for point estimates, a weighted vectorised form for the bootstrap.

As in :mod:`mocomri.eval.metrics`, a bootstrap resample is a vector of multiplicities, so each
metric also has a form that takes a weight matrix ``(B, N)`` and returns ``(B,)``; with all
weights 1 it equals the scikit-learn value (tested against it).

Definitions (they follow scikit-learn):
    mae: mean absolute error, in the label's units.
    rmse: root mean squared error, in the label's units.
    r2: ``1 - SS_res / SS_tot``, ``SS_tot`` about the evaluated units' own mean target
        (``r2_score``); NaN when every target is the same. Predicting the training mean scores
        at most 0: the test mean is the constant with the smallest squared error.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

REGRESSION_METRICS = ("mae", "rmse", "r2")
REGRESSION_TITLES = {
    "mae": "Mean absolute error (MAE, label units; lower is better)",
    "rmse": "Root mean squared error (RMSE, label units; lower is better)",
    "r2": "R² (coefficient of determination; higher is better)",
}


def regression_metrics(y_true: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² of one set of predictions.

    Returns:
        ``{metric: value}`` for each name in :data:`REGRESSION_METRICS`; ``r2`` is NaN when the
        targets are all equal.

    Shape:
        y_true, prediction: (N,)
    """
    y_true, prediction = np.asarray(y_true, dtype=float), np.asarray(prediction, dtype=float)
    return {
        "mae": float(mean_absolute_error(y_true, prediction)),
        "rmse": float(root_mean_squared_error(y_true, prediction)),
        # Constant targets leave no variance to explain: NaN (reported as n/a), not scikit-learn's
        # stand-in 0 or 1, nor -inf.
        "r2": float(r2_score(y_true, prediction)) if np.ptp(y_true) > 0 else float("nan"),
    }


def weighted_regression_metrics(
    y_true: np.ndarray, prediction: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """All of :data:`REGRESSION_METRICS` for each weighted resample.

    With ``w`` the multiplicities and ``W = sum w``: ``MAE = sum w |e| / W``,
    ``RMSE = sqrt(sum w e² / W)``, ``R² = 1 - sum w e² / sum w (y - ȳ_w)²`` with
    ``ȳ_w = sum w y / W`` (the resample's own mean, as ``r2_score`` uses the test set's).

    Shape:
        y_true, prediction: (N,)  weights: (B, N)  each returned array: (B,)
    """
    y = np.asarray(y_true, dtype=float)
    error = np.asarray(prediction, dtype=float) - y  # (N,)
    w = np.asarray(weights, dtype=float)  # (B, N)
    total = w.sum(axis=1)  # (B,)
    squared = w @ error**2  # (B,) weighted residual sum of squares
    # Centred first, so that the sum of squares below does not cancel for targets far from 0.
    centred = y - y.mean()  # (N,)
    second_moment = w @ centred**2  # (B,)
    spread = second_moment - (w @ centred) ** 2 / total  # (B,) weighted total sum of squares
    with np.errstate(invalid="ignore", divide="ignore"):
        # A resample of equal targets has no spread to explain (rounding leaves a tiny remainder).
        r2 = np.where(spread > 1e-12 * second_moment, 1.0 - squared / spread, np.nan)
    return {"mae": (w @ np.abs(error)) / total, "rmse": np.sqrt(squared / total), "r2": r2}
