"""LoRA and (IA)³ layers (``mocomri/peft/lora.py``, ``ia3.py``) against convolutions, matrix products
and BatchNorm written out by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mocomri.peft import IA3, LoRA


def _randomise(layer: nn.Module, seed: int) -> nn.Module:
    """Non-trivial module tensors (a fresh LoRA has B = 0, a fresh (IA)³ has l = 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in layer.named_parameters(recurse=False):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if name == "ia3_scale" else 0.0))
    return layer


CONVS = [
    (nn.Conv2d(3, 5, kernel_size=3, stride=2, padding=1, dilation=1, bias=True), (2, 3, 9, 9), F.conv2d),
    (nn.Conv2d(3, 5, kernel_size=3, stride=1, padding=2, dilation=2, bias=False), (2, 3, 8, 8), F.conv2d),
    (nn.Conv3d(2, 4, kernel_size=3, stride=2, padding=1, bias=False), (2, 2, 6, 7, 5), F.conv3d),
]


@pytest.mark.parametrize("base, shape, conv", CONVS)
def test_lora_conv__equals_the_convolution_with_w_plus_ba(base, shape, conv) -> None:
    torch.manual_seed(0)
    layer = _randomise(LoRA(base, rank=2, alpha=3.0), seed=1)
    x = torch.randn(shape)
    # ΔW by hand: (alpha/r) · B @ A with A flattened over (in, kernel)
    delta = (3.0 / 2) * (layer.lora_B @ layer.lora_A.reshape(2, -1)).reshape(base.weight.shape)
    expected = conv(x, base.weight + delta, base.bias, stride=base.stride, padding=base.padding, dilation=base.dilation)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.folded()(x), expected, atol=1e-5, rtol=1e-5)


def test_lora_linear__equals_w_plus_ba_and_folds() -> None:
    torch.manual_seed(0)
    base = nn.Linear(6, 4)
    layer = _randomise(LoRA(base, rank=3, alpha=6.0, init="gaussian"), seed=2)
    x = torch.randn(5, 6)
    expected = x @ (base.weight + 2.0 * layer.lora_B @ layer.lora_A).T + base.bias
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.folded()(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("base, shape, conv", CONVS)
def test_lora__fresh_module_is_the_identity(base, shape, conv) -> None:
    layer = LoRA(base, rank=2, alpha=4.0)
    x = torch.randn(shape)
    assert torch.equal(layer(x), base(x))
    assert torch.count_nonzero(layer.lora_A) > 0  # A is random, B is zero


def test_lora__seeded_generator_gives_the_same_a() -> None:
    base = nn.Conv2d(3, 4, 3)
    a1 = LoRA(base, 2, 1.0, generator=torch.Generator().manual_seed(7)).lora_A
    a2 = LoRA(base, 2, 1.0, generator=torch.Generator().manual_seed(7)).lora_A
    a3 = LoRA(base, 2, 1.0, generator=torch.Generator().manual_seed(8)).lora_A
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)


def test_lora__grouped_convolution_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"'layer1.0.conv1' is a grouped convolution \(groups=2\)"):
        LoRA(nn.Conv2d(4, 4, 3, groups=2), 2, 1.0, name="layer1.0.conv1")


def test_lora__unsupported_layer_is_an_error() -> None:
    with pytest.raises(ValueError, match="'bn' is a BatchNorm2d"):
        LoRA(nn.BatchNorm2d(4), 2, 1.0, name="bn")


@pytest.mark.parametrize("base, shape, conv", CONVS)
def test_ia3_conv__scales_the_input_channels(base, shape, conv) -> None:
    torch.manual_seed(0)
    layer = _randomise(IA3(base), seed=3)
    x = torch.randn(shape)
    scaled = x * layer.ia3_scale.reshape(1, -1, *(1,) * (x.dim() - 2))
    expected = conv(scaled, base.weight, base.bias, stride=base.stride, padding=base.padding, dilation=base.dilation)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.folded()(x), expected, atol=1e-5, rtol=1e-5)



@pytest.mark.parametrize("bn, shape", [(nn.BatchNorm2d(3), (2, 3, 4, 4)), (nn.BatchNorm3d(3), (2, 3, 4, 4, 4))])
def test_ia3_batchnorm__scales_the_output_and_folds_in_eval_mode(bn, shape) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
    layer = _randomise(IA3(bn), seed=4).eval()
    x = torch.randn(shape)
    view = (1, -1, *(1,) * (len(shape) - 2))
    normalised = (x - bn.running_mean.reshape(view)) / torch.sqrt(bn.running_var.reshape(view) + bn.eps)
    expected = layer.ia3_scale.reshape(view) * (bn.weight.reshape(view) * normalised + bn.bias.reshape(view))
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.folded().eval()(x), expected, atol=1e-5, rtol=1e-5)



@pytest.mark.parametrize("shape", [(2, 6, 4, 4), (2, 6, 3, 4, 5)])
def test_ia3_groupnorm__scales_the_output_and_folds_in_either_mode(shape) -> None:
    torch.manual_seed(0)
    gn = nn.GroupNorm(3, 6)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 2), gn.bias.uniform_(-1, 1)
    layer = _randomise(IA3(gn), seed=5)
    x = torch.randn(shape)
    view = (1, -1, *(1,) * (len(shape) - 2))
    groups = x.reshape(shape[0], 3, -1)  # (B, G, C/G·S): each sample's group of 2 channels
    normalised = ((groups - groups.mean(-1, keepdim=True))
                  / torch.sqrt(groups.var(-1, unbiased=False, keepdim=True) + gn.eps)).reshape(shape)
    expected = layer.ia3_scale.reshape(view) * (gn.weight.reshape(view) * normalised + gn.bias.reshape(view))
    for mode in (True, False):
        torch.testing.assert_close(layer.train(mode)(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer.folded().train(mode)(x), expected, atol=1e-5, rtol=1e-5)


def test_ia3__norm_layer_without_affine_is_an_error() -> None:
    with pytest.raises(ValueError, match="'gn' is a GroupNorm without affine parameters"):
        IA3(nn.GroupNorm(2, 4, affine=False), name="gn")


def test_ia3_linear__fresh_module_is_the_identity() -> None:
    base = nn.Linear(5, 3)
    x = torch.randn(4, 5)
    assert torch.equal(IA3(base)(x), base(x))
