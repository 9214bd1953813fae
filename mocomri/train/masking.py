"""How much of the queue same-subject masking takes away, checked before a run starts.

With ``moco.mask_same_subject``, a queue entry from the query's own subject is not one of its
negatives (:func:`mocomri.losses.info_nce`). On a balanced set of many subjects that removes a
small share of the queue; on a set where one (pseudo-)subject holds most items it removes
nearly all of it, the task left to the encoder is trivial, and the run collapses. So masking
covers only as many subjects as a bound on the removed share allows (:func:`plan_masking`), and
the run says which it left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


def expected_masked_share(subject_sizes: Sequence[int]) -> float:
    """The expected share of the queue that same-subject masking removes: Σ_s p_s².

    A query is drawn uniformly from the N pretraining items, and so (approximately) is each of
    the K keys in the queue; the key is masked when both are of one subject, which happens with
    probability Σ_s p_s² for p_s = n_s / N. The same holds as an expectation when K >= N and the
    queue holds keys of the query's own image.

    Args:
        subject_sizes: the number of pretraining items of each subject.

    Returns:
        The expected masked share, in (0, 1].

    Raises:
        ValueError: a negative size, or no item at all.
    """
    if any(n < 0 for n in subject_sizes):
        raise ValueError(f"subject_sizes={list(subject_sizes)} must not be negative")
    total = sum(subject_sizes)
    if total <= 0:
        raise ValueError("subject_sizes must hold at least one item")
    return sum((n / total) ** 2 for n in subject_sizes)


@dataclass(frozen=True)
class MaskingPlan:
    """Which subjects same-subject masking covers, and what it costs the queue.

    Attributes:
        masked: the subjects whose keys are masked for their own queries.
        share: the expected masked share if every subject were masked.
        masked_share: the expected masked share of the plan (at most the bound).
        unmasked: the subjects left unmasked, largest first, with their share of the items.
    """

    masked: frozenset[str]
    share: float
    masked_share: float
    unmasked: tuple[tuple[str, float], ...]

    def message(self, max_share: float) -> str | None:
        """One line for the run's log when the bound left subjects unmasked, else None."""
        if not self.unmasked:
            return None
        shown = ", ".join(f"{s!r} {p:.1%}" for s, p in self.unmasked[:3])
        more = f" and {len(self.unmasked) - 3} more" if len(self.unmasked) > 3 else ""
        return (
            f"same-subject masking of every subject would remove {self.share:.1%} of the queue's negatives "
            f"(moco.mask_max_share={max_share:g}): masking {len(self.masked)} subjects ({self.masked_share:.1%}), "
            f"not the largest {len(self.unmasked)}: {shown}{more}. A subject holding a large share of the items is "
            "rarely one patient: check the manifest's subject column (real patient ids, or `mocomri manifest` "
            "with a lower --near-threshold), or set moco.mask_same_subject=false"
        )


def plan_masking(item_subjects: Sequence[str], max_share: float) -> MaskingPlan:
    """The subjects to mask so that masking removes at most ``max_share`` of the queue.

    Subjects are taken smallest first while the expected masked share (:func:`expected_masked_share`
    restricted to them: Σ p_s² over the masked subjects) stays within ``max_share``; the largest
    ones, where masking costs the most negatives and which are the least likely to be one
    patient, are left unmasked. On a set of many balanced subjects every subject is masked.

    Args:
        item_subjects: the subject of every pretraining item (the slices of a volume are
            items of their own, so a subject counts once per item, not once per scan).
        max_share: the largest expected masked share allowed (``moco.mask_max_share``).
    """
    sizes = Counter(item_subjects)
    n = len(item_subjects)
    share = expected_masked_share(list(sizes.values()))
    masked, masked_share = [], 0.0
    for subject, count in sorted(sizes.items(), key=lambda kv: (kv[1], kv[0])):
        cost = (count / n) ** 2
        if masked_share + cost > max_share + 1e-12:  # a share exactly at the bound is allowed
            break
        masked.append(subject)
        masked_share += cost
    kept = frozenset(masked)
    unmasked = tuple((s, c / n) for s, c in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])) if s not in kept)
    return MaskingPlan(kept, share, masked_share, unmasked)
