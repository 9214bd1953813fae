"""Other classifiers on a probe's cached features: is a kNN ahead of the linear probe because of
leakage, or because the features are not linearly separable?

    .venv/bin/python tools/probe_classifiers.py /work/runs/q_batched_probe data_manifests/brain_tumor_mri.csv

Reads ``PROBE_DIR/features/<method>-*.npz`` (the probe's feature cache: train and test items of
an ``images2d`` manifest, in manifest order) and fits, on 100% of the training labels, logistic
regression over a range of C, cosine kNN with k = 1 and 20 (uniform votes), and an RBF SVM;
prints test accuracy (%).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mocomri.data.manifest import read_manifest  # noqa: E402


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe_dir", type=Path)
    parser.add_argument("manifest")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    rows = [r for r in read_manifest(args.manifest).rows if r.split in ("train", "test")]
    split = np.array([r.split for r in rows])
    y = np.array([r.label for r in rows])
    train, test = split == "train", split == "test"
    for path in sorted((args.probe_dir / "features").glob("*.npz")):
        features = np.load(path)["features"]
        if len(features) != len(rows):
            print(f"{path.name}: {len(features)} items, not the manifest's {len(rows)} train and test rows; skipped")
            continue
        scaler = StandardScaler().fit(features[train])
        a, b = scaler.transform(features[train]), scaler.transform(features[test])
        models = {f"logistic C={c}": LogisticRegression(C=c, max_iter=3000) for c in (0.01, 0.1, 1, 10, 100)}
        models |= {"kNN k=1": KNeighborsClassifier(1, metric="cosine"), "kNN k=20": KNeighborsClassifier(20, metric="cosine"),
                   "RBF SVM C=10": SVC(C=10)}
        scores = {name: 100 * float((m.fit(a, y[train]).predict(b) == y[test]).mean()) for name, m in models.items()}
        print(path.name.split("-")[0], "  ".join(f"{k}: {v:.1f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
