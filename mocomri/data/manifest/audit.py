"""The manifest audit: what is there, what cannot be read, and what leaks between splits.

It runs every time a manifest is made. It decodes every file once (through a caller-supplied
``load``, so the same pass can fill the preprocessing cache), which finds a bad scan before
training does, and it groups files by content hash: a val or test file byte-identical to a file
in an earlier split (train, unlabeled, then val) would inflate every score, so by default it is
dropped from the later split, and the report lists it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from mocomri.data.io import load_scan
from mocomri.data.manifest.schema import SPLITS, Manifest, ManifestRow
from mocomri.errors import DataError
from mocomri.files import file_digest

# A file in a later split that duplicates one in an earlier split is the later one's leak.
SPLIT_ORDER = {"train": 0, "unlabeled": 1, "val": 2, "test": 3}
_SHOWN = 10  # examples listed per finding


@dataclass
class AuditReport:
    """What :func:`audit` found. ``manifest`` is the audited manifest after any drops.

    Attributes:
        manifest: the rows kept (``sha1`` filled in).
        unreadable: (row path, reason) for every file that could not be decoded.
        duplicate_groups: groups of rows (of the input manifest, sha1 filled) with identical
            content, two or more rows each.
        dropped: val/test rows removed because a train/unlabeled/val row has the same content,
            each with the path of the row it duplicates.
        dropped_unreadable: rows removed because they could not be decoded.
        subject_leaks: subjects that have rows in more than one split.
        subjects_are_images: True when the manifest has no patient ids (one subject per image).
    """

    manifest: Manifest
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    duplicate_groups: list[list[ManifestRow]] = field(default_factory=list)
    dropped: list[tuple[ManifestRow, str]] = field(default_factory=list)
    dropped_unreadable: list[ManifestRow] = field(default_factory=list)
    subject_leaks: list[str] = field(default_factory=list)
    subjects_are_images: bool = False
    decoded: bool = True

    def within_split(self) -> dict[str, list[list[ManifestRow]]]:
        """Duplicate groups restricted to each split (groups of two or more rows of that split)."""
        out: dict[str, list[list[ManifestRow]]] = defaultdict(list)
        for group in self.duplicate_groups:
            by_split = defaultdict(list)
            for row in group:
                by_split[row.split].append(row)
            for split, rows in by_split.items():
                if len(rows) > 1:
                    out[split].append(rows)
        return dict(out)

    def across_splits(self) -> dict[tuple[str, str], list[list[ManifestRow]]]:
        """Duplicate groups spanning splits, keyed by the (earlier, later) pair of splits."""
        out: dict[tuple[str, str], list[list[ManifestRow]]] = defaultdict(list)
        for group in self.duplicate_groups:
            splits = sorted({r.split for r in group}, key=lambda s: SPLIT_ORDER.get(s, 9))
            for i, first in enumerate(splits):
                for later in splits[i + 1:]:
                    out[(first, later)].append(group)
        return dict(out)

    def conflicting_labels(self) -> list[list[ManifestRow]]:
        """Duplicate groups whose rows carry different labels."""
        return [g for g in self.duplicate_groups if len({r.label for r in g if r.label}) > 1]

    def __str__(self) -> str:
        m = self.manifest
        lines = [f"audit: {len(m)} rows, {len(m.subjects())} subjects, root {m.root}"]
        if self.subjects_are_images:
            lines.append(
                "  note: no patient ids; each image is its own subject, so splits cannot keep two images "
                "of one patient together (scores may be optimistic)"
            )
        lines.append(f"  {'split':<10} {'files':>6} {'share':>6} {'subjects':>9}  labels")
        for split in [s for s in SPLITS if s in m.counts("split")]:
            part = m.select(split)
            labels = ", ".join(f"{k or '(none)'} {v}" for k, v in sorted(part.counts("label").items()))
            share = f"{len(part) / len(m):.1%}"
            lines.append(f"  {split:<10} {len(part):>6} {share:>6} {len(part.subjects()):>9}  {labels}")
        modalities = ", ".join(f"{k} {v}" for k, v in sorted(m.counts("modality").items()))
        lines.append(f"  modalities: {modalities}")
        if not self.decoded:
            lines.append("  files not decoded (--no-decode): unreadable files are not checked")
        lines.append(f"  unreadable files: {len(self.unreadable)}")
        lines += [f"    {path}: {reason}" for path, reason in self.unreadable[:_SHOWN]]
        if len(self.unreadable) > _SHOWN:
            lines.append(f"    ... and {len(self.unreadable) - _SHOWN} more")
        if self.dropped_unreadable:
            lines.append(f"  dropped {len(self.dropped_unreadable)} unreadable rows from the manifest")
        n_dup = sum(len(g) for g in self.duplicate_groups)
        lines.append(f"  duplicates by content (sha1): {len(self.duplicate_groups)} groups, {n_dup} files")
        for split, groups in sorted(self.within_split().items()):
            lines.append(f"    within {split}: {len(groups)} groups, {sum(len(g) for g in groups)} files")
        for (a, b), groups in sorted(self.across_splits().items()):
            lines.append(f"    across {a} and {b}: {len(groups)} groups")
        conflicts = self.conflicting_labels()
        if conflicts:
            lines.append(f"    with conflicting labels: {len(conflicts)} groups, e.g. "
                         + " = ".join(f"{r.path} ({r.label})" for r in conflicts[0]))
        if self.dropped:
            lines.append(f"  dropped {len(self.dropped)} val/test rows identical to a row of an earlier split:")
            lines += [f"    {row.split}: {row.path} = {original}" for row, original in self.dropped[:_SHOWN]]
            if len(self.dropped) > _SHOWN:
                lines.append(f"    ... and {len(self.dropped) - _SHOWN} more")
        if self.subject_leaks:
            shown = ", ".join(self.subject_leaks[:_SHOWN])
            lines.append(f"  WARNING: {len(self.subject_leaks)} subjects are in more than one split: {shown}")
        return "\n".join(lines)


def _strip_scan_suffix(path: str) -> str:
    for suffix in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        if path.lower().endswith(suffix):
            return path[: -len(suffix)]
    return path


def audit(
    manifest: Manifest,
    load: Callable[[Path], object] | None = None,
    decode: bool = True,
    drop_duplicates: bool = True,
    drop_unreadable: bool = False,
    progress: bool = False,
) -> AuditReport:
    """Audits a manifest: counts, unreadable files, duplicates within and across splits.

    Args:
        manifest: the manifest (rows with an empty ``sha1`` get one computed).
        load: decodes one file, raising DataError when it cannot (default:
            :func:`mocomri.data.io.load_scan`; pass ``PreprocessCache.get`` to fill the cache).
        decode: False skips decoding (hashing only).
        drop_duplicates: drop val/test rows identical to a row of an earlier split.
        drop_unreadable: drop rows whose file could not be decoded.
        progress: show a tqdm progress bar.

    Returns:
        The :class:`AuditReport`; ``str(report)`` is the printable audit.
    """
    load = load or load_scan
    rows: list[ManifestRow] = []
    unreadable: list[tuple[str, str]] = []
    bad: set[int] = set()
    for i, row in enumerate(tqdm(manifest.rows, desc="audit", unit="file", disable=not progress)):
        path = manifest.abspath(row)
        if not path.is_file():
            unreadable.append((row.path, "file does not exist"))
            bad.add(i)
            rows.append(row)
            continue
        rows.append(row if row.sha1 else replace(row, sha1=file_digest(path)))
        if decode:
            try:
                load(path)
            except DataError as e:
                unreadable.append((row.path, str(e).removeprefix(f"{path}: ")))
                bad.add(i)

    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        if row.sha1 and i not in bad:
            by_hash[row.sha1].append(i)
    groups = [idx for idx in by_hash.values() if len(idx) > 1]

    drop: dict[int, str] = {}
    if drop_duplicates:
        for idx in groups:
            first = min(idx, key=lambda i: (SPLIT_ORDER.get(rows[i].split, 9), i))
            for i in idx:
                if rows[i].split in ("val", "test") and SPLIT_ORDER[rows[i].split] > SPLIT_ORDER.get(rows[first].split, 9):
                    drop[i] = rows[first].path
    removed_bad = bad if drop_unreadable else set()
    kept = [row for i, row in enumerate(rows) if i not in drop and i not in removed_bad]

    splits_of: dict[str, set[str]] = defaultdict(set)
    for row in kept:
        splits_of[row.subject].add(row.split)
    counts = Counter(r.subject for r in rows)
    return AuditReport(
        manifest=Manifest(manifest.root, kept),
        unreadable=unreadable,
        duplicate_groups=[[rows[i] for i in idx] for idx in groups],
        dropped=[(rows[i], original) for i, original in sorted(drop.items())],
        dropped_unreadable=[rows[i] for i in sorted(removed_bad)],
        subject_leaks=sorted(s for s, splits in splits_of.items() if len(splits) > 1),
        subjects_are_images=bool(rows) and all(
            counts[r.subject] == 1 and r.subject == _strip_scan_suffix(r.path) for r in rows
        ),
        decoded=decode,
    )
