"""The geometry of a view as one resampling: crop, rotation, zoom and flip in one affine per item.

A view's output pixel at normalised position ``u`` (each axis in [-1, 1], ``align_corners=False``)
reads the working image at::

    x = centre + half · R · (zoom · F · u) + elastic(u)

``half`` and ``centre`` are the crop box (half-sides and centre, in the working image's
normalised units), ``R`` a small rotation, ``zoom`` an isotropic scale, ``F`` the left-right flip,
``elastic`` an optional smooth displacement. The working images are square (cubic), so one unit
is the same length on every axis. ``torch.nn.functional.affine_grid`` and ``grid_sample`` do the
rest for the whole batch, on any device. Samples outside the image take the border's value
(the background, for padded scans).

Everything here is in spatial-axis order (the order of the tensor's axes after ``(B, C)``);
``grid_sample`` wants its coordinates reversed (x = the last axis), which :func:`resample` does.

Kornia's ``RandomResizedCrop``/``RandomAffine`` also run batched, but each is a resampling of
its own (a crop, then an affine on the crop, then a flip: three interpolations and their
blur) and its 3D crop cannot draw near-cubic boxes; here the composition is one matrix and
one interpolation, in 2D and 3D alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from angles (radians).

    Args:
        angles: (B, 1) for 2D (a rotation in the plane of the two spatial axes), (B, 3) for 3D
            (rotations about the three axes, applied about axis 0, then 1, then 2).

    Returns:
        (B, 2, 2) or (B, 3, 3).
    """
    cos, sin = angles.cos(), angles.sin()
    if angles.shape[1] == 1:
        c, s = cos[:, 0], sin[:, 0]
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], 1)
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def rot(axis: int) -> torch.Tensor:
        c, s = cos[:, axis], sin[:, axis]
        a, b = [i for i in range(3) if i != axis]
        m = [[one, zero, zero], [zero, one, zero], [zero, zero, one]]
        m[a][a], m[a][b], m[b][a], m[b][b] = c, -s, s, c
        return torch.stack([torch.stack(row, -1) for row in m], 1)

    return rot(2) @ rot(1) @ rot(0)


def view_affines(
    half: torch.Tensor,
    centre: torch.Tensor,
    angles: torch.Tensor,
    zoom: torch.Tensor,
    flip: torch.Tensor,
) -> torch.Tensor:
    """The matrices ``[A | t]`` with ``x = A u + t`` for every item, in spatial-axis order.

    Args:
        half: the crop box's half-sides, in units of the image's half-side (1 = the whole axis). Shape: (B, d).
        centre: the crop box's centre in normalised coordinates. Shape: (B, d).
        angles: see :func:`rotation_matrices`. Shape: (B, 1) or (B, 3).
        zoom: isotropic scale of the sampling grid (> 1 shows more of the image). Shape: (B,).
        flip: for each item, the spatial axis to mirror, or -1 for none. Shape: (B,) int.

    Returns:
        (B, d, d + 1).
    """
    b, d = half.shape
    mirror = torch.ones(b, d, dtype=half.dtype, device=half.device)
    flipped = flip >= 0
    if flipped.any():
        rows = flipped.nonzero().squeeze(1)
        mirror[rows, flip[rows]] = -1.0
    linear = half.unsqueeze(2) * rotation_matrices(angles) * (zoom.view(b, 1, 1) * mirror.unsqueeze(1))
    return torch.cat([linear, centre.unsqueeze(2)], 2)


def elastic_displacement(
    coarse: torch.Tensor, size: tuple[int, ...], magnitude: torch.Tensor
) -> torch.Tensor:
    """A smooth random displacement, in normalised units, from random offsets at control points.

    As MONAI's ``RandDeformGrid``: standard normal offsets on a coarse grid of control points,
    scaled by ``magnitude`` (in output pixels) and interpolated to every output pixel
    (bicubic in 2D, trilinear in 3D).

    Args:
        coarse: standard normal offsets. Shape: (B, d, *G) with G the control grid.
        size: the output's spatial sides S.
        magnitude: offset scale per item, in output pixels. Shape: (B,).

    Returns:
        (B, *S, d), in spatial-axis order.
    """
    mode = "bicubic" if len(size) == 2 else "trilinear"
    field = F.interpolate(coarse, size=size, mode=mode, align_corners=True)  # (B, d, *S)
    to_units = torch.tensor([2.0 / n for n in size], dtype=field.dtype, device=field.device)
    field = field * magnitude.to(field).view(-1, 1, *([1] * len(size))) * to_units.view(1, -1, *([1] * len(size)))
    return field.movedim(1, -1)


def resample(
    images: torch.Tensor,
    affines: torch.Tensor,
    size: tuple[int, ...],
    displacement: torch.Tensor | None = None,
) -> torch.Tensor:
    """Samples every item through its affine (plus a displacement) with bilinear/trilinear interpolation.

    Args:
        images: the working images. Shape: (B, C, *W).
        affines: from :func:`view_affines`, in spatial-axis order. Shape: (B, d, d + 1).
        size: the output's spatial sides S.
        displacement: added to the sampling positions, spatial-axis order. Shape: (B, *S, d).

    Returns:
        (B, C, *S).
    """
    grid = _affine_grid(affines.to(images.dtype), size)  # (B, *S, d), already in grid_sample's order
    if displacement is not None:
        grid = grid + displacement.flip(-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _affine_grid(affines: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``x = A u + t`` at every output pixel centre, coordinates in reverse axis order (as
    ``grid_sample`` reads them: x = the last axis). Shape: (B, *S, d).

    ``F.affine_grid`` computes the same with a batched matrix product of inner size d + 1,
    which on the CPU cost more than the ``grid_sample`` it feeds (BENCHMARKS.md); here each
    coordinate is a sum of d broadcast rank-1 terms, since u varies along one axis per term.
    """
    b, d = affines.shape[0], len(size)
    ones = [1] * d
    coordinates = []
    for i in range(d):
        # Add the terms from the last axis to the first, so that only the last add is full-size.
        coordinate = affines[:, i, d].view(b, *ones)
        for j in reversed(range(d)):
            n = size[j]
            u = (torch.arange(n, dtype=affines.dtype, device=affines.device) * 2 + 1) / n - 1  # pixel centres
            shape = list(ones)
            shape[j] = n
            coordinate = coordinate + affines[:, i, j].view(b, *ones) * u.view(1, *shape)
        coordinates.append(coordinate)
    return torch.stack(coordinates[::-1], -1)
