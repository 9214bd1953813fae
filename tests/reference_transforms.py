"""Per-item view transforms built from MONAI transforms: the reference the batched views replaced.

Training makes its views per batch on the device (:mod:`mocomri.augment`, its artefacts each
checked against MONAI's at fixed parameters in ``tests/test_augment_*.py``). This module keeps
the per-item MONAI pipeline they replaced, as the reference for what a view is (MONAI's
transforms define the artefacts) and to time the per-item path (``tools/bench_view_seeding.py``).
Not part of the installed package; import it from the repository root (``tests.reference_transforms``).

A view is made in two stages, both on a channel-first array (a 2D slice or image, or a volume):

1. spatial: pad to a square/cube, random resized crop (near-square box), resize, small rotation and scaling,
   optional elastic deformation, left-right flip (the only flip: anatomy is not symmetric
   front to back or top to bottom);
2. intensity, in the order the artefacts arise in an MR scanner, on the view rescaled to
   [0, 1]: receive-coil bias field, Gibbs ringing (k-space truncation), k-space spikes, Rician
   noise (magnitude of complex Gaussian noise), then gamma/contrast and a histogram shift
   (differences between scanners and protocols). Never colour jitter: MR images have one channel.

The view ends z-scored over the whole view, like the deterministic eval transform
(:func:`mocomri.data.transforms.build_eval_transform`), so both feed the encoder the same
intensity scale. Strengths and probabilities come from :meth:`AugmentConfig.params_for`, so each
modality family has its own.

Two calls of one transform give two different views: each call draws fresh randomness from the
transform's own random state (``Compose.set_random_state``). Making the two views with one
dictionary transform over two keys would apply the same draw to both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.utils import MAX_SEED
from monai.transforms import (
    Compose,
    EnsureType,
    Identity,
    NormalizeIntensity,
    OneOf,
    Rand2DElastic,
    Rand3DElastic,
    RandAdjustContrast,
    RandAffine,
    RandBiasField,
    RandFlip,
    RandGibbsNoise,
    RandHistogramShift,
    RandKSpaceSpikeNoise,
    Randomizable,
    RandomizableTransform,
    RandRicianNoise,
    Resize,
    ScaleIntensity,
)

from mocomri.augment.settings import AugmentConfig, AugmentParams
from mocomri.data.transforms import ArrayCompose, PadToSquare, as_size, build_eval_transform


class ViewCompose(ArrayCompose):
    """A view's composer: MONAI's metadata tracking off (:class:`~mocomri.data.transforms.ArrayCompose`),
    and every random step drawing from the composer's one random stream, re-seeded in place."""

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> ViewCompose:
        """Seeds one random stream that every random step of the view draws from in turn.

        MONAI's ``Compose`` gives each step its own ``RandomState``, built from a seed drawn from
        the composer's. Building a dozen of them is slow, and the pretraining sampler seeds every
        item, so that was a sizeable share of the time of making a pair of views (figures in
        BENCHMARKS.md). Here the steps share the composer's stream, which a new seed re-seeds in
        place; the views stay a pure function of the seed.
        """
        if state is None and seed is not None and getattr(self, "_shared", False):
            self.R.seed(seed % MAX_SEED)
            return self
        self.R = state if state is not None else np.random.RandomState(None if seed is None else seed % MAX_SEED)
        _share_state(self.transforms, self.R)
        self._shared = True
        return self


def _share_state(transforms: Sequence, state: np.random.RandomState) -> None:
    """Points every random transform in ``transforms``, nested composers included, at ``state``."""
    for t in transforms:
        if isinstance(t, Compose):
            Randomizable.set_random_state(t, state=state)  # a OneOf draws its choice from it
            _share_state(t.transforms, state)
        elif isinstance(t, Randomizable):
            t.set_random_state(state=state)  # RandAffine and the elastic ones pass it on to their grids


class RandResizedCrop(RandomizableTransform):
    """Crops a random box whose side is a random fraction of the image and aspect ratio is near 1.

    MONAI's ``RandScaleCrop(random_size=True)`` draws each side independently, which can give a
    2:1 box and, after the square resize, a squashed brain. This follows torchvision's
    ``RandomResizedCrop`` (a random scale and a log-uniform aspect ratio), with the scale given
    per side rather than per area, on channel-first 2D or 3D arrays. A later ``Resize`` brings
    the box to the output size.

    Args:
        scale: (min, max) side of the box as a fraction of the image's side.
        max_aspect: the box's sides differ by at most this factor.
    """

    def __init__(self, scale: Sequence[float] = (0.5, 1.0), max_aspect: float = 4 / 3):
        RandomizableTransform.__init__(self, prob=1.0)
        self.scale = (float(scale[0]), float(scale[1]))
        self.max_aspect = float(max_aspect)
        self._box: tuple[slice, ...] = ()

    def randomize(self, spatial: Sequence[int]) -> None:
        side = self.R.uniform(*self.scale)
        log_aspect = math.log(self.max_aspect)
        stretch = [math.exp(self.R.uniform(-log_aspect, log_aspect) / 2) for _ in spatial]
        box = []
        for n, factor in zip(spatial, stretch):
            length = int(round(min(1.0, side * factor) * n))
            length = max(1, min(n, length))
            start = int(self.R.randint(0, n - length + 1))
            box.append(slice(start, start + length))
        self._box = tuple(box)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        self.randomize(img.shape[1:])
        return img[(slice(None), *self._box)]


