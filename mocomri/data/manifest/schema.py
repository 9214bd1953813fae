"""The manifest: one row per image or volume, in a plain CSV file.

File format (documented in ``data_manifests/README.md``)::

    path,subject,session,modality,label,split,sha1
    ../../shared/data/brain-tumor-mri/Training/glioma/Tr-gl_0537.jpg,Training/glioma/Tr-gl_0537,,T1c,glioma,train,3f5c...

``path`` is relative to the manifest file's own folder (or absolute), so any CSV reader reads
the file without options and the manifest keeps working wherever it is read from, as long as it
and the data keep their relative places. Manifests written before this format start with a line
``# root: <dir>`` (the folder ``path`` is relative to, itself relative to the manifest's folder);
:func:`read_manifest` still reads them. ``read_manifest(path, root=...)`` overrides both.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path

from mocomri.errors import DataError

COLUMNS = ("path", "subject", "session", "modality", "label", "split", "sha1")
SPLITS = ("train", "val", "test", "unlabeled")
ROOT_PREFIX = "# root:"


@dataclass
class ManifestRow:
    """One image or volume. Empty strings mean "not known" (session, label, sha1)."""

    path: str  # relative to the manifest's root, with forward slashes
    subject: str
    session: str = ""
    modality: str = "unknown"  # BIDS suffix: T1w, T2w, FLAIR, T1c, PD, DWI, ... or "unknown"
    label: str = ""
    split: str = "unlabeled"  # train | val | test | unlabeled
    sha1: str = ""  # content hash of the file


@dataclass
class Manifest:
    """Rows plus the directory their paths are relative to."""

    root: Path
    rows: list[ManifestRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def abspath(self, row: ManifestRow) -> Path:
        """The file a row points at."""
        return self.root / row.path

    def select(self, splits: list[str] | tuple[str, ...] | str | None) -> Manifest:
        """A manifest with only the rows of the given split(s); None keeps every row."""
        if splits is None:
            return Manifest(self.root, list(self.rows))
        wanted = {splits} if isinstance(splits, str) else set(splits)
        return Manifest(self.root, [r for r in self.rows if r.split in wanted])

    def labels(self) -> list[str]:
        """The sorted distinct non-empty labels."""
        return sorted({r.label for r in self.rows if r.label})

    def subjects(self) -> list[str]:
        """The sorted distinct subjects (their index is the dataset's integer subject id)."""
        return sorted({r.subject for r in self.rows})

    def modalities(self) -> list[str]:
        """The sorted distinct modalities (their index is the dataset's integer modality id)."""
        return sorted({r.modality for r in self.rows})

    def counts(self, column: str) -> Counter:
        return Counter(getattr(r, column) for r in self.rows)

    def replace_rows(self, rows: list[ManifestRow]) -> Manifest:
        return Manifest(self.root, rows)


def _root_from_comment(line: str, manifest_dir: Path) -> Path:
    text = line[len(ROOT_PREFIX):].strip()
    root = Path(os.path.expanduser(text))
    return root if root.is_absolute() else (manifest_dir / root)


def read_manifest(path: str | Path, root: str | Path | None = None) -> Manifest:
    """Reads a manifest CSV.

    Args:
        path: the manifest file.
        root: the directory row paths are relative to; None reads it from the ``# root:`` line,
            or uses the manifest's folder when there is none.

    Returns:
        The :class:`Manifest`, with ``root`` normalised (``..`` resolved).

    Raises:
        DataError: the file is missing, lacks a column, has an empty path or subject, or an
            unknown split; the message names the file and the row (1-based, header = row 1).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    with open(path, newline="", encoding="utf-8") as f:
        lines = f.read().splitlines()
    comment_root = None
    while lines and lines[0].lstrip().startswith("#"):
        if lines[0].lstrip().startswith(ROOT_PREFIX):
            comment_root = _root_from_comment(lines[0].lstrip(), path.parent)
        lines.pop(0)
    reader = csv.DictReader(lines)
    missing = [c for c in ("path", "subject") if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (expected {','.join(COLUMNS)})")
    rows = []
    for number, record in enumerate(reader, start=2):
        values = {c: (record.get(c) or "").strip() for c in COLUMNS}
        if not values["path"] or not values["subject"]:
            raise DataError(f"{path} row {number}: empty path or subject")
        values["modality"] = values["modality"] or "unknown"
        values["split"] = values["split"] or "unlabeled"
        if values["split"] not in SPLITS:
            raise DataError(f"{path} row {number}: split {values['split']!r} is not one of {', '.join(SPLITS)}")
        rows.append(ManifestRow(**values))
    base = Path(root) if root is not None else (comment_root or path.parent)
    return Manifest(root=Path(os.path.normpath(base.absolute())), rows=rows)


def write_manifest(manifest: Manifest, path: str | Path) -> None:
    """Writes a plain CSV manifest whose paths are relative to the file's folder.

    Paths are written relative where they can be (so the manifest and the data can move
    together), absolute otherwise (another drive).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.absolute()
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in manifest.rows:
            target = Path(os.path.normpath((manifest.root / row.path).absolute()))
            try:
                relative = Path(os.path.relpath(target, folder)).as_posix()
            except ValueError:
                relative = target.as_posix()
            writer.writerow(astuple(replace(row, path=relative)))
