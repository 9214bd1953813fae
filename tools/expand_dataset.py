#!/usr/bin/env python
"""Offline dataset expansion: each image plus N augmented copies, written to disk with a manifest.

This is the "expand the set offline" alternative to MoCo's online augmentation, for the
offline-expansion ablation (RESULTS.md, "Ablations"). The copies are drawn with the augmentation that
pretraining uses online (:class:`mocomri.augment.BatchViews` with the ``augment`` section of
``--config``), so the comparison is between the *same* augmentations applied once, ahead of
time, and applied afresh at every step.

    python tools/expand_dataset.py --manifest data_manifests/brain_tumor_mri.csv \
        --split train --subset 2000 --copies 10 --size 128 --out /tmp/bt_expanded \
        --config configs/brain_tumor_cpu.yaml

writes ``OUT/images/<n>_<copy>.png``, ``OUT/subset.csv`` (the ``subset`` originals alone) and
``OUT/expanded.csv`` (originals and copies). Every copy keeps the subject of its original, so
subject-level masking and subject-level splits still see them as one subject.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mocomri.augment import BatchViews
from mocomri.augment.settings import AugmentConfig
from mocomri.config import load_config

from mocomri.data.io import load_scan
from mocomri.data.manifest import Manifest, read_manifest, write_manifest
from mocomri.data.transforms import build_eval_transform
from mocomri.data.working import working_side


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(1, H, W) float -> (H, W) uint8 over the 0.5-99.5 percentile range."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    scaled = (np.clip(image[0], lo, hi) - lo) / max(hi - lo, 1e-6)
    return np.round(scaled * 255).astype(np.uint8)


def expand(manifest: Manifest, split: str, subset: int, copies: int, size: int, out: Path, seed: int,
           aug_cfg: AugmentConfig | None = None) -> tuple[Path, Path]:
    rows = [r for r in manifest.rows if r.split == split]
    if subset and subset < len(rows):
        rows = random.Random(seed).sample(rows, subset)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    aug_cfg = aug_cfg or AugmentConfig()
    keep = build_eval_transform(2, size)
    # The copies are crops of a working image, as online: see mocomri.data.working.
    working = build_eval_transform(2, working_side(size, min(aug_cfg.params_for_family(f).crop_scale[0] for f in ("t1", "t2", "flair", "dwi", "other"))))
    families = sorted({aug_cfg.family_of(r.modality) for r in rows})
    views = BatchViews(aug_cfg, families, (size, size))
    originals, expanded = [], []
    for n, row in enumerate(rows):
        scan = load_scan(manifest.abspath(row))
        name = f"{n:05d}_0.png"
        Image.fromarray(to_uint8(np.asarray(keep(scan.array)))).save(images / name)
        original = replace(row, path=f"images/{name}", sha1="", split="unlabeled" if row.split == "train" else row.split)
        originals.append(original)
        expanded.append(original)
        batch = torch.as_tensor(working(scan.array)).as_subclass(torch.Tensor).float().unsqueeze(0).expand(copies, -1, -1, -1)
        family = torch.full((copies,), families.index(aug_cfg.family_of(row.modality)))
        # 2D images carry no orientation: flip axis 1 (columns) is left-right in radiological slices
        copy_views, _ = views(batch, family, torch.ones(copies, dtype=torch.int64), seed * 1_000_003 + n)
        for c in range(1, copies + 1):
            name = f"{n:05d}_{c}.png"
            Image.fromarray(to_uint8(copy_views[c - 1].numpy())).save(images / name)
            expanded.append(replace(original, path=f"images/{name}"))
        if (n + 1) % 200 == 0:
            print(f"{n + 1}/{len(rows)} images expanded", file=sys.stderr)
    subset_csv, expanded_csv = out / "subset.csv", out / "expanded.csv"
    write_manifest(Manifest(out, originals), subset_csv)
    write_manifest(Manifest(out, expanded), expanded_csv)
    return subset_csv, expanded_csv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="train", help="the split whose images are expanded")
    p.add_argument("--subset", type=int, default=2000, help="draw this many images first (0: all)")
    p.add_argument("--copies", type=int, default=10, help="augmented copies per image")
    p.add_argument("--size", type=int, default=128, help="side of the written images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--config", help="take the augmentation (preset, strengths) from this pretraining config, as online "
                   "(default: the full MRI augmentation)")
    args = p.parse_args(argv)
    aug_cfg = load_config(args.config).augment if args.config else None
    subset_csv, expanded_csv = expand(read_manifest(args.manifest), args.split, args.subset, args.copies, args.size,
                                      Path(args.out), args.seed, aug_cfg)
    print(f"wrote {subset_csv} and {expanded_csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
