"""Where a random-init linear probe's accuracy on brain-tumour comes from: split, preprocessing,
width and the probe's regularisation, one factor at a time.

    .venv/bin/python tools/baseline_gap.py --config configs/brain_tumor_cpu.yaml \
        --set data.cache_dir=.cache/mocomri --out tools/runs/baseline_gap.json

A plain MoCo v2 setup (grayscale JPEG resized to 64 px, [0, 1] scaled by the dataset's mean and
std, full-width ResNet-18, logistic regression at C = 1 on the pooled features, the dataset's own
Training/Testing folders) reads a random-init encoder at about 87 %; ``mocomri probe`` reads
74-78 %. This prints the accuracy of a random-init ResNet-18 (seed 0, eval mode) for each
combination of:

- split: the dataset's ``Training``/``Testing`` folders, or the manifest's split cleaned of
  near-duplicates by pseudo-subject (train -> test);
- preprocessing: ``plain`` as above, or ``mocomri`` (the probe's input: crop to the head,
  foreground clip and z-score, pad square, resize);
- width: 32 or 64 (feature dimension 256 or 512);
- probe: logistic regression on standardised features at C = 1, and ``mocomri probe``'s
  (C chosen by subject-grouped cross-validated log-loss).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mocomri.config import Config, load_config  # noqa: E402
from mocomri.data.manifest import read_manifest  # noqa: E402
from mocomri.eval.features import extract_features  # noqa: E402
from mocomri.eval.probe import fit_linear_probe  # noqa: E402
from mocomri.models.encoders import create_encoder  # noqa: E402


class _Tensors(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i]}


def plain_images(paths: list[Path], side: int) -> torch.Tensor:
    """Grayscale, resized to ``side`` (aspect not kept), [0, 1], then the set's mean and std. Shape: (N, 1, side, side)."""
    from PIL import Image

    x = np.stack([np.asarray(Image.open(p).convert("L").resize((side, side), Image.BILINEAR), np.float32) / 255 for p in paths])
    x = (x - x.mean()) / x.std()
    return torch.from_numpy(x[:, None])


def mocomri_images(manifest, cfg: Config) -> torch.Tensor:
    """The probe's evaluation input for every row, in manifest order. Shape: (N, C, S, S)."""
    from mocomri.data.datasets import build_eval_dataset

    every = dataclasses.replace(manifest, rows=[dataclasses.replace(r, split="train") for r in manifest.rows])
    dataset = build_eval_dataset(every, cfg.data, ["train"])
    if list(dataset.item_rows) != list(range(len(manifest.rows))):
        raise SystemExit("the evaluation dataset skipped or reordered rows; this tool needs one item per row")
    return torch.stack([dataset[i]["image"] for i in range(len(dataset))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/brain_tumor_cpu.yaml", help="its data section (manifest, image size, cache)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--widths", default="32,64")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    cfg = load_config(args.config, args.set)
    manifest = read_manifest(cfg.data.manifest)
    rows = manifest.rows
    labels = np.array([r.label for r in rows])
    groups = np.array([r.subject for r in rows])
    folder = np.array(["Training" if "/Training/" in r.path else "Testing" for r in rows])
    splits = {
        "Training/Testing folders": (folder == "Training", folder == "Testing"),
        "cleaned (pseudo-subjects)": (np.array([r.split == "train" for r in rows]), np.array([r.split == "test" for r in rows])),
    }
    inputs = {
        "plain": plain_images([manifest.root / r.path for r in rows], cfg.data.image_size),
        "mocomri": mocomri_images(manifest, cfg),
    }
    results = []
    for prep, images in inputs.items():
        for width in (int(w) for w in args.widths.split(",")):
            torch.manual_seed(0)
            encoder, _ = create_encoder("resnet18", images.shape[1], width)
            features = extract_features(encoder, _Tensors(images), batch_size=256, device="cpu")
            for split, (train, test) in splits.items():
                scaler = StandardScaler().fit(features[train])
                plain = LogisticRegression(C=1.0, max_iter=3000).fit(scaler.transform(features[train]), labels[train])
                plain_acc = float((plain.predict(scaler.transform(features[test])) == labels[test]).mean())
                probe = fit_linear_probe(features[train], labels[train], groups[train])
                probe_acc = float((probe.predict(features[test]) == labels[test]).mean())
                row = dict(split=split, preprocessing=prep, width=width, features=features.shape[1],
                           logistic_C1=round(100 * plain_acc, 1), mocomri_probe=round(100 * probe_acc, 1),
                           probe_C=float(probe[-1].C), n_train=int(train.sum()), n_test=int(test.sum()))
                results.append(row)
                print(f"{split:26s} {prep:8s} width {width:2d}: logistic C=1 {row['logistic_C1']:5.1f}  "
                      f"mocomri probe {row['mocomri_probe']:5.1f} (C={row['probe_C']:g})", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
