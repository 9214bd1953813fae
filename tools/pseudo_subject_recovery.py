"""How well pseudo-subjects recover the subjects of a slice set that has no ids (ground truth: the synthetic export).

Writes the synthetic cohort as a published 2D slice set (``mocomri synth --slices``), builds its
manifest at each fixed near-duplicate threshold and at the default (chosen from the data), and
scores the groups against the subjects the export knows: adjacent-slice recall, copy recall,
pair precision and the largest group's share. Answers: does the default grouping percolate, and
what does it give up to avoid it (the README's data section quotes the default row).

    .venv/bin/python tools/pseudo_subject_recovery.py --subjects 120 --out /tmp/slice_set
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mocomri.data.manifest import build_manifest  # noqa: E402
from mocomri.data.manifest.near_duplicates import PercolationError  # noqa: E402
from mocomri.data.synthetic_slices import make_slice_set, read_truth, score_grouping  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="where to write the slice set")
    args = parser.parse_args()
    root = make_slice_set(args.out, subjects=args.subjects, seed=args.seed)
    truth = read_truth(root)
    print(f"{len(truth)} files of {args.subjects} subjects (seed {args.seed})\n")
    print("| threshold (bits of 64) | adjacent-slice recall | copy recall | precision | largest group | test share |")
    print("|---|---|---|---|---|---|")
    for threshold in (0, 2, 4, 6, 8, "auto"):
        try:
            result = build_manifest(root, decode=False, near_threshold=threshold)
        except PercolationError as e:
            print(f"| {threshold} | error: {str(e).split(':')[0]} | | | | |")
            continue
        scores = score_grouping({r.path: r.subject for r in result.manifest.rows}, truth)
        test = sum(r.split == "test" for r in result.manifest.rows) / len(result.manifest)
        name = f"default ({result.near.threshold.split()[0]}, chosen)" if threshold == "auto" else threshold
        print(f"| {name} | {scores.adjacent_recall:.1%} | {scores.copy_recall:.1%} | {scores.precision:.1%} "
              f"| {scores.largest_share:.1%} | {test:.1%} |")


if __name__ == "__main__":
    main()
