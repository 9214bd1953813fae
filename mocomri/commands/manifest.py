"""``mocomri manifest``: discover scans (or read a table of them), make subject-level splits, audit, write the CSV."""

from __future__ import annotations

import argparse


def _threshold(text: str, lowest: int = -1) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of bits, got {text!r}") from None
    if not lowest <= value < 64:
        allowed = "-1 (skip the pass) or " if lowest < 0 else ""
        raise argparse.ArgumentTypeError(f"{value} must be 'auto', {allowed}a number of bits in 0-63")
    return value


def _threshold_3d(text: str) -> int | str:
    return _threshold(text, lowest=0)  # the pass is skipped as a whole, with --near-threshold -1


def _suffixes(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected a BIDS suffix such as T1w, got {text!r}")
    return values


def _entity_filter(text: str) -> tuple[str, list[str]]:
    key, sep, value = text.partition("=")
    values = [v.strip() for v in value.split(",") if v.strip()]
    if not sep or not key.strip().isalnum() or not values:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE[,VALUE...] naming a BIDS entity, e.g. acq=mprage, "
                                         f"got {text!r}")
    return key.strip(), values


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "manifest",
        help="build a manifest CSV from a data folder or a table of files, and audit it",
        description="Scans a BIDS tree, a folder-per-subject tree, a class-per-folder image tree or a flat "
        "folder, or reads a table listing the files (--table); splits by subject (stratified by label; by "
        "near-duplicate group when the set has no patient ids); decodes every file once and reports "
        "unreadable files, duplicates by content hash and near-duplicates by perceptual hash. A table, "
        "column, file or filter that matches nothing is a one-line error and nothing is written. "
        "See data_manifests/README.md for the schema.",
    )
    parser.add_argument("--root", metavar="DIR",
                        help="the data folder (with --table: the folder its relative paths start from; "
                        "default: the table's folder)")
    parser.add_argument("--out", required=True, metavar="FILE.csv", help="the manifest CSV to write")
    parser.add_argument("--table", metavar="FILE.csv",
                        help="a CSV/TSV listing the files, one row per file: a path column (relative to --root, "
                        "or absolute), a subject column, a label column, and optional session, modality and "
                        "split columns (a given split is kept, checked: one split per subject)")
    parser.add_argument("--path-column", default="path", metavar="COL", help="path column of --table (default: path)")
    parser.add_argument("--layout", default="auto", choices=["auto", "bids", "subjects", "folders", "flat"],
                        help="how to read --root (default: detected)")
    parser.add_argument("--labels", metavar="FILE",
                        help="CSV/TSV of labels by subject id, for a scanned tree (BIDS default: "
                        "participants.tsv's 'label' column); every id must match a subject or file")
    parser.add_argument("--label-column", metavar="COL",
                        help="label column of --table or --labels (default: label); on a BIDS tree without "
                        "--labels, a column of its participants.tsv")
    parser.add_argument("--id-column", metavar="COL",
                        help="subject id column of --table (default: subject, participant_id, patient_id or "
                        "patient; without one each file is its own subject) or of --labels (default: "
                        "participant_id, subject, or the first column)")
    parser.add_argument("--suffix", type=_suffixes, action="append", metavar="SUFFIX[,SUFFIX]",
                        help="BIDS: keep only files with this suffix, e.g. T1w (repeatable)")
    parser.add_argument("--filter", type=_entity_filter, action="append", metavar="KEY=VALUE[,VALUE]",
                        help="BIDS: keep only files with this entity value in their name, e.g. acq=mprage or "
                        "run=1 (which also keeps run-01); repeatable; filters on different keys must all match; "
                        "a file without the entity is left out")
    parser.add_argument("--modality", help="modality of every file (folders/flat layouts; with --table, of rows without "
                        "a modality cell), e.g. T1c")
    parser.add_argument("--val-fraction", type=float, default=None,
                        help="share of subjects for val (default 0.1 for new splits; with Training/Testing "
                        "folders or a table's split column, val is carved from train only when this is given)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of subjects for test (new splits)")
    parser.add_argument("--unlabeled", action="store_true", help="ignore labels: every row is split 'unlabeled'")
    parser.add_argument("--seed", type=int, default=0, help="split seed")
    parser.add_argument("--keep-duplicates", action="store_true",
                        help="keep val/test files identical to a file of an earlier split (default: drop)")
    parser.add_argument("--keep-unreadable", action="store_true", help="keep rows whose file cannot be decoded")
    parser.add_argument("--no-decode", action="store_true", help="hash only; do not decode every file")
    parser.add_argument("--cache-config", help="a config YAML: fill its preprocessing cache during the audit pass")
    parser.add_argument("--near-threshold", type=_threshold, default="auto",
                        help="near-duplicates of 2D images: perceptual-hash distance in bits of 64 (default: auto, "
                        "the largest up to 6 whose groups do not chain across the set when they become the "
                        "pseudo-subjects; -1 skips the pass)")
    parser.add_argument("--near-threshold-3d", type=_threshold_3d, default="auto",
                        help="the same for NIfTI volumes, on their 3D hash (default: auto, up to 2)")
    parser.add_argument("--keep-split-folders", action="store_true",
                        help="keep the set's split folders (or a table's split column) even when near-duplicates "
                        "cross them (default: re-split by pseudo-subject when the set has no patient ids)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mocomri.data.manifest import build_manifest, write_manifest

    entities: dict[str, set[str]] = {}
    for key, values in args.filter or []:
        entities.setdefault(key, set()).update(values)
    load = None
    if args.cache_config:
        from mocomri.config import load_config
        from mocomri.data.cache import PreprocessCache
        from mocomri.data.preprocess import PreprocessSettings

        data_cfg = load_config(args.cache_config).data
        load = PreprocessCache(data_cfg.cache_dir, PreprocessSettings.from_config(data_cfg)).get
    result = build_manifest(
        args.root, args.layout, args.labels, args.modality,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed, unlabeled=args.unlabeled,
        drop_duplicates=not args.keep_duplicates, drop_unreadable=not args.keep_unreadable, decode=not args.no_decode,
        load=load, near_threshold=None if args.near_threshold == -1 else args.near_threshold,
        near_threshold_3d=args.near_threshold_3d,
        keep_split_folders=args.keep_split_folders, progress=True,
        table=args.table, path_column=args.path_column, id_column=args.id_column, label_column=args.label_column,
        suffixes=[s for group in args.suffix or [] for s in group], entities=entities,
    )
    write_manifest(result.manifest, args.out)
    print(result)
    print(f"wrote {len(result.manifest)} rows to {args.out}")
    return 0
