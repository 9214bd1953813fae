"""Discovery: turning a folder of scans into manifest rows.

Four layouts are recognised (``detect_layout``):

- ``bids``: ``sub-<id>/[ses-<id>/]anat/sub-<id>[_ses-<id>]_..._<suffix>.nii.gz``; subject,
  session and modality (the suffix) come from the file name, labels from ``participants.tsv``
  or a given table; files can be selected by suffix and by entity (``acq-mprage``, ``run-1``).
- ``subjects``: one folder per subject of NIfTI files, one per contrast plus segmentations
  (BraTS style), optionally under split folders; subject = folder, modality = a file-name token,
  label maps and masks marked so that they are never pretraining images.
- ``folders``: one folder per class of 2D images, optionally under split folders
  (``Training/<class>/``, ``Testing/<class>/``); label = class folder, split kept.
- ``flat``: scans anywhere under the root, unlabelled unless a table gives labels.

A label table's ids that match nothing in the tree are an error, not rows left unlabelled
without a word. A table that lists the files themselves is read by :mod:`.listing`.

Scanners return rows with ``split=""`` where the layout says nothing about splits; see
:mod:`mocomri.data.manifest.splits` for making them.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np

from mocomri.data.io import DICOM_SUFFIXES, IMAGE_SUFFIXES, NIFTI_SUFFIXES
from mocomri.data.manifest.schema import ManifestRow
from mocomri.data.manifest.tables import check_ids_matched, read_label_table
from mocomri.errors import DataError

SCAN_SUFFIXES = NIFTI_SUFFIXES + IMAGE_SUFFIXES
# Split folder names as datasets spell them -> manifest split.
SPLIT_FOLDERS = {
    "training": "train", "train": "train",
    "validation": "val", "val": "val", "valid": "val",
    "testing": "test", "test": "test",
}
# Modality tokens found in non-BIDS file names (IXI "-T1", "_flair", ...) -> BIDS suffix.
MODALITY_TOKENS = {
    "t1": "T1w", "t1w": "T1w", "mprage": "T1w", "t1c": "T1c", "t1ce": "T1c", "t1gd": "T1c", "t1post": "T1c",
    "t2": "T2w", "t2w": "T2w", "pd": "PD", "pdw": "PD", "flair": "FLAIR", "t2flair": "FLAIR", "dwi": "DWI", "adc": "ADC",
}
# Tokens that name label maps and masks: never pretraining images.
LABEL_MAP_TOKENS = {"seg", "segmentation", "label", "labels", "mask", "brainmask", "otmulticlass", "aseg", "parc"}
LABEL_MAP = "label_map"  # the modality scanners give label maps and masks; build_manifest leaves them out
# BIDS index entities: their values are numbers, so run-01 is run 1.
INDEX_ENTITIES = {"run", "echo", "flip", "inv", "chunk", "split"}


def _strip_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in sorted(SCAN_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_scan(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(SCAN_SUFFIXES) and not path.name.startswith(".")


def _scans_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if _is_scan(p))


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def guess_modality(name: str) -> str:
    """The modality named by a token of a non-BIDS file name (``IXI012-HH-1211-T1_ds`` -> T1w)."""
    for token in re.split(r"[-_.\s]+", _strip_suffix(name).lower()):
        if token in MODALITY_TOKENS:
            return MODALITY_TOKENS[token]
    return "unknown"


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[-_.\s]+", _strip_suffix(name).lower()) if t]


def _is_label_map_file(path: Path) -> bool:
    """A label map or mask by its name, or by its content: integer values, at most 16 of them."""
    if any(t in LABEL_MAP_TOKENS for t in _tokens(path.name)):
        return True
    if guess_modality(path.name) != "unknown" or not path.name.lower().endswith(NIFTI_SUFFIXES):
        return False
    try:
        data = np.asanyarray(nib.load(path).dataobj)
    except Exception:  # unreadable: the audit reports it
        return False
    values = np.unique(data[:: max(1, data.shape[0] // 32)])  # a sample of planes is enough to rule out
    return len(values) <= 16 and bool(np.all(np.mod(values, 1) == 0)) and len(np.unique(data)) <= 16


def _subject_folder_scans(root: Path) -> list[Path] | None:
    """The NIfTI files of a folder-per-subject tree, or None when ``root`` is not one.

    Such a tree holds NIfTI files only in folders one level below the root or below a split
    folder (``train/``, ``Validation/``, ...), at least two per folder, and names at least one
    contrast in a file name.
    """
    scans = [p for p in _scans_under(root) if p.name.lower().endswith(NIFTI_SUFFIXES)]
    if not scans:
        return None
    folders: dict[Path, int] = {}
    for p in scans:
        parts = p.relative_to(root).parts
        depth_ok = len(parts) == 2 or (len(parts) == 3 and parts[0].lower() in SPLIT_FOLDERS)
        if not depth_ok:
            return None
        folders[p.parent] = folders.get(p.parent, 0) + 1
    if min(folders.values()) < 2 or not any(guess_modality(p.name) != "unknown" for p in scans):
        return None
    return scans


def detect_layout(root: str | Path) -> str:
    """``"bids"``, ``"subjects"``, ``"folders"`` or ``"flat"`` for a data root (see the module docstring).

    Raises:
        DataError: the root does not exist, holds DICOM files only, or holds no scans.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root is not a directory")
    if any(p.is_dir() and p.name.startswith("sub-") for p in root.iterdir()):
        return "bids"
    scans = _scans_under(root)
    if not scans:
        if any(p.name.lower().endswith(DICOM_SUFFIXES) for p in root.rglob("*")):
            raise DataError(f"{root}: only DICOM files found; convert them to NIfTI with dcm2niix first")
        raise DataError(f"{root}: no scans found (looked for {', '.join(SCAN_SUFFIXES)})")
    if _subject_folder_scans(root) is not None:
        return "subjects"
    images = [p for p in scans if p.name.lower().endswith(IMAGE_SUFFIXES)]
    nested = [p for p in images if p.parent != root]
    if images and len(nested) == len(scans):
        return "folders"
    return "flat"


