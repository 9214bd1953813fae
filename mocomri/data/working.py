"""Working images: every pretraining item padded square (cubic) and resized once, in one memmap.

The views of an item are crops of it at the view's side (:mod:`mocomri.augment`), so an item
never needs more resolution than its smallest crop resampled to the view's side, nor much
more than the view's side for its largest crop. The working side is the geometric mean of the
two, ``view side / sqrt(min crop fraction)`` rounded up to a multiple of 8 (96 for 64-px views
cropped at 0.5-1.0 of the image): no crop is then resampled by more than ``sqrt(1/min
fraction)`` (1.4x) up or down. Sources are often larger (224-512 px images, 120-256 voxel
volumes) and would otherwise be resized for every view.

All items of a dataset sit in one float16 array ``(N, C, *W)`` under
``<cache_dir>/working/<key>.npy``; ``key`` hashes the cache entries the items come from (which
hash the sources' content and the preprocessing settings), the slices taken and the working
side, so any change gives a new array. It is written to a temporary file and renamed, and read
with ``mmap_mode="r"``: DataLoader workers only read rows of it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Resize
from tqdm import tqdm

from mocomri.data.transforms import ArrayCompose, PadToSquare
from mocomri.errors import DataError
from mocomri.files import atomic_path


def working_side(view_side: int, min_crop_fraction: float) -> int:
    """The working images' side for views of ``view_side`` cropped down to ``min_crop_fraction`` of the image."""
    if not 0.0 < min_crop_fraction <= 1.0:
        raise ValueError(f"min_crop_fraction={min_crop_fraction} must be in (0, 1]")
    return int(math.ceil(view_side / math.sqrt(min_crop_fraction) / 8) * 8)


def _resizer(side: int, spatial_dims: int) -> ArrayCompose:
    # Anti-aliased: most sources shrink here, and a shrink without it aliases fine texture.
    return ArrayCompose([PadToSquare(), Resize(spatial_size=(side,) * spatial_dims, mode="bilinear", anti_aliasing=True)])


def build_working_array(
    cache_dir: str | Path,
    sources: Sequence[str],
    read: Callable[[int], torch.Tensor],
    n_items: int,
    side: int,
    spatial_dims: int,
    progress: bool | None = None,
    describe: Callable[[int], str] = str,
) -> np.ndarray:
    """The working images of ``n_items`` items, built once and then opened as a read-only memmap.

    Args:
        cache_dir: the preprocessing cache's folder.
        sources: strings that identify the items' content exactly (cache entry paths and slice
            indices); hashed into the array's key.
        read: ``read(i)`` gives item ``i``'s preprocessed array. Shape: (C, *spatial).
        n_items: the number of items.
        side: the working side (see :func:`working_side`).
        spatial_dims: 2 or 3.
        progress: tqdm bar while building; None shows it on a terminal only.
        describe: names item ``i`` in errors.

    Returns:
        float16 memmap. Shape: (N, C, *[side] * spatial_dims).

    Raises:
        DataError: items differ in their channel count.
    """
    key = hashlib.sha1(json.dumps({"sources": list(sources), "side": side, "dims": spatial_dims}).encode()).hexdigest()
    path = Path(cache_dir) / "working" / f"{key}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    resize = _resizer(side, spatial_dims)
    with atomic_path(path, suffix=".npy") as tmp:
        first = read(0)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n_items, first.shape[0], *(side,) * spatial_dims))
        for i in tqdm(range(n_items), desc="working images", unit="item", disable=None if progress is None else not progress):
            image = first if i == 0 else read(i)
            if image.shape[0] != out.shape[1]:
                raise DataError(f"{describe(i)}: {image.shape[0]} channels, but {describe(0)} has {out.shape[1]}; "
                                "every pretraining item needs the same channel count")
            out[i] = torch.as_tensor(resize(image)).numpy()
        out.flush()
        del out
    return np.load(path, mmap_mode="r")
