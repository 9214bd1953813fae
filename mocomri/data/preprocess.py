"""Deterministic preprocessing of one scan: resample, crop to the head, clip and z-score.

This is what the cache stores (see :mod:`mocomri.data.cache`), so it runs once per scan and
settings, never per epoch. Each scan is one contrast, so normalising each scan on its own
foreground is the per-modality normalisation: a T1w and a FLAIR of one subject are scaled
independently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from monai.data import MetaTensor
from monai.transforms import Spacing, SpatialCrop
from monai.transforms.utils import generate_spatial_bounding_box
from scipy import ndimage

from mocomri.data.io import Scan
from mocomri.data.settings import DataConfig

# Bump when the output of preprocess() changes for the same settings: old cache entries then miss.
PREPROCESS_VERSION = 1


@dataclass(frozen=True)
class PreprocessSettings:
    """The settings that change a preprocessed array (and therefore its cache key)."""

    spacing: tuple[float, ...] | None = None
    crop_foreground: bool = True
    crop_margin: int = 2
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    foreground_threshold: float = 0.1
    volume_index: int | None = 0

    @classmethod
    def from_config(cls, cfg: DataConfig) -> PreprocessSettings:
        return cls(
            spacing=tuple(cfg.spacing) if cfg.spacing is not None else None,
            crop_foreground=cfg.crop_foreground,
            crop_margin=cfg.crop_margin,
            clip_percentiles=(float(cfg.clip_percentiles[0]), float(cfg.clip_percentiles[1])),
            foreground_threshold=cfg.foreground_threshold,
            volume_index=cfg.volume_index,
        )

    def as_key(self) -> dict:
        return {"version": PREPROCESS_VERSION, **asdict(self)}


@dataclass
class Preprocessed:
    """A preprocessed scan.

    Attributes:
        array: clipped, foreground-z-scored float32. Shape: (C, X, Y, Z) or (C, H, W).
        spacing: voxel size after resampling (mm).
        foreground: fraction of foreground pixels in each slice, per spatial axis
            (``foreground[a][i]`` is for the i-th slice along axis a); empty for 2D images.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    foreground: dict[int, list[float]]


def foreground_mask(array: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """The head (or object) mask: the largest blob above ``p2 + threshold * (p98 - p2)``, holes filled.

    Written here because MONAI's ``ForegroundMask`` needs scikit-image for Otsu and is meant for
    RGB pathology; this is FSL BET's robust-range threshold, which suits MRI magnitude images
    (air is dark but noisy, so ``> 0`` is not a foreground test).

    Shape: array (C, *spatial) -> mask (*spatial), bool.
    """
    intensity = array.max(axis=0)  # any channel above threshold counts
    p2, p98 = np.percentile(intensity, [2, 98])
    mask = intensity > p2 + threshold * (p98 - p2)
    # Keep the largest connected part: bright noise specks in the air would widen the crop.
    parts, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(parts.ravel())
        sizes[0] = 0
        mask = parts == int(sizes.argmax())
    return ndimage.binary_fill_holes(mask)


def _normalise(array: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Percentile clipping and z-scoring, both over the foreground, per channel.

    MONAI's ``ClipIntensityPercentiles`` and ``NormalizeIntensity`` compute their statistics over
    the whole image (or its non-zero voxels), not over a given mask, hence this small function.
    """
    out = np.empty_like(array, dtype=np.float32)
    for c, channel in enumerate(array):
        values = channel[mask] if mask.any() else channel.ravel()
        lo, hi = np.percentile(values, percentiles)
        clipped = np.clip(channel, lo, hi)
        inside = np.clip(values, lo, hi)
        std = float(inside.std()) or 1.0
        out[c] = (clipped - float(inside.mean())) / std
    return out


def _resample(scan: Scan, spacing: tuple[float, ...]) -> Scan:
    image = MetaTensor(scan.array, affine=scan.affine)
    resampled = Spacing(pixdim=spacing, mode="bilinear", padding_mode="border")(image)
    return Scan(array=resampled.numpy().astype(np.float32), spacing=tuple(spacing), affine=resampled.affine.numpy())


def _crop(array: np.ndarray, mask: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    start, end = generate_spatial_bounding_box(mask[None], margin=margin)
    crop = SpatialCrop(roi_start=start, roi_end=end)
    cropped = np.asarray(crop(array))
    cropped_mask = np.asarray(crop(mask[None]))[0]
    return cropped, cropped_mask


def preprocess(scan: Scan, settings: PreprocessSettings) -> Preprocessed:
    """Resamples (volumes only, when asked), crops to the foreground and normalises one scan.

    Shape: scan.array (C, *spatial) -> Preprocessed.array (C, *spatial'), spatial' <= spatial
    unless resampled.
    """
    if settings.spacing is not None and scan.spatial_dims == 3:
        scan = _resample(scan, settings.spacing)
    array = scan.array
    mask = foreground_mask(array, settings.foreground_threshold)
    if settings.crop_foreground and mask.any():
        array, mask = _crop(array, mask, settings.crop_margin)
    array = _normalise(array, mask, settings.clip_percentiles)
    foreground: dict[int, list[float]] = {}
    if scan.spatial_dims == 3:
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            foreground[axis] = [round(float(f), 4) for f in mask.mean(axis=other)]
    return Preprocessed(array=array, spacing=tuple(scan.spacing), foreground=foreground)
