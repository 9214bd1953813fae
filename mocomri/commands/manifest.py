"""``mocomri manifest``: discover scans, make subject-level splits, audit, write the CSV."""

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


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "manifest",
        help="build a manifest CSV from a data folder and audit it",
        description="Scans a BIDS tree, a class-per-folder image tree or a flat folder; splits by "
        "subject (stratified by label; by near-duplicate group when the set has no patient ids); "
        "decodes every file once and reports unreadable files, duplicates by content hash and "
        "near-duplicates by perceptual hash. See data_manifests/README.md for the schema.",
    )
    parser.add_argument("--root", required=True, help="the data folder")
    parser.add_argument("--out", required=True, help="the manifest CSV to write")
    parser.add_argument("--layout", default="auto", choices=["auto", "bids", "subjects", "folders", "flat"])
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
    parser.add_argument("--near-threshold", type=_threshold, default="auto",
                        help="near-duplicates of 2D images: perceptual-hash distance in bits of 64 (default: auto, "
                        "the largest up to 6 whose groups do not chain across the set when they become the "
                        "pseudo-subjects; -1 skips the pass)")
    parser.add_argument("--near-threshold-3d", type=_threshold_3d, default="auto",
                        help="the same for NIfTI volumes, on their 3D hash (default: auto, up to 2)")
    parser.add_argument("--keep-split-folders", action="store_true",
                        help="keep the set's split folders even when near-duplicates cross them "
                        "(default: re-split by pseudo-subject when the set has no patient ids)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mocomri.data.manifest import build_manifest, read_label_table, write_manifest

    labels = read_label_table(args.labels, args.id_column, args.label_column) if args.labels else None
    load = None
    if args.cache_config:
        from mocomri.config import load_config
        from mocomri.data.cache import PreprocessCache
        from mocomri.data.preprocess import PreprocessSettings

        data_cfg = load_config(args.cache_config).data
        load = PreprocessCache(data_cfg.cache_dir, PreprocessSettings.from_config(data_cfg)).get
    result = build_manifest(
        args.root, args.layout, labels, args.modality,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed, unlabeled=args.unlabeled,
        drop_duplicates=not args.keep_duplicates, drop_unreadable=not args.keep_unreadable, decode=not args.no_decode,
        load=load, near_threshold=None if args.near_threshold == -1 else args.near_threshold,
        near_threshold_3d=args.near_threshold_3d,
        keep_split_folders=args.keep_split_folders, progress=True,
    )
    write_manifest(result.manifest, args.out)
    print(result)
    print(f"wrote {len(result.manifest)} rows to {args.out}")
    return 0
