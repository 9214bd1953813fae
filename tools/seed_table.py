"""One table over pretraining seeds: the probe's accuracy of each run, mean ± std across runs.

    .venv/bin/python tools/seed_table.py tools/runs/recipe/crop_mask_100ep_seed*_metrics.json

Each argument is a ``metrics.json`` of ``mocomri probe`` on one pretraining seed's encoder (same
manifest, fractions and probe seeds). For every method and label fraction it prints the mean ±
std over the runs of each run's accuracy (itself a mean over the probe's label-fraction draws),
and each run's 95 % bootstrap CI; baselines that do not depend on the pretraining seed (random
init, raw pixels) have one value and the CI of the last file given (list the most recent probe
last). Markdown, ready for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

NAMES = {
    "moco": "MoCo (linear)",
    "moco_knn": "MoCo (kNN)",
    "random_init": "Random init (linear)",
    "random_init_knn": "Random init (kNN)",
    "raw_pixels": "Raw pixels (PCA + linear)",
    "supervised": "Supervised from scratch",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", nargs="+", type=Path)
    parser.add_argument("--metric", default="accuracy")
    args = parser.parse_args()
    runs = [json.loads(p.read_text()) for p in args.metrics]
    fractions = sorted({f for r in runs for m in r["methods"].values() for f in m}, key=float)
    print("| method | runs | " + " | ".join(f"{100 * float(f):g}% labels" for f in fractions) + " |")
    print("|---|---|" + "---|" * len(fractions))
    for method, name in NAMES.items():
        present = [r["methods"][method] for r in runs if method in r["methods"]]
        if not present:
            continue
        cells = []
        for f in fractions:
            values = [m[f][args.metric] for m in present if f in m]
            means = [100 * v["mean"] for v in values]
            cis = [f"[{100 * v['ci'][0]:.1f}, {100 * v['ci'][1]:.1f}]" for v in values]
            if len(values) == 1 or len({round(x, 6) for x in means}) == 1:  # one run, or a baseline
                # A baseline's CI from the last file: the probe's CI definition changed once (CI of
                # draw 0, then of the mean over draws), and the most recent run carries the current one.
                cells.append(f"{means[-1]:.1f} {cis[-1]}")
            else:
                cells.append(f"{statistics.mean(means):.1f} ± {statistics.stdev(means):.1f} {' '.join(cis)}")
        print(f"| {name} | {len(present)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
