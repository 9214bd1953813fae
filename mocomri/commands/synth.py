"""``mocomri synth``: write a synthetic MRI cohort (BIDS, NIfTI) for demos and tests."""

from __future__ import annotations

import argparse


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 64,64,48, got {text!r}") from None


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic brain MRI cohort (BIDS layout, heterotopia labels)",
        description="Writes brain-like phantoms as NIfTI in a BIDS layout, with participants.tsv "
        "labelling each subject 'heterotopia' (nodules of grey matter in the white matter) or 'healthy'.",
    )
    parser.add_argument("--out", required=True, help="output folder (the BIDS root)")
    parser.add_argument("--subjects", type=int, default=200, help="number of subjects (default 200)")
    parser.add_argument("--modalities", default="T1w,T2w,FLAIR", help="comma-separated: T1w,T2w,FLAIR,PD")
    parser.add_argument("--shape", type=_ints, default=None,
                        help="voxels X,Y,Z (default 64,64,48 = 3 mm; with --slices 64,64,96)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slices", action="store_true",
                        help="write the cohort the way public 2D slice sets are published instead: adjacent axial "
                        "T1w slices of each subject as JPEG in train/ and test/ class folders, some saved twice, "
                        "no subject ids; truth.csv beside them keeps each file's subject (default shape 64,64,96)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mocomri.data.synthetic import make_cohort
    from mocomri.errors import DataError

    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    try:
        if args.slices:
            from mocomri.data.synthetic_slices import TRUTH_FILE, make_slice_set

            root = make_slice_set(args.out, subjects=args.subjects, shape=args.shape or (64, 64, 96),
                                  seed=args.seed, progress=True)
            n = sum(1 for _ in root.rglob("*.jpg"))
            print(f"wrote {n} slices of {args.subjects} subjects to {root} (subjects in {root / TRUTH_FILE})")
            return 0
        root = make_cohort(args.out, subjects=args.subjects, modalities=modalities, shape=args.shape or (64, 64, 48),
                           seed=args.seed, progress=True)
    except ValueError as e:
        raise DataError(str(e)) from e
    print(f"wrote {args.subjects} subjects x {len(modalities)} modalities to {root}")
    return 0
