"""Probes on frozen features: a cross-validated logistic regression and a cosine kNN.

Linear probe: standardise, then a multinomial logistic regression (L2) whose inverse
regularisation ``C`` is chosen by cross-validated log-loss on the training items, with folds
that keep subjects whole (``StratifiedGroupKFold``): with slices of one subject on both sides
of a fold the CV would reward memorising subjects and pick too weak a regularisation. The
standardisation (and, for raw pixels, the PCA) uses no labels and is fitted once on the whole
training subset; the CV selects ``C`` only.

kNN: cosine similarity to the training items, each of the ``k`` nearest voting with weight
``exp(similarity / temperature)`` (the weighted kNN of Wu et al. 2018, arXiv:1805.01978, used
as the MoCo paper's monitor).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.decomposition import PCA
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def fit_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    Cs: Sequence[float] = DEFAULT_CS,
    n_splits: int = 5,
    pca_components: int | None = None,
    seed: int = 0,
    max_iter: int = 2000,
    n_jobs: int | None = None,
) -> Pipeline:
    """Fits ``StandardScaler -> [PCA] -> LogisticRegression`` with ``C`` chosen by grouped CV.

    With fewer than two subjects per class there is nothing to cross-validate over; ``C=1``
    is then used as is.

    Args:
        features: training features.
        labels: integer class of each row.
        groups: subject of each row; CV folds never split a subject.
        Cs: candidate inverse regularisation strengths.
        n_splits: CV folds (fewer when there are fewer subjects per class).
        pca_components: reduce to this many principal components first (for raw pixels).
        seed: seeds the fold assignment.
        max_iter: L-BFGS iterations.
        n_jobs: processes for the CV fits (scikit-learn's meaning: None one, -1 every core).

    Returns:
        The refitted pipeline; the chosen strength is ``pipeline[-1].C``.

    Shape:
        features: (N, F)  labels, groups: (N,)
    """
    # The scaler (and PCA) use no labels; they are fitted once on the whole training subset,
    # and the cross-validation selects only C.
    reducer = fit_feature_reducer(features, pca_components, seed)
    z = reducer.transform(features)  # (N, F')
    classifier = LogisticRegression(C=1.0, max_iter=max_iter)

    subjects_per_class = min(len(np.unique(groups[labels == c])) for c in np.unique(labels))
    folds = min(n_splits, subjects_per_class)
    if folds >= 2 and len(np.unique(labels)) >= 2:
        search = GridSearchCV(
            classifier,
            {"C": list(Cs)},
            scoring="neg_log_loss",
            cv=StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed),
            error_score=np.nan,
            n_jobs=n_jobs,
        )
        with warnings.catch_warnings():
            # A fold can miss a rare class; its score is NaN and the other folds decide.
            warnings.simplefilter("ignore", FitFailedWarning)
            warnings.simplefilter("ignore", UserWarning)
            search.fit(z, labels, groups=groups)
        if not np.all(np.isnan(search.cv_results_["mean_test_score"])):
            classifier.set_params(C=search.best_params_["C"])
    classifier.fit(z, labels)
    return Pipeline([*reducer.steps, ("logisticregression", classifier)])


def fit_feature_reducer(features: np.ndarray, pca_components: int | None = None, seed: int = 0) -> Pipeline:
    """``StandardScaler -> [PCA]`` fitted on the training features; the probes' first steps.

    Shape:
        features: (N, F)
    """
    steps: list = [StandardScaler()]
    if pca_components is not None:
        n = min(pca_components, features.shape[0], features.shape[1])
        # Not whitened: rescaling every component to unit variance would give the many
        # noise components as much weight as the few informative ones.
        steps.append(PCA(n_components=n, random_state=seed))
    return make_pipeline(*steps).fit(features)


def similarity_weights(distances: np.ndarray, temperature: float) -> np.ndarray:
    """kNN vote weights ``exp(similarity / temperature)`` from cosine distances."""
    return np.exp((1.0 - distances) / temperature)  # cosine distance = 1 - similarity


def fit_knn_probe(
    features: np.ndarray, labels: np.ndarray, *, k: int = 20, temperature: float = 0.07
) -> Pipeline:
    """Fits ``StandardScaler -> cosine kNN`` with similarity-weighted votes.

    Shape:
        features: (N, F)  labels: (N,)
    """
    return cosine_knn(KNeighborsClassifier, features, labels, k=k, temperature=temperature)


def cosine_knn(estimator: type, features: np.ndarray, targets: np.ndarray, *, k: int, temperature: float) -> Pipeline:
    """``StandardScaler -> estimator`` (scikit-learn's kNN classifier or regressor) over cosine
    distances, each neighbour weighted by ``exp(similarity / temperature)``, fitted.

    Raises:
        ValueError: ``k`` below 1.
    """
    if k < 1:
        raise ValueError(f"knn k={k} must be positive")
    knn = estimator(
        n_neighbors=min(k, len(targets)),
        metric="cosine",
        algorithm="brute",
        weights=functools.partial(similarity_weights, temperature=temperature),
    )
    return make_pipeline(StandardScaler(), knn).fit(features, targets)


def predict_proba(model: Pipeline, features: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities over all ``n_classes``, zero for classes the model never saw.

    Shape:
        features: (N, F)  returns: (N, n_classes)
    """
    seen = model.predict_proba(features)  # (N, K_seen) in the order of model.classes_
    proba = np.zeros((features.shape[0], n_classes))
    proba[:, np.asarray(model.classes_, dtype=int)] = seen
    return proba
