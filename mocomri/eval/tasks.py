"""The probe's two tasks, classification and regression: which one a label column is, and what each is scored with.

The rule (``task="auto"``): a label column is a **regression** target when every label parses as
a finite number *and* the labels take more than :data:`MAX_NUMERIC_CLASSES` distinct values
(compared as numbers, so ``"1"`` and ``"1.0"`` are one value). Numbers with at most that many
values (``0``/``1``, a grade from 1 to 5) are read as classes; any label that is not a finite
number makes the column a classification. ``task="regression"`` or ``"classification"``
overrides the rule; a regression of a label that is not a number is an error naming it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from mocomri.errors import DataError
from mocomri.eval.metrics import METRIC_TITLES, METRICS, classification_metrics, weighted_metrics
from mocomri.eval.regression_metrics import (
    REGRESSION_METRICS,
    REGRESSION_TITLES,
    regression_metrics,
    weighted_regression_metrics,
)

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = ("auto", CLASSIFICATION, REGRESSION)
# More distinct numbers than this, and a numeric label is a quantity rather than a class code.
MAX_NUMERIC_CLASSES = 10


@dataclass(frozen=True)
class TaskChoice:
    """The task a probe runs and why (the report prints both)."""

    name: str  # "classification" | "regression"
    reason: str
    requested: str = "auto"

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason, "requested": self.requested}


def as_number(label: str) -> float | None:
    """The label as a finite float, or None when it is not one (text, ``nan``, ``inf``)."""
    try:
        value = float(label)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def choose_task(labels: Iterable[str], requested: str = "auto", source: str = "") -> TaskChoice:
    """Which task a column of labels is (the rule in the module docstring).

    Args:
        labels: every label of the labelled rows (training and evaluation).
        requested: ``auto``, ``classification`` or ``regression``.
        source: named in an error message (the manifest).

    Raises:
        ValueError: ``requested`` is not one of :data:`TASKS`.
        DataError: ``regression`` requested and a label is not a finite number.
    """
    if requested not in TASKS:
        raise ValueError(f"task={requested!r} must be one of {', '.join(TASKS)}")
    labels = list(labels)
    not_numbers = [label for label in labels if as_number(label) is None]
    if requested == CLASSIFICATION:
        return TaskChoice(CLASSIFICATION, "requested (--task classification)", requested)
    if requested == REGRESSION:
        if not_numbers:
            where = f"{source}: " if source else ""
            raise DataError(f"{where}--task regression needs a finite number in every label; "
                            f"{not_numbers[0]!r} is not one")
        return TaskChoice(REGRESSION, "requested (--task regression)", requested)
    if not_numbers:
        return TaskChoice(CLASSIFICATION, f"auto: label {not_numbers[0]!r} is not a number", requested)
    distinct = len({as_number(label) for label in labels})
    if distinct > MAX_NUMERIC_CLASSES:
        return TaskChoice(REGRESSION, f"auto: every label is a number, {distinct} distinct values "
                          f"(more than {MAX_NUMERIC_CLASSES})", requested)
    return TaskChoice(CLASSIFICATION, f"auto: every label is a number but only {distinct} distinct values "
                      f"(at most {MAX_NUMERIC_CLASSES} are read as classes; --task regression regresses them)",
                      requested)


@dataclass(frozen=True)
class MetricSet:
    """What one task's predictions are scored with.

    ``point(y_true, prediction)`` gives ``{name: float}``; ``weighted(y_true, prediction,
    weights)`` the same for ``B`` bootstrap resamples, ``{name: (B,)}``. One item's prediction
    has ``prediction_ndim`` dimensions (class probabilities ``(K,)``: 1; a value: 0); a scored
    run keeps its unit predictions under ``prediction_key``.
    """

    names: tuple[str, ...]
    titles: dict[str, str]
    point: Callable[[np.ndarray, np.ndarray], dict[str, float]]
    weighted: Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, np.ndarray]]
    prediction_ndim: int
    prediction_key: str
    lower_is_better: tuple[str, ...] = ()  # errors; for the rest higher is better


METRIC_SETS: dict[str, MetricSet] = {
    CLASSIFICATION: MetricSet(METRICS, METRIC_TITLES, classification_metrics, weighted_metrics, 1, "proba"),
    REGRESSION: MetricSet(REGRESSION_METRICS, REGRESSION_TITLES, regression_metrics, weighted_regression_metrics,
                          0, "prediction", lower_is_better=("mae", "rmse")),
}
