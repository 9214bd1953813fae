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
    parser.add_argument("--shape", type=_ints, default=(64, 64, 48), help="voxels X,Y,Z (default 64,64,48 = 3 mm)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mocomri.data.synthetic import make_cohort
    from mocomri.errors import DataError

    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    try:
        root = make_cohort(args.out, subjects=args.subjects, modalities=modalities, shape=args.shape,
                           seed=args.seed, progress=True)
    except ValueError as e:
        raise DataError(str(e)) from e
    print(f"wrote {args.subjects} subjects x {len(modalities)} modalities to {root}")
    return 0
