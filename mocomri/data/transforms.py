"""The deterministic evaluation transform, and the square padding that the working images share.

Training makes its random views per batch on the device (:mod:`mocomri.augment`); what stays
per item is deterministic: pad to a square/cube with the background, resize, z-score over the
whole input, on a channel-first array (a 2D slice or image, or a volume). The per-item MONAI view
pipeline that the batched views replaced is kept in ``tests/reference_transforms.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import Compose, EnsureType, NormalizeIntensity, Resize, SpatialPad, Transform


class ArrayCompose(Compose):
    """A ``Compose`` that runs on plain tensors, with MONAI's metadata tracking off.

    The inputs need no affine or applied-operations history, and tracking them (``MetaTensor``)
    makes a transform several times slower (BENCHMARKS.md). The global switch is restored after
    each call.
    """

    def __call__(self, *args, **kwargs):
        previous = get_track_meta()
        set_track_meta(False)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            set_track_meta(previous)


class PadToSquare(Transform):
    """Pads a channel-first array to equal spatial sides with its minimum value (the background).

    MONAI's pads need a target size known in advance; slices of different scans differ in
    shape, so this computes it per call. Keeps the aspect ratio through a later square resize.
    """

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        side = max(img.shape[1:])
        if all(s == side for s in img.shape[1:]):
            return img
        return SpatialPad(spatial_size=side, mode="constant", value=float(img.min()))(img)


def as_size(size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """``size`` as one side per spatial axis: an int is repeated ``spatial_dims`` times."""
    return (size,) * spatial_dims if isinstance(size, int) else tuple(size)


def build_eval_transform(spatial_dims: int, size: int | Sequence[int]) -> ArrayCompose:
    """The deterministic transform for evaluation: pad to square/cube, resize, z-score.

    Shape: (C, *spatial) -> (C, *size) float32 tensor.
    """
    return ArrayCompose([
        PadToSquare(),
        Resize(spatial_size=as_size(size, spatial_dims), mode="bilinear", anti_aliasing=True),
        NormalizeIntensity(),
        EnsureType(data_type="tensor", dtype=torch.float32, track_meta=False),
    ])
