"""The encoder's normalisation layer: BatchNorm or GroupNorm, named as each library takes it.

``norm="batch"`` is BatchNorm; ``norm="group"`` is GroupNorm with G groups in every layer (Wu &
He, arXiv:1803.08494), which normalises each sample over groups of its own channels, so an
item's features do not depend on the other items of its batch. The encoders and the export
hand the choice to torchvision, timm and MONAI through their own arguments.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

# The config checks model.norm against this tuple, so the module imports nothing of mocomri.
NORMS: tuple[str, ...] = ("batch", "group")


def torchvision_norm_layer(norm: str, norm_groups: int) -> Callable[..., nn.Module]:
    """torchvision's (and timm's) ``norm_layer`` argument: ``norm_layer(channels)`` gives the layer.

    A plain function rather than ``functools.partial(nn.GroupNorm, G)``: timm re-binds a
    partial's keywords but drops its positional arguments.
    """
    if norm == "batch":
        return nn.BatchNorm2d

    def group_norm(channels: int, **factory) -> nn.GroupNorm:  # factory: device/dtype, as timm passes
        return nn.GroupNorm(norm_groups, channels, **factory)

    return group_norm


def monai_norm(norm: str, norm_groups: int) -> str | tuple[str, dict[str, int]]:
    """MONAI's ``norm`` argument (``"batch"``, MONAI's default, or ``("group", {"num_groups": G})``)."""
    return "batch" if norm == "batch" else ("group", {"num_groups": norm_groups})


def has_batch_norm(module: nn.Module) -> bool:
    """Whether any layer of ``module`` normalises with batch statistics (a GroupNorm encoder has none)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
