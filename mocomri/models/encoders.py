"""The encoder registry: a backbone named by string, with any input channel count and width.

2D names build torchvision ResNets, ``*_3d`` names build MONAI ResNets. Every backbone ends in
global average pooling and has no classifier, so its forward gives pooled features (B, F).
Nothing is pretrained and nothing is downloaded.

The normalisation layer is BatchNorm or GroupNorm (:mod:`mocomri.models.norm`), given to each
library as its own argument: torchvision's ``norm_layer``, MONAI's ``norm``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from monai.networks.nets import ResNet as MonaiResNet
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from mocomri.models.norm import NORMS, monai_norm, torchvision_norm_layer

if TYPE_CHECKING:  # type-only: the config imports ENCODERS from here, so a run-time import would be a cycle
    from mocomri.config import ModelConfig


class _ResNet2d(ResNet):
    """torchvision's ResNet with stage widths ``width * (1, 2, 4, 8)``, any input channel count
    and ``fc = nn.Identity()``.

    It exists because torchvision's ``ResNet.__init__`` hard-codes the stage widths 64..512.
    Its stages are built by torchvision's own ``_make_layer`` and every module keeps
    torchvision's name, so the state-dict keys match ``torchvision.models.resnet*`` key for
    key: a width-64 encoder loads into ``torchvision.models.resnet18(norm_layer=norm_layer)``
    whose ``conv1`` takes ``in_channels`` and whose ``fc`` is ``nn.Identity()``. It is used for
    every width, 64 included, so that there is one code path to test.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        in_channels: int,
        width: int,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        nn.Module.__init__(self)  # not ResNet.__init__, which would build the 64..512 stages first
        # The attributes ResNet._make_layer reads.
        self._norm_layer = norm_layer
        self.inplanes = width
        self.dilation = 1
        self.groups = 1
        self.base_width = 64  # Bottleneck's inner width is planes * base_width / 64

        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()

        # torchvision's initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


# builder(in_channels, width, norm, norm_groups) -> (backbone, F)
_Builder = Callable[[int, int, str, int], tuple[nn.Module, int]]


class _ResNet3d(MonaiResNet):
    """MONAI's ResNet with its ``norm`` in every layer.

    MONAI 1.6's ``ResNet.__init__`` gives ``norm`` to the stem only: it calls ``_make_layer``
    without it, so the blocks and shortcuts fall back to BatchNorm (Project-MONAI/MONAI#9028).
    This passes ``norm`` on to ``_make_layer``, which hands it to MONAI's own blocks; nothing
    else differs, and with ``norm="batch"`` (MONAI's default) the network is MONAI's.
    """

    def __init__(self, *args, norm: str | tuple = "batch", **kwargs) -> None:
        self._block_norm = norm  # read by _make_layer, which MonaiResNet.__init__ calls
        super().__init__(*args, norm=norm, **kwargs)

    def _make_layer(self, *args, **kwargs) -> nn.Sequential:
        return super()._make_layer(*args, **{**kwargs, "norm": self._block_norm})


def _resnet_2d(block: type[BasicBlock | Bottleneck], layers: list[int]) -> _Builder:
    def build(in_channels: int, width: int, norm: str, norm_groups: int) -> tuple[nn.Module, int]:
        net = _ResNet2d(block, layers, in_channels, width, torchvision_norm_layer(norm, norm_groups))
        return net, 8 * width * block.expansion

    return build


def _resnet_3d(layers: list[int]) -> _Builder:
    def build(in_channels: int, width: int, norm: str, norm_groups: int) -> tuple[nn.Module, int]:
        net = _ResNet3d(
            block="basic",
            layers=layers,
            block_inplanes=[width, 2 * width, 4 * width, 8 * width],
            spatial_dims=3,
            n_input_channels=in_channels,
            conv1_t_stride=2,  # a stride-2 stem like the 2D ResNet and Med3D; MONAI's default 1 costs 8x
            bias_downsample=False,  # the shortcut's conv feeds a norm layer, which has its own bias
            feed_forward=False,  # no classifier: forward returns the pooled features
            norm=monai_norm(norm, norm_groups),
        )
        return net, 8 * width

    return build


# name -> (builder, spatial dims)
_REGISTRY: dict[str, tuple[_Builder, int]] = {
    "resnet18": (_resnet_2d(BasicBlock, [2, 2, 2, 2]), 2),
    "resnet34": (_resnet_2d(BasicBlock, [3, 4, 6, 3]), 2),
    "resnet50": (_resnet_2d(Bottleneck, [3, 4, 6, 3]), 2),
    "resnet10_3d": (_resnet_3d([1, 1, 1, 1]), 3),
    "resnet18_3d": (_resnet_3d([2, 2, 2, 2]), 3),
    "resnet34_3d": (_resnet_3d([3, 4, 6, 3]), 3),
}

# The config checks model.name against this tuple, so the module imports nothing of mocomri but norm (a leaf).
ENCODERS: tuple[str, ...] = tuple(_REGISTRY)


def create_encoder(
    name: str, in_channels: int = 1, width: int = 64, norm: str = "batch", norm_groups: int = 8
) -> tuple[nn.Module, int]:
    """Builds a randomly initialised backbone from the registry.

    Args:
        name: one of :data:`ENCODERS`.
        in_channels: channels of the input image or volume (e.g. 1, or one per MRI contrast).
        width: channels of the first stage; the stages have width·(1, 2, 4, 8). 64 is the
            standard ResNet; 16-32 suits a CPU.
        norm: one of :data:`NORMS`: ``"batch"`` (BatchNorm) or ``"group"`` (GroupNorm).
        norm_groups: G, the GroupNorm groups of every layer (ignored by BatchNorm). Every
            layer's channels are a multiple of ``width``, so G must divide ``width``.

    Returns:
        ``(backbone, F)``: the backbone, whose forward gives pooled features, and F.

    Raises:
        ValueError: for an unknown name or norm, a non-positive ``in_channels``, ``width`` or
            ``norm_groups``, or GroupNorm with ``norm_groups`` not dividing ``width``.

    Shape:
        input: (B, in_channels, H, W) for 2D names, (B, in_channels, D, H, W) for ``*_3d``.
        output: (B, F).
    """
    build, _ = _lookup(name)
    if in_channels <= 0:
        raise ValueError(f"in_channels={in_channels} must be positive")
    if width <= 0:
        raise ValueError(f"width={width} must be positive")
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} must be one of {', '.join(map(repr, NORMS))}")
    if norm_groups <= 0:
        raise ValueError(f"norm_groups={norm_groups} must be positive")
    if norm == "group" and width % norm_groups:
        raise ValueError(f"norm_groups={norm_groups} must divide width={width} (every layer's channels are "
                         "multiples of the width)")
    return build(in_channels, width, norm, norm_groups)


def encoder_from_config(model: ModelConfig) -> tuple[nn.Module, int]:
    """:func:`create_encoder` with the architecture of a config's ``model`` section: the one
    place where a config becomes an encoder (pretraining, probing, PEFT and export all call it)."""
    return create_encoder(model.name, in_channels=model.in_channels, width=model.width,
                          norm=model.norm, norm_groups=model.norm_groups)


def spatial_dims_of(name: str) -> int:
    """2 or 3: the spatial dimensions the named encoder takes.

    Raises:
        ValueError: for an unknown name.
    """
    return _lookup(name)[1]


def _lookup(name: str) -> tuple[_Builder, int]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown encoder {name!r}; known encoders: {', '.join(ENCODERS)}")
    return _REGISTRY[name]