def bids_entities(stem: str) -> tuple[dict[str, str], str]:
    """The ``key-value`` entities and the suffix of a BIDS file name without its extension.

    ``sub-01_ses-2_acq-mprage_run-1_T1w`` -> ``({"sub": "01", "ses": "2", "acq": "mprage",
    "run": "1"}, "T1w")``; the suffix is ``""`` when the last part is an entity.
    """
    parts = stem.split("_")
    entities = dict(part.split("-", 1) for part in parts if "-" in part)
    suffix = parts[-1] if len(parts) > 1 and "-" not in parts[-1] else ""
    return entities, suffix


def _entity_matches(key: str, value: str | None, wanted: set[str]) -> bool:
    if value is None:
        return False  # a file without the entity is not selected by a filter on it
    if key in INDEX_ENTITIES and value.isdigit():
        return any(w.isdigit() and int(w) == int(value) for w in wanted)
    return value in wanted


def _found(values: list[str]) -> str:
    return ", ".join(f"{v} ({n} file{'s' if n > 1 else ''})" for v, n in sorted(Counter(values).items())) or "none"


def _select_bids(root: Path, files: list[tuple[Path, dict[str, str], str]], suffixes: set[str] | None,
                 entities: dict[str, set[str]] | None) -> list[tuple[Path, dict[str, str], str]]:
    """The files with one of ``suffixes`` and, for each filtered entity, one of its values.

    Raises:
        DataError: a suffix or an entity value matches no file of the tree (a typo would otherwise
            select nothing, or less than meant, without a word), or no file matches them all.
    """
    for suffix in sorted(suffixes or ()):
        if not any(s == suffix for _, _, s in files):
            raise DataError(f"{root}: --suffix {suffix} matches no file of the BIDS tree "
                            f"(suffixes found: {_found([s or '(none)' for _, _, s in files])})")
    for key, wanted in sorted((entities or {}).items()):
        for value in sorted(wanted):
            if not any(_entity_matches(key, e.get(key), {value}) for _, e, _ in files):
                raise DataError(f"{root}: --filter {key}={value} matches no file of the BIDS tree "
                                f"({key} values found: {_found([e[key] for _, e, _ in files if key in e])})")
    kept = [(p, e, s) for p, e, s in files
            if (not suffixes or s in suffixes)
            and all(_entity_matches(k, e.get(k), wanted) for k, wanted in (entities or {}).items())]
    if not kept:
        asked = [f"--suffix {','.join(sorted(suffixes))}"] if suffixes else []
        asked += [f"--filter {k}={','.join(sorted(v))}" for k, v in sorted((entities or {}).items())]
        raise DataError(f"{root}: no file of the BIDS tree matches {' and '.join(asked)} together "
                        f"(each matches some files of the {len(files)}, but not the same ones)")
    return kept


