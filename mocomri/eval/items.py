"""The labelled items of a manifest: what the probe, module training and module evaluation read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class LabelledItems:
    """Labelled items of one or more manifest splits, one entry per dataset item, in dataset order.

    The probe reads the training split and the evaluation split together (:attr:`is_train` tells
    them apart); module training and evaluation read one split at a time. For a regression
    (``task == "regression"``) ``labels`` holds each item's numeric target and ``classes`` is empty.

    Shape:
        labels, subjects, splits, units: (N,) over dataset items
    """

    dataset: Any  # an evaluation dataset: items are dicts with an "image" tensor
    labels: np.ndarray  # class index into `classes`; a regression's float target
    subjects: np.ndarray
    classes: tuple[str, ...]  # the class names, in head and probability-column order
    splits: np.ndarray  # each item's manifest split
    units: np.ndarray  # each item's evaluation unit: the item, its manifest row or its subject
    manifest: Any = None  # the filtered Manifest the dataset was built from
    task: str = "classification"  # "classification" | "regression"

    @property
    def is_train(self) -> np.ndarray:
        """Which items are training items. Shape: (N,) bool."""
        return np.asarray(self.splits) == "train"
