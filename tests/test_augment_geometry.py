"""Geometry of the batched views: landmarks land where the affine says, flips are left-right only."""

from __future__ import annotations

import math

import torch

from mocomri.augment.geometry import elastic_displacement, resample, rotation_matrices, snap_boxes, view_affines

F64 = torch.float64


def _affine(half, centre, angles, zoom=1.0, flip=-1):
    b = 1
    return view_affines(
        torch.tensor([half], dtype=F64), torch.tensor([centre], dtype=F64), torch.tensor([angles], dtype=F64),
        torch.full((b,), zoom, dtype=F64), torch.tensor([flip]),
    ).float()


def _blob(shape, at, sigma=1.2):
    """A Gaussian blob centred on voxel index ``at``. Shape: (1, 1, *shape)."""
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij")
    d2 = sum((a - c) ** 2 for a, c in zip(axes, at))
    return torch.exp(-d2 / (2 * sigma**2))[None, None]


def _centroid(image):
    w = image[0, 0].clamp_min(0) ** 4
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in w.shape], indexing="ij")
    return [float((a * w).sum() / w.sum()) for a in axes]


def _to_unit(index, n):
    return (2 * index + 1) / n - 1  # pixel centre -> normalised coordinate (align_corners=False)


def _to_index(unit, n):
    return ((unit + 1) * n - 1) / 2


def test_resample__identity_affine_at_the_same_size_returns_the_image():
    image = torch.rand(2, 3, 12, 16)
    identity = view_affines(torch.ones(2, 2, dtype=F64), torch.zeros(2, 2, dtype=F64), torch.zeros(2, 1, dtype=F64),
                            torch.ones(2, dtype=F64), torch.tensor([-1, -1])).float()
    torch.testing.assert_close(resample(image, identity, (12, 16)), image, atol=1e-6, rtol=0)


def test_resample__2d_landmark_lands_where_crop_rotation_and_zoom_put_it():
    working, out = 64, 32
    landmark = (40.0, 20.0)  # (row, column) in the working image
    half, centre, angle, zoom = 0.6, (0.1, -0.2), math.radians(90), 1.25
    view = resample(_blob((working, working), landmark), _affine([half, half], centre, [angle], zoom), (out, out))
    # By hand: x = centre + half * R(90) * zoom * u, R(90) = [[0, -1], [1, 0]] on (row, column), so
    # x_row = c_row - half*zoom*u_col and x_col = c_col + half*zoom*u_row.
    x_row, x_col = _to_unit(landmark[0], working), _to_unit(landmark[1], working)
    u_row = (x_col - centre[1]) / (half * zoom)
    u_col = -(x_row - centre[0]) / (half * zoom)
    expected = (_to_index(u_row, out), _to_index(u_col, out))
    found = _centroid(view)
    assert max(abs(f - e) for f, e in zip(found, expected)) < 0.3, (found, expected)


def test_resample__3d_rotation_about_axis_2_keeps_axis_2():
    working = 24
    landmark = (6.0, 12.0, 17.0)
    view = resample(_blob((working,) * 3, landmark), _affine([1, 1, 1], [0, 0, 0], [0, 0, math.radians(90)]), (working,) * 3)
    # Rotation about axis 2 mixes axes 0 and 1 only: x0 = -u1, x1 = u0, x2 = u2.
    x = [_to_unit(v, working) for v in landmark]
    expected = (_to_index(x[1], working), _to_index(-x[0], working), _to_index(x[2], working))
    found = _centroid(view)
    assert max(abs(f - e) for f, e in zip(found, expected)) < 0.3, (found, expected)


def test_view_affines__flip_mirrors_only_the_named_axis():
    image = torch.rand(1, 1, 10, 14)
    for axis, dims in ((0, [2]), (1, [3])):
        view = resample(image, _affine([1, 1], [0, 0], [0.0], flip=axis), (10, 14))
        torch.testing.assert_close(view, torch.flip(image, dims), atol=1e-6, rtol=0)
    volume = torch.rand(1, 1, 6, 8, 10)
    view = resample(volume, _affine([1, 1, 1], [0, 0, 0], [0.0, 0.0, 0.0], flip=0), (6, 8, 10))
    torch.testing.assert_close(view, torch.flip(volume, [2]), atol=1e-6, rtol=0)


def test_rotation_matrices__are_rotations():
    angles = torch.rand(5, 3, dtype=F64) * 2 - 1
    r = rotation_matrices(angles)
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3, dtype=F64).expand(5, 3, 3))
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(5, dtype=F64))