def scan_bids(
    root: str | Path,
    labels: dict[str, str] | None = None,
    suffixes: set[str] | list[str] | None = None,
    entities: dict[str, set[str]] | None = None,
) -> list[ManifestRow]:
    """Rows for the NIfTI files of a BIDS tree (``anat/`` and ``dwi/`` folders).

    Args:
        root: the BIDS root (the folder with ``sub-*`` folders).
        labels: subject id (without ``sub-``) -> label; None reads the ``label`` column of
            ``participants.tsv`` when there is one.
        suffixes: keep only files with one of these suffixes (``T1w``: the modality); None keeps all.
        entities: keep only files whose entity ``key`` has one of the values given for it, for
            every key (``{"acq": {"mprage"}, "run": {"1"}}``); index entities (``run``, ``echo``,
            ...) compare as numbers; a file without a filtered entity is left out.

    Raises:
        DataError: a suffix or entity value matches no file, or an id of ``labels`` (or of
            ``participants.tsv``) is no subject of the tree.
    """
    root = Path(root)
    if labels is None and (root / "participants.tsv").is_file():
        with open(root / "participants.tsv", newline="", encoding="utf-8-sig") as f:
            has_label = "label" in (csv.DictReader(f, delimiter="\t").fieldnames or [])
        if has_label:
            labels = read_label_table(root / "participants.tsv", "participant_id", "label")
    if labels:
        subjects = {p.name.removeprefix("sub-") for p in root.glob("sub-*") if p.is_dir()}
        check_ids_matched(labels, set(labels) & subjects, f"subject folder of {root}",
                          "an id is a BIDS subject label, with or without 'sub-'")
    files = []
    for path in sorted(root.glob("sub-*/**/*")):
        if not (_is_scan(path) and path.name.lower().endswith(NIFTI_SUFFIXES)):
            continue
        if path.parent.name not in ("anat", "dwi"):
            continue
        found, suffix = bids_entities(_strip_suffix(path.name))
        if "sub" in found:
            files.append((path, found, suffix))
    if suffixes or entities:
        files = _select_bids(root, files, set(suffixes or ()), entities)
    return [ManifestRow(
        path=_rel(path, root),
        subject=found["sub"],
        session=found.get("ses", ""),
        modality=suffix or "unknown",
        label=(labels or {}).get(found["sub"], ""),
        split="",
    ) for path, found, suffix in files]


def scan_class_folders(root: str | Path, modality: str = "unknown") -> list[ManifestRow]:
    """Rows for a class-per-folder tree of 2D images, keeping split folders as splits.

    ``root/<class>/*.png`` gives label = class and no split; ``root/Training/<class>/*.jpg`` and
    ``root/Testing/<class>/*.jpg`` give train and test. These trees carry no patient ids, so each
    image is its own subject (named by its path without the extension); the audit says so.

    Args:
        root: the tree's root.
        modality: the modality of every image (such exports rarely say).
    """
    root = Path(root)
    rows = []
    for path in _scans_under(root):
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            continue  # an image at the top level has no class folder
        split = ""
        if len(parts) >= 3 and parts[0].lower() in SPLIT_FOLDERS:
            split = SPLIT_FOLDERS[parts[0].lower()]
        rel = _rel(path, root)
        rows.append(ManifestRow(
            path=rel,
            subject=_strip_suffix(rel),
            modality=modality,
            label=parts[-2],
            split=split,
        ))
    return rows


def scan_subject_folders(
    root: str | Path,
    labels: dict[str, str] | None = None,
) -> list[ManifestRow]:
    """Rows for a folder-per-subject tree of NIfTI files (BraTS style), keeping split folders.

    ``root/[train|validation|test/]<subject>/<...>_{t1,t1ce,t2,flair,seg}.nii.gz`` or
    ``root/<subject>/{Flair_subtrMeanDivStd,T1c_subtrMeanDivStd,brainmask,OTMultiClass}.nii.gz``:
    the subject is the folder, the modality a token of the file name (any case and separator),
    and label maps and masks (a ``seg``/``label``/``mask`` token, or integer content with at most
    16 values) get modality ``label_map`` so that :func:`~mocomri.data.manifest.build_manifest`
    leaves them out of the images and reports them.

    Args:
        root: the tree's root.
        labels: subject (folder name) -> label.

    Raises:
        DataError: ``root`` is not such a tree, or an id of ``labels`` names no subject folder.
    """
    root = Path(root)
    scans = _subject_folder_scans(root)
    if scans is None:
        raise DataError(f"{root}: not a folder-per-subject tree of NIfTI files (two or more per subject folder, "
                        "optionally under train/val/test folders, a contrast named in the file names)")
    if labels:
        check_ids_matched(labels, set(labels) & {p.parent.name for p in scans}, f"subject folder of {root}",
                          "an id is the name of a subject's folder")
    rows = []
    for path in scans:
        parts = path.relative_to(root).parts
        split = SPLIT_FOLDERS[parts[0].lower()] if len(parts) == 3 else ""
        subject = path.parent.name
        rows.append(ManifestRow(
            path=_rel(path, root),
            subject=subject,
            modality=LABEL_MAP if _is_label_map_file(path) else guess_modality(path.name),
            label=(labels or {}).get(subject, ""),
            split=split,
        ))
    return rows


