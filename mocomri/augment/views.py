"""Two random views of a whole batch, made on the batch's device.

:class:`BatchViews` is the view transform of pretraining, the supervised baseline and
``mocomri views``. It takes a batch of working images (each scan preprocessed once, padded
square or cubic and resized to a working side, :mod:`mocomri.data.working`) with per-item
metadata, and makes each view in two stages:

1. geometry, one resampling (:mod:`mocomri.augment.geometry`): a random resized crop with a
   near-square box (side a fraction of the image's in ``crop_scale``, aspect within
   ``crop_aspect``, 4:3 by default), a
   small rotation and isotropic zoom (with probability ``affine_prob``), optional elastic
   displacement, and the left-right flip, which is the only flip (anatomy is not symmetric
   front to back or top to bottom), on the axis each item names;
2. intensity (``preset: mri``), in the order the artefacts arise in a scanner, on the view
   rescaled to [0, 1] (:mod:`mocomri.augment.artefacts`): receive-coil bias field, Gibbs
   ringing, k-space spikes, Rician noise, then gamma/contrast and histogram shift (scanner
   and protocol differences). Never colour jitter: MR images have no colour.

With ``pair_shift`` set (``augment.pair_shift``), the two views of an item are overlapping
patches rather than independent crops: the second view's box has the first's sides and its
centre moved by at most ``pair_shift`` of the box's side along each axis, so the instance is a
place in a scan, not the scan (patch-level instances; everything else is drawn per view).

Each view ends z-scored over the whole view, like the evaluation input. Every item's strengths
and probabilities are those of its modality family (``AugmentConfig.params_for_family``), so a
batch may mix T1 slices and FLAIR slices. Parameters are drawn from a ``torch.Generator``
seeded with the batch's seed (the pretraining sampler derives it from ``(seed, epoch,
position)``), and noise fields from a generator on the device seeded from the same stream, so
the views are a pure function of the batch and its seed on a given device: a resumed run
redraws exactly the views of an uninterrupted one.

An artefact is computed only for the items that drew it (their indices are known on the host,
so nothing waits for the device).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from mocomri.augment import artefacts
from mocomri.augment.geometry import elastic_displacement, resample, snap_boxes, view_affines
from mocomri.augment.settings import AugmentConfig

ELASTIC_CONTROL_POINTS = 5  # per axis: control points every quarter of the view's side
BIAS_DEGREE = 3  # MONAI RandBiasField's default polynomial degree


class BatchViews:
    """Makes two independently augmented views of every item of a batch.

    Args:
        aug_cfg: the augment config (preset, per-family strengths and probabilities).
        families: the family name of each family id in the batches' ``family`` tensors
            (``"t1"``, ``"flair"``, ...; see ``AugmentConfig.family_of``).
        size: the views' spatial sides; its length (2 or 3) is the number of spatial dims.

    ``aug_cfg.pair_shift`` makes an item's two views overlapping patches (module docstring).

    Shape:
        images: (B, C, *W) any float dtype, on any device; family, flip_axis: (B,) int64 (CPU)
        -> two (B, C, *size) float32 tensors on the images' device.
    """

    def __init__(self, aug_cfg: AugmentConfig, families: Sequence[str], size: Sequence[int]):
        if len(size) not in (2, 3):
            raise ValueError(f"size={tuple(size)} must have 2 or 3 sides")
        self.preset = aug_cfg.preset
        self.pair_shift = aug_cfg.pair_shift
        self.families = list(families)
        self.size = tuple(int(s) for s in size)
        self.spatial_dims = len(self.size)
        params = [aug_cfg.params_for_family(f) for f in self.families] or [aug_cfg.base]
        # One table per parameter: row = family id. None (a spike's intensity taken from the image) -> NaN.
        self.table: dict[str, torch.Tensor] = {}
        for field in dataclasses.fields(params[0]):
            values = [getattr(p, field.name) for p in params]
            values = [[math.nan, math.nan] if v is None else v for v in values]
            self.table[field.name] = torch.tensor(values, dtype=torch.float64)

    def __call__(
        self, images: torch.Tensor, family: torch.Tensor, flip_axis: torch.Tensor, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views of every item; see the class docstring."""
        g = torch.Generator().manual_seed(int(seed) % 2**63)
        device_seed = int(torch.randint(0, 2**62, (1,), generator=g))
        gd = torch.Generator(device=images.device).manual_seed(device_seed)
        family, flip_axis = family.cpu(), flip_axis.cpu()
        # Both views in one pass over a batch of 2B: half the operations to launch, the same work.
        b = images.shape[0]
        source = torch.arange(2 * b) % b  # view k reads image k mod B
        boxes = None
        if self.pair_shift is not None and self.preset != "none":
            half, centre = self._boxes(family, g)
            shift = (2 * torch.rand(half.shape, generator=g, dtype=torch.float64) - 1) * self.pair_shift * 2 * half
            boxes = half.repeat(2, 1), torch.cat([centre, (centre + shift).clamp(half - 1, 1 - half)])  # inside the image
        views = self.view(images, family.repeat(2), flip_axis.repeat(2), g, gd, source, boxes)
        return views[:b], views[b:]

    def _boxes(self, family: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random crop boxes (half-sides, centres in normalised units), each inside the image. Shape: (B, d) twice."""
        b, d = family.shape[0], self.spatial_dims
        crop_scale, crop_aspect = self.table["crop_scale"][family], self.table["crop_aspect"][family]
        side = crop_scale[:, 0] + (crop_scale[:, 1] - crop_scale[:, 0]) * torch.rand(b, generator=g, dtype=torch.float64)
        log_aspect = crop_aspect.clamp_min(1.0).log().unsqueeze(1)
        stretch = torch.exp((2 * torch.rand((b, d), generator=g, dtype=torch.float64) - 1) * log_aspect / 2)
        half = (side.unsqueeze(1) * stretch).clamp(max=1.0)
        centre = (2 * torch.rand((b, d), generator=g, dtype=torch.float64) - 1) * (1 - half)
        return half, centre

    def view(
        self,
        images: torch.Tensor,
        family: torch.Tensor,
        flip_axis: torch.Tensor,
        g: torch.Generator,
        gd: torch.Generator,
        source: torch.Tensor | None = None,
        boxes: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One view of every item, drawing parameters from ``g`` (CPU) and noise from ``gd`` (device).

        ``family`` and ``flip_axis`` describe the B views; view k is made of ``images[source[k]]``
        (``source`` a host int64 tensor; None: of ``images[k]``). ``boxes`` (half-sides and
        centres, (B, d) float64 each) are the crop boxes when given; else they are drawn here.

        Shape:
            images: (N, C, *W); family, flip_axis: (B,) int64 -> (B, C, *size) float32.
        """
        # 1. geometry: crop box, rotation, zoom, flip and elastic warp in one resampling
        half, centre = self._crop_boxes(images, family, g, boxes)  # (B, d) float64 each
        affines = self._affines(half, centre, family, flip_axis, g).to(images.device, torch.float32, non_blocking=True)
        full = self.preset == "mri"
        displacement = self._elastic(family, g, gd, images.device) if full else None  # (B, *size, d) or None
        x = resample(images, affines, self.size, displacement, source)  # (B, C, *size), float32
        if not full:
            return artefacts.normalize(x)
        # 2. intensity artefacts, in the order they arise in a scanner, each on the items that drew it
        x = artefacts.rescale01(x)  # (B, C, *size) in [0, 1]
        x = self._bias_field(x, family, g)
        x = self._gibbs(x, family, g)
        x = self._spike(x, family, g)
        x = self._noise(x, family, g, gd)
        x = self._gamma(x, family, g)
        x = self._histogram_shift(x, family, g)
        return artefacts.normalize(x)

    def _param(self, name: str, family: torch.Tensor) -> torch.Tensor:
        """Each item's value of one augmentation parameter. Shape: (B,) or (B, 2), float64 on the CPU."""
        return self.table[name][family]

    def _drawn(self, prob: str, family: torch.Tensor, g: torch.Generator) -> torch.Tensor | None:
        """The items that draw one step, each with its family's probability ``prob`` (see :meth:`_rows`)."""
        return self._rows(_uniform(g, family.shape[0]) < self._param(prob, family))

    def _crop_boxes(
        self, images: torch.Tensor, family: torch.Tensor, g: torch.Generator,
        boxes: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The crop boxes (given, drawn, or the whole image for ``preset: none``), snapped to whole pixels.

        Shape: half-sides, centres: (B, d) float64 each, in normalised units.
        """
        b, d = family.shape[0], self.spatial_dims
        if self.preset == "none":  # the whole image, as the evaluation input
            half, centre = torch.ones(b, d, dtype=torch.float64), torch.zeros(b, d, dtype=torch.float64)
        else:
            half, centre = boxes if boxes is not None else self._boxes(family, g)
        return snap_boxes(half, centre, tuple(images.shape[2:]))  # whole pixels, as MONAI's crops

    def _affines(
        self, half: torch.Tensor, centre: torch.Tensor, family: torch.Tensor, flip_axis: torch.Tensor,
        g: torch.Generator,
    ) -> torch.Tensor:
        """Each view's sampling affine: its crop box, a random rotation and zoom (``mri`` only) and the flip.

        Shape: half, centre: (B, d) float64; family, flip_axis: (B,) -> (B, d, d+1) float64 (host).
        """
        b = family.shape[0]
        full = self.preset == "mri"
        n_angles = 1 if self.spatial_dims == 2 else 3
        turned = (_uniform(g, b) < self._param("affine_prob", family)) if full else torch.zeros(b, dtype=torch.bool)
        max_angle = self._param("rotate_deg", family).deg2rad().unsqueeze(1)  # (B, 1) radians
        angles = (2 * _uniform(g, b, n_angles) - 1) * max_angle * turned.unsqueeze(1)  # (B, n_angles)
        zoom = 1 + (2 * _uniform(g, b) - 1) * self._param("scale", family) * turned  # (B,)
        flipped = (_uniform(g, b) < self._param("flip_prob", family)) & (flip_axis >= 0) & (self.preset != "none")
        flip = torch.where(flipped, flip_axis, torch.full_like(flip_axis, -1))  # (B,) axis or -1
        return view_affines(half, centre, angles, zoom, flip)

    def _elastic(
        self, family: torch.Tensor, g: torch.Generator, gd: torch.Generator, device: torch.device
    ) -> torch.Tensor | None:
        """The elastic displacement of the items that draw it (zero for the others), or None when none does.

        Shape: (B, *size, d) float32 on ``device``.
        """
        b, d = family.shape[0], self.spatial_dims
        warped = _uniform(g, b) < self._param("elastic_prob", family)
        if not warped.any():
            return None
        magnitude = _between(self._param("elastic_magnitude", family), g) * warped  # (B,)
        coarse = torch.randn((b, d, *[ELASTIC_CONTROL_POINTS] * d), generator=gd, device=device)  # (B, d, P, P[, P])
        return elastic_displacement(coarse, self.size, magnitude.to(device, torch.float32))

    def _bias_field(self, x: torch.Tensor, family: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Receive-coil bias field, a random polynomial of degree ``BIAS_DEGREE``. Shape: x (B, C, *size), in place."""
        rows = self._drawn("bias_field_prob", family, g)
        if rows is None:
            return x
        n_terms = artefacts.bias_field_size(self.spatial_dims, BIAS_DEGREE)
        limit = self._param("bias_field_coeff", family)[rows].unsqueeze(1)  # (n, 1)
        coeffs = _uniform(g, len(rows), n_terms) * limit  # (n, terms)
        return self._apply(x, rows, artefacts.bias_field, coeffs.to(x.device, torch.float32), BIAS_DEGREE)

    def _gibbs(self, x: torch.Tensor, family: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Gibbs ringing of a random strength. Shape: x (B, C, *size), in place."""
        rows = self._drawn("gibbs_prob", family, g)
        if rows is None:
            return x
        alpha = _between(self._param("gibbs_alpha", family)[rows], g)  # (n,)
        return self._apply(x, rows, artefacts.gibbs_ringing, alpha.to(x.device))

    def _spike(self, x: torch.Tensor, family: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One k-space spike per channel, at a random place and log-magnitude. Shape: x (B, C, *size), in place."""
        rows = self._drawn("spike_prob", family, g)
        if rows is None:
            return x
        device, c, d = x.device, x.shape[1], self.spatial_dims
        sides = torch.tensor(self.size, dtype=torch.float64)
        location = (_uniform(g, len(rows), c, d) * sides).long().clamp_max(sides.long() - 1)  # (n, C, d)
        bounds = self._param("spike_intensity", family)[rows]  # (n, 2); NaN: MONAI's default range, from the image
        fraction = _uniform(g, len(rows), c)  # (n, C)
        given = bounds[:, :1] + (bounds[:, 1:] - bounds[:, :1]) * fraction  # (n, C)
        selected = x.index_select(0, rows.to(device))  # (n, C, *size)
        if torch.isnan(bounds[:, 0]).any():
            # MONAI: 0.95 to 1.1 times 2.5 times the mean log-magnitude of the item's k-space.
            scale = artefacts.kspace_log_magnitude_mean(selected) * 2.5  # (n, C), on the device
            default = scale * (0.95 + 0.15 * fraction.to(device, scale.dtype))
            log_intensity = torch.where(torch.isnan(bounds[:, :1]).to(device), default, given.to(device, scale.dtype))
        else:
            log_intensity = given.to(device)
        return x.index_copy_(0, rows.to(device), artefacts.kspace_spike(selected, location.to(device), log_intensity))

    def _noise(self, x: torch.Tensor, family: torch.Tensor, g: torch.Generator, gd: torch.Generator) -> torch.Tensor:
        """Rician noise of a random std, its fields drawn from ``gd``. Shape: x (B, C, *size), in place."""
        rows = self._drawn("noise_prob", family, g)
        if rows is None:
            return x
        std = _uniform(g, len(rows)) * self._param("noise_std", family)[rows]  # (n,)
        noise = torch.randn((2, len(rows), *x.shape[1:]), generator=gd, device=x.device)  # (2, n, C, *size)
        return self._apply(x, rows, artefacts.rician_noise, std.to(x.device, torch.float32), noise)

    def _gamma(self, x: torch.Tensor, family: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Gamma contrast change of a random exponent. Shape: x (B, C, *size), in place."""
        rows = self._drawn("gamma_prob", family, g)
        if rows is None:
            return x
        gamma = _between(self._param("gamma", family)[rows], g)  # (n,)
        return self._apply(x, rows, artefacts.adjust_contrast, gamma.to(x.device, torch.float32))

    def _histogram_shift(self, x: torch.Tensor, family: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Histogram shift through random control points (MONAI RandHistogramShift). Shape: x (B, C, *size), in place."""
        shifted = _uniform(g, family.shape[0]) < self._param("histogram_shift_prob", family)
        points = self._param("histogram_points", family).long()  # (B,)
        for n in points[shifted].unique().tolist():  # one group per control-point count
            rows = self._rows(shifted & (points == n))
            floating = torch.linspace(0, 1, n, dtype=torch.float64).repeat(len(rows), 1)  # (n_rows, n)
            for i in range(1, n - 1):  # as MONAI: each point uniform between its left and right neighbour
                floating[:, i] = floating[:, i - 1] + (floating[:, i + 1] - floating[:, i - 1]) * _uniform(g, len(rows))
            x = self._apply(x, rows, artefacts.histogram_shift, floating.to(x.device, torch.float32))
        return x

    @staticmethod
    def _rows(chosen: torch.Tensor) -> torch.Tensor | None:
        """The indices of the chosen items (host tensor), or None when there is none."""
        rows = chosen.nonzero().squeeze(1)
        return rows if len(rows) else None

    @staticmethod
    def _apply(x: torch.Tensor, rows: torch.Tensor, fn, *args) -> torch.Tensor:
        """``fn`` on the chosen items, written back in place (``x`` is the view's own tensor)."""
        index = rows.to(x.device, non_blocking=True)
        return x.index_copy_(0, index, fn(x.index_select(0, index), *args))


def _uniform(g: torch.Generator, *shape: int) -> torch.Tensor:
    """Uniform draws in [0, 1) from ``g``. Shape: ``shape``, float64 on the CPU."""
    return torch.rand(shape, generator=g, dtype=torch.float64)


def _between(bounds: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One uniform draw per row between its bounds. Shape: (n, 2) float64 -> (n,)."""
    return bounds[:, 0] + (bounds[:, 1] - bounds[:, 0]) * _uniform(g, bounds.shape[0])