def _spatial(p: AugmentParams, spatial_dims: int, size: tuple[int, ...], flip_axis: int | None, full: bool) -> list:
    steps = [
        PadToSquare(),
        RandResizedCrop(scale=p.crop_scale, max_aspect=p.crop_aspect),
        Resize(spatial_size=size, mode="bilinear", anti_aliasing=True),
    ]
    if full and p.affine_prob > 0:
        rotate = math.radians(p.rotate_deg)
        steps.append(RandAffine(
            prob=p.affine_prob,
            rotate_range=rotate if spatial_dims == 2 else (rotate,) * 3,
            scale_range=p.scale,
            padding_mode="border",
            spatial_size=size,
            cache_grid=True,
        ))
    if full and p.elastic_prob > 0:
        magnitude = tuple(p.elastic_magnitude)
        if spatial_dims == 2:
            steps.append(Rand2DElastic(spacing=max(size) // 4, magnitude_range=magnitude, prob=p.elastic_prob,
                                       padding_mode="border"))
        else:
            steps.append(Rand3DElastic(sigma_range=(5, 7), magnitude_range=magnitude, prob=p.elastic_prob,
                                       padding_mode="border"))
    if flip_axis is not None and p.flip_prob > 0:
        steps.append(RandFlip(prob=p.flip_prob, spatial_axis=flip_axis))
    return steps


def _intensity(p: AugmentParams) -> list:
    spike = tuple(p.spike_intensity) if p.spike_intensity is not None else None
    return [
        ScaleIntensity(minv=0.0, maxv=1.0),
        RandBiasField(degree=3, coeff_range=(0.0, p.bias_field_coeff), prob=p.bias_field_prob),
        RandGibbsNoise(prob=p.gibbs_prob, alpha=tuple(p.gibbs_alpha)),
        # OneOf draws first, so the FFT that sets MONAI's default spike intensity only runs when a
        # spike is applied (RandKSpaceSpikeNoise computes it on every call, even when it skips).
        OneOf([RandKSpaceSpikeNoise(prob=1.0, intensity_range=spike), Identity()],
              weights=[p.spike_prob, 1.0 - p.spike_prob]),
        RandRicianNoise(prob=p.noise_prob, std=p.noise_std, sample_std=True),
        RandAdjustContrast(prob=p.gamma_prob, gamma=tuple(p.gamma)),
        RandHistogramShift(num_control_points=int(p.histogram_points), prob=p.histogram_shift_prob),
    ]


def build_view_transform(
    aug_cfg: AugmentConfig,
    modality: str,
    spatial_dims: int,
    size: int | Sequence[int],
    flip_axis: int | None = 0,
    seed: int | None = None,
) -> ViewCompose:
    """The random view transform for one modality.

    Args:
        aug_cfg: the augment config; ``aug_cfg.params_for(modality)`` gives the strengths.
        modality: the scan's modality (``T1w``, ``FLAIR``, ...), which picks its family.
        spatial_dims: 2 for slices and images, 3 for patches.
        size: output side (or sides).
        flip_axis: the spatial axis running left-right, or None when there is none in the plane
            (a sagittal slice); 0 for RAS volumes and their axial/coronal slices.
        seed: seeds the transform's random state; None leaves MONAI's default.

    Returns:
        A MONAI ``Compose`` (:class:`ViewCompose`). Shape: (C, *spatial) array or tensor -> (C, *size) float32 tensor.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims={spatial_dims} must be 2 or 3")
    size = as_size(size, spatial_dims)
    if aug_cfg.preset == "none":
        return ViewCompose(build_eval_transform(spatial_dims, size).transforms)
    p = aug_cfg.params_for(modality)
    full = aug_cfg.preset == "mri"
    steps = _spatial(p, spatial_dims, size, flip_axis, full)
    if full:
        steps += _intensity(p)
    steps += [NormalizeIntensity(), EnsureType(data_type="tensor", dtype=torch.float32, track_meta=False)]
    transform = ViewCompose(steps)
    if seed is not None:
        transform.set_random_state(seed=seed)
    return transform
