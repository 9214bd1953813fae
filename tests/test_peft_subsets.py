"""Label-skewed halves and relabelled tasks: by subject, at the stated shares, nothing lost or doubled."""

from __future__ import annotations

from collections import Counter

import pytest

from mocomri.data.manifest import Manifest, ManifestRow
from mocomri.errors import DataError
from tools.peft_lab.subsets import label_skewed_halves, relabel, subject_classes

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")


def _manifest() -> Manifest:
    """60 training subjects per class with 1-4 images each, some holding a second label; val and test rows."""
    rows = []
    for c, label in enumerate(CLASSES):
        for s in range(60):
            subject = f"{label}-{s}"
            for i in range(1 + (s * 7 + c) % 4):
                other = CLASSES[(c + 1) % 4] if i == 3 else label  # a minority label in the largest subjects
                rows.append(ManifestRow(f"{subject}-{i}.png", subject, label=other, split="train"))
        for split in ("val", "test"):
            rows += [ManifestRow(f"{split}-{label}-{s}.png", f"{split}-{label}-{s}", label=label, split=split)
                     for s in range(3)]
    rows.append(ManifestRow("extra.png", "extra", split="unlabeled"))
    return Manifest(root=".", rows=rows)  # type: ignore[arg-type]


def _majority(rows: list[ManifestRow]) -> dict[str, str]:
    """Each subject's most common label, ties to the first in sorted order, written out by hand."""
    counts: dict[str, Counter] = {}
    for r in rows:
        counts.setdefault(r.subject, Counter())[r.label] += 1
    return {s: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for s, c in counts.items()}


def test_label_skewed_halves__split_by_subject_at_the_stated_shares_and_cover_the_training_set() -> None:
    manifest = _manifest()
    first, second = label_skewed_halves(manifest, ("glioma", "meningioma"), share=0.8, seed=3)
    train = [r for r in manifest.rows if r.split == "train"]
    a = [r for r in first.rows if r.split == "train"]
    b = [r for r in second.rows if r.split == "train"]
    # disjoint by subject, and together exactly the training rows (nothing lost, nothing doubled)
    assert not {r.subject for r in a} & {r.subject for r in b}
    assert sorted(r.path for r in a + b) == sorted(r.path for r in train)
    # the other splits are in both halves, unchanged
    others = [r for r in manifest.rows if r.split != "train"]
    assert [r for r in first.rows if r.split != "train"] == others == [r for r in second.rows if r.split != "train"]
    # shares of each class's images (a subject counts for its majority class) within half the largest subject
    majority = _majority(train)
    for label in CLASSES:
        total = sum(1 for r in train if majority[r.subject] == label)
        in_first = sum(1 for r in a if majority[r.subject] == label)
        stated = 0.8 if label in ("glioma", "meningioma") else 0.2
        largest = max(Counter(r.subject for r in train if majority[r.subject] == label).values())
        assert abs(in_first / total - stated) <= largest / 2 / total, label
        assert {r.label for r in a} >= {label} and {r.label for r in b} >= {label}  # every class in each half


def test_label_skewed_halves__seeded() -> None:
    manifest = _manifest()
    subjects = lambda m: {r.subject for r in m.rows if r.split == "train"}  # noqa: E731
    assert subjects(label_skewed_halves(manifest, ("glioma",), seed=1)[0]) == subjects(label_skewed_halves(manifest, ("glioma",), seed=1)[0])
    assert subjects(label_skewed_halves(manifest, ("glioma",), seed=1)[0]) != subjects(label_skewed_halves(manifest, ("glioma",), seed=2)[0])


def test_subject_classes__majority_with_ties_to_the_first_name() -> None:
    rows = [ManifestRow("1", "s", label="b"), ManifestRow("2", "s", label="a"), ManifestRow("3", "t", label="b"),
            ManifestRow("4", "t", label="b"), ManifestRow("5", "t", label="a")]
    assert subject_classes(rows) == {"s": "a", "t": "b"}


def test_label_skewed_halves__bad_arguments_are_named() -> None:
    manifest = _manifest()
    with pytest.raises(ValueError, match=r"share=1.2 must be in \(0, 1\)"):
        label_skewed_halves(manifest, ("glioma",), share=1.2)
    with pytest.raises(ValueError, match="favoured class\\(es\\) astrocytoma have no 'train' subject"):
        label_skewed_halves(manifest, ("astrocytoma",))
    with pytest.raises(DataError, match="no labelled 'train' rows"):
        label_skewed_halves(manifest.select(["val"]), ("glioma",))


def test_relabel__maps_labels_drops_none_and_keeps_unlabelled_rows() -> None:
    manifest = _manifest()
    presence = relabel(manifest, {"glioma": "tumor", "meningioma": "tumor", "pituitary": "tumor", "notumor": "notumor"})
    assert len(presence) == len(manifest)
    assert presence.labels() == ["notumor", "tumor"]
    for old, new in zip(manifest.rows, presence.rows):
        assert (new.path, new.subject, new.split) == (old.path, old.subject, old.split)
        assert new.label == ("" if not old.label else "notumor" if old.label == "notumor" else "tumor")
    kinds = relabel(manifest, {"glioma": "glioma", "meningioma": "meningioma", "pituitary": "pituitary", "notumor": None})
    assert [r.path for r in kinds.rows] == [r.path for r in manifest.rows if r.label != "notumor"]
    with pytest.raises(ValueError, match="labels notumor, pituitary are not in the mapping"):
        relabel(manifest, {"glioma": "g", "meningioma": "m"})
