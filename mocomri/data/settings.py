"""The config section of the data layer: what to load and how to preprocess it.

``DataConfig`` is the ``data:`` section of a ``configs/*.yaml`` file (see :mod:`mocomri.config`);
the ``augment:`` section is :class:`mocomri.augment.settings.AugmentConfig`. Every field is typed
and has a default, so a config only names what it changes, e.g. ``data.image_size=128``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mocomri import validation as check
from mocomri.data.manifest.schema import SPLITS
from mocomri.errors import ConfigError

KINDS = ("auto", "slices2d", "patches3d", "images2d")


@dataclass
class DataConfig:
    """Where the scans are and how they become network inputs."""

    manifest: str = ""  # manifest CSV (see data_manifests/README.md)
    pretrain_splits: list[str] = field(default_factory=lambda: ["train", "unlabeled"])
    kind: str = "auto"  # "auto" (images2d for 2D files, slices2d for volumes) | "slices2d" | "patches3d" | "images2d"
    image_size: int = 64  # side of 2D inputs (slices or images)
    patch_size: int = 64  # side of 3D inputs: the evaluation's whole volumes, and pretraining views unless pretrain_patch_size
    pretrain_patch_size: int = 0  # side of 3D pretraining views; 0: patch_size (smaller: patches of the volume, see augment.pair_shift)
    working_size: int = 0  # side of the working images the views are cropped from; 0: from the view size and crop scale
    slice_axis: int = 2  # axis of the RAS volume to slice (0 sagittal, 1 coronal, 2 axial)
    channels: list[str] = field(default_factory=list)  # e.g. [T1w, T1c, T2w, FLAIR]: one session's contrasts stacked as channels
    missing_contrast: str = "error"  # a session lacking one of `channels`: "error" | "skip" (reported)
    min_foreground: float = 0.2  # skip slices with less foreground than this fraction of their area
    spacing: list[float] | None = None  # resample volumes to this spacing (mm); None keeps the source
    crop_foreground: bool = True  # crop each scan to the bounding box of its foreground (+ margin)
    crop_margin: int = 2  # voxels kept around the foreground when cropping
    clip_percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])  # over the foreground
    foreground_threshold: float = 0.1  # foreground: above p2 + this * (p98 - p2) of the scan
    volume_index: int | None = 0  # which volume of a 4D NIfTI; None keeps all volumes as channels
    cache_dir: str = ".cache/mocomri"  # preprocessed float16 memmaps (see mocomri.data.cache)
    num_workers: int = 2
    views_on: str = "device"  # where pretraining views are made: "device" (the training device) | "workers" (DataLoader workers, CPU runs)
    skip_bad: bool = False  # skip unreadable items (and report each) instead of failing
    seed: int = 0  # seeds the views of batches read without the pretraining sampler's item seeds

    def view_side(self, spatial_dims: int) -> int:
        """The side of a pretraining view: ``image_size`` in 2D; in 3D ``pretrain_patch_size``, else ``patch_size``."""
        return (self.pretrain_patch_size or self.patch_size) if spatial_dims == 3 else self.image_size

    def validate(self) -> None:
        """Raises ConfigError naming the first field with an impossible value."""
        if self.kind not in KINDS:
            raise ConfigError(f"data.kind: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        check.at_least("data.image_size", self.image_size, 8)
        check.at_least("data.patch_size", self.patch_size, 8)
        if self.pretrain_patch_size:
            check.at_least("data.pretrain_patch_size", self.pretrain_patch_size, 8)
        check.at_least("data.num_workers", self.num_workers, 0)
        check.at_least("data.crop_margin", self.crop_margin, 0)
        check.in_range("data.foreground_threshold", self.foreground_threshold, 0.0, 1.0, high_open=True)
        if self.volume_index is not None:
            check.at_least("data.volume_index", self.volume_index, 0)
        if not self.pretrain_splits:
            raise ConfigError("data.pretrain_splits is empty: name the splits to pretrain on")
        for i, split in enumerate(self.pretrain_splits):
            check.choice(f"data.pretrain_splits[{i}]", split, SPLITS)
        if self.missing_contrast not in ("error", "skip"):
            raise ConfigError(f"data.missing_contrast: expected 'error' or 'skip', got {self.missing_contrast!r}")
        if len(set(self.channels)) != len(self.channels):
            raise ConfigError(f"data.channels={self.channels} names a contrast twice")
        if self.views_on not in ("device", "workers"):
            raise ConfigError(f"data.views_on: expected 'device' or 'workers', got {self.views_on!r}")
        if self.working_size < 0:
            raise ConfigError(f"data.working_size={self.working_size} must be 0 (automatic) or positive")
        if self.slice_axis not in (0, 1, 2):
            raise ConfigError(f"data.slice_axis: expected 0, 1 or 2, got {self.slice_axis}")
        if not 0.0 <= self.min_foreground < 1.0:
            raise ConfigError(f"data.min_foreground={self.min_foreground} must be in [0, 1)")
        lo_hi = self.clip_percentiles
        if len(lo_hi) != 2 or not 0.0 <= lo_hi[0] < lo_hi[1] <= 100.0:
            raise ConfigError(f"data.clip_percentiles={lo_hi} must be [low, high] with 0 <= low < high <= 100")
        if self.spacing is not None and (len(self.spacing) != 3 or min(self.spacing) <= 0):
            raise ConfigError(f"data.spacing={self.spacing} must be three positive numbers (mm)")
