"""The geometry of a view as one resampling: crop, rotation, zoom and flip in one affine per item.

A view's output pixel at normalised position ``u`` (each axis in [-1, 1], ``align_corners=False``)
reads the working image at::

    x = centre + half · R · (zoom · F · u) + elastic(u)

``half`` and ``centre`` are the crop box (half-sides and centre, in the working image's
normalised units), ``R`` a small rotation, ``zoom`` an isotropic scale, ``F`` the left-right flip,
``elastic`` an optional smooth displacement. The working images are square (cubic), so one unit
is the same length on every axis. Crop boxes cover whole pixels (:func:`snap_boxes`), as
MONAI's crops do. ``grid_sample`` resamples the whole batch, on any device; on the CPU, where
its 3D kernel is a scalar loop, an unrotated volume is cut out and resized with
``F.interpolate`` instead (the same sampling, about 4x faster). Samples outside the image take
the border's value (the background, for padded scans).

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


def snap_boxes(half: torch.Tensor, centre: torch.Tensor, working: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Moves crop boxes onto the working image's pixel grid: whole-pixel sides and starts.

    A box then covers whole pixels, as MONAI's ``RandSpatialCrop`` does, and a view without
    rotation is exactly a crop of the image resized (:func:`resample`). The box moves by at most
    half a pixel; its side stays within 1 pixel of the one drawn, and inside the image.

    Shape: half, centre: (B, d) in normalised units; working: the image's d sides -> the same.
    """
    sides = torch.tensor(working, dtype=half.dtype)
    length = (half * sides).round().clamp(min=1).minimum(sides)  # pixels
    start = (((centre + 1) * sides - length) / 2).round().clamp(min=0).minimum(sides - length)
    return length / sides, (2 * start + length) / sides - 1


def resample(
    images: torch.Tensor,
    affines: torch.Tensor,
    size: tuple[int, ...],
    displacement: torch.Tensor | None = None,
    source: torch.Tensor | None = None,
) -> torch.Tensor:
    """Samples every item through its affine (plus a displacement) with bilinear/trilinear interpolation.

    On the CPU, a volume whose affine is a crop of whole pixels inside the image with no
    rotation and no displacement (what :func:`snap_boxes` makes of an unrotated view) is cut out
    and resized with ``F.interpolate``: the crop-then-``Resize`` of MONAI's per-item pipeline,
    equal to ``grid_sample``'s sampling but at the outermost half pixel of an enlarged crop
    (which interpolate holds at the crop's edge, ``grid_sample`` reads from beyond it). The 3D
    ``grid_sample`` CPU kernel is a scalar loop, about 4x slower on a batch of volumes (BENCHMARKS.md).
    Everything else (2D, whose ``grid_sample`` is vectorised; rotated, zoomed-out or warped
    volumes; any GPU) goes through ``grid_sample``.

    Args:
        images: the working images, any float dtype. Shape: (N, C, *W).
        affines: from :func:`view_affines`, in spatial-axis order. Shape: (B, d, d + 1).
        size: the output's spatial sides S.
        displacement: added to the sampling positions, spatial-axis order; None for none.
            Shape: (B, *S, d).
        source: the row of ``images`` each output item reads (host int64); None: item k reads
            row k (then N = B). Shape: (B,).

    Returns:
        (B, C, *S), float32 (or ``images``' dtype when wider).
    """
    b, d = affines.shape[0], len(size)
    dtype = torch.promote_types(images.dtype, torch.float32)
    source = torch.arange(b) if source is None else source.cpu()
    boxes = _crops(affines, images.shape[2:], displacement) if d == 3 and images.device.type == "cpu" else {}
    rest = [k for k in range(b) if k not in boxes]
    if not boxes:
        return _grid_sample(images, affines, size, displacement, source, dtype)
    out = torch.empty((b, images.shape[1], *size), dtype=dtype, device=images.device)
    # One interpolate per crop size, not per item: small views (3D patches) are mostly call overhead.
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, (_, length, _) in boxes.items():
        groups.setdefault(tuple(length), []).append(k)
    for length, items in groups.items():
        crops = torch.empty((len(items), images.shape[1], *length), dtype=dtype, device=images.device)
        for crop, k in zip(crops, items):  # cut out and converted in one copy
            crop.copy_(images[(int(source[k]), slice(None), *[slice(a, a + n) for a, n in zip(boxes[k][0], length)])])
        if length != tuple(size):  # a crop of the view's size is read as it is (interpolate would copy it)
            crops = F.interpolate(crops, size=size, mode="trilinear", align_corners=False)
        for k, item in zip(items, crops):
            flipped = boxes[k][2]
            out[k] = item.flip([a - 1 for a in flipped]) if flipped else item
    if rest:
        rows = torch.tensor(rest)
        sampled = _grid_sample(images, affines, size, displacement, source, dtype, rows)
        out.index_copy_(0, rows.to(images.device), sampled)
    return out


def _grid_sample(
    images: torch.Tensor,
    affines: torch.Tensor,
    size: tuple[int, ...],
    displacement: torch.Tensor | None,
    source: torch.Tensor,
    dtype: torch.dtype,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`resample` by ``grid_sample``, for the output items ``rows`` (host int64; None: all)."""
    if rows is not None:
        on_device = rows.to(images.device)
        affines = affines.index_select(0, on_device)
        displacement = None if displacement is None else displacement.index_select(0, on_device)
        source = source[rows]
    grid = _affine_grid(affines.to(dtype), size)  # (n, *S, d), already in grid_sample's order
    if displacement is not None:
        grid = grid + displacement.flip(-1)
    identity = len(source) == images.shape[0] and torch.equal(source, torch.arange(len(source)))
    picked = images if identity else images.index_select(0, source.to(images.device))
    return F.grid_sample(picked.to(dtype), grid, mode="bilinear", padding_mode="border", align_corners=False)


def _crops(
    affines: torch.Tensor, working: tuple[int, ...], displacement: torch.Tensor | None
) -> dict[int, tuple[list[int], list[int], list[int]]]:
    """The items whose affine is a whole-pixel crop inside the image: item -> (start, length, flipped axes)."""
    d = len(working)
    theta = affines.detach().to("cpu", torch.float64)
    linear, offset = theta[:, :, :d], theta[:, :, d]
    scale = torch.diagonal(linear, dim1=1, dim2=2)  # (B, d)
    sides = torch.tensor(working, dtype=torch.float64)
    length = scale.abs() * sides
    start = ((offset + 1) * sides - length) / 2
    whole = ((length - length.round()).abs() < 1e-3) & ((start - start.round()).abs() < 1e-3)
    inside = (start.round() >= 0) & (start.round() + length.round() <= sides) & (length.round() >= 1)
    diagonal = (linear - torch.diag_embed(scale)).abs().flatten(1).amax(1) == 0
    ok = diagonal & (whole & inside).all(1)
    if displacement is not None:
        ok &= (displacement.detach().flatten(1) == 0).all(1).cpu()
    return {
        k: (start[k].round().long().tolist(), length[k].round().long().tolist(), (scale[k] < 0).nonzero()[:, 0].add(2).tolist())
        for k in ok.nonzero()[:, 0].tolist()
    }


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
