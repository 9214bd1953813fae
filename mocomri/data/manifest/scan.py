"""Discovery: turning a folder of scans into manifest rows.

Four layouts are recognised (``detect_layout``):

- ``bids``: ``sub-<id>/[ses-<id>/]anat/sub-<id>[_ses-<id>]_..._<suffix>.nii.gz``; subject,
  session and modality (the suffix) come from the file name, labels from ``participants.tsv``
  or a given table.
- ``subjects``: one folder per subject of NIfTI files, one per contrast plus segmentations
  (BraTS style), optionally under split folders; subject = folder, modality = a file-name token,
  label maps and masks marked so that they are never pretraining images.
- ``folders``: one folder per class of 2D images, optionally under split folders
  (``Training/<class>/``, ``Testing/<class>/``); label = class folder, split kept.
- ``flat``: scans anywhere under the root, unlabelled unless a table gives labels.

Scanners return rows with ``split=""`` where the layout says nothing about splits; see
:mod:`mocomri.data.manifest.splits` for making them.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from mocomri.data.io import DICOM_SUFFIXES, IMAGE_SUFFIXES, NIFTI_SUFFIXES
from mocomri.data.manifest.schema import ManifestRow
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
_BIDS_ENTITY = re.compile(r"(?:^|_)(sub|ses)-([A-Za-z0-9]+)")


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


def read_label_table(path: str | Path, id_column: str | None, label_column: str) -> dict[str, str]:
    """Reads ``id -> label`` from a CSV or TSV (the delimiter is sniffed from the extension).

    Args:
        path: the table.
        id_column: the subject id column; None tries ``participant_id``, ``subject``, then the
            first column.
        label_column: the column holding the label.

    Raises:
        DataError: the file or a column is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label table not found")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        names = reader.fieldnames or []
        if id_column is None:
            id_column = next((c for c in ("participant_id", "subject") if c in names), names[0] if names else "")
        for column in (id_column, label_column):
            if column not in names:
                raise DataError(f"{path}: no column {column!r} (columns: {', '.join(names)})")
        table = {}
        for record in reader:
            key = (record[id_column] or "").strip()
            if key:
                table[key.removeprefix("sub-")] = (record[label_column] or "").strip()
    return table


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


def scan_bids(root: str | Path, labels: dict[str, str] | None = None) -> list[ManifestRow]:
    """Rows for every NIfTI file of a BIDS tree (``anat/`` and ``dwi/`` folders).

    Args:
        root: the BIDS root (the folder with ``sub-*`` folders).
        labels: subject id (without ``sub-``) -> label; None reads the ``label`` column of
            ``participants.tsv`` when there is one.
    """
    root = Path(root)
    if labels is None and (root / "participants.tsv").is_file():
        with open(root / "participants.tsv", newline="", encoding="utf-8") as f:
            has_label = "label" in (csv.DictReader(f, delimiter="\t").fieldnames or [])
        if has_label:
            labels = read_label_table(root / "participants.tsv", "participant_id", "label")
    labels = labels or {}
    rows = []
    for path in sorted(root.glob("sub-*/**/*")):
        if not (_is_scan(path) and path.name.lower().endswith(NIFTI_SUFFIXES)):
            continue
        if path.parent.name not in ("anat", "dwi"):
            continue
        stem = _strip_suffix(path.name)
        entities = dict(_BIDS_ENTITY.findall(stem))
        if "sub" not in entities:
            continue
        subject = entities["sub"]
        rows.append(ManifestRow(
            path=_rel(path, root),
            subject=subject,
            session=entities.get("ses", ""),
            modality=stem.rsplit("_", 1)[-1] if "_" in stem else "unknown",
            label=labels.get(subject, ""),
            split="",
        ))
    return rows


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
        DataError: ``root`` is not such a tree.
    """
    root = Path(root)
    scans = _subject_folder_scans(root)
    if scans is None:
        raise DataError(f"{root}: not a folder-per-subject tree of NIfTI files (two or more per subject folder, "
                        "optionally under train/val/test folders, a contrast named in the file names)")
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


def scan_flat(
    root: str | Path,
    labels: dict[str, str] | None = None,
    modality: str | None = None,
) -> list[ManifestRow]:
    """Rows for scans anywhere under a folder with no layout to read (unlabelled by default).

    The subject is the file name up to its modality token (``IXI012-HH-1211-T1_ds.nii.gz`` ->
    ``IXI012-HH-1211``) or, when ``labels`` is given, the table id that the name starts with.

    Args:
        root: the folder.
        labels: subject id -> label, matched as a prefix of the file name.
        modality: the modality of every file; None guesses it from the file name.
    """
    root = Path(root)
    ids = sorted(labels or {}, key=len, reverse=True)
    rows = []
    for path in _scans_under(root):
        stem = _strip_suffix(path.name)
        subject = next((i for i in ids if stem.startswith(i)), None)
        if subject is None:
            tokens = re.split(r"([-_.])", stem)
            cut = next((i for i, t in enumerate(tokens) if i > 0 and t.lower() in MODALITY_TOKENS), None)
            subject = "".join(tokens[: cut - 1]) if cut else stem
        rows.append(ManifestRow(
            path=_rel(path, root),
            subject=subject,
            modality=modality or guess_modality(path.name),
            label=(labels or {}).get(subject, ""),
            split="",
        ))
    return rows


def scan_root(
    root: str | Path,
    layout: str = "auto",
    labels: dict[str, str] | None = None,
    modality: str | None = None,
) -> tuple[str, list[ManifestRow]]:
    """Detects the layout (unless given) and scans it. Returns ``(layout, rows)``."""
    layout = detect_layout(root) if layout == "auto" else layout
    if layout == "bids":
        rows = scan_bids(root, labels)
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
