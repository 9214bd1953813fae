"""Training sets derived from a manifest for the composition experiments (arXiv:2306.14870, §4).

- :func:`label_skewed_halves`: the paper's distribution-generalisation split, two halves of the
  training subjects with opposite label skews (e.g. 80% of two classes and 20% of the other two,
  and the complement), so that each module sees a different label distribution;
- :func:`relabel`: a task made from another by mapping its labels (e.g. tumour vs no tumour) and
  dropping rows (e.g. tumour type on the tumour images only).

Both keep whole subjects together and leave the ``val`` and ``test`` rows to the caller.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from mocomri.data.manifest import Manifest, ManifestRow
from mocomri.errors import DataError


def subject_classes(rows: Sequence[ManifestRow]) -> dict[str, str]:
    """Each subject's class: the most common label among its rows (ties: the first in sorted order).

    Subjects of near-duplicate groups can hold images of several labels; a subject goes to one
    half whole, so it is assigned by its majority.
    """
    by_subject: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        by_subject[row.subject][row.label] += 1
    return {s: min(c, key=lambda label: (-c[label], label)) for s, c in by_subject.items()}


def label_skewed_halves(manifest: Manifest, favoured: Sequence[str], share: float = 0.8,
                        seed: int = 0) -> tuple[Manifest, Manifest]:
    """Splits the labelled ``train`` rows by subject into two halves with opposite label skews.

    For each class, its subjects (by :func:`subject_classes`) are shuffled with ``seed`` and the
    first ones, up to the count of images nearest to ``share`` of the class's images, go to the
    first half for a class in ``favoured`` (to the second half for the others); the rest go to
    the other half. So the first half holds about ``share`` of the images of the favoured classes
    and ``1 - share`` of the others, the second half the complement; an image share is off by at
    most half the largest subject of its class. Rows of other splits are kept in both halves.

    Args:
        manifest: the manifest; its labelled ``train`` rows are split.
        favoured: the classes the first half holds ``share`` of.
        share: in (0, 1).
        seed: shuffles the subjects of each class.

    Returns:
        ``(first, second)``: manifests with the same root; their ``train`` rows are disjoint by
        subject and together are the labelled ``train`` rows.

    Raises:
        ValueError: ``share`` outside (0, 1), or a favoured class that has no ``train`` row.
        DataError: no labelled ``train`` rows.
    """
    if not 0 < share < 1:
        raise ValueError(f"share={share} must be in (0, 1)")
    train = [r for r in manifest.rows if r.split == "train" and r.label]
    if not train:
        raise DataError(f"{manifest.root}: no labelled 'train' rows to split")
    classes = subject_classes(train)
    missing = sorted(set(favoured) - set(classes.values()))
    if missing:
        raise ValueError(f"favoured class(es) {', '.join(missing)} have no 'train' subject "
                         f"(classes: {', '.join(sorted(set(classes.values())))})")
    images = Counter(r.subject for r in train)
    rng = np.random.default_rng(seed)
    first: set[str] = set()
    for label in sorted(set(classes.values())):
        subjects = sorted(s for s, c in classes.items() if c == label)
        subjects = [subjects[i] for i in rng.permutation(len(subjects))]
        cumulative = np.cumsum([0] + [images[s] for s in subjects])  # images in the first k subjects
        target = (share if label in favoured else 1 - share) * cumulative[-1]
        k = int(np.argmin(np.abs(cumulative - target)))
        first.update(subjects[:k])
    others = [r for r in manifest.rows if not (r.split == "train" and r.label)]
    return (manifest.replace_rows([r for r in train if r.subject in first] + others),
            manifest.replace_rows([r for r in train if r.subject not in first] + others))


def relabel(manifest: Manifest, mapping: Mapping[str, str | None]) -> Manifest:
    """The labelled rows with their labels mapped: ``mapping[label]`` is the new label, None drops the row.

    Unlabelled rows are kept as they are.

    Raises:
        ValueError: a label of the manifest that ``mapping`` does not mention (the message lists them).
    """
    unknown = sorted({r.label for r in manifest.rows if r.label} - set(mapping))
    if unknown:
        raise ValueError(f"labels {', '.join(unknown)} are not in the mapping ({', '.join(sorted(mapping))})")
    rows = [r if not r.label else dataclasses.replace(r, label=mapping[r.label])
            for r in manifest.rows if not r.label or mapping[r.label] is not None]
    return manifest.replace_rows(rows)
