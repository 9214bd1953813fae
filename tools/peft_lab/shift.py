"""A deterministic scanner-like shift of 2D images: the target domain of the domain-transfer experiment.

Where no second real MRI set is at hand, a target domain is made from the source images by what
differs between scanners: a smooth receive-coil bias field, a contrast change and noise. The
shift is **synthetic and stated as such**; it is no substitute for a second site.

Each image goes through the batched artefacts of :mod:`mocomri.augment.artefacts` at fixed
strengths (the same field and gamma for every image, so it is one "scanner"):

1. :func:`~mocomri.augment.artefacts.rescale01` to [0, 1];
2. :func:`~mocomri.augment.artefacts.bias_field`: ``x · exp(Σ cᵢ Pᵢ)``, Legendre terms in MONAI's order;
3. :func:`~mocomri.augment.artefacts.adjust_contrast`: gamma ``γ`` on the image's own range;
4. :func:`~mocomri.augment.artefacts.rician_noise` of standard deviation ``σ`` (on the [0, 1] scale),
   its draws seeded by the image's digest and :attr:`ScannerShift.seed`, so a row always gets
   the same noise;
5. :func:`~mocomri.augment.artefacts.rescale01` again, written as a 16-bit PNG.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mocomri.augment.artefacts import adjust_contrast, bias_field, bias_field_size, rescale01, rician_noise
from mocomri.data.manifest import Manifest
from mocomri.errors import DataError

# Legendre coefficients in bias_field_terms(2, 3) order: (0,0) (1,0) (1,1) (2,0) (2,1) (2,2) (3,0) ...:
# a gradient along the first axis, a tilt and a bowl; exp(field) spans about 0.5 to 1.7.
DEFAULT_BIAS = (0.0, 0.3, 0.15, -0.2, 0.1, -0.1, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class ScannerShift:
    """The fixed strengths of the shift.

    Attributes:
        bias: the bias field's Legendre coefficients (MONAI's ``RandBiasField`` order).
        bias_degree: the field's polynomial degree.
        gamma: the contrast change's gamma (MONAI ``AdjustContrast``).
        noise_std: the Rician noise's standard deviation on the [0, 1] scale.
        seed: mixed into every image's noise seed.
    """

    bias: tuple[float, ...] = DEFAULT_BIAS
    bias_degree: int = 3
    gamma: float = 1.5
    noise_std: float = 0.03
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "bias", tuple(float(c) for c in self.bias))
        if len(self.bias) != bias_field_size(2, self.bias_degree):
            raise ValueError(f"bias has {len(self.bias)} coefficients; a 2D field of degree {self.bias_degree} "
                             f"has {bias_field_size(2, self.bias_degree)}")
        if self.gamma <= 0:
            raise ValueError(f"gamma={self.gamma} must be positive")
        if self.noise_std < 0:
            raise ValueError(f"noise_std={self.noise_std} must not be negative")


def noise_seed(shift: ScannerShift, key: str) -> int:
    """The seed of an image's noise: from the shift's seed and the image's key (its digest)."""
    return int(hashlib.sha1(f"{shift.seed}:{key}".encode()).hexdigest()[:15], 16)


def shift_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The standard normal draws of one image's noise, real and imaginary parts.

    Shape:
        shape: (C, *S)  returns: (2, 1, C, *S)
    """
    return torch.randn((2, 1, *shape), generator=torch.Generator().manual_seed(seed))


def shift_image(image: torch.Tensor, shift: ScannerShift, seed: int) -> torch.Tensor:
    """One image through the shift (see the module docstring), in [0, 1].

    Shape:
        image: (C, *S)  returns: (C, *S) float32
    """
    x = rescale01(image.float()[None])  # (1, C, *S)
    x = bias_field(x, torch.tensor([shift.bias]), shift.bias_degree)
    x = adjust_contrast(x, torch.tensor([shift.gamma]))
    x = rician_noise(x, torch.tensor([shift.noise_std]), shift_noise(tuple(image.shape), seed))
    return rescale01(x)[0]


def shift_manifest(manifest: Manifest, out_dir: str | Path, shift: ScannerShift,
                   progress: bool | None = None) -> Manifest:
    """Every row's image shifted and written under ``out_dir/images``; the rows pointing at them.

    Subjects, labels, splits and modalities are kept; ``sha1`` is the new file's. An image
    already written is not written again (the shift is deterministic), so an interrupted call
    resumes.

    Args:
        manifest: rows of 2D images.
        out_dir: where the images go; the returned manifest's root.
        shift: the strengths.
        progress: tqdm bar; None shows it on a terminal only.

    Raises:
        DataError: a row that is not a 2D image, or an unreadable image (naming its file).
    """
    from PIL import Image
    from tqdm import tqdm

    from mocomri.data.io import file_kind, load_image2d
    from mocomri.files import atomic_path, file_digest

    out_dir = Path(out_dir)
    rows = []
    for i, row in enumerate(tqdm(manifest.rows, desc="shift", unit="image",
                                 disable=None if progress is None else not progress)):
        source = manifest.abspath(row)
        if file_kind(source) != "image2d":
            raise DataError(f"{source}: the scanner shift is written for 2D images only")
        relative = f"images/{i:06d}_{Path(row.path).stem}.png"
        target = out_dir / relative
        if not target.is_file():
            image = torch.from_numpy(load_image2d(source).array)  # (1, H, W)
            shifted = shift_image(image, shift, noise_seed(shift, row.sha1 or row.path))
            pixels = np.round(shifted[0].numpy() * 65535).astype(np.uint16)  # (H, W)
            with atomic_path(target, suffix=".png") as tmp:
                Image.fromarray(pixels).save(tmp, format="PNG", compress_level=1)
        rows.append(dataclasses.replace(row, path=relative, sha1=file_digest(target)))
    return Manifest(out_dir, rows)
