"""Reading scans into channel-first float arrays, in a canonical orientation.

NIfTI (``.nii``, ``.nii.gz``) is read with nibabel and reoriented to RAS+ with
``nib.as_closest_canonical``, keeping the voxel spacing; 2D images (PNG, JPEG, TIFF, BMP) are read
with PIL and always reduced to one channel, whatever the file's colour mode. DICOM is out of
scope: convert series to NIfTI first with ``dcm2niix``.

Every failure caused by the file itself raises :class:`~mocomri.errors.DataError` with the file
name and what is wrong, so that a bad scan never surfaces as a bare traceback.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, UnidentifiedImageError

from mocomri.errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


@dataclass
class Scan:
    """One decoded scan.

    Attributes:
        array: float32 image, channel first. Shape: (C, X, Y, Z) for volumes (RAS axes),
            (C, H, W) for 2D images.
        spacing: voxel size in mm per spatial axis (1.0 per axis for 2D images).
        affine: 4x4 voxel-to-world matrix of the RAS array (identity for 2D images).
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray

    @property
    def spatial_dims(self) -> int:
        return self.array.ndim - 1


def file_kind(path: str | Path) -> str:
    """``"volume"`` for NIfTI, ``"image2d"`` for 2D image formats; DataError for anything else."""
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "volume"
    if name.endswith(IMAGE_SUFFIXES):
        return "image2d"
    if name.endswith(DICOM_SUFFIXES):
        raise DataError(f"{path}: DICOM is not read directly; convert the series to NIfTI with dcm2niix first")
    raise DataError(f"{path}: unsupported file type (expected {', '.join(NIFTI_SUFFIXES + IMAGE_SUFFIXES)})")


def load_scan(path: str | Path, volume_index: int | None = 0) -> Scan:
    """Loads a NIfTI volume or a 2D image, choosing the reader from the file name."""
    if file_kind(path) == "volume":
        return load_volume(path, volume_index=volume_index)
    return load_image2d(path)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")


def _check_values(array: np.ndarray, path: Path) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise DataError(f"{path}: {bad} voxels are NaN or Inf")
    lo, hi = float(array.min()), float(array.max())
    if lo == hi:
        raise DataError(f"{path}: constant image (every voxel is {lo:g}); nothing to learn from")


def load_volume(path: str | Path, volume_index: int | None = 0) -> Scan:
    """Reads a 3D or 4D NIfTI file into a RAS+ channel-first array.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        volume_index: for 4D files, the volume to keep (negative counts from the end);
            None keeps every volume as a channel. Ignored for 3D files.

    Returns:
        A :class:`Scan`. Shape: array (C, X, Y, Z) with C = 1, or C = T for ``volume_index=None``.

    Raises:
        DataError: the file is missing, empty, not NIfTI, truncated or corrupt, not 3D/4D,
            has NaN/Inf voxels, is constant, or ``volume_index`` is out of range.
    """
    path = Path(path)
    _check_file(path)
    try:
        image = nib.load(str(path))
    except Exception as e:  # nibabel raises ImageFileError, gzip/zlib/EOF errors, struct errors...
        raise DataError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e})") from e
    shape = image.shape
    if len(shape) not in (3, 4):
        raise DataError(f"{path}: expected a 3D or 4D volume, got {len(shape)}D with shape {tuple(shape)}")
    try:
        # Reorient on the header (a permutation/flip of the data) before decoding anything.
        canonical = nib.as_closest_canonical(image)
        data = np.asarray(canonical.dataobj, dtype=np.float32)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as e:
        raise DataError(f"{path}: truncated or corrupt data ({type(e).__name__}: {e})") from e
    # data: (X, Y, Z) or (X, Y, Z, T)
    if data.ndim == 3:
        array = data[None]
    elif volume_index is None:
        array = np.moveaxis(data, -1, 0)
    else:
        n = data.shape[-1]
        if not -n <= volume_index < n:
            raise DataError(f"{path}: volume_index={volume_index} is out of range for {n} volumes")
        array = data[..., volume_index][None]
    array = np.ascontiguousarray(array)  # (C, X, Y, Z)
    _check_values(array, path)
    spacing = tuple(float(s) for s in canonical.header.get_zooms()[:3])
    return Scan(array=array, spacing=spacing, affine=np.asarray(canonical.affine, dtype=np.float64))


def load_image2d(path: str | Path) -> Scan:
    """Reads a 2D image (PNG, JPEG, TIFF, BMP) into a single-channel float array.

    Colour images are converted to luminance (ITU-R 601 weights, PIL's ``convert("L")``), so
    a grayscale and an RGB export of one slice give the same array; 16-bit and float images keep
    their values. Multi-frame files (TIFF stacks) keep the first frame.

    Returns:
        A :class:`Scan`. Shape: array (1, H, W).

    Raises:
        DataError: the file is missing, empty, not an image, truncated, or constant.
    """
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as image:
            image.load()  # PIL decodes lazily; force it here so truncation is caught here
            if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                pixels = np.asarray(image, dtype=np.float32)
            else:
                pixels = np.asarray(image.convert("L"), dtype=np.float32)
    except UnidentifiedImageError as e:
        raise DataError(f"{path}: not a readable image (the content does not match the extension)") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: truncated or corrupt image ({e})") from e
    if pixels.ndim != 2:
        raise DataError(f"{path}: expected a 2D image, got shape {pixels.shape}")
    array = pixels[None]  # (1, H, W)
    _check_values(array, path)
    return Scan(array=array, spacing=(1.0, 1.0), affine=np.eye(4))


def looks_like_label_map(array: np.ndarray, max_values: int = 16) -> bool:
    """True when an array holds at most ``max_values`` distinct integers: a segmentation or a mask.

    A subsample is looked at first, so an image with many values returns quickly.
    """
    flat = array.reshape(-1)
    sample = flat[:: max(1, flat.size // 50_000)]
    values = np.unique(sample)
    if len(values) > max_values or not np.all(np.mod(values, 1) == 0):
        return False
    values = np.unique(flat)
    return len(values) <= max_values and bool(np.all(np.mod(values, 1) == 0))
