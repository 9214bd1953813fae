"""``mocomri manifest``: discover scans, make subject-level splits, audit, write the CSV."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "manifest",
        help="build a manifest CSV from a data folder and audit it",
        description="Scans a BIDS tree, a class-per-folder image tree or a flat folder; splits by "
        "subject (stratified by label); decodes every file once and reports unreadable files and "
        "duplicates by content hash. See data_manifests/README.md for the schema.",
    )
    parser.add_argument("--root", required=True, help="the data folder")
    parser.add_argument("--out", required=True, help="the manifest CSV to write")
    parser.add_argument("--layout", default="auto", choices=["auto", "bids", "folders", "flat"])
    parser.add_argument("--labels", help="CSV/TSV with subject labels (BIDS default: participants.tsv 'label')")
    parser.add_argument("--label-column", default="label", help="label column of --labels (default: label)")
    parser.add_argument("--id-column", help="subject id column of --labels (default: participant_id, subject, or the first)")
    parser.add_argument("--modality", help="modality of every file (folders/flat layouts), e.g. T1c")
    parser.add_argument("--val-fraction", type=float, default=None,
                        help="share of subjects for val (default 0.1 for new splits; with Training/Testing "
                        "folders, val is carved from train only when this is given)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of subjects for test (new splits)")
    parser.add_argument("--unlabeled", action="store_true", help="ignore labels: every row is split 'unlabeled'")
    parser.add_argument("--seed", type=int, default=0, help="split seed")
    parser.add_argument("--keep-duplicates", action="store_true",
                        help="keep val/test files identical to a file of an earlier split (default: drop)")
    parser.add_argument("--keep-unreadable", action="store_true", help="keep rows whose file cannot be decoded")
    parser.add_argument("--no-decode", action="store_true", help="hash only; do not decode every file")
    parser.add_argument("--cache-config", help="a config YAML: fill its preprocessing cache during the audit pass")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    from dataclasses import replace
    from pathlib import Path

    from mocomri.data.manifest import Manifest, assign_splits, audit, read_label_table, scan_root, write_manifest

    root = Path(os.path.abspath(args.root))
    labels = None
    if args.labels:
        labels = read_label_table(args.labels, args.id_column, args.label_column)
    layout, rows = scan_root(root, args.layout, labels, args.modality)
    if args.unlabeled:
        rows = [replace(r, label="", split="unlabeled") for r in rows]
    kept_splits = any(r.split for r in rows)
    val = args.val_fraction if args.val_fraction is not None else (0.0 if kept_splits else 0.1)
    rows = assign_splits(rows, val_fraction=val, test_fraction=args.test_fraction, seed=args.seed,
                         carve_val_from_train=kept_splits and args.val_fraction is not None)

    load = None
    if args.cache_config:
        from mocomri.config import load_config
        from mocomri.data.cache import PreprocessCache
        from mocomri.data.preprocess import PreprocessSettings

        data_cfg = load_config(args.cache_config).data
        load = PreprocessCache(data_cfg.cache_dir, PreprocessSettings.from_config(data_cfg)).get
    report = audit(Manifest(root, rows), load=load, decode=not args.no_decode,
                   drop_duplicates=not args.keep_duplicates, drop_unreadable=not args.keep_unreadable,
                   progress=True)
    write_manifest(report.manifest, args.out)
    print(f"layout: {layout}")
    print(report)
    print(f"wrote {len(report.manifest)} rows to {args.out}")
    return 0
