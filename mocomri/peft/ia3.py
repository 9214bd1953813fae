"""(IA)³ on a ResNet: learned channel scales, initialised to ones (Liu et al. 2022, arXiv:2205.05638).

In a transformer (IA)³ rescales the attention keys and values and the feed-forward activation
``l_ff ⊙ γ(W₁x)`` just before ``W₂``. A ResNet block has no attention; its analogues here are:

- a convolution or linear target has its **input channels** scaled: on a block's last
  convolution (``conv2`` of a BasicBlock, ``conv3`` of a Bottleneck) that input is the ReLU
  output of the block's inner layer, the exact place of ``l_ff``;
- a BatchNorm target has its **output** scaled: on the block's last BatchNorm (``bn2``/``bn3``)
  that is the residual branch's output just before the addition, a per-channel gain on what
  the block writes into the residual stream, as the key/value scales gate what attention adds.

Scaling the input of a convolution equals scaling its weight's input slices, and scaling a
BatchNorm's output (in eval mode) equals scaling its affine weight and bias, so both fold
exactly into the base weights. A scaled tensor that then went into a BatchNorm in train mode
would be renormalised away, which is why :class:`~mocomri.peft.encoder.PEMEncoder` keeps every
BatchNorm in eval mode.

A GroupNorm encoder (``model.norm=group``) has GroupNorm where BatchNorm was: its output is
``γ·x̂ + β`` per channel as well, so it is targeted, scaled and folded the same way, in either
mode. GroupNorm always normalises with the sample's own statistics, so a conv target's scale
is partly normalised away by the GroupNorm after it (a common factor on all of a group's
channels cancels; the mixing of channels by the conv keeps the rest); the norm target's scale,
after the normalisation, is not.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

IA3_INPUT_LAYERS = (nn.Linear, nn.Conv2d, nn.Conv3d)
IA3_OUTPUT_LAYERS = (_BatchNorm, nn.GroupNorm)


class IA3(nn.Module):
    """A frozen base layer with a learned per-channel scale ``ia3_scale``, ones at first.

    Args:
        base: a ``nn.Linear``/``nn.Conv2d``/``nn.Conv3d`` (groups 1; its input is scaled) or an
            affine BatchNorm or GroupNorm (its output is scaled).
        name: the layer's name in its encoder, for error messages.

    Raises:
        ValueError: an unsupported layer, a grouped convolution or a norm layer without affine.

    Shape:
        ia3_scale: (C,), C the input channels of a conv/linear, the channels of a norm layer.
    """

    def __init__(self, base: nn.Module, name: str = "") -> None:
        super().__init__()
        if isinstance(base, IA3_INPUT_LAYERS):
            if getattr(base, "groups", 1) != 1:
                raise ValueError(f"(IA)³ target {name!r} is a grouped convolution (groups={base.groups}); "
                                 "only groups=1 is supported")
            channels, self.scales_input = base.weight.shape[1], True
        elif isinstance(base, IA3_OUTPUT_LAYERS):
            if not base.affine:
                raise ValueError(f"(IA)³ target {name!r} is a {type(base).__name__} without affine parameters")
            channels, self.scales_input = base.weight.shape[0], False
        else:
            raise ValueError(f"(IA)³ target {name!r} is a {type(base).__name__}; (IA)³ scales the input of "
                             "Linear/Conv2d/Conv3d layers or the output of BatchNorm/GroupNorm layers")
        self.base = base
        self.ia3_scale = nn.Parameter(torch.ones(channels, dtype=base.weight.dtype, device=base.weight.device))

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C) or (B, C, *S); the scale broadcasts over the channel dimension 1
        if self.scales_input:
            return self.base(x * _per_channel(self.ia3_scale, x.dim()))
        y = self.base(x)
        return y * _per_channel(self.ia3_scale, y.dim())

    @torch.no_grad()
    def folded(self) -> nn.Module:
        """The base layer with the scale folded into its weights (a new module)."""
        merged = copy.deepcopy(self.base)
        if self.scales_input:
            merged.weight.mul_(_per_channel(self.ia3_scale, merged.weight.dim()))  # weight: (out, in, *kernel)
        else:
            merged.weight.mul_(self.ia3_scale)  # γ' = l·γ, β' = l·β
            merged.bias.mul_(self.ia3_scale)
        return merged


def _per_channel(scale: Tensor, ndim: int) -> Tensor:
    """(C,) -> (1, C, 1, ...) with ``ndim`` dimensions."""
    return scale.reshape(1, -1, *(1,) * (ndim - 2))
