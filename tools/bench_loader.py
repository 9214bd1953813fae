"""Data-loader throughput: augmented 2D slice pairs per second, cached memmaps vs decoding NIfTI.

Both paths yield the same items (the same foreground slices of the same volumes, the same
preprocessing, the same MONAI view transform, two views per item); the only difference is where
the preprocessed volume comes from:

- ``cached``: :func:`mocomri.data.datasets.build_pretrain_dataset`, reading the float16 memmap;
- ``decode``: every item decodes its ``.nii.gz`` with MONAI's ``LoadImage`` (nibabel reader),
  reorients to RAS with ``Orientation``, and runs the same preprocessing before slicing.

Each is measured with 0 and 2 DataLoader workers, side by side in one run.

Usage::

    python tools/bench_loader.py                                   # synthetic cohort, 64x64x48
    python tools/bench_loader.py --manifest data_manifests/ixi_t1_10.csv   # IXI, 90x120x120
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mocomri.augment.settings import AugmentConfig
from mocomri.data.datasets import build_pretrain_dataset
from mocomri.data.io import Scan
from mocomri.data.manifest import Manifest, read_manifest, scan_bids
from mocomri.data.preprocess import PreprocessSettings, preprocess
from mocomri.data.settings import DataConfig
from mocomri.timing import time_fed


class DecodeEveryTime(Dataset):
    """The cached dataset's items, rebuilt from the NIfTI file on every access."""

    def __init__(self, cached, manifest: Manifest, data_cfg: DataConfig):
        from monai.transforms import LoadImage, Orientation

        self.cached = cached
        self.paths = [str(manifest.abspath(manifest.rows[s.row])) for s in cached.scans]
        self.settings = PreprocessSettings.from_config(data_cfg)
        self.load = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True)
        self.orient = Orientation(axcodes="RAS")

    def __len__(self) -> int:
        return len(self.cached)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        self.cached._reseed()
        k, slice_index = self.cached.items[index]
        image = self.orient(self.load(self.paths[k]))  # MetaTensor (1, X, Y, Z), RAS
        scan = Scan(array=image.numpy(), spacing=tuple(float(s) for s in image.pixdim[:3]), affine=image.affine.numpy())
        volume = preprocess(scan, self.settings).array.astype(np.float16)  # as stored in the cache
        view = torch.from_numpy(np.take(volume, slice_index, axis=1 + self.cached.slice_axis).astype(np.float32))
        transform = self.cached.transforms[self.cached._transform_of[k]]
        return {"view1": transform(view), "view2": transform(view)}


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} cores"


def pairs_per_second(dataset: Dataset, workers: int, batch_size: int, seconds: float) -> float:
    """Steady-state items per second over at least ``seconds``: the first batch (worker start,
    warm-up) is not timed."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    epochs = itertools.chain.from_iterable(itertools.repeat(loader))  # a new epoch each time the last ends
    items = []  # per batch
    timing = time_fed(epochs, lambda batch: items.append(len(batch["view1"])), steps=1, warmup=1, min_seconds=seconds)
    return sum(items[1:]) / timing.seconds  # items[0]: the untimed first batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", help="a manifest of NIfTI volumes (default: a synthetic cohort)")
    parser.add_argument("--subjects", type=int, default=20, help="synthetic cohort size (T1w only)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per measurement")
    parser.add_argument("--workers", default="0,2")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker; keeps 0- and 2-worker runs comparable

    with tempfile.TemporaryDirectory() as tmp:
        if args.manifest:
            manifest = read_manifest(args.manifest)
            source = args.manifest
        else:
            from mocomri.data.synthetic import make_cohort

            root = make_cohort(Path(tmp) / "bids", subjects=args.subjects, modalities=["T1w"], seed=0)
            manifest = Manifest(root, scan_bids(root))
            source = f"synthetic cohort, {args.subjects} x T1w 64x64x48"
        cfg = DataConfig(cache_dir=str(Path(tmp) / "cache"), image_size=args.image_size, pretrain_splits=[])
        start = time.perf_counter()
        cached = build_pretrain_dataset(manifest, cfg, AugmentConfig(), splits=sorted({r.split for r in manifest.rows}),
                                        progress=False)
        fill = time.perf_counter() - start
        decode = DecodeEveryTime(cached, manifest, cfg)
        shape = np.load(cached.scans[0].array_path, mmap_mode="r").shape
        print(f"source: {source}; {len(manifest)} volumes, {len(cached)} slices; cached shape of the first {shape}")
        print(f"cache fill (decode + preprocess once): {fill:.1f} s")
        print(f"machine: {_cpu()}; torch threads 1, batch {args.batch_size}, "
              f"views {args.image_size}x{args.image_size}\n")
        print("| workers | cached pairs/s | decode pairs/s | speed-up |")
        print("|---:|---:|---:|---:|")
        for workers in (int(w) for w in args.workers.split(",")):
            fast = pairs_per_second(cached, workers, args.batch_size, args.seconds)
            slow = pairs_per_second(decode, workers, args.batch_size, args.seconds)
            print(f"| {workers} | {fast:.0f} | {slow:.0f} | {fast / slow:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