def test_elastic_displacement__is_smooth_and_scaled_in_output_pixels():
    coarse = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    field = elastic_displacement(coarse, (32, 32), torch.tensor([2.0, 0.0]))
    assert field.shape == (2, 32, 32, 2)
    assert torch.equal(field[1], torch.zeros_like(field[1]))  # zero magnitude, no displacement
    # at the control points (corners with align_corners=True) it is offset * magnitude * 2/side
    torch.testing.assert_close(field[0, 0, 0], coarse[0, :, 0, 0] * 2.0 * 2 / 32)
    step = (field[0, 1:] - field[0, :-1]).abs().max()
    assert step < field[0].abs().max() / 2  # neighbouring pixels move alike


def _grid_sample_reference(images, affines, size):
    """``F.affine_grid`` + ``F.grid_sample`` with the affines reordered to x = the last axis."""
    d = len(size)
    order = list(range(d - 1, -1, -1))
    theta = torch.cat([affines[:, order][:, :, order], affines[:, order, d:]], 2)
    grid = torch.nn.functional.affine_grid(theta, [images.shape[0], images.shape[1], *size], align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _random_affines(b, d, rotated):
    g = torch.Generator().manual_seed(b * 10 + d)
    half = 0.3 + 0.8 * torch.rand(b, d, generator=g, dtype=F64)  # up to 1.1: reaches past the border
    centre = (2 * torch.rand(b, d, generator=g, dtype=F64) - 1) * 0.6
    angles = torch.zeros(b, 1 if d == 2 else 3, dtype=F64)
    angles[rotated] = 0.3
    zoom = 0.8 + 0.5 * torch.rand(b, generator=g, dtype=F64)
    flip = torch.arange(b) % (d + 1) - 1  # none, then each axis in turn
    return view_affines(half, centre, angles, zoom, flip).float()


def test_resample__boxes_off_the_pixel_grid_or_past_the_border_equal_grid_sample_everywhere():
    for working, size in [((20, 24), (9, 13)), ((11, 12, 13), (7, 8, 9))]:
        d = len(size)
        images = torch.randn(6, 2, *working, generator=torch.Generator().manual_seed(d))
        affines = _random_affines(6, d, rotated=torch.zeros(6, dtype=torch.bool))
        torch.testing.assert_close(resample(images, affines, size), _grid_sample_reference(images, affines, size),
                                   atol=2e-5, rtol=0)


def _snapped_affines(b, working, rotated):
    """Crops snapped to whole pixels (as the views make them), some rotated, every flip in turn."""
    d = len(working)
    g = torch.Generator().manual_seed(b * 10 + d)
    half = 0.3 + 0.7 * torch.rand(b, d, generator=g, dtype=F64)
    centre = (2 * torch.rand(b, d, generator=g, dtype=F64) - 1) * (1 - half)
    half, centre = snap_boxes(half, centre, working)
    angles = torch.zeros(b, 1 if d == 2 else 3, dtype=F64)
    angles[rotated] = 0.3
    flip = torch.arange(b) % (d + 1) - 1  # none, then each axis in turn
    return view_affines(half, centre, angles, torch.ones(b, dtype=F64), flip).float()


def test_snap_boxes__whole_pixel_sides_and_starts_inside_the_image_near_the_drawn_box():
    working = (20, 24, 9)
    g = torch.Generator().manual_seed(0)
    half = 0.12 + 0.88 * torch.rand(200, 3, generator=g, dtype=F64)  # at least one pixel on every axis
    centre = (2 * torch.rand(200, 3, generator=g, dtype=F64) - 1) * (1 - half)
    snapped_half, snapped_centre = snap_boxes(half, centre, working)
    sides = torch.tensor(working, dtype=F64)
    length = snapped_half * sides
    start = (snapped_centre + 1) * sides / 2 - length / 2
    torch.testing.assert_close(length, length.round(), atol=1e-9, rtol=0)
    torch.testing.assert_close(start, start.round(), atol=1e-9, rtol=0)
    length, start = length.round(), start.round()
    assert (length >= 1).all() and (start >= 0).all() and (start + length <= sides).all()
    assert ((length - half * sides).abs() <= 0.5 + 1e-9).all()
    assert (((snapped_centre - centre) * sides / 2).abs() <= 1 + 1e-9).all()


def test_resample__unrotated_3d_crops_equal_monai_crop_then_resize():
    # The per-item reference: MONAI's SpatialCrop of the box, Resize (trilinear), Flip.
    from monai.transforms import Flip, Resize, SpatialCrop

    working, size = (14, 12, 16), (7, 9, 8)
    images = torch.randn(3, 2, *working, generator=torch.Generator().manual_seed(1))
    affines = _snapped_affines(8, working, rotated=torch.zeros(8, dtype=torch.bool))
    source = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    out = resample(images.half(), affines, size, source=source)
    sides = torch.tensor(working, dtype=F64)
    for k in range(8):
        scale, offset = torch.diagonal(affines[k, :, :3]).double(), affines[k, :, 3].double()
        length = (scale.abs() * sides).round().long()
        start = (((offset + 1) * sides - length) / 2).round().long()
        item = SpatialCrop(roi_start=start.tolist(), roi_end=(start + length).tolist())(images[source[k]].half().float())
        item = Resize(size, mode="trilinear")(item)
        axes = [i for i in range(3) if scale[i] < 0]
        expected = torch.as_tensor(Flip(axes)(item) if axes else item)
        torch.testing.assert_close(out[k], expected, atol=1e-5, rtol=0)


def test_resample__crops_equal_grid_sample_inside_the_outer_half_pixel():
    # grid_sample is the independent truth; interpolate holds the crop's edge where grid_sample
    # reads beyond it, which only touches the outermost output samples of an enlarged crop.
    working, size = (20, 22, 18), (10, 10, 10)
    images = torch.randn(6, 1, *working, generator=torch.Generator().manual_seed(2))
    affines = _snapped_affines(6, working, rotated=torch.zeros(6, dtype=torch.bool))
    got, want = resample(images, affines, size), _grid_sample_reference(images, affines, size)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
    torch.testing.assert_close(got[inner], want[inner], atol=2e-5, rtol=0)


def test_resample__a_batch_mixing_rotated_and_unrotated_items_matches_grid_sample_item_by_item():
    rotated = torch.tensor([True, False, False, True, False, True])
    for working, size in [((16, 16), (10, 10)), ((20, 20, 20), (8, 8, 8))]:
        images = torch.randn(6, 1, *working, generator=torch.Generator().manual_seed(3))
        affines = _snapped_affines(6, working, rotated)
        out = resample(images, affines, size)
        inner = (slice(None), slice(None), *[slice(1, -1)] * len(size))
        for k in range(6):
            expected = _grid_sample_reference(images[k:k + 1], affines[k:k + 1], size)
            torch.testing.assert_close(out[k:k + 1][inner], expected[inner], atol=2e-5, rtol=0)
            if rotated[k] or len(size) == 2:  # grid_sample's own path: equal everywhere
                torch.testing.assert_close(out[k:k + 1], expected, atol=2e-5, rtol=0)


def test_resample__3d_crop_and_flip_put_a_landmark_where_the_affine_says():
    working, out = 32, 16
    landmark = (20.0, 9.0, 14.0)
    half, centre = (0.6, 0.5, 0.7), (0.1, -0.3, 0.05)
    view = resample(_blob((working,) * 3, landmark), _affine(list(half), list(centre), [0.0, 0.0, 0.0], flip=2),
                    (out,) * 3)
    # By hand: x_i = centre_i + half_i * u_i on axes 0 and 1, x_2 = centre_2 - half_2 * u_2 (flipped).
    expected = []
    for i in range(3):
        u = (_to_unit(landmark[i], working) - centre[i]) / half[i]
        expected.append(_to_index(-u if i == 2 else u, out))
    assert all(abs(a - b) < 0.15 for a, b in zip(_centroid(view), expected)), (_centroid(view), expected)


def test_resample__3d_crops_of_one_size_share_a_resize_and_view_sized_crops_are_read_as_they_are():
    # Two crops of the view's size (6 of 12 voxels) and two of 9 voxels, each pair once flipped:
    # the reference cuts each box out by slicing, resizes it alone (MONAI's Resize) and flips it.
    from monai.transforms import Resize

    images = torch.randn(4, 1, 12, 12, 12, generator=torch.Generator().manual_seed(4))
    boxes = [(0.5, [-0.5, 0.0, 0.5], -1), (0.5, [0.5, 0.5, -0.5], 2), (0.75, [0.25, -0.25, 1 / 12], -1),
             (0.75, [-0.25, 0.25, 0.25], 0)]  # (half-side, centre, flipped axis); whole voxels, inside
    affines = torch.cat([_affine([h] * 3, c, [0.0, 0.0, 0.0], flip=f) for h, c, f in boxes])
    out = resample(images, affines, (6, 6, 6))
    for k, (half, centre, flip) in enumerate(boxes):
        length = round(2 * half * 12 / 2)
        start = [round((c + 1) * 6 - length / 2) for c in centre]
        item = images[k][:, start[0]:start[0] + length, start[1]:start[1] + length, start[2]:start[2] + length]
        if length != 6:
            item = torch.as_tensor(Resize((6, 6, 6), mode="trilinear")(item))
        expected = item.flip(flip + 1) if flip >= 0 else item
        torch.testing.assert_close(out[k], expected, atol=1e-5, rtol=0)
    assert torch.equal(out[0], images[0][:, 0:6, 3:9, 6:12])  # read as it is: bit for bit
