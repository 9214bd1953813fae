"""95% bootstrap confidence intervals, percentile method, vectorised over resamples.

A resample is represented by the multiplicity of each test item (``weights[b, i]`` = how often
item ``i`` was drawn in resample ``b``), so all resamples are evaluated with a few matrix
operations (see :func:`mocomri.eval.metrics.weighted_metrics`) instead of a Python loop.

With ``groups`` the bootstrap resamples whole groups (subjects) rather than items: slices and
scans of one subject are correlated, and resampling them independently would make the interval
too narrow (a cluster bootstrap; Field & Welsh 2007).

The metrics are those of a task (:data:`~mocomri.eval.tasks.METRIC_SETS`): classification by
default, regression (MAE, RMSE, R²) with ``metric_set=METRIC_SETS["regression"]``.
"""

from __future__ import annotations

import numpy as np

from mocomri.eval.tasks import CLASSIFICATION, METRIC_SETS, MetricSet


def resample_weights(
    n_items: int, n_boot: int, rng: np.random.Generator, groups: np.ndarray | None = None
) -> np.ndarray:
    """Multiplicities of ``n_boot`` bootstrap resamples of ``n_items`` items.

    Args:
        n_items: N, the number of test items.
        n_boot: B, the number of resamples.
        rng: the random generator (seeded by the caller).
        groups: optional group label per item; whole groups are drawn with replacement.

    Returns:
        Integer weights; each row sums to N without groups, and to the items of the drawn
        groups with them.

    Shape:
        groups: (N,)  returns: (B, N)
    """
    if groups is None:
        codes, n_units = np.arange(n_items), n_items
    else:
        _, codes = np.unique(np.asarray(groups), return_inverse=True)
        n_units = int(codes.max()) + 1
    draws = rng.integers(0, n_units, size=(n_boot, n_units))  # (B, G) unit indices
    flat = (draws + n_units * np.arange(n_boot)[:, None]).ravel()
    unit_weights = np.bincount(flat, minlength=n_boot * n_units).reshape(n_boot, n_units)
    return unit_weights[:, codes]  # (B, N): each item takes its unit's multiplicity


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap samples (NaN samples are dropped)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must be in (0, 1)")
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 250,
    metric_set: MetricSet = METRIC_SETS[CLASSIFICATION],
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every metric of ``metric_set`` (classification's by default).

    With a stack of predictions (several classifiers scored on the same test items, e.g. one per
    label-fraction draw), each resample scores every classifier on the same drawn items and
    averages: the interval is that of the mean over the stack, the figure reported beside it.

    Args:
        y_true: integer class indices (regression: the targets).
        proba: predicted class probabilities, or a stack of them (regression: predicted values).
        groups: optional subject per item, for a cluster bootstrap.
        n_boot: number of resamples.
        confidence: coverage of the interval (0.95 gives the 2.5th and 97.5th percentiles).
        seed: seeds the resampling.
        chunk: resamples evaluated at once (bounds memory to ``chunk * N`` weights).
        metric_set: the task's metrics.

    Returns:
        ``{metric: (low, high)}``.

    Shape:
        y_true: (N,)  proba: (N, K) or (S, N, K); regression (N,) or (S, N)  groups: (N,)
    """
    samples = _resampled_means(y_true, [proba], groups, n_boot, seed, chunk, metric_set)
    return {m: percentile_interval(v[0], confidence) for m, v in samples.items()}


def bootstrap_difference(
    y_true: np.ndarray,
    proba_a: np.ndarray,
    proba_b: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 250,
    metric_set: MetricSet = METRIC_SETS[CLASSIFICATION],
) -> dict[str, tuple[float, float]]:
    """Paired percentile bootstrap intervals of ``metric(a) - metric(b)`` for every metric.

    Both are scored on each resample's same drawn items (subjects, with ``groups``), so what the
    two share (which test subjects are easy) cancels, and the interval is that of the
    difference: narrower than what two separate intervals suggest when the methods err on the
    same subjects. Stacks are averaged as in :func:`bootstrap_metrics`.

    Shape:
        y_true: (N,)  proba_a, proba_b: (N, K) or (S, N, K); regression (N,) or (S, N)  groups: (N,)
    """
    samples = _resampled_means(y_true, [proba_a, proba_b], groups, n_boot, seed, chunk, metric_set)
    return {m: percentile_interval(v[0] - v[1], confidence) for m, v in samples.items()}


def _resampled_means(
    y_true: np.ndarray,
    probas: list[np.ndarray],
    groups: np.ndarray | None,
    n_boot: int,
    seed: int,
    chunk: int,
    metric_set: MetricSet,
) -> dict[str, np.ndarray]:
    """Each metric of each prediction stack (averaged over the stack), on the same resamples.

    Shape:
        probas: each (N, K) or (S, N, K) (regression: (N,) or (S, N))  returns: each metric (len(probas), n_boot)
    """
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot} must be positive")
    single = metric_set.prediction_ndim + 1  # the ndim of one classifier's predictions, unstacked
    stacks = [np.asarray(p)[None] if np.ndim(p) == single else np.asarray(p) for p in probas]
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {m: [] for m in metric_set.names}
    for start in range(0, n_boot, chunk):
        weights = resample_weights(len(y_true), min(chunk, n_boot - start), rng, groups)
        per_stack = [[metric_set.weighted(y_true, p, weights) for p in stack] for stack in stacks]
        for name in metric_set.names:
            samples[name].append(np.stack([np.mean([m[name] for m in members], axis=0) for members in per_stack]))
    return {m: np.concatenate(v, axis=1) for m, v in samples.items()}
