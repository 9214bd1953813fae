"""The experiments' own rules for choosing λ (``tools/peft_experiments.py``), beside the product's.

``mocomri peft compose`` chooses λ by one rule, the best validation score
(:func:`mocomri.peft.compose.choose_lambda`). The experiments' bars asked two more questions:

- :func:`share_kept` (``--multitask-lambda kept``): the merge for several tasks that loses least
  on its worst, scored by the smallest share of each own module's accuracy it keeps;
- :func:`choose_lambda_guarded` (``--domain-lambda guarded``): a target domain gains only what the
  source can spare, the best target accuracy among the λ that lose at most ``guard`` (the domain
  bar's tolerance) on the source against the source-only module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mocomri.peft.compose import DEFAULT_GRID

DEFAULT_GUARD = 0.01  # the accuracy a guarded set may lose: one point, the domain bar's tolerance
# A λ's loss on a guarded set is judged by the lower end of its paired 95% CI by subject
# (non-inferiority), or by the point estimate.
GUARD_BY = ("ci", "estimate")


def share_kept(accuracy: Sequence[float], reference: Sequence[float]) -> float:
    """The smallest ``accuracy[i] / reference[i]``: how much of each reference accuracy is kept, on
    the set where least is. A reference of 0 leaves nothing to lose: that set counts as fully kept.

    Raises:
        ValueError: no sets, or not one reference per accuracy.
    """
    if len(accuracy) != len(reference) or not accuracy:
        raise ValueError(f"{len(accuracy)} accuracies and {len(reference)} references: give one of each per set")
    return min(a / r if r > 0 else 1.0 for a, r in zip(accuracy, reference))


def choose_lambda_guarded(accuracies: Callable[[float], Sequence[float]], grid: Sequence[float] = DEFAULT_GRID,
                          guard: float = DEFAULT_GUARD, *,
                          lower_bounds: Callable[[float], Sequence[float]] | None = None) -> tuple[float, list[dict]]:
    """The λ of ``grid`` with the best first accuracy among those that lose at most ``guard`` on
    every other set against λ = 1 (the first input module alone); the first of ties.

    A λ loses at most ``guard`` on a set when its accuracy there is at least the reference's minus
    ``guard`` (``lower_bounds`` None: point estimates), or, given ``lower_bounds``, when the lower
    end of the confidence interval of its difference from the reference is at least ``−guard``: a
    non-inferiority test, which does not let a small validation split's noise pass a λ that loses
    more (choosing the best of many λ favours those whose loss the split underestimates).

    Args:
        accuracies: λ -> (accuracy on the set to improve, accuracy on each guarded set, ...).
        grid: the λ values tried; must hold 1, the reference (always allowed).
        guard: the accuracy a guarded set may lose against the reference, e.g. 0.01.
        lower_bounds: λ -> for each guarded set, the lower confidence bound of
            ``accuracy(λ) − accuracy(1)`` on it.

    Returns:
        ``(λ, [{"lambda": λ, "score": first accuracy, "guarded": [others], "allowed": bool}, ...])``
        in grid order; with ``lower_bounds``, each point also has ``"lower": [bounds]``.

    Raises:
        ValueError: an empty grid, a grid without λ = 1, fewer than two accuracies, or a negative guard.
    """
    if not grid:
        raise ValueError("the λ grid is empty")
    if 1.0 not in grid:
        raise ValueError("the guarded λ rule compares every λ with the first module alone: the grid needs λ = 1")
    if guard < 0:
        raise ValueError(f"guard {guard}: the accuracy a guarded set may lose cannot be negative")
    reference = list(accuracies(1.0))
    if len(reference) < 2:
        raise ValueError("the guarded λ rule needs a set to improve and at least one set to guard")
    curve = []
    for lam in grid:
        first, *others = (float(a) for a in accuracies(lam))
        point = {"lambda": float(lam), "score": first, "guarded": others}
        if float(lam) == 1.0:
            allowed = True
        elif lower_bounds is None:
            allowed = all(a >= r - guard for a, r in zip(others, reference[1:]))
        else:
            point["lower"] = [float(b) for b in lower_bounds(lam)]
            allowed = all(b >= -guard for b in point["lower"])
        curve.append({**point, "allowed": allowed})
    best = max((point for point in curve if point["allowed"]), key=lambda point: point["score"])
    return best["lambda"], curve
