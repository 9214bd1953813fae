"""Manifests: the CSV list of scans that every other part of mocomri reads.

- :mod:`.schema`: ``ManifestRow``, ``Manifest``, ``read_manifest``, ``write_manifest`` and the
  ``# root:`` convention;
- :mod:`.scan`: discovery of BIDS trees (selected by suffix and entities), folder-per-subject
  trees, class-per-folder image trees and flat folders;
- :mod:`.tables`: a user's CSV/TSV tables, and label tables by subject id;
- :mod:`.listing`: rows from a table that lists the files (path, subject, label, ...);
- :mod:`.splits`: subject-level, label-stratified splits;
- :mod:`.audit`: counts, unreadable files and duplicate/leakage checks by content hash;
- :mod:`.near_duplicates`: perceptual hashes (2D and 3D) and near-duplicate groups;
- :mod:`.build`: the recipe (scan or table → pseudo-subjects → split → audit) behind ``mocomri manifest``.
"""

from mocomri.data.manifest.audit import AuditReport, audit
from mocomri.data.manifest.build import BuildResult, build_manifest
from mocomri.data.manifest.listing import scan_table
from mocomri.data.manifest.near_duplicates import NearDuplicates
from mocomri.data.manifest.scan import (
    bids_entities,
    detect_layout,
    guess_modality,
    scan_bids,
    scan_class_folders,
    scan_flat,
    scan_root,
    scan_subject_folders,
)
from mocomri.data.manifest.schema import COLUMNS, SPLITS, Manifest, ManifestRow, read_manifest, write_manifest
from mocomri.data.manifest.splits import assign_splits, carve_by_subject
from mocomri.data.manifest.tables import read_label_table

__all__ = [
    "COLUMNS",
    "SPLITS",
    "AuditReport",
    "BuildResult",
    "NearDuplicates",
    "Manifest",
    "ManifestRow",
    "assign_splits",
    "audit",
    "bids_entities",
    "build_manifest",
    "carve_by_subject",
    "detect_layout",
    "guess_modality",
    "read_label_table",
    "read_manifest",
    "scan_bids",
    "scan_class_folders",
    "scan_flat",
    "scan_root",
    "scan_subject_folders",
    "scan_table",
    "write_manifest",
]
