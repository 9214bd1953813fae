from __future__ import annotations

import pytest
import torch
import torchvision
from monai.networks.nets import ResNet as MonaiResNet
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


def _norm_layers(encoder: nn.Module) -> dict[str, type]:
    return {name: type(m) for name, m in encoder.named_modules()
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm))}


@pytest.mark.parametrize(("name", "size"), [("resnet18", (16, 16)), ("resnet50", (16, 16)), ("resnet18_3d", (16, 16, 16))])
def test_create_encoder__group_norm_puts_groupnorm_where_batchnorm_was(name, size):
    batch_norm, _ = create_encoder(name, width=8)
    group_norm, dim = create_encoder(name, width=8, norm="group", norm_groups=4)
    norms = _norm_layers(group_norm)
    assert set(norms) == set(_norm_layers(batch_norm))  # every norm layer, stem, blocks and shortcuts
    assert set(norms.values()) == {nn.GroupNorm}
    assert all(m.num_groups == 4 and m.affine for m in group_norm.modules() if isinstance(m, nn.GroupNorm))
    # the same parameters; only BatchNorm's running statistics are gone
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    assert list(group_norm.state_dict()) == [k for k in batch_norm.state_dict() if not k.endswith(statistics)]
    assert group_norm(torch.randn(2, 1, *size)).shape == (2, dim)


@pytest.mark.parametrize(("name", "size"), [("resnet18", (16, 16)), ("resnet18_3d", (16, 16, 16))])
def test_create_encoder__group_norm_features_of_an_item_ignore_its_batch_in_train_mode(name, size):
    torch.manual_seed(0)
    x = torch.randn(4, 1, *size)
    others = torch.cat([x[:1], 3 + 2 * torch.randn(3, 1, *size)])  # item 0 beside other items
    group_norm, _ = create_encoder(name, width=8, norm="group")
    batch_norm, _ = create_encoder(name, width=8)
    with torch.no_grad():
        torch.testing.assert_close(group_norm.train()(x)[0], group_norm(others)[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(group_norm(x[:1])[0], group_norm(x)[0], atol=1e-5, rtol=1e-5)
        # BatchNorm in train mode does depend on the batch, so the comparison above can fail
        assert not torch.allclose(batch_norm.train()(x)[0], batch_norm(others)[0], atol=1e-3)


def test_create_encoder__default_3d_is_monai_resnet_with_batchnorm():
    torch.manual_seed(0)
    encoder, _ = create_encoder("resnet10_3d", in_channels=2, width=4)
    torch.manual_seed(0)
    reference = MonaiResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[4, 8, 16, 32], spatial_dims=3,
                            n_input_channels=2, conv1_t_stride=2, bias_downsample=False, feed_forward=False)
    assert list(encoder.state_dict()) == list(reference.state_dict())
    assert set(_norm_layers(encoder).values()) == {nn.BatchNorm3d}
    for key, value in reference.state_dict().items():  # same initialisation from the same seed
        assert torch.equal(encoder.state_dict()[key], value), key


def test_create_encoder__group_norm_2d_width_64_loads_into_torchvision_with_norm_layer():
    encoder, _ = create_encoder("resnet18", width=64, norm="group", norm_groups=32)
    reference = torchvision.models.resnet18(weights=None, norm_layer=lambda channels: nn.GroupNorm(32, channels))
    reference.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    reference.fc = nn.Identity()
    reference.load_state_dict(encoder.state_dict(), strict=True)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder.eval()(x), reference.eval()(x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"norm": "layer"}, r"norm='layer' must be one of 'batch', 'group'"),
        ({"norm": "group", "norm_groups": 0}, "norm_groups=0 must be positive"),
        ({"norm": "group", "width": 12, "norm_groups": 8}, "norm_groups=8 must divide width=12"),
    ],
)
def test_create_encoder__invalid_norm_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_encoder("resnet18_3d", **kwargs)
