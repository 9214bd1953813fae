"""Validating the near-duplicate threshold: pairs at each distance, and false merges of known subjects.

1. brain-tumor-mri (``--images``): every image's pHash; for each Hamming distance d, how many
   Testing images have a Training image within d (the leak of the set's own folders), the
   accuracy of labelling each Testing image with its pHash-nearest Training image's label, and
   the pseudo-subject groups (connected components) at thresholds 4, 6 and 8; a PNG of random
   pairs at distances 0, 2, 4, 6, 8, 10 and 12, side by side, to look at.
2. ixi-t1-185 (``--volumes``): 185 different people. Any two of their scans within the
   threshold would be merged wrongly, so the pairs under it measure false merges: in 3D (the
   volume hash) and in 2D (the pHash of the same axial slice of each scan, and of neighbouring
   slices of one scan, which should merge).

    .venv/bin/python tools/near_duplicate_threshold.py --images ../shared/data/brain-tumor-mri \\
        --volumes ../shared/data/ixi-t1-185/t1 --out tools/runs/near_duplicates

Writes ``OUT/pairs.png`` and ``OUT/summary.json`` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mocomri.data.io import load_scan  # noqa: E402
from mocomri.data.manifest.near_duplicates import NearDuplicates, phash_2d, phash_3d, phash_image  # noqa: E402

DISTANCES = (0, 2, 4, 6, 8, 10, 12)


def _bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(a[:, None] ^ b[None, :])


def images(root: Path, out: Path, seed: int = 0) -> dict:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    split = np.array(["train" if "Training" in p.parts else "test" for p in files])
    label = np.array([p.parent.name for p in files])
    hashes = np.array([phash_2d(p) for p in files], dtype=np.uint64)
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    d = _bits(hashes[test], hashes[train])  # (n_test, n_train)
    nearest = d.min(1)
    result = {"files": len(files), "train": len(train), "test": len(test), "test_with_train_within": {},
              "nearest_train_label_accuracy": float((label[train[d.argmin(1)]] == label[test]).mean()),
              "groups": {}}
    for k in DISTANCES:
        result["test_with_train_within"][k] = int((nearest <= k).sum())
    for threshold in (4, 6, 8):
        found = NearDuplicates.from_hashes(hashes.tolist(), threshold)
        groups = found.groups()
        mixed = sum(len(set(label[g])) > 1 for g in groups)
        result["groups"][threshold] = {"groups": len(groups), "files_in_groups": sum(map(len, groups)),
                                       "largest": len(groups[0]) if groups else 0, "sizes": found.size_histogram(),
                                       "groups_with_two_labels": mixed,
                                       "pseudo_subjects": int(len(np.unique(found.group)))}
    _pairs_png(files, hashes, out / "pairs.png", seed)
    return result


def _pairs_png(files: list[Path], hashes: np.ndarray, path: Path, seed: int, per_distance: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    rng = np.random.default_rng(seed)
    sample = rng.choice(len(files), size=min(2500, len(files)), replace=False)
    d = _bits(hashes[sample], hashes[sample])
    fig, axes = plt.subplots(len(DISTANCES), 2 * per_distance, figsize=(2 * per_distance * 1.3, len(DISTANCES) * 1.45))
    for r, k in enumerate(DISTANCES):
        i, j = np.nonzero(np.triu(d == k, 1))
        picks = rng.choice(len(i), size=min(per_distance, len(i)), replace=False) if len(i) else []
        for c in range(per_distance):
            for side in range(2):
                ax = axes[r, 2 * c + side]
                ax.set_xticks([]), ax.set_yticks([])
                if c < len(picks):
                    f = files[sample[(i, j)[side][picks[c]]]]
                    ax.imshow(Image.open(f).convert("L"), cmap="gray")
                    ax.set_title(f"{f.parent.parent.name[:2]}/{f.parent.name[:4]}/{f.stem[-6:]}", fontsize=5)
        axes[r, 0].set_ylabel(f"d = {k}", fontsize=8)
    fig.suptitle("brain-tumor-mri: random pairs at each pHash distance (bits of 64)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def volumes(root: Path) -> dict:
    files = sorted(root.glob("*.nii*"))
    scans = [load_scan(f).array for f in files]  # (C, X, Y, Z), RAS
    h3 = np.array([phash_3d(v) for v in scans], dtype=np.uint64)
    d3 = _bits(h3, h3)[np.triu_indices(len(files), 1)]
    # the same axial slice (middle of the volume) of every subject, and its neighbours in one subject
    mid = [v[0, :, :, v.shape[3] // 2] for v in scans]
    h2 = np.array([phash_image(s) for s in mid], dtype=np.uint64)
    d2 = _bits(h2, h2)[np.triu_indices(len(files), 1)]
    neighbours = [int(np.bitwise_count(np.uint64(phash_image(v[0, :, :, v.shape[3] // 2 + o])) ^ np.uint64(phash_image(v[0, :, :, v.shape[3] // 2]))))
                  for v in scans for o in (1, 2, 4)]
    result = {"subjects": len(files), "pairs": int(len(d3)), "different_subjects_within": {}}
    for k in DISTANCES:
        result["different_subjects_within"][k] = {"3d": int((d3 <= k).sum()), "2d_same_slice": int((d2 <= k).sum())}
    result["distance_percentiles_3d"] = {p: float(np.percentile(d3, p)) for p in (0, 1, 5, 50)}
    result["distance_percentiles_2d_same_slice"] = {p: float(np.percentile(d2, p)) for p in (0, 1, 5, 50)}
    result["same_subject_neighbour_slices_median"] = {o: float(np.median(neighbours[i::3])) for i, o in enumerate((1, 2, 4))}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path)
    parser.add_argument("--volumes", type=Path)
    parser.add_argument("--out", type=Path, default=Path("tools/runs/near_duplicates"))
    args = parser.parse_args()
    summary = {}
    if args.images:
        summary["images"] = images(args.images, args.out)
    if args.volumes:
        summary["volumes"] = volumes(args.volumes)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
