from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from mocomri.models.encoders import ENCODERS, create_encoder, spatial_dims_of


@pytest.mark.parametrize("in_channels", [1, 4])
@pytest.mark.parametrize(("name", "features"), [("resnet18", 64), ("resnet50", 256)])
def test_create_encoder__2d_gives_finite_pooled_features(name, features, in_channels):
    torch.manual_seed(0)
    encoder, dim = create_encoder(name, in_channels=in_channels, width=8)
    assert dim == features
    out = encoder(torch.randn(3, in_channels, 16, 16))
    assert out.shape == (3, dim) and torch.isfinite(out).all()


@pytest.mark.parametrize("in_channels", [1, 4])
@pytest.mark.parametrize("name", ["resnet10_3d", "resnet18_3d"])
def test_create_encoder__3d_gives_finite_pooled_features(name, in_channels):
    torch.manual_seed(0)
    encoder, dim = create_encoder(name, in_channels=in_channels, width=4)
    assert dim == 32
    out = encoder(torch.randn(2, in_channels, 16, 16, 16))
    assert out.shape == (2, dim) and torch.isfinite(out).all()


def test_create_encoder__width_64_state_dict_loads_into_torchvision():
    encoder, dim = create_encoder("resnet18", in_channels=2, width=64)
    reference = torchvision.models.resnet18(weights=None)
    reference.conv1 = nn.Conv2d(2, 64, kernel_size=7, stride=2, padding=3, bias=False)
    reference.fc = nn.Identity()
    assert list(encoder.state_dict()) == list(reference.state_dict())
    reference.load_state_dict(encoder.state_dict(), strict=True)

    x = torch.randn(2, 2, 32, 32)
    encoder.eval(), reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), reference(x))
    assert dim == 512


def test_create_encoder__uses_standard_batchnorm():
    encoder, _ = create_encoder("resnet10_3d", width=4)
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(type(m) is nn.BatchNorm3d for m in norms)


def test_spatial_dims_of__every_registered_name():
    assert {name: spatial_dims_of(name) for name in ENCODERS} == {
        "resnet18": 2,
        "resnet34": 2,
        "resnet50": 2,
        "resnet10_3d": 3,
        "resnet18_3d": 3,
        "resnet34_3d": 3,
    }


def test_create_encoder__unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown encoder 'vit_b'; known encoders: resnet18, .*resnet34_3d"):
        create_encoder("vit_b")
    with pytest.raises(ValueError, match="unknown encoder 'resnet18_2d'"):
        spatial_dims_of("resnet18_2d")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"in_channels": 0}, "in_channels=0 must be positive"), ({"width": -8}, "width=-8 must be positive")],
)
def test_create_encoder__invalid_sizes_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_encoder("resnet18", **kwargs)
