"""Regression probes on frozen features: a cross-validated ridge regression and a cosine kNN regressor.

The regression counterparts of :mod:`mocomri.eval.probe`, with the same first steps and the same
grouped cross-validation. Ridge: standardise (and, for raw pixels, PCA) once on the training
subset, then ``Ridge`` whose ``alpha`` is chosen by cross-validated mean squared error (what
ridge minimises) with folds that keep subjects whole (``GroupKFold``). kNN: the same cosine
neighbours and ``exp(similarity / temperature)`` weights as the kNN classifier, averaging the
neighbours' targets instead of voting.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline

from mocomri.eval.probe import cosine_knn, fit_feature_reducer

# Standardised features of a few hundred dimensions, from a handful to thousands of items: the
# useful penalty spans many decades, strongest where labelled subjects are few.
DEFAULT_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
DEFAULT_ALPHA = 1.0  # without two subjects there is nothing to cross-validate over


def fit_ridge_probe(
    features: np.ndarray,
    targets: np.ndarray,
    groups: np.ndarray,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    n_splits: int = 5,
    pca_components: int | None = None,
    seed: int = 0,
) -> Pipeline:
    """Fits ``StandardScaler -> [PCA] -> Ridge`` with ``alpha`` chosen by grouped CV.

    The fits are closed-form and take milliseconds, so the CV runs in this process (starting
    worker processes would cost more than the fits).

    Args:
        features: training features.
        targets: numeric target of each row.
        groups: subject of each row; CV folds never split a subject.
        alphas: candidate penalties.
        n_splits: CV folds (fewer when there are fewer subjects).
        pca_components: reduce to this many principal components first (for raw pixels).
        seed: seeds the fold assignment (and the PCA).

    Returns:
        The refitted pipeline; the chosen penalty is ``pipeline[-1].alpha``.

    Raises:
        ValueError: ``alphas`` is empty or holds a penalty that is not positive.

    Shape:
        features: (N, F)  targets, groups: (N,)
    """
    if not alphas or min(alphas) <= 0:
        raise ValueError(f"ridge alphas {list(alphas)} must be positive and at least one")
    targets = np.asarray(targets, dtype=float)
    reducer = fit_feature_reducer(features, pca_components, seed)
    z = reducer.transform(features)  # (N, F')
    regressor = Ridge(alpha=DEFAULT_ALPHA)
    folds = min(n_splits, len(np.unique(groups)))
    if folds >= 2:
        search = GridSearchCV(
            regressor,
            {"alpha": list(alphas)},
            scoring="neg_mean_squared_error",
            cv=GroupKFold(n_splits=folds, shuffle=True, random_state=seed),
        )
        search.fit(z, targets, groups=groups)
        regressor.set_params(alpha=search.best_params_["alpha"])
    regressor.fit(z, targets)
    return Pipeline([*reducer.steps, ("ridge", regressor)])


def fit_knn_regressor(
    features: np.ndarray, targets: np.ndarray, *, k: int = 20, temperature: float = 0.07
) -> Pipeline:
    """Fits ``StandardScaler -> cosine kNN`` averaging the neighbours' targets, similarity-weighted.

    Shape:
        features: (N, F)  targets: (N,)
    """
    return cosine_knn(KNeighborsRegressor, features, np.asarray(targets, dtype=float), k=k, temperature=temperature)
