"""tools/embedding_sensitivity.py against encoders whose invariances are known exactly."""

from __future__ import annotations

import torch
from torch import nn

from tools.embedding_sensitivity import CHANGES, perturb, sensitivity


class _Moments(nn.Module):
    """Per-item moments of the voxel values: blind to where a voxel is (shifts by roll, flips)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return torch.stack([(flat ** k).mean(1) for k in (1, 2, 3, 4)], 1)


class _Voxels(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def _volumes(n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 10, 12, generator=g) ** torch.linspace(0.5, 3.0, n).view(-1, 1, 1, 1, 1)


def test_perturb__geometry_moves_voxels_and_keeps_their_values():
    x = _volumes()
    g = torch.Generator().manual_seed(1)
    clean = perturb(x, "left-right flip", g, 2).flip(2)  # flipping back gives the clean eval input
    torch.testing.assert_close(perturb(x, "shift 2 voxels", g, 2).roll((-2, -2, -2), (2, 3, 4)), clean)
    assert not torch.allclose(perturb(x, "bias field", g, 2), clean)


def test_sensitivity__an_encoder_blind_to_position_finds_every_shifted_or_flipped_scan():
    result = sensitivity(_Moments(), _volumes(), seed=0, flip_axis=2)
    assert set(result) == set(CHANGES)
    for change in ("shift 2 voxels", "left-right flip"):  # a roll and a flip keep every voxel value
        assert result[change]["moved_over_between"] < 1e-4
        assert result[change]["found"] == 1.0


def test_sensitivity__raw_voxels_are_moved_by_a_flip():
    result = sensitivity(_Voxels(), _volumes(), seed=0, flip_axis=2)
    assert result["left-right flip"]["moved_over_between"] > 0.1
