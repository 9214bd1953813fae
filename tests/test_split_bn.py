from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mocomri.models.split_bn import SplitBatchNorm2d, SplitBatchNorm3d, convert_to_split_bn


def _per_group_reference(x: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """Each contiguous block {i : i // (N / groups) == g} normalised alone with its own biased
    statistics."""
    out = torch.empty_like(x)
    dims = [0, *range(2, x.ndim)]
    size = x.shape[0] // groups
    for g in range(groups):
        part = x[g * size : (g + 1) * size]
        mean = part.mean(dim=dims, keepdim=True)
        var = part.var(dim=dims, unbiased=False, keepdim=True)
        out[g * size : (g + 1) * size] = (part - mean) / torch.sqrt(var + eps)
    return out


def _blocks(x: torch.Tensor, groups: int) -> list[torch.Tensor]:
    size = x.shape[0] // groups
    return [x[g * size : (g + 1) * size] for g in range(groups)]


def test_split_bn__training_normalises_each_sub_batch():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4) * torch.arange(1.0, 9.0).view(8, 1, 1, 1)
    bn = SplitBatchNorm2d(3, num_splits=4).train()
    torch.testing.assert_close(bn(x), _per_group_reference(x, 4, bn.eps), rtol=1e-4, atol=1e-4)


def test_split_bn__running_stats_average_the_sub_batches():
    torch.manual_seed(1)
    x = torch.randn(6, 2, 3, 3, 3)
    bn = SplitBatchNorm3d(2, num_splits=3, momentum=0.5).train()
    bn(x)
    means = torch.stack([b.mean(dim=(0, 2, 3, 4)) for b in _blocks(x, 3)])
    variances = torch.stack([b.var(dim=(0, 2, 3, 4), unbiased=True) for b in _blocks(x, 3)])
    torch.testing.assert_close(bn.running_mean, 0.5 * means.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, 0.5 + 0.5 * variances.mean(0), rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 1


def test_split_bn__channels_last_in_channels_last_out_with_equal_values():
    torch.manual_seed(6)
    x = torch.randn(8, 5, 6, 6)
    bn = SplitBatchNorm2d(5, num_splits=4).train()
    out = bn(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, _per_group_reference(x, 4, bn.eps), rtol=1e-4, atol=1e-4)


def test_split_bn__gradient_matches_per_block_batchnorm():
    torch.manual_seed(7)
    x = torch.randn(6, 2, 3, 3, requires_grad=True)
    bn = SplitBatchNorm2d(2, num_splits=3).train()
    bn.weight.data.uniform_(0.5, 1.5)
    bn(x).pow(2).mul(torch.arange(6.0).view(6, 1, 1, 1)).sum().backward()
    y = x.detach().clone().requires_grad_(True)
    w = bn.weight.detach().clone().requires_grad_(True)
    out = torch.cat([F.batch_norm(b, None, None, w, None, True, 0.0, bn.eps) for b in _blocks(y, 3)])
    out.pow(2).mul(torch.arange(6.0).view(6, 1, 1, 1)).sum().backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.weight.grad, w.grad, rtol=1e-5, atol=1e-6)


def test_split_bn__eval_is_plain_batchnorm():
    torch.manual_seed(2)
    split, plain = SplitBatchNorm2d(3, num_splits=2), nn.BatchNorm2d(3)
    for bn in (split, plain):
        bn.running_mean.uniform_()
        bn.running_var.uniform_(0.5, 2.0)
    plain.load_state_dict(split.state_dict())
    x = torch.randn(5, 3, 2, 2)
    torch.testing.assert_close(split.eval()(x), plain.eval()(x))


@pytest.mark.parametrize(("batch", "groups"), [(6, 3), (7, 1), (10, 2)])
def test_split_bn__batch_not_divisible_uses_largest_divisor(batch, groups):
    torch.manual_seed(3)
    x = torch.randn(batch, 2, 3, 3)
    bn = SplitBatchNorm2d(2, num_splits=4).train()
    torch.testing.assert_close(bn(x), _per_group_reference(x, groups, bn.eps), rtol=1e-4, atol=1e-4)


def test_split_bn__single_value_sub_batches_are_avoided():
    # 4 samples of 1x1: four splits would leave one value per channel, so it uses two
    x = torch.randn(4, 3, 1, 1)
    bn = SplitBatchNorm2d(3, num_splits=4).train()
    out = bn(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, _per_group_reference(x, 2, bn.eps), rtol=1e-4, atol=1e-4)


def test_split_bn__momentum_none_is_a_cumulative_average():
    torch.manual_seed(4)
    bn = SplitBatchNorm2d(2, num_splits=2, momentum=None).train()
    batches = [torch.randn(4, 2, 2, 2) + i for i in range(3)]
    for x in batches:
        bn(x)
    means = [torch.stack([b.mean(dim=(0, 2, 3)) for b in _blocks(x, 2)]).mean(0) for x in batches]
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0), rtol=1e-5, atol=1e-6)


def test_convert_to_split_bn__swaps_and_keeps_weights():
    torch.manual_seed(5)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Sequential(nn.Conv3d(3, 3, 1), nn.BatchNorm3d(3)), nn.BatchNorm1d(3)
    )
    for bn in (net[1], net[2][1]):
        bn.weight.data.uniform_()
        bn.running_mean.uniform_()
    net[1].weight.requires_grad_(False)
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}

    out = convert_to_split_bn(net, 4)
    assert out is net
    assert isinstance(net[1], SplitBatchNorm2d) and net[1].num_splits == 4
    assert isinstance(net[2][1], SplitBatchNorm3d)
    assert type(net[3]) is nn.BatchNorm1d
    assert not net[1].weight.requires_grad and net[2][1].weight.requires_grad
    assert not net[1].training
    for name, value in net.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_convert_to_split_bn__group_norm_encoder_is_left_as_it_is():
    from mocomri.models import create_encoder
    from mocomri.models.norm import has_batch_norm

    encoder, _ = create_encoder("resnet10_3d", width=4, norm="group", norm_groups=2)
    before = {name: (m, type(m)) for name, m in encoder.named_modules()}
    assert convert_to_split_bn(encoder, 4) is encoder
    assert {name: (m, type(m)) for name, m in encoder.named_modules()} == before  # the same objects, unswapped
    assert not has_batch_norm(encoder)
    assert has_batch_norm(create_encoder("resnet10_3d", width=4)[0])


def test_convert_to_split_bn__top_level_batchnorm_is_returned():
    converted = convert_to_split_bn(nn.BatchNorm2d(4), 2)
    assert isinstance(converted, SplitBatchNorm2d)
    assert convert_to_split_bn(converted, 2) is converted


def test_split_bn__invalid_num_splits_raises():
    with pytest.raises(ValueError, match="num_splits=0 must be positive"):
        SplitBatchNorm2d(3, num_splits=0)
    with pytest.raises(ValueError, match="num_splits=-2 must be positive"):
        convert_to_split_bn(nn.BatchNorm2d(3), -2)