def _flat_subject(path: Path, root: Path, exact: dict[str, str], by_length: list[str]) -> tuple[str, str | None]:
    """``(subject, id)`` of a file of a flat folder, ``id`` None when no id of the table names it.

    An id that names the file itself (its path under the root or its name, with the extension)
    keys files, not patients: the file is its own subject. An id equal to the name without its
    extension, or the longest id the name starts with, is the subject.
    """
    rel, stem = _rel(path, root), _strip_suffix(path.name)
    for key in (rel, path.name):
        if key in exact:
            return _strip_suffix(rel), exact[key]
    for key in (_strip_suffix(rel), stem):
        if key in exact:
            return exact[key], exact[key]
    for name in (stem, stem.removeprefix("sub-")):  # label tables drop a BIDS 'sub-'
        match = next((i for i in by_length if name.startswith(i)), None)
        if match is not None:
            return match, match
    tokens = re.split(r"([-_.])", stem)
    cut = next((i for i, t in enumerate(tokens) if i > 0 and t.lower() in MODALITY_TOKENS), None)
    return ("".join(tokens[: cut - 1]) if cut else stem), None


def scan_flat(
    root: str | Path,
    labels: dict[str, str] | None = None,
    modality: str | None = None,
) -> list[ManifestRow]:
    """Rows for scans anywhere under a folder with no layout to read (unlabelled by default).

    The subject is the file name up to its modality token (``IXI012-HH-1211-T1_ds.nii.gz`` ->
    ``IXI012-HH-1211``) or, when ``labels`` is given, the table id that names the file: its path
    under the root or its name (with the extension: the file is then its own subject), the name
    without the extension, or the start of the name (the longest such id).

    Args:
        root: the folder.
        labels: id -> label, an id matched to files as above.
        modality: the modality of every file; None guesses it from the file name.

    Raises:
        DataError: an id of ``labels`` names no file.
    """
    root = Path(root)
    labels = labels or {}
    exact = {i: i for i in labels}
    by_length = sorted(labels, key=len, reverse=True)
    rows, matched = [], set()
    for path in _scans_under(root):
        subject, key = _flat_subject(path, root, exact, by_length)
        if key is not None:
            matched.add(key)
        rows.append(ManifestRow(
            path=_rel(path, root),
            subject=subject,
            modality=modality or guess_modality(path.name),
            label=labels.get(key, "") if key is not None else "",
            split="",
        ))
    if labels:
        check_ids_matched(labels, matched, f"file under {root}",
                          "an id matches a file by its path under the root, its name (with or without the "
                          "extension), or the start of its name")
    return rows


def check_layout_options(root: str | Path, layout: str, labels: bool, selecting: bool) -> None:
    """Raises DataError for options that the layout would ignore without a word.

    Args:
        root: the data root, for the message.
        layout: the layout scanned.
        labels: a label table is given.
        selecting: a BIDS suffix or entity filter is given.
    """
    if selecting and layout != "bids":
        raise DataError(f"{root}: --suffix and --filter select files of a BIDS tree by name; this is a {layout!r} "
                        "layout (choose files with --table FILE.csv instead)")
    if labels and layout == "folders":
        raise DataError(f"{root}: --labels does not apply to a class-per-folder tree, whose labels are its "
                        "folder names (for labels of your own, list the files with --table FILE.csv)")


def scan_root(
    root: str | Path,
    layout: str = "auto",
    labels: dict[str, str] | None = None,
    modality: str | None = None,
    suffixes: set[str] | list[str] | None = None,
    entities: dict[str, set[str]] | None = None,
) -> tuple[str, list[ManifestRow]]:
    """Detects the layout (unless given) and scans it. Returns ``(layout, rows)``.

    ``suffixes`` and ``entities`` select files of a BIDS tree (:func:`scan_bids`).

    Raises:
        DataError: no scans; labels for a class-per-folder tree (its labels are its folders);
            a suffix or entity filter on another layout than BIDS.
    """
    layout = detect_layout(root) if layout == "auto" else layout
    check_layout_options(root, layout, labels is not None, bool(suffixes or entities))
    if layout == "bids":
        rows = scan_bids(root, labels, suffixes, entities)
    elif layout == "subjects":
        rows = scan_subject_folders(root, labels)
    elif layout == "folders":
        rows = scan_class_folders(root, modality or "unknown")
    elif layout == "flat":
        rows = scan_flat(root, labels, modality)
    else:
        raise DataError(f"unknown layout {layout!r} (expected auto, bids, subjects, folders or flat)")
    if not rows:
        raise DataError(f"{root}: no scans found for layout {layout!r}")
    return layout, rows
