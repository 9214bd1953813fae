"""Split BatchNorm: shuffle-BN's stand-in on a single device.

MoCo shuffles the key batch across GPUs so that BatchNorm statistics cannot leak which key is
the positive (arXiv:1911.05722, section 3.3). On one device, the official MoCo Colab demo
instead normalises ``num_splits`` sub-batches separately, which gives the same effect as that
many GPUs when the key batch is also shuffled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _SplitBatchNorm(nn.modules.batchnorm._BatchNorm):
    """In training, each of ``num_splits`` sub-batches is normalised with its own statistics;
    the running statistics are updated with their average. In eval mode, plain BatchNorm.

    The batch is cut into G contiguous blocks: sample i falls in sub-batch ``i // (N / G)``.
    G is ``num_splits`` when it divides the batch; otherwise G is the largest divisor of the
    batch below ``num_splits`` (1 for a prime batch: plain BatchNorm), and never so large that a
    sub-batch has a single value per channel. MoCo shuffles the key batch before the key
    encoder, so contiguous blocks are random subsets.

    The Colab demo instead reshapes (N, C, *S) to (N/G, G·C, *S) (sample i in sub-batch
    ``i % G``): one native call, but a view only of contiguous NCHW memory, so every layer of a
    channels-last network pays two layout conversions per pass. Each block of a channels-last
    batch is itself channels-last, and the native kernel normalises it in place of layout
    (the step is faster this way, and channels-last pays: BENCHMARKS.md).
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if num_splits <= 0:
            raise ValueError(f"num_splits={num_splits} must be positive")
        self.num_splits = num_splits

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        groups = _num_groups(input.shape[0], self.num_splits, input[0, 0].numel()) if self.training else 1
        if groups == 1:
            return super().forward(input)

        # The running-average factor, as in _BatchNorm.forward.
        factor = 0.0 if self.momentum is None else self.momentum
        tracked = self.track_running_stats and self.running_mean is not None and self.running_var is not None
        if tracked and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)

        # One copy of the running statistics per sub-batch, each moved by its own block: (G, C).
        mean = self.running_mean.repeat(groups, 1) if tracked else None
        var = self.running_var.repeat(groups, 1) if tracked else None
        # torch.cat of channels-last blocks is channels-last: the layout survives the layer.
        out = torch.cat(
            [
                F.batch_norm(block, mean[g] if tracked else None, var[g] if tracked else None,
                             self.weight, self.bias, True, factor, self.eps)
                for g, block in enumerate(input.chunk(groups))
            ]
        )
        if tracked:
            self.running_mean.copy_(mean.mean(dim=0))
            self.running_var.copy_(var.mean(dim=0))
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_splits={self.num_splits}"


class SplitBatchNorm2d(_SplitBatchNorm, nn.BatchNorm2d):
    """:class:`torch.nn.BatchNorm2d` over ``num_splits`` sub-batches in training.

    Shape:
        input: (N, C, H, W).  output: same.
    """


class SplitBatchNorm3d(_SplitBatchNorm, nn.BatchNorm3d):
    """:class:`torch.nn.BatchNorm3d` over ``num_splits`` sub-batches in training.

    Shape:
        input: (N, C, D, H, W).  output: same.
    """


def convert_to_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """Replaces every ``BatchNorm2d``/``BatchNorm3d`` in ``module`` by its split version.

    Children are swapped in place, keeping their weights, running statistics,
    ``requires_grad`` and train/eval mode. Split layers and other norms (GroupNorm) are left
    as they are.

    Args:
        module: the network to convert.
        num_splits: sub-batches per training batch.

    Returns:
        ``module``, or its replacement when ``module`` is itself a BatchNorm layer.

    Raises:
        ValueError: if ``num_splits`` is not positive.
    """
    if num_splits <= 0:
        raise ValueError(f"num_splits={num_splits} must be positive")
    if isinstance(module, _SplitBatchNorm):
        return module
    for kind, split_kind in ((nn.BatchNorm2d, SplitBatchNorm2d), (nn.BatchNorm3d, SplitBatchNorm3d)):
        if isinstance(module, kind):
            return _to_split(module, split_kind, num_splits)
    for name, child in module.named_children():
        converted = convert_to_split_bn(child, num_splits)
        if converted is not child:
            setattr(module, name, converted)
    return module


def _to_split(bn: nn.modules.batchnorm._BatchNorm, split_kind: type[_SplitBatchNorm], num_splits: int) -> nn.Module:
    floats = [t for t in (bn.weight, bn.running_mean) if t is not None]
    factory = {"device": floats[0].device, "dtype": floats[0].dtype} if floats else {}
    split = split_kind(
        bn.num_features,
        num_splits,
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
        **factory,
    )
    split.load_state_dict(bn.state_dict())
    if bn.affine:
        split.weight.requires_grad_(bn.weight.requires_grad)
        split.bias.requires_grad_(bn.bias.requires_grad)
    split.train(bn.training)
    return split


def _num_groups(batch: int, num_splits: int, values_per_sample: int) -> int:
    """The largest G <= num_splits that divides the batch into sub-batches of more than one
    value per channel (BatchNorm cannot normalise a single value)."""
    for groups in range(min(num_splits, batch), 1, -1):
        if batch % groups == 0 and (batch // groups) * values_per_sample > 1:
            return groups
    return 1
