"""Geometry of the batched views: landmarks land where the affine says, flips are left-right only."""

from __future__ import annotations

import math

import torch

from mocomri.augment.geometry import elastic_displacement, resample, rotation_matrices, view_affines

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
