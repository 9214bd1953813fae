"""The manifest recipe: scan a folder (or read a table of its files) → label maps aside → pseudo-subjects
where ids are missing → split → audit.

``mocomri manifest`` is a thin wrapper around :func:`build_manifest`; the demo and the benchmarks
call it directly.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mocomri.data.io import file_kind, load_scan
from mocomri.data.manifest.audit import AuditReport, _strip_scan_suffix, audit
from mocomri.data.manifest.near_duplicates import (
    DEFAULT_THRESHOLD,
    DEFAULT_THRESHOLD_3D,
    NearDuplicates,
    PercolationError,
    choose_threshold,
    largest_group_limit,
    phash_2d,
    phash_3d,
)
from mocomri.data.manifest.listing import scan_table
from mocomri.data.manifest.scan import LABEL_MAP, check_layout_options, detect_layout, scan_root
from mocomri.data.manifest.schema import Manifest, ManifestRow
from mocomri.data.manifest.splits import assign_splits
from mocomri.data.manifest.tables import read_label_table
from mocomri.errors import DataError


@dataclass
class NearDuplicateReport:
    """What the near-duplicate pass found and did (printed after the audit).

    Attributes:
        threshold: the thresholds used, in bits of 64, e.g. ``"6 (2D)"`` (see :mod:`.near_duplicates`).
        found: the groups over every row that could be hashed (indices into ``hashed_rows``).
        hashed_rows: the rows hashed, before splitting.
        pseudo_subjects: True when the groups became the subjects (the set had no patient ids).
        leaked_folders: near-duplicate pairs across the split folders the set came with.
        resplit: True when those folders were replaced by splits made by pseudo-subject.
        unhashed: rows that could not be hashed (path, reason).
        pairs_across_splits: near-duplicate pairs whose two rows ended in different splits.
        chosen: for each kind whose threshold was chosen from the data, why that one.
    """

    threshold: str
    found: NearDuplicates
    hashed_rows: list[ManifestRow]
    pseudo_subjects: bool
    leaked_folders: int
    resplit: bool
    unhashed: list[tuple[str, str]]
    pairs_across_splits: Counter
    chosen: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        groups = self.found.groups()
        n_in = sum(len(g) for g in groups)
        sizes = ", ".join(f"{k}: {v}" for k, v in self.found.size_histogram().items() if v)
        lines = [f"near-duplicates (perceptual hash, Hamming distance <= {self.threshold} of 64 bits): "
                 f"{len(self.found.pairs)} pairs, {len(groups)} groups holding {n_in} of {len(self.hashed_rows)} files"]
        lines += [f"  {line}" for line in self.chosen]
        lines.append(f"  group sizes (files per group: groups): {sizes}")
        if groups:
            largest = groups[0]
            lines.append(f"  largest group: {len(largest)} files, e.g. "
                         + ", ".join(self.hashed_rows[i].path for i in largest[:3]))
        if self.pseudo_subjects:
            lines.append(f"  no patient ids: the {len(np.unique(self.found.group))} groups (singletons included) "
                         "are the subjects (pseudo-subjects), so near-copies and neighbouring slices stay in one split")
        if self.leaked_folders:
            what = ("replaced by splits made by pseudo-subject (--keep-split-folders keeps them)" if self.resplit
                    else "kept as given (--keep-split-folders): scores on this split are optimistic")
            lines.append(f"  WARNING: the set's own split folders leak: {self.leaked_folders} near-duplicate pairs "
                         f"cross them; {what}")
        if self.pairs_across_splits:
            across = ", ".join(f"{a}-{b} {n}" for (a, b), n in sorted(self.pairs_across_splits.items()))
            note = "" if self.pseudo_subjects else " (of different subject ids: check whether they are one person's scans)"
            lines.append(f"  near-duplicate pairs across the final splits: {across}{note}")
        else:
            lines.append("  near-duplicate pairs across the final splits: none")
        if self.unhashed:
            lines.append(f"  not hashed (unreadable): {len(self.unhashed)}")
        return "\n".join(lines)


@dataclass
class BuildResult:
    """The manifest made (``report.manifest``), its audit, and what was left out.

    Attributes:
        layout: the layout scanned.
        report: the audit of the rows kept.
        near: the near-duplicate pass, or None when skipped.
        label_maps: segmentations and masks found beside the scans, left out of the images.
    """

    layout: str
    report: AuditReport
    near: NearDuplicateReport | None
    label_maps: list[ManifestRow]

    @property
    def manifest(self) -> Manifest:
        return self.report.manifest

    def __str__(self) -> str:
        parts = [f"layout: {self.layout}", str(self.report)]
        if self.label_maps:
            examples = ", ".join(r.path for r in self.label_maps[:3])
            parts.append(f"label maps and masks left out of the images (never pretraining inputs): "
                         f"{len(self.label_maps)} files, e.g. {examples}")
        if self.near is not None:
            parts.append(str(self.near))
        return "\n".join(parts)


def perceptual_hash(path: Path) -> int:
    """The 64-bit perceptual hash of a 2D image or a NIfTI volume (see :mod:`.near_duplicates`)."""
    if file_kind(path) == "image2d":
        return phash_2d(path)
    return phash_3d(load_scan(path).array)


AUTO = "auto"
_HIGHEST = {"2d": DEFAULT_THRESHOLD, "3d": DEFAULT_THRESHOLD_3D}


def _by_dim(thresholds: dict[str, int]) -> dict[str, int]:
    return {kind.split(":")[0]: t for kind, t in thresholds.items()}


def _thresholds(hashes: list[int], kinds: list[str], given: dict[str, int | str], pseudo: bool) -> tuple[dict[str, int], list[str]]:
    """The threshold of each kind (``"2d:T1w"``...): chosen from the data where ``given`` says ``"auto"``.

    Only where the groups are to become the subjects (``pseudo``) does percolation matter: then
    ``"auto"`` is chosen from the data, and a threshold the user gave is honoured, but a group that
    swallows more than its share of the set is an error (it makes a useless split and empties the
    queue of negatives). With patient ids, ``"auto"`` is the default threshold: the groups only
    report near pairs across subjects.
    """
    thresholds, chosen = {}, []
    for dim in sorted({k.split(":")[0] for k in kinds}):
        index = [i for i, k in enumerate(kinds) if k.startswith(dim)]
        dim_hashes, dim_kinds = [hashes[i] for i in index], [kinds[i] for i in index]
        if given[dim] == AUTO and not pseudo:
            t = _HIGHEST[dim]
        elif given[dim] == AUTO:
            choice = choose_threshold(dim_hashes, dim_kinds, highest=_HIGHEST[dim])
            t = choice.threshold
            chosen.append(f"threshold {t} for {dim.upper()} chosen from the data: {choice.reason()}")
        else:
            t = int(given[dim])
            if pseudo:
                largest = NearDuplicates.from_hashes(dim_hashes, t, dim_kinds).largest()
                if largest > largest_group_limit(len(index)):
                    raise PercolationError(
                        f"at --near-threshold{'-3d' if dim == '3d' else ''} {t} one near-duplicate group holds "
                        f"{largest} of {len(index)} files ({largest / len(index):.0%}), more than one patient can: "
                        "give patient ids (--labels FILE --id-column COLUMN), a lower threshold (or leave it out "
                        "to choose one from the data), or keep the set's folders (--keep-split-folders)"
                    )
        thresholds.update({k: t for k in set(dim_kinds)})
    return thresholds, chosen


def _subjects_are_images(rows: list[ManifestRow]) -> bool:
    counts = Counter(r.subject for r in rows)
    return bool(rows) and all(counts[r.subject] == 1 and r.subject == _strip_scan_suffix(r.path) for r in rows)


def _near_duplicate_pass(root: Path, rows: list[ManifestRow], given: dict[str, int | str], keep_split_folders: bool,
                         unlabeled: bool, progress: bool) -> tuple[list[ManifestRow], NearDuplicateReport]:
    """Hashes every row, groups near-duplicates and, where the set has no patient ids, makes the
    groups its subjects (re-splitting split folders that the groups cross, unless kept)."""
    hashes, hashed, kinds, unhashed = [], [], [], []
    for row in tqdm(rows, desc="perceptual hash", unit="file", disable=not progress):
        try:
            hashes.append(perceptual_hash(root / row.path))
            hashed.append(row)
            # Compared within one dimensionality and one modality: a near-copy of a T1 is a T1,
            # and hashes of different contrasts of similar anatomy are not evidence of a copy.
            kinds.append(("2d" if file_kind(root / row.path) == "image2d" else "3d") + ":" + row.modality)
        except (DataError, OSError) as e:
            unhashed.append((row.path, str(e)))
    pseudo = _subjects_are_images(hashed)
    thresholds, chosen = _thresholds(hashes, kinds, given, pseudo)
    found = NearDuplicates.from_hashes(hashes, kinds=kinds, thresholds=thresholds)
    threshold = ", ".join(f"{t} ({k.upper()})" for k, t in sorted(_by_dim(thresholds).items()))
    leaked = sum(1 for i, j, _ in found.pairs.tolist()
                 if hashed[i].split and hashed[j].split and hashed[i].split != hashed[j].split)
    resplit = False
    if pseudo:
        first = {}
        for i, g in enumerate(found.group.tolist()):
            first.setdefault(g, hashed[i].subject)
        subject_of = {r.path: first[g] for r, g in zip(hashed, found.group.tolist())}
        resplit = leaked > 0 and not keep_split_folders
        rows = [replace(r, subject=subject_of.get(r.path, r.subject), split="" if resplit and not unlabeled else r.split)
                for r in rows]
    near = NearDuplicateReport(threshold or str(given["2d"]), found, hashed, pseudo, leaked, resplit, unhashed,
                               Counter(), chosen)
    return rows, near


def _label_table(root: Path, layout: str, labels: dict[str, str] | str | Path | None, id_column: str | None,
                 label_column: str | None) -> dict[str, str] | None:
    """The labels by subject id: a table given, or the columns named of a BIDS tree's participants.tsv.

    ``--label-column`` without a table reads participants.tsv where the layout has it (BIDS), and is
    an error elsewhere: silently dropped, it would leave every row unlabelled.
    """
    if isinstance(labels, (str, Path)):
        return read_label_table(labels, id_column, label_column or "label")
    if labels is not None or (id_column is None and label_column is None):
        return labels
    if layout != "bids":
        flag = "--label-column" if label_column else "--id-column"
        raise DataError(f"{flag} names a column of a table: give the table with --labels FILE (one row per "
                        "subject) or --table FILE (one row per file); only a BIDS tree has one of its own "
                        "(participants.tsv)")
    if not (root / "participants.tsv").is_file():
        raise DataError(f"{root}: no participants.tsv for --label-column/--id-column to read; give the table "
                        "with --labels FILE")
    return read_label_table(root / "participants.tsv", id_column or "participant_id", label_column or "label")


def _scan(root: Path, layout: str, labels: dict[str, str] | str | Path | None, modality: str | None,
          table: str | Path | None, path_column: str, id_column: str | None, label_column: str | None,
          suffixes: set[str] | list[str] | None,
          entities: dict[str, set[str]] | None) -> tuple[str, list[ManifestRow]]:
    """Rows from a table of files (``table``) or from the tree under ``root``, with their labels."""
    if table is None:
        layout = detect_layout(root) if layout == "auto" else layout
        check_layout_options(root, layout, labels is not None, bool(suffixes or entities))  # before reading a table
        labels = _label_table(root, layout, labels, id_column, label_column)
        return scan_root(root, layout, labels, modality, suffixes, entities)
    misplaced = [flag for flag, given in (("--layout", layout not in ("auto", "table")),
                                          ("--labels (the table's --label-column holds them)", labels is not None),
                                          ("--suffix", bool(suffixes)), ("--filter", bool(entities))) if given]
    if misplaced:
        raise DataError(f"--table lists the files and their labels itself: leave out {', '.join(misplaced)}")
    return "table", scan_table(table, root, path_column, id_column, label_column, modality)


def build_manifest(
    root: str | Path | None,
    layout: str = "auto",
    labels: dict[str, str] | str | Path | None = None,
    modality: str | None = None,
    val_fraction: float | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    unlabeled: bool = False,
    drop_duplicates: bool = True,
    drop_unreadable: bool = True,
    decode: bool = True,
    load: Callable[[Path], object] | None = None,
    near_threshold: int | str | None = AUTO,
    near_threshold_3d: int | str = AUTO,
    keep_split_folders: bool = False,
    progress: bool = False,
    table: str | Path | None = None,
    path_column: str = "path",
    id_column: str | None = None,
    label_column: str | None = None,
    suffixes: set[str] | list[str] | None = None,
    entities: dict[str, set[str]] | None = None,
) -> BuildResult:
    """Scans ``root`` (or reads the files ``table`` lists), assigns subjects and splits, and audits the result.

    Args:
        root: the data folder; with ``table``, the folder its relative paths are read from (None:
            the table's folder).
        layout: ``auto``, ``bids``, ``subjects``, ``folders`` or ``flat`` (see :mod:`.scan`).
        labels: subject id -> label, or a CSV/TSV of them (read with ``id_column`` and
            ``label_column``), for layouts whose labels are in a table; None: a BIDS tree's
            participants.tsv (its ``label`` column, or ``label_column``).
        modality: the modality of every file, where the layout cannot tell.
        val_fraction: share of subjects for val; None: 0.1 for new splits, none carved from kept folders.
        test_fraction: share of subjects for test in new splits.
        seed: the split seed.
        unlabeled: ignore labels (every row ``unlabeled``).
        drop_duplicates: drop val/test rows byte-identical to a row of an earlier split.
        drop_unreadable: drop rows whose file cannot be decoded.
        decode: decode every file in the audit.
        load: the audit's decoder (e.g. a cache's ``get``, to fill it in the same pass).
        near_threshold: the near-duplicate threshold for 2D images, in bits of 64; ``"auto"`` chooses
            it from the data (:func:`~.near_duplicates.choose_threshold`, up to 6); None skips the pass.
            Scans are compared with scans of the same modality only.
        near_threshold_3d: the same for NIfTI volumes (their 3D hash; ``"auto"``: up to 2).
        keep_split_folders: keep the set's split folders even when near-duplicates cross them.
        progress: tqdm bars.
        table: a CSV/TSV listing the files, one per row (:func:`~.listing.scan_table`), instead of a scan.
        path_column: the table's column of paths.
        id_column: the subject id column of ``table`` or of the label table.
        label_column: the label column of ``table`` or of the label table.
        suffixes: BIDS only: keep the files with one of these suffixes (``T1w``).
        entities: BIDS only: keep the files whose entities have these values (``{"acq": {"mprage"}}``).

    Returns:
        The :class:`BuildResult` (``str()`` is the printable report).

    Raises:
        DataError: no scans; a table, a column or a file named is missing; ids of a label table
            match nothing; a filter matches no file; options that do not apply to the layout
            (each a one-line message naming the rows, ids or columns concerned).
        PercolationError: the set has no patient ids and, at a threshold given, one near-duplicate
            group holds more than :func:`~.near_duplicates.largest_group_limit` files.
        SplitError: a split misses its share of the files or a label (see :func:`.assign_splits`).
    """
    if root is None and table is None:
        raise DataError("give the data folder (--root DIR) or a table of its files (--table FILE)")
    base = Path(root) if root is not None else Path(table).parent  # type: ignore[arg-type]
    root = Path(os.path.normpath(base.absolute()))
    layout, rows = _scan(root, layout, labels, modality, table, path_column, id_column, label_column,
                         suffixes, entities)
    label_maps = [r for r in rows if r.modality == LABEL_MAP]
    rows = [r for r in rows if r.modality != LABEL_MAP]
    if not rows:
        raise DataError(f"{root}: only label maps and masks found ({len(label_maps)} files), no images")
    if unlabeled:
        rows = [replace(r, label="", split="unlabeled") for r in rows]
    near = None
    if near_threshold is not None:
        rows, near = _near_duplicate_pass(root, rows, {"2d": near_threshold, "3d": near_threshold_3d},
                                          keep_split_folders, unlabeled, progress)
        if near.resplit and val_fraction is None:
            val_fraction = 0.1
    kept_splits = any(r.split for r in rows)
    val = val_fraction if val_fraction is not None else (0.0 if kept_splits else 0.1)
    rows = assign_splits(rows, val_fraction=val, test_fraction=test_fraction, seed=seed,
                         carve_val_from_train=kept_splits and val_fraction is not None)
    report = audit(Manifest(root, rows), load=load, decode=decode, drop_duplicates=drop_duplicates,
                   drop_unreadable=drop_unreadable, progress=progress)
    if near is not None:
        split_of = {r.path: r.split for r in report.manifest.rows}
        for i, j, _ in near.found.pairs.tolist():
            a, b = split_of.get(near.hashed_rows[i].path), split_of.get(near.hashed_rows[j].path)
            if a and b and a != b:
                near.pairs_across_splits[tuple(sorted((a, b)))] += 1
    return BuildResult(layout, report, near, label_maps)
